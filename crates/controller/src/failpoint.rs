//! Crash points for the fault-injection suite: with the `failpoints`
//! feature, `RTM_FAILPOINT=<step>` makes the process abort (no cleanup, no
//! unwinding, as a crash would) when it reaches that step of an
//! operation. Without the feature every call compiles to nothing, so
//! production builds cannot crash on purpose.
//!
//! Steps: `start.after_create`, `start.before_status`, `stop.after_stop`,
//! `restart.after_stop`, `restart.after_remove`, `restart.before_status`.

/// The environment variable naming the step to crash at.
#[cfg(feature = "failpoints")]
const ENV: &str = "RTM_FAILPOINT";

/// Aborts the process if `RTM_FAILPOINT` names `step`.
#[cfg(feature = "failpoints")]
pub(crate) fn hit(step: &str) {
    if std::env::var(ENV).is_ok_and(|wanted| wanted == step) {
        eprintln!("failpoint {step}: aborting the process");
        std::process::abort();
    }
}

/// Does nothing: failpoints are compiled out.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn hit(_step: &str) {}
