//! Which node a game fits on, and which one the strategy picks: pure, so the scheduler,
//! its tests and the benchmark share one answer.
//!
//! A [`Placer`] holds each node's capacity and what the games assigned to it already take
//! (games, CPUs, memory, fixed host ports, `auto` ports); [`Placer::place`] finds the nodes
//! a game fits on — Ready (not cordoned, draining or lost), the one `spec.node` names if
//! any, every `spec.nodeSelector` label, room in every bounded capacity, its fixed host
//! ports free, enough ports left in the range for its `auto` ones — and takes the best by
//! the [`Strategy`]; when none fits, [`Unschedulable`] says how many nodes each constraint
//! kept out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use crate::model::{GameRuntime, Protocol};
use crate::ports::{HostPort, PortProtocol, host_ports};
use crate::records::nodes::{Capacity, PortRange};

/// How the scheduler chooses among the nodes a game fits on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// The fullest node that fits: nodes fill one after another, the others stay free
    /// (for large games, or to be scaled down).
    #[default]
    Packed,
    /// The emptiest node that fits: games spread, a lost node takes the fewest with it.
    Distributed,
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(text: &str) -> Result<Strategy, String> {
        match text {
            "Packed" | "packed" => Ok(Strategy::Packed),
            "Distributed" | "distributed" => Ok(Strategy::Distributed),
            other => Err(format!(
                "unknown placement strategy {other:?}: Packed or Distributed"
            )),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Packed => "Packed",
            Strategy::Distributed => "Distributed",
        })
    }
}

/// What a game asks of a node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Needs {
    /// `spec.node`: only this node.
    pub pinned: Option<String>,
    /// `spec.nodeSelector`.
    pub selector: BTreeMap<String, String>,
    /// `resources.cpus`, in nano-CPUs (0 when unset).
    pub nano_cpus: i64,
    /// `resources.memory`, in bytes (0 when unset).
    pub memory: u64,
    /// The host ports named by number.
    pub fixed_ports: Vec<HostPort>,
    /// How many `hostPort: auto` ports, per protocol (TCP, UDP).
    pub auto_ports: [u32; 2],
}

impl Needs {
    /// What `doc` asks.
    pub fn of(doc: &GameRuntime) -> Needs {
        let spec = &doc.spec;
        let mut auto_ports = [0u32; 2];
        for port in spec.ports.iter().filter(|p| p.is_auto()) {
            auto_ports[protocol_index(port.protocol)] += 1;
        }
        Needs {
            pinned: spec.node.clone().filter(|n| !n.is_empty()),
            selector: spec.node_selector.clone(),
            nano_cpus: spec.resources.cpus.map_or(0, |c| c.nano_cpus()),
            memory: spec.resources.memory.map_or(0, |m| m.bytes()),
            fixed_ports: host_ports(spec),
            auto_ports,
        }
    }
}

fn protocol_index(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Tcp => 0,
        Protocol::Udp => 1,
    }
}

/// A node as the placer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeOffer {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// What it offers.
    pub capacity: Capacity,
    /// Where its `auto` ports come from.
    pub port_range: PortRange,
    /// Whether it takes new games (Ready: live, not cordoned or draining).
    pub ready: bool,
}

/// One constraint that kept a node out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Misfit {
    /// `spec.node` names another node.
    NotPinned,
    /// Not Ready: cordoned, draining or lost.
    NotReady,
    /// The node being moved away from.
    Leaving,
    /// A `spec.nodeSelector` label is missing or different.
    Selector,
    /// It runs as many games as `--capacity games` allows.
    Games,
    /// Its CPUs are taken.
    Cpus,
    /// Its memory is taken.
    Memory,
    /// A fixed host port is taken on it.
    HostPort,
    /// Its port range has too few free ports for the `auto` ones.
    PortRange,
}

impl Misfit {
    fn describe(self, needs: &Needs) -> String {
        match self {
            Misfit::NotPinned => format!(
                "not the node spec.node names ({})",
                needs.pinned.as_deref().unwrap_or("-")
            ),
            Misfit::NotReady => "not Ready (cordoned, draining or lost)".to_owned(),
            Misfit::Leaving => "the node it leaves".to_owned(),
            Misfit::Selector => format!(
                "node selector ({})",
                needs
                    .selector
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Misfit::Games => "insufficient games (--capacity games)".to_owned(),
            Misfit::Cpus => "insufficient cpus".to_owned(),
            Misfit::Memory => "insufficient memory".to_owned(),
            Misfit::HostPort => "host port taken".to_owned(),
            Misfit::PortRange => "port range exhausted".to_owned(),
        }
    }
}

/// Why no node fits: how many nodes each first failing constraint kept out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    /// Nodes considered.
    pub nodes: usize,
    /// Nodes kept out, by the first constraint each failed.
    pub misfits: BTreeMap<Misfit, usize>,
    message: String,
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What a node has given away.
#[derive(Debug, Clone, Default)]
struct Used {
    games: u32,
    nano_cpus: i64,
    memory: u64,
    fixed: HashSet<HostPort>,
    /// Fixed ports inside the node's range, per protocol (they shrink what `auto` has).
    fixed_in_range: [u32; 2],
    auto: [u32; 2],
}

#[derive(Debug, Clone)]
struct Slot {
    offer: NodeOffer,
    used: Used,
}

impl Slot {
    /// The first constraint `needs` fails here, if any (`Leaving` and `NotPinned` are the
    /// caller's).
    fn misfit(&self, needs: &Needs) -> Option<Misfit> {
        let (offer, used) = (&self.offer, &self.used);
        if !offer.ready {
            return Some(Misfit::NotReady);
        }
        if needs
            .selector
            .iter()
            .any(|(k, v)| offer.labels.get(k) != Some(v))
        {
            return Some(Misfit::Selector);
        }
        let capacity = &offer.capacity;
        if capacity.games.is_some_and(|max| used.games >= max) {
            return Some(Misfit::Games);
        }
        if capacity
            .cpus
            .is_some_and(|max| used.nano_cpus + needs.nano_cpus > max.nano_cpus())
        {
            return Some(Misfit::Cpus);
        }
        if capacity
            .memory
            .is_some_and(|max| used.memory + needs.memory > max.bytes())
        {
            return Some(Misfit::Memory);
        }
        if needs.fixed_ports.iter().any(|p| used.fixed.contains(p)) {
            return Some(Misfit::HostPort);
        }
        let range = u32::try_from(offer.port_range.len()).unwrap_or(u32::MAX);
        for protocol in 0..2 {
            let mine_in_range = needs
                .fixed_ports
                .iter()
                .filter(|p| index_of(p.protocol) == protocol && offer.port_range.contains(p.port))
                .count() as u32;
            let taken = used.fixed_in_range[protocol] + used.auto[protocol] + mine_in_range;
            if needs.auto_ports[protocol] > 0 && taken + needs.auto_ports[protocol] > range {
                return Some(Misfit::PortRange);
            }
        }
        None
    }

    /// How full the node would be with `needs` on it, 0 to 1: its most used bounded
    /// capacity (`None` when it has no bound at all).
    fn fill(&self, needs: &Needs) -> Option<f64> {
        let (capacity, used) = (&self.offer.capacity, &self.used);
        let mut fill: Option<f64> = None;
        let mut bound = |taken: f64, max: f64| {
            let share = if max > 0.0 { taken / max } else { 1.0 };
            fill = Some(fill.map_or(share, |f| f.max(share)));
        };
        if let Some(max) = capacity.games {
            bound(f64::from(used.games + 1), f64::from(max));
        }
        if let Some(max) = capacity.cpus {
            bound(
                (used.nano_cpus + needs.nano_cpus) as f64,
                max.nano_cpus() as f64,
            );
        }
        if let Some(max) = capacity.memory {
            bound((used.memory + needs.memory) as f64, max.bytes() as f64);
        }
        fill
    }

    fn take(&mut self, needs: &Needs, sign: i64) {
        let used = &mut self.used;
        let range = self.offer.port_range;
        let add = |value: u32, by: u32| {
            if sign > 0 {
                value + by
            } else {
                value.saturating_sub(by)
            }
        };
        used.games = add(used.games, 1);
        used.nano_cpus = (used.nano_cpus + sign * needs.nano_cpus).max(0);
        used.memory = if sign > 0 {
            used.memory + needs.memory
        } else {
            used.memory.saturating_sub(needs.memory)
        };
        for port in &needs.fixed_ports {
            let in_range = u32::from(range.contains(port.port));
            let protocol = index_of(port.protocol);
            if sign > 0 {
                if used.fixed.insert(*port) {
                    used.fixed_in_range[protocol] += in_range;
                }
            } else if used.fixed.remove(port) {
                used.fixed_in_range[protocol] -= in_range;
            }
        }
        for protocol in 0..2 {
            used.auto[protocol] = add(used.auto[protocol], needs.auto_ports[protocol]);
        }
    }
}

fn index_of(protocol: PortProtocol) -> usize {
    match protocol {
        PortProtocol::Tcp => 0,
        PortProtocol::Udp => 1,
    }
}

/// The nodes, what their games take, and the strategy that chooses among them.
#[derive(Debug, Clone)]
pub struct Placer {
    slots: Vec<Slot>,
    index: HashMap<String, usize>,
    strategy: Strategy,
}

impl Placer {
    /// A placer over `nodes` (in any order; ties go to the first name), none of them
    /// running anything yet.
    pub fn new(mut nodes: Vec<NodeOffer>, strategy: Strategy) -> Placer {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes.dedup_by(|a, b| a.name == b.name);
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        Placer {
            slots: nodes
                .into_iter()
                .map(|offer| Slot {
                    offer,
                    used: Used::default(),
                })
                .collect(),
            index,
            strategy,
        }
    }

    /// Records that a game with `needs` is on `node` (an existing assignment); a node
    /// the placer does not know is ignored.
    pub fn occupy(&mut self, node: &str, needs: &Needs) {
        if let Some(&i) = self.index.get(node) {
            self.slots[i].take(needs, 1);
        }
    }

    /// Records that a game with `needs` left `node`.
    pub fn vacate(&mut self, node: &str, needs: &Needs) {
        if let Some(&i) = self.index.get(node) {
            self.slots[i].take(needs, -1);
        }
    }

    /// The games on `node` as placed so far.
    pub fn games_on(&self, node: &str) -> u32 {
        self.index
            .get(node)
            .map_or(0, |&i| self.slots[i].used.games)
    }

    /// Whether a game with `needs` may stay on `node` where it is (pinning and selector
    /// still match; capacity is not asked again: it is already counted there).
    pub fn still_fits(&self, node: &str, needs: &Needs) -> bool {
        if needs.pinned.as_deref().is_some_and(|p| p != node) {
            return false;
        }
        self.index.get(node).is_some_and(|&i| {
            let labels = &self.slots[i].offer.labels;
            needs.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
    }

    /// Chooses a node for a game with `needs` (never `leaving`), and counts the game on
    /// it; or says why none fits.
    pub fn place(&mut self, needs: &Needs, leaving: Option<&str>) -> Result<String, Unschedulable> {
        let mut misfits: BTreeMap<Misfit, usize> = BTreeMap::new();
        let mut best: Option<(usize, Option<f64>)> = None;
        let candidates: Vec<usize> = match needs.pinned.as_deref() {
            Some(node) => {
                let others = self.slots.len() - usize::from(self.index.contains_key(node));
                if others > 0 {
                    misfits.insert(Misfit::NotPinned, others);
                }
                self.index.get(node).copied().into_iter().collect()
            }
            None => (0..self.slots.len()).collect(),
        };
        for i in candidates {
            let slot = &self.slots[i];
            if leaving == Some(slot.offer.name.as_str()) {
                *misfits.entry(Misfit::Leaving).or_default() += 1;
                continue;
            }
            if let Some(misfit) = slot.misfit(needs) {
                *misfits.entry(misfit).or_default() += 1;
                continue;
            }
            let fill = slot.fill(needs);
            if best.is_none_or(|(b, best_fill)| self.better(i, fill, b, best_fill)) {
                best = Some((i, fill));
            }
        }
        match best {
            Some((i, _)) => {
                self.slots[i].take(needs, 1);
                Ok(self.slots[i].offer.name.clone())
            }
            None => {
                let nodes = self.slots.len();
                let mut message = format!("0/{nodes} nodes fit");
                if needs.pinned.as_deref().is_some_and(|p| !self.index.contains_key(p)) {
                    message.push_str(&format!(
                        ": spec.node names {}, which has not registered",
                        needs.pinned.as_deref().unwrap_or_default()
                    ));
                }
                let parts: Vec<String> = misfits
                    .iter()
                    .map(|(misfit, count)| format!("{count} {}", misfit.describe(needs)))
                    .collect();
                if !parts.is_empty() {
                    message.push_str(": ");
                    message.push_str(&parts.join(", "));
                }
                Err(Unschedulable {
                    nodes,
                    misfits,
                    message,
                })
            }
        }
    }

    /// Whether node `a` (filled to `fa` with the game) beats node `b` (`fb`).
    fn better(&self, a: usize, fa: Option<f64>, b: usize, fb: Option<f64>) -> bool {
        let (ga, gb) = (self.slots[a].used.games, self.slots[b].used.games);
        let (fa, fb) = (fa.unwrap_or(0.0), fb.unwrap_or(0.0));
        let order = match self.strategy {
            Strategy::Packed => fb
                .partial_cmp(&fa)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(gb.cmp(&ga)),
            Strategy::Distributed => fa
                .partial_cmp(&fb)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(ga.cmp(&gb)),
        };
        // Slots are sorted by name: on a tie the earlier one stays.
        order == std::cmp::Ordering::Less
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::game;

    fn node(name: &str, capacity: &str) -> NodeOffer {
        NodeOffer {
            name: name.to_owned(),
            labels: BTreeMap::new(),
            capacity: capacity.parse().unwrap(),
            port_range: "17000-17009".parse().unwrap(),
            ready: true,
        }
    }

    fn small() -> Needs {
        Needs {
            nano_cpus: 1_000_000_000,
            memory: 1 << 30,
            ..Needs::default()
        }
    }

    #[test]
    fn packed_fills_one_node_before_the_next_and_distributed_spreads() {
        let nodes = vec![node("n1", "games=3"), node("n2", "games=3")];
        let mut packed = Placer::new(nodes.clone(), Strategy::Packed);
        let placed: Vec<String> = (0..4)
            .map(|_| packed.place(&small(), None).unwrap())
            .collect();
        assert_eq!(placed, ["n1", "n1", "n1", "n2"]);
        let mut spread = Placer::new(nodes, Strategy::Distributed);
        let placed: Vec<String> = (0..4)
            .map(|_| spread.place(&small(), None).unwrap())
            .collect();
        assert_eq!(placed, ["n1", "n2", "n1", "n2"]);
    }

    #[test]
    fn every_bounded_capacity_is_honoured_and_explained() {
        let mut placer = Placer::new(
            vec![node("n1", "cpus=2,memory=8Gi"), node("n2", "memory=1Gi")],
            Strategy::Packed,
        );
        // Packed: n2 is the fuller with the game on it (its one GiB all used).
        assert_eq!(placer.place(&small(), None).unwrap(), "n2");
        assert_eq!(placer.place(&small(), None).unwrap(), "n1");
        assert_eq!(placer.place(&small(), None).unwrap(), "n1");
        let error = placer.place(&small(), None).unwrap_err();
        assert_eq!(error.misfits[&Misfit::Cpus], 1);
        assert_eq!(error.misfits[&Misfit::Memory], 1);
        assert_eq!(
            error.to_string(),
            "0/2 nodes fit: 1 insufficient cpus, 1 insufficient memory"
        );
        placer.vacate("n1", &small());
        assert_eq!(placer.place(&small(), None).unwrap(), "n1", "freed room is used again");
    }

    #[test]
    fn selectors_pins_readiness_and_the_node_left_keep_nodes_out() {
        let mut eu = node("eu1", "");
        eu.labels.insert("region".into(), "eu".into());
        let mut cordoned = node("eu2", "");
        cordoned.labels = eu.labels.clone();
        cordoned.ready = false;
        let mut placer = Placer::new(vec![eu, cordoned, node("us1", "")], Strategy::Packed);
        let mut needs = Needs::default();
        needs.selector.insert("region".into(), "eu".into());
        assert_eq!(placer.place(&needs, None).unwrap(), "eu1");
        let error = placer.place(&needs, Some("eu1")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "0/3 nodes fit: 1 not Ready (cordoned, draining or lost), 1 the node it leaves, 1 node selector (region=eu)"
        );
        let pinned = Needs {
            pinned: Some("us1".into()),
            ..Needs::default()
        };
        assert_eq!(placer.place(&pinned, None).unwrap(), "us1");
        let nowhere = Needs {
            pinned: Some("gone".into()),
            ..Needs::default()
        };
        assert!(
            placer
                .place(&nowhere, None)
                .unwrap_err()
                .to_string()
                .contains("spec.node names gone, which has not registered")
        );
        assert!(placer.still_fits("eu1", &needs));
        assert!(!placer.still_fits("us1", &needs));
    }

    #[test]
    fn host_ports_and_the_auto_range_are_counted_per_protocol() {
        let mut placer = Placer::new(vec![node("n1", ""), node("n2", "")], Strategy::Packed);
        let fixed = Needs::of(&game("a").port(7000, Some(17000)).build());
        assert_eq!(placer.place(&fixed, None).unwrap(), "n1");
        assert_eq!(placer.place(&fixed, None).unwrap(), "n2", "17000/tcp is taken on n1");
        assert_eq!(
            placer.place(&fixed, None).unwrap_err().misfits[&Misfit::HostPort],
            2
        );
        // The range 17000-17009 holds 10 ports; 17000 is taken by the fixed one.
        let auto = Needs {
            auto_ports: [9, 0],
            ..Needs::default()
        };
        assert_eq!(placer.place(&auto, None).unwrap(), "n1");
        let one_more = Needs {
            auto_ports: [1, 0],
            ..Needs::default()
        };
        assert_eq!(placer.place(&one_more, None).unwrap(), "n2");
        let udp = Needs {
            auto_ports: [0, 10],
            ..Needs::default()
        };
        assert_eq!(placer.place(&udp, None).unwrap(), "n1", "UDP has its own ports");
    }

    #[test]
    fn needs_are_read_from_the_document() {
        let mut doc = game("g")
            .port(7000, Some(17000))
            .memory("64Mi")
            .cpus("0.5")
            .build();
        doc.spec.ports.push(crate::model::PortMapping {
            container_port: 7777,
            host_port: Some(crate::model::HostPortSpec::Auto),
            protocol: Protocol::Udp,
            host_ip: None,
        });
        doc.spec.node_selector.insert("gpu".into(), "true".into());
        let needs = Needs::of(&doc);
        assert_eq!(needs.memory, 64 << 20);
        assert_eq!(needs.nano_cpus, 500_000_000);
        assert_eq!(needs.fixed_ports.len(), 1);
        assert_eq!(needs.auto_ports, [0, 1]);
        assert_eq!(needs.selector["gpu"], "true");
    }

    #[test]
    fn strategies_read_their_names() {
        assert_eq!("Packed".parse::<Strategy>().unwrap(), Strategy::Packed);
        assert_eq!("distributed".parse::<Strategy>().unwrap(), Strategy::Distributed);
        assert!("Random".parse::<Strategy>().is_err());
    }
}
