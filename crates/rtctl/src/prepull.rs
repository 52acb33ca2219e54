//! `prepull`: asks the controllers to pull the images of some games onto their nodes before
//! a rollout, and reports what each node answered.
//!
//! rtctl writes one request (`prepulls/<id>`: the games, the `--image` or none) attached to
//! an etcd lease of its own (TTL `--timeout` plus [`LEASE_MARGIN`]); every controller pulls
//! for the listed games it reconciles and answers under `prepulls/<id>/nodes/<node>` on the
//! same lease. rtctl waits for the nodes the games name (`spec.node`, else `status.node`),
//! prints one row per node and image, then revokes the lease: request and answers go
//! together (and expire by themselves if rtctl is killed).
//!
//! Exit: 0 when every expected node answered and no pull failed; 8 when a pull failed; 9
//! when a node did not answer within `--timeout`; 130 on Ctrl-C.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::client::{Client, MultiWatch, WatchItem};
use super::error::{CliError, Outcome, exit};
use super::get::games::games_from;
use super::output::{Table, note};
use super::request::request_ref;
use super::target::Targets;
use rtm_core::model::validate::image_reference;
use rtm_core::model::{GameRuntime, Timestamp};
use rtm_core::records::prepulls::{
    MAX_GAMES, NodeAnswer, PrepullError, PrepullKey, PrepullRequest, Prepulls, PullOutcome,
    decode_answer,
};
use rtm_core::store::{KeyValue, WatchEvent};

/// How long the request's lease outlives `--timeout`: the time to print the report and
/// revoke it; when rtctl is killed instead, the records go this long after the timeout.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// The longest `--timeout`: the request's lease lives that long (etcd refuses far longer
/// TTLs), and a prepull that takes a day is a registry problem, not a wait.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// How long to wait when no game names a node: a controller that takes unassigned games
/// answers within seconds, and there is no node whose silence would mean anything.
const NOWHERE_GRACE: Duration = Duration::from_secs(10);

/// `rtctl prepull`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PrepullArgs {
    #[command(flatten)]
    pub(crate) targets: Targets,
    /// The image to pull for every game (e.g. the one a rollout is about to apply); without
    /// it, each game's own spec.image.
    #[arg(long, value_name = "IMAGE")]
    pub(crate) image: Option<String>,
    /// How long to wait for the nodes' answers.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
    /// The request id shown in the controllers' logs (generated when not given).
    #[arg(long = "ref", value_name = "SOURCE_REF")]
    pub(crate) source_ref: Option<String>,
}

/// Which node each game is expected on.
#[derive(Debug, Default, PartialEq, Eq)]
struct Expected {
    /// Node → its games.
    nodes: BTreeMap<String, Vec<String>>,
    /// Games that name no node (no spec.node, no status.node yet).
    nowhere: Vec<String>,
}

/// The node a game is expected on: its `spec.node` (only that node reconciles it), else the
/// node that last ran it (`status.node`).
fn expected(games: &[GameRuntime]) -> Expected {
    let mut expected = Expected::default();
    for game in games {
        let node = game
            .spec
            .node
            .clone()
            .or_else(|| game.status.as_ref().and_then(|s| s.node.clone()));
        match node {
            Some(node) => expected
                .nodes
                .entry(node)
                .or_default()
                .push(game.metadata.name.clone()),
            None => expected.nowhere.push(game.metadata.name.clone()),
        }
    }
    expected
}

pub(crate) async fn prepull(
    client: &Client,
    args: &PrepullArgs,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> Result<Outcome, CliError> {
    check_timeout(args.timeout)?;
    if let Some(image) = &args.image {
        image_reference(image)
            .map_err(|reason| CliError::invalid(format!("invalid --image {image:?}: {reason}")))?;
    }
    let source_ref = request_ref(&args.source_ref, "prepull")?;
    let names = args.targets.resolve(client, "prepull").await?;
    if names.is_empty() {
        note("No resources found");
        return Ok(Outcome::Success);
    }
    if names.len() > MAX_GAMES {
        return Err(CliError::usage(format!(
            "{} games selected; one prepull takes at most {MAX_GAMES}: split them with -l",
            names.len()
        )));
    }
    let (games, mut worst) = read_games(client, &names).await?;
    if games.is_empty() {
        return Ok(worst);
    }
    let expected = expected(&games);
    for game in &expected.nowhere {
        note(&format!(
            "gameruntime/{game} names no node yet (no spec.node, no status.node): no answer is \
             waited for; a controller that takes unassigned games pulls for it"
        ));
    }
    let request = PrepullRequest {
        games: games.iter().map(|g| g.metadata.name.clone()).collect(),
        image: args.image.clone(),
        requested_at: Timestamp::now(),
        requester: source_ref.clone(),
    };
    let id = format!(
        "{}-{:08x}",
        Timestamp::now().unix_seconds(),
        rand::random::<u32>()
    );
    let lease = client
        .store()
        .grant_lease(args.timeout + LEASE_MARGIN)
        .await
        .map_err(|e| client.store_error(e, "granting the prepull request's lease"))?;
    let answers = ask_and_wait(client, &id, &request, lease.id, &expected, args, interrupt).await;
    // The request and every answer go with the lease; if this fails they expire by themselves.
    if let Err(error) = client.store().revoke_lease(lease.id).await {
        note(&format!(
            "note: revoking the prepull request's lease failed ({error}); its keys expire within \
             {}",
            humantime::format_duration(lease.ttl)
        ));
    }
    let (answers, ended) = answers?;
    let report = report(&request.games, &expected, &answers);
    out.write_all(report.table.as_bytes())?;
    out.flush()?;
    for line in &report.uncovered {
        note(line);
    }
    if report.failed > 0 {
        eprintln!(
            "error: {} of {} pulls failed; see RESULT and MESSAGE above",
            report.failed, report.pulls
        );
        worst = worst.worst(Outcome::Exit(exit::OPERATION_FAILED));
    }
    match ended {
        Ended::AllAnswered => Ok(worst),
        Ended::TimedOut => Err(CliError::Timeout {
            what: format!(
                "prepull answers from {}",
                report.silent.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
            after: humantime::format_duration(args.timeout).to_string(),
            hint: "check that a controller runs on each of those nodes (RTM_NODE_NAME) and is \
                   ready, or give a longer --timeout"
                .to_owned(),
        }),
        Ended::Interrupted => Err(CliError::Interrupted {
            what: "prepull answers".to_owned(),
            hint: "the request was withdrawn: its nodes stop pulling for it".to_owned(),
        }),
    }
}

fn check_timeout(timeout: Duration) -> Result<(), CliError> {
    if timeout > MAX_TIMEOUT {
        return Err(CliError::usage(format!(
            "--timeout {} is longer than the {} a prepull may wait",
            humantime::format_duration(timeout),
            humantime::format_duration(MAX_TIMEOUT)
        )));
    }
    Ok(())
}

/// The documents (with their status) of `names`, in the order given; a name that is
/// missing or unreadable gets its own `error:` line and the worst exit code.
async fn read_games(
    client: &Client,
    names: &[String],
) -> Result<(Vec<GameRuntime>, Outcome), CliError> {
    let keys = client.keys();
    let (listings, _) = client
        .list_at_one_revision(&[keys.gameruntimes(), keys.statuses()])
        .await?;
    let (mut docs, invalid) = games_from(client, &listings[0], &listings[1]);
    let mut games = Vec::with_capacity(names.len());
    let mut worst = Outcome::Success;
    for name in names {
        match docs.remove(name) {
            Some(doc) => games.push(doc),
            None => {
                let error = if let Some(bad) = invalid.get(name) {
                    CliError::Corrupt {
                        message: format!(
                            "gameruntime/{name} cannot be read ({}): not prepulled",
                            bad.reason
                        ),
                    }
                } else {
                    CliError::NotFound {
                        name: name.clone(),
                        prefix: keys.prefix().to_owned(),
                    }
                };
                eprintln!("error: {}", super::error::one_line(&error.to_string()));
                worst = worst.worst(Outcome::Exit(error.exit_code()));
            }
        }
    }
    Ok((games, worst))
}

/// Why the wait for answers ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    AllAnswered,
    TimedOut,
    Interrupted,
}

/// Writes the request and collects the answers until every expected node answered, the
/// timeout passes or the user interrupts.
async fn ask_and_wait(
    client: &Client,
    id: &str,
    request: &PrepullRequest,
    lease: i64,
    expected: &Expected,
    args: &PrepullArgs,
    interrupt: &CancellationToken,
) -> Result<(BTreeMap<String, NodeAnswer>, Ended), CliError> {
    let written = Prepulls::new(client.store().clone(), client.keys().clone())
        .create(id, request, lease)
        .await
        .map_err(|e| match e {
            PrepullError::Refused { reason, .. } => {
                CliError::invalid(format!("the prepull request cannot be written: {reason}"))
            }
            PrepullError::Store(e) => client.store_error(e, "writing the prepull request"),
        })?;
    note(&format!(
        "prepull {id} requested (ref {}): {} game{}, waiting up to {} for {}",
        request.requester,
        request.games.len(),
        if request.games.len() == 1 { "" } else { "s" },
        humantime::format_duration(args.timeout),
        if expected.nodes.is_empty() {
            "any answer".to_owned()
        } else {
            format!(
                "node{} {}",
                if expected.nodes.len() == 1 { "" } else { "s" },
                expected
                    .nodes
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    ));
    let mut answers = BTreeMap::new();
    // The request's own key and its answers (the prefix `prepulls/<id>` holds both).
    let request_key = client.keys().prepull(id);
    let (mut watch, listings, _) =
        MultiWatch::start_at(client, vec![request_key.clone()], Some(written)).await?;
    for kv in &listings[0].items {
        take(client, id, &mut answers, kv);
    }
    let withdrawn = || {
        Err(CliError::Conflict {
            message: format!(
                "the prepull request {request_key} was deleted by someone else while rtctl \
                 waited (its pulls stop); run the command again"
            ),
        })
    };
    if !listings[0].items.iter().any(|kv| kv.key == request_key) {
        return withdrawn();
    }
    let all_in = |answers: &BTreeMap<String, NodeAnswer>| {
        !expected.nodes.is_empty() && expected.nodes.keys().all(|n| answers.contains_key(n))
    };
    let wait = if expected.nodes.is_empty() {
        args.timeout.min(NOWHERE_GRACE)
    } else {
        args.timeout
    };
    let deadline = tokio::time::Instant::now() + wait;
    while !all_in(&answers) {
        let item = tokio::select! {
            () = interrupt.cancelled() => return Ok((answers, Ended::Interrupted)),
            _ = tokio::time::sleep_until(deadline) => {
                // With no node to wait for, whatever answered by now is the report.
                let ended = if expected.nodes.is_empty() { Ended::AllAnswered } else { Ended::TimedOut };
                return Ok((answers, ended));
            }
            item = watch.next() => item?,
        };
        match item {
            WatchItem::Batch(batch) => {
                for event in batch {
                    match event {
                        WatchEvent::Put(kv) => take(client, id, &mut answers, &kv),
                        WatchEvent::Delete { key, .. } if key == request_key => {
                            return withdrawn();
                        }
                        WatchEvent::Delete { .. } => {}
                    }
                }
            }
            WatchItem::Relisted(listings) => {
                if !listings[0].items.iter().any(|kv| kv.key == request_key) {
                    return withdrawn();
                }
                for kv in &listings[0].items {
                    take(client, id, &mut answers, kv);
                }
            }
        }
    }
    Ok((answers, Ended::AllAnswered))
}

/// Keeps the answer stored at `kv`, if it is one to request `id`.
fn take(client: &Client, id: &str, answers: &mut BTreeMap<String, NodeAnswer>, kv: &KeyValue) {
    if let Some(PrepullKey::Answer(of, node)) = PrepullKey::of(client.keys(), &kv.key)
        && of == id
    {
        match decode_answer(kv, node) {
            Some(answer) => {
                answers.insert(node.to_owned(), answer);
            }
            None => note(&format!(
                "warning: the answer at {} is not one a controller writes; ignored",
                kv.key
            )),
        }
    }
}

/// What the command prints and how it ends.
#[derive(Debug, Default)]
struct Report {
    table: String,
    /// One line per game no answer covered, and why.
    uncovered: Vec<String>,
    /// Expected nodes that did not answer.
    silent: BTreeSet<String>,
    pulls: usize,
    failed: usize,
}

/// The table NODE IMAGE RESULT DIGEST TOOK MESSAGE (one row per node and image; a node that
/// did not answer gets a row saying so), and the games not covered.
fn report(games: &[String], expected: &Expected, answers: &BTreeMap<String, NodeAnswer>) -> Report {
    let mut report = Report::default();
    let mut table = Table::new(["NODE", "IMAGE", "RESULT", "DIGEST", "TOOK", "MESSAGE"]);
    let nodes: BTreeSet<&String> = expected.nodes.keys().chain(answers.keys()).collect();
    for node in nodes {
        let Some(answer) = answers.get(node) else {
            report.silent.insert(node.clone());
            table.row([
                node.clone(),
                "-".into(),
                "no answer".into(),
                "-".into(),
                "-".into(),
                "no answer from a controller of this node".into(),
            ]);
            continue;
        };
        for image in &answer.images {
            report.pulls += 1;
            let result = match (image.outcome, image.error_code) {
                (PullOutcome::Failed, Some(code)) => {
                    report.failed += 1;
                    code.as_str().to_owned()
                }
                (PullOutcome::Failed, None) => {
                    report.failed += 1;
                    "failed".to_owned()
                }
                (outcome, _) => outcome.as_str().to_owned(),
            };
            table.row([
                node.clone(),
                image.image.clone(),
                result,
                image.digest.clone().unwrap_or_else(|| "-".into()),
                if image.outcome == PullOutcome::Skipped {
                    "-".into()
                } else {
                    humantime::format_duration(Duration::from_millis(image.took_ms)).to_string()
                },
                image
                    .message
                    .as_deref()
                    .map(super::error::one_line)
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        if let Some(note) = &answer.note {
            report.uncovered.push(format!("note: node {node}: {note}"));
        }
    }
    report.table = table.render();
    let covered: BTreeSet<&str> = answers
        .values()
        .flat_map(|a| a.games.iter().map(String::as_str))
        .collect();
    let node_of: BTreeMap<&str, &str> = expected
        .nodes
        .iter()
        .flat_map(|(node, games)| games.iter().map(move |g| (g.as_str(), node.as_str())))
        .collect();
    for game in games.iter().filter(|g| !covered.contains(g.as_str())) {
        let why = match node_of.get(game.as_str()) {
            Some(node) if report.silent.contains(*node) => {
                format!("its node {node} did not answer")
            }
            Some(node) => format!(
                "its node {node} answered without it (the game moved or was deleted meanwhile)"
            ),
            None => "it names no node, and no controller took it".to_owned(),
        };
        report
            .uncovered
            .push(format!("gameruntime/{game} not prepulled: {why}"));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::ErrorCode;
    use rtm_core::model::GameRuntimeStatus;
    use rtm_core::model::fixtures::game;
    use rtm_core::records::prepulls::ImageAnswer;

    fn parse(args: &[&str]) -> Result<crate::Cli, clap::Error> {
        crate::parse_from(["rtctl", "prepull"].into_iter().chain(args.iter().copied()))
    }

    fn args_of(cli: crate::Cli) -> PrepullArgs {
        match cli.command {
            crate::Command::Prepull(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_command_line_takes_targets_an_image_and_a_timeout() {
        let args = args_of(parse(&["-l", "tier=ranked", "--image", "reg.example/e:2"]).unwrap());
        assert_eq!(args.targets.selector.as_deref(), Some("tier=ranked"));
        assert_eq!(args.image.as_deref(), Some("reg.example/e:2"));
        assert_eq!(args.timeout, Duration::from_secs(600), "10m by default");
        let args = args_of(parse(&["g1", "g2", "--timeout", "30s", "--ref", "R-1"]).unwrap());
        assert_eq!(args.targets.names, ["g1", "g2"]);
        assert_eq!(args.timeout, Duration::from_secs(30));
        assert!(parse(&["g1", "--all"]).is_err());
        assert!(parse(&["--all", "--timeout", "soon"]).is_err());
        assert!(check_timeout(Duration::from_secs(24 * 3600)).is_ok());
        let long = check_timeout(Duration::from_secs(24 * 3600 + 1)).unwrap_err();
        assert!(matches!(long, CliError::Usage { .. }), "{long}");
    }

    fn on(name: &str, spec_node: Option<&str>, status_node: Option<&str>) -> GameRuntime {
        let mut doc = game(name).build();
        doc.spec.node = spec_node.map(str::to_owned);
        doc.status = status_node.map(|node| GameRuntimeStatus {
            node: Some(node.to_owned()),
            ..GameRuntimeStatus::default()
        });
        doc
    }

    #[test]
    fn a_game_is_expected_on_its_spec_node_else_the_node_that_ran_it() {
        let expected = expected(&[
            on("g1", Some("a"), Some("b")),
            on("g2", None, Some("b")),
            on("g3", None, None),
        ]);
        assert_eq!(expected.nodes["a"], ["g1"]);
        assert_eq!(expected.nodes["b"], ["g2"]);
        assert_eq!(expected.nowhere, ["g3"]);
    }

    fn answer(node: &str, games: &[&str], images: Vec<ImageAnswer>) -> NodeAnswer {
        NodeAnswer {
            node: node.into(),
            images,
            games: games.iter().map(|g| (*g).to_owned()).collect(),
            note: None,
            finished_at: Timestamp::from_unix_seconds(1),
        }
    }

    #[test]
    fn the_report_has_a_row_per_node_and_image_and_a_line_per_game_not_covered() {
        let games: Vec<String> = ["g1", "g2", "g3", "g4"].map(String::from).into();
        let expected = expected(&[
            on("g1", Some("a"), None),
            on("g2", Some("a"), None),
            on("g3", Some("ghost"), None),
            on("g4", None, None),
        ]);
        let pulled = ImageAnswer {
            image: "reg/e:2".into(),
            outcome: PullOutcome::Pulled,
            error_code: None,
            message: None,
            digest: Some("reg/e@sha256:abc".into()),
            took_ms: 1_234,
        };
        let missing = ImageAnswer::failed(
            "reg/e:404",
            ErrorCode::ImageNotFound,
            "manifest\nunknown",
            56,
        );
        let answers =
            BTreeMap::from([("a".to_owned(), answer("a", &["g1"], vec![pulled, missing]))]);
        let report = report(&games, &expected, &answers);
        let lines: Vec<Vec<&str>> = report
            .table
            .lines()
            .map(|l| {
                l.split("   ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .collect();
        assert_eq!(
            lines[0],
            ["NODE", "IMAGE", "RESULT", "DIGEST", "TOOK", "MESSAGE"]
        );
        assert_eq!(
            lines[1],
            [
                "a",
                "reg/e:2",
                "pulled",
                "reg/e@sha256:abc",
                "1s 234ms",
                "-"
            ]
        );
        assert_eq!(
            lines[2],
            [
                "a",
                "reg/e:404",
                "image_not_found",
                "-",
                "56ms",
                "manifest; unknown"
            ]
        );
        assert_eq!(lines[3][..3], ["ghost", "-", "no answer"]);
        assert_eq!((report.pulls, report.failed), (2, 1));
        assert_eq!(report.silent, BTreeSet::from(["ghost".to_owned()]));
        assert_eq!(
            report.uncovered,
            [
                "gameruntime/g2 not prepulled: its node a answered without it (the game moved or was deleted meanwhile)",
                "gameruntime/g3 not prepulled: its node ghost did not answer",
                "gameruntime/g4 not prepulled: it names no node, and no controller took it",
            ]
        );
    }
}
