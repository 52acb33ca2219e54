//! A game between nodes, as this node's reconcile sees it:
//!
//! - assigned to another live node while its container is here: moved out — a
//!   voluntary disruption that waits while the game is in session (until this node's
//!   drain deadline) and takes a disruption-budget slot, then stops and removes the
//!   container, frees its ports, and writes the assignment again with `from` naming this
//!   node: the release the next node waits for. An assignment to no node, or to one that
//!   is not live, never stops a running container (it would run nowhere);
//! - assigned to nobody while its container is here: claimed (the container is the
//!   truth: an upgrade from before assignments, or the key lost);
//! - assigned here while another live node, named by the status, still holds it and
//!   has not released it: waited for, so it never runs on two hosts;
//! - deleted: once nothing of it is left here, its assignment (if it names this node)
//!   is deleted.

use std::time::{Duration, SystemTime};

use tracing::{debug, info, warn};

use crate::lease::{GameLease, LeaseError};
use crate::lifecycle::{OpRequest, new_id};
use crate::placement::Liveness;
use crate::placement::assignments::{SeenAssignment, adopt, swap};
use crate::runtime::{ContainerInfo, LABEL_NODE};
use rtm_core::failure::Failure;
use rtm_core::model::{GameRuntime, OpSource};
use rtm_core::records::nodes::Assignment;
use rtm_core::store::{Compare, Txn};

use super::{LEASE_BUSY_RETRY, Observed, Reconciler};

/// Look again this soon while a move waits for a session to end or a budget slot.
const MOVE_RETRY: Duration = Duration::from_secs(5);

/// Look again this soon while the assignment names a node that is not live.
const NOT_LIVE_RETRY: Duration = Duration::from_secs(15);

impl Reconciler {
    /// A game this node does not run (its assignment names another node, or none): its
    /// container here, if any, is claimed (no assignment) or moved out.
    pub(super) async fn not_ours(
        &self,
        game: &str,
        doc: &GameRuntime,
    ) -> Result<Option<Duration>, Failure> {
        let Some(container) = self.container(game).await? else {
            return Ok(None);
        };
        let Some(cache) = self.ownership.cache() else {
            return Ok(None);
        };
        if let Some(maker) = container
            .labels
            .get(LABEL_NODE)
            .filter(|maker| **maker != self.ownership.node)
        {
            // Another node made it on this engine (two node names on one engine): its
            // controller decides what becomes of it.
            debug!(%game, node = %maker, "the container here is another node's; leaving it");
            return Ok(None);
        }
        if !cache.is_following() {
            // The copy may be stale: neither claimed nor moved until it follows again.
            return Ok(Some(LEASE_BUSY_RETRY));
        }
        let Some(seen) = cache.get(game) else {
            let node = &self.ownership.node;
            if adopt(
                self.session.store(),
                &self.keys,
                cache,
                game,
                node,
                self.session.holder(),
            )
            .await?
            {
                info!(%game, %node, "no assignment, but its container runs here: claimed it for this node");
                return Ok(Some(Duration::ZERO));
            }
            return Ok(Some(LEASE_BUSY_RETRY));
        };
        self.move_out(game, doc, &container, &seen).await
    }

    async fn move_out(
        &self,
        game: &str,
        doc: &GameRuntime,
        container: &ContainerInfo,
        seen: &SeenAssignment,
    ) -> Result<Option<Duration>, Failure> {
        let node = &self.ownership.node;
        let target = seen.assignment.node.as_deref();
        if container.is_alive() && !target.is_some_and(|t| self.nodes.is_live(t)) {
            // Stopping it would leave the game running nowhere (an assignment edited by
            // hand, or to a node that went away): it stays until a live node may take it.
            warn!(%game, to = target.unwrap_or("no node"), "the assignment names no live node; the game keeps running here");
            return Ok(Some(NOT_LIVE_RETRY));
        }
        let lease = match self.session.acquire(game, &new_id()).await {
            Ok(lease) => lease,
            Err(LeaseError::Busy { .. }) => return Ok(Some(LEASE_BUSY_RETRY)),
            Err(error) => return Err(error.into()),
        };
        // Read under the lease: an allocation made before it is seen, one after it fails.
        if container.is_alive() && !self.drain_deadline_passed() && self.in_session(game).await? {
            if let Err(error) = lease.release().await {
                warn!(%game, %error, "releasing the game lease failed");
            }
            info!(%game, to = target.unwrap_or("no node"), "the game moves off this node once its session ends");
            return Ok(Some(MOVE_RETRY));
        }
        let reason = match target {
            Some(to) => format!(
                "the game moved to node {to} ({}); its container on {node} was removed",
                seen.assignment.reason.as_str()
            ),
            None => format!(
                "no node may run the game now ({}); its container on {node} was removed",
                seen.assignment
                    .unschedulable
                    .as_deref()
                    .unwrap_or("unschedulable")
            ),
        };
        if container.is_alive()
            && self
                .disruptions
                .take_slots(&lease, doc, &reason)
                .await?
                .is_some()
        {
            if let Err(error) = lease.release().await {
                warn!(%game, %error, "releasing the game lease failed");
            }
            info!(%game, "the move off this node waits for a disruption budget slot");
            return Ok(Some(MOVE_RETRY));
        }
        let request = OpRequest::new(game, OpSource::Reconcile);
        let result = self.lifecycle.evict_under(&lease, &request, &reason).await;
        let released = if result.is_success() {
            self.release_to(&lease, game, seen).await
        } else {
            Ok(())
        };
        if let Err(error) = lease.release().await {
            warn!(%game, %error, "releasing the game lease failed");
        }
        if !result.is_success() {
            return Err(result.into());
        }
        released.map(|()| None)
    }

    /// Writes the assignment again with `from` naming this node (fenced by the game's
    /// lease, over the assignment seen): the next node may start the game.
    async fn release_to(
        &self,
        lease: &GameLease,
        game: &str,
        seen: &SeenAssignment,
    ) -> Result<(), Failure> {
        let released = Assignment {
            from: Some(self.ownership.node.clone()),
            ..seen.assignment.clone()
        };
        lease.check()?;
        let written = swap(
            self.session.store(),
            &self.keys,
            game,
            Some(seen.revision),
            &released,
            vec![lease.fence().compare()],
        )
        .await?;
        if let (Some(revision), Some(cache)) = (written, self.ownership.cache()) {
            cache.learn(
                game,
                Some(SeenAssignment {
                    assignment: released,
                    revision,
                }),
            );
        }
        Ok(())
    }

    /// Another live node this game still runs on, by its status, that has not released
    /// it: nothing is started here before it has.
    pub(super) fn held_elsewhere(&self, game: &str, observed: &Observed) -> Option<String> {
        if observed.container.is_some() {
            return None;
        }
        let other = observed
            .status
            .value
            .node
            .as_deref()
            .filter(|n| *n != self.ownership.node)?;
        // Unsure counts as held: the other node's heartbeat may be on its way.
        if self.nodes.liveness(other) == Liveness::Lost {
            return None;
        }
        let released = self
            .ownership
            .assignment(game)
            .is_some_and(|seen| seen.assignment.from.as_deref() == Some(other));
        (!released).then(|| other.to_owned())
    }

    /// Deletes the assignment of a deleted game when it names this node (over the
    /// revision seen; fenced by `lease` when one is held).
    pub(super) async fn drop_assignment(&self, game: &str, lease: Option<&GameLease>) {
        let Some(cache) = self.ownership.cache() else {
            return;
        };
        let Some(seen) = cache
            .get(game)
            .filter(|seen| seen.assignment.is_on(&self.ownership.node))
        else {
            return;
        };
        let key = self.keys.assignment(game);
        let mut txn = Txn::new().when(Compare::ModRevision {
            key: key.clone(),
            revision: seen.revision,
        });
        if let Some(lease) = lease {
            txn = txn.when(lease.fence().compare());
        }
        match self.session.store().txn(txn.delete(key)).await {
            Ok(outcome) if outcome.succeeded => cache.learn(game, None),
            Ok(_) => {}
            Err(error) => {
                warn!(%game, %error, "deleting the assignment of a deleted game failed; the scheduler removes it later")
            }
        }
    }

    async fn in_session(&self, game: &str) -> Result<bool, Failure> {
        let record = self.disruptions.read_session(game).await?;
        Ok(record.value.as_ref().is_some_and(|s| s.is_allocated()))
    }

    fn drain_deadline_passed(&self) -> bool {
        self.nodes
            .cordon(&self.ownership.node)
            .and_then(|cordon| cordon.deadline)
            .is_some_and(|deadline| deadline.system_time() <= SystemTime::now())
    }
}
