//! The controller's configuration: flags, their environment variables, and
//! the defaults, validated at start-up so that a bad value is a clear error
//! before anything runs.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{ConfigError, EtcdArgs};
use crate::history::DEFAULT_RETENTION;

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
    #[command(flatten)]
    pub etcd: EtcdArgs,

    /// Docker endpoint (unix:///path or tcp://host:port); the local socket when unset.
    #[arg(long = "docker-host", env = "DOCKER_HOST")]
    pub docker_host: Option<String>,

    /// This controller's node: it reconciles games whose spec.node names it.
    #[arg(long = "node-name", env = "RTM_NODE_NAME", default_value = "local")]
    pub node_name: String,

    /// Also reconcile games with no spec.node.
    #[arg(
        long = "take-unassigned",
        env = "RTM_TAKE_UNASSIGNED",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub take_unassigned: bool,

    /// Reconciles run at once (different games; one game never twice at once).
    #[arg(long = "concurrency", env = "RTM_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,

    /// TTL of the controller's etcd lease: how long a crashed controller's games stay locked.
    #[arg(long = "lease-ttl", env = "RTM_LEASE_TTL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,

    /// Period of the full resync that catches missed events (jittered by ±10%).
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

    /// Print the effective configuration and exit.
    #[arg(long = "print-config")]
    pub print_config: bool,
}

impl ControllerConfig {
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
        if self.history_retention == 0 {
            return Err(ConfigError::Incomplete(
                "--history-retention must be at least 1",
            ));
        }
        if crate::model::validate::validate_name(&self.node_name).is_err() {
            return Err(ConfigError::Incomplete(
                "--node-name must be a DNS-1123 label (lower case letters, digits, '-')",
            ));
        }
        Ok(())
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
        writeln!(f, "take-unassigned: {}", self.take_unassigned)?;
        writeln!(f, "concurrency: {}", self.concurrency)?;
        writeln!(
            f,
            "lease-ttl: {}",
            humantime::format_duration(self.lease_ttl)
        )?;
        writeln!(f, "resync: {}", humantime::format_duration(self.resync))?;
        writeln!(f, "metrics-addr: {}", self.metrics_addr)?;
        writeln!(f, "log-format: {:?}", self.log_format)?;
        write!(f, "history-retention: {}", self.history_retention)
    }
}
