//! The referee of the fault suite: what a game should look like once the
//! faults stop, and a monitor that watches Docker and etcd *while* they
//! happen.
//!
//! - [`Monitor`] polls Docker (and each installation's documents in etcd)
//!   all the time and records every breach of the invariants that must hold
//!   at every instant: at most one container per game; no container
//!   without a document outliving the GC grace (plus a margin); foreign
//!   containers untouched (same id, still running, never restarted).
//! - No running container is replaced without a reason. The monitor notes
//!   every container of a game that was up (running or paused) at one
//!   poll and not at the next (a *disappearance*: exited, gone, replaced
//!   by another), and records every etcd write under the prefix, so it
//!   knows every history entry ever written, also those deleted or
//!   garbled later by hand. The test writes down what it does in the
//!   installation's [`Ledger`]: every document write with its etcd
//!   revision (through [`Installation`]'s `create`, `change`,
//!   `request_restart`, `delete`), every hand on a container or the
//!   engine, orphans it makes, and notes (pause, rename, garbage in etcd,
//!   a crashed controller) that are never a reason. When the monitor
//!   finishes, [`judge_replacements`] gives each disappearance its reason
//!   or reports it with the game, the container ids, what the test did to
//!   the game and the history around it. Operations are ordered against
//!   the test's writes by etcd revision (the lease fence, the entry's
//!   first write), not by their whole-second timestamps; a request counts
//!   once: an operation that created a container after it answered it. The check fails when it
//!   saw no replacement at all (`assert_replacements_explained`'s
//!   `at_least`), so it cannot pass by having nothing to look at.
//! - [`Installation`] reads what a user sees (documents, status, history,
//!   containers) and waits, bounded, for the invariants that must hold
//!   once the faults stop: every game converged, every history entry
//!   finished (by its operation or, as `aborted`, by recovery).
//! - [`WriteLog`] records every etcd write under a prefix, and
//!   [`audit_stale_holder`] checks that a controller whose lease expired
//!   wrote nothing after another took over (fencing).
//! - [`Rng`]: a seeded generator for the randomized soak (stable across
//!   versions of the `rand` crate, so a printed seed replays the same run).
//!
//! A module of the fault suite (`tests/faults/main.rs`) alone: no other
//! test binary uses it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use rtm_controller::runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ContainerState, DockerRuntime, LABEL_OP_ID,
    LABEL_PREFIX, LABEL_SPEC_HASH, container_name,
};
use rtm_core::ErrorCode;
use rtm_core::model::parse::parse_documents;
use rtm_core::model::{
    ANNOTATION_OP_SOURCE, ANNOTATION_SOURCE_REF, ConditionStatus, DesiredState, EnvVar,
    GameRuntime, GameRuntimeStatus, OpKind, Outcome, Phase,
};
use rtm_core::records::Documents;
use rtm_core::records::history::HistoryEntry;
use rtm_core::records::lease::LeaseRecord;
use rtm_core::store::{Keys, Revision, Store, WatchEvent};
use tokio_util::sync::CancellationToken;

use crate::common::docker::IMAGE_1;
use crate::common::revision_of;
use crate::process::{ControllerProcess, describe, eventually, ready, short, summary, timeline};

/// How often the monitor looks at Docker: a recreate takes about a second,
/// so a twin living even a fraction of one is seen.
const MONITOR_POLL: Duration = Duration::from_millis(100);

/// Violations kept verbatim in a report (the count is always exact).
const MAX_VIOLATIONS: usize = 50;

// ---------------------------------------------------------------------------
// Fixtures.

/// A GameRuntime fixture: `doc(&game).ignoring_sigterm().stop_timeout(..)`.
/// Defaults: the first test image, no ports, stopTimeout 3s,
/// restartPolicy Always.
#[derive(Debug, Clone)]
pub struct Doc(pub GameRuntime);

pub fn doc(name: &str) -> Doc {
    let yaml = format!(
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n\
         spec:\n  image: {IMAGE_1}\n  imagePullPolicy: Never\n  stopTimeout: 3s\n  restartPolicy: Always\n"
    );
    Doc(parse_documents(&yaml)
        .expect("the fixture parses")
        .remove(0))
}

impl Doc {
    pub fn image(mut self, image: &str) -> Doc {
        image.clone_into(&mut self.0.spec.image);
        self
    }

    pub fn stop_timeout(mut self, timeout: Duration) -> Doc {
        self.0.spec.stop_timeout = timeout;
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Doc {
        self.0.spec.env.push(EnvVar {
            name: name.to_owned(),
            value: value.to_owned(),
        });
        self
    }

    /// The engine ignores SIGTERM: every stop lasts the full stopTimeout,
    /// which keeps operations in flight long enough to hit them.
    pub fn ignoring_sigterm(self) -> Doc {
        self.env("IGNORE_SIGTERM", "1")
    }
}

/// A game id unique to this test run (a DNS-1123 label).
pub fn game_name(tag: &str) -> String {
    format!("f{tag}-{}", std::process::id())
}

pub use rtm_testkit::connect_store;

/// A runtime on the Docker engine at `host` (a private dockerd), or on the
/// machine's engine when `None`.
pub async fn connect_docker(host: Option<&str>) -> Arc<DockerRuntime> {
    Arc::new(
        DockerRuntime::connect(host, Duration::from_secs(10))
            .await
            .expect("a usable DOCKER_HOST"),
    )
}

// ---------------------------------------------------------------------------
// What a user sees of one installation (one prefix on one etcd and one
// Docker engine).

#[derive(Debug, Clone)]
pub struct Installation {
    pub store: Arc<dyn Store>,
    pub keys: Keys,
    pub documents: Documents,
    pub docker: Arc<DockerRuntime>,
    /// What the test did to this installation's games (shared by every
    /// clone, the monitor's included).
    pub ledger: Arc<Mutex<Ledger>>,
}

impl Installation {
    pub fn new(store: Arc<dyn Store>, keys: Keys, docker: Arc<DockerRuntime>) -> Installation {
        Installation {
            documents: Documents::new(store.clone(), keys.clone()),
            store,
            keys,
            docker,
            ledger: Arc::default(),
        }
    }

    /// Writes down a deed of the test, issued at `issued` and done now.
    pub fn record(
        &self,
        game: Option<&str>,
        deed: Deed,
        what: impl Into<String>,
        issued: SystemTime,
    ) {
        lock(&self.ledger).hands.push(Hand {
            game: game.map(str::to_owned),
            deed,
            what: what.into(),
            issued,
            acked: SystemTime::now(),
        });
    }

    /// A copy of the ledger as it is now.
    pub fn ledger(&self) -> Ledger {
        lock(&self.ledger).clone()
    }

    /// Writes `value` at `key` as an operator with etcdctl would: a plain
    /// put, attached to no etcd lease. Garbage (`garbage: true`) is
    /// remembered, so that readers of the history skip it while it stays.
    pub async fn put_by_hand(
        &self,
        key: &str,
        value: Vec<u8>,
        garbage: bool,
    ) -> Result<Revision, String> {
        let outcome = self
            .store
            .txn(rtm_core::store::Txn::new().put(key.to_owned(), value))
            .await
            .map_err(|e| format!("put {key}: {e}"))?;
        let mut ledger = lock(&self.ledger);
        ledger.own_writes.insert(outcome.revision);
        if garbage {
            ledger.garbled.insert(key.to_owned());
        }
        Ok(outcome.revision)
    }

    /// Deletes `key` (or every key under it, with `prefix: true`) by hand.
    pub async fn delete_by_hand(&self, key: &str, prefix: bool) -> Result<Revision, String> {
        let txn = if prefix {
            rtm_core::store::Txn::new().delete_prefix(key.to_owned())
        } else {
            rtm_core::store::Txn::new().delete(key.to_owned())
        };
        let outcome = self
            .store
            .txn(txn)
            .await
            .map_err(|e| format!("delete {key}: {e}"))?;
        lock(&self.ledger).own_writes.insert(outcome.revision);
        Ok(outcome.revision)
    }

    pub async fn create(&self, doc: Doc) -> GameRuntime {
        let issued = SystemTime::now();
        let name = doc.0.metadata.name.clone();
        let created = self
            .documents
            .create(&doc.0)
            .await
            .unwrap_or_else(|e| panic!("create gameruntime/{name}: {e}"));
        self.record_spec(&created, "created", issued);
        created
    }

    /// Notes a write of a document (its revision is what operations are
    /// compared with: an operation that took its lease later saw it), and
    /// the request id it carries (`rtmanager.dev/source-ref`), which the
    /// operations that read it record.
    fn record_spec(&self, doc: &GameRuntime, what: &str, issued: SystemTime) {
        let revision = revision_of(doc);
        self.record(
            Some(doc.name()),
            Deed::Spec {
                revision,
                source_ref: doc.metadata.annotations.get(ANNOTATION_SOURCE_REF).cloned(),
            },
            format!(
                "gameruntime/{} {what} (generation {:?})",
                doc.name(),
                doc.metadata.generation
            ),
            issued,
        );
    }

    /// Reads, changes and writes back a document (the controller never
    /// writes specs, so the resourceVersion read here is current). Retried
    /// for a while: etcd may be coming back from a fault.
    pub async fn change(&self, game: &str, change: impl Fn(&mut GameRuntime)) -> GameRuntime {
        self.change_as(game, "changed", change).await
    }

    async fn change_as(
        &self,
        game: &str,
        what: &str,
        change: impl Fn(&mut GameRuntime),
    ) -> GameRuntime {
        let issued = SystemTime::now();
        let written = self.write_change(game, change).await;
        self.record_spec(&written, what, issued);
        written
    }

    async fn write_change(&self, game: &str, change: impl Fn(&mut GameRuntime)) -> GameRuntime {
        let what = format!("a write of gameruntime/{game}");
        eventually(Duration::from_secs(20), &what, async || {
            let mut doc = self
                .documents
                .get(game)
                .await
                .map_err(|e| format!("read: {e}"))?
                .ok_or_else(|| "no such document".to_owned())?;
            let expected = revision_of(&doc);
            change(&mut doc);
            self.documents
                .update(&doc, expected)
                .await
                .map_err(|e| format!("update: {e}"))
        })
        .await
    }

    /// What `rtctl restart <game> --ref <source_ref>` writes.
    pub async fn request_restart(&self, game: &str, token: &str, source_ref: &str) -> GameRuntime {
        let what = format!("restart requested (token {token}, ref {source_ref})");
        self.change_as(game, &what, |doc| {
            doc.spec.restart_token = token.to_owned();
            let annotations = &mut doc.metadata.annotations;
            annotations.insert(ANNOTATION_OP_SOURCE.to_owned(), "admin_cli".to_owned());
            annotations.insert(ANNOTATION_SOURCE_REF.to_owned(), source_ref.to_owned());
        })
        .await
    }

    pub async fn delete(&self, game: &str) {
        let issued = SystemTime::now();
        // The delete does not say its revision: the one before it is a
        // lower bound (an operation that saw the deletion took its lease
        // later still).
        let before = self.store.revision().await.unwrap_or_default();
        self.documents
            .delete(game, None)
            .await
            .unwrap_or_else(|e| panic!("delete gameruntime/{game}: {e}"));
        self.record(
            Some(game),
            Deed::Spec {
                revision: before + 1,
                source_ref: None,
            },
            format!("gameruntime/{game} deleted"),
            issued,
        );
    }

    pub async fn status(&self, game: &str) -> Result<Option<GameRuntimeStatus>, String> {
        self.documents
            .get_status(game)
            .await
            .map_err(|e| format!("status/{game}: {e}"))
    }

    /// The id of the image `reference` names on the engine now, if it is there.
    pub async fn tag_id(&self, reference: &str) -> Option<String> {
        self.docker
            .inspect_image(reference)
            .await
            .ok()
            .flatten()
            .map(|image| image.id)
    }

    /// Every container of this installation (its prefix label), any state.
    pub async fn containers(&self) -> Result<Vec<ContainerInfo>, String> {
        let all = self
            .docker
            .list_managed()
            .await
            .map_err(|e| format!("docker list: {e}"))?;
        Ok(all
            .into_iter()
            .filter(|c| c.prefix() == Some(self.keys.prefix()))
            .collect())
    }

    /// The documents as they are now, by name.
    pub async fn desired(&self) -> Result<BTreeMap<String, GameRuntime>, String> {
        let list = self
            .documents
            .list()
            .await
            .map_err(|e| format!("list documents: {e}"))?;
        if !list.invalid.is_empty() {
            return Err(format!("undecodable documents: {:?}", list.invalid));
        }
        Ok(list
            .items
            .into_iter()
            .map(|d| (d.metadata.name.clone(), d))
            .collect())
    }

    /// Whether each of `games` is converged to its document as it is now;
    /// `Err` says what is still missing.
    pub async fn converged(
        &self,
        games: &[String],
    ) -> Result<BTreeMap<String, (GameRuntimeStatus, Option<ContainerInfo>)>, String> {
        let desired = self.desired().await?;
        let containers = self.containers().await?;
        let mut converged = BTreeMap::new();
        for game in games {
            let doc = desired
                .get(game)
                .ok_or_else(|| format!("{game}: no document"))?;
            let status = self.status(game).await?;
            let mine: Vec<ContainerInfo> = containers
                .iter()
                .filter(|c| c.game() == Some(game.as_str()))
                .cloned()
                .collect();
            let tag_id = self.tag_id(&doc.spec.image).await;
            converged.insert(
                game.clone(),
                check_converged(doc, status.as_ref(), &mine, tag_id.as_deref())?,
            );
        }
        Ok(converged)
    }

    /// Waits until every game in `games` is converged, at most `limit`.
    pub async fn wait_converged(
        &self,
        games: &[String],
        limit: Duration,
    ) -> BTreeMap<String, (GameRuntimeStatus, Option<ContainerInfo>)> {
        let what = format!(
            "{} games of {} to converge (status as desired for the current generation and \
             restart token, exactly one container, the one the status names)",
            games.len(),
            self.keys.prefix()
        );
        eventually(limit, &what, async || self.converged(games).await).await
    }

    /// Like [`Installation::wait_converged`], but a timeout names, for
    /// each game left behind, everything a person would look at: its
    /// containers, its status and lease keys as stored, what the test did
    /// to it, and its history; `context` (the scenario and its seed) heads
    /// the message.
    pub async fn wait_converged_explained(
        &self,
        games: &[String],
        limit: Duration,
        context: &str,
    ) -> BTreeMap<String, (GameRuntimeStatus, Option<ContainerInfo>)> {
        let deadline = Instant::now() + limit;
        loop {
            let probe = tokio::time::timeout(Duration::from_secs(20), self.converged(games)).await;
            if let Ok(Ok(converged)) = probe {
                return converged;
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut behind = Vec::new();
        for game in games {
            let one = std::slice::from_ref(game);
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(20), self.converged(one)).await
            {
                continue;
            }
            behind.push(self.explain(game).await);
        }
        panic!(
            "[{context}] {} of {} games not converged {limit:?} after the faults stopped (status as \
             desired for the current generation and restart token, Ready, exactly one running \
             container, the one the status names):\n\n{}\n",
            behind.len(),
            games.len(),
            behind.join("\n\n")
        );
    }

    /// Everything about one game, for a failure message.
    pub async fn explain(&self, game: &str) -> String {
        let mut out = String::new();
        let desired = self.documents.get(game).await;
        let containers = self.containers().await;
        let verdict = match (&desired, &containers) {
            (Ok(Some(doc)), Ok(all)) => {
                let mine: Vec<ContainerInfo> = all
                    .iter()
                    .filter(|c| c.game() == Some(game))
                    .cloned()
                    .collect();
                match self.status(game).await {
                    // A record that does not decode: the controller must
                    // rebuild it.
                    Err(e) => format!("its status record does not decode: {e}"),
                    Ok(status) => match check_converged(
                        doc,
                        status.as_ref(),
                        &mine,
                        self.tag_id(&doc.spec.image).await.as_deref(),
                    ) {
                        Ok(_) => "converged now".to_owned(),
                        Err(e) => e,
                    },
                }
            }
            (doc, containers) => format!("document {doc:?}, containers {containers:?}"),
        };
        let _ = writeln!(out, "{game}: {verdict}");
        if let Ok(Some(doc)) = &desired {
            let _ = writeln!(
                out,
                "  document: generation {:?}, image {}, state {:?}, restartToken {:?}",
                doc.metadata.generation, doc.spec.image, doc.spec.state, doc.spec.restart_token
            );
        }
        if let Ok(all) = &containers {
            let mine: Vec<ContainerInfo> = all
                .iter()
                .filter(|c| c.game() == Some(game))
                .cloned()
                .collect();
            let _ = writeln!(out, "  containers: {}", describe(&mine));
        }
        for (what, key) in [
            ("status", self.keys.status(game)),
            ("lease", self.keys.lease(game)),
        ] {
            let stored = match self.store.get(&key).await {
                Ok(Some(kv)) => format!(
                    "{} (rev {}, etcd lease {}{})",
                    String::from_utf8_lossy(
                        &kv.value.iter().copied().take(300).collect::<Vec<u8>>()
                    ),
                    kv.mod_revision,
                    kv.lease,
                    if kv.lease == 0 {
                        ": attached to none"
                    } else {
                        ""
                    }
                ),
                Ok(None) => "none".to_owned(),
                Err(e) => format!("unreadable: {e}"),
            };
            let _ = writeln!(out, "  {what} key {key}: {stored}");
        }
        let lines = self.ledger().lines(game);
        let _ = writeln!(
            out,
            "  what the test did to it:\n    {}",
            if lines.is_empty() {
                "nothing".to_owned()
            } else {
                lines.join("\n    ")
            }
        );
        let history = match self.history(game).await {
            Ok(entries) => timeline(&entries[..entries.len().min(15)]),
            Err(e) => e,
        };
        let _ = write!(out, "  history (newest first):\n  {history}");
        out
    }

    /// The names of every game with history under the prefix.
    pub async fn games_with_history(&self) -> Result<BTreeSet<String>, String> {
        let root = format!("{}/history/", self.keys.prefix());
        let listing = self
            .store
            .list(&root, None)
            .await
            .map_err(|e| format!("list {root}: {e}"))?;
        Ok(listing
            .items
            .iter()
            .filter_map(|kv| kv.key.strip_prefix(&root))
            .filter_map(|rest| rest.split('/').next())
            .map(str::to_owned)
            .collect())
    }

    /// A game's history, newest first.
    pub async fn history(&self, game: &str) -> Result<Vec<HistoryEntry>, String> {
        let prefix = self.keys.history(game);
        let listing = self
            .store
            .list(&prefix, None)
            .await
            .map_err(|e| format!("list {prefix}: {e}"))?;
        let garbled = lock(&self.ledger).garbled.clone();
        let mut entries = Vec::new();
        for kv in &listing.items {
            match serde_json::from_slice::<HistoryEntry>(&kv.value) {
                Ok(entry) => entries.push(entry),
                // Garbage the test put there itself, still in place: not
                // the controller's to repair.
                Err(_) if garbled.contains(&kv.key) => {}
                Err(e) => return Err(format!("history entry {} is not valid: {e}", kv.key)),
            }
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.seq));
        Ok(entries)
    }

    /// Every history entry of every game, checked: all finished.
    pub async fn history_resolved(&self) -> Result<BTreeMap<String, Vec<HistoryEntry>>, String> {
        let mut all = BTreeMap::new();
        for game in self.games_with_history().await? {
            let entries = self.history(&game).await?;
            check_history(&game, &entries)?;
            all.insert(game, entries);
        }
        Ok(all)
    }

    /// Waits until every history entry under the prefix is finished.
    pub async fn wait_history_resolved(
        &self,
        limit: Duration,
    ) -> BTreeMap<String, Vec<HistoryEntry>> {
        let what = format!(
            "every history entry of {} to reach an outcome (or be resolved as aborted)",
            self.keys.prefix()
        );
        eventually(limit, &what, async || self.history_resolved().await).await
    }

    /// Every container the monitor saw that this installation's
    /// controllers created (it carries an operation id) was created by a
    /// start recorded in the game's history: nothing runs that the history
    /// does not account for. The history is the monitor's record of every
    /// entry ever written (an entry deleted by hand still counts). Call
    /// once the history is resolved.
    pub async fn assert_containers_accounted(&self, report: &MonitorReport) {
        let ops = report
            .operations
            .get(self.keys.prefix())
            .cloned()
            .unwrap_or_default();
        let mut unaccounted = Vec::new();
        for seen in report
            .seen
            .iter()
            .filter(|c| c.prefix == self.keys.prefix())
        {
            let (Some(game), Some(op_id)) = (&seen.game, &seen.op_id) else {
                continue; // made by hand: no operation created it
            };
            let mine = ops.get(game).map(Vec::as_slice).unwrap_or_default();
            if !mine
                .iter()
                .any(|op| op.entry.op_kind == OpKind::Start && op.entry.op_id == *op_id)
            {
                unaccounted.push(format!(
                    "{} {} (op {op_id}) of {game}:\n    {}",
                    seen.name,
                    short(&seen.id),
                    op_lines(mine, None).join("\n    ")
                ));
            }
        }
        assert!(
            unaccounted.is_empty(),
            "containers no start in the history accounts for:{}",
            block(&unaccounted)
        );
    }

    /// Waits until no container of this installation lacks a document.
    pub async fn wait_no_orphans(&self, limit: Duration) {
        eventually(
            limit,
            "no container of the installation without a document",
            async || {
                let desired = self.desired().await?;
                let orphans: Vec<ContainerInfo> = self
                    .containers()
                    .await?
                    .into_iter()
                    .filter(|c| c.game().is_none_or(|g| !desired.contains_key(g)))
                    .collect();
                if orphans.is_empty() {
                    Ok(())
                } else {
                    Err(describe(&orphans))
                }
            },
        )
        .await;
    }

    /// The ids of the controllers whose heartbeat key exists.
    pub async fn heartbeats(&self) -> Result<BTreeSet<String>, String> {
        crate::common::heartbeats(self.store.as_ref(), &self.keys).await
    }

    /// Waits until some operation of `games` is under way (an entry in
    /// progress) and returns that entry.
    pub async fn wait_in_progress(
        &self,
        games: &[String],
        kind: OpKind,
        limit: Duration,
    ) -> HistoryEntry {
        let what = format!("a {kind:?} of one of {games:?} to be under way");
        eventually(limit, &what, async || {
            for game in games {
                if let Some(entry) = self
                    .history(game)
                    .await?
                    .into_iter()
                    .find(|e| e.op_kind == kind && e.outcome == Outcome::InProgress)
                {
                    return Ok(entry);
                }
            }
            Err("no such entry in progress yet".to_owned())
        })
        .await
    }

    /// Creates and starts, bypassing the controller, a container with the
    /// labels rtmanager puts on its own for this installation: an orphan
    /// when `game` has no document.
    pub async fn start_labelled(&self, game: &str) -> String {
        let mut spec = ContainerSpec::new(game, IMAGE_1);
        spec.name = container_name(self.keys.prefix(), game);
        spec.labels
            .insert(LABEL_SPEC_HASH.to_owned(), "hand-made".to_owned());
        spec.labels
            .insert(LABEL_PREFIX.to_owned(), self.keys.prefix().to_owned());
        let id = self
            .docker
            .create(&spec)
            .await
            .expect("docker create of a hand-made labelled container");
        self.docker
            .start(&id)
            .await
            .expect("docker start of a hand-made labelled container");
        self.record(
            Some(game),
            Deed::Orphan,
            format!(
                "{} {} started by hand with our labels",
                container_name(self.keys.prefix(), game),
                short(&id)
            ),
            SystemTime::now(),
        );
        id
    }
}

/// The convergence check, pure: desired Running means status Running for
/// the document's generation and restart token, Ready, and exactly one
/// container of the game, running, from the document's image, the one the
/// status names; desired Stopped means status Stopped and nothing running.
///
/// `tag_id` is the id of the image `spec.image` names now: a replacement the controller made
/// by that id, because the tag vanished during its restart's stop (lifecycle/restart.rs), runs
/// exactly that image and is converged (recreating it only to show the tag would be a
/// voluntary disruption for nothing).
pub fn check_converged(
    doc: &GameRuntime,
    status: Option<&GameRuntimeStatus>,
    containers: &[ContainerInfo],
    tag_id: Option<&str>,
) -> Result<(GameRuntimeStatus, Option<ContainerInfo>), String> {
    let game = doc.name();
    let status = status.ok_or_else(|| format!("{game}: no status yet"))?;
    let seen = || {
        format!(
            "{game}: status {} containers {}",
            summary(status),
            describe(containers)
        )
    };
    if status.observed_generation != doc.metadata.generation {
        return Err(seen());
    }
    match doc.spec.state {
        DesiredState::Stopped => {
            if status.phase != Phase::Stopped
                || containers.len() > 1
                || containers.iter().any(ContainerInfo::is_running)
            {
                return Err(seen());
            }
            Ok((status.clone(), containers.first().cloned()))
        }
        DesiredState::Running => {
            let ready = ready(status) == Some(ConditionStatus::True);
            let token_seen = doc.spec.restart_token.is_empty()
                || status.observed_restart_token.as_deref()
                    == Some(doc.spec.restart_token.as_str());
            if status.phase != Phase::Running || !ready || !token_seen {
                return Err(seen());
            }
            let [container] = containers else {
                return Err(seen());
            };
            let made_by_id =
                container.image == container.image_id && Some(container.image.as_str()) == tag_id;
            if !container.is_running()
                || status.container_id.as_deref() != Some(container.id.as_str())
                || (container.image != doc.spec.image && !made_by_id)
            {
                return Err(seen());
            }
            Ok((status.clone(), Some(container.clone())))
        }
    }
}

/// Every entry finished: an outcome, a failure with its code, a finish
/// time; the ones recovery resolved say so.
pub fn check_history(game: &str, entries: &[HistoryEntry]) -> Result<(), String> {
    for entry in entries {
        let problem = match entry.outcome {
            Outcome::InProgress => Some("still in progress"),
            Outcome::Failure if entry.error_code.is_none() => Some("a failure without a code"),
            _ if entry.finished_at.is_none() => Some("finished without a finish time"),
            Outcome::Failure
                if entry.error_code == Some(ErrorCode::Aborted)
                    && !entry
                        .error_message
                        .as_deref()
                        .is_some_and(|m| m.contains("resolved by")) =>
            {
                Some("aborted without saying who resolved it")
            }
            _ => None,
        };
        if let Some(problem) = problem {
            return Err(format!(
                "{game}: entry #{} {problem}:\n  {}",
                entry.seq,
                timeline(entries)
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The monitor.

/// A container that is not rtmanager's: it must never be touched.
#[derive(Debug, Clone)]
pub struct Foreign {
    pub id: String,
    pub name: String,
    pub started_at: Option<SystemTime>,
    pub labels: BTreeMap<String, String>,
}

impl Foreign {
    /// Records `name_or_id` as it is now (it must exist and run).
    pub async fn record(docker: &DockerRuntime, name_or_id: &str) -> Foreign {
        let c = docker
            .inspect_container(name_or_id)
            .await
            .expect("docker inspect")
            .unwrap_or_else(|| panic!("the foreign container {name_or_id} exists"));
        assert!(c.is_running(), "the foreign container {name_or_id} runs");
        Foreign {
            id: c.id,
            name: c.name,
            started_at: c.started_at,
            labels: c.labels,
        }
    }
}

/// A container of a watched installation the monitor saw at least once.
#[derive(Debug, Clone)]
pub struct SeenContainer {
    pub id: String,
    pub name: String,
    /// The installation it belongs to (`rtmanager.dev/prefix`).
    pub prefix: String,
    pub game: Option<String>,
    /// The operation that created it (`rtmanager.dev/op-id`).
    pub op_id: Option<String>,
    pub first_seen: Instant,
}

/// What the monitor saw.
#[derive(Debug, Default)]
pub struct MonitorReport {
    pub docker_polls: usize,
    pub docker_failures: usize,
    pub etcd_failures: usize,
    pub violation_count: usize,
    pub violations: Vec<String>,
    pub seen: Vec<SeenContainer>,
    /// The most containers one game had at once.
    pub max_per_game: usize,
    /// The longest a container without a document lived (counted only
    /// while Docker and etcd answered).
    pub max_orphan_age: Duration,
    /// Every time a running (or paused) container of a game stopped
    /// running or went away.
    pub disappearances: Vec<Disappearance>,
    /// Per installation (prefix), per game: every operation the history
    /// recorded while the monitor ran, as last written (deleted or garbled
    /// entries included).
    pub operations: BTreeMap<String, BTreeMap<String, Vec<Op>>>,
    /// Per installation: what the test did, as the monitor ended.
    pub ledgers: BTreeMap<String, Ledger>,
    /// The verdict on every disappearance.
    pub replacements: ReplacementAudit,
    /// Per installation: every etcd write under its prefix while the
    /// monitor ran (for the fencing audit).
    pub writes: BTreeMap<String, Vec<WatchEvent>>,
}

impl MonitorReport {
    /// Fails the test listing every violation; also fails when the monitor
    /// looked too rarely to prove anything.
    pub fn assert_clean(&self, scenario: &str) {
        assert!(
            self.violation_count == 0,
            "[{scenario}] {} invariant violation(s) seen while the faults ran:\n  {}\n({} Docker \
             polls)",
            self.violation_count,
            self.violations.join("\n  "),
            self.docker_polls
        );
        assert!(
            self.docker_polls >= 20,
            "[{scenario}] the monitor looked at Docker too rarely to prove anything: {} polls",
            self.docker_polls
        );
    }

    /// Fails the test unless every end of a running container had a reason
    /// (see [`judge_replacements`]), no restart stranded a game without a
    /// container, and at least `at_least` ends were seen and explained (so
    /// the check cannot pass for want of replacements).
    pub fn assert_replacements_explained(&self, scenario: &str, at_least: usize) {
        let audit = &self.replacements;
        assert!(
            audit.unexplained.is_empty() && audit.stranded.is_empty(),
            "[{scenario}] {} running container(s) replaced or gone with no reason in the history, \
             {} stranded by a restart that removed them and could not start the next \
             ({}):\n\n{}\n",
            audit.unexplained.len(),
            audit.stranded.len(),
            audit.line(),
            audit
                .unexplained
                .iter()
                .chain(&audit.stranded)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n\n")
        );
        assert!(
            audit.explained.len() >= at_least,
            "[{scenario}] the replacement check saw {} explained replacement(s), fewer than the \
             {at_least} this scenario makes: it proved nothing ({} disappearances seen)",
            audit.explained.len(),
            self.disappearances.len()
        );
    }

    /// One line for the test's output.
    pub fn line(&self) -> String {
        format!(
            "{} Docker polls ({} failed while the engine was down), {} etcd polls failed, {} \
             containers seen, at most {} per game, longest orphan {:?}, {} violations; \
             replacements: {}",
            self.docker_polls,
            self.docker_failures,
            self.etcd_failures,
            self.seen.len(),
            self.max_per_game,
            self.max_orphan_age,
            self.violation_count,
            self.replacements.line()
        )
    }
}

#[derive(Debug, Default)]
struct MonitorState {
    /// Per installation: the documents' names, once listed.
    docs: Vec<Option<BTreeSet<String>>>,
    docs_at: Vec<Option<Instant>>,
    foreign: Vec<Foreign>,
    /// Orphan container id → how long it has been an orphan.
    orphan_age: HashMap<String, Duration>,
    last_poll: Option<Instant>,
    reported: BTreeSet<String>,
    report: MonitorReport,
    seen: BTreeMap<String, SeenContainer>,
    /// Per (prefix, game): the containers up at the last answered poll,
    /// with when each was first seen up.
    up: BTreeMap<(String, String), BTreeMap<String, (ContainerInfo, SystemTime)>>,
    /// When the last answered Docker poll was made.
    last_answered: Option<SystemTime>,
}

impl MonitorState {
    fn violate(&mut self, key: String, message: String) {
        if !self.reported.insert(key) {
            return;
        }
        self.report.violation_count += 1;
        let stamp = humantime::format_rfc3339_millis(SystemTime::now());
        eprintln!("INVARIANT VIOLATION at {stamp}: {message}");
        if self.report.violations.len() < MAX_VIOLATIONS {
            self.report.violations.push(format!("{stamp} {message}"));
        }
    }
}

/// Watches Docker and etcd in the background; [`Monitor::finish`] stops it
/// and returns what it saw.
#[derive(Debug)]
pub struct Monitor {
    state: Arc<Mutex<MonitorState>>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    installations: Vec<Installation>,
    /// Per installation: every etcd write under its prefix (the history
    /// entries are read from it, deleted ones included).
    writes: Vec<WriteLog>,
}

impl Monitor {
    /// Starts watching the containers of `installations` (all on `docker`)
    /// with `gc_bound` as the longest an orphan may live, and recording
    /// every write under their prefixes.
    pub async fn start(
        docker: Arc<DockerRuntime>,
        installations: Vec<Installation>,
        gc_bound: Duration,
    ) -> Monitor {
        let mut writes = Vec::new();
        for installation in &installations {
            writes
                .push(WriteLog::start(installation.store.clone(), installation.keys.root()).await);
        }
        let state = Arc::new(Mutex::new(MonitorState {
            docs: vec![None; installations.len()],
            docs_at: vec![None; installations.len()],
            ..MonitorState::default()
        }));
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for (i, installation) in installations.iter().enumerate() {
            tasks.push(tokio::spawn(poll_documents(
                i,
                installation.clone(),
                state.clone(),
                stop.clone(),
            )));
        }
        let prefixes: Vec<String> = installations
            .iter()
            .map(|i| i.keys.prefix().to_owned())
            .collect();
        tasks.push(tokio::spawn(poll_docker(
            docker,
            prefixes,
            gc_bound,
            state.clone(),
            stop.clone(),
        )));
        Monitor {
            state,
            stop,
            tasks,
            installations,
            writes,
        }
    }

    /// Watches a foreign container from now on.
    pub fn add_foreign(&self, foreign: Foreign) {
        lock(&self.state).foreign.push(foreign);
    }

    /// Stops the monitor and returns its report, with the verdict on
    /// every container that stopped running while it watched.
    pub async fn finish(mut self) -> MonitorReport {
        self.stop.cancel();
        for task in std::mem::take(&mut self.tasks) {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
        let mut operations = BTreeMap::new();
        let mut ledgers = BTreeMap::new();
        let mut all_writes = BTreeMap::new();
        for (installation, writes) in self
            .installations
            .iter()
            .zip(std::mem::take(&mut self.writes))
        {
            let events = writes.finish().await;
            let prefix = installation.keys.prefix().to_owned();
            operations.insert(prefix.clone(), operations_of(&installation.keys, &events));
            ledgers.insert(prefix.clone(), installation.ledger());
            all_writes.insert(prefix, events);
        }
        let mut state = lock(&self.state);
        let mut report = std::mem::take(&mut state.report);
        report.seen = state.seen.values().cloned().collect();
        let mut audit = ReplacementAudit::default();
        for (prefix, ops) in &operations {
            let gone: Vec<Disappearance> = report
                .disappearances
                .iter()
                .filter(|d| d.prefix == *prefix)
                .cloned()
                .collect();
            audit.merge(judge_replacements(&gone, ops, &ledgers[prefix].hands));
        }
        report.replacements = audit;
        report.operations = operations;
        report.ledgers = ledgers;
        report.writes = all_writes;
        report
    }
}

impl Drop for Monitor {
    /// A test that failed before `finish` stops watching here, before its
    /// guards remove containers (which would read as violations).
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn poll_documents(
    index: usize,
    installation: Installation,
    state: Arc<Mutex<MonitorState>>,
    stop: CancellationToken,
) {
    let prefix = installation.keys.gameruntimes();
    while !stop.is_cancelled() {
        let listed = tokio::time::timeout(
            Duration::from_secs(5),
            installation.store.list(&prefix, None),
        )
        .await;
        {
            let mut state = lock(&state);
            match listed {
                Ok(Ok(listing)) => {
                    let names = listing
                        .items
                        .iter()
                        .filter_map(|kv| kv.key.strip_prefix(&prefix).map(str::to_owned))
                        .collect();
                    state.docs[index] = Some(names);
                    state.docs_at[index] = Some(Instant::now());
                }
                _ => state.report.etcd_failures += 1,
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(MONITOR_POLL) => {}
        }
    }
}

async fn poll_docker(
    docker: Arc<DockerRuntime>,
    prefixes: Vec<String>,
    gc_bound: Duration,
    state: Arc<Mutex<MonitorState>>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let listed = tokio::time::timeout(Duration::from_secs(15), docker.list_managed()).await;
        let foreign = lock(&state).foreign.clone();
        let mut inspected = Vec::new();
        for f in &foreign {
            if let Ok(Ok(found)) =
                tokio::time::timeout(Duration::from_secs(15), docker.inspect_container(&f.id)).await
            {
                inspected.push((f.clone(), found));
            }
        }
        {
            let mut state = lock(&state);
            match listed {
                Ok(Ok(all)) => judge(&mut state, &prefixes, gc_bound, &all),
                _ => {
                    state.report.docker_failures += 1;
                    state.last_poll = None;
                }
            }
            for (f, found) in inspected {
                judge_foreign(&mut state, &f, found.as_ref());
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(MONITOR_POLL) => {}
        }
    }
}

/// The per-instant invariants, on one Docker listing.
fn judge(state: &mut MonitorState, prefixes: &[String], gc_bound: Duration, all: &[ContainerInfo]) {
    let now = Instant::now();
    // Orphans age only between two answered polls (an engine or etcd
    // outage also stops the controller's garbage collection).
    let dt = state
        .last_poll
        .map(|p| now.duration_since(p).min(Duration::from_secs(1)))
        .unwrap_or_default();
    state.last_poll = Some(now);
    state.report.docker_polls += 1;
    let now_sys = SystemTime::now();
    let mut alive = BTreeSet::new();
    for (i, prefix) in prefixes.iter().enumerate() {
        let ours: Vec<&ContainerInfo> = all
            .iter()
            .filter(|c| c.prefix() == Some(prefix.as_str()))
            .collect();
        let mut by_game: BTreeMap<&str, Vec<ContainerInfo>> = BTreeMap::new();
        for c in &ours {
            by_game
                .entry(c.game().unwrap_or(""))
                .or_default()
                .push((*c).clone());
            state.seen.entry(c.id.clone()).or_insert(SeenContainer {
                id: c.id.clone(),
                name: c.name.clone(),
                prefix: prefix.clone(),
                game: c.game().map(str::to_owned),
                op_id: c.labels.get(LABEL_OP_ID).cloned(),
                first_seen: now,
            });
        }
        track_up(state, prefix, &by_game, now_sys);
        for (game, containers) in &by_game {
            state.report.max_per_game = state.report.max_per_game.max(containers.len());
            if containers.len() > 1 {
                state.violate(
                    format!("twin {prefix} {game} {}", containers.len()),
                    format!(
                        "game {game} had {} containers at once: {}",
                        containers.len(),
                        describe(containers)
                    ),
                );
            }
        }
        let fresh =
            state.docs_at[i].is_some_and(|at| now.duration_since(at) < Duration::from_secs(2));
        let Some(docs) = state.docs[i].clone() else {
            continue;
        };
        for c in &ours {
            alive.insert(c.id.clone());
            if c.game().is_some_and(|g| docs.contains(g)) {
                state.orphan_age.remove(&c.id);
                continue;
            }
            let age = state.orphan_age.entry(c.id.clone()).or_default();
            if fresh {
                *age += dt;
            }
            let age = *age;
            state.report.max_orphan_age = state.report.max_orphan_age.max(age);
            if age > gc_bound {
                state.violate(
                    format!("orphan {}", c.id),
                    format!(
                        "container {} {} ({}) has had no document for {age:?}, longer than \
                         the GC grace plus margin ({gc_bound:?})",
                        c.name,
                        short(&c.id),
                        c.state
                    ),
                );
            }
        }
    }
    state.orphan_age.retain(|id, _| alive.contains(id));
    state.last_answered = Some(now_sys);
}

/// Running or paused: the engine's process exists (a paused container
/// resumed is not a replacement).
fn is_up(c: &ContainerInfo) -> bool {
    matches!(c.state, ContainerState::Running | ContainerState::Paused)
}

/// Compares the containers up now with those of the last answered poll
/// (across an engine outage too) and notes every one no longer up.
fn track_up(
    state: &mut MonitorState,
    prefix: &str,
    by_game: &BTreeMap<&str, Vec<ContainerInfo>>,
    now: SystemTime,
) {
    let since = state.last_answered.unwrap_or(now);
    let mut games: BTreeSet<String> = state
        .up
        .keys()
        .filter(|(p, _)| p == prefix)
        .map(|(_, g)| g.clone())
        .collect();
    games.extend(
        by_game
            .keys()
            .filter(|g| !g.is_empty())
            .map(|g| (*g).to_owned()),
    );
    for game in games {
        let key = (prefix.to_owned(), game.clone());
        let containers = by_game
            .get(game.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let before = state.up.remove(&key).unwrap_or_default();
        let mut after = BTreeMap::new();
        for c in containers.iter().filter(|c| is_up(c)) {
            let first_up = before.get(&c.id).map_or(now, |(_, at)| *at);
            after.insert(c.id.clone(), (c.clone(), first_up));
        }
        for (id, (was, up_since)) in &before {
            if after.contains_key(id) {
                continue;
            }
            let left = containers
                .iter()
                .find(|c| c.id == *id)
                .map_or_else(|| "gone".to_owned(), |c| c.state.to_string());
            let up_before: Vec<ContainerInfo> = before.values().map(|(c, _)| c.clone()).collect();
            state.report.disappearances.push(Disappearance {
                prefix: prefix.to_owned(),
                game: game.clone(),
                id: id.clone(),
                name: was.name.clone(),
                up_since: *up_since,
                after: since,
                by: now,
                left,
                before: describe(&up_before),
                then: describe(containers),
            });
        }
        if !after.is_empty() {
            state.up.insert(key, after);
        }
    }
}

fn judge_foreign(state: &mut MonitorState, foreign: &Foreign, found: Option<&ContainerInfo>) {
    let name = &foreign.name;
    match found {
        None => state.violate(
            format!("foreign gone {}", foreign.id),
            format!(
                "the foreign container {name} {} was removed",
                short(&foreign.id)
            ),
        ),
        Some(c) if !c.is_running() => state.violate(
            format!("foreign stopped {}", foreign.id),
            format!("the foreign container {name} was stopped: {}", c.state),
        ),
        Some(c) if c.started_at != foreign.started_at => state.violate(
            format!("foreign restarted {}", foreign.id),
            format!(
                "the foreign container {name} was restarted (started {:?}, was {:?})",
                c.started_at, foreign.started_at
            ),
        ),
        Some(c) if c.labels != foreign.labels => state.violate(
            format!("foreign relabelled {}", foreign.id),
            format!(
                "the foreign container {name}'s labels changed: {:?}",
                c.labels
            ),
        ),
        Some(_) => {}
    }
}

// ---------------------------------------------------------------------------
// No running container is replaced without a reason.

/// What the test did, as the replacement check reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deed {
    /// A write of the game's document (created, changed, a restart asked
    /// for, deleted), at this etcd revision, with the request id the
    /// document carried then: a reason for an operation that read it.
    Spec {
        revision: Revision,
        source_ref: Option<String>,
    },
    /// A hand on the game's container (`docker kill`, `rm`, `stop`): the
    /// reason its running container ends.
    Container,
    /// The Docker engine stopped, every container with it (`game: None`).
    Engine,
    /// A container made by hand with no document: garbage to collect.
    Orphan,
    /// Context for failure messages, never a reason: a pause, a rename,
    /// garbage in etcd, a controller crash.
    Note,
}

/// One deed of the test, on one game or (`game: None`) on all.
#[derive(Debug, Clone)]
pub struct Hand {
    pub game: Option<String>,
    pub deed: Deed,
    pub what: String,
    /// Just before the test acted, and once it was done.
    pub issued: SystemTime,
    pub acked: SystemTime,
}

/// What the test did to one installation.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub hands: Vec<Hand>,
    /// Keys the test filled with garbage (history readers skip them while
    /// they hold it).
    pub garbled: BTreeSet<String>,
    /// Revisions of the test's own writes under the prefix (the fencing
    /// audit leaves them out: they are not the controllers').
    pub own_writes: BTreeSet<Revision>,
}

impl Ledger {
    /// The deeds that concern `game`, one line each.
    pub fn lines(&self, game: &str) -> Vec<String> {
        self.hands
            .iter()
            .filter(|h| h.game.as_deref().is_none_or(|g| g == game))
            .map(|h| {
                let revision = match &h.deed {
                    Deed::Spec { revision, .. } => format!(" (rev {revision})"),
                    _ => String::new(),
                };
                format!(
                    "{} {}: {}{revision}",
                    stamp(h.issued),
                    deed_name(&h.deed),
                    h.what
                )
            })
            .collect()
    }
}

fn deed_name(deed: &Deed) -> &'static str {
    match deed {
        Deed::Spec { .. } => "spec",
        Deed::Container => "container",
        Deed::Engine => "engine",
        Deed::Orphan => "orphan",
        Deed::Note => "note",
    }
}

/// A container of a game that was running (or paused) at one poll and
/// not at the next: exited, or gone.
#[derive(Debug, Clone)]
pub struct Disappearance {
    pub prefix: String,
    pub game: String,
    pub id: String,
    pub name: String,
    /// When the monitor first saw it up.
    pub up_since: SystemTime,
    /// It was up at this poll ...
    pub after: SystemTime,
    /// ... and not any more at this one.
    pub by: SystemTime,
    /// What it was then: `exited`, `gone`, ...
    pub left: String,
    /// The game's containers up before, and all of them after.
    pub before: String,
    pub then: String,
}

/// One operation of the history as last written, with the etcd revisions
/// that order it against the test's writes.
#[derive(Debug, Clone)]
pub struct Op {
    pub key: String,
    pub entry: HistoryEntry,
    /// The revision of its first write (made after the operation read the
    /// document: it may have seen every write before).
    pub first_revision: Revision,
    /// The lease fence it ran under (its first write's revision when it
    /// had none): every document write before it was seen by it, since a
    /// lease is taken on an unchanged document or the document is read
    /// again under it.
    pub fence: Revision,
    /// Whether the key was deleted afterwards.
    pub deleted: bool,
}

/// Every history entry written under `keys` according to `events`, per
/// game, ordered by fence (each operation's last decodable version;
/// garbage is skipped).
pub fn operations_of(keys: &Keys, events: &[WatchEvent]) -> BTreeMap<String, Vec<Op>> {
    let root = format!("{}/history/", keys.prefix());
    // (key, op id, kind) → op: a key reused after a deletion holds another
    // operation.
    let mut ops: BTreeMap<(String, String, String), Op> = BTreeMap::new();
    for event in events {
        let Some(rest) = event.key().strip_prefix(&root) else {
            continue;
        };
        if !rest.contains('/') {
            continue;
        }
        match event {
            WatchEvent::Put(kv) => {
                let Ok(entry) = serde_json::from_slice::<HistoryEntry>(&kv.value) else {
                    continue;
                };
                let id = (
                    kv.key.clone(),
                    entry.op_id.clone(),
                    entry.op_kind.as_str().to_owned(),
                );
                let op = ops.entry(id).or_insert_with(|| Op {
                    key: kv.key.clone(),
                    entry: entry.clone(),
                    first_revision: kv.mod_revision,
                    fence: entry.fence_revision.unwrap_or(kv.mod_revision),
                    deleted: false,
                });
                op.entry = entry;
                op.deleted = false;
            }
            WatchEvent::Delete { key, .. } => {
                for (_, op) in ops.range_mut((key.clone(), String::new(), String::new())..) {
                    if op.key != *key {
                        break;
                    }
                    op.deleted = true;
                }
            }
        }
    }
    let mut by_game: BTreeMap<String, Vec<Op>> = BTreeMap::new();
    for op in ops.into_values() {
        by_game
            .entry(op.entry.game_id.clone())
            .or_default()
            .push(op);
    }
    for list in by_game.values_mut() {
        list.sort_by_key(|op| (op.fence, op.first_revision));
    }
    by_game
}

/// One line per operation (oldest first), those overlapping `window`
/// only when given.
pub fn op_lines(ops: &[Op], window: Option<(SystemTime, SystemTime)>) -> Vec<String> {
    ops.iter()
        .filter(|op| {
            window.is_none_or(|(from, to)| {
                let started = op.entry.started_at.system_time();
                let finished = op.entry.finished_at.map_or(to, |f| f.system_time());
                started <= to && finished >= from
            })
        })
        .map(|op| {
            let e = &op.entry;
            format!(
                "#{} {} {} ref={} {}→{} {:?} code={} started {} finished {} holder={} fence={}{}{}{}",
                e.seq,
                e.op_kind.as_str(),
                e.op_source.as_str(),
                e.source_ref,
                e.container_id_before.as_deref().map_or("-", short),
                e.container_id_after.as_deref().map_or("-", short),
                e.outcome,
                e.error_code.map_or("-", |c| c.as_str()),
                stamp(e.started_at.system_time()),
                e.finished_at.map_or_else(|| "-".to_owned(), |f| stamp(f.system_time())),
                e.holder,
                op.fence,
                e.note.as_deref().map_or_else(String::new, |n| format!(" note={n:?}")),
                e.error_message
                    .as_deref()
                    .map_or_else(String::new, |m| format!(" msg={m:?}")),
                if op.deleted { " (deleted since)" } else { "" }
            )
        })
        .collect()
}

/// A wall-clock time for failure messages.
pub fn stamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// How long after a hand on a container (or the engine) its container may
/// be seen to end: a `docker stop` waits the stop timeout (3 s here), the
/// engine's restart up to its stop limit, then the monitor's next poll,
/// on a loaded machine.
const HAND_WINDOW: Duration = Duration::from_secs(15);

/// History timestamps are whole seconds (rounded down): an operation
/// "around" a disappearance started at most this much after the poll that
/// saw it, and finished at most this much before the poll before.
const STARTED_SLACK: Duration = Duration::from_millis(500);
const FINISHED_SLACK: Duration = Duration::from_secs(2);

/// The verdict on every disappearance of an installation.
#[derive(Debug, Clone, Default)]
pub struct ReplacementAudit {
    /// One line per explained disappearance: the container and its reason.
    pub explained: Vec<String>,
    pub unexplained: Vec<String>,
    /// Explained by a restart, which then failed to create the next
    /// container (the image missing): the game was left with none.
    pub stranded: Vec<String>,
}

impl ReplacementAudit {
    fn merge(&mut self, other: ReplacementAudit) {
        self.explained.extend(other.explained);
        self.unexplained.extend(other.unexplained);
        self.stranded.extend(other.stranded);
    }

    pub fn line(&self) -> String {
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        for line in &self.explained {
            let reason = line.rsplit_once(" ⇐ ").map_or("?", |(_, r)| r);
            let kind = reason.split(':').next().unwrap_or(reason);
            *reasons.entry(kind).or_default() += 1;
        }
        format!(
            "{} explained {reasons:?}, {} unexplained, {} stranded",
            self.explained.len(),
            self.unexplained.len(),
            self.stranded.len()
        )
    }
}

/// The replacement check, pure (unit-tested in `tests/faults/main.rs`): every
/// disappearance of a running container needs a reason, taken in this
/// order:
///
/// 1. the game's container was made by hand without a document (garbage);
/// 2. a hand of the test on the game's container, or on the engine, done
///    before the container was seen gone and at most [`HAND_WINDOW`]
///    earlier, and after it was up; a hand on a container explains one
///    end, an engine restart every end within its window (it takes every
///    running container with it, also one started as it went down);
/// 3. an operation of the game's history that ran around that time
///    (started before the poll that saw the end, finished after the poll
///    before; history timestamps are whole seconds, hence the slacks),
///    that names this container (or none) as the one before, of a kind
///    that ends containers (`restart`, `stop`, `remove`), and that has a
///    cause:
///    - a `remove` with a note (the sweep removing a duplicate, an
///      eviction) is its own cause;
///    - otherwise a document write of the test (a spec change, a restart
///      request, a stop, a deletion) that the operation may have seen
///      (written before its first history entry, which it writes after
///      reading the document) and that no earlier operation answered
///      already: one with an earlier fence that surely saw the write
///      (written before that fence, or before its first entry when it
///      names the write's request id) and that succeeded in creating or
///      adopting a container (`start`, `restart`, `adopt`: a new container
///      answers every request made so far) or itself explained an earlier
///      end.
///
/// So a restart replayed after its status was wiped, a container
/// recreated because it was paused or renamed, or a removal the history
/// does not record, has no reason. A restart that explains an end and
/// then failed with `image_not_found` stranded its game (the old container
/// was stopped before the new one could be created).
pub fn judge_replacements(
    gone: &[Disappearance],
    ops: &BTreeMap<String, Vec<Op>>,
    hands: &[Hand],
) -> ReplacementAudit {
    let mut audit = ReplacementAudit::default();
    let mut gone: Vec<&Disappearance> = gone.iter().collect();
    gone.sort_by_key(|d| d.by);
    let mut hand_used: BTreeSet<(usize, String)> = BTreeSet::new();
    // Per game: the fences of the operations that explained an end.
    let mut explainers: BTreeMap<&str, BTreeSet<Revision>> = BTreeMap::new();
    let no_ops = Vec::new();
    for d in gone {
        let what = format!(
            "{} {} {} (up since {}) {} between {} and {}",
            d.game,
            d.name,
            short(&d.id),
            stamp(d.up_since),
            d.left,
            stamp(d.after),
            stamp(d.by)
        );
        let game_ops = ops.get(&d.game).unwrap_or(&no_ops);
        let mine = |h: &Hand| h.game.as_deref().is_none_or(|g| g == d.game);
        if let Some(h) = hands.iter().find(|h| h.deed == Deed::Orphan && mine(h)) {
            audit.explained.push(format!("{what} ⇐ orphan: {}", h.what));
            continue;
        }
        let hand = hands.iter().enumerate().find(|(i, h)| {
            matches!(h.deed, Deed::Container | Deed::Engine)
                && mine(h)
                // A hand on one container ends one; an engine restart ends every
                // container that runs during it, also one the controller started
                // while the engine was going down.
                && (h.deed == Deed::Engine || !hand_used.contains(&(*i, d.game.clone())))
                && h.issued <= d.by
                && d.by <= h.acked + HAND_WINDOW
                && h.acked + Duration::from_secs(1) >= d.up_since
        });
        if let Some((i, h)) = hand {
            hand_used.insert((i, d.game.clone()));
            audit
                .explained
                .push(format!("{what} ⇐ {}: {}", deed_name(&h.deed), h.what));
            continue;
        }
        let around = |op: &&Op| {
            let e = &op.entry;
            matches!(e.op_kind.as_str(), "restart" | "stop" | "remove")
                && match e.container_id_before.as_deref() {
                    Some(id) => id == d.id,
                    // A finished failure naming no container never reached
                    // one (a restart refused for a missing image); an entry
                    // cut short (in progress, aborted) may have.
                    None => {
                        e.outcome != Outcome::Failure || e.error_code == Some(ErrorCode::Aborted)
                    }
                }
                && e.started_at.system_time() <= d.by + STARTED_SLACK
                && e.finished_at
                    .is_none_or(|f| f.system_time() + FINISHED_SLACK >= d.after)
        };
        let causes: Vec<(usize, Revision, Option<&str>)> = hands
            .iter()
            .enumerate()
            .filter(|(_, h)| h.game.as_deref() == Some(d.game.as_str()))
            .filter_map(|(i, h)| match &h.deed {
                Deed::Spec {
                    revision,
                    source_ref,
                } => Some((i, *revision, source_ref.as_deref())),
                _ => None,
            })
            .collect();
        // Whether an operation saw a write: surely when the write came
        // before its fence (the lease is taken on the unchanged document,
        // or the document is read again under it); maybe when it came
        // before the operation's first entry (written after the document
        // was read), and then surely when the operation names its request.
        // Every entry under one fence belongs to one operation, which read the
        // document once, before its first entry: an inner start written after a
        // write still acted on the document its outer restart read before it.
        let mut read_before: BTreeMap<Revision, Revision> = BTreeMap::new();
        for op in game_ops {
            let first = read_before.entry(op.fence).or_insert(op.first_revision);
            *first = (*first).min(op.first_revision);
        }
        let saw = |op: &Op, revision: Revision, source_ref: Option<&str>| {
            let read = read_before
                .get(&op.fence)
                .copied()
                .unwrap_or(op.first_revision);
            revision < op.fence
                || (revision < read && source_ref.is_some_and(|r| r == op.entry.source_ref))
        };
        let answered = |revision: Revision, source_ref: Option<&str>, before: &Op| {
            game_ops.iter().any(|op| {
                op.fence < before.fence
                    && saw(op, revision, source_ref)
                    && ((op.entry.outcome == Outcome::Success
                        && match op.entry.op_kind.as_str() {
                            "start" | "restart" => true,
                            // Adopting takes the container as it is: it answers a request
                            // that names itself only when the adopt names it too (a renamed
                            // container named back first leaves the restart asked for still
                            // to do, under the next fence, with that request's ref).
                            "adopt" => source_ref.is_none_or(|r| r == op.entry.source_ref),
                            _ => false,
                        })
                        || explainers
                            .get(d.game.as_str())
                            .is_some_and(|f| f.contains(&op.fence)))
            })
        };
        let mut reason = None;
        let mut refused = Vec::new();
        for op in game_ops.iter().filter(around) {
            let e = &op.entry;
            if e.op_kind.as_str() == "remove" && e.note.is_some() {
                reason = Some((op, format!("remove with note {:?}", e.note)));
                break;
            }
            let open: Vec<&(usize, Revision, Option<&str>)> = causes
                .iter()
                .filter(|(_, rev, by)| *rev < op.first_revision && !answered(*rev, *by, op))
                .collect();
            if let Some((i, rev, _)) = open.first() {
                reason = Some((
                    op,
                    format!(
                        "{} #{} for {} (rev {rev})",
                        e.op_kind.as_str(),
                        e.seq,
                        hands[*i].what
                    ),
                ));
                break;
            }
            let seen: Vec<Revision> = causes
                .iter()
                .filter(|(_, rev, _)| *rev < op.first_revision)
                .map(|(_, rev, _)| *rev)
                .collect();
            refused.push(format!(
                "#{} {} (fence {}, first written at rev {}): {}",
                e.seq,
                e.op_kind.as_str(),
                op.fence,
                op.first_revision,
                if seen.is_empty() {
                    "no write of the test came before it".to_owned()
                } else {
                    format!(
                        "every write of the test before it ({seen:?}) was answered by an earlier \
                         operation"
                    )
                }
            ));
        }
        match reason {
            Some((op, why)) => {
                explainers
                    .entry(d.game.as_str())
                    .or_default()
                    .insert(op.fence);
                let stranded = game_ops.iter().find(|o| {
                    o.fence == op.fence
                        && o.entry.op_kind == OpKind::Restart
                        && o.entry.error_code == Some(ErrorCode::ImageNotFound)
                });
                if let Some(restart) = stranded {
                    audit.stranded.push(format!(
                        "{what}: stopped by restart #{} which then failed with image_not_found: \
                         the game was left with no running container\n  containers before {}\n  \
                         containers after {}\n  history around it:\n    {}",
                        restart.entry.seq,
                        d.before,
                        d.then,
                        op_lines(game_ops, Some(window(d))).join("\n    ")
                    ));
                }
                audit.explained.push(format!("{what} ⇐ operation: {why}"));
            }
            None => {
                let ledger: Vec<String> = hands
                    .iter()
                    .filter(|h| mine(h))
                    .map(|h| {
                        let revision = match &h.deed {
                            Deed::Spec { revision, .. } => format!(" (rev {revision})"),
                            _ => String::new(),
                        };
                        format!(
                            "{} {}: {}{revision}",
                            stamp(h.issued),
                            deed_name(&h.deed),
                            h.what
                        )
                    })
                    .collect();
                audit.unexplained.push(format!(
                    "{prefix} game {what}: no reason\n  containers up before {}\n  containers \
                     after {}\n  operations around it that end containers: {}\n  what the test \
                     did to {game}:\n    {}\n  history of {game} around it (oldest first):\n    \
                     {}",
                    d.before,
                    d.then,
                    if refused.is_empty() {
                        "none".to_owned()
                    } else {
                        refused.join("; ")
                    },
                    if ledger.is_empty() {
                        "nothing".to_owned()
                    } else {
                        ledger.join("\n    ")
                    },
                    op_lines(game_ops, Some(window(d))).join("\n    "),
                    prefix = d.prefix,
                    game = d.game,
                ));
            }
        }
    }
    audit
}

/// The stretch of history shown around a disappearance.
fn window(d: &Disappearance) -> (SystemTime, SystemTime) {
    let margin = Duration::from_secs(20);
    (d.after - margin, d.by + margin)
}

// ---------------------------------------------------------------------------
// Fencing: every etcd write under a prefix, and who made it.

/// Records every write under a prefix from the moment it starts (watching
/// again after a broken stream, from the next revision).
#[derive(Debug)]
pub struct WriteLog {
    store: Arc<dyn Store>,
    prefix: String,
    events: Arc<Mutex<Vec<WatchEvent>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl WriteLog {
    pub async fn start(store: Arc<dyn Store>, prefix: String) -> WriteLog {
        let from = store.revision().await.expect("etcd answers") + 1;
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(record_writes(
            store.clone(),
            prefix.clone(),
            from,
            events.clone(),
            stop.clone(),
        ));
        WriteLog {
            store,
            prefix,
            events,
            stop,
            task,
        }
    }

    /// Stops recording, once a sentinel written now has come through the
    /// watch: every write made before this call is in the answer (the
    /// sentinel is left out).
    pub async fn finish(self) -> Vec<WatchEvent> {
        let sentinel = format!("{}test-sentinel", self.prefix);
        self.store
            .txn(rtm_core::store::Txn::new().put(sentinel.clone(), b"now".to_vec()))
            .await
            .expect("write the sentinel");
        eventually(
            Duration::from_secs(15),
            "the sentinel write to come through the watch",
            async || {
                if lock(&self.events).iter().any(|e| e.key() == sentinel) {
                    Ok(())
                } else {
                    Err(format!("{} writes recorded", lock(&self.events).len()))
                }
            },
        )
        .await;
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
        let mut events = std::mem::take(&mut *lock(&self.events));
        events.retain(|e| e.key() != sentinel);
        events
    }
}

async fn record_writes(
    store: Arc<dyn Store>,
    prefix: String,
    mut from: Revision,
    events: Arc<Mutex<Vec<WatchEvent>>>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let watch = tokio::select! {
            _ = stop.cancelled() => return,
            watch = store.watch(&prefix, from) => watch,
        };
        if let Ok(mut stream) = watch {
            loop {
                let batch = tokio::select! {
                    _ = stop.cancelled() => return,
                    batch = stream.next() => batch,
                };
                let Some(Ok(batch)) = batch else { break };
                let mut events = lock(&events);
                for event in batch {
                    from = from.max(event.mod_revision() + 1);
                    events.push(event);
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// What the fencing audit found.
#[derive(Debug, Default)]
pub struct FencingAudit {
    /// game → the revision at which another holder took its lease.
    pub takeovers: BTreeMap<String, Revision>,
    /// Entries of the stale holder that another controller's recovery
    /// resolved as aborted after the takeover.
    pub resolved_by_others: usize,
    /// Records the stale holder appended, without a fence, of operations
    /// it could not run any more (a refusal, not a change).
    pub refusal_records: Vec<String>,
    pub violations: Vec<String>,
}

/// Replays the writes under `keys` and checks that `stale` (the holder
/// name of a controller frozen at `frozen_at`) wrote nothing that counts
/// after another controller took over a game's lease: no lease key, no
/// heartbeat, no history entry — except the recovery of its entries by
/// others and unfenced records of its own refused operations.
pub fn audit_stale_holder(
    keys: &Keys,
    events: &[WatchEvent],
    stale: &str,
    frozen_at: Revision,
) -> FencingAudit {
    let mut audit = FencingAudit::default();
    let leases = keys.leases();
    let history = format!("{}/history/", keys.prefix());
    let heartbeat = keys.controller(stale);
    for event in events {
        let revision = event.mod_revision();
        if revision <= frozen_at {
            continue;
        }
        let WatchEvent::Put(kv) = event else {
            continue;
        };
        if kv.key == heartbeat {
            audit.violations.push(format!(
                "rev {revision}: the stale controller {stale} wrote its heartbeat again"
            ));
        } else if let Some(game) = kv.key.strip_prefix(&leases) {
            let record: Option<LeaseRecord> = serde_json::from_slice(&kv.value).ok();
            match record {
                Some(r) if r.holder == stale => audit.violations.push(format!(
                    "rev {revision}: the stale controller {stale} took the lease of {game}"
                )),
                Some(_) => {
                    audit.takeovers.entry(game.to_owned()).or_insert(revision);
                }
                None => audit.violations.push(format!(
                    "rev {revision}: lease key {} is not a lease record",
                    kv.key
                )),
            }
        } else if let Some(rest) = kv.key.strip_prefix(&history) {
            let game = rest.split('/').next().unwrap_or_default();
            let Some(&takeover) = audit.takeovers.get(game) else {
                continue;
            };
            if revision < takeover {
                continue;
            }
            let Ok(entry) = serde_json::from_slice::<HistoryEntry>(&kv.value) else {
                audit
                    .violations
                    .push(format!("rev {revision}: {} is not a history entry", kv.key));
                continue;
            };
            if entry.holder != stale {
                continue;
            }
            let message = entry.error_message.as_deref().unwrap_or("");
            let recovered_by_other = entry.outcome == Outcome::Failure
                && entry.error_code == Some(ErrorCode::Aborted)
                && message.contains("resolved by")
                && !message.ends_with(stale);
            let refusal = entry.outcome == Outcome::Failure
                && entry.fence_revision.is_none()
                && kv.version == 1
                && matches!(
                    entry.error_code,
                    Some(
                        ErrorCode::LeaseLost | ErrorCode::Conflict | ErrorCode::ServiceUnavailable
                    )
                );
            if recovered_by_other {
                audit.resolved_by_others += 1;
            } else if refusal {
                audit.refusal_records.push(format!(
                    "rev {revision} {game} #{} {:?} {:?}: {message}",
                    entry.seq, entry.op_kind, entry.error_code
                ));
            } else {
                audit.violations.push(format!(
                    "rev {revision}: after {game}'s lease was taken over (rev {takeover}), the \
                     stale controller {stale} wrote history entry #{} ({:?} {:?} {:?} fence \
                     {:?}, version {}): {message}",
                    entry.seq,
                    entry.op_kind,
                    entry.outcome,
                    entry.error_code,
                    entry.fence_revision,
                    kv.version
                ));
            }
        }
    }
    audit
}

// ---------------------------------------------------------------------------
// Processes.

/// Sends `signal` (e.g. `STOP`, `CONT`) to a controller of this test. Safe
/// by pid: the process is our child and is reaped only through
/// `ControllerProcess`, so its pid cannot have been reused.
pub fn signal(process: &ControllerProcess, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), process.pid().to_string()])
        .status()
        .expect("run kill(1)");
    assert!(
        status.success(),
        "kill -{signal} {} ({}) failed",
        process.pid(),
        process.name()
    );
}

/// The process state letter from /proc (`R`, `S`, `T` stopped, `Z` exited
/// but not reaped yet), or `None` when there is no such process.
pub fn process_state(process: &ControllerProcess) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", process.pid())).ok()?;
    // The command name is in parentheses and may hold spaces: the state
    // follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Whether the controller exited (a zombie until reaped by `wait_exit`).
pub fn has_exited(process: &ControllerProcess) -> bool {
    matches!(process_state(process), None | Some('Z' | 'X'))
}

/// The controller's whole log. `ControllerProcess` shows only a tail; the
/// tail's header names the file (`(pid N, PATH) ---`), read in full here.
pub fn controller_log(process: &ControllerProcess) -> String {
    let tail = process.log_tail();
    let path = tail
        .lines()
        .find(|line| line.starts_with("--- last "))
        .and_then(|header| header.split_once(&format!("(pid {}, ", process.pid())))
        .and_then(|(_, rest)| rest.strip_suffix(") ---"))
        .map(str::to_owned);
    path.and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or(tail)
}

// ---------------------------------------------------------------------------
// The soak's dice.

/// splitmix64: tiny, seedable, and the same sequence for a seed forever.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `[low, high)`, at millisecond grain.
    pub fn duration(&mut self, low: Duration, high: Duration) -> Duration {
        let span = (high.saturating_sub(low)).as_millis().max(1) as usize;
        low + Duration::from_millis(self.below(span) as u64)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Formats a list of lines as an indented block.
pub fn block(lines: &[String]) -> String {
    let mut out = String::new();
    for line in lines {
        let _ = write!(out, "\n  {line}");
    }
    out
}
