//! noticed(): which events a look calls for, and what makes each a new occurrence.

use super::*;
use crate::plan::events::noticed;
use rtm_core::model::{Session, SessionState, Timestamp};
use rtm_core::records::events::EventReason;

fn events(doc: &GameRuntime, observed: &Observed, now: u64) -> Vec<(EventReason, String)> {
    let action = decide(Some(doc), observed, now);
    let status = status_of(Some(doc), observed, now);
    noticed(Some(doc), observed, &action, &status, at(now))
        .into_iter()
        .map(|e| (e.reason, e.occurrence))
        .collect()
}

/// A game that crashed `restarts` times before, its container now exited with 1 at 10 s.
fn crashed(doc: &GameRuntime, restarts: u32) -> Observed {
    let mut observed = observed(Some(exited(container(doc, ContainerState::Running), 1, 10)));
    observed.status.value.restart_count = restarts;
    observed
}

#[test]
fn a_crash_in_back_off_is_one_occurrence_however_often_it_is_looked_at() {
    let d = doc("");
    let observed = crashed(&d, 2);
    let first = events(&d, &observed, 11);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].0, EventReason::BackOff);
    // Resyncs during the back-off see the same occurrence.
    assert_eq!(events(&d, &observed, 12), first);
    // The next crash (another container, exiting later) is a new one.
    let mut next = crashed(&d, 3);
    let c = next.container.as_mut().unwrap();
    c.id = "c2".into();
    c.finished_at = Some(at(40));
    let second = events(&d, &next, 41);
    assert_eq!(second[0].0, EventReason::BackOff);
    assert_ne!(second[0].1, first[0].1);
}

#[test]
fn a_first_crash_restarted_at_once_and_a_running_game_notice_nothing() {
    let d = doc("");
    assert!(
        events(&d, &crashed(&d, 0), 11).is_empty(),
        "no back-off yet"
    );
    let running = observed(Some(container(&d, ContainerState::Running)));
    assert!(events(&d, &running, 11).is_empty());
    assert!(
        noticed(
            None,
            &running,
            &Action::Remove,
            &GameRuntimeStatus::default(),
            at(1)
        )
        .is_empty()
    );
}

#[test]
fn an_update_held_back_by_a_session_is_noticed_once_per_generation() {
    let old = doc("");
    let mut new = doc("");
    new.spec.image = "rtmanager-test/engine:2".into();
    new.metadata.generation = Some(4);
    let mut observed = observed(Some(container(&old, ContainerState::Running)));
    observed.session = Versioned::new(
        Some(Session {
            state: SessionState::Allocated,
            reference: Some("match-42".into()),
            since: Timestamp::from(at(0)),
            container_id: Some("c1".into()),
            source: Some("api".into()),
        }),
        7,
    );
    let first = events(&new, &observed, 10);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].0, EventReason::UpdateDeferred);
    assert_eq!(events(&new, &observed, 20), first);
    new.metadata.generation = Some(5);
    assert_ne!(events(&new, &observed, 30), first);
}

#[test]
fn a_container_judged_unhealthy_is_one_occurrence_however_many_probes_fail() {
    use crate::health::HealthView;
    use rtm_core::model::HealthVerdict;
    let d = doc(
        "  healthCheck:\n    http: {port: 8080, path: /healthz}\n    interval: 1s\n    \
         timeout: 1s\n    failureThreshold: 3\n    startupTimeout: 60s\n",
    );
    let probed = |failures: u32| {
        let mut observed = observed(Some(container(&d, ContainerState::Running)));
        observed.health = Some(HealthView {
            container_id: "c1".into(),
            verdict: HealthVerdict::Failing,
            passed: true,
            consecutive_failures: failures,
            message: Some("http 503 from 10.0.0.2:8080/healthz".into()),
            last_failure: Some("http 503 from 10.0.0.2:8080/healthz".into()),
            since: at(5),
            results: 10,
        });
        observed
    };
    let first = events(&d, &probed(3), 20);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].0, EventReason::HealthCheckFailed);
    // More failing probes of the same container: the same occurrence, no new write.
    assert_eq!(events(&d, &probed(7), 25), first);
    // A passing game notices nothing.
    let mut healthy = probed(0);
    if let Some(view) = healthy.health.as_mut() {
        view.verdict = HealthVerdict::Passing;
        view.message = None;
    }
    assert!(events(&d, &healthy, 30).is_empty());
}
