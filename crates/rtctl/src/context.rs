//! Where rtctl connects: flags, then `RTM_*` environment variables, then the current context
//! of a config file with named contexts (like a kubeconfig), then the defaults.
//!
//! The config file is `--config`, else `RTMCONFIG`, else
//! `$XDG_CONFIG_HOME/rtmanager/config.yaml` (`~/.config/rtmanager/config.yaml`):
//!
//! ```yaml
//! currentContext: local
//! contexts:
//!   - name: local
//!     endpoints: [http://127.0.0.1:2379]     # or "http://a:2379,http://b:2379"
//!     prefix: /rtmanager
//!   - name: prod
//!     endpoints: [https://etcd-1:2379, https://etcd-2:2379]
//!     prefix: /games
//!     caFile: certs/ca.pem                    # relative to the config file
//!     certFile: certs/rtctl.pem
//!     keyFile: certs/rtctl-key.pem
//!     user: ops
//!     password: secret                        # keep the file private (chmod 600)
//!     timeout: 5s
//!     dockerHost: tcp://node-1:2375           # where `rtctl logs` reads the live log
//! ```
//!
//! The password never comes from the command line (`ps` shows it): it comes from
//! `--etcd-password-file`, `RTM_ETCD_PASSWORD` or the context, and when none gives one for a
//! user and stdin is a terminal, rtctl asks for it (without echo). A config file holding a
//! password that group or others may open, and a password sent over `http://`, are warned
//! about on stderr.
//!
//! `--context NAME` picks another context for one command; `rtctl config use-context NAME`
//! changes the current one.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use serde::{Deserialize, Serialize};

use super::error::{CliError, one_line};
use super::output::Table;
use rtm_core::config::EtcdArgs;
use rtm_core::store::Keys;
use rtm_core::store::etcd::EtcdConfig;

/// The environment variable naming the config file.
pub(crate) const ENV_CONFIG: &str = "RTMCONFIG";

/// rtctl's bound on one etcd request unless told otherwise: a person waits for the answer,
/// and an unreachable etcd must be reported within a few seconds, not hang.
pub(crate) const DEFAULT_REQUEST_TIMEOUT: &str = "3s";

/// Connection flags and the config file that supplies what they leave out.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ConnectionArgs {
    #[command(flatten)]
    pub(crate) etcd: EtcdArgs,

    /// Config file with named contexts [default: ~/.config/rtmanager/config.yaml].
    #[arg(long, env = ENV_CONFIG, value_name = "FILE", global = true)]
    pub(crate) config: Option<PathBuf>,

    /// The context of the config file to use instead of its currentContext.
    #[arg(long, value_name = "NAME", global = true, add = crate::complete::context_names())]
    pub(crate) context: Option<String>,
}

/// Which connection settings came from a flag or the environment (and so beat the config
/// file), as opposed to clap's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Explicit {
    pub(crate) endpoints: bool,
    pub(crate) prefix: bool,
    pub(crate) ca_file: bool,
    pub(crate) cert_file: bool,
    pub(crate) key_file: bool,
    pub(crate) user: bool,
    pub(crate) password: bool,
    pub(crate) password_file: bool,
    /// `--etcd-password` was on the command line: refused by [`resolve`].
    pub(crate) password_flag: bool,
    pub(crate) request_timeout: bool,
}

impl Explicit {
    /// Reads the value sources clap recorded (the ids are `EtcdArgs`' field names).
    pub(crate) fn from_matches(matches: &clap::ArgMatches) -> Explicit {
        let given = |id: &str| {
            matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        Explicit {
            endpoints: given("endpoints"),
            prefix: given("prefix"),
            ca_file: given("ca_file"),
            cert_file: given("cert_file"),
            key_file: given("key_file"),
            user: given("user"),
            password: given("password"),
            password_file: given("password_file"),
            password_flag: rtm_core::config::refuse_password_flag(matches).is_err(),
            request_timeout: given("request_timeout"),
        }
    }

    /// Without clap's matches: a value that differs from the default was given.
    pub(crate) fn guess(args: &EtcdArgs) -> Explicit {
        Explicit {
            endpoints: args.endpoints != [rtm_core::store::etcd::DEFAULT_ENDPOINT],
            prefix: args.prefix != rtm_core::store::keys::DEFAULT_PREFIX,
            ca_file: args.ca_file.is_some(),
            cert_file: args.cert_file.is_some(),
            key_file: args.key_file.is_some(),
            user: args.user.is_some(),
            password: args.password.is_some(),
            password_file: args.password_file.is_some(),
            password_flag: false,
            request_timeout: humantime::parse_duration(DEFAULT_REQUEST_TIMEOUT)
                .is_ok_and(|default| default != args.request_timeout),
        }
    }
}

/// The config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) current_context: Option<String>,
    #[serde(default)]
    pub(crate) contexts: Vec<NamedContext>,
}

/// One named set of connection settings; anything left out falls back to the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct NamedContext {
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) endpoints: Option<Endpoints>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) password: Option<String>,
    /// Bound on one etcd request, e.g. `5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) timeout: Option<String>,
    /// The Docker engine `rtctl logs` reads from (`unix:///var/run/docker.sock`,
    /// `tcp://node-1:2375`), when neither `--docker-host` nor `DOCKER_HOST` names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) docker_host: Option<String>,
}

/// Endpoints as a list or as one comma-separated string (as in `RTM_ETCD_ENDPOINTS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Endpoints {
    List(Vec<String>),
    Text(String),
}

impl Endpoints {
    pub(crate) fn to_vec(&self) -> Vec<String> {
        match self {
            Endpoints::List(list) => list.clone(),
            Endpoints::Text(text) => text.split(',').map(|e| e.trim().to_owned()).collect(),
        }
    }
}

/// A config file as read, with where it came from.
#[derive(Debug, Clone)]
pub(crate) struct LoadedConfig {
    pub(crate) path: PathBuf,
    pub(crate) file: ConfigFile,
}

impl LoadedConfig {
    /// The file named by `--config`/`RTMCONFIG` (which must exist), else the default one if it
    /// exists.
    pub(crate) fn load(explicit: Option<&Path>) -> Result<Option<LoadedConfig>, CliError> {
        let (path, required) = match explicit {
            Some(path) => (path.to_path_buf(), true),
            None => match default_config_path() {
                Some(path) => (path, false),
                None => return Ok(None),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(None),
            Err(e) => {
                return Err(CliError::usage(format!(
                    "cannot read the config file {}: {e}; fix --config / {ENV_CONFIG} or create \
                     the file",
                    path.display()
                )));
            }
        };
        let file = parse_config(&text).map_err(|message| {
            CliError::usage(format!(
                "the config file {} is invalid: {message}; fix it (see `rtctl config --help`)",
                path.display()
            ))
        })?;
        Ok(Some(LoadedConfig { path, file }))
    }

    fn context(&self, name: &str) -> Option<&NamedContext> {
        self.file.contexts.iter().find(|c| c.name == name)
    }

    /// Relative certificate paths are relative to the config file, as in a kubeconfig.
    fn resolve_path(&self, path: &Path) -> PathBuf {
        match self.path.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }
}

/// Parses a config file; an empty file is an empty config.
pub(crate) fn parse_config(text: &str) -> Result<ConfigFile, String> {
    if text.trim().is_empty() {
        return Ok(ConfigFile::default());
    }
    let deserializer = serde_yaml::Deserializer::from_str(text);
    let file: ConfigFile = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let message = one_line(&e.inner().to_string());
        if path == "." {
            message
        } else {
            format!("{path}: {message}")
        }
    })?;
    let mut seen = std::collections::HashSet::new();
    for context in &file.contexts {
        if !seen.insert(context.name.as_str()) {
            return Err(format!("context {:?} is defined twice", context.name));
        }
    }
    Ok(file)
}

fn default_config_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME").filter(|h| !h.is_empty())?).join(".config"),
    };
    Some(base.join("rtmanager").join("config.yaml"))
}

/// The connection settings rtctl uses, and how to describe them in messages.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) etcd: EtcdConfig,
    pub(crate) keys: Keys,
    /// The context used, if any.
    pub(crate) context: Option<String>,
    /// The config file read, if any.
    pub(crate) config_path: Option<PathBuf>,
    /// The context's `dockerHost`, if it names one.
    pub(crate) docker_host: Option<String>,
}

impl Resolved {
    pub(crate) fn endpoints_text(&self) -> String {
        self.etcd.endpoints.join(",")
    }
}

/// Merges flags/env, the config file's context and the defaults; asks for the password when a
/// user has none and stdin is a terminal; warns on stderr about how the password is kept and
/// sent.
pub(crate) fn resolve(args: &ConnectionArgs, explicit: &Explicit) -> Result<Resolved, CliError> {
    let prompt = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let (resolved, warnings) = resolve_settings(args, explicit, prompt.then_some(&ask_password))?;
    for warning in warnings {
        super::output::warn(&warning);
    }
    Ok(resolved)
}

/// Asks for the password of `user` on the terminal (see [`resolve_settings`]).
type AskPassword = dyn Fn(&str, &str) -> Result<String, CliError>;

/// [`resolve`], with the way to ask for a missing password given (none: don't ask) and the
/// warnings returned.
pub(crate) fn resolve_settings(
    args: &ConnectionArgs,
    explicit: &Explicit,
    ask: Option<&AskPassword>,
) -> Result<(Resolved, Vec<String>), CliError> {
    if explicit.password_flag {
        return Err(CliError::usage(
            rtm_core::config::ConfigError::PasswordOnCommandLine.to_string(),
        ));
    }
    let loaded = LoadedConfig::load(args.config.as_deref())?;
    let (context_name, context) = pick_context(args, loaded.as_ref())?;
    let mut merged = args.etcd.clone();
    if let (Some(context), Some(loaded)) = (context, &loaded) {
        fill_in(&mut merged, explicit, context, loaded)?;
    }
    if merged.request_timeout.is_zero() {
        return Err(CliError::usage(
            "the etcd request timeout must be more than 0s (--etcd-timeout)",
        ));
    }

    let where_from = match (&context_name, &loaded) {
        (Some(name), Some(loaded)) => {
            format!(" (context {name:?} of {})", loaded.path.display())
        }
        _ => String::new(),
    };
    if let (Some(user), false, Some(ask)) = (&merged.user, merged.has_password(), ask) {
        merged.password = Some(ask(user, &merged.endpoints.join(","))?);
    }
    // The context's file holds a password whether or not a flag overrode it.
    let password_file = match (context, &loaded) {
        (Some(context), Some(loaded)) if context.password.is_some() => Some(loaded.path.as_path()),
        _ => None,
    };
    let warnings = merged.credential_warnings(password_file);
    let mut etcd = merged.etcd_config().map_err(|e| {
        CliError::usage(format!(
            "invalid connection settings{where_from}: {e}; fix the flags, RTM_* variables or \
             the context"
        ))
    })?;
    // Connecting to a live etcd takes milliseconds; the request timeout also bounds it so a
    // dead endpoint is reported within one timeout.
    etcd.connect_timeout = etcd.connect_timeout.min(merged.request_timeout);
    let keys = merged.keys().map_err(|e| {
        CliError::usage(format!(
            "{e}{where_from}; use --prefix / RTM_PREFIX like /rtmanager"
        ))
    })?;
    let resolved = Resolved {
        etcd,
        keys,
        docker_host: context.and_then(|c| c.docker_host.clone()),
        context: context_name,
        config_path: loaded.map(|l| l.path),
    };
    Ok((resolved, warnings))
}

/// The context to use (`--context`, else the file's current one), by name and as defined
/// in the config file; an unknown one, or one asked for without a file, is a usage error.
fn pick_context<'c>(
    args: &ConnectionArgs,
    loaded: Option<&'c LoadedConfig>,
) -> Result<(Option<String>, Option<&'c NamedContext>), CliError> {
    let context_name = match (&args.context, loaded) {
        (Some(name), _) => Some(name.clone()),
        (None, Some(loaded)) => loaded.file.current_context.clone(),
        (None, None) => None,
    };
    let context = match (&context_name, loaded) {
        (None, _) => None,
        (Some(name), Some(loaded)) => Some(loaded.context(name).ok_or_else(|| {
            CliError::usage(format!(
                "context {name:?} is not defined in {}; list the contexts with `rtctl config \
                 get-contexts`",
                loaded.path.display()
            ))
        })?),
        (Some(name), None) => {
            return Err(CliError::usage(format!(
                "context {name:?} was asked for, but there is no config file (looked for {}); \
                 create it or pass --config",
                default_config_path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "~/.config/rtmanager/config.yaml".into())
            )));
        }
    };
    Ok((context_name, context))
}

/// Fills in from the context what no flag or env variable gave.
fn fill_in(
    merged: &mut EtcdArgs,
    explicit: &Explicit,
    context: &NamedContext,
    loaded: &LoadedConfig,
) -> Result<(), CliError> {
    if !explicit.endpoints
        && let Some(endpoints) = &context.endpoints
    {
        merged.endpoints = endpoints.to_vec();
    }
    if !explicit.prefix
        && let Some(prefix) = &context.prefix
    {
        merged.prefix = prefix.clone();
    }
    if !explicit.ca_file && context.ca_file.is_some() {
        merged.ca_file = context.ca_file.as_deref().map(|p| loaded.resolve_path(p));
    }
    if !explicit.cert_file && context.cert_file.is_some() {
        merged.cert_file = context.cert_file.as_deref().map(|p| loaded.resolve_path(p));
    }
    if !explicit.key_file && context.key_file.is_some() {
        merged.key_file = context.key_file.as_deref().map(|p| loaded.resolve_path(p));
    }
    if !explicit.user && context.user.is_some() {
        merged.user = context.user.clone();
    }
    if !explicit.password && !explicit.password_file && context.password.is_some() {
        merged.password = context.password.clone();
    }
    if !explicit.request_timeout
        && let Some(timeout) = &context.timeout
    {
        merged.request_timeout = humantime::parse_duration(timeout).map_err(|e| {
            CliError::usage(format!(
                "context {:?} in {}: timeout {timeout:?} is not a duration ({e}); write it \
                 like 5s",
                context.name,
                loaded.path.display()
            ))
        })?;
    }
    Ok(())
}

/// Reads a password from the terminal on stdin, echo off, after a prompt on stderr.
fn ask_password(user: &str, endpoints: &str) -> Result<String, CliError> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let failed = |e: std::io::Error| {
        CliError::usage(format!(
            "cannot read the password of etcd user {user:?} from the terminal ({e}); give it \
             with --etcd-password-file FILE or RTM_ETCD_PASSWORD"
        ))
    };
    let stdin = std::io::stdin();
    let mut stderr = std::io::stderr();
    let saved = tcgetattr(&stdin).map_err(|e| failed(e.into()))?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    // `Now`, not `Flush`: a password typed (or piped through a terminal) before the prompt
    // showed is kept, not thrown away.
    tcsetattr(&stdin, OptionalActions::Now, &quiet).map_err(|e| failed(e.into()))?;
    // The prompt once echo is off: what is typed after it never shows.
    let prompted = write!(stderr, "Password of etcd user {user} at {endpoints}: ")
        .and_then(|()| stderr.flush());
    let mut line = String::new();
    let read = prompted.and_then(|()| stdin.read_line(&mut line));
    // Echo back on before anything else, whatever the read did.
    let restored = tcsetattr(&stdin, OptionalActions::Now, &saved);
    read.map_err(failed)?;
    restored.map_err(|e| failed(e.into()))?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(CliError::usage(format!(
            "no password was typed for etcd user {user:?}"
        )));
    }
    Ok(password.to_owned())
}

/// `rtctl config ...`: look at and switch contexts.
#[derive(Debug, Clone, clap::Subcommand)]
pub(crate) enum ConfigCommand {
    /// Show the settings rtctl would connect with (password hidden).
    View,
    /// List the contexts of the config file.
    GetContexts,
    /// Print the current context's name.
    CurrentContext,
    /// Make NAME the current context (rewrites the config file).
    UseContext {
        /// The context's name.
        #[arg(add = crate::complete::context_names())]
        name: String,
    },
}

/// `rtctl config ...`: one function per subcommand.
pub(crate) fn config_command(
    command: &ConfigCommand,
    args: &ConnectionArgs,
    explicit: &Explicit,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        ConfigCommand::View => view(args, explicit, out),
        ConfigCommand::GetContexts => get_contexts(args, out),
        ConfigCommand::CurrentContext => current_context(args, out),
        ConfigCommand::UseContext { name } => use_context(args, name, out),
    }
}

/// `rtctl config view`: the settings rtctl would connect with, password hidden.
fn view(args: &ConnectionArgs, explicit: &Explicit, out: &mut dyn Write) -> Result<(), CliError> {
    // Showing the settings needs no password: a missing one is not asked for.
    let placeholder = |_: &str, _: &str| Ok(String::new());
    let (resolved, warnings) = resolve_settings(args, explicit, Some(&placeholder))?;
    for warning in warnings {
        super::output::warn(&warning);
    }
    let etcd = &resolved.etcd;
    let mut table = Table::new(["SETTING", "VALUE"]);
    let none = || "<none>".to_owned();
    table.row([
        "config file".into(),
        resolved
            .config_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(none),
    ]);
    table.row([
        "context".into(),
        resolved.context.clone().unwrap_or_else(none),
    ]);
    table.row(["endpoints".into(), resolved.endpoints_text()]);
    table.row(["prefix".into(), resolved.keys.prefix().to_owned()]);
    table.row([
        "timeout".into(),
        humantime::format_duration(etcd.request_timeout).to_string(),
    ]);
    table.row([
        "tls ca file".into(),
        etcd.tls
            .as_ref()
            .map(|t| t.ca_file.display().to_string())
            .unwrap_or_else(none),
    ]);
    table.row([
        "client cert".into(),
        etcd.tls
            .as_ref()
            .and_then(|t| t.cert_file.as_ref())
            .map(|p| p.display().to_string())
            .unwrap_or_else(none),
    ]);
    table.row([
        "user".into(),
        etcd.credentials
            .as_ref()
            .map(|c| c.user.clone())
            .unwrap_or_else(none),
    ]);
    out.write_all(table.render().as_bytes())?;
    Ok(())
}

/// The names of the config file's contexts (none without a file), for completion.
pub(crate) fn context_names(args: &ConnectionArgs) -> Result<Vec<String>, CliError> {
    Ok(LoadedConfig::load(args.config.as_deref())?
        .map(|loaded| loaded.file.contexts.into_iter().map(|c| c.name).collect())
        .unwrap_or_default())
}

/// `rtctl config get-contexts`: the contexts of the config file, the current one starred.
fn get_contexts(args: &ConnectionArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let Some(loaded) = LoadedConfig::load(args.config.as_deref())? else {
        return Err(no_config_file());
    };
    let current = args
        .context
        .clone()
        .or_else(|| loaded.file.current_context.clone());
    let mut table = Table::new(["CURRENT", "NAME", "ENDPOINTS", "PREFIX"]);
    for context in &loaded.file.contexts {
        table.row([
            if current.as_deref() == Some(context.name.as_str()) {
                "*".into()
            } else {
                String::new()
            },
            context.name.clone(),
            context
                .endpoints
                .as_ref()
                .map(|e| e.to_vec().join(","))
                .unwrap_or_else(|| "<default>".into()),
            context.prefix.clone().unwrap_or_else(|| "<default>".into()),
        ]);
    }
    out.write_all(table.render().as_bytes())?;
    Ok(())
}

/// `rtctl config current-context`: the current context's name.
fn current_context(args: &ConnectionArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let Some(loaded) = LoadedConfig::load(args.config.as_deref())? else {
        return Err(no_config_file());
    };
    match &loaded.file.current_context {
        Some(name) => {
            writeln!(out, "{name}")?;
            Ok(())
        }
        None => Err(CliError::usage(format!(
            "{} has no currentContext; set one with `rtctl config use-context NAME`",
            loaded.path.display()
        ))),
    }
}

/// `rtctl config use-context NAME`: rewrites the config file with NAME current.
fn use_context(args: &ConnectionArgs, name: &str, out: &mut dyn Write) -> Result<(), CliError> {
    let Some(mut loaded) = LoadedConfig::load(args.config.as_deref())? else {
        return Err(no_config_file());
    };
    if loaded.context(name).is_none() {
        return Err(CliError::usage(format!(
            "context {name:?} is not defined in {}; list the contexts with `rtctl \
             config get-contexts`",
            loaded.path.display()
        )));
    }
    loaded.file.current_context = Some(name.to_owned());
    let text = serde_yaml::to_string(&loaded.file)
        .map_err(|e| CliError::internal(format!("cannot print the config file: {e}")))?;
    std::fs::write(&loaded.path, text).map_err(|e| {
        CliError::usage(format!(
            "cannot write the config file {}: {e}",
            loaded.path.display()
        ))
    })?;
    writeln!(out, "Switched to context {name:?}.")?;
    Ok(())
}

fn no_config_file() -> CliError {
    CliError::usage(format!(
        "no config file found (looked at --config, {ENV_CONFIG} and {}); create one with \
         named contexts (see `rtctl config --help`)",
        default_config_path()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "~/.config/rtmanager/config.yaml".into())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The default request timeout as a `Duration`.
    fn default_request_timeout() -> Duration {
        humantime::parse_duration(DEFAULT_REQUEST_TIMEOUT).unwrap_or(Duration::from_secs(3))
    }

    fn args(config: Option<PathBuf>, context: Option<&str>) -> ConnectionArgs {
        ConnectionArgs {
            etcd: EtcdArgs {
                endpoints: vec![rtm_core::store::etcd::DEFAULT_ENDPOINT.into()],
                prefix: rtm_core::store::keys::DEFAULT_PREFIX.into(),
                ca_file: None,
                cert_file: None,
                key_file: None,
                user: None,
                password: None,
                password_file: None,
                request_timeout: default_request_timeout(),
            },
            config,
            context: context.map(str::to_owned),
        }
    }

    fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    const CONFIG: &str = "\
currentContext: a
contexts:
  - name: a
    endpoints: http://10.0.0.1:2379, http://10.0.0.2:2379
    prefix: /games
    timeout: 7s
  - name: b
    endpoints: [http://b:2379]
";

    #[test]
    fn the_current_context_fills_in_what_flags_and_env_leave_out() {
        let (_dir, path) = write_config(CONFIG);
        let resolved = resolve(&args(Some(path.clone()), None), &Explicit::default()).unwrap();
        assert_eq!(
            resolved.etcd.endpoints,
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(resolved.keys.prefix(), "/games");
        assert_eq!(resolved.etcd.request_timeout, Duration::from_secs(7));
        assert_eq!(resolved.context.as_deref(), Some("a"));

        // A flag (or env var) beats the context.
        let mut given = args(Some(path.clone()), None);
        given.etcd.prefix = "/mine".into();
        let explicit = Explicit {
            prefix: true,
            ..Explicit::default()
        };
        assert_eq!(resolve(&given, &explicit).unwrap().keys.prefix(), "/mine");

        // --context picks another one.
        let resolved = resolve(&args(Some(path), Some("b")), &Explicit::default()).unwrap();
        assert_eq!(resolved.etcd.endpoints, ["http://b:2379"]);
        assert_eq!(resolved.keys.prefix(), "/rtmanager");
    }

    #[test]
    fn unknown_contexts_and_bad_files_are_usage_errors() {
        let (_dir, path) = write_config(CONFIG);
        let error = resolve(&args(Some(path), Some("nope")), &Explicit::default()).unwrap_err();
        assert!(matches!(error, CliError::Usage { .. }));
        assert!(error.to_string().contains("\"nope\""), "{error}");

        let (_dir, path) = write_config("contexts:\n  - name: a\n    endpoint: x\n");
        let error = resolve(&args(Some(path), None), &Explicit::default()).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("contexts[0]: unknown field `endpoint`"),
            "{error}"
        );

        let missing = PathBuf::from("/nonexistent/rtctl/config.yaml");
        let error = resolve(&args(Some(missing), None), &Explicit::default()).unwrap_err();
        assert!(
            error.to_string().contains("cannot read the config file"),
            "{error}"
        );
    }

    #[test]
    fn relative_certificate_paths_are_relative_to_the_config_file() {
        let (dir, path) = write_config(
            "currentContext: tls\ncontexts:\n  - name: tls\n    endpoints: [https://e:2379]\n    \
             caFile: certs/ca.pem\n",
        );
        let resolved = resolve(&args(Some(path), None), &Explicit::default()).unwrap();
        assert_eq!(
            resolved.etcd.tls.unwrap().ca_file,
            dir.path().join("certs/ca.pem")
        );
    }

    #[test]
    fn an_empty_config_file_is_an_empty_config() {
        assert_eq!(parse_config("").unwrap(), ConfigFile::default());
        assert!(parse_config("contexts: [{name: a}, {name: a}]").is_err());
    }
}
