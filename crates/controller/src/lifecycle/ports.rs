//! Host-port claims under the game's lease (the rules: `rtm_core::ports`):
//! checked and taken before any step that creates a container publishing
//! them — so a recreate stops nothing it could not replace — and released
//! when the game is removed.

use tracing::{info, warn};

use crate::lease::GameLease;
use crate::runtime::{ContainerInfo, RuntimeOp};
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
    /// host ports belongs to another game; otherwise makes sure every one
    /// is claimed for the game (one fenced transaction for those not yet).
    pub(super) async fn require_host_ports(
        &self,
        lease: &GameLease,
        doc: &GameRuntime,
    ) -> Result<(), Failure> {
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
        if claim.then.is_empty() {
            return Ok(());
        }
        lease.check()?;
        if store.txn(claim).await?.succeeded {
            return Ok(());
        }
        lease.check()?;
        Err(Failure::new(
            ErrorCode::PortConflict,
            "a host port of spec.ports was claimed concurrently by another game; the next \
             attempt says which",
        ))
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
