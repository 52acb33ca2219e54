//! placement: the elected scheduler places N games (100,000 by default) over
//! M registered nodes (1,000) on the real etcd, once per strategy.
//!
//! The nodes are fake: their `NodeRecord`s under `nodes/` and one
//! heartbeat each under `controllers/`, all on one etcd lease this program
//! keeps alive — exactly what the scheduler reads to count a node Ready
//! (the heartbeats are not rewritten: only game-lease take-overs judge a
//! heartbeat by its age, and these holders hold no game lease). The games'
//! documents are written before the controller starts. Then one controller
//! runs in this process (simulated Docker) as node `scheduler` with
//! `--capacity games=0`, so that it places every game and runs none: what
//! is timed is the scheduler alone, from the controller's start until
//! every game has an assignment naming a node.
//!
//! Phases reported: until the controller leads (its session, listing the
//! documents, the election), the claim window (a new leader waits one
//! lease TTL before placing games it did not see created, so that a node
//! running their container can claim them: `--lease-ttl`), and placing
//! (the first assignment written to the last). The baseline is the pure
//! planner (`rtm_core::placement::Placer`) placing the same games in
//! memory: the CPU floor of one scheduling round.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use rtm_core::model::{GameRuntime, Timestamp, parse_documents, to_yaml};
use rtm_core::placement::{Needs, NodeOffer, Placer, Strategy};
use rtm_core::records::lease::Heartbeat;
use rtm_core::records::nodes::{self, Assignment, NodeRecord, PortRange};
use rtm_core::store::{Keys, Store, Txn, WatchEvent};

use super::harness::{Bench, CountingStore, InProcess, Result, error, simulated_docker};
use super::report::{Figure, Report, Row, Target};

#[derive(Debug, Clone, clap::Parser)]
pub(crate) struct Args {
    /// Fake nodes registered (half region=a, half region=b).
    #[arg(long, default_value_t = 1000)]
    pub(crate) nodes: usize,
    /// Games placed (one in five with a nodeSelector, region=a or region=b).
    #[arg(long, default_value_t = 100_000)]
    pub(crate) games: usize,
    /// The strategies, one run each (the controller's --placement-strategy).
    #[arg(long, value_delimiter = ',', default_values_t = ["Packed".to_owned(), "Distributed".to_owned()])]
    pub(crate) strategies: Vec<String>,
    /// Each fake node's --capacity.
    #[arg(long, default_value = "games=150,cpus=64,memory=256Gi")]
    pub(crate) capacity: String,
    /// The controller's --lease-ttl: also the claim window after election
    /// (3s, the least, lost the session while listing 100,000 documents here).
    #[arg(long, default_value = "5s")]
    pub(crate) lease_ttl: String,
}

/// Keys written per bulk transaction (etcd allows 128 operations).
const PUTS_PER_TXN: usize = 100;
/// Bulk transactions in flight at once.
const WRITERS: usize = 8;
/// How long the controller is watched once every game is placed.
const IDLE_WINDOW: Duration = Duration::from_secs(5);

/// This process's CPU time so far, in seconds (user + system, from
/// `/proc/self/stat`, at the usual 100 ticks a second).
fn process_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The fields after the command name (which may hold spaces).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat; 12 and 13 here.
    (ticks(11) + ticks(12)) / 100.0
}

pub(crate) async fn run(args: &Args) -> Result<Report> {
    let mut report = Report::new("placement");
    report.note(format!(
        "{} fake nodes ({}; half region=a, half region=b), {} games (resources cpus \
         0.25/0.5, memory 512Mi/1Gi/2Gi; one in five a nodeSelector: region=a and region=b in turn) written before one \
         in-process controller starts (node `scheduler`, --capacity games=0, --lease-ttl {}, \
         simulated Docker); timed from its start until every game has an assignment naming a \
         node. Baseline: rtm_core::placement::Placer placing the same games in memory, one \
         thread",
        args.nodes, args.capacity, args.games, args.lease_ttl
    ));
    for strategy in &args.strategies {
        let strategy: Strategy = strategy.parse().map_err(error)?;
        let bench = Bench::new(&format!("placement-{strategy}"), "p").await?;
        let result = one(args, &bench, strategy, &mut report).await;
        bench.wipe().await?;
        result?;
    }
    Ok(report)
}

fn node_name(i: usize) -> String {
    format!("node-{i:04}")
}

fn region(i: usize) -> &'static str {
    if i % 2 == 0 { "a" } else { "b" }
}

/// The game documents' variants, by game index: the template (resources,
/// and one in five with a nodeSelector, region=a and region=b in turn).
fn variant(i: usize) -> usize {
    let selector = match (i % 5, (i / 5) % 2) {
        (0, 0) => 1,
        (0, _) => 2,
        _ => 0,
    };
    i % 6 + 6 * selector
}

fn templates() -> Result<Vec<GameRuntime>> {
    let mut docs = Vec::new();
    for selector in ["", "a", "b"] {
        for (cpus, memory) in [
            ("0.25", "512Mi"),
            ("0.5", "1Gi"),
            ("0.25", "2Gi"),
            ("0.5", "512Mi"),
            ("0.25", "1Gi"),
            ("0.5", "2Gi"),
        ] {
            let selector = if selector.is_empty() {
                String::new()
            } else {
                format!("  nodeSelector: {{region: {selector}}}\n")
            };
            let yaml = format!(
                "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: t\n\
                 spec:\n  image: {}\n  resources: {{cpus: \"{cpus}\", memory: {memory}}}\n{selector}",
                super::harness::IMAGE
            );
            docs.push(
                parse_documents(&yaml)?
                    .pop()
                    .ok_or_else(|| error("the template parses to nothing"))?,
            );
        }
    }
    Ok(docs)
}

fn game_doc(templates: &[GameRuntime], name: String, i: usize) -> GameRuntime {
    let mut doc = templates[variant(i)].clone();
    doc.metadata.name = name;
    doc
}

/// One key to write: key, value, and the etcd lease it goes on.
type Put = (String, Vec<u8>, Option<i64>);

/// Writes `puts` in bulk transactions, [`WRITERS`] at a time.
async fn bulk(store: &dyn Store, puts: Vec<Put>) -> Result<usize> {
    let chunks: Vec<Vec<Put>> = puts.chunks(PUTS_PER_TXN).map(<[Put]>::to_vec).collect();
    let count = chunks.len();
    let results: Vec<Result<()>> = futures::stream::iter(chunks)
        .map(|chunk| async move {
            let txn = chunk
                .into_iter()
                .fold(Txn::new(), |txn, (key, value, lease)| match lease {
                    Some(lease) => txn.put_with_lease(key, value, lease),
                    None => txn.put(key, value),
                });
            store.txn(txn).await?;
            Ok(())
        })
        .buffer_unordered(WRITERS)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(count)
}

/// etcd's own counters (`/metrics` of the first endpoint), `None` when not
/// reachable over plain HTTP.
async fn etcd_counters() -> Option<BTreeMap<String, f64>> {
    let endpoint = super::harness::endpoints().into_iter().next()?;
    let address = endpoint.strip_prefix("http://")?.trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await.ok()?;
    let wanted = [
        "etcd_mvcc_put_total",
        "etcd_mvcc_txn_total",
        "etcd_mvcc_range_total",
        "etcd_mvcc_delete_total",
    ];
    Some(
        body.lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(' ')?;
                wanted
                    .contains(&name)
                    .then(|| Some((name.to_owned(), value.trim().parse().ok()?)))?
            })
            .collect(),
    )
}

fn delta(before: &Option<BTreeMap<String, f64>>, after: &Option<BTreeMap<String, f64>>) -> Value {
    let (Some(before), Some(after)) = (before, after) else {
        return Value::Null;
    };
    Value::Object(
        after
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    json!(v - before.get(k).copied().unwrap_or_default()),
                )
            })
            .collect(),
    )
}

/// What the watch of the run's prefix saw.
#[derive(Debug, Default)]
struct Placed {
    /// Each game's node (`None`: unschedulable).
    node: HashMap<String, Option<String>>,
    /// Games with an assignment naming a node.
    assigned: usize,
    first: Option<Instant>,
    last: Option<Instant>,
    elected: Option<Instant>,
    /// Revisions under `assignments/` (etcd write transactions).
    assignment_revisions: u64,
    failed: Option<String>,
}

struct Watcher {
    placed: Arc<Mutex<Placed>>,
    changed: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(placed: &Mutex<Placed>) -> std::sync::MutexGuard<'_, Placed> {
    placed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn watch(store: Arc<dyn Store>, keys: &Keys, from: i64) -> Result<Watcher> {
    let placed = Arc::new(Mutex::new(Placed::default()));
    let changed = Arc::new(tokio::sync::Notify::new());
    let mut stream = store.watch(&keys.root(), from).await?;
    let (assignments, scheduler) = (keys.assignments(), keys.scheduler());
    let task = {
        let (placed, changed) = (placed.clone(), changed.clone());
        tokio::spawn(async move {
            let mut last_revision = 0;
            while let Some(batch) = stream.next().await {
                let now = Instant::now();
                let mut seen = lock(&placed);
                let events = match batch {
                    Ok(events) => events,
                    Err(e) => {
                        seen.failed = Some(e.to_string());
                        break;
                    }
                };
                for event in events {
                    let WatchEvent::Put(kv) = event else { continue };
                    if kv.key == scheduler {
                        seen.elected.get_or_insert(now);
                        continue;
                    }
                    let Some(game) = kv.key.strip_prefix(&assignments) else {
                        continue;
                    };
                    if kv.mod_revision != last_revision {
                        last_revision = kv.mod_revision;
                        seen.assignment_revisions += 1;
                    }
                    let Some(assignment) = nodes::decode::<Assignment>(&kv.value) else {
                        continue;
                    };
                    seen.first.get_or_insert(now);
                    let had = seen
                        .node
                        .insert(game.to_owned(), assignment.node.clone())
                        .flatten()
                        .is_some();
                    if assignment.node.is_some() && !had {
                        seen.assigned += 1;
                        seen.last = Some(now);
                    } else if assignment.node.is_none() && had {
                        seen.assigned -= 1;
                    }
                }
                drop(seen);
                changed.notify_waiters();
            }
            let mut seen = lock(&placed);
            seen.failed.get_or_insert_with(|| "the watch ended".into());
            drop(seen);
            changed.notify_waiters();
        })
    };
    Ok(Watcher {
        placed,
        changed,
        task,
    })
}

impl Watcher {
    async fn wait_assigned(&self, n: usize, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            {
                let seen = lock(&self.placed);
                if seen.assigned >= n {
                    return Ok(());
                }
                if let Some(failed) = &seen.failed {
                    return Err(error(format!("the watch failed: {failed}")));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let seen = lock(&self.placed);
                return Err(error(format!(
                    "{} of {n} games assigned within {limit:?} ({} unschedulable)",
                    seen.assigned,
                    seen.node.values().filter(|n| n.is_none()).count()
                )));
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(left.min(Duration::from_millis(500))) => {}
                _ = super::harness::interrupted().cancelled() => return Err(error("interrupted")),
            }
        }
    }
}

/// Games per node over every fake node (empty ones included), and the nodes used.
fn balance(placed: &Placed, nodes: usize) -> Value {
    let mut per: HashMap<&str, f64> = HashMap::new();
    for node in placed.node.values().flatten() {
        *per.entry(node.as_str()).or_default() += 1.0;
    }
    let counts: Vec<f64> = (0..nodes)
        .map(|i| per.get(node_name(i).as_str()).copied().unwrap_or_default())
        .collect();
    let n = counts.len().max(1) as f64;
    let mean = counts.iter().sum::<f64>() / n;
    let variance = counts.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / n;
    let used: Vec<f64> = counts.iter().copied().filter(|c| *c > 0.0).collect();
    json!({
        "nodes_used": used.len(),
        "min": counts.iter().copied().fold(f64::INFINITY, f64::min),
        "max": counts.iter().copied().fold(0.0, f64::max),
        "mean": mean,
        "stddev": variance.sqrt(),
        "min_of_used": used.iter().copied().fold(f64::INFINITY, f64::min),
        "per_region": {
            "a": (0..nodes).step_by(2).map(|i| counts[i]).sum::<f64>(),
            "b": (1..nodes).step_by(2).map(|i| counts[i]).sum::<f64>(),
        },
    })
}

/// The planner alone: the same nodes and games in memory (what one
/// scheduling round computes, without etcd).
fn planner_alone(
    args: &Args,
    capacity: rtm_core::records::nodes::Capacity,
    templates: &[GameRuntime],
    strategy: Strategy,
) -> Result<Duration> {
    let needs: Vec<Needs> = templates.iter().map(Needs::of).collect();
    let port_range: PortRange = "17000-17999".parse().map_err(error)?;
    let started = Instant::now();
    let mut placer = Placer::new(
        (0..args.nodes)
            .map(|i| NodeOffer {
                name: node_name(i),
                labels: BTreeMap::from([("region".to_owned(), region(i).to_owned())]),
                capacity,
                port_range,
                ready: true,
            })
            .collect(),
        strategy,
    );
    for i in 0..args.games {
        placer
            .place(&needs[variant(i)], None)
            .map_err(|e| error(format!("the planner alone cannot place game {i}: {e}")))?;
    }
    Ok(started.elapsed())
}

async fn one(args: &Args, bench: &Bench, strategy: Strategy, report: &mut Report) -> Result<()> {
    let store: &dyn Store = bench.store.as_ref();
    let keys = &bench.keys;
    let capacity: rtm_core::records::nodes::Capacity = args.capacity.parse().map_err(error)?;
    let templates = templates()?;
    let planner =
        tokio::task::block_in_place(|| planner_alone(args, capacity, &templates, strategy))?;

    // The fake nodes, live on one lease kept alive.
    let lease = store.grant_lease(Duration::from_secs(30)).await?.id;
    let keeper = {
        let store = bench.store.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let _ = store.keep_alive(lease).await;
            }
        })
    };
    let result = async {
        let now = Timestamp::now();
        let mut puts = Vec::new();
        for i in 0..args.nodes {
            let name = node_name(i);
            let holder = format!("{name}-bench");
            let record = NodeRecord {
                name: name.clone(),
                labels: BTreeMap::from([("region".to_owned(), region(i).to_owned())]),
                capacity,
                address: format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                port_range: "17000-17999".parse().map_err(error)?,
                holder: holder.clone(),
                engine: None,
                version: env!("CARGO_PKG_VERSION").to_owned(),
                registered_at: now,
                ttl_ms: 30_000,
                self_fence_after_ms: Some(30_000),
                lost_at: None,
            };
            puts.push((keys.node(&name), nodes::encode(&record), None));
            let mut heartbeat = Heartbeat::new(&holder, Some(&name));
            heartbeat.renewed_at = Some(now);
            heartbeat.ttl_ms = Some(30_000);
            puts.push((keys.controller(&holder), nodes::encode(&heartbeat), Some(lease)));
        }
        let written = Instant::now();
        bulk(store, puts).await?;
        let nodes_secs = written.elapsed().as_secs_f64();

        let written = Instant::now();
        let docs: Vec<Put> = (0..args.games)
            .map(|i| {
                let doc = game_doc(&templates, bench.game(i), i);
                (keys.gameruntime(&doc.metadata.name), to_yaml(&doc).into_bytes(), None)
            })
            .collect();
        let doc_txns = bulk(store, docs).await?;
        let docs_secs = written.elapsed().as_secs_f64();
        let from = store.revision().await? + 1;

        let watcher = watch(bench.store.clone(), keys, from).await?;
        let etcd_before = etcd_counters().await;
        let counting = Arc::new(CountingStore::new(bench.store.clone()));
        let (fake, trimmer) = simulated_docker(Duration::from_millis(1));
        let config = rtm_controller::config::ControllerConfig::load([
            "rtmanager",
            "--prefix",
            keys.prefix(),
            "--metrics-addr",
            "127.0.0.1:0",
            "--node-name",
            "scheduler",
            "--capacity",
            "games=0",
            "--node-labels",
            "role=scheduler",
            "--placement-strategy",
            &strategy.to_string(),
            "--lease-ttl",
            &args.lease_ttl,
        ])?;
        let ttl = config.lease_ttl;
        let started = Instant::now();
        let controller = InProcess::start(config, keys, counting.clone(), Arc::new(fake));
        let limit = Duration::from_secs(120) + Duration::from_millis(5) * u32::try_from(args.games)?;
        let waited = watcher.wait_assigned(args.games, limit).await;
        let done = Instant::now();
        let etcd_after = etcd_counters().await;
        let calls = counting.counters.snapshot();
        let writes = controller.metrics.placement_writes.get();
        // Once everything is placed: what the leader's later rounds cost
        // (this process's CPU; the benchmark itself is idle meanwhile).
        let cpu0 = process_cpu();
        let idle_from = Instant::now();
        if waited.is_ok() {
            super::harness::pause(IDLE_WINDOW).await?;
        }
        let idle_cores = (process_cpu() - cpu0) / idle_from.elapsed().as_secs_f64();
        let idle_writes = controller.metrics.placement_writes.get() - writes;
        let stopped = controller.stop().await;
        trimmer.abort();
        waited?;
        stopped?;

        let seen = lock(&watcher.placed);
        let elected = seen.elected.ok_or_else(|| error("no scheduler key seen"))?;
        let first = seen.first.ok_or_else(|| error("no assignment seen"))?;
        let last = seen.last.unwrap_or(done);
        let total = last - started;
        let placing = last - first;
        let n = args.games as f64;
        let (txns, txn_time) = calls.get("txn").copied().unwrap_or_default();
        let etcd = delta(&etcd_before, &etcd_after);
        let balance = balance(&seen, args.nodes);
        let label = |what: &str| format!("{what} ({strategy}, {} games, {} nodes)", args.games, args.nodes);
        let full_size = args.games == 100_000 && args.nodes == 1000;
        let mut row = Row::new(label("placed, from the controller's start"), Figure::Seconds(total.as_secs_f64()));
        if full_size {
            row = row.target(Target::AtMost(30.0));
        }
        report.row(row);
        report.row(Row::new(
            label("  until elected (session, list, election)"),
            Figure::Seconds((elected - started).as_secs_f64()),
        ));
        report.row(Row::new(
            label("  elected → first assignment (claim window)"),
            Figure::Seconds((first - elected).as_secs_f64()),
        ));
        report.row(
            Row::new(
                label("  placing: first → last assignment"),
                Figure::Seconds(placing.as_secs_f64()),
            )
            .baseline(Figure::Seconds(planner.as_secs_f64())),
        );
        report.row(Row::new(
            label("placements/s while placing"),
            Figure::Count((n / placing.as_secs_f64().max(1e-9)).round()),
        ));
        report.row(Row::new(
            label("assignment writes per placement"),
            Figure::Count(writes as f64 / n),
        ));
        report.row(Row::new(
            label("etcd txns under assignments/ per placement"),
            Figure::Count(seen.assignment_revisions as f64 / n),
        ));
        if let Some(puts) = etcd["etcd_mvcc_put_total"].as_f64() {
            report.row(Row::new(label("etcd puts per placement (etcd's count)"), Figure::Count(puts / n)));
        }
        report.row(Row::new(
            label("controller txn mean latency"),
            Figure::Millis(txn_time.as_secs_f64() * 1000.0 / (txns.max(1) as f64)),
        ));
        report.row(Row::new(
            label("controller CPU once all are placed (cores)"),
            Figure::Count(idle_cores),
        ));
        report.row(
            Row::new(
                label("assignment writes once all are placed"),
                Figure::Count(idle_writes as f64),
            )
            .target(Target::AtMost(0.0)),
        );
        for (what, key) in [("nodes used", "nodes_used"), ("games per node, max", "max"), ("games per node, stddev", "stddev")] {
            report.row(Row::new(label(what), Figure::Count(balance[key].as_f64().unwrap_or_default())));
        }
        report.detail(
            &format!("{strategy}"),
            json!({
                "games": args.games,
                "nodes": args.nodes,
                "capacity": args.capacity,
                "lease_ttl_secs": ttl.as_secs_f64(),
                "register_nodes_secs": nodes_secs,
                "write_docs_secs": docs_secs,
                "doc_txns": doc_txns,
                "total_secs": total.as_secs_f64(),
                "until_elected_secs": (elected - started).as_secs_f64(),
                "claim_window_secs": (first - elected).as_secs_f64(),
                "placing_secs": placing.as_secs_f64(),
                "planner_alone_secs": planner.as_secs_f64(),
                "idle_window_secs": IDLE_WINDOW.as_secs_f64(),
                "idle_cpu_cores": idle_cores,
                "idle_assignment_writes": idle_writes,
                "assignment_writes_metric": writes,
                "assignment_txn_revisions": seen.assignment_revisions,
                "controller_store_calls": super::harness::counters_delta(&BTreeMap::new(), &calls, 1.0),
                "etcd_counters_delta": etcd,
                "balance": balance,
            }),
        );
        Ok(())
    }
    .await;
    keeper.abort();
    let _ = store.revoke_lease(lease).await;
    result
}
