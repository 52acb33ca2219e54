//! The `GameRuntime` document: its types, and the re-exports of parsing, validation, defaults
//! and the CRD schema that live in the submodules.
//!
//! Every struct here rejects unknown fields, so a typo such as `spec.imagee` is an error that
//! names its path instead of a silently ignored setting. Field doc comments become the
//! descriptions in the generated CRD, so they are written for the person editing the YAML.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

// Public so either path works (`model::FieldError` or `model::validate::FieldError`); the
// re-exports below are the flat API most callers want.
pub mod budget;
pub mod changes;
pub mod crd;
pub mod defaults;
pub mod disruption;
#[cfg(any(test, feature = "testing"))]
pub mod fixtures;
pub mod health;
pub mod image;
pub mod parse;
pub mod quantity;
pub mod session;
pub mod validate;
pub mod volume;

pub use budget::{
    BUDGET_KIND, BudgetSpec, GameDisruptionBudget, LabelOperator, LabelRequirement, LabelSelector,
    MaxUnavailable, validate_budget,
};
pub use crd::crd_yaml;
pub use defaults::DEFAULT_STOP_TIMEOUT;
pub use disruption::{
    Disruption, ExecAction, Lifecycle, PreStop, RestartSchedule, RestartScheduleStatus,
};
pub use health::{
    DockerProbe, ExecProbe, HealthCheck, HealthStatus, HealthVerdict, HttpProbe, Probe, ProbeKind,
    PublishedPort, TcpProbe,
};
pub use image::{ImageName, ImagePullPolicy};
pub use parse::{
    MAX_DOCUMENT_BYTES, MAX_FILE_BYTES, MAX_NESTING, MAX_NODES, ParseError, parse_document,
    parse_documents, to_yaml,
};
pub use quantity::{Cpus, Memory, QuantityError, Timestamp};
pub use session::{Session, SessionState};
pub use validate::{FieldError, validate, validate_capability, validate_label, validate_name};
pub use volume::{Volume, VolumeKind, VolumeSource};

/// The `apiVersion` every document carries.
pub const API_VERSION: &str = "rtmanager.dev/v1alpha1";
/// The `kind` every document carries.
pub const KIND: &str = "GameRuntime";

/// Annotation a tool sets on a spec it writes: who asked (`admin_cli`, `api`, ...). The
/// operation the controller runs for that change records it as `op_source`.
pub const ANNOTATION_OP_SOURCE: &str = "rtmanager.dev/op-source";
/// Annotation a tool sets on a spec it writes: the request id (correlation id) the operation
/// records as `source_ref`.
pub const ANNOTATION_SOURCE_REF: &str = "rtmanager.dev/source-ref";

/// A game's desired state: which image to run, how, and whether it should be running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GameRuntime {
    /// Always `rtmanager.dev/v1alpha1`.
    pub api_version: String,
    /// Always `GameRuntime`.
    pub kind: String,
    /// The game's name (its id), labels and annotations.
    pub metadata: ObjectMeta,
    /// The desired state.
    pub spec: GameRuntimeSpec,
    /// The observed state, written by the controller only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<GameRuntimeStatus>,
}

/// Name, labels and annotations, plus the bookkeeping the store fills in from etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// The game id: a DNS-1123 label (lowercase letters, digits and '-', at most 63 characters).
    pub name: String,
    /// Free-form key/value labels (Kubernetes label syntax).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form key/value annotations, e.g. `rtmanager.dev/source-ref`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// etcd's per-key version of the spec; set by the store, not by users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// etcd's mod_revision of the spec, for optimistic concurrency; set by the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// When the document was first stored; set by the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<Timestamp>,
}

/// What the game's container should look like and whether it should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GameRuntimeSpec {
    /// The image to run, e.g. `registry.example/galaxy/engine:1.4.2`.
    #[schemars(length(min = 1, max = 255))]
    pub image: String,
    /// When the image is pulled from its registry: `IfNotPresent` (the default) pulls
    /// only when it is not on the Docker host, `Always` pulls before every new container
    /// and recreates the game (a voluntary update) when the tag's digest moves, `Never`
    /// never pulls. Changing it never recreates the container by itself.
    #[serde(default, skip_serializing_if = "ImagePullPolicy::is_default")]
    pub image_pull_policy: ImagePullPolicy,
    /// `Running` (the default): the container should run; `Stopped`: it should not.
    #[serde(default)]
    pub state: DesiredState,
    /// The container's hostname; defaults to `metadata.name` and stays the same across
    /// restarts (recreates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Replaces the image's entrypoint when not empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Replaces the image's command (the entrypoint's arguments) when not empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables for the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Ports the container listens on, and where to publish them on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
    /// Memory, CPU and process limits; the controller's defaults when absent.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// How much of its output the container keeps on the host: Docker's json-file log,
    /// rotated at `maxSize`, `maxFiles` files kept. The controller's defaults when absent,
    /// so no game fills a disk by default.
    #[serde(default, skip_serializing_if = "Logging::is_empty")]
    pub logging: Logging,
    /// Volumes mounted into the container (at most 16): the game's own named volumes
    /// (kept across restarts and recreates, removed with the game unless `retain`), shared
    /// named volumes (`source.volume`) and host directories (`source.hostPath`, only under
    /// the controller's `--allowed-host-paths`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub volumes: Vec<Volume>,
    /// How long a stop waits after SIGTERM before SIGKILL, e.g. `30s` (at most 10m).
    #[serde(default = "defaults::stop_timeout", with = "quantity::duration")]
    #[schemars(schema_with = "quantity::duration_schema")]
    pub stop_timeout: Duration,
    /// What the controller does when the container exits by itself.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Change it (`rtctl restart`) to ask for a restart: the container is recreated.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub restart_token: String,
    /// Which node runs the game; the scheduler chooses one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Labels a node must have (each `key: value`, as the node's `--node-labels`) for the
    /// scheduler to place the game there.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 16))]
    pub node_selector: BTreeMap<String, String>,
    /// What the container may do beyond the controller's hardened defaults (every
    /// capability dropped, no-new-privileges, a pids limit): capabilities to add back, the
    /// user to run as, a read-only root filesystem.
    #[serde(default, skip_serializing_if = "SecurityContext::is_empty")]
    pub security_context: SecurityContext,
    /// How the controller tells that the game serves (an http, tcp, exec or docker probe):
    /// Ready then means the probe passes. Without it, Ready means the container runs.
    /// Changing it never recreates the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// How voluntary disruptions treat the game while it is in session (Allocated): they
    /// wait for its end, at most `maxSessionWait` when set.
    #[serde(default, skip_serializing_if = "Disruption::is_empty")]
    pub disruption: Disruption,
    /// How the container is stopped: a preStop command, a delay and the stop signal.
    #[serde(default, skip_serializing_if = "Lifecycle::is_empty")]
    pub lifecycle: Lifecycle,
    /// Restarts the game on a schedule (a cron expression in a time zone), by default
    /// only once its session has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_schedule: Option<RestartSchedule>,
}

/// Security settings of the container, a subset of Kubernetes' `securityContext`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityContext {
    /// Linux capabilities given back to the container; every other one is dropped.
    #[serde(default, skip_serializing_if = "Capabilities::is_empty")]
    pub capabilities: Capabilities,
    /// The numeric user id the container's processes run as (0-2147483647); the image's
    /// user when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub run_as_user: Option<u32>,
    /// The numeric group id the processes run as (0-2147483647); needs `runAsUser`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub run_as_group: Option<u32>,
    /// Mounts the image's filesystem read-only; `/tmp` is then a small writable tmpfs.
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only_root_filesystem: bool,
}

/// Linux capabilities of the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Capabilities {
    /// Capabilities to add back, by their Linux names without `CAP_`, e.g.
    /// `NET_BIND_SERVICE`. The controller refuses any outside its `--allowed-capabilities`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
}

/// The state a game should be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum DesiredState {
    /// The container should exist and run.
    Running,
    /// No container should run (it is stopped, not removed).
    Stopped,
}

/// An environment variable of the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    /// The variable's name: letters, digits and '_', not starting with a digit.
    #[schemars(pattern(r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
    /// The variable's value; empty when absent.
    #[serde(default)]
    pub value: String,
}

/// A port of the container, optionally published on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMapping {
    /// The port inside the container (1-65535).
    #[serde(deserialize_with = "port_number::required")]
    #[schemars(range(min = 1, max = 65535))]
    pub container_port: u16,
    /// The host port to publish it on: a number (1-65535), or `auto` for a free port of
    /// the node's `--port-range`, kept while the game stays on the node and handed to the
    /// engine as `RTM_PORT_<containerPort>`; not published when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "HostPortSpec::field_schema")]
    pub host_port: Option<HostPortSpec>,
    /// `TCP` (the default) or `UDP`.
    #[serde(default)]
    pub protocol: Protocol,
    /// The host address to bind the published port to; all addresses when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// What `hostPort` asks for: one port, or any free port of the node's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPortSpec {
    /// This host port.
    Port(u16),
    /// A free port of the node's `--port-range`, chosen by the node's controller.
    Auto,
}

impl From<u16> for HostPortSpec {
    fn from(port: u16) -> Self {
        HostPortSpec::Port(port)
    }
}

impl HostPortSpec {
    /// The port, when one was named.
    pub fn fixed(self) -> Option<u16> {
        match self {
            HostPortSpec::Port(port) => Some(port),
            HostPortSpec::Auto => None,
        }
    }
}

impl fmt::Display for HostPortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPortSpec::Port(port) => write!(f, "{port}"),
            HostPortSpec::Auto => f.write_str("auto"),
        }
    }
}

impl Serialize for HostPortSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            HostPortSpec::Port(port) => serializer.serialize_u16(*port),
            HostPortSpec::Auto => serializer.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for HostPortSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Number(i64),
            Text(String),
        }
        match Wire::deserialize(deserializer).map_err(|_| {
            D::Error::custom(format!("{}, or auto", port_number::RANGE_MESSAGE))
        })? {
            Wire::Number(number) => u16::try_from(number).map(HostPortSpec::Port).map_err(|_| {
                D::Error::custom(format!("{}, or auto; got {number}", port_number::RANGE_MESSAGE))
            }),
            Wire::Text(text) if text == "auto" => Ok(HostPortSpec::Auto),
            Wire::Text(text) => Err(D::Error::custom(format!(
                "{}, or auto; got {text:?}",
                port_number::RANGE_MESSAGE
            ))),
        }
    }
}

impl HostPortSpec {
    /// The schema of the optional `hostPort` field: a port number or `auto` (Kubernetes'
    /// int-or-string once the CRD is made structural).
    fn field_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": 65535},
                {"type": "string", "enum": ["auto"]}
            ]
        })
    }
}

impl PortMapping {
    /// The host port named in `hostPort`, if a number was.
    pub fn fixed_host_port(&self) -> Option<u16> {
        self.host_port.and_then(HostPortSpec::fixed)
    }

    /// Whether `hostPort: auto` asks the node for a port.
    pub fn is_auto(&self) -> bool {
        self.host_port == Some(HostPortSpec::Auto)
    }
}

/// A transport protocol of a port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum Protocol {
    /// TCP.
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
}

/// Resource limits of the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// Memory limit, e.g. `512Mi`, `1G`, `1.5Gi` (at least 6Mi, Docker's minimum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// CPU limit in CPUs, e.g. `"1.5"` or `500m` (at least 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Cpus>,
    /// Most processes (and threads) the container may have at once, e.g. `256`; the
    /// controller's `--pids-limit` when absent, and never above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 8, max = 4194304))]
    pub pids: Option<i64>,
}

/// The rotation of the container's log (Docker's json-file driver).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Logging {
    /// The size at which the log file is rotated, e.g. `10Mi` (1Mi to 1Gi); the
    /// controller's `--log-max-size` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<Memory>,
    /// How many log files are kept, the current one included, e.g. `3` (1 to 100); the
    /// controller's `--log-max-files` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_files: Option<u32>,
}

impl Logging {
    /// True when nothing is set (the field is then left out of the YAML).
    pub fn is_empty(&self) -> bool {
        self.max_size.is_none() && self.max_files.is_none()
    }
}

/// What the controller does when the container exits without being asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RestartPolicy {
    /// Restart it whatever its exit code.
    Always,
    /// Restart it only when it exited with a non-zero code.
    OnFailure,
    /// Leave it exited.
    Never,
}

/// What the controller observed, written to the status key (the status subresource).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GameRuntimeStatus {
    /// Where the game is in its lifecycle.
    #[serde(default)]
    pub phase: Phase,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The id of the current container; it changes on every restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The image the current container runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_ref: Option<String>,
    /// The image the current container was created from, as a digest: its repository
    /// digest (`registry/repo@sha256:...`) when it came from a registry, else its image
    /// id (`sha256:...`).
    #[serde(default, rename = "imageID", skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The current container's hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The controller node that runs the game.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// How many times the controller restarted the game.
    #[serde(default)]
    pub restart_count: u32,
    /// The last `spec.restartToken` the controller acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_restart_token: Option<String>,
    /// Exit code of the last container that exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_code: Option<i64>,
    /// Whether the last container that exited was killed for running out of memory.
    #[serde(default, skip_serializing_if = "is_false")]
    pub oom_killed: bool,
    /// A human-readable explanation of the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the game entered its current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_since: Option<Timestamp>,
    /// Kubernetes-style conditions, e.g. `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The last lifecycle operation the controller ran for the game.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_operation: Option<LastOperation>,
    /// Where players connect: the advertised address of the node that runs the game
    /// (with a port of `ports`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The container's published ports, as Docker reports them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PublishedPort>,
    /// What the health check says of the current container (with `spec.healthCheck`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
    /// The game's session as the controller last recorded it in the history (the record at
    /// `sessions/<game>` is the truth; this says which of its changes were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
    /// What the controller keeps of `spec.restartSchedule` to restart once per window (with
    /// a schedule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_schedule: Option<RestartScheduleStatus>,
}

/// Where a game is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Accepted, nothing done yet.
    Pending,
    /// The container is being created or started, or runs and has not passed its health
    /// check yet.
    Starting,
    /// The container runs.
    Running,
    /// The container is being stopped.
    Stopping,
    /// No container runs, as asked.
    Stopped,
    /// The container keeps exiting; the controller waits before the next restart.
    CrashLoopBackOff,
    /// The controller gave up; see `message` and `lastOperation`.
    Failed,
    /// The container is being removed because the document was deleted.
    Removing,
}

/// A Kubernetes-style condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// The condition's name, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// A CamelCase reason for the last transition.
    #[serde(default)]
    pub reason: String,
    /// A human-readable explanation.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Timestamp>,
}

/// The value of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// It is not known whether the condition holds.
    Unknown,
}

/// A summary of the last lifecycle operation (the full record is in the history).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LastOperation {
    /// What the operation did.
    pub op_kind: OpKind,
    /// How it ended (or that it is still running).
    pub outcome: Outcome,
    /// The stable error code of a failure, e.g. `image_not_found`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// The error of a failure, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// The correlation id of the request that caused it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<String>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
}

/// The kind of a lifecycle operation (as in the operation history).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Create and start a container.
    Start,
    /// Stop the container.
    Stop,
    /// Stop, remove and recreate the container.
    Restart,
    /// Stop and remove the container.
    Remove,
    /// Take over a running container that already matches the spec (also
    /// one renamed by hand, named back).
    Adopt,
    /// Resume a container paused by hand.
    Unpause,
    /// Resolve an operation a crashed controller left unfinished.
    Recover,
    /// A session began on the game (a matchmaker or `rtctl allocate`); no container change.
    Allocate,
    /// The game's session ended (`rtctl release`, the matchmaker); no container change.
    Release,
}

/// Who asked for a lifecycle operation (the history's `op_source`). A tool that writes a spec
/// names itself in the [`ANNOTATION_OP_SOURCE`] annotation; work the controller starts on its
/// own (drift, crash, resync) is `reconcile`. A closed set, as in the Go service, so metrics
/// and scripts can rely on the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpSource {
    /// The controller, on its own.
    Reconcile,
    /// A person, through `rtctl`.
    AdminCli,
    /// Another service, through the API.
    Api,
    /// The controller, for `spec.restartSchedule`.
    Schedule,
}

impl OpSource {
    /// Every source.
    pub const ALL: [OpSource; 4] = [
        OpSource::Reconcile,
        OpSource::AdminCli,
        OpSource::Api,
        OpSource::Schedule,
    ];

    /// The wire form: `reconcile`, `admin_cli`, `api`, `schedule`.
    pub const fn as_str(self) -> &'static str {
        match self {
            OpSource::Reconcile => "reconcile",
            OpSource::AdminCli => "admin_cli",
            OpSource::Api => "api",
            OpSource::Schedule => "schedule",
        }
    }

    /// Reads the wire form back (e.g. the op-source annotation); `None` when unknown.
    pub fn parse(text: &str) -> Option<OpSource> {
        OpSource::ALL
            .into_iter()
            .find(|source| source.as_str() == text)
    }
}

/// How a lifecycle operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Still running.
    InProgress,
    /// Done as asked.
    Success,
    /// Failed; see the error code.
    Failure,
}

impl GameRuntime {
    /// A document with the current `apiVersion` and `kind`, no labels and no status.
    pub fn new(name: impl Into<String>, spec: GameRuntimeSpec) -> GameRuntime {
        GameRuntime {
            api_version: API_VERSION.to_owned(),
            kind: KIND.to_owned(),
            metadata: ObjectMeta {
                name: name.into(),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        }
    }

    /// The game's name (its id).
    pub fn name(&self) -> &str {
        &self.metadata.name
    }
}

/// The condition type `rtctl` and `rtctl wait --for=condition=Ready` read:
/// True while the game's container runs its current spec and, with a
/// `spec.healthCheck`, its probe passes.
pub const READY: &str = "Ready";

/// The condition type that says a voluntary disruption waits: True while a spec change,
/// a restart or a scheduled restart waits for the game's session to end (reason
/// `InSession`) or for a slot of a disruption budget (reason `DisruptionBudget`).
pub const UPDATE_PENDING: &str = "UpdatePending";

/// The reason of `UpdatePending` while a voluntary disruption waits for the session to end.
pub const REASON_IN_SESSION: &str = "InSession";

/// The reason of `UpdatePending` while a voluntary disruption waits for a slot of a
/// disruption budget.
pub const REASON_DISRUPTION_BUDGET: &str = "DisruptionBudget";

/// Annotation a tool sets to force the voluntary disruption its write asks for past the
/// game's session and its budgets (`rtctl restart --force`, `rtctl stop --force`). Its value
/// is the generation the write creates, so it forces that change only: any later write of
/// the document makes a new generation, which the annotation no longer names.
pub const ANNOTATION_FORCE: &str = "rtmanager.dev/force-disruption";

impl GameRuntimeStatus {
    /// Sets the phase; `phaseSince` moves only when the phase changes.
    pub fn set_phase(&mut self, phase: Phase, now: std::time::SystemTime) {
        if self.phase != phase || self.phase_since.is_none() {
            self.phase = phase;
            self.phase_since = Some(Timestamp::from(now));
        }
    }

    /// Sets a condition; its `lastTransitionTime` moves only when its status
    /// flips.
    pub fn set_condition(
        &mut self,
        kind: &str,
        value: bool,
        reason: &str,
        message: &str,
        now: std::time::SystemTime,
    ) {
        let value = if value {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        match self.conditions.iter_mut().find(|c| c.type_ == kind) {
            Some(condition) => {
                if condition.status != value {
                    condition.status = value;
                    condition.last_transition_time = Some(Timestamp::from(now));
                }
                condition.reason = reason.to_owned();
                condition.message = message.to_owned();
            }
            None => self.conditions.push(Condition {
                type_: kind.to_owned(),
                status: value,
                reason: reason.to_owned(),
                message: message.to_owned(),
                last_transition_time: Some(Timestamp::from(now)),
            }),
        }
    }
}

impl GameRuntimeSpec {
    /// The hostname the container gets: `spec.hostname`, or the game's name when it is absent
    /// or empty.
    pub fn effective_hostname<'a>(&'a self, name: &'a str) -> &'a str {
        match self.hostname.as_deref() {
            Some(hostname) if !hostname.is_empty() => hostname,
            _ => name,
        }
    }

    /// 16 hex characters identifying everything whose change needs a new container (image,
    /// effective hostname, command, args, env, ports, resources, securityContext, logging, volumes). The
    /// controller labels each
    /// container with it; a container whose label differs from the spec's hash is recreated.
    ///
    /// `state`, `restartPolicy`, `restartToken`, `node` and `stopTimeout` are left out: they
    /// change what the controller does, not what the container is. Env and ports are hashed in
    /// a sorted order, because reordering them changes nothing in Docker and must not restart
    /// a game. Changing `RecreateInputs` changes every hash, so an upgrade that does so
    /// recreates every container: fields added later (`resources.pids`, `securityContext`)
    /// are hashed only when set, so the hash of a document without them stays what it was.
    /// The controller's own hardening (its defaults and limits) is never hashed: a container
    /// made before it is adopted as it is, and hardened at its next voluntary recreate.
    pub fn recreate_hash(&self, name: &str) -> String {
        let mut env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|var| (var.name.as_str(), var.value.as_str()))
            .collect();
        env.sort_unstable();
        let mut ports: Vec<(u16, &str, Option<u16>, Option<&str>)> = self
            .ports
            .iter()
            .map(|port| {
                (
                    port.container_port,
                    port.protocol.as_str(),
                    // Auto hashes as 0, a port no document can name: the hash of a
                    // numbered port stays what it was before `auto` existed.
                    port.host_port.map(|p| p.fixed().unwrap_or(0)),
                    port.host_ip.as_deref(),
                )
            })
            .collect();
        ports.sort_unstable();
        let inputs = RecreateInputs {
            image: &self.image,
            hostname: self.effective_hostname(name),
            command: &self.command,
            args: &self.args,
            env,
            ports,
            memory_bytes: self.resources.memory.map(Memory::bytes),
            nano_cpus: self.resources.cpus.map(Cpus::nano_cpus),
            pids: self.resources.pids,
            security: (!self.security_context.is_empty()).then(|| {
                let context = &self.security_context;
                let mut cap_add: Vec<&str> = context
                    .capabilities
                    .add
                    .iter()
                    .map(String::as_str)
                    .collect();
                cap_add.sort_unstable();
                cap_add.dedup();
                SecurityInputs {
                    cap_add,
                    run_as_user: context.run_as_user,
                    run_as_group: context.run_as_group,
                    read_only_root_filesystem: context.read_only_root_filesystem,
                }
            }),
            logging: (!self.logging.is_empty()).then(|| {
                (
                    self.logging.max_size.map(Memory::bytes),
                    self.logging.max_files,
                )
            }),
            volumes: volume::recreate_inputs(&self.volumes),
        };
        let json = serde_json::to_vec(&inputs)
            .expect("RecreateInputs holds only strings, integers and sequences of them");
        let digest = Sha256::digest(&json);
        hex::encode(&digest[..8])
    }
}

/// The canonical form hashed by [`GameRuntimeSpec::recreate_hash`]: quantities as plain
/// numbers so `1Gi` and `1024Mi` hash alike.
#[derive(Serialize)]
struct RecreateInputs<'a> {
    image: &'a str,
    hostname: &'a str,
    command: &'a [String],
    args: &'a [String],
    env: Vec<(&'a str, &'a str)>,
    ports: Vec<(u16, &'a str, Option<u16>, Option<&'a str>)>,
    memory_bytes: Option<u64>,
    nano_cpus: Option<i64>,
    // Added after the first release: left out when unset, so that older documents keep
    // their hash (pinned by a test).
    #[serde(skip_serializing_if = "Option::is_none")]
    pids: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    security: Option<SecurityInputs<'a>>,
    /// `spec.logging` when set: the maximum size in bytes and the number of files.
    #[serde(skip_serializing_if = "Option::is_none")]
    logging: Option<(Option<u64>, Option<u32>)>,
    /// `spec.volumes` when set, sorted by container path (see `volume::recreate_inputs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    volumes: Option<Vec<volume::VolumeInputs<'a>>>,
}

/// The hashed form of a set `spec.securityContext`: capabilities sorted, as their order
/// changes nothing in Docker.
#[derive(Serialize)]
struct SecurityInputs<'a> {
    cap_add: Vec<&'a str>,
    run_as_user: Option<u32>,
    run_as_group: Option<u32>,
    read_only_root_filesystem: bool,
}

impl Resources {
    /// True when no limit is set (the field is then left out of the YAML).
    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.cpus.is_none() && self.pids.is_none()
    }
}

impl SecurityContext {
    /// True when nothing is set (the field is then left out of the YAML and the hash).
    pub fn is_empty(&self) -> bool {
        self.capabilities.is_empty()
            && self.run_as_user.is_none()
            && self.run_as_group.is_none()
            && !self.read_only_root_filesystem
    }
}

impl Capabilities {
    /// True when no capability is added.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty()
    }
}

impl Protocol {
    /// The YAML form: `TCP` or `UDP`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

impl DesiredState {
    /// The YAML form.
    pub const fn as_str(self) -> &'static str {
        match self {
            DesiredState::Running => "Running",
            DesiredState::Stopped => "Stopped",
        }
    }
}

impl RestartPolicy {
    /// The YAML form.
    pub const fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "Always",
            RestartPolicy::OnFailure => "OnFailure",
            RestartPolicy::Never => "Never",
        }
    }
}

impl Phase {
    /// The YAML form, also used as a metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Starting => "Starting",
            Phase::Running => "Running",
            Phase::Stopping => "Stopping",
            Phase::Stopped => "Stopped",
            Phase::CrashLoopBackOff => "CrashLoopBackOff",
            Phase::Failed => "Failed",
            Phase::Removing => "Removing",
        }
    }
}

impl ConditionStatus {
    /// The YAML form.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

impl OpKind {
    /// The wire form shared with history entries and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            OpKind::Start => "start",
            OpKind::Stop => "stop",
            OpKind::Restart => "restart",
            OpKind::Remove => "remove",
            OpKind::Adopt => "adopt",
            OpKind::Unpause => "unpause",
            OpKind::Recover => "recover",
            OpKind::Allocate => "allocate",
            OpKind::Release => "release",
        }
    }
}

impl Outcome {
    /// The wire form shared with history entries and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::InProgress => "in_progress",
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

macro_rules! display_as_str {
    ($($ty:ty),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}

display_as_str!(
    Protocol,
    DesiredState,
    RestartPolicy,
    Phase,
    ConditionStatus,
    OpKind,
    OpSource,
    Outcome
);

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_true(value: &bool) -> bool {
    *value
}

/// Port numbers read with a message that states the allowed range, the same message
/// validation gives for port 0, instead of serde's "expected u16".
mod port_number {
    use serde::{Deserialize, Deserializer, de::Error};

    pub(super) const RANGE_MESSAGE: &str = "must be between 1 and 65535";

    pub(super) fn required<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
        let number = i64::deserialize(deserializer)?;
        u16::try_from(number)
            .map_err(|_| D::Error::custom(format!("{RANGE_MESSAGE}, got {number}")))
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::game;
    use super::*;

    fn hash(doc: &GameRuntime) -> String {
        doc.spec.recreate_hash(&doc.metadata.name)
    }

    fn base() -> GameRuntime {
        game("g1")
            .image("rtmanager-test/engine:1")
            .env("SEED", "42")
            .port(7000, Some(17000))
            .memory("64Mi")
            .cpus("0.5")
            .build()
    }

    #[test]
    fn recreate_hash_is_sixteen_hex_characters_and_stable() {
        let doc = base();
        let first = hash(&doc);
        assert_eq!(first.len(), 16);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(first, hash(&doc.clone()));
    }

    #[test]
    fn recreate_hash_changes_with_every_field_that_needs_a_new_container() {
        type Change = fn(&mut GameRuntime);
        let changes: &[(&str, Change)] = &[
            ("image", |d| d.spec.image = "rtmanager-test/engine:2".into()),
            ("hostname", |d| d.spec.hostname = Some("other".into())),
            ("name when hostname is absent", |d| {
                d.metadata.name = "g2".into()
            }),
            ("command", |d| d.spec.command = vec!["/bin/engine".into()]),
            ("args", |d| d.spec.args = vec!["--fast".into()]),
            ("env value", |d| d.spec.env[0].value = "43".into()),
            ("env added", |d| {
                d.spec.env.push(EnvVar {
                    name: "X".into(),
                    value: String::new(),
                })
            }),
            ("container port", |d| d.spec.ports[0].container_port = 7001),
            ("logging.maxSize", |d| {
                d.spec.logging.max_size = Some("20Mi".parse().unwrap())
            }),
            ("logging.maxFiles", |d| d.spec.logging.max_files = Some(5)),
            ("host port", |d| d.spec.ports[0].host_port = Some(HostPortSpec::Port(17001))),
            ("protocol", |d| d.spec.ports[0].protocol = Protocol::Udp),
            ("host ip", |d| {
                d.spec.ports[0].host_ip = Some("127.0.0.1".into())
            }),
            ("memory", |d| {
                d.spec.resources.memory = Some("128Mi".parse().unwrap())
            }),
            ("cpus", |d| {
                d.spec.resources.cpus = Some("1".parse().unwrap())
            }),
            ("resources removed", |d| {
                d.spec.resources = Resources::default()
            }),
            ("pids", |d| d.spec.resources.pids = Some(256)),
            ("capability added", |d| {
                d.spec.security_context.capabilities.add = vec!["NET_BIND_SERVICE".into()]
            }),
            ("runAsUser", |d| {
                d.spec.security_context.run_as_user = Some(1000)
            }),
            ("runAsGroup", |d| {
                d.spec.security_context.run_as_user = Some(0);
                d.spec.security_context.run_as_group = Some(1000)
            }),
            ("readOnlyRootFilesystem", |d| {
                d.spec.security_context.read_only_root_filesystem = true
            }),
        ];
        let before = hash(&base());
        for (what, change) in changes {
            let mut doc = base();
            change(&mut doc);
            assert_ne!(
                hash(&doc),
                before,
                "changing {what} must change the recreate hash"
            );
        }
    }

    #[test]
    fn recreate_hash_ignores_fields_the_controller_handles_without_a_new_container() {
        type Change = fn(&mut GameRuntime);
        let changes: &[(&str, Change)] = &[
            ("state", |d| d.spec.state = DesiredState::Stopped),
            ("restartPolicy", |d| {
                d.spec.restart_policy = RestartPolicy::Never
            }),
            ("restartToken", |d| d.spec.restart_token = "REQ-42".into()),
            ("imagePullPolicy Always", |d| {
                d.spec.image_pull_policy = ImagePullPolicy::Always
            }),
            ("imagePullPolicy Never", |d| {
                d.spec.image_pull_policy = ImagePullPolicy::Never
            }),
            ("node", |d| d.spec.node = Some("node-a".into())),
            ("stopTimeout", |d| {
                d.spec.stop_timeout = Duration::from_secs(5)
            }),
            ("labels", |d| {
                d.metadata.labels.insert("tier".into(), "ranked".into());
            }),
            ("status", |d| d.status = Some(GameRuntimeStatus::default())),
            ("explicit hostname equal to the name", |d| {
                d.spec.hostname = Some("g1".into())
            }),
            ("empty hostname", |d| d.spec.hostname = Some(String::new())),
            ("an empty securityContext", |d| {
                d.spec.security_context = SecurityContext::default()
            }),
            ("memory written in another unit", |d| {
                d.spec.resources.memory = Some("65536Ki".parse().unwrap())
            }),
            ("env reordered", |d| {
                d.spec.env.insert(
                    0,
                    EnvVar {
                        name: "A".into(),
                        value: "1".into(),
                    },
                )
            }),
        ];
        for (what, change) in changes {
            let mut reference = base();
            // Reordering is only meaningful with a second variable present on both sides.
            if *what == "env reordered" {
                reference.spec.env.push(EnvVar {
                    name: "A".into(),
                    value: "1".into(),
                });
            }
            let mut doc = base();
            change(&mut doc);
            assert_eq!(
                hash(&doc),
                hash(&reference),
                "changing {what} must not recreate"
            );
        }
    }

    /// Pins the hash of documents written before `securityContext` and `resources.pids`
    /// existed: a controller upgraded past them must adopt the containers it made, not
    /// recreate them. The values were computed by the code before those fields were added.
    #[test]
    fn recreate_hash_of_a_document_without_the_hardening_fields_is_unchanged() {
        // Spelled out rather than `base()`, so that editing the shared fixture cannot move
        // the pin.
        let full = game("g1")
            .image("rtmanager-test/engine:1")
            .env("SEED", "42")
            .port(7000, Some(17000))
            .memory("64Mi")
            .cpus("0.5")
            .build();
        assert_eq!(hash(&full), "e85f44c78f872cf1");
        assert_eq!(hash(&game("g1").build()), "dec98f847377a3ba");
    }

    #[test]
    fn recreate_hash_ignores_the_order_of_added_capabilities() {
        let mut one = base();
        one.spec.security_context.capabilities.add =
            vec!["NET_BIND_SERVICE".into(), "CHOWN".into()];
        let mut other = base();
        other.spec.security_context.capabilities.add =
            vec!["CHOWN".into(), "NET_BIND_SERVICE".into()];
        assert_eq!(hash(&one), hash(&other));
    }

    #[test]
    fn security_context_reads_the_kubernetes_spelling_and_refuses_unknown_fields() {
        let context: SecurityContext = serde_yaml::from_str(
            "capabilities: {add: [NET_BIND_SERVICE]}\nrunAsUser: 1000\nrunAsGroup: 100\n\
             readOnlyRootFilesystem: true\n",
        )
        .unwrap();
        assert_eq!(context.capabilities.add, ["NET_BIND_SERVICE"]);
        assert_eq!(context.run_as_user, Some(1000));
        assert_eq!(context.run_as_group, Some(100));
        assert!(context.read_only_root_filesystem);
        // Everything is dropped anyway, and privilege is never granted: `drop` and
        // `privileged` are unknown fields, not silently ignored settings.
        for refused in [
            "capabilities: {drop: [ALL]}",
            "privileged: true",
            "allowPrivilegeEscalation: true",
        ] {
            let err = serde_yaml::from_str::<SecurityContext>(refused)
                .unwrap_err()
                .to_string();
            assert!(err.contains("unknown field"), "{refused}: {err}");
        }
    }

    fn json<T: Serialize>(value: &T) -> String {
        serde_json::to_string(value).unwrap()
    }

    #[test]
    fn enums_serialize_as_the_documented_words() {
        assert_eq!(json(&Phase::CrashLoopBackOff), "\"CrashLoopBackOff\"");
        assert_eq!(json(&OpKind::Recover), "\"recover\"");
        assert_eq!(json(&Outcome::InProgress), "\"in_progress\"");
        assert_eq!(json(&Protocol::Udp), "\"UDP\"");
        assert_eq!(json(&ConditionStatus::Unknown), "\"Unknown\"");
        assert_eq!(json(&RestartPolicy::OnFailure), "\"OnFailure\"");
        assert_eq!(json(&DesiredState::Stopped), "\"Stopped\"");
        assert_eq!(json(&OpSource::AdminCli), "\"admin_cli\"");
        for source in OpSource::ALL {
            assert_eq!(OpSource::parse(source.as_str()), Some(source));
            assert_eq!(json(&source), format!("\"{source}\""));
        }
        assert_eq!(OpSource::parse("someone"), None);
        // Display and the wire form agree, so logs, metrics and YAML say the same word.
        assert_eq!(
            Phase::CrashLoopBackOff.to_string(),
            json(&Phase::CrashLoopBackOff).trim_matches('"')
        );
        assert_eq!(Outcome::InProgress.to_string(), "in_progress");
    }

    #[test]
    fn status_skips_empty_fields_and_parses_back() {
        let status = GameRuntimeStatus {
            phase: Phase::Running,
            container_id: Some("9f2c".into()),
            restart_count: 2,
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: ConditionStatus::True,
                reason: "ContainerRunning".into(),
                message: String::new(),
                last_transition_time: Some(Timestamp::from_unix_seconds(1_700_000_000)),
            }],
            last_operation: Some(LastOperation {
                op_kind: OpKind::Restart,
                outcome: Outcome::Success,
                error_code: None,
                error_message: None,
                source_ref: Some("REQ-42".into()),
                finished_at: Some(Timestamp::from_unix_seconds(1_700_000_001)),
            }),
            ..GameRuntimeStatus::default()
        };
        let yaml = serde_yaml::to_string(&status).unwrap();
        assert!(!yaml.contains("oomKilled"), "{yaml}");
        assert!(!yaml.contains("imageRef"), "{yaml}");
        assert!(yaml.contains("type: Ready"), "{yaml}");
        assert!(yaml.contains("opKind: restart"), "{yaml}");
        assert!(
            yaml.contains("lastTransitionTime: 2023-11-14T22:13:20Z"),
            "{yaml}"
        );
        let back: GameRuntimeStatus = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back, status);
    }

    #[test]
    fn status_rejects_unknown_fields() {
        let err = serde_yaml::from_str::<GameRuntimeStatus>("phase: Running\nphse: x\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `phse`"), "{err}");
    }

    #[test]
    fn host_ports_read_as_numbers_or_auto() {
        let read = |text: &str| serde_yaml::from_str::<PortMapping>(text);
        let auto = read("containerPort: 7777\nhostPort: auto\n").unwrap();
        assert!(auto.is_auto());
        assert_eq!(auto.fixed_host_port(), None);
        let fixed = read("containerPort: 7777\nhostPort: 17000\n").unwrap();
        assert_eq!(fixed.fixed_host_port(), Some(17000));
        assert_eq!(serde_yaml::to_string(&auto).unwrap().trim(), "containerPort: 7777\nhostPort: auto\nprotocol: TCP");
        for bad in ["hostPort: 70000", "hostPort: any", "hostPort: -1", "hostPort: [1]"] {
            let error = read(&format!("containerPort: 7777\n{bad}\n")).unwrap_err().to_string();
            assert!(error.contains("between 1 and 65535") && error.contains("auto"), "{bad}: {error}");
        }
        // `auto` hashes apart from every number, and a numbered port hashes as it did.
        let mut doc = base();
        let numbered = hash(&doc);
        doc.spec.ports[0].host_port = Some(HostPortSpec::Auto);
        assert_ne!(hash(&doc), numbered);
    }
}
