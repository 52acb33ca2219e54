//! plan() and derive_status() under a health check: Ready follows the probe, a game that
//! stopped answering is replaced (or kept, with restartPolicy Never), and records alone never
//! make a game unhealthy.

use super::*;
use crate::health::HealthView;
use rtm_core::error_code::ErrorCode;
use rtm_core::model::{HealthVerdict, PublishedPort};

fn checked(extra: &str) -> GameRuntime {
    doc(&format!(
        "  healthCheck:\n    http: {{port: 8080, path: /healthz}}\n    interval: 1s\n    \
         timeout: 1s\n    failureThreshold: 3\n    startupTimeout: 60s\n{extra}"
    ))
}

fn probed(
    d: &GameRuntime,
    verdict: HealthVerdict,
    passed: bool,
    failures: u32,
    since: u64,
) -> Observed {
    let mut observed = observed(Some(container(d, ContainerState::Running)));
    observed.health = Some(HealthView {
        container_id: "c1".into(),
        verdict,
        passed,
        consecutive_failures: failures,
        message: (verdict == HealthVerdict::Failing)
            .then(|| "http 503 from 10.0.0.2:8080/healthz".into()),
        last_failure: Some("http 503 from 10.0.0.2:8080/healthz".into()),
        since: at(since),
        results: 5,
    });
    observed
}

#[test]
fn a_running_container_is_starting_and_not_ready_until_its_first_passing_probe() {
    let d = checked("");
    let running = observed(Some(container(&d, ContainerState::Running)));
    assert_eq!(decide(Some(&d), &running, 10), Action::None);
    let status = status_of(Some(&d), &running, 10);
    assert_eq!(status.phase, Phase::Starting);
    assert_eq!(ready(&status).status, ConditionStatus::False);
    assert_eq!(ready(&status).reason, "Starting");
    assert!(
        ready(&status).message.contains("http :8080/healthz"),
        "{:?}",
        ready(&status)
    );
    let health = status.health.expect("status.health");
    assert_eq!(health.verdict, HealthVerdict::Unknown);
    assert_eq!(health.container_id.as_deref(), Some("c1"));
}

#[test]
fn a_passing_probe_makes_it_running_and_ready() {
    let d = checked("");
    let status = status_of(
        Some(&d),
        &probed(&d, HealthVerdict::Passing, true, 0, 5),
        10,
    );
    assert_eq!(status.phase, Phase::Running);
    assert_eq!(ready(&status).status, ConditionStatus::True);
    assert_eq!(ready(&status).reason, HEALTH_CHECK_PASSED);
    let health = status.health.expect("status.health");
    assert_eq!(health.verdict, HealthVerdict::Passing);
    assert!(health.passed);
    assert_eq!(health.probe, "http :8080/healthz");
}

#[test]
fn failures_below_the_threshold_make_it_not_ready_with_the_last_failure_and_replace_nothing() {
    let d = checked("");
    let failing = probed(&d, HealthVerdict::Failing, true, 2, 5);
    assert_eq!(decide(Some(&d), &failing, 10), Action::None);
    let status = status_of(Some(&d), &failing, 10);
    assert_eq!(status.phase, Phase::Running);
    assert_eq!(ready(&status).status, ConditionStatus::False);
    assert_eq!(ready(&status).reason, HEALTH_CHECK_FAILING);
    assert_eq!(
        ready(&status).message,
        "http 503 from 10.0.0.2:8080/healthz"
    );
    assert_eq!(status.health.unwrap().consecutive_failures, 2);
}

#[test]
fn threshold_failures_after_ready_replace_the_game_recorded_as_health_check_failed() {
    let d = checked("");
    let unhealthy = probed(&d, HealthVerdict::Failing, true, 3, 5);
    let action = decide(Some(&d), &unhealthy, 10);
    assert_eq!(
        action,
        Action::Recreate {
            cause: Cause::Unhealthy
        }
    );
    let (code, detail) = repaired(&d, &unhealthy, Cause::Unhealthy).expect("a cause");
    assert_eq!(code, ErrorCode::HealthCheckFailed);
    assert!(
        detail.contains("failed 3 times in a row") && detail.contains("http 503"),
        "{detail}"
    );
}

#[test]
fn no_pass_within_the_startup_timeout_replaces_the_game_as_startup_timeout() {
    let d = checked("");
    let never = probed(&d, HealthVerdict::Failing, false, 0, 1);
    assert_eq!(decide(Some(&d), &never, 59), Action::None);
    let action = decide(Some(&d), &never, 60);
    assert_eq!(
        action,
        Action::Recreate {
            cause: Cause::StartupTimeout
        }
    );
    let (code, _) = repaired(&d, &never, Cause::StartupTimeout).unwrap();
    assert_eq!(code, ErrorCode::StartupTimeout);
}

#[test]
fn a_replacement_loop_backs_off_like_a_crash_loop() {
    let d = checked("");
    let mut unhealthy = probed(&d, HealthVerdict::Failing, true, 3, 20);
    unhealthy.status.value.restart_count = 2;
    // Two replacements so far: the next waits 2 × 10 s from the verdict (at 20 s).
    assert_eq!(
        decide(Some(&d), &unhealthy, 25),
        Action::WaitBackoff {
            remaining: Duration::from_secs(15)
        }
    );
    let status = status_of(Some(&d), &unhealthy, 25);
    assert_eq!(status.phase, Phase::CrashLoopBackOff);
    assert!(
        status
            .message
            .as_deref()
            .unwrap()
            .contains("back-off of 20s"),
        "{status:?}"
    );
    assert_eq!(
        decide(Some(&d), &unhealthy, 40),
        Action::Recreate {
            cause: Cause::Unhealthy
        }
    );
}

#[test]
fn with_restart_policy_never_an_unhealthy_game_is_failed_and_its_container_kept() {
    let d = checked("  restartPolicy: Never\n");
    let unhealthy = probed(&d, HealthVerdict::Failing, true, 3, 5);
    assert_eq!(decide(Some(&d), &unhealthy, 10), Action::None);
    let status = status_of(Some(&d), &unhealthy, 10);
    assert_eq!(status.phase, Phase::Failed);
    assert_eq!(ready(&status).status, ConditionStatus::False);
    let message = status.message.unwrap();
    assert!(
        message.starts_with("health_check_failed:") && message.contains("kept for inspection"),
        "{message}"
    );
}

#[test]
fn a_forged_or_stale_record_saying_failing_never_replaces_a_game() {
    let d = checked("");
    let mut running = observed(Some(container(&d, ContainerState::Running)));
    running.status.value.health = Some(rtm_core::model::HealthStatus {
        probe: "http :8080/healthz".into(),
        verdict: HealthVerdict::Failing,
        container_id: Some("c1".into()),
        passed: true,
        consecutive_failures: 100,
        message: Some("forged".into()),
        since: None,
    });
    running.status.value.restart_count = 0;
    assert_eq!(decide(Some(&d), &running, 1_000), Action::None);
}

#[test]
fn before_its_own_first_result_a_restarted_controller_keeps_the_recorded_verdict() {
    let d = checked("");
    let passing = status_of(
        Some(&d),
        &probed(&d, HealthVerdict::Passing, true, 0, 5),
        10,
    );
    // The controller restarted: no probe result in memory, the record as written.
    let mut restarted = observed(Some(container(&d, ContainerState::Running)));
    restarted.status = Versioned::new(passing.clone(), 7);
    let status = status_of(Some(&d), &restarted, 20);
    assert_eq!(status, passing, "Ready does not flip, nothing is written");
}

#[test]
fn a_record_about_another_container_is_not_carried_over() {
    let d = checked("");
    let passing = status_of(
        Some(&d),
        &probed(&d, HealthVerdict::Passing, true, 0, 5),
        10,
    );
    let mut c2 = container(&d, ContainerState::Running);
    c2.id = "c2".into();
    let mut replaced = observed(Some(c2));
    replaced.status = Versioned::new(passing, 7);
    let status = status_of(Some(&d), &replaced, 20);
    assert_eq!(status.phase, Phase::Starting);
    assert_eq!(ready(&status).status, ConditionStatus::False);
}

#[test]
fn a_paused_container_is_unpaused_and_not_ready_whatever_its_probe_says() {
    let d = checked("");
    let mut paused = probed(&d, HealthVerdict::Passing, true, 0, 5);
    paused.container.as_mut().unwrap().state = ContainerState::Paused;
    assert_eq!(decide(Some(&d), &paused, 10), Action::Unpause);
    let status = status_of(Some(&d), &paused, 10);
    assert_eq!(ready(&status).status, ConditionStatus::False);
    assert_eq!(ready(&status).reason, CONTAINER_PAUSED);
    // Even a failing verdict at the threshold: the pause is repaired, never judged.
    let mut paused = probed(&d, HealthVerdict::Failing, true, 3, 5);
    paused.container.as_mut().unwrap().state = ContainerState::Paused;
    assert_eq!(decide(Some(&d), &paused, 10), Action::Unpause);
}

#[test]
fn waiting_for_the_first_pass_is_bounded_by_the_startup_timeout_not_the_transition_deadline() {
    let d = doc("  healthCheck:\n    tcp: {port: 7000}\n    startupTimeout: 1h\n");
    let running = observed(Some(container(&d, ContainerState::Running)));
    let starting = status_of(Some(&d), &running, 10);
    let later = status_of(
        Some(&d),
        &Observed {
            status: Versioned::new(starting, 1),
            ..running.clone()
        },
        1_000,
    );
    assert_eq!(later.phase, Phase::Starting, "{later:?}");
}

#[test]
fn without_a_health_check_ready_still_means_the_container_runs() {
    let d = doc("");
    let status = status_of(
        Some(&d),
        &observed(Some(container(&d, ContainerState::Running))),
        0,
    );
    assert_eq!(ready(&status).reason, "ContainerRunning");
    assert_eq!(status.health, None);
}

#[test]
fn the_status_says_where_to_connect() {
    let d = doc("");
    let mut c = container(&d, ContainerState::Running);
    c.ports = vec![PublishedPort {
        container_port: 7000,
        protocol: rtm_core::model::Protocol::Tcp,
        host_ip: Some("0.0.0.0".into()),
        host_port: 17000,
    }];
    let settings = Settings {
        address: Some("203.0.113.7".into()),
        ..Settings::default()
    };
    let status = derive_status(Some(&d), &observed(Some(c)), at(0), &settings);
    assert_eq!(status.address.as_deref(), Some("203.0.113.7"));
    assert_eq!(status.ports[0].host_port, 17000);
    let gone = derive_status(Some(&d), &observed(None), at(0), &settings);
    assert_eq!(gone.address, None);
    assert!(gone.ports.is_empty());
}

#[test]
fn a_restarted_controllers_first_results_rewrite_no_status_that_says_the_same() {
    let d = checked("");
    let written = status_of(
        Some(&d),
        &probed(&d, HealthVerdict::Passing, true, 0, 5),
        10,
    );
    // A new controller's probes: the same verdict, seen from a later moment.
    let mut again = probed(&d, HealthVerdict::Passing, true, 0, 100);
    again.status = Versioned::new(written.clone(), 7);
    assert_eq!(status_of(Some(&d), &again, 100), written);
}
