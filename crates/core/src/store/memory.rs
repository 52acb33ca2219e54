//! The in-memory twin of the etcd store, for unit tests: the same revision
//! semantics (one global counter, create/mod revisions, versions), guarded
//! transactions, watches with replay from a revision and compaction, and
//! leases that expire on tokio's clock (so paused-time tests control them).
//!
//! Leases expire lazily: every call first removes the keys of leases whose
//! deadline has passed, exactly as if etcd had expired them in between.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::{
    Compare, KeyValue, LeaseGrant, LeaseId, Listing, Mutation, Revision, Store, StoreError, Txn,
    TxnOutcome, WatchBatch, WatchEvent, WatchStream,
};

#[derive(Debug, Default)]
struct State {
    revision: Revision,
    compacted: Revision,
    keys: BTreeMap<String, KeyValue>,
    /// Every change since the last compaction, for watches that start in
    /// the past.
    log: Vec<WatchEvent>,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    watchers: Vec<Watcher>,
    /// Calls that fail with this error until cleared (fault injection).
    outage: Option<StoreError>,
    /// The next calls fail with these errors, one each (fault injection).
    scripted: std::collections::VecDeque<StoreError>,
    /// Requests served, for tests of what an operation costs.
    requests: Requests,
    /// Key prefixes no transaction may write (etcd's RBAC, as a role
    /// without write permission there sees it).
    read_only: Vec<String>,
}

/// How many requests a [`MemoryStore`] served, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Requests {
    /// `get`, `list` and `newest`.
    pub reads: usize,
    /// Transactions (every write is one).
    pub txns: usize,
}

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
}

#[derive(Debug)]
struct Watcher {
    prefix: String,
    sender: mpsc::UnboundedSender<Result<WatchBatch, StoreError>>,
}

/// An in-memory [`Store`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every following call fail with `error` until [`Self::recover`]
    /// (an etcd outage, for tests of what callers do meanwhile). Open
    /// watches end with the error too.
    pub fn fail_with(&self, error: StoreError) {
        let mut state = self.lock();
        for watcher in state.watchers.drain(..) {
            let _ = watcher.sender.send(Err(error.clone()));
        }
        state.outage = Some(error);
    }

    /// Makes the next call fail with `error` (then the one after with the
    /// next scripted error, if any): a single etcd hiccup.
    pub fn fail_next(&self, error: StoreError) {
        self.lock().scripted.push_back(error);
    }

    /// Refuses, as etcd's RBAC would (`permission denied`), every
    /// transaction that writes or deletes a key under `prefix`.
    pub fn refuse_writes_under(&self, prefix: &str) {
        self.lock().read_only.push(prefix.to_owned());
    }

    /// Ends the outage [`Self::fail_with`] began.
    pub fn recover(&self) {
        self.lock().outage = None;
    }

    /// The requests served so far.
    pub fn requests(&self) -> Requests {
        self.lock().requests
    }

    /// Every key and value, for assertions.
    pub fn dump(&self) -> BTreeMap<String, Vec<u8>> {
        let mut state = self.lock();
        state.expire_leases();
        state
            .keys
            .iter()
            .map(|(k, kv)| (k.clone(), kv.value.clone()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock means a test already panicked; keep going so that
        // the first panic is the one reported.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Locks the state, fails during an outage, and expires leases first.
    fn begin(&self) -> Result<std::sync::MutexGuard<'_, State>, StoreError> {
        let mut state = self.lock();
        if let Some(error) = &state.outage {
            return Err(error.clone());
        }
        if let Some(error) = state.scripted.pop_front() {
            return Err(error);
        }
        state.expire_leases();
        Ok(state)
    }
}

impl State {
    fn expire_leases(&mut self) {
        let now = Instant::now();
        let expired: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, lease)| lease.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.drop_lease(id);
        }
    }

    fn drop_lease(&mut self, id: LeaseId) {
        if self.leases.remove(&id).is_none() {
            return;
        }
        let attached: Vec<String> = self
            .keys
            .values()
            .filter(|kv| kv.lease == id)
            .map(|kv| kv.key.clone())
            .collect();
        if attached.is_empty() {
            return;
        }
        self.revision += 1;
        let events = attached
            .into_iter()
            .filter_map(|key| self.remove(&key))
            .collect();
        self.publish(events);
    }

    fn holds(&self, compare: &Compare) -> bool {
        let current = || self.keys.get(compare.key());
        match compare {
            Compare::Absent { .. } => current().is_none(),
            Compare::ModRevision { revision, .. } => {
                current().is_some_and(|kv| kv.mod_revision == *revision)
            }
            Compare::CreateRevision { revision, .. } => {
                current().is_some_and(|kv| kv.create_revision == *revision)
            }
            Compare::Value { value, .. } => current().is_some_and(|kv| &kv.value == value),
            Compare::PrefixEmpty { prefix } => self
                .keys
                .range::<String, _>(prefix..)
                .next()
                .is_none_or(|(key, _)| !key.starts_with(prefix.as_str())),
        }
    }

    /// Applies a put at the current (already incremented) revision.
    fn put(&mut self, key: String, value: Vec<u8>, lease: LeaseId) -> WatchEvent {
        let revision = self.revision;
        let kv = match self.keys.get(&key) {
            Some(old) => KeyValue {
                key: key.clone(),
                value,
                create_revision: old.create_revision,
                mod_revision: revision,
                version: old.version + 1,
                lease,
            },
            None => KeyValue {
                key: key.clone(),
                value,
                create_revision: revision,
                mod_revision: revision,
                version: 1,
                lease,
            },
        };
        self.keys.insert(key, kv.clone());
        WatchEvent::Put(kv)
    }

    fn remove(&mut self, key: &str) -> Option<WatchEvent> {
        self.keys.remove(key).map(|_| WatchEvent::Delete {
            key: key.to_owned(),
            mod_revision: self.revision,
        })
    }

    fn publish(&mut self, events: Vec<WatchEvent>) {
        self.log.extend(events.iter().cloned());
        self.watchers.retain(|watcher| {
            let batch: WatchBatch = events
                .iter()
                .filter(|e| e.key().starts_with(&watcher.prefix))
                .cloned()
                .collect();
            batch.is_empty() || watcher.sender.send(Ok(batch)).is_ok()
        });
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let mut state = self.begin()?;
        state.requests.reads += 1;
        Ok(state.keys.get(key).cloned())
    }

    async fn list(&self, prefix: &str, at: Option<Revision>) -> Result<Listing, StoreError> {
        let mut state = self.begin()?;
        state.requests.reads += 1;
        if let Some(at) = at {
            // Only the latest revision is kept in full; an older snapshot
            // is available from the log only for keys untouched since.
            if at <= state.compacted {
                return Err(StoreError::Compacted {
                    requested: at,
                    compacted: state.compacted,
                });
            }
            if at != state.revision {
                return Err(StoreError::Rejected {
                    operation: "list",
                    message: "the memory store lists only at the current revision".into(),
                });
            }
        }
        let items = state
            .keys
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect();
        Ok(Listing {
            items,
            revision: state.revision,
        })
    }

    async fn newest(&self, prefix: &str, limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        let mut state = self.begin()?;
        state.requests.reads += 1;
        Ok(state
            .keys
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .take(limit)
            .collect())
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let mut state = self.begin()?;
        state.requests.txns += 1;
        if !txn.when.iter().all(|compare| state.holds(compare)) {
            return Ok(TxnOutcome {
                succeeded: false,
                revision: state.revision,
            });
        }
        for mutation in &txn.then {
            let key = match mutation {
                Mutation::Put { key, .. } => key,
                Mutation::Delete { key } | Mutation::DeletePrefix { prefix: key } => key,
                Mutation::DeleteRange { from, .. } => from,
            };
            if state.read_only.iter().any(|prefix| key.starts_with(prefix)) {
                return Err(StoreError::PermissionDenied {
                    message: "etcdserver: permission denied".into(),
                });
            }
            if let Mutation::Put {
                lease: Some(lease), ..
            } = mutation
                && !state.leases.contains_key(lease)
            {
                return Err(StoreError::LeaseNotFound { lease: *lease });
            }
        }
        if txn.then.is_empty() {
            return Ok(TxnOutcome {
                succeeded: true,
                revision: state.revision,
            });
        }
        state.revision += 1;
        let mut events = Vec::new();
        for mutation in txn.then {
            match mutation {
                Mutation::Put { key, value, lease } => {
                    events.push(state.put(key, value, lease.unwrap_or(0)));
                }
                Mutation::Delete { key } => events.extend(state.remove(&key)),
                Mutation::DeletePrefix { prefix } => {
                    let doomed: Vec<String> = state
                        .keys
                        .keys()
                        .filter(|k| k.starts_with(&prefix))
                        .cloned()
                        .collect();
                    events.extend(doomed.iter().filter_map(|key| state.remove(key)));
                }
                Mutation::DeleteRange { from, to } if from < to => {
                    let doomed: Vec<String> =
                        state.keys.range(from..to).map(|(k, _)| k.clone()).collect();
                    events.extend(doomed.iter().filter_map(|key| state.remove(key)));
                }
                // An empty range, as etcd treats it.
                Mutation::DeleteRange { .. } => {}
            }
        }
        state.publish(events);
        Ok(TxnOutcome {
            succeeded: true,
            revision: state.revision,
        })
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        let mut state = self.begin()?;
        let (sender, receiver) = mpsc::unbounded_channel();
        if from <= state.compacted {
            let _ = sender.send(Err(StoreError::Compacted {
                requested: from,
                compacted: state.compacted,
            }));
            return Ok(UnboundedReceiverStream::new(receiver).boxed());
        }
        // Replay what happened since `from`, one batch per revision as etcd
        // does, then stay subscribed; both under the lock, so nothing is
        // missed or seen twice.
        let mut replay: Vec<WatchBatch> = Vec::new();
        for event in state.log.iter().filter(|e| e.mod_revision() >= from) {
            if !event.key().starts_with(prefix) {
                continue;
            }
            match replay.last_mut() {
                Some(batch) if batch[0].mod_revision() == event.mod_revision() => {
                    batch.push(event.clone());
                }
                _ => replay.push(vec![event.clone()]),
            }
        }
        for batch in replay {
            let _ = sender.send(Ok(batch));
        }
        state.watchers.push(Watcher {
            prefix: prefix.to_owned(),
            sender,
        });
        Ok(UnboundedReceiverStream::new(receiver).boxed())
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseGrant, StoreError> {
        let mut state = self.begin()?;
        state.next_lease += 1;
        let id = state.next_lease;
        state.leases.insert(
            id,
            Lease {
                ttl,
                deadline: Instant::now() + ttl,
            },
        );
        Ok(LeaseGrant { id, ttl })
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let mut state = self.begin()?;
        let held = state
            .leases
            .get_mut(&lease)
            .ok_or(StoreError::LeaseNotFound { lease })?;
        held.deadline = Instant::now() + held.ttl;
        Ok(held.ttl)
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.begin()?.drop_lease(lease);
        Ok(())
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.begin()?.revision)
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut state = self.begin()?;
        if revision <= state.compacted {
            return Err(StoreError::Compacted {
                requested: revision,
                compacted: state.compacted,
            });
        }
        state.compacted = revision;
        state.log.retain(|event| event.mod_revision() >= revision);
        Ok(())
    }

    async fn keys_from(
        &self,
        prefix: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut state = self.begin()?;
        state.requests.reads += 1;
        Ok(state
            .keys
            .range(from.max(prefix).to_owned()..)
            .map(|(key, _)| key)
            .take_while(|key| key.starts_with(prefix))
            .take(limit)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next(stream: &mut WatchStream) -> Result<WatchBatch, StoreError> {
        tokio::time::timeout(Duration::from_secs(1), stream.next())
            .await
            .expect("watch produced nothing: an event was not published")
            .expect("watch ended early")
    }

    #[tokio::test]
    async fn a_txn_guarded_by_an_empty_prefix_applies_only_while_no_key_has_it() {
        let store = MemoryStore::new();
        let guarded = || {
            Txn::new()
                .when(Compare::PrefixEmpty {
                    prefix: "/h/g1/".into(),
                })
                .put("/s/g1", b"x".to_vec())
        };
        store.create("/h/g10/1", b"e".to_vec(), None).await.unwrap();
        store.create("/h/g0/1", b"e".to_vec(), None).await.unwrap();
        assert!(store.txn(guarded()).await.unwrap().succeeded);
        store.create("/h/g1/7", b"e".to_vec(), None).await.unwrap();
        assert!(!store.txn(guarded()).await.unwrap().succeeded);
    }

    #[tokio::test]
    async fn revisions_versions_and_guarded_writes_follow_etcd() {
        let store = MemoryStore::new();
        let created = store.create("/k", b"1".to_vec(), None).await.unwrap();
        assert!(matches!(
            store.create("/k", b"2".to_vec(), None).await,
            Err(StoreError::Conflict { .. })
        ));
        let updated = store.update("/k", b"2".to_vec(), created).await.unwrap();
        assert!(updated > created);
        assert!(matches!(
            store.update("/k", b"3".to_vec(), created).await,
            Err(StoreError::Conflict { .. })
        ));
        let kv = store.get("/k").await.unwrap().unwrap();
        assert_eq!(
            (kv.create_revision, kv.mod_revision, kv.version),
            (created, updated, 2)
        );
        store.delete("/k", updated).await.unwrap();
        assert_eq!(store.get("/k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn watch_replays_from_a_revision_and_reports_compaction() {
        let store = MemoryStore::new();
        let first = store.create("/p/a", b"1".to_vec(), None).await.unwrap();
        store.create("/q/x", b"1".to_vec(), None).await.unwrap();
        let mut watch = store.watch("/p/", first).await.unwrap();
        let batch = next(&mut watch).await.unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].key(), "/p/a");
        let kv = store.get("/p/a").await.unwrap().unwrap();
        store.delete("/p/a", kv.mod_revision).await.unwrap();
        assert!(matches!(
            next(&mut watch).await.unwrap()[0],
            WatchEvent::Delete { .. }
        ));

        let now = store.revision().await.unwrap();
        store.compact(now).await.unwrap();
        let mut stale = store.watch("/p/", first).await.unwrap();
        assert!(matches!(
            next(&mut stale).await,
            Err(StoreError::Compacted { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn keys_of_an_expired_lease_disappear() {
        let store = MemoryStore::new();
        let lease = store.grant_lease(Duration::from_secs(10)).await.unwrap();
        store
            .create("/lease/g", b"me".to_vec(), Some(lease.id))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(6)).await;
        store.keep_alive(lease.id).await.unwrap();
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(
            store.get("/lease/g").await.unwrap().is_some(),
            "keepalive must extend"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(store.get("/lease/g").await.unwrap(), None);
        assert!(matches!(
            store.keep_alive(lease.id).await,
            Err(StoreError::LeaseNotFound { .. })
        ));
    }
}
