//! The connection settings both binaries share: how to reach etcd and under
//! which prefix rtmanager's keys live. Flags override environment variables
//! (clap reads both), so `RTM_ETCD_ENDPOINTS` and `RTM_PREFIX` mean the same
//! thing to `rtmanager`, `rtctl` and the tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::store::etcd::{Credentials, DEFAULT_ENDPOINT, EtcdConfig, TlsFiles};
use crate::store::keys::{DEFAULT_PREFIX, Keys, PrefixError};

/// The variable `--etcd-endpoints` is read from.
pub(crate) const ENV_ETCD_ENDPOINTS: &str = "RTM_ETCD_ENDPOINTS";
/// The variable `--prefix` is read from.
pub(crate) const ENV_PREFIX: &str = "RTM_PREFIX";

/// Why the connection settings cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The key prefix is not a usable path.
    #[error(transparent)]
    Prefix(#[from] PrefixError),
    /// An endpoint is not an `http://` or `https://` address that fits the TLS settings.
    #[error("invalid etcd endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Settings that need one another are given apart (a client certificate without a
    /// CA, a user without a password, ...); the message says which.
    #[error("{0}")]
    Incomplete(&'static str),
    /// `--etcd-password-file` names a file that cannot be read, or holds no password.
    #[error(
        "cannot read the etcd password from {}: {reason}; give a file readable by this user \
         holding the password (one line)",
        path.display()
    )]
    PasswordFile {
        /// The file named.
        path: PathBuf,
        /// Why it cannot serve.
        reason: String,
    },
    /// `--etcd-password` was given on the command line, where `ps` shows it to every user.
    #[error(
        "--etcd-password is refused on the command line, where `ps` shows it to every user of \
         the machine; put the password in a file only you can read and pass \
         --etcd-password-file FILE, or set RTM_ETCD_PASSWORD"
    )]
    PasswordOnCommandLine,
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

    /// etcd user (etcd's own auth); its password comes from --etcd-password-file or
    /// RTM_ETCD_PASSWORD.
    #[arg(long = "etcd-user", env = "RTM_ETCD_USER")]
    pub user: Option<String>,

    /// Password of the etcd user: from the environment (RTM_ETCD_PASSWORD) or a config file,
    /// never from the command line, where `ps` shows it (see [`refuse_password_flag`]). The flag
    /// exists so that a config file's `etcd-password` reaches it, and so that an old script
    /// passing it fails with a message saying what to do instead.
    #[arg(
        long = "etcd-password",
        env = "RTM_ETCD_PASSWORD",
        hide = true,
        hide_env_values = true,
        conflicts_with = "password_file"
    )]
    pub password: Option<String>,

    /// File holding the etcd user's password (one line; a trailing newline is ignored).
    /// RTM_ETCD_PASSWORD is the other way to give it; never put it on the command line.
    #[arg(
        long = "etcd-password-file",
        env = "RTM_ETCD_PASSWORD_FILE",
        value_name = "FILE"
    )]
    pub password_file: Option<PathBuf>,

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
        let password = match (&self.password, &self.password_file) {
            (Some(password), None) => Some(password.clone()),
            (None, Some(path)) => Some(read_password_file(path)?),
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(ConfigError::Incomplete(
                    "the etcd password is given twice: RTM_ETCD_PASSWORD and \
                     --etcd-password-file; keep one",
                ));
            }
        };
        config.credentials = match (&self.user, password) {
            (Some(user), Some(password)) => Some(Credentials {
                user: user.clone(),
                password,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Incomplete(
                    "etcd auth needs the user's password too: --etcd-password-file FILE or \
                     RTM_ETCD_PASSWORD",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::Incomplete(
                    "an etcd password needs its user too: --etcd-user (RTM_ETCD_USER)",
                ));
            }
        };
        Ok(config)
    }

    /// Whether a password is given, by any of the ways (not checking that it can be read).
    pub fn has_password(&self) -> bool {
        self.password.is_some() || self.password_file.is_some()
    }

    /// What is unsafe in how the password is kept or sent, one sentence each: a file holding
    /// it that group or others may open (the password file, and `config_file` when the
    /// password was read from that one), and credentials sent over plaintext `http://`.
    pub fn credential_warnings(&self, config_file: Option<&Path>) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.user.is_none() || !self.has_password() {
            return warnings;
        }
        for path in self
            .password_file
            .iter()
            .map(PathBuf::as_path)
            .chain(config_file)
        {
            if let Some(mode) = open_to_others(path) {
                warnings.push(format!(
                    "{} holds the etcd password and group or others may open it (mode {mode:03o}); \
                     make it private: chmod 600 {}",
                    path.display(),
                    path.display()
                ));
            }
        }
        let plaintext: Vec<&str> = self
            .endpoints
            .iter()
            .map(|endpoint| endpoint.trim())
            .filter(|endpoint| endpoint.starts_with("http://"))
            .collect();
        if !plaintext.is_empty() {
            warnings.push(format!(
                "the etcd user's password is sent unencrypted to {}: anyone on the network path \
                 can read it; serve etcd over TLS (https:// and --etcd-ca-file)",
                plaintext.join(",")
            ));
        }
        warnings
    }

    /// The key layout under the configured prefix.
    pub fn keys(&self) -> Result<Keys, ConfigError> {
        Ok(Keys::new(&self.prefix)?)
    }
}

/// Refuses `--etcd-password` given on the command line (the environment and config files are
/// fine: `ps` shows neither). Both binaries call it on their parsed arguments.
pub fn refuse_password_flag(matches: &clap::ArgMatches) -> Result<(), ConfigError> {
    match matches.value_source("password") {
        Some(clap::parser::ValueSource::CommandLine) => Err(ConfigError::PasswordOnCommandLine),
        _ => Ok(()),
    }
}

/// The password a password file holds: its text without the trailing newline(s) (`echo pw >
/// file` writes one).
fn read_password_file(path: &Path) -> Result<String, ConfigError> {
    let error = |reason: String| ConfigError::PasswordFile {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let password = text.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(error("the file is empty".into()));
    }
    if password.contains('\n') {
        return Err(error(
            "the file holds more than one line; it must hold the password alone".into(),
        ));
    }
    Ok(password.to_owned())
}

/// The permission bits of `path` when group or others have any access to it.
fn open_to_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
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
        let args = parse(&["--etcd-user", "root"]).unwrap();
        let error = args.etcd_config().unwrap_err();
        assert!(
            error.to_string().contains("--etcd-password-file"),
            "a user without a password must be refused, saying how to give one: {error}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = private_file(&dir, "pw", "pw\n");
        let args = parse(&[
            "--etcd-endpoints",
            "https://127.0.0.1:2379",
            "--etcd-ca-file",
            "/ca.pem",
            "--etcd-user",
            "root",
            "--etcd-password-file",
            file.to_str().unwrap(),
        ])
        .unwrap();
        let config = args.etcd_config().unwrap();
        assert!(config.tls.is_some());
        assert_eq!(config.credentials.unwrap().password, "pw");
        let args = parse(&["--etcd-password-file", file.to_str().unwrap()]).unwrap();
        assert!(args.etcd_config().is_err(), "a password without a user");
    }

    fn private_file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    #[test]
    fn a_password_file_gives_its_one_line_without_the_newline() {
        let dir = tempfile::tempdir().unwrap();
        for (text, expected) in [
            ("s3cret\n", "s3cret"),
            ("s3cret", "s3cret"),
            ("a b\r\n", "a b"),
        ] {
            let path = private_file(&dir, "pw", text);
            assert_eq!(read_password_file(&path).unwrap(), expected, "{text:?}");
        }
        for (text, why) in [("\n", "empty"), ("one\ntwo\n", "more than one line")] {
            let path = private_file(&dir, "pw", text);
            let error = read_password_file(&path).unwrap_err().to_string();
            assert!(error.contains(why), "{text:?}: {error}");
            assert!(
                !error.contains("one\ntwo"),
                "the text is never echoed: {error}"
            );
        }
        let missing = dir.path().join("missing");
        let error = read_password_file(&missing).unwrap_err().to_string();
        assert!(
            error.contains(&missing.display().to_string()) && error.contains("No such file"),
            "{error}"
        );
    }

    #[test]
    fn the_password_flag_on_the_command_line_is_refused() {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command()
            .try_get_matches_from(["test", "--etcd-user", "root", "--etcd-password", "pw"])
            .unwrap();
        let error = refuse_password_flag(&matches).unwrap_err();
        assert_eq!(error, ConfigError::PasswordOnCommandLine);
        let message = error.to_string();
        assert!(
            message.contains("--etcd-password-file") && message.contains("RTM_ETCD_PASSWORD"),
            "{message}"
        );
        let matches = Cli::command()
            .try_get_matches_from(["test", "--etcd-user", "root"])
            .unwrap();
        assert_eq!(refuse_password_flag(&matches), Ok(()));
        assert!(Cli::from_arg_matches(&matches).is_ok());
    }

    #[test]
    fn the_password_flag_is_not_in_the_help() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("--etcd-password-file"), "{help}");
        assert!(!help.contains("--etcd-password "), "{help}");
    }

    #[test]
    fn credentials_in_an_open_file_or_over_plaintext_are_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let private = private_file(&dir, "private", "pw\n");
        let open = private_file(&dir, "open", "pw\n");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let args = |endpoint: &str, file: &Path| {
            parse(&[
                "--etcd-endpoints",
                endpoint,
                "--etcd-user",
                "root",
                "--etcd-password-file",
                file.to_str().unwrap(),
            ])
            .unwrap()
        };
        let tls = "https://127.0.0.1:2379";
        assert!(args(tls, &private).credential_warnings(None).is_empty());

        let warnings = args(tls, &open).credential_warnings(None);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("mode 644") && warnings[0].contains("chmod 600"),
            "{warnings:?}"
        );
        // A config file the password was read from counts as much as the password file.
        let warnings = args(tls, &private).credential_warnings(Some(&open));
        assert_eq!(warnings.len(), 1, "{warnings:?}");

        let warnings = args("http://127.0.0.1:2379", &private).credential_warnings(None);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("unencrypted to http://127.0.0.1:2379"),
            "{warnings:?}"
        );
        // Without credentials, plaintext carries no secret.
        let anonymous = parse(&["--etcd-endpoints", "http://127.0.0.1:2379"]).unwrap();
        assert!(anonymous.credential_warnings(Some(&open)).is_empty());
    }

    #[test]
    fn bad_prefix_is_refused() {
        let args = parse(&["--prefix", "no-slash"]).unwrap();
        assert!(matches!(args.keys(), Err(ConfigError::Prefix(_))));
    }
}
