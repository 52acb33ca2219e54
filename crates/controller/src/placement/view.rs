//! The nodes as the watches keep them: each node's record (`nodes/`), its cordon
//! (`cordons/`), and which controller sessions are live (`controllers/`: a heartbeat key
//! exists while its session does). A node is live while the holder its record names has
//! a heartbeat. Every change wakes the scheduler ([`NodesView::changed`]).

use std::sync::Arc;

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
    changed: Notify,
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
    pub(crate) fn is_live(&self, node: &str) -> bool {
        let Some(seen) = self.node(node) else {
            return false;
        };
        self.holder_is_live(&seen.record.holder)
            || self
                .holders
                .read()
                .values()
                .any(|hb| hb.heartbeat.node.as_deref() == Some(node) && hb.is_fresh())
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
            Part::Holders => relist_into(store, prefix, &view.holders, decode_holder).await?,
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
                apply_into(prefix, &view.holders, batch, decode_holder);
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
