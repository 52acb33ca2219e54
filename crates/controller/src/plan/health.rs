//! The health part of the decision, with no I/O: what a game's health check says of its
//! running container (from this controller's probes, else from the status record for the
//! same container, else nothing yet), whether that calls for a replacement, and what the
//! status shows of it.

use std::time::{Duration, SystemTime};

use rtm_core::model::{
    GameRuntime, GameRuntimeStatus, HealthCheck, HealthStatus, HealthVerdict, Phase, RestartPolicy,
    Timestamp,
};

use super::{Observed, Settings, backoff_delay};
use crate::health::{Judged, judge};
use crate::runtime::ContainerInfo;

/// The Ready condition's reason while the probe passes.
pub(crate) const HEALTH_CHECK_PASSED: &str = "HealthCheckPassed";
/// The Ready condition's reason while the probe fails after it passed.
pub(crate) const HEALTH_CHECK_FAILING: &str = "HealthCheckFailing";

/// What the health check says of the game's container, as far as anyone knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Effective {
    pub(super) verdict: HealthVerdict,
    pub(super) passed: bool,
    pub(super) consecutive_failures: u32,
    pub(super) message: Option<String>,
    pub(super) since: Option<Timestamp>,
}

/// The game's check and its running (or paused) container, when it has both.
fn checked<'a>(
    doc: &'a GameRuntime,
    observed: &'a Observed,
) -> Option<(&'a HealthCheck, &'a ContainerInfo)> {
    let check = doc.spec.health_check.as_ref()?;
    let container = observed.container.as_ref().filter(|c| c.is_alive())?;
    Some((check, container))
}

/// The judgement of this controller's own probes of the container: only they can make a
/// game unhealthy (a status record can be forged; a lost one is no evidence).
pub(super) fn judged(doc: &GameRuntime, observed: &Observed, now: SystemTime) -> Option<Judged> {
    let (check, container) = checked(doc, observed)?;
    let view = observed
        .health
        .as_ref()
        .filter(|view| view.container_id == container.id)?;
    judge(view, check, container.started_at, now)
}

/// What to do with a game `judged` unhealthy: nothing with `restartPolicy: Never` (it is
/// kept for inspection), else the back-off left before the replacement (`None`: replace
/// now). Replacements count in the crash-loop back-off like crashes: the first is at once,
/// then base, 2×base, … counted from when the verdict was reached, unless the container
/// ran longer than `crash_reset_after`.
pub(super) fn replacement_wait(
    doc: &GameRuntime,
    observed: &Observed,
    now: SystemTime,
    settings: &Settings,
) -> Option<(Duration, Duration)> {
    let status = &observed.status.value;
    let container = observed.container.as_ref()?;
    let view = observed.health.as_ref()?;
    let ran = container
        .started_at
        .map(|started| now.duration_since(started).unwrap_or_default())
        .unwrap_or_default();
    if doc.spec.restart_policy == RestartPolicy::Never
        || status.restart_count == 0
        || ran >= settings.crash_reset_after
    {
        return None;
    }
    let delay = backoff_delay(status.restart_count, settings);
    let elapsed = now.duration_since(view.since).unwrap_or_default();
    let remaining = delay
        .checked_sub(elapsed)
        .filter(|remaining| !remaining.is_zero())?;
    Some((delay, remaining))
}

/// The verdict as far as anyone knows: this controller's probes of the container; before
/// their first result, what the status record says of the same container (a controller
/// restart must not flip Ready); else no result yet.
pub(super) fn effective(doc: &GameRuntime, observed: &Observed) -> Option<Effective> {
    let (check, container) = checked(doc, observed)?;
    let probed = observed
        .health
        .as_ref()
        .filter(|view| view.container_id == container.id && view.results > 0);
    let recorded = observed
        .status
        .value
        .health
        .as_ref()
        .filter(|health| health.container_id.as_deref() == Some(container.id.as_str()));
    if let Some(view) = probed {
        // The record's time stands while it says the same (a restarted
        // controller's first results must not rewrite every status).
        let since = match recorded {
            Some(health) if health.verdict == view.verdict => health.since,
            _ => Some(Timestamp::from(view.since)),
        };
        return Some(Effective {
            verdict: view.verdict,
            passed: view.passed || recorded.is_some_and(|health| health.passed),
            consecutive_failures: if view.passed {
                view.consecutive_failures.min(check.failure_threshold)
            } else {
                0
            },
            message: view.message.clone(),
            since,
        });
    }
    Some(match recorded {
        Some(health) => Effective {
            verdict: health.verdict,
            passed: health.passed,
            consecutive_failures: health.consecutive_failures,
            message: health.message.clone(),
            since: health.since,
        },
        None => Effective {
            verdict: HealthVerdict::Unknown,
            passed: false,
            consecutive_failures: 0,
            message: None,
            since: None,
        },
    })
}

/// The phase and message of a running container under a health check.
pub(super) fn phase(
    doc: &GameRuntime,
    observed: &Observed,
    now: SystemTime,
    settings: &Settings,
) -> Option<(Phase, Option<String>)> {
    let (check, _) = checked(doc, observed)?;
    let effective = effective(doc, observed)?;
    if let Some(judged) = judged(doc, observed, now) {
        let what = judgement(judged, check, observed);
        if doc.spec.restart_policy == RestartPolicy::Never {
            return Some((
                Phase::Failed,
                Some(format!(
                    "{what}; the container is kept for inspection (restartPolicy: Never)"
                )),
            ));
        }
        if let Some((delay, _)) = replacement_wait(doc, observed, now, settings) {
            return Some((
                Phase::CrashLoopBackOff,
                Some(format!(
                    "{what}; replacing it after a back-off of {}",
                    humantime::format_duration(delay)
                )),
            ));
        }
    }
    Some(match effective.verdict {
        HealthVerdict::Passing => (Phase::Running, None),
        HealthVerdict::Failing if effective.passed => (Phase::Running, effective.message),
        _ => (
            Phase::Starting,
            Some(match effective.message {
                Some(failure) => format!(
                    "waiting for the first passing probe ({}): {failure}",
                    probe_name(check)
                ),
                None => format!(
                    "waiting for the first passing probe ({})",
                    probe_name(check)
                ),
            }),
        ),
    })
}

/// Whether the probe passes, as far as anyone knows (`None`: no health check).
pub(super) fn passing(doc: &GameRuntime, observed: &Observed) -> Option<bool> {
    doc.spec.health_check.as_ref()?;
    Some(effective(doc, observed).is_some_and(|e| e.verdict == HealthVerdict::Passing))
}

/// `status.health`: the check's verdict on the running container; absent without a check
/// or a running container.
pub(super) fn record(status: &mut GameRuntimeStatus, doc: &GameRuntime, observed: &Observed) {
    status.health = checked(doc, observed).and_then(|(check, container)| {
        let effective = effective(doc, observed)?;
        Some(HealthStatus {
            probe: probe_name(check),
            verdict: effective.verdict,
            container_id: Some(container.id.clone()),
            passed: effective.passed,
            consecutive_failures: effective.consecutive_failures,
            message: effective.message,
            since: effective.since,
        })
    });
}

/// The code and the words of a judgement, for the status and the history.
pub(super) fn judgement(judged: Judged, check: &HealthCheck, observed: &Observed) -> String {
    let last = observed
        .health
        .as_ref()
        .and_then(|view| view.last_failure.as_deref())
        .unwrap_or("no answer");
    match judged {
        Judged::Unhealthy => format!(
            "health_check_failed: {} failed {} times in a row; last: {last}",
            probe_name(check),
            check.failure_threshold
        ),
        Judged::StartupTimeout => format!(
            "startup_timeout: {} did not pass within {}; last: {last}",
            probe_name(check),
            humantime::format_duration(check.startup_timeout)
        ),
    }
}

fn probe_name(check: &HealthCheck) -> String {
    check
        .probe()
        .map_or_else(|| "the health check".to_owned(), |probe| probe.to_string())
}
