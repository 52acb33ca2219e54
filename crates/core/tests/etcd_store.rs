//! The etcd store and typed documents against the real etcd started by
//! `scripts/services`. Run with `scripts/test` (these tests are ignored by a
//! bare `cargo test`).

use rtm_testkit as common;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rtm_core::ErrorCode;
use rtm_core::model::parse::parse_documents;
use rtm_core::records::Documents;
use rtm_core::records::documents::DocumentError;
use rtm_core::store::etcd::{EtcdConfig, EtcdStore};
use rtm_core::store::{Compare, Store, StoreError, Txn, WatchEvent};

use common::{etcd, revision_of, unique_keys, wipe, within};

const WAIT: Duration = Duration::from_secs(10);

fn game(name: &str) -> rtm_core::model::GameRuntime {
    let yaml = format!(
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n\
         spec:\n  image: rtmanager-test/engine:1\n"
    );
    parse_documents(&yaml).expect("fixture parses").remove(0)
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn documents_create_get_list_and_conflict_on_stale_resource_version() {
    let store = etcd().await;
    let keys = unique_keys("documents");
    let docs = Documents::new(store.clone(), keys.clone());

    let created = docs.create(&game("arena-1")).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let rv: i64 = revision_of(&created);
    docs.create(&game("arena-2")).await.unwrap();

    let fetched = docs
        .get("arena-1")
        .await
        .unwrap()
        .expect("created document is readable");
    assert_eq!(fetched, created);
    assert_eq!(docs.get("missing").await.unwrap(), None);

    let list = docs.list().await.unwrap();
    let names: Vec<_> = list
        .items
        .iter()
        .map(|d| d.metadata.name.as_str())
        .collect();
    assert_eq!(names, ["arena-1", "arena-2"]);
    assert!(list.revision >= rv);

    let mut changed = fetched.clone();
    changed.spec.image = "rtmanager-test/engine:2".into();
    let updated = docs.update(&changed, rv).await.unwrap();
    assert_eq!(updated.metadata.generation, Some(2));

    // The first writer won; a second writer holding the old
    // resourceVersion gets a typed conflict, and nothing changes.
    let stale = docs.update(&fetched, rv).await.unwrap_err();
    assert!(matches!(stale, DocumentError::Conflict { .. }), "{stale}");
    assert_eq!(stale.code(), ErrorCode::Conflict);
    assert_eq!(
        docs.get("arena-1").await.unwrap().unwrap().spec.image,
        "rtmanager-test/engine:2"
    );

    assert!(matches!(
        docs.create(&game("arena-1")).await.unwrap_err(),
        DocumentError::AlreadyExists { .. }
    ));
    docs.delete("arena-1", None).await.unwrap();
    assert!(matches!(
        docs.delete("arena-1", None).await,
        Err(DocumentError::NotFound { .. })
    ));
    wipe(store.as_ref(), &keys).await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn a_document_with_a_bad_name_is_rejected_before_any_write() {
    let store = etcd().await;
    let keys = unique_keys("bad-name");
    let docs = Documents::new(store.clone(), keys.clone());
    let bad_names = ["../escape", "a/b", "Upper", "with space", "x\u{7}y", ""];
    for bad in bad_names {
        let mut doc = game("placeholder");
        doc.metadata.name = bad.into();
        let error = docs.create(&doc).await.unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidRequest, "{bad:?}: {error}");
        assert!(
            error.to_string().contains("metadata.name"),
            "{bad:?}: {error}"
        );
    }
    // Other tests write to the same etcd, so look for the keys themselves:
    // nothing under this test's prefix, and no key anywhere that a bad name
    // could have produced (a ".." name must not have escaped the prefix).
    let ours = store.list(&keys.root(), None).await.unwrap();
    assert!(ours.items.is_empty(), "{:?}", ours.items);
    let everything = store.list("/", None).await.unwrap();
    for kv in &everything.items {
        for bad in bad_names.iter().filter(|b| !b.is_empty()) {
            assert!(
                !kv.key.ends_with(bad),
                "{} was written for the name {bad:?}",
                kv.key
            );
        }
        assert!(
            !kv.key.ends_with("/gameruntimes/"),
            "{} was written for an empty name",
            kv.key
        );
    }
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn watch_sees_puts_and_deletes_in_order() {
    let store = etcd().await;
    let keys = unique_keys("watch");
    let start = store.revision().await.unwrap() + 1;
    let mut watch = store.watch(&keys.gameruntimes(), start).await.unwrap();

    let a = keys.gameruntime("a");
    let b = keys.gameruntime("b");
    let r1 = store.create(&a, b"1".to_vec(), None).await.unwrap();
    let r2 = store.create(&b, b"1".to_vec(), None).await.unwrap();
    let r3 = store.update(&a, b"2".to_vec(), r1).await.unwrap();
    store.delete(&b, r2).await.unwrap();
    // A key outside the watched prefix is not reported.
    store
        .create(&keys.status("a"), b"{}".to_vec(), None)
        .await
        .unwrap();

    let mut seen = Vec::new();
    while seen.len() < 4 {
        let batch = within(WAIT, "watch events", watch.next())
            .await
            .expect("stream open");
        seen.extend(batch.expect("no watch error"));
    }
    let summary: Vec<(String, &str)> = seen
        .iter()
        .map(|e| match e {
            WatchEvent::Put(kv) => (kv.key.clone(), "put"),
            WatchEvent::Delete { key, .. } => (key.clone(), "delete"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            (a.clone(), "put"),
            (b.clone(), "put"),
            (a.clone(), "put"),
            (b.clone(), "delete")
        ]
    );
    let revisions: Vec<_> = seen.iter().map(WatchEvent::mod_revision).collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "in revision order: {revisions:?}"
    );
    assert_eq!(revisions[2], r3);
    wipe(store.as_ref(), &keys).await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn watching_from_a_compacted_revision_yields_the_compaction_error() {
    let store = etcd().await;
    let keys = unique_keys("compaction");
    let key = keys.gameruntime("c");
    let old = store.create(&key, b"1".to_vec(), None).await.unwrap();
    let newer = store.update(&key, b"2".to_vec(), old).await.unwrap();
    store.compact(newer).await.unwrap();

    let mut watch = store.watch(&keys.gameruntimes(), old).await.unwrap();
    let item = within(WAIT, "the compaction error", watch.next()).await;
    match item {
        Some(Err(StoreError::Compacted {
            requested,
            compacted,
        })) => {
            assert_eq!(requested, old);
            assert!(compacted >= newer, "compacted {compacted} < {newer}");
        }
        other => panic!("expected a compaction error, got {other:?}"),
    }
    assert!(
        within(WAIT, "the stream to end", watch.next())
            .await
            .is_none()
    );

    let listing = store.list(&keys.gameruntimes(), Some(old)).await;
    assert!(
        matches!(listing, Err(StoreError::Compacted { .. })),
        "{listing:?}"
    );
    wipe(store.as_ref(), &keys).await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn list_pages_through_many_keys_at_one_revision() {
    let store = etcd().await;
    let keys = unique_keys("paging");
    // More than one page (500 keys per page).
    let count = 1_234;
    for chunk in (0..count).collect::<Vec<_>>().chunks(100) {
        let mut txn = Txn::new();
        for i in chunk {
            txn = txn.put(keys.gameruntime(&format!("g{i:05}")), b"x".to_vec());
        }
        assert!(store.txn(txn).await.unwrap().succeeded);
    }
    let listing = store.list(&keys.gameruntimes(), None).await.unwrap();
    assert_eq!(listing.items.len(), count);
    assert!(listing.items.windows(2).all(|w| w[0].key < w[1].key));

    // A write after the listing's revision is not in a listing at it.
    store
        .create(&keys.gameruntime("late"), b"x".to_vec(), None)
        .await
        .unwrap();
    let again = store
        .list(&keys.gameruntimes(), Some(listing.revision))
        .await
        .unwrap();
    assert_eq!(again.items.len(), count);
    assert_eq!(again.revision, listing.revision);
    wipe(store.as_ref(), &keys).await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn keys_attached_to_a_lease_vanish_when_it_expires_and_keepalive_extends_it() {
    let store = etcd().await;
    let keys = unique_keys("lease");
    let lease = store.grant_lease(Duration::from_secs(2)).await.unwrap();
    let key = keys.lease("g");
    store
        .create(&key, b"token".to_vec(), Some(lease.id))
        .await
        .unwrap();
    assert_eq!(store.get(&key).await.unwrap().unwrap().lease, lease.id);

    // Kept alive past its TTL, the key stays.
    let kept_until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < kept_until {
        let ttl = store.keep_alive(lease.id).await.unwrap();
        assert!(ttl > Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        store.get(&key).await.unwrap().is_some(),
        "keepalive must keep the key"
    );

    // Left alone, it expires: poll with a bound instead of sleeping blind.
    within(WAIT, "the lease to expire", async {
        while store.get(&key).await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let gone = store.keep_alive(lease.id).await;
    assert!(
        matches!(gone, Err(StoreError::LeaseNotFound { .. })),
        "{gone:?}"
    );
    store
        .revoke_lease(lease.id)
        .await
        .expect("revoking a gone lease succeeds");
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn a_txn_guarded_by_create_revision_is_refused_after_the_key_was_recreated() {
    let store = etcd().await;
    let keys = unique_keys("fence");
    let lease_key = keys.lease("g");
    let fence = store
        .create(&lease_key, b"holder-1".to_vec(), None)
        .await
        .unwrap();
    let guarded = |value: &'static [u8]| {
        Txn::new()
            .when(Compare::CreateRevision {
                key: lease_key.clone(),
                revision: fence,
            })
            .put(keys.status("g"), value.to_vec())
    };
    assert!(store.txn(guarded(b"first")).await.unwrap().succeeded);

    // Another holder takes over: the key is deleted and created again.
    let current = store.get(&lease_key).await.unwrap().unwrap();
    store
        .delete(&lease_key, current.mod_revision)
        .await
        .unwrap();
    store
        .create(&lease_key, b"holder-2".to_vec(), None)
        .await
        .unwrap();

    let outcome = store.txn(guarded(b"late")).await.unwrap();
    assert!(!outcome.succeeded, "a fenced-out writer must be refused");
    assert_eq!(
        store.get(&keys.status("g")).await.unwrap().unwrap().value,
        b"first"
    );
    wipe(store.as_ref(), &keys).await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn a_txn_guarded_by_an_empty_prefix_applies_only_while_no_key_has_it() {
    let store = etcd().await;
    let keys = unique_keys("prefix-empty");
    let log = keys.history("g1");
    let guarded = || {
        Txn::new()
            .when(Compare::PrefixEmpty {
                prefix: log.clone(),
            })
            .put(keys.status("g1"), b"x".to_vec())
    };
    // g10's log shares the text "g1" but not the prefix "g1/".
    store
        .create(&keys.history_entry("g10", 1), b"e".to_vec(), None)
        .await
        .unwrap();
    assert!(store.txn(guarded()).await.unwrap().succeeded);
    store
        .create(&keys.history_entry("g1", 7), b"e".to_vec(), None)
        .await
        .unwrap();
    assert!(!store.txn(guarded()).await.unwrap().succeeded);
    wipe(store.as_ref(), &keys).await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn an_unreachable_etcd_fails_fast_with_a_clear_error() {
    // Port 1 on loopback: nothing listens, the connection is refused.
    let mut config = EtcdConfig::new(vec!["http://127.0.0.1:1".into()]);
    config.connect_timeout = Duration::from_secs(1);
    config.request_timeout = Duration::from_secs(2);
    let store = Arc::new(EtcdStore::connect(&config).await.unwrap());
    let started = std::time::Instant::now();
    let error = within(WAIT, "an answer from a dead endpoint", store.get("/x"))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(error.code(), ErrorCode::ServiceUnavailable, "{error}");
    assert!(
        error.to_string().contains("127.0.0.1:1"),
        "names the endpoint: {error}"
    );
}
