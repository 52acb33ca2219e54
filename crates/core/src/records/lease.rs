//! The records of leases: what a game's lease key holds ([`LeaseRecord`]),
//! what a live controller announces under `controllers/<holder>`
//! ([`Heartbeat`]), and the [`Fence`] every write made under a lease
//! compares. Taking, keeping and releasing leases is the controller's
//! (`rtm_controller::lease`); readers such as `rtctl describe` need only
//! these shapes.

use serde::{Deserialize, Serialize};

use crate::store::{Compare, Revision};

/// What a lease key holds: who holds it and for which operation, for people
/// reading it (`rtctl describe`) and for recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRecord {
    /// The controller holding the lease (its session's holder name).
    pub holder: String,
    /// Random, one per taking: tells two takings by one holder apart.
    pub token: String,
    /// The operation the lease was taken for.
    pub op_id: String,
}

/// What a live controller announces under `controllers/<holder>`, attached
/// to its session's etcd lease: a game lease key is live only while the
/// heartbeat of its holder carries the same etcd lease, and only while the
/// holder keeps rewriting it.
///
/// The etcd lease alone is no proof of life: etcd 3.4 checks no permission
/// on a keepalive, so any client that knows a dead controller's lease id
/// can keep it (and every game lease on it) alive. Rewriting the heartbeat
/// needs write access to `controllers/`, which only controllers have; a
/// heartbeat whose key has not changed for longer than its holder's TTL is
/// a dead holder's (`Session::acquire` revokes its lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// The controller's holder name (also the key's last segment).
    pub holder: String,
    /// The node it runs games for; `None` before it knows (the first
    /// heartbeat of a session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The controller's version (`CARGO_PKG_VERSION`), for people.
    pub version: String,
    /// When the session started.
    pub started_at: crate::model::Timestamp,
    /// When the holder last rewrote the heartbeat (every TTL/3). Absent in
    /// heartbeats of controllers older than the refresh: those are judged
    /// by their etcd lease alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewed_at: Option<crate::model::Timestamp>,
    /// The holder's session TTL in milliseconds: how long its heartbeat may
    /// stand still before others count it dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

impl Heartbeat {
    /// The first heartbeat of `holder`, started now, this build's version;
    /// the session fills in the refresh and the TTL when it writes it.
    pub fn new(holder: &str, node: Option<&str>) -> Self {
        Heartbeat {
            holder: holder.to_owned(),
            node: node.map(str::to_owned),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: crate::model::Timestamp::now(),
            renewed_at: None,
            ttl_ms: None,
        }
    }
}

/// Proof of holding a game's lease: the lease key and the revision that
/// created it. A write compares it so it applies only while the lease is
/// still ours.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The game's lease key.
    pub key: String,
    /// The create revision of that key when this holder took it: a later
    /// taking, even by the same holder, has another.
    pub revision: Revision,
}

impl Fence {
    /// The comparison every guarded write adds to its transaction.
    pub fn compare(&self) -> Compare {
        Compare::CreateRevision {
            key: self.key.clone(),
            revision: self.revision,
        }
    }
}
