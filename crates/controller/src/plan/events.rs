//! Which events a look at a game calls for: pure, from what the plan saw and decided. Each
//! comes with its occurrence — what makes it a new one (the crashed container and when it
//! exited, the container the health check judged, the generation an update waits with) —
//! so that the recorder writes once per occurrence, never per resync or per probe.

use std::time::SystemTime;

use rtm_core::model::{GameRuntime, GameRuntimeStatus};
use rtm_core::records::events::EventReason;

use super::disruption::update_pending;
use super::health::{judged, judgement};
use super::{Action, Observed};

/// An event a look calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Noticed {
    /// What was observed.
    pub(crate) reason: EventReason,
    /// What makes it a new occurrence (equal: the same one, seen again).
    pub(crate) occurrence: String,
    /// What was seen, for people.
    pub(crate) message: String,
}

/// The events of one look: `action` planned for `doc` over `observed`, `status` derived.
pub(crate) fn noticed(
    doc: Option<&GameRuntime>,
    observed: &Observed,
    action: &Action,
    status: &GameRuntimeStatus,
    now: SystemTime,
) -> Vec<Noticed> {
    let mut events = Vec::new();
    let Some(doc) = doc else { return events };
    let container = observed.container.as_ref();
    if let (Action::WaitBackoff { .. }, Some(c)) = (action, container)
        && c.state.has_exited()
    {
        let exited = c
            .finished_at
            .and_then(|at| at.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis());
        events.push(Noticed {
            reason: EventReason::BackOff,
            occurrence: format!("{} exited at {exited}", c.id),
            message: status
                .message
                .clone()
                .unwrap_or_else(|| "the container exited; restarting after a back-off".into()),
        });
    }
    if let (Some(check), Some(c)) = (doc.spec.health_check.as_ref(), container)
        && let Some(verdict) = judged(doc, observed, now)
    {
        events.push(Noticed {
            reason: EventReason::HealthCheckFailed,
            occurrence: format!("{} {verdict:?}", c.id),
            message: judgement(verdict, check, observed),
        });
    }
    if let Action::Defer { hold, .. } = action {
        let message = update_pending(status)
            .map(|c| c.message.clone())
            .unwrap_or_else(|| format!("an update waits ({hold:?})"));
        events.push(Noticed {
            reason: EventReason::UpdateDeferred,
            occurrence: format!(
                "{hold:?} generation {} token {:?}",
                doc.metadata.generation.unwrap_or_default(),
                doc.spec.restart_token
            ),
            message,
        });
    }
    events
}
