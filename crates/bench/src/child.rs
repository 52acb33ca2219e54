//! The scale scenario's child processes, so that the peak RSS measured is
//! the controller's alone (not the benchmark's bookkeeping):
//!
//! - `child-controller`: the controller on the real etcd with a simulated
//!   Docker (`FakeRuntime` with per-call latency). It answers `mark` on
//!   stdin with one JSON line of counters, and `stop` (or EOF) by draining
//!   and printing a last line.
//! - `child-fake-baseline`: the baseline: the same number of containers
//!   created and started directly in the simulated Docker, with the same
//!   latency and concurrency; prints one JSON line (time, RSS).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rtm_controller::lifecycle::{ContainerPolicy, container_spec, new_id};
use rtm_controller::runtime::ContainerRuntime;
use rtm_core::store::{Keys, Store, Txn};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use super::harness::{
    CountingRuntime, CountingStore, IMAGE, InProcess, Result, connect_etcd, controller_config,
    counters_delta, game_doc, rss_mib, simulated_docker,
};

#[derive(Debug, Clone, clap::Parser)]
pub(crate) struct ControllerArgs {
    /// The run's key prefix.
    #[arg(long)]
    pub(crate) prefix: String,
    /// Simulated Docker latency per call.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) docker_latency: Duration,
    /// Flags passed on to the controller (e.g. `--concurrency=8`).
    #[arg(long = "controller-flag", allow_hyphen_values = true)]
    pub(crate) controller_flags: Vec<String>,
}

pub(crate) async fn controller(args: &ControllerArgs) -> Result<()> {
    let keys = Keys::new(&args.prefix)?;
    let store = Arc::new(CountingStore::new(Arc::new(connect_etcd().await?)));
    let (docker, trimmer) = simulated_docker(args.docker_latency);
    let counted = Arc::new(CountingRuntime::new(Arc::new(docker)));
    let flags: Vec<&str> = args.controller_flags.iter().map(String::as_str).collect();
    let config = controller_config(&keys, &flags)?;
    let controller = InProcess::start(config, &keys, store.clone(), counted.clone());
    println!("{}", json!({ "event": "started" }));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let empty = Default::default();
    while let Ok(Some(line)) = lines.next_line().await {
        match line.trim() {
            "mark" => println!("{}", snapshot(&controller, &store, &counted, &empty)),
            _ => break,
        }
    }
    let last = snapshot(&controller, &store, &counted, &empty);
    trimmer.abort();
    controller.stop().await?;
    println!("{last}");
    Ok(())
}

fn snapshot(
    controller: &InProcess,
    store: &CountingStore,
    runtime: &CountingRuntime,
    empty: &std::collections::BTreeMap<&'static str, (u64, Duration)>,
) -> Value {
    let (rss, hwm) = rss_mib(None);
    let m = &controller.metrics;
    let reconciles: u64 = ["ok", "failed", "timed_out", "panicked"]
        .iter()
        .map(|label| m.reconciles.with_label_values(&[label]).get())
        .sum();
    json!({
        "rss_mib": rss,
        "hwm_mib": hwm,
        "store": counters_delta(empty, &store.counters.snapshot(), 1.0),
        "docker": counters_delta(empty, &runtime.counters.snapshot(), 1.0),
        "reconciles": reconciles,
        "reconciles_failed": m.reconciles.with_label_values(&["failed"]).get(),
        "games_running": controller.games_in("Running"),
        "queue_depth": m.queue_depth.get(),
        "active_workers": m.active_workers.get(),
        "status_writes": m.status_writes.get(),
    })
}

#[derive(Debug, Clone, clap::Parser)]
pub(crate) struct BaselineArgs {
    #[arg(long)]
    pub(crate) games: usize,
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) docker_latency: Duration,
    #[arg(long)]
    pub(crate) concurrency: usize,
    /// Where to write one status-sized value per game in etcd.
    #[arg(long)]
    pub(crate) etcd_prefix: String,
}

pub(crate) async fn baseline(args: &BaselineArgs) -> Result<()> {
    let keys = Keys::new(&args.etcd_prefix)?;
    let store = CountingStore::new(Arc::new(connect_etcd().await?));
    let status = serde_json::to_vec(&running_status())?;
    let (docker, trimmer) = simulated_docker(args.docker_latency);
    let pid = std::process::id();
    let started = Instant::now();
    let failures = futures::stream::iter(0..args.games)
        .map(|i| {
            let (docker, keys, store, status) = (&docker, &keys, &store, &status);
            async move {
                let doc = game_doc(&format!("bench-{pid}-s{i}"))?;
                let spec = container_spec(
                    &doc,
                    "/rtm-bench/baseline",
                    &new_id(),
                    &ContainerPolicy::default(),
                );
                let id = docker.create(&spec).await?;
                docker.start(&id).await?;
                let key = keys.status(&doc.metadata.name);
                store.txn(Txn::new().put(key, status.clone())).await?;
                Ok::<_, super::harness::Error>(())
            }
        })
        .buffer_unordered(args.concurrency)
        .filter(|r| futures::future::ready(r.is_err()))
        .count()
        .await;
    let secs = started.elapsed().as_secs_f64();
    trimmer.abort();
    let (rss, hwm) = rss_mib(None);
    let (calls, took) = store
        .counters
        .snapshot()
        .get("txn")
        .copied()
        .unwrap_or_default();
    let etcd_ms = took.as_secs_f64() * 1000.0 / calls.max(1) as f64;
    println!(
        "{}",
        json!({ "secs": secs, "rss_mib": rss, "hwm_mib": hwm, "failures": failures, "etcd_ms": etcd_ms })
    );
    Ok(())
}

/// A status record the size of a running game's.
fn running_status() -> rtm_core::model::GameRuntimeStatus {
    let mut status = rtm_core::model::GameRuntimeStatus {
        container_id: Some("0".repeat(64)),
        image_ref: Some(IMAGE.to_owned()),
        hostname: Some("bench-0000000-s00000".to_owned()),
        node: Some("bench".to_owned()),
        observed_generation: Some(1),
        ..Default::default()
    };
    let now = std::time::SystemTime::now();
    status.set_phase(rtm_core::model::Phase::Running, now);
    status.set_condition(rtm_core::model::READY, true, "ContainerRunning", "", now);
    status
}
