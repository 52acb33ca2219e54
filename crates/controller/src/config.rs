//! The controller's configuration: flags, their environment variables, and
//! the defaults, validated at start-up so that a bad value is a clear error
//! before anything runs.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use rtm_core::config::{ConfigError, EtcdArgs};
use rtm_core::records::history::DEFAULT_RETENTION;

/// Probes running at once by default: enough for 10,000 games probed every
/// 5 s with probes of ~10 ms (2,000 a second), while a fleet whose probes
/// all hang for their timeout cannot hold more sockets or execs than this.
pub const DEFAULT_PROBE_CONCURRENCY: usize = 256;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `rtmanager`: keeps every game's container in its declared state.
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
#[command(name = "rtmanager", version, about, long_about = None)]
pub struct ControllerConfig {
    /// The etcd connection (endpoints, TLS, credentials, prefix).
    #[command(flatten)]
    pub etcd: EtcdArgs,

    /// Docker endpoint (unix:///path or tcp://host:port); the local socket when unset.
    #[arg(long = "docker-host", env = "DOCKER_HOST")]
    pub docker_host: Option<String>,

    /// This controller's node: it reconciles the games assigned to it (one live
    /// controller per node name).
    #[arg(long = "node-name", env = "RTM_NODE_NAME", default_value = "local")]
    pub node_name: String,

    /// This process's name among the controllers of its node (several on one engine
    /// share the node; one takes over from another at once): the start of its holder
    /// name in leases, heartbeats and history entries. The node name when unset.
    #[arg(long = "controller-name", env = "RTM_CONTROLLER_NAME")]
    pub controller_name: Option<String>,

    /// The node's offer, the placement strategy and the failure bounds.
    #[command(flatten)]
    pub placement: crate::placement::PlacementArgs,

    /// Reconciles run at once (different games; one game never twice at
    /// once). A reconcile mostly waits on etcd and Docker, so more workers
    /// than cores pay off (BENCHMARKS.md: 10,000 games converge in 64 s with
    /// 8, 28 s with 32).
    #[arg(long = "concurrency", env = "RTM_CONCURRENCY", default_value_t = 32)]
    pub concurrency: usize,

    /// TTL of the controller's etcd lease: how long a crashed controller's games stay locked.
    #[arg(long = "lease-ttl", env = "RTM_LEASE_TTL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,

    /// Period of the full resync that catches missed events (jittered by ±20%).
    #[arg(long = "resync", env = "RTM_RESYNC", default_value = "60s", value_parser = humantime::parse_duration)]
    pub resync: Duration,

    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(
        long = "metrics-addr",
        env = "RTM_METRICS_ADDR",
        default_value = "127.0.0.1:9464"
    )]
    pub metrics_addr: SocketAddr,

    /// Log format.
    #[arg(long = "log-format", env = "RTM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Operation history entries kept per game.
    #[arg(long = "history-retention", env = "RTM_HISTORY_RETENTION", default_value_t = DEFAULT_RETENTION)]
    pub history_retention: usize,

    /// A deleted game's history (no document, no status, no container) is removed this long
    /// after its last entry; 0 keeps it forever.
    #[arg(long = "history-grace", env = "RTM_HISTORY_GRACE", default_value = "24h", value_parser = humantime::parse_duration)]
    pub history_grace: Duration,

    /// How long an event (`rtctl events`) lives after it was last repeated; 0 records none.
    #[arg(long = "event-ttl", env = "RTM_EVENT_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub event_ttl: Duration,

    /// Containers labelled as ours whose document is gone are removed after this grace period.
    #[arg(long = "gc-grace", env = "RTM_GC_GRACE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub gc_grace: Duration,

    /// Upper bound on one reconcile of one game (its Docker calls are bounded too).
    #[arg(long = "reconcile-timeout", env = "RTM_RECONCILE_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub reconcile_timeout: Duration,

    /// Host ports documents may publish: ports and ranges, comma-separated
    /// (ports below 1024 only when listed).
    #[arg(long = "host-ports", env = "RTM_HOST_PORTS", default_value = rtm_core::ports::DEFAULT_HOST_PORTS, value_parser = host_ports_arg)]
    pub host_ports: String,

    /// Host addresses documents may bind published ports to, comma-separated
    /// (0.0.0.0 and :: stand for all addresses; `*` allows any).
    #[arg(long = "host-ips", env = "RTM_HOST_IPS", default_value = rtm_core::ports::DEFAULT_HOST_IPS, value_parser = host_ips_arg)]
    pub host_ips: String,

    /// The address players reach this node's games at, shown as each game's
    /// `status.address`: an IP address or a DNS name. By default the host's
    /// address on its default route (127.0.0.1 when it has none).
    #[arg(long = "advertise-address", env = "RTM_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<String>,

    /// Health-check probes run at once, across all games (a probe takes at
    /// most its check's timeout).
    #[arg(long = "probe-concurrency", env = "RTM_PROBE_CONCURRENCY", default_value_t = DEFAULT_PROBE_CONCURRENCY)]
    pub probe_concurrency: usize,

    /// On SIGTERM, how long in-flight operations may take to finish.
    #[arg(long = "drain-timeout", env = "RTM_DRAIN_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// YAML file of options (keys are the long flag names, e.g. `lease-ttl: 15s`);
    /// flags and environment variables override it.
    #[arg(long = "config", env = "RTM_CONFIG")]
    pub config_file: Option<std::path::PathBuf>,

    /// Print the effective configuration and exit.
    #[arg(long = "print-config")]
    pub print_config: bool,

    /// Container hardening: capabilities, limits, the games' network.
    #[command(flatten)]
    pub hardening: crate::hardening::HardeningArgs,

    /// Image pulls: registry credentials, the pull timeout, the tag checks.
    #[command(flatten)]
    pub images: crate::image_options::ImageArgs,

    /// Whether the etcd password came from the config file (`etcd-password`), whose
    /// permissions [`ControllerConfig::warnings`] then looks at.
    #[arg(skip)]
    pub password_in_config_file: bool,
}

/// Why the configuration cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The command line or the environment does not parse (or asks for
    /// `--help`/`--version`: clap prints those itself).
    #[error(transparent)]
    Args(#[from] clap::Error),
    /// The `--config` file cannot be read or does not parse.
    #[error("config file {path}: {message}")]
    File {
        /// The file named by `--config`.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// The settings parse but do not hold together.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

impl ControllerConfig {
    /// Parses flags and environment, then fills what neither set from the
    /// config file (`--config` / `RTM_CONFIG`), then validates.
    pub fn load<I, T>(args: I) -> Result<Self, LoadError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches, Parser, parser::ValueSource};
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let command = Self::command();
        let matches = command.clone().try_get_matches_from(&args)?;
        rtm_core::config::refuse_password_flag(&matches)?;
        let first = Self::from_arg_matches(&matches)?;
        let Some(path) = &first.config_file else {
            first.validate()?;
            return Ok(first);
        };
        let file_error = |message: String| LoadError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        let values: std::collections::BTreeMap<String, serde_yaml::Value> =
            serde_yaml::from_str(&text).map_err(|e| file_error(e.to_string()))?;
        // Rebuild the command line: the file's values go in only for
        // options that still hold their default.
        let mut rebuilt = args.clone();
        let mut password_in_file = false;
        for (key, value) in values {
            let Some(arg) = command
                .get_arguments()
                .find(|a| a.get_long() == Some(key.as_str()))
            else {
                return Err(file_error(format!("unknown option {key:?}")));
            };
            if matches!(key.as_str(), "config" | "print-config") {
                return Err(file_error(format!(
                    "{key:?} cannot be set in a config file"
                )));
            }
            let id = arg.get_id().as_str();
            if matches.value_source(id) != Some(ValueSource::DefaultValue)
                && matches.value_source(id).is_some()
            {
                continue;
            }
            password_in_file |= id == "password";
            let text = match value {
                serde_yaml::Value::String(s) => s,
                serde_yaml::Value::Number(n) => n.to_string(),
                serde_yaml::Value::Bool(b) => b.to_string(),
                serde_yaml::Value::Sequence(items) => items
                    .iter()
                    .map(|item| match item {
                        serde_yaml::Value::String(s) => Ok(s.clone()),
                        _ => Err(file_error(format!("{key}: list items must be strings"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .join(","),
                _ => {
                    return Err(file_error(format!(
                        "{key}: expected a string, number or list"
                    )));
                }
            };
            rebuilt.push(format!("--{key}={text}").into());
        }
        let mut config = Self::try_parse_from(rebuilt)?;
        config.password_in_config_file = password_in_file;
        config.validate()?;
        Ok(config)
    }

    /// What is unsafe in how the etcd password is kept or sent, for the log at start-up (see
    /// [`EtcdArgs::credential_warnings`]).
    pub fn warnings(&self) -> Vec<String> {
        let config_file = self
            .config_file
            .as_deref()
            .filter(|_| self.password_in_config_file);
        self.etcd.credential_warnings(config_file)
    }

    /// Checks what clap cannot: ranges and the etcd settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.etcd.etcd_config()?;
        self.etcd.keys()?;
        if self.concurrency == 0 || self.concurrency > 1024 {
            return Err(ConfigError::Incomplete(
                "--concurrency must be between 1 and 1024",
            ));
        }
        if self.lease_ttl < Duration::from_secs(3) || self.lease_ttl > Duration::from_secs(600) {
            return Err(ConfigError::Incomplete(
                "--lease-ttl must be between 3s and 10m",
            ));
        }
        if self.resync < Duration::from_secs(1) {
            return Err(ConfigError::Incomplete("--resync must be at least 1s"));
        }
        if self.reconcile_timeout < Duration::from_secs(5) {
            return Err(ConfigError::Incomplete(
                "--reconcile-timeout must be at least 5s",
            ));
        }
        if self.history_retention == 0 {
            return Err(ConfigError::Incomplete(
                "--history-retention must be at least 1",
            ));
        }
        // Kubernetes node names are DNS-1123 subdomains
        // (ip-10-0-1-2.eu-west-1.compute.internal), as is spec.node.
        if !rtm_core::model::validate::is_dns1123_subdomain(&self.node_name) {
            return Err(ConfigError::Incomplete(
                "--node-name must be a DNS-1123 subdomain (lower case letters, digits, '-', '.')",
            ));
        }
        if self
            .controller_name
            .as_deref()
            .is_some_and(|name| !rtm_core::model::validate::is_dns1123_subdomain(name))
        {
            return Err(ConfigError::Incomplete(
                "--controller-name must be a DNS-1123 subdomain (lower case letters, digits, '-', '.')",
            ));
        }
        if self.probe_concurrency == 0 || self.probe_concurrency > 4096 {
            return Err(ConfigError::Incomplete(
                "--probe-concurrency must be between 1 and 4096",
            ));
        }
        if let Some(address) = &self.advertise_address
            && address.parse::<std::net::IpAddr>().is_err()
            && !rtm_core::model::validate::is_dns1123_subdomain(address)
        {
            return Err(ConfigError::Incomplete(
                "--advertise-address must be an IP address or a DNS name",
            ));
        }
        self.hardening.validate()?;
        self.images.validate(self.reconcile_timeout)?;
        self.placement
            .validate(self.lease_ttl, &self.host_port_policy())?;
        Ok(())
    }

    /// The address shown as `status.address`: `--advertise-address`, else
    /// the source address of the host's default route, else 127.0.0.1.
    pub fn advertised_address(&self) -> String {
        self.advertise_address
            .clone()
            .unwrap_or_else(|| default_route_address().to_string())
    }
}

/// The address the host would send from to reach the world: connecting a
/// UDP socket sends nothing, it only asks the kernel for a route (to
/// 192.0.2.1, a documentation address that is never used).
fn default_route_address() -> std::net::IpAddr {
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|socket| {
            socket.connect("192.0.2.1:9")?;
            socket.local_addr()
        })
        .map(|local| local.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(loopback)
}

fn host_ports_arg(text: &str) -> Result<String, String> {
    rtm_core::ports::HostPortPolicy::parse(text, "*")?;
    Ok(text.to_owned())
}

fn host_ips_arg(text: &str) -> Result<String, String> {
    rtm_core::ports::HostPortPolicy::parse("1-65535", text)?;
    Ok(text.to_owned())
}

impl ControllerConfig {
    /// The host-port policy `--host-ports` and `--host-ips` describe.
    pub fn host_port_policy(&self) -> rtm_core::ports::HostPortPolicy {
        rtm_core::ports::HostPortPolicy::parse(&self.host_ports, &self.host_ips)
            .expect("--host-ports and --host-ips are checked as they are parsed")
    }
}

impl fmt::Display for ControllerConfig {
    /// The effective configuration, one `name: value` per line, secrets
    /// masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let etcd = &self.etcd;
        let optional = |v: &Option<std::path::PathBuf>| {
            v.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "-".into())
        };
        writeln!(f, "etcd-endpoints: {}", etcd.endpoints.join(","))?;
        writeln!(f, "prefix: {}", etcd.prefix)?;
        writeln!(f, "etcd-ca-file: {}", optional(&etcd.ca_file))?;
        writeln!(f, "etcd-cert-file: {}", optional(&etcd.cert_file))?;
        writeln!(f, "etcd-key-file: {}", optional(&etcd.key_file))?;
        writeln!(f, "etcd-user: {}", etcd.user.as_deref().unwrap_or("-"))?;
        writeln!(
            f,
            "etcd-password: {}",
            if etcd.password.is_some() {
                "(set)"
            } else {
                "-"
            }
        )?;
        writeln!(f, "etcd-password-file: {}", optional(&etcd.password_file))?;
        writeln!(
            f,
            "etcd-timeout: {}",
            humantime::format_duration(etcd.request_timeout)
        )?;
        writeln!(
            f,
            "docker-host: {}",
            self.docker_host
                .as_deref()
                .unwrap_or("unix:///var/run/docker.sock")
        )?;
        writeln!(f, "node-name: {}", self.node_name)?;
        writeln!(
            f,
            "controller-name: {}",
            self.controller_name.as_deref().unwrap_or(&self.node_name)
        )?;
        write!(f, "{}", self.placement)?;
        writeln!(f, "concurrency: {}", self.concurrency)?;
        writeln!(
            f,
            "lease-ttl: {}",
            humantime::format_duration(self.lease_ttl)
        )?;
        writeln!(f, "resync: {}", humantime::format_duration(self.resync))?;
        writeln!(f, "metrics-addr: {}", self.metrics_addr)?;
        writeln!(f, "log-format: {:?}", self.log_format)?;
        writeln!(f, "history-retention: {}", self.history_retention)?;
        writeln!(
            f,
            "history-grace: {}",
            humantime::format_duration(self.history_grace)
        )?;
        writeln!(
            f,
            "event-ttl: {}",
            humantime::format_duration(self.event_ttl)
        )?;
        writeln!(f, "gc-grace: {}", humantime::format_duration(self.gc_grace))?;
        writeln!(
            f,
            "reconcile-timeout: {}",
            humantime::format_duration(self.reconcile_timeout)
        )?;
        writeln!(f, "host-ports: {}", self.host_ports)?;
        writeln!(f, "host-ips: {}", self.host_ips)?;
        writeln!(f, "advertise-address: {}", self.advertised_address())?;
        writeln!(f, "probe-concurrency: {}", self.probe_concurrency)?;
        writeln!(
            f,
            "drain-timeout: {}",
            humantime::format_duration(self.drain_timeout)
        )?;
        write!(f, "{}", self.hardening)?;
        write!(f, "{}", self.images)?;
        write!(
            f,
            "config: {}",
            self.config_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "-".into())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Result<ControllerConfig, LoadError> {
        ControllerConfig::load(std::iter::once("rtmanager").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let config = load(&[]).unwrap();
        assert_eq!(config.concurrency, 32);
        assert_eq!(config.lease_ttl, Duration::from_secs(15));
        assert_eq!(config.metrics_addr.to_string(), "127.0.0.1:9464");
        assert_eq!(config.history_grace, Duration::from_secs(24 * 3600));
        let forever = load(&["--history-grace", "0s"]).unwrap();
        assert_eq!(
            forever.history_grace,
            Duration::ZERO,
            "0 keeps history forever"
        );
        let cloud = load(&["--node-name", "ip-10-0-1-2.eu-west-1.compute.internal"]).unwrap();
        assert_eq!(cloud.node_name, "ip-10-0-1-2.eu-west-1.compute.internal");
    }

    #[test]
    fn bad_values_are_clear_errors() {
        for args in [
            &["--lease-ttl", "soon"][..],
            &["--concurrency", "0"],
            &["--metrics-addr", "nowhere"],
            &["--log-format", "xml"],
            &["--node-name", "Bad_Node"],
            &["--node-name", "a..b"],
        ] {
            assert!(load(args).is_err(), "{args:?} should be refused");
        }
    }

    #[test]
    fn config_file_fills_what_flags_do_not_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rtmanager.yaml");
        std::fs::write(
            &path,
            "lease-ttl: 20s\nconcurrency: 4\netcd-endpoints: [http://a:2379, http://b:2379]\n",
        )
        .unwrap();
        let path = path.to_str().unwrap();
        let config = load(&["--config", path, "--concurrency", "2"]).unwrap();
        assert_eq!(config.lease_ttl, Duration::from_secs(20), "from the file");
        assert_eq!(config.concurrency, 2, "the flag wins over the file");
        match std::env::var("RTM_ETCD_ENDPOINTS") {
            // The environment beats the file (scripts/test exports it).
            Ok(from_env) => assert_eq!(config.etcd.endpoints.join(","), from_env),
            Err(_) => assert_eq!(config.etcd.endpoints, ["http://a:2379", "http://b:2379"]),
        }

        std::fs::write(dir.path().join("bad.yaml"), "lease-tll: 20s\n").unwrap();
        let bad = dir.path().join("bad.yaml");
        let error = load(&["--config", bad.to_str().unwrap()]).unwrap_err();
        assert!(error.to_string().contains("lease-tll"), "{error}");
    }
}
