//! adoption: a controller restart with N (200) real running containers.
//! Controller A starts them; it is stopped; controller B starts on the
//! same state and must adopt every container (none recreated). Then the
//! status records are deleted (a lost status, an upgrade from a version
//! without them) and controller C must adopt them again from Docker alone.
//! The baseline is what the least a restarted controller must do: list
//! the containers and inspect each, at the controller's concurrency.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rtm_controller::runtime::ContainerRuntime;
use rtm_core::store::{Store, Txn};
use serde_json::{Value, json};

use super::harness::{
    Bench, CountingStore, InProcess, PrefixWatch, Result, controller_config, error, pause,
    real_docker, running_at,
};
use super::report::{Figure, Report, Row, Target};

#[derive(Debug, Clone, clap::Parser)]
pub(crate) struct Args {
    /// Running containers to adopt.
    #[arg(long, default_value_t = 200)]
    pub(crate) containers: usize,
}

pub(crate) async fn run(args: &Args) -> Result<Report> {
    let bench = Bench::new("adoption", "a").await?;
    let docker = real_docker().await?;
    let result = measure(args, &bench, &docker).await;
    bench.clean_up(docker.as_ref()).await?;
    result
}

/// Container id by name, of this run's containers.
async fn containers(
    docker: &dyn ContainerRuntime,
    prefix: &str,
) -> Result<HashMap<String, String>> {
    Ok(docker
        .list_managed()
        .await?
        .into_iter()
        .filter(|c| c.prefix() == Some(prefix))
        .map(|c| (c.name.trim_start_matches('/').to_owned(), c.id))
        .collect())
}

fn recreated(before: &HashMap<String, String>, after: &HashMap<String, String>) -> usize {
    before
        .iter()
        .filter(|(name, id)| after.get(*name) != Some(*id))
        .count()
}

/// What one controller restart did.
#[derive(Debug)]
struct Restarted {
    /// Until it counted every game Running and every status said so.
    took: Duration,
    /// etcd writes (revisions) it made.
    writes: u64,
    /// Containers it recreated rather than adopted.
    recreated: usize,
    /// Its operations by kind, and its etcd calls.
    ops: Value,
}

impl Restarted {
    fn json(&self) -> Value {
        json!({
            "secs": self.took.as_secs_f64(),
            "writes": self.writes,
            "recreated": self.recreated,
            "ops": self.ops,
        })
    }
}

/// Starts a controller and waits until it has looked at every game and
/// counts it Running, and every status says Running at generation 1;
/// `before` is the containers that ran before it started.
async fn restart(
    bench: &Bench,
    docker: &Arc<dyn ContainerRuntime>,
    watch: &PrefixWatch,
    before: &HashMap<String, String>,
) -> Result<Restarted> {
    let n = before.len();
    let writes0 = watch.with(|seen| seen.revisions);
    let store = Arc::new(CountingStore::new(bench.store.clone()));
    let started = Instant::now();
    let controller = InProcess::start(
        controller_config(&bench.keys, &[])?,
        &bench.keys,
        store.clone(),
        docker.clone(),
    );
    let outcome = async {
        let deadline = started + Duration::from_secs(600);
        while controller.games_in("Running") < i64::try_from(n)?
            || watch.with(|seen| seen.converged()) < n
        {
            if Instant::now() > deadline {
                return Err(error(
                    "the restarted controller did not converge within 600 s",
                ));
            }
            pause(Duration::from_millis(10)).await?;
        }
        let took = started.elapsed();
        watch
            .wait_quiet(Duration::from_secs(3), Duration::from_secs(120))
            .await?;
        Ok(took)
    }
    .await;
    let ops = operations(&controller, &store);
    controller.stop().await?;
    let took = outcome?;
    let after = containers(docker.as_ref(), bench.keys.prefix()).await?;
    Ok(Restarted {
        took,
        writes: watch.with(|seen| seen.revisions) - writes0,
        recreated: recreated(before, &after),
        ops,
    })
}

/// The operations a controller carried out (acted on containers, or
/// adopted them) and its etcd calls.
fn operations(controller: &InProcess, store: &CountingStore) -> Value {
    let m = &controller.metrics;
    let acted: u64 = ["start", "restart", "stop", "remove"]
        .iter()
        .map(|kind| m.operations.with_label_values(&[kind, "success", ""]).get())
        .sum();
    let adopted = m
        .operations
        .with_label_values(&["adopt", "success", ""])
        .get();
    let calls = json!({
        "etcd": super::harness::counters_delta(&Default::default(), &store.counters.snapshot(), 1.0),
    });
    json!({ "acted": acted, "adopted": adopted, "calls": calls })
}

/// Controller A starts every container; returns how long until all ran,
/// and the containers (by name) it left running.
async fn cold_start(
    bench: &Bench,
    docker: &Arc<dyn ContainerRuntime>,
    watch: &PrefixWatch,
    n: usize,
) -> Result<(Duration, HashMap<String, String>)> {
    let started = Instant::now();
    let a = InProcess::start(
        controller_config(&bench.keys, &[])?,
        &bench.keys,
        bench.store.clone(),
        docker.clone(),
    );
    let cold = async {
        watch
            .wait(
                &format!("{n} containers to run"),
                Duration::from_secs(900),
                |seen| seen.converged() >= n,
            )
            .await?;
        let took = started.elapsed();
        watch
            .wait_quiet(Duration::from_secs(3), Duration::from_secs(120))
            .await?;
        Ok::<_, super::harness::Error>(took)
    }
    .await;
    a.stop().await?;
    let cold = cold?;
    let running = containers(docker.as_ref(), bench.keys.prefix()).await?;
    if running.len() != n {
        return Err(error(format!(
            "{} containers run, {n} expected",
            running.len()
        )));
    }
    Ok((cold, running))
}

/// The baseline: list the containers and inspect each, as many at a time
/// as the controller runs reconciles (its default concurrency). Returns
/// that concurrency and the time it took.
async fn list_and_inspect(
    bench: &Bench,
    docker: &Arc<dyn ContainerRuntime>,
    n: usize,
) -> Result<(usize, Duration)> {
    let concurrency = controller_config(&bench.keys, &[])?.concurrency;
    let started = Instant::now();
    let listed = containers(docker.as_ref(), bench.keys.prefix()).await?;
    let inspected = futures::stream::iter(listed.keys().cloned())
        .map(|name| {
            let docker = docker.clone();
            async move { docker.inspect_container(&name).await }
        })
        .buffer_unordered(concurrency)
        .filter(|r| futures::future::ready(matches!(r, Ok(Some(_)))))
        .count()
        .await;
    let took = started.elapsed();
    if inspected != n {
        return Err(error(format!("the baseline inspected {inspected} of {n}")));
    }
    Ok((concurrency, took))
}

async fn measure(args: &Args, bench: &Bench, docker: &Arc<dyn ContainerRuntime>) -> Result<Report> {
    let n = args.containers;
    let docs = (0..n)
        .map(|i| bench.doc(&bench.game(i)))
        .collect::<Result<Vec<_>>>()?;
    let (_, highest) = bench.create_docs(docs, 64).await?;
    let watch =
        PrefixWatch::start(bench.store.clone(), &bench.keys, highest + 1, running_at(1)).await?;
    let (cold, before) = cold_start(bench, docker, &watch, n).await?;
    let (concurrency, raw) = list_and_inspect(bench, docker, n).await?;
    // B: a plain restart, status records kept.
    let kept = restart(bench, docker, &watch, &before).await?;
    // C: the status records are gone; Docker alone tells what runs.
    bench
        .store
        .txn(Txn::new().delete_prefix(bench.keys.statuses()))
        .await?;
    watch
        .wait(
            "the deleted statuses on the watch",
            Duration::from_secs(30),
            |seen| seen.statuses.is_empty(),
        )
        .await?;
    let lost = restart(bench, docker, &watch, &before).await?;

    let mut report = Report::new("adoption");
    report.note(format!(
        "{n} real containers; converged = the restarted controller counts every game Running and \
         every status is Running at its generation; baseline = list + inspect of every container, \
         {concurrency} at a time"
    ));
    report.row(Row::new(
        format!("cold start of {n} containers"),
        Figure::Seconds(cold.as_secs_f64()),
    ));
    restart_rows(&mut report, "status kept", &kept, raw, None);
    restart_rows(&mut report, "status lost", &lost, raw, Some(n));
    report.detail("containers", json!(n));
    report.detail("cold_start_secs", json!(cold.as_secs_f64()));
    report.detail("baseline_secs", json!(raw.as_secs_f64()));
    report.detail("status_kept", kept.json());
    report.detail("status_lost", lost.json());
    Ok(report)
}

/// One restart's rows: converged (against the baseline `raw`), recreated
/// (none allowed) and its etcd writes, per game when `per_game_of` says
/// how many.
fn restart_rows(
    report: &mut Report,
    case: &str,
    restarted: &Restarted,
    raw: Duration,
    per_game_of: Option<usize>,
) {
    report.row(
        Row::new(
            format!("restart, {case}: converged"),
            Figure::Seconds(restarted.took.as_secs_f64()),
        )
        .baseline(Figure::Seconds(raw.as_secs_f64())),
    );
    report.row(
        Row::new(
            format!("restart, {case}: recreated"),
            Figure::Count(restarted.recreated as f64),
        )
        .target(Target::AtMost(0.0)),
    );
    let row = match per_game_of {
        Some(n) => Row::new(
            format!("restart, {case}: etcd writes per game"),
            Figure::Count(restarted.writes as f64 / n as f64),
        ),
        None => Row::new(
            format!("restart, {case}: etcd writes"),
            Figure::Count(restarted.writes as f64),
        ),
    };
    report.row(row);
}
