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

use rtm_controller::metrics::Metrics;
use rtm_controller::runtime::FakeRuntime;
use rtm_controller::runtime::instrumented::Instrumented;
use rtm_core::model::GameRuntime;
use rtm_core::store::Revision;
use serde_json::json;

use super::harness::{
    Bench, CountingRuntime, CountingStore, IMAGE, InProcess, PrefixWatch, Result,
    controller_config, error, pause, running_at,
};
use super::report::{Figure, Report, Row, Stats, Target};

#[derive(Debug, Clone, clap::Parser)]
pub struct Args {
    /// Existing games, one run each (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [100usize, 10_000])]
    pub games: Vec<usize>,
    /// Spec writes on the quiet controller.
    #[arg(long, default_value_t = 300)]
    pub writes: usize,
    /// Time between two writes (open loop).
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Simulated Docker latency per call.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    pub docker_latency: Duration,
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

pub async fn run(args: &Args) -> Result<Report> {
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
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Result<Sample>>>) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for task in tasks {
        samples.push(task.await??);
    }
    Ok(samples)
}

async fn one(args: &Args, bench: &Bench, n: usize, report: &mut Report) -> Result<()> {
    let fake = FakeRuntime::new();
    fake.add_image(IMAGE);
    let probe = Arc::new(CountingRuntime::new(Arc::new(
        fake.with_latency(args.docker_latency),
    )));
    let docs = (0..n)
        .map(|i| bench.doc(&bench.game(i)))
        .collect::<Result<Vec<_>>>()?;
    let (revisions, highest) = bench.create_docs(docs.clone(), 64).await?;
    let watch =
        PrefixWatch::start(bench.store.clone(), &bench.keys, highest + 1, running_at(1)).await?;
    let store = Arc::new(CountingStore::new(bench.store.clone()));
    let metrics = Metrics::new();
    let runtime = Arc::new(Instrumented::new(probe.clone(), metrics.clone()));
    // No periodic resync during the quiet phase: the burst phase queues
    // every game at once on purpose instead.
    let controller = InProcess::start(
        controller_config(&bench.keys, &["--resync", "10m"])?,
        &bench.keys,
        store,
        runtime,
        metrics,
    );
    let trimmer = {
        let fake = fake.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                fake.clear_calls();
            }
        })
    };
    let measured = async {
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

        // Start the round-robin at a random game, then go through them.
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

        let mut tasks = Vec::new();
        for _ in 0..args.writes {
            let sent = Instant::now();
            tasks.push(world.write().await?);
            pause(args.interval.saturating_sub(sent.elapsed())).await?;
        }
        let quiet = collect(tasks).await?;
        watch
            .wait_quiet(Duration::from_secs(3), Duration::from_secs(300))
            .await?;

        // Every game queued at once: Docker's event stream ends, and the
        // controller queues every game (as a resync does), then writes
        // go on until each game was looked at once.
        let inspects = probe.inspects();
        let triggered = Instant::now();
        fake.drop_event_streams();
        let mut tasks = Vec::new();
        while probe.inspects() - inspects < n as u64 && tasks.len() < 5000 {
            let sent = Instant::now();
            tasks.push(world.write().await?);
            pause(args.interval.saturating_sub(sent.elapsed())).await?;
        }
        let burst_secs = triggered.elapsed().as_secs_f64();
        let burst = collect(tasks).await?;
        Ok::<_, super::harness::Error>((converged, quiet, burst, burst_secs))
    }
    .await;
    trimmer.abort();
    controller.stop().await?;
    let (converged, quiet, burst, burst_secs) = measured?;

    let stats = |samples: &[Sample], pick: fn(&Sample) -> Duration| {
        Stats::of(&samples.iter().map(pick).collect::<Vec<_>>())
    };
    let reconcile = |s: &Sample| s.reconcile;
    let watched = |s: &Sample| s.watch;
    let committed = |s: &Sample| s.commit;
    let quiet_ctl = stats(&quiet, reconcile).ok_or_else(|| error("no samples"))?;
    let quiet_base = stats(&quiet, watched).ok_or_else(|| error("no samples"))?;
    let target = if n >= 10_000 {
        Some(Target::AtMost(50.0))
    } else {
        None
    };
    report.row(
        Row::new(format!("{n} games, quiet: p50"), Figure::ms(quiet_ctl.p50))
            .baseline(Figure::ms(quiet_base.p50)),
    );
    let mut row = Row::new(format!("{n} games, quiet: p99"), Figure::ms(quiet_ctl.p99))
        .baseline(Figure::ms(quiet_base.p99));
    if let Some(target) = target {
        row = row.target(target);
    }
    report.row(row);
    let mut burst_json = json!(null);
    if let (Some(ctl), Some(base)) = (stats(&burst, reconcile), stats(&burst, watched)) {
        report.row(
            Row::new(
                format!("{n} games, all queued: p50 (n={})", ctl.n),
                Figure::ms(ctl.p50),
            )
            .baseline(Figure::ms(base.p50)),
        );
        let mut row = Row::new(
            format!("{n} games, all queued: p99 (n={})", ctl.n),
            Figure::ms(ctl.p99),
        )
        .baseline(Figure::ms(base.p99));
        if let Some(target) = target {
            row = row.target(target);
        }
        report.row(row);
        burst_json =
            json!({ "controller": ctl.json(), "baseline": base.json(), "secs": burst_secs });
    }
    report.detail(
        &format!("games_{n}"),
        json!({
            "converge_secs": converged.as_secs_f64(),
            "quiet": {
                "controller": quiet_ctl.json(),
                "baseline": quiet_base.json(),
                "commit": stats(&quiet, committed).map(|s| s.json()),
            },
            "all_queued": burst_json,
        }),
    );
    Ok(())
}
