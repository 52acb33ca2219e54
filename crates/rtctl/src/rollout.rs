//! `rtctl rollout status` and `rtctl rollout undo` over names, `-l SELECTOR` or `--all`.
//!
//! Status counts, of the chosen games: updated (the controller observed the current
//! generation), ready (Ready True), waiting on a session (UpdatePending True, reason
//! InSession), waiting on a budget (UpdatePending True, reason DisruptionBudget) and failing
//! (phase Failed or CrashLoopBackOff, or Ready False with reason HealthCheckFailing); then one
//! line per game not done, with why. Done: every game updated and Ready.
//!
//! Undo writes back, for each game, the newest kept revision below its current generation
//! whose spec differs from the current one in more than `restartToken` and `state` (those two
//! are kept as they are now: an undo neither repeats a restart nor starts or stops a game).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::apply::WRITE_ATTEMPTS;
use super::client::{Client, Known, MultiWatch};
use super::error::{CliError, Outcome, exit};
use super::get::games::games_from;
use super::output::note;
use super::request::{modify, request_ref};
use super::target::{Targets, each};
use rtm_core::model::{
    Condition, ConditionStatus, GameRuntime, GameRuntimeSpec, Phase, READY,
    REASON_DISRUPTION_BUDGET, REASON_IN_SESSION, UPDATE_PENDING,
};
use rtm_core::records::revisions::Revision;
use rtm_core::store::Listing;

/// The Ready reason the health check gives a failing probe.
const HEALTH_CHECK_FAILING: &str = "HealthCheckFailing";

/// The subcommands of `rtctl rollout`.
#[derive(Debug, Clone, clap::Subcommand)]
pub(crate) enum RolloutCommand {
    /// How far a rollout got: games updated, ready, waiting on a session or a budget, failing.
    #[command(
        after_help = "Examples:\n  rtctl rollout status -l tier=casual\n  rtctl rollout \
                            status --all -w --timeout 30m"
    )]
    Status(StatusArgs),
    /// Roll games back to their previous applied spec (restartToken and state stay).
    #[command(
        after_help = "Examples:\n  rtctl rollout undo arena-1\n  rtctl rollout undo -l \
                            tier=casual"
    )]
    Undo(UndoArgs),
}

/// The arguments of `rtctl rollout status`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) targets: Targets,
    /// Wait until every game is updated and Ready, printing a line when the counts change.
    #[arg(short, long)]
    pub(crate) watch: bool,
    /// How long --watch waits.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
}

/// The arguments of `rtctl rollout undo`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct UndoArgs {
    #[command(flatten)]
    pub(crate) targets: Targets,
    /// The request id the controller records as the operations' source_ref; generated when
    /// absent.
    #[arg(long = "ref", value_name = "SOURCE_REF")]
    pub(crate) source_ref: Option<String>,
}

impl RolloutCommand {
    /// The game names given on the command line.
    pub(crate) fn names(&self) -> Vec<&str> {
        let targets = match self {
            RolloutCommand::Status(args) => &args.targets,
            RolloutCommand::Undo(args) => &args.targets,
        };
        targets.names().iter().map(String::as_str).collect()
    }

    /// Whether the command waits (and so listens for Ctrl-C).
    pub(crate) fn waits(&self) -> bool {
        matches!(self, RolloutCommand::Status(args) if args.watch)
    }
}

/// `rtctl rollout ...`.
pub(crate) async fn rollout(
    client: &Client,
    command: &RolloutCommand,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> Result<Outcome, CliError> {
    match command {
        RolloutCommand::Status(args) => status(client, args, out, interrupt).await,
        RolloutCommand::Undo(args) => undo(client, args, out).await,
    }
}

/// Where one game stands in a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Standing {
    pub(crate) updated: bool,
    pub(crate) ready: bool,
    pub(crate) waiting_session: bool,
    pub(crate) waiting_budget: bool,
    pub(crate) failing: bool,
    /// Why it is not done, for its line (`None`: done).
    pub(crate) why: Option<String>,
}

fn condition<'s>(doc: &'s GameRuntime, kind: &str) -> Option<&'s Condition> {
    doc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
}

fn said(condition: &Condition) -> String {
    if condition.message.is_empty() {
        condition.reason.clone()
    } else {
        format!("{}: {}", condition.reason, condition.message)
    }
}

/// Where a game (its document carrying its status) stands.
pub(crate) fn standing(doc: &GameRuntime) -> Standing {
    let status = doc.status.as_ref();
    let updated = match (
        status.and_then(|s| s.observed_generation),
        doc.metadata.generation,
    ) {
        (Some(seen), Some(current)) => seen >= current,
        _ => false,
    };
    let ready_condition = condition(doc, READY);
    let ready = ready_condition.is_some_and(|c| c.status == ConditionStatus::True);
    let pending = condition(doc, UPDATE_PENDING).filter(|c| c.status == ConditionStatus::True);
    let waiting_session = pending.is_some_and(|c| c.reason == REASON_IN_SESSION);
    let waiting_budget = pending.is_some_and(|c| c.reason == REASON_DISRUPTION_BUDGET);
    let phase = status.map(|s| s.phase);
    let failing_phase = matches!(phase, Some(Phase::Failed | Phase::CrashLoopBackOff));
    let failing_health = ready_condition
        .is_some_and(|c| c.status == ConditionStatus::False && c.reason == HEALTH_CHECK_FAILING);
    let failing = failing_phase || failing_health;
    let why = if updated && ready {
        None
    } else if let Some(pending) = pending {
        let what = if waiting_session {
            "waiting on its session"
        } else if waiting_budget {
            "waiting on a disruption budget"
        } else {
            "update pending"
        };
        Some(format!("{what}: {}", said(pending)))
    } else if failing_phase {
        let message = status.and_then(|s| s.message.clone());
        Some(match (phase, message) {
            (Some(phase), Some(message)) => format!("failing: phase {phase}: {message}"),
            (Some(phase), None) => format!("failing: phase {phase}"),
            _ => "failing".to_owned(),
        })
    } else if failing_health {
        Some(format!(
            "failing: {}",
            ready_condition.map(said).unwrap_or_default()
        ))
    } else if status.is_none() {
        Some("no status yet (the controller has not reported on it)".to_owned())
    } else if !updated {
        Some(format!(
            "not yet updated (observed generation {} of {})",
            status
                .and_then(|s| s.observed_generation)
                .map(|g| g.to_string())
                .unwrap_or_else(|| "none".into()),
            doc.metadata
                .generation
                .map(|g| g.to_string())
                .unwrap_or_else(|| "?".into())
        ))
    } else {
        Some(match ready_condition {
            Some(c) => format!("not Ready: {}", said(c)),
            None => format!(
                "not Ready (phase {})",
                phase.map(|p| p.to_string()).unwrap_or_default()
            ),
        })
    };
    Standing {
        updated,
        ready,
        waiting_session,
        waiting_budget,
        failing,
        why,
    }
}

/// The counts of a rollout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) games: usize,
    pub(crate) updated: usize,
    pub(crate) ready: usize,
    pub(crate) waiting_session: usize,
    pub(crate) waiting_budget: usize,
    pub(crate) failing: usize,
}

impl Counts {
    pub(crate) fn of<'g>(standings: impl IntoIterator<Item = &'g Standing>) -> Counts {
        let mut counts = Counts::default();
        for s in standings {
            counts.games += 1;
            counts.updated += usize::from(s.updated);
            counts.ready += usize::from(s.ready);
            counts.waiting_session += usize::from(s.waiting_session);
            counts.waiting_budget += usize::from(s.waiting_budget);
            counts.failing += usize::from(s.failing);
        }
        counts
    }

    fn done(&self) -> bool {
        self.updated == self.games && self.ready == self.games
    }

    fn line(&self) -> String {
        format!(
            "{} games: {} updated, {} ready, {} waiting on a session, {} waiting on a budget, {} \
             failing",
            self.games,
            self.updated,
            self.ready,
            self.waiting_session,
            self.waiting_budget,
            self.failing
        )
    }
}

/// The chosen games of a listing of documents and statuses, by name; a named game that is
/// missing fails.
fn chosen(
    client: &Client,
    targets: &Targets,
    selector: &super::get::Selector,
    listings: &[Listing],
) -> Result<BTreeMap<String, GameRuntime>, CliError> {
    let (games, _) = games_from(client, &listings[0], &listings[1]);
    if targets.by_name() {
        let mut named = BTreeMap::new();
        for name in targets.names() {
            let Some(doc) = games.get(name) else {
                return Err(client.not_found(name));
            };
            named.insert(name.clone(), doc.clone());
        }
        return Ok(named);
    }
    Ok(games
        .into_iter()
        .filter(|(_, doc)| selector.matches(&doc.metadata.labels))
        .collect())
}

/// The summary and the lines of the games not done.
fn report(games: &BTreeMap<String, GameRuntime>) -> (Counts, Vec<String>) {
    let standings: Vec<(&String, Standing)> = games
        .iter()
        .map(|(name, doc)| (name, standing(doc)))
        .collect();
    let counts = Counts::of(standings.iter().map(|(_, s)| s));
    let lines = standings
        .iter()
        .filter_map(|(name, s)| {
            s.why
                .as_ref()
                .map(|why| format!("gameruntime/{name}: {why}"))
        })
        .collect();
    (counts, lines)
}

async fn status(
    client: &Client,
    args: &StatusArgs,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> Result<Outcome, CliError> {
    let selector = args.targets.check("rollout status")?.unwrap_or_default();
    let keys = client.keys();
    let prefixes = vec![keys.gameruntimes(), keys.statuses()];
    if !args.watch {
        let (listings, _) = client.list_at_one_revision(&prefixes).await?;
        let games = chosen(client, &args.targets, &selector, &listings)?;
        if games.is_empty() {
            note("No resources found");
            return Ok(Outcome::Success);
        }
        let (counts, lines) = report(&games);
        writeln!(out, "{}", counts.line())?;
        for line in lines {
            writeln!(out, "{line}")?;
        }
        return Ok(if counts.done() {
            Outcome::Success
        } else {
            Outcome::Exit(exit::NOT_DONE)
        });
    }
    let what = "the rollout to finish (every game updated and Ready)".to_owned();
    let hint = "see why with `rtctl rollout status` (without -w)".to_owned();
    let follow = async {
        let (mut watch, listings, _) = MultiWatch::start(client, prefixes.clone()).await?;
        let mut known = Known::new(prefixes.clone(), &listings);
        let mut last: Option<Counts> = None;
        loop {
            let listings = known.listings();
            let games = chosen(client, &args.targets, &selector, &listings)?;
            let (counts, lines) = report(&games);
            if last.as_ref() != Some(&counts) {
                writeln!(out, "{}", counts.line())?;
                out.flush()?;
                if counts.done() {
                    for line in lines {
                        writeln!(out, "{line}")?;
                    }
                    return Ok::<_, CliError>(Outcome::Success);
                }
                last = Some(counts);
            }
            known.update(watch.next().await?);
        }
    };
    tokio::select! {
        result = tokio::time::timeout(args.timeout, follow) => match result {
            Ok(outcome) => outcome,
            Err(_) => Err(CliError::Timeout {
                what,
                after: humantime::format_duration(args.timeout).to_string(),
                hint,
            }),
        },
        () = interrupt.cancelled() => Err(CliError::Interrupted { what, hint }),
    }
}

/// A spec as undo compares it: restartToken and state do not count.
fn comparable(spec: &GameRuntimeSpec, like: &GameRuntimeSpec) -> GameRuntimeSpec {
    let mut spec = spec.clone();
    spec.restart_token = like.restart_token.clone();
    spec.state = like.state;
    spec
}

/// The revision undo writes back: the newest below the current generation whose spec
/// differs from the current one in more than restartToken and state.
pub(crate) fn undo_target<'r>(
    current: &GameRuntime,
    revisions: &'r [Revision],
) -> Option<&'r Revision> {
    let generation = current.metadata.generation.unwrap_or(i64::MAX);
    revisions
        .iter()
        .filter(|r| r.generation < generation)
        .filter(|r| comparable(&r.doc.spec, &current.spec) != current.spec)
        .max_by_key(|r| r.generation)
}

async fn undo(client: &Client, args: &UndoArgs, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let source_ref = request_ref(&args.source_ref, "undo")?;
    let names = args.targets.resolve(client, "rollout undo").await?;
    let one = async |name: &str, out: &mut dyn Write| -> Result<Outcome, CliError> {
        let revisions =
            client.revisions().list(name).await.map_err(|e| {
                client.revision_error(e, &format!("reading the revisions of {name}"))
            })?;
        let mut target = None;
        let modified = modify(client, name, &source_ref, WRITE_ATTEMPTS, false, |doc| {
            target = undo_target(doc, &revisions).map(|r| r.generation);
            match revisions.iter().find(|r| Some(r.generation) == target) {
                Some(revision) => {
                    doc.spec = comparable(&revision.doc.spec, &doc.spec);
                    true
                }
                None => false,
            }
        })
        .await?;
        match target {
            Some(generation) if modified.changed => {
                writeln!(
                    out,
                    "gameruntime/{name} rolled back to generation {generation}"
                )?;
                Ok(Outcome::Success)
            }
            _ => Err(CliError::Missing {
                message: format!(
                    "gameruntime/{name} has no earlier revision with another spec to roll back to \
                     (rtctl keeps the last {} written); nothing was changed",
                    rtm_core::records::revisions::KEEP
                ),
            }),
        }
    };
    if let [name] = names.as_slice()
        && args.targets.by_name()
    {
        return one(name, out).await;
    }
    Ok(each(&names, async |name: &str| one(name, &mut *out).await).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::model::fixtures::game;
    use rtm_core::model::{DesiredState, GameRuntimeStatus};

    fn cond(kind: &str, status: ConditionStatus, reason: &str, message: &str) -> Condition {
        Condition {
            type_: kind.into(),
            status,
            reason: reason.into(),
            message: message.into(),
            last_transition_time: None,
        }
    }

    fn at(generation: i64, observed: i64, phase: Phase, conditions: Vec<Condition>) -> GameRuntime {
        let mut doc = game("g").build();
        doc.metadata.generation = Some(generation);
        doc.status = Some(GameRuntimeStatus {
            phase,
            observed_generation: Some(observed),
            conditions,
            ..GameRuntimeStatus::default()
        });
        doc
    }

    #[test]
    fn rollout_counts_say_where_each_game_stands() {
        let ready = || cond(READY, ConditionStatus::True, "ContainerRunning", "");
        let done = at(2, 2, Phase::Running, vec![ready()]);
        let in_session = at(
            3,
            2,
            Phase::Running,
            vec![
                ready(),
                cond(
                    UPDATE_PENDING,
                    ConditionStatus::True,
                    REASON_IN_SESSION,
                    "the spec change waits for the session (ref m-1) to end",
                ),
            ],
        );
        let on_budget = at(
            3,
            2,
            Phase::Running,
            vec![
                ready(),
                cond(
                    UPDATE_PENDING,
                    ConditionStatus::True,
                    REASON_DISRUPTION_BUDGET,
                    "budget casual: 2 of 2 slots held",
                ),
            ],
        );
        let crashing = at(3, 3, Phase::CrashLoopBackOff, vec![]);
        let unhealthy = at(
            3,
            3,
            Phase::Running,
            vec![cond(
                READY,
                ConditionStatus::False,
                HEALTH_CHECK_FAILING,
                "GET /health: 503",
            )],
        );
        let games = [&done, &in_session, &on_budget, &crashing, &unhealthy];
        let standings: Vec<Standing> = games.iter().map(|g| standing(g)).collect();
        assert_eq!(
            Counts::of(&standings),
            Counts {
                games: 5,
                updated: 3,
                ready: 3,
                waiting_session: 1,
                waiting_budget: 1,
                failing: 2,
            }
        );
        assert_eq!(standings[0].why, None);
        assert_eq!(
            standings[1].why.as_deref(),
            Some(
                "waiting on its session: InSession: the spec change waits for the session (ref \
                 m-1) to end"
            )
        );
        assert!(
            standings[2]
                .why
                .as_deref()
                .unwrap()
                .starts_with("waiting on a disruption budget")
        );
        assert_eq!(
            standings[3].why.as_deref(),
            Some("failing: phase CrashLoopBackOff")
        );
        assert_eq!(
            standings[4].why.as_deref(),
            Some("failing: HealthCheckFailing: GET /health: 503")
        );
        assert!(!Counts::of(&standings).done());
        assert!(Counts::of(&standings[..1]).done());
    }

    #[test]
    fn a_game_the_controller_has_not_seen_is_not_done() {
        let mut doc = game("g").build();
        doc.metadata.generation = Some(1);
        let s = standing(&doc);
        assert!(!s.updated && !s.ready);
        assert!(s.why.unwrap().starts_with("no status yet"));
    }

    fn revision(generation: i64, image: &str, token: &str, state: DesiredState) -> Revision {
        let mut doc = game("g").build();
        doc.spec.image = image.into();
        doc.spec.restart_token = token.into();
        doc.spec.state = state;
        doc.metadata.generation = Some(generation);
        Revision { generation, doc }
    }

    #[test]
    fn undo_takes_the_newest_earlier_revision_with_another_spec() {
        let revisions = vec![
            revision(1, "engine:1", "", DesiredState::Running),
            revision(2, "engine:2", "", DesiredState::Running),
            // A restart and a stop of generation 2's spec: not specs of their own.
            revision(3, "engine:2", "t-1", DesiredState::Running),
            revision(4, "engine:2", "t-1", DesiredState::Stopped),
            revision(5, "engine:3", "t-1", DesiredState::Stopped),
        ];
        let current = &revisions[4].doc;
        assert_eq!(
            undo_target(current, &revisions).map(|r| r.generation),
            Some(4)
        );
        // The write keeps the current token and state.
        let mut rolled = current.clone();
        rolled.spec = comparable(&revisions[3].doc.spec, &current.spec);
        assert_eq!(rolled.spec.image, "engine:2");
        assert_eq!(rolled.spec.restart_token, "t-1");
        assert_eq!(rolled.spec.state, DesiredState::Stopped);

        // From generation 4 (engine:2), the revisions 2 and 3 hold the same spec: back to 1.
        let current = &revisions[3].doc;
        assert_eq!(
            undo_target(current, &revisions).map(|r| r.generation),
            Some(1)
        );
        // Nothing earlier differs.
        let current = &revisions[0].doc;
        assert_eq!(undo_target(current, &revisions), None);
    }

    #[test]
    fn undo_after_an_undo_goes_back_again_past_the_same_spec() {
        // 1: engine:1, 2: engine:2, 3: the undo (engine:1 again).
        let revisions = vec![
            revision(1, "engine:1", "", DesiredState::Running),
            revision(2, "engine:2", "", DesiredState::Running),
            revision(3, "engine:1", "", DesiredState::Running),
        ];
        let target = undo_target(&revisions[2].doc, &revisions).unwrap();
        assert_eq!(
            (target.generation, target.doc.spec.image.as_str()),
            (2, "engine:2")
        );
    }
}
