//! This node's record (`nodes/<node>`): written at each session start, before any game is
//! reconciled, and written again when it goes missing or is overwritten by hand.
//!
//! One live controller per node name: the record names the holder of the session that
//! wrote it, and a registration succeeds only over a record whose holder has no live
//! heartbeat (one transaction compares both), so a second controller started with the
//! same `--node-name` — on the same engine or, by mistake, on another — stands by
//! instead of running the node's games a second time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use rtm_core::model::Timestamp;
use rtm_core::records::nodes::{self, Capacity, NodeRecord, PortRange};
use rtm_core::store::{Compare, Revision, StoreError, Txn};

use crate::lease::Session;

/// What this node offers, from its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Offer {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) capacity: Capacity,
    pub(crate) address: String,
    pub(crate) port_range: PortRange,
    pub(crate) self_fence_after: Option<Duration>,
}

/// Why the node could not be registered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegisterError {
    /// Another live controller serves the node.
    #[error(
        "node {node} is served by the live controller {holder}; standing by until it goes away"
    )]
    Held { node: String, holder: String },
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
                let heartbeat = keys.controller(&held.holder);
                if store.get(&heartbeat).await?.is_some_and(|hb| hb.lease != 0) {
                    return Err(RegisterError::Held {
                        node: offer.name.clone(),
                        holder: held.holder,
                    });
                }
                txn = txn.when(Compare::Absent { key: heartbeat });
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
            Err(RegisterError::Held { node, holder }) => {
                if !said_held {
                    warn!(%node, %holder, "another live controller serves this node; standing by (no game is reconciled here until it goes away)");
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
        if !view.is_following() {
            continue;
        }
        let ours = view.node(&offer.name).is_some_and(|seen| {
            seen.record.holder == session.holder() && seen.record.lost_at.is_none()
        });
        if !ours {
            warn!(node = %offer.name, "this node's record is missing, marked lost or names another holder; writing it again");
            if let Err(error) = register(&session, &offer).await {
                warn!(%error, "writing the node record again failed");
            }
        }
    }
}
