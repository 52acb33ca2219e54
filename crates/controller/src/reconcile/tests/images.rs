//! The tag watch end to end in the reconciler, with the fake registry: a moved tag
//! recreates an `imagePullPolicy: Always` game once and records the new digest; an
//! unchanged tag costs no etcd write and no recreate, however often it is looked at.

use super::*;
use crate::runtime::{LABEL_IMAGE_ID, RuntimeError};

const REMOTE: &str = "127.0.0.1:5100/pulls/engine:1";

/// A world whose reconciler looks at tags on every reconcile.
async fn watching() -> World {
    fixture::world(100)
        .await
        .with_reconciler(|r| r.with_image_check_interval(Duration::ZERO))
}

fn following(name: &str) -> GameRuntime {
    let mut doc = game(name, "");
    doc.spec.image = REMOTE.to_owned();
    doc.spec.image_pull_policy = rtm_core::model::ImagePullPolicy::Always;
    doc
}

#[tokio::test]
async fn a_moved_tag_recreates_once_and_an_unchanged_one_writes_nothing() {
    let w = watching().await;
    let first = w.runtime.push(REMOTE, "engine one");
    w.apply(following("g1")).await;
    w.converge("g1").await;
    assert_eq!(w.runtime.count(FakeOp::Create), 1);
    let repo = "127.0.0.1:5100/pulls/engine";
    assert_eq!(
        w.status("g1").await.image_id,
        Some(format!("{repo}@{first}"))
    );

    let revision = w.store.revision().await.unwrap();
    for _ in 0..3 {
        w.reconciler.reconcile("g1").await.unwrap();
    }
    assert_eq!(w.store.revision().await.unwrap(), revision, "no write");
    assert_eq!(w.runtime.count(FakeOp::Create), 1, "no recreate");
    assert!(
        w.runtime.count(FakeOp::RegistryDigest) >= 3,
        "looked each time"
    );

    let moved = w.runtime.push(REMOTE, "engine two");
    w.converge("g1").await;
    assert_eq!(w.runtime.count(FakeOp::Create), 2, "recreated once");
    let container = w.runtime.container(&name("g1")).unwrap();
    let running = format!("{repo}@{moved}");
    assert_eq!(container.labels.get(LABEL_IMAGE_ID), Some(&running));
    assert_eq!(w.status("g1").await.image_id, Some(running));
    let history = w.history("g1").await;
    let restart = history
        .iter()
        .find(|e| e.op_kind == OpKind::Restart)
        .expect("a restart entry");
    assert!(
        restart.note.as_deref().unwrap_or_default().contains(&moved),
        "{restart:#?}"
    );

    let revision = w.store.revision().await.unwrap();
    for _ in 0..3 {
        w.reconciler.reconcile("g1").await.unwrap();
    }
    assert_eq!(w.runtime.count(FakeOp::Create), 2, "not again");
    assert_eq!(w.store.revision().await.unwrap(), revision, "no write");
}

#[tokio::test]
async fn a_registry_that_cannot_answer_or_a_lost_status_never_recreates() {
    let w = watching().await;
    w.runtime.push(REMOTE, "engine one");
    w.apply(following("g1")).await;
    w.converge("g1").await;
    w.runtime.fail_next(
        FakeOp::RegistryDigest,
        RuntimeError::Unreachable {
            message: "registry down".into(),
        },
    );
    w.reconciler.reconcile("g1").await.unwrap();
    w.runtime.unpush(REMOTE);
    w.reconciler.reconcile("g1").await.unwrap();
    assert_eq!(w.runtime.count(FakeOp::Create), 1);
    // The tag back, the status record wiped: the label alone says what runs.
    w.runtime.push(REMOTE, "engine one");
    w.store
        .txn(rtm_core::store::Txn::new().delete(Keys::default().status("g1")))
        .await
        .unwrap();
    w.converge("g1").await;
    assert_eq!(w.runtime.count(FakeOp::Create), 1, "adopted, not recreated");
}
