//! plan() and derive_status() as specifications: one case per rule.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::*;
use crate::runtime::{
    LABEL_GAME, LABEL_MANAGED_BY, LABEL_RESTART_TOKEN, LABEL_SPEC_HASH, MANAGED_BY,
};
use rtm_core::model::parse::parse_documents;
use rtm_core::model::{Condition, ConditionStatus, LastOperation, OpKind};
use rtm_core::records::Versioned;

const T0: u64 = 1_800_000_000;

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + seconds)
}

fn doc(extra: &str) -> GameRuntime {
    let yaml = format!(
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: g1\n\
         spec:\n  image: rtmanager-test/engine:1\n{extra}"
    );
    let mut doc = parse_documents(&yaml).unwrap().remove(0);
    doc.metadata.generation = Some(3);
    doc
}

/// A container of `doc`, in `state`, carrying the doc's spec hash.
fn container(doc: &GameRuntime, state: ContainerState) -> ContainerInfo {
    let labels = BTreeMap::from([
        (LABEL_GAME.to_owned(), "g1".to_owned()),
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (LABEL_SPEC_HASH.to_owned(), doc.spec.recreate_hash("g1")),
    ]);
    ContainerInfo {
        id: "c1".into(),
        name: "rtm-g1".into(),
        image: doc.spec.image.clone(),
        image_id: "sha256:1".into(),
        hostname: "g1".into(),
        labels,
        state,
        exit_code: None,
        oom_killed: false,
        started_at: Some(at(0)),
        finished_at: None,
        error: None,
        address: None,
        ports: Vec::new(),
        health: None,
    }
}

fn exited(mut c: ContainerInfo, code: i64, after: u64) -> ContainerInfo {
    c.state = ContainerState::Exited;
    c.exit_code = Some(code);
    c.finished_at = Some(at(after));
    c
}

/// Observed state of a game converged at the document's generation.
fn observed(container: Option<ContainerInfo>) -> Observed {
    let status = GameRuntimeStatus {
        observed_generation: Some(3),
        ..GameRuntimeStatus::default()
    };
    Observed {
        status: Versioned::new(status, 1),
        container,
        ..Observed::default()
    }
}

fn decide(doc: Option<&GameRuntime>, observed: &Observed, now: u64) -> Action {
    plan(doc, observed, at(now), &Settings::default())
}

#[test]
fn no_container_and_state_running_starts() {
    let d = doc("");
    assert_eq!(
        decide(Some(&d), &observed(None), 0),
        Action::Start {
            cause: Cause::SpecChanged
        }
    );
}

#[test]
fn a_container_removed_by_hand_is_started_again() {
    let d = doc("");
    let mut o = observed(None);
    o.status.value.container_id = Some("gone".into());
    assert_eq!(
        decide(Some(&d), &o, 0),
        Action::Start {
            cause: Cause::Vanished
        }
    );
}

#[test]
fn a_running_container_matching_the_spec_needs_nothing() {
    let d = doc("");
    let c = container(&d, ContainerState::Running);
    assert_eq!(decide(Some(&d), &observed(Some(c)), 0), Action::None);
}

#[test]
fn running_and_state_stopped_stops() {
    let d = doc("  state: Stopped\n");
    let c = container(&d, ContainerState::Running);
    assert_eq!(
        decide(Some(&d), &observed(Some(c)), 0),
        Action::Stop {
            cause: Cause::SpecChanged
        }
    );
    let stopped = exited(container(&d, ContainerState::Running), 0, 5);
    assert_eq!(decide(Some(&d), &observed(Some(stopped)), 10), Action::None);
}

#[test]
fn a_spec_change_that_needs_a_new_container_recreates() {
    let old = doc("");
    let new = doc("  env: [{name: SEED, value: \"7\"}]\n");
    let c = container(&old, ContainerState::Running);
    assert_eq!(
        decide(Some(&new), &observed(Some(c)), 0),
        Action::Recreate {
            cause: Cause::SpecChanged
        }
    );
}

#[test]
fn a_spec_change_that_needs_no_new_container_does_not_recreate() {
    let old = doc("");
    let new = doc("  stopTimeout: 45s\n  restartPolicy: OnFailure\n");
    let c = container(&old, ContainerState::Running);
    assert_eq!(decide(Some(&new), &observed(Some(c)), 0), Action::None);
}

#[test]
fn a_new_restart_token_recreates_once() {
    let d = doc("  restartToken: t-2\n");
    let c = container(&d, ContainerState::Running);
    let mut o = observed(Some(c));
    o.status.value.observed_restart_token = Some("t-1".into());
    assert_eq!(
        decide(Some(&d), &o, 0),
        Action::Recreate {
            cause: Cause::RestartRequested
        }
    );
    o.status.value.observed_restart_token = Some("t-2".into());
    assert_eq!(
        decide(Some(&d), &o, 0),
        Action::None,
        "an observed token is not acted on twice"
    );
}

/// A container created under restart token `token`.
fn answering(mut c: ContainerInfo, token: &str) -> ContainerInfo {
    c.labels
        .insert(LABEL_RESTART_TOKEN.to_owned(), token.to_owned());
    c
}

#[test]
fn the_containers_label_says_which_restart_it_answers_whatever_the_record_says() {
    let d = doc("  restartToken: t-2\n");
    let lost = Observed::default();
    let answered = answering(container(&d, ContainerState::Running), "t-2");
    assert_eq!(
        decide(
            Some(&d),
            &Observed {
                container: Some(answered.clone()),
                ..lost.clone()
            },
            0
        ),
        Action::None,
        "a lost record never replays the restart the container answers"
    );
    let mut forged = observed(Some(answered));
    forged.status.value.observed_restart_token = Some("t-0".into());
    assert_eq!(
        decide(Some(&d), &forged, 0),
        Action::None,
        "nor a forged one"
    );

    let older = answering(container(&d, ContainerState::Running), "t-1");
    assert_eq!(
        decide(Some(&d), &observed(Some(older)), 0),
        Action::Recreate {
            cause: Cause::RestartRequested
        }
    );
}

#[test]
fn an_unlabelled_container_whose_record_is_lost_is_not_restarted() {
    let d = doc("  restartToken: t-2\n");
    let lost = Observed {
        container: Some(container(&d, ContainerState::Running)),
        ..Observed::default()
    };
    assert_eq!(decide(Some(&d), &lost, 0), Action::None);
}

#[test]
fn a_rebuilt_record_takes_the_restart_token_from_the_container() {
    let d = doc("  restartToken: t-2\n");
    let lost = Observed {
        container: Some(answering(container(&d, ContainerState::Running), "t-2")),
        ..Observed::default()
    };
    let status = status_of(Some(&d), &lost, 0);
    assert_eq!(status.observed_restart_token.as_deref(), Some("t-2"));
    assert_eq!(status.observed_generation, Some(3));
}

#[test]
fn a_paused_container_is_resumed_in_place_and_is_not_ready_meanwhile() {
    let d = doc("");
    let o = observed(Some(container(&d, ContainerState::Paused)));
    assert_eq!(decide(Some(&d), &o, 0), Action::Unpause);
    let status = status_of(Some(&d), &o, 0);
    let condition = ready(&status);
    assert_eq!(condition.status, ConditionStatus::False);
    assert_eq!(condition.reason, CONTAINER_PAUSED);
}

#[test]
fn a_paused_container_is_still_stopped_recreated_or_restarted_when_asked() {
    let stopped = doc("  state: Stopped\n");
    let o = observed(Some(container(&stopped, ContainerState::Paused)));
    assert_eq!(
        decide(Some(&stopped), &o, 0),
        Action::Stop {
            cause: Cause::SpecChanged
        }
    );
    assert_eq!(status_of(Some(&stopped), &o, 0).phase, Phase::Stopping);

    let d = doc("");
    let mut changed = container(&d, ContainerState::Paused);
    changed
        .labels
        .insert(LABEL_SPEC_HASH.to_owned(), "older".to_owned());
    assert_eq!(
        decide(Some(&d), &observed(Some(changed)), 0),
        Action::Recreate {
            cause: Cause::SpecChanged
        }
    );

    let r = doc("  restartToken: t-2\n");
    let paused = answering(container(&r, ContainerState::Paused), "t-1");
    assert_eq!(
        decide(Some(&r), &observed(Some(paused)), 0),
        Action::Recreate {
            cause: Cause::RestartRequested
        }
    );
}

#[test]
fn a_first_crash_restarts_at_once_and_later_ones_back_off_exponentially() {
    let d = doc("");
    let crashed = exited(container(&d, ContainerState::Running), 1, 60);
    let mut o = observed(Some(crashed));
    assert_eq!(
        decide(Some(&d), &o, 60),
        Action::Restart {
            cause: Cause::Exited
        }
    );

    o.status.value.restart_count = 1; // second crash: 10 s
    assert_eq!(
        decide(Some(&d), &o, 64),
        Action::WaitBackoff {
            remaining: Duration::from_secs(6)
        }
    );
    assert_eq!(
        decide(Some(&d), &o, 70),
        Action::Restart {
            cause: Cause::Exited
        }
    );
    o.status.value.restart_count = 3; // fourth crash: 40 s
    assert_eq!(
        decide(Some(&d), &o, 61),
        Action::WaitBackoff {
            remaining: Duration::from_secs(39)
        }
    );
    o.status.value.restart_count = 30; // capped at 5 minutes
    assert_eq!(
        decide(Some(&d), &o, 60),
        Action::WaitBackoff {
            remaining: Duration::from_secs(300)
        }
    );
}

#[test]
fn a_crash_after_a_long_healthy_run_restarts_at_once() {
    let d = doc("");
    let crashed = exited(container(&d, ContainerState::Running), 1, 3600);
    let mut o = observed(Some(crashed));
    o.status.value.restart_count = 8;
    assert_eq!(
        decide(Some(&d), &o, 3600),
        Action::Restart {
            cause: Cause::Exited
        }
    );
}

#[test]
fn restart_policy_decides_what_an_exit_means() {
    let on_failure = doc("  restartPolicy: OnFailure\n");
    let clean = exited(container(&on_failure, ContainerState::Running), 0, 5);
    assert_eq!(
        decide(Some(&on_failure), &observed(Some(clean.clone())), 5),
        Action::None
    );
    let failed = exited(container(&on_failure, ContainerState::Running), 2, 5);
    assert_eq!(
        decide(Some(&on_failure), &observed(Some(failed.clone())), 5),
        Action::Restart {
            cause: Cause::Exited
        }
    );
    let never = doc("  restartPolicy: Never\n");
    assert_eq!(
        decide(Some(&never), &observed(Some(failed)), 5),
        Action::None
    );
}

#[test]
fn a_container_created_but_never_started_is_started() {
    let d = doc("");
    let c = container(&d, ContainerState::Created);
    assert_eq!(
        decide(Some(&d), &observed(Some(c)), 0),
        Action::Start {
            cause: Cause::NeverStarted
        }
    );
}

#[test]
fn a_deleted_document_removes_what_is_left_and_then_nothing() {
    let d = doc("");
    let c = container(&d, ContainerState::Running);
    assert_eq!(decide(None, &observed(Some(c)), 0), Action::Remove);
    assert_eq!(
        decide(None, &observed(None), 0),
        Action::Remove,
        "the status is cleared too"
    );
    let nothing = Observed::default();
    assert_eq!(decide(None, &nothing, 0), Action::None);
}

// ---------------------------------------------------------------- status

fn status_of(doc: Option<&GameRuntime>, observed: &Observed, now: u64) -> GameRuntimeStatus {
    derive_status(doc, observed, at(now), &Settings::default())
}

fn ready(status: &GameRuntimeStatus) -> &Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .expect("Ready condition")
}

#[test]
fn a_converged_running_game_is_ready_and_observes_the_generation() {
    let d = doc("");
    let status = status_of(
        Some(&d),
        &observed(Some(container(&d, ContainerState::Running))),
        0,
    );
    assert_eq!(status.phase, Phase::Running);
    assert_eq!(status.observed_generation, Some(3));
    assert_eq!(status.container_id.as_deref(), Some("c1"));
    assert_eq!(ready(&status).status, ConditionStatus::True);
    assert_eq!(ready(&status).reason, "ContainerRunning");
}

#[test]
fn ready_transition_time_changes_only_when_the_condition_flips() {
    let d = doc("");
    let running = observed(Some(container(&d, ContainerState::Running)));
    let first = status_of(Some(&d), &running, 0);
    let again = status_of(
        Some(&d),
        &Observed {
            status: Versioned::new(first.clone(), 1),
            ..running.clone()
        },
        100,
    );
    assert_eq!(
        again, first,
        "nothing changed: the same status, so no write"
    );

    let crashed = exited(container(&d, ContainerState::Running), 137, 200);
    let flipped = status_of(
        Some(&d),
        &Observed {
            status: Versioned::new(again.clone(), 1),
            ..observed(Some(crashed))
        },
        200,
    );
    assert_eq!(ready(&flipped).status, ConditionStatus::False);
    assert_ne!(
        ready(&flipped).last_transition_time,
        ready(&again).last_transition_time
    );
    assert_eq!(flipped.phase, Phase::CrashLoopBackOff);
    assert_eq!(flipped.last_exit_code, Some(137));
}

#[test]
fn crash_loop_status_does_not_change_while_the_backoff_runs() {
    let d = doc("");
    let crashed = exited(container(&d, ContainerState::Running), 1, 0);
    let mut o = observed(Some(crashed));
    o.status.value.restart_count = 2;
    let first = status_of(Some(&d), &o, 1);
    o.status.value = first.clone();
    assert_eq!(
        status_of(Some(&d), &o, 15),
        first,
        "no status churn during the back-off"
    );
    assert!(first.message.unwrap().contains("back-off of 20s"));
}

#[test]
fn an_oom_kill_is_reported() {
    let d = doc("");
    let mut c = exited(container(&d, ContainerState::Running), 137, 5);
    c.oom_killed = true;
    let status = status_of(Some(&d), &observed(Some(c)), 5);
    assert!(status.oom_killed);
    assert!(status.message.unwrap().contains("OOM-killed"));
}

#[test]
fn a_failed_start_shows_phase_failed_with_its_code() {
    let d = doc("");
    let mut o = observed(None);
    o.status.value.observed_generation = None; // never converged
    o.status.value.last_operation = Some(LastOperation {
        op_kind: OpKind::Start,
        outcome: Outcome::Failure,
        error_code: Some("image_not_found".into()),
        error_message: Some("image x is not present".into()),
        source_ref: None,
        finished_at: None,
    });
    let status = status_of(Some(&d), &o, 0);
    assert_eq!(status.phase, Phase::Failed);
    assert!(status.message.unwrap().starts_with("image_not_found"));
    assert_eq!(status.observed_generation, None, "not converged");
}

#[test]
fn a_transitional_phase_past_its_deadline_turns_failed() {
    let d = doc("");
    let c = container(&d, ContainerState::Created);
    let starting = status_of(Some(&d), &observed(Some(c.clone())), 0);
    assert_eq!(starting.phase, Phase::Starting);
    let later = status_of(
        Some(&d),
        &Observed {
            status: Versioned::new(starting, 1),
            ..observed(Some(c))
        },
        301,
    );
    assert_eq!(later.phase, Phase::Failed);
    assert!(later.message.unwrap().starts_with("deadline_exceeded"));
}

#[test]
fn a_stopped_game_observes_its_restart_token() {
    let d = doc("  state: Stopped\n  restartToken: t-9\n");
    let status = status_of(Some(&d), &observed(None), 0);
    assert_eq!(status.phase, Phase::Stopped);
    assert_eq!(status.observed_restart_token.as_deref(), Some("t-9"));
}

// ---------------------------------------------------------------- properties

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// An abstract Docker host and controller: applies an action the way
    /// the lifecycle services do, to check that planning converges.
    fn act(doc: &GameRuntime, observed: &mut Observed, action: Action, now: SystemTime) {
        let fresh = |observed: &mut Observed| {
            let mut c = container(doc, ContainerState::Running);
            c.id = format!("c{}", observed.status.value.restart_count + 100);
            c.started_at = Some(now);
            c.labels.insert(
                LABEL_RESTART_TOKEN.to_owned(),
                doc.spec.restart_token.clone(),
            );
            c
        };
        match action {
            Action::None | Action::WaitBackoff { .. } | Action::Defer { .. } => {}
            Action::Unpause => {
                if let Some(c) = observed.container.as_mut() {
                    c.state = ContainerState::Running;
                }
            }
            Action::Start { cause } | Action::Restart { cause } | Action::Recreate { cause } => {
                if matches!(action, Action::Restart { .. }) || cause == Cause::Vanished {
                    observed.status.value.restart_count += 1;
                }
                let c = fresh(observed);
                observed.status.value.container_id = Some(c.id.clone());
                observed.container = Some(c);
                if !doc.spec.restart_token.is_empty() {
                    observed.status.value.observed_restart_token =
                        Some(doc.spec.restart_token.clone());
                }
            }
            Action::Stop { .. } => {
                if let Some(c) = observed.container.as_mut() {
                    c.state = ContainerState::Exited;
                    c.exit_code = Some(0);
                    c.finished_at = Some(now);
                }
            }
            Action::Remove => {
                observed.container = None;
                observed.status = Versioned::absent();
            }
        }
        if !observed.status.exists() && action.acts() {
            observed.status.revision = Some(1);
        }
    }

    fn arb_doc() -> impl Strategy<Value = GameRuntime> {
        (
            prop::bool::ANY,
            prop_oneof![Just("Always"), Just("OnFailure"), Just("Never")],
            prop_oneof![Just(""), Just("t-1"), Just("t-2")],
            prop_oneof![Just(""), Just("  env: [{name: A, value: \"1\"}]\n")],
        )
            .prop_map(|(running, policy, token, env)| {
                let state = if running { "Running" } else { "Stopped" };
                let token = if token.is_empty() {
                    String::new()
                } else {
                    format!("  restartToken: {token}\n")
                };
                doc(&format!(
                    "  state: {state}\n  restartPolicy: {policy}\n{token}{env}"
                ))
            })
    }

    fn arb_state() -> impl Strategy<Value = Option<(ContainerState, i64, bool)>> {
        prop::option::of((
            prop_oneof![
                Just(ContainerState::Running),
                Just(ContainerState::Created),
                Just(ContainerState::Exited),
                Just(ContainerState::Dead),
                Just(ContainerState::Paused),
            ],
            prop_oneof![Just(0i64), Just(1), Just(137)],
            prop::bool::ANY,
        ))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// From any observed state, planning and acting reaches a state
        /// where nothing more is done (once crash back-offs have elapsed),
        /// and deriving the status never panics.
        #[test]
        fn repeated_planning_converges(
            doc in arb_doc(),
            old_doc in arb_doc(),
            state in arb_state(),
            restart_count in 0u32..8,
            observed_token in prop_oneof![Just(None), Just(Some("t-1".to_owned()))],
            deleted in prop::bool::ANY,
        ) {
            let settings = Settings::default();
            let mut observed = observed(state.map(|(state, code, stale)| {
                // A container made from an older spec, or from this one.
                let mut c = container(if stale { &old_doc } else { &doc }, state.clone());
                if state.has_exited() {
                    c = exited(c, code, 30);
                }
                c
            }));
            observed.status.value.restart_count = restart_count;
            observed.status.value.observed_restart_token = observed_token;
            let doc = (!deleted).then_some(doc);
            let mut now = at(60);
            let mut settled = false;
            for _ in 0..6 {
                let action = plan(doc.as_ref(), &observed, now, &settings);
                let _ = derive_status(doc.as_ref(), &observed, now, &settings);
                match action {
                    Action::None => { settled = true; break; }
                    Action::WaitBackoff { remaining } => now += remaining,
                    action => {
                        match &doc {
                            Some(doc) => act(doc, &mut observed, action, now),
                            None => { prop_assert_eq!(action, Action::Remove); observed = Observed::default(); }
                        }
                        now += Duration::from_secs(1);
                    }
                }
            }
            prop_assert!(settled, "no convergence from {:?}", observed);
            // Once settled, a running game runs the current spec.
            if let Some(doc) = &doc && doc.spec.state == DesiredState::Running
                && let Some(c) = &observed.container && c.is_running() {
                let hash = doc.spec.recreate_hash("g1");
                prop_assert_eq!(c.spec_hash(), Some(hash.as_str()));
            }
        }
    }
}

#[test]
fn starting_a_stopped_game_again_is_no_crash() {
    let d = doc("");
    let stopped = exited(container(&d, ContainerState::Running), 0, 5);
    let mut o = observed(Some(stopped));
    o.status.value.observed_generation = Some(2); // converged while Stopped; now generation 3
    o.status.value.restart_count = 4;
    assert_eq!(
        decide(Some(&d), &o, 6),
        Action::Start {
            cause: Cause::SpecChanged
        }
    );
}

mod disruption;
mod events;
mod health;
mod image;
mod schedule;
