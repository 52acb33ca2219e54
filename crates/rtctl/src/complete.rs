//! Shell completion: the script `rtctl completion bash|zsh|fish` prints registers rtctl as
//! its own completer (the shell calls `RTCTL_COMPLETE=<shell> rtctl -- WORDS…`), so what is
//! offered comes from the command's definitions and, for values, from etcd and the config
//! file: game, budget and node names, type words, context names and label keys.
//!
//! A completer reads with the connection the environment and the config file's current
//! context give (flags on the line being completed are not seen), under a short timeout;
//! whatever fails offers nothing rather than an error in the middle of a prompt.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::Write;
use std::time::Duration;

use clap::Parser;
use clap_complete::engine::{ArgValueCompleter, CompletionCandidate};
use clap_complete::env::{Bash, EnvCompleter, Fish, Zsh};

use super::Shell;
use super::client::Client;
use super::context::{self, ConnectionArgs, Explicit};
use super::error::CliError;
use super::resource::Kind;

/// The variable that turns an rtctl run into a completion request.
pub(crate) const ENV_COMPLETE: &str = "RTCTL_COMPLETE";

/// How long a completer waits for etcd: a prompt must not hang.
const COMPLETION_TIMEOUT: Duration = Duration::from_millis(1500);

/// Answers a completion request and exits, when this run is one.
pub(crate) fn answer_if_asked() {
    clap_complete::CompleteEnv::with_factory(super::command)
        .var(ENV_COMPLETE)
        .bin("rtctl")
        .complete();
}

/// Writes the script that registers the completer for `shell`.
pub(crate) fn write_script(shell: Shell, out: &mut dyn Write) -> Result<(), CliError> {
    // The binary the user ran, as the shell will find it again (`rtctl` on PATH, or a path).
    let completer = std::env::args_os()
        .next()
        .map(|arg| arg.to_string_lossy().into_owned())
        .filter(|arg| arg.contains('/'))
        .unwrap_or_else(|| "rtctl".to_owned());
    let adapter: &dyn EnvCompleter = match shell {
        Shell::Bash => &Bash,
        Shell::Zsh => &Zsh,
        Shell::Fish => &Fish,
    };
    adapter.write_registration(ENV_COMPLETE, "rtctl", "rtctl", &completer, out)?;
    Ok(())
}

/// The connection flags alone, as the environment sets them.
#[derive(Debug, Parser)]
struct FromEnv {
    #[command(flatten)]
    connection: ConnectionArgs,
}

/// Runs `read` against etcd as the environment and config file say; nothing when anything
/// fails.
fn with_client<T: Default>(read: impl AsyncFnOnce(&Client) -> Result<T, CliError>) -> T {
    let run = || -> Option<T> {
        let mut args = FromEnv::try_parse_from(["rtctl"]).ok()?.connection;
        args.etcd.request_timeout = COMPLETION_TIMEOUT;
        let explicit = Explicit::guess(&args.etcd);
        let resolved = context::resolve(&args, &explicit).ok()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async {
            let client = Client::connect(&resolved).await.ok()?;
            tokio::time::timeout(COMPLETION_TIMEOUT, read(&client))
                .await
                .ok()?
                .ok()
        })
    };
    run().unwrap_or_default()
}

/// The names stored under `prefix` (one level: a game's deeper keys are not names).
async fn names_under(client: &Client, prefix: String) -> Result<Vec<String>, CliError> {
    let listing = client
        .store()
        .list(&prefix, None)
        .await
        .map_err(|e| client.store_error(e, "listing for completion"))?;
    Ok(listing
        .items
        .iter()
        .filter_map(|kv| kv.key.strip_prefix(&prefix))
        .filter(|rest| !rest.is_empty() && !rest.contains('/'))
        .map(str::to_owned)
        .collect())
}

fn prefix_of(kind: Kind, client: &Client) -> String {
    let keys = client.keys();
    match kind {
        Kind::Game => keys.gameruntimes(),
        Kind::Budget => keys.budgets(),
        Kind::Node => keys.nodes(),
    }
}

fn candidates(words: impl IntoIterator<Item = String>, current: &str) -> Vec<CompletionCandidate> {
    words
        .into_iter()
        .filter(|w| w.starts_with(current))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(CompletionCandidate::new)
        .collect()
}

fn text(current: &OsStr) -> String {
    current.to_string_lossy().into_owned()
}

/// Game names.
fn games(current: &OsStr) -> Vec<CompletionCandidate> {
    let current = text(current);
    let names =
        with_client(async |client| names_under(client, prefix_of(Kind::Game, client)).await);
    candidates(names, &current)
}

/// Node names.
fn nodes(current: &OsStr) -> Vec<CompletionCandidate> {
    let current = text(current);
    let names =
        with_client(async |client| names_under(client, prefix_of(Kind::Node, client)).await);
    candidates(names, &current)
}

/// What `get`, `describe` and `delete` take: type words, game names, and after `TYPE/` the
/// names of that type.
fn objects(current: &OsStr) -> Vec<CompletionCandidate> {
    let current = text(current);
    if let Some((ty, _)) = current.split_once('/') {
        let Some(kind) = Kind::from_word(ty) else {
            return Vec::new();
        };
        let names = with_client(async |client| names_under(client, prefix_of(kind, client)).await);
        return candidates(names.into_iter().map(|n| format!("{ty}/{n}")), &current);
    }
    let mut words: Vec<String> = Kind::ALL
        .iter()
        .flat_map(|k| k.words().iter().map(|w| (*w).to_owned()))
        .collect();
    words.extend(with_client(async |client| {
        names_under(client, prefix_of(Kind::Game, client)).await
    }));
    candidates(words, &current)
}

/// `-l`: the label keys of the games, each as `key=`, and after `key=` its values.
fn selectors(current: &OsStr) -> Vec<CompletionCandidate> {
    let current = text(current);
    // Only the requirement being typed is completed; what comes before it is kept.
    let (done, typing) = match current.rfind(',') {
        Some(at) => current.split_at(at + 1),
        None => ("", current.as_str()),
    };
    let labels = with_client(async |client| {
        let list = client
            .documents()
            .list()
            .await
            .map_err(|e| client.doc_error(e, "listing for completion"))?;
        Ok(list
            .items
            .into_iter()
            .flat_map(|doc| doc.metadata.labels.into_iter())
            .collect::<BTreeSet<(String, String)>>())
    });
    let words = match typing.split_once('=') {
        Some((key, _)) => labels
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(k, v)| format!("{done}{k}={v}"))
            .collect::<Vec<_>>(),
        None => labels.iter().map(|(k, _)| format!("{done}{k}=")).collect(),
    };
    candidates(words, &current)
}

/// Context names of the config file.
fn contexts(current: &OsStr) -> Vec<CompletionCandidate> {
    let current = text(current);
    let names = FromEnv::try_parse_from(["rtctl"])
        .ok()
        .and_then(|args| context::context_names(&args.connection).ok())
        .unwrap_or_default();
    candidates(names, &current)
}

/// Completes game names.
pub(crate) fn game_names() -> ArgValueCompleter {
    ArgValueCompleter::new(games)
}

/// Completes node names.
pub(crate) fn node_names() -> ArgValueCompleter {
    ArgValueCompleter::new(nodes)
}

/// Completes type words and names of every kind.
pub(crate) fn object_names() -> ArgValueCompleter {
    ArgValueCompleter::new(objects)
}

/// Completes label selectors.
pub(crate) fn label_selectors() -> ArgValueCompleter {
    ArgValueCompleter::new(selectors)
}

/// Completes context names.
pub(crate) fn context_names() -> ArgValueCompleter {
    ArgValueCompleter::new(contexts)
}
