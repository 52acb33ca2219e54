//! The controller end to end: the real `rtmanager` binary, run as a child
//! process against the real etcd and the real Docker engine, driven only the
//! way a user drives it — documents in etcd, signals, `docker` by hand — and
//! judged by what a user sees: containers, status, history, `/metrics`.
//!
//! Ignored by a bare `cargo test` (they need etcd and Docker); `scripts/test`
//! runs them. They run one at a time: they time lease TTLs, grace periods
//! and resyncs in seconds, and a dozen controllers and their containers at
//! once on a small machine would make those timings flaky. Each has its own
//! etcd prefix (its own installation) and game names of its own.

use rtm_testkit as common;
use rtm_testkit::process;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rtm_controller::runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, DockerRuntime, LABEL_GAME, LABEL_MANAGED_BY,
    LABEL_PREFIX, LABEL_SPEC_HASH, MANAGED_BY, container_name,
};
use rtm_core::ErrorCode;
use rtm_core::model::parse::parse_documents;
use rtm_core::model::{
    ANNOTATION_OP_SOURCE, ANNOTATION_SOURCE_REF, ConditionStatus, EnvVar, GameRuntime,
    GameRuntimeStatus, OpKind, OpSource, Outcome, Phase,
};
use rtm_core::records::Documents;
use rtm_core::records::history::{History, HistoryEntry};
use rtm_core::store::{Keys, Store, Txn, WatchEvent};

use common::docker::{Cleanup, IMAGE_1, IMAGE_2, docker, docker_cli, game as game_id, run_bounded};
use common::{etcd, revision_of, unique_keys, within};
use process::{
    ControllerOptions, ControllerProcess, WipeOnDrop, binary, containers_of, describe, eventually,
    ready, short, summary, timeline,
};

/// How long a game may take to converge after a change: a start or a
/// recreate of the test engine takes about a second; the rest is slack for
/// a loaded CI machine and a first crash-loop backoff.
const CONVERGE: Duration = Duration::from_secs(60);

/// The lease TTL the test controllers run with (see `ControllerOptions`).
const LEASE_TTL: Duration = Duration::from_secs(5);

/// One test at a time (see the module comment); `--help` tests need no lock.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What every test needs: etcd under a prefix of its own, the typed readers
/// a user (or rtctl) has, and Docker. Dropped last in each test: after its
/// controllers (killed) and its containers (removed), it wipes the prefix
/// and lets the next test run.
struct Harness {
    store: Arc<dyn Store>,
    keys: Keys,
    documents: Documents,
    history: History,
    runtime: Arc<DockerRuntime>,
    _wipe: WipeOnDrop,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

async fn harness(test: &str) -> Harness {
    let asked = Instant::now();
    let serial = SERIAL.lock().await;
    // Shown with a failure: lines up with the controllers' UTC log times.
    eprintln!(
        "[{test}] running from {} (waited {:?} for the other tests)",
        humantime::format_rfc3339_millis(std::time::SystemTime::now()),
        asked.elapsed()
    );
    let store: Arc<dyn Store> = etcd().await;
    let keys = unique_keys(test);
    let runtime = Arc::new(docker().await);
    Harness {
        documents: Documents::new(store.clone(), keys.clone()),
        history: History::new(store.clone(), keys.clone(), 1000),
        store,
        _wipe: WipeOnDrop(keys.clone()),
        keys,
        runtime,
        _serial: serial,
    }
}

/// A GameRuntime fixture: `doc(&game).image(IMAGE_2).ignoring_sigterm()`.
/// Defaults: the first test image, stopTimeout 5s, restartPolicy Always.
struct Doc(GameRuntime);

fn doc(name: &str) -> Doc {
    let yaml = format!(
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n\
         spec:\n  image: {IMAGE_1}\n  stopTimeout: 5s\n  restartPolicy: Always\n"
    );
    Doc(parse_documents(&yaml).expect("fixture parses").remove(0))
}

impl Doc {
    fn hostname(mut self, hostname: &str) -> Doc {
        self.0.spec.hostname = Some(hostname.to_owned());
        self
    }

    fn stop_timeout(mut self, timeout: Duration) -> Doc {
        self.0.spec.stop_timeout = timeout;
        self
    }

    fn env(mut self, name: &str, value: &str) -> Doc {
        self.0.spec.env.push(EnvVar {
            name: name.to_owned(),
            value: value.to_owned(),
        });
        self
    }

    /// The engine ignores SIGTERM: every stop lasts the full stopTimeout.
    fn ignoring_sigterm(self) -> Doc {
        self.env("IGNORE_SIGTERM", "1")
    }
}

impl Harness {
    fn controller(&self, name: &str) -> ControllerOptions {
        ControllerOptions::new(&self.keys, name)
    }

    async fn create(&self, doc: Doc) -> GameRuntime {
        self.documents
            .create(&doc.0)
            .await
            .expect("document written")
    }

    /// Reads, changes and writes back a document (the controller never
    /// writes specs, so the resourceVersion read here is still current).
    async fn change(&self, game: &str, change: impl FnOnce(&mut GameRuntime)) -> GameRuntime {
        let mut doc = self
            .documents
            .get(game)
            .await
            .expect("etcd answers")
            .expect("the document exists");
        let expected = revision_of(&doc);
        change(&mut doc);
        self.documents
            .update(&doc, expected)
            .await
            .expect("document updated")
    }

    /// What `rtctl restart <game> --ref <source_ref>` writes: a new
    /// restartToken, and who asked in the annotations.
    async fn request_restart(&self, game: &str, token: &str, source_ref: &str) -> GameRuntime {
        self.change(game, |doc| {
            doc.spec.restart_token = token.to_owned();
            let annotations = &mut doc.metadata.annotations;
            annotations.insert(ANNOTATION_OP_SOURCE.to_owned(), "admin_cli".to_owned());
            annotations.insert(ANNOTATION_SOURCE_REF.to_owned(), source_ref.to_owned());
        })
        .await
    }

    async fn status(&self, game: &str) -> Result<Option<GameRuntimeStatus>, String> {
        self.documents
            .get_status(game)
            .await
            .map_err(|e| format!("status read: {e}"))
    }

    /// The game's containers of this installation (its prefix label).
    async fn containers(&self, game: &str) -> Result<Vec<ContainerInfo>, String> {
        Ok(containers_of(&self.runtime, game)
            .await?
            .into_iter()
            .filter(|c| c.prefix() == Some(self.keys.prefix()))
            .collect())
    }

    /// The game's history, newest first.
    async fn history(&self, game: &str) -> Vec<HistoryEntry> {
        self.history
            .recent(game, 1000)
            .await
            .expect("history readable")
    }

    /// Whether `doc` is converged: status Running for its generation, Ready,
    /// and exactly one container, running, the one the status names.
    async fn converged(
        &self,
        doc: &GameRuntime,
    ) -> Result<(GameRuntimeStatus, ContainerInfo), String> {
        let game = doc.name();
        let status = self.status(game).await?;
        let containers = self.containers(game).await?;
        check_converged(doc, status.as_ref(), &containers)
    }

    async fn wait_converged(&self, doc: &GameRuntime) -> (GameRuntimeStatus, ContainerInfo) {
        let what = format!(
            "{} to converge (Running, generation {:?}, one running container)",
            doc.name(),
            doc.metadata.generation
        );
        eventually(CONVERGE, &what, async || self.converged(doc).await).await
    }

    /// Waits until every document in `docs` is converged; one Docker
    /// listing per poll.
    async fn wait_all_converged(
        &self,
        docs: &[GameRuntime],
        limit: Duration,
    ) -> BTreeMap<String, (GameRuntimeStatus, ContainerInfo)> {
        let what = format!("all {} games to converge", docs.len());
        eventually(limit, &what, async || {
            let all = self
                .runtime
                .list_managed()
                .await
                .map_err(|e| format!("docker list: {e}"))?;
            let mut converged = BTreeMap::new();
            for doc in docs {
                let game = doc.name();
                let containers: Vec<_> = all
                    .iter()
                    .filter(|c| c.game() == Some(game) && c.prefix() == Some(self.keys.prefix()))
                    .cloned()
                    .collect();
                let status = self.status(game).await?;
                converged.insert(
                    game.to_owned(),
                    check_converged(doc, status.as_ref(), &containers)?,
                );
            }
            Ok(converged)
        })
        .await
    }

    /// The ids of the controllers whose heartbeat key exists.
    async fn heartbeats(&self) -> Result<BTreeSet<String>, String> {
        common::heartbeats(self.store.as_ref(), &self.keys).await
    }

    /// Creates and starts a container with every label rtmanager puts on
    /// its own, for installation `prefix`, bypassing the controller.
    async fn start_labelled(&self, game: &str, prefix: &str) -> String {
        let mut spec = ContainerSpec::new(game, IMAGE_1);
        spec.name = container_name(prefix, game);
        spec.labels
            .insert(LABEL_SPEC_HASH.to_owned(), "hand-made".to_owned());
        spec.labels
            .insert(LABEL_PREFIX.to_owned(), prefix.to_owned());
        let id = self.runtime.create(&spec).await.expect("docker create");
        self.runtime.start(&id).await.expect("docker start");
        id
    }

    /// Waits until no game lease is held (releasing one is a write).
    async fn wait_leases_released(&self) {
        let prefix = self.keys.leases();
        eventually(CONVERGE, "every game lease to be released", async || {
            let held = self
                .store
                .list(&prefix, None)
                .await
                .map_err(|e| format!("list {prefix}: {e}"))?;
            if held.items.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "held: {:?}",
                    held.items.iter().map(|kv| &kv.key).collect::<Vec<_>>()
                ))
            }
        })
        .await;
    }
}

/// The convergence check, pure: `Err` says what is still missing.
fn check_converged(
    doc: &GameRuntime,
    status: Option<&GameRuntimeStatus>,
    containers: &[ContainerInfo],
) -> Result<(GameRuntimeStatus, ContainerInfo), String> {
    let game = doc.name();
    let status = status.ok_or_else(|| format!("{game}: no status yet"))?;
    let seen = || {
        format!(
            "{game}: status {} containers {}",
            summary(status),
            describe(containers)
        )
    };
    let ready = ready(status) == Some(ConditionStatus::True);
    let token_seen = doc.spec.restart_token.is_empty()
        || status.observed_restart_token.as_deref() == Some(doc.spec.restart_token.as_str());
    if status.phase != Phase::Running
        || status.observed_generation != doc.metadata.generation
        || !ready
        || !token_seen
    {
        return Err(seen());
    }
    let [container] = containers else {
        return Err(seen());
    };
    if !container.is_running()
        || status.container_id.as_deref() != Some(container.id.as_str())
        || container.image != doc.spec.image
    {
        return Err(seen());
    }
    Ok((status.clone(), container.clone()))
}

/// Sends SIGTERM and expects a clean exit (drain, leases released, 0).
async fn stop_gracefully(controller: &mut ControllerProcess, limit: Duration) {
    controller.terminate();
    let status = controller.wait_exit(limit).await;
    assert!(
        status.success(),
        "controller {} exited with {status} after SIGTERM; expected 0{}",
        controller.name(),
        controller.log_tail()
    );
}

// ---------------------------------------------------------------------------
// A single game through its life.

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_new_gameruntime_gets_a_running_container_and_a_running_status() {
    let h = harness("ctl-start").await;
    let game = game_id("ctl-start");
    let _cleanup = Cleanup::new(&[&container_name(h.keys.prefix(), &game)]);
    let _controller = h.controller("ctl").start().await;

    let doc = h.create(doc(&game)).await;
    assert_eq!(doc.metadata.generation, Some(1));
    let (status, container) = h.wait_converged(&doc).await;

    assert_eq!(container.name, container_name(h.keys.prefix(), &game));
    assert_eq!(
        container.hostname, game,
        "the hostname defaults to the name"
    );
    assert_eq!(status.hostname.as_deref(), Some(game.as_str()));
    assert_eq!(status.image_ref.as_deref(), Some(IMAGE_1));
    assert_eq!(
        container.labels.get(LABEL_GAME).map(String::as_str),
        Some(game.as_str())
    );
    assert_eq!(
        container.labels.get(LABEL_MANAGED_BY).map(String::as_str),
        Some(MANAGED_BY)
    );
    assert_eq!(
        container.prefix(),
        Some(h.keys.prefix()),
        "the installation label"
    );
    assert!(
        container
            .labels
            .get(LABEL_SPEC_HASH)
            .is_some_and(|hash| !hash.is_empty()),
        "a spec-hash label: {:?}",
        container.labels
    );
    let entries = h.history(&game).await;
    assert!(
        entries.iter().any(|e| e.op_kind == OpKind::Start
            && e.outcome == Outcome::Success
            && e.container_id_after.as_deref() == Some(container.id.as_str())),
        "a successful start of {} in the history:\n  {}",
        short(&container.id),
        timeline(&entries)
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn changing_the_image_recreates_the_container_with_the_same_hostname_and_a_new_id() {
    let h = harness("ctl-image").await;
    let game = game_id("ctl-image");
    let hostname = format!("engine-{game}");
    let _cleanup = Cleanup::new(&[&container_name(h.keys.prefix(), &game)]);
    let _controller = h.controller("ctl").start().await;
    let first = h.create(doc(&game).hostname(&hostname)).await;
    let (_, before) = h.wait_converged(&first).await;

    let second = h
        .change(&game, |doc| doc.spec.image = IMAGE_2.to_owned())
        .await;
    assert_eq!(second.metadata.generation, Some(2));
    let (status, after) = h.wait_converged(&second).await;

    assert_ne!(after.id, before.id, "a recreate gives a new container");
    assert_eq!(after.image, IMAGE_2);
    assert_eq!(
        after.hostname, hostname,
        "the hostname survives the recreate"
    );
    assert_eq!(status.hostname.as_deref(), Some(hostname.as_str()));
    assert_eq!(status.image_ref.as_deref(), Some(IMAGE_2));
    assert!(
        h.runtime
            .inspect_container(&before.id)
            .await
            .unwrap()
            .is_none(),
        "the old container was removed, not left stopped"
    );

    let entries = h.history(&game).await;
    let restart = entries
        .iter()
        .find(|e| e.op_kind == OpKind::Restart)
        .unwrap_or_else(|| panic!("a restart entry:\n  {}", timeline(&entries)));
    assert_eq!(restart.outcome, Outcome::Success, "{restart:#?}");
    assert_eq!(restart.image_ref, IMAGE_2);
    assert_eq!(
        restart.container_id_before.as_deref(),
        Some(before.id.as_str())
    );
    assert_eq!(
        restart.container_id_after.as_deref(),
        Some(after.id.as_str())
    );
    let mut inner: Vec<OpKind> = entries
        .iter()
        .filter(|e| e.source_ref == restart.source_ref && e.seq > restart.seq)
        .map(|e| e.op_kind)
        .collect();
    inner.reverse();
    assert_eq!(
        inner,
        [OpKind::Stop, OpKind::Start],
        "inner stop then start share the restart's correlation id:\n  {}",
        timeline(&entries)
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn bumping_the_restart_token_restarts_with_the_requests_correlation_id() {
    let h = harness("ctl-token").await;
    let game = game_id("ctl-token");
    let _cleanup = Cleanup::new(&[&container_name(h.keys.prefix(), &game)]);
    let _controller = h.controller("ctl").start().await;
    let (_, before) = h.wait_converged(&h.create(doc(&game)).await).await;

    let source_ref = format!("REQ-{game}-1");
    let doc = h.request_restart(&game, "token-1", &source_ref).await;
    let (status, after) = h.wait_converged(&doc).await;

    assert_ne!(
        after.id, before.id,
        "restart is a recreate: a new container"
    );
    assert_eq!(after.hostname, before.hostname);
    assert_eq!(status.observed_restart_token.as_deref(), Some("token-1"));
    let last = status.last_operation.as_ref().expect("a lastOperation");
    assert_eq!(
        (last.op_kind, last.outcome, last.source_ref.as_deref()),
        (OpKind::Restart, Outcome::Success, Some(source_ref.as_str())),
        "{last:#?}"
    );

    let entries = h.history(&game).await;
    let correlated: Vec<&HistoryEntry> = entries
        .iter()
        .filter(|e| e.source_ref == source_ref)
        .collect();
    let kinds: Vec<OpKind> = correlated.iter().map(|e| e.op_kind).collect();
    assert_eq!(
        kinds,
        [OpKind::Start, OpKind::Stop, OpKind::Restart],
        "newest first: the outer restart and its inner stop and start carry {source_ref}:\n  {}",
        timeline(&entries)
    );
    for entry in correlated {
        assert_eq!(entry.outcome, Outcome::Success, "{entry:#?}");
        assert_eq!(
            entry.op_source,
            OpSource::AdminCli,
            "op_source comes from the annotation: {entry:#?}"
        );
    }
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_killed_container_is_brought_back_and_a_removed_one_is_recreated() {
    let h = harness("ctl-drift").await;
    let game = game_id("ctl-drift");
    let name = container_name(h.keys.prefix(), &game);
    let _cleanup = Cleanup::new(&[&name]);
    let _controller = h.controller("ctl").start().await;
    let doc = h.create(doc(&game)).await;
    let (_, first) = h.wait_converged(&doc).await;

    let killed = docker_cli(&["kill", &name]);
    assert!(killed.status.success(), "docker kill: {killed:?}");
    let (status, back) = eventually(
        CONVERGE,
        "the killed container to be brought back (restartPolicy Always)",
        async || {
            let (status, container) = h.converged(&doc).await?;
            let restarted = container.id != first.id || container.started_at != first.started_at;
            if restarted && status.restart_count >= 1 {
                Ok((status, container))
            } else {
                Err(format!(
                    "restartCount {}, container {} started {:?}",
                    status.restart_count,
                    short(&container.id),
                    container.started_at
                ))
            }
        },
    )
    .await;
    assert_eq!(back.hostname, first.hostname);
    assert!(status.restart_count >= 1);

    let removed = docker_cli(&["rm", "-f", &name]);
    assert!(removed.status.success(), "docker rm -f: {removed:?}");
    let (_, recreated) = eventually(
        CONVERGE,
        "the removed container to be recreated",
        async || {
            let (status, container) = h.converged(&doc).await?;
            if container.id != back.id {
                Ok((status, container))
            } else {
                Err(format!("still the removed id {}", short(&back.id)))
            }
        },
    )
    .await;
    assert_eq!(recreated.hostname, first.hostname);
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn deleting_the_document_removes_the_container_and_the_status_and_keeps_the_history() {
    let h = harness("ctl-delete").await;
    let game = game_id("ctl-delete");
    let _cleanup = Cleanup::new(&[&container_name(h.keys.prefix(), &game)]);
    let _controller = h.controller("ctl").start().await;
    let (_, container) = h.wait_converged(&h.create(doc(&game)).await).await;

    h.documents
        .delete(&game, None)
        .await
        .expect("document deleted");
    eventually(
        CONVERGE,
        "the container, the status and the lease of a deleted game to be gone",
        async || {
            let containers = h.containers(&game).await?;
            let status = h.status(&game).await?;
            let lease = h
                .store
                .get(&h.keys.lease(&game))
                .await
                .map_err(|e| format!("lease read: {e}"))?;
            if containers.is_empty() && status.is_none() && lease.is_none() {
                Ok(())
            } else {
                Err(format!(
                    "containers {}, status {:?}, lease key present: {}",
                    describe(&containers),
                    status.as_ref().map(summary),
                    lease.is_some()
                ))
            }
        },
    )
    .await;

    let entries = h.history(&game).await;
    assert!(
        entries.iter().any(|e| e.op_kind == OpKind::Start
            && e.container_id_after.as_deref() == Some(container.id.as_str())),
        "the history of a deleted game is kept:\n  {}",
        timeline(&entries)
    );
    assert!(
        entries
            .iter()
            .any(|e| e.op_kind == OpKind::Remove && e.outcome == Outcome::Success),
        "the removal is recorded:\n  {}",
        timeline(&entries)
    );
}

// ---------------------------------------------------------------------------
// Controllers coming and going.

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_restarted_controller_adopts_the_running_containers_instead_of_recreating_them() {
    let h = harness("ctl-adopt").await;
    let games: Vec<String> = (0..5).map(|i| game_id(&format!("ctl-adopt{i}"))).collect();
    let names: Vec<String> = games
        .iter()
        .map(|g| container_name(h.keys.prefix(), g))
        .collect();
    let _cleanup = Cleanup::new(&names.iter().map(String::as_str).collect::<Vec<_>>());

    let mut first = h.controller("first").start().await;
    let mut docs = Vec::new();
    for game in &games {
        docs.push(h.create(doc(game)).await);
    }
    let before = h.wait_all_converged(&docs, CONVERGE).await;
    let mut last_seq: BTreeMap<&str, u64> = BTreeMap::new();
    for game in &games {
        let newest = h.history(game).await.first().map_or(0, |e| e.seq);
        last_seq.insert(game, newest);
    }

    stop_gracefully(&mut first, Duration::from_secs(30)).await;
    for game in &games {
        let containers = h.containers(game).await.unwrap();
        assert!(
            containers.len() == 1 && containers[0].is_running(),
            "stopping the controller leaves the games running: {game} {}",
            describe(&containers)
        );
    }

    let second = h.controller("second").start().await;
    // Ready, then at least one full resync: every game reconciled twice
    // (the first list, then the resync) by the new controller.
    let wanted = 2.0 * games.len() as f64;
    eventually(
        Duration::from_secs(30),
        "the new controller to reconcile every game twice (first list + one resync)",
        async || {
            let n = second.metric("rtmanager_reconciles_total").await;
            if n >= wanted {
                Ok(())
            } else {
                Err(format!("rtmanager_reconciles_total {n} < {wanted}"))
            }
        },
    )
    .await;

    let after = h.wait_all_converged(&docs, CONVERGE).await;
    for game in &games {
        let (_, was) = &before[game];
        let (status, now) = &after[game];
        assert_eq!(
            (short(&now.id), now.started_at),
            (short(&was.id), was.started_at),
            "{game}: neither recreated nor restarted in place"
        );
        assert_eq!(status.container_id.as_deref(), Some(was.id.as_str()));
        let entries = h.history(game).await;
        let touched: Vec<&HistoryEntry> = entries
            .iter()
            .filter(|e| e.seq > last_seq[game.as_str()])
            .filter(|e| {
                matches!(
                    e.op_kind,
                    OpKind::Start | OpKind::Stop | OpKind::Restart | OpKind::Remove
                )
            })
            .collect();
        assert!(
            touched.is_empty(),
            "{game}: the new controller ran operations on an adopted game:\n  {}",
            timeline(&entries)
        );
    }
}

/// Polls Docker the whole time and remembers the first moment a game had
/// more than one container.
struct Census {
    done: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<CensusReport>,
}

#[derive(Debug, Default)]
struct CensusReport {
    polls: usize,
    failed_polls: usize,
    /// The first time a game had two containers: the game and what was seen.
    twin: Option<(String, String)>,
}

impl Census {
    fn start(runtime: Arc<DockerRuntime>, games: Vec<String>) -> Census {
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let task = tokio::spawn(async move {
            let mut report = CensusReport::default();
            while !stop.load(Ordering::SeqCst) {
                // Each game's own containers (a label filter): a listing of
                // every managed container on a shared machine is too slow
                // to catch a short overlap.
                let mut all = Vec::new();
                let mut failed = false;
                for game in &games {
                    match runtime.list_game(game).await {
                        Ok(found) => all.extend(found),
                        Err(_) => failed = true,
                    }
                }
                match (!failed).then_some(all) {
                    Some(all) => {
                        report.polls += 1;
                        for game in &games {
                            let ours: Vec<ContainerInfo> = all
                                .iter()
                                .filter(|c| c.game() == Some(game.as_str()))
                                .cloned()
                                .collect();
                            if ours.len() > 1 && report.twin.is_none() {
                                report.twin = Some((game.clone(), describe(&ours)));
                            }
                        }
                    }
                    None => report.failed_polls += 1,
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            report
        });
        Census { done, task }
    }

    async fn finish(self) -> CensusReport {
        self.done.store(true, Ordering::SeqCst);
        within(
            Duration::from_secs(30),
            "the Docker census to stop",
            self.task,
        )
        .await
        .expect("the census task does not panic")
    }
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn two_controllers_keep_one_container_per_game_and_one_takes_over_when_the_other_dies() {
    let h = harness("ctl-pair").await;
    let games: Vec<String> = (0..10).map(|i| game_id(&format!("ctl-pair{i}"))).collect();
    let names: Vec<String> = games
        .iter()
        .map(|g| container_name(h.keys.prefix(), g))
        .collect();
    let _cleanup = Cleanup::new(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let census = Census::start(h.runtime.clone(), games.clone());

    // Both on the same Docker host (same node name), racing for every game.
    let mut a = h.controller("a").start().await;
    let seen_after_a = h.heartbeats().await.unwrap();
    let mut b = h.controller("b").start().await;
    let seen_after_b = h.heartbeats().await.unwrap();
    let b_ids: BTreeSet<String> = seen_after_b.difference(&seen_after_a).cloned().collect();

    // Stops last the full 3 s stopTimeout, so restarts are still running
    // when one controller dies below.
    let mut docs = Vec::new();
    for game in &games {
        let fixture = doc(game)
            .ignoring_sigterm()
            .stop_timeout(Duration::from_secs(3));
        docs.push(h.create(fixture).await);
    }
    h.wait_all_converged(&docs, CONVERGE).await;
    let both = h.heartbeats().await.unwrap();
    assert_eq!(
        both.len(),
        2,
        "each live controller has a heartbeat key under controllers/: {both:?}"
    );

    // Ask for a restart of every game, and kill -9 a controller as soon as
    // one of its restarts is under way.
    let token = "after-crash";
    let source_ref = format!("REQ-{}-pair", std::process::id());
    docs.clear();
    for game in &games {
        docs.push(h.request_restart(game, token, &source_ref).await);
    }
    let holder = eventually(
        Duration::from_secs(30),
        "a restart to be under way",
        async || {
            for game in &games {
                let entries = h.history(game).await;
                if let Some(entry) = entries.iter().find(|e| {
                    e.op_kind == OpKind::Restart
                        && e.source_ref == source_ref
                        && e.outcome == Outcome::InProgress
                }) {
                    return Ok(entry.holder.clone());
                }
            }
            Err("no restart entry in progress yet".to_owned())
        },
    )
    .await;
    let (victim, survivor) = if b_ids.contains(&holder) {
        (&mut b, &a)
    } else {
        (&mut a, &b)
    };
    let killed = victim.kill();
    eprintln!(
        "killed controller {} ({killed}) while {holder} was restarting; {} must take over",
        victim.name(),
        survivor.name()
    );

    // The survivor waits out the dead controller's leases (TTL), then
    // finishes every restart.
    let converged = h.wait_all_converged(&docs, CONVERGE + LEASE_TTL).await;
    for (game, (status, _)) in &converged {
        assert_eq!(
            status.observed_restart_token.as_deref(),
            Some(token),
            "{game}"
        );
        eventually(
            CONVERGE,
            "the dead controller's unfinished history entries to be resolved",
            async || {
                let entries = h.history(game).await;
                if entries.iter().any(|e| e.outcome == Outcome::InProgress) {
                    Err(format!("{game}:\n  {}", timeline(&entries)))
                } else {
                    Ok(())
                }
            },
        )
        .await;
    }
    eventually(
        LEASE_TTL * 4,
        "the killed controller's heartbeat key to expire with its lease",
        async || {
            let live = h.heartbeats().await?;
            if live.len() == 1 && both.is_superset(&live) {
                Ok(())
            } else {
                Err(format!("heartbeats {live:?} (both were {both:?})"))
            }
        },
    )
    .await;

    let report = census.finish().await;
    assert!(
        report.twin.is_none(),
        "a game had two containers at once: {:?}",
        report.twin
    );
    assert!(
        report.polls >= 20,
        "the census looked too rarely to prove anything: {report:?}"
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn sigterm_during_a_restart_drains_it_and_the_next_controller_converges_the_game() {
    let h = harness("ctl-drain").await;
    let game = game_id("ctl-drain");
    let _cleanup = Cleanup::new(&[&container_name(h.keys.prefix(), &game)]);
    let mut first = h.controller("first").start().await;
    let fixture = doc(&game)
        .ignoring_sigterm()
        .stop_timeout(Duration::from_secs(5));
    let (_, before) = h.wait_converged(&h.create(fixture).await).await;

    // The restart's stop takes the full 5 s stopTimeout: SIGTERM lands in it.
    let source_ref = format!("REQ-{game}-drain");
    let doc = h.request_restart(&game, "drain-1", &source_ref).await;
    eventually(
        Duration::from_secs(30),
        "the restart to be under way",
        async || {
            let entries = h.history(&game).await;
            if entries.iter().any(|e| {
                e.op_kind == OpKind::Restart
                    && e.source_ref == source_ref
                    && e.outcome == Outcome::InProgress
            }) {
                Ok(())
            } else {
                Err(timeline(&entries))
            }
        },
    )
    .await;
    let signalled = Instant::now();
    stop_gracefully(&mut first, Duration::from_secs(60)).await;
    eprintln!(
        "the first controller exited 0 {:?} after SIGTERM",
        signalled.elapsed()
    );

    let _second = h.controller("second").start().await;
    let (status, after) = h.wait_converged(&doc).await;
    assert_ne!(after.id, before.id, "the restart happened");
    assert_eq!(status.observed_restart_token.as_deref(), Some("drain-1"));
    let entries = eventually(CONVERGE, "no history entry left in progress", async || {
        let entries = h.history(&game).await;
        if entries.iter().any(|e| e.outcome == Outcome::InProgress) {
            Err(timeline(&entries))
        } else {
            Ok(entries)
        }
    })
    .await;
    for entry in entries.iter().filter(|e| e.source_ref == source_ref) {
        let completed = entry.outcome == Outcome::Success;
        let aborted =
            entry.outcome == Outcome::Failure && entry.error_code == Some(ErrorCode::Aborted);
        assert!(
            completed || aborted,
            "the interrupted restart either completed or is recorded as aborted:\n  {}",
            timeline(&entries)
        );
    }
}

// ---------------------------------------------------------------------------
// What operators see: metrics, quiet steady state, garbage collection, flags.

const METRICS: [&str; 9] = [
    "rtmanager_reconciles_total",
    "rtmanager_reconcile_duration_seconds",
    "rtmanager_queue_depth",
    "rtmanager_active_workers",
    "rtmanager_operations_total",
    "rtmanager_lease_acquire_duration_seconds",
    "rtmanager_docker_request_duration_seconds",
    "rtmanager_etcd_watch_restarts_total",
    "rtmanager_games",
];

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn metrics_are_served_and_a_converged_controller_writes_nothing_but_its_heartbeat() {
    let h = harness("ctl-quiet").await;
    let games: Vec<String> = (0..3).map(|i| game_id(&format!("ctl-quiet{i}"))).collect();
    let names: Vec<String> = games
        .iter()
        .map(|g| container_name(h.keys.prefix(), g))
        .collect();
    let _cleanup = Cleanup::new(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let controller = h.controller("ctl").env("RTM_RESYNC", "2s").start().await;
    let mut docs = Vec::new();
    for game in &games {
        docs.push(h.create(doc(game)).await);
    }
    h.wait_all_converged(&docs, CONVERGE).await;

    // Steady state: the last writes (status, lease release) are done.
    h.wait_leases_released().await;
    let from = h.store.revision().await.unwrap() + 1;
    let watched = Instant::now();
    let mut watch = h
        .store
        .watch(&h.keys.root(), from)
        .await
        .expect("watch the test's prefix");
    let base = controller.metric("rtmanager_reconciles_total").await;
    let wanted = base + 2.0 * games.len() as f64;
    eventually(
        Duration::from_secs(30),
        "two resync passes over every game",
        async || {
            let n = controller.metric("rtmanager_reconciles_total").await;
            if n >= wanted {
                Ok(())
            } else {
                Err(format!("rtmanager_reconciles_total {n} < {wanted}"))
            }
        },
    )
    .await;
    // Our own write marks "now" in the watch: whatever came before it was
    // written by the controller during the resyncs.
    let sentinel = format!("{}test-sentinel", h.keys.root());
    h.store
        .txn(Txn::new().put(sentinel.clone(), b"now".to_vec()))
        .await
        .unwrap();
    let mut writes = Vec::new();
    let mut heartbeats = 0;
    within(
        Duration::from_secs(10),
        "the sentinel write to come through the watch",
        async {
            loop {
                let batch = watch
                    .next()
                    .await
                    .expect("the watch stays open")
                    .expect("the watch does not fail");
                for event in batch {
                    if event.key() == sentinel {
                        return;
                    }
                    if event.key().starts_with(&h.keys.controllers()) {
                        // The controller's heartbeat, rewritten every TTL/3
                        // whatever the number of games (lease.rs).
                        heartbeats += 1;
                        continue;
                    }
                    writes.push(match event {
                        WatchEvent::Put(kv) => {
                            format!("put {} = {}", kv.key, String::from_utf8_lossy(&kv.value))
                        }
                        WatchEvent::Delete { key, .. } => format!("delete {key}"),
                    });
                }
            }
        },
    )
    .await;
    assert!(
        writes.is_empty(),
        "a converged controller wrote to etcd during two resyncs:\n{}",
        writes.join("\n")
    );
    // One rewrite every TTL/3 whatever the number of games (one spare for
    // a retry).
    let expected = watched.elapsed().as_secs_f64() / (LEASE_TTL.as_secs_f64() / 3.0) + 2.0;
    assert!(
        f64::from(heartbeats) <= expected,
        "{heartbeats} heartbeat rewrites in {:?}; at most {expected:.0} expected",
        watched.elapsed()
    );

    let text = controller.metrics().await;
    let missing: Vec<&str> = METRICS
        .into_iter()
        .filter(|name| {
            !text
                .lines()
                .any(|line| !line.starts_with('#') && line.starts_with(name))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "/metrics has no samples of {missing:?}:\n{text}"
    );
    for path in ["/healthz", "/readyz"] {
        let answer = controller.get(path).await;
        assert!(matches!(answer, Ok((200, _))), "GET {path}: {answer:?}");
    }
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn an_orphaned_container_of_this_installation_is_removed_after_the_grace_period_and_no_other()
{
    let h = harness("ctl-gc").await;
    let orphan = game_id("ctl-gc-orphan");
    let neighbour = game_id("ctl-gc-neighbour");
    let foreign = game_id("ctl-gc-foreign");
    // rtmanager's, but another installation's (another prefix): named as that one names it.
    let other_prefix = format!("{}-elsewhere", h.keys.prefix());
    let _cleanup = Cleanup::new(&[
        &container_name(h.keys.prefix(), &orphan),
        &container_name(&other_prefix, &neighbour),
        &container_name(h.keys.prefix(), &foreign),
    ]);
    let _controller = h.controller("ctl").start().await;

    // Not rtmanager's at all: a game label, no managed-by label.
    let created = docker_cli(&[
        "run",
        "-d",
        "--name",
        &container_name(h.keys.prefix(), &foreign),
        "--label",
        &format!("{LABEL_GAME}={foreign}"),
        IMAGE_1,
    ]);
    assert!(created.status.success(), "docker run: {created:?}");
    let neighbour_id = h.start_labelled(&neighbour, &other_prefix).await;
    // This installation's, with no document under its prefix: an orphan.
    let orphan_id = h.start_labelled(&orphan, h.keys.prefix()).await;
    let started = Instant::now();

    eventually(
        Duration::from_secs(30),
        "the orphaned container to be garbage-collected",
        async || match h.runtime.inspect_container(&orphan_id).await {
            Ok(None) => Ok(()),
            Ok(Some(c)) => Err(format!("{} is {}", c.name, c.state)),
            Err(e) => Err(e.to_string()),
        },
    )
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "removed after {took:?}, before the 3 s grace period"
    );
    for (id, why) in [
        (
            container_name(h.keys.prefix(), &foreign),
            "without managed-by=rtmanager",
        ),
        (neighbour_id, "of another installation (prefix)"),
    ] {
        let kept = h.runtime.inspect_container(&id).await.unwrap();
        assert!(
            kept.as_ref().is_some_and(ContainerInfo::is_running),
            "a container {why} is never touched: {kept:?}"
        );
    }
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_status_record_left_without_a_document_is_cleared_and_another_nodes_is_kept() {
    let h = harness("ctl-status-gc").await;
    let before = game_id("ctl-sgc-before");
    let after = game_id("ctl-sgc-after");
    let theirs = game_id("ctl-sgc-theirs");
    let record = |node: Option<&str>| {
        let status = GameRuntimeStatus {
            node: node.map(str::to_owned),
            ..GameRuntimeStatus::default()
        };
        rtm_core::records::status::encode(&status)
    };
    // Left by games deleted while no controller ran: one listed at start-up,
    // one seen by the status watch, and one of another node.
    for (game, node) in [(&before, Some("local")), (&theirs, Some("elsewhere"))] {
        h.store
            .create(&h.keys.status(game), record(node), None)
            .await
            .expect("status written");
    }
    let _controller = h.controller("ctl").start().await;
    h.store
        .create(&h.keys.status(&after), record(None), None)
        .await
        .expect("status written");

    eventually(
        Duration::from_secs(30),
        "the status records without a document to be cleared",
        async || {
            let mut left = Vec::new();
            for game in [&before, &after] {
                if h.store
                    .get(&h.keys.status(game))
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some()
                {
                    left.push(game.clone());
                }
            }
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("still there: {left:?}"))
            }
        },
    )
    .await;
    assert!(
        h.store
            .get(&h.keys.status(&theirs))
            .await
            .unwrap()
            .is_some(),
        "another node's status record is that node's business"
    );
}

/// Runs `rtmanager` with none of the caller's rtmanager settings.
fn rtmanager(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary());
    for (var, _) in std::env::vars_os() {
        let name = var.to_string_lossy();
        if name.starts_with("RTM_") || name == "DOCKER_HOST" {
            command.env_remove(&var);
        }
    }
    command.args(args).envs(env.iter().copied());
    run_bounded(command, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("rtmanager {args:?} did not exit within 30 s"))
}

/// The lines `--help` shows for `flag`, up to the next option (option
/// lines are indented by at most 6 spaces; value lists under a description,
/// `- text: ...`, by more).
fn help_block<'h>(help: &'h str, flag: &str) -> Option<Vec<&'h str>> {
    let is_option = |line: &str| {
        let option = line.trim_start();
        line.len() - option.len() <= 6 && option.starts_with('-')
    };
    let mut lines = help.lines().skip_while(|line| {
        let option = line.trim_start();
        !(is_option(line) && (option == flag || option.starts_with(&format!("{flag} "))))
    });
    let first = lines.next()?;
    let mut block = vec![first];
    block.extend(lines.take_while(|line| !is_option(line)));
    Some(block)
}

#[test]
fn help_lists_every_option_with_its_environment_variable_and_default() {
    let output = rtmanager(&["--help"], &[]);
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8_lossy(&output.stdout);
    let options: [(&str, &str, Option<&str>); 36] = [
        (
            "--etcd-endpoints",
            "RTM_ETCD_ENDPOINTS",
            Some("http://127.0.0.1:2379"),
        ),
        ("--prefix", "RTM_PREFIX", Some("/rtmanager")),
        ("--etcd-ca-file", "RTM_ETCD_CA_FILE", None),
        ("--etcd-cert-file", "RTM_ETCD_CERT_FILE", None),
        ("--etcd-key-file", "RTM_ETCD_KEY_FILE", None),
        ("--etcd-user", "RTM_ETCD_USER", None),
        ("--etcd-password-file", "RTM_ETCD_PASSWORD_FILE", None),
        ("--etcd-timeout", "RTM_ETCD_TIMEOUT", Some("5s")),
        ("--docker-host", "DOCKER_HOST", None),
        ("--node-name", "RTM_NODE_NAME", Some("local")),
        ("--controller-name", "RTM_CONTROLLER_NAME", None),
        ("--node-labels", "RTM_NODE_LABELS", None),
        ("--capacity", "RTM_CAPACITY", None),
        ("--port-range", "RTM_PORT_RANGE", Some("17000-17999")),
        (
            "--placement-strategy",
            "RTM_PLACEMENT_STRATEGY",
            Some("Packed"),
        ),
        (
            "--node-failure-grace",
            "RTM_NODE_FAILURE_GRACE",
            Some("60s"),
        ),
        ("--self-fence-after", "RTM_SELF_FENCE_AFTER", Some("30s")),
        ("--concurrency", "RTM_CONCURRENCY", Some("32")),
        ("--lease-ttl", "RTM_LEASE_TTL", Some("15s")),
        ("--resync", "RTM_RESYNC", Some("60s")),
        ("--metrics-addr", "RTM_METRICS_ADDR", Some("127.0.0.1:9464")),
        ("--log-format", "RTM_LOG_FORMAT", Some("text")),
        ("--history-retention", "RTM_HISTORY_RETENTION", Some("100")),
        ("--gc-grace", "RTM_GC_GRACE", Some("60s")),
        ("--reconcile-timeout", "RTM_RECONCILE_TIMEOUT", Some("5m")),
        ("--drain-timeout", "RTM_DRAIN_TIMEOUT", Some("60s")),
        ("--history-grace", "RTM_HISTORY_GRACE", Some("24h")),
        ("--host-ports", "RTM_HOST_PORTS", Some("1024-65535")),
        ("--host-ips", "RTM_HOST_IPS", Some("0.0.0.0,::")),
        (
            "--allowed-capabilities",
            "RTM_ALLOWED_CAPABILITIES",
            Some("NET_BIND_SERVICE"),
        ),
        ("--pids-limit", "RTM_PIDS_LIMIT", Some("1024")),
        ("--default-memory", "RTM_DEFAULT_MEMORY", Some("1Gi")),
        ("--max-memory", "RTM_MAX_MEMORY", Some("16Gi")),
        ("--default-cpus", "RTM_DEFAULT_CPUS", Some("1")),
        ("--max-cpus", "RTM_MAX_CPUS", Some("16")),
        ("--network", "RTM_NETWORK", None),
    ];
    for (flag, var, default) in options {
        let block = help_block(&help, flag)
            .unwrap_or_else(|| panic!("--help does not list {flag}:\n{help}"))
            .join("\n");
        assert!(
            block.contains(&format!("[env: {var}")),
            "{flag} names its variable {var}:\n{block}"
        );
        if let Some(default) = default {
            assert!(
                block.contains(&format!("[default: {default}]")),
                "{flag} shows its default {default}:\n{block}"
            );
        }
    }
    assert!(help_block(&help, "--config").is_some(), "{help}");
}

/// Runs `rtmanager` with a bad setting: it must exit non-zero at once,
/// naming each of `mentions` in its error.
fn assert_refused(args: &[&str], env: &[(&str, &str)], mentions: &[&str]) {
    let output = rtmanager(args, env);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "rtmanager {args:?} {env:?} must refuse to start: {output:?}"
    );
    for mention in mentions {
        assert!(
            stderr.contains(mention),
            "rtmanager {args:?} {env:?}: the error names {mention:?}:\n{stderr}"
        );
    }
}

#[test]
fn a_bad_value_stops_the_controller_at_start_up_with_a_clear_message() {
    assert_refused(&["--lease-ttl", "soon"], &[], &["--lease-ttl", "soon"]);
    assert_refused(&[], &[("RTM_LEASE_TTL", "soon")], &["lease-ttl", "soon"]);
    assert_refused(&["--lease-ttl", "1s"], &[], &["--lease-ttl", "3s"]);
    assert_refused(
        &["--metrics-addr", "nowhere"],
        &[],
        &["--metrics-addr", "nowhere"],
    );
}

// ---------------------------------------------------------------------------
// Hands in etcd and Docker: records are caches of what runs; a container
// carrying a game's labels is the game's, whatever was done to it by hand.

/// The newest history seq of each game.
async fn newest_seqs(h: &Harness, games: &[String]) -> BTreeMap<String, u64> {
    let mut seqs = BTreeMap::new();
    for game in games {
        let newest = h.history(game).await.first().map_or(0, |e| e.seq);
        seqs.insert(game.clone(), newest);
    }
    seqs
}

/// The entries of `game` newer than `seq`, newest first.
async fn entries_since(h: &Harness, game: &str, seq: u64) -> Vec<HistoryEntry> {
    h.history(game)
        .await
        .into_iter()
        .filter(|e| e.seq > seq)
        .collect()
}

/// Whether an entry changed a container (not an adoption or a resume).
fn disrupts(entry: &HistoryEntry) -> bool {
    matches!(
        entry.op_kind,
        OpKind::Start | OpKind::Stop | OpKind::Restart | OpKind::Remove
    )
}

/// Runs `docker ARGS` and fails the test if it fails.
fn docker_ok(args: &[&str]) {
    let output = docker_cli(args);
    assert!(
        output.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn wiping_every_status_record_recreates_nothing() {
    let h = harness("hands-wipe").await;
    let games: Vec<String> = (0..3).map(|i| game_id(&format!("hands-wipe{i}"))).collect();
    let names: Vec<String> = games
        .iter()
        .map(|g| container_name(h.keys.prefix(), g))
        .collect();
    let _cleanup = Cleanup::new(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let controller = h.controller("wipe").start().await;
    let mut docs = Vec::new();
    for game in &games {
        docs.push(h.create(doc(game)).await);
    }
    h.wait_all_converged(&docs, CONVERGE).await;
    // A restart asked for and honoured: the one a lost record must not replay.
    docs[0] = h.request_restart(&games[0], "tok-wipe", "REQ-wipe").await;
    let before = h.wait_all_converged(&docs, CONVERGE).await;
    h.wait_leases_released().await;
    let seqs = newest_seqs(&h, &games).await;

    // etcdctl del --prefix <prefix>/status/
    h.store
        .txn(Txn::new().delete_prefix(h.keys.statuses()))
        .await
        .expect("delete every status record");

    // Rebuilt from the containers within seconds, not at a resync.
    let after = h.wait_all_converged(&docs, Duration::from_secs(15)).await;
    for game in &games {
        let (_, was) = &before[game];
        let (status, now) = &after[game];
        assert_eq!(
            (short(&now.id), now.started_at),
            (short(&was.id), was.started_at),
            "{game}: neither recreated nor restarted{}",
            controller.log_tail()
        );
        assert!(
            status.node.is_some(),
            "{game}: the node rebuilt too: {status:?}"
        );
        assert_eq!(status.node, before[game].0.node, "{game}");
        let since = entries_since(&h, game, seqs[game]).await;
        assert!(
            !since.iter().any(disrupts),
            "{game}: operations after the wipe:\n  {}",
            timeline(&since)
        );
    }
    let restarted = after[&games[0]].0.observed_restart_token.as_deref();
    assert_eq!(restarted, Some("tok-wipe"), "read back from the container");
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn garbage_in_a_status_record_is_rebuilt_and_drift_repair_goes_on() {
    let h = harness("hands-garbage").await;
    let game = game_id("hands-garbage");
    let _cleanup = Cleanup::new(&[&container_name(h.keys.prefix(), &game)]);
    let controller = h.controller("garbage").start().await;
    let doc = h.create(doc(&game)).await;
    let (_, first) = h.wait_converged(&doc).await;

    h.store
        .txn(Txn::new().put(h.keys.status(&game), b"{garbage".to_vec()))
        .await
        .expect("garble the status record");
    let (_, same) = h.wait_converged(&doc).await;
    assert_eq!(short(&same.id), short(&first.id), "rebuilt, not recreated");

    // The game is still reconciled: a killed container comes back.
    docker_ok(&["kill", &container_name(h.keys.prefix(), &game)]);
    let what = format!("{game}: a new container after the kill");
    eventually(CONVERGE, &what, async || {
        let (status, now) = h.converged(&doc).await?;
        if now.id == first.id {
            return Err(format!("still the killed container: {}", summary(&status)));
        }
        Ok(())
    })
    .await;
    assert!(
        controller
            .log_text()
            .contains("a status record does not decode"),
        "the warning names the record{}",
        controller.log_tail()
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_paused_container_is_resumed_in_place_and_the_resume_is_recorded() {
    let h = harness("hands-pause").await;
    let game = game_id("hands-pause");
    let name = container_name(h.keys.prefix(), &game);
    let _cleanup = Cleanup::new(&[&name]);
    let _controller = h.controller("pause").start().await;
    let doc = h.create(doc(&game)).await;
    let (_, before) = h.wait_converged(&doc).await;
    let seq = newest_seqs(&h, std::slice::from_ref(&game)).await[&game];

    docker_ok(&["pause", &name]);
    let what = format!("{game}: an unpause in the history");
    let since = eventually(CONVERGE, &what, async || {
        let since = entries_since(&h, &game, seq).await;
        if since
            .iter()
            .any(|e| e.op_kind == OpKind::Unpause && e.outcome == Outcome::Success)
        {
            Ok(since)
        } else {
            Err(timeline(&since))
        }
    })
    .await;
    let (_, after) = h.wait_converged(&doc).await;
    assert_eq!(short(&after.id), short(&before.id), "the same container");
    assert_eq!(after.started_at, before.started_at, "never restarted");
    assert!(!since.iter().any(disrupts), "{}", timeline(&since));
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_paused_container_is_stopped_or_restarted_when_asked() {
    let h = harness("hands-pause-ops").await;
    let stop = game_id("hands-pause-stop");
    let restart = game_id("hands-pause-restart");
    let (stop_name, restart_name) = (
        container_name(h.keys.prefix(), &stop),
        container_name(h.keys.prefix(), &restart),
    );
    let _cleanup = Cleanup::new(&[&stop_name, &restart_name]);
    let mut first = h.controller("first").start().await;
    let stop_doc = h.create(doc(&stop)).await;
    let restart_doc = h.create(doc(&restart)).await;
    h.wait_converged(&stop_doc).await;
    let (_, old) = h.wait_converged(&restart_doc).await;
    stop_gracefully(&mut first, Duration::from_secs(30)).await;

    // With no controller looking, both are paused and a change is asked.
    docker_ok(&["pause", &stop_name]);
    docker_ok(&["pause", &restart_name]);
    h.change(&stop, |d| {
        d.spec.state = rtm_core::model::DesiredState::Stopped
    })
    .await;
    let restart_doc = h
        .request_restart(&restart, "tok-paused", "REQ-paused")
        .await;
    let seqs = newest_seqs(&h, &[stop.clone(), restart.clone()]).await;
    let _second = h.controller("second").start().await;

    let (_, new) = h.wait_converged(&restart_doc).await;
    assert_ne!(short(&new.id), short(&old.id), "recreated");
    let what = format!("{stop}: stopped");
    eventually(CONVERGE, &what, async || {
        let status = h.status(&stop).await?.ok_or("no status")?;
        let containers = h.containers(&stop).await?;
        match containers.as_slice() {
            [c] if c.state.has_exited() && status.phase == Phase::Stopped => Ok(()),
            _ => Err(format!("{} {}", summary(&status), describe(&containers))),
        }
    })
    .await;
    for game in [&stop, &restart] {
        let since = entries_since(&h, game, seqs[game.as_str()]).await;
        let failed = since
            .iter()
            .filter(|e| e.outcome == Outcome::Failure)
            .count();
        assert_eq!(
            failed,
            0,
            "{game}: no failure loop:\n  {}",
            timeline(&since)
        );
        assert!(
            since.len() <= 4,
            "{game}: one operation:\n  {}",
            timeline(&since)
        );
    }
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_renamed_container_is_named_back_and_no_second_one_ever_runs() {
    let h = harness("hands-rename").await;
    let game = game_id("hands-rename");
    let name = container_name(h.keys.prefix(), &game);
    let other = format!("{name}-renamed");
    let _cleanup = Cleanup::new(&[&name, &other]);
    let _controller = h.controller("rename").start().await;
    let doc = h.create(doc(&game)).await;
    let (_, before) = h.wait_converged(&doc).await;
    let seq = newest_seqs(&h, std::slice::from_ref(&game)).await[&game];
    let census = Census::start(h.runtime.clone(), vec![game.clone()]);

    docker_ok(&["rename", &name, &other]);
    let what = format!("{game}: its container named back");
    eventually(CONVERGE, &what, async || {
        let found = h
            .runtime
            .inspect_container(&name)
            .await
            .map_err(|e| e.to_string())?;
        match found {
            Some(c) if c.id == before.id => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let (_, after) = h.wait_converged(&doc).await;
    let report = census.finish().await;
    assert!(report.polls >= 1, "the census looked: {report:?}");
    assert_eq!(report.twin, None, "never two containers");
    assert_eq!(after.started_at, before.started_at, "never restarted");
    let since = entries_since(&h, &game, seq).await;
    let named_back = since
        .iter()
        .find(|e| e.op_kind == OpKind::Adopt && e.outcome == Outcome::Success);
    assert!(
        named_back.is_some_and(|e| e.note.as_deref().is_some_and(|n| n.contains(&other))),
        "recorded, naming what it was called:\n  {}",
        timeline(&since)
    );
    assert!(!since.iter().any(disrupts), "{}", timeline(&since));
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_restart_whose_image_is_gone_keeps_the_old_container_running() {
    let h = harness("hands-rmi").await;
    let game = game_id("hands-rmi");
    let image = format!("rtmanager-test/hands-rmi-{}:1", std::process::id());
    let _cleanup = Cleanup::new(&[&container_name(h.keys.prefix(), &game)]);
    docker_ok(&["tag", IMAGE_1, &image]);
    struct Untag(String);
    impl Drop for Untag {
        fn drop(&mut self) {
            let _ = docker_cli(&["rmi", &self.0]);
        }
    }
    let _untag = Untag(image.clone());
    let _controller = h.controller("rmi").start().await;
    let mut fixture = doc(&game);
    fixture.0.spec.image = image.clone();
    // About an image gone from the host, not about a pull (tests/pulls.rs).
    fixture.0.spec.image_pull_policy = rtm_core::model::ImagePullPolicy::Never;
    let doc = h.create(fixture).await;
    let (_, before) = h.wait_converged(&doc).await;

    docker_ok(&["rmi", &image]);
    let doc = h.request_restart(&game, "tok-rmi", "REQ-rmi").await;
    let what = format!("{game}: the restart to fail with image_not_found");
    eventually(CONVERGE, &what, async || {
        let entries = h.history(&game).await;
        match entries.iter().find(|e| e.op_kind == OpKind::Restart) {
            Some(e) if e.error_code == Some(ErrorCode::ImageNotFound) => Ok(()),
            _ => Err(timeline(&entries)),
        }
    })
    .await;
    let containers = h.containers(&game).await.unwrap();
    assert!(
        matches!(containers.as_slice(), [c] if c.id == before.id && c.is_running()),
        "the old container keeps running: {}",
        describe(&containers)
    );
    let status = h.status(&game).await.unwrap().expect("a status");
    let last = status.last_operation.as_ref().expect("a last operation");
    assert_eq!(
        last.error_code.as_deref(),
        Some("image_not_found"),
        "{last:?}"
    );
    assert!(
        !h.history(&game)
            .await
            .iter()
            .any(|e| e.op_kind == OpKind::Stop),
        "nothing was stopped"
    );

    // The image back: the restart still asked for goes through.
    docker_ok(&["tag", IMAGE_1, &image]);
    let (_, after) = h.wait_converged(&doc).await;
    assert_ne!(short(&after.id), short(&before.id));
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_lease_key_put_by_hand_is_taken_over_and_the_game_goes_on() {
    let h = harness("hands-lease").await;
    let game = game_id("hands-lease");
    let _cleanup = Cleanup::new(&[&container_name(h.keys.prefix(), &game)]);
    let controller = h.controller("lease").start().await;
    let doc = h.create(doc(&game)).await;
    let (_, before) = h.wait_converged(&doc).await;
    h.wait_leases_released().await;

    // etcdctl put <prefix>/leases/<game> forged  (no etcd lease)
    h.store
        .txn(Txn::new().put(h.keys.lease(&game), b"forged".to_vec()))
        .await
        .expect("forge a lease key");
    let doc = h.request_restart(&game, "tok-lease", "REQ-lease").await;
    let (_, after) = h.wait_converged(&doc).await;
    assert_ne!(short(&after.id), short(&before.id), "restarted");
    assert!(
        controller
            .log_text()
            .contains("taking over a game lease key that no live controller holds"),
        "with a warning{}",
        controller.log_tail()
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_controller_frozen_past_its_ttl_counts_its_session_lost_by_its_own_clock() {
    let h = harness("hands-freeze").await;
    let game = game_id("hands-freeze");
    let _cleanup = Cleanup::new(&[&container_name(h.keys.prefix(), &game)]);
    let controller = h.controller("freeze").start().await;
    let doc = h.create(doc(&game)).await;
    h.wait_converged(&doc).await;
    let pid = controller.pid().to_string();
    let holders = h.heartbeats().await.unwrap();
    assert_eq!(holders.len(), 1, "{holders:?}");

    let stopped = Command::new("kill").args(["-STOP", &pid]).status();
    assert!(stopped.is_ok_and(|s| s.success()), "SIGSTOP {pid}");
    // Frozen until etcd expired its session (its heartbeat went with it).
    eventually(
        Duration::from_secs(30),
        "the frozen controller's heartbeat to expire",
        async || {
            let now = h.heartbeats().await?;
            if now.is_disjoint(&holders) {
                Ok(())
            } else {
                Err(format!("still {now:?}"))
            }
        },
    )
    .await;
    let resumed = Command::new("kill").args(["-CONT", &pid]).status();
    assert!(resumed.is_ok_and(|s| s.success()), "SIGCONT {pid}");

    eventually(
        Duration::from_secs(10),
        "the thawed controller to say its session is lost",
        async || {
            let log = controller.log_text();
            if log.contains("no keepalive acknowledged for nearly a TTL") {
                Ok(())
            } else {
                Err("not yet".into())
            }
        },
    )
    .await;
    // It opens a new session and goes on; nothing it wrote is unfenced.
    let doc = h.request_restart(&game, "tok-thaw", "REQ-thaw").await;
    h.wait_converged(&doc).await;
    let entries = h.history(&game).await;
    assert!(
        entries.iter().all(|e| e.fence_revision.is_some()),
        "every entry written under a lease:\n  {}",
        timeline(&entries)
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn the_same_failure_again_and_again_is_recorded_once_with_a_count() {
    let h = harness("hands-repeat").await;
    let game = game_id("hands-repeat");
    let name = container_name(h.keys.prefix(), &game);
    let _cleanup = Cleanup::new(&[&name]);
    // Someone else's container holds the game's name.
    docker_ok(&["create", "--name", &name, IMAGE_1]);
    let _controller = h.controller("repeat").start().await;
    h.create(doc(&game)).await;
    let what = format!("{game}: the conflict counted, not repeated");
    let entries = eventually(CONVERGE, &what, async || {
        let entries = h.history(&game).await;
        match entries.as_slice() {
            [only] if only.repeated >= 2 => Ok(entries),
            _ => Err(format!(
                "{} (repeated {:?})",
                timeline(&entries),
                entries.iter().map(|e| e.repeated).collect::<Vec<_>>()
            )),
        }
    })
    .await;
    assert_eq!(entries[0].error_code, Some(ErrorCode::Conflict));
    assert!(entries[0].last_repeated_at.is_some());
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_heartbeat_deleted_or_overwritten_by_hand_is_announced_again() {
    let h = harness("hands-heartbeat").await;
    let controller = h.controller("heartbeat").start().await;
    let holders = eventually(CONVERGE, "the heartbeat", async || {
        let holders = h.heartbeats().await?;
        if holders.len() == 1 {
            Ok(holders)
        } else {
            Err(format!("{holders:?}"))
        }
    })
    .await;
    let holder = holders.first().expect("one holder").clone();
    let key = h.keys.controller(&holder);
    for hand in [
        Txn::new().delete(key.clone()),
        Txn::new().put(key.clone(), b"forged".to_vec()),
    ] {
        h.store.txn(hand).await.expect("the hand edit");
        eventually(
            Duration::from_secs(15),
            "the heartbeat announced again on the session's lease",
            async || match h.store.get(&key).await.map_err(|e| e.to_string())? {
                Some(kv) if kv.lease != 0 && kv.value != b"forged" => Ok(()),
                other => Err(format!("{other:?}{}", controller.log_tail())),
            },
        )
        .await;
    }
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn a_controller_waiting_for_an_unreachable_etcd_stops_at_once_on_sigterm() {
    let keys = unique_keys("ctl-no-etcd");
    // Nothing listens on port 1: etcd is down for as long as the test runs.
    let mut controller = ControllerOptions::new(&keys, "no-etcd")
        .env("RTM_ETCD_ENDPOINTS", "http://127.0.0.1:1")
        .spawn();
    eventually(
        Duration::from_secs(30),
        "the controller to be waiting for etcd",
        async || {
            if controller.log_text().contains("listing failed") {
                Ok(())
            } else {
                Err(controller.log_tail())
            }
        },
    )
    .await;
    stop_gracefully(&mut controller, Duration::from_secs(10)).await;
}

// ---------------------------------------------------------------------------
// Tenancy: installations side by side, and liveness that no other writer
// can fake.

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_container_named_the_old_way_is_renamed_and_adopted_not_recreated() {
    let h = harness("ten-legacy").await;
    let game = game_id("ten-legacy");
    let old = rtm_controller::runtime::legacy_container_name(&game);
    let new = container_name(h.keys.prefix(), &game);
    let _cleanup = Cleanup::new(&[&old, &new]);
    // What an rtmanager from before names carried the installation left
    // running: the game's container with every label, named rtm-<game>.
    let doc = h.create(doc(&game)).await;
    let mut spec = rtm_controller::lifecycle::container_spec(
        &doc,
        h.keys.prefix(),
        "op-old",
        &rtm_controller::lifecycle::policy::ContainerPolicy::default(),
    );
    spec.name = old.clone();
    let id = h.runtime.create(&spec).await.expect("docker create");
    h.runtime.start(&id).await.expect("docker start");
    let before = h.runtime.inspect_container(&id).await.unwrap().unwrap();
    let census = Census::start(h.runtime.clone(), vec![game.clone()]);

    let _controller = h.controller("legacy").start().await;
    let (_, after) = h.wait_converged(&doc).await;
    let report = census.finish().await;
    assert_eq!(after.id, id, "the same container, adopted");
    assert_eq!(after.name.trim_start_matches('/'), new);
    assert_eq!(after.started_at, before.started_at, "never restarted");
    assert_eq!(report.twin, None, "never two containers");
    let entries = h.history(&game).await;
    assert!(!entries.iter().any(disrupts), "{}", timeline(&entries));
    assert!(
        entries.iter().any(|e| e.op_kind == OpKind::Adopt
            && e.outcome == Outcome::Success
            && e.note
                .as_deref()
                .is_some_and(|n| n.contains("older rtmanager"))),
        "the renaming is recorded:\n  {}",
        timeline(&entries)
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn two_installations_run_a_game_of_the_same_name_side_by_side_on_one_engine() {
    let h = harness("ten-twins").await;
    let other_keys = unique_keys("ten-twins-other");
    let _wipe_other = WipeOnDrop(other_keys.clone());
    let other = Documents::new(h.store.clone(), other_keys.clone());
    let game = game_id("ten-twins");
    let ours = container_name(h.keys.prefix(), &game);
    let theirs = container_name(other_keys.prefix(), &game);
    assert_ne!(ours, theirs);
    let _cleanup = Cleanup::new(&[&ours, &theirs]);
    let _a = h.controller("ours").start().await;
    let _b = ControllerOptions::new(&other_keys, "theirs").start().await;

    let doc_a = h.create(doc(&game)).await;
    other
        .create(&doc(&game).0)
        .await
        .expect("the same name in the other installation");
    let (_, a) = h.wait_converged(&doc_a).await;
    let b = eventually(CONVERGE, "the other installation's game", async || match h
        .runtime
        .inspect_container(&theirs)
        .await
    {
        Ok(Some(c)) if c.is_running() => Ok(c),
        other => Err(format!("{other:?}")),
    })
    .await;
    assert_ne!(a.id, b.id);
    assert_eq!(a.prefix(), Some(h.keys.prefix()));
    assert_eq!(b.prefix(), Some(other_keys.prefix()));

    // Deleting it in one installation leaves the other's alone.
    other.delete(&game, None).await.expect("delete");
    eventually(
        CONVERGE,
        "the other installation's container removed",
        async || match h.runtime.inspect_container(&theirs).await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    let kept = h.runtime.inspect_container(&ours).await.unwrap();
    assert!(
        kept.as_ref()
            .is_some_and(|c| c.id == a.id && c.is_running()),
        "{kept:?}"
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_dead_controllers_lease_kept_alive_by_another_writer_blocks_its_games_one_ttl_at_most() {
    let h = harness("ten-keepalive").await;
    let game = game_id("ten-keepalive");
    let _cleanup = Cleanup::new(&[&container_name(h.keys.prefix(), &game)]);
    // A stop that takes long: the engine ignores SIGTERM, so the dead
    // controller dies holding the game's lease.
    let doc = h
        .create(
            doc(&game)
                .ignoring_sigterm()
                .stop_timeout(Duration::from_secs(20)),
        )
        .await;
    let mut first = h.controller("first").start().await;
    h.wait_converged(&doc).await;
    let doc = h
        .change(&game, |d| {
            d.spec.state = rtm_core::model::DesiredState::Stopped
        })
        .await;
    let held = eventually(
        CONVERGE,
        "the first controller to hold the game's lease",
        async || match h.store.get(&h.keys.lease(&game)).await {
            Ok(Some(kv)) => Ok(kv.lease),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    first.kill();
    // A writer who may not touch controllers/ keeps the dead session's
    // etcd lease alive (etcd 3.4 checks no permission on a keepalive).
    let writer = {
        let store = h.store.clone();
        tokio::spawn(async move {
            while store.keep_alive(held).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let next = h.controller("next").start().await;
    let started = Instant::now();
    eventually(
        LEASE_TTL * 4,
        "the next controller to revoke the dead one's lease and take the game",
        async || match h.store.get(&h.keys.lease(&game)).await {
            Ok(Some(kv)) if kv.lease != held => Ok(()),
            Ok(None) if h.store.keep_alive(held).await.is_err() => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    let took = started.elapsed();
    eprintln!("the dead session's lease was revoked {took:?} after the next controller started");
    assert!(
        took >= LEASE_TTL,
        "a heartbeat is judged dead only after standing still for its TTL (took {took:?})"
    );
    assert!(
        h.store.keep_alive(held).await.is_err(),
        "the dead session's lease is revoked"
    );
    assert!(
        next.log_text()
            .contains("revoking a dead controller's etcd lease that something else keeps alive"),
        "with a warning{}",
        next.log_tail()
    );
    writer.abort();
    eventually(
        CONVERGE,
        "the game stopped by the next controller",
        async || match h.status(&game).await? {
            Some(s)
                if s.phase == Phase::Stopped
                    && s.observed_generation == doc.metadata.generation =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        },
    )
    .await;
}

/// A TCP port nothing on this host listens on right now.
fn free_host_port() -> u16 {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

fn publishing(doc: Doc, host_port: u16) -> Doc {
    let mut doc = doc;
    doc.0.spec.ports.push(rtm_core::model::PortMapping {
        container_port: 7000,
        host_port: Some(host_port.into()),
        protocol: rtm_core::model::Protocol::Tcp,
        host_ip: None,
    });
    doc
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_host_port_stays_its_owners_through_a_crash_a_stop_and_a_restart_while_a_claimant_waits()
{
    let h = harness("ten-ports").await;
    let owner = game_id("ten-ports-owner");
    let claimant = game_id("ten-ports-claimant");
    let _cleanup = Cleanup::new(&[
        &container_name(h.keys.prefix(), &owner),
        &container_name(h.keys.prefix(), &claimant),
    ]);
    let port = free_host_port();
    let _controller = h.controller("ports").start().await;
    let owned = h.create(publishing(doc(&owner), port)).await;
    let (_, first) = h.wait_converged(&owned).await;
    // The scheduler would keep the claimant off the node (its host port is taken there:
    // Unschedulable); assigned by hand, the node's own claims are what refuse it.
    let assignment = rtm_core::records::nodes::Assignment::to(
        "local",
        rtm_core::records::nodes::AssignmentReason::Pinned,
        "test",
    );
    h.store
        .txn(rtm_core::store::Txn::new().put(
            h.keys.assignment(&claimant),
            rtm_core::records::nodes::encode(&assignment),
        ))
        .await
        .expect("assignment written");
    h.create(publishing(doc(&claimant), port)).await;

    let refused = async || {
        eventually(
            CONVERGE,
            "the claimant refused, naming the owner",
            async || {
                let entries = h.history(&claimant).await;
                let refusal = entries.iter().find(|e| {
                    e.error_code == Some(ErrorCode::PortConflict)
                        && e.error_message
                            .as_deref()
                            .is_some_and(|m| m.contains(&format!("belongs to game {owner}")))
                });
                refusal.map(|_| ()).ok_or_else(|| timeline(&entries))
            },
        )
        .await;
        let containers = h.containers(&claimant).await.unwrap();
        assert!(
            containers.is_empty(),
            "the claimant never gets a container: {}",
            describe(&containers)
        );
    };
    refused().await;

    // A crash: the owner comes back on its port.
    docker_ok(&["kill", &first.id]);
    let (_, second) = eventually(CONVERGE, "the owner back after its crash", async || {
        let (status, container) = h.converged(&owned).await?;
        if status.restart_count >= 1 {
            Ok((status, container))
        } else {
            Err(format!(
                "{} restarts {}",
                short(&container.id),
                status.restart_count
            ))
        }
    })
    .await;
    refused().await;

    // A stop: the port stays the owner's.
    let stopped = h
        .change(&owner, |d| {
            d.spec.state = rtm_core::model::DesiredState::Stopped
        })
        .await;
    eventually(CONVERGE, "the owner stopped", async || {
        match h.status(&owner).await? {
            Some(s)
                if s.phase == Phase::Stopped
                    && s.observed_generation == stopped.metadata.generation =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // The claimant tries again while the owner is stopped (a new entry, or
    // one more on its folded failure) and is refused again. Its retries
    // back off (1 s doubling to 5 min), so by now the next one may be a
    // minute away: a change of its document makes it try at once.
    // Every finished attempt, folded or not: a count that only grows (an attempt in
    // progress, or one being folded into the entry before it, is not counted yet).
    let attempts = async || {
        h.history(&claimant)
            .await
            .iter()
            .filter(|e| e.outcome != Outcome::InProgress)
            .map(|e| 1 + e.repeated)
            .sum::<u64>()
    };
    let before = attempts().await;
    h.change(&claimant, |d| {
        d.metadata
            .labels
            .insert("try".to_owned(), "again".to_owned());
    })
    .await;
    eventually(
        CONVERGE,
        "the claimant to try again while the owner is stopped",
        async || {
            let now = attempts().await;
            if now > before {
                Ok(())
            } else {
                Err(format!("{now:?}"))
            }
        },
    )
    .await;
    assert_eq!(
        h.status(&owner).await.unwrap().map(|s| s.phase),
        Some(Phase::Stopped),
        "tried while the owner was still stopped"
    );
    refused().await;

    // Running again, then a restart (a recreate): still the owner's.
    let running = h
        .change(&owner, |d| {
            d.spec.state = rtm_core::model::DesiredState::Running
        })
        .await;
    h.wait_converged(&running).await;
    let restarted = h.request_restart(&owner, "tok-ports", "REQ-ports").await;
    let (_, last) = h.wait_converged(&restarted).await;
    assert_ne!(last.id, second.id, "recreated");
    refused().await;
    let published = docker_cli(&["port", &last.id, "7000/tcp"]);
    let text = String::from_utf8_lossy(&published.stdout).to_string();
    assert!(
        text.contains(&format!(":{port}")),
        "the owner publishes {port}: {text}"
    );
}
