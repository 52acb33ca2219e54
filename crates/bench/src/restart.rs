//! restart-overhead: a restart through the controller (restartToken bump
//! written → status Running with the new container id, seen by the status
//! watch) against the same recreate done directly through `DockerRuntime`
//! (stop + rm + create + start of a container made with the controller's own
//! policy: hardening, limits, the installation's network), interleaved, with
//! real etcd and Docker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtm_controller::lifecycle::{ContainerPolicy, container_spec, new_id};
use rtm_controller::runtime::{ContainerRuntime, ContainerSpec};
use rtm_core::model::{ANNOTATION_OP_SOURCE, ANNOTATION_SOURCE_REF, GameRuntime, Phase};
use rtm_core::store::Revision;
use serde_json::{Value, json};

use super::harness::{
    Bench, CountingRuntime, CountingStore, InProcess, PrefixWatch, Result, controller_config,
    counters_delta, error, pause, real_docker, running_at,
};
use super::report::{Figure, Report, Row, Stats, Target, ratio_interval};

#[derive(Debug, Clone, clap::Parser)]
pub(crate) struct Args {
    /// Restarts of each kind (enough that the p95 is not one sample's: its confidence
    /// interval is in the JSON).
    #[arg(long, default_value_t = 100)]
    pub(crate) n: usize,
}

pub(crate) async fn run(args: &Args) -> Result<Report> {
    let bench = Bench::new("restart", "r").await?;
    let docker = real_docker().await?;
    let result = measure(args, &bench, &docker).await;
    bench.clean_up(docker.as_ref()).await?;
    result
}

/// What the interleaved restarts measured.
#[derive(Debug)]
struct Samples {
    /// Restart written → status Running with the new container id.
    through_controller: Vec<Duration>,
    /// stop + rm + create + start straight through Docker.
    raw: Vec<Duration>,
    /// etcd writes, etcd and Docker calls, and the time until the
    /// operation finished, per controller restart.
    per_restart: Value,
}

async fn measure(args: &Args, bench: &Bench, docker: &Arc<dyn ContainerRuntime>) -> Result<Report> {
    let game = bench.game(0);
    let doc = bench.doc(&game)?;
    let (revisions, created) = bench.create_docs(vec![doc.clone()], 1).await?;
    let watch =
        PrefixWatch::start(bench.store.clone(), &bench.keys, created + 1, running_at(1)).await?;
    let store = Arc::new(CountingStore::new(bench.store.clone()));
    let counted = Arc::new(CountingRuntime::new(docker.clone()));
    let config = controller_config(&bench.keys, &[])?;
    // The baseline's container is made as the controller makes its games' (hardening, limits,
    // the installation's own network): the same container, only the path to it differs.
    let policy = config.hardening.policy(bench.keys.prefix());
    let controller = InProcess::start(config, &bench.keys, store.clone(), counted.clone());
    let mut subject = Subject {
        bench,
        watch: &watch,
        revision: revisions[&game],
        game,
        doc,
    };
    let outcome = async {
        subject.wait_settled().await?;
        let mut raw = RawContainer::start(bench, docker, &policy).await?;
        let (store_before, docker_before) =
            (store.counters.snapshot(), counted.counters.snapshot());
        let writes_before = watch.with(|seen| seen.revisions);
        let (through_controller, raw, controller_total) =
            interleave(args.n, &mut subject, &mut raw).await?;
        let n = args.n as f64;
        let per_restart = json!({
            "etcd_writes": (watch.with(|seen| seen.revisions) - writes_before) as f64 / n,
            "etcd_calls": counters_delta(&store_before, &store.counters.snapshot(), n),
            "docker_calls": counters_delta(&docker_before, &counted.counters.snapshot(), n),
            "until_operation_finished_ms": controller_total.as_secs_f64() * 1000.0 / n,
        });
        Ok::<_, super::harness::Error>(Samples {
            through_controller,
            raw,
            per_restart,
        })
    }
    .await;
    controller.stop().await?;
    report(args, &outcome?)
}

/// `n` restarts of each kind, alternating which goes first so that
/// neither always runs right after the other's tail. Returns the
/// controller's samples, the raw ones, and the controller's total time
/// until its operations finished.
async fn interleave(
    n: usize,
    subject: &mut Subject<'_>,
    raw: &mut RawContainer<'_>,
) -> Result<(Vec<Duration>, Vec<Duration>, Duration)> {
    let mut through_controller = Vec::new();
    let mut raw_samples = Vec::new();
    let mut controller_total = Duration::ZERO;
    for i in 0..n {
        for controller_turn in [i % 2 == 0, i % 2 == 1] {
            if controller_turn {
                let (running, finished) = subject.restart(i).await?;
                through_controller.push(running);
                controller_total += finished;
            } else {
                raw_samples.push(raw.recreate().await?);
            }
            pause(Duration::from_millis(300)).await?;
        }
    }
    Ok((through_controller, raw_samples, controller_total))
}

/// The game the controller restarts, and its document's revision.
struct Subject<'a> {
    bench: &'a Bench,
    watch: &'a PrefixWatch,
    game: String,
    doc: GameRuntime,
    revision: Revision,
}

impl Subject<'_> {
    /// Waits until the game runs and the controller stopped writing.
    async fn wait_settled(&self) -> Result<()> {
        self.watch
            .wait("the game to run", Duration::from_secs(60), |seen| {
                seen.converged() == 1
            })
            .await?;
        self.watch
            .wait_quiet(Duration::from_secs(2), Duration::from_secs(30))
            .await
    }

    /// Bumps the restart token (as `rtctl restart` does); returns the
    /// time until the status shows a new running container, and until the
    /// operation finished (outer entry written, lease released).
    async fn restart(&mut self, i: usize) -> Result<(Duration, Duration)> {
        let (game, watch) = (&self.game, self.watch);
        let old = watch.with(|seen| seen.status(game).and_then(|s| s.container_id.clone()));
        let token = format!("bench-{i}-{}", new_id());
        self.doc.spec.restart_token = token.clone();
        let annotations = &mut self.doc.metadata.annotations;
        annotations.insert(ANNOTATION_OP_SOURCE.into(), "api".into());
        annotations.insert(ANNOTATION_SOURCE_REF.into(), format!("bench-restart-{i}"));
        let started = Instant::now();
        self.revision = self.bench.update_doc(&self.doc, self.revision).await?;
        let what = "the restart's new container in the status";
        watch
            .wait(what, Duration::from_secs(60), |seen| {
                seen.status(game).is_some_and(|s| {
                    s.phase == Phase::Running && s.container_id.is_some() && s.container_id != old
                })
            })
            .await?;
        let running = watch.with(|seen| seen.statuses[game].1) - started;
        // Let the operation finish before the next measurement.
        watch
            .wait("the restart to finish", Duration::from_secs(60), |seen| {
                !seen.leases.contains(game)
                    && seen.status(game).is_some_and(|s| {
                        s.observed_restart_token.as_deref() == Some(token.as_str())
                    })
            })
            .await?;
        let finished = watch.with(|seen| seen.last_event) - started;
        Ok((running, finished))
    }
}

/// The baseline's container: the same spec and policy as the controller's
/// game (its network too), under a prefix label of its own so the controller
/// never treats it as an orphan.
struct RawContainer<'a> {
    docker: &'a Arc<dyn ContainerRuntime>,
    spec: ContainerSpec,
    id: String,
    stop_timeout: Duration,
}

impl RawContainer<'_> {
    async fn start<'a>(
        bench: &Bench,
        docker: &'a Arc<dyn ContainerRuntime>,
        policy: &ContainerPolicy,
    ) -> Result<RawContainer<'a>> {
        let doc = bench.doc(&format!("{}raw", bench.game_prefix))?;
        let spec = container_spec(
            &doc,
            &format!("{}-raw", bench.keys.prefix()),
            &new_id(),
            policy,
        );
        let id = docker.create(&spec).await?;
        docker.start(&id).await?;
        Ok(RawContainer {
            docker,
            spec,
            id,
            stop_timeout: doc.spec.stop_timeout,
        })
    }

    /// stop + rm + create + start; returns how long that took.
    async fn recreate(&mut self) -> Result<Duration> {
        let started = Instant::now();
        self.docker.stop(&self.id, self.stop_timeout).await?;
        self.docker.remove(&self.id, false).await?;
        self.id = self.docker.create(&self.spec).await?;
        self.docker.start(&self.id).await?;
        Ok(started.elapsed())
    }
}

fn report(args: &Args, samples: &Samples) -> Result<Report> {
    let ctl = Stats::of(&samples.through_controller).ok_or_else(|| error("no samples"))?;
    let base = Stats::of(&samples.raw).ok_or_else(|| error("no samples"))?;
    let mut report = Report::new("restart-overhead");
    let (ours, theirs) = (&samples.through_controller, &samples.raw);
    report.row(
        Row::new("restart p50", Figure::ms(ctl.p50))
            .baseline(Figure::ms(base.p50))
            .target(Target::RatioAtMost(1.10))
            .interval(ratio_interval(ours, theirs, 50.0)),
    );
    report.row(
        Row::new("restart p95", Figure::ms(ctl.p95))
            .baseline(Figure::ms(base.p95))
            .target(Target::RatioAtMost(1.05))
            .interval(ratio_interval(ours, theirs, 95.0)),
    );
    report.row(Row::new("restart mean", Figure::ms(ctl.mean)).baseline(Figure::ms(base.mean)));
    report.row(Row::new(
        "etcd writes per restart",
        Figure::Count(
            samples.per_restart["etcd_writes"]
                .as_f64()
                .unwrap_or_default(),
        ),
    ));
    report.note(format!(
        "N={} each, interleaved; controller = restartToken write → status Running with the new \
         container id; baseline = DockerRuntime stop+rm+create+start of the same image; \
         [low, high] = 95 % bootstrap interval of the ratio over the interleaved pairs",
        args.n
    ));
    let millis = |samples: &[Duration]| {
        samples
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect::<Vec<_>>()
    };
    report.detail("n", json!(args.n));
    report.detail("controller", ctl.json());
    report.detail("baseline", base.json());
    report.detail("per_restart", samples.per_restart.clone());
    report.detail(
        "samples_ms",
        json!({
            "controller": millis(&samples.through_controller),
            "baseline": millis(&samples.raw),
        }),
    );
    Ok(report)
}
