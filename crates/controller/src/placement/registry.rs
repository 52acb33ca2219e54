//! This node's record (`nodes/<node>`): written at each session start, before any game is
//! reconciled, and written again when it goes missing, is marked lost, or names a holder
//! that is gone.
//!
//! A node name belongs to one Docker engine: the record carries the engine's id, and a
//! controller whose engine differs from that of a live controller already serving the
//! name stands by (logging why) instead of running the node's games on a second host.
//! Controllers on the same engine share the node (a standby that takes over at once; the
//! game leases keep each game's operations exclusive): the record stays the first one's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use rtm_core::model::Timestamp;
use rtm_core::records::nodes::{self, Capacity, NodeRecord, PortRange};
use rtm_core::store::{Compare, Revision, StoreError, Txn};

use crate::lease::Session;
use crate::placement::Liveness;

/// What this node offers, from its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Offer {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) capacity: Capacity,
    pub(crate) address: String,
    pub(crate) port_range: PortRange,
    pub(crate) self_fence_after: Option<Duration>,
    /// The Docker engine's id, when the runtime says.
    pub(crate) engine: Option<String>,
}

/// Why the node could not be registered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegisterError {
    /// A live controller serves the node from another Docker engine.
    #[error(
        "node {node} is served by the live controller {holder} on another Docker engine \
         ({engine}); a node name belongs to one engine: give this controller its own \
         --node-name. Standing by until that controller goes away"
    )]
    OtherEngine {
        node: String,
        holder: String,
        engine: String,
    },
    /// Judging the other controller's liveness failed.
    #[error("judging the node's controller failed: {0}")]
    Lease(String),
    /// The record changed between the read and the write: the next try reads again.
    #[error("the node record changed while registering")]
    Raced,
    #[error("registering the node failed: {0}")]
    Store(#[from] StoreError),
}

impl Offer {
    fn record(&self, session: &Session) -> NodeRecord {
        NodeRecord {
            name: self.name.clone(),
            labels: self.labels.clone(),
            capacity: self.capacity,
            address: self.address.clone(),
            port_range: self.port_range,
            holder: session.holder().to_owned(),
            engine: self.engine.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            registered_at: Timestamp::now(),
            ttl_ms: u64::try_from(session.ttl().as_millis()).unwrap_or(u64::MAX),
            self_fence_after_ms: self
                .self_fence_after
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            lost_at: None,
        }
    }
}

/// Writes the node's record for `session`; fails with [`RegisterError::Held`] while
/// another live controller serves the node.
pub(crate) async fn register(session: &Session, offer: &Offer) -> Result<Revision, RegisterError> {
    let keys = session.keys();
    let store = session.store();
    let key = keys.node(&offer.name);
    let mut txn = Txn::new();
    match store.get(&key).await? {
        None => txn = txn.when(Compare::Absent { key: key.clone() }),
        Some(kv) => {
            txn = txn.when(Compare::ModRevision {
                key: key.clone(),
                revision: kv.mod_revision,
            });
            if let Some(held) = nodes::decode::<NodeRecord>(&kv.value)
                .filter(|held| held.holder != session.holder())
            {
                if session
                    .controller_is_live(&held.holder)
                    .await
                    .map_err(|e| RegisterError::Lease(e.to_string()))?
                {
                    return match (&held.engine, &offer.engine) {
                        (Some(theirs), Some(ours)) if theirs != ours => {
                            Err(RegisterError::OtherEngine {
                                node: offer.name.clone(),
                                holder: held.holder,
                                engine: theirs.clone(),
                            })
                        }
                        // The same engine: this controller joins the node as it is.
                        _ => Ok(kv.mod_revision),
                    };
                }
                // Its heartbeat may be gone (or its lease just revoked); it may also be
                // a forged one on no lease: either way, no live controller serves it.
                let heartbeat = keys.controller(&held.holder);
                match store.get(&heartbeat).await? {
                    Some(kv) => {
                        txn = txn.when(Compare::ModRevision {
                            key: heartbeat,
                            revision: kv.mod_revision,
                        })
                    }
                    None => txn = txn.when(Compare::Absent { key: heartbeat }),
                }
            }
        }
    }
    let txn = txn.put(key, nodes::encode(&offer.record(session)));
    let outcome = store.txn(txn).await?;
    if outcome.succeeded {
        info!(node = %offer.name, holder = %session.holder(), "node registered");
        Ok(outcome.revision)
    } else {
        Err(RegisterError::Raced)
    }
}

/// Registers the node, retrying every `retry` until it succeeds or `session` is lost;
/// `false` when the session was lost first.
pub(crate) async fn register_until_done(
    session: &Arc<Session>,
    offer: &Offer,
    retry: Duration,
) -> bool {
    let mut said_held = false;
    loop {
        match register(session, offer).await {
            Ok(_) => return true,
            Err(error @ RegisterError::OtherEngine { .. }) => {
                if !said_held {
                    warn!(%error, "not serving this node");
                    said_held = true;
                }
            }
            Err(error) => warn!(%error, "registering the node failed; retrying"),
        }
        tokio::select! {
            _ = session.lost().cancelled() => return false,
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

/// Writes the node's record again whenever it goes missing or names another holder
/// (deleted or edited by hand), until `stop`: without it the node would count NotReady
/// and its games would move.
pub(crate) async fn guard(
    session: Arc<Session>,
    offer: Offer,
    view: Arc<crate::placement::NodesView>,
    stop: tokio_util::sync::CancellationToken,
) {
    let period = session.ttl() / 3;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        if !view.is_following() || view.liveness(&offer.name) == Liveness::Unsure {
            continue;
        }
        let served = view.node(&offer.name).is_some_and(|seen| {
            seen.record.lost_at.is_none()
                && (seen.record.holder == session.holder()
                    || view.holder_is_live(&seen.record.holder))
        });
        if !served {
            warn!(node = %offer.name, "this node's record is missing, marked lost or names a controller that is gone; writing it again");
            if let Err(error) = register(&session, &offer).await {
                warn!(%error, "writing the node record again failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::session;
    use rtm_core::store::Store;
    use rtm_core::store::memory::MemoryStore;

    fn offer(engine: &str) -> Offer {
        Offer {
            name: "n1".into(),
            labels: Default::default(),
            capacity: Default::default(),
            address: "10.0.0.1".into(),
            port_range: rtm_core::records::nodes::DEFAULT_PORT_RANGE,
            self_fence_after: Some(Duration::from_secs(30)),
            engine: Some(engine.into()),
        }
    }

    async fn record(store: &MemoryStore) -> NodeRecord {
        let kv = store
            .get(&rtm_core::store::Keys::default().node("n1"))
            .await
            .unwrap()
            .unwrap();
        nodes::decode(&kv.value).unwrap()
    }

    #[tokio::test]
    async fn one_engine_per_node_name_and_a_gone_holder_is_replaced() {
        let store = Arc::new(MemoryStore::new());
        let first = session(store.clone(), "a").await;
        register(&first, &offer("engine-1")).await.unwrap();
        assert_eq!(record(&store).await.holder, "a");
        // A second controller on the same engine joins: the record stays the first's.
        let standby = session(store.clone(), "b").await;
        register(&standby, &offer("engine-1")).await.unwrap();
        assert_eq!(record(&store).await.holder, "a");
        // One on another engine with the same name stands by.
        let stray = session(store.clone(), "c").await;
        let error = register(&stray, &offer("engine-2")).await.unwrap_err();
        assert!(
            matches!(error, RegisterError::OtherEngine { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("--node-name"), "{error}");
        // Once the first is gone, the next registration takes the record.
        first.close().await.unwrap();
        register(&stray, &offer("engine-2")).await.unwrap();
        let now = record(&store).await;
        assert_eq!(
            (now.holder.as_str(), now.engine.as_deref()),
            ("c", Some("engine-2"))
        );
    }
}
