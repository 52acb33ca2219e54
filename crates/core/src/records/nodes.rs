//! The nodes of an installation and where each game runs — the records the scheduler
//! and the nodes' controllers share:
//!
//! - `nodes/<node>` ([`NodeRecord`]): what a node's controller announces at each session
//!   start: labels, capacity, address, port range, its holder name and the bounds of its
//!   self-fence. Kept after the controller is gone (a dead node stays listed, NotReady).
//!   The node is live while the heartbeat of that holder (`controllers/<holder>`) exists.
//! - `cordons/<node>` ([`Cordon`]): an operator's `rtctl cordon` or `drain`; absent, the
//!   node takes new games.
//! - `assignments/<game>` ([`Assignment`]): the one node a game runs on, written by
//!   compare-and-swap only (the scheduler, or a node's controller adopting a container it
//!   runs, or releasing a game it moved); with no node, why none fits.
//!
//! A value that does not decode (edited by hand) reads as absent for a cordon (the node
//! takes games), as no registration for a node record (the node is NotReady until its
//! controller writes it again) and as no assignment (adoption by the container decides).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::{Cpus, Memory, Timestamp, validate_label};

/// The longest value of any of these records that is decoded (a forged huge value is
/// ignored, not parsed).
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Labels a node may carry.
pub const MAX_NODE_LABELS: usize = 64;

/// The longest explanation an assignment keeps of why no node fits.
pub const MAX_UNSCHEDULABLE_MESSAGE: usize = 1024;

/// The port range of a node when `--port-range` is not given.
pub const DEFAULT_PORT_RANGE: PortRange = PortRange {
    first: 17000,
    last: 17999,
};

/// What a node offers: each bound optional (absent: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capacity {
    /// Most games the node runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub games: Option<u32>,
    /// CPUs the games' `resources.cpus` may add up to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Cpus>,
    /// Memory the games' `resources.memory` may add up to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
}

impl FromStr for Capacity {
    type Err = String;

    /// `games=200,cpus=30,memory=60Gi`, each part optional.
    fn from_str(text: &str) -> Result<Capacity, String> {
        let mut capacity = Capacity::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: write name=value, e.g. games=200"))?;
            match name.trim() {
                "games" => {
                    capacity.games = Some(value.trim().parse().map_err(|_| {
                        format!("games={value}: a whole number of games, e.g. games=200")
                    })?)
                }
                "cpus" => {
                    capacity.cpus = Some(
                        value
                            .trim()
                            .parse()
                            .map_err(|e| format!("cpus={value}: {e}"))?,
                    )
                }
                "memory" => {
                    capacity.memory = Some(
                        value
                            .trim()
                            .parse()
                            .map_err(|e| format!("memory={value}: {e}"))?,
                    )
                }
                other => {
                    return Err(format!(
                        "unknown capacity {other:?}: the capacities are games, cpus and memory"
                    ));
                }
            }
        }
        Ok(capacity)
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(games) = self.games {
            parts.push(format!("games={games}"));
        }
        if let Some(cpus) = self.cpus {
            parts.push(format!("cpus={cpus}"));
        }
        if let Some(memory) = self.memory {
            parts.push(format!("memory={memory}"));
        }
        if parts.is_empty() {
            f.write_str("unlimited")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

/// The host ports `hostPort: auto` takes from, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortRange {
    /// The first port of the range.
    pub first: u16,
    /// The last port of the range.
    pub last: u16,
}

impl PortRange {
    /// How many ports the range holds.
    pub fn len(self) -> usize {
        usize::from(self.last.saturating_sub(self.first)) + 1
    }

    /// Never: a range holds at least its first port.
    pub fn is_empty(self) -> bool {
        false
    }

    /// Whether `port` is in the range.
    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// The ports of the range, in order.
    pub fn ports(self) -> std::ops::RangeInclusive<u16> {
        self.first..=self.last
    }
}

impl FromStr for PortRange {
    type Err = String;

    /// `17000-17999` (or one port).
    fn from_str(text: &str) -> Result<PortRange, String> {
        let port = |part: &str| {
            part.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{part:?} is not a port (1-65535)"))
        };
        let (first, last) = match text.split_once('-') {
            Some((first, last)) => (port(first)?, port(last)?),
            None => (port(text)?, port(text)?),
        };
        if first > last {
            return Err(format!("{text}: the first port must not be above the last"));
        }
        Ok(PortRange { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// Reads `region=eu,gpu=true` (`--node-labels`), each key and value checked as a
/// document's labels are.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: write key=value, e.g. region=eu"))?;
        let (key, value) = (key.trim(), value.trim());
        validate_label(key, value).map_err(|e| format!("label {key:?}: {e}"))?;
        if labels.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(format!("label {key:?} is given twice"));
        }
    }
    if labels.len() > MAX_NODE_LABELS {
        return Err(format!("at most {MAX_NODE_LABELS} labels"));
    }
    Ok(labels)
}

/// What a node's controller announces at `nodes/<node>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// The node's name (also the key's last segment).
    pub name: String,
    /// The node's labels (`--node-labels`), matched by `spec.nodeSelector`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What the node offers (`--capacity`).
    #[serde(default)]
    pub capacity: Capacity,
    /// Where players reach the node's games (`--advertise-address`).
    pub address: String,
    /// Where `hostPort: auto` ports come from (`--port-range`).
    pub port_range: PortRange,
    /// The holder name of the controller session that registered the node. The node is
    /// live while a controller announcing it (its heartbeat names the node) is.
    pub holder: String,
    /// The id of the node's Docker engine: every controller serving the node must run
    /// against this one (several may, for a standby that takes over at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// The controller's version.
    pub version: String,
    /// When this controller registered the node.
    pub registered_at: Timestamp,
    /// The controller's session TTL in milliseconds.
    pub ttl_ms: u64,
    /// After how long without an acknowledged keepalive the controller stops its games'
    /// containers (`--self-fence-after`), in milliseconds; absent: it never does, and the
    /// scheduler never moves its games away when it is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_fence_after_ms: Option<u64>,
    /// When the scheduler first counted the node lost (no live holder); cleared by the
    /// next registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_at: Option<Timestamp>,
}

/// An operator's hold on a node (`cordons/<node>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cordon {
    /// Whether its games are moved off (`rtctl drain`), not only kept from new ones.
    #[serde(default)]
    pub drain: bool,
    /// Until when a drain waits for sessions to end; after it, the games in session
    /// are moved too (disruption budgets still hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    /// When it was asked for.
    pub at: Timestamp,
    /// Who asked (a request id, `--ref`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// What state a node is in, as `rtctl get nodes` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeState {
    /// Live and taking games.
    Ready,
    /// Live, taking no new game (`rtctl cordon`).
    Cordoned,
    /// Live, its games being moved off (`rtctl drain`).
    Draining,
    /// No live controller serves it.
    NotReady,
}

impl NodeState {
    /// The state of a node that is (or is not) `live`, under `cordon`.
    pub fn of(live: bool, cordon: Option<&Cordon>) -> NodeState {
        match (live, cordon) {
            (false, _) => NodeState::NotReady,
            (true, None) => NodeState::Ready,
            (true, Some(c)) if c.drain => NodeState::Draining,
            (true, Some(_)) => NodeState::Cordoned,
        }
    }

    /// The name shown: `Ready`, `Cordoned`, `Draining`, `NotReady`.
    pub const fn as_str(self) -> &'static str {
        match self {
            NodeState::Ready => "Ready",
            NodeState::Cordoned => "Cordoned",
            NodeState::Draining => "Draining",
            NodeState::NotReady => "NotReady",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a game is assigned where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AssignmentReason {
    /// The scheduler chose the node.
    Scheduled,
    /// `spec.node` names it.
    Pinned,
    /// The node's controller runs a container of the game and claimed it (no assignment
    /// was recorded: an upgrade, a key lost).
    Adopted,
    /// The previous node was lost past its grace.
    NodeLost,
    /// The previous node is being drained.
    Drained,
    /// `spec.node` or `spec.nodeSelector` changed and the previous node no longer fits.
    Moved,
}

impl AssignmentReason {
    /// The name shown.
    pub const fn as_str(self) -> &'static str {
        match self {
            AssignmentReason::Scheduled => "Scheduled",
            AssignmentReason::Pinned => "Pinned",
            AssignmentReason::Adopted => "Adopted",
            AssignmentReason::NodeLost => "NodeLost",
            AssignmentReason::Drained => "Drained",
            AssignmentReason::Moved => "Moved",
        }
    }
}

/// Where a game runs (`assignments/<game>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    /// The node; absent while no node fits (see `unschedulable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Why it is there.
    pub reason: AssignmentReason,
    /// When it was written.
    pub at: Timestamp,
    /// The controller (holder name) that wrote it.
    pub by: String,
    /// The node that ran the game before and has released it (stopped and removed its
    /// container): the new node need not wait for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// With no node: which constraint kept each node out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unschedulable: Option<String>,
}

impl Assignment {
    /// An assignment to `node`, written now by `by`.
    pub fn to(node: &str, reason: AssignmentReason, by: &str) -> Assignment {
        Assignment {
            node: Some(node.to_owned()),
            reason,
            at: Timestamp::now(),
            by: by.to_owned(),
            from: None,
            unschedulable: None,
        }
    }

    /// No node fits, for `why`.
    pub fn unschedulable(why: &str, by: &str) -> Assignment {
        Assignment {
            node: None,
            reason: AssignmentReason::Scheduled,
            at: Timestamp::now(),
            by: by.to_owned(),
            from: None,
            unschedulable: Some(super::cut_message(why, MAX_UNSCHEDULABLE_MESSAGE)),
        }
    }

    /// Whether it names `node`.
    pub fn is_on(&self, node: &str) -> bool {
        self.node.as_deref() == Some(node)
    }
}

/// The JSON of a record.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_default()
}

/// A record read back; `None` for a value no version wrote, or one larger than
/// [`MAX_RECORD_BYTES`].
pub fn decode<T: serde::de::DeserializeOwned>(value: &[u8]) -> Option<T> {
    if value.len() > MAX_RECORD_BYTES {
        return None;
    }
    serde_json::from_slice(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities_read_and_print_back() {
        let capacity: Capacity = "games=200,cpus=30,memory=60Gi".parse().unwrap();
        assert_eq!(capacity.games, Some(200));
        assert_eq!(capacity.cpus, Some("30".parse().unwrap()));
        assert_eq!(capacity.memory, Some("60Gi".parse().unwrap()));
        assert_eq!(capacity.to_string(), "games=200,cpus=30,memory=60Gi");
        assert_eq!(Capacity::default().to_string(), "unlimited");
        let games_only: Capacity = "games=3".parse().unwrap();
        assert_eq!(games_only.cpus, None);
        for bad in ["games", "games=-1", "gpus=2", "cpus=lots", "memory=1Q"] {
            let error = bad.parse::<Capacity>().unwrap_err();
            assert!(!error.is_empty(), "{bad}");
        }
    }

    #[test]
    fn port_ranges_read_and_bound() {
        let range: PortRange = "17000-17999".parse().unwrap();
        assert_eq!(range.len(), 1000);
        assert!(range.contains(17000) && range.contains(17999) && !range.contains(18000));
        assert_eq!("7777".parse::<PortRange>().unwrap().len(), 1);
        for bad in ["0-10", "10-5", "a-b", "70000", ""] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_are_checked_as_document_labels() {
        let labels = parse_labels("region=eu, gpu=true").unwrap();
        assert_eq!(labels["region"], "eu");
        assert_eq!(labels["gpu"], "true");
        assert!(parse_labels("").unwrap().is_empty());
        for bad in ["region", "bad key!=x", "a=-x", "a=1,a=2"] {
            assert!(parse_labels(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn node_states_follow_liveness_then_the_cordon() {
        let cordon = Cordon {
            drain: false,
            deadline: None,
            at: Timestamp::now(),
            by: None,
        };
        let drain = Cordon {
            drain: true,
            ..cordon.clone()
        };
        assert_eq!(NodeState::of(true, None), NodeState::Ready);
        assert_eq!(NodeState::of(true, Some(&cordon)), NodeState::Cordoned);
        assert_eq!(NodeState::of(true, Some(&drain)), NodeState::Draining);
        assert_eq!(NodeState::of(false, Some(&drain)), NodeState::NotReady);
    }

    #[test]
    fn garbage_and_huge_values_decode_as_nothing() {
        assert_eq!(decode::<Assignment>(b"not json"), None);
        let huge = format!(
            "{{\"reason\":\"Scheduled\",\"at\":\"2026-01-01T00:00:00Z\",\"by\":\"{}\"}}",
            "x".repeat(MAX_RECORD_BYTES)
        );
        assert_eq!(decode::<Assignment>(huge.as_bytes()), None);
        let assignment = Assignment::to("n1", AssignmentReason::Scheduled, "c1");
        assert_eq!(decode::<Assignment>(&encode(&assignment)), Some(assignment));
        let long = Assignment::unschedulable(&"why ".repeat(1000), "c1");
        assert!(long.unschedulable.unwrap().len() <= MAX_UNSCHEDULABLE_MESSAGE);
    }
}
