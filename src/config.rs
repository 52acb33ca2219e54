//! The connection settings both binaries share: how to reach etcd and under
//! which prefix rtmanager's keys live. Flags override environment variables
//! (clap reads both), so `RTM_ETCD_ENDPOINTS` and `RTM_PREFIX` mean the same
//! thing to `rtmanager`, `rtctl` and the tests.

use std::path::PathBuf;
use std::time::Duration;

use crate::store::etcd::{Credentials, DEFAULT_ENDPOINT, EtcdConfig, TlsFiles};
use crate::store::keys::{DEFAULT_PREFIX, Keys, PrefixError};

pub const ENV_ETCD_ENDPOINTS: &str = "RTM_ETCD_ENDPOINTS";
pub const ENV_PREFIX: &str = "RTM_PREFIX";

/// Why the connection settings cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Prefix(#[from] PrefixError),
    #[error("invalid etcd endpoint {endpoint:?}: {reason}")]
    Endpoint {
        endpoint: String,
        reason: &'static str,
    },
    #[error("{0}")]
    Incomplete(&'static str),
}

/// etcd connection flags, shared by every binary.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct EtcdArgs {
    /// etcd endpoints, comma-separated (http:// or https://).
    #[arg(
        long = "etcd-endpoints",
        env = ENV_ETCD_ENDPOINTS,
        value_delimiter = ',',
        default_value = DEFAULT_ENDPOINT
    )]
    pub endpoints: Vec<String>,

    /// Key prefix under which every rtmanager key lives.
    #[arg(long = "prefix", env = ENV_PREFIX, default_value = DEFAULT_PREFIX)]
    pub prefix: String,

    /// CA certificate (PEM) that signed etcd's server certificate; enables TLS.
    #[arg(long = "etcd-ca-file", env = "RTM_ETCD_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// Client certificate (PEM) for etcd client-certificate auth.
    #[arg(
        long = "etcd-cert-file",
        env = "RTM_ETCD_CERT_FILE",
        requires = "key_file"
    )]
    pub cert_file: Option<PathBuf>,

    /// Key (PEM) of the client certificate.
    #[arg(
        long = "etcd-key-file",
        env = "RTM_ETCD_KEY_FILE",
        requires = "cert_file"
    )]
    pub key_file: Option<PathBuf>,

    /// etcd user (etcd's own auth); the password comes from RTM_ETCD_PASSWORD.
    #[arg(long = "etcd-user", env = "RTM_ETCD_USER", requires = "password")]
    pub user: Option<String>,

    /// Password of the etcd user.
    #[arg(
        long = "etcd-password",
        env = "RTM_ETCD_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,

    /// Bound on one etcd request.
    #[arg(
        long = "etcd-timeout",
        env = "RTM_ETCD_TIMEOUT",
        default_value = "5s",
        value_parser = humantime::parse_duration
    )]
    pub request_timeout: Duration,
}

impl EtcdArgs {
    /// The settings for [`crate::store::etcd::EtcdStore::connect`].
    pub fn etcd_config(&self) -> Result<EtcdConfig, ConfigError> {
        let endpoints: Vec<String> = self
            .endpoints
            .iter()
            .map(|endpoint| endpoint.trim().to_owned())
            .filter(|endpoint| !endpoint.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(ConfigError::Incomplete(
                "no etcd endpoint given (RTM_ETCD_ENDPOINTS)",
            ));
        }
        for endpoint in &endpoints {
            check_endpoint(endpoint, self.ca_file.is_some())?;
        }
        let mut config = EtcdConfig::new(endpoints);
        config.request_timeout = self.request_timeout;
        config.tls = self.ca_file.as_ref().map(|ca_file| TlsFiles {
            ca_file: ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
        });
        if self.cert_file.is_some() && self.ca_file.is_none() {
            return Err(ConfigError::Incomplete(
                "a client certificate needs --etcd-ca-file (RTM_ETCD_CA_FILE) too",
            ));
        }
        config.credentials = match (&self.user, &self.password) {
            (Some(user), Some(password)) => Some(Credentials {
                user: user.clone(),
                password: password.clone(),
            }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Incomplete(
                    "etcd auth needs both RTM_ETCD_USER and RTM_ETCD_PASSWORD",
                ));
            }
        };
        Ok(config)
    }

    /// The key layout under the configured prefix.
    pub fn keys(&self) -> Result<Keys, ConfigError> {
        Ok(Keys::new(&self.prefix)?)
    }
}

fn check_endpoint(endpoint: &str, tls: bool) -> Result<(), ConfigError> {
    let error = |reason| ConfigError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let rest = if let Some(rest) = endpoint.strip_prefix("https://") {
        if !tls {
            return Err(error("https:// needs --etcd-ca-file (RTM_ETCD_CA_FILE)"));
        }
        rest
    } else if let Some(rest) = endpoint.strip_prefix("http://") {
        if tls {
            return Err(error("TLS is configured, so the endpoint must be https://"));
        }
        rest
    } else {
        return Err(error("must start with http:// or https://"));
    };
    let host_port = rest.trim_end_matches('/');
    match host_port.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(error("must be scheme://host:port")),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        etcd: EtcdArgs,
    }

    fn parse(args: &[&str]) -> Result<EtcdArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied())).map(|c| c.etcd)
    }

    #[test]
    fn endpoints_split_on_commas_and_are_checked() {
        let args = parse(&["--etcd-endpoints", "http://a:2379, http://b:2379"]).unwrap();
        let config = args.etcd_config().unwrap();
        assert_eq!(config.endpoints, ["http://a:2379", "http://b:2379"]);
        for bad in ["a:2379", "http://a", "https://a:2379", "http://:2379"] {
            let args = parse(&["--etcd-endpoints", bad]).unwrap();
            assert!(args.etcd_config().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn tls_and_auth_need_their_pairs() {
        let args = parse(&["--etcd-user", "root"]);
        assert!(args.is_err(), "a user without a password must be refused");
        let args = parse(&[
            "--etcd-endpoints",
            "https://127.0.0.1:2379",
            "--etcd-ca-file",
            "/ca.pem",
            "--etcd-user",
            "root",
            "--etcd-password",
            "pw",
        ])
        .unwrap();
        let config = args.etcd_config().unwrap();
        assert!(config.tls.is_some() && config.credentials.is_some());
    }

    #[test]
    fn bad_prefix_is_refused() {
        let args = parse(&["--prefix", "no-slash"]).unwrap();
        assert!(matches!(args.keys(), Err(ConfigError::Prefix(_))));
    }
}
