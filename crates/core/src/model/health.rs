//! The health check of a game (`spec.healthCheck`) and what the controller reports of it
//! (`status.health`, `status.address`, `status.ports`): the shapes only. The controller's
//! `health` module runs the probes; `validate.rs` checks the fields; `defaults.rs` holds the
//! defaults.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Protocol, Timestamp, defaults, is_false, port_number, quantity};

/// How the controller tells that a game serves: exactly one probe kind (`http`, `tcp`,
/// `exec` or `docker`) and its timing. Without one, Ready means "the container runs".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// An HTTP GET against the container's address on its Docker network: passes on a 2xx
    /// or 3xx answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// A TCP connection to the container's address: passes when it opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbe>,
    /// A command run inside the container (Docker exec): passes when it exits 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecProbe>,
    /// The image's own HEALTHCHECK, as Docker reports it: passes while Docker says healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerProbe>,
    /// Time between two probes, e.g. `5s` (1s to 1h). Until its first pass a container is
    /// probed every second at most this far apart, so Ready follows soon after it serves.
    #[serde(default = "defaults::probe_interval", with = "quantity::duration")]
    #[schemars(schema_with = "quantity::duration_schema")]
    pub interval: Duration,
    /// How long one probe may take, e.g. `2s` (100ms up to the interval); slower is a failure.
    #[serde(default = "defaults::probe_timeout", with = "quantity::duration")]
    #[schemars(schema_with = "quantity::duration_schema")]
    pub timeout: Duration,
    /// Consecutive failures, after the game was Ready, that make it unhealthy: it is then
    /// replaced (or, with `restartPolicy: Never`, marked Failed). 1 to 100.
    #[serde(default = "defaults::failure_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: u32,
    /// Failures in this window after a start do not count, e.g. `10s` (0 to 1h).
    #[serde(default, with = "quantity::duration")]
    #[schemars(schema_with = "quantity::duration_schema")]
    pub start_period: Duration,
    /// A container that has not passed once by then failed to start (`startup_timeout`),
    /// e.g. `2m` (at least the interval, at most 1h).
    #[serde(default = "defaults::startup_timeout", with = "quantity::duration")]
    #[schemars(schema_with = "quantity::duration_schema")]
    pub startup_timeout: Duration,
}

/// An HTTP probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpProbe {
    /// The container port to ask (1-65535).
    #[serde(deserialize_with = "port_number::required")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// The path to GET, starting with `/`; `/` when absent.
    #[serde(default = "defaults::probe_path")]
    pub path: String,
}

/// A TCP probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpProbe {
    /// The container port to connect to (1-65535).
    #[serde(deserialize_with = "port_number::required")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
}

/// An exec probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecProbe {
    /// The program and its arguments, run without a shell, e.g. `[/bin/check, --quick]`.
    pub command: Vec<String>,
}

/// The image's HEALTHCHECK (no settings of its own: Docker's interval and retries apply).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerProbe {}

/// The probe of a health check, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe<'a> {
    /// `http`.
    Http(&'a HttpProbe),
    /// `tcp`.
    Tcp(&'a TcpProbe),
    /// `exec`.
    Exec(&'a ExecProbe),
    /// `docker`.
    Docker,
}

impl HealthCheck {
    /// The probe kinds the check names, in the order `http`, `tcp`, `exec`, `docker`
    /// (validation allows exactly one).
    pub fn probes(&self) -> Vec<Probe<'_>> {
        let mut probes = Vec::new();
        probes.extend(self.http.as_ref().map(Probe::Http));
        probes.extend(self.tcp.as_ref().map(Probe::Tcp));
        probes.extend(self.exec.as_ref().map(Probe::Exec));
        probes.extend(self.docker.as_ref().map(|_| Probe::Docker));
        probes
    }

    /// The probe, when the check names exactly one.
    pub fn probe(&self) -> Option<Probe<'_>> {
        match self.probes()[..] {
            [probe] => Some(probe),
            _ => None,
        }
    }

    /// A check with `probe` and every default timing.
    pub fn of(probe: ProbeKind) -> HealthCheck {
        let mut check = HealthCheck {
            http: None,
            tcp: None,
            exec: None,
            docker: None,
            interval: defaults::probe_interval(),
            timeout: defaults::probe_timeout(),
            failure_threshold: defaults::failure_threshold(),
            start_period: Duration::ZERO,
            startup_timeout: defaults::startup_timeout(),
        };
        match probe {
            ProbeKind::Http { port, path } => check.http = Some(HttpProbe { port, path }),
            ProbeKind::Tcp { port } => check.tcp = Some(TcpProbe { port }),
            ProbeKind::Exec { command } => check.exec = Some(ExecProbe { command }),
            ProbeKind::Docker => check.docker = Some(DockerProbe {}),
        }
        check
    }
}

/// An owned probe, to build a [`HealthCheck`] with [`HealthCheck::of`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// `http: {port, path}`.
    Http {
        /// The container port.
        port: u16,
        /// The path.
        path: String,
    },
    /// `tcp: {port}`.
    Tcp {
        /// The container port.
        port: u16,
    },
    /// `exec: {command}`.
    Exec {
        /// The program and its arguments.
        command: Vec<String>,
    },
    /// `docker: {}`.
    Docker,
}

impl Probe<'_> {
    /// The kind's name in the document and in metric labels: `http`, `tcp`, `exec`, `docker`.
    pub const fn kind(&self) -> &'static str {
        match self {
            Probe::Http(_) => "http",
            Probe::Tcp(_) => "tcp",
            Probe::Exec(_) => "exec",
            Probe::Docker => "docker",
        }
    }
}

/// How `rtctl describe` and `status.health.probe` name it: `http :8080/healthz`,
/// `tcp :7000`, `exec /bin/check --quick`, `docker HEALTHCHECK`.
impl fmt::Display for Probe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Http(http) => write!(f, "http :{}{}", http.port, http.path),
            Probe::Tcp(tcp) => write!(f, "tcp :{}", tcp.port),
            Probe::Exec(exec) => write!(f, "exec {}", exec.command.join(" ")),
            Probe::Docker => f.write_str("docker HEALTHCHECK"),
        }
    }
}

/// What the probes of the current container say, as last written (`status.health`). Only a
/// change of verdict is written (and, while failing after Ready, each new failure, at most
/// `failureThreshold` of them): a healthy game costs no etcd write per probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthStatus {
    /// The probe, e.g. `http :8080/healthz`.
    pub probe: String,
    /// `Unknown` (no result yet), `Passing` or `Failing`.
    pub verdict: HealthVerdict,
    /// The container the verdict is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Whether that container passed at least once.
    #[serde(default, skip_serializing_if = "is_false")]
    pub passed: bool,
    /// Failed probes in a row, as of the last write.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consecutive_failures: u32,
    /// The last failure, e.g. `http 503 from 172.17.0.5:8080/healthz` or `timeout after 2s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the verdict last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
}

/// The verdict of a game's probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum HealthVerdict {
    /// No probe has answered yet.
    Unknown,
    /// The last probe passed.
    Passing,
    /// The last probe failed.
    Failing,
}

impl HealthVerdict {
    /// The wire form: `Unknown`, `Passing`, `Failing`.
    pub const fn as_str(self) -> &'static str {
        match self {
            HealthVerdict::Unknown => "Unknown",
            HealthVerdict::Passing => "Passing",
            HealthVerdict::Failing => "Failing",
        }
    }
}

impl fmt::Display for HealthVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One port of the container as Docker publishes it (`status.ports`): where a player
/// connects is `status.address:hostPort`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishedPort {
    /// The port inside the container.
    pub container_port: u16,
    /// `TCP` or `UDP`.
    pub protocol: Protocol,
    /// The host address Docker bound (`0.0.0.0` or `::` for every address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// The host port.
    pub host_port: u16,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}
