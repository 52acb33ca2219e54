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
use rtm_controller::metrics::Metrics;
use rtm_controller::runtime::instrumented::Instrumented;
use rtm_controller::runtime::{ContainerRuntime, DockerRuntime};
use rtm_core::store::{Store, Txn};
use serde_json::json;

use super::harness::{
    Bench, CountingStore, IMAGE, InProcess, PrefixWatch, Result, controller_config, error, pause,
    remove_containers, running_at,
};
use super::report::{Figure, Report, Row, Target};

#[derive(Debug, Clone, clap::Parser)]
pub struct Args {
    /// Running containers to adopt.
    #[arg(long, default_value_t = 200)]
    pub containers: usize,
}

pub async fn run(args: &Args) -> Result<Report> {
    let bench = Bench::new("adoption", "a").await?;
    let docker: Arc<dyn ContainerRuntime> =
        Arc::new(DockerRuntime::connect(None, Duration::from_secs(60)).await?);
    docker.ping().await?;
    if docker.inspect_image(IMAGE).await?.is_none() {
        return Err(error(format!(
            "{IMAGE} is missing: run scripts/build-test-image"
        )));
    }
    let result = measure(args, &bench, &docker).await;
    let removed = remove_containers(docker.as_ref(), bench.keys.prefix()).await;
    bench.wipe().await?;
    removed?;
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

/// Starts a controller and waits until it has looked at every game and
/// counts it Running, and every status says Running at generation 1.
async fn restart(
    bench: &Bench,
    docker: &Arc<dyn ContainerRuntime>,
    watch: &PrefixWatch,
    n: usize,
) -> Result<(Duration, u64, serde_json::Value)> {
    let writes0 = watch.with(|seen| seen.revisions);
    let store = Arc::new(CountingStore::new(bench.store.clone()));
    let metrics = Metrics::new();
    let runtime = Arc::new(Instrumented::new(docker.clone(), metrics.clone()));
    let started = Instant::now();
    let controller = InProcess::start(
        controller_config(&bench.keys, &[])?,
        &bench.keys,
        store.clone(),
        runtime,
        metrics,
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
    controller.stop().await?;
    let took = outcome?;
    let writes = watch.with(|seen| seen.revisions) - writes0;
    Ok((
        took,
        writes,
        json!({ "acted": acted, "adopted": adopted, "calls": calls }),
    ))
}

async fn measure(args: &Args, bench: &Bench, docker: &Arc<dyn ContainerRuntime>) -> Result<Report> {
    let n = args.containers;
    let docs = (0..n)
        .map(|i| bench.doc(&bench.game(i)))
        .collect::<Result<Vec<_>>>()?;
    let (_, highest) = bench.create_docs(docs, 64).await?;
    let watch =
        PrefixWatch::start(bench.store.clone(), &bench.keys, highest + 1, running_at(1)).await?;

    // Controller A starts every container.
    let started = Instant::now();
    let metrics = Metrics::new();
    let runtime = Arc::new(Instrumented::new(docker.clone(), metrics.clone()));
    let a = InProcess::start(
        controller_config(&bench.keys, &[])?,
        &bench.keys,
        bench.store.clone(),
        runtime,
        metrics,
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
    let prefix = bench.keys.prefix();
    let before = containers(docker.as_ref(), prefix).await?;
    if before.len() != n {
        return Err(error(format!(
            "{} containers run, {n} expected",
            before.len()
        )));
    }

    // Baseline: list them and inspect each, as many at a time as the
    // controller runs reconciles (its default concurrency).
    let concurrency = controller_config(&bench.keys, &[])?.concurrency;
    let raw_started = Instant::now();
    let listed = containers(docker.as_ref(), prefix).await?;
    let inspected = futures::stream::iter(listed.keys().cloned())
        .map(|name| {
            let docker = docker.clone();
            async move { docker.inspect_container(&name).await }
        })
        .buffer_unordered(concurrency)
        .filter(|r| futures::future::ready(matches!(r, Ok(Some(_)))))
        .count()
        .await;
    let raw = raw_started.elapsed();
    if inspected != n {
        return Err(error(format!("the baseline inspected {inspected} of {n}")));
    }

    // B: a plain restart, status records kept.
    let (kept, kept_writes, kept_ops) = restart(bench, docker, &watch, n).await?;
    let after_kept = containers(docker.as_ref(), prefix).await?;
    let kept_recreated = recreated(&before, &after_kept);

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
    let (lost, lost_writes, lost_ops) = restart(bench, docker, &watch, n).await?;
    let after_lost = containers(docker.as_ref(), prefix).await?;
    let lost_recreated = recreated(&before, &after_lost);

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
    report.row(
        Row::new(
            "restart, status kept: converged",
            Figure::Seconds(kept.as_secs_f64()),
        )
        .baseline(Figure::Seconds(raw.as_secs_f64())),
    );
    report.row(
        Row::new(
            "restart, status kept: recreated",
            Figure::Count(kept_recreated as f64),
        )
        .target(Target::AtMost(0.0)),
    );
    report.row(Row::new(
        "restart, status kept: etcd writes",
        Figure::Count(kept_writes as f64),
    ));
    report.row(
        Row::new(
            "restart, status lost: converged",
            Figure::Seconds(lost.as_secs_f64()),
        )
        .baseline(Figure::Seconds(raw.as_secs_f64())),
    );
    report.row(
        Row::new(
            "restart, status lost: recreated",
            Figure::Count(lost_recreated as f64),
        )
        .target(Target::AtMost(0.0)),
    );
    report.row(Row::new(
        "restart, status lost: etcd writes per game",
        Figure::Count(lost_writes as f64 / n as f64),
    ));
    report.detail("containers", json!(n));
    report.detail("cold_start_secs", json!(cold.as_secs_f64()));
    report.detail("baseline_secs", json!(raw.as_secs_f64()));
    report.detail("status_kept", json!({ "secs": kept.as_secs_f64(), "writes": kept_writes, "recreated": kept_recreated, "ops": kept_ops }));
    report.detail("status_lost", json!({ "secs": lost.as_secs_f64(), "writes": lost_writes, "recreated": lost_recreated, "ops": lost_ops }));
    Ok(report)
}
