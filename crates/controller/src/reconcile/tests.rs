//! The reconcile driver against the in-memory store and the fake runtime:
//! what it writes, when it takes no lease, what it never removes.

use std::sync::Arc;

use super::*;
use crate::fixture;
use crate::runtime::fake::FakeOp;
use rtm_core::model::parse::parse_documents;
use rtm_core::model::{OpKind, Outcome, Phase};
use rtm_core::records::StatusStore;
use rtm_core::records::history::HistoryEntry;
use rtm_core::store::{Keys, Store};

const IMAGE: &str = "rtmanager-test/engine:1";

/// The name the default installation gives `game`'s container.
fn name(game: &str) -> String {
    crate::runtime::container_name(rtm_core::store::keys::DEFAULT_PREFIX, game)
}

use crate::fixture::World;

mod images;
mod moves;

async fn world() -> World {
    fixture::world(100).await
}

fn game(name: &str, extra: &str) -> GameRuntime {
    let yaml = format!(
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n{extra}\
         spec:\n  image: {IMAGE}\n  stopTimeout: 1s\n"
    );
    parse_documents(&yaml).unwrap().remove(0)
}

impl World {
    /// Writes a document and tells the cache, as the watcher would.
    async fn apply(&self, doc: GameRuntime) -> GameRuntime {
        let name = doc.metadata.name.clone();
        let stored = match self.documents.get(&name).await.unwrap() {
            Some(old) => {
                let rv = old.metadata.resource_version.unwrap().parse().unwrap();
                self.documents.update(&doc, rv).await.unwrap()
            }
            None => self.documents.create(&doc).await.unwrap(),
        };
        self.cache
            .apply(name, Some(Desired::Valid(Box::new(stored.clone()))));
        stored
    }

    /// The game's status record as stored.
    async fn status(&self, name: &str) -> GameRuntimeStatus {
        StatusStore::new(self.store.clone(), Keys::default())
            .read(name)
            .await
            .unwrap()
            .value
    }

    async fn history(&self, name: &str) -> Vec<HistoryEntry> {
        self.reconciler
            .lifecycle()
            .history()
            .recent(name, 100)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_converged_game_costs_no_write_and_no_lease() {
    let w = world().await;
    w.apply(game("g1", "")).await;
    w.converge("g1").await;
    let revision = w.store.revision().await.unwrap();
    for _ in 0..3 {
        assert_eq!(w.reconciler.reconcile("g1").await.unwrap(), None);
    }
    assert_eq!(
        w.store.revision().await.unwrap(),
        revision,
        "steady state writes nothing"
    );
    assert_eq!(w.runtime.count(FakeOp::Create), 1);
}

#[tokio::test]
async fn a_garbled_history_entry_never_stops_a_game_being_reconciled() {
    let w = world().await;
    w.apply(game("g1", "")).await;
    w.converge("g1").await;
    let keys = Keys::default();
    w.store
        .txn(rtm_core::store::Txn::new().put(keys.history_entry("g1", 1), b"null".to_vec()))
        .await
        .unwrap();
    // As after a peer died: the history is read again, garbage and all.
    w.reconciler.forget_recovery();
    w.runtime.remove_by_hand(&name("g1")).unwrap();
    w.converge("g1").await;
    let containers = w.runtime.containers();
    assert!(
        matches!(containers.as_slice(), [c] if c.is_running()),
        "{containers:?}"
    );
}

#[tokio::test]
async fn a_running_matching_container_without_status_is_adopted_not_recreated() {
    let w = world().await;
    let doc = w.apply(game("g1", "")).await;
    let spec = crate::lifecycle::container_spec(
        &doc,
        "/rtmanager",
        "earlier-op",
        &crate::lifecycle::ContainerPolicy::default(),
    );
    let id = w.runtime.create(&spec).await.unwrap();
    w.runtime.start(&id).await.unwrap();
    w.converge("g1").await;
    assert_eq!(w.runtime.count(FakeOp::Create), 1, "never recreated");
    let history = w.history("g1").await;
    assert_eq!(history[0].op_kind, OpKind::Adopt);
    assert_eq!(history[0].container_id_after.as_deref(), Some(id.as_str()));
    let status = w.status("g1").await;
    assert_eq!(status.container_id.as_deref(), Some(id.as_str()));
    assert_eq!(status.phase, Phase::Running);
}

#[tokio::test]
async fn a_container_without_a_known_deletion_is_never_removed() {
    let w = world().await;
    // A container of ours whose game the cache does not know: an orphan in
    // its GC grace, or a document not seen yet.
    let doc = game("g1", "");
    let spec = crate::lifecycle::container_spec(
        &doc,
        "/rtmanager",
        "op",
        &crate::lifecycle::ContainerPolicy::default(),
    );
    let id = w.runtime.create(&spec).await.unwrap();
    w.runtime.start(&id).await.unwrap();
    assert_eq!(w.reconciler.reconcile("g1").await.unwrap(), None);
    assert!(w.runtime.container(&id).is_some_and(|c| c.is_running()));

    // Once the deletion is known (etcd said so, or the GC grace ran out),
    // it goes.
    w.cache.mark_gone("g1");
    w.converge("g1").await;
    assert!(w.runtime.containers().is_empty());
}

#[tokio::test]
async fn a_deleted_document_removes_the_container_and_the_status() {
    let w = world().await;
    w.apply(game("g1", "")).await;
    w.converge("g1").await;
    w.delete("g1").await;
    w.converge("g1").await;
    assert!(w.runtime.containers().is_empty());
    assert!(w.store.get("/rtmanager/status/g1").await.unwrap().is_none());
    let history = w.history("g1").await;
    assert!(
        history
            .iter()
            .any(|e| e.op_kind == OpKind::Remove && e.outcome == Outcome::Success),
        "the removal is recorded and the history kept: {history:#?}"
    );
}

#[tokio::test]
async fn a_deletion_the_cache_believes_but_etcd_denies_removes_nothing() {
    let w = world().await;
    w.apply(game("g1", "")).await;
    w.converge("g1").await;
    // A stale cache says deleted; etcd still has the document.
    w.cache.apply("g1".into(), None);
    w.converge("g1").await;
    assert_eq!(
        w.runtime.containers().len(),
        1,
        "etcd is the truth for deletions"
    );
}

#[tokio::test]
async fn a_restart_token_restarts_once_with_the_requests_correlation_id() {
    let w = world().await;
    w.apply(game("g1", "")).await;
    w.converge("g1").await;
    let mut doc = game(
        "g1",
        "  annotations:\n    rtmanager.dev/op-source: admin_cli\n    rtmanager.dev/source-ref: REQ-7\n",
    );
    doc.spec.restart_token = "t-1".into();
    w.apply(doc).await;
    w.converge("g1").await;
    w.converge("g1").await;
    assert_eq!(w.runtime.count(FakeOp::Create), 2, "exactly one restart");
    let restarts: Vec<_> = w
        .history("g1")
        .await
        .into_iter()
        .filter(|e| e.op_kind == OpKind::Restart)
        .collect();
    assert_eq!(restarts.len(), 1);
    assert_eq!(restarts[0].source_ref, "REQ-7");
    assert_eq!(restarts[0].op_source, OpSource::AdminCli);
    let status = w.status("g1").await;
    assert_eq!(status.observed_restart_token.as_deref(), Some("t-1"));
}

#[tokio::test]
async fn a_crashed_container_is_restarted_and_counted() {
    let w = world().await;
    w.apply(game("g1", "")).await;
    w.converge("g1").await;
    let id = w.runtime.container(&name("g1")).unwrap().id;
    w.runtime.exit_container(&id, 3).unwrap();
    w.converge("g1").await;
    let status = w.status("g1").await;
    assert_eq!(status.phase, Phase::Running);
    assert_eq!(status.restart_count, 1);
    assert_eq!(status.last_exit_code, Some(3));
    assert_ne!(status.container_id.as_deref(), Some(id.as_str()));
}

#[tokio::test]
async fn an_interrupted_operation_is_resolved_as_aborted() {
    let w = world().await;
    w.apply(game("g1", "")).await;
    // A crashed controller left an in-progress entry behind.
    let stale = HistoryEntry::begin("g1", "lost-op", OpKind::Restart, OpSource::Reconcile);
    w.reconciler
        .lifecycle()
        .history()
        .append(None, stale)
        .await
        .unwrap();
    w.converge("g1").await;
    let lost = w
        .history("g1")
        .await
        .into_iter()
        .find(|e| e.op_id == "lost-op")
        .unwrap();
    assert_eq!(lost.outcome, Outcome::Failure);
    assert_eq!(lost.error_code, Some(ErrorCode::Aborted));
}

/// The etcd requests one reconcile makes, by kind (BENCHMARKS.md).
async fn requests_of(w: &World, game: &str) -> rtm_core::store::memory::Requests {
    let before = w.store.requests();
    w.reconciler.reconcile(game).await.unwrap();
    let after = w.store.requests();
    rtm_core::store::memory::Requests {
        reads: after.reads - before.reads,
        txns: after.txns - before.txns,
    }
}

#[tokio::test]
async fn starting_a_new_game_costs_two_reads_and_four_transactions() {
    let w = world().await;
    w.apply(game("g1", "")).await;
    // Reads: the first look's status, the history (recovery). Transactions:
    // the lease (taken on the unchanged document and status), the
    // in-progress entry, the status with the finished entry, the final
    // status with the release.
    let cost = requests_of(&w, "g1").await;
    assert_eq!((cost.reads, cost.txns), (2, 4), "{cost:?}");
    assert_eq!(w.runtime.count(FakeOp::Start), 1);
    // Docker: the first look (not repeated under the lease: nothing
    // changed in etcd), the search for a container of the game renamed by
    // hand, the start's own look, the image, create, start, and the look
    // at what started.
    let calls: Vec<FakeOp> = w.runtime.calls().iter().map(|c| c.op).collect();
    assert_eq!(
        calls,
        [
            FakeOp::InspectContainer,
            FakeOp::ListManaged,
            FakeOp::InspectContainer,
            FakeOp::InspectImage,
            FakeOp::Create,
            FakeOp::Start,
            FakeOp::InspectContainer
        ]
    );
    // The follow-up look: one read, no write.
    let cost = requests_of(&w, "g1").await;
    assert_eq!((cost.reads, cost.txns), (1, 0), "{cost:?}");
}

#[tokio::test]
async fn a_restart_costs_two_reads_and_eight_transactions() {
    let w = world().await;
    w.apply(game("g1", "")).await;
    w.converge("g1").await;
    let mut doc = game("g1", "");
    doc.spec.restart_token = "t-1".into();
    w.apply(doc).await;
    // Transactions: the lease, the outer entry, the inner stop's entry and
    // its conclusion, the inner start's two, the outer conclusion, the
    // final status with the release.
    let cost = requests_of(&w, "g1").await;
    assert_eq!((cost.reads, cost.txns), (2, 8), "{cost:?}");
    assert_eq!(w.runtime.count(FakeOp::Create), 2);
}

#[tokio::test]
async fn a_cache_that_lags_behind_etcd_is_not_acted_on() {
    let w = world().await;
    w.apply(game("g1", "")).await;
    w.converge("g1").await;
    // The cache learns of restart t-1, but etcd already holds t-2: the
    // lease is not taken on the cached version, and the restart answers
    // the stored one.
    let mut cached = game("g1", "");
    cached.spec.restart_token = "t-1".into();
    let cached = w.apply(cached).await;
    let mut newer = game("g1", "");
    newer.spec.restart_token = "t-2".into();
    let rv = rtm_testkit::revision_of(&cached);
    w.documents.update(&newer, rv).await.unwrap();
    w.cache
        .apply("g1".into(), Some(Desired::Valid(Box::new(cached))));
    w.reconciler.reconcile("g1").await.unwrap();
    let status = w.status("g1").await;
    assert_eq!(status.observed_restart_token.as_deref(), Some("t-2"));
    assert_eq!(w.runtime.count(FakeOp::Create), 2, "one restart");
}

#[tokio::test]
async fn with_the_status_cache_a_converged_game_reads_nothing_from_etcd() {
    use crate::mirror::Mirror;
    use crate::statuses::StatusMirror;

    let w = world().await;
    let statuses = Arc::new(StatusCache::new());
    let mirror = StatusMirror {
        store: w.store.clone(),
        keys: Keys::default(),
        cache: statuses.clone(),
        queue: None,
    };
    mirror.relist().await.unwrap();
    let w = World {
        reconciler: w.reconciler.with_status_cache(statuses),
        ..w
    };
    w.apply(game("g1", "")).await;
    // The first look's status comes from the cache: only the history read.
    let cost = requests_of(&w, "g1").await;
    assert_eq!((cost.reads, cost.txns), (1, 4), "{cost:?}");
    // What the reconcile wrote is known without its watch event.
    for _ in 0..3 {
        let cost = requests_of(&w, "g1").await;
        assert_eq!((cost.reads, cost.txns), (0, 0), "{cost:?}");
    }
    assert_eq!(w.runtime.count(FakeOp::Create), 1);
}

#[tokio::test]
async fn a_documents_claimed_source_is_recorded_as_its_writers_claim_never_as_reconcile() {
    let w = world().await;
    w.apply(game("g1", "")).await;
    w.converge("g1").await;
    let start = w.history("g1").await.remove(0);
    assert_eq!(
        (start.op_source, start.source_claimed),
        (OpSource::Api, false),
        "a document naming no source: someone wrote it, nothing claimed"
    );

    // The writer claims to be the controller itself, on someone else's request.
    let mut doc = game(
        "g1",
        "  annotations:\n    rtmanager.dev/op-source: reconcile\n    rtmanager.dev/source-ref: REQ-OF-ALICE\n",
    );
    doc.spec.restart_token = "t-1".into();
    w.apply(doc.clone()).await;
    w.converge("g1").await;
    let restart = w
        .history("g1")
        .await
        .into_iter()
        .find(|e| e.op_kind == OpKind::Restart)
        .unwrap();
    assert_eq!(
        restart.op_source,
        OpSource::Api,
        "reconcile cannot be claimed"
    );
    assert!(restart.source_claimed);
    assert_eq!(restart.source_ref, "REQ-OF-ALICE", "kept, as a claim");
    let inner: Vec<_> = w
        .history("g1")
        .await
        .into_iter()
        .filter(|e| e.source_ref == "REQ-OF-ALICE")
        .collect();
    assert!(
        inner.len() >= 3 && inner.iter().all(|e| e.source_claimed),
        "the inner stop and start carry the claim too: {inner:#?}"
    );

    // admin_cli, as rtctl writes it: recorded, marked as claimed.
    doc.metadata
        .annotations
        .insert("rtmanager.dev/op-source".into(), "admin_cli".into());
    doc.spec.restart_token = "t-2".into();
    w.apply(doc).await;
    w.converge("g1").await;
    let newest = w
        .history("g1")
        .await
        .into_iter()
        .find(|e| e.op_kind == OpKind::Restart)
        .unwrap();
    assert_eq!(
        (newest.op_source, newest.source_claimed),
        (OpSource::AdminCli, true)
    );

    // Drift the controller repairs on its own is its own word.
    let id = w.runtime.container(&name("g1")).unwrap().id;
    w.runtime.exit_container(&id, 3).unwrap();
    w.converge("g1").await;
    let repair = w.history("g1").await.remove(0);
    assert_eq!(
        (repair.op_source, repair.source_claimed),
        (OpSource::Reconcile, false),
        "{repair:#?}"
    );
}
