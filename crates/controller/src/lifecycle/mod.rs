//! The lifecycle services — start, stop, restart (as a recreate), remove,
//! unpause, and reclaim (a container renamed by hand) — each run under the
//! game's lease and recorded in its history. The
//! semantics, error codes and the outer/inner entries of restart carry over
//! from the Go service this project replaces.
//!
//! Every business outcome is an [`OpResult`] with a stable [`ErrorCode`],
//! never a Rust error: callers (the controller, tests) branch on the code.
//! The shape of every operation is the same:
//!
//! ```text
//! validate ─► take the lease ─► history entry (in_progress, fenced)
//!          ─► steps, checking the lease between them ─► status (fenced)
//!          ─► history entry finished with the outcome ─► release
//! ```
//!
//! Docker calls whose outcome is unknown (a timeout) are resolved by
//! inspecting again before the next step, never by retrying blindly.

mod forensics;
mod graceful;
pub mod image;
pub mod policy;
mod ports;
mod reclaim;
mod remove;
mod restart;
mod session;
mod start;
mod stop;
mod unpause;
pub(crate) mod volumes;

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::lease::{GameLease, LeaseError, Session};
use crate::metrics::Metrics;
use crate::runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, LABEL_GENERATION, LABEL_OP_ID, LABEL_PREFIX,
    LABEL_RESTART_TOKEN, LABEL_SPEC_HASH, PortBinding, RuntimeError, RuntimeOp, container_name,
};
use rtm_core::error_code::ErrorCode;
use rtm_core::failure::Failure;
use rtm_core::model::validate::validate_name;
use rtm_core::model::{GameRuntime, LastOperation, OpKind, OpSource, Outcome, Phase};
use rtm_core::ports::PortProtocol;
use rtm_core::ports::host_port_label;
use rtm_core::records::Documents;
use rtm_core::records::Versioned;
use rtm_core::records::events::EventReason;
use rtm_core::records::history::{Appended, History, HistoryEntry};
use rtm_core::records::previous::PreviousContainers;

use crate::plan::events::Noticed;
use crate::recorder::Recorder;

/// How long an event lives after it was last repeated, unless `--event-ttl` says otherwise.
pub const DEFAULT_EVENT_TTL: Duration = Duration::from_secs(3600);
use rtm_core::records::status::{StatusRecord, StatusStore};

pub use image::ImagePulls;
pub use policy::ContainerPolicy;

/// Who asks for an operation, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpRequest {
    /// The game to act on (validated as a name before anything runs).
    pub game: String,
    /// Who asked (the controller, `rtctl`, ...), recorded in the history.
    pub op_source: OpSource,
    /// The caller's reference (request id, user); reused as the correlation
    /// id of a restart's entries. Empty when the caller has none.
    pub source_ref: String,
    /// Whether `op_source` / `source_ref` are the document writer's claim
    /// (its annotations), recorded as such in the history.
    pub source_claimed: bool,
    /// The document the caller planned the operation with, read (or known
    /// unchanged) under the game's lease: the operation acts on it instead
    /// of reading it again, so the plan and the action see one version. A
    /// newer version is the next reconcile's (the watch has queued it).
    /// `None`: the operation reads the document itself.
    pub document: Option<Box<GameRuntime>>,
    /// The failure the operation repairs (a replacement of a game whose
    /// health check failed), recorded in each of its entries.
    pub cause: Option<OpCause>,
    /// The image a start creates the container from instead of
    /// `spec.image`: its id, when a restart found the tag gone after its
    /// stop but the image it named still there.
    pub(crate) image: Option<String>,
    /// The caller made the image ready already (a restart pulls before its stop):
    /// the start only checks it is there, and never pulls once the old container
    /// is gone.
    pub(crate) image_ready: bool,
    /// What the history should say of why the operation ran as it did (a
    /// voluntary disruption forced past the game's session, say).
    pub note: Option<String>,
}

/// Why an operation the controller runs on its own was needed: a failure
/// of the game it repairs, recorded as the history entry's `cause` and
/// `note`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpCause {
    /// `health_check_failed` or `startup_timeout`.
    pub code: ErrorCode,
    /// What was seen, for people (the last probe failure).
    pub detail: String,
}

impl OpRequest {
    /// A request for `game` from `op_source`, with no reference, not
    /// claimed, reading the document itself.
    pub fn new(game: impl Into<String>, op_source: OpSource) -> Self {
        Self {
            game: game.into(),
            op_source,
            source_ref: String::new(),
            source_claimed: false,
            document: None,
            cause: None,
            image: None,
            image_ready: false,
            note: None,
        }
    }

    /// Records `note` in each of the operation's entries.
    pub(crate) fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    /// Sets the caller's reference (see [`OpRequest::source_ref`]).
    pub fn with_source_ref(mut self, source_ref: impl Into<String>) -> Self {
        self.source_ref = source_ref.into();
        self
    }

    /// Marks the source as the document writer's claim.
    pub(crate) fn claimed(mut self) -> Self {
        self.source_claimed = true;
        self
    }

    /// Records `cause` as the failure the operation repairs.
    pub(crate) fn with_cause(mut self, cause: OpCause) -> Self {
        self.cause = Some(cause);
        self
    }

    /// Acts on `document` (see [`OpRequest::document`]).
    pub(crate) fn with_document(mut self, document: GameRuntime) -> Self {
        self.document = Some(Box::new(document));
        self
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpResult {
    /// The id of the operation's history entry.
    pub op_id: String,
    /// What the operation was (a restart reports its outer entry).
    pub op_kind: OpKind,
    /// Success or failure, as recorded in the history.
    pub outcome: Outcome,
    /// Why it failed; `None` on success.
    pub error_code: Option<ErrorCode>,
    /// The failure as recorded (for people); `None` on success.
    pub error_message: Option<String>,
    /// The game's container after the operation, if it has one.
    pub container_id: Option<String>,
    /// The image the operation worked with (`spec.image`).
    pub image_ref: String,
    /// The correlation id recorded in the history.
    pub source_ref: String,
    /// On success, the status record as the operation left it, and the
    /// container as it last inspected it: what the controller would
    /// otherwise read back at once (one etcd read and one Docker call per
    /// action). `None` when the operation did not record them (an outer
    /// restart, an adoption, a removal).
    pub status: Option<StatusRecord>,
    /// See [`OpResult::status`].
    pub container: Option<ContainerInfo>,
}

impl OpResult {
    /// The operation did what it was asked.
    pub fn is_success(&self) -> bool {
        self.outcome == Outcome::Success
    }

    fn from_entry(entry: &HistoryEntry) -> Self {
        OpResult {
            op_id: entry.op_id.clone(),
            op_kind: entry.op_kind,
            outcome: entry.outcome,
            error_code: entry.error_code,
            error_message: entry.error_message.clone(),
            container_id: entry.container_id_after.clone(),
            image_ref: entry.image_ref.clone(),
            source_ref: entry.source_ref.clone(),
            status: None,
            container: None,
        }
    }

    /// Adds what a successful operation left behind.
    fn left(mut self, status: Option<StatusRecord>, container: Option<ContainerInfo>) -> Self {
        if self.is_success() {
            self.status = status;
            self.container = container;
        }
        self
    }
}

/// A failed Docker call as a step's failure: the code the call's failure
/// means during `op`, and the call named in the message.
fn runtime_failure(op: RuntimeOp, error: &RuntimeError) -> Failure {
    Failure::caused_by(
        error.code_during(op),
        format!("docker {op}: {error}"),
        error.clone(),
    )
}

/// What a successful operation changes in the status record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StatusChange {
    /// The container runs (or was stopped) as recorded.
    Set {
        phase: Phase,
        container: Option<Recorded>,
        hostname: String,
        /// The game has a health check: a container that runs is not
        /// Ready until the controller saw a probe pass.
        probed: bool,
    },
    /// The game is gone: delete the record.
    Clear,
    /// Only the last operation changes (an outer restart entry, whose inner
    /// start recorded the container: `container`, as that start left it).
    LastOperationOnly {
        container: Option<Box<ContainerInfo>>,
    },
}

impl StatusChange {
    /// The container the change records, as last inspected.
    fn container(&self) -> Option<ContainerInfo> {
        match self {
            StatusChange::Set { container, .. } => container.as_ref().map(|c| (*c.info).clone()),
            StatusChange::LastOperationOnly { container } => container.as_deref().cloned(),
            StatusChange::Clear => None,
        }
    }
}

/// What the status records of a container, and the container as inspected.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Recorded {
    id: String,
    exit_code: Option<i64>,
    oom_killed: bool,
    info: Box<ContainerInfo>,
}

impl From<ContainerInfo> for Recorded {
    fn from(container: ContainerInfo) -> Self {
        Recorded {
            id: container.id.clone(),
            exit_code: container.exit_code,
            oom_killed: container.oom_killed,
            info: Box::new(container),
        }
    }
}

/// The collaborators every operation uses.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    runtime: Arc<dyn ContainerRuntime>,
    documents: Documents,
    history: History,
    status: StatusStore,
    /// Where the last output of a replaced container is kept.
    previous: PreviousContainers,
    session: Arc<Session>,
    metrics: Metrics,
    /// The node recorded in status records (`status.node`), and whose
    /// host ports games claim.
    node: String,
    /// Which host ports and addresses documents may publish.
    host_ports: rtm_core::ports::HostPortPolicy,
    /// Where `hostPort: auto` ports come from on this node.
    port_range: rtm_core::records::nodes::PortRange,
    /// The hardening and limits of every container it creates.
    policy: Arc<ContainerPolicy>,
    /// Where what the services and the reconcile notice is recorded as events.
    recorder: Arc<Recorder>,
    /// How images are pulled (credentials, timeout).
    pulls: ImagePulls,
}

impl Lifecycle {
    /// Services acting through `runtime` under `session`'s leases, keeping
    /// the newest `history_retention` history entries per game; the node is
    /// the session's holder, and the policies are the defaults until set.
    pub fn new(
        runtime: Arc<dyn ContainerRuntime>,
        session: Arc<Session>,
        history_retention: usize,
        metrics: Metrics,
    ) -> Self {
        let store = session.store().clone();
        let keys = session.keys().clone();
        Self {
            runtime,
            documents: Documents::new(store.clone(), keys.clone()),
            history: History::new(store.clone(), keys.clone(), history_retention),
            status: StatusStore::new(store.clone(), keys.clone()),
            previous: PreviousContainers::new(store.clone(), keys.clone()),
            recorder: Arc::new(Recorder::new(
                store,
                keys,
                session.holder(),
                DEFAULT_EVENT_TTL,
                metrics.clone(),
            )),
            node: session.holder().to_owned(),
            session,
            metrics,
            host_ports: rtm_core::ports::HostPortPolicy::default(),
            port_range: rtm_core::records::nodes::DEFAULT_PORT_RANGE,
            policy: Arc::new(ContainerPolicy::default()),
            pulls: ImagePulls::default(),
        }
    }

    /// Pulls with these credentials and timeout (anonymous, 4m until set).
    pub(crate) fn with_image_pulls(mut self, pulls: ImagePulls) -> Self {
        self.pulls = pulls;
        self
    }

    /// How it pulls.
    pub(crate) fn image_pulls(&self) -> &ImagePulls {
        &self.pulls
    }

    /// Bounds the host ports and addresses documents may publish
    /// (`--host-ports`, `--host-ips`).
    pub(crate) fn with_host_port_policy(mut self, policy: rtm_core::ports::HostPortPolicy) -> Self {
        self.host_ports = policy;
        self
    }

    /// Records events that live `ttl` after they were last repeated (`--event-ttl`); zero
    /// records none.
    pub(crate) fn with_event_ttl(mut self, ttl: Duration) -> Self {
        let (store, keys) = (self.session.store().clone(), self.session.keys().clone());
        self.recorder = Arc::new(Recorder::new(
            store,
            keys,
            self.session.holder(),
            ttl,
            self.metrics.clone(),
        ));
        self
    }

    /// Where events are recorded.
    pub(crate) fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }

    /// Records that `reason` happened to `game` (its `occurrence` counted once).
    fn notice(&self, game: &str, reason: EventReason, occurrence: &str, message: String) {
        self.recorder.notice(
            game,
            Noticed {
                reason,
                occurrence: occurrence.to_owned(),
                message,
            },
        );
    }

    /// Creates containers under `policy` (default: [`ContainerPolicy::default`]).
    pub(crate) fn with_policy(mut self, policy: ContainerPolicy) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// The policy containers are created under.
    pub(crate) fn policy(&self) -> &ContainerPolicy {
        &self.policy
    }

    /// Checks the document against the policy and the Docker host before
    /// anything is created, removed or stopped: a refused game keeps what
    /// it has, and the refusal is the operation's recorded failure.
    pub(crate) async fn admit(&self, doc: &GameRuntime) -> Result<(), Failure> {
        let host = self
            .runtime
            .host_resources()
            .await
            .map_err(|e| runtime_failure(RuntimeOp::Ping, &e))?;
        self.policy
            .admit(doc, host)
            .map_err(|refusal| Failure::new(refusal.code, refusal.message))?;
        self.admit_volumes(doc).await
    }

    /// Records `node` as the node running this controller's games
    /// (defaults to the session's holder name).
    pub(crate) fn with_node(mut self, node: impl Into<String>) -> Self {
        self.node = node.into();
        self
    }

    /// Takes `hostPort: auto` ports from `range` (`--port-range`).
    pub(crate) fn with_port_range(mut self, range: rtm_core::records::nodes::PortRange) -> Self {
        self.port_range = range;
        self
    }

    /// The node recorded in status records.
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    /// Records that a running container which already matches its document
    /// was adopted (after a controller restart, or a lost status): one
    /// finished entry, no Docker call.
    pub(crate) async fn record_adoption(
        &self,
        lease: &GameLease,
        request: &OpRequest,
        container_id: &str,
        image_ref: &str,
    ) -> OpResult {
        let op_id = new_id();
        let mut entry = self.entry(OpKind::Adopt, request, &op_id);
        entry.container_id_before = Some(container_id.to_owned());
        entry.container_id_after = Some(container_id.to_owned());
        entry.image_ref = image_ref.to_owned();
        entry.succeed();
        if let Err(error) = self
            .history
            .append(Some(lease.fence()), entry.clone())
            .await
        {
            entry.fail(error.code(), error.to_string());
        }
        if entry.outcome == Outcome::Success {
            self.notice(
                lease.game(),
                EventReason::AdoptedContainer,
                container_id,
                format!(
                    "the running container {} ({image_ref}) was adopted as the game's; nothing \
                     was recreated",
                    short(container_id)
                ),
            );
        }
        self.finished(&entry);
        OpResult::from_entry(&entry)
    }

    /// The games' operation history, as the services record it.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The container runtime the services act through.
    pub(crate) fn runtime(&self) -> &Arc<dyn ContainerRuntime> {
        &self.runtime
    }

    /// The etcd session whose leases the services take.
    pub(crate) fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// The key prefix of this installation, also a label on its containers.
    pub(crate) fn prefix(&self) -> &str {
        self.session.keys().prefix()
    }

    /// Takes the game's lease for one operation, or explains why not.
    pub(crate) async fn acquire(&self, game: &str, op_id: &str) -> Result<GameLease, LeaseError> {
        self.session.acquire(game, op_id).await
    }

    /// Runs `op` under the game's lease, released afterwards. A request
    /// that is invalid, or whose lease is busy or unreachable, is recorded
    /// as a finished failure entry without running anything.
    async fn with_lease(
        &self,
        kind: OpKind,
        request: &OpRequest,
        op: impl AsyncFnOnce(&GameLease) -> OpResult,
    ) -> OpResult {
        let op_id = new_id();
        if let Err(failure) = validate_request(request) {
            return self.reject(None, kind, request, &op_id, failure).await;
        }
        let lease = match self.session.acquire(&request.game, &op_id).await {
            Ok(lease) => lease,
            Err(error) => {
                return self.reject(None, kind, request, &op_id, error.into()).await;
            }
        };
        let result = op(&lease).await;
        if let Err(error) = lease.release().await {
            // The key stays attached to the session lease: it frees itself
            // when the session ends, and blocks only this game until then.
            warn!(game = %request.game, %error, "releasing the game lease failed");
        }
        result
    }

    /// Records an operation that failed before it could begin: one
    /// finished entry. Under a lease the caller holds, appended only while
    /// that lease holds (a controller that lost it writes nothing into the
    /// next holder's log); without one (nothing ran: the lease was busy or
    /// etcd failed) appended unfenced. Best effort: when etcd is what
    /// failed, only the log line and the metric remain.
    async fn reject(
        &self,
        lease: Option<&GameLease>,
        kind: OpKind,
        request: &OpRequest,
        op_id: &str,
        failure: Failure,
    ) -> OpResult {
        let mut entry = self.entry(kind, request, op_id);
        entry.fail(failure.code, failure.message);
        // An invalid game id must not become a history key; a controller
        // whose lease or session is lost writes nothing more.
        let unwritable = matches!(
            entry.error_code,
            Some(ErrorCode::InvalidRequest | ErrorCode::LeaseLost)
        );
        if !unwritable
            && let Err(error) = self
                .history
                .append(lease.map(GameLease::fence), entry.clone())
                .await
        {
            warn!(game = %request.game, %error, "recording a failed operation failed");
        }
        self.finished(&entry);
        OpResult::from_entry(&entry)
    }

    fn entry(&self, kind: OpKind, request: &OpRequest, op_id: &str) -> HistoryEntry {
        let mut entry = HistoryEntry::begin(&request.game, op_id, kind, request.op_source);
        entry.source_ref = request.source_ref.clone();
        entry.source_claimed = request.source_claimed;
        entry.holder = self.session.holder().to_owned();
        if let Some(cause) = &request.cause {
            entry.cause = Some(cause.code);
            entry.note = Some(cause.detail.clone());
        }
        if let Some(note) = &request.note {
            entry.note = Some(match entry.note.take() {
                Some(detail) => format!("{note}; {detail}"),
                None => note.clone(),
            });
        }
        entry
    }

    /// Appends the operation's in-progress entry under the lease; when
    /// that fails, the operation ends there, recorded as a finished failure
    /// (the `Err` is its result).
    async fn begin(
        &self,
        lease: &GameLease,
        kind: OpKind,
        request: &OpRequest,
        op_id: &str,
    ) -> Result<Appended, OpResult> {
        let appended = match lease.check() {
            Ok(()) => self
                .history
                .append(Some(lease.fence()), self.entry(kind, request, op_id))
                .await
                .map_err(Failure::from),
            Err(error) => Err(error.into()),
        };
        match appended {
            Ok(op) => Ok(op),
            Err(failure) => Err(self
                .reject(Some(lease), kind, request, op_id, failure)
                .await),
        }
    }

    /// Ends an operation: writes the status change (on success), then
    /// finishes the history entry with the outcome.
    async fn conclude(
        &self,
        lease: &GameLease,
        mut op: Appended,
        result: Result<StatusChange, Failure>,
    ) -> OpResult {
        let container = result.as_ref().ok().and_then(StatusChange::container);
        if let Ok(change) = &result
            && let Some((done, status)) = self.conclude_at_once(lease, &op, change.clone()).await
        {
            self.finished(&done.entry);
            return OpResult::from_entry(&done.entry).left(status, container);
        }
        let result = match result {
            Ok(change) => self.apply_status(lease, &op.entry, change).await,
            Err(failure) => {
                self.record_failure_in_status(lease, &op.entry, &failure)
                    .await;
                Err(failure)
            }
        };
        let status = match result {
            Ok(status) => {
                op.entry.succeed();
                status
            }
            Err(failure) => {
                op.entry.fail(failure.code, failure.message);
                None
            }
        };
        self.finish_entry(lease, &op).await;
        self.finished(&op.entry);
        OpResult::from_entry(&op.entry).left(status, container)
    }

    /// Writes an operation's finished entry under its lease; a failure
    /// that only repeats the one before it is folded into that one.
    async fn finish_entry(&self, lease: &GameLease, op: &Appended) {
        let finished = if op.entry.outcome == Outcome::Failure {
            self.history.finish_failure(op, lease.fence()).await
        } else {
            self.history.finish(op, Some(lease.fence())).await
        };
        if let Err(error) = finished {
            warn!(game = %op.entry.game_id, key = %op.key, %error, "finishing the history entry failed; recovery resolves it");
        }
    }

    /// Ends an operation that changes no status record (an eviction, a
    /// renamed container named back, a duplicate removed): finishes its
    /// entry with the outcome, fenced by the lease.
    async fn close_entry(
        &self,
        lease: &GameLease,
        mut op: Appended,
        result: Result<(), Failure>,
    ) -> OpResult {
        match result {
            Ok(()) => op.entry.succeed(),
            Err(failure) => op.entry.fail(failure.code, failure.message),
        }
        self.finish_entry(lease, &op).await;
        self.finished(&op.entry);
        OpResult::from_entry(&op.entry)
    }

    /// A successful operation's status change and its finished entry in
    /// one transaction: one round trip and one etcd revision instead of
    /// two (BENCHMARKS.md). `None` when that did not apply (the lease was
    /// lost, recovery resolved the entry, etcd failed): the caller then
    /// goes step by step, which tells those cases apart and records them.
    async fn conclude_at_once(
        &self,
        lease: &GameLease,
        op: &Appended,
        change: StatusChange,
    ) -> Option<(Appended, Option<StatusRecord>)> {
        let (current, next) = match change {
            // A deletion needs no look at the record first.
            StatusChange::Clear => (Versioned::absent(), None),
            change => {
                let current = lease.status(&self.status).await.ok()?;
                let next = self.changed_status(&op.entry, change, &current.value);
                (current, next)
            }
        };
        let mut txn = lease.status_txn(&self.status, &current, next.as_ref());
        let mut done = op.clone();
        done.entry.succeed();
        let finish = self.history.finish_txn(&done, Some(lease.fence()));
        txn.when.extend(finish.when);
        txn.then.extend(finish.then);
        let outcome = self.session.store().txn(txn).await.ok()?;
        let done = Appended {
            revision: outcome.revision,
            ..done
        };
        if !outcome.succeeded {
            return None;
        }
        lease.status_committed(next.as_ref(), outcome.revision);
        self.history.written(&done);
        Some((
            done,
            next.map(|next| Versioned::new(next, outcome.revision)),
        ))
    }

    /// The status record a successful `change` leads to from `current`
    /// (`None`: the record is deleted).
    fn changed_status(
        &self,
        entry: &HistoryEntry,
        change: StatusChange,
        current: &rtm_core::model::GameRuntimeStatus,
    ) -> Option<rtm_core::model::GameRuntimeStatus> {
        let mut status = current.clone();
        let last = last_operation(entry, Outcome::Success, None);
        match change {
            StatusChange::Clear => return None,
            StatusChange::LastOperationOnly { .. } => status.last_operation = Some(last),
            StatusChange::Set {
                phase,
                container,
                hostname,
                probed,
            } => {
                let now = std::time::SystemTime::now();
                let running = phase == Phase::Running;
                if probed && running && entry.op_kind == OpKind::Unpause {
                    // Resumed: Ready stays False (paused) until the
                    // controller looks at what the probes say.
                    status.set_phase(phase, now);
                } else if probed && running {
                    // A new container of a health-checked game: never
                    // Ready before a probe passed, not even for the
                    // moment until the controller next looks.
                    status.set_phase(Phase::Starting, now);
                    status.set_condition(
                        rtm_core::model::READY,
                        false,
                        &Phase::Starting.to_string(),
                        "waiting for the first passing probe",
                        now,
                    );
                } else {
                    status.set_phase(phase, now);
                    // Ready follows the phase at once; the controller
                    // refines reason and message when it next looks.
                    let reason = if running {
                        "ContainerRunning".to_owned()
                    } else {
                        phase.to_string()
                    };
                    status.set_condition(rtm_core::model::READY, running, &reason, "", now);
                }
                status.container_id = container.as_ref().map(|c| c.id.clone());
                status.image_ref = Some(entry.image_ref.clone()).filter(|i| !i.is_empty());
                status.image_id = container
                    .as_ref()
                    .and_then(|c| image::status_image_id(&c.info));
                status.hostname = Some(hostname);
                status.node = Some(self.node.clone());
                // The last exit stays visible after a new container
                // replaced the one that exited.
                if let Some(code) = container.as_ref().and_then(|c| c.exit_code) {
                    status.last_exit_code = Some(code);
                    status.oom_killed = container.as_ref().is_some_and(|c| c.oom_killed);
                }
                status.last_operation = Some(last);
            }
        }
        Some(status)
    }

    async fn apply_status(
        &self,
        lease: &GameLease,
        entry: &HistoryEntry,
        change: StatusChange,
    ) -> Result<Option<StatusRecord>, Failure> {
        let recorded_container = matches!(change, StatusChange::Set { .. });
        let written = match change {
            StatusChange::Clear => lease.clear_status(&self.status).await.map(|()| None),
            change => match lease.status(&self.status).await {
                Ok(current) => match self.changed_status(entry, change, &current.value) {
                    Some(next) => lease
                        .write_status(&self.status, &current, next)
                        .await
                        .map(Some),
                    None => lease.clear_status(&self.status).await.map(|()| None),
                },
                Err(e) => Err(e),
            },
        };
        written.map_err(|e| {
            if recorded_container {
                Failure::from(e)
                    .context("the container changed but its status could not be recorded")
            } else {
                e.into()
            }
        })
    }

    /// A failed operation still tells the status what happened, so `rtctl
    /// get` shows it; best effort, the history entry is the record.
    async fn record_failure_in_status(
        &self,
        lease: &GameLease,
        entry: &HistoryEntry,
        failure: &Failure,
    ) {
        if failure.code == ErrorCode::LeaseLost {
            return;
        }
        let last = last_operation(entry, Outcome::Failure, Some(failure));
        let result = lease
            .update_status(&self.status, |status| status.last_operation = Some(last))
            .await;
        if let Err(error) = result {
            warn!(game = %entry.game_id, %error, "recording the failure in the status failed");
        }
    }

    fn finished(&self, entry: &HistoryEntry) {
        let code = entry.error_code.map(ErrorCode::as_str).unwrap_or("");
        self.metrics
            .record_operation(entry.op_kind.as_str(), entry.outcome.as_str(), code);
        match entry.outcome {
            Outcome::Success => info!(
                game = %entry.game_id, op_kind = entry.op_kind.as_str(), op_id = %entry.op_id,
                source_ref = %entry.source_ref, container_before = ?entry.container_id_before,
                container_after = ?entry.container_id_after, image_ref = %entry.image_ref,
                "operation succeeded"
            ),
            _ => warn!(
                game = %entry.game_id, op_kind = entry.op_kind.as_str(), op_id = %entry.op_id,
                source_ref = %entry.source_ref, error_code = code,
                error_message = entry.error_message.as_deref().unwrap_or(""),
                "operation failed"
            ),
        }
    }

    /// The document an operation acts on: the request's, or etcd's.
    async fn document(&self, request: &OpRequest) -> Result<Option<GameRuntime>, Failure> {
        match &request.document {
            Some(doc) => Ok(Some((**doc).clone())),
            None => Ok(self.documents.get(&request.game).await?),
        }
    }

    /// The document an operation acts on, or `not_found`.
    async fn load(&self, request: &OpRequest) -> Result<GameRuntime, Failure> {
        self.document(request).await?.ok_or_else(|| {
            Failure::new(
                ErrorCode::NotFound,
                format!("gameruntime/{} does not exist", request.game),
            )
        })
    }

    /// The game's container, if any; a container with the game's name that
    /// rtmanager does not manage is a conflict it never touches.
    async fn current_container(&self, game: &str) -> Result<Option<ContainerInfo>, Failure> {
        let name = container_name(self.prefix(), game);
        let found = self
            .runtime
            .inspect_container(&name)
            .await
            .map_err(|e| runtime_failure(RuntimeOp::InspectContainer, &e))?;
        match found {
            Some(container) if !container.is_of_game(self.prefix(), game) => Err(Failure::new(
                ErrorCode::Conflict,
                format!(
                    "a container named {name} exists but is not managed by this rtmanager \
                         installation for this game; rtmanager never touches it: rename or \
                         remove it by hand"
                ),
            )),
            other => Ok(other),
        }
    }

    /// Stops a container: `signal` (`None`: the one it was created with),
    /// SIGKILL after `timeout`. A timed-out call is resolved by inspecting:
    /// Docker may have stopped it anyway.
    async fn stop_container(
        &self,
        id: &str,
        signal: Option<&str>,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let stopped = match signal {
            Some(signal) => self.runtime.stop_with_signal(id, signal, timeout).await,
            None => self.runtime.stop(id, timeout).await,
        };
        match stopped {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) if e.outcome_unknown() => match self.runtime.inspect_container(id).await {
                Ok(Some(c)) if c.is_running() => Err(runtime_failure(RuntimeOp::Stop, &e)),
                Ok(_) => Ok(()),
                Err(_) => Err(runtime_failure(RuntimeOp::Stop, &e)),
            },
            Err(e) => Err(runtime_failure(RuntimeOp::Stop, &e)),
        }
    }

    /// Removes a container (`docker rm`); an absent one counts as removed.
    async fn remove_container(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        match self.runtime.remove(id, force).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) if e.outcome_unknown() => match self.runtime.inspect_container(id).await {
                Ok(None) => Ok(()),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }
}

/// The container a document asks for, labelled with the spec hash (what a
/// recreate compares) and the operation that created it, hardened and
/// limited by `policy` (which the hash leaves out).
pub fn container_spec(
    doc: &GameRuntime,
    prefix: &str,
    op_id: &str,
    policy: &ContainerPolicy,
) -> ContainerSpec {
    let name = &doc.metadata.name;
    let spec = &doc.spec;
    let mut container = ContainerSpec::new(name, &spec.image);
    container.name = container_name(prefix, name);
    container.hostname = effective_hostname(doc);
    container.command = spec.command.clone();
    container.args = spec.args.clone();
    container.env = spec
        .env
        .iter()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    container.ports = spec
        .ports
        .iter()
        .map(|p| PortBinding {
            container_port: p.container_port,
            host_port: p.fixed_host_port(),
            protocol: match p.protocol {
                rtm_core::model::Protocol::Tcp => PortProtocol::Tcp,
                rtm_core::model::Protocol::Udp => PortProtocol::Udp,
            },
            host_ip: p.host_ip.clone(),
        })
        .collect();
    volumes::apply(doc, prefix, &mut container);
    policy.apply(doc, &mut container);
    container.stop_timeout = doc.spec.stop_timeout;
    // For a `docker stop` by hand; the controller's own stops send the
    // signal the document names at the time.
    container.stop_signal = spec.lifecycle.stop_signal.clone();
    container
        .labels
        .insert(LABEL_SPEC_HASH.to_owned(), spec.recreate_hash(name));
    container
        .labels
        .insert(LABEL_OP_ID.to_owned(), op_id.to_owned());
    container
        .labels
        .insert(LABEL_RESTART_TOKEN.to_owned(), spec.restart_token.clone());
    container
        .labels
        .insert(LABEL_PREFIX.to_owned(), prefix.to_owned());
    if let Some(generation) = doc.metadata.generation {
        container
            .labels
            .insert(LABEL_GENERATION.to_owned(), generation.to_string());
    }
    for port in rtm_core::ports::host_ports(spec) {
        container
            .labels
            .insert(host_port_label(port.protocol, port.port), String::new());
    }
    container
}

/// A container id as people read it: its first 12 digits.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn effective_hostname(doc: &GameRuntime) -> String {
    doc.spec.effective_hostname(&doc.metadata.name).to_owned()
}

fn last_operation(
    entry: &HistoryEntry,
    outcome: Outcome,
    failure: Option<&Failure>,
) -> LastOperation {
    LastOperation {
        op_kind: entry.op_kind,
        outcome,
        error_code: failure.map(|f| f.code.as_str().to_owned()),
        error_message: failure.map(|f| f.message.clone()),
        source_ref: Some(entry.source_ref.clone()).filter(|s| !s.is_empty()),
        finished_at: Some(rtm_core::model::Timestamp::now()),
    }
}

fn validate_request(request: &OpRequest) -> Result<(), Failure> {
    validate_name(&request.game).map_err(|message| {
        Failure::new(
            ErrorCode::InvalidRequest,
            format!("game id {:?}: {message}", request.game),
        )
    })
}

/// A fresh operation id / token: 128 random bits, hex.
pub fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests;
