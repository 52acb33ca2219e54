//! Sessions and disruption budgets end to end: the real `rtmanager` against the real etcd
//! and Docker, health-checked test engines, games allocated through the library call a
//! matchmaker uses (`records::sessions`), budgets written as documents. Judged as a user
//! would: the containers Docker runs, the status conditions, the history, and a monitor
//! that samples how many games are unavailable throughout a rollout.
//!
//! Ignored by a bare `cargo test` (they need etcd and Docker). One at a time.

use rtm_testkit as common;
use rtm_testkit::process;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rtm_controller::runtime::{ContainerRuntime, ContainerState, DockerRuntime, container_name};
use rtm_core::ErrorCode;
use rtm_core::model::parse::{Object, parse_objects};
use rtm_core::model::{
    ANNOTATION_FORCE, ConditionStatus, GameRuntime, GameRuntimeStatus, OpKind,
    REASON_DISRUPTION_BUDGET, REASON_IN_SESSION, UPDATE_PENDING,
};
use rtm_core::records::Documents;
use rtm_core::records::budgets::Budgets;
use rtm_core::records::history::{History, HistoryEntry};
use rtm_core::records::sessions::{Released, SessionError, SessionRequest, Sessions};
use rtm_core::store::{Keys, Store};

use common::docker::{IMAGE_1, IMAGE_2, docker, game as game_id};
use common::{etcd, unique_keys};
use process::{ControllerOptions, ControllerProcess, WipeOnDrop, eventually};

/// A start of the test engine and its first passing probe take about two seconds; the
/// rest is slack for a loaded machine.
const CONVERGE: Duration = Duration::from_secs(90);

/// One test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Harness {
    store: Arc<dyn Store>,
    keys: Keys,
    documents: Documents,
    sessions: Sessions,
    budgets: Budgets,
    history: History,
    runtime: Arc<DockerRuntime>,
    _wipe: WipeOnDrop,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

async fn harness(test: &str) -> Harness {
    let serial = SERIAL.lock().await;
    let store: Arc<dyn Store> = etcd().await;
    let keys = unique_keys(test);
    Harness {
        documents: Documents::new(store.clone(), keys.clone()),
        sessions: Sessions::new(store.clone(), keys.clone()),
        budgets: Budgets::new(store.clone(), keys.clone()),
        history: History::new(store.clone(), keys.clone(), 1000),
        runtime: Arc::new(docker().await),
        _wipe: WipeOnDrop(keys.clone()),
        store,
        keys,
        _serial: serial,
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        common::docker::remove_installation_containers(self.keys.prefix());
    }
}

/// A health-checked game of the test engine (probed every second), with `extra` lines
/// indented under `spec:` and `labels` in its metadata.
fn game(name: &str, image: &str, labels: &str, extra: &str) -> GameRuntime {
    let yaml = format!(
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n  \
         labels: {{{labels}}}\nspec:\n  image: {image}\n  stopTimeout: 3s\n  healthCheck:\n    \
         http: {{port: 8080, path: /healthz}}\n    interval: 1s\n    timeout: 1s\n    \
         failureThreshold: 2\n{extra}"
    );
    match parse_objects(&yaml).expect("fixture parses").remove(0) {
        Object::Game(doc) => doc,
        Object::Budget(_) => unreachable!(),
    }
}

fn budget(name: &str, selector: &str, max: &str) -> rtm_core::model::GameDisruptionBudget {
    let yaml = format!(
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameDisruptionBudget\nmetadata: {{name: {name}}}\n\
         spec:\n  selector: {{matchLabels: {{{selector}}}}}\n  maxUnavailable: {max}\n"
    );
    match parse_objects(&yaml).expect("fixture parses").remove(0) {
        Object::Budget(budget) => budget,
        Object::Game(_) => unreachable!(),
    }
}

fn condition<'s>(
    status: &'s GameRuntimeStatus,
    kind: &str,
) -> Option<&'s rtm_core::model::Condition> {
    status.conditions.iter().find(|c| c.type_ == kind)
}

/// The value of one sample (`name{labels}` exactly as exposed) on a `/metrics` page.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .next()
}

fn is_ready(status: &GameRuntimeStatus) -> bool {
    condition(status, "Ready").is_some_and(|c| c.status == ConditionStatus::True)
}

impl Harness {
    async fn controller(&self, name: &str, node: &str) -> ControllerProcess {
        ControllerOptions::new(&self.keys, name)
            .env("RTM_NODE_NAME", node)
            .start()
            .await
    }

    async fn status(&self, game: &str) -> Result<GameRuntimeStatus, String> {
        self.documents
            .get_status(game)
            .await
            .map_err(|e| format!("status read: {e}"))?
            .ok_or_else(|| "no status yet".to_owned())
    }

    /// Waits until the game is Ready on its current generation; returns the status.
    async fn wait_ready(&self, game: &str) -> GameRuntimeStatus {
        eventually(CONVERGE, &format!("{game} Ready on its spec"), async || {
            let doc = self.documents.get(game).await.map_err(|e| e.to_string())?;
            let generation = doc.and_then(|d| d.metadata.generation);
            let status = self.status(game).await?;
            if is_ready(&status) && status.observed_generation == generation {
                Ok(status)
            } else {
                Err(process::summary(&status))
            }
        })
        .await
    }

    /// Waits until UpdatePending is True with `reason`.
    async fn wait_pending(&self, game: &str, reason: &str) -> GameRuntimeStatus {
        eventually(
            CONVERGE,
            &format!("{game} UpdatePending {reason}"),
            async || {
                let status = self.status(game).await?;
                match condition(&status, UPDATE_PENDING) {
                    Some(c) if c.status == ConditionStatus::True && c.reason == reason => {
                        Ok(status)
                    }
                    other => Err(format!("{other:?}; {}", process::summary(&status))),
                }
            },
        )
        .await
    }

    async fn entries(&self, game: &str) -> Vec<HistoryEntry> {
        self.history
            .recent(game, 1000)
            .await
            .expect("history reads")
    }

    /// Changes the image of `game` (a voluntary disruption: a new container is needed).
    async fn set_image(&self, game: &str, image: &str) {
        let mut doc = self
            .documents
            .get(game)
            .await
            .expect("documents read")
            .expect("document");
        doc.spec.image = image.to_owned();
        let revision = doc
            .metadata
            .resource_version
            .as_deref()
            .expect("a stored document has a resourceVersion")
            .parse()
            .expect("resourceVersion is a number");
        self.documents.update(&doc, revision).await.expect("update");
    }

    /// The id of the game's running container, as Docker says.
    async fn running(&self, game: &str) -> Option<String> {
        let name = container_name(self.keys.prefix(), game);
        self.runtime
            .inspect_container(&name)
            .await
            .ok()
            .flatten()
            .filter(|c| c.state == ContainerState::Running)
            .map(|c| c.id)
    }

    async fn allocate(&self, game: &str, reference: &str) -> Result<(), SessionError> {
        let request = SessionRequest {
            reference: Some(reference.to_owned()),
            ..SessionRequest::default()
        };
        self.sessions.allocate(game, &request).await.map(|_| ())
    }

    async fn release(&self, game: &str, reference: &str) {
        let request = SessionRequest {
            reference: Some(reference.to_owned()),
            ..SessionRequest::default()
        };
        let released = self
            .sessions
            .release(game, &request)
            .await
            .expect("release");
        assert!(matches!(released, Released::Ended(_)), "{released:?}");
    }

    /// Samples, until `stop`, three views of how many of `games` are down, each read at
    /// one instant so that the sample cannot mix moments: not Ready in one listing of the
    /// status records (what a matchmaker sees), without a running container in one
    /// `docker ps` (what players see), and the budget slots held in one listing.
    fn monitor(self: &Arc<Self>, games: Vec<String>, stop: Arc<AtomicBool>) -> Monitor {
        let maxima = Arc::new([
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        ]);
        let (h, m) = (self.clone(), maxima.clone());
        let task = tokio::spawn(async move {
            let statuses = h.keys.statuses();
            while !stop.load(Ordering::SeqCst) {
                let listing = h.store.list(&statuses, None).await.expect("status listing");
                let ready: Vec<String> = listing
                    .items
                    .iter()
                    .filter_map(|kv| {
                        let game = h.keys.name_of(&statuses, &kv.key)?;
                        let status = rtm_core::records::status::decode(kv).ok()?;
                        is_ready(&status).then(|| game.to_owned())
                    })
                    .collect();
                let not_ready = games.iter().filter(|g| !ready.contains(g)).count();
                let running = running_games(h.keys.prefix()).await;
                let stopped = games.iter().filter(|g| !running.contains(g)).count();
                let held = h
                    .store
                    .list(&h.keys.all_budget_slots(), None)
                    .await
                    .map(|l| l.items.len())
                    .unwrap_or(0);
                m[0].fetch_max(not_ready, Ordering::SeqCst);
                m[1].fetch_max(stopped, Ordering::SeqCst);
                m[2].fetch_max(held, Ordering::SeqCst);
                m[3].fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Monitor { maxima, task }
    }
}

/// The games of the installation whose container runs, in one `docker ps`.
async fn running_games(prefix: &str) -> Vec<String> {
    let filter = format!("label=rtmanager.dev/prefix={prefix}");
    let output = tokio::process::Command::new("docker")
        .args([
            "ps",
            "--filter",
            &filter,
            "--format",
            "{{.Label \"rtmanager.dev/game\"}}",
        ])
        .output()
        .await
        .expect("docker ps runs");
    assert!(output.status.success(), "docker ps: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The highest counts a [`Harness::monitor`] saw.
struct Monitor {
    maxima: Arc<[AtomicUsize; 4]>,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    /// Stops it and returns (not Ready, not running, slots held, samples).
    async fn finish(self, stop: &AtomicBool) -> (usize, usize, usize, usize) {
        stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the monitor ran");
        let get = |i: usize| self.maxima[i].load(Ordering::SeqCst);
        (get(0), get(1), get(2), get(3))
    }
}

#[tokio::test]
#[ignore = "needs etcd and Docker"]
async fn an_allocated_game_keeps_its_container_through_an_image_change_until_released() {
    let h = harness("session-keeps").await;
    let c = h.controller("c", "local").await;
    let g = game_id("sess-keep");
    h.documents
        .create(&game(&g, IMAGE_1, "", ""))
        .await
        .unwrap();
    let ready = h.wait_ready(&g).await;
    let first = ready.container_id.clone().expect("a container");
    h.allocate(&g, "match-42")
        .await
        .expect("allocates a Ready game");
    // Allocating it again is a conflict: one match per game.
    let again = h.allocate(&g, "match-43").await.unwrap_err();
    assert_eq!(again.code(), ErrorCode::Conflict, "{again}");

    h.set_image(&g, IMAGE_2).await;
    let waiting = h.wait_pending(&g, REASON_IN_SESSION).await;
    let message = &condition(&waiting, UPDATE_PENDING).unwrap().message;
    assert!(message.contains("match-42"), "{message}");
    assert_eq!(
        h.running(&g).await.as_deref(),
        Some(first.as_str()),
        "the match goes on"
    );
    assert!(is_ready(&waiting), "still Ready: players stay connected");
    let pending = r#"rtmanager_updates_pending{reason="InSession"}"#;
    let gauge = async |want: f64| {
        eventually(Duration::from_secs(10), pending, async || {
            match sample(&c.metrics().await, pending) {
                Some(v) if v == want => Ok(()),
                other => Err(format!("{pending} is {other:?}, not {want}")),
            }
        })
        .await
    };
    gauge(1.0).await;

    h.release(&g, "match-42-over").await;
    let after = h.wait_ready(&g).await;
    gauge(0.0).await;
    let second = after.container_id.clone().unwrap();
    assert_ne!(second, first, "recreated on the new spec after the release");
    assert_eq!(after.image_ref.as_deref(), Some(IMAGE_2));
    assert_eq!(
        condition(&after, UPDATE_PENDING).map(|c| c.status),
        Some(ConditionStatus::False)
    );
    let entries = h.entries(&g).await;
    let mut kinds: Vec<(OpKind, &str)> = entries
        .iter()
        .filter(|e| {
            matches!(
                e.op_kind,
                OpKind::Allocate | OpKind::Release | OpKind::Restart
            )
        })
        .map(|e| match e.op_kind {
            OpKind::Restart => (e.op_kind, ""),
            kind => (kind, e.source_ref.as_str()),
        })
        .collect();
    kinds.reverse();
    assert_eq!(
        kinds,
        [
            (OpKind::Allocate, "match-42"),
            (OpKind::Release, "match-42-over"),
            (OpKind::Restart, ""),
        ],
        "oldest first: {}",
        process::timeline(&entries)
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker"]
async fn a_game_that_is_not_ready_cannot_be_allocated_and_force_ends_a_match() {
    let h = harness("session-refuse").await;
    let _c = h.controller("c", "local").await;
    let sick = game_id("sess-sick");
    let extra = "  env: [{name: HEALTHY, value: \"0\"}]\n";
    h.documents
        .create(&game(&sick, IMAGE_1, "", extra))
        .await
        .unwrap();
    eventually(CONVERGE, "the sick game runs, not Ready", async || {
        let status = h.status(&sick).await?;
        (status.container_id.is_some() && !is_ready(&status))
            .then_some(())
            .ok_or_else(|| process::summary(&status))
    })
    .await;
    let refused = h.allocate(&sick, "m").await.unwrap_err();
    assert_eq!(refused.code(), ErrorCode::NotReady, "{refused}");
    let missing = h.allocate(&game_id("sess-none"), "m").await.unwrap_err();
    assert_eq!(missing.code(), ErrorCode::NotFound, "{missing}");

    // A restart forced by its writer ends the match, and the history says so.
    let g = game_id("sess-force");
    h.documents
        .create(&game(&g, IMAGE_1, "", ""))
        .await
        .unwrap();
    let first = h.wait_ready(&g).await.container_id.unwrap();
    h.allocate(&g, "match-7").await.unwrap();
    let mut doc = h.documents.get(&g).await.unwrap().unwrap();
    doc.spec.restart_token = "forced-1".into();
    let generation = doc.metadata.generation.unwrap() + 1;
    doc.metadata
        .annotations
        .insert(ANNOTATION_FORCE.into(), generation.to_string());
    let revision = doc
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    h.documents.update(&doc, revision).await.unwrap();
    let after = h.wait_ready(&g).await;
    assert_ne!(after.container_id.unwrap(), first);
    let entries = h.entries(&g).await;
    let restart = entries
        .iter()
        .find(|e| e.op_kind == OpKind::Restart)
        .expect("a restart entry");
    let note = restart.note.as_deref().unwrap_or("");
    assert!(
        note.contains("forced") && note.contains("match-7"),
        "{note}"
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker"]
async fn a_budget_of_two_paces_an_update_of_eight_games_and_a_broken_spec_stalls() {
    let h = Arc::new(harness("budget-roll").await);
    let _c = h.controller("c", "local").await;
    h.budgets
        .create(&budget("casual", "tier: casual", "2"))
        .await
        .unwrap();
    let games: Vec<String> = (0..8).map(|i| game_id(&format!("roll{i}"))).collect();
    for g in &games {
        h.documents
            .create(&game(g, IMAGE_1, "tier: casual", ""))
            .await
            .unwrap();
    }
    let mut before = BTreeMap::new();
    for g in &games {
        before.insert(g.clone(), h.wait_ready(g).await.container_id.unwrap());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = h.monitor(games.clone(), stop.clone());
    for g in &games {
        h.set_image(g, IMAGE_2).await;
    }
    // Some games wait for a slot: the update is rolling.
    eventually(CONVERGE, "a game waits for the budget", async || {
        for g in &games {
            let status = h.status(g).await?;
            if condition(&status, UPDATE_PENDING).is_some_and(|c| {
                c.status == ConditionStatus::True && c.reason == REASON_DISRUPTION_BUDGET
            }) {
                return Ok(());
            }
        }
        Err("no game waits for the budget".to_owned())
    })
    .await;
    for g in &games {
        let after = h.wait_ready(g).await;
        assert_ne!(
            after.container_id.as_ref(),
            before.get(g),
            "{g} was recreated"
        );
        assert_eq!(after.image_ref.as_deref(), Some(IMAGE_2));
    }
    eventually(CONVERGE, "every slot freed", async || {
        let held = h
            .store
            .list(&h.keys.all_budget_slots(), None)
            .await
            .unwrap();
        held.items
            .is_empty()
            .then_some(())
            .ok_or(format!("{} held", held.items.len()))
    })
    .await;
    let (not_ready, stopped, slots, samples) = monitor.finish(&stop).await;
    assert!(
        samples >= 5,
        "the monitor sampled throughout ({samples} samples)"
    );
    assert!(
        not_ready <= 2,
        "at most 2 of 8 not Ready in any listing, saw {not_ready}"
    );
    assert!(
        stopped <= 2,
        "at most 2 of 8 without a running container, saw {stopped}"
    );
    assert!(not_ready >= 1, "the monitor saw the rollout");
    assert!(slots <= 2, "at most 2 slots held, saw {slots}");

    // A spec whose containers never pass their check stalls after the first batch.
    for g in &games {
        let mut doc = h.documents.get(g).await.unwrap().unwrap();
        doc.spec.env = vec![rtm_core::model::EnvVar {
            name: "HEALTHY".into(),
            value: "0".into(),
        }];
        let revision = doc
            .metadata
            .resource_version
            .clone()
            .unwrap()
            .parse()
            .unwrap();
        h.documents.update(&doc, revision).await.unwrap();
    }
    let stuck = eventually(CONVERGE, "two games replaced, six waiting", async || {
        let (mut replaced, mut waiting) = (Vec::new(), 0);
        for g in &games {
            let status = h.status(g).await?;
            let pending = condition(&status, UPDATE_PENDING).is_some_and(|c| {
                c.status == ConditionStatus::True && c.reason == REASON_DISRUPTION_BUDGET
            });
            if pending {
                waiting += 1;
            } else if !is_ready(&status) {
                replaced.push(g.clone());
            }
        }
        (replaced.len() == 2 && waiting == 6)
            .then_some(replaced.clone())
            .ok_or(format!("{} replaced, {waiting} waiting", replaced.len()))
    })
    .await;
    // It stays stalled: the six keep their working containers.
    let held: Vec<_> = h
        .store
        .list(&h.keys.all_budget_slots(), None)
        .await
        .unwrap()
        .items;
    assert_eq!(held.len(), 2);
    for g in games.iter().filter(|g| !stuck.contains(g)) {
        let status = h.status(g).await.unwrap();
        assert!(
            is_ready(&status),
            "{g} keeps serving: {}",
            process::summary(&status)
        );
        let message = &condition(&status, UPDATE_PENDING).unwrap().message;
        assert!(
            message.contains("casual") && message.contains("2 of 2"),
            "{message}"
        );
    }
}

/// Two controllers of one node (one Docker engine here) race for the same games: each
/// takes slots in its own transactions, from its own caches, and the budget still holds.
#[tokio::test]
#[ignore = "needs etcd and Docker"]
async fn two_controllers_share_one_budget() {
    let h = Arc::new(harness("budget-two").await);
    let _a = h.controller("a", "local").await;
    let _b = h.controller("b", "local").await;
    h.budgets
        .create(&budget("shared", "tier: shared", "1"))
        .await
        .unwrap();
    let games: Vec<String> = (0..4).map(|i| game_id(&format!("two{i}"))).collect();
    for g in &games {
        h.documents
            .create(&game(g, IMAGE_1, "tier: shared", ""))
            .await
            .unwrap();
    }
    for g in &games {
        h.wait_ready(g).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = h.monitor(games.clone(), stop.clone());
    for g in &games {
        h.set_image(g, IMAGE_2).await;
    }
    for g in &games {
        assert_eq!(h.wait_ready(g).await.image_ref.as_deref(), Some(IMAGE_2));
    }
    let (not_ready, stopped, slots, _) = monitor.finish(&stop).await;
    let mut timelines = String::new();
    for g in &games {
        timelines += &format!("{g}:\n{}\n", process::timeline(&h.entries(g).await));
    }
    assert!(
        not_ready <= 1,
        "one slot across both controllers: saw {not_ready} not Ready\n{timelines}"
    );
    assert!(
        stopped <= 1,
        "saw {stopped} without a running container\n{timelines}"
    );
    assert!(slots <= 1, "saw {slots} slots held");
    for g in &games {
        let restarts = h
            .entries(g)
            .await
            .into_iter()
            .filter(|e| e.op_kind == OpKind::Restart)
            .count();
        assert_eq!(restarts, 1, "{g} was recreated once\n{timelines}");
    }
}
