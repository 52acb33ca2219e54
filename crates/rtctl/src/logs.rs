//! `rtctl logs NAME`: what a game's engine prints.
//!
//! The live log comes straight from the Docker engine the game runs on: `--docker-host`,
//! else `DOCKER_HOST`, else the context's `dockerHost`, else the local socket. rtctl finds
//! the game's container there by its labels (this installation's prefix and the game), so
//! it needs no name scheme and finds a container renamed by hand. Reading it takes what any
//! Docker client takes — access to the engine's socket, which is root on that host — and
//! nothing in etcd; the game's status names the node to ask when the container is
//! elsewhere.
//!
//! `--previous` needs only etcd (read access to `previous/`): the last output the controller
//! kept of the container it replaced or removed after it exited or failed its health check
//! (`rtm_core::records::previous`), with how it ended on stderr.

use std::io::Write;
use std::time::{Duration, SystemTime};

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, LogsOptions};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::client::Client;
use super::error::{CliError, Outcome};
use super::output::short_id;
use rtm_core::records::previous::PreviousContainer;

/// Where Docker listens when nothing says otherwise.
pub(crate) const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// How long connecting to the engine and finding the container may take.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LogsArgs {
    /// The game (`NAME` or `gameruntime/NAME`).
    #[arg(value_parser = crate::resource::game_word, value_name = "NAME", add = crate::complete::game_names())]
    pub(crate) name: String,
    /// Keep printing what the engine prints until it stops (or Ctrl-C).
    #[arg(short, long, conflicts_with = "previous")]
    pub(crate) follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub(crate) tail: Option<u64>,
    /// Only lines newer than this long ago (`10m`, `2h`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) since: Option<Duration>,
    /// Start each line with Docker's RFC 3339 timestamp.
    #[arg(long)]
    pub(crate) timestamps: bool,
    /// The output of the game's previous container, kept in etcd by the controller when it
    /// replaced or removed it after it exited or failed its health check.
    #[arg(short, long)]
    pub(crate) previous: bool,
    /// The Docker engine the game runs on (`unix:///var/run/docker.sock`,
    /// `tcp://host:2375`) [default: the context's dockerHost, else the local socket].
    #[arg(long, env = "DOCKER_HOST", value_name = "URL")]
    pub(crate) docker_host: Option<String>,
}

/// Runs `rtctl logs`; `context_docker_host` is the context's `dockerHost`.
pub(crate) async fn logs(
    client: &Client,
    args: &LogsArgs,
    context_docker_host: Option<&str>,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> Result<Outcome, CliError> {
    if args.previous {
        return previous(client, args, out).await;
    }
    let host = args
        .docker_host
        .as_deref()
        .filter(|h| !h.is_empty())
        .or(context_docker_host)
        .unwrap_or(DEFAULT_DOCKER_HOST);
    let docker = connect(host).await?;
    let Some(id) = find_container(&docker, host, client.keys().prefix(), &args.name).await? else {
        return Err(elsewhere(client, &args.name, host).await);
    };
    let options = LogsOptions {
        follow: args.follow,
        stdout: true,
        stderr: true,
        since: args
            .since
            .map(|since| unix_seconds(SystemTime::now() - since))
            .unwrap_or(0),
        timestamps: args.timestamps,
        tail: args
            .tail
            .map(|n| n.to_string())
            .unwrap_or_else(|| "all".to_owned()),
        ..LogsOptions::default()
    };
    let mut stream = docker.logs(&id, Some(options));
    loop {
        let chunk = tokio::select! {
            () = interrupt.cancelled() => return Ok(Outcome::Success),
            chunk = stream.next() => chunk,
        };
        match chunk {
            None => return Ok(Outcome::Success),
            Some(Ok(chunk)) => {
                out.write_all(chunk.as_ref())?;
                if args.follow {
                    out.flush()?;
                }
            }
            Some(Err(error)) => return Err(docker_error(host, "reading the log", &error)),
        }
    }
}

/// `--previous`: the kept output, cut by `--tail` and `--since`, timestamps shown only
/// with `--timestamps`; how the container ended goes to stderr.
async fn previous(
    client: &Client,
    args: &LogsArgs,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let Some(kept) = client.previous(&args.name).await? else {
        let exists = client.get(&args.name).await?.is_some();
        return Err(CliError::Missing {
            message: format!(
                "no previous container of gameruntime/{} is kept{}: one is kept when the \
                 controller replaces or removes a container that exited or failed its health \
                 check; `rtctl logs {}` shows the running one",
                args.name,
                if exists {
                    ""
                } else {
                    " (and the game does not exist)"
                },
                args.name
            ),
        });
    };
    let since = args.since.map(|since| SystemTime::now() - since);
    out.write_all(render_previous(&kept, args.tail, since, args.timestamps).as_bytes())?;
    let _ = writeln!(std::io::stderr().lock(), "{}", previous_summary(&kept));
    Ok(Outcome::Success)
}

/// The kept lines as `rtctl logs --previous` prints them.
pub(crate) fn render_previous(
    kept: &PreviousContainer,
    tail: Option<u64>,
    since: Option<SystemTime>,
    timestamps: bool,
) -> String {
    let lines: Vec<(Option<SystemTime>, &str, &str)> = kept
        .output
        .lines()
        .map(|line| match line.split_once(' ') {
            Some((stamp, rest)) => match humantime::parse_rfc3339(stamp) {
                Ok(at) => (Some(at), line, rest),
                Err(_) => (None, line, line),
            },
            None => (None, line, line),
        })
        .filter(|(at, _, _)| match (since, at) {
            (Some(since), Some(at)) => *at >= since,
            _ => true,
        })
        .collect();
    let skip = match tail {
        Some(n) => lines
            .len()
            .saturating_sub(usize::try_from(n).unwrap_or(usize::MAX)),
        None => 0,
    };
    let mut text = String::new();
    for (_, whole, bare) in &lines[skip..] {
        text.push_str(if timestamps { whole } else { bare });
        text.push('\n');
    }
    text
}

/// One line on how the kept container ended: `previous container 1a2b… (engine:1) exited 1
/// at …, replaced by operation …; earlier output was cut off`.
pub(crate) fn previous_summary(kept: &PreviousContainer) -> String {
    let mut line = format!(
        "previous container {} ({}) {}",
        short_id(&kept.container_id),
        kept.image_ref,
        kept.ended.summary()
    );
    if let Some(at) = kept.ended.finished_at {
        line.push_str(&format!(" at {at}"));
    }
    if let Some(cause) = kept.cause {
        line.push_str(&format!(", replaced for {cause}"));
    }
    line.push_str(&format!(
        "; kept by operation {} at {}",
        kept.op_id, kept.kept_at
    ));
    if kept.truncated {
        line.push_str("; earlier output was cut off");
    }
    line
}

/// The client for the engine at `host`, its API version negotiated.
async fn connect(host: &str) -> Result<Docker, CliError> {
    let docker = if let Some(path) = host.strip_prefix("unix://") {
        Docker::connect_with_unix(path, DOCKER_TIMEOUT.as_secs(), bollard::API_DEFAULT_VERSION)
    } else if let Some(address) = host
        .strip_prefix("tcp://")
        .or_else(|| host.strip_prefix("http://"))
    {
        Docker::connect_with_http(
            address,
            DOCKER_TIMEOUT.as_secs(),
            bollard::API_DEFAULT_VERSION,
        )
    } else {
        return Err(CliError::usage(format!(
            "--docker-host {host:?} is neither unix:///path nor tcp://host:port"
        )));
    }
    .map_err(|e| docker_error(host, "connecting", &e))?;
    match tokio::time::timeout(DOCKER_TIMEOUT, docker.negotiate_version()).await {
        Ok(Ok(docker)) => Ok(docker),
        Ok(Err(e)) => Err(docker_error(host, "connecting", &e)),
        Err(_) => Err(CliError::DockerUnavailable {
            message: format!(
                "the Docker engine at {host} did not answer within {}s; check that it runs \
                 (--docker-host, DOCKER_HOST or the context's dockerHost)",
                DOCKER_TIMEOUT.as_secs()
            ),
        }),
    }
}

/// The game's container on this engine: the running one, else the newest.
async fn find_container(
    docker: &Docker,
    host: &str,
    prefix: &str,
    game: &str,
) -> Result<Option<String>, CliError> {
    let filters = std::collections::HashMap::from([(
        "label".to_owned(),
        vec![
            "rtmanager.dev/managed-by=rtmanager".to_owned(),
            format!("rtmanager.dev/prefix={prefix}"),
            format!("rtmanager.dev/game={game}"),
        ],
    )]);
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..ListContainersOptions::default()
    };
    let listed = tokio::time::timeout(DOCKER_TIMEOUT, docker.list_containers(Some(options)))
        .await
        .map_err(|_| CliError::DockerUnavailable {
            message: format!("the Docker engine at {host} did not list containers in time"),
        })?
        .map_err(|e| docker_error(host, "listing containers", &e))?;
    let mut containers: Vec<_> = listed
        .into_iter()
        .filter(|c| {
            c.labels.as_ref().is_some_and(|l| {
                l.get("rtmanager.dev/game").map(String::as_str) == Some(game)
                    && l.get("rtmanager.dev/prefix").map(String::as_str) == Some(prefix)
            })
        })
        .collect();
    containers.sort_by_key(|c| {
        let running = c
            .state
            .is_some_and(|s| s == bollard::models::ContainerSummaryStateEnum::RUNNING);
        (running, c.created.unwrap_or_default())
    });
    Ok(containers.pop().and_then(|c| c.id))
}

/// The game has no container on this engine: say where it runs, as far as etcd knows.
async fn elsewhere(client: &Client, game: &str, host: &str) -> CliError {
    let status = client.status(game).await.ok().flatten();
    let exists = client.get(game).await.ok().flatten().is_some();
    let hint = match status.as_ref().and_then(|s| s.node.as_deref()) {
        Some(node) if !node.is_empty() => format!(
            "its status says node {node} runs it: run rtctl logs on that host, or point \
             --docker-host at its engine"
        ),
        _ if exists => "it has no container yet (see `rtctl describe` for why)".to_owned(),
        _ => "the game does not exist (see `rtctl get`)".to_owned(),
    };
    CliError::Missing {
        message: format!(
            "gameruntime/{game} has no container on the Docker engine at {host}; {hint}; \
             `rtctl logs {game} --previous` shows what its last replaced container printed"
        ),
    }
}

fn docker_error(host: &str, doing: &str, error: &bollard::errors::Error) -> CliError {
    let detail = super::error::one_line(&rtm_core::failure::error_chain(error));
    let lower = detail.to_ascii_lowercase();
    if lower.contains("permission denied") {
        return CliError::DockerDenied {
            message: format!(
                "the Docker engine at {host} refused {doing}: {detail}; reading a game's live \
                 log needs access to the engine's socket (root, or the docker group on that \
                 host); `--previous` needs only etcd"
            ),
        };
    }
    if let bollard::errors::Error::DockerResponseServerError {
        status_code: 404, ..
    } = error
    {
        return CliError::Missing {
            message: format!(
                "the Docker engine at {host} no longer has the container while {doing}: {detail}"
            ),
        };
    }
    CliError::DockerUnavailable {
        message: format!(
            "cannot read from the Docker engine at {host} while {doing}: {detail}; check that it \
             runs and that --docker-host, DOCKER_HOST or the context's dockerHost point at it"
        ),
    }
}

fn unix_seconds(at: SystemTime) -> i32 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::model::Timestamp;
    use rtm_core::records::previous::Ended;

    fn kept(output: &str) -> PreviousContainer {
        PreviousContainer {
            game_id: "g1".into(),
            container_id: "0123456789abcdef0123".into(),
            image_ref: "engine:1".into(),
            op_id: "op-7".into(),
            ended: Ended {
                exit_code: Some(1),
                oom_killed: false,
                started_at: None,
                finished_at: Some(Timestamp::from_unix_seconds(1_800_000_000)),
            },
            cause: None,
            output: output.into(),
            truncated: false,
            kept_at: Timestamp::from_unix_seconds(1_800_000_001),
        }
    }

    const OUTPUT: &str = "2027-01-15T08:00:00.000000001Z loading\n\
                          2027-01-15T08:00:05.5Z ready\n\
                          2027-01-15T08:00:09Z panic: map not found\n";

    #[test]
    fn the_kept_lines_print_without_their_timestamps_unless_asked() {
        assert_eq!(
            render_previous(&kept(OUTPUT), None, None, false),
            "loading\nready\npanic: map not found\n"
        );
        assert_eq!(render_previous(&kept(OUTPUT), None, None, true), OUTPUT);
    }

    #[test]
    fn tail_and_since_cut_the_kept_lines() {
        assert_eq!(
            render_previous(&kept(OUTPUT), Some(1), None, false),
            "panic: map not found\n"
        );
        assert_eq!(render_previous(&kept(OUTPUT), Some(0), None, false), "");
        assert_eq!(
            render_previous(&kept(OUTPUT), Some(10), None, false)
                .lines()
                .count(),
            3
        );
        let since = humantime::parse_rfc3339("2027-01-15T08:00:05Z").unwrap();
        assert_eq!(
            render_previous(&kept(OUTPUT), None, Some(since), false),
            "ready\npanic: map not found\n"
        );
    }

    #[test]
    fn a_line_without_a_timestamp_is_kept_as_it_is() {
        let odd = "not a stamp\n2027-01-15T08:00:00Z ok\n";
        assert_eq!(
            render_previous(&kept(odd), None, None, false),
            "not a stamp\nok\n"
        );
    }

    #[test]
    fn the_summary_says_how_it_ended_and_who_kept_it() {
        let mut record = kept(OUTPUT);
        assert_eq!(
            previous_summary(&record),
            "previous container 0123456789ab (engine:1) exited 1 at 2027-01-15T08:00:00Z; \
             kept by operation op-7 at 2027-01-15T08:00:01Z"
        );
        record.cause = Some(rtm_core::error_code::ErrorCode::HealthCheckFailed);
        record.truncated = true;
        let summary = previous_summary(&record);
        assert!(
            summary.contains(", replaced for health_check_failed;"),
            "{summary}"
        );
        assert!(
            summary.ends_with("; earlier output was cut off"),
            "{summary}"
        );
    }
}
