//! The work queue: which game to reconcile next.
//!
//! One entry per game (adding a game that is already waiting keeps the
//! earlier due time), never handed out twice at once (a game added while it
//! is being reconciled waits until that reconcile is done), and entries due
//! in the future (requeue-after, backoff, resync) wait until their time.
//! Workers call [`WorkQueue::next`], reconcile, then [`WorkQueue::done`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug, Default)]
struct State {
    /// Waiting entries ordered by due time.
    due: BTreeSet<(Instant, String)>,
    /// The due time of each waiting game (one entry per game).
    waiting: HashMap<String, Instant>,
    /// Games handed out and not yet done.
    running: HashSet<String>,
    closed: bool,
}

/// A deduplicating delay queue of game names.
#[derive(Debug, Default)]
pub struct WorkQueue {
    state: Mutex<State>,
    wake: Notify,
}

impl WorkQueue {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent across every method, so a panic in a
        // holder (none can happen) would not corrupt it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Schedules `game` now.
    pub fn add(&self, game: &str) {
        self.add_after(game, Duration::ZERO);
    }

    /// Schedules `game` after `delay`; an earlier schedule already waiting
    /// wins.
    pub fn add_after(&self, game: &str, delay: Duration) {
        let due = Instant::now() + delay;
        let mut state = self.lock();
        if state.closed {
            return;
        }
        match state.waiting.get(game).copied() {
            Some(existing) if existing <= due => return,
            Some(existing) => {
                state.due.remove(&(existing, game.to_owned()));
            }
            None => {}
        }
        state.waiting.insert(game.to_owned(), due);
        state.due.insert((due, game.to_owned()));
        drop(state);
        self.wake.notify_waiters();
    }

    /// Waits for the next game that is due and not being reconciled, and
    /// marks it running. `None` once the queue is closed.
    pub async fn next(&self) -> Option<String> {
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
                    .find(|(due, game)| *due <= now && !state.running.contains(game))
                    .cloned();
                if let Some(entry) = ready {
                    state.due.remove(&entry);
                    state.waiting.remove(&entry.1);
                    state.running.insert(entry.1.clone());
                    return Some(entry.1);
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

    /// Marks `game` no longer running; if it was added meanwhile, it is
    /// handed out again when due.
    pub fn done(&self, game: &str) {
        self.lock().running.remove(game);
        self.wake.notify_waiters();
    }

    /// Games waiting (not counting those running).
    pub fn len(&self) -> usize {
        self.lock().waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops handing out work: waiting workers get `None`.
    pub fn close(&self) {
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
        let waiter = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.next().await })
        };
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(
            !waiter.is_finished(),
            "g1 must not be handed out while running"
        );
        queue.done("g1");
        assert_eq!(waiter.await.unwrap().as_deref(), Some("g1"));
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
        let waiter = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.next().await })
        };
        tokio::task::yield_now().await;
        queue.close();
        assert_eq!(waiter.await.unwrap(), None);
    }
}
