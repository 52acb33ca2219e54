//! Docker, behind the `ContainerRuntime` trait: our own container types, the
//! errors the lifecycle services act on, the bollard implementation
//! ([`docker`]) and an in-memory twin for tests ([`fake`]).
//!
//! Nothing outside this module sees a bollard type: Docker's raw answers
//! (404, 304, 409, connection errors, client timeouts) are mapped into
//! [`RuntimeError`] variants and `Option`s in `docker.rs` alone.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::stream::BoxStream;

use rtm_core::error_code::ErrorCode;
pub use rtm_core::ports::PortProtocol;

pub mod docker;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod instrumented;
pub mod volumes;

pub use docker::DockerRuntime;
#[cfg(any(test, feature = "testing"))]
pub use fake::{FakeCall, FakeExec, FakeOp, FakeRuntime};
pub use volumes::{Mount, MountSource, VolumeInfo, VolumeSpec};

/// Label carrying the node whose controller created the container: a controller leaves
/// alone the containers another node made (two nodes sharing one engine by mistake).
pub const LABEL_NODE: &str = "rtmanager.dev/node";

/// Label carrying the key prefix of the rtmanager installation that owns the
/// container: installations sharing a Docker host never touch each
/// other's containers.
pub const LABEL_PREFIX: &str = "rtmanager.dev/prefix";

/// Label carrying the game a container belongs to.
pub const LABEL_GAME: &str = "rtmanager.dev/game";
/// Label marking a container as ours; its value is [`MANAGED_BY`].
pub const LABEL_MANAGED_BY: &str = "rtmanager.dev/managed-by";
/// Value of [`LABEL_MANAGED_BY`] on every container rtmanager creates.
pub const MANAGED_BY: &str = "rtmanager";
/// Label carrying the hash of the spec the container was created from.
pub const LABEL_SPEC_HASH: &str = "rtmanager.dev/spec-hash";
/// Label carrying the id of the operation that created the container.
pub const LABEL_OP_ID: &str = "rtmanager.dev/op-id";
/// Label carrying the document generation the container was created from: what a later
/// recreate diffs the current spec against (the kept revision of that generation).
pub(crate) const LABEL_GENERATION: &str = "rtmanager.dev/generation";
/// Label carrying the image the container was created from, as a digest
/// (`status.imageID`): a later look compares it with the registry's digest of
/// the tag (`imagePullPolicy: Always`) without any record in etcd.
pub const LABEL_IMAGE_ID: &str = "rtmanager.dev/image-id";
/// Label carrying the `spec.restartToken` the container was created under:
/// a new container answers every restart asked for until then. With it, a
/// lost or forged status record can never replay a restart.
pub(crate) const LABEL_RESTART_TOKEN: &str = "rtmanager.dev/restart-token";

/// The container name of a game in the installation whose key prefix is
/// `prefix`: `rtm-<installation>-<game>`, the installation being
/// [`installation_id`]`(prefix)`.
///
/// Deterministic so that a second create for the same game collides with the
/// first (Docker enforces unique names) instead of leaking a twin; carrying
/// the installation so that two installations sharing a Docker engine never
/// want the same name (a tenant of one cannot squat the names the other
/// needs). The game is a DNS-1123 label (validated by the model), so the
/// name is a valid Docker name.
pub fn container_name(prefix: &str, game: &str) -> String {
    format!("rtm-{}-{game}", installation_id(prefix))
}

/// The short id of an installation in container names: the first six hex
/// digits of the SHA-256 of its key prefix.
pub(crate) fn installation_id(prefix: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(prefix.as_bytes());
    hex::encode(&digest[..3])
}

/// The name containers had before names carried the installation:
/// `rtm-<game>`. Such a container, carrying the installation's labels, is
/// named the new way and adopted (lifecycle/reclaim.rs), never recreated.
pub fn legacy_container_name(game: &str) -> String {
    format!("rtm-{game}")
}

/// Everything needed to create one game's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The container name, normally [`container_name`]`(prefix, game)`.
    pub name: String,
    /// The game id; written to the [`LABEL_GAME`] label by the runtime.
    pub game: String,
    /// The image reference (`spec.image`), used as given: never pulled.
    pub image: String,
    /// The hostname inside the container (`spec.hostname`, default the game).
    pub hostname: String,
    /// Replaces the image's ENTRYPOINT when non-empty (Kubernetes `command`).
    pub command: Vec<String>,
    /// Replaces the image's CMD when non-empty (Kubernetes `args`).
    pub args: Vec<String>,
    /// Environment variables, name then value, in the order the spec lists them.
    pub env: Vec<(String, String)>,
    /// The ports to expose and, where a host port is given, publish.
    pub ports: Vec<PortBinding>,
    /// Memory limit in bytes; `None`: no limit (the policy normally sets one).
    pub memory_bytes: Option<u64>,
    /// CPU limit in billionths of a CPU (`1.5` CPUs = `1_500_000_000`).
    pub nano_cpus: Option<i64>,
    /// Extra labels (spec hash, op id, ...). The runtime adds [`LABEL_GAME`]
    /// and [`LABEL_MANAGED_BY`] itself, overriding any value given here.
    pub labels: BTreeMap<String, String>,
    /// How long a stop waits after SIGTERM before SIGKILL; also stored in the
    /// container so a `docker stop` by hand honours it.
    pub stop_timeout: Duration,
    /// The signal a `docker stop` by hand sends (`Config.StopSignal`, e.g.
    /// `SIGINT`); `None`: Docker's default, SIGTERM. The controller's own stops
    /// name their signal per call ([`ContainerRuntime::stop_with_signal`]).
    pub stop_signal: Option<String>,
    /// Drop every Linux capability (`CapDrop: ["ALL"]`) before adding back
    /// `cap_add`; `false` keeps Docker's default set.
    pub drop_all_capabilities: bool,
    /// Capabilities added back, without `CAP_` (`NET_BIND_SERVICE`).
    pub cap_add: Vec<String>,
    /// `no-new-privileges`: setuid binaries and file capabilities cannot
    /// raise the privileges of the container's processes.
    pub no_new_privileges: bool,
    /// Most processes and threads at once (the pids cgroup); `None`: unlimited.
    pub pids_limit: Option<i64>,
    /// `uid` or `uid:gid` the processes run as; `None`: the image's user.
    pub user: Option<String>,
    /// Mount the image's filesystem read-only.
    pub read_only_root_filesystem: bool,
    /// tmpfs mounts: path → mount options (`rw,size=64m`).
    pub tmpfs: BTreeMap<String, String>,
    /// The Docker network to attach the container to, created by the runtime
    /// when absent (see [`NetworkSpec`]); `None`: Docker's default bridge.
    pub network: Option<NetworkSpec>,
    /// The rotation of the container's json-file log; `None`: the Docker
    /// daemon's own log settings (the policy normally sets one).
    pub log_rotation: Option<LogRotation>,
    /// Volumes and host paths mounted into the container (`spec.volumes`).
    pub mounts: Vec<Mount>,
}

/// A json-file log rotated at `max_size_bytes`, `max_files` files kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRotation {
    /// The size at which the file is rotated (Docker's `max-size`).
    pub max_size_bytes: u64,
    /// The files kept, the current one included (Docker's `max-file`).
    pub max_files: u32,
}

/// A user-defined bridge network the runtime makes sure exists before a
/// container joins it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// The network's name; the predefined `bridge` is used as is.
    pub name: String,
    /// Containers on the network cannot reach each other
    /// (`com.docker.network.bridge.enable_icc=false`); published host ports
    /// still reach each one.
    pub isolated: bool,
    /// Labels of the network when the runtime creates it.
    pub labels: BTreeMap<String, String>,
}

/// What the Docker host has, for checks of what a document asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostResources {
    /// Logical CPUs (Docker `info` `NCPU`).
    pub cpus: u32,
    /// Memory in bytes (Docker `info` `MemTotal`).
    pub memory_bytes: u64,
}

impl ContainerSpec {
    /// A spec for `game` running `image` with the defaults the model uses:
    /// the game's name in the default installation (`/rtmanager`), hostname
    /// `<game>`, 30 s stop timeout, nothing else.
    pub fn new(game: &str, image: &str) -> ContainerSpec {
        ContainerSpec {
            name: container_name(rtm_core::store::keys::DEFAULT_PREFIX, game),
            game: game.to_owned(),
            image: image.to_owned(),
            hostname: game.to_owned(),
            command: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            ports: Vec::new(),
            memory_bytes: None,
            nano_cpus: None,
            labels: BTreeMap::new(),
            stop_timeout: Duration::from_secs(30),
            stop_signal: None,
            // Hardened unless the caller says otherwise: the lifecycle's
            // policy fills in the limits.
            drop_all_capabilities: true,
            cap_add: Vec::new(),
            no_new_privileges: true,
            pids_limit: None,
            user: None,
            read_only_root_filesystem: false,
            tmpfs: BTreeMap::new(),
            network: None,
            log_rotation: None,
            mounts: Vec::new(),
        }
    }

    /// The labels the container is created with: `labels` plus ours.
    pub(crate) fn effective_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        labels.insert(LABEL_GAME.to_owned(), self.game.clone());
        labels.insert(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned());
        labels
    }
}

/// One published port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortBinding {
    /// The port the engine listens on inside the container.
    pub container_port: u16,
    /// The host port to publish on; `None` only exposes the port on the
    /// container's network (no random host port: it would change on every
    /// recreate).
    pub host_port: Option<u16>,
    /// TCP or UDP; Docker binds each protocol separately.
    pub protocol: PortProtocol,
    /// The host address to bind; `None` binds all addresses.
    pub host_ip: Option<String>,
}

/// What the runtime observed about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Docker's container id (64 hex digits).
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    /// The image reference the container was created from (its config).
    pub image: String,
    /// The id of that image (`sha256:...`), as resolved at create time.
    pub image_id: String,
    /// The hostname the container was created with.
    pub hostname: String,
    /// Every label of the container: ours ([`LABEL_GAME`], ...) and any
    /// the image carries.
    pub labels: BTreeMap<String, String>,
    /// Docker's status at inspect time.
    pub state: ContainerState,
    /// Set once the container has run and exited (`Exited`, `Dead`).
    pub exit_code: Option<i64>,
    /// The kernel killed the last run for exceeding the memory limit.
    pub oom_killed: bool,
    /// When the last run started; `None` if it never ran.
    pub started_at: Option<SystemTime>,
    /// When the last run ended; `None` while running or if it never ran.
    pub finished_at: Option<SystemTime>,
    /// Docker's last error for the container (e.g. why a start failed).
    pub error: Option<String>,
    /// The container's address on its Docker network (the one its host config names, else
    /// the first with an address); `None` when it has none (not running, or host network).
    pub address: Option<std::net::IpAddr>,
    /// Its published ports (those with a host binding), as Docker reports them, sorted.
    pub ports: Vec<rtm_core::model::PublishedPort>,
    /// Docker's verdict on the image's HEALTHCHECK (`State.Health`); `None` when the
    /// container has no HEALTHCHECK.
    pub health: Option<DockerHealth>,
}

/// Docker's verdict on a container's HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerHealth {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: DockerHealthStatus,
    /// Failed checks in a row.
    pub failing_streak: u32,
    /// The output of the last check, trimmed and cut to at most 512 bytes.
    pub last_output: Option<String>,
    /// The exit code of the last check.
    pub last_exit_code: Option<i64>,
}

/// Docker's health status of a container with a HEALTHCHECK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerHealthStatus {
    /// No check has passed yet, within the image's start period.
    Starting,
    /// The last check passed (or fewer than `retries` failed since).
    Healthy,
    /// `retries` checks failed in a row.
    Unhealthy,
}

/// How a command run in a container ([`ContainerRuntime::exec`]) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// Docker's id of the exec, for [`ContainerRuntime::exec_running`].
    pub exec_id: String,
    /// Its exit code; `None` when it had not ended within the timeout (Docker cannot kill
    /// an exec: it runs on, and the caller should not start another before it ended).
    pub exit_code: Option<i64>,
    /// Its output (stdout and stderr interleaved), at most 4 KiB: the start when longer.
    pub output: String,
}

/// The most output [`ExecOutcome::output`] keeps: 4 KiB is room for any health
/// script's message, and bounds what one hung or chatty exec can cost.
pub(crate) const EXEC_OUTPUT_LIMIT: usize = 4096;

/// The most of a HEALTHCHECK's last output [`DockerHealth::last_output`] keeps:
/// enough for a line of diagnosis (Docker itself keeps 4 KiB per check).
pub(crate) const HEALTH_OUTPUT_LIMIT: usize = 512;

/// The longest start of `text` that is at most `max` bytes and ends on a
/// character boundary.
pub(crate) fn cut_at_char_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl ContainerInfo {
    /// The game named by the [`LABEL_GAME`] label.
    pub fn game(&self) -> Option<&str> {
        self.labels.get(LABEL_GAME).map(String::as_str)
    }

    /// Whether the container carries `rtmanager.dev/managed-by=rtmanager`;
    /// the controller never touches a container for which this is false.
    pub fn is_managed(&self) -> bool {
        self.labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY)
    }

    /// The key prefix of the installation that created it.
    pub fn prefix(&self) -> Option<&str> {
        self.labels.get(LABEL_PREFIX).map(String::as_str)
    }

    /// Whether the installation whose key prefix is `prefix` created it
    /// (managed by rtmanager and labelled with that prefix): the one test
    /// of "ours" before anything judges or touches a container.
    pub(crate) fn belongs_to(&self, prefix: &str) -> bool {
        self.is_managed() && self.prefix() == Some(prefix)
    }

    /// Whether it is the container of `game` in the installation of
    /// `prefix`.
    pub(crate) fn is_of_game(&self, prefix: &str, game: &str) -> bool {
        self.belongs_to(prefix) && self.game() == Some(game)
    }

    /// The hash of the spec it was created from ([`LABEL_SPEC_HASH`]);
    /// `None` for a container we did not create.
    pub fn spec_hash(&self) -> Option<&str> {
        self.labels.get(LABEL_SPEC_HASH).map(String::as_str)
    }

    /// Running and not paused: the engine is serving.
    pub fn is_running(&self) -> bool {
        self.state == ContainerState::Running
    }

    /// Running or paused: its process exists, so only a stop (or a forced
    /// removal) ends it. Docker refuses a plain `rm` of either.
    pub(crate) fn is_alive(&self) -> bool {
        matches!(self.state, ContainerState::Running | ContainerState::Paused)
    }

    /// The `spec.restartToken` the container was created under: the
    /// restarts it answers (see [`LABEL_RESTART_TOKEN`]). `None` for a
    /// container made before the label existed.
    pub fn restart_token(&self) -> Option<&str> {
        self.labels.get(LABEL_RESTART_TOKEN).map(String::as_str)
    }
}

/// Docker's container status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Created and never started (or start failed before the process ran).
    Created,
    /// Its process runs and is not frozen.
    Running,
    /// Its process exists but is frozen (`docker pause`).
    Paused,
    /// Docker's own restart policy is restarting it (we never set one).
    Restarting,
    /// A removal is in progress.
    Removing,
    /// It ran and its process ended; `exit_code` says how.
    Exited,
    /// Docker failed to stop or remove it; only a forced removal helps.
    Dead,
    /// A status this build does not know, kept verbatim.
    Unknown(String),
}

impl ContainerState {
    /// Parses Docker's spelling (`running`, `exited`, ...).
    pub fn parse(status: &str) -> ContainerState {
        match status {
            "created" => ContainerState::Created,
            "running" => ContainerState::Running,
            "paused" => ContainerState::Paused,
            "restarting" => ContainerState::Restarting,
            "removing" => ContainerState::Removing,
            "exited" => ContainerState::Exited,
            "dead" => ContainerState::Dead,
            other => ContainerState::Unknown(other.to_owned()),
        }
    }

    /// Docker's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Removing => "removing",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
            ContainerState::Unknown(other) => other,
        }
    }

    /// The container has run and stopped: an exit code is meaningful.
    pub fn has_exited(&self) -> bool {
        matches!(self, ContainerState::Exited | ContainerState::Dead)
    }
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the runtime observed about one image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageInfo {
    /// The image id, `sha256:...`: what a container's `image_id` is
    /// compared with.
    pub id: String,
    /// Its repository digests (`registry/repo@sha256:...`), one per repository it
    /// was pulled from or pushed to; empty for an image built or loaded here.
    pub repo_digests: Vec<String>,
}

/// One container event from Docker's event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    /// The container the event is about.
    pub container_id: String,
    /// From the container's [`LABEL_GAME`] label (Docker copies labels into
    /// the event's actor attributes).
    pub game: Option<String>,
    /// Docker's action: `create`, `start`, `kill`, `die`, `stop`, `oom`,
    /// `destroy`, ... (exec events look like `exec_create: sh`).
    pub action: String,
}

/// The operations of [`ContainerRuntime`]; names a failed call in errors and
/// scripts failures in the in-memory twin (`fake::FakeRuntime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuntimeOp {
    /// [`ContainerRuntime::ping`].
    Ping,
    /// [`ContainerRuntime::inspect_image`].
    InspectImage,
    /// [`ContainerRuntime::inspect_container`].
    InspectContainer,
    /// [`ContainerRuntime::create`].
    Create,
    /// [`ContainerRuntime::start`].
    Start,
    /// [`ContainerRuntime::stop`].
    Stop,
    /// [`ContainerRuntime::kill`].
    Kill,
    /// [`ContainerRuntime::remove`].
    Remove,
    /// [`ContainerRuntime::unpause`].
    Unpause,
    /// [`ContainerRuntime::rename`].
    Rename,
    /// The listings: [`ContainerRuntime::list_managed`], `list_game` and
    /// `list_labelled`.
    ListManaged,
    /// [`ContainerRuntime::events`].
    Events,
    /// [`ContainerRuntime::exec`] and [`ContainerRuntime::exec_running`].
    Exec,
    /// [`ContainerRuntime::last_output`].
    Logs,
    /// The volume calls: [`ContainerRuntime::inspect_volume`],
    /// `create_volume`, `remove_volume` and `list_volumes`.
    Volume,
    /// [`ContainerRuntime::pull_image`].
    PullImage,
    /// [`ContainerRuntime::registry_digest`].
    RegistryDigest,
}

impl RuntimeOp {
    /// The name in errors, logs and the `op` label of the Docker metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            RuntimeOp::Ping => "ping",
            RuntimeOp::InspectImage => "inspect_image",
            RuntimeOp::InspectContainer => "inspect_container",
            RuntimeOp::Create => "create",
            RuntimeOp::Start => "start",
            RuntimeOp::Stop => "stop",
            RuntimeOp::Kill => "kill",
            RuntimeOp::Remove => "remove",
            RuntimeOp::Unpause => "unpause",
            RuntimeOp::Rename => "rename",
            RuntimeOp::ListManaged => "list_managed",
            RuntimeOp::Events => "events",
            RuntimeOp::Exec => "exec",
            RuntimeOp::Logs => "logs",
            RuntimeOp::Volume => "volume",
            RuntimeOp::PullImage => "pull_image",
            RuntimeOp::RegistryDigest => "registry_digest",
        }
    }
}

impl fmt::Display for RuntimeOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a runtime call failed, in the terms the lifecycle services act on.
/// Messages are Docker's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// No such container (or image, for calls other than create).
    #[error("not found: {what}")]
    NotFound {
        /// The name or id looked for.
        what: String,
    },
    /// A container with this name already exists.
    #[error("container name {name} is already in use")]
    NameConflict {
        /// The container name asked for.
        name: String,
    },
    /// The image is not on the Docker host (nothing is ever pulled).
    #[error("image {image} is not present on the Docker host")]
    ImageNotFound {
        /// The image reference of the spec.
        image: String,
    },
    /// A host port of the spec is taken (by a container or another process).
    #[error("host port already allocated: {message}")]
    PortAllocated {
        /// Docker's message, naming the port.
        message: String,
    },
    /// Any other 409: removing a running container, a removal already in
    /// progress, ...
    #[error("conflict: {message}")]
    Conflict {
        /// Docker's message.
        message: String,
    },
    /// The daemon could not be reached: socket missing, connection refused,
    /// connection lost mid-request.
    #[error("Docker is unreachable: {message}")]
    Unreachable {
        /// What the client saw (the socket error).
        message: String,
    },
    /// No answer in time. Docker may still have done it (a timed-out stop
    /// still stops the container): inspect again before deciding.
    #[error("Docker did not answer {operation} in time; the outcome is unknown")]
    Timeout {
        /// The call that timed out ([`RuntimeOp::as_str`]).
        operation: String,
    },
    /// A pull of `image` (or a look at its digest in the registry) failed;
    /// `failure` says how, `message` is Docker's (credentials never appear in it).
    #[error("pulling {image}: {message}")]
    Pull {
        /// The image reference.
        image: String,
        /// What kind of failure it was.
        failure: PullFailure,
        /// Docker's (or the registry's) message.
        message: String,
    },
    /// Any other error answer. `status` is the HTTP status, or 0 when Docker
    /// answered something unreadable (no usable status).
    #[error("Docker refused ({status}): {message}")]
    Rejected {
        /// The HTTP status, 0 when unreadable.
        status: u16,
        /// Docker's message.
        message: String,
    },
}

impl rtm_core::Coded for RuntimeError {
    fn code(&self) -> ErrorCode {
        RuntimeError::code(self)
    }
}

impl RuntimeError {
    /// The stable error code for this failure, not knowing which call failed.
    /// See [`RuntimeError::code_during`] for create/start/stop failures.
    pub fn code(&self) -> ErrorCode {
        match self {
            RuntimeError::NotFound { .. } => ErrorCode::NotFound,
            RuntimeError::NameConflict { .. } | RuntimeError::Conflict { .. } => {
                ErrorCode::Conflict
            }
            RuntimeError::ImageNotFound { .. } => ErrorCode::ImageNotFound,
            RuntimeError::PortAllocated { .. } => ErrorCode::PortConflict,
            RuntimeError::Pull { failure, .. } => failure.code(),
            RuntimeError::Unreachable { .. } | RuntimeError::Timeout { .. } => {
                ErrorCode::ServiceUnavailable
            }
            // A 4xx nobody classified means we sent something Docker finds
            // malformed: our bug. A 5xx (or garbage) means the daemon failed.
            RuntimeError::Rejected { status, .. } if (400..500).contains(status) => {
                ErrorCode::Internal
            }
            RuntimeError::Rejected { .. } => ErrorCode::ServiceUnavailable,
        }
    }

    /// The stable error code when `op` failed: Docker refusing to create or
    /// start a container is `start_failed` (bad entrypoint, OCI runtime
    /// error, ...), refusing to stop, kill or remove it is `stop_failed`;
    /// everything else as [`RuntimeError::code`].
    pub(crate) fn code_during(&self, op: RuntimeOp) -> ErrorCode {
        match (self, op) {
            (RuntimeError::Rejected { .. }, RuntimeOp::Create | RuntimeOp::Start) => {
                ErrorCode::StartFailed
            }
            (
                RuntimeError::Rejected { .. },
                RuntimeOp::Stop | RuntimeOp::Kill | RuntimeOp::Remove,
            ) => ErrorCode::StopFailed,
            _ => self.code(),
        }
    }

    /// No such container or image: for a removal or stop, already done.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RuntimeError::NotFound { .. })
    }

    /// Docker may or may not have carried the call out: a client timeout, or
    /// a connection that failed (possibly after the request was sent). The
    /// caller must inspect again before recording success or failure.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            RuntimeError::Timeout { .. } | RuntimeError::Unreachable { .. }
        )
    }
}

/// How a pull failed, for its error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullFailure {
    /// The registry has no such repository or tag ("manifest unknown"):
    /// `image_not_found`, as for an image missing with `imagePullPolicy: Never`.
    NotFound,
    /// The registry refused the credentials, or wants some: `image_pull_unauthorized`.
    Unauthorized,
    /// The pull outlived `--image-pull-timeout`: `image_pull_timeout`.
    Timeout,
    /// Anything else (registry unreachable, broken, disk full): `image_pull_failed`.
    Failed,
}

impl PullFailure {
    /// The stable error code.
    pub const fn code(self) -> ErrorCode {
        match self {
            PullFailure::NotFound => ErrorCode::ImageNotFound,
            PullFailure::Unauthorized => ErrorCode::ImagePullUnauthorized,
            PullFailure::Timeout => ErrorCode::ImagePullTimeout,
            PullFailure::Failed => ErrorCode::ImagePullFailed,
        }
    }
}

/// Credentials for one registry host (from the controller's auth file). The
/// password never reaches a log: `Debug` leaves it out.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    /// The registry host (`host[:port]`) they are for.
    pub server: String,
    /// The user name; empty with an identity token.
    pub username: String,
    /// The password.
    pub password: String,
    /// An OAuth identity token, instead of a user name and password.
    pub identity_token: Option<String>,
}

impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("server", &self.server)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A container engine, as the lifecycle services and the controller see it.
///
/// Implementations: [`DockerRuntime`] (bollard) and `fake::FakeRuntime`
/// (in memory). Every call is bounded in time by the implementation.
#[async_trait]
pub trait ContainerRuntime: Send + Sync + std::fmt::Debug + 'static {
    /// Checks the daemon answers.
    async fn ping(&self) -> Result<(), RuntimeError>;

    /// The image by reference or id; `None` when it is not on the host.
    async fn inspect_image(&self, image: &str) -> Result<Option<ImageInfo>, RuntimeError>;

    /// Pulls `image` from its registry with `credentials` (anonymously without),
    /// reading Docker's progress to its end; fails with [`RuntimeError::Pull`]
    /// (a failure reported inside the progress included) or after `timeout`.
    async fn pull_image(
        &self,
        image: &str,
        credentials: Option<&RegistryCredentials>,
        timeout: Duration,
    ) -> Result<ImageInfo, RuntimeError>;

    /// The digest (`sha256:...`) the registry holds for `image`'s tag, read
    /// without pulling (Docker's distribution inspect: the manifest only).
    async fn registry_digest(
        &self,
        image: &str,
        credentials: Option<&RegistryCredentials>,
        timeout: Duration,
    ) -> Result<String, RuntimeError>;

    /// The container by name or id; `None` when there is none.
    async fn inspect_container(
        &self,
        name_or_id: &str,
    ) -> Result<Option<ContainerInfo>, RuntimeError>;

    /// Creates (does not start) the container; returns its id.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;

    /// Starts the container; starting a running one is `Ok`.
    async fn start(&self, id: &str) -> Result<(), RuntimeError>;

    /// The container's own stop signal (SIGTERM unless it was created with
    /// another), then SIGKILL after `timeout`; stopping a stopped container
    /// is `Ok`, a missing one is `NotFound`.
    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError>;

    /// Sends `signal` (a name such as `SIGINT`), waits at most `timeout` for
    /// the container to exit, then SIGKILL: a stop with the signal chosen
    /// per call, whatever the container was created with. Stopping a stopped
    /// container is `Ok`, a missing one `NotFound`; like `stop`, a timed-out
    /// call leaves the outcome unknown.
    ///
    /// The default is [`ContainerRuntime::stop`], which sends the
    /// container's own stop signal: for wrappers and test doubles that only
    /// forward `stop`.
    async fn stop_with_signal(
        &self,
        id: &str,
        signal: &str,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        let _ = signal;
        self.stop(id, timeout).await
    }

    /// SIGKILL; killing a container that is not running is `Ok`.
    async fn kill(&self, id: &str) -> Result<(), RuntimeError>;

    /// Removes the container (and its anonymous volumes); `force` kills a
    /// running one first. A missing container is `NotFound`.
    async fn remove(&self, id: &str, force: bool) -> Result<(), RuntimeError>;

    /// Resumes a paused container; one that is not paused is `Ok`.
    async fn unpause(&self, id: &str) -> Result<(), RuntimeError>;

    /// Renames a container; `NameConflict` when `name` is taken.
    async fn rename(&self, id: &str, name: &str) -> Result<(), RuntimeError>;

    /// Every container labelled `managed-by=rtmanager`, in any state, sorted
    /// by name.
    async fn list_managed(&self) -> Result<Vec<ContainerInfo>, RuntimeError>;

    /// The managed containers labelled as `game`'s, whatever their names
    /// (a container renamed by hand is still the game's), sorted by name.
    async fn list_game(&self, game: &str) -> Result<Vec<ContainerInfo>, RuntimeError>;

    /// The managed containers, in any state, that carry the label `key`
    /// (whatever its value), sorted by name: e.g. the containers created to
    /// publish one host port ([`host_port_label`](rtm_core::ports::host_port_label)).
    async fn list_labelled(&self, key: &str) -> Result<Vec<ContainerInfo>, RuntimeError>;

    /// The host's CPUs and memory, or `None` when this runtime cannot tell
    /// (then nothing is checked against the host). Implementations may
    /// cache it: it does not change while the daemon runs.
    async fn host_resources(&self) -> Result<Option<HostResources>, RuntimeError> {
        Ok(None)
    }

    /// The engine's own id (Docker `info` `ID`): controllers sharing a node name must
    /// share the engine. `None` when the runtime has none to say.
    async fn engine_id(&self) -> Result<Option<String>, RuntimeError> {
        Ok(None)
    }

    /// Runs `command` (no shell) in the running container `id`, waiting at most `timeout`
    /// for it to end. A container that is not running (or paused) is `Conflict`, a missing
    /// one `NotFound`.
    async fn exec(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError>;

    /// Whether the exec `exec_id` (of [`ContainerRuntime::exec`]) still runs; a forgotten
    /// one (its container gone) is `false`.
    async fn exec_running(&self, exec_id: &str) -> Result<bool, RuntimeError>;

    /// The end of the container's output, stdout and stderr interleaved as Docker logged
    /// them, each line starting with Docker's RFC 3339 timestamp and a space: at least the
    /// last `max_bytes` bytes when it has that many (the caller cuts it to size). A missing
    /// container is `NotFound`. What is kept of a container before `docker rm` takes it.
    async fn last_output(&self, id: &str, max_bytes: usize) -> Result<String, RuntimeError>;
    /// The Docker volume `name`; `None` when there is none.
    async fn inspect_volume(&self, name: &str) -> Result<Option<VolumeInfo>, RuntimeError>;

    /// Creates the volume, or answers the one of that name that exists
    /// already (as Docker does, whatever its labels: the caller checks them).
    async fn create_volume(&self, spec: &VolumeSpec) -> Result<VolumeInfo, RuntimeError>;

    /// Removes the volume; a missing one is `NotFound`, one a container
    /// uses is `Conflict`.
    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError>;

    /// The volumes carrying every label of `labels` (`key=value`), sorted by
    /// name.
    async fn list_volumes(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<VolumeInfo>, RuntimeError>;

    /// Events of managed containers, from now on. The stream ends or yields
    /// an error when the daemon goes away or drops a slow reader (Docker's
    /// stream is lossy): re-open it and relist.
    fn events(&self) -> BoxStream<'static, Result<ContainerEvent, RuntimeError>>;
}

/// What the volume calls of a runtime without volumes (a test double that
/// only forwards containers) answer.
#[cfg(test)]
mod tests {
    use super::*;

    fn info_with_labels(labels: &[(&str, &str)]) -> ContainerInfo {
        ContainerInfo {
            id: "c1".into(),
            name: "rtm-g1".into(),
            image: "engine:1".into(),
            image_id: "sha256:1".into(),
            hostname: "g1".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            state: ContainerState::Running,
            exit_code: None,
            oom_killed: false,
            started_at: None,
            finished_at: None,
            error: None,
            address: None,
            ports: Vec::new(),
            health: None,
        }
    }

    #[test]
    fn cutting_text_never_splits_a_character() {
        assert_eq!(cut_at_char_boundary("healthy", 512), "healthy");
        assert_eq!(cut_at_char_boundary("abcdef", 3), "abc");
        // "é" is two bytes: a cut through it keeps the text before it.
        assert_eq!(cut_at_char_boundary("aé", 2), "a");
        assert_eq!(cut_at_char_boundary("aé", 3), "aé");
        assert_eq!(cut_at_char_boundary("€", 2), "");
        assert_eq!(cut_at_char_boundary("", 0), "");
    }

    #[test]
    fn a_container_name_carries_the_installation_and_the_game() {
        assert_eq!(installation_id("/rtmanager").len(), 6);
        assert_eq!(
            container_name("/rtmanager", "game-7f3a"),
            format!("rtm-{}-game-7f3a", installation_id("/rtmanager"))
        );
        assert_ne!(
            container_name("/rtmanager", "g1"),
            container_name("/tenant-b", "g1"),
            "two installations never want one name"
        );
        assert_eq!(legacy_container_name("g1"), "rtm-g1");
    }

    #[test]
    fn effective_labels_always_carry_game_and_managed_by() {
        let mut spec = ContainerSpec::new("g1", "engine:1");
        spec.labels
            .insert(LABEL_MANAGED_BY.into(), "someone-else".into());
        spec.labels.insert(LABEL_SPEC_HASH.into(), "abc".into());
        let labels = spec.effective_labels();
        assert_eq!(labels[LABEL_GAME], "g1");
        assert_eq!(labels[LABEL_MANAGED_BY], MANAGED_BY);
        assert_eq!(labels[LABEL_SPEC_HASH], "abc");
    }

    #[test]
    fn container_info_reads_our_labels() {
        let ours = info_with_labels(&[
            (LABEL_GAME, "g1"),
            (LABEL_MANAGED_BY, MANAGED_BY),
            (LABEL_SPEC_HASH, "h1"),
        ]);
        assert_eq!(ours.game(), Some("g1"));
        assert!(ours.is_managed());
        assert_eq!(ours.spec_hash(), Some("h1"));
        assert!(ours.is_running());

        let foreign = info_with_labels(&[(LABEL_MANAGED_BY, "compose")]);
        assert!(!foreign.is_managed());
        assert_eq!(foreign.game(), None);
    }

    #[test]
    fn container_state_round_trips_docker_spelling() {
        for status in [
            "created",
            "running",
            "paused",
            "restarting",
            "removing",
            "exited",
            "dead",
            "stopping",
        ] {
            assert_eq!(ContainerState::parse(status).as_str(), status);
        }
        assert_eq!(
            ContainerState::parse("stopping"),
            ContainerState::Unknown("stopping".into())
        );
    }

    #[test]
    fn error_codes_follow_the_stable_table() {
        let cases = [
            (
                RuntimeError::NotFound { what: "x".into() },
                ErrorCode::NotFound,
            ),
            (
                RuntimeError::NameConflict { name: "x".into() },
                ErrorCode::Conflict,
            ),
            (
                RuntimeError::ImageNotFound { image: "x".into() },
                ErrorCode::ImageNotFound,
            ),
            (
                RuntimeError::PortAllocated {
                    message: "x".into(),
                },
                ErrorCode::PortConflict,
            ),
            (
                RuntimeError::Conflict {
                    message: "x".into(),
                },
                ErrorCode::Conflict,
            ),
            (
                RuntimeError::Unreachable {
                    message: "x".into(),
                },
                ErrorCode::ServiceUnavailable,
            ),
            (
                RuntimeError::Timeout {
                    operation: "stop".into(),
                },
                ErrorCode::ServiceUnavailable,
            ),
            (
                RuntimeError::Rejected {
                    status: 400,
                    message: "x".into(),
                },
                ErrorCode::Internal,
            ),
            (
                RuntimeError::Rejected {
                    status: 500,
                    message: "x".into(),
                },
                ErrorCode::ServiceUnavailable,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err:?}");
        }
    }

    #[test]
    fn docker_refusals_during_start_and_stop_have_their_own_codes() {
        let refused = RuntimeError::Rejected {
            status: 500,
            message: "OCI runtime".into(),
        };
        assert_eq!(
            refused.code_during(RuntimeOp::Create),
            ErrorCode::StartFailed
        );
        assert_eq!(
            refused.code_during(RuntimeOp::Start),
            ErrorCode::StartFailed
        );
        assert_eq!(refused.code_during(RuntimeOp::Stop), ErrorCode::StopFailed);
        assert_eq!(
            refused.code_during(RuntimeOp::Remove),
            ErrorCode::StopFailed
        );
        assert_eq!(
            refused.code_during(RuntimeOp::ListManaged),
            ErrorCode::ServiceUnavailable
        );
        let port = RuntimeError::PortAllocated {
            message: "x".into(),
        };
        assert_eq!(port.code_during(RuntimeOp::Start), ErrorCode::PortConflict);
    }

    #[test]
    fn only_timeouts_and_lost_connections_leave_the_outcome_unknown() {
        assert!(
            RuntimeError::Timeout {
                operation: "stop".into()
            }
            .outcome_unknown()
        );
        assert!(
            RuntimeError::Unreachable {
                message: "x".into()
            }
            .outcome_unknown()
        );
        assert!(!RuntimeError::NotFound { what: "x".into() }.outcome_unknown());
        assert!(
            !RuntimeError::Rejected {
                status: 500,
                message: "x".into()
            }
            .outcome_unknown()
        );
    }
}
