//! Test-only builders for documents: `game("g1").image("x:1").stopped().build()`, so tests
//! state only what they are about. Any unit test in the crate may use them.

use std::time::Duration;

use super::{
    DesiredState, EnvVar, GameRuntime, GameRuntimeSpec, PortMapping, Protocol, RestartPolicy,
};

/// A valid game named `name` with image `rtmanager-test/engine:1` and every default.
pub(crate) fn game(name: &str) -> GameBuilder {
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
pub(crate) struct GameBuilder(GameRuntime);

#[allow(dead_code)] // a toolbox: not every test module needs every method
impl GameBuilder {
    pub(crate) fn image(mut self, image: &str) -> Self {
        self.0.spec.image = image.into();
        self
    }

    pub(crate) fn stopped(mut self) -> Self {
        self.0.spec.state = DesiredState::Stopped;
        self
    }

    pub(crate) fn hostname(mut self, hostname: &str) -> Self {
        self.0.spec.hostname = Some(hostname.into());
        self
    }

    pub(crate) fn node(mut self, node: &str) -> Self {
        self.0.spec.node = Some(node.into());
        self
    }

    pub(crate) fn command(mut self, command: &[&str]) -> Self {
        self.0.spec.command = command.iter().map(|s| s.to_string()).collect();
        self
    }

    pub(crate) fn args(mut self, args: &[&str]) -> Self {
        self.0.spec.args = args.iter().map(|s| s.to_string()).collect();
        self
    }

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

    pub(crate) fn port_with(
        mut self,
        container_port: u16,
        host_port: Option<u16>,
        protocol: Protocol,
        host_ip: Option<&str>,
    ) -> Self {
        self.0.spec.ports.push(PortMapping {
            container_port,
            host_port,
            protocol,
            host_ip: host_ip.map(str::to_owned),
        });
        self
    }

    pub(crate) fn memory(mut self, memory: &str) -> Self {
        self.0.spec.resources.memory = Some(memory.parse().expect("fixture memory parses"));
        self
    }

    pub(crate) fn cpus(mut self, cpus: &str) -> Self {
        self.0.spec.resources.cpus = Some(cpus.parse().expect("fixture cpus parse"));
        self
    }

    pub(crate) fn pids(mut self, pids: i64) -> Self {
        self.0.spec.resources.pids = Some(pids);
        self
    }

    pub(crate) fn add_capability(mut self, capability: &str) -> Self {
        self.0
            .spec
            .security_context
            .capabilities
            .add
            .push(capability.into());
        self
    }

    pub(crate) fn run_as(mut self, user: u32, group: Option<u32>) -> Self {
        self.0.spec.security_context.run_as_user = Some(user);
        self.0.spec.security_context.run_as_group = group;
        self
    }

    pub(crate) fn read_only_root_filesystem(mut self) -> Self {
        self.0.spec.security_context.read_only_root_filesystem = true;
        self
    }

    pub(crate) fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.0.spec.stop_timeout = timeout;
        self
    }

    pub(crate) fn restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.0.spec.restart_policy = policy;
        self
    }

    pub(crate) fn restart_token(mut self, token: &str) -> Self {
        self.0.spec.restart_token = token.into();
        self
    }

    pub(crate) fn label(mut self, key: &str, value: &str) -> Self {
        self.0.metadata.labels.insert(key.into(), value.into());
        self
    }

    pub(crate) fn annotation(mut self, key: &str, value: &str) -> Self {
        self.0.metadata.annotations.insert(key.into(), value.into());
        self
    }

    pub(crate) fn build(self) -> GameRuntime {
        self.0
    }
}
