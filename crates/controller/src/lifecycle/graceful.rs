//! The graceful stop of a game's container, as `spec.lifecycle` says: the
//! preStop command run in the container, the shutdown delay, then the stop
//! signal and SIGKILL — all within `spec.stopTimeout`, counted from the start
//! of the stop. Every stop the controller makes goes through here (a stop,
//! the stop inside a restart or a remove, an eviction).
//!
//! The preStop command's outcome is written into the stop's history entry
//! (`note`); its failure (`prestop_failed`) never prevents the stop. Docker
//! cannot kill an exec: one that outlives its bound is left to the SIGKILL
//! that ends the container.

use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use crate::lease::GameLease;
use crate::runtime::{ContainerInfo, ExecOutcome, RuntimeError, cut_at_char_boundary};
use rtm_core::error_code::ErrorCode;
use rtm_core::failure::Failure;
use rtm_core::model::{Lifecycle as LifecycleSpec, PreStop};
use rtm_core::records::history::HistoryEntry;

use super::Lifecycle;

/// The most of a preStop command's output its note keeps: a line or two for
/// people, while the history entry stays small (the exec keeps 4 KiB).
const PRE_STOP_OUTPUT_LIMIT: usize = 256;

/// How one preStop command went, for the note, the log and the metric.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PreStopOutcome {
    /// It exited 0.
    Exited0 { after: Duration, output: String },
    /// Another exit code.
    ExitedNonZero {
        code: i64,
        after: Duration,
        output: String,
    },
    /// It had not ended within its bound; it runs on until the container dies.
    TimedOut { bound: Duration },
    /// Docker could not run it.
    Failed { error: RuntimeError },
    /// Not run: why.
    Skipped { reason: String },
}

impl PreStopOutcome {
    /// The label of `rtmanager_prestop_hooks_total`.
    fn result(&self) -> &'static str {
        match self {
            PreStopOutcome::Exited0 { .. } => "exited_0",
            PreStopOutcome::ExitedNonZero { .. } | PreStopOutcome::Failed { .. } => "failed",
            PreStopOutcome::TimedOut { .. } => "timed_out",
            PreStopOutcome::Skipped { .. } => "skipped",
        }
    }

    fn is_failure(&self) -> bool {
        matches!(
            self,
            PreStopOutcome::ExitedNonZero { .. }
                | PreStopOutcome::TimedOut { .. }
                | PreStopOutcome::Failed { .. }
        )
    }

    /// The text the stop's history entry carries: a failure starts with its
    /// code, so `rtctl history` and a search for `prestop_failed` find it.
    fn note(&self) -> String {
        let text = match self {
            PreStopOutcome::Exited0 { after, output } => {
                format!(
                    "preStop exited 0 after {}{}",
                    seconds(*after),
                    shown(output)
                )
            }
            PreStopOutcome::ExitedNonZero {
                code,
                after,
                output,
            } => format!(
                "preStop exited {code} after {}{}",
                seconds(*after),
                shown(output)
            ),
            PreStopOutcome::TimedOut { bound } => format!(
                "preStop did not finish within {}; it was left running and the stop went on",
                seconds(*bound)
            ),
            PreStopOutcome::Failed { error } => {
                format!("preStop could not run: docker exec: {error}")
            }
            PreStopOutcome::Skipped { reason } => format!("preStop skipped: {reason}"),
        };
        if self.is_failure() {
            format!("{}: {text}", ErrorCode::PreStopFailed.as_str())
        } else {
            text
        }
    }
}

/// `1.2s`: tenths are enough for people, and stable enough for tests to read.
fn seconds(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

/// `: <output>`, trimmed and cut to [`PRE_STOP_OUTPUT_LIMIT`]; nothing for no output.
fn shown(output: &str) -> String {
    let trimmed = output.trim();
    if trimmed.is_empty() {
        return String::new();
    }
    let cut = cut_at_char_boundary(trimmed, PRE_STOP_OUTPUT_LIMIT);
    let more = if cut.len() < trimmed.len() { "…" } else { "" };
    format!(": {cut}{more}")
}

/// Adds `text` to the entry's note (after what is there, e.g. the failure a
/// repair answers).
pub(super) fn add_note(entry: &mut HistoryEntry, text: &str) {
    entry.note = Some(match entry.note.take() {
        Some(before) if !before.is_empty() => format!("{before}; {text}"),
        _ => text.to_owned(),
    });
}

/// What is left until `deadline`.
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

impl Lifecycle {
    /// Stops the game's live `container` (running or paused) as `lifecycle`
    /// says, within `timeout` from now; what the preStop command did goes
    /// into `entry`'s note, whatever the stop's outcome.
    ///
    /// A paused container runs nothing and its engine cannot act on a delay:
    /// it gets Docker's own stop, as before lifecycles existed.
    pub(super) async fn stop_gracefully(
        &self,
        lease: &GameLease,
        container: &ContainerInfo,
        lifecycle: &LifecycleSpec,
        timeout: Duration,
        entry: &mut HistoryEntry,
    ) -> Result<(), Failure> {
        let deadline = Instant::now() + timeout;
        if !container.is_running() {
            self.skip_pre_stop(lifecycle, container, entry);
            return self.stop_container(&container.id, None, timeout).await;
        }
        if let Some(pre_stop) = &lifecycle.pre_stop {
            let outcome = self
                .run_pre_stop(&container.id, pre_stop, timeout, deadline)
                .await;
            self.record_pre_stop(lease.game(), &container.id, &outcome, entry);
        }
        let delay = lifecycle.shutdown_delay.min(left(deadline));
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        lease.check()?;
        self.stop_container(&container.id, Some(lifecycle.signal()), left(deadline))
            .await
    }

    /// Notes that a container that is not running (paused, exited) had its
    /// preStop command skipped.
    pub(super) fn skip_pre_stop(
        &self,
        lifecycle: &LifecycleSpec,
        container: &ContainerInfo,
        entry: &mut HistoryEntry,
    ) {
        if lifecycle.pre_stop.is_some() {
            let outcome = PreStopOutcome::Skipped {
                reason: format!("the container is {}", container.state.as_str()),
            };
            self.metrics.record_pre_stop(outcome.result());
            add_note(entry, &outcome.note());
        }
    }

    fn record_pre_stop(
        &self,
        game: &str,
        container: &str,
        outcome: &PreStopOutcome,
        entry: &mut HistoryEntry,
    ) {
        let note = outcome.note();
        if outcome.is_failure() {
            warn!(%game, %container, outcome = %note, "the preStop command failed; the stop goes on");
        }
        self.metrics.record_pre_stop(outcome.result());
        add_note(entry, &note);
    }

    /// Runs the preStop command, bounded by its timeout and by what is left
    /// of the stop. The runtime bounds the exec itself; the bound here is
    /// for one that would not, as a hung command must never stretch the
    /// stop.
    async fn run_pre_stop(
        &self,
        id: &str,
        pre_stop: &PreStop,
        stop_timeout: Duration,
        deadline: Instant,
    ) -> PreStopOutcome {
        let bound = pre_stop.effective_timeout(stop_timeout).min(left(deadline));
        if bound.is_zero() {
            return PreStopOutcome::Skipped {
                reason: "no time is left of the stop timeout".to_owned(),
            };
        }
        let started = Instant::now();
        let ran =
            tokio::time::timeout(bound, self.runtime.exec(id, &pre_stop.exec.command, bound)).await;
        let after = started.elapsed();
        match ran {
            Ok(Ok(ExecOutcome {
                exit_code: Some(0),
                output,
                ..
            })) => PreStopOutcome::Exited0 { after, output },
            Ok(Ok(ExecOutcome {
                exit_code: Some(code),
                output,
                ..
            })) => PreStopOutcome::ExitedNonZero {
                code,
                after,
                output,
            },
            Ok(Ok(ExecOutcome {
                exit_code: None, ..
            }))
            | Err(_) => PreStopOutcome::TimedOut { bound },
            Ok(Err(error)) => PreStopOutcome::Failed { error },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_pre_stop_note_starts_with_its_code_and_a_passed_one_does_not() {
        let passed = PreStopOutcome::Exited0 {
            after: Duration::from_millis(1234),
            output: "  saved match 7\n".into(),
        };
        assert_eq!(passed.note(), "preStop exited 0 after 1.2s: saved match 7");
        let failed = PreStopOutcome::ExitedNonZero {
            code: 3,
            after: Duration::from_millis(60),
            output: String::new(),
        };
        assert_eq!(failed.note(), "prestop_failed: preStop exited 3 after 0.1s");
        let hung = PreStopOutcome::TimedOut {
            bound: Duration::from_secs(2),
        };
        assert!(
            hung.note()
                .starts_with("prestop_failed: preStop did not finish within 2.0s"),
            "{}",
            hung.note()
        );
        let skipped = PreStopOutcome::Skipped {
            reason: "the container is paused".into(),
        };
        assert_eq!(skipped.note(), "preStop skipped: the container is paused");
    }

    #[test]
    fn a_pre_stop_note_keeps_a_bounded_start_of_the_output() {
        let long = "é".repeat(PRE_STOP_OUTPUT_LIMIT);
        let note = shown(&long);
        assert!(
            note.len() <= PRE_STOP_OUTPUT_LIMIT + ": …".len(),
            "{}",
            note.len()
        );
        assert!(note.ends_with('…'));
    }

    #[test]
    fn notes_follow_what_the_entry_already_says() {
        let mut entry = HistoryEntry::begin(
            "g1",
            "op",
            rtm_core::model::OpKind::Stop,
            rtm_core::model::OpSource::Reconcile,
        );
        add_note(&mut entry, "preStop exited 0 after 0.0s");
        assert_eq!(entry.note.as_deref(), Some("preStop exited 0 after 0.0s"));
        entry.note = Some("probe failed: 503".into());
        add_note(&mut entry, "preStop exited 0 after 0.0s");
        assert_eq!(
            entry.note.as_deref(),
            Some("probe failed: 503; preStop exited 0 after 0.0s")
        );
    }
}
