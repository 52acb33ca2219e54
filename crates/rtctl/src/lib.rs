//! `rtctl`, the kubectl-like tool: the command line, and the dispatch to one module per
//! command group.
//!
//! The modules (all private but [`error`], whose exit-code table the README quotes):
//!
//! - `apply` — `apply`, `diff`
//! - `mutate` — what `edit`, `label`, `annotate` and `patch` share with apply: the changed
//!   document checked as a file, planned, stamped and written with a revision compare
//! - `edit` — `edit`: a game in `$KUBE_EDITOR`/`$EDITOR`, written back as apply writes
//! - `label` — `label`, `annotate`
//! - `patch` — `patch`: JSON merge patch (RFC 7386) and JSON patch (RFC 6902)
//! - `get` — `get`: the list mode; `get::watch` the `-w` mode; both share `get::games` (the
//!   games of a listing, invalid ones included, and which a command line picks),
//!   `get::selector` (`-l`), `get::row` (table rows) and `get::printer` (the `-o` formats)
//! - `resource` — the resource types and how a command line names objects: type words,
//!   `TYPE NAME…`, `TYPE/NAME`, bare game names
//! - `shape` — output shaping for every kind: the `-o` value (`jsonpath=`, `custom-columns=`),
//!   `--sort-by`, `--field-selector`, `-L`/`--show-labels`; `shape::jsonpath` the templates
//! - `describe` — `describe` (games by name, `-l`, `--all`; budgets and nodes by their type)
//! - `budget` — GameDisruptionBudgets: their part of `apply`/`diff`, `get budgets`, `describe
//!   budget`, `delete budget`
//! - `session` — `allocate`, `release`
//! - `node` — nodes: `get nodes` (and its `-w`), `describe node NAME`, `cordon`, `uncordon`,
//!   `drain`
//! - `rollout` — `rollout status`, `rollout undo`
//! - `target` — which games a verb acts on (names, `-l`, `--all`) and the one-line-per-game
//!   report of the bulk verbs
//! - `history` — `history`
//! - `events` — `events`: the controllers' short-lived observations, folded and expiring
//! - `logs` — `logs`: the live log from the game's Docker engine, or (`--previous`) the
//!   output the controller kept of its replaced container
//! - `prepull` — `prepull`: asks the controllers to pull images onto their nodes, and reports
//!   their answers
//! - `restart` — `restart` (and the waiter that follows a restart request to its outcome)
//! - `state` — `stop`, `start`
//! - `delete` — `delete`
//! - `request` — what those write verbs share: the request ref and the read-modify-write that
//!   stamps it
//! - `wait` — `wait`, and what it and the verbs' `--wait` wait for (phase, condition, a
//!   JSONPath, created, gone);
//!   `wait::engine` follows a game's keys for a waiter, within a deadline, until Ctrl-C
//! - `context` — connection settings from flags, `RTM_*` env and config files with named
//!   contexts (`RTMCONFIG=a:b` merged); `config` subcommands
//! - `complete` — shell completion: the registration script and the completers of names,
//!   type words, label keys and contexts
//! - `client` — the etcd client of one command: typed reads and writes, error mapping;
//!   `client::watch` the watch that rides out etcd outages
//! - `input` — reading `-f FILE|DIR|-`
//! - `explain` — `explain`: the documentation of a resource's fields, from the CRD schemas
//! - `version` — `version`: rtctl's version and the live controllers' (from their heartbeats)
//! - `plugin` — `rtctl-*` programs on PATH run as `rtctl *`; `plugin list`
//! - `man` — the man pages, generated from the command line's definitions (`__man DIR`)
//! - `output` — tables, ages, warnings
//! - [`error`] — `CliError` and the exit codes
//!
//! Every failure is one line on stderr, `error: <what, which object, why, what to do>`, with
//! the exit code of its class (see [`error`]); nothing reaches a user as a panic or a debug
//! dump.

#![warn(missing_docs, unreachable_pub)]

mod apply;
mod budget;
mod client;
mod complete;
mod context;
mod delete;
mod describe;
mod edit;
pub mod error;
mod events;
mod explain;
mod get;
mod history;
mod input;
mod label;
mod logs;
mod man;
mod mutate;
mod node;
mod output;
mod patch;
mod plugin;
mod prepull;
mod request;
mod resource;
mod restart;
mod rollout;
mod session;
mod shape;
mod state;
mod target;
mod version;
mod wait;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use self::client::Client;
use self::context::{ConfigCommand, ConnectionArgs, DEFAULT_REQUEST_TIMEOUT, Explicit};
use self::error::{CliError, EXIT_CODES_HELP, Outcome, exit, one_line};
use self::resource::Kind;
use rtm_core::model::DesiredState;

/// rtctl: manage GameRuntimes — the desired state of game containers, kept in etcd and
/// reconciled by rtmanager.
#[derive(Debug, Parser)]
#[command(name = "rtctl", version, about, long_about = None, after_help = EXIT_CODES_HELP)]
pub(crate) struct Cli {
    #[command(flatten, next_help_heading = "Connection")]
    pub(crate) connection: ConnectionArgs,

    #[command(subcommand)]
    pub(crate) command: Command,

    /// Which connection settings were given as flags or env (filled in by [`parse_from`]);
    /// `None` when the `Cli` was built some other way.
    #[arg(skip)]
    pub(crate) explicit: Option<Explicit>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create or update games from files: validates every document first, writes none if any
    /// is invalid.
    #[command(
        after_help = "Examples:\n  rtctl apply -f arena.yaml\n  rtctl apply -f games/ \
                            --dry-run\n  cat fleet.yaml | rtctl apply -f -"
    )]
    Apply(apply::ApplyArgs),
    /// Show how files differ from the live games (exit 0: none, 1: differences, >1: error).
    #[command(
        after_help = "Examples:\n  rtctl diff -f arena.yaml\n  rtctl diff -f games/ -R \
                            && echo 'nothing to apply'"
    )]
    Diff(apply::DiffArgs),
    /// List games (or disruption budgets: `get budgets`; nodes: `get nodes`), or follow
    /// their changes with -w.
    #[command(
        after_help = "Examples:\n  rtctl get\n  rtctl get arena-1 -o yaml\n  rtctl get \
                            -l tier=ranked -o wide\n  rtctl get -w\n  rtctl get budgets\n  \
                            rtctl get nodes -o wide"
    )]
    Get(get::GetArgs),
    /// Show games in detail: spec, status, session, health check, conditions, recent
    /// history; or disruption budgets (`describe budget NAME`), or nodes (`describe node
    /// NAME`).
    #[command(
        after_help = "Examples:\n  rtctl describe arena-1\n  rtctl describe arena-1 \
                            arena-2\n  rtctl describe -l tier=ranked\n  rtctl describe \
                            gameruntime/arena-1\n  rtctl describe budget casual\n  rtctl \
                            describe node/node-a"
    )]
    Describe(describe::DescribeArgs),
    /// Allocate a game to a session (a match): voluntary disruptions then wait for its end.
    #[command(after_help = "Examples:\n  rtctl allocate arena-1 --ref match-42")]
    Allocate(session::AllocateArgs),
    /// End a game's session; an idle game stays idle.
    #[command(
        after_help = "Examples:\n  rtctl release arena-1\n  rtctl release arena-1 \
                            --if-ref match-42"
    )]
    Release(session::ReleaseArgs),
    /// Follow or undo a rollout over many games.
    #[command(
        after_help = "Examples:\n  rtctl rollout status -l tier=ranked -w\n  rtctl \
                            rollout undo arena-1"
    )]
    Rollout {
        #[command(subcommand)]
        command: rollout::RolloutCommand,
    },
    /// Show a game's operation log, newest first.
    #[command(
        after_help = "Examples:\n  rtctl history arena-1\n  rtctl history arena-1 \
                            --limit 50 -o json"
    )]
    History(history::HistoryArgs),
    /// Show what the controllers observed lately (back-offs, failing health checks, deferred
    /// updates, leases held long), each with how many times; -w follows them.
    #[command(
        after_help = "Examples:\n  rtctl events\n  rtctl events arena-1\n  rtctl events -w \
                            -o json"
    )]
    Events(events::EventsArgs),
    /// Print what a game's engine prints: live from its Docker engine, or with --previous
    /// what its last replaced container printed before it exited or failed its health check.
    #[command(
        after_help = "Examples:\n  rtctl logs arena-1 --tail 50\n  rtctl logs arena-1 -f \
                            --since 10m\n  rtctl logs arena-1 --previous\n  rtctl logs arena-1 \
                            --docker-host tcp://node-7:2375 --timestamps"
    )]
    Logs(logs::LogsArgs),
    /// Warm nodes before a rollout: the controllers of the games' nodes pull the image (or
    /// each game's own), touching no container; prints what each node answered.
    #[command(after_help = "Examples:\n  rtctl prepull -l tier=ranked --image \
                            registry.example/galaxy/engine:1.5.0\n  rtctl prepull arena-1 \
                            arena-2 --timeout 2m\n  rtctl prepull --all\n\nExit: 0 every node \
                            pulled, 8 a pull failed, 9 a node did not answer in time, 130 \
                            interrupted.")]
    Prepull(prepull::PrepullArgs),
    /// Keep new games off a node (those it runs stay): writes cordons/NODE.
    #[command(after_help = "Examples:\n  rtctl cordon node-a --ref MAINT-7")]
    Cordon(node::CordonArgs),
    /// Let a node take games again (a drain under way stops): deletes cordons/NODE.
    #[command(after_help = "Examples:\n  rtctl uncordon node-a")]
    Uncordon(node::CordonArgs),
    /// Move every game off a node: cordons it for draining, then waits until no game is
    /// assigned there (games in session finish their match first, until --deadline).
    #[command(after_help = "Examples:\n  rtctl drain node-a\n  rtctl drain node-a \
                            --deadline 2h --timeout 3h\n  rtctl drain node-a --no-wait\n\n\
                            Exit: 0 drained (or asked, with --no-wait), 4 no such node, 9 \
                            --timeout passed, 130 interrupted.")]
    Drain(node::DrainArgs),
    /// Ask for a restart (a recreate): writes a new spec.restartToken.
    #[command(
        after_help = "Examples:\n  rtctl restart arena-1\n  rtctl restart arena-1 --ref \
                            REQ-42 --wait --timeout 5m"
    )]
    Restart(restart::RestartArgs),
    /// Ask for the game's container to stop: sets spec.state to Stopped.
    #[command(
        after_help = "Examples:\n  rtctl stop arena-1\n  rtctl stop -l tier=casual\n  \
                            rtctl stop arena-1 --force"
    )]
    Stop(state::StopArgs),
    /// Ask for the game's container to run: sets spec.state to Running.
    #[command(
        after_help = "Examples:\n  rtctl start arena-1\n  rtctl start -l tier=casual \
                            --wait\n  rtctl start --all"
    )]
    Start(state::StateArgs),
    /// Delete games (or a disruption budget: `delete budget NAME`); the controller then
    /// removes their containers.
    #[command(after_help = "Examples:\n  rtctl delete arena-1\n  rtctl delete -l \
                            tier=casual\n  rtctl delete budget casual")]
    Delete(delete::DeleteArgs),
    /// Wait until games reach a phase, a condition, or are gone.
    #[command(
        after_help = "Examples:\n  rtctl wait arena-1 --for=phase=Running\n  rtctl wait \
                            arena-1 --for=condition=Ready --timeout 2m\n  rtctl wait arena-1 \
                            --for=delete"
    )]
    Wait(wait::WaitArgs),
    /// Edit a game in $KUBE_EDITOR or $EDITOR (else vi) and write it back as apply would,
    /// unless the game changed meanwhile.
    #[command(
        after_help = "Examples:\n  rtctl edit arena-1\n  rtctl edit gameruntime/arena-1 -o \
                            json\n  KUBE_EDITOR=\"code --wait\" rtctl edit arena-1 --ref REQ-42\n\n\
                            Exit: 0 written or cancelled, 3 still invalid or renamed (the file is \
                            kept), 4 no such game, 5 changed meanwhile (the file is kept)."
    )]
    Edit(edit::EditArgs),
    /// Set (KEY=VALUE) or remove (KEY-) labels of games.
    #[command(
        after_help = "Examples:\n  rtctl label arena-1 tier=ranked\n  rtctl label \
                            arena-1 tier=casual --overwrite\n  rtctl label -l tier=casual \
                            canary-\n  rtctl label gr arena-1 arena-2 team=blue --dry-run"
    )]
    Label(label::MetaArgs),
    /// Set (KEY=VALUE) or remove (KEY-) annotations of games.
    #[command(
        after_help = "Examples:\n  rtctl annotate arena-1 owner=team-blue\n  rtctl \
                            annotate --all note- \n  rtctl annotate arena-1 owner=ops \
                            --overwrite --resource-version 42"
    )]
    Annotate(label::MetaArgs),
    /// Change a game by a JSON merge patch (RFC 7386) or a JSON patch (RFC 6902), checked
    /// as apply checks a file.
    #[command(
        after_help = "Examples:\n  rtctl patch arena-1 -p '{\"spec\":{\"state\":\"Stopped\"}}'\n  \
                            rtctl patch arena-1 --type json -p '[{\"op\":\"replace\",\"path\":\
                            \"/spec/image\",\"value\":\"registry.example/engine:2\"}]'\n  rtctl \
                            patch gr arena-1 --patch-file change.yaml --dry-run -o yaml"
    )]
    Patch(patch::PatchArgs),
    /// Print the CustomResourceDefinitions of GameRuntime and GameDisruptionBudget (generated
    /// from the types).
    #[command(
        after_help = "Examples:\n  rtctl crd > crds.yaml\n  rtctl crd | kubectl apply \
                            --dry-run=client -f -"
    )]
    Crd,
    /// Print a shell completion script: it asks rtctl itself what to offer (game, budget,
    /// node and context names, label keys, flags), so load it when the shell starts.
    #[command(
        after_help = "Examples:\n  echo 'source <(rtctl completion bash)' >> ~/.bashrc\n  \
                            echo 'source <(rtctl completion zsh)' >> ~/.zshrc\n  echo 'rtctl \
                            completion fish | source' >> ~/.config/fish/config.fish"
    )]
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Look at, switch, create and delete the contexts of the config files.
    #[command(
        after_help = "Examples:\n  rtctl config view\n  rtctl config get-contexts\n  \
                            rtctl config use-context prod\n  RTMCONFIG=~/a.yaml:~/b.yaml rtctl \
                            config view"
    )]
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Explain a resource's fields (from the schema generated from the types).
    #[command(
        after_help = "Examples:\n  rtctl explain gameruntime\n  rtctl explain \
                            gr.spec.ports\n  rtctl explain gameruntime.spec --recursive\n  \
                            rtctl explain budget.spec.maxUnavailable"
    )]
    Explain(explain::ExplainArgs),
    /// Print rtctl's version and that of every live controller (warning about skew).
    #[command(
        after_help = "Examples:\n  rtctl version\n  rtctl version --client\n  rtctl \
                            version -o json"
    )]
    Version(version::VersionArgs),
    /// Work with plugins: programs named rtctl-NAME on PATH, run as `rtctl NAME`.
    #[command(
        after_help = "Examples:\n  rtctl plugin list\n  rtctl hello a b    # runs \
                            rtctl-hello a b"
    )]
    Plugin {
        #[command(subcommand)]
        command: plugin::PluginCommand,
    },
    /// Write the man pages (one per command) into a directory.
    #[command(
        name = "__man",
        hide = true,
        after_help = "Examples:\n  rtctl __man \
                            /usr/local/share/man/man1"
    )]
    Man(man::ManArgs),
}

/// Shells `completion` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Command {
    /// The game names given on the command line.
    fn names(&self) -> Vec<&str> {
        match self {
            // Checked for their kind by `resource::Names::parse`.
            Command::Get(_) => Vec::new(),
            // Checked for their kind by `resource::Names::parse`.
            Command::Describe(_) => Vec::new(),
            Command::History(args) => vec![&args.name],
            Command::Logs(args) => vec![&args.name],
            Command::Events(args) => args.name.iter().map(String::as_str).collect(),
            Command::Allocate(args) => vec![&args.name],
            Command::Release(args) => vec![&args.name],
            Command::Restart(args) => args.targets.names().iter().map(String::as_str).collect(),
            Command::Stop(args) => args
                .state
                .targets
                .names()
                .iter()
                .map(String::as_str)
                .collect(),
            Command::Start(args) => args.targets.names().iter().map(String::as_str).collect(),
            Command::Prepull(args) => args.targets.names().iter().map(String::as_str).collect(),
            Command::Rollout { command } => command.names(),
            // Checked for their kind by `resource::Names::parse`.
            Command::Delete(_) => Vec::new(),
            Command::Wait(args) => args.targets.names().iter().map(String::as_str).collect(),
            // These parse TYPE/NAME forms themselves (crate::resource).
            Command::Edit(_) | Command::Label(_) | Command::Annotate(_) | Command::Patch(_) => {
                Vec::new()
            }
            Command::Apply(_)
            | Command::Cordon(_)
            | Command::Uncordon(_)
            | Command::Drain(_)
            | Command::Diff(_)
            | Command::Crd
            | Command::Completion { .. }
            | Command::Config { .. }
            | Command::Explain(_)
            | Command::Version(_)
            | Command::Plugin { .. }
            | Command::Man(_) => Vec::new(),
        }
    }

    /// Commands that wait or watch listen for Ctrl-C to stop cleanly; the others keep the
    /// default (the process ends at once).
    fn listens_for_interrupts(&self) -> bool {
        match self {
            Command::Get(args) => args.watch || args.watch_only,
            Command::Restart(args) => args.wait,
            Command::Stop(args) => args.state.wait,
            Command::Start(args) => args.wait,
            Command::Rollout { command } => command.waits(),
            Command::Delete(args) => args.wait,
            Command::Wait(_) | Command::Prepull(_) => true,
            Command::Drain(args) => args.waits(),
            Command::Logs(args) => args.follow,
            Command::Events(args) => args.watch,
            _ => false,
        }
    }
}

/// The clap command: the connection flags work before or after the subcommand (as kubectl's
/// do) and the request timeout defaults to rtctl's short one.
pub(crate) fn command() -> clap::Command {
    Cli::command()
        .mut_args(|arg| arg.global(true))
        .mut_arg("request_timeout", |arg| {
            arg.default_value(DEFAULT_REQUEST_TIMEOUT)
        })
}

/// Parses a command line (the first item is the program name).
pub(crate) fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command().try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    // Global flags given after the subcommand are recorded at the deepest level.
    let mut leaf = &matches;
    while let Some((_, sub)) = leaf.subcommand() {
        leaf = sub;
    }
    cli.connection = ConnectionArgs::from_arg_matches(leaf)?;
    cli.explicit = Some(Explicit::from_matches(leaf));
    Ok(cli)
}

/// The whole of `rtctl`: parse the process's arguments and run.
pub fn main() -> ExitCode {
    complete::answer_if_asked();
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Some(code) = plugin::dispatch(&args) {
        return code;
    }
    match parse_from(args) {
        Ok(cli) => run(cli),
        Err(error) => {
            // clap's own layout (usage and a hint); help and version go to stdout with 0.
            let _ = error.print();
            if error.use_stderr() {
                ExitCode::from(exit::USAGE)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

/// Runs one rtctl invocation and turns its result into an exit code, printing a failure as
/// one line on stderr.
pub(crate) fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return report(&CliError::internal(format!(
                "cannot start the runtime: {e}"
            )));
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = runtime.block_on(execute(cli, &mut out));
    let flushed = out.flush();
    match (result, flushed) {
        (Err(error), _) if error.is_broken_pipe() => ExitCode::SUCCESS,
        (Err(error), _) => report(&error),
        (Ok(_), Err(e)) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            report(&CliError::Output(e))
        }
        (Ok(outcome), _) => outcome.exit_code(),
    }
}

fn report(error: &CliError) -> ExitCode {
    let _ = writeln!(
        std::io::stderr().lock(),
        "error: {}",
        one_line(&error.to_string())
    );
    ExitCode::from(error.exit_code())
}

async fn execute(cli: Cli, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let explicit = cli
        .explicit
        .unwrap_or_else(|| Explicit::guess(&cli.connection.etcd));
    match &cli.command {
        Command::Crd => {
            out.write_all(rtm_core::model::crd_yaml().as_bytes())?;
            out.write_all(b"---\n")?;
            out.write_all(rtm_core::model::crd::budget_crd_yaml().as_bytes())?;
            return Ok(Outcome::Success);
        }
        Command::Completion { shell } => {
            complete::write_script(*shell, out)?;
            return Ok(Outcome::Success);
        }
        Command::Config { command } => {
            context::config_command(command, &cli.connection, &explicit, out)?;
            return Ok(Outcome::Success);
        }
        Command::Explain(args) => return explain::explain(args, out),
        Command::Version(args) => {
            return version::version(args, &cli.connection, &explicit, out).await;
        }
        Command::Plugin { command } => return plugin::plugin_command(command, out),
        Command::Man(args) => return man::man(args, out),
        _ => {}
    }

    // Names first: a bad one is the user's mistake whatever the state of etcd.
    for name in cli.command.names() {
        client::check_name(name)?;
    }
    let resolved = context::resolve(&cli.connection, &explicit)?;
    let client = Client::connect(&resolved).await?;
    let interrupt = CancellationToken::new();
    if cli.command.listens_for_interrupts() {
        listen_for_interrupts(interrupt.clone());
    }
    match &cli.command {
        Command::Apply(args) => apply::apply(&client, args, out).await,
        Command::Diff(args) => apply::diff(&client, args, out).await,
        Command::Get(args) => {
            let (kind, names) = resource::Names::parse(&args.names)?.of_one_kind("get")?;
            match kind {
                Kind::Game => get::get(&client, args, &names, out, interrupt.cancelled()).await,
                Kind::Budget => {
                    if args.watch || args.watch_only {
                        return Err(CliError::usage(
                            "rtctl get budgets takes no -w: a budget's figures follow the \
                             games; watch them with `rtctl get -w`",
                        ));
                    }
                    budget::get(&client, &names, args, out).await
                }
                Kind::Node if args.watch || args.watch_only => {
                    let (Some(format), [] | [_]) = (args.output.builtin(), names.as_slice()) else {
                        return Err(CliError::usage(
                            "rtctl get nodes -w follows one node or all, in table, wide, yaml, \
                             json or name format",
                        ));
                    };
                    let asked = node::WatchNodes {
                        name: names.first().map(String::as_str),
                        selector: args.selector.as_deref(),
                        format,
                        no_headers: args.no_headers,
                        changes_only: args.watch_only,
                        events: args.output_watch_events,
                    };
                    node::watch(&client, asked, out, &interrupt).await
                }
                Kind::Node => node::get(&client, &names, args, out).await,
            }
        }
        Command::Describe(args) => describe::command(&client, args, out).await,
        Command::Allocate(args) => session::allocate(&client, args, out).await,
        Command::Release(args) => session::release(&client, args, out).await,
        Command::Cordon(args) => node::cordon(&client, args, out).await,
        Command::Uncordon(args) => node::uncordon(&client, args, out).await,
        Command::Drain(args) => node::drain(&client, args, out, &interrupt).await,
        Command::Rollout { command } => rollout::rollout(&client, command, out, &interrupt).await,
        Command::History(args) => history::history(&client, args, out).await,
        Command::Events(args) => events::events(&client, args, out, &interrupt).await,
        Command::Logs(args) => {
            logs::logs(
                &client,
                args,
                resolved.docker_host.as_deref(),
                out,
                &interrupt,
            )
            .await
        }
        Command::Restart(args) => restart::restart(&client, args, out, &interrupt).await,
        Command::Prepull(args) => prepull::prepull(&client, args, out, &interrupt).await,
        Command::Stop(args) => {
            state::set_state(
                &client,
                &args.state,
                args.force,
                DesiredState::Stopped,
                out,
                &interrupt,
            )
            .await
        }
        Command::Start(args) => {
            state::set_state(&client, args, false, DesiredState::Running, out, &interrupt).await
        }
        Command::Delete(args) => delete::delete(&client, args, out, &interrupt).await,
        Command::Wait(args) => wait::wait(&client, args, out, &interrupt).await,
        Command::Edit(args) => edit::edit(&client, args, out).await,
        Command::Label(args) => label::label(&client, args, label::Field::Labels, out).await,
        Command::Annotate(args) => {
            label::label(&client, args, label::Field::Annotations, out).await
        }
        Command::Patch(args) => patch::patch(&client, args, out).await,
        Command::Crd
        | Command::Completion { .. }
        | Command::Config { .. }
        | Command::Explain(_)
        | Command::Version(_)
        | Command::Plugin { .. }
        | Command::Man(_) => Ok(Outcome::Success),
    }
}

/// Cancels `token` on Ctrl-C or SIGTERM.
fn listen_for_interrupts(token: CancellationToken) {
    tokio::spawn(async move {
        let terminate = async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            }
            #[cfg(not(unix))]
            std::future::pending::<()>().await;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
        }
        token.cancel();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        parse_from(std::iter::once("rtctl").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn the_command_line_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn every_command_has_examples_in_its_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in command.get_subcommands() {
                if sub.is_hide_set() || sub.get_name() == "help" {
                    continue;
                }
                let path = format!("{path} {}", sub.get_name());
                let help = sub
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                if !help.contains("Examples:\n  rtctl") && !help.contains("Examples:\n  echo") {
                    missing.push(path.clone());
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&command(), "rtctl", &mut missing);
        assert!(missing.is_empty(), "no examples in --help: {missing:?}");
    }

    #[test]
    fn connection_flags_work_before_and_after_the_subcommand() {
        let before = parse(&["--prefix", "/a", "get"]);
        assert_eq!(before.connection.etcd.prefix, "/a");
        let after = parse(&["get", "g1", "--prefix", "/b", "--context", "dev"]);
        assert_eq!(after.connection.etcd.prefix, "/b");
        assert_eq!(after.connection.context.as_deref(), Some("dev"));
        let explicit = after.explicit.unwrap();
        assert!(explicit.prefix);
        assert!(!explicit.request_timeout);
    }

    #[test]
    fn the_request_timeout_defaults_to_three_seconds() {
        let cli = parse(&["get"]);
        assert_eq!(
            cli.connection.etcd.request_timeout,
            std::time::Duration::from_secs(3)
        );
    }

    #[test]
    fn help_ends_with_the_exit_codes() {
        let help = command().render_help().to_string();
        assert!(help.contains("Exit codes:\n"), "{help}");
        assert!(help.contains("130  interrupted"), "{help}");
    }

    #[test]
    fn completion_scripts_call_rtctl_back() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut script = Vec::new();
            complete::write_script(shell, &mut script).unwrap();
            let script = String::from_utf8(script).unwrap();
            assert!(
                script.contains(complete::ENV_COMPLETE) && script.contains("rtctl"),
                "{shell:?}: {script}"
            );
        }
    }
}
