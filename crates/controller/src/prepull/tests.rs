//! The prepull stage over the in-memory etcd and Docker: what is pulled for a request,
//! what is answered, and what is refused.

use std::sync::Arc;
use std::time::Duration;

use rtm_core::ErrorCode;
use rtm_core::model::fixtures::game;
use rtm_core::model::{GameRuntime, ImagePullPolicy, Timestamp};
use rtm_core::records::prepulls::{
    NodeAnswer, PrepullRequest, Prepulls, PullOutcome, decode_answer,
};
use rtm_core::store::{Keys, LeaseId, Store, Txn};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::fixture::{NODE, Parts, parts};
use crate::placement::AssignmentCache;
use crate::runtime::{ContainerRuntime, FakeOp, FakeRuntime};

const IMAGE: &str = "127.0.0.1:5100/prepull/engine:2";
const WAIT: Duration = Duration::from_secs(10);

struct Stage {
    parts: Parts,
    cache: Arc<DesiredCache>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stage {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

/// The prepull stage of [`NODE`] (taking unassigned games too) on `runtime`, with `docs`
/// in its document cache.
async fn stage(docs: Vec<GameRuntime>, runtime: Option<Arc<dyn ContainerRuntime>>) -> Stage {
    let parts = parts().await;
    let runtime = runtime.unwrap_or_else(|| parts.runtime.clone());
    let lifecycle =
        Lifecycle::new(runtime, parts.session.clone(), 100, parts.metrics.clone()).with_node(NODE);
    let cache = Arc::new(DesiredCache::new());
    let sharding = Ownership::assigned(NODE, AssignmentCache::scheduled(&docs, NODE));
    for doc in docs {
        cache.apply(
            doc.metadata.name.clone(),
            Some(Desired::Valid(Box::new(doc))),
        );
    }
    cache.set_ready();
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(
        lifecycle,
        cache.clone(),
        sharding,
        parts.metrics.clone(),
        stop.clone(),
    ));
    Stage {
        parts,
        cache,
        stop,
        task,
    }
}

fn doc(name: &str, node: Option<&str>, image: &str, policy: ImagePullPolicy) -> GameRuntime {
    let mut doc = game(name).build();
    doc.spec.node = node.map(str::to_owned);
    doc.spec.image = image.into();
    doc.spec.image_pull_policy = policy;
    doc
}

fn request(games: &[&str], image: Option<&str>) -> PrepullRequest {
    PrepullRequest {
        games: games.iter().map(|g| (*g).to_owned()).collect(),
        image: image.map(str::to_owned),
        requested_at: Timestamp::now(),
        requester: "test".into(),
    }
}

impl Stage {
    fn store(&self) -> Arc<dyn Store> {
        self.parts.store.clone()
    }

    fn runtime(&self) -> &FakeRuntime {
        &self.parts.runtime
    }

    /// Writes `request` as rtctl does, on a lease of its own; the lease.
    async fn ask(&self, id: &str, request: &PrepullRequest) -> LeaseId {
        let lease = self
            .store()
            .grant_lease(Duration::from_secs(60))
            .await
            .unwrap();
        Prepulls::new(self.store(), Keys::default())
            .create(id, request, lease.id)
            .await
            .expect("the request is written");
        lease.id
    }

    async fn answer_of(&self, id: &str) -> Option<(NodeAnswer, LeaseId)> {
        let kv = self
            .store()
            .get(&Keys::default().prepull_answer(id, NODE))
            .await
            .unwrap()?;
        let answer = decode_answer(&kv, NODE).expect("the answer decodes");
        Some((answer, kv.lease))
    }

    async fn answered(&self, id: &str) -> (NodeAnswer, LeaseId) {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(answer) = self.answer_of(id).await {
                    return answer;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the node answers the prepull request (is the stage following prepulls/?)")
    }

    /// Waits until `check` holds of the fake Docker's calls.
    async fn until(&self, what: &str, check: impl Fn(&FakeRuntime) -> bool) {
        tokio::time::timeout(WAIT, async {
            while !check(self.runtime()) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }
}

#[tokio::test]
async fn each_distinct_image_of_this_nodes_games_is_pulled_once_and_answered_on_the_lease() {
    let never = "127.0.0.1:5100/prepull/local:1";
    let s = stage(
        vec![
            doc("g1", Some(NODE), IMAGE, ImagePullPolicy::IfNotPresent),
            doc("g2", None, IMAGE, ImagePullPolicy::Always),
            doc("g3", Some("node-b"), IMAGE, ImagePullPolicy::IfNotPresent),
            doc("g4", Some(NODE), never, ImagePullPolicy::Never),
        ],
        None,
    )
    .await;
    let digest = s.runtime().push(IMAGE, "engine two");
    let lease = s
        .ask("p1", &request(&["g1", "g2", "g3", "g4", "gone"], None))
        .await;
    let (answer, answer_lease) = s.answered("p1").await;
    assert_eq!(answer_lease, lease, "the answer expires with the request");
    assert_eq!(answer.node, NODE);
    assert_eq!(
        answer.games,
        ["g1", "g2", "g4"],
        "g3 is node-b's, gone has no document"
    );
    let [pulled, skipped] = answer.images.as_slice() else {
        panic!("two images: {answer:?}");
    };
    assert_eq!(pulled.image, IMAGE);
    assert_eq!(pulled.outcome, PullOutcome::Pulled);
    assert_eq!(
        pulled.digest.as_deref(),
        Some(format!("127.0.0.1:5100/prepull/engine@{digest}").as_str())
    );
    assert_eq!(skipped.outcome, PullOutcome::Skipped);
    assert!(
        skipped.message.as_deref().unwrap().contains("Never"),
        "{skipped:?}"
    );
    assert_eq!(
        s.runtime().count(FakeOp::PullImage),
        1,
        "one pull per image"
    );
    // Nothing but the pull reached Docker: no container was created, stopped or removed.
    assert!(
        s.runtime()
            .calls()
            .iter()
            .all(|c| matches!(c.op, FakeOp::PullImage)),
        "{:?}",
        s.runtime().calls()
    );
    assert!(s.runtime().containers().is_empty());
}

#[tokio::test]
async fn an_image_the_registry_lacks_is_answered_as_image_not_found() {
    let s = stage(
        vec![doc("g1", None, IMAGE, ImagePullPolicy::IfNotPresent)],
        None,
    )
    .await;
    let missing = "127.0.0.1:5100/prepull/engine:404";
    s.ask("p2", &request(&["g1"], Some(missing))).await;
    let (answer, _) = s.answered("p2").await;
    let [image] = answer.images.as_slice() else {
        panic!("{answer:?}")
    };
    assert_eq!(image.image, missing, "--image replaces the game's own");
    assert_eq!(image.outcome, PullOutcome::Failed);
    assert_eq!(image.error_code, Some(ErrorCode::ImageNotFound));
}

#[tokio::test]
async fn a_request_on_no_lease_is_refused_and_nothing_is_pulled() {
    let s = stage(
        vec![doc("g1", None, IMAGE, ImagePullPolicy::IfNotPresent)],
        None,
    )
    .await;
    s.runtime().push(IMAGE, "engine two");
    // What `etcdctl put` of a well-formed request without --lease writes, then a forged one.
    let keys = Keys::default();
    let body = serde_json::to_vec(&request(&["g1"], None)).unwrap();
    s.store()
        .txn(Txn::new().put(keys.prepull("forged"), body))
        .await
        .unwrap();
    let lease = s
        .store()
        .grant_lease(Duration::from_secs(60))
        .await
        .unwrap();
    s.store()
        .txn(Txn::new().put_with_lease(keys.prepull("junk"), b"{\"games\":".to_vec(), lease.id))
        .await
        .unwrap();
    // A good request after them is answered: the refusals did not stop the stage.
    s.ask("good", &request(&["g1"], None)).await;
    s.answered("good").await;
    assert_eq!(s.answer_of("forged").await, None);
    assert_eq!(s.answer_of("junk").await, None);
    assert_eq!(
        s.runtime().count(FakeOp::PullImage),
        1,
        "only the good one pulled"
    );
}

#[tokio::test]
async fn a_request_deleted_mid_pull_gets_no_answer_and_a_new_one_is_answered() {
    let fake = FakeRuntime::new();
    fake.push(IMAGE, "engine two");
    let slow: Arc<dyn ContainerRuntime> = Arc::new(fake.with_latency(Duration::from_secs(2)));
    let s = stage(
        vec![doc("g1", None, IMAGE, ImagePullPolicy::IfNotPresent)],
        Some(slow),
    )
    .await;
    let keys = Keys::default();
    s.ask("p3", &request(&["g1"], None)).await;
    tokio::time::timeout(WAIT, async {
        while fake.count(FakeOp::PullImage) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the pull starts");
    s.store()
        .txn(Txn::new().delete(keys.prepull("p3")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        s.answer_of("p3").await,
        None,
        "no answer outlives its request"
    );
    // The same id asked again is a new request.
    s.ask("p3", &request(&["g1"], None)).await;
    let (answer, _) = s.answered("p3").await;
    assert_eq!(answer.images[0].outcome, PullOutcome::Pulled);
}

#[tokio::test]
async fn a_relist_does_not_pull_again_for_an_answered_request() {
    let s = stage(
        vec![doc("g1", None, IMAGE, ImagePullPolicy::IfNotPresent)],
        None,
    )
    .await;
    s.runtime().push(IMAGE, "engine two");
    s.ask("p4", &request(&["g1"], None)).await;
    s.answered("p4").await;
    // A second stage on the same etcd, as after a controller restart: it lists the request
    // with this node's answer, and leaves it.
    let lifecycle = Lifecycle::new(
        s.parts.runtime.clone(),
        s.parts.session.clone(),
        100,
        s.parts.metrics.clone(),
    );
    let again = Prepuller::new(lifecycle, s.cache.clone(), Ownership::everything(NODE));
    again.relist().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.runtime().count(FakeOp::PullImage), 1);
    s.until("nothing more", |r| r.count(FakeOp::PullImage) == 1)
        .await;
}

#[tokio::test]
async fn a_controller_stopped_mid_pull_answers_after_its_restart() {
    let fake = FakeRuntime::new();
    fake.push(IMAGE, "engine two");
    let slow: Arc<dyn ContainerRuntime> = Arc::new(fake.with_latency(Duration::from_secs(30)));
    let docs = vec![doc("g1", None, IMAGE, ImagePullPolicy::IfNotPresent)];
    let s = stage(docs.clone(), Some(slow)).await;
    s.ask("p5", &request(&["g1"], None)).await;
    tokio::time::timeout(WAIT, async {
        while fake.count(FakeOp::PullImage) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the pull starts");
    // The stage stops (a lost session, a restart): its pull goes with it, unanswered.
    s.stop.cancel();
    tokio::time::timeout(WAIT, async {
        while !s.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the stage stops at once, not after its 30 s pull");
    assert_eq!(s.answer_of("p5").await, None);
    // The next one (on a Docker that answers at once) finds the request unanswered.
    let lifecycle = Lifecycle::new(
        Arc::new(fake.clone()),
        s.parts.session.clone(),
        100,
        s.parts.metrics.clone(),
    )
    .with_node(NODE);
    let cache = Arc::new(DesiredCache::new());
    for doc in docs {
        cache.apply(
            doc.metadata.name.clone(),
            Some(Desired::Valid(Box::new(doc))),
        );
    }
    cache.set_ready();
    let stop = CancellationToken::new();
    let again = tokio::spawn(run(
        lifecycle,
        cache,
        Ownership::everything(NODE),
        s.parts.metrics.clone(),
        stop.clone(),
    ));
    let (answer, _) = s.answered("p5").await;
    assert_eq!(answer.images[0].outcome, PullOutcome::Pulled);
    stop.cancel();
    again.abort();
}
