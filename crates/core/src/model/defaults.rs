//! Every default value of the document, and `GameRuntime::apply_defaults`, which fills in the
//! ones that depend on other fields. Serde's `#[serde(default)]` attributes point here.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{
    DesiredState, GameRuntime, GameRuntimeSpec, Phase, Protocol, Resources, RestartPolicy,
    SecurityContext,
};

/// How long a stop waits after SIGTERM before SIGKILL when `spec.stopTimeout` is absent:
/// Docker's own default is 10s; game engines flush match state on SIGTERM, so they get more.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A new game runs unless its document says otherwise.
const DEFAULT_STATE: DesiredState = DesiredState::Running;

/// A game that exits by itself is brought back, like a Kubernetes pod.
const DEFAULT_RESTART_POLICY: RestartPolicy = RestartPolicy::Always;

/// Ports are TCP unless marked UDP, as in Docker and Kubernetes.
const DEFAULT_PROTOCOL: Protocol = Protocol::Tcp;

/// The phase of a game the controller has not acted on yet.
const DEFAULT_PHASE: Phase = Phase::Pending;

/// For `#[serde(default = ...)]`: `Duration::default()` would be zero, not our default.
pub(super) fn stop_timeout() -> Duration {
    DEFAULT_STOP_TIMEOUT
}

/// `healthCheck.interval`: Agones' and Docker's health checks default to 5s and 30s; a
/// matchmaker wants to learn of a hung server within seconds, and a probe costs little.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// `healthCheck.timeout`: a game answering its health path slower than this is not serving.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `healthCheck.failureThreshold`, as in Kubernetes and Docker (`--retries`): one lost
/// answer never replaces a game.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;

/// `healthCheck.startupTimeout`: maps load for minutes on big servers; past five minutes a
/// start is stuck (the same bound as any other transition).
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(300);

/// `healthCheck.http.path` when absent.
const DEFAULT_PROBE_PATH: &str = "/";

/// The signal a stop sends when `spec.lifecycle.stopSignal` is absent, as Docker does.
pub const STOP_SIGNAL: &str = "SIGTERM";

/// `lifecycle.preStop.timeout` when absent (or the stop timeout, when shorter).
pub const PRE_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// `restartSchedule.whenIdle` when absent: a scheduled restart waits for the session.
pub(super) fn when_idle() -> bool {
    true
}

pub(super) fn probe_interval() -> Duration {
    DEFAULT_PROBE_INTERVAL
}

pub(super) fn probe_timeout() -> Duration {
    DEFAULT_PROBE_TIMEOUT
}

pub(super) fn failure_threshold() -> u32 {
    DEFAULT_FAILURE_THRESHOLD
}

pub(super) fn startup_timeout() -> Duration {
    DEFAULT_STARTUP_TIMEOUT
}

pub(super) fn probe_path() -> String {
    DEFAULT_PROBE_PATH.to_owned()
}

impl Default for DesiredState {
    fn default() -> DesiredState {
        DEFAULT_STATE
    }
}

impl Default for RestartPolicy {
    fn default() -> RestartPolicy {
        DEFAULT_RESTART_POLICY
    }
}

impl Default for Protocol {
    fn default() -> Protocol {
        DEFAULT_PROTOCOL
    }
}

impl Default for Phase {
    fn default() -> Phase {
        DEFAULT_PHASE
    }
}

impl Default for GameRuntimeSpec {
    /// A spec with every default and an empty image (which validation rejects): a base for
    /// `GameRuntimeSpec { image: ..., ..Default::default() }`.
    fn default() -> GameRuntimeSpec {
        GameRuntimeSpec {
            image: String::new(),
            image_pull_policy: super::ImagePullPolicy::default(),
            node_selector: BTreeMap::new(),
            state: DEFAULT_STATE,
            hostname: None,
            command: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            ports: Vec::new(),
            resources: Resources::default(),
            logging: super::Logging::default(),
            volumes: Vec::new(),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            restart_policy: DEFAULT_RESTART_POLICY,
            restart_token: String::new(),
            node: None,
            security_context: SecurityContext::default(),
            health_check: None,
            disruption: super::Disruption::default(),
            lifecycle: super::Lifecycle::default(),
            restart_schedule: None,
        }
    }
}

impl GameRuntime {
    /// Fills in the defaults that depend on other fields, so the stored document says
    /// explicitly what the controller will do. Idempotent.
    ///
    /// - `spec.hostname` absent or empty → `metadata.name`: the hostname must stay the same
    ///   across recreates, so it is pinned in the document rather than derived each time.
    /// - `spec.node: ""` → absent: the design's example writes `node: ""` for "any node".
    ///
    /// The static defaults (stopTimeout 30s, state Running, restartPolicy Always, protocol TCP)
    /// are already applied by serde when the document is read.
    pub fn apply_defaults(&mut self) {
        let spec = &mut self.spec;
        if spec.hostname.as_deref().is_none_or(str::is_empty) {
            spec.hostname = Some(self.metadata.name.clone());
        }
        if spec.node.as_deref() == Some("") {
            spec.node = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::game;
    use super::*;

    #[test]
    fn static_defaults_come_from_serde() {
        let doc: GameRuntime = serde_yaml::from_str(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata: {name: g1}\n\
             spec: {image: 'x:1', ports: [{containerPort: 7000}]}\n",
        )
        .unwrap();
        assert_eq!(doc.spec.stop_timeout, Duration::from_secs(30));
        assert_eq!(doc.spec.state, DesiredState::Running);
        assert_eq!(doc.spec.restart_policy, RestartPolicy::Always);
        assert_eq!(doc.spec.ports[0].protocol, Protocol::Tcp);
        assert_eq!(doc.spec.restart_token, "");
        assert_eq!(
            doc.spec.hostname, None,
            "hostname is filled in by apply_defaults"
        );
        // Default::default() and serde agree on every field.
        let expected = GameRuntimeSpec {
            image: "x:1".into(),
            ports: doc.spec.ports.clone(),
            ..Default::default()
        };
        assert_eq!(doc.spec, expected);
    }

    #[test]
    fn hostname_defaults_to_the_name() {
        let mut doc = game("arena-1").build();
        doc.apply_defaults();
        assert_eq!(doc.spec.hostname.as_deref(), Some("arena-1"));

        let mut doc = game("arena-1").hostname("").build();
        doc.apply_defaults();
        assert_eq!(doc.spec.hostname.as_deref(), Some("arena-1"));

        let mut doc = game("arena-1").hostname("lobby").build();
        doc.apply_defaults();
        assert_eq!(doc.spec.hostname.as_deref(), Some("lobby"));
    }

    #[test]
    fn empty_node_means_any_node() {
        let mut doc = game("g1").node("").build();
        doc.apply_defaults();
        assert_eq!(doc.spec.node, None);
        let mut doc = game("g1").node("node-a").build();
        doc.apply_defaults();
        assert_eq!(doc.spec.node.as_deref(), Some("node-a"));
    }

    #[test]
    fn apply_defaults_is_idempotent() {
        let mut once = game("g1").node("").build();
        once.apply_defaults();
        let mut twice = once.clone();
        twice.apply_defaults();
        assert_eq!(once, twice);
    }

    #[test]
    fn defaults_do_not_change_the_recreate_hash() {
        let before = game("g1").build();
        let mut after = before.clone();
        after.apply_defaults();
        assert_eq!(
            before.spec.recreate_hash("g1"),
            after.spec.recreate_hash("g1")
        );
    }
}
