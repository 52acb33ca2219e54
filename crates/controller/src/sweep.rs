//! The periodic sweep: every resync period (jittered) it queues every game
//! again, so drift that no event reported is repaired, and it looks at the
//! Docker host and at the status records for what no document explains:
//!
//! - a container labelled with this installation's prefix whose game has
//!   no document is queued for removal once it stayed orphaned for the GC
//!   grace period (a document being created meanwhile saves it);
//! - a container claiming a game (labelled with its name, but not named
//!   `rtm-<game>`) is named back when the game has none (renamed by hand),
//!   or removed as a duplicate, under the game's lease and in its history;
//! - a status record of this node's game without a document (deleted while
//!   no controller ran) is queued so the reconcile clears it. The status
//!   cache answers that when it follows etcd; otherwise the records are
//!   listed.
//!
//! Either way the game goes through the one removal (lifecycle/remove.rs),
//! which takes the game's own volumes with it under the rules of
//! lifecycle/volumes.rs, noted in its history entry.
//!
//! On its own, slower cadence it also removes the history of deleted games
//! ([`sweep_history`]): a game with history but no document, no status and
//! no container of this installation, whose newest entry is older than the
//! history grace, loses its whole history, under the game's lease and in a
//! transaction that compares the document and the status are still absent
//! (a game re-created meanwhile keeps it). That deletion cannot be recorded
//! in the history it deletes: it is logged and counted
//! (`rtmanager_history_removed_total`) instead.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::lifecycle::{Lifecycle, OpRequest, new_id};
use crate::metrics::Metrics;
use crate::runtime::container_name;
use rtm_core::model::OpSource;
use rtm_core::records::history::HistoryEntry;
use rtm_core::store::{Compare, Keys, Store, StoreError, Txn};

use super::backoff::jitter;
use super::desired::DesiredCache;
use super::queue::WorkQueue;
use super::statuses::{StatusCache, of_node};

/// Keys read per page of the history scan, without values: a history key
/// is ~60 bytes, so a page is a few KiB; the scan jumps over the rest of
/// each game's entries, so a page covers up to this many games.
const HISTORY_SCAN_PAGE: usize = 128;

/// Entries deleted per transaction: a game's log is bounded by the
/// retention (100 by default, one transaction); a larger retention is
/// deleted oldest first in ranges of this many, each its own revision, so
/// no one transaction grows with the operator's choice.
const HISTORY_DELETE_BATCH: u64 = 1000;

/// Newest entries read to find when a log was last active: an outer
/// operation and the inner ones it appended (a restart: stop, start) end in
/// the reverse order of their sequence numbers.
const GRACE_LOOKBACK: usize = 8;

/// The longest pause between two history scans: a deleted game's history
/// outlives its grace by at most about this (plus one scan).
const HISTORY_SCAN_MAX_PERIOD: Duration = Duration::from_secs(3600);

/// Runs until `shutdown`: one sweep per (jittered) `period`, and, unless
/// `history_grace` is zero (history kept forever), one history scan per
/// [`history_period`].
#[allow(clippy::too_many_arguments)] // the sweep's collaborators and its three periods
pub(crate) async fn run(
    lifecycle: Lifecycle,
    cache: Arc<DesiredCache>,
    statuses: Arc<StatusCache>,
    queue: Arc<WorkQueue>,
    period: Duration,
    gc_grace: Duration,
    history_grace: Duration,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    cache.wait_ready().await;
    tokio::join!(
        resync(
            &lifecycle, &cache, &statuses, &queue, period, gc_grace, &shutdown
        ),
        remove_deleted_histories(
            &lifecycle,
            &cache,
            &statuses,
            period,
            history_grace,
            &metrics,
            &shutdown
        ),
    );
}

/// The resync and garbage collection, every (jittered) `period`.
async fn resync(
    lifecycle: &Lifecycle,
    cache: &DesiredCache,
    statuses: &StatusCache,
    queue: &WorkQueue,
    period: Duration,
    gc_grace: Duration,
    shutdown: &CancellationToken,
) {
    let mut orphans: HashMap<String, Instant> = HashMap::new();
    loop {
        sweep(lifecycle, cache, statuses, queue, gc_grace, &mut orphans).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(jitter(period)) => {}
        }
    }
}

async fn sweep(
    lifecycle: &Lifecycle,
    cache: &DesiredCache,
    statuses: &StatusCache,
    queue: &WorkQueue,
    gc_grace: Duration,
    orphans: &mut HashMap<String, Instant>,
) {
    // In bulk: behind any change that comes in meanwhile (queue.rs).
    queue.add_bulk_all(cache.games());
    let runtime = lifecycle.runtime();
    match runtime.list_managed().await {
        Ok(containers) => {
            let now = Instant::now();
            let mut seen_orphans = Vec::new();
            let mut misnamed = Vec::new();
            for container in containers {
                if !container.belongs_to(lifecycle.prefix()) {
                    continue; // another installation's, or hand-made: never ours to judge
                }
                let Some(game) = container.game().map(str::to_owned) else {
                    continue;
                };
                if container.name.trim_start_matches('/')
                    != container_name(lifecycle.prefix(), &game)
                {
                    if !misnamed.contains(&game) {
                        misnamed.push(game);
                    }
                    continue;
                }
                if cache.contains(&game) {
                    continue;
                }
                let first_seen = *orphans.entry(game.clone()).or_insert(now);
                if now.duration_since(first_seen) >= gc_grace {
                    info!(%game, container = %container.id, "garbage-collecting a container without a document");
                    cache.mark_gone(&game);
                    queue.add(&game);
                }
                seen_orphans.push(game);
            }
            orphans.retain(|game, _| seen_orphans.contains(game));
            for game in misnamed {
                reclaim(lifecycle, &game).await;
                queue.add(&game);
            }
        }
        Err(error) => warn!(%error, "listing managed containers failed; the sweep skips Docker"),
    }
    for game in statuses_without_document(lifecycle, cache, statuses).await {
        cache.mark_gone(&game);
        queue.add(&game);
    }
}

/// The games of this node (or of none) with a status record but no
/// document: from the status cache while it follows etcd, else from one
/// listing of every record.
async fn statuses_without_document(
    lifecycle: &Lifecycle,
    cache: &DesiredCache,
    statuses: &StatusCache,
) -> Vec<String> {
    let documented = |game: &str| cache.contains(game);
    if let Some(games) = statuses.without_document(documented, lifecycle.node()) {
        return games;
    }
    let keys = lifecycle.session().keys();
    let listing = match lifecycle
        .session()
        .store()
        .list(&keys.statuses(), None)
        .await
    {
        Ok(listing) => listing,
        Err(error) => {
            warn!(%error, "listing status records failed; the sweep skips them");
            return Vec::new();
        }
    };
    listing
        .items
        .iter()
        .filter_map(|kv| {
            let game = keys.name_of(&keys.statuses(), &kv.key)?;
            let status = rtm_core::records::status::from_kv(kv).0.value;
            (!documented(game) && of_node(&status, lifecycle.node())).then(|| game.to_owned())
        })
        .collect()
}

/// Containers claiming `game` under another name than `rtm-<game>`: one
/// renamed by hand is named back when the game has no container, every
/// other one is removed; under the game's lease, each recorded in its
/// history (lifecycle/reclaim.rs).
async fn reclaim(lifecycle: &Lifecycle, game: &str) {
    let lease = match lifecycle.acquire(game, &new_id()).await {
        Ok(lease) => lease,
        Err(error) => {
            warn!(%game, %error, "cannot take the lease to reclaim a renamed container; next sweep");
            return;
        }
    };
    let request = OpRequest::new(game, OpSource::Reconcile);
    for result in lifecycle.reclaim_under(&lease, &request).await {
        info!(%game, op_kind = %result.op_kind, outcome = %result.outcome, "reclaimed a container claiming the game under another name");
    }
    if let Err(error) = lease.release().await {
        warn!(%game, %error, "releasing the game lease failed");
    }
}

/// How often the history is scanned for deleted games: a quarter of the
/// grace (so a history outlives it by at most a quarter), at most hourly
/// (a scan reads every game's newest history entry once), never more often
/// than the resync.
pub(crate) fn history_period(grace: Duration, resync: Duration) -> Duration {
    (grace / 4).min(HISTORY_SCAN_MAX_PERIOD).max(resync)
}

/// One history scan per [`history_period`], until `shutdown`; nothing when
/// `grace` is zero.
async fn remove_deleted_histories(
    lifecycle: &Lifecycle,
    cache: &DesiredCache,
    statuses: &StatusCache,
    resync: Duration,
    grace: Duration,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) {
    if grace.is_zero() {
        return;
    }
    let period = history_period(grace, resync);
    loop {
        let removed =
            sweep_history(lifecycle, cache, Some(statuses), grace, SystemTime::now()).await;
        metrics.history_removed.inc_by(removed.len() as u64);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(jitter(period)) => {}
        }
    }
}

/// Removes the history of every deleted game whose newest entry ended
/// more than `grace` before `now`; returns those games. A game counts as
/// deleted when it has no document (in the cache, and in etcd when the
/// deletion is written), no status record (another node's game keeps its
/// record until that node removed it) and no container of this
/// installation on this host (a removal still to come). Errors end the scan
/// early; the next one starts over.
pub(crate) async fn sweep_history(
    lifecycle: &Lifecycle,
    cache: &DesiredCache,
    statuses: Option<&StatusCache>,
    grace: Duration,
    now: SystemTime,
) -> Vec<String> {
    let Some(containers) = games_with_containers(lifecycle).await else {
        return Vec::new();
    };
    // Deleted as far as this node can tell; the removal checks etcd again.
    let deleted = |game: &str| {
        !cache.contains(game)
            && !containers.contains(game)
            && !statuses
                .and_then(|s| s.get(game))
                .is_some_and(|s| s.exists())
    };
    let session = lifecycle.session();
    let (store, keys) = (session.store(), session.keys());
    let histories = keys.histories();
    let mut from = histories.clone();
    let mut removed = Vec::new();
    let mut scanned = 0usize;
    loop {
        let page = match store.keys_from(&histories, &from, HISTORY_SCAN_PAGE).await {
            Ok(page) => page,
            Err(error) => {
                warn!(%error, "scanning the history failed; the history sweep waits for the next round");
                return removed;
            }
        };
        let Some(last) = page.last() else {
            break;
        };
        from = next_page_start(keys, last);
        let games = first_key_of_each_game(keys, &page);
        scanned += games.len();
        for (game, oldest) in games.into_iter().filter(|(game, _)| deleted(game)) {
            let oldest = keys.history_seq(game, oldest).unwrap_or(0);
            match remove_history(lifecycle, game, oldest, grace, now).await {
                Ok(true) => removed.push(game.to_owned()),
                Ok(false) => {}
                Err(error) => {
                    warn!(%game, %error, "removing a deleted game's history failed; next round");
                }
            }
        }
        if page.len() < HISTORY_SCAN_PAGE {
            break;
        }
    }
    debug!(
        games = scanned,
        removed = removed.len(),
        "history sweep done"
    );
    removed
}

/// The games of this installation that have a container on this host;
/// `None` (logged) when Docker cannot say.
async fn games_with_containers(lifecycle: &Lifecycle) -> Option<HashSet<String>> {
    match lifecycle.runtime().list_managed().await {
        Ok(containers) => Some(
            containers
                .iter()
                .filter(|c| c.belongs_to(lifecycle.prefix()))
                .filter_map(|c| c.game().map(str::to_owned))
                .collect(),
        ),
        Err(error) => {
            warn!(%error, "listing managed containers failed; the history sweep waits for the next round");
            None
        }
    }
}

/// Where the history scan's next page starts after a page ending at
/// `last`: after every entry of its game (`history/<game>0` sorts right
/// after `history/<game>/...`), or right after a key that names no game
/// (written by hand).
fn next_page_start(keys: &Keys, last: &str) -> String {
    match keys.history_game(last) {
        Some(game) => format!("{}0", keys.history(game).trim_end_matches('/')),
        None => format!("{last}\0"),
    }
}

/// Each game of a page of history keys, with its first (oldest) key there.
fn first_key_of_each_game<'a>(keys: &Keys, page: &'a [String]) -> Vec<(&'a str, &'a str)> {
    let mut games: Vec<(&str, &str)> = Vec::new();
    for key in page {
        match keys.history_game(key) {
            Some(game) if games.last().is_none_or(|(seen, _)| *seen != game) => {
                games.push((game, key));
            }
            Some(_) => {}
            None => debug!(%key, "a key under history/ that names no game; left alone"),
        }
    }
    games
}

/// When the history's newest entry last changed: when it finished (or the
/// last of its folded repeats did), else when it started.
fn last_activity(entry: &HistoryEntry) -> SystemTime {
    [entry.finished_at, entry.last_repeated_at]
        .into_iter()
        .flatten()
        .map(|t| t.system_time())
        .fold(entry.started_at.system_time(), SystemTime::max)
}

/// Why a history removal stopped.
#[derive(Debug, thiserror::Error)]
enum RemoveError {
    #[error(transparent)]
    Store(#[from] rtm_core::store::StoreError),
    #[error(transparent)]
    Lease(#[from] crate::lease::LeaseError),
}

/// Removes `game`'s whole history if its newest entry is older than the
/// grace and the game is still deleted, under the game's lease. Returns
/// whether it did.
async fn remove_history(
    lifecycle: &Lifecycle,
    game: &str,
    oldest: u64,
    grace: Duration,
    now: SystemTime,
) -> Result<bool, RemoveError> {
    let session = lifecycle.session();
    let (store, keys) = (session.store(), session.keys());
    let Some((seq, since)) = newest_activity(store.as_ref(), keys, game).await? else {
        return Ok(false);
    };
    if now.duration_since(since).unwrap_or_default() < grace {
        return Ok(false);
    }
    // Still deleted, and nothing appended since: checked when the lease is
    // taken and again in every delete.
    let still_deleted = || {
        [
            Compare::Absent {
                key: keys.gameruntime(game),
            },
            Compare::Absent {
                key: keys.status(game),
            },
            Compare::Absent {
                key: keys.history_entry(game, seq.saturating_add(1)),
            },
        ]
    };
    let Some(lease) = session
        .acquire_if(game, &new_id(), still_deleted().to_vec())
        .await?
    else {
        return Ok(false); // busy (an operation runs), or re-created
    };
    let guarded = |txn: Txn| {
        still_deleted()
            .into_iter()
            .fold(txn.when(lease.fence().compare()), Txn::when)
    };
    // On an error the lease is dropped, which releases it in the background.
    let applied = delete_history(store.as_ref(), keys, game, oldest..=seq, guarded).await?;
    if let Err(error) = lease.release().await {
        warn!(%game, %error, "releasing the game lease failed");
    }
    if applied {
        let idle = humantime::format_duration(Duration::from_secs(
            now.duration_since(since).unwrap_or_default().as_secs(),
        ));
        info!(%game, oldest, newest = seq, %idle, "removed the history of a deleted game past the history grace");
    }
    Ok(applied)
}

/// The sequence number of `game`'s newest history entry and when the log
/// was last active; `None` when there is nothing to measure the grace from.
async fn newest_activity(
    store: &dyn Store,
    keys: &Keys,
    game: &str,
) -> Result<Option<(u64, SystemTime)>, StoreError> {
    let newest = store.newest(&keys.history(game), GRACE_LOOKBACK).await?;
    let Some(seq) = newest
        .first()
        .and_then(|kv| keys.history_seq(game, &kv.key))
    else {
        return Ok(None); // removed meanwhile (a peer's sweep), or a key written by hand
    };
    // The log's last activity: an outer entry (a removal, a restart) ends
    // after the inner ones appended behind it, so a few newest are read.
    let Some(since) = newest
        .iter()
        .filter_map(|kv| serde_json::from_slice::<HistoryEntry>(&kv.value).ok())
        .map(|entry| last_activity(&entry))
        .max()
    else {
        // No time to measure the grace from: kept, like any record garbled
        // by hand, for the operator to look at.
        debug!(%game, "the newest history entries do not decode; kept");
        return Ok(None);
    };
    Ok(Some((seq, since)))
}

/// Deletes the history entries `seqs` of `game` (and whatever else is
/// under its history) in transactions `guarded` adds its conditions to;
/// returns whether every one applied.
async fn delete_history(
    store: &dyn Store,
    keys: &Keys,
    game: &str,
    seqs: std::ops::RangeInclusive<u64>,
    guarded: impl Fn(Txn) -> Txn,
) -> Result<bool, StoreError> {
    // Oldest first, in bounded ranges; the last transaction (which holds
    // the newest entry, the grace's clock) deletes whatever is left.
    let (mut start, seq) = seqs.into_inner();
    let mut applied = true;
    while applied && seq.saturating_sub(start) >= HISTORY_DELETE_BATCH {
        let end = start + HISTORY_DELETE_BATCH;
        let txn = guarded(Txn::new()).delete_range(
            keys.history_entry(game, start),
            keys.history_entry(game, end),
        );
        applied = store.txn(txn).await?.succeeded;
        start = end;
    }
    if applied {
        // The kept output of its previous container goes with the history that names it.
        let txn = guarded(Txn::new())
            .delete_prefix(keys.history(game))
            .delete(keys.previous(game));
        applied = store.txn(txn).await?.succeeded;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::Desired;
    use crate::fixture;

    use rtm_core::model::parse::parse_documents;
    use rtm_core::model::{GameRuntime, OpKind, Timestamp};
    use rtm_core::records::history::History;
    use rtm_core::store::{Keys, Store};

    const IMAGE: &str = "rtmanager-test/engine:1";
    const GRACE: Duration = Duration::from_secs(24 * 3600);

    use crate::fixture::World;

    async fn world() -> World {
        fixture::world(5000).await
    }

    fn game(name: &str) -> GameRuntime {
        let yaml = format!(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n\
             spec:\n  image: {IMAGE}\n  stopTimeout: 1s\n"
        );
        parse_documents(&yaml).unwrap().remove(0)
    }

    impl World {
        fn lifecycle(&self) -> &Lifecycle {
            self.reconciler.lifecycle()
        }

        /// Writes the document to etcd and, unless `cache` is false (a
        /// cache lagging behind etcd), tells the cache.
        async fn create(&self, name: &str, cache: bool) {
            let stored = self.documents.create(&game(name)).await.unwrap();
            if cache {
                self.cache
                    .apply(name.to_owned(), Some(Desired::Valid(Box::new(stored))));
            }
        }

        /// A game started, then deleted and removed by the controller.
        async fn deleted_game(&self, name: &str) {
            self.create(name, true).await;
            self.converge(name).await;
            self.delete(name).await;
            self.converge(name).await;
        }

        /// `entries` finished entries of `name` written straight into its
        /// log, the newest finished at `finished`.
        async fn old_history(&self, name: &str, entries: usize, finished: SystemTime) {
            let history = History::new(self.store.clone(), Keys::default(), 5000);
            let at = Timestamp::from_unix_seconds(
                finished
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_secs(),
            );
            for i in 0..entries {
                let mut entry = HistoryEntry::begin(
                    name,
                    &format!("op-{i}"),
                    OpKind::Start,
                    OpSource::Reconcile,
                );
                entry.succeed();
                entry.started_at = at;
                entry.finished_at = Some(at);
                history.append(None, entry).await.unwrap();
            }
        }

        async fn history_keys(&self, name: &str) -> usize {
            self.store
                .list(&Keys::default().history(name), None)
                .await
                .unwrap()
                .items
                .len()
        }

        async fn sweep_at(&self, now: SystemTime) -> Vec<String> {
            sweep_history(self.lifecycle(), &self.cache, None, GRACE, now).await
        }
    }

    fn days_ago(days: u64) -> SystemTime {
        SystemTime::now() - Duration::from_secs(days * 24 * 3600)
    }

    #[tokio::test]
    async fn a_deleted_games_history_is_removed_once_its_grace_has_passed() {
        let w = world().await;
        w.deleted_game("g1").await;
        let kept = w.history_keys("g1").await;
        assert!(kept >= 2, "a start and a remove: {kept}");
        // As a removal of a container that had exited leaves it.
        let previous = Keys::default().previous("g1");
        w.store
            .txn(rtm_core::store::Txn::new().put(previous.clone(), b"{}".to_vec()))
            .await
            .unwrap();

        let now = SystemTime::now();
        assert!(w.sweep_at(now).await.is_empty(), "within the grace");
        assert_eq!(w.history_keys("g1").await, kept);

        let later = now + GRACE + Duration::from_secs(1);
        assert_eq!(w.sweep_at(later).await, ["g1"]);
        assert_eq!(w.history_keys("g1").await, 0);
        assert!(
            !w.store.dump().contains_key(&previous),
            "the kept output goes with the history"
        );
        assert!(
            w.store.dump().keys().all(|k| !k.contains("/leases/")),
            "the game's lease is released: {:?}",
            w.store.dump().keys().collect::<Vec<_>>()
        );
        assert!(w.sweep_at(later).await.is_empty(), "nothing left to remove");
    }

    #[tokio::test]
    async fn a_game_created_again_keeps_its_history_past_the_grace() {
        let w = world().await;
        w.deleted_game("g1").await;
        w.create("g1", true).await;
        let kept = w.history_keys("g1").await;
        let later = SystemTime::now() + GRACE * 2;
        assert!(w.sweep_at(later).await.is_empty());
        assert_eq!(w.history_keys("g1").await, kept);

        // Its new operations continue the same log.
        w.converge("g1").await;
        let history = w.lifecycle().history().recent("g1", 100).await.unwrap();
        assert_eq!(history[0].op_kind, OpKind::Start);
        assert_eq!(history[0].seq as usize, kept + 1);
    }

    #[tokio::test]
    async fn a_document_the_cache_has_not_seen_yet_still_saves_the_history() {
        let w = world().await;
        w.old_history("g1", 3, days_ago(2)).await;
        // Re-created in etcd; the watch has not told the cache yet.
        w.create("g1", false).await;
        assert!(w.sweep_at(SystemTime::now()).await.is_empty());
        assert_eq!(w.history_keys("g1").await, 3);
        assert!(
            w.store.dump().keys().all(|k| !k.contains("/leases/")),
            "no lease left behind"
        );
    }

    #[tokio::test]
    async fn a_game_whose_removal_is_still_to_come_keeps_its_history() {
        let w = world().await;
        w.create("g1", true).await;
        w.converge("g1").await;
        // Deleted, not reconciled yet: its container and status remain.
        w.delete("g1").await;
        let later = SystemTime::now() + GRACE * 2;
        assert!(w.sweep_at(later).await.is_empty(), "its container remains");
        // A status record alone (another node's game, its node away) keeps it too.
        w.runtime
            .remove_by_hand(&container_name(rtm_core::store::keys::DEFAULT_PREFIX, "g1"))
            .unwrap();
        assert!(w.sweep_at(later).await.is_empty(), "its status remains");
        assert!(w.history_keys("g1").await >= 1);
    }

    #[tokio::test]
    async fn an_operation_running_on_the_game_keeps_its_history() {
        let w = world().await;
        w.old_history("g1", 2, days_ago(2)).await;
        let lease = w.lifecycle().acquire("g1", "busy-op").await.unwrap();
        assert!(w.sweep_at(SystemTime::now()).await.is_empty());
        assert_eq!(w.history_keys("g1").await, 2);
        lease.release().await.unwrap();
        assert_eq!(w.sweep_at(SystemTime::now()).await, ["g1"]);
    }

    #[tokio::test]
    async fn a_long_history_is_deleted_in_bounded_transactions() {
        let w = world().await;
        w.old_history("g1", 2500, days_ago(2)).await;
        let before = w.store.requests();
        assert_eq!(w.sweep_at(SystemTime::now()).await, ["g1"]);
        assert_eq!(w.history_keys("g1").await, 0);
        // The lease taken, two ranges of 1,000, the rest, the lease released.
        assert_eq!(w.store.requests().txns - before.txns, 5);
    }

    #[tokio::test]
    async fn the_scan_covers_many_games_and_leaves_live_ones_and_odd_keys_alone() {
        let w = world().await;
        for i in 0..300 {
            w.old_history(&format!("g{i:03}"), 2, days_ago(2)).await;
        }
        // A live game in their midst, with a long log, and keys written by hand.
        w.create("g150-live", true).await;
        w.old_history("g150-live", 200, days_ago(2)).await;
        let odd = ["/rtmanager/history/Odd/1", "/rtmanager/history/g"];
        for key in odd {
            w.store.create(key, b"x".to_vec(), None).await.unwrap();
        }
        let before = w.store.requests();
        let removed = w.sweep_at(SystemTime::now()).await;
        assert_eq!(removed.len(), 300);
        let left: Vec<String> = w
            .store
            .dump()
            .into_keys()
            .filter(|k| k.starts_with("/rtmanager/history/"))
            .collect();
        assert_eq!(left.len(), 200 + odd.len(), "{:?}", &left[..3]);
        assert!(
            left.iter()
                .all(|k| k.contains("g150-live") || odd.contains(&k.as_str()))
        );
        // Pages of keys skip each game's entries: about one page per 64
        // games of two entries, not one per key.
        let reads = w.store.requests().reads - before.reads;
        assert!(reads < 300 + 20, "{reads} reads for 301 games");
    }

    #[tokio::test]
    async fn a_failure_repeated_until_recently_counts_from_its_last_repeat() {
        let w = world().await;
        w.old_history("g1", 1, days_ago(3)).await;
        let key = Keys::default().history_entry("g1", 1);
        let kv = w.store.get(&key).await.unwrap().unwrap();
        let mut entry: HistoryEntry = serde_json::from_slice(&kv.value).unwrap();
        entry.fail(rtm_core::ErrorCode::Conflict, "again and again");
        entry.finished_at = Some(Timestamp::from_unix_seconds(0));
        entry.repeated = 40;
        entry.last_repeated_at = Some(Timestamp::now());
        w.store
            .update(&key, serde_json::to_vec(&entry).unwrap(), kv.mod_revision)
            .await
            .unwrap();
        assert!(w.sweep_at(SystemTime::now()).await.is_empty());
        assert_eq!(w.history_keys("g1").await, 1);
    }

    #[tokio::test]
    async fn an_outer_entry_that_ended_after_its_inner_ones_sets_the_grace_clock() {
        let w = world().await;
        // A removal (seq 1) that finished just now, and its inner stop (seq 2)
        // that finished long ago.
        w.old_history("g1", 2, days_ago(2)).await;
        let key = Keys::default().history_entry("g1", 1);
        let kv = w.store.get(&key).await.unwrap().unwrap();
        let mut outer: HistoryEntry = serde_json::from_slice(&kv.value).unwrap();
        outer.op_kind = OpKind::Remove;
        outer.finished_at = Some(Timestamp::now());
        w.store
            .update(&key, serde_json::to_vec(&outer).unwrap(), kv.mod_revision)
            .await
            .unwrap();
        assert!(w.sweep_at(SystemTime::now()).await.is_empty());
        assert_eq!(w.history_keys("g1").await, 2);
    }

    #[test]
    fn the_history_is_scanned_every_quarter_grace_between_the_resync_and_an_hour() {
        let resync = Duration::from_secs(60);
        let hour = Duration::from_secs(3600);
        assert_eq!(history_period(Duration::from_secs(24 * 3600), resync), hour);
        assert_eq!(history_period(Duration::from_secs(3600), resync), hour / 4);
        assert_eq!(history_period(Duration::from_secs(2), resync), resync);
        assert_eq!(
            history_period(Duration::from_secs(2), Duration::from_secs(7200)),
            Duration::from_secs(7200)
        );
    }
}
