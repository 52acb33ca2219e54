//! The disruption part of the decision, with no I/O: which actions are voluntary
//! disruptions of a running game, whether the game's session or a disruption budget holds
//! one back, and what the `UpdatePending` condition says of it.
//!
//! Involuntary repairs (a crash, a failed health check, a vanished container, a pause by
//! hand) never wait. Voluntary ones — a spec change that needs a new container, a restart
//! request, a scheduled restart, a stop asked for in the document — wait while the game is
//! Allocated, at most `spec.disruption.maxSessionWait` (counted from when the wait began:
//! the `UpdatePending` condition's transition time), unless the document's write forced
//! them. A recreate also needs a slot of every budget covering the game; the reconcile
//! finds out which budget has none (it needs etcd) and says so in
//! [`Observed::budget_wait`].

use std::time::{Duration, SystemTime};

use rtm_core::model::{
    ANNOTATION_FORCE, Condition, ConditionStatus, GameRuntime, GameRuntimeStatus, OpKind,
    REASON_DISRUPTION_BUDGET, REASON_IN_SESSION, Session, SessionState, Timestamp, UPDATE_PENDING,
};
use rtm_core::records::sessions::{DELETED, SessionRecord, UNREADABLE};

use super::{Action, Cause, Observed};

/// What holds a voluntary disruption back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// The game is in session.
    Session,
    /// A budget covering the game has no free slot.
    Budget,
}

/// A budget whose slots are all held, as the reconcile found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BudgetWait {
    /// The budget's name.
    pub(crate) budget: String,
    /// How many slots it has for the games it covers now.
    pub(crate) allowed: usize,
    /// The games holding its slots.
    pub(crate) holders: Vec<String>,
    /// Why it cannot be read, for a budget stored in a form that does not decode (it
    /// then holds back every voluntary recreate until it is fixed or deleted).
    pub(crate) unreadable: Option<String>,
}

/// The cause of `action` when it is a voluntary disruption of the game's running
/// container.
pub(crate) fn voluntary(action: &Action, observed: &Observed) -> Option<Cause> {
    let running = observed.container.as_ref().is_some_and(|c| c.is_alive());
    match *action {
        Action::Recreate {
            cause:
                cause @ (Cause::SpecChanged
                | Cause::RestartRequested
                | Cause::Scheduled
                | Cause::ImageMoved),
        } => Some(cause),
        Action::Stop { cause } if running => Some(cause),
        _ => None,
    }
}

/// Whether the document's last write forced its change past sessions and budgets
/// (`rtctl restart --force`): the force annotation names the document's generation. A
/// scheduled restart is never forced by it.
pub(crate) fn forced(doc: &GameRuntime, cause: Cause) -> bool {
    cause != Cause::Scheduled
        && doc
            .metadata
            .annotations
            .get(ANNOTATION_FORCE)
            .zip(doc.metadata.generation)
            .is_some_and(|(forced, generation)| forced.trim() == generation.to_string())
}

/// The Allocated session of the game, if any.
fn allocated(observed: &Observed) -> Option<&Session> {
    observed.session.value.as_ref().filter(|s| s.is_allocated())
}

/// The `UpdatePending` condition while it is True: a voluntary disruption waits.
pub(crate) fn update_pending(status: &GameRuntimeStatus) -> Option<&Condition> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == UPDATE_PENDING)
        .filter(|c| c.status == ConditionStatus::True)
}

/// Since when a voluntary disruption has waited for the session (the condition's
/// transition time while it says InSession; `now` when it begins).
fn waiting_since(status: &GameRuntimeStatus, now: SystemTime) -> SystemTime {
    update_pending(status)
        .filter(|c| c.reason == REASON_IN_SESSION)
        .and_then(|c| c.last_transition_time)
        .map_or(now, Timestamp::system_time)
}

/// When a disruption that waits for the session goes ahead anyway
/// (`maxSessionWait` after the wait began), if it is bounded.
fn session_deadline(
    doc: &GameRuntime,
    status: &GameRuntimeStatus,
    now: SystemTime,
) -> Option<SystemTime> {
    let bound = doc.spec.disruption.max_session_wait?;
    Some(waiting_since(status, now) + bound)
}

/// Whether the session holds a voluntary disruption for `cause` back, and for how long at
/// most (`Some(None)`: until it ends).
fn session_hold(
    doc: &GameRuntime,
    observed: &Observed,
    cause: Cause,
    now: SystemTime,
) -> Option<Option<Duration>> {
    allocated(observed)?;
    let idle_only = match cause {
        Cause::Scheduled => doc
            .spec
            .restart_schedule
            .as_ref()
            .is_none_or(|s| s.when_idle),
        _ => true,
    };
    if !idle_only || forced(doc, cause) {
        return None;
    }
    match session_deadline(doc, &observed.status.value, now) {
        Some(deadline) => {
            let left = deadline.duration_since(now).ok().filter(|d| !d.is_zero())?;
            Some(Some(left))
        }
        None => Some(None),
    }
}

/// `action`, or the wait that replaces it when it is a voluntary disruption held back.
pub(super) fn gate(
    doc: &GameRuntime,
    observed: &Observed,
    action: Action,
    now: SystemTime,
) -> Action {
    let Some(cause) = voluntary(&action, observed) else {
        return action;
    };
    if let Some(remaining) = session_hold(doc, observed, cause, now) {
        return Action::Defer {
            cause,
            hold: Hold::Session,
            remaining,
        };
    }
    let recreate = matches!(action, Action::Recreate { .. });
    if recreate && !forced(doc, cause) && observed.budget_wait.is_some() {
        return Action::Defer {
            cause,
            hold: Hold::Budget,
            remaining: None,
        };
    }
    action
}

/// What a voluntary disruption for `cause` is, for people.
pub(crate) fn what(doc: &GameRuntime, cause: Cause) -> String {
    match cause {
        Cause::SpecChanged => match doc.metadata.generation {
            Some(generation) => format!("the spec change of generation {generation}"),
            None => "the spec change".to_owned(),
        },
        Cause::RestartRequested => {
            format!("the restart asked for (token {:?})", doc.spec.restart_token)
        }
        Cause::Scheduled => "the scheduled restart".to_owned(),
        Cause::ImageMoved => format!("the move of {} in its registry", doc.spec.image),
        _ => "the disruption".to_owned(),
    }
}

/// What a held-back disruption is, for people.
fn what_of(doc: &GameRuntime, action: &Action) -> String {
    match action {
        Action::Defer { .. } if doc.spec.state == rtm_core::model::DesiredState::Stopped => {
            "the stop asked for".to_owned()
        }
        Action::Defer { cause, .. } => what(doc, *cause),
        _ => String::new(),
    }
}

/// The session as the status records it: the record as it is, or — once the record is
/// gone (deleted by hand, which also ends a session) — an Idle session in place of the
/// Allocated one recorded before. Changes of it are what the history records.
pub(crate) fn session_seen(
    previous: Option<&Session>,
    observed: &SessionRecord,
    now: SystemTime,
) -> Option<Session> {
    match (&observed.value, previous) {
        (Some(session), _) => Some(session.clone()),
        (None, Some(previous)) if previous.is_allocated() => Some(Session {
            state: SessionState::Idle,
            reference: None,
            since: Timestamp::from(now),
            container_id: previous.container_id.clone(),
            source: Some(DELETED.to_owned()),
        }),
        (None, previous) => previous.cloned(),
    }
}

/// The history entries a change of the recorded session from `previous` to `next` makes:
/// an allocation, a release, or both (a session replaced by another between two looks).
pub(crate) fn session_changes(
    previous: Option<&Session>,
    next: Option<&Session>,
) -> Vec<(OpKind, Session, Option<String>)> {
    let Some(next) = next else {
        return Vec::new();
    };
    if previous == Some(next) {
        return Vec::new();
    }
    let was_allocated = previous.is_some_and(Session::is_allocated);
    match (was_allocated, next.is_allocated()) {
        (false, true) => vec![(OpKind::Allocate, next.clone(), None)],
        (true, false) => vec![(OpKind::Release, next.clone(), None)],
        (true, true) => {
            let ended = Session {
                state: SessionState::Idle,
                reference: previous.and_then(|p| p.reference.clone()),
                since: next.since,
                container_id: previous.and_then(|p| p.container_id.clone()),
                source: None,
            };
            vec![
                (
                    OpKind::Release,
                    ended,
                    Some("its release was not seen: another session replaced it".to_owned()),
                ),
                (OpKind::Allocate, next.clone(), None),
            ]
        }
        (false, false) => vec![(
            OpKind::Release,
            next.clone(),
            Some("its allocation was not seen by a controller".to_owned()),
        )],
    }
}

/// Sets `UpdatePending` for the decision `action`: True while a voluntary disruption is held
/// back, saying what waits for what; False once nothing waits (a game that never waited
/// has no such condition, so this costs no write).
pub(super) fn record(
    status: &mut GameRuntimeStatus,
    doc: &GameRuntime,
    observed: &Observed,
    action: &Action,
    now: SystemTime,
) {
    match action {
        Action::Defer { hold, .. } => {
            let what = what_of(doc, action);
            let (reason, message) = match hold {
                Hold::Session => {
                    let session = allocated(observed);
                    let reference = session
                        .and_then(|s| s.reference.as_deref())
                        .map(|r| format!(" {r}"))
                        .unwrap_or_default();
                    let since = match session {
                        Some(s) if s.source.as_deref() == Some(UNREADABLE) => {
                            " (its record does not decode: fix or delete it)".to_owned()
                        }
                        Some(s) => format!(" (allocated since {})", s.since),
                        None => String::new(),
                    };
                    let bound = match session_deadline(doc, status, now) {
                        Some(deadline) => format!(
                            "; it goes ahead at {} (maxSessionWait)",
                            Timestamp::from(deadline)
                        ),
                        None => String::new(),
                    };
                    (
                        REASON_IN_SESSION,
                        format!("{what} waits for the session{reference}{since} to end{bound}"),
                    )
                }
                Hold::Budget => {
                    let message = match &observed.budget_wait {
                        Some(BudgetWait {
                            budget,
                            unreadable: Some(why),
                            ..
                        }) => format!(
                            "{what} waits: disruption budget {budget} does not decode ({why}); \
                             fix or delete it"
                        ),
                        Some(wait) => format!(
                            "{what} waits for a slot of disruption budget {}: {} of {} held ({})",
                            wait.budget,
                            wait.holders.len(),
                            wait.allowed,
                            wait.holders.join(", ")
                        ),
                        None => format!("{what} waits for a slot of a disruption budget"),
                    };
                    (REASON_DISRUPTION_BUDGET, message)
                }
            };
            status.set_condition(UPDATE_PENDING, true, reason, &message, now);
        }
        _ => {
            if update_pending(status).is_some() {
                status.set_condition(UPDATE_PENDING, false, "UpToDate", "", now);
            }
        }
    }
}

/// What the history of a voluntary disruption that went ahead while the game was in
/// session says of it: forced, or past `maxSessionWait`; `None` when the game was idle.
pub(crate) fn went_ahead(
    doc: &GameRuntime,
    observed: &Observed,
    action: &Action,
    now: SystemTime,
) -> Option<String> {
    let cause = voluntary(action, observed)?;
    let session = allocated(observed)?;
    let reference = session.reference.as_deref().unwrap_or("without a ref");
    if forced(doc, cause) {
        return Some(format!(
            "forced (rtctl --force) while in session {reference}: the match was ended"
        ));
    }
    if cause == Cause::Scheduled
        && doc
            .spec
            .restart_schedule
            .as_ref()
            .is_some_and(|s| !s.when_idle)
    {
        return Some(format!(
            "scheduled with whenIdle: false while in session {reference}: the match was ended"
        ));
    }
    let bound = doc.spec.disruption.max_session_wait?;
    let _ = now;
    Some(format!(
        "went ahead after maxSessionWait ({}) while in session {reference}: the match was ended",
        humantime::format_duration(bound)
    ))
}
