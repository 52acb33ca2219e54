//! The controller's hardening options (`--allowed-capabilities`,
//! `--pids-limit`, `--default-memory`, `--max-memory`, `--default-cpus`,
//! `--max-cpus`, `--log-max-size`, `--log-max-files`, `--network`,
//! `--allowed-host-paths`) and the
//! [`ContainerPolicy`] they make.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::lifecycle::ContainerPolicy;
use crate::lifecycle::policy::{
    DEFAULT_ALLOWED_CAPABILITIES, DEFAULT_CPUS, DEFAULT_LOG_MAX_FILES, DEFAULT_MAX_CPUS,
    DEFAULT_PIDS_LIMIT,
};
use crate::runtime::{LABEL_PREFIX, LogRotation, NetworkSpec};
use rtm_core::config::ConfigError;
use rtm_core::model::validate::{MAX_LOG_FILES, MAX_LOG_SIZE, MAX_PIDS, MIN_LOG_SIZE, MIN_PIDS};
use rtm_core::model::{Cpus, Memory, validate_capability};

/// The value of `--network` that keeps Docker's default bridge (no isolation
/// between games): for installations that need the old behaviour.
pub const DEFAULT_BRIDGE: &str = "bridge";

/// How containers are hardened and limited.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct HardeningArgs {
    /// Capabilities a game may add back with spec.securityContext.capabilities.add
    /// (comma-separated Linux names without CAP_; "" allows none). Every other one is dropped.
    #[arg(
        long = "allowed-capabilities",
        env = "RTM_ALLOWED_CAPABILITIES",
        value_delimiter = ',',
        default_value = DEFAULT_ALLOWED_CAPABILITIES[0],
        value_parser = parse_capability
    )]
    pub allowed_capabilities: Vec<String>,

    /// Most processes and threads of one container; spec.resources.pids may ask fewer.
    #[arg(long = "pids-limit", env = "RTM_PIDS_LIMIT", default_value_t = DEFAULT_PIDS_LIMIT)]
    pub pids_limit: i64,

    /// Memory limit of a game whose spec.resources.memory is absent.
    #[arg(
        long = "default-memory",
        env = "RTM_DEFAULT_MEMORY",
        default_value = "1Gi"
    )]
    pub default_memory: Memory,

    /// The most memory spec.resources.memory may ask.
    #[arg(long = "max-memory", env = "RTM_MAX_MEMORY", default_value = "16Gi")]
    pub max_memory: Memory,

    /// CPU limit of a game whose spec.resources.cpus is absent.
    #[arg(long = "default-cpus", env = "RTM_DEFAULT_CPUS", default_value_t = whole_cpus(DEFAULT_CPUS))]
    pub default_cpus: Cpus,

    /// The most CPUs spec.resources.cpus may ask (the Docker host's count is checked too).
    #[arg(long = "max-cpus", env = "RTM_MAX_CPUS", default_value_t = whole_cpus(DEFAULT_MAX_CPUS))]
    pub max_cpus: Cpus,

    /// Where a game's json-file log is rotated when spec.logging.maxSize is absent (1Mi-1Gi).
    #[arg(
        long = "log-max-size",
        env = "RTM_LOG_MAX_SIZE",
        default_value = "10Mi"
    )]
    pub log_max_size: Memory,

    /// Log files kept per game when spec.logging.maxFiles is absent (1-100).
    #[arg(long = "log-max-files", env = "RTM_LOG_MAX_FILES", default_value_t = DEFAULT_LOG_MAX_FILES)]
    pub log_max_files: u32,

    /// Docker network of the games, created at the first start with inter-container traffic
    /// off (rtm-games-<hash of the prefix> when unset); "bridge" keeps Docker's default bridge,
    /// where games can reach each other.
    #[arg(long = "network", env = "RTM_NETWORK")]
    pub network: Option<String>,

    /// Host directories spec.volumes may bind-mount (source.hostPath), each with what lies
    /// under it (comma-separated absolute paths, compared by whole components: /srv/maps
    /// does not allow /srv/mapsX); "" (the default) allows none.
    #[arg(
        long = "allowed-host-paths",
        env = "RTM_ALLOWED_HOST_PATHS",
        value_delimiter = ',',
        default_value = "",
        value_parser = parse_host_path
    )]
    pub allowed_host_paths: Vec<String>,
}

/// An allowed host path, normalised (`/srv//maps/` is `/srv/maps`); empty
/// stays empty (none).
fn parse_host_path(text: &str) -> Result<String, String> {
    let path = text.trim();
    if path.is_empty() {
        return Ok(String::new());
    }
    if !path.starts_with('/') {
        return Err(format!("{path:?} must be an absolute path"));
    }
    if std::path::Path::new(path)
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!("{path:?} must not contain \"..\""));
    }
    Ok(rtm_core::model::volume::normalise(path))
}

fn whole_cpus(cpus: i64) -> Cpus {
    Cpus::from_nano_cpus(cpus * 1_000_000_000).expect("the default CPU counts are in range")
}

fn parse_capability(text: &str) -> Result<String, String> {
    let name = text.trim();
    if name.is_empty() {
        return Ok(String::new());
    }
    validate_capability(name)?;
    Ok(name.to_owned())
}

/// The network an installation's games join when `--network` is unset: one
/// per key prefix, so two installations on one Docker host are isolated from
/// each other too.
pub fn default_network_name(prefix: &str) -> String {
    let digest = Sha256::digest(prefix.as_bytes());
    format!("rtm-games-{}", &hex::encode(digest)[..12])
}

/// Docker's rule for network names, plus what would defeat the isolation.
fn check_network_name(name: &str) -> Result<(), ConfigError> {
    if matches!(name, "host" | "none") || name.starts_with("container:") {
        return Err(ConfigError::Incomplete(
            "--network cannot be host, none or container:<id>: games need their own network \
             namespace and published ports",
        ));
    }
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 128;
    if valid {
        Ok(())
    } else {
        Err(ConfigError::Incomplete(
            "--network must be 1 to 128 letters, digits, '_', '.' and '-', starting with a letter \
             or digit",
        ))
    }
}

impl HardeningArgs {
    /// Checks the ranges clap cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_PIDS..=MAX_PIDS).contains(&self.pids_limit) {
            return Err(ConfigError::Incomplete(
                "--pids-limit must be between 8 and 4194304",
            ));
        }
        // Docker's minimum, as for spec.resources.memory.
        if self.default_memory < Memory::from_bytes(6 << 20) {
            return Err(ConfigError::Incomplete(
                "--default-memory must be at least 6Mi",
            ));
        }
        if self.default_memory > self.max_memory {
            return Err(ConfigError::Incomplete(
                "--default-memory must not be above --max-memory",
            ));
        }
        if self.default_cpus > self.max_cpus {
            return Err(ConfigError::Incomplete(
                "--default-cpus must not be above --max-cpus",
            ));
        }
        if !(MIN_LOG_SIZE..=MAX_LOG_SIZE).contains(&self.log_max_size) {
            return Err(ConfigError::Incomplete(
                "--log-max-size must be between 1Mi and 1Gi",
            ));
        }
        if !(1..=MAX_LOG_FILES).contains(&self.log_max_files) {
            return Err(ConfigError::Incomplete(
                "--log-max-files must be between 1 and 100",
            ));
        }
        if let Some(network) = &self.network {
            check_network_name(network)?;
        }
        Ok(())
    }

    /// The policy these options make for the installation at `prefix`.
    pub fn policy(&self, prefix: &str) -> ContainerPolicy {
        let name = self
            .network
            .clone()
            .unwrap_or_else(|| default_network_name(prefix));
        let network = NetworkSpec {
            isolated: name != DEFAULT_BRIDGE,
            labels: [(LABEL_PREFIX.to_owned(), prefix.to_owned())].into(),
            name,
        };
        ContainerPolicy {
            allowed_capabilities: self
                .allowed_capabilities
                .iter()
                .filter(|c| !c.is_empty())
                .cloned()
                .collect(),
            pids_limit: self.pids_limit,
            default_memory: Some(self.default_memory),
            max_memory: Some(self.max_memory),
            default_cpus: Some(self.default_cpus),
            max_cpus: Some(self.max_cpus),
            network: Some(network),
            log_rotation: LogRotation {
                max_size_bytes: self.log_max_size.bytes(),
                max_files: self.log_max_files,
            },
            allowed_host_paths: self
                .allowed_host_paths
                .iter()
                .filter(|p| !p.is_empty())
                .cloned()
                .collect(),
        }
    }
}

impl fmt::Display for HardeningArgs {
    /// The `--print-config` lines, one per option.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let capabilities: Vec<&str> = self
            .allowed_capabilities
            .iter()
            .map(String::as_str)
            .filter(|c| !c.is_empty())
            .collect();
        writeln!(f, "allowed-capabilities: {}", capabilities.join(","))?;
        writeln!(f, "pids-limit: {}", self.pids_limit)?;
        writeln!(f, "default-memory: {}", self.default_memory)?;
        writeln!(f, "max-memory: {}", self.max_memory)?;
        writeln!(f, "default-cpus: {}", self.default_cpus)?;
        writeln!(f, "max-cpus: {}", self.max_cpus)?;
        writeln!(f, "log-max-size: {}", self.log_max_size)?;
        writeln!(f, "log-max-files: {}", self.log_max_files)?;
        let host_paths: Vec<&str> = self
            .allowed_host_paths
            .iter()
            .map(String::as_str)
            .filter(|p| !p.is_empty())
            .collect();
        writeln!(f, "allowed-host-paths: {}", host_paths.join(","))?;
        writeln!(
            f,
            "network: {}",
            self.network
                .as_deref()
                .unwrap_or("- (rtm-games-<hash of the prefix>)")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ControllerConfig;

    fn load(args: &[&str]) -> Result<ControllerConfig, crate::config::LoadError> {
        ControllerConfig::load(std::iter::once("rtmanager").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_make_the_documented_policy() {
        let config = load(&[]).unwrap();
        let policy = config.hardening.policy("/rtmanager");
        assert_eq!(
            policy.allowed_capabilities.into_iter().collect::<Vec<_>>(),
            ["NET_BIND_SERVICE"]
        );
        assert_eq!(policy.pids_limit, 1024);
        assert_eq!(policy.default_memory, Some("1Gi".parse().unwrap()));
        assert_eq!(policy.max_memory, Some("16Gi".parse().unwrap()));
        assert_eq!(policy.default_cpus, Some("1".parse().unwrap()));
        assert_eq!(policy.max_cpus, Some("16".parse().unwrap()));
        let network = policy.network.unwrap();
        assert!(network.isolated);
        assert_eq!(network.name, default_network_name("/rtmanager"));
        assert_ne!(network.name, default_network_name("/other"));
        assert!(network.name.starts_with("rtm-games-") && network.name.len() == 22);
    }

    #[test]
    fn options_set_the_policy() {
        let config = load(&[
            "--allowed-capabilities",
            "NET_BIND_SERVICE,CHOWN",
            "--pids-limit",
            "64",
            "--default-memory",
            "128Mi",
            "--max-memory",
            "1Gi",
            "--default-cpus",
            "500m",
            "--max-cpus",
            "2",
            "--network",
            "bridge",
            "--log-max-size",
            "50Mi",
            "--log-max-files",
            "5",
        ])
        .unwrap();
        let policy = config.hardening.policy("/rtmanager");
        assert_eq!(
            policy.log_rotation,
            LogRotation {
                max_size_bytes: 50 << 20,
                max_files: 5
            }
        );
        assert_eq!(policy.allowed_capabilities.len(), 2);
        assert_eq!(policy.pids_limit, 64);
        assert_eq!(policy.default_cpus, Some("0.5".parse().unwrap()));
        let network = policy.network.unwrap();
        assert_eq!(network.name, "bridge");
        assert!(
            !network.isolated,
            "Docker's default bridge is not ours to change"
        );
        let none = load(&["--allowed-capabilities", ""]).unwrap();
        assert!(none.hardening.policy("/p").allowed_capabilities.is_empty());
        let printed = config.to_string();
        assert!(
            printed.contains("allowed-capabilities: NET_BIND_SERVICE,CHOWN"),
            "{printed}"
        );
        assert!(printed.contains("pids-limit: 64"), "{printed}");
        assert!(printed.contains("network: bridge"), "{printed}");
        assert!(printed.contains("log-max-size: 50Mi"), "{printed}");
    }

    #[test]
    fn allowed_host_paths_are_none_by_default_and_normalised() {
        assert!(
            load(&[])
                .unwrap()
                .hardening
                .policy("/p")
                .allowed_host_paths
                .is_empty()
        );
        let config = load(&["--allowed-host-paths", "/srv/maps/,/srv//other"]).unwrap();
        assert_eq!(
            config.hardening.policy("/p").allowed_host_paths,
            ["/srv/maps", "/srv/other"]
        );
        assert!(
            config
                .to_string()
                .contains("allowed-host-paths: /srv/maps,/srv/other"),
            "{config}"
        );
        for bad in ["srv/maps", "/srv/../etc"] {
            assert!(load(&["--allowed-host-paths", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_hardening_options_are_clear_errors() {
        for (args, message) in [
            (&["--allowed-capabilities", "CAP_NET_RAW"][..], "NET_RAW"),
            (
                &["--allowed-capabilities", "SUPERPOWERS"],
                "not a Linux capability",
            ),
            (&["--pids-limit", "0"], "--pids-limit"),
            (&["--default-memory", "1Mi"], "--default-memory"),
            (&["--default-memory", "32Gi"], "--max-memory"),
            (&["--default-cpus", "32"], "--max-cpus"),
            (&["--max-cpus", "500m0"], "CPU"),
            (&["--log-max-size", "512Ki"], "--log-max-size"),
            (&["--log-max-size", "2Gi"], "--log-max-size"),
            (&["--log-max-files", "0"], "--log-max-files"),
            (&["--log-max-files", "101"], "--log-max-files"),
            (&["--network", "host"], "--network"),
            (&["--network=-games"], "--network"),
        ] {
            let error = load(args).expect_err(&format!("{args:?} should be refused"));
            assert!(error.to_string().contains(message), "{args:?}: {error}");
        }
    }
}
