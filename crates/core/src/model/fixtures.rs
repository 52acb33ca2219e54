//! Builders for documents in tests (feature `testing`): `game("g1").image("x:1").stopped().build()`,
//! so tests state only what they are about.

use std::time::Duration;

use super::{
    DesiredState, EnvVar, GameRuntime, GameRuntimeSpec, PortMapping, Protocol, RestartPolicy,
};

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

#[allow(dead_code)] // a toolbox: not every test module needs every method
impl GameBuilder {
    pub fn image(mut self, image: &str) -> Self {
        self.0.spec.image = image.into();
        self
    }

    pub fn stopped(mut self) -> Self {
        self.0.spec.state = DesiredState::Stopped;
        self
    }

    pub fn hostname(mut self, hostname: &str) -> Self {
        self.0.spec.hostname = Some(hostname.into());
        self
    }

    pub fn node(mut self, node: &str) -> Self {
        self.0.spec.node = Some(node.into());
        self
    }

    pub fn command(mut self, command: &[&str]) -> Self {
        self.0.spec.command = command.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.0.spec.args = args.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.0.spec.env.push(EnvVar {
            name: name.into(),
            value: value.into(),
        });
        self
    }

    /// A TCP port, published on `host_port` when given.
    pub fn port(self, container_port: u16, host_port: Option<u16>) -> Self {
        self.port_with(container_port, host_port, Protocol::Tcp, None)
    }

    pub fn port_with(
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

    pub fn memory(mut self, memory: &str) -> Self {
        self.0.spec.resources.memory = Some(memory.parse().expect("fixture memory parses"));
        self
    }

    pub fn cpus(mut self, cpus: &str) -> Self {
        self.0.spec.resources.cpus = Some(cpus.parse().expect("fixture cpus parse"));
        self
    }

    pub fn pids(mut self, pids: i64) -> Self {
        self.0.spec.resources.pids = Some(pids);
        self
    }

    pub fn add_capability(mut self, capability: &str) -> Self {
        self.0
            .spec
            .security_context
            .capabilities
            .add
            .push(capability.into());
        self
    }

    pub fn run_as(mut self, user: u32, group: Option<u32>) -> Self {
        self.0.spec.security_context.run_as_user = Some(user);
        self.0.spec.security_context.run_as_group = group;
        self
    }

    pub fn read_only_root_filesystem(mut self) -> Self {
        self.0.spec.security_context.read_only_root_filesystem = true;
        self
    }

    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.0.spec.stop_timeout = timeout;
        self
    }

    pub fn restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.0.spec.restart_policy = policy;
        self
    }

    pub fn restart_token(mut self, token: &str) -> Self {
        self.0.spec.restart_token = token.into();
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.0.metadata.labels.insert(key.into(), value.into());
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.0.metadata.annotations.insert(key.into(), value.into());
        self
    }

    pub fn build(self) -> GameRuntime {
        self.0
    }
}
