//! The decision, with no I/O: given what a game should be (its document)
//! and what it is (its status record and its container), what to do next
//! and what its status should say. Level-based: the answer depends only on
//! the two states, never on the event that caused the reconcile, so
//! planning again after acting converges.

use std::time::{Duration, SystemTime};

use crate::health::{HealthView, Judged};
use crate::runtime::{ContainerInfo, ContainerState};
use rtm_core::model::{
    DesiredState, GameRuntime, GameRuntimeStatus, Outcome, Phase, RestartPolicy,
};
use rtm_core::records::sessions::SessionRecord;
use rtm_core::records::status::StatusRecord;

pub(crate) use rtm_core::model::READY;

pub(crate) mod disruption;
pub(crate) mod events;
mod health;
mod image;
pub(crate) mod schedule;

pub(crate) use self::disruption::{BudgetWait, Hold};
pub(crate) use self::health::{HEALTH_CHECK_FAILING, HEALTH_CHECK_PASSED};

/// The Ready condition's reason while the container is paused by hand.
pub(crate) const CONTAINER_PAUSED: &str = "ContainerPaused";

/// Knobs of the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    /// Wait before the second restart of a crashing container; doubles
    /// with each further crash.
    pub(crate) crash_backoff_base: Duration,
    /// Longest wait between crash restarts.
    pub(crate) crash_backoff_max: Duration,
    /// A container that ran this long before exiting restarts without
    /// waiting (its earlier crashes no longer count).
    pub(crate) crash_reset_after: Duration,
    /// A transitional phase (Starting, Stopping, Removing) older than this
    /// turns Failed (a running container waiting for its first passing
    /// probe has its check's `startupTimeout` instead).
    pub(crate) transition_deadline: Duration,
    /// The node's advertised address, shown as `status.address` of the
    /// games it runs.
    pub(crate) address: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            crash_backoff_base: Duration::from_secs(10),
            crash_backoff_max: Duration::from_secs(300),
            crash_reset_after: Duration::from_secs(600),
            transition_deadline: Duration::from_secs(300),
            address: None,
        }
    }
}

/// What a game is, as observed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Observed {
    /// The status record (its value the default when there is none).
    pub(crate) status: StatusRecord,
    /// The game's container (`rtm-<game>`, ours), if any.
    pub(crate) container: Option<ContainerInfo>,
    /// What this controller's probes said of that container, if it probes it.
    pub(crate) health: Option<HealthView>,
    /// The game's session record (none: Idle).
    pub(crate) session: SessionRecord,
    /// A disruption budget covering the game with no slot left for it, when a voluntary
    /// recreate would need one (found by the reconcile, which reads the budgets).
    pub(crate) budget_wait: Option<BudgetWait>,
    /// The digest the game's tag has in its registry, looked at for `imagePullPolicy:
    /// Always` games only (none: not looked at, or the registry could not say).
    pub(crate) registry_digest: Option<String>,
}

/// Why the container must change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The document is new or asks for something new (a new generation).
    SpecChanged,
    /// `spec.restartToken` differs from `status.observedRestartToken`.
    RestartRequested,
    /// The container exited by itself (or was stopped by hand).
    Exited,
    /// The container disappeared (removed by hand).
    Vanished,
    /// A container was created but never started (an interrupted start).
    NeverStarted,
    /// The health check failed `failureThreshold` times in a row after Ready.
    Unhealthy,
    /// The health check did not pass within `startupTimeout` of the start.
    StartupTimeout,
    /// A window of `spec.restartSchedule` came and the container predates it.
    Scheduled,
    /// `imagePullPolicy: Always` and the tag names another digest in the registry
    /// than the one the container was created for.
    ImageMoved,
}

/// What to do to the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing; at most the status needs writing.
    None,
    /// Create and start the container (there is none, or only a stale one).
    Start {
        /// Why.
        cause: Cause,
    },
    /// Stop the container, keeping it (the document asks `Stopped`).
    Stop {
        /// Why.
        cause: Cause,
    },
    /// Recreate (restart semantics: stop, rm, start with the current spec).
    Recreate {
        /// Why.
        cause: Cause,
    },
    /// Replace an exited container after its crash backoff.
    Restart {
        /// Why.
        cause: Cause,
    },
    /// Resume a container paused by hand: an involuntary disruption,
    /// repaired at once and in place (the match goes on).
    Unpause,
    /// Stop and remove the container and clear the status.
    Remove,
    /// The container crashed and its backoff has not elapsed.
    WaitBackoff {
        /// How long until the restart is due.
        remaining: Duration,
    },
    /// A voluntary disruption (a recreate or a stop for `cause`) is held back by the
    /// game's session or a disruption budget; the game keeps running.
    Defer {
        /// What the disruption would be for.
        cause: Cause,
        /// What holds it back.
        hold: Hold,
        /// When it goes ahead anyway (`maxSessionWait`), if it is bounded.
        remaining: Option<Duration>,
    },
}

impl Action {
    /// Whether the action changes the container (and so needs the lease).
    pub(crate) fn acts(&self) -> bool {
        !matches!(
            self,
            Action::None | Action::WaitBackoff { .. } | Action::Defer { .. }
        )
    }
}

/// The decision for one game: what its document and container call for, unless it is a
/// voluntary disruption its session or a budget holds back.
pub(crate) fn plan(
    doc: Option<&GameRuntime>,
    observed: &Observed,
    now: SystemTime,
    settings: &Settings,
) -> Action {
    let action = decide(doc, observed, now, settings);
    match doc {
        Some(doc) => disruption::gate(doc, observed, action, now),
        None => action,
    }
}

/// What the document and the container call for, sessions and budgets aside.
fn decide(
    doc: Option<&GameRuntime>,
    observed: &Observed,
    now: SystemTime,
    settings: &Settings,
) -> Action {
    let container = observed.container.as_ref();
    let Some(doc) = doc else {
        return if container.is_some() || observed.status.exists() {
            Action::Remove
        } else {
            Action::None
        };
    };
    let spec = &doc.spec;
    match spec.state {
        DesiredState::Stopped => match container {
            Some(c) if c.is_alive() => Action::Stop {
                cause: Cause::SpecChanged,
            },
            _ => Action::None,
        },
        DesiredState::Running => {
            let Some(c) = container else {
                let cause = if observed.status.value.container_id.is_some() {
                    Cause::Vanished
                } else {
                    Cause::SpecChanged
                };
                return Action::Start { cause };
            };
            match &c.state {
                ContainerState::Running | ContainerState::Paused => {
                    if !runs_spec(c, doc) {
                        Action::Recreate {
                            cause: Cause::SpecChanged,
                        }
                    } else if restart_requested(doc, observed) {
                        Action::Recreate {
                            cause: Cause::RestartRequested,
                        }
                    } else if image::moved(doc, observed) {
                        Action::Recreate {
                            cause: Cause::ImageMoved,
                        }
                    } else if schedule::due(doc, observed, now).is_some() {
                        Action::Recreate {
                            cause: Cause::Scheduled,
                        }
                    } else if c.state == ContainerState::Paused {
                        Action::Unpause
                    } else {
                        replace_if_unhealthy(doc, observed, now, settings)
                    }
                }
                ContainerState::Created => Action::Start {
                    cause: Cause::NeverStarted,
                },
                ContainerState::Exited | ContainerState::Dead => {
                    if spec_changed(doc, &observed.status.value) {
                        // Asked to run again (after a stop, or with a new
                        // spec): not a crash, so no back-off and no count.
                        return Action::Start {
                            cause: Cause::SpecChanged,
                        };
                    }
                    if !policy_restarts(spec.restart_policy, c.exit_code) {
                        return Action::None;
                    }
                    match crash_backoff(c, &observed.status.value, now, settings) {
                        Some((_, remaining)) => Action::WaitBackoff { remaining },
                        None => Action::Restart {
                            cause: Cause::Exited,
                        },
                    }
                }
                // Docker is in the middle of something; look again soon.
                ContainerState::Restarting
                | ContainerState::Removing
                | ContainerState::Unknown(_) => Action::WaitBackoff {
                    remaining: Duration::from_secs(2),
                },
            }
        }
    }
}

/// A running container its health check judged unhealthy (or never
/// started serving) is replaced, after the crash-loop back-off; with
/// `restartPolicy: Never` it is kept as it is.
fn replace_if_unhealthy(
    doc: &GameRuntime,
    observed: &Observed,
    now: SystemTime,
    settings: &Settings,
) -> Action {
    let Some(judged) = health::judged(doc, observed, now) else {
        return Action::None;
    };
    if doc.spec.restart_policy == RestartPolicy::Never {
        return Action::None;
    }
    if let Some((_, remaining)) = health::replacement_wait(doc, observed, now, settings) {
        return Action::WaitBackoff { remaining };
    }
    Action::Recreate {
        cause: match judged {
            Judged::Unhealthy => Cause::Unhealthy,
            Judged::StartupTimeout => Cause::StartupTimeout,
        },
    }
}

/// What a replacement for `cause` repairs, for its history entries: the
/// code and what the probe saw.
pub(crate) fn repaired(
    doc: &GameRuntime,
    observed: &Observed,
    cause: Cause,
) -> Option<(rtm_core::error_code::ErrorCode, String)> {
    use rtm_core::error_code::ErrorCode;
    let check = doc.spec.health_check.as_ref()?;
    let (judged, code) = match cause {
        Cause::Unhealthy => (Judged::Unhealthy, ErrorCode::HealthCheckFailed),
        Cause::StartupTimeout => (Judged::StartupTimeout, ErrorCode::StartupTimeout),
        _ => return None,
    };
    Some((code, health::judgement(judged, check, observed)))
}

/// Whether the container was created from the document's current spec
/// (its spec-hash label).
fn runs_spec(container: &ContainerInfo, doc: &GameRuntime) -> bool {
    container.spec_hash() == Some(doc.spec.recreate_hash(&doc.metadata.name).as_str())
}

/// Whether the document changed since the controller last converged it.
pub(crate) fn spec_changed(doc: &GameRuntime, status: &GameRuntimeStatus) -> bool {
    doc.metadata.generation.is_some() && doc.metadata.generation != status.observed_generation
}

/// A restart is asked for when the token is set and not yet answered. The
/// container's own label says which token it answers; the status record is
/// only asked for a container older than that label. When neither says (such
/// a container, and its record lost), nothing is restarted: losing a record
/// must never disrupt a game.
pub(crate) fn restart_requested(doc: &GameRuntime, observed: &Observed) -> bool {
    let token = &doc.spec.restart_token;
    if token.is_empty() {
        return false;
    }
    let answered = observed
        .container
        .as_ref()
        .and_then(ContainerInfo::restart_token)
        .or(observed.status.value.observed_restart_token.as_deref());
    match answered {
        Some(answered) => answered != token,
        None => observed.status.exists(),
    }
}

fn policy_restarts(policy: RestartPolicy, exit_code: Option<i64>) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => exit_code != Some(0),
        RestartPolicy::Never => false,
    }
}

/// The back-off of a crashed container and how much of it is left: none
/// for the first crash (or after a long healthy run), then base, 2×base, …
/// up to the maximum, counted from when it exited.
fn crash_backoff(
    container: &ContainerInfo,
    status: &GameRuntimeStatus,
    now: SystemTime,
    settings: &Settings,
) -> Option<(Duration, Duration)> {
    let ran = match (container.started_at, container.finished_at) {
        (Some(started), Some(finished)) => finished.duration_since(started).unwrap_or_default(),
        _ => Duration::ZERO,
    };
    if ran >= settings.crash_reset_after || status.restart_count == 0 {
        return None;
    }
    let delay = backoff_delay(status.restart_count, settings);
    let finished = container.finished_at?;
    let elapsed = now.duration_since(finished).unwrap_or_default();
    let remaining = delay
        .checked_sub(elapsed)
        .filter(|remaining| !remaining.is_zero())?;
    Some((delay, remaining))
}

/// The wait before the next restart of a game restarted `restart_count`
/// times (at least once): base, 2×base, … up to the maximum.
fn backoff_delay(restart_count: u32, settings: &Settings) -> Duration {
    let exponent = restart_count.saturating_sub(1).min(16);
    settings
        .crash_backoff_base
        .saturating_mul(1 << exponent)
        .min(settings.crash_backoff_max)
}

/// The status a game should show, given what was observed (after any
/// action). Fields that only actions change (restartCount,
/// observedRestartToken, lastOperation) are carried over.
pub(crate) fn derive_status(
    doc: Option<&GameRuntime>,
    observed: &Observed,
    now: SystemTime,
    settings: &Settings,
) -> GameRuntimeStatus {
    let previous = &observed.status.value;
    let mut status = previous.clone();
    let container = observed.container.as_ref();
    let Some(doc) = doc else {
        status.set_phase(Phase::Removing, now);
        return status;
    };
    record_container(&mut status, container, settings);
    health::record(&mut status, doc, observed);
    schedule::record(&mut status, doc, observed, now);
    status.session = disruption::session_seen(previous.session.as_ref(), &observed.session, now);
    let action = plan(Some(doc), observed, now, settings);
    disruption::record(&mut status, doc, observed, &action, now);
    let running = container.is_some_and(ContainerInfo::is_running);
    let matches_spec = container.is_some_and(|c| runs_spec(c, doc));
    let probed = running
        .then(|| health::phase(doc, observed, now, settings))
        .flatten();
    let waits_for_probe = probed.is_some();
    // A running container whose replacement (or stop) waits for its session or a
    // budget goes on serving the match: Running, and Ready while its probe passes.
    let deferred = running && matches!(action, Action::Defer { .. });
    let (phase, message) = probed.unwrap_or_else(|| match deferred {
        true => (Phase::Running, None),
        false => observed_phase(doc, container, previous, now, settings),
    });
    status.set_phase(phase, now);
    status.message = message;
    if !waits_for_probe {
        // A running container waiting for its first passing probe has its
        // check's startup timeout instead.
        fail_if_stuck(&mut status, now, settings);
    }
    record_convergence(&mut status, doc, container, running && matches_spec);
    let passing = health::passing(doc, observed);
    set_ready(
        &mut status,
        container,
        running && (matches_spec || deferred),
        passing,
        now,
    );
    status
}

/// Copies what the container shows (id, image, hostname, how it last
/// exited, its published ports) into the status, with the node's address;
/// no container clears the id, the address and the ports.
fn record_container(
    status: &mut GameRuntimeStatus,
    container: Option<&ContainerInfo>,
    settings: &Settings,
) {
    status.container_id = container.map(|c| c.id.clone());
    status.address = container.and(settings.address.clone());
    status.ports = container.map(|c| c.ports.clone()).unwrap_or_default();
    if let Some(c) = container {
        status.image_ref = Some(c.image.clone());
        status.image_id = crate::lifecycle::image::status_image_id(c);
        status.hostname = Some(c.hostname.clone());
        if c.state.has_exited() {
            status.last_exit_code = c.exit_code;
            status.oom_killed = c.oom_killed;
        }
    }
}

/// The phase (and message) the desired state and the container's state
/// give.
fn observed_phase(
    doc: &GameRuntime,
    container: Option<&ContainerInfo>,
    previous: &GameRuntimeStatus,
    now: SystemTime,
    settings: &Settings,
) -> (Phase, Option<String>) {
    let spec = &doc.spec;
    let last_failed = previous
        .last_operation
        .as_ref()
        .is_some_and(|op| op.outcome == Outcome::Failure);
    match (spec.state, container) {
        (DesiredState::Stopped, Some(c)) if c.is_alive() => (Phase::Stopping, None),
        (DesiredState::Stopped, _) => (Phase::Stopped, None),
        (DesiredState::Running, None) if last_failed => (Phase::Failed, failure_message(previous)),
        (DesiredState::Running, None) => (Phase::Pending, None),
        (DesiredState::Running, Some(c)) => match &c.state {
            ContainerState::Running => (Phase::Running, None),
            ContainerState::Paused => (
                Phase::Running,
                Some("the container is paused (docker pause); resuming it".to_owned()),
            ),
            ContainerState::Created => (Phase::Starting, None),
            ContainerState::Exited | ContainerState::Dead => {
                exited_phase(spec.restart_policy, c, previous, now, settings)
            }
            _ => (Phase::Starting, None),
        },
    }
}

/// A transitional phase that outlives its deadline is a failure.
fn fail_if_stuck(status: &mut GameRuntimeStatus, now: SystemTime, settings: &Settings) {
    if matches!(
        status.phase,
        Phase::Starting | Phase::Stopping | Phase::Removing
    ) && let Some(since) = &status.phase_since
        && now.duration_since(since.system_time()).unwrap_or_default()
            > settings.transition_deadline
    {
        let stuck = status.phase;
        status.set_phase(Phase::Failed, now);
        status.message = Some(format!(
            "deadline_exceeded: {stuck} for longer than {}",
            humantime::format_duration(settings.transition_deadline)
        ));
    }
}

/// Once the container is what the document asks (`serving`: running the
/// current spec), the status observes the document's generation and the
/// restart the container answers.
fn record_convergence(
    status: &mut GameRuntimeStatus,
    doc: &GameRuntime,
    container: Option<&ContainerInfo>,
    serving: bool,
) {
    let spec = &doc.spec;
    let running = container.is_some_and(ContainerInfo::is_running);
    let converged = match spec.state {
        DesiredState::Running => serving,
        DesiredState::Stopped => !running,
    };
    if converged {
        status.observed_generation = doc.metadata.generation;
        // The container says which restart it answers; the record follows
        // it (a record rebuilt after a loss included).
        if let Some(token) = container
            .and_then(ContainerInfo::restart_token)
            .filter(|t| !t.is_empty())
        {
            status.observed_restart_token = Some(token.to_owned());
        }
    }
    if spec.state == DesiredState::Stopped {
        // A restart asked for while stopped has nothing to restart.
        status.observed_restart_token = Some(spec.restart_token.clone())
            .filter(|t| !t.is_empty())
            .or(status.observed_restart_token.take());
    }
}

/// The Ready condition: true while Running and `serving` (running the
/// current spec) and, with a health check, its probe `passing`; otherwise
/// its reason names the phase, the pause or the failing probe.
fn set_ready(
    status: &mut GameRuntimeStatus,
    container: Option<&ContainerInfo>,
    serving: bool,
    passing: Option<bool>,
    now: SystemTime,
) {
    let running = status.phase == Phase::Running && serving;
    let ready = running && passing != Some(false);
    let paused = container.is_some_and(|c| c.state == ContainerState::Paused);
    let (reason, text) = if ready && passing == Some(true) {
        (HEALTH_CHECK_PASSED.to_owned(), String::new())
    } else if ready {
        ("ContainerRunning".to_owned(), String::new())
    } else if running && !paused {
        (
            HEALTH_CHECK_FAILING.to_owned(),
            status.message.clone().unwrap_or_default(),
        )
    } else if paused && status.phase == Phase::Running {
        (
            CONTAINER_PAUSED.to_owned(),
            status.message.clone().unwrap_or_default(),
        )
    } else {
        (
            status.phase.to_string(),
            status.message.clone().unwrap_or_default(),
        )
    };
    status.set_condition(READY, ready, &reason, &text, now);
}

fn exited_phase(
    policy: RestartPolicy,
    container: &ContainerInfo,
    status: &GameRuntimeStatus,
    now: SystemTime,
    settings: &Settings,
) -> (Phase, Option<String>) {
    let code = container.exit_code.unwrap_or(-1);
    let oom = if container.oom_killed {
        ", OOM-killed"
    } else {
        ""
    };
    if !policy_restarts(policy, container.exit_code) {
        return if code == 0 {
            (
                Phase::Stopped,
                Some("the container exited with code 0".into()),
            )
        } else {
            (
                Phase::Failed,
                Some(format!("the container exited with code {code}{oom}")),
            )
        };
    }
    // The message names the whole back-off, not what is left of it, so
    // that it does not change (and cost a status write) every reconcile.
    let message = match crash_backoff(container, status, now, settings) {
        Some((delay, _)) => format!(
            "the container exited with code {code}{oom}; restarting after a back-off of {}",
            humantime::format_duration(delay)
        ),
        None => format!("the container exited with code {code}{oom}; restarting"),
    };
    (Phase::CrashLoopBackOff, Some(message))
}

fn failure_message(status: &GameRuntimeStatus) -> Option<String> {
    let op = status.last_operation.as_ref()?;
    Some(format!(
        "{}: {}",
        op.error_code.as_deref().unwrap_or("failure"),
        op.error_message.as_deref().unwrap_or("")
    ))
}

#[cfg(test)]
mod tests;
