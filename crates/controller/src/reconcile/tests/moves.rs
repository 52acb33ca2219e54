//! Games between nodes in the reconciler: a game assigned elsewhere is left alone or
//! moved out (released with `from`), a container with no assignment is claimed, and a
//! game another live node still holds is not started here.

use super::*;
use crate::fixture::NODE;
use crate::placement::assignments::SeenAssignment;
use crate::placement::{AssignmentCache, NodesView, Ownership};
use rtm_core::records::nodes::{self, Assignment, AssignmentReason, NodeRecord};
use rtm_core::store::Txn;

struct Placed {
    w: World,
    assignments: Arc<AssignmentCache>,
    nodes: Arc<NodesView>,
}

async fn placed() -> Placed {
    let assignments = Arc::new(AssignmentCache::new());
    assignments.set_following();
    let nodes = Arc::new(NodesView::new());
    let w = fixture::world(100).await.with_reconciler(|r| {
        r.with_ownership(Ownership::assigned(NODE, assignments.clone()))
            .with_nodes(nodes.clone())
    });
    Placed {
        w,
        assignments,
        nodes,
    }
}

impl Placed {
    /// Writes the assignment in etcd and tells the cache, as its watch would.
    async fn assign(&self, game: &str, assignment: Option<Assignment>) {
        let key = Keys::default().assignment(game);
        let txn = match &assignment {
            Some(a) => Txn::new().put(key, nodes::encode(a)),
            None => Txn::new().delete(key),
        };
        let revision = self.w.store.txn(txn).await.unwrap().revision;
        self.assignments.learn(
            game,
            assignment.map(|assignment| SeenAssignment {
                assignment,
                revision,
            }),
        );
    }

    async fn stored(&self, game: &str) -> Option<Assignment> {
        let kv = self
            .w
            .store
            .get(&Keys::default().assignment(game))
            .await
            .unwrap()?;
        nodes::decode(&kv.value)
    }
}

fn record(node: &str) -> NodeRecord {
    NodeRecord {
        name: node.into(),
        labels: Default::default(),
        capacity: Default::default(),
        address: "10.0.0.2".into(),
        port_range: rtm_core::records::nodes::DEFAULT_PORT_RANGE,
        holder: format!("{node}-1"),
        engine: None,
        version: "t".into(),
        registered_at: rtm_core::model::Timestamp::now(),
        ttl_ms: 15_000,
        self_fence_after_ms: Some(30_000),
        lost_at: None,
    }
}

fn to(node: &str) -> Option<Assignment> {
    Some(Assignment::to(node, AssignmentReason::Scheduled, "s"))
}

#[tokio::test]
async fn a_game_assigned_to_another_node_is_left_alone() {
    let p = placed().await;
    p.w.apply(game("g2", "")).await;
    p.assign("g2", to("node-b")).await;
    p.w.converge("g2").await;
    assert!(p.w.runtime.container(&name("g2")).is_none());
    assert!(
        p.w.store
            .get("/rtmanager/status/g2")
            .await
            .unwrap()
            .is_none()
    );
    p.w.apply(game("g3", "")).await;
    p.w.converge("g3").await;
    assert!(
        p.w.runtime.container(&name("g3")).is_none(),
        "no assignment, no container here: nothing runs before the scheduler says"
    );
}

#[tokio::test]
async fn a_game_moved_to_another_node_is_removed_here_and_released_to_it() {
    let p = placed().await;
    p.w.apply(game("g1", "")).await;
    p.assign("g1", to(NODE)).await;
    p.w.converge("g1").await;
    assert!(p.w.runtime.container(&name("g1")).is_some());
    let status_before =
        p.w.store
            .get("/rtmanager/status/g1")
            .await
            .unwrap()
            .unwrap();
    // To a node that is not live, the game stays: it would run nowhere.
    p.assign("g1", to("node-b")).await;
    p.w.converge("g1").await;
    assert!(p.w.runtime.container(&name("g1")).unwrap().is_running());
    p.nodes.know(record("node-b"), true);
    p.w.converge("g1").await;
    assert!(
        p.w.runtime.containers().is_empty(),
        "it must not run here and there"
    );
    let status_after =
        p.w.store
            .get("/rtmanager/status/g1")
            .await
            .unwrap()
            .unwrap();
    assert_eq!(
        status_after.mod_revision, status_before.mod_revision,
        "the new owner's to write"
    );
    let entry = &p.w.history("g1").await[0];
    assert_eq!(
        (entry.op_kind, entry.outcome),
        (OpKind::Remove, Outcome::Success)
    );
    assert!(
        entry.note.as_deref().unwrap().contains("node-b"),
        "{entry:?}"
    );
    let released = p.stored("g1").await.unwrap();
    assert_eq!(released.node.as_deref(), Some("node-b"));
    assert_eq!(released.from.as_deref(), Some(NODE), "released for node-b");
}

#[tokio::test]
async fn a_move_waits_while_the_game_is_in_session() {
    let p = placed().await;
    p.w.apply(game("g1", "")).await;
    p.assign("g1", to(NODE)).await;
    p.w.converge("g1").await;
    let session = rtm_core::model::Session {
        state: rtm_core::model::SessionState::Allocated,
        reference: Some("match-1".into()),
        since: rtm_core::model::Timestamp::now(),
        container_id: None,
        source: None,
    };
    p.w.store
        .txn(Txn::new().put(
            Keys::default().session("g1"),
            serde_json::to_vec(&session).unwrap(),
        ))
        .await
        .unwrap();
    p.nodes.know(record("node-b"), true);
    p.assign("g1", to("node-b")).await;
    let again = p.w.reconciler.reconcile("g1").await.unwrap();
    assert!(again.is_some(), "looked at again later");
    assert!(
        p.w.runtime.container(&name("g1")).is_some(),
        "a live match is not disrupted for a move"
    );
    assert_eq!(p.stored("g1").await.unwrap().from, None, "not released");
    // Past this node's drain deadline the session waits no longer.
    p.nodes.set_cordon(
        NODE,
        Some(rtm_core::records::nodes::Cordon {
            drain: true,
            deadline: Some(rtm_core::model::Timestamp::now()),
            at: rtm_core::model::Timestamp::now(),
            by: None,
        }),
    );
    p.w.converge("g1").await;
    assert!(p.w.runtime.containers().is_empty(), "moved at the deadline");
    assert_eq!(p.stored("g1").await.unwrap().from.as_deref(), Some(NODE));
}

#[tokio::test]
async fn a_container_with_no_assignment_is_claimed_not_disrupted() {
    let p = placed().await;
    p.w.apply(game("g1", "")).await;
    p.assign("g1", to(NODE)).await;
    p.w.converge("g1").await;
    let id = p.w.runtime.container(&name("g1")).unwrap().id;
    // The assignment is lost (etcdctl del): the container here is the truth.
    p.assign("g1", None).await;
    p.w.converge("g1").await;
    let claimed = p.stored("g1").await.expect("claimed again");
    assert_eq!(claimed.node.as_deref(), Some(NODE));
    assert_eq!(claimed.reason, AssignmentReason::Adopted);
    assert_eq!(
        p.w.runtime.container(&name("g1")).unwrap().id,
        id,
        "untouched"
    );
}

#[tokio::test]
async fn a_game_another_live_node_still_holds_is_not_started_until_released() {
    let p = placed().await;
    p.w.apply(game("g1", "")).await;
    // node-b ran it (its status says so) and is live.
    let status = GameRuntimeStatus {
        node: Some("node-b".into()),
        phase: Phase::Running,
        ..GameRuntimeStatus::default()
    };
    let records = StatusStore::new(p.w.store.clone(), Keys::default());
    p.w.store.txn(records.put("g1", &status)).await.unwrap();
    p.nodes.know(record("node-b"), true);
    p.assign("g1", to(NODE)).await;
    p.w.converge("g1").await;
    assert!(
        p.w.runtime.container(&name("g1")).is_none(),
        "node-b has not released it"
    );
    let mut released = to(NODE).unwrap();
    released.from = Some("node-b".into());
    p.assign("g1", Some(released)).await;
    p.w.converge("g1").await;
    assert!(p.w.runtime.container(&name("g1")).unwrap().is_running());
    let status = p.w.status("g1").await;
    assert_eq!(status.node.as_deref(), Some(NODE));
}

#[tokio::test]
async fn a_deleted_game_takes_its_assignment_with_its_container() {
    let p = placed().await;
    p.w.apply(game("g1", "")).await;
    p.assign("g1", to(NODE)).await;
    p.w.converge("g1").await;
    p.w.delete("g1").await;
    p.w.converge("g1").await;
    assert!(p.w.runtime.containers().is_empty());
    assert_eq!(p.stored("g1").await, None);
}

#[tokio::test]
async fn while_the_assignments_do_not_follow_etcd_nothing_moves_or_is_forgotten() {
    let p = placed().await;
    p.w.apply(game("g1", "")).await;
    p.assign("g1", to(NODE)).await;
    p.w.converge("g1").await;
    let id = p.w.runtime.container(&name("g1")).unwrap().id;
    p.nodes.know(record("node-b"), true);
    // A moment without the watch: the copy may be stale either way.
    p.assignments.set_broken();
    p.assign("g1", to("node-b")).await;
    let again = p.w.reconciler.reconcile("g1").await.unwrap();
    assert_eq!(again, Some(LEASE_BUSY_RETRY), "looked at again soon");
    assert_eq!(p.w.runtime.container(&name("g1")).unwrap().id, id);
    assert!(p.w.runtime.container(&id).unwrap().is_running());
    p.assignments.set_following();
    p.w.converge("g1").await;
    assert!(p.w.runtime.containers().is_empty(), "moved once it follows");
}
