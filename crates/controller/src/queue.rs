//! The work queue: which game to reconcile next.
//!
//! One entry per game (adding a game that is already waiting keeps the
//! earlier due time), never handed out twice at once (a game added while it
//! is being reconciled waits until that reconcile is done), and entries due
//! in the future (requeue-after, backoff, resync) wait until their time.
//! Workers call [`WorkQueue::next`], reconcile, then [`WorkQueue::done`].
//!
//! Two priorities: a game added with [`WorkQueue::add`] or
//! [`WorkQueue::add_after`] (a changed document, a Docker event, a requeue)
//! is handed out before any game queued in bulk with
//! [`WorkQueue::add_bulk`] or [`WorkQueue::add_bulk_all`] (the periodic
//! resync, the first listing, an event-stream reconnect), which only fill
//! the time left over. Without it a change made during a resync of 10,000
//! games waited behind all of them (seconds; BENCHMARKS.md, apply-latency). controller-runtime's priority
//! queue makes the same split.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Where a waiting game is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// In `due`, at this time.
    At(Instant),
    /// In `bulk`, with this sequence number (bulk entries are due at once,
    /// first in first out).
    Bulk(u64),
}

#[derive(Debug, Default)]
struct State {
    /// Waiting entries ordered by due time.
    due: BTreeSet<(Instant, String)>,
    /// Games queued in bulk, in the order they were queued.
    bulk: BTreeSet<(u64, String)>,
    next_bulk: u64,
    /// Where each waiting game is (one entry per game).
    waiting: HashMap<String, Waiting>,
    /// Games handed out and not yet done.
    running: HashSet<String>,
    /// Those of them that came from the bulk lane.
    running_bulk: HashSet<String>,
    /// Games backing off after a failure: not handed out before this time,
    /// whatever asks for them (a Docker event of the failed attempt itself,
    /// a watch event), so a failing game never retries in a hot loop.
    held: HashMap<String, Instant>,
    closed: bool,
}

impl State {
    fn unlink(&mut self, game: &str, waiting: Waiting) {
        match waiting {
            Waiting::At(due) => self.due.remove(&(due, game.to_owned())),
            Waiting::Bulk(seq) => self.bulk.remove(&(seq, game.to_owned())),
        };
    }
}

/// A deduplicating delay queue of game names.
#[derive(Debug, Default)]
pub(crate) struct WorkQueue {
    state: Mutex<State>,
    wake: Notify,
    /// How many bulk games may be handed out at once; `None`: no limit.
    bulk_slots: Option<usize>,
}

impl WorkQueue {
    /// An empty queue.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Hands out at most `slots` (at least 1) bulk games at once. With one
    /// slot fewer than there are workers, a resync never occupies every
    /// worker, so a change waits for none of its reconciles (BENCHMARKS.md,
    /// apply-latency).
    pub(crate) fn with_bulk_slots(mut self, slots: usize) -> Self {
        self.bulk_slots = Some(slots.max(1));
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent across every method, so a panic in a
        // holder (none can happen) would not corrupt it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Schedules `game` now.
    pub(crate) fn add(&self, game: &str) {
        self.add_after(game, Duration::ZERO);
    }

    /// Schedules `game` after `delay`; an earlier schedule already waiting
    /// wins. A bulk entry counts as due now: a later schedule leaves it
    /// alone, one due now takes it to the front.
    ///
    /// A game backing off after a failure ([`WorkQueue::hold`]) is not
    /// scheduled before its hold ends, whoever asks.
    pub(crate) fn add_after(&self, game: &str, delay: Duration) {
        let now = Instant::now();
        let mut due = now + delay;
        let mut state = self.lock();
        if state.closed {
            return;
        }
        if let Some(held) = state.held.get(game) {
            due = due.max(*held);
        }
        match state.waiting.get(game).copied() {
            Some(Waiting::At(existing)) if existing <= due => return,
            Some(Waiting::Bulk(_)) if due > now => return,
            Some(existing) => state.unlink(game, existing),
            None => {}
        }
        state.waiting.insert(game.to_owned(), Waiting::At(due));
        state.due.insert((due, game.to_owned()));
        drop(state);
        self.wake.notify_waiters();
    }

    /// Schedules each of `games` in bulk ([`WorkQueue::add_bulk`]): how
    /// every game is looked at again (a resync, the first listing, an
    /// event stream or an etcd session that was lost, a peer that went
    /// away), so that a change coming in meanwhile is not queued behind
    /// them all.
    pub(crate) fn add_bulk_all(&self, games: impl IntoIterator<Item = String>) {
        for game in games {
            self.add_bulk(&game);
        }
    }

    /// Schedules `game` now, behind every game scheduled with
    /// [`WorkQueue::add`]; a game already waiting keeps its place.
    pub(crate) fn add_bulk(&self, game: &str) {
        let mut state = self.lock();
        // A held game is already scheduled for the end of its hold.
        if state.closed || state.waiting.contains_key(game) || state.held.contains_key(game) {
            return;
        }
        let seq = state.next_bulk;
        state.next_bulk += 1;
        state.waiting.insert(game.to_owned(), Waiting::Bulk(seq));
        state.bulk.insert((seq, game.to_owned()));
        drop(state);
        self.wake.notify_waiters();
    }

    /// Waits for the next game that is due and not being reconciled, and
    /// marks it running. `None` once the queue is closed.
    #[cfg(test)]
    pub(crate) async fn next(&self) -> Option<String> {
        self.next_due().await.map(|(game, _)| game)
    }

    /// The next game that is due and not being reconciled, marked running,
    /// with how long the game had been due when
    /// it was handed out (`rtmanager_queue_wait_seconds`).
    pub(crate) async fn next_due(&self) -> Option<(String, Duration)> {
        loop {
            // Registered before looking, so an add between the look and the
            // wait is not missed.
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let earliest = {
                let mut state = self.lock();
                if state.closed {
                    return None;
                }
                let now = Instant::now();
                let ready = state
                    .due
                    .iter()
                    .take_while(|(due, _)| *due <= now)
                    .find(|(_, game)| !state.running.contains(game))
                    .map(|(due, game)| (Waiting::At(*due), game.clone(), now - *due));
                let bulk_slot_free = self
                    .bulk_slots
                    .is_none_or(|slots| state.running_bulk.len() < slots);
                let ready = ready.or_else(|| {
                    state
                        .bulk
                        .iter()
                        .filter(|_| bulk_slot_free)
                        .find(|(_, game)| !state.running.contains(game))
                        .map(|(seq, game)| (Waiting::Bulk(*seq), game.clone(), Duration::ZERO))
                });
                if let Some((waiting, game, waited)) = ready {
                    state.unlink(&game, waiting);
                    state.waiting.remove(&game);
                    state.running.insert(game.clone());
                    if matches!(waiting, Waiting::Bulk(_)) {
                        state.running_bulk.insert(game.clone());
                    }
                    return Some((game, waited));
                }
                state
                    .due
                    .iter()
                    .find(|(_, game)| !state.running.contains(game))
                    .map(|(due, _)| *due)
            };
            match earliest {
                Some(due) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(due) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Holds `game` back for `delay` (its backoff after a failure) and
    /// schedules it then.
    pub(crate) fn hold(&self, game: &str, delay: Duration) {
        let until = Instant::now() + delay;
        {
            let mut state = self.lock();
            state.held.insert(game.to_owned(), until);
            // A schedule made before the hold moves to the hold's end.
            if let Some(waiting) = state.waiting.get(game).copied() {
                state.unlink(game, waiting);
                state.waiting.remove(game);
            }
        }
        self.add_after(game, delay);
    }

    /// Schedules `game` now because its document changed (or was deleted): a hold for a
    /// failure ends, since the failure was the old document's. Should the new one fail too,
    /// the game's back-off goes on from where it was (the worker's delays keep growing).
    pub(crate) fn add_changed(&self, game: &str) {
        self.release(game);
        self.add(game);
    }

    /// Ends the hold of `game` (its reconcile succeeded).
    pub(crate) fn release(&self, game: &str) {
        self.lock().held.remove(game);
    }

    /// Marks `game` no longer running; if it was added meanwhile, it is
    /// handed out again when due.
    pub(crate) fn done(&self, game: &str) {
        {
            let mut state = self.lock();
            state.running.remove(game);
            state.running_bulk.remove(game);
        }
        self.wake.notify_waiters();
    }

    /// Games waiting (not counting those running).
    pub(crate) fn len(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Whether no game waits.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops handing out work: waiting workers get `None`.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    async fn next(queue: &WorkQueue) -> String {
        tokio::time::timeout(Duration::from_secs(3600), queue.next())
            .await
            .expect("a due game must be handed out")
            .expect("queue open")
    }

    /// A worker asking for the next game, in the background.
    fn waiter(queue: &Arc<WorkQueue>) -> tokio::task::JoinHandle<Option<String>> {
        let queue = queue.clone();
        tokio::spawn(async move { queue.next().await })
    }

    /// Asserts that `waiter` is still waiting 10 s (of paused time) later.
    async fn still_waiting(waiter: &tokio::task::JoinHandle<Option<String>>, why: &str) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!waiter.is_finished(), "{why}");
    }

    #[tokio::test(start_paused = true)]
    async fn queue_deduplicates_and_the_earliest_due_time_wins() {
        let queue = WorkQueue::new();
        queue.add_after("g1", Duration::from_secs(30));
        queue.add_after("g1", Duration::from_secs(5));
        queue.add_after("g1", Duration::from_secs(60));
        assert_eq!(queue.len(), 1);
        let started = Instant::now();
        assert_eq!(next(&queue).await, "g1");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        queue.done("g1");
        assert!(queue.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn queue_never_hands_out_one_game_twice_at_once() {
        let queue = Arc::new(WorkQueue::new());
        queue.add("g1");
        assert_eq!(next(&queue).await, "g1");
        // Added again while running: it waits for done, other games do not.
        queue.add("g1");
        queue.add("g2");
        assert_eq!(next(&queue).await, "g2");
        let waiter = waiter(&queue);
        still_waiting(&waiter, "g1 must not be handed out while running").await;
        queue.done("g1");
        assert_eq!(waiter.await.unwrap().as_deref(), Some("g1"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_game_is_not_handed_out_early_whoever_asks() {
        let queue = WorkQueue::new();
        queue.hold("g1", Duration::from_secs(8));
        queue.add("g1"); // e.g. the Docker event of the failed attempt
        queue.add_after("g1", Duration::from_secs(1));
        let started = Instant::now();
        assert_eq!(next(&queue).await, "g1");
        assert_eq!(started.elapsed(), Duration::from_secs(8));
        queue.done("g1");
        queue.release("g1");
        queue.add("g1");
        let again = Instant::now();
        assert_eq!(next(&queue).await, "g1");
        assert_eq!(again.elapsed(), Duration::ZERO, "released: at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_document_ends_the_hold_of_its_game() {
        let queue = WorkQueue::new();
        queue.hold("g1", Duration::from_secs(120));
        queue.add("g1"); // a Docker event: still held
        queue.add_changed("g1"); // the document was deleted, say
        let started = Instant::now();
        assert_eq!(next(&queue).await, "g1");
        assert_eq!(started.elapsed(), Duration::ZERO, "looked at at once");
    }

    #[tokio::test(start_paused = true)]
    async fn games_come_out_in_due_order() {
        let queue = WorkQueue::new();
        queue.add_after("late", Duration::from_secs(20));
        queue.add_after("soon", Duration::from_secs(10));
        queue.add("now");
        let order = [next(&queue).await, next(&queue).await, next(&queue).await];
        assert_eq!(order, ["now", "soon", "late"]);
    }

    #[tokio::test(start_paused = true)]
    async fn close_releases_waiting_workers() {
        let queue = Arc::new(WorkQueue::new());
        let waiter = waiter(&queue);
        tokio::task::yield_now().await;
        queue.close();
        assert_eq!(waiter.await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_is_handed_out_before_a_bulk_resync() {
        let queue = WorkQueue::new();
        for game in ["r1", "r2", "r3"] {
            queue.add_bulk(game);
        }
        queue.add("changed");
        assert_eq!(next(&queue).await, "changed");
        assert_eq!(next(&queue).await, "r1", "bulk entries keep their order");
        // A requeue that is due later leaves a bulk entry where it is; one
        // due now takes it to the front.
        queue.add_after("r3", Duration::from_secs(60));
        queue.add("r3");
        assert_eq!(next(&queue).await, "r3");
        assert_eq!(next(&queue).await, "r2");
        assert!(queue.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn bulk_adds_never_duplicate_or_delay_a_waiting_game() {
        let queue = WorkQueue::new();
        queue.add_after("g1", Duration::from_secs(5));
        queue.add_bulk("g1");
        queue.add_bulk("g2");
        queue.add_bulk("g2");
        assert_eq!(queue.len(), 2);
        assert_eq!(next(&queue).await, "g2");
        let started = Instant::now();
        assert_eq!(next(&queue).await, "g1");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_of_a_due_game_is_reported() {
        let queue = WorkQueue::new();
        queue.add("g1");
        tokio::time::advance(Duration::from_millis(30)).await;
        let (game, waited) = queue.next_due().await.expect("queue open");
        assert_eq!(game, "g1");
        assert_eq!(waited, Duration::from_millis(30));
    }

    #[tokio::test(start_paused = true)]
    async fn bulk_work_leaves_a_worker_free_for_changes() {
        let queue = Arc::new(WorkQueue::new().with_bulk_slots(1));
        queue.add_bulk("r1");
        queue.add_bulk("r2");
        assert_eq!(next(&queue).await, "r1");
        let waiter = waiter(&queue);
        still_waiting(&waiter, "a second bulk game must wait for the first").await;
        queue.add("changed");
        assert_eq!(waiter.await.unwrap().as_deref(), Some("changed"));
        queue.done("r1");
        assert_eq!(next(&queue).await, "r2");
    }
}
