//! apply-latency: time from a spec write (its commit in etcd) to the start
//! of the reconcile that handles it (the reconcile's first Docker call,
//! seen by a counting wrapper around the simulated Docker), with 100 and
//! with 10,000 existing, converged games. Writes go out open-loop (one
//! every `--interval`, each to another game), first on a quiet controller,
//! then right after every game was queued again at once (what a resync
//! and a Docker event-stream reconnect do). The baseline is the same
//! write's delivery to a plain etcd watch in the benchmark: the floor for
//! any watch-driven controller.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtm_controller::runtime::FakeRuntime;
use rtm_core::model::GameRuntime;
use rtm_core::store::Revision;
use serde_json::json;

use super::harness::{
    Bench, CountingRuntime, CountingStore, InProcess, PrefixWatch, Result, controller_config,
    error, pause, running_at, simulated_docker,
};
use super::report::{Figure, Report, Row, Stats, Target};

#[derive(Debug, Clone, clap::Parser)]
pub(crate) struct Args {
    /// Existing games, one run each (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [100usize, 10_000])]
    pub(crate) games: Vec<usize>,
    /// Spec writes on the quiet controller.
    #[arg(long, default_value_t = 300)]
    pub(crate) writes: usize,
    /// Time between two writes (open loop).
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    pub(crate) interval: Duration,
    /// Simulated Docker latency per call.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    pub(crate) docker_latency: Duration,
}

/// One write's latencies, from the moment the write was sent to etcd.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// → the reconcile's first Docker call.
    reconcile: Duration,
    /// → the benchmark's own watch saw it.
    watch: Duration,
    /// → etcd acknowledged it (the commit).
    commit: Duration,
}

pub(crate) async fn run(args: &Args) -> Result<Report> {
    let mut report = Report::new("apply-latency");
    report.note(format!(
        "latency = spec write sent → its reconcile's first Docker call (the status comes \
         from the status cache); baseline = the same write reaching a plain etcd watch; \
         simulated Docker {:?}/call; one write every {:?}, each to another game; \
         quiet = controller --resync 10m, all queued = every game queued at once (as a resync \
         does) right before the writes",
        args.docker_latency, args.interval
    ));
    for &n in &args.games {
        let bench = Bench::new(&format!("apply{n}"), "l").await?;
        let result = one(args, &bench, n, &mut report).await;
        bench.wipe().await?;
        result?;
    }
    Ok(report)
}

struct World<'a> {
    bench: &'a Bench,
    watch: &'a PrefixWatch,
    probe: &'a Arc<CountingRuntime>,
    docs: Vec<(GameRuntime, Revision)>,
    next: usize,
    seq: u64,
}

impl World<'_> {
    /// Writes one game's spec (a new annotation: a new generation to
    /// reconcile) and returns a task resolving to its latencies.
    async fn write(&mut self) -> Result<tokio::task::JoinHandle<Result<Sample>>> {
        let index = self.next % self.docs.len();
        self.next += 1;
        self.seq += 1;
        let (doc, revision) = &mut self.docs[index];
        doc.metadata
            .annotations
            .insert("bench.rtmanager.dev/seq".into(), self.seq.to_string());
        let game = doc.metadata.name.clone();
        let mut armed = self.probe.arm(&format!("rtm-{game}"));
        let sent = Instant::now();
        let new_revision = self.bench.update_doc(doc, *revision).await?;
        let commit = sent.elapsed();
        *revision = new_revision;
        let probe = self.probe.clone();
        let watch_seen = {
            // The benchmark's watch: when it saw this revision of the doc.
            let game = game.clone();
            let shared = self.watch_handle();
            async move {
                shared
                    .wait(
                        "the write on the benchmark's watch",
                        Duration::from_secs(30),
                        |seen| {
                            seen.docs
                                .get(&game)
                                .is_some_and(|(r, _)| *r >= new_revision)
                        },
                    )
                    .await?;
                Ok::<_, super::harness::Error>(shared.with(|seen| seen.docs[&game].1))
            }
        };
        let watch_at = watch_seen.await?;
        Ok(tokio::spawn(async move {
            loop {
                let at = tokio::time::timeout(Duration::from_secs(60), &mut armed)
                    .await
                    .map_err(|_| error(format!("no reconcile of {game} within 60 s")))?
                    .map_err(|_| error("the probe went away"))?;
                if at >= sent {
                    return Ok(Sample {
                        reconcile: at - sent,
                        watch: watch_at.saturating_duration_since(sent),
                        commit,
                    });
                }
                // An inspect from before the write was sent (a reconcile
                // already under way): not the one that handles it.
                armed = probe.arm(&format!("rtm-{game}"));
            }
        }))
    }

    fn watch_handle(&self) -> &PrefixWatch {
        self.watch
    }

    /// Writes one game's spec every `interval` while `more(written so
    /// far)` holds; returns the tasks resolving to their latencies.
    async fn open_loop(
        &mut self,
        interval: Duration,
        mut more: impl FnMut(usize) -> bool,
    ) -> Result<Vec<tokio::task::JoinHandle<Result<Sample>>>> {
        let mut tasks = Vec::new();
        while more(tasks.len()) {
            let sent = Instant::now();
            tasks.push(self.write().await?);
            pause(interval.saturating_sub(sent.elapsed())).await?;
        }
        Ok(tasks)
    }
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Result<Sample>>>) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for task in tasks {
        samples.push(task.await??);
    }
    Ok(samples)
}

/// What one run measured.
#[derive(Debug)]
struct Measured {
    /// Until every game first ran.
    converged: Duration,
    /// The writes on the quiet controller.
    quiet: Vec<Sample>,
    /// The writes right after every game was queued at once.
    burst: Vec<Sample>,
    /// How long the burst lasted (until every game was looked at once).
    burst_secs: f64,
}

async fn one(args: &Args, bench: &Bench, n: usize, report: &mut Report) -> Result<()> {
    let (fake, trimmer) = simulated_docker(args.docker_latency);
    let probe = Arc::new(CountingRuntime::new(Arc::new(fake.clone())));
    let docs = (0..n)
        .map(|i| bench.doc(&bench.game(i)))
        .collect::<Result<Vec<_>>>()?;
    let (revisions, highest) = bench.create_docs(docs.clone(), 64).await?;
    let watch =
        PrefixWatch::start(bench.store.clone(), &bench.keys, highest + 1, running_at(1)).await?;
    let store = Arc::new(CountingStore::new(bench.store.clone()));
    // No periodic resync during the quiet phase: the burst phase queues
    // every game at once on purpose instead.
    let controller = InProcess::start(
        controller_config(&bench.keys, &["--resync", "10m"])?,
        &bench.keys,
        store,
        probe.clone(),
    );
    // The round-robin starts at a random game, then goes through them.
    let mut world = World {
        bench,
        watch: &watch,
        probe: &probe,
        docs: docs
            .into_iter()
            .map(|doc| {
                let revision = revisions[&doc.metadata.name];
                (doc, revision)
            })
            .collect(),
        next: rand::random_range(0..n),
        seq: 0,
    };
    let measured = measure(args, &mut world, &fake, n).await;
    trimmer.abort();
    controller.stop().await?;
    report_rows(report, n, &measured?)
}

/// Waits for convergence, then times the quiet writes and the burst.
async fn measure(
    args: &Args,
    world: &mut World<'_>,
    fake: &FakeRuntime,
    n: usize,
) -> Result<Measured> {
    let watch = world.watch;
    let started = Instant::now();
    let limit = Duration::from_secs(120) + Duration::from_millis(50) * u32::try_from(n)?;
    watch
        .wait(&format!("{n} games to converge"), limit, |seen| {
            seen.converged() >= n
        })
        .await?;
    let converged = started.elapsed();
    watch
        .wait_quiet(Duration::from_secs(3), Duration::from_secs(300))
        .await?;

    let tasks = world
        .open_loop(args.interval, |written| written < args.writes)
        .await?;
    let quiet = collect(tasks).await?;
    watch
        .wait_quiet(Duration::from_secs(3), Duration::from_secs(300))
        .await?;

    // Every game queued at once: Docker's event stream ends, and the
    // controller queues every game (as a resync does), then writes
    // go on until each game was looked at once.
    let probe = world.probe;
    let inspects = probe.inspects();
    let triggered = Instant::now();
    fake.drop_event_streams();
    let tasks = world
        .open_loop(args.interval, |written| {
            probe.inspects() - inspects < n as u64 && written < 5000
        })
        .await?;
    let burst_secs = triggered.elapsed().as_secs_f64();
    let burst = collect(tasks).await?;
    Ok(Measured {
        converged,
        quiet,
        burst,
        burst_secs,
    })
}

fn report_rows(report: &mut Report, n: usize, measured: &Measured) -> Result<()> {
    let stats = |samples: &[Sample], pick: fn(&Sample) -> Duration| {
        Stats::of(&samples.iter().map(pick).collect::<Vec<_>>())
    };
    let reconcile = |s: &Sample| s.reconcile;
    let watched = |s: &Sample| s.watch;
    let committed = |s: &Sample| s.commit;
    let target = (n >= 10_000).then_some(Target::AtMost(50.0));
    let quiet_ctl = stats(&measured.quiet, reconcile).ok_or_else(|| error("no samples"))?;
    let quiet_base = stats(&measured.quiet, watched).ok_or_else(|| error("no samples"))?;
    let quiet = format!("{n} games, quiet");
    phase_rows(report, &quiet, "", (&quiet_ctl, &quiet_base), target);
    let mut burst_json = json!(null);
    if let (Some(ctl), Some(base)) = (
        stats(&measured.burst, reconcile),
        stats(&measured.burst, watched),
    ) {
        let phase = format!("{n} games, all queued");
        let samples = format!(" (n={})", ctl.n);
        phase_rows(report, &phase, &samples, (&ctl, &base), target);
        burst_json = json!({
            "controller": ctl.json(),
            "baseline": base.json(),
            "secs": measured.burst_secs,
        });
    }
    report.detail(
        &format!("games_{n}"),
        json!({
            "converge_secs": measured.converged.as_secs_f64(),
            "quiet": {
                "controller": quiet_ctl.json(),
                "baseline": quiet_base.json(),
                "commit": stats(&measured.quiet, committed).map(|s| s.json()),
            },
            "all_queued": burst_json,
        }),
    );
    Ok(())
}

/// A phase's two rows, p50 and p99 (with the target, if any), the
/// controller's figure against the baseline's.
fn phase_rows(
    report: &mut Report,
    phase: &str,
    suffix: &str,
    (ctl, base): (&Stats, &Stats),
    target: Option<Target>,
) {
    report.row(
        Row::new(format!("{phase}: p50{suffix}"), Figure::ms(ctl.p50))
            .baseline(Figure::ms(base.p50)),
    );
    let mut row = Row::new(format!("{phase}: p99{suffix}"), Figure::ms(ctl.p99))
        .baseline(Figure::ms(base.p99));
    if let Some(target) = target {
        row = row.target(target);
    }
    report.row(row);
}
