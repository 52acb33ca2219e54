//! `rtctl stop` and `rtctl start`: set `spec.state` of one game or many (`-l`, `--all`); with
//! `--wait`, wait for the phase the controller reports for the written generation.

use std::io::Write;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::apply::WRITE_ATTEMPTS;
use super::client::{Client, check_name};
use super::error::{CliError, Outcome};
use super::request::{DEFAULT_ACTION_TIMEOUT, forced, modify, request_ref, tell_if_in_session};
use super::target::{Targets, each};
use super::wait::engine::{Deadline, Follow, Wait, wait_for};
use super::wait::{PhaseTracker, PhaseWaiter};
use rtm_core::model::{DesiredState, Phase};

/// The arguments of `rtctl stop` and `rtctl start`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StateArgs {
    #[command(flatten)]
    pub(crate) targets: Targets,
    /// The request id (correlation id) the controller records; generated when absent.
    #[arg(long = "ref", value_name = "SOURCE_REF")]
    pub(crate) source_ref: Option<String>,
    /// Wait until the controller reports the phase for this change.
    #[arg(long)]
    pub(crate) wait: bool,
    /// How long --wait waits (for all the games together).
    #[arg(long, default_value = DEFAULT_ACTION_TIMEOUT, value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
}

/// The arguments of `rtctl stop`: those of start, and `--force`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StopArgs {
    #[command(flatten)]
    pub(crate) state: StateArgs,
    /// Stop now even while the game is in session (ends its match) or its disruption budgets
    /// are used up.
    #[arg(long)]
    pub(crate) force: bool,
}

/// `rtctl stop` (`state` Stopped) and `rtctl start` (Running): writes the state of each game,
/// then with `--wait` waits for the phase. One game named: its failure is the command's;
/// several: one line each, the worst exit code.
pub(crate) async fn set_state(
    client: &Client,
    args: &StateArgs,
    force: bool,
    state: DesiredState,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> Result<Outcome, CliError> {
    let verb = match state {
        DesiredState::Running => "start",
        DesiredState::Stopped => "stop",
    };
    let source_ref = request_ref(&args.source_ref, verb)?;
    let names = args.targets.resolve(client, verb).await?;
    let one = One {
        args,
        force,
        state,
        verb,
        source_ref: &source_ref,
        deadline: Deadline::after(args.timeout),
    };
    if let [name] = names.as_slice()
        && args.targets.by_name()
    {
        return one.run(client, name, out, interrupt).await;
    }
    Ok(each(&names, async |name: &str| {
        one.run(client, name, &mut *out, interrupt).await
    })
    .await)
}

/// What one game's stop or start needs.
struct One<'a> {
    args: &'a StateArgs,
    force: bool,
    state: DesiredState,
    verb: &'static str,
    source_ref: &'a str,
    deadline: Deadline,
}

impl One<'_> {
    async fn run(
        &self,
        client: &Client,
        name: &str,
        out: &mut dyn Write,
        interrupt: &CancellationToken,
    ) -> Result<Outcome, CliError> {
        let Self {
            args,
            force,
            state,
            verb,
            source_ref,
            deadline,
        } = *self;
        check_name(name)?;
        let modified = modify(client, name, source_ref, WRITE_ATTEMPTS, force, |doc| {
            // A forced stop of a game already set to Stopped (its stop waiting on a session)
            // still writes, so the annotation names a generation of its own.
            if doc.spec.state == state && (!force || forced(doc)) {
                false
            } else {
                doc.spec.state = state;
                true
            }
        })
        .await?;
        if modified.changed {
            let forced = if force { ", forced" } else { "" };
            writeln!(
                out,
                "gameruntime/{name} {verb} requested (ref {source_ref}{forced})"
            )?;
        } else {
            writeln!(
                out,
                "gameruntime/{name} unchanged (spec.state is already {state})"
            )?;
        }
        out.flush()?;
        if state == DesiredState::Stopped && !force {
            tell_if_in_session(client, name, "the stop").await?;
        }
        if !args.wait {
            return Ok(Outcome::Success);
        }
        let target = match state {
            DesiredState::Running => Phase::Running,
            DesiredState::Stopped => Phase::Stopped,
        };
        let mut waiter = PhaseWaiter {
            name: name.to_owned(),
            target,
            min_generation: modified.doc.metadata.generation,
            fail_op: Some(verb),
            phase: PhaseTracker::default(),
        };
        wait_for(Wait {
            client,
            name,
            follow: Follow::default(),
            waiter: &mut waiter,
            deadline,
            what: format!("gameruntime/{name} to be {target}"),
            hint: format!(
                "spec.state stays {state}: follow it with `rtctl get {name} -w` or `rtctl \
                 describe {name}`"
            ),
            out,
            interrupt,
        })
        .await?;
        Ok(Outcome::Success)
    }
}
