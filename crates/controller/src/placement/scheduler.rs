//! The scheduler: every controller is a candidate, one is elected — the one whose session
//! created the key `scheduler` (create-only, on its session's lease: it goes with the
//! session). The leader looks at everything the watches keep (documents, statuses,
//! nodes, cordons, live controllers, assignments), decides ([`super::decide`]) and writes
//! the assignments in batches, each write compared with what was read and with the
//! leader key's create revision: a deposed leader's writes fail, and two schedulers can
//! never assign one game twice.
//!
//! Timers live in the leader's memory, on its monotonic clock: how long each node has
//! been NotReady (counted from when this leader first saw it so — a new leader starts
//! every count again, which only delays a move), and the claim window after taking
//! office, during which games with neither an assignment nor a status on a live node
//! wait so that a node running their container can claim them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use rtm_core::model::Timestamp;
use rtm_core::placement::{Needs, Strategy};
use rtm_core::records::nodes::{self, NodeRecord};
use rtm_core::store::{Compare, Revision, StoreError, Txn};

use super::assignments::{AssignmentCache, SeenAssignment};
use super::decide::{Decision, GameSnap, NodeSnap, World, decide};
use super::view::NodesView;
use crate::desired::{Desired, DesiredCache};
use crate::lease::Session;
use crate::metrics::Metrics;
use crate::statuses::StatusCache;

/// Assignment writes per transaction (etcd allows 128 operations; each write is a
/// comparison and a put, plus the leader's comparison).
const BATCH: usize = 60;

/// The longest pause between two looks while leading (timers: grace, claim window).
const TICK: Duration = Duration::from_secs(1);

/// How soon after a change the leader looks (changes arriving together are decided
/// together).
const SETTLE: Duration = Duration::from_millis(20);

/// What the scheduler follows and how it decides.
#[derive(Clone)]
pub(crate) struct Scheduler {
    pub(crate) session: Arc<Session>,
    pub(crate) view: Arc<NodesView>,
    pub(crate) assignments: Arc<AssignmentCache>,
    pub(crate) desired: Arc<DesiredCache>,
    pub(crate) statuses: Arc<StatusCache>,
    pub(crate) strategy: Strategy,
    pub(crate) grace: Duration,
    pub(crate) metrics: Metrics,
}

/// What the leader keeps between looks.
struct Office {
    /// The leader key's create revision: every write compares it.
    revision: Revision,
    /// The revision at which it took office: documents written later are new.
    since_revision: Revision,
    /// When it took office.
    since: Instant,
    /// Since when each NotReady node has been seen so.
    lost: HashMap<String, Instant>,
}

impl Scheduler {
    /// Campaigns, and leads while elected, until `stop` or the session is lost.
    pub(crate) async fn run(self, stop: CancellationToken) {
        let session_lost = self.session.lost().clone();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = session_lost.cancelled() => return,
            _ = self.wait_following() => {}
        }
        loop {
            let office = tokio::select! {
                _ = stop.cancelled() => return,
                _ = session_lost.cancelled() => return,
                office = self.campaign() => office,
            };
            info!(holder = %self.session.holder(), "elected scheduler");
            let mut office = office;
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = session_lost.cancelled() => {}
                _ = self.lead(&mut office) => {
                    warn!("no longer the scheduler; campaigning again");
                    continue;
                }
            }
            // Stepping down with the session: the key goes with its lease, or now.
            let _ = self
                .session
                .store()
                .txn(
                    Txn::new()
                        .when(Compare::CreateRevision {
                            key: self.session.keys().scheduler(),
                            revision: office.revision,
                        })
                        .delete(self.session.keys().scheduler()),
                )
                .await;
            return;
        }
    }

    async fn wait_following(&self) {
        loop {
            if self.view.is_following()
                && self.assignments.is_following()
                && self.desired.is_ready()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Takes the leader key, waiting while a live leader holds it.
    async fn campaign(&self) -> Office {
        let key = self.session.keys().scheduler();
        let store = self.session.store();
        loop {
            let value = serde_json::json!({
                "holder": self.session.holder(),
                "since": Timestamp::now(),
            });
            let txn = Txn::new()
                .when(Compare::Absent { key: key.clone() })
                .put_with_lease(
                    key.clone(),
                    value.to_string().into_bytes(),
                    self.session.lease_id(),
                );
            match store.txn(txn).await {
                Ok(outcome) if outcome.succeeded => {
                    if let Ok(Some(kv)) = store.get(&key).await
                        && kv.lease == self.session.lease_id()
                    {
                        return Office {
                            revision: kv.create_revision,
                            since_revision: outcome.revision,
                            since: Instant::now(),
                            lost: HashMap::new(),
                        };
                    }
                }
                Ok(_) => {
                    if let Ok(Some(kv)) = store.get(&key).await {
                        // On no lease (put by hand) it would never expire, and no game would
                        // be placed again: removed.
                        if kv.lease == 0 {
                            warn!(%key, "the scheduler key is on no lease (written by hand); removing it");
                            let _ = store
                                .txn(
                                    Txn::new()
                                        .when(Compare::ModRevision {
                                            key: key.clone(),
                                            revision: kv.mod_revision,
                                        })
                                        .delete(key.clone()),
                                )
                                .await;
                            continue;
                        }
                    }
                }
                Err(error) => debug!(%error, "campaigning for the scheduler failed; retrying"),
            }
            tokio::time::sleep(self.session.ttl() / 3).await;
        }
    }

    /// Decides and writes until deposed.
    async fn lead(&self, office: &mut Office) {
        loop {
            match self.round(office).await {
                Ok(()) => {}
                Err(Round::Deposed) => return,
                Err(Round::Store(error)) => {
                    debug!(%error, "a scheduling round failed; trying again");
                }
            }
            tokio::select! {
                _ = self.desired.changed().notified() => {}
                _ = self.view.changed().notified() => {}
                _ = self.assignments.changed().notified() => {}
                _ = tokio::time::sleep(TICK) => {}
            }
            tokio::time::sleep(SETTLE).await;
        }
    }

    /// One look and its writes.
    async fn round(&self, office: &mut Office) -> Result<(), Round> {
        // Decided only on copies that follow etcd, with heartbeats as new as every node
        // record (else a node just registered looks lost); TICK looks again.
        if !(self.view.is_following() && self.view.is_settled() && self.assignments.is_following())
        {
            return Ok(());
        }
        let now = Instant::now();
        let nodes: Vec<NodeSnap> = self
            .view
            .nodes()
            .iter()
            .map(|seen| {
                let name = &seen.record.name;
                let live = self.view.is_live(name);
                let lost_for = if live {
                    office.lost.remove(name);
                    None
                } else {
                    Some(now - *office.lost.entry(name.clone()).or_insert(now))
                };
                NodeSnap {
                    record: seen.record.clone(),
                    live,
                    cordon: self.view.cordon(name).map(|c| (*c).clone()),
                    lost_for,
                    revision: seen.revision,
                }
            })
            .collect();
        self.mark_lost(&nodes).await;
        let (games, invalid) = self.games(office.since_revision);
        let assignments: HashMap<String, Arc<SeenAssignment>> =
            self.assignments.all().into_iter().collect();
        let garbled = self.assignments.all_garbled();
        let claim_window = self.session.ttl();
        let world = World {
            nodes: &nodes,
            games: &games,
            invalid: &invalid,
            assignments: &assignments,
            garbled: &garbled,
            grace: self.grace,
            claims_over: now - office.since >= claim_window,
            strategy: self.strategy,
            holder: self.session.holder(),
        };
        let decisions = decide(&world);
        if decisions.is_empty() {
            return Ok(());
        }
        debug!(writes = decisions.len(), "scheduling");
        for batch in decisions.chunks(BATCH) {
            self.write(office, batch).await?;
        }
        Ok(())
    }

    /// The valid documents as the scheduler sees them, and the names of invalid ones.
    fn games(&self, since: Revision) -> (Vec<GameSnap>, Vec<String>) {
        let mut games = Vec::new();
        let mut invalid = Vec::new();
        for name in self.desired.games() {
            match self.desired.get(&name).as_deref() {
                Some(Desired::Valid(doc)) => {
                    let revision: Revision = doc
                        .metadata
                        .resource_version
                        .as_deref()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let status_node = self
                        .statuses
                        .get(&name)
                        .and_then(|record| record.value.node.clone());
                    games.push(GameSnap {
                        needs: Needs::of(doc),
                        status_node,
                        new: revision > since && doc.metadata.generation == Some(1),
                        name,
                    });
                }
                Some(Desired::Invalid(_)) => invalid.push(name),
                None => {}
            }
        }
        (games, invalid)
    }

    /// Writes one batch in one transaction; when a comparison fails, each write alone
    /// (the ones that still hold go in; the next round sees the rest anew).
    async fn write(&self, office: &Office, batch: &[Decision]) -> Result<(), Round> {
        let leader = Compare::CreateRevision {
            key: self.session.keys().scheduler(),
            revision: office.revision,
        };
        let txn = batch
            .iter()
            .fold(Txn::new().when(leader.clone()), |txn, d| self.add(txn, d));
        let store = self.session.store();
        let outcome = store.txn(txn).await.map_err(Round::Store)?;
        self.metrics.placement_writes.inc_by(batch.len() as u64);
        if outcome.succeeded {
            self.learn(batch, outcome.revision);
            return Ok(());
        }
        for decision in batch {
            let txn = self.add(Txn::new().when(leader.clone()), decision);
            let outcome = store.txn(txn).await.map_err(Round::Store)?;
            if outcome.succeeded {
                self.learn(std::slice::from_ref(decision), outcome.revision);
            } else if !self.still_leader(office).await? {
                return Err(Round::Deposed);
            }
        }
        Ok(())
    }

    fn add(&self, txn: Txn, decision: &Decision) -> Txn {
        let keys = self.session.keys();
        match decision {
            Decision::Put {
                game,
                over,
                assignment,
            } => {
                let key = keys.assignment(game);
                txn.when(match over {
                    Some(revision) => Compare::ModRevision {
                        key: key.clone(),
                        revision: *revision,
                    },
                    None => Compare::Absent { key: key.clone() },
                })
                .put(key, nodes::encode(assignment))
            }
            Decision::Reclaim {
                game,
                over,
                assignment,
                node,
                node_revision,
            } => {
                let key = keys.assignment(game);
                txn.when(Compare::ModRevision {
                    key: key.clone(),
                    revision: *over,
                })
                .when(Compare::ModRevision {
                    key: keys.node(node),
                    revision: *node_revision,
                })
                .put(key, nodes::encode(assignment))
            }
            Decision::Delete { game, over } => {
                let key = keys.assignment(game);
                txn.when(Compare::ModRevision {
                    key: key.clone(),
                    revision: *over,
                })
                .delete(key)
            }
        }
    }

    fn learn(&self, batch: &[Decision], revision: Revision) {
        for decision in batch {
            match decision {
                Decision::Put {
                    game, assignment, ..
                }
                | Decision::Reclaim {
                    game, assignment, ..
                } => {
                    info!(%game, node = assignment.node.as_deref().unwrap_or("-"), reason = assignment.reason.as_str(), unschedulable = assignment.unschedulable.as_deref().unwrap_or(""), "assigned");
                    self.assignments.learn(
                        game,
                        Some(SeenAssignment {
                            assignment: assignment.clone(),
                            revision,
                        }),
                    );
                }
                Decision::Delete { game, .. } => self.assignments.learn(game, None),
            }
        }
    }

    async fn still_leader(&self, office: &Office) -> Result<bool, Round> {
        let kv = self
            .session
            .store()
            .get(&self.session.keys().scheduler())
            .await
            .map_err(Round::Store)?;
        Ok(kv.is_some_and(|kv| kv.create_revision == office.revision))
    }

    /// Records `lostAt` in the record of each node newly seen NotReady (for people:
    /// `rtctl describe node`), over the record as seen.
    async fn mark_lost(&self, nodes: &[NodeSnap]) {
        for snap in nodes
            .iter()
            .filter(|n| !n.live && n.record.lost_at.is_none())
        {
            let Some(seen) = self.view.node(&snap.record.name) else {
                continue;
            };
            let record = NodeRecord {
                lost_at: Some(Timestamp::now()),
                ..seen.record.clone()
            };
            let key = self.session.keys().node(&record.name);
            let txn = Txn::new()
                .when(Compare::ModRevision {
                    key: key.clone(),
                    revision: seen.revision,
                })
                .put(key, nodes::encode(&record));
            match self.session.store().txn(txn).await {
                Ok(_) => {
                    warn!(node = %record.name, "node lost (no live controller); its games move once it stays lost past the grace")
                }
                Err(error) => debug!(%error, "marking a node lost failed"),
            }
        }
    }
}

enum Round {
    Deposed,
    Store(StoreError),
}
