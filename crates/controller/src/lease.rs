//! Per-game leases: the exclusive right to operate on one game, across
//! every controller sharing an etcd.
//!
//! A controller holds one etcd lease for its whole life (its [`Session`]),
//! kept alive by one background task every TTL/3. A game's lease is the key
//! `leases/<game>`, created only if absent and attached to the session's
//! etcd lease, so a crashed controller's games free themselves after one
//! TTL. The key's create revision is the [`Fence`](rtm_core::records::lease::Fence): every write made under
//! the lease compares it in the same transaction, so a controller whose
//! lease expired (a long GC pause, SIGSTOP, a partition) cannot overwrite
//! the work of the one that took over.
//!
//! etcd's Lock API is not used: its server-side lease is never kept alive
//! by the client and silently expires after 60 s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::metrics::Metrics;
use rtm_core::error_code::ErrorCode;
use rtm_core::model::GameRuntimeStatus;
use rtm_core::records::Versioned;
use rtm_core::records::lease::{Fence, Heartbeat, LeaseRecord};
use rtm_core::records::status::{StatusError, StatusRecord, StatusStore};
use rtm_core::store::{Compare, Keys, LeaseId, Revision, Store, StoreError, Txn};

/// How long a keepalive may keep failing before the session counts as lost:
/// the lease is granted for TTL, renewed every TTL/3, so two renewals can
/// fail before etcd expires it.
const KEEPALIVE_DIVISOR: u32 = 3;

/// Pause between keepalive attempts after a failure.
const KEEPALIVE_RETRY: Duration = Duration::from_millis(500);

/// Why a lease could not be taken or kept.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LeaseError {
    /// Another operation holds the game's lease; retry later.
    #[error("another lifecycle operation is in progress for this game (lease held by {holder})")]
    Busy {
        /// The game asked for.
        game: String,
        /// The controller holding it (its session's holder name).
        holder: String,
    },
    /// The lease was held and is gone: nothing more may be written under it.
    #[error("the lease of game {game} was lost (expired or taken over); the operation stopped")]
    Lost {
        /// The game whose lease was lost.
        game: String,
    },
    /// The session's own etcd lease is gone, and with it every game lease.
    #[error("the controller's etcd session is lost")]
    SessionLost,
    /// etcd failed or could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl rtm_core::Coded for LeaseError {
    fn code(&self) -> ErrorCode {
        match self {
            LeaseError::Busy { .. } => ErrorCode::Conflict,
            LeaseError::Lost { .. } | LeaseError::SessionLost => ErrorCode::LeaseLost,
            LeaseError::Store(e) => e.code(),
        }
    }
}

/// Slack an observer adds to a holder's TTL before counting its unchanged
/// heartbeat dead: the holder rewrites it every TTL/3 and counts itself
/// lost after TTL − TTL/6 without a rewrite, so a live holder never stands
/// still this long; the slack covers etcd's and the watch's latency.
const STALE_SLACK: Duration = Duration::from_secs(1);

/// A peer's heartbeat as this session last saw it change, on this
/// process's monotonic clock (wall clocks of different hosts are never
/// compared).
#[derive(Debug, Clone, Copy)]
struct PeerSeen {
    lease: LeaseId,
    mod_revision: Revision,
    since: tokio::time::Instant,
}

/// Whether a game lease key is held by a live controller.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Holder {
    Live,
    /// No live controller holds the key (written by hand, no record, no
    /// heartbeat on its lease): the key alone may be deleted.
    Forged(String),
    /// The holder's etcd lease is alive but its heartbeat stands still: the
    /// holder is dead and something else keeps its lease alive. The lease
    /// is revoked, freeing every key on it.
    Stale {
        reason: String,
        lease: LeaseId,
    },
}

/// A controller's etcd session: one etcd lease, kept alive in the
/// background, that every game lease of this controller is attached to.
#[derive(Debug)]
pub struct Session {
    store: Arc<dyn Store>,
    keys: Keys,
    holder: String,
    lease: LeaseId,
    ttl: Duration,
    lost: CancellationToken,
    keepalive_stopped: CancellationToken,
    metrics: Metrics,
    closed: AtomicBool,
    /// When the last acknowledged keepalive was sent.
    clock: Arc<AckClock>,
    /// When the last heartbeat rewrite that etcd applied was sent.
    refreshed: Arc<AckClock>,
    /// The heartbeat this session announces, rewritten every TTL/3.
    heartbeat: Mutex<Heartbeat>,
    /// The other controllers' heartbeats, as last seen changing.
    peers: Mutex<std::collections::HashMap<String, PeerSeen>>,
    /// Tokens of the game leases of this session that an operation holds
    /// (or is taking): a key on this session's etcd lease with another
    /// token was left behind by a release that failed.
    held: Mutex<std::collections::HashSet<String>>,
}

/// The session's own view of its lease's expiry: etcd keeps the lease for
/// TTL after it processed the last keepalive, which was after this process
/// sent it, so "sent + TTL − margin" is a deadline etcd cannot beat.
#[derive(Debug)]
struct AckClock {
    /// tokio's clock (monotonic; virtual in paused-time tests).
    origin: tokio::time::Instant,
    /// Milliseconds from `origin` to the sending of the last keepalive etcd
    /// acknowledged (or to the grant).
    acked_ms: std::sync::atomic::AtomicU64,
}

impl AckClock {
    fn new(origin: tokio::time::Instant) -> Self {
        AckClock {
            origin,
            acked_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn acked(&self, sent: tokio::time::Instant) {
        let ms = u64::try_from(sent.duration_since(self.origin).as_millis()).unwrap_or(u64::MAX);
        self.acked_ms.fetch_max(ms, Ordering::SeqCst);
    }

    /// How long the lease is surely still alive after an acknowledged send.
    fn deadline(ttl: Duration) -> Duration {
        // A margin of TTL/6 (≥ 100 ms) leaves the renewals every TTL/3
        // room to be late once without a false alarm, and covers etcd
        // granting the TTL a little before our clock started.
        ttl.saturating_sub((ttl / 6).max(Duration::from_millis(100)))
    }

    fn expired(&self, ttl: Duration) -> bool {
        tokio::time::Instant::now() >= self.expires_at(ttl)
    }

    /// The instant at which [`AckClock::expired`] turns true.
    fn expires_at(&self, ttl: Duration) -> tokio::time::Instant {
        self.acked_at() + Self::deadline(ttl)
    }

    /// When the last acknowledged keepalive was sent (or the grant asked for).
    fn acked_at(&self) -> tokio::time::Instant {
        self.origin + Duration::from_millis(self.acked_ms.load(Ordering::SeqCst))
    }
}

impl Session {
    /// Grants the session's etcd lease, announces the holder's heartbeat
    /// on it, and starts keeping it alive.
    pub async fn open(
        store: Arc<dyn Store>,
        keys: Keys,
        holder: impl Into<String>,
        ttl: Duration,
        metrics: Metrics,
    ) -> Result<Arc<Session>, LeaseError> {
        let holder = holder.into();
        // Counted from before the grant: etcd's TTL runs from a moment
        // after this one, so the session's own deadline is never later.
        let granted_at = tokio::time::Instant::now();
        let grant = store.grant_lease(ttl).await?;
        let holder_name = holder.clone();
        let session = Arc::new(Session {
            store,
            keys,
            holder,
            lease: grant.id,
            ttl: grant.ttl,
            lost: CancellationToken::new(),
            keepalive_stopped: CancellationToken::new(),
            metrics,
            closed: AtomicBool::new(false),
            clock: Arc::new(AckClock::new(granted_at)),
            refreshed: Arc::new(AckClock::new(granted_at)),
            heartbeat: Mutex::new(Heartbeat::new(&holder_name, None)),
            peers: Mutex::new(std::collections::HashMap::new()),
            held: Mutex::new(std::collections::HashSet::new()),
        });
        // Without its heartbeat the session's lease keys would look forged
        // to the other controllers: no heartbeat, no session.
        if let Err(error) = session
            .announce(&Heartbeat::new(&session.holder, None))
            .await
        {
            let _ = session.store.revoke_lease(session.lease).await;
            return Err(error);
        }
        tokio::spawn(keep_alive(Arc::downgrade(&session), session.clone_parts()));
        debug!(lease = format!("{:x}", grant.id), ttl = ?grant.ttl, "session opened");
        Ok(session)
    }

    fn clone_parts(&self) -> KeepAliveParts {
        KeepAliveParts {
            store: self.store.clone(),
            lease: self.lease,
            ttl: self.ttl,
            lost: self.lost.clone(),
            stopped: self.keepalive_stopped.clone(),
            clock: self.clock.clone(),
            refreshed: self.refreshed.clone(),
        }
    }

    /// Writes (or rewrites) the holder's heartbeat on the session's lease;
    /// the session rewrites it every TTL/3 from then on.
    pub(crate) async fn announce(&self, heartbeat: &Heartbeat) -> Result<(), LeaseError> {
        *self.heartbeat_memo() = heartbeat.clone();
        self.refresh().await
    }

    /// Rewrites the announced heartbeat with a new `renewedAt`: the proof,
    /// to the other controllers, that this holder is alive.
    async fn refresh(&self) -> Result<(), LeaseError> {
        let key = self.keys.controller(&self.holder);
        let heartbeat = {
            let mut memo = self.heartbeat_memo();
            memo.renewed_at = Some(rtm_core::model::Timestamp::now());
            memo.ttl_ms = Some(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX));
            memo.clone()
        };
        let value = serde_json::to_vec(&heartbeat).unwrap_or_default();
        let txn = Txn::new().put_with_lease(key, value, self.lease);
        let sent = tokio::time::Instant::now();
        match self.store.txn(txn).await {
            Ok(_) => {
                self.refreshed.acked(sent);
                Ok(())
            }
            Err(StoreError::LeaseNotFound { .. }) => {
                self.lost.cancel();
                Err(LeaseError::SessionLost)
            }
            Err(error) => Err(error.into()),
        }
    }

    fn heartbeat_memo(&self) -> std::sync::MutexGuard<'_, Heartbeat> {
        self.heartbeat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The session's etcd lease, to which every game lease is attached.
    pub(crate) fn lease_id(&self) -> LeaseId {
        self.lease
    }

    /// The TTL etcd granted the session's lease.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// When the last keepalive etcd acknowledged was sent (or the lease granted), on
    /// tokio's monotonic clock: what the self-fence counts from.
    pub(crate) fn last_acknowledged(&self) -> tokio::time::Instant {
        // The older of the keepalive and the heartbeat rewrite: the other controllers
        // judge this one by both.
        self.clock.acked_at().min(self.refreshed.acked_at())
    }

    /// Whether the controller `holder` is live: its heartbeat exists on a lease and has
    /// changed within its TTL (judged as for game leases). A heartbeat standing still
    /// on a lease something else keeps alive is a dead controller's: its lease is
    /// revoked, freeing what hangs on it.
    pub(crate) async fn controller_is_live(&self, holder: &str) -> Result<bool, LeaseError> {
        let Some(kv) = self.store.get(&self.keys.controller(holder)).await? else {
            return Ok(false);
        };
        if kv.lease == 0 {
            return Ok(false);
        }
        match self.judge_heartbeat(holder, &kv) {
            Holder::Live => Ok(true),
            Holder::Forged(_) => Ok(false),
            Holder::Stale { reason, lease } => {
                warn!(%holder, %reason, lease = format!("{lease:x}"), "revoking a dead controller's etcd lease that something else keeps alive");
                self.revoke_dead(lease).await.map(|()| false)
            }
        }
    }

    /// The holder name recorded in lease records and the heartbeat.
    pub(crate) fn holder(&self) -> &str {
        &self.holder
    }

    /// The key layout of the installation.
    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The store the session's lease lives in.
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Cancelled when the session's etcd lease is gone: every operation of
    /// this controller must stop at its next step.
    pub(crate) fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// Whether the session must be counted lost: etcd said so, or this
    /// process cannot show a keepalive acknowledged recently enough that
    /// etcd still keeps the lease (its own monotonic clock: a process that
    /// was frozen past its TTL knows it the moment it runs again, before
    /// its keepalive task even gets to ask etcd), or its heartbeat has not
    /// been rewritten for so long that the other controllers may count it
    /// dead and revoke its lease.
    pub(crate) fn is_lost(&self) -> bool {
        if self.lost.is_cancelled() {
            return true;
        }
        if self.clock.expired(self.ttl) || self.refreshed.expired(self.ttl) {
            self.lost.cancel();
            return true;
        }
        false
    }

    /// Stops renewing the lease without revoking it, as a frozen process
    /// would: the lease expires one TTL later. For fault-injection tests.
    pub fn stop_keepalive(&self) {
        self.keepalive_stopped.cancel();
    }

    /// Takes the lease of `game` for the operation `op_id`. Fails with
    /// [`LeaseError::Busy`] when another operation (of any live controller)
    /// holds it. A lease key no live controller holds (put by hand, or
    /// attached to no etcd lease) is taken over, with a warning.
    pub async fn acquire(
        self: &Arc<Self>,
        game: &str,
        op_id: &str,
    ) -> Result<GameLease, LeaseError> {
        let started = Instant::now();
        let mut label = "acquired";
        let result = match self.create(game, op_id, Vec::new()).await {
            Ok(Some(lease)) => Ok(lease),
            Ok(None) => match self.take_over(game).await {
                Ok(true) => {
                    label = "taken_over";
                    match self.create(game, op_id, Vec::new()).await {
                        Ok(Some(lease)) => Ok(lease),
                        // A live controller won the key meanwhile.
                        Ok(None) => Err(self.busy(game).await),
                        Err(error) => Err(error),
                    }
                }
                Ok(false) => Err(self.busy(game).await),
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        let label = match &result {
            Ok(_) => label,
            Err(LeaseError::Busy { .. }) => "busy",
            Err(_) => "error",
        };
        self.metrics.record_lease_acquire(label, started.elapsed());
        result
    }

    /// Frees the lease key of `game` if no live controller holds it: one
    /// attached to no etcd lease (an `etcdctl put` by hand), one that holds
    /// no lease record, or one whose holder's heartbeat is not on the same
    /// etcd lease is deleted (comparing the key's revision as read, so a
    /// key that changed meanwhile is left alone); one whose holder's
    /// heartbeat stands still has the holder's etcd lease revoked. Returns
    /// whether it freed the key.
    async fn take_over(&self, game: &str) -> Result<bool, LeaseError> {
        let key = self.keys.lease(game);
        let Some(kv) = self.store.get(&key).await? else {
            // Released meanwhile: the caller creates it.
            return Ok(true);
        };
        match self.holder_of(&kv).await? {
            Holder::Live => Ok(false),
            Holder::Forged(reason) => {
                warn!(%game, %key, %reason, "taking over a game lease key that no live controller holds");
                let txn = Txn::new()
                    .when(Compare::ModRevision {
                        key: key.clone(),
                        revision: kv.mod_revision,
                    })
                    .delete(key);
                Ok(self.store.txn(txn).await?.succeeded)
            }
            Holder::Stale { reason, lease } => {
                warn!(
                    %game,
                    %key,
                    %reason,
                    lease = format!("{lease:x}"),
                    "revoking a dead controller's etcd lease that something else keeps alive"
                );
                self.revoke_dead(lease).await.map(|()| true)
            }
        }
    }

    /// Revokes the etcd lease of a dead controller (gone already counts as revoked).
    async fn revoke_dead(&self, lease: LeaseId) -> Result<(), LeaseError> {
        match self.store.revoke_lease(lease).await {
            Ok(()) | Err(StoreError::LeaseNotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Whether the lease key `kv` is held by a live controller.
    async fn holder_of(&self, kv: &rtm_core::store::KeyValue) -> Result<Holder, LeaseError> {
        if kv.lease == 0 {
            return Ok(Holder::Forged(
                "it is attached to no etcd lease (written by hand?)".into(),
            ));
        }
        let Ok(record) = serde_json::from_slice::<LeaseRecord>(&kv.value) else {
            return Ok(Holder::Forged("it holds no lease record".into()));
        };
        if kv.lease == self.lease {
            return Ok(if self.holds(&record.token) {
                Holder::Live
            } else {
                Holder::Forged(
                    "it is on this controller's own session, but no operation of it holds it (a \
                     release that failed while etcd was unreachable left it behind)"
                        .into(),
                )
            });
        }
        let heartbeat = self
            .store
            .get(&self.keys.controller(&record.holder))
            .await?;
        Ok(match heartbeat {
            Some(heartbeat) if heartbeat.lease == kv.lease => {
                self.judge_heartbeat(&record.holder, &heartbeat)
            }
            Some(_) => Holder::Forged(format!(
                "its holder {} announces itself on another etcd lease",
                record.holder
            )),
            None => Holder::Forged(format!("its holder {} has no heartbeat", record.holder)),
        })
    }

    /// Judges a peer's heartbeat by whether it changed within the holder's
    /// TTL (plus [`STALE_SLACK`]) on this process's clock, counted from
    /// the first time this session saw it as it is now.
    fn judge_heartbeat(&self, holder: &str, kv: &rtm_core::store::KeyValue) -> Holder {
        let Ok(heartbeat) = serde_json::from_slice::<Heartbeat>(&kv.value) else {
            // The lease is the holder's; its value is unreadable (an older
            // or newer controller, or garbled): the lease decides.
            return Holder::Live;
        };
        if heartbeat.renewed_at.is_none() {
            // A controller from before the refresh: its lease decides.
            return Holder::Live;
        }
        let ttl = heartbeat
            .ttl_ms
            .map(Duration::from_millis)
            .unwrap_or(self.ttl);
        let now = tokio::time::Instant::now();
        let mut peers = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let seen = peers.entry(holder.to_owned()).or_insert(PeerSeen {
            lease: kv.lease,
            mod_revision: kv.mod_revision,
            since: now,
        });
        if seen.lease != kv.lease || seen.mod_revision != kv.mod_revision {
            *seen = PeerSeen {
                lease: kv.lease,
                mod_revision: kv.mod_revision,
                since: now,
            };
        }
        let still = now.duration_since(seen.since);
        if still > ttl + STALE_SLACK {
            Holder::Stale {
                reason: format!(
                    "the heartbeat of its holder {holder} has not changed for {} (its TTL is {}): the holder is dead, and something else keeps its etcd lease alive",
                    humantime::format_duration(Duration::from_secs(still.as_secs())),
                    humantime::format_duration(ttl)
                ),
                lease: kv.lease,
            }
        } else {
            Holder::Live
        }
    }

    /// Takes the lease of `game` only if, in the same transaction, every
    /// `unchanged` comparison holds: what the caller looked at a moment
    /// ago (the document, the status record) is still what etcd holds, so
    /// it need not be read again under the lease. `Ok(None)` when the
    /// transaction did not apply (the lease is busy, or something changed):
    /// the caller then takes it with [`Session::acquire`] and reads afresh.
    pub(crate) async fn acquire_if(
        self: &Arc<Self>,
        game: &str,
        op_id: &str,
        unchanged: Vec<Compare>,
    ) -> Result<Option<GameLease>, LeaseError> {
        let started = Instant::now();
        let result = self.create(game, op_id, unchanged).await;
        let label = match &result {
            Ok(Some(_)) => "acquired",
            // Busy, or something seen changed: a plain acquire follows.
            Ok(None) => "changed",
            Err(_) => "error",
        };
        self.metrics.record_lease_acquire(label, started.elapsed());
        result
    }

    /// Who holds the lease of `game`, as the error that says so.
    async fn busy(&self, game: &str) -> LeaseError {
        let holder = match self.store.get(&self.keys.lease(game)).await {
            Ok(Some(kv)) => serde_json::from_slice::<LeaseRecord>(&kv.value)
                .map(|r| format!("{} for operation {}", r.holder, r.op_id))
                .unwrap_or_else(|_| "an unknown holder".into()),
            // Released between our txn and this read: still busy a moment ago.
            Ok(None) => "an operation that just finished".into(),
            Err(error) => return error.into(),
        };
        LeaseError::Busy {
            game: game.to_owned(),
            holder,
        }
    }

    /// Creates the lease key of `game` if it is absent and every `unchanged`
    /// comparison holds; `Ok(None)` when the transaction did not apply.
    async fn create(
        self: &Arc<Self>,
        game: &str,
        op_id: &str,
        unchanged: Vec<Compare>,
    ) -> Result<Option<GameLease>, LeaseError> {
        if self.is_lost() {
            return Err(LeaseError::SessionLost);
        }
        let key = self.keys.lease(game);
        let record = LeaseRecord {
            holder: self.holder.clone(),
            token: format!("{:032x}", rand::random::<u128>()),
            op_id: op_id.to_owned(),
        };
        let value = serde_json::to_vec(&record).unwrap_or_default();
        let mut txn = Txn::new().when(Compare::Absent { key: key.clone() });
        txn.when.extend(unchanged);
        let txn = txn.put_with_lease(key.clone(), value, self.lease);
        // Registered before the key can exist, so this session never takes
        // its own fresh key for a leftover.
        let taking = Taking::new(self, &record.token);
        let outcome = match self.store.txn(txn).await {
            Ok(outcome) => outcome,
            Err(StoreError::LeaseNotFound { .. }) => {
                self.lost.cancel();
                return Err(LeaseError::SessionLost);
            }
            Err(e) if e.outcome_unknown() => {
                // The create may have landed: if the key holds our token, it
                // is ours; otherwise report the failure.
                return match self.store.get(&key).await {
                    Ok(Some(kv)) if kv.value == serde_json::to_vec(&record).unwrap_or_default() => {
                        taking.keep();
                        Ok(Some(self.game_lease(game, key, kv.create_revision, record)))
                    }
                    _ => Err(e.into()),
                };
            }
            Err(e) => return Err(e.into()),
        };
        if !outcome.succeeded {
            return Ok(None);
        }
        taking.keep();
        Ok(Some(self.game_lease(game, key, outcome.revision, record)))
    }

    fn holds(&self, token: &str) -> bool {
        self.held_tokens().contains(token)
    }

    fn held_tokens(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn game_lease(
        self: &Arc<Self>,
        game: &str,
        key: String,
        revision: Revision,
        record: LeaseRecord,
    ) -> GameLease {
        GameLease {
            session: self.clone(),
            game: game.to_owned(),
            fence: Fence { key, revision },
            record,
            released: false,
            status: Mutex::new(None),
        }
    }

    /// Ends the session: stops the keepalive and revokes the etcd lease,
    /// which frees every game lease still attached to it.
    pub async fn close(&self) -> Result<(), LeaseError> {
        self.closed.store(true, Ordering::SeqCst);
        self.keepalive_stopped.cancel();
        self.store.revoke_lease(self.lease).await?;
        Ok(())
    }
}

struct KeepAliveParts {
    store: Arc<dyn Store>,
    lease: LeaseId,
    ttl: Duration,
    lost: CancellationToken,
    stopped: CancellationToken,
    clock: Arc<AckClock>,
    refreshed: Arc<AckClock>,
}

/// Renews the session lease every TTL/3 until the session is dropped or
/// closed; declares it lost when etcd says it is gone, or when no renewal
/// was acknowledged for nearly a TTL ([`AckClock`]): etcd may have expired
/// it by then, and another controller may hold this one's games.
async fn keep_alive(session: std::sync::Weak<Session>, parts: KeepAliveParts) {
    let period = parts.ttl / KEEPALIVE_DIVISOR;
    let mut wait = period;
    loop {
        let expires = parts
            .clock
            .expires_at(parts.ttl)
            .min(parts.refreshed.expires_at(parts.ttl));
        tokio::select! {
            _ = parts.stopped.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = tokio::time::sleep_until(expires) => {}
        }
        if session.strong_count() == 0 {
            return;
        }
        if parts.clock.expired(parts.ttl) {
            warn!(
                lease = format!("{:x}", parts.lease),
                ttl = ?parts.ttl,
                "no keepalive acknowledged for nearly a TTL (etcd unreachable, or this process was frozen); counting the session lost"
            );
            parts.lost.cancel();
            return;
        }
        if parts.refreshed.expired(parts.ttl) {
            warn!(
                lease = format!("{:x}", parts.lease),
                ttl = ?parts.ttl,
                "the heartbeat was not rewritten for nearly a TTL; the other controllers may count this one dead: counting the session lost"
            );
            parts.lost.cancel();
            return;
        }
        let sent = tokio::time::Instant::now();
        match parts.store.keep_alive(parts.lease).await {
            Ok(_) => {
                parts.clock.acked(sent);
                wait = period;
                let Some(session) = session.upgrade() else {
                    return;
                };
                match session.refresh().await {
                    Ok(()) => {}
                    Err(LeaseError::SessionLost) => {
                        warn!(
                            lease = format!("{:x}", parts.lease),
                            "session lease is gone"
                        );
                        return;
                    }
                    Err(error) => {
                        debug!(%error, "rewriting the heartbeat failed; retrying");
                        wait = KEEPALIVE_RETRY.min(period);
                    }
                }
            }
            Err(StoreError::LeaseNotFound { .. }) => {
                warn!(
                    lease = format!("{:x}", parts.lease),
                    "session lease is gone"
                );
                parts.lost.cancel();
                return;
            }
            Err(e) => {
                debug!(error = %e, "keepalive failed; retrying");
                wait = KEEPALIVE_RETRY.min(period);
            }
        }
    }
}

/// The lease of one game, held for one operation. Release it with
/// [`GameLease::release`]; if dropped unreleased (a panic, a cancelled
/// task), a background task releases it.
#[derive(Debug)]
pub struct GameLease {
    session: Arc<Session>,
    game: String,
    fence: Fence,
    record: LeaseRecord,
    released: bool,
    /// The game's status record as this holder last read or wrote it (see
    /// [`GameLease::status`]).
    status: Mutex<Option<StatusRecord>>,
}

impl GameLease {
    /// The game whose lease this is.
    pub(crate) fn game(&self) -> &str {
        &self.game
    }

    /// The lease key and its create revision: the comparison every write
    /// under the lease carries.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The operation the lease was taken for.
    pub(crate) fn op_id(&self) -> &str {
        &self.record.op_id
    }

    /// The session the lease is attached to.
    pub(crate) fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// What the holder last read or wrote of the game's status record.
    fn status_memo(&self) -> std::sync::MutexGuard<'_, Option<StatusRecord>> {
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Tells the lease the game's status record as the holder read it
    /// (a first look the lease was taken on, compared when it was taken).
    pub(crate) fn knows_status(&self, record: StatusRecord) {
        *self.status_memo() = Some(record);
    }

    /// The game's status record as the holder knows it: read once, then
    /// kept with the lease. Every status write is fenced by the lease, so
    /// while it is held nobody else can change the record: this is exact,
    /// and reading it again would only repeat it (one etcd read per step
    /// that looks).
    pub(crate) async fn status(&self, records: &StatusStore) -> Result<StatusRecord, StatusError> {
        if let Some(known) = self.status_memo().clone() {
            return Ok(known);
        }
        let record = records.read(&self.game).await?;
        self.knows_status(record.clone());
        Ok(record)
    }

    /// The transaction that writes `next` over `current` (or deletes the
    /// record, for `None`) while the lease holds, for a caller that adds
    /// its own writes and then calls [`GameLease::status_committed`].
    pub(crate) fn status_txn(
        &self,
        records: &StatusStore,
        current: &StatusRecord,
        next: Option<&GameRuntimeStatus>,
    ) -> Txn {
        records.txn(&self.fence, &self.game, current, next)
    }

    /// Tells the lease what a transaction from [`GameLease::status_txn`]
    /// that applied at `revision` left in the record.
    pub(crate) fn status_committed(&self, next: Option<&GameRuntimeStatus>, revision: Revision) {
        self.knows_status(match next {
            Some(next) => Versioned::new(next.clone(), revision),
            None => Versioned::absent(),
        });
    }

    /// Writes `next` over `current` if it differs, while the lease holds.
    pub(crate) async fn write_status(
        &self,
        records: &StatusStore,
        current: &StatusRecord,
        next: GameRuntimeStatus,
    ) -> Result<StatusRecord, StatusError> {
        let written = records
            .write(&self.fence, &self.game, current, next)
            .await?;
        self.knows_status(written.clone());
        Ok(written)
    }

    /// Applies `change` to the record and writes the result if it differs,
    /// while the lease holds.
    pub(crate) async fn update_status(
        &self,
        records: &StatusStore,
        change: impl FnOnce(&mut GameRuntimeStatus),
    ) -> Result<StatusRecord, StatusError> {
        let current = self.status(records).await?;
        let mut next = current.value.clone();
        change(&mut next);
        self.write_status(records, &current, next).await
    }

    /// Deletes the record (the game is gone), while the lease holds.
    pub(crate) async fn clear_status(&self, records: &StatusStore) -> Result<(), StatusError> {
        records.clear(&self.fence, &self.game).await?;
        self.knows_status(Versioned::absent());
        Ok(())
    }

    /// The step boundary check: fails once the session is lost.
    pub(crate) fn check(&self) -> Result<(), LeaseError> {
        if self.session.is_lost() {
            Err(LeaseError::Lost {
                game: self.game.clone(),
            })
        } else {
            Ok(())
        }
    }

    /// Whether the lease key still exists with our fence (one read; the
    /// guarded writes are the real protection).
    pub async fn still_held(&self) -> Result<bool, LeaseError> {
        let current = self.session.store.get(&self.fence.key).await?;
        Ok(current.is_some_and(|kv| kv.create_revision == self.fence.revision))
    }

    /// Deletes the lease key if it is still ours.
    pub async fn release(mut self) -> Result<(), LeaseError> {
        self.released = true;
        self.session.held_tokens().remove(&self.record.token);
        release(&self.session, &self.fence).await
    }

    /// Applies `last` (the operation's last writes) and deletes the lease
    /// key in one transaction, if the lease is still ours; returns the
    /// revision it applied at, or `None` when the lease was no longer ours
    /// (then nothing was written). The last write under a lease
    /// and its release then cost one round trip and one etcd revision, not
    /// two (BENCHMARKS.md). When etcd fails, a plain release is still
    /// tried, so the game is not left blocked until the session ends.
    pub(crate) async fn release_with(mut self, last: Txn) -> Result<Option<Revision>, LeaseError> {
        self.released = true;
        self.session.held_tokens().remove(&self.record.token);
        let txn = last
            .when(self.fence.compare())
            .delete(self.fence.key.clone());
        match self.session.store.txn(txn).await {
            Ok(outcome) => Ok(outcome.succeeded.then_some(outcome.revision)),
            Err(error) => {
                if let Err(again) = release(&self.session, &self.fence).await {
                    warn!(key = %self.fence.key, error = %again, "releasing the game lease failed too");
                }
                Err(error.into())
            }
        }
    }

    /// Writes `next` and releases the lease in one transaction (the last
    /// step of a reconcile under the lease), if the lease is still held;
    /// the lease is released in any case. Returns the record as written.
    pub(crate) async fn release_with_status(
        self,
        records: &StatusStore,
        next: &GameRuntimeStatus,
    ) -> Result<StatusRecord, StatusError> {
        let game = self.game.clone();
        match self.release_with(records.put(&game, next)).await {
            Ok(Some(revision)) => Ok(Versioned::new(next.clone(), revision)),
            Err(LeaseError::Store(error)) => Err(error.into()),
            Ok(None) | Err(_) => Err(StatusError::LeaseLost { game }),
        }
    }
}

/// A game lease token registered as held while its key is being created;
/// forgotten again unless [`Taking::keep`] says the key is ours.
struct Taking<'s> {
    session: &'s Session,
    token: String,
    kept: bool,
}

impl<'s> Taking<'s> {
    fn new(session: &'s Session, token: &str) -> Self {
        session.held_tokens().insert(token.to_owned());
        Taking {
            session,
            token: token.to_owned(),
            kept: false,
        }
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Taking<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.session.held_tokens().remove(&self.token);
        }
    }
}

async fn release(session: &Session, fence: &Fence) -> Result<(), LeaseError> {
    let txn = Txn::new().when(fence.compare()).delete(fence.key.clone());
    session.store.txn(txn).await?;
    Ok(())
}

impl Drop for GameLease {
    fn drop(&mut self) {
        if self.released || self.session.closed.load(Ordering::SeqCst) {
            return;
        }
        self.session.held_tokens().remove(&self.record.token);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let session = self.session.clone();
            let fence = self.fence.clone();
            handle.spawn(async move {
                if let Err(e) = release(&session, &fence).await {
                    warn!(key = %fence.key, error = %e, "releasing a dropped game lease failed; it expires with the session");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::Coded;
    use rtm_core::store::memory::MemoryStore;

    async fn session(store: &Arc<MemoryStore>, holder: &str) -> Arc<Session> {
        Session::open(
            store.clone(),
            Keys::default(),
            holder,
            Duration::from_secs(15),
            Metrics::new(),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_held_game_lease_makes_a_second_acquire_busy_until_released() {
        let store = Arc::new(MemoryStore::new());
        let a = session(&store, "node-a").await;
        let b = session(&store, "node-b").await;
        let held = a.acquire("g1", "op-1").await.unwrap();
        let busy = b.acquire("g1", "op-2").await.unwrap_err();
        assert!(matches!(&busy, LeaseError::Busy { holder, .. } if holder.contains("node-a")));
        assert_eq!(busy.code(), ErrorCode::Conflict);
        b.acquire("g2", "op-3")
            .await
            .expect("other games are independent")
            .release()
            .await
            .unwrap();
        held.release().await.unwrap();
        b.acquire("g1", "op-4")
            .await
            .expect("free after release")
            .release()
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_conditional_acquire_applies_only_while_its_comparisons_hold() {
        let store = Arc::new(MemoryStore::new());
        let a = session(&store, "node-a").await;
        let doc = Keys::default().gameruntime("g1");
        let seen = store.create(&doc, b"v1".to_vec(), None).await.unwrap();
        let unchanged = || {
            vec![Compare::ModRevision {
                key: doc.clone(),
                revision: seen,
            }]
        };
        let lease = a.acquire_if("g1", "op-1", unchanged()).await.unwrap();
        let lease = lease.expect("nothing changed: taken");
        // Busy: not taken, and not an error.
        assert!(
            a.acquire_if("g1", "op-2", unchanged())
                .await
                .unwrap()
                .is_none()
        );
        lease.release().await.unwrap();

        store.update(&doc, b"v2".to_vec(), seen).await.unwrap();
        assert!(
            a.acquire_if("g1", "op-3", unchanged())
                .await
                .unwrap()
                .is_none(),
            "the document changed since it was seen"
        );
        assert!(
            store
                .get(&Keys::default().lease("g1"))
                .await
                .unwrap()
                .is_none(),
            "nothing was written"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_whose_keepalive_stops_is_lost_and_fenced_out() {
        let store = Arc::new(MemoryStore::new());
        let a = session(&store, "node-a").await;
        let lease = a.acquire("g1", "op-1").await.unwrap();
        // Kept alive, the lease outlives many TTLs.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(lease.still_held().await.unwrap());
        lease.check().unwrap();

        a.stop_keepalive();
        tokio::time::sleep(Duration::from_secs(16)).await;
        assert!(
            !lease.still_held().await.unwrap(),
            "expired with the session lease"
        );

        let b = session(&store, "node-b").await;
        let taken = b.acquire("g1", "op-2").await.unwrap();
        let late = Txn::new()
            .when(lease.fence().compare())
            .put("/rtmanager/status/g1", b"late".to_vec());
        assert!(
            !store.txn(late).await.unwrap().succeeded,
            "the old holder is fenced out"
        );
        taken.release().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_lease_revoked_by_etcd_cancels_the_lost_token() {
        let store = Arc::new(MemoryStore::new());
        let a = session(&store, "node-a").await;
        let lease = a.acquire("g1", "op-1").await.unwrap();
        store.revoke_lease(a.lease_id()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), a.lost().cancelled())
            .await
            .expect("the keepalive notices the lease is gone within one period");
        assert!(matches!(lease.check(), Err(LeaseError::Lost { .. })));
        assert!(matches!(
            a.acquire("g2", "op-2").await,
            Err(LeaseError::SessionLost)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_holders_lease_kept_alive_by_someone_else_is_revoked_after_its_ttl() {
        let store = Arc::new(MemoryStore::new());
        let a = session(&store, "node-a").await;
        let held = a.acquire("g1", "op-1").await.unwrap();
        let a_lease = a.lease_id();
        // node-a dies (its keepalive and heartbeat stop), and a writer with
        // no right to `controllers/` keeps its etcd lease alive.
        a.stop_keepalive();
        std::mem::forget(held);
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                loop {
                    let _ = store.keep_alive(a_lease).await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            })
        };
        let b = session(&store, "node-b").await;
        assert!(matches!(
            b.acquire("g1", "op-2").await,
            Err(LeaseError::Busy { .. })
        ));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(
            matches!(b.acquire("g1", "op-3").await, Err(LeaseError::Busy { .. })),
            "within its TTL a standing heartbeat is not judged"
        );
        tokio::time::sleep(Duration::from_secs(7)).await;
        let taken = b
            .acquire("g1", "op-4")
            .await
            .expect("standing still past its TTL: the holder is dead");
        assert!(
            store.keep_alive(a_lease).await.is_err(),
            "the dead holder's lease is revoked, not only the game's key"
        );
        assert!(
            store
                .get(&Keys::default().controller("node-a"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(a.is_lost(), "the dead holder counts itself lost too");
        taken.release().await.unwrap();
        writer.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_live_holders_heartbeat_keeps_changing_so_its_games_stay_its_own() {
        let store = Arc::new(MemoryStore::new());
        let a = session(&store, "node-a").await;
        let held = a.acquire("g1", "op-1").await.unwrap();
        let b = session(&store, "node-b").await;
        let first = store
            .get(&Keys::default().controller("node-a"))
            .await
            .unwrap()
            .unwrap();
        for _ in 0..10 {
            assert!(matches!(
                b.acquire("g1", "op-2").await,
                Err(LeaseError::Busy { .. })
            ));
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        let later = store
            .get(&Keys::default().controller("node-a"))
            .await
            .unwrap()
            .unwrap();
        assert!(
            later.mod_revision > first.mod_revision,
            "rewritten every TTL/3"
        );
        let heartbeat: Heartbeat = serde_json::from_slice(&later.value).unwrap();
        assert_eq!(heartbeat.ttl_ms, Some(15_000));
        assert!(heartbeat.renewed_at.is_some());
        held.check().unwrap();
        assert!(!a.is_lost());
        held.release().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_that_cannot_rewrite_its_heartbeat_counts_itself_lost_before_others_judge_it()
    {
        let store = Arc::new(MemoryStore::new());
        let a = session(&store, "node-a").await;
        // The heartbeat key made unwritable: its rewrites fail while the
        // keepalives go on (a failpoint-free stand-in: the store refuses
        // puts under controllers/ once the session is open).
        store.refuse_writes_under(&Keys::default().controllers());
        tokio::time::timeout(Duration::from_secs(15), a.lost().cancelled())
            .await
            .expect("lost within the TTL");
        assert!(a.is_lost());
    }

    #[tokio::test]
    async fn a_key_its_own_session_failed_to_release_never_blocks_the_game() {
        let store = Arc::new(MemoryStore::new());
        let a = session(&store, "node-a").await;
        let held = a.acquire("g1", "op-1").await.unwrap();
        let other = a.acquire("g2", "op-2").await.unwrap();
        // etcd unreachable at the release: the key stays on the live session.
        store.fail_next(StoreError::Unavailable {
            endpoints: "test".into(),
            message: "down".into(),
        });
        assert!(held.release().await.is_err());
        assert!(
            store
                .get(&Keys::default().lease("g1"))
                .await
                .unwrap()
                .is_some()
        );
        let again = a
            .acquire("g1", "op-3")
            .await
            .expect("a leftover of its own session is taken, not busy");
        assert!(
            matches!(a.acquire("g2", "op-4").await, Err(LeaseError::Busy { .. })),
            "a key an operation of the same session holds stays busy"
        );
        again.release().await.unwrap();
        other.release().await.unwrap();
    }

    #[tokio::test]
    async fn a_lease_key_put_by_hand_is_taken_over_and_a_live_holders_is_not() {
        let store = Arc::new(MemoryStore::new());
        let a = session(&store, "node-a").await;
        let keys = Keys::default();
        // `etcdctl put <prefix>/leases/g1 x`: no etcd lease, no record.
        store
            .txn(Txn::new().put(keys.lease("g1"), b"x".to_vec()))
            .await
            .unwrap();
        let lease = a
            .acquire("g1", "op-1")
            .await
            .expect("a forged key is taken over");
        assert!(lease.still_held().await.unwrap());
        lease.release().await.unwrap();

        // A record naming a controller that is not alive, on a lease that
        // someone else keeps: taken over as well.
        let grant = store.grant_lease(Duration::from_secs(60)).await.unwrap();
        let record = LeaseRecord {
            holder: "ghost".into(),
            token: "t".into(),
            op_id: "op-0".into(),
        };
        store
            .txn(Txn::new().put_with_lease(
                keys.lease("g2"),
                serde_json::to_vec(&record).unwrap(),
                grant.id,
            ))
            .await
            .unwrap();
        a.acquire("g2", "op-2")
            .await
            .expect("a holder without a heartbeat holds nothing")
            .release()
            .await
            .unwrap();

        // A live controller's lease is never taken.
        let b = session(&store, "node-b").await;
        let held = b.acquire("g3", "op-3").await.unwrap();
        assert!(matches!(
            a.acquire("g3", "op-4").await,
            Err(LeaseError::Busy { .. })
        ));
        assert!(held.still_held().await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_that_cannot_show_a_recent_keepalive_counts_itself_lost_at_once() {
        let store = Arc::new(MemoryStore::new());
        let a = session(&store, "node-a").await;
        let lease = a.acquire("g1", "op-1").await.unwrap();
        // As if frozen: nothing renews, and time passes (a SIGSTOP).
        a.stop_keepalive();
        tokio::time::advance(Duration::from_secs(13)).await;
        assert!(
            matches!(lease.check(), Err(LeaseError::Lost { .. })),
            "past TTL minus the margin the holder knows by its own clock"
        );
        assert!(a.lost().is_cancelled(), "and tells everyone at once");
        assert!(matches!(
            a.acquire("g2", "op-2").await,
            Err(LeaseError::SessionLost)
        ));
    }

    #[tokio::test]
    async fn a_dropped_lease_is_released_in_the_background() {
        let store = Arc::new(MemoryStore::new());
        let a = session(&store, "node-a").await;
        drop(a.acquire("g1", "op-1").await.unwrap());
        tokio::time::timeout(Duration::from_secs(5), async {
            while store.get("/rtmanager/leases/g1").await.unwrap().is_some() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the drop guard releases the lease");
    }
}
