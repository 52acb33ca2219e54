//! The lifecycle services against the real etcd and the real Docker engine
//! from `scripts/services`: what only the real pair can show — containers
//! that really run, leases that really expire, stops that really wait.
//! Ignored by a bare `cargo test`; `scripts/test` runs them.

use rtm_testkit as common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rtm_controller::lease::Session;
use rtm_controller::lifecycle::{Lifecycle, OpRequest};
use rtm_controller::metrics::Metrics;
use rtm_controller::runtime::{ContainerRuntime, DockerRuntime, container_name};
use rtm_core::ErrorCode;
use rtm_core::model::parse::parse_documents;
use rtm_core::model::{OpKind, OpSource, Outcome};
use rtm_core::records::{Documents, StatusStore};
use rtm_core::store::{Keys, Store, Txn};

use common::docker::{Cleanup, IMAGE_1, docker, game as game_id, wait_engine_listening};
use common::{etcd, unique_keys, wipe, within};

struct World {
    store: Arc<dyn Store>,
    keys: Keys,
    runtime: Arc<DockerRuntime>,
    session: Arc<Session>,
    lifecycle: Lifecycle,
    documents: Documents,
}

async fn world(test: &str, lease_ttl: Duration) -> World {
    let store: Arc<dyn Store> = etcd().await;
    let keys = unique_keys(test);
    let runtime = Arc::new(docker().await);
    let session = Session::open(store.clone(), keys.clone(), test, lease_ttl, Metrics::new())
        .await
        .expect("etcd grants the session lease");
    let lifecycle = Lifecycle::new(runtime.clone(), session.clone(), 100, Metrics::new());
    let documents = Documents::new(store.clone(), keys.clone());
    World {
        store,
        keys,
        runtime,
        session,
        lifecycle,
        documents,
    }
}

impl World {
    async fn apply(&self, name: &str, spec_yaml: &str) {
        let yaml = format!(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n\
             spec:\n{spec_yaml}"
        );
        let doc = parse_documents(&yaml).expect("fixture parses").remove(0);
        self.documents.create(&doc).await.expect("document written");
    }

    async fn finish(self) {
        let _ = self.session.close().await;
        wipe(self.store.as_ref(), &self.keys).await;
    }
}

fn request(game: &str) -> OpRequest {
    OpRequest::new(game, OpSource::AdminCli)
}

const START_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn start_runs_the_container_with_the_stable_hostname_and_our_labels() {
    let w = world("lc-start", Duration::from_secs(10)).await;
    let game = game_id("lc-start");
    let _cleanup = Cleanup::new(&[&container_name(w.keys.prefix(), &game)]);
    w.apply(
        &game,
        &format!("  image: {IMAGE_1}\n  hostname: engine-{game}\n  stopTimeout: 5s\n"),
    )
    .await;

    let result = within(START_LIMIT, "start", w.lifecycle.start(&request(&game))).await;
    assert!(result.is_success(), "{result:?}");

    let container = w
        .runtime
        .inspect_container(&container_name(w.keys.prefix(), &game))
        .await
        .unwrap()
        .unwrap();
    assert!(container.is_running(), "{container:?}");
    assert_eq!(container.hostname, format!("engine-{game}"));
    assert_eq!(container.game(), Some(game.as_str()));
    assert!(container.is_managed());
    assert!(container.spec_hash().is_some());
    assert_eq!(result.container_id.as_deref(), Some(container.id.as_str()));

    let status = StatusStore::new(w.store.clone(), w.keys.clone())
        .read(&game)
        .await
        .unwrap()
        .value;
    assert_eq!(status.container_id.as_deref(), Some(container.id.as_str()));
    w.lifecycle.remove(&request(&game)).await;
    w.finish().await;
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn restart_gives_a_new_container_id_the_same_hostname_and_three_correlated_entries() {
    let w = world("lc-restart", Duration::from_secs(10)).await;
    let game = game_id("lc-restart");
    let _cleanup = Cleanup::new(&[&container_name(w.keys.prefix(), &game)]);
    w.apply(&game, &format!("  image: {IMAGE_1}\n  stopTimeout: 5s\n"))
        .await;
    let first = within(START_LIMIT, "start", w.lifecycle.start(&request(&game))).await;
    assert!(first.is_success(), "{first:?}");

    let restart = request(&game).with_source_ref("REQ-42");
    let result = within(START_LIMIT, "restart", w.lifecycle.restart(&restart)).await;
    assert!(result.is_success(), "{result:?}");

    let container = w
        .runtime
        .inspect_container(&container_name(w.keys.prefix(), &game))
        .await
        .unwrap()
        .unwrap();
    assert!(container.is_running());
    assert_ne!(
        first.container_id.as_deref(),
        Some(container.id.as_str()),
        "a new container"
    );
    assert_eq!(container.hostname, game, "the hostname is stable");
    let old = w
        .runtime
        .inspect_container(first.container_id.as_deref().unwrap())
        .await
        .unwrap();
    assert!(old.is_none(), "the old container was removed (docker rm)");

    let entries = w.lifecycle.history().recent(&game, 10).await.unwrap();
    let restart_entries: Vec<_> = entries
        .iter()
        .filter(|e| e.source_ref == "REQ-42")
        .collect();
    let kinds: Vec<_> = restart_entries.iter().map(|e| e.op_kind).collect();
    assert_eq!(kinds, [OpKind::Start, OpKind::Stop, OpKind::Restart]);
    assert!(
        restart_entries
            .iter()
            .all(|e| e.outcome == Outcome::Success)
    );
    w.lifecycle.remove(&request(&game)).await;
    w.finish().await;
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn two_restarts_at_once_one_wins_the_other_conflicts_and_never_two_containers() {
    let w = world("lc-race", Duration::from_secs(10)).await;
    let game = game_id("lc-race");
    let _cleanup = Cleanup::new(&[&container_name(w.keys.prefix(), &game)]);
    w.apply(&game, &format!("  image: {IMAGE_1}\n  stopTimeout: 5s\n"))
        .await;
    assert!(
        within(START_LIMIT, "start", w.lifecycle.start(&request(&game)))
            .await
            .is_success()
    );

    // A second controller, with its own session, races the first.
    let other_session = Session::open(
        w.store.clone(),
        w.keys.clone(),
        "lc-race-other",
        Duration::from_secs(10),
        Metrics::new(),
    )
    .await
    .unwrap();
    let other = Lifecycle::new(
        w.runtime.clone(),
        other_session.clone(),
        100,
        Metrics::new(),
    );

    // Poll Docker throughout: at no instant may two containers claim the game.
    let done = Arc::new(AtomicBool::new(false));
    let most_seen = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (runtime, done, most_seen, game) = (
            w.runtime.clone(),
            done.clone(),
            most_seen.clone(),
            game.clone(),
        );
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                let all = runtime.list_managed().await.unwrap_or_default();
                let ours = all
                    .iter()
                    .filter(|c| c.game() == Some(game.as_str()))
                    .count();
                most_seen.fetch_max(ours, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let (a, b) = within(
        START_LIMIT,
        "two concurrent restarts",
        futures::future::join(
            w.lifecycle.restart(&request(&game)),
            other.restart(&request(&game)),
        ),
    )
    .await;
    done.store(true, Ordering::SeqCst);
    watcher.await.unwrap();

    let outcomes = [&a, &b];
    assert_eq!(
        outcomes.iter().filter(|r| r.is_success()).count(),
        1,
        "{a:?}\n{b:?}"
    );
    let loser = outcomes.iter().find(|r| !r.is_success()).unwrap();
    assert_eq!(loser.error_code, Some(ErrorCode::Conflict), "{loser:?}");
    assert!(
        loser
            .error_message
            .as_deref()
            .unwrap()
            .contains("another lifecycle operation"),
        "{loser:?}"
    );
    assert!(
        most_seen.load(Ordering::SeqCst) <= 1,
        "two containers existed at once"
    );
    let _ = other_session.close().await;
    w.lifecycle.remove(&request(&game)).await;
    w.finish().await;
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_lease_whose_keepalive_stops_expires_and_its_holders_next_guarded_write_is_refused() {
    let w = world("lc-fence", Duration::from_secs(3)).await;
    let game = game_id("lc-fence");
    let lease = w.session.acquire(&game, "op-1").await.unwrap();
    let status_key = w.keys.status(&game);
    let guarded = |value: &'static str| {
        Txn::new()
            .when(lease.fence().compare())
            .put(status_key.clone(), value.as_bytes().to_vec())
    };
    assert!(w.store.txn(guarded("while held")).await.unwrap().succeeded);

    // The holder freezes: its keepalive stops, etcd expires the lease.
    w.session.stop_keepalive();
    let frozen_at = Instant::now();
    within(Duration::from_secs(15), "the lease key to expire", async {
        while lease.still_held().await.unwrap() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        frozen_at.elapsed() >= Duration::from_secs(1),
        "expired only after its TTL"
    );

    // Another controller takes the game over.
    let other = Session::open(
        w.store.clone(),
        w.keys.clone(),
        "lc-fence-other",
        Duration::from_secs(10),
        Metrics::new(),
    )
    .await
    .unwrap();
    let taken = other
        .acquire(&game, "op-2")
        .await
        .expect("the expired lease is free");

    let late = w.store.txn(guarded("late write")).await.unwrap();
    assert!(!late.succeeded, "the old holder's write must be refused");
    let stored = w.store.get(&status_key).await.unwrap().unwrap();
    assert_eq!(stored.value, b"while held");
    taken.release().await.unwrap();
    let _ = other.close().await;
    drop(lease);
    w.finish().await;
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_start_with_a_missing_image_fails_with_image_not_found_and_leaves_no_container() {
    let w = world("lc-noimage", Duration::from_secs(10)).await;
    let game = game_id("lc-noimage");
    let _cleanup = Cleanup::new(&[&container_name(w.keys.prefix(), &game)]);
    w.apply(
        &game,
        "  image: rtmanager-test/not-built:404\n  imagePullPolicy: Never\n",
    )
    .await;
    let result = within(START_LIMIT, "start", w.lifecycle.start(&request(&game))).await;
    assert_eq!(
        result.error_code,
        Some(ErrorCode::ImageNotFound),
        "{result:?}"
    );
    assert!(
        w.runtime
            .inspect_container(&container_name(w.keys.prefix(), &game))
            .await
            .unwrap()
            .is_none()
    );
    let entry = &w.lifecycle.history().recent(&game, 1).await.unwrap()[0];
    assert_eq!(
        (entry.outcome, entry.error_code),
        (Outcome::Failure, Some(ErrorCode::ImageNotFound))
    );
    w.finish().await;
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn stopping_a_container_that_ignores_sigterm_completes_after_its_stop_timeout() {
    let w = world("lc-sigterm", Duration::from_secs(10)).await;
    let game = game_id("lc-sigterm");
    let _cleanup = Cleanup::new(&[&container_name(w.keys.prefix(), &game)]);
    w.apply(
        &game,
        &format!(
            "  image: {IMAGE_1}\n  stopTimeout: 3s\n  env: [{{name: IGNORE_SIGTERM, value: \"1\"}}]\n"
        ),
    )
    .await;
    assert!(
        within(START_LIMIT, "start", w.lifecycle.start(&request(&game)))
            .await
            .is_success()
    );
    wait_engine_listening(&container_name(w.keys.prefix(), &game));

    let started = Instant::now();
    let result = within(
        Duration::from_secs(30),
        "stop",
        w.lifecycle.stop(&request(&game)),
    )
    .await;
    let took = started.elapsed();
    assert!(result.is_success(), "{result:?}");
    assert!(
        took >= Duration::from_secs(3),
        "SIGKILL only after stopTimeout, took {took:?}"
    );
    let container = w
        .runtime
        .inspect_container(&container_name(w.keys.prefix(), &game))
        .await
        .unwrap()
        .unwrap();
    assert!(!container.is_running());
    assert_eq!(container.exit_code, Some(137), "killed by SIGKILL");
    let status = StatusStore::new(w.store.clone(), w.keys.clone())
        .read(&game)
        .await
        .unwrap()
        .value;
    assert_eq!(status.last_exit_code, Some(137));
    w.lifecycle.remove(&request(&game)).await;
    w.finish().await;
}
