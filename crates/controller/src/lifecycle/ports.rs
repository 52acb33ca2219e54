//! Host-port claims under the game's lease (the rules: `rtm_core::ports`):
//! checked and taken before any step that creates a container publishing
//! them — so a recreate stops nothing it could not replace — and released
//! when the game is removed or moves to another node.
//!
//! A `hostPort: auto` port is chosen here, on the node: the port its claim already
//! holds (restarts and recreates keep it), else the one its running container
//! publishes (the container is the truth when the claim was lost), else the lowest port
//! of `--port-range` no claim holds. The container gets it as its binding, a host-port
//! label, and the environment variables `RTM_PORT_<containerPort>` and
//! `RTM_PORT_<containerPort>_<TCP|UDP>`.

use std::collections::{BTreeMap, HashSet};

use tracing::{info, warn};

use crate::lease::GameLease;
use crate::runtime::{ContainerInfo, ContainerSpec, PortProtocol, RuntimeOp};
use rtm_core::error_code::ErrorCode;
use rtm_core::model::GameRuntime;
use rtm_core::ports::host_port_label;
use rtm_core::ports::{HostPort, PortClaim, asks_for, host_ports};
use rtm_core::store::{Compare, Txn};

use super::{Lifecycle, runtime_failure};
use rtm_core::failure::Failure;

impl Lifecycle {
    /// Fails with `port_not_allowed` when `doc` publishes what the
    /// controller's policy forbids, and with `port_conflict` when one of its
    /// host ports belongs to another game (or `--port-range` has none left for an
    /// `auto` one); otherwise makes sure every one is claimed for the game (one
    /// fenced transaction for those not yet), and says which port each `auto` one got.
    pub(super) async fn require_host_ports(
        &self,
        lease: &GameLease,
        doc: &GameRuntime,
    ) -> Result<AutoPorts, Failure> {
        self.host_ports
            .check(&doc.spec)
            .map_err(|message| Failure::new(ErrorCode::PortNotAllowed, message))?;
        let game = lease.game();
        let node = self.node();
        let keys = self.session.keys();
        let store = self.session.store();
        let mut claim = Txn::new().when(lease.fence().compare());
        for port in host_ports(&doc.spec) {
            let key = keys.port(node, port.protocol.as_str(), port.port);
            match store.get(&key).await? {
                Some(kv) => {
                    match PortClaim::decode(&kv.value) {
                        Some(held) if held.game == game => continue,
                        Some(held) => {
                            if self.still_asks(&held.game, node, port).await? {
                                if !self.only_ours_publish(game, &held.game, port).await? {
                                    return Err(owned_by(port, &held.game));
                                }
                                warn!(%game, %port, named = %held.game, "a host-port claim names a game no container of which publishes the port, while this game's does: the container is the truth; claiming it back");
                            } else {
                                info!(%game, %port, previous = %held.game, "claiming a host port its previous owner no longer asks for");
                            }
                        }
                        None => {
                            warn!(%game, %key, "a host-port claim does not decode; claiming the port anew")
                        }
                    }
                    claim = claim.when(Compare::ModRevision {
                        key: key.clone(),
                        revision: kv.mod_revision,
                    });
                }
                None => {
                    if let Some(holder) = self.container_publishing(game, node, port).await? {
                        // The container says whose the port is: record it
                        // for that game, not for the newcomer.
                        let txn = Txn::new()
                            .when(Compare::Absent { key: key.clone() })
                            .put(key, PortClaim::new(&holder).encode());
                        store.txn(txn).await?;
                        return Err(owned_by(port, &holder));
                    }
                    claim = claim.when(Compare::Absent { key: key.clone() });
                }
            }
            claim = claim.put(key, PortClaim::new(game).encode());
        }
        let (claim, chosen) = self.choose_auto_ports(game, doc, claim).await?;
        if claim.then.is_empty() {
            return Ok(chosen);
        }
        lease.check()?;
        if store.txn(claim).await?.succeeded {
            return Ok(chosen);
        }
        lease.check()?;
        Err(Failure::new(
            ErrorCode::PortConflict,
            "a host port of spec.ports was claimed concurrently by another game; the next \
             attempt says which",
        ))
    }

    /// The ports of `doc`'s `auto` mappings: kept, found on the container, or chosen
    /// (their claims added to `claim`).
    async fn choose_auto_ports(
        &self,
        game: &str,
        doc: &GameRuntime,
        mut claim: Txn,
    ) -> Result<(Txn, AutoPorts), Failure> {
        let wanted: Vec<(u16, PortProtocol)> = doc
            .spec
            .ports
            .iter()
            .filter(|p| p.is_auto())
            .map(|p| (p.container_port, protocol_of(p.protocol)))
            .collect();
        let mut chosen = AutoPorts::new();
        if wanted.is_empty() {
            return Ok((claim, chosen));
        }
        let node = self.node();
        let keys = self.session.keys();
        let prefix = keys.ports(node);
        let listing = self.session.store().list(&prefix, None).await?;
        let mut taken: HashSet<(PortProtocol, u16)> = HashSet::new();
        for kv in &listing.items {
            let Some((protocol, port)) = parse_port_key(&prefix, &kv.key) else {
                continue;
            };
            taken.insert((protocol, port));
            if let Some(held) = PortClaim::decode(&kv.value)
                && held.game == game
                && let Some(container_port) = held.auto
                && wanted.contains(&(container_port, protocol))
            {
                chosen.insert((container_port, protocol), port);
            }
        }
        // Fixed ports of this very document are taken too (claimed in `claim`).
        for port in rtm_core::ports::host_ports(&doc.spec) {
            taken.insert((port.protocol, port.port));
        }
        let published: Vec<rtm_core::model::PublishedPort> = self
            .current_container(game)
            .await?
            .map(|c| c.ports)
            .unwrap_or_default();
        let range = self.port_range;
        for (container_port, protocol) in wanted {
            if chosen.contains_key(&(container_port, protocol)) {
                continue;
            }
            let on_container = published
                .iter()
                .find(|p| {
                    p.container_port == container_port
                        && protocol_of(p.protocol) == protocol
                        && range.contains(p.host_port)
                        && !taken.contains(&(protocol, p.host_port))
                })
                .map(|p| p.host_port);
            let Some(port) = on_container.or_else(|| {
                range
                    .ports()
                    .find(|port| !taken.contains(&(protocol, *port)))
            }) else {
                return Err(Failure::new(
                    ErrorCode::PortConflict,
                    format!(
                        "no free {protocol} port is left in this node's --port-range {range} for                          hostPort: auto of container port {container_port}"
                    ),
                ));
            };
            taken.insert((protocol, port));
            chosen.insert((container_port, protocol), port);
            let key = keys.port(node, protocol.as_str(), port);
            claim = claim
                .when(Compare::Absent { key: key.clone() })
                .put(key, PortClaim::auto(game, container_port).encode());
        }
        Ok((claim, chosen))
    }

    /// Deletes the host-port claims `game` holds on this node (fenced).
    pub(super) async fn release_host_ports(&self, lease: &GameLease) -> Result<(), Failure> {
        let prefix = self.session.keys().ports(self.node());
        let listing = self.session.store().list(&prefix, None).await?;
        let mut release = Txn::new().when(lease.fence().compare());
        for kv in listing.items {
            if PortClaim::decode(&kv.value).is_some_and(|c| c.game == lease.game()) {
                release = release
                    .when(Compare::ModRevision {
                        key: kv.key.clone(),
                        revision: kv.mod_revision,
                    })
                    .delete(kv.key);
            }
        }
        if release.then.is_empty() {
            return Ok(());
        }
        lease.check()?;
        // A claim changed meanwhile is another game's now: nothing to do.
        self.session.store().txn(release).await?;
        Ok(())
    }

    /// Whether `owner`'s document (read from etcd) still asks for `port`.
    async fn still_asks(&self, owner: &str, node: &str, port: HostPort) -> Result<bool, Failure> {
        Ok(self
            .documents
            .get(owner)
            .await?
            .is_some_and(|doc| asks_for(&doc, node, port)))
    }

    /// Whether `game` has a container created to publish `port` while
    /// `named` (whom the claim names) has none: a claim forged or garbled
    /// by hand, which the containers contradict.
    async fn only_ours_publish(
        &self,
        game: &str,
        named: &str,
        port: HostPort,
    ) -> Result<bool, Failure> {
        let containers = self.publishers(port).await?;
        let of = |who: &str| containers.iter().any(|c| c.game() == Some(who));
        Ok(of(game) && !of(named))
    }

    /// This installation's containers, in any state, created to publish
    /// `port` (their host-port label says so).
    async fn publishers(&self, port: HostPort) -> Result<Vec<ContainerInfo>, Failure> {
        let mut containers = self
            .runtime
            .list_labelled(&host_port_label(port.protocol, port.port))
            .await
            .map_err(|e| runtime_failure(RuntimeOp::ListManaged, &e))?;
        containers.retain(|c| c.belongs_to(self.prefix()));
        Ok(containers)
    }

    /// Another game of this installation whose container (in any state)
    /// was created to publish `port`, and whose document still asks for it.
    async fn container_publishing(
        &self,
        game: &str,
        node: &str,
        port: HostPort,
    ) -> Result<Option<String>, Failure> {
        for container in self.publishers(port).await? {
            let Some(holder) = container.game().filter(|g| *g != game) else {
                continue;
            };
            if self.still_asks(holder, node, port).await? {
                return Ok(Some(holder.to_owned()));
            }
        }
        Ok(None)
    }
}

fn owned_by(port: HostPort, owner: &str) -> Failure {
    Failure::new(
        ErrorCode::PortConflict,
        format!(
            "host port {port} belongs to game {owner} (it claimed it first); choose another \
             hostPort, or free it by removing the port from {owner}'s spec or deleting {owner}"
        ),
    )
}

/// The host port each `hostPort: auto` mapping got, by (container port, protocol).
pub(crate) type AutoPorts = BTreeMap<(u16, PortProtocol), u16>;

fn protocol_of(protocol: rtm_core::model::Protocol) -> PortProtocol {
    match protocol {
        rtm_core::model::Protocol::Tcp => PortProtocol::Tcp,
        rtm_core::model::Protocol::Udp => PortProtocol::Udp,
    }
}

/// `(protocol, port)` of a claim key under `prefix` (`<prefix><protocol>/<port>`).
fn parse_port_key(prefix: &str, key: &str) -> Option<(PortProtocol, u16)> {
    let (protocol, port) = key.strip_prefix(prefix)?.split_once('/')?;
    let protocol = match protocol {
        "tcp" => PortProtocol::Tcp,
        "udp" => PortProtocol::Udp,
        _ => return None,
    };
    Some((protocol, port.parse().ok()?))
}

/// Publishes each `auto` mapping of `spec` on the port chosen for it, labels it, and
/// hands it to the engine: `RTM_PORT_<containerPort>` (the first protocol listed) and
/// `RTM_PORT_<containerPort>_<TCP|UDP>`.
pub(crate) fn apply_auto_ports(spec: &mut ContainerSpec, chosen: &AutoPorts) {
    let mut named: HashSet<u16> = HashSet::new();
    for binding in spec.ports.iter_mut() {
        let Some(port) = chosen.get(&(binding.container_port, binding.protocol)) else {
            continue;
        };
        binding.host_port = Some(*port);
        spec.labels
            .insert(host_port_label(binding.protocol, *port), String::new());
        let suffix = binding.protocol.as_str().to_ascii_uppercase();
        spec.env.push((
            format!("RTM_PORT_{}_{suffix}", binding.container_port),
            port.to_string(),
        ));
        if named.insert(binding.container_port) {
            spec.env.push((
                format!("RTM_PORT_{}", binding.container_port),
                port.to_string(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_ports_become_bindings_labels_and_variables() {
        let mut spec = ContainerSpec::new("g", "img");
        for protocol in [PortProtocol::Udp, PortProtocol::Tcp] {
            spec.ports.push(crate::runtime::PortBinding {
                container_port: 7777,
                host_port: None,
                protocol,
                host_ip: None,
            });
        }
        let chosen = AutoPorts::from([
            ((7777, PortProtocol::Udp), 17001),
            ((7777, PortProtocol::Tcp), 17002),
        ]);
        apply_auto_ports(&mut spec, &chosen);
        assert_eq!(spec.ports[0].host_port, Some(17001));
        assert_eq!(spec.ports[1].host_port, Some(17002));
        let env: BTreeMap<_, _> = spec.env.iter().cloned().collect();
        assert_eq!(env["RTM_PORT_7777"], "17001", "the first protocol listed");
        assert_eq!(env["RTM_PORT_7777_UDP"], "17001");
        assert_eq!(env["RTM_PORT_7777_TCP"], "17002");
        assert!(
            spec.labels
                .contains_key(&host_port_label(PortProtocol::Udp, 17001))
        );
        assert_eq!(
            parse_port_key("/p/ports/n1/", "/p/ports/n1/udp/17001"),
            Some((PortProtocol::Udp, 17001))
        );
        assert_eq!(parse_port_key("/p/ports/n1/", "/p/ports/n1/sctp/1"), None);
    }
}
