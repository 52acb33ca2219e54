//! What the controller follows to pace voluntary disruptions: every game's session record
//! (`sessions/`), every disruption budget (`budgets/`) and every held slot
//! (`budget-slots/`), each kept by its own prefix watch ([`super::mirror`]), and the
//! taking and freeing of slots.
//!
//! A change of a session queues its game (an allocation may hold a disruption back, a
//! release lets it go). A freed slot, or a changed budget, queues the games that wait on
//! that budget. Slots are taken under the game's lease, attached to the controller's etcd
//! session (a controller that dies frees its slots with it), and freed once the game is
//! Ready again on its current spec.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use tracing::{info, warn};

use crate::desired::{Desired, DesiredCache};
use crate::lease::GameLease;
use crate::plan::BudgetWait;
use crate::queue::WorkQueue;
use crate::statuses::StatusCache;
use rtm_core::failure::Failure;
use rtm_core::model::{
    ConditionStatus, DesiredState, GameDisruptionBudget, GameRuntime, GameRuntimeStatus,
    MaxUnavailable, READY, Timestamp, UPDATE_PENDING,
};
use rtm_core::records::budgets::{self, HeldSlot, Slot};
use rtm_core::records::sessions::{self, SessionRecord};
use rtm_core::store::{Compare, Keys, Revision, Store, StoreError, Txn, WatchEvent};

use super::cache::Cache;
use super::mirror::Mirror;

/// Tries of a slot transaction that lost a race for an index.
const SLOT_TRIES: usize = 3;

/// Sessions, budgets and slots as last seen, and the games waiting on each budget.
#[derive(Debug)]
pub(crate) struct Disruptions {
    store: Arc<dyn Store>,
    keys: Keys,
    sessions: Cache<SessionRecord>,
    budgets: Cache<GameDisruptionBudget>,
    /// Budgets stored in a form that does not decode, with why: each holds back every
    /// voluntary recreate (its selector is unknown) until it is fixed or deleted.
    unreadable: Mutex<HashMap<String, String>>,
    slots: RwLock<HashMap<String, HeldSlot>>,
    /// Budget name → games waiting for one of its slots.
    waiters: Mutex<HashMap<String, HashSet<String>>>,
    /// The documents, to count the games a budget covers.
    desired: Arc<DesiredCache>,
    /// The status records, to tell which covered games are not Ready (`None`: not
    /// followed; then only slots count, as for a reconciler that follows no budget).
    statuses: Option<Arc<StatusCache>>,
    queue: Option<Arc<WorkQueue>>,
}

impl Disruptions {
    /// Nothing seen yet.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        keys: Keys,
        desired: Arc<DesiredCache>,
        statuses: Option<Arc<StatusCache>>,
        queue: Option<Arc<WorkQueue>>,
    ) -> Self {
        Self {
            statuses,
            store,
            keys,
            sessions: Cache::default(),
            budgets: Cache::default(),
            unreadable: Mutex::new(HashMap::new()),
            slots: RwLock::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            desired,
            queue,
        }
    }

    /// No sessions and no budgets, known as such (for a reconciler that follows neither:
    /// tests of other parts, tools).
    pub(crate) fn none(store: Arc<dyn Store>, keys: Keys, desired: Arc<DesiredCache>) -> Self {
        let none = Self::new(store, keys, desired, None, None);
        none.sessions.set_following();
        none.budgets.set_following();
        none
    }

    /// The game's session record as last seen; `None` when the cache cannot say (not
    /// following etcd): the caller reads etcd.
    pub(crate) fn session(&self, game: &str) -> Option<SessionRecord> {
        if !self.sessions.is_following() {
            return None;
        }
        Some(
            self.sessions
                .get(game)
                .map(|known| SessionRecord::clone(&known))
                .unwrap_or_default(),
        )
    }

    /// The game's session record, from etcd.
    pub(crate) async fn read_session(&self, game: &str) -> Result<SessionRecord, Failure> {
        let kv = self.store.get(&self.keys.session(game)).await?;
        Ok(sessions::from_kv(kv.as_ref()))
    }

    /// The budgets covering `doc`'s game; `None` while the budgets are not known (not
    /// following etcd): no voluntary disruption may then go ahead.
    pub(crate) fn covering(&self, doc: &GameRuntime) -> Option<Vec<Arc<GameDisruptionBudget>>> {
        if !self.budgets.is_following() {
            return None;
        }
        let budgets = self.budgets.read();
        let mut covering: Vec<_> = budgets
            .values()
            .filter(|budget| budget.covers(doc))
            .cloned()
            .collect();
        covering.sort_by(|a, b| a.name().cmp(b.name()));
        Some(covering)
    }

    /// How many slots `budget` has for the games it covers now.
    fn allowed(&self, budget: &GameDisruptionBudget) -> usize {
        match budget.spec.max_unavailable {
            MaxUnavailable::Count(_) => budget.spec.max_unavailable.allowed(0),
            MaxUnavailable::Percent(_) => {
                let covered = self.desired.count(|desired| match desired {
                    Desired::Valid(doc) => budget.covers(doc),
                    Desired::Invalid(_) => false,
                });
                budget.spec.max_unavailable.allowed(covered)
            }
        }
    }

    /// The slots of `budget` as last seen.
    fn slots_of(&self, budget: &str) -> Vec<HeldSlot> {
        let slots = self.read_slots();
        let mut held: Vec<HeldSlot> = slots
            .values()
            .filter(|slot| slot.budget == budget)
            .cloned()
            .collect();
        held.sort_by_key(|slot| slot.index);
        held
    }

    /// The slots held for `game`.
    pub(crate) fn held_by(&self, game: &str) -> Vec<HeldSlot> {
        self.read_slots()
            .values()
            .filter(|slot| slot.game() == Some(game))
            .cloned()
            .collect()
    }

    /// The first budget covering `doc`'s game with no slot left for it, as the caches
    /// show it (a slot it already holds counts as its own); `None` when every covering
    /// budget has room, or none covers it.
    pub(crate) fn wait_for(&self, doc: &GameRuntime) -> Option<BudgetWait> {
        let game = doc.name();
        let Some(covering) = self.covering(doc) else {
            return Some(BudgetWait {
                budget: "(not listed yet)".to_owned(),
                allowed: 0,
                holders: Vec::new(),
                unreadable: Some("the budgets are not listed yet".to_owned()),
            });
        };
        if let Some((budget, why)) = self.lock_unreadable().iter().next() {
            return Some(BudgetWait {
                budget: budget.clone(),
                allowed: 0,
                holders: Vec::new(),
                unreadable: Some(why.clone()),
            });
        }
        covering
            .iter()
            .find_map(|budget| self.room(budget, game).err())
    }

    /// A free slot index of `budget` for `game` (`Ok(None)`: it holds one already), or
    /// what holds it back. A budget is used by the games holding its slots and by every
    /// other game it covers that should run and is not Ready (crashing, starting, or
    /// down for a disruption whose slot went with a lost etcd session): so a rollout
    /// never adds to an outage, and a lost session does not let the next batch through
    /// while the last one is still down.
    fn room(&self, budget: &GameDisruptionBudget, game: &str) -> Result<Option<usize>, BudgetWait> {
        let held = self.slots_of(budget.name());
        if held.iter().any(|slot| slot.game() == Some(game)) {
            return Ok(None);
        }
        let allowed = self.allowed(budget);
        let mut users = holders(&held);
        let wait = |users: Vec<String>, unreadable: Option<&str>| BudgetWait {
            budget: budget.name().to_owned(),
            allowed,
            holders: users,
            unreadable: unreadable.map(str::to_owned),
        };
        let Some(unready) = self.unready_covered(budget, game) else {
            return Err(wait(users, Some("the status records are not followed yet")));
        };
        for other in unready {
            if !users.contains(&other) {
                users.push(other);
            }
        }
        if users.len() >= allowed {
            return Err(wait(users, None));
        }
        match (0..allowed).find(|index| !held.iter().any(|s| s.index == *index)) {
            Some(index) => Ok(Some(index)),
            None => Err(wait(users, None)),
        }
    }

    /// The games other than `game` that `budget` covers, that should run and whose status
    /// is not Ready; `None` while the status records are not followed.
    fn unready_covered(&self, budget: &GameDisruptionBudget, game: &str) -> Option<Vec<String>> {
        let statuses = self.statuses.as_ref()?;
        let docs = self.desired.documents();
        let mut unready = Vec::new();
        for doc in docs.iter().filter(|doc| {
            doc.name() != game && doc.spec.state == DesiredState::Running && budget.covers(doc)
        }) {
            let status = statuses.get(doc.name())?;
            if !is_ready(&status.value) {
                unready.push(doc.name().to_owned());
            }
        }
        unready.sort();
        Some(unready)
    }

    /// Registers `game` as waiting on `budget` (queued again when one of its slots is
    /// freed), or as waiting on none.
    pub(crate) fn waits(&self, game: &str, budget: Option<&str>) {
        let mut waiters = self.lock_waiters();
        for (name, games) in waiters.iter_mut() {
            if Some(name.as_str()) != budget {
                games.remove(game);
            }
        }
        if let Some(budget) = budget {
            waiters
                .entry(budget.to_owned())
                .or_default()
                .insert(game.to_owned());
        }
        waiters.retain(|_, games| !games.is_empty());
    }

    /// Takes, in one transaction under the game's lease, a slot of every budget covering
    /// `doc` that the game does not hold yet. `Ok(None)`: the game holds a slot of each
    /// (or none covers it); `Ok(Some(wait))`: a budget has none left, and nothing was taken.
    pub(crate) async fn take_slots(
        &self,
        lease: &GameLease,
        doc: &GameRuntime,
        reason: &str,
    ) -> Result<Option<BudgetWait>, Failure> {
        let game = doc.name();
        let session = lease.session();
        for _ in 0..SLOT_TRIES {
            let Some(covering) = self.covering(doc) else {
                return Ok(self.wait_for(doc));
            };
            if !self.lock_unreadable().is_empty() {
                return Ok(self.wait_for(doc));
            }
            let mut txn = Txn::new().when(lease.fence().compare());
            let mut taken = Vec::new();
            for budget in &covering {
                let index = match self.room(budget, game) {
                    Ok(Some(index)) => index,
                    Ok(None) => continue,
                    Err(wait) => return Ok(Some(wait)),
                };
                let key = self.keys.budget_slot(budget.name(), index);
                let slot = Slot {
                    game: game.to_owned(),
                    holder: session.holder().to_owned(),
                    since: Timestamp::now(),
                    reason: reason.to_owned(),
                };
                txn = txn
                    .when(Compare::Absent { key: key.clone() })
                    .put_with_lease(key.clone(), budgets::encode_slot(&slot), session.lease_id());
                taken.push((budget.name().to_owned(), index, key, slot));
            }
            if taken.is_empty() {
                return Ok(None);
            }
            let outcome = self.store.txn(txn).await?;
            if outcome.succeeded {
                let mut slots = self.write_slots();
                for (budget, index, key, slot) in taken {
                    info!(%game, %budget, index, "took a disruption budget slot");
                    slots.insert(
                        key.clone(),
                        HeldSlot {
                            budget,
                            index,
                            key,
                            slot: Some(slot),
                            lease: session.lease_id(),
                            create_revision: outcome.revision,
                        },
                    );
                }
                return Ok(None);
            }
            // Another game took an index first (or the lease is gone): look again.
            lease.check()?;
            self.refresh_slots().await?;
        }
        Ok(self.wait_for(doc))
    }

    /// Frees the slots held for `game` once it no longer needs them: it is gone, stopped,
    /// no longer covered, or Ready on its current spec with nothing pending. Each slot is
    /// deleted only if it is still the one seen (its create revision).
    pub(crate) async fn release_if_done(
        &self,
        game: &str,
        doc: Option<&GameRuntime>,
        status: &GameRuntimeStatus,
    ) -> Result<(), Failure> {
        let held = self.held_by(game);
        if held.is_empty() {
            return Ok(());
        }
        let budgets = self.budgets.read().clone();
        for slot in held {
            let covered = doc.is_some_and(|doc| {
                budgets
                    .get(&slot.budget)
                    .is_some_and(|budget| budget.covers(doc))
            });
            if covered && !settled(doc, status) {
                continue;
            }
            let txn = Txn::new()
                .when(Compare::CreateRevision {
                    key: slot.key.clone(),
                    revision: slot.create_revision,
                })
                .delete(slot.key.clone());
            match self.store.txn(txn).await {
                Ok(_) => {
                    info!(%game, budget = %slot.budget, index = slot.index, "freed a disruption budget slot");
                    self.forget_slot(&slot.key);
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// Reads every slot again from etcd (after a lost race).
    async fn refresh_slots(&self) -> Result<(), StoreError> {
        let listing = self.store.list(&self.keys.all_budget_slots(), None).await?;
        let fresh: HashMap<String, HeldSlot> = listing
            .items
            .iter()
            .filter_map(|kv| budgets::slot_from_kv(&self.keys, kv))
            .map(|slot| (slot.key.clone(), slot))
            .collect();
        *self.write_slots() = fresh;
        Ok(())
    }

    fn forget_slot(&self, key: &str) {
        let removed = self.write_slots().remove(key);
        if let Some(slot) = removed {
            self.wake(&slot.budget);
        }
    }

    /// Queues the games waiting on `budget`.
    fn wake(&self, budget: &str) {
        let Some(queue) = &self.queue else { return };
        let waiting: Vec<String> = self
            .lock_waiters()
            .get(budget)
            .map(|games| games.iter().cloned().collect())
            .unwrap_or_default();
        for game in waiting {
            queue.add(&game);
        }
    }

    fn read_slots(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, HeldSlot>> {
        self.slots
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_slots(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, HeldSlot>> {
        self.slots
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_unreadable(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.unreadable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The games holding `held`. A slot no controller holds (it does not decode, or is
/// attached to no etcd lease: written by hand) shows as its key, so that the person who
/// made it knows what to delete: the controller never frees a slot it did not take.
fn holders(held: &[HeldSlot]) -> Vec<String> {
    held.iter()
        .map(|slot| match slot.game() {
            Some(game) if slot.lease != 0 => game.to_owned(),
            Some(game) => format!("{game} by hand at {} (no controller holds it)", slot.key),
            None => format!("an unreadable slot at {}", slot.key),
        })
        .collect()
}

/// Whether a status says Ready.
fn is_ready(status: &GameRuntimeStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == ConditionStatus::True)
}

/// Whether a game that holds slots no longer needs them: it is gone or stopped, or Ready
/// on its current spec with no voluntary disruption pending.
fn settled(doc: Option<&GameRuntime>, status: &GameRuntimeStatus) -> bool {
    let Some(doc) = doc else { return true };
    if doc.spec.state == DesiredState::Stopped {
        return true;
    }
    let is = |kind: &str, value: ConditionStatus| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == kind && c.status == value)
    };
    is(READY, ConditionStatus::True)
        && !is(UPDATE_PENDING, ConditionStatus::True)
        && status.observed_generation == doc.metadata.generation
}

/// Follows `sessions/`.
#[derive(Debug)]
pub(crate) struct SessionMirror(pub(crate) Arc<Disruptions>);

impl Mirror for SessionMirror {
    type Error = StoreError;

    fn what(&self) -> &'static str {
        "sessions"
    }

    fn store(&self) -> &Arc<dyn Store> {
        &self.0.store
    }

    fn prefix(&self) -> String {
        self.0.keys.sessions()
    }

    async fn relist(&self) -> Result<Revision, StoreError> {
        let d = &self.0;
        let prefix = d.keys.sessions();
        let listing = d.store.list(&prefix, None).await?;
        let listed: HashMap<String, Arc<SessionRecord>> = listing
            .items
            .iter()
            .filter_map(|kv| {
                let game = d.keys.name_of(&prefix, &kv.key)?;
                Some((game.to_owned(), Arc::new(sessions::from_kv(Some(kv)))))
            })
            .collect();
        let changed: Vec<String> = {
            let mut known = d.sessions.write();
            let changed = known
                .keys()
                .chain(listed.keys())
                .filter(|game| known.get(*game) != listed.get(*game))
                .cloned()
                .collect::<HashSet<_>>();
            *known = listed;
            changed.into_iter().collect()
        };
        d.sessions.set_following();
        if let Some(queue) = &d.queue {
            changed.iter().for_each(|game| queue.add(game));
        }
        Ok(listing.revision)
    }

    async fn apply(&self, batch: Vec<WatchEvent>) {
        let d = &self.0;
        let prefix = d.keys.sessions();
        for event in batch {
            let Some(game) = d.keys.name_of(&prefix, event.key()) else {
                continue;
            };
            match &event {
                WatchEvent::Put(kv) => {
                    if !sessions::is_readable(kv) {
                        warn!(key = %kv.key, "a session record does not decode; the game counts as Allocated until it is fixed");
                    }
                    d.sessions
                        .write()
                        .insert(game.to_owned(), Arc::new(sessions::from_kv(Some(kv))));
                }
                WatchEvent::Delete { .. } => {
                    d.sessions.write().remove(game);
                }
            }
            if let Some(queue) = &d.queue {
                queue.add(game);
            }
        }
    }

    fn broken(&self) {
        self.0.sessions.set_broken();
    }
}

/// Follows `budgets/`.
#[derive(Debug)]
pub(crate) struct BudgetMirror(pub(crate) Arc<Disruptions>);

impl Mirror for BudgetMirror {
    type Error = StoreError;

    fn what(&self) -> &'static str {
        "budgets"
    }

    fn store(&self) -> &Arc<dyn Store> {
        &self.0.store
    }

    fn prefix(&self) -> String {
        self.0.keys.budgets()
    }

    async fn relist(&self) -> Result<Revision, StoreError> {
        let d = &self.0;
        let prefix = d.keys.budgets();
        let listing = d.store.list(&prefix, None).await?;
        let mut listed = HashMap::new();
        let mut unreadable = HashMap::new();
        for kv in &listing.items {
            let Some(name) = d.keys.name_of(&prefix, &kv.key) else {
                continue;
            };
            match budgets::decode(kv) {
                Ok(budget) => {
                    listed.insert(name.to_owned(), Arc::new(budget));
                }
                Err(error) => {
                    warn!(%error, "a disruption budget does not decode; voluntary recreates wait until it is fixed or deleted");
                    unreadable.insert(name.to_owned(), error.to_string());
                }
            }
        }
        *d.budgets.write() = listed;
        *d.lock_unreadable() = unreadable;
        d.budgets.set_following();
        let names: Vec<String> = d.lock_waiters().keys().cloned().collect();
        names.iter().for_each(|budget| d.wake(budget));
        Ok(listing.revision)
    }

    async fn apply(&self, batch: Vec<WatchEvent>) {
        let d = &self.0;
        let prefix = d.keys.budgets();
        for event in batch {
            let Some(name) = d.keys.name_of(&prefix, event.key()) else {
                continue;
            };
            match &event {
                WatchEvent::Put(kv) => match budgets::decode(kv) {
                    Ok(budget) => {
                        d.budgets.write().insert(name.to_owned(), Arc::new(budget));
                        d.lock_unreadable().remove(name);
                    }
                    Err(error) => {
                        warn!(%error, "a disruption budget does not decode; voluntary recreates wait until it is fixed or deleted");
                        d.budgets.write().remove(name);
                        d.lock_unreadable()
                            .insert(name.to_owned(), error.to_string());
                    }
                },
                WatchEvent::Delete { .. } => {
                    d.budgets.write().remove(name);
                    d.lock_unreadable().remove(name);
                }
            }
            d.wake(name);
            // Every waiter may have waited on this one while it did not decode.
            let all: Vec<String> = d.lock_waiters().keys().cloned().collect();
            all.iter().for_each(|budget| d.wake(budget));
        }
    }

    fn broken(&self) {
        self.0.budgets.set_broken();
    }
}

/// Follows `budget-slots/`.
#[derive(Debug)]
pub(crate) struct SlotMirror(pub(crate) Arc<Disruptions>);

impl Mirror for SlotMirror {
    type Error = StoreError;

    fn what(&self) -> &'static str {
        "budget_slots"
    }

    fn store(&self) -> &Arc<dyn Store> {
        &self.0.store
    }

    fn prefix(&self) -> String {
        self.0.keys.all_budget_slots()
    }

    async fn relist(&self) -> Result<Revision, StoreError> {
        let d = &self.0;
        let listing = d.store.list(&d.keys.all_budget_slots(), None).await?;
        let fresh: HashMap<String, HeldSlot> = listing
            .items
            .iter()
            .filter_map(|kv| budgets::slot_from_kv(&d.keys, kv))
            .map(|slot| (slot.key.clone(), slot))
            .collect();
        *d.write_slots() = fresh;
        let names: Vec<String> = d.lock_waiters().keys().cloned().collect();
        names.iter().for_each(|budget| d.wake(budget));
        Ok(listing.revision)
    }

    async fn apply(&self, batch: Vec<WatchEvent>) {
        let d = &self.0;
        for event in batch {
            match &event {
                WatchEvent::Put(kv) => {
                    if let Some(slot) = budgets::slot_from_kv(&d.keys, kv) {
                        d.write_slots().insert(slot.key.clone(), slot);
                    }
                }
                WatchEvent::Delete { key, .. } => d.forget_slot(key),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::records::budgets::Slot;

    fn held(key: &str, game: Option<&str>, lease: i64) -> HeldSlot {
        HeldSlot {
            budget: "casual".to_owned(),
            index: 0,
            key: key.to_owned(),
            slot: game.map(|game| Slot {
                game: game.to_owned(),
                holder: "c1".to_owned(),
                since: Timestamp::now(),
                reason: "restart".to_owned(),
            }),
            lease,
            create_revision: 7,
        }
    }

    #[test]
    fn a_slot_no_controller_holds_is_named_by_its_key() {
        let shown = holders(&[
            held("/p/budget-slots/casual/0", Some("g1"), 42),
            held("/p/budget-slots/casual/1", Some("g2"), 0),
            held("/p/budget-slots/casual/2", None, 42),
        ]);
        assert_eq!(
            shown,
            [
                "g1",
                "g2 by hand at /p/budget-slots/casual/1 (no controller holds it)",
                "an unreadable slot at /p/budget-slots/casual/2",
            ]
        );
    }
}
