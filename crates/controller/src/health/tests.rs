//! The prober in paused time against the in-memory runtime: what it probes, when, and when it
//! asks for a reconcile.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::runtime::ContainerSpec;
use crate::runtime::fake::{FakeExec, FakeRuntime};
use rtm_core::model::{HealthVerdict, ProbeKind};

fn check() -> HealthCheck {
    let mut check = HealthCheck::of(ProbeKind::Exec {
        command: vec!["/bin/check".into()],
    });
    check.interval = Duration::from_secs(2);
    check.timeout = Duration::from_secs(1);
    check.failure_threshold = 3;
    check
}

struct Prober {
    health: Arc<Health>,
    runtime: Arc<FakeRuntime>,
    queue: Arc<WorkQueue>,
    stop: CancellationToken,
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn prober() -> Prober {
    let runtime = Arc::new(FakeRuntime::new());
    runtime.add_image("rtmanager-test/engine:1");
    let health = Arc::new(Health::new(Metrics::new()));
    let queue = Arc::new(WorkQueue::new());
    let stop = CancellationToken::new();
    tokio::spawn(run(
        health.clone(),
        runtime.clone(),
        queue.clone(),
        8,
        stop.clone(),
    ));
    Prober {
        health,
        runtime,
        queue,
        stop,
    }
}

impl Prober {
    /// Starts `game`'s container and tracks it under `check`.
    async fn running(&self, game: &str, check: &HealthCheck) -> ContainerInfo {
        let spec = ContainerSpec::new(game, "rtmanager-test/engine:1");
        let id = self.runtime.create(&spec).await.unwrap();
        self.runtime.start(&id).await.unwrap();
        let container = self.runtime.inspect_container(&id).await.unwrap().unwrap();
        self.health.observe(game, Some(check), Some(&container));
        container
    }

    /// How many times `game` was queued since the last call (the queue is drained).
    async fn queued(&self) -> usize {
        let mut count = 0;
        while !self.queue.is_empty() {
            let game = tokio::time::timeout(Duration::from_secs(1), self.queue.next())
                .await
                .expect("a queued game is due")
                .expect("the queue is open");
            self.queue.done(&game);
            count += 1;
        }
        count
    }
}

async fn advance(seconds: f64) {
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
}

#[tokio::test(start_paused = true)]
async fn the_first_pass_queues_the_game_once_and_a_healthy_game_never_again() {
    let p = prober().await;
    let c = p.running("g1", &check()).await;
    assert_eq!(p.health.view("g1", &c.id).unwrap().results, 0);
    advance(1.1).await;
    let view = p
        .health
        .view("g1", &c.id)
        .expect("probed within its first second");
    assert_eq!(view.verdict, HealthVerdict::Passing);
    assert_eq!(p.queued().await, 1);
    advance(60.0).await;
    let probes = p.runtime.exec_count("g1");
    assert!(
        (29..=32).contains(&probes),
        "{probes} probes in a minute at 2 s"
    );
    assert_eq!(p.queued().await, 0, "a healthy game is never queued again");
}

#[tokio::test(start_paused = true)]
async fn each_failure_after_ready_queues_the_game_until_the_threshold() {
    let p = prober().await;
    let c = p.running("g1", &check()).await;
    advance(1.1).await;
    p.queued().await;
    p.runtime.set_exec(
        "g1",
        FakeExec::Exit {
            code: 1,
            output: "not serving".into(),
        },
    );
    advance(6.0).await;
    let view = p.health.view("g1", &c.id).unwrap();
    assert_eq!(view.verdict, HealthVerdict::Failing);
    assert_eq!(view.consecutive_failures, 3);
    assert_eq!(
        judge(&view, &check(), c.started_at, SystemTime::now()),
        Some(Judged::Unhealthy)
    );
    assert!(p.queued().await >= 1, "the verdict is reconciled");
}

#[tokio::test(start_paused = true)]
async fn an_untracked_or_paused_game_is_not_probed() {
    let p = prober().await;
    let c = p.running("g1", &check()).await;
    advance(1.1).await;
    let mut paused = c.clone();
    paused.state = ContainerState::Paused;
    p.health.observe("g1", Some(&check()), Some(&paused));
    let before = p.runtime.exec_count("g1");
    advance(10.0).await;
    assert_eq!(
        p.runtime.exec_count("g1"),
        before,
        "no probe of a paused container"
    );
    p.health.observe("g1", Some(&check()), Some(&c));
    advance(1.1).await;
    assert!(
        p.runtime.exec_count("g1") > before,
        "probed again once resumed"
    );
    p.health.observe("g1", None, Some(&c));
    assert!(p.health.view("g1", &c.id).is_none());
    let after = p.runtime.exec_count("g1");
    advance(10.0).await;
    assert_eq!(p.runtime.exec_count("g1"), after, "no check: no probe");
}

#[tokio::test(start_paused = true)]
async fn a_new_container_starts_with_no_verdict() {
    let p = prober().await;
    let first = p.running("g1", &check()).await;
    advance(1.1).await;
    assert!(p.health.view("g1", &first.id).unwrap().passed);
    p.runtime.remove(&first.id, true).await.unwrap();
    let second = p.running("g1", &check()).await;
    assert!(p.health.view("g1", &first.id).is_none());
    let fresh = p.health.view("g1", &second.id).unwrap();
    assert!(!fresh.passed);
    assert_eq!(fresh.verdict, HealthVerdict::Unknown);
}

#[tokio::test(start_paused = true)]
async fn a_hung_exec_probe_fails_and_no_second_exec_starts_while_it_runs() {
    let p = prober().await;
    p.runtime.set_exec("g1", FakeExec::Hang);
    let c = p.running("g1", &check()).await;
    advance(10.0).await;
    assert_eq!(p.runtime.exec_count("g1"), 1, "one exec, still running");
    let view = p.health.view("g1", &c.id).unwrap();
    assert_eq!(view.verdict, HealthVerdict::Failing);
    p.runtime.release_execs("g1");
    p.runtime.set_exec(
        "g1",
        FakeExec::Exit {
            code: 0,
            output: String::new(),
        },
    );
    advance(2.1).await;
    assert_eq!(
        p.health.view("g1", &c.id).unwrap().verdict,
        HealthVerdict::Passing
    );
}
