//! The nodes as the watches keep them: each node's record (`nodes/`), its cordon
//! (`cordons/`), and which controller sessions are live (`controllers/`: a heartbeat key
//! exists while its session does). A node is live while the holder its record names has
//! a heartbeat. Every change wakes the scheduler ([`NodesView::changed`]).
//!
//! The three prefixes are followed by three watches, each at its own pace: a node record
//! can arrive before the heartbeat its holder wrote first. Until the heartbeats have
//! caught up with a node's record, its liveness is [`Liveness::Unsure`], and nothing is
//! decided on it (a fresh node would look lost, and be marked so).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::Notify;

use rtm_core::records::lease::Heartbeat;
use rtm_core::records::nodes::{self, Cordon, NodeRecord};
use rtm_core::store::{KeyValue, Keys, Revision, Store, StoreError, WatchEvent};

use crate::cache::Cache;
use crate::mirror::Mirror;

/// A node's record as last seen, with the revision it was written at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SeenNode {
    pub(crate) record: NodeRecord,
    pub(crate) revision: Revision,
}

/// A heartbeat, and when this process last saw it change (its monotonic clock).
#[derive(Debug, Clone)]
pub(crate) struct SeenHeartbeat {
    heartbeat: Heartbeat,
    since: tokio::time::Instant,
}

impl SeenHeartbeat {
    /// Whether it changed recently enough: a live controller rewrites it every TTL/3; one
    /// standing still for two TTLs is a dead controller's whose lease something else keeps
    /// alive. One from before the rewrites (no `renewedAt`) is judged by its lease alone.
    fn is_fresh(&self) -> bool {
        if self.heartbeat.renewed_at.is_none() {
            return true;
        }
        let ttl = self.heartbeat.ttl_ms.map_or(
            std::time::Duration::from_secs(15),
            std::time::Duration::from_millis,
        );
        self.since.elapsed() <= 2 * ttl
    }
}

/// The nodes, their cordons and the live controllers.
#[derive(Debug, Default)]
pub(crate) struct NodesView {
    nodes: Cache<SeenNode>,
    cordons: Cache<Cordon>,
    /// Controllers with a heartbeat, by holder name, with when it last changed.
    holders: Cache<SeenHeartbeat>,
    /// The etcd revision the heartbeats are known up to (the listing's, then each event's).
    holders_revision: AtomicI64,
    changed: Notify,
}

/// Whether a node has a live controller, as the view can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// A controller of the node has a fresh heartbeat.
    Live,
    /// No record, or no live controller for it in heartbeats at least as new as it.
    Lost,
    /// The record is newer than the heartbeats seen: its holder's may be on its way.
    Unsure,
}

impl NodesView {
    /// An empty view, following nothing yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Wakes when anything in the view changed.
    pub(crate) fn changed(&self) -> &Notify {
        &self.changed
    }

    /// Whether all three prefixes follow etcd (a decision on stale liveness would move
    /// games off a live node).
    pub(crate) fn is_following(&self) -> bool {
        self.nodes.is_following() && self.cordons.is_following() && self.holders.is_following()
    }

    /// The record of `node`.
    pub(crate) fn node(&self, node: &str) -> Option<Arc<SeenNode>> {
        self.nodes.get(node)
    }

    /// Every node's record.
    pub(crate) fn nodes(&self) -> Vec<Arc<SeenNode>> {
        let mut nodes: Vec<Arc<SeenNode>> = self.nodes.read().values().cloned().collect();
        nodes.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        nodes
    }

    /// The cordon of `node`.
    pub(crate) fn cordon(&self, node: &str) -> Option<Arc<Cordon>> {
        self.cordons.get(node)
    }

    /// Whether a controller with this holder name is live.
    pub(crate) fn holder_is_live(&self, holder: &str) -> bool {
        self.holders.get(holder).is_some_and(|seen| seen.is_fresh())
    }

    /// Whether `node` has a live controller: the one its record names, or another that
    /// announces the node in its heartbeat (a controller on the same engine).
    pub(crate) fn liveness(&self, node: &str) -> Liveness {
        let Some(seen) = self.node(node) else {
            return Liveness::Lost;
        };
        let live = self.holder_is_live(&seen.record.holder)
            || self
                .holders
                .read()
                .values()
                .any(|hb| hb.heartbeat.node.as_deref() == Some(node) && hb.is_fresh());
        if live {
            Liveness::Live
        } else if seen.revision > self.holders_revision.load(Ordering::Acquire) {
            Liveness::Unsure
        } else {
            Liveness::Lost
        }
    }

    /// Whether `node` is surely live ([`Liveness::Live`]).
    pub(crate) fn is_live(&self, node: &str) -> bool {
        self.liveness(node) == Liveness::Live
    }

    /// Whether the heartbeats have caught up with every node record: no node is
    /// [`Liveness::Unsure`].
    pub(crate) fn is_settled(&self) -> bool {
        self.nodes
            .names()
            .iter()
            .all(|name| self.liveness(name) != Liveness::Unsure)
    }
}

/// Which prefix a [`ViewMirror`] follows into the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// `nodes/`: the records.
    Nodes,
    /// `cordons/`.
    Cordons,
    /// `controllers/`: the heartbeats.
    Holders,
}

impl Part {
    /// Every part: one mirror each.
    pub(crate) const ALL: [Part; 3] = [Part::Nodes, Part::Cordons, Part::Holders];
}

/// Follows one prefix of the view.
pub(crate) struct ViewMirror {
    pub(crate) view: Arc<NodesView>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) keys: Keys,
    pub(crate) part: Part,
}

fn node_name<'k>(prefix: &str, key: &'k str) -> Option<&'k str> {
    key.strip_prefix(prefix)
        .filter(|name| rtm_core::model::validate::is_dns1123_subdomain(name))
}

fn decode_node(prefix: &str, kv: &KeyValue) -> Option<(String, SeenNode)> {
    let name = node_name(prefix, &kv.key)?;
    let record: NodeRecord = nodes::decode(&kv.value)?;
    (record.name == name).then(|| {
        (
            name.to_owned(),
            SeenNode {
                record,
                revision: kv.mod_revision,
            },
        )
    })
}

fn decode_cordon(prefix: &str, kv: &KeyValue) -> Option<(String, Cordon)> {
    Some((
        node_name(prefix, &kv.key)?.to_owned(),
        nodes::decode(&kv.value)?,
    ))
}

fn decode_holder(prefix: &str, kv: &KeyValue) -> Option<(String, SeenHeartbeat)> {
    let holder = kv.key.strip_prefix(prefix)?;
    // A heartbeat is live only on a lease (one put by hand on none never expires).
    if kv.lease == 0 {
        return None;
    }
    let heartbeat: Heartbeat = serde_json::from_slice(&kv.value).ok()?;
    (heartbeat.holder == holder).then(|| {
        (
            holder.to_owned(),
            SeenHeartbeat {
                heartbeat,
                since: tokio::time::Instant::now(),
            },
        )
    })
}

/// Lists `prefix` into `cache` (values that do not decode are left out).
async fn relist_into<T>(
    store: &Arc<dyn Store>,
    prefix: &str,
    cache: &Cache<T>,
    decode: impl Fn(&str, &KeyValue) -> Option<(String, T)>,
) -> Result<Revision, StoreError> {
    let listing = store.list(prefix, None).await?;
    let records = listing
        .items
        .iter()
        .filter_map(|kv| decode(prefix, kv))
        .map(|(name, value)| (name, Arc::new(value)))
        .collect();
    *cache.write() = records;
    cache.set_following();
    Ok(listing.revision)
}

fn apply_into<T>(
    prefix: &str,
    cache: &Cache<T>,
    batch: Vec<WatchEvent>,
    decode: impl Fn(&str, &KeyValue) -> Option<(String, T)>,
) {
    let mut records = cache.write();
    for event in batch {
        match event {
            WatchEvent::Put(kv) => match decode(prefix, &kv) {
                Some((name, value)) => {
                    records.insert(name, Arc::new(value));
                }
                None => {
                    if let Some(name) = kv.key.strip_prefix(prefix) {
                        records.remove(name);
                    }
                }
            },
            WatchEvent::Delete { key, .. } => {
                if let Some(name) = key.strip_prefix(prefix) {
                    records.remove(name);
                }
            }
        }
    }
}

impl Mirror for ViewMirror {
    type Error = StoreError;

    fn what(&self) -> &'static str {
        match self.part {
            Part::Nodes => "nodes",
            Part::Cordons => "cordons",
            Part::Holders => "holders",
        }
    }

    fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn prefix(&self) -> String {
        match self.part {
            Part::Nodes => self.keys.nodes(),
            Part::Cordons => self.keys.cordons(),
            Part::Holders => self.keys.controllers(),
        }
    }

    async fn relist(&self) -> Result<Revision, StoreError> {
        let (store, prefix, view) = (&self.store, &self.prefix(), &self.view);
        let revision = match self.part {
            Part::Nodes => relist_into(store, prefix, &view.nodes, decode_node).await?,
            Part::Cordons => relist_into(store, prefix, &view.cordons, decode_cordon).await?,
            Part::Holders => {
                let revision = relist_into(store, prefix, &view.holders, decode_holder).await?;
                view.holders_revision.store(revision, Ordering::Release);
                revision
            }
        };
        view.changed.notify_one();
        Ok(revision)
    }

    async fn apply(&self, batch: Vec<WatchEvent>) {
        let (prefix, view) = (&self.prefix(), &self.view);
        match self.part {
            Part::Nodes => apply_into(prefix, &view.nodes, batch, decode_node),
            Part::Cordons => apply_into(prefix, &view.cordons, batch, decode_cordon),
            Part::Holders => {
                // Heartbeats are rewritten every TTL/3: only arrivals and departures
                // wake the scheduler.
                let before = view.holders.len();
                let departures = batch
                    .iter()
                    .any(|event| matches!(event, WatchEvent::Delete { .. }));
                let newest = batch.iter().map(WatchEvent::mod_revision).max();
                apply_into(prefix, &view.holders, batch, decode_holder);
                if let Some(newest) = newest {
                    view.holders_revision.fetch_max(newest, Ordering::AcqRel);
                }
                if !departures && view.holders.len() == before {
                    return;
                }
            }
        }
        view.changed.notify_one();
    }

    fn broken(&self) {
        match self.part {
            Part::Nodes => self.view.nodes.set_broken(),
            Part::Cordons => self.view.cordons.set_broken(),
            Part::Holders => self.view.holders.set_broken(),
        }
    }
}

#[cfg(test)]
impl NodesView {
    /// Puts `record` in the view, its holder live or not (unit tests).
    pub(crate) fn know(&self, record: NodeRecord, live: bool) {
        if live {
            self.holders.write().insert(
                record.holder.clone(),
                Arc::new(SeenHeartbeat {
                    heartbeat: Heartbeat::new(&record.holder, Some(&record.name)),
                    since: tokio::time::Instant::now(),
                }),
            );
        } else {
            self.holders.write().remove(&record.holder);
        }
        self.nodes.write().insert(
            record.name.clone(),
            Arc::new(SeenNode {
                record,
                revision: 1,
            }),
        );
        self.holders_revision.fetch_max(1, Ordering::AcqRel);
        self.nodes.set_following();
        self.cordons.set_following();
        self.holders.set_following();
    }

    /// Sets or lifts the cordon of `node` (unit tests).
    pub(crate) fn set_cordon(&self, node: &str, cordon: Option<Cordon>) {
        match cordon {
            Some(c) => {
                self.cordons.write().insert(node.to_owned(), Arc::new(c));
            }
            None => {
                self.cordons.write().remove(node);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::session;
    use crate::mirror::Mirror;
    use crate::placement::registry::{Offer, register};
    use rtm_core::store::Txn;
    use rtm_core::store::memory::MemoryStore;

    fn mirror(store: &Arc<MemoryStore>, view: &Arc<NodesView>, part: Part) -> ViewMirror {
        ViewMirror {
            view: view.clone(),
            store: store.clone(),
            keys: Keys::default(),
            part,
        }
    }

    fn offer() -> Offer {
        Offer {
            name: "n1".into(),
            labels: Default::default(),
            capacity: Default::default(),
            address: "10.0.0.1".into(),
            port_range: nodes::DEFAULT_PORT_RANGE,
            self_fence_after: None,
            engine: None,
        }
    }

    /// The watch of the records delivers a fresh node's record before the watch of the
    /// heartbeats delivers its holder's: the node is unsure, never lost, until the
    /// heartbeats catch up.
    #[tokio::test]
    async fn a_record_ahead_of_the_heartbeats_is_unsure_until_they_catch_up() {
        let store = Arc::new(MemoryStore::new());
        let view = Arc::new(NodesView::new());
        let holders = mirror(&store, &view, Part::Holders);
        let records = mirror(&store, &view, Part::Nodes);
        holders.relist().await.unwrap();
        mirror(&store, &view, Part::Cordons).relist().await.unwrap();

        let a = session(store.clone(), "a").await;
        register(&a, &offer()).await.unwrap();
        records.relist().await.unwrap();
        assert_eq!(view.liveness("n1"), Liveness::Unsure);
        assert!(!view.is_settled() && !view.is_live("n1"));

        let heartbeat = store
            .get(&Keys::default().controller("a"))
            .await
            .unwrap()
            .expect("the session announced its heartbeat");
        holders.apply(vec![WatchEvent::Put(heartbeat)]).await;
        assert_eq!(view.liveness("n1"), Liveness::Live);
        assert!(view.is_settled());

        // Its heartbeat gone, at a revision past the record's: lost.
        let key = Keys::default().controller("a");
        a.close().await.unwrap();
        let gone = store.revision().await.unwrap();
        holders
            .apply(vec![WatchEvent::Delete {
                key,
                mod_revision: gone,
            }])
            .await;
        assert_eq!(view.liveness("n1"), Liveness::Lost);
        assert!(view.is_settled());

        // A record rewritten by hand, naming nobody live: unsure again until any
        // heartbeat newer than it is seen (the scheduler's own, every TTL/3).
        let mut record = view.node("n1").unwrap().record.clone();
        record.holder = "nobody".into();
        store
            .txn(Txn::new().put(Keys::default().node("n1"), nodes::encode(&record)))
            .await
            .unwrap();
        records.relist().await.unwrap();
        assert_eq!(view.liveness("n1"), Liveness::Unsure);
        let b = session(store.clone(), "b").await;
        let heartbeat = store
            .get(&Keys::default().controller("b"))
            .await
            .unwrap()
            .unwrap();
        holders.apply(vec![WatchEvent::Put(heartbeat)]).await;
        assert_eq!(view.liveness("n1"), Liveness::Lost);
        b.close().await.unwrap();
    }
}
