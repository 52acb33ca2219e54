//! Builders for documents in tests (feature `testing`): `game("g1").image("x:1").stopped().build()`,
//! so tests state only what they are about. The setters other crates' tests use are public;
//! those only this crate's tests use are compiled for them alone.

#[cfg(test)]
use std::time::Duration;

#[cfg(test)]
use super::{DesiredState, EnvVar, PortMapping, Protocol};
use super::{GameRuntime, GameRuntimeSpec};

/// A valid game named `name` with image `rtmanager-test/engine:1` and every default.
pub fn game(name: &str) -> GameBuilder {
    GameBuilder(GameRuntime::new(
        name,
        GameRuntimeSpec {
            image: "rtmanager-test/engine:1".into(),
            ..GameRuntimeSpec::default()
        },
    ))
}

/// Builds a [`GameRuntime`]; see [`game`].
#[derive(Debug, Clone)]
pub struct GameBuilder(GameRuntime);

impl GameBuilder {
    /// A memory limit (`512Mi`).
    pub fn memory(mut self, memory: &str) -> Self {
        self.0.spec.resources.memory = Some(memory.parse().expect("fixture memory parses"));
        self
    }

    /// A CPU limit (`1.5`, `500m`).
    pub fn cpus(mut self, cpus: &str) -> Self {
        self.0.spec.resources.cpus = Some(cpus.parse().expect("fixture cpus parse"));
        self
    }

    /// A limit on processes.
    pub fn pids(mut self, pids: i64) -> Self {
        self.0.spec.resources.pids = Some(pids);
        self
    }

    /// Adds a Linux capability (`NET_BIND_SERVICE`).
    pub fn add_capability(mut self, capability: &str) -> Self {
        self.0
            .spec
            .security_context
            .capabilities
            .add
            .push(capability.into());
        self
    }

    /// Runs as `user` and, when given, `group`.
    pub fn run_as(mut self, user: u32, group: Option<u32>) -> Self {
        self.0.spec.security_context.run_as_user = Some(user);
        self.0.spec.security_context.run_as_group = group;
        self
    }

    /// Mounts the root filesystem read-only.
    pub fn read_only_root_filesystem(mut self) -> Self {
        self.0.spec.security_context.read_only_root_filesystem = true;
        self
    }

    /// A health check probing `probe` with every default timing; tune it with
    /// [`GameBuilder::probe_timing`].
    pub fn health_check(mut self, probe: super::ProbeKind) -> Self {
        self.0.spec.health_check = Some(super::HealthCheck::of(probe));
        self
    }

    /// The health check's interval, failure threshold and startup timeout (the timeout
    /// becomes the smaller of 1s and the interval). Needs [`GameBuilder::health_check`].
    pub fn probe_timing(
        mut self,
        interval: std::time::Duration,
        failure_threshold: u32,
        startup_timeout: std::time::Duration,
    ) -> Self {
        let check = self
            .0
            .spec
            .health_check
            .as_mut()
            .expect("probe_timing needs health_check first");
        check.interval = interval;
        check.timeout = interval.min(std::time::Duration::from_secs(1));
        check.failure_threshold = failure_threshold;
        check.startup_timeout = startup_timeout;
        self
    }

    /// The restart policy.
    pub fn restart_policy(mut self, policy: super::RestartPolicy) -> Self {
        self.0.spec.restart_policy = policy;
        self
    }

    /// Mounts the game's own named volume `name` at `path`.
    pub fn volume(mut self, name: &str, path: &str) -> Self {
        self.0.spec.volumes.push(super::Volume {
            name: Some(name.into()),
            container_path: path.into(),
            read_only: false,
            retain: false,
            source: None,
        });
        self
    }

    /// The document.
    pub fn build(self) -> GameRuntime {
        self.0
    }
}

/// What only this crate's own tests use.
#[cfg(test)]
impl GameBuilder {
    /// The image reference.
    pub(crate) fn image(mut self, image: &str) -> Self {
        self.0.spec.image = image.into();
        self
    }

    /// Desired state `Stopped`.
    pub(crate) fn stopped(mut self) -> Self {
        self.0.spec.state = DesiredState::Stopped;
        self
    }

    /// The container's hostname.
    pub(crate) fn hostname(mut self, hostname: &str) -> Self {
        self.0.spec.hostname = Some(hostname.into());
        self
    }

    /// Pinned to `node`.
    pub(crate) fn node(mut self, node: &str) -> Self {
        self.0.spec.node = Some(node.into());
        self
    }

    /// The command, replacing the image's entrypoint.
    pub(crate) fn command(mut self, command: &[&str]) -> Self {
        self.0.spec.command = command.iter().map(|s| s.to_string()).collect();
        self
    }

    /// The arguments.
    pub(crate) fn args(mut self, args: &[&str]) -> Self {
        self.0.spec.args = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Adds an environment variable.
    pub(crate) fn env(mut self, name: &str, value: &str) -> Self {
        self.0.spec.env.push(EnvVar {
            name: name.into(),
            value: value.into(),
        });
        self
    }

    /// A TCP port, published on `host_port` when given.
    pub(crate) fn port(self, container_port: u16, host_port: Option<u16>) -> Self {
        self.port_with(container_port, host_port, Protocol::Tcp, None)
    }

    /// A port with every field given.
    pub(crate) fn port_with(
        mut self,
        container_port: u16,
        host_port: Option<u16>,
        protocol: Protocol,
        host_ip: Option<&str>,
    ) -> Self {
        self.0.spec.ports.push(PortMapping {
            container_port,
            host_port: host_port.map(Into::into),
            protocol,
            host_ip: host_ip.map(str::to_owned),
        });
        self
    }

    /// The grace period between SIGTERM and SIGKILL.
    pub(crate) fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.0.spec.stop_timeout = timeout;
        self
    }

    /// The restart token (a new one asks for a restart).
    pub(crate) fn restart_token(mut self, token: &str) -> Self {
        self.0.spec.restart_token = token.into();
        self
    }

    /// Adds a label.
    pub(crate) fn label(mut self, key: &str, value: &str) -> Self {
        self.0.metadata.labels.insert(key.into(), value.into());
        self
    }

    /// Adds an annotation.
    pub(crate) fn annotation(mut self, key: &str, value: &str) -> Self {
        self.0.metadata.annotations.insert(key.into(), value.into());
        self
    }
}
