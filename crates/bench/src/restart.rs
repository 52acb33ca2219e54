//! restart-overhead: a restart through the controller (restartToken bump
//! written → status Running with the new container id, seen by the status
//! watch) against the same recreate done directly through `DockerRuntime`
//! (stop + rm + create + start), interleaved, with real etcd and Docker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtm_controller::lifecycle::{ContainerPolicy, container_spec, new_id};
use rtm_controller::metrics::Metrics;
use rtm_controller::runtime::instrumented::Instrumented;
use rtm_controller::runtime::{ContainerRuntime, DockerRuntime};
use rtm_core::model::{ANNOTATION_OP_SOURCE, ANNOTATION_SOURCE_REF};
use serde_json::json;

use super::harness::{
    Bench, CountingRuntime, CountingStore, IMAGE, InProcess, PrefixWatch, Result,
    controller_config, counters_delta, error, pause, remove_containers, running_at,
};
use super::report::{Figure, Report, Row, Stats, Target};

#[derive(Debug, Clone, clap::Parser)]
pub struct Args {
    /// Restarts of each kind.
    #[arg(long, default_value_t = 30)]
    pub n: usize,
}

pub async fn run(args: &Args) -> Result<Report> {
    let bench = Bench::new("restart", "r").await?;
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

async fn measure(args: &Args, bench: &Bench, docker: &Arc<dyn ContainerRuntime>) -> Result<Report> {
    let game = bench.game(0);
    let raw_game = format!("{}raw", bench.game_prefix);
    let mut doc = bench.doc(&game)?;
    let (revisions, created) = bench.create_docs(vec![doc.clone()], 1).await?;
    let mut rv = revisions[&game];
    let watch =
        PrefixWatch::start(bench.store.clone(), &bench.keys, created + 1, running_at(1)).await?;

    let store = Arc::new(CountingStore::new(bench.store.clone()));
    let counted = Arc::new(CountingRuntime::new(docker.clone()));
    let metrics = Metrics::new();
    let runtime = Arc::new(Instrumented::new(counted.clone(), metrics.clone()));
    let controller = InProcess::start(
        controller_config(&bench.keys, &[])?,
        &bench.keys,
        store.clone(),
        runtime,
        metrics,
    );
    let outcome = async {
        watch
            .wait("the game to run", Duration::from_secs(60), |seen| {
                seen.converged() == 1
            })
            .await?;
        watch
            .wait_quiet(Duration::from_secs(2), Duration::from_secs(30))
            .await?;

        // The baseline's container: the same spec, under a prefix label of
        // its own so the controller never treats it as an orphan.
        let raw_doc = bench.doc(&raw_game)?;
        let raw_spec = container_spec(
            &raw_doc,
            &format!("{}-raw", bench.keys.prefix()),
            &new_id(),
            &ContainerPolicy::default(),
        );
        let mut raw_id = docker.create(&raw_spec).await?;
        docker.start(&raw_id).await?;
        let timeout = raw_doc.spec.stop_timeout;

        let mut through_controller = Vec::new();
        let mut raw = Vec::new();
        let (store_before, docker_before) =
            (store.counters.snapshot(), counted.counters.snapshot());
        let writes_before = watch.with(|seen| seen.revisions);
        let mut controller_total = Duration::ZERO;
        for i in 0..args.n {
            // Alternate which goes first, so neither always runs right
            // after the other's tail.
            for controller_turn in [i % 2 == 0, i % 2 == 1] {
                if controller_turn {
                    let old =
                        watch.with(|seen| seen.status(&game).and_then(|s| s.container_id.clone()));
                    let token = format!("bench-{i}-{}", new_id());
                    doc.spec.restart_token = token.clone();
                    doc.metadata
                        .annotations
                        .insert(ANNOTATION_OP_SOURCE.into(), "api".into());
                    doc.metadata
                        .annotations
                        .insert(ANNOTATION_SOURCE_REF.into(), format!("bench-restart-{i}"));
                    let started = Instant::now();
                    rv = bench.update_doc(&doc, rv).await?;
                    watch
                        .wait(
                            "the restart's new container in the status",
                            Duration::from_secs(60),
                            |seen| {
                                seen.status(&game).is_some_and(|s| {
                                    s.phase == rtm_core::model::Phase::Running
                                        && s.container_id.is_some()
                                        && s.container_id != old
                                })
                            },
                        )
                        .await?;
                    let at = watch.with(|seen| seen.statuses[&game].1);
                    through_controller.push(at - started);
                    // Let the operation finish (outer entry, lease release)
                    // before the next measurement.
                    watch
                        .wait("the restart to finish", Duration::from_secs(60), |seen| {
                            !seen.leases.contains(&game)
                                && seen.status(&game).is_some_and(|s| {
                                    s.observed_restart_token.as_deref() == Some(token.as_str())
                                })
                        })
                        .await?;
                    controller_total += watch.with(|seen| seen.last_event) - started;
                } else {
                    let started = Instant::now();
                    docker.stop(&raw_id, timeout).await?;
                    docker.remove(&raw_id, false).await?;
                    raw_id = docker.create(&raw_spec).await?;
                    docker.start(&raw_id).await?;
                    raw.push(started.elapsed());
                }
                pause(Duration::from_millis(300)).await?;
            }
        }
        let n = args.n as f64;
        let per_restart = json!({
            "etcd_writes": (watch.with(|seen| seen.revisions) - writes_before) as f64 / n,
            "etcd_calls": counters_delta(&store_before, &store.counters.snapshot(), n),
            "docker_calls": counters_delta(&docker_before, &counted.counters.snapshot(), n),
            "until_operation_finished_ms": controller_total.as_secs_f64() * 1000.0 / n,
        });
        Ok::<_, super::harness::Error>((through_controller, raw, per_restart))
    }
    .await;
    controller.stop().await?;
    let (through_controller, raw, per_restart) = outcome?;

    let ctl = Stats::of(&through_controller).ok_or_else(|| error("no samples"))?;
    let base = Stats::of(&raw).ok_or_else(|| error("no samples"))?;
    let mut report = Report::new("restart-overhead");
    report.row(
        Row::new("restart p50", Figure::ms(ctl.p50))
            .baseline(Figure::ms(base.p50))
            .target(Target::RatioAtMost(1.10)),
    );
    report.row(
        Row::new("restart p95", Figure::ms(ctl.p95))
            .baseline(Figure::ms(base.p95))
            .target(Target::RatioAtMost(1.10)),
    );
    report.row(Row::new("restart mean", Figure::ms(ctl.mean)).baseline(Figure::ms(base.mean)));
    report.row(Row::new(
        "etcd writes per restart",
        Figure::Count(per_restart["etcd_writes"].as_f64().unwrap_or_default()),
    ));
    report.note(format!(
        "N={} each, interleaved; controller = restartToken write → status Running with the new \
         container id; baseline = DockerRuntime stop+rm+create+start of the same image",
        args.n
    ));
    report.detail("n", json!(args.n));
    report.detail("controller", ctl.json());
    report.detail("baseline", base.json());
    report.detail("per_restart", per_restart);
    report.detail(
        "samples_ms",
        json!({
            "controller": through_controller.iter().map(|d| d.as_secs_f64() * 1000.0).collect::<Vec<_>>(),
            "baseline": raw.iter().map(|d| d.as_secs_f64() * 1000.0).collect::<Vec<_>>(),
        }),
    );
    Ok(report)
}
