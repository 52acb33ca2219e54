//! plan() and derive_status() with sessions and budgets: voluntary disruptions of a game
//! in session wait (UpdatePending, InSession), involuntary repairs never do; a budget
//! without a free slot holds a recreate back; force and maxSessionWait let one through.

use super::*;
use crate::plan::disruption::{gate, session_changes, went_ahead};
use rtm_core::model::{
    ANNOTATION_FORCE, REASON_DISRUPTION_BUDGET, REASON_IN_SESSION, Session, SessionState,
    Timestamp, UPDATE_PENDING,
};

fn session(state: SessionState, reference: &str, since: u64) -> Session {
    Session {
        state,
        reference: Some(reference.to_owned()),
        since: Timestamp::from(at(since)),
        container_id: Some("c1".into()),
        source: Some("api".into()),
    }
}

/// A running container made from `before`'s spec, the game now in session.
fn allocated(before: &GameRuntime) -> Observed {
    let mut observed = observed(Some(container(before, ContainerState::Running)));
    observed.session = Versioned::new(Some(session(SessionState::Allocated, "match-42", 0)), 7);
    observed
}

fn pending(status: &GameRuntimeStatus) -> Option<&Condition> {
    status.conditions.iter().find(|c| c.type_ == UPDATE_PENDING)
}

fn new_image() -> GameRuntime {
    let mut d = doc("");
    d.spec.image = "rtmanager-test/engine:2".into();
    d.metadata.generation = Some(4);
    d
}

#[test]
fn an_allocated_game_keeps_its_container_through_an_image_change_and_says_why() {
    let (old, new) = (doc(""), new_image());
    let observed = allocated(&old);
    let action = decide(Some(&new), &observed, 10);
    assert_eq!(
        action,
        Action::Defer {
            cause: Cause::SpecChanged,
            hold: Hold::Session,
            remaining: None
        }
    );
    assert!(!action.acts(), "a deferred disruption takes no lease");
    let status = status_of(Some(&new), &observed, 10);
    let condition = pending(&status).expect("UpdatePending");
    assert_eq!(condition.status, ConditionStatus::True);
    assert_eq!(condition.reason, REASON_IN_SESSION);
    assert!(
        condition.message.contains("generation 4") && condition.message.contains("match-42"),
        "{}",
        condition.message
    );
    assert_eq!(
        status.session.as_ref().map(|s| s.state),
        Some(SessionState::Allocated)
    );
    assert_eq!(
        status.phase,
        Phase::Running,
        "the old container serves the match"
    );
    assert_eq!(ready(&status).status, ConditionStatus::True);
    assert_eq!(
        status.observed_generation,
        Some(3),
        "generation 4 is not observed yet"
    );
}

#[test]
fn once_released_the_change_proceeds_and_update_pending_turns_false() {
    let (old, new) = (doc(""), new_image());
    let mut observed = allocated(&old);
    observed.status.value = status_of(Some(&new), &observed, 10);
    observed.session = Versioned::new(Some(session(SessionState::Idle, "match-42", 20)), 8);
    assert_eq!(
        decide(Some(&new), &observed, 21),
        Action::Recreate {
            cause: Cause::SpecChanged
        }
    );
    let status = status_of(Some(&new), &observed, 21);
    let condition = pending(&status).expect("the condition stays, False");
    assert_eq!(condition.status, ConditionStatus::False);
    assert_eq!(
        condition.last_transition_time,
        Some(Timestamp::from(at(21)))
    );
}

#[test]
fn a_game_that_never_waited_has_no_update_pending_condition() {
    let d = doc("");
    let observed = observed(Some(container(&d, ContainerState::Running)));
    assert!(pending(&status_of(Some(&d), &observed, 5)).is_none());
}

#[test]
fn involuntary_repairs_do_not_wait_for_the_session() {
    let d = doc("");
    let mut crashed = allocated(&d);
    crashed.container = Some(exited(container(&d, ContainerState::Running), 1, 5));
    assert_eq!(
        decide(Some(&d), &crashed, 6),
        Action::Restart {
            cause: Cause::Exited
        }
    );
    let mut vanished = allocated(&d);
    vanished.container = None;
    vanished.status.value.container_id = Some("c1".into());
    assert_eq!(
        decide(Some(&d), &vanished, 6),
        Action::Start {
            cause: Cause::Vanished
        }
    );
    let mut paused = allocated(&d);
    paused.container.as_mut().unwrap().state = ContainerState::Paused;
    assert_eq!(decide(Some(&d), &paused, 6), Action::Unpause);
}

#[test]
fn a_restart_request_and_a_stop_wait_too_and_force_names_its_generation() {
    let old = doc("");
    let mut restart = old.clone();
    restart.spec.restart_token = "r2".into();
    restart.metadata.generation = Some(4);
    let observed = allocated(&old);
    assert!(matches!(
        decide(Some(&restart), &observed, 10),
        Action::Defer {
            cause: Cause::RestartRequested,
            hold: Hold::Session,
            ..
        }
    ));
    let mut forced = restart.clone();
    forced
        .metadata
        .annotations
        .insert(ANNOTATION_FORCE.into(), "4".into());
    let action = decide(Some(&forced), &observed, 10);
    assert_eq!(
        action,
        Action::Recreate {
            cause: Cause::RestartRequested
        }
    );
    let note = went_ahead(&forced, &observed, &action, at(10)).expect("a note");
    assert!(
        note.contains("forced") && note.contains("match-42"),
        "{note}"
    );
    // A force written for an earlier generation forces nothing now.
    let mut stale = forced.clone();
    stale.metadata.generation = Some(5);
    assert!(matches!(
        decide(Some(&stale), &observed, 10),
        Action::Defer { .. }
    ));
    let mut stop = old.clone();
    stop.spec.state = DesiredState::Stopped;
    stop.metadata.generation = Some(4);
    let action = decide(Some(&stop), &observed, 10);
    assert!(
        matches!(
            action,
            Action::Defer {
                hold: Hold::Session,
                ..
            }
        ),
        "{action:?}"
    );
    let status = status_of(Some(&stop), &observed, 10);
    assert!(
        pending(&status)
            .unwrap()
            .message
            .starts_with("the stop asked for")
    );
}

#[test]
fn max_session_wait_bounds_the_wait_from_when_it_began() {
    let old = doc("");
    let mut new = new_image();
    new.spec.disruption.max_session_wait = Some(Duration::from_secs(60));
    let mut observed = allocated(&old);
    // The wait begins at 100 (the condition's transition time).
    observed.status.value = status_of(Some(&new), &observed, 100);
    assert_eq!(
        pending(&observed.status.value)
            .unwrap()
            .last_transition_time,
        Some(Timestamp::from(at(100)))
    );
    assert_eq!(
        decide(Some(&new), &observed, 130),
        Action::Defer {
            cause: Cause::SpecChanged,
            hold: Hold::Session,
            remaining: Some(Duration::from_secs(30))
        }
    );
    let action = decide(Some(&new), &observed, 160);
    assert_eq!(
        action,
        Action::Recreate {
            cause: Cause::SpecChanged
        }
    );
    let note = went_ahead(&new, &observed, &action, at(160)).expect("a note");
    assert!(note.contains("maxSessionWait (1m)"), "{note}");
}

#[test]
fn a_full_budget_holds_a_voluntary_recreate_back_but_not_a_repair() {
    let (old, new) = (doc(""), new_image());
    let mut observed = observed(Some(container(&old, ContainerState::Running)));
    observed.budget_wait = Some(BudgetWait {
        budget: "casual".into(),
        allowed: 2,
        holders: vec!["g7".into(), "g8".into()],
        unreadable: None,
    });
    let action = decide(Some(&new), &observed, 10);
    assert_eq!(
        action,
        Action::Defer {
            cause: Cause::SpecChanged,
            hold: Hold::Budget,
            remaining: None
        }
    );
    let status = status_of(Some(&new), &observed, 10);
    let condition = pending(&status).unwrap();
    assert_eq!(condition.reason, REASON_DISRUPTION_BUDGET);
    assert!(
        condition.message.contains("casual: 2 of 2 held (g7, g8)"),
        "{}",
        condition.message
    );
    // A crash of the same game is repaired at once.
    let mut crashed = observed.clone();
    crashed.container = Some(exited(container(&new, ContainerState::Running), 1, 5));
    crashed.status.value.observed_generation = Some(4);
    assert_eq!(
        decide(Some(&new), &crashed, 6),
        Action::Restart {
            cause: Cause::Exited
        }
    );
    // A stop leaves the budget's pool: it does not wait for a slot.
    let mut stop = old.clone();
    stop.spec.state = DesiredState::Stopped;
    stop.metadata.generation = Some(4);
    assert!(matches!(
        decide(Some(&stop), &observed, 10),
        Action::Stop { .. }
    ));
    // Forced past it.
    let mut forced = new.clone();
    forced
        .metadata
        .annotations
        .insert(ANNOTATION_FORCE.into(), "4".into());
    assert!(matches!(
        decide(Some(&forced), &observed, 10),
        Action::Recreate { .. }
    ));
}

#[test]
fn a_scheduled_restart_waits_for_the_session_unless_when_idle_is_false() {
    let d = doc("  restartSchedule: {cron: '0 6 * * *'}\n");
    let observed = allocated(&d);
    let scheduled = Action::Recreate {
        cause: Cause::Scheduled,
    };
    assert!(matches!(
        gate(&d, &observed, scheduled, at(10)),
        Action::Defer {
            cause: Cause::Scheduled,
            hold: Hold::Session,
            ..
        }
    ));
    let hard = doc("  restartSchedule: {cron: '0 6 * * *', whenIdle: false}\n");
    assert_eq!(gate(&hard, &allocated(&hard), scheduled, at(10)), scheduled);
    let note = went_ahead(&hard, &allocated(&hard), &scheduled, at(10)).unwrap();
    assert!(note.contains("whenIdle: false"), "{note}");
}

#[test]
fn an_unreadable_session_record_counts_as_allocated() {
    let (old, new) = (doc(""), new_image());
    let mut observed = observed(Some(container(&old, ContainerState::Running)));
    let kv = rtm_core::store::KeyValue {
        key: "/rtmanager/sessions/g1".into(),
        value: b"{not json".to_vec(),
        create_revision: 5,
        mod_revision: 5,
        version: 1,
        lease: 0,
    };
    observed.session = rtm_core::records::sessions::from_kv(Some(&kv));
    assert!(matches!(
        decide(Some(&new), &observed, 10),
        Action::Defer {
            hold: Hold::Session,
            ..
        }
    ));
    // It has no time of its own: the condition says what to do, not "since 1970".
    let status = status_of(Some(&new), &observed, 10);
    let message = &pending(&status).expect("UpdatePending").message;
    assert!(
        message.contains("does not decode: fix or delete it"),
        "{message}"
    );
    assert!(!message.contains("1970"), "{message}");
}

#[test]
fn session_changes_become_allocate_and_release_entries() {
    let a = session(SessionState::Allocated, "m1", 0);
    let idle = session(SessionState::Idle, "m1", 50);
    let b = session(SessionState::Allocated, "m2", 60);
    let kinds = |changes: Vec<(OpKind, Session, Option<String>)>| {
        changes
            .into_iter()
            .map(|(kind, s, _)| (kind, s.reference))
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(session_changes(None, None)), vec![]);
    assert_eq!(
        kinds(session_changes(None, Some(&a))),
        vec![(OpKind::Allocate, Some("m1".into()))]
    );
    assert_eq!(
        kinds(session_changes(Some(&a), Some(&idle))),
        vec![(OpKind::Release, Some("m1".into()))]
    );
    assert_eq!(kinds(session_changes(Some(&a), Some(&a))), vec![]);
    assert_eq!(
        kinds(session_changes(Some(&a), Some(&b))),
        vec![
            (OpKind::Release, Some("m1".into())),
            (OpKind::Allocate, Some("m2".into()))
        ]
    );
    // A session deleted by hand after it was recorded Allocated reads as its release.
    let d = doc("");
    let mut observed = observed(Some(container(&d, ContainerState::Running)));
    observed.status.value.session = Some(a.clone());
    let status = status_of(Some(&d), &observed, 70);
    let seen = status.session.expect("recorded as Idle");
    assert_eq!(seen.state, SessionState::Idle);
    assert_eq!(seen.source.as_deref(), Some("deleted"));
    assert_eq!(
        kinds(session_changes(Some(&a), Some(&seen))),
        vec![(OpKind::Release, None)]
    );
}
