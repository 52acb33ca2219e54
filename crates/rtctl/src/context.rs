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
//! changes the current one, `config set-context NAME --endpoints … [--current]` creates or
//! updates one (the file, mode 0600, and its directory are created when missing) and `config
//! delete-context NAME` removes one.
//!
//! `RTMCONFIG` (or `--config`) may list several files, `a.yaml:b.yaml` (`;` on Windows), merged
//! like KUBECONFIG: files in the list that do not exist are skipped; the first file that sets
//! `currentContext` decides it; contexts are merged by name, the first file defining a name
//! wins. A write goes to the first file that defines the context it changes (`use-context`:
//! the first that sets `currentContext`), else to the first file of the list. A rewritten
//! file keeps every setting; its comments are kept where only `currentContext` changes.

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

    /// Config file with named contexts, or a list of them merged in order (a.yaml:b.yaml)
    /// [default: ~/.config/rtmanager/config.yaml].
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
    /// `--prefix` was on the command line (not only in `RTM_PREFIX`): `config set-context`
    /// stores it.
    pub(crate) prefix_flag: bool,
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
            prefix_flag: matches!(
                matches.value_source("prefix"),
                Some(ValueSource::CommandLine)
            ),
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
            prefix_flag: false,
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
    /// The file's text as read (empty for a file that does not exist yet).
    pub(crate) text: String,
}

impl LoadedConfig {
    /// One config file; `None` when it does not exist and `required` is false.
    fn read(path: &Path, required: bool) -> Result<Option<LoadedConfig>, CliError> {
        let text = match std::fs::read_to_string(path) {
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
        Ok(Some(LoadedConfig {
            path: path.to_path_buf(),
            file,
            text,
        }))
    }

    /// A file of the list that does not exist yet, to be written.
    fn empty(path: &Path) -> LoadedConfig {
        LoadedConfig {
            path: path.to_path_buf(),
            file: ConfigFile::default(),
            text: String::new(),
        }
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

/// The config files rtctl reads, in their order of precedence, merged as KUBECONFIG's are.
#[derive(Debug, Clone, Default)]
pub(crate) struct Configs {
    /// Every path of the list (`--config`/`RTMCONFIG`, else the default), existing or not.
    pub(crate) paths: Vec<PathBuf>,
    /// The files of the list that exist, in its order.
    pub(crate) files: Vec<LoadedConfig>,
}

impl Configs {
    /// The files of `--config`/`RTMCONFIG` (a list, `a:b`), else the default one. A file named
    /// alone must exist unless `missing_ok` (a write creates it); files of a longer list that
    /// do not exist are skipped.
    pub(crate) fn load(explicit: Option<&Path>, missing_ok: bool) -> Result<Configs, CliError> {
        let (paths, required) = match explicit {
            Some(list) => {
                let paths: Vec<PathBuf> = std::env::split_paths(list)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect();
                let required = paths.len() == 1 && !missing_ok;
                (paths, required)
            }
            None => (default_config_path().into_iter().collect(), false),
        };
        let mut files = Vec::new();
        for path in &paths {
            if let Some(loaded) = LoadedConfig::read(path, required)? {
                files.push(loaded);
            }
        }
        Ok(Configs { paths, files })
    }

    /// The merged current context: the first file's that sets one.
    pub(crate) fn current_context(&self) -> Option<(&str, &LoadedConfig)> {
        self.files.iter().find_map(|loaded| {
            loaded
                .file
                .current_context
                .as_deref()
                .map(|name| (name, loaded))
        })
    }

    /// The context `name` as the first file defining it says, and that file.
    pub(crate) fn context(&self, name: &str) -> Option<(&NamedContext, &LoadedConfig)> {
        self.files
            .iter()
            .find_map(|loaded| loaded.context(name).map(|context| (context, loaded)))
    }

    /// Every context of the merge (the first definition of each name), in file order.
    pub(crate) fn contexts(&self) -> Vec<(&NamedContext, &LoadedConfig)> {
        let mut seen = std::collections::HashSet::new();
        self.files
            .iter()
            .flat_map(|loaded| loaded.file.contexts.iter().map(move |c| (c, loaded)))
            .filter(|(context, _)| seen.insert(context.name.as_str()))
            .collect()
    }

    /// The list, for messages: `a.yaml`, or `a.yaml:b.yaml`.
    pub(crate) fn describe(&self) -> String {
        match std::env::join_paths(&self.paths) {
            Ok(list) => list.to_string_lossy().into_owned(),
            Err(_) => self
                .paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// The file a change of context `name` goes to: the first that defines it, else the
    /// first of the list (read, or empty when it does not exist yet).
    fn home_of(&self, name: &str) -> Option<LoadedConfig> {
        match self.context(name) {
            Some((_, loaded)) => Some(loaded.clone()),
            None => self.first(),
        }
    }

    /// The file `currentContext` is written to: the first that sets it, else the first of the
    /// list.
    fn home_of_current(&self) -> Option<LoadedConfig> {
        match self.current_context() {
            Some((_, loaded)) => Some(loaded.clone()),
            None => self.first(),
        }
    }

    fn first(&self) -> Option<LoadedConfig> {
        let path = self.paths.first()?;
        Some(
            self.files
                .iter()
                .find(|loaded| &loaded.path == path)
                .cloned()
                .unwrap_or_else(|| LoadedConfig::empty(path)),
        )
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
    let configs = Configs::load(args.config.as_deref(), false)?;
    let (context_name, picked) = pick_context(args, &configs)?;
    let (context, loaded) = match picked {
        Some((context, loaded)) => (Some(context), Some(loaded)),
        None => (None, configs.files.first()),
    };
    let mut merged = args.etcd.clone();
    if let (Some(context), Some(loaded)) = (context, loaded) {
        fill_in(&mut merged, explicit, context, loaded)?;
    }
    if merged.request_timeout.is_zero() {
        return Err(CliError::usage(
            "the etcd request timeout must be more than 0s (--etcd-timeout)",
        ));
    }

    let where_from = match (&context_name, loaded) {
        (Some(name), Some(loaded)) => {
            format!(" (context {name:?} of {})", loaded.path.display())
        }
        _ => String::new(),
    };
    if let (Some(user), false, Some(ask)) = (&merged.user, merged.has_password(), ask) {
        merged.password = Some(ask(user, &merged.endpoints.join(","))?);
    }
    // The context's file holds a password whether or not a flag overrode it.
    let password_file = match (context, loaded) {
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
        config_path: loaded.map(|l| l.path.clone()),
    };
    Ok((resolved, warnings))
}

/// A context as defined, and the file defining it.
type Defined<'c> = (&'c NamedContext, &'c LoadedConfig);

/// The context to use (`--context`, else the files' current one), by name and as defined
/// in the config files (with the file defining it); an unknown one, or one asked for without
/// a file, is a usage error.
fn pick_context<'c>(
    args: &ConnectionArgs,
    configs: &'c Configs,
) -> Result<(Option<String>, Option<Defined<'c>>), CliError> {
    let context_name = match &args.context {
        Some(name) => Some(name.clone()),
        None => configs.current_context().map(|(name, _)| name.to_owned()),
    };
    let context = match &context_name {
        None => None,
        Some(name) if !configs.files.is_empty() => {
            Some(configs.context(name).ok_or_else(|| {
                CliError::usage(format!(
                    "context {name:?} is not defined in {}; list the contexts with `rtctl config \
                 get-contexts`",
                    configs.describe()
                ))
            })?)
        }
        Some(name) => {
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

/// `rtctl config ...`: look at, switch, create and delete contexts.
#[derive(Debug, Clone, clap::Subcommand)]
pub(crate) enum ConfigCommand {
    /// Show the settings rtctl would connect with (password hidden), the config files read
    /// and which file each context comes from.
    #[command(
        after_help = "Examples:\n  rtctl config view\n  rtctl --context prod config \
                            view"
    )]
    View,
    /// List the contexts of the config files.
    #[command(after_help = "Examples:\n  rtctl config get-contexts")]
    GetContexts,
    /// Print the current context's name.
    #[command(after_help = "Examples:\n  rtctl config current-context")]
    CurrentContext,
    /// Make NAME the current context (rewrites the config file that sets currentContext).
    #[command(after_help = "Examples:\n  rtctl config use-context prod")]
    UseContext {
        /// The context's name.
        #[arg(add = crate::complete::context_names())]
        name: String,
    },
    /// Create the context NAME, or change the settings given of an existing one (the file and
    /// its directory are created when missing, the file private: mode 0600).
    #[command(after_help = "Examples:\n  rtctl config set-context prod --endpoints \
                            https://etcd-1:2379,https://etcd-2:2379 --prefix /games \
                            --current\n  rtctl config set-context prod --user ops \
                            --password-file ~/.secrets/etcd\n  rtctl config set-context \
                            local --timeout 5s\n\nThe key prefix is the --prefix flag: given here \
                            (not through RTM_PREFIX) it is stored in the context.")]
    SetContext(SetContextArgs),
    /// Delete the context NAME (and unset currentContext if it was current).
    #[command(after_help = "Examples:\n  rtctl config delete-context staging")]
    DeleteContext {
        /// The context's name.
        #[arg(add = crate::complete::context_names())]
        name: String,
    },
}

/// `rtctl config set-context` arguments: each given setting replaces the context's.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct SetContextArgs {
    /// The context's name.
    pub(crate) name: String,
    /// etcd endpoints, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "URL,...")]
    pub(crate) endpoints: Option<Vec<String>>,
    // The key prefix comes from the global --prefix, stored only when it is on the command
    // line (not from RTM_PREFIX): two flags cannot share the name.
    /// etcd user.
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// File holding the user's password: it is read and the password stored in the context
    /// (never give a password on the command line).
    #[arg(long, value_name = "FILE")]
    pub(crate) password_file: Option<PathBuf>,
    /// CA certificate (PEM) of etcd's server certificate.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_file: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub(crate) cert_file: Option<PathBuf>,
    /// Key (PEM) of the client certificate.
    #[arg(long, value_name = "FILE")]
    pub(crate) key_file: Option<PathBuf>,
    /// Bound on one etcd request, e.g. 5s.
    #[arg(long, value_name = "DURATION")]
    pub(crate) timeout: Option<String>,
    /// The Docker engine `rtctl logs` reads from, e.g. tcp://node-1:2375.
    #[arg(long, value_name = "URL")]
    pub(crate) docker_host: Option<String>,
    /// Also make it the current context.
    #[arg(long)]
    pub(crate) current: bool,
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
        ConfigCommand::SetContext(set) => {
            let prefix = explicit.prefix_flag.then(|| args.etcd.prefix.clone());
            set_context(args, set, prefix, out)
        }
        ConfigCommand::DeleteContext { name } => delete_context(args, name, out),
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

    // The merge: which files were read, and which file each context comes from.
    let configs = Configs::load(args.config.as_deref(), true)?;
    if configs.paths.is_empty() {
        return Ok(());
    }
    let mut files = Table::new(["CONFIG FILE", "READ"]);
    for path in &configs.paths {
        let read = configs.files.iter().any(|loaded| &loaded.path == path);
        files.row([
            path.display().to_string(),
            if read { "yes" } else { "no (missing)" }.to_owned(),
        ]);
    }
    writeln!(out)?;
    out.write_all(files.render().as_bytes())?;
    let current = configs.current_context();
    let mut contexts = Table::new(["CONTEXT", "FROM"]);
    for (context, loaded) in configs.contexts() {
        let star = if current.map(|(name, _)| name) == Some(context.name.as_str()) {
            " (current)"
        } else {
            ""
        };
        contexts.row([
            format!("{}{star}", context.name),
            loaded.path.display().to_string(),
        ]);
    }
    if let Some((name, loaded)) = current {
        contexts.row([
            format!("currentContext={name}"),
            loaded.path.display().to_string(),
        ]);
    }
    writeln!(out)?;
    out.write_all(contexts.render().as_bytes())?;
    Ok(())
}

/// The names of the config files' contexts (none without a file), for completion.
pub(crate) fn context_names(args: &ConnectionArgs) -> Result<Vec<String>, CliError> {
    let configs = Configs::load(args.config.as_deref(), true)?;
    Ok(configs
        .contexts()
        .into_iter()
        .map(|(context, _)| context.name.clone())
        .collect())
}

/// `rtctl config get-contexts`: the merged contexts of the config files, the current one
/// starred, each with the file it comes from.
fn get_contexts(args: &ConnectionArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let configs = Configs::load(args.config.as_deref(), false)?;
    if configs.files.is_empty() {
        return Err(no_config_file());
    }
    let current = args
        .context
        .clone()
        .or_else(|| configs.current_context().map(|(name, _)| name.to_owned()));
    let mut table = Table::new(["CURRENT", "NAME", "ENDPOINTS", "PREFIX", "FILE"]);
    for (context, loaded) in configs.contexts() {
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
            loaded.path.display().to_string(),
        ]);
    }
    out.write_all(table.render().as_bytes())?;
    Ok(())
}

/// `rtctl config current-context`: the current context's name.
fn current_context(args: &ConnectionArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let configs = Configs::load(args.config.as_deref(), false)?;
    if configs.files.is_empty() {
        return Err(no_config_file());
    }
    match configs.current_context() {
        Some((name, _)) => {
            writeln!(out, "{name}")?;
            Ok(())
        }
        None => Err(CliError::usage(format!(
            "{} has no currentContext; set one with `rtctl config use-context NAME`",
            configs.describe()
        ))),
    }
}

/// `rtctl config use-context NAME`: writes NAME as currentContext into the file that sets it
/// (else the first of the list).
fn use_context(args: &ConnectionArgs, name: &str, out: &mut dyn Write) -> Result<(), CliError> {
    let configs = Configs::load(args.config.as_deref(), false)?;
    if configs.files.is_empty() {
        return Err(no_config_file());
    }
    if configs.context(name).is_none() {
        return Err(CliError::usage(format!(
            "context {name:?} is not defined in {}; list the contexts with `rtctl \
             config get-contexts`",
            configs.describe()
        )));
    }
    set_current(&configs, Some(name))?;
    writeln!(out, "Switched to context {name:?}.")?;
    Ok(())
}

/// Writes `currentContext` (`None`: removes it) where the merge reads it from.
fn set_current(configs: &Configs, name: Option<&str>) -> Result<PathBuf, CliError> {
    let Some(mut home) = configs.home_of_current() else {
        return Err(no_config_file());
    };
    home.file.current_context = name.map(str::to_owned);
    save_config(&home)?;
    Ok(home.path)
}

/// `rtctl config set-context NAME …`: creates the context or changes the settings given, in
/// the file that defines it (else the first of the list, created when missing).
fn set_context(
    args: &ConnectionArgs,
    set: &SetContextArgs,
    prefix: Option<String>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if set.name.trim().is_empty() {
        return Err(CliError::usage("a context needs a name"));
    }
    let configs = Configs::load(args.config.as_deref(), true)?;
    let Some(mut home) = configs.home_of(&set.name) else {
        return Err(no_config_file());
    };
    let existed = home.context(&set.name).is_some();
    let mut context = home
        .context(&set.name)
        .cloned()
        .unwrap_or_else(|| NamedContext {
            name: set.name.clone(),
            ..NamedContext::default()
        });
    apply_settings(&mut context, set, prefix)?;
    match home.file.contexts.iter_mut().find(|c| c.name == set.name) {
        Some(slot) => *slot = context,
        None => home.file.contexts.push(context),
    }
    save_config(&home)?;
    let verb = if existed { "Changed" } else { "Created" };
    writeln!(
        out,
        "{verb} context {:?} in {}.",
        set.name,
        home.path.display()
    )?;
    if set.current {
        // Read again: the file just written may be the one that holds currentContext.
        let configs = Configs::load(args.config.as_deref(), true)?;
        set_current(&configs, Some(&set.name))?;
        writeln!(out, "Switched to context {:?}.", set.name)?;
    }
    Ok(())
}

/// Puts the settings `set` gives into `context`: paths made absolute (a relative one would
/// be read relative to the config file), the timeout checked, the password read from its file.
fn apply_settings(
    context: &mut NamedContext,
    set: &SetContextArgs,
    prefix: Option<String>,
) -> Result<(), CliError> {
    if let Some(endpoints) = &set.endpoints {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(CliError::usage(
                "--endpoints names no endpoint; write them like http://127.0.0.1:2379",
            ));
        }
        context.endpoints = Some(Endpoints::List(endpoints));
    }
    if let Some(prefix) = prefix {
        context.prefix = Some(prefix);
    }
    if let Some(user) = &set.user {
        context.user = Some(user.clone());
    }
    if let Some(file) = &set.password_file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            CliError::usage(format!(
                "cannot read the password file {}: {e}",
                file.display()
            ))
        })?;
        let password = text.trim_end_matches(['\n', '\r']);
        if password.is_empty() {
            return Err(CliError::usage(format!(
                "the password file {} is empty",
                file.display()
            )));
        }
        context.password = Some(password.to_owned());
    }
    for (given, slot) in [
        (&set.ca_file, &mut context.ca_file),
        (&set.cert_file, &mut context.cert_file),
        (&set.key_file, &mut context.key_file),
    ] {
        if let Some(path) = given {
            *slot = Some(absolute(path));
        }
    }
    if let Some(timeout) = &set.timeout {
        match humantime::parse_duration(timeout) {
            Ok(d) if !d.is_zero() => context.timeout = Some(timeout.clone()),
            _ => {
                return Err(CliError::usage(format!(
                    "--timeout {timeout:?} is not a duration above 0; write it like 5s"
                )));
            }
        }
    }
    if let Some(host) = &set.docker_host {
        context.docker_host = Some(host.clone());
    }
    Ok(())
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    std::env::current_dir()
        .map(|dir| dir.join(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// `rtctl config delete-context NAME`: removes it from the file whose definition wins.
fn delete_context(args: &ConnectionArgs, name: &str, out: &mut dyn Write) -> Result<(), CliError> {
    let configs = Configs::load(args.config.as_deref(), false)?;
    let Some((_, loaded)) = configs.context(name) else {
        return Err(CliError::Missing {
            message: format!(
                "context {name:?} is not defined in {}; list the contexts with `rtctl config \
                 get-contexts`",
                if configs.paths.is_empty() {
                    "any config file".to_owned()
                } else {
                    configs.describe()
                }
            ),
        });
    };
    let mut home = loaded.clone();
    home.file.contexts.retain(|c| c.name != name);
    save_config(&home)?;
    writeln!(
        out,
        "Deleted context {name:?} from {}.",
        home.path.display()
    )?;
    // Read again: the current context may live in the file just written.
    let configs = Configs::load(args.config.as_deref(), true)?;
    if configs.current_context().map(|(current, _)| current) == Some(name) {
        let path = set_current(&configs, None)?;
        super::output::warn(&format!(
            "{name:?} was the current context: {} now sets none; pick one with `rtctl config \
             use-context NAME`",
            path.display()
        ));
    }
    Ok(())
}

/// Writes a config file back: the text edited in place when only `currentContext` changed
/// (comments kept), else the whole file printed again (a warning says its comments are gone).
/// A new file and its directory are created private (0600, 0700); an existing file keeps its
/// mode. The file is replaced by a rename, so a failure never leaves half a file.
fn save_config(loaded: &LoadedConfig) -> Result<(), CliError> {
    let failed = |e: std::io::Error| {
        CliError::usage(format!(
            "cannot write the config file {}: {e}",
            loaded.path.display()
        ))
    };
    let text = match edit_current_context(&loaded.text, &loaded.file) {
        Some(text) => text,
        None => {
            if has_comments(&loaded.text) {
                super::output::warn(&format!(
                    "the comments of {} are not kept: rtctl rewrote the file",
                    loaded.path.display()
                ));
            }
            if loaded.file == ConfigFile::default() {
                String::new()
            } else {
                serde_yaml::to_string(&loaded.file)
                    .map_err(|e| CliError::internal(format!("cannot print the config file: {e}")))?
            }
        }
    };
    let path = &loaded.path;
    let existing = match std::fs::metadata(path) {
        Ok(metadata) if !metadata.is_file() => {
            return Err(CliError::usage(format!(
                "cannot write the config file {}: it is not a regular file; point --config / \
                 {ENV_CONFIG} at a file",
                path.display()
            )));
        }
        Ok(metadata) => Some(metadata),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(failed(e)),
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir).map_err(failed)?;
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    let temporary = dir.join(format!(".{file_name}.rtctl-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mode = existing
            .as_ref()
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o600);
        options.mode(mode);
    }
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        #[cfg(unix)]
        if let Some(metadata) = &existing {
            // `mode` at creation is masked by the umask; the old file's mode is kept exactly.
            file.set_permissions(metadata.permissions())?;
        }
        Ok(())
    });
    let renamed = written.and_then(|()| std::fs::rename(&temporary, path));
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(&temporary);
        return Err(failed(e));
    }
    Ok(())
}

/// `text` with its top-level `currentContext:` line set to what `wanted` says, when that is
/// the only difference (checked by parsing the result); `None` when it cannot be done so.
fn edit_current_context(text: &str, wanted: &ConfigFile) -> Option<String> {
    let before = parse_config(text).ok()?;
    let mut same_otherwise = before.clone();
    same_otherwise.current_context = wanted.current_context.clone();
    if &same_otherwise != wanted || text.trim().is_empty() {
        return None;
    }
    let new_line = wanted
        .current_context
        .as_ref()
        .map(|name| format!("currentContext: {}", quoted(name)));
    let mut lines: Vec<String> = Vec::new();
    let mut replaced = false;
    for line in text.lines() {
        if !replaced && line.starts_with("currentContext:") {
            replaced = true;
            if let Some(new_line) = &new_line {
                lines.push(new_line.clone());
            }
        } else {
            lines.push(line.to_owned());
        }
    }
    if !replaced {
        lines.insert(0, new_line?);
    }
    let mut edited = lines.join("\n");
    edited.push('\n');
    (parse_config(&edited).ok()? == *wanted).then_some(edited)
}

/// A YAML scalar for `name`: bare when it reads back as the same string.
fn quoted(name: &str) -> String {
    match serde_yaml::from_str::<String>(name) {
        Ok(back) if back == name && !name.contains(['#', ':']) => name.to_owned(),
        _ => serde_json::to_string(name).unwrap_or_else(|_| format!("{name:?}")),
    }
}

fn has_comments(text: &str) -> bool {
    text.lines()
        .any(|line| line.trim_start().starts_with('#') || line.contains(" #"))
}

fn no_config_file() -> CliError {
    CliError::usage(format!(
        "no config file found (looked at --config, {ENV_CONFIG} and {}); create one with \
         `rtctl config set-context NAME --endpoints URL`",
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

    /// Two config files in one temporary directory, and the list naming both (`a:b`).
    fn two_files(
        a: Option<&str>,
        b: Option<&str>,
    ) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path_a = dir.path().join("a.yaml");
        let path_b = dir.path().join("b.yaml");
        if let Some(text) = a {
            std::fs::write(&path_a, text).unwrap();
        }
        if let Some(text) = b {
            std::fs::write(&path_b, text).unwrap();
        }
        let list = PathBuf::from(std::env::join_paths([&path_a, &path_b]).unwrap());
        (dir, path_a, path_b, list)
    }

    fn read(path: &Path) -> ConfigFile {
        parse_config(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    const A: &str = "# team settings\ncontexts:\n  - name: shared\n    prefix: /from-a\n  - name: only-a\n    endpoints: [https://e:2379]\n    caFile: ca.pem\n";
    const B: &str = "currentContext: shared\ncontexts:\n  - name: shared\n    prefix: /from-b\n  - name: only-b\n    prefix: /b\n";

    #[test]
    fn a_list_merges_first_current_context_and_first_definition_of_each_name() {
        let (dir, path_a, path_b, list) = two_files(Some(A), Some(B));
        let configs = Configs::load(Some(&list), false).unwrap();
        let (current, from) = configs.current_context().unwrap();
        assert_eq!((current, from.path.as_path()), ("shared", path_b.as_path()));
        let names: Vec<(&str, &Path)> = configs
            .contexts()
            .into_iter()
            .map(|(c, l)| (c.name.as_str(), l.path.as_path()))
            .collect();
        assert_eq!(
            names,
            [
                ("shared", path_a.as_path()),
                ("only-a", path_a.as_path()),
                ("only-b", path_b.as_path())
            ]
        );
        // The current context is named by b, defined first by a: a's settings win.
        let resolved = resolve(&args(Some(list.clone()), None), &Explicit::default()).unwrap();
        assert_eq!(resolved.keys.prefix(), "/from-a");
        assert_eq!(resolved.config_path.as_deref(), Some(path_a.as_path()));
        // Relative paths are relative to the file that defines the context.
        let resolved = resolve(&args(Some(list), Some("only-a")), &Explicit::default());
        assert_eq!(
            resolved.unwrap().etcd.tls.unwrap().ca_file,
            dir.path().join("ca.pem")
        );
    }

    #[test]
    fn missing_files_of_a_list_are_skipped_but_a_lone_file_must_exist() {
        let (_dir, _a, path_b, list) = two_files(None, Some(B));
        let resolved = resolve(&args(Some(list.clone()), None), &Explicit::default()).unwrap();
        assert_eq!(resolved.keys.prefix(), "/from-b");
        let configs = Configs::load(Some(&list), false).unwrap();
        assert_eq!(configs.files.len(), 1);
        assert_eq!(configs.files[0].path, path_b);
        let (_dir, path_a, _b, _list) = two_files(None, None);
        assert!(Configs::load(Some(&path_a), false).is_err());
        assert!(Configs::load(Some(&path_a), true).unwrap().files.is_empty());
    }

    #[test]
    fn use_context_writes_where_current_context_is_set_keeping_comments() {
        let (_dir, path_a, path_b, list) = two_files(Some(A), Some(B));
        let mut out = Vec::new();
        use_context(&args(Some(list.clone()), None), "only-a", &mut out).unwrap();
        assert_eq!(read(&path_b).current_context.as_deref(), Some("only-a"));
        assert_eq!(
            std::fs::read_to_string(&path_a).unwrap(),
            A,
            "a is untouched"
        );
        // Without any currentContext, it goes to the first file, comments kept.
        let (_dir, path_a, path_b, list) = two_files(Some(A), Some("contexts: []\n"));
        use_context(&args(Some(list), None), "only-a", &mut out).unwrap();
        let text = std::fs::read_to_string(&path_a).unwrap();
        assert!(
            text.starts_with("currentContext: only-a\n# team settings\n"),
            "{text}"
        );
        assert_eq!(read(&path_b), ConfigFile::default());
        let error = use_context(&args(Some(path_a), None), "nope", &mut out).unwrap_err();
        assert!(matches!(error, CliError::Usage { .. }), "{error}");
    }

    #[test]
    fn set_context_changes_only_the_settings_given_in_the_defining_file() {
        let (dir, path_a, path_b, list) = two_files(Some(A), Some(B));
        let mut out = Vec::new();
        let set = SetContextArgs {
            name: "only-b".into(),
            endpoints: Some(vec!["http://e1:2379".into(), " http://e2:2379".into()]),
            timeout: Some("4s".into()),
            ..SetContextArgs::default()
        };
        set_context(&args(Some(list.clone()), None), &set, None, &mut out).unwrap();
        let b = read(&path_b);
        let only_b = b.contexts.iter().find(|c| c.name == "only-b").unwrap();
        assert_eq!(only_b.prefix.as_deref(), Some("/b"), "kept");
        assert_eq!(
            only_b.endpoints,
            Some(Endpoints::List(vec![
                "http://e1:2379".into(),
                "http://e2:2379".into()
            ]))
        );
        assert_eq!(only_b.timeout.as_deref(), Some("4s"));
        assert_eq!(b.current_context.as_deref(), Some("shared"), "kept");
        assert_eq!(std::fs::read_to_string(&path_a).unwrap(), A);

        // A new context goes to the first file; --current moves currentContext where it is set.
        let password = dir.path().join("pw");
        std::fs::write(&password, "s3cret\n").unwrap();
        let set = SetContextArgs {
            name: "new".into(),
            user: Some("ops".into()),
            password_file: Some(password),
            current: true,
            ..SetContextArgs::default()
        };
        set_context(&args(Some(list), None), &set, Some("/p".into()), &mut out).unwrap();
        let a = read(&path_a);
        let new = a.contexts.iter().find(|c| c.name == "new").unwrap();
        assert_eq!(new.user.as_deref(), Some("ops"));
        assert_eq!(new.password.as_deref(), Some("s3cret"));
        assert_eq!(new.prefix.as_deref(), Some("/p"));
        assert_eq!(read(&path_b).current_context.as_deref(), Some("new"));
        assert_eq!(a.current_context, None);
        let bad = SetContextArgs {
            name: "x".into(),
            timeout: Some("soon".into()),
            ..SetContextArgs::default()
        };
        assert!(set_context(&args(Some(path_a), None), &bad, None, &mut out).is_err());
    }

    #[test]
    fn set_context_creates_a_private_file_and_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/dir/config.yaml");
        let set = SetContextArgs {
            name: "local".into(),
            endpoints: Some(vec!["http://127.0.0.1:2379".into()]),
            ca_file: Some(PathBuf::from("rel/ca.pem")),
            ..SetContextArgs::default()
        };
        let mut out = Vec::new();
        set_context(&args(Some(path.clone()), None), &set, None, &mut out).unwrap();
        let file = read(&path);
        assert_eq!(file.contexts.len(), 1);
        assert!(file.contexts[0].ca_file.as_ref().unwrap().is_absolute());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("Created context \"local\"")
        );
    }

    #[test]
    fn delete_context_removes_the_winning_definition_and_unsets_current() {
        let (_dir, path_a, path_b, list) = two_files(Some(A), Some(B));
        let mut out = Vec::new();
        delete_context(&args(Some(list.clone()), None), "shared", &mut out).unwrap();
        let a = read(&path_a);
        assert!(a.contexts.iter().all(|c| c.name != "shared"));
        let b = read(&path_b);
        assert_eq!(b.contexts.len(), 2, "b's own definition stays");
        assert_eq!(b.current_context, None, "it was current");
        let error = delete_context(&args(Some(list), None), "nope", &mut out).unwrap_err();
        assert_eq!(error.exit_code(), super::super::error::exit::NOT_FOUND);
    }

    #[test]
    fn writes_refuse_what_is_not_a_regular_file() {
        let loaded = LoadedConfig::empty(Path::new("/dev/null"));
        assert!(save_config(&loaded).is_err());
    }
}
