//! scale: N games (10,000 by default; 100,000 with `--games 100000`)
//! against the real etcd with a simulated Docker, converged from scratch by
//! a controller in a child process (so its peak RSS is its own), then one
//! steady-state resync. The baseline, run in the same invocation, creates
//! and starts the same containers directly in the simulated Docker with
//! the same latency and concurrency: the floor for the controller's time.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::harness::{Bench, PrefixWatch, Result, error, running_at};
use super::report::{Figure, Report, Row, Target};

#[derive(Debug, Clone, clap::Parser)]
pub(crate) struct Args {
    /// Games, one run each (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [10_000usize])]
    pub(crate) games: Vec<usize>,
    /// Simulated Docker latency per call.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    pub(crate) docker_latency: Duration,
    /// The controller's --concurrency (reconciles at once; its default).
    #[arg(long, default_value_t = 32)]
    pub(crate) concurrency: usize,
    /// The controller's --resync period; one resync is measured after
    /// convergence.
    #[arg(long, default_value = "60s")]
    pub(crate) resync: String,
}

pub(crate) async fn run(args: &Args) -> Result<Report> {
    let mut report = Report::new("scale");
    report.note(format!(
        "simulated Docker: {:?} per call; controller --concurrency {} --resync {}; baseline = the \
         same containers created+started directly in the simulated Docker, plus one status-sized \
         etcd write each, at the same concurrency (mean of a run before and one after the \
         controller's)",
        args.docker_latency, args.concurrency, args.resync
    ));
    for &n in &args.games {
        let bench = Bench::new(&format!("scale{n}"), "s").await?;
        let result = one(args, &bench, n, &mut report).await;
        bench.wipe().await?;
        wipe_baseline(&bench).await?;
        result?;
    }
    Ok(report)
}

/// The controller child and its stdin/stdout protocol.
struct ControllerChild {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl ControllerChild {
    async fn spawn(args: &Args, bench: &Bench) -> Result<ControllerChild> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .arg("child-controller")
            .arg(format!("--prefix={}", bench.keys.prefix()))
            .arg(format!(
                "--docker-latency={}",
                humantime::format_duration(args.docker_latency)
            ))
            .arg(format!(
                "--controller-flag=--concurrency={}",
                args.concurrency
            ))
            .arg(format!("--controller-flag=--resync={}", args.resync))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().ok_or_else(|| error("no child stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| error("no child stdout"))?;
        let mut this = ControllerChild {
            child,
            stdin,
            stdout: BufReader::new(stdout).lines(),
        };
        this.line().await?;
        Ok(this)
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn line(&mut self) -> Result<Value> {
        let line = tokio::time::timeout(Duration::from_secs(180), self.stdout.next_line())
            .await
            .map_err(|_| error("the controller child did not answer within 180 s"))??
            .ok_or_else(|| error("the controller child exited"))?;
        Ok(serde_json::from_str(&line)?)
    }

    async fn mark(&mut self) -> Result<Value> {
        self.stdin.write_all(b"mark\n").await?;
        self.line().await
    }

    /// Waits until the controller has nothing queued or running (twice in
    /// a row: the depth gauge is refreshed every second).
    async fn idle(&mut self) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(900);
        let mut idle_once = false;
        loop {
            let snapshot = self.mark().await?;
            if is_idle(&snapshot) {
                if idle_once {
                    return Ok(snapshot);
                }
                idle_once = true;
            } else {
                idle_once = false;
            }
            if Instant::now() > deadline {
                return Err(error("the controller did not settle within 900 s"));
            }
            super::harness::pause(Duration::from_millis(1100)).await?;
        }
    }

    async fn stop(mut self) -> Result<Value> {
        self.stdin.write_all(b"stop\n").await?;
        let last = self.line().await?;
        let _ = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await;
        Ok(last)
    }
}

fn is_idle(snapshot: &Value) -> bool {
    snapshot["queue_depth"].as_i64() == Some(0) && snapshot["active_workers"].as_i64() == Some(0)
}

/// The mean time of one etcd request (reads and writes) in a snapshot.
fn etcd_mean_ms(snapshot: &Value) -> f64 {
    let (calls, ms) = ["get", "list", "newest", "txn"]
        .iter()
        .map(|m| &snapshot["store"][m])
        .fold((0.0, 0.0), |(c, t), v| {
            (
                c + v["calls"].as_f64().unwrap_or_default(),
                t + v["ms"].as_f64().unwrap_or_default(),
            )
        });
    if calls > 0.0 { ms / calls } else { 0.0 }
}

/// Runs the baseline child: the same containers created and started in the
/// simulated Docker, each with one status-sized etcd write (the least any
/// controller records), at the controller's concurrency.
async fn baseline(args: &Args, bench: &Bench, n: usize) -> Result<Value> {
    let result = run_baseline(args, bench, n).await;
    // Its keys go at once (also when it failed), so that they never weigh
    // on the controller run.
    wipe_baseline(bench).await?;
    result
}

async fn wipe_baseline(bench: &Bench) -> Result<()> {
    let keys = rtm_core::store::Keys::new(&baseline_prefix(bench))?;
    super::harness::delete_gently(bench.store.as_ref(), &keys.root()).await
}

async fn run_baseline(args: &Args, bench: &Bench, n: usize) -> Result<Value> {
    let output = tokio::process::Command::new(std::env::current_exe()?)
        .arg("child-fake-baseline")
        .arg(format!("--games={n}"))
        .arg(format!(
            "--docker-latency={}",
            humantime::format_duration(args.docker_latency)
        ))
        .arg(format!("--concurrency={}", args.concurrency))
        .arg(format!("--etcd-prefix={}", baseline_prefix(bench)))
        .kill_on_drop(true)
        .output();
    let output = tokio::select! {
        _ = super::harness::interrupted().cancelled() => return Err(error("interrupted")),
        output = output => output?,
    };
    serde_json::from_slice(&output.stdout).map_err(|e| {
        error(format!(
            "the baseline child printed no result ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    })
}

fn baseline_prefix(bench: &Bench) -> String {
    format!("{}-baseline", bench.keys.prefix())
}

fn calls(snapshot: &Value, group: &str) -> f64 {
    snapshot[group]
        .as_object()
        .map(|methods| {
            methods
                .iter()
                .filter(|(method, _)| !matches!(method.as_str(), "keep_alive" | "watch"))
                .map(|(_, v)| v["calls"].as_f64().unwrap_or_default())
                .sum()
        })
        .unwrap_or_default()
}

fn reads(snapshot: &Value) -> f64 {
    ["get", "list", "newest"]
        .iter()
        .map(|m| snapshot["store"][m]["calls"].as_f64().unwrap_or_default())
        .sum()
}

async fn one(args: &Args, bench: &Bench, n: usize, report: &mut Report) -> Result<()> {
    let docs = (0..n)
        .map(|i| bench.doc(&bench.game(i)))
        .collect::<Result<Vec<_>>>()?;
    let created = Instant::now();
    let (_, highest) = bench.create_docs(docs, 64).await?;
    let create_secs = created.elapsed().as_secs_f64();
    // The baseline runs before and after the controller; their mean is
    // the comparison (the machine's load changes meanwhile).
    let before = baseline(args, bench, n).await?;
    let watch =
        PrefixWatch::start(bench.store.clone(), &bench.keys, highest + 1, running_at(1)).await?;
    let run = run_controller(args, bench, &watch, n).await?;
    let after = baseline(args, bench, n).await?;
    rows(report, n, &run, [&before, &after]);
    report.detail(
        &format!("games_{n}"),
        json!({
            "create_docs_secs": create_secs,
            "converge_secs": run.converged.converge.as_secs_f64(),
            "converge_50pct_secs": run.converged.at50.as_secs_f64(),
            "converge_90pct_secs": run.converged.at90.as_secs_f64(),
            "hwm_mib": run.hwm,
            "peak_rss_sampled_mib": run.peak_sampled,
            "baseline": { "before": before, "after": after },
            "writes_until_settled": run.converged.writes,
            "steady_resync_writes": run.resynced.steady_writes,
            "resync_secs": run.resynced.resync.as_secs_f64(),
            "at_converged": run.converged.at_converged,
            "settled": run.converged.settled,
            "after_resync": run.resynced.after_resync,
            "last": run.last,
        }),
    );
    Ok(())
}

/// The controller's run from scratch to convergence.
#[derive(Debug)]
struct Converged {
    /// Until every game converged, half of them, nine in ten.
    converge: Duration,
    at50: Duration,
    at90: Duration,
    /// The child's counters when the last game converged.
    at_converged: Value,
    /// The etcd writes until it settled.
    writes: Value,
    /// The child's counters once it had nothing left to do.
    settled: Value,
}

/// The steady-state resync after convergence.
#[derive(Debug)]
struct Resynced {
    /// The child's counters after it.
    after_resync: Value,
    /// From its first reconcile until every game was reconciled.
    resync: Duration,
    /// etcd writes it made (none is the target).
    steady_writes: u64,
}

/// What the controller child did and how much memory it took.
#[derive(Debug)]
struct ControllerRun {
    converged: Converged,
    resynced: Resynced,
    /// The child's last line, printed as it stopped.
    last: Value,
    /// The peak RSS the child reports (VmHWM), else the sampled peak.
    hwm: f64,
    peak_sampled: f64,
}

/// Runs the controller child on the games: converges them from scratch,
/// then one steady-state resync.
async fn run_controller(
    args: &Args,
    bench: &Bench,
    watch: &PrefixWatch,
    n: usize,
) -> Result<ControllerRun> {
    let started = Instant::now();
    let mut child = ControllerChild::spawn(args, bench).await?;
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (pid, peak) = (child.pid(), peak_rss.clone());
        tokio::spawn(async move {
            loop {
                let (rss, _) = super::harness::rss_mib(pid);
                peak.fetch_max((rss * 1024.0) as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let measured = async {
        let converged = converge(&mut child, watch, n, started).await?;
        let resynced = resync(&mut child, watch, n, &converged.settled).await?;
        Ok::<_, super::harness::Error>((converged, resynced))
    }
    .await;
    let last = child.stop().await;
    sampler.abort();
    let (converged, resynced) = measured?;
    let last = last?;
    let peak_sampled = peak_rss.load(Ordering::Relaxed) as f64 / 1024.0;
    let hwm = last["hwm_mib"].as_f64().unwrap_or(peak_sampled);
    Ok(ControllerRun {
        converged,
        resynced,
        last,
        hwm,
        peak_sampled,
    })
}

/// Waits until every game converged, then until the controller settled.
async fn converge(
    child: &mut ControllerChild,
    watch: &PrefixWatch,
    n: usize,
    started: Instant,
) -> Result<Converged> {
    let limit = Duration::from_secs(120) + Duration::from_millis(50) * u32::try_from(n)?;
    watch
        .wait(&format!("{n} games to converge"), limit, |seen| {
            seen.converged() >= n
        })
        .await?;
    let (converge, at50, at90) = watch.with(|seen| {
        let at = |share: f64| {
            let index = ((n as f64 * share).ceil() as usize).clamp(1, n) - 1;
            seen.converged_at[index] - started
        };
        (at(1.0), at(0.5), at(0.9))
    });
    let at_converged = child.mark().await?;
    watch
        .wait_quiet(Duration::from_secs(3), Duration::from_secs(300))
        .await?;
    // Converged games are looked at once more (the follow-up after an
    // action); the controller is settled when it has nothing to do.
    let settled = child.idle().await?;
    let writes = watch.with(|seen| seen.counts_json());
    Ok(Converged {
        converge,
        at50,
        at90,
        at_converged,
        writes,
        settled,
    })
}

/// One steady-state resync: the next periodic sweep, every game
/// reconciled once more after `settled`.
async fn resync(
    child: &mut ControllerChild,
    watch: &PrefixWatch,
    n: usize,
    settled: &Value,
) -> Result<Resynced> {
    let reconciles0 = settled["reconciles"].as_f64().unwrap_or_default();
    let writes0 = watch.with(|seen| seen.revisions);
    let mut resync_began = None;
    let resync_limit = Instant::now() + Duration::from_secs(900);
    let after_resync = loop {
        let snapshot = child.mark().await?;
        let done = snapshot["reconciles"].as_f64().unwrap_or_default() - reconciles0;
        if done > 0.0 && resync_began.is_none() {
            resync_began = Some(Instant::now());
        }
        if done >= n as f64 && is_idle(&snapshot) {
            break snapshot;
        }
        if Instant::now() > resync_limit {
            return Err(error("no full resync within 900 s"));
        }
        super::harness::pause(Duration::from_millis(250)).await?;
    };
    let resync = resync_began
        .map(|began| began.elapsed())
        .unwrap_or_default();
    watch
        .wait_quiet(Duration::from_secs(2), Duration::from_secs(60))
        .await?;
    let steady_writes = watch.with(|seen| seen.revisions) - writes0;
    Ok(Resynced {
        after_resync,
        resync,
        steady_writes,
    })
}

/// The table's rows for `n` games; `baselines` are the runs before and
/// after the controller's.
fn rows(report: &mut Report, n: usize, run: &ControllerRun, baselines: [&Value; 2]) {
    let mean = |key: &str| {
        baselines
            .iter()
            .map(|b| b[key].as_f64().unwrap_or_default())
            .sum::<f64>()
            / 2.0
    };
    let (converged, resynced) = (&run.converged, &run.resynced);
    let nf = n as f64;
    let revisions = converged.writes["revisions"].as_f64().unwrap_or_default();
    let label = |what: &str| format!("{what} ({n} games)");
    let ten_k = n == 10_000;
    let mut row = Row::new(
        label("converge from scratch"),
        Figure::Seconds(converged.converge.as_secs_f64()),
    )
    .baseline(Figure::Seconds(mean("secs")));
    if ten_k {
        row = row.target(Target::AtMost(30.0));
    }
    report.row(row);
    let mut row =
        Row::new(label("peak RSS"), Figure::MiB(run.hwm)).baseline(Figure::MiB(mean("hwm_mib")));
    if ten_k {
        row = row.target(Target::AtMost(150.0));
    }
    report.row(row);
    let settled = &converged.settled;
    let per_game = [
        ("etcd writes per converged game", revisions),
        ("etcd reads per converged game", reads(settled)),
        ("Docker calls per converged game", calls(settled, "docker")),
    ];
    for (what, count) in per_game {
        report.row(Row::new(label(what), Figure::Count(count / nf)));
    }
    // The machine's etcd speed during the run: convergence time scales
    // with it, so compare runs only at similar figures.
    report.row(
        Row::new(
            label("etcd request, mean, while converging"),
            Figure::Millis(etcd_mean_ms(settled)),
        )
        .baseline(Figure::Millis(mean("etcd_ms"))),
    );
    report.row(
        Row::new(
            label("etcd writes in a steady-state resync"),
            Figure::Count(resynced.steady_writes as f64),
        )
        .target(Target::AtMost(0.0)),
    );
    report.row(Row::new(
        label("steady-state resync duration"),
        Figure::Seconds(resynced.resync.as_secs_f64()),
    ));
    report.row(Row::new(
        label("etcd reads per game in a resync"),
        Figure::Count((reads(&resynced.after_resync) - reads(settled)) / nf),
    ));
}
