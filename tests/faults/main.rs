//! Fault injection with real processes: the `rtmanager` binary (built
//! with the `failpoints` feature by `scripts/test`), etcd and dockerd are
//! crashed, frozen, restarted and raced, and a monitor polls Docker and
//! etcd the whole time (`common/faults.rs`). The promise under test:
//! whatever fails, every game converges to its desired state, never runs
//! twice, and its history tells the truth.
//!
//! | scenario | faults |
//! | --- | --- |
//! | crash | the controller aborts at each step of a restart (`RTM_FAILPOINT`) |
//! | freeze | SIGSTOP a controller past its lease TTL while another runs, then SIGCONT |
//! | etcd | restart a private etcd during bursts of restarts |
//! | etcd cluster | kill the leader of a private 3-member cluster, twice |
//! | dockerd | restart a private dockerd with games running, and during restarts |
//! | hands | `docker kill`/`rm`/`stop` by hand, foreign containers, an orphan |
//! | soak | K random faults on M games, seeded: the classic set (all of the above) and the hands set (records deleted or garbled, forged leases, containers paused, renamed, stopped, killed, the image untagged) |
//!
//! Invariants, checked during every scenario by the monitor: at most one
//! container per game at any instant; no container without a document
//! outlives the GC grace plus a margin; foreign containers are untouched;
//! no running container ends (is replaced, stopped or removed) unless the
//! test did something that explains it: a request the history shows an
//! operation answering, a hand on the container or the engine
//! (`invariants::judge_replacements` says exactly what counts). After the
//! faults stop: every game converges within a bound; every history entry
//! has an outcome (recovery resolves the interrupted ones as `aborted`);
//! every container is accounted for by a start in the history; in the
//! soak, a controller frozen past its session wrote nothing after another
//! took over (the fencing audit).
//!
//! The soak prints its seed and replays with `RTM_FAULTS_SEED=<seed>`;
//! `RTM_FAULTS_SET` (`all`, `classic`, `hands`), `RTM_FAULTS_SOAK_FAULTS`
//! and `RTM_FAULTS_SOAK_PHASE` shape a longer hunt (`scripts/soak`).
//!
//! The private etcd and dockerd live in temporary directories and are
//! stopped and deleted at the end; the shared etcd and the machine's
//! Docker engine are only used, never signalled. Tests run one at a time
//! (they time leases and grace periods in seconds). Ignored by a bare
//! `cargo test` (except the replacement check's own unit tests, at the
//! end); `scripts/test` runs them.

use rtm_testkit as common;
use rtm_testkit::dockerd;
use rtm_testkit::etcd_cluster;
mod invariants;
use rtm_testkit::process;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rtm_controller::runtime::{ContainerRuntime, DockerRuntime, container_name};
use rtm_core::ErrorCode;
use rtm_core::model::{DesiredState, OpKind, Outcome};
use rtm_core::store::{Keys, Store};

use common::docker::{Cleanup, IMAGE_1, IMAGE_2, docker_cli, ensure_test_images};
use common::{etcd_endpoints, unique_keys};
use dockerd::PrivateDockerd;
use etcd_cluster::EtcdCluster;
use invariants::{
    Deed, Foreign, Installation, Monitor, Rng, WriteLog, audit_stale_holder, block, connect_docker,
    connect_store, controller_log, doc, game_name, has_exited, process_state, signal,
};
use process::{
    ControllerOptions, ControllerProcess, WipeOnDrop, describe, eventually, short, timeline,
};

/// The session lease TTL of every controller here (the minimum allowed):
/// a crashed or frozen controller's games free up fast.
const LEASE_TTL: Duration = Duration::from_secs(3);

/// The controllers' resync period and GC grace.
const RESYNC: Duration = Duration::from_secs(2);
const GC_GRACE: Duration = Duration::from_secs(3);

/// The longest a container without a document may live: the grace, up to
/// two jittered resyncs (the sweep notices an orphan, then removes it once
/// the grace has passed), and margin for a controller restarted meanwhile
/// (its sweep starts counting afresh) on a loaded machine.
const GC_BOUND: Duration = Duration::from_secs(20);

/// How long a game may take to converge once the faults stop: a recreate
/// takes about a second; the rest is slack for per-game retry backoff
/// (1 s doubling) after an outage, one crash-loop backoff (10 s) and a
/// loaded machine.
const CONVERGE: Duration = Duration::from_secs(60);

/// One scenario at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serial(scenario: &str) -> tokio::sync::MutexGuard<'static, ()> {
    let asked = Instant::now();
    let guard = SERIAL.lock().await;
    eprintln!(
        "[{scenario}] running from {} (waited {:?} for the other scenarios)",
        humantime::format_rfc3339_millis(std::time::SystemTime::now()),
        asked.elapsed()
    );
    guard
}

/// A controller on `keys` with this suite's short timings, reaching etcd
/// at `etcd` and Docker at `docker_host` (the machine's engine when
/// `None`). Its node name is `name`, so its holder id (`<name>-<hex>`) in
/// leases and history tells which controller did what.
fn controller(
    keys: &Keys,
    name: &str,
    etcd: &[String],
    docker_host: Option<&str>,
) -> ControllerOptions {
    let options = ControllerOptions::new(keys, name)
        .env("RTM_ETCD_ENDPOINTS", &etcd.join(","))
        .env(
            "RTM_LEASE_TTL",
            &humantime::format_duration(LEASE_TTL).to_string(),
        )
        .env(
            "RTM_RESYNC",
            &humantime::format_duration(RESYNC).to_string(),
        )
        .env(
            "RTM_GC_GRACE",
            &humantime::format_duration(GC_GRACE).to_string(),
        )
        // One Docker engine, one node: the controllers share it (each takes over from
        // another at once) and are told apart by their names.
        .env("RTM_NODE_NAME", FAULTS_NODE)
        .env("RTM_CONTROLLER_NAME", name);
    match docker_host {
        Some(host) => options.env("DOCKER_HOST", host),
        None => options,
    }
}

/// The node every controller of the fault tests on one engine serves.
const FAULTS_NODE: &str = "faults";

/// SIGTERM and a clean exit.
async fn stop_gracefully(controller: &mut ControllerProcess) {
    controller.terminate();
    let status = controller.wait_exit(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "controller {} exited with {status} after SIGTERM{}",
        controller.name(),
        controller.log_tail()
    );
}

fn names(keys: &Keys, games: &[String]) -> Vec<String> {
    games
        .iter()
        .map(|g| container_name(keys.prefix(), g))
        .collect()
}

fn cleanup(names: &[String]) -> Cleanup {
    Cleanup::new(&names.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Asks every game in `games` for a restart with `token`.
async fn burst(installation: &Installation, games: &[String], token: &str) {
    for game in games {
        installation
            .request_restart(game, token, &format!("REQ-{token}-{game}"))
            .await;
    }
}

// ---------------------------------------------------------------------------
// Controller crash at every step of a restart.

/// What makes the crashing controller run the operation it dies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// A restart requested on a running game (`rtctl restart`).
    Restart,
    /// A new document: the first start.
    Create,
    /// `spec.state: Stopped` on a running game.
    Stop,
}

struct CrashPoint {
    step: &'static str,
    tag: &'static str,
    trigger: Trigger,
    /// The operations the crash interrupts, which recovery resolves as
    /// aborted: for a restart, the outer entry and the inner stop or start
    /// it was in.
    interrupted: &'static [&'static str],
}

/// Every failpoint inside a restart, then the start and stop ones in a
/// plain start and stop.
const CRASH_POINTS: [CrashPoint; 9] = [
    CrashPoint {
        step: "stop.after_stop",
        tag: "sas",
        trigger: Trigger::Restart,
        interrupted: &["restart", "stop"],
    },
    CrashPoint {
        step: "restart.after_stop",
        tag: "ras",
        trigger: Trigger::Restart,
        interrupted: &["restart"],
    },
    CrashPoint {
        step: "restart.after_remove",
        tag: "rar",
        trigger: Trigger::Restart,
        interrupted: &["restart"],
    },
    CrashPoint {
        step: "start.after_create",
        tag: "sac",
        trigger: Trigger::Restart,
        interrupted: &["restart", "start"],
    },
    CrashPoint {
        step: "start.before_status",
        tag: "sbs",
        trigger: Trigger::Restart,
        interrupted: &["restart", "start"],
    },
    CrashPoint {
        step: "restart.before_status",
        tag: "rbs",
        trigger: Trigger::Restart,
        interrupted: &["restart"],
    },
    CrashPoint {
        step: "start.after_create",
        tag: "new-sac",
        trigger: Trigger::Create,
        interrupted: &["start"],
    },
    CrashPoint {
        step: "start.before_status",
        tag: "new-sbs",
        trigger: Trigger::Create,
        interrupted: &["start"],
    },
    CrashPoint {
        step: "stop.after_stop",
        tag: "off-sas",
        trigger: Trigger::Stop,
        interrupted: &["stop"],
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_controller_crashing_at_any_step_of_a_restart_leaves_nothing_the_next_cannot_finish() {
    let _serial = serial("crash").await;
    let started = Instant::now();
    ensure_test_images();
    let store: Arc<dyn Store> = common::etcd().await;
    let docker = connect_docker(None).await;
    // One installation (prefix) per crash point, all at once: each has its
    // own controllers, which never see the others' games.
    let installations: Vec<Installation> = CRASH_POINTS
        .iter()
        .map(|p| {
            let keys = unique_keys(&format!("faults-crash-{}", p.tag));
            Installation::new(store.clone(), keys, docker.clone())
        })
        .collect();
    let _wipes: Vec<WipeOnDrop> = installations
        .iter()
        .map(|i| WipeOnDrop(i.keys.clone()))
        .collect();
    let games: Vec<String> = CRASH_POINTS
        .iter()
        .map(|p| game_name(&format!("crash-{}", p.tag)))
        .collect();
    let crash_names: Vec<String> = games
        .iter()
        .zip(&installations)
        .map(|(game, i)| container_name(i.keys.prefix(), game))
        .collect();
    let _cleanup = cleanup(&crash_names);
    let monitor = Monitor::start(docker.clone(), installations.clone(), GC_BOUND).await;

    let runs = CRASH_POINTS
        .iter()
        .zip(&installations)
        .zip(&games)
        .map(|((point, installation), game)| crash_once(point, installation, game));
    let outcomes = futures::future::join_all(runs).await;

    let report = monitor.finish().await;
    eprintln!(
        "[crash] {:?}:{}\n  monitor: {}",
        started.elapsed(),
        block(&outcomes),
        report.line()
    );
    report.assert_clean("crash");
    for installation in &installations {
        installation.assert_containers_accounted(&report).await;
    }
    report.assert_replacements_explained("crash", 1);
}

/// One crash point: a first controller converges the game and leaves
/// (unless the crash is in the first start); a second, built to abort at
/// `point.step`, is made to run the operation and crashes in it; a third
/// finds the pieces and must finish the job.
async fn crash_once(point: &CrashPoint, installation: &Installation, game: &str) -> String {
    let etcd = etcd_endpoints();
    let keys = &installation.keys;
    let games = [game.to_owned()];
    if point.trigger != Trigger::Create {
        let mut first = controller(keys, &format!("first-{}", point.tag), &etcd, None)
            .start()
            .await;
        installation.create(doc(game)).await;
        installation.wait_converged(&games, CONVERGE).await;
        stop_gracefully(&mut first).await;
    }

    let crashing_node = format!("crashing-{}", point.tag);
    let mut crashing = controller(keys, &crashing_node, &etcd, None)
        .env("RTM_FAILPOINT", point.step)
        .start()
        .await;
    let token = format!("crash-{}", point.tag);
    let source_ref = format!("REQ-{token}");
    match point.trigger {
        Trigger::Restart => {
            installation
                .request_restart(game, &token, &source_ref)
                .await;
        }
        Trigger::Create => {
            installation.create(doc(game)).await;
        }
        Trigger::Stop => {
            installation
                .change(game, |doc| doc.spec.state = DesiredState::Stopped)
                .await;
        }
    }
    let exit = crashing.wait_exit(CONVERGE).await;
    let log = controller_log(&crashing);
    assert_eq!(
        exit.signal(),
        Some(6),
        "{}: the controller must abort (SIGABRT) at the failpoint, it exited {exit}{}",
        point.step,
        crashing.log_tail()
    );
    assert!(
        log.contains(&format!("failpoint {}: aborting the process", point.step)),
        "{}: the abort came from the failpoint{}",
        point.step,
        crashing.log_tail()
    );
    let left = installation
        .containers()
        .await
        .map(|c| describe(&c))
        .unwrap_or_else(|e| e);

    let mut next = controller(keys, &format!("next-{}", point.tag), &etcd, None)
        .start()
        .await;
    let converged = installation
        .wait_converged(&games, CONVERGE + LEASE_TTL)
        .await;
    let history = installation.wait_history_resolved(CONVERGE).await;
    let entries = &history[game];
    let aborted: Vec<_> = entries
        .iter()
        .filter(|e| e.error_code == Some(ErrorCode::Aborted))
        .collect();
    let kinds: BTreeSet<&str> = aborted.iter().map(|e| e.op_kind.as_str()).collect();
    let expected: BTreeSet<&str> = point.interrupted.iter().copied().collect();
    assert_eq!(
        kinds,
        expected,
        "{}: recovery resolves exactly the interrupted operations as aborted:\n  {}",
        point.step,
        timeline(entries)
    );
    for entry in &aborted {
        assert!(
            entry.holder.starts_with(&format!("{crashing_node}-"))
                && (point.trigger != Trigger::Restart || entry.source_ref == source_ref),
            "{}: an aborted entry belongs to the crashed operation:\n  {}",
            point.step,
            timeline(entries)
        );
    }
    let containers = installation.containers().await.expect("docker answers");
    assert_eq!(
        containers.len(),
        1,
        "{}: no orphan: exactly the game's container is left: {}",
        point.step,
        describe(&containers)
    );
    stop_gracefully(&mut next).await;
    let (status, container) = &converged[game];
    format!(
        "{:<22} in a {:<7} aborted ({exit}); left {left}; recovery resolved {:?} as aborted; \
         converged: {:?} {}",
        point.step,
        format!("{:?}", point.trigger).to_lowercase(),
        kinds,
        status.phase,
        container.as_ref().map_or_else(
            || "-".to_owned(),
            |c| format!("{} {}", short(&c.id), c.state)
        )
    )
}

// ---------------------------------------------------------------------------
// Lease expiry while alive.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_frozen_controller_is_fenced_out_once_its_lease_expires_and_never_runs_a_twin() {
    let _serial = serial("freeze").await;
    let started = Instant::now();
    ensure_test_images();
    let store: Arc<dyn Store> = common::etcd().await;
    let docker = connect_docker(None).await;
    let keys = unique_keys("faults-freeze");
    let _wipe = WipeOnDrop(keys.clone());
    let installation = Installation::new(store.clone(), keys.clone(), docker.clone());
    let games: Vec<String> = (0..3).map(|i| game_name(&format!("freeze{i}"))).collect();
    let _cleanup = cleanup(&names(&keys, &games));
    let monitor = Monitor::start(docker.clone(), vec![installation.clone()], GC_BOUND).await;
    let writes = WriteLog::start(store.clone(), keys.root()).await;
    let etcd = etcd_endpoints();
    let mut a = controller(&keys, "node-a", &etcd, None).start().await;
    let mut b = controller(&keys, "node-b", &etcd, None).start().await;
    for game in &games {
        // Stops last the full 4 s: the freeze lands inside one.
        let fixture = doc(game)
            .ignoring_sigterm()
            .stop_timeout(Duration::from_secs(4));
        installation.create(fixture).await;
    }
    installation.wait_converged(&games, CONVERGE).await;

    burst(&installation, &games, "freeze-1").await;
    let entry = installation
        .wait_in_progress(&games, OpKind::Restart, Duration::from_secs(30))
        .await;
    let stale = entry.holder.clone();
    let (victim, survivor) = if stale.starts_with("node-a-") {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    signal(victim, "STOP");
    let frozen_at = Instant::now();
    // The freeze counts from when it has landed: until then the victim may
    // still take a lease (of another game of the burst), legitimately.
    eventually(
        Duration::from_secs(5),
        "the victim to be stopped",
        async || match process_state(victim) {
            Some('T') => Ok(()),
            state => Err(format!("state {state:?}")),
        },
    )
    .await;
    let frozen_revision = store.revision().await.expect("etcd answers");
    eprintln!(
        "[freeze] froze {} ({stale}) in the middle of restarting {}; {} runs on",
        victim.name(),
        entry.game_id,
        survivor.name()
    );

    // While it is frozen its session lease expires, and the survivor takes
    // over and finishes every restart.
    eventually(
        LEASE_TTL * 4,
        "the frozen controller's heartbeat to expire with its session lease",
        async || {
            let live = installation.heartbeats().await?;
            if live.contains(&stale) {
                Err(format!("heartbeats {live:?}"))
            } else {
                Ok(())
            }
        },
    )
    .await;
    installation.wait_converged(&games, CONVERGE).await;
    assert_eq!(
        process_state(victim),
        Some('T'),
        "the victim stayed frozen while the survivor took over"
    );
    let frozen_for = frozen_at.elapsed();
    let log_at_thaw = controller_log(victim).len();
    let thawed_at = Instant::now();
    signal(victim, "CONT");

    // Thawed, it finds its session gone and starts a new one; whatever it
    // had in flight must be refused.
    let thawed_log = |victim: &ControllerProcess| {
        controller_log(victim)
            .get(log_at_thaw..)
            .unwrap_or("")
            .to_owned()
    };
    eventually(
        Duration::from_secs(30),
        "the thawed controller to notice that its session is lost",
        async || {
            let log = thawed_log(victim);
            if log.contains("the etcd session is lost") {
                Ok(())
            } else {
                Err(log.lines().rev().take(5).collect::<Vec<_>>().join(" | "))
            }
        },
    )
    .await;
    victim.wait_ready(Duration::from_secs(30)).await;
    let node = stale
        .rsplit_once('-')
        .map_or("", |(node, _)| node)
        .to_owned();
    eventually(
        Duration::from_secs(30),
        "the thawed controller to announce a new session",
        async || {
            let live = installation.heartbeats().await?;
            if live
                .iter()
                .any(|h| h.starts_with(&format!("{node}-")) && *h != stale)
            {
                Ok(())
            } else {
                Err(format!("heartbeats {live:?}"))
            }
        },
    )
    .await;
    installation.wait_converged(&games, CONVERGE).await;
    let history = installation.wait_history_resolved(CONVERGE).await;
    let events = writes.finish().await;
    let report = monitor.finish().await;

    let audit = audit_stale_holder(&keys, &events, &stale, frozen_revision);
    let refused: Vec<String> = thawed_log(victim)
        .lines()
        .filter(|l| l.contains("lease_lost") || l.contains("resolved by someone else"))
        .map(str::to_owned)
        .collect();
    // Docker: no container the stale holder's operations created after the
    // thaw.
    let stale_starts: BTreeSet<&str> = history
        .values()
        .flatten()
        .filter(|e| e.holder == stale && e.op_kind == OpKind::Start)
        .map(|e| e.op_id.as_str())
        .collect();
    let late: Vec<String> = report
        .seen
        .iter()
        .filter(|c| c.first_seen > thawed_at)
        .filter(|c| {
            c.op_id
                .as_deref()
                .is_some_and(|op| stale_starts.contains(op))
        })
        .map(|c| format!("{} {}", c.name, short(&c.id)))
        .collect();
    let all_entries: Vec<_> = history.values().flatten().cloned().collect();
    eprintln!(
        "[freeze] {:?}: frozen {frozen_for:?}; takeovers {:?}; {} of the stale holder's entries \
         resolved by the survivor; refusal records {:?}; refused writes in its log:{}\n  \
         monitor: {}",
        started.elapsed(),
        audit.takeovers,
        audit.resolved_by_others,
        audit.refusal_records,
        block(&refused),
        report.line()
    );
    assert!(
        audit.violations.is_empty(),
        "the stale controller wrote after the takeover:{}\nhistory:\n  {}",
        block(&audit.violations),
        timeline(&all_entries)
    );
    assert!(
        !audit.takeovers.is_empty() && audit.resolved_by_others >= 1,
        "the survivor took over the frozen controller's games and resolved its entries: \
         {audit:?}\n  {}",
        timeline(&all_entries)
    );
    assert!(
        !refused.is_empty(),
        "the thawed controller's late writes were attempted and refused (lease_lost):\n{}",
        thawed_log(victim)
    );
    assert!(
        late.is_empty(),
        "the stale holder created containers after the thaw: {late:?}"
    );
    report.assert_clean("freeze");
    installation.assert_containers_accounted(&report).await;
    report.assert_replacements_explained("freeze", games.len());
}

// ---------------------------------------------------------------------------
// etcd faults.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn restarting_etcd_during_bursts_of_restarts_loses_no_game_and_no_history() {
    let _serial = serial("etcd").await;
    let started = Instant::now();
    ensure_test_images();
    let mut etcd = EtcdCluster::start(1).await;
    let endpoints = etcd.endpoints();
    let store = connect_store(&endpoints).await;
    let docker = connect_docker(None).await;
    let keys = unique_keys("faults-etcd");
    let installation = Installation::new(store.clone(), keys.clone(), docker.clone());
    let games: Vec<String> = (0..4).map(|i| game_name(&format!("etcd{i}"))).collect();
    let _cleanup = cleanup(&names(&keys, &games));
    let monitor = Monitor::start(docker.clone(), vec![installation.clone()], GC_BOUND).await;
    let ctl = controller(&keys, "etcd-fault", &endpoints, None)
        .start()
        .await;
    create_mixed(&installation, &games).await;
    installation.wait_converged(&games, CONVERGE).await;

    let mut outages = Vec::new();
    // The first outage is shorter than the session TTL, the second longer
    // (the controller then counts its session lost and opens a new one).
    for (round, outage) in [Duration::from_secs(1), LEASE_TTL + Duration::from_secs(1)]
        .into_iter()
        .enumerate()
    {
        burst(&installation, &games, &format!("etcd-{round}")).await;
        let entry = installation
            .wait_in_progress(&games, OpKind::Restart, Duration::from_secs(30))
            .await;
        etcd.kill(0);
        // The fault itself: etcd stays down this long, then comes back on
        // the same data.
        tokio::time::sleep(outage).await;
        etcd.restart(0);
        etcd.wait_healthy(Duration::from_secs(30)).await;
        outages.push(format!(
            "round {round}: etcd killed during the restart of {} and back after {outage:?}",
            entry.game_id
        ));
    }
    let converged_at = Instant::now();
    installation
        .wait_converged(&games, CONVERGE + LEASE_TTL)
        .await;
    let took = converged_at.elapsed();
    installation.wait_history_resolved(CONVERGE).await;
    let report = monitor.finish().await;
    let sessions_lost = controller_log(&ctl)
        .matches("the etcd session is lost")
        .count();
    eprintln!(
        "[etcd] {:?}:{}\n  converged {took:?} after etcd came back; the controller lost its \
         session {sessions_lost} time(s) and opened a new one\n  monitor: {}",
        started.elapsed(),
        block(&outages),
        report.line()
    );
    report.assert_clean("etcd");
    installation.assert_containers_accounted(&report).await;
    report.assert_replacements_explained("etcd", games.len());
}

/// Creates `games`, every other one with an engine that ignores SIGTERM
/// (its stops last their 2 s stopTimeout: restarts stay in flight longer).
async fn create_mixed(installation: &Installation, games: &[String]) {
    create_mixed_from(installation, games, IMAGE_1).await;
}

/// [`create_mixed`] with every game on `image`.
async fn create_mixed_from(installation: &Installation, games: &[String], image: &str) {
    for (i, game) in games.iter().enumerate() {
        let fixture = if i % 2 == 0 {
            doc(game)
                .ignoring_sigterm()
                .stop_timeout(Duration::from_secs(2))
        } else {
            doc(game)
        };
        installation.create(fixture.image(image)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn killing_the_etcd_leader_of_a_three_member_cluster_does_not_stop_convergence() {
    let _serial = serial("etcd-cluster").await;
    let started = Instant::now();
    ensure_test_images();
    let mut cluster = EtcdCluster::start(3).await;
    let endpoints = cluster.endpoints();
    let store = connect_store(&endpoints).await;
    let docker = connect_docker(None).await;
    let keys = unique_keys("faults-cluster");
    let installation = Installation::new(store.clone(), keys.clone(), docker.clone());
    let games: Vec<String> = (0..4).map(|i| game_name(&format!("raft{i}"))).collect();
    let _cleanup = cleanup(&names(&keys, &games));
    let monitor = Monitor::start(docker.clone(), vec![installation.clone()], GC_BOUND).await;
    let _controller = controller(&keys, "cluster-fault", &endpoints, None)
        .start()
        .await;
    create_mixed(&installation, &games).await;
    installation.wait_converged(&games, CONVERGE).await;

    let mut rounds = Vec::new();
    for round in 0..2 {
        burst(&installation, &games, &format!("raft-{round}")).await;
        installation
            .wait_in_progress(&games, OpKind::Restart, Duration::from_secs(30))
            .await;
        let leader = cluster
            .leader()
            .unwrap_or_else(|e| panic!("find the leader: {e}{}", cluster.log_tails()));
        cluster.kill(leader);
        let killed_at = Instant::now();
        installation.wait_converged(&games, CONVERGE).await;
        rounds.push(format!(
            "round {round}: killed leader m{leader} during the restarts; converged {:?} later \
             on the other two",
            killed_at.elapsed()
        ));
        cluster.restart(leader);
        cluster.wait_healthy(Duration::from_secs(30)).await;
    }
    installation.wait_history_resolved(CONVERGE).await;
    let report = monitor.finish().await;
    eprintln!(
        "[etcd-cluster] {:?}:{}\n  monitor: {}",
        started.elapsed(),
        block(&rounds),
        report.line()
    );
    report.assert_clean("etcd-cluster");
    installation.assert_containers_accounted(&report).await;
    report.assert_replacements_explained("etcd-cluster", games.len());
}

// ---------------------------------------------------------------------------
// Docker faults.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn restarting_the_docker_engine_brings_every_game_back_once() {
    let _serial = serial("dockerd").await;
    let started = Instant::now();
    // Declared first, so it is stopped (and deleted) after the controller.
    let mut dockerd = PrivateDockerd::start().await;
    let host = dockerd.host();
    let docker = connect_docker(Some(&host)).await;
    let store: Arc<dyn Store> = common::etcd().await;
    let keys = unique_keys("faults-dockerd");
    let _wipe = WipeOnDrop(keys.clone());
    let installation = Installation::new(store.clone(), keys.clone(), docker.clone());
    let games: Vec<String> = (0..4).map(|i| game_name(&format!("dockerd{i}"))).collect();
    let monitor = Monitor::start(docker.clone(), vec![installation.clone()], GC_BOUND).await;
    let _controller = controller(&keys, "dockerd-fault", &etcd_endpoints(), Some(&host))
        .start()
        .await;
    create_mixed(&installation, &games).await;
    let before = installation.wait_converged(&games, CONVERGE).await;

    let mut rounds = Vec::new();
    // Round 0: with every game running. Round 1: during a burst of
    // restarts.
    for round in 0..2 {
        if round == 1 {
            burst(&installation, &games, "dockerd-1").await;
            installation
                .wait_in_progress(&games, OpKind::Restart, Duration::from_secs(30))
                .await;
        }
        let stopping = Instant::now();
        let issued = SystemTime::now();
        dockerd.stop().await;
        let stopped_in = stopping.elapsed();
        dockerd.restart().await;
        installation.record(
            None,
            Deed::Engine,
            format!("round {round}: dockerd stopped and restarted"),
            issued,
        );
        let back_at = Instant::now();
        let after = installation.wait_converged(&games, CONVERGE).await;
        rounds.push(format!(
            "round {round}: dockerd stopped in {stopped_in:?}, back and every game converged \
             {:?} later",
            back_at.elapsed()
        ));
        if round == 0 {
            for game in &games {
                let (_, was) = &before[game];
                let (status, now) = &after[game];
                let (was, now) = (
                    was.as_ref().expect("running"),
                    now.as_ref().expect("running"),
                );
                assert!(
                    now.id != was.id || now.started_at != was.started_at,
                    "{game}: the container stopped with the engine was brought back \
                     (restarted or recreated), status {}",
                    process::summary(status)
                );
            }
        }
    }
    installation.wait_history_resolved(CONVERGE).await;
    dockerd.assert_host_network_untouched();
    let report = monitor.finish().await;
    eprintln!(
        "[dockerd] {:?}:{}\n  monitor: {}",
        started.elapsed(),
        block(&rounds),
        report.line()
    );
    report.assert_clean("dockerd");
    installation.assert_containers_accounted(&report).await;
    report.assert_replacements_explained("dockerd", games.len());
}

// ---------------------------------------------------------------------------
// Hands in the Docker engine.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn containers_killed_removed_or_stopped_by_hand_come_back_and_foreign_ones_are_untouched() {
    let _serial = serial("hands").await;
    let started = Instant::now();
    ensure_test_images();
    let store: Arc<dyn Store> = common::etcd().await;
    let docker = connect_docker(None).await;
    let keys = unique_keys("faults-hands");
    let _wipe = WipeOnDrop(keys.clone());
    let installation = Installation::new(store.clone(), keys.clone(), docker.clone());
    let [killed, removed, stopped, taken, orphan] =
        ["kill", "rm", "stop", "taken", "orphan"].map(|tag| game_name(&format!("hands-{tag}")));
    let games = vec![killed.clone(), removed.clone(), stopped.clone()];
    let foreign_name = format!("rtmf-foreign-{}", std::process::id());
    let mut all_names = names(
        &keys,
        &[
            killed.clone(),
            removed.clone(),
            stopped.clone(),
            taken.clone(),
        ],
    );
    all_names.push(container_name(keys.prefix(), &orphan));
    all_names.push(foreign_name.clone());
    let _cleanup = cleanup(&all_names);

    // Not rtmanager's: no labels at all. One with a name of its own, one
    // with the name a game of this installation would use.
    for name in [
        foreign_name.as_str(),
        container_name(keys.prefix(), &taken).as_str(),
    ] {
        let run = docker_cli(&["run", "-d", "--name", name, IMAGE_1]);
        assert!(run.status.success(), "docker run {name}: {run:?}");
    }
    let monitor = Monitor::start(docker.clone(), vec![installation.clone()], GC_BOUND).await;
    let foreign = [
        Foreign::record(&docker, &foreign_name).await,
        Foreign::record(&docker, &container_name(keys.prefix(), &taken)).await,
    ];
    for f in &foreign {
        monitor.add_foreign(f.clone());
    }
    let _controller = controller(&keys, "hands", &etcd_endpoints(), None)
        .start()
        .await;
    for game in &games {
        installation.create(doc(game)).await;
    }
    let before = installation.wait_converged(&games, CONVERGE).await;
    let mut done = Vec::new();

    // Ours by its labels, but with no document: garbage after the grace.
    let orphan_id = installation.start_labelled(&orphan).await;
    let orphaned_at = Instant::now();

    // A document whose container name someone else's container holds: the
    // start is refused with `conflict`, the container left alone.
    installation.create(doc(&taken)).await;
    eventually(
        CONVERGE,
        "the start of a game whose name a foreign container holds to fail with conflict",
        async || {
            let entries = installation.history(&taken).await?;
            if entries.iter().any(|e| {
                e.op_kind == OpKind::Start
                    && e.outcome == Outcome::Failure
                    && e.error_code == Some(ErrorCode::Conflict)
            }) {
                Ok(())
            } else {
                Err(timeline(&entries))
            }
        },
    )
    .await;
    done.push(format!(
        "{} held by a foreign container: start refused with conflict",
        container_name(keys.prefix(), &taken)
    ));

    for (game, how) in [(&killed, "kill"), (&removed, "rm"), (&stopped, "stop")] {
        let name = container_name(keys.prefix(), game);
        let args: Vec<&str> = match how {
            "rm" => vec!["rm", "-f", &name],
            other => vec![other, &name],
        };
        let issued = SystemTime::now();
        let hand = docker_cli(&args);
        assert!(hand.status.success(), "docker {args:?}: {hand:?}");
        installation.record(
            Some(game),
            Deed::Container,
            format!("docker {args:?}"),
            issued,
        );
        let (_, was) = &before[game.as_str()];
        let was = was.clone().expect("a running container");
        let what = format!("{name} to come back after `docker {how}`");
        let (status, now) = eventually(CONVERGE, &what, async || {
            let converged = installation.converged(std::slice::from_ref(game)).await?;
            let (status, now) = converged[game.as_str()].clone();
            let now = now.expect("a converged game runs");
            if now.id != was.id || now.started_at != was.started_at {
                Ok((status, now))
            } else {
                Err(format!(
                    "still {} started {:?}",
                    short(&now.id),
                    now.started_at
                ))
            }
        })
        .await;
        done.push(format!(
            "docker {how} {name}: back as {} (restartCount {})",
            short(&now.id),
            status.restart_count
        ));
    }

    eventually(
        GC_BOUND + Duration::from_secs(5),
        "the orphaned container to be garbage-collected",
        async || match docker.inspect_container(&orphan_id).await {
            Ok(None) => Ok(()),
            Ok(Some(c)) => Err(format!("{} is {}", c.name, c.state)),
            Err(e) => Err(e.to_string()),
        },
    )
    .await;
    let collected_after = orphaned_at.elapsed();
    assert!(
        collected_after >= GC_GRACE - Duration::from_millis(500),
        "the orphan was removed after {collected_after:?}, before the {GC_GRACE:?} grace"
    );
    done.push(format!(
        "orphan {} garbage-collected after {collected_after:?}",
        container_name(keys.prefix(), &orphan)
    ));

    // Deleting the document of the game whose name is taken: the
    // controller cleans up its own records and still leaves the foreign
    // container alone.
    installation.delete(&taken).await;
    eventually(
        CONVERGE,
        "the status of a deleted game whose name a foreign container holds to be cleared",
        async || match installation.status(&taken).await? {
            None => Ok(()),
            Some(status) => Err(format!(
                "status {}\n  {}",
                process::summary(&status),
                timeline(&installation.history(&taken).await?)
            )),
        },
    )
    .await;
    done.push(format!("{taken} deleted: status cleared"));

    installation.wait_converged(&games, CONVERGE).await;
    installation.wait_history_resolved(CONVERGE).await;
    let report = monitor.finish().await;
    eprintln!(
        "[hands] {:?}:{}\n  monitor: {}",
        started.elapsed(),
        block(&done),
        report.line()
    );
    report.assert_clean("hands");
    installation.assert_containers_accounted(&report).await;
    report.assert_replacements_explained("hands", games.len());
}

// ---------------------------------------------------------------------------
// The randomized soak.

/// Games in the soak.
const SOAK_GAMES: usize = 5;

/// Faults in one soak run (`RTM_FAULTS_SOAK_FAULTS` overrides it, for a
/// longer hunt: `scripts/soak`).
const SOAK_FAULTS: usize = 20;

/// Faults stop being injected after this long (each is bounded itself);
/// `RTM_FAULTS_SOAK_PHASE` (humantime) overrides it for a longer hunt.
const SOAK_FAULT_PHASE: Duration = Duration::from_secs(150);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    // Processes and the engines.
    KillController,
    FreezeController,
    CrashAtFailpoint,
    RestartEtcd,
    RestartDockerd,
    // Requests.
    RestartBurst,
    ChangeImage,
    // Hands in Docker.
    KillContainer,
    RemoveContainer,
    StopContainer,
    PauseContainer,
    RenameContainer,
    UntagImage,
    Orphan,
    // Hands in etcd.
    WipeStatus,
    GarbleStatus,
    DeleteHistory,
    GarbleHistory,
    DeleteLease,
    GarbleLease,
    ForgeLease,
}

/// The faults of the soak before the hands set: processes, engines,
/// requests, containers killed and removed, orphans.
const CLASSIC: &[Fault] = &[
    Fault::KillController,
    Fault::FreezeController,
    Fault::CrashAtFailpoint,
    Fault::RestartEtcd,
    Fault::RestartDockerd,
    Fault::KillContainer,
    Fault::RemoveContainer,
    Fault::RestartBurst,
    Fault::ChangeImage,
    Fault::Orphan,
];

/// What a careless or hostile operator does (issue #11): records deleted
/// or filled with garbage, lease keys forged, containers paused, renamed,
/// stopped and killed, the image untagged; restart requests to make the
/// games need their records and leases.
const HANDS: &[Fault] = &[
    Fault::WipeStatus,
    Fault::GarbleStatus,
    Fault::DeleteHistory,
    Fault::GarbleHistory,
    Fault::DeleteLease,
    Fault::GarbleLease,
    Fault::ForgeLease,
    Fault::PauseContainer,
    Fault::RenameContainer,
    Fault::StopContainer,
    Fault::KillContainer,
    Fault::RemoveContainer,
    Fault::UntagImage,
    Fault::RestartBurst,
];

/// The fault set of a run: `RTM_FAULTS_SET` = `all` (the default),
/// `classic` or `hands`.
fn fault_set() -> (String, Vec<Fault>) {
    let name = std::env::var("RTM_FAULTS_SET").unwrap_or_else(|_| "all".to_owned());
    let set = match name.as_str() {
        "classic" => CLASSIC.to_vec(),
        "hands" => HANDS.to_vec(),
        "all" => {
            let mut all = CLASSIC.to_vec();
            all.extend(HANDS.iter().filter(|f| !CLASSIC.contains(f)));
            all
        }
        other => panic!("RTM_FAULTS_SET={other}: expected all, classic or hands"),
    };
    (name, set)
}

/// Bytes no record decodes from, of a few shapes an editor or a bad
/// script leaves.
const GARBAGE: [&[u8]; 4] = [
    b"\x00\xffnot json at all",
    b"{\"phase\": 42, \"truncated",
    b"null",
    b"[]",
];

/// A controller of the soak: the process now in its place, and whether
/// it is frozen.
struct Slot {
    node: String,
    process: ControllerProcess,
    frozen: bool,
}

/// A controller frozen past its session: its holder id and the revision
/// at which it was frozen, for the fencing audit.
struct Frozen {
    holder: String,
    at: rtm_core::store::Revision,
}

/// Everything the soak drives.
struct Soak {
    installation: Installation,
    etcd: EtcdCluster,
    dockerd: PrivateDockerd,
    endpoints: Vec<String>,
    host: String,
    games: Vec<String>,
    slots: Vec<Slot>,
    rng: Rng,
    /// The soak's own tags of the two test images in its engine (created
    /// from them, untagged and restored by `UntagImage`), and the test
    /// image each was made from.
    images: [(String, &'static str); 2],
    /// Per game: how many times its container exited by a fault (each
    /// exit beyond the first adds a crash-loop backoff: the soak keeps it
    /// at two, so convergence stays within the bound).
    exits: BTreeMap<String, u32>,
    dockerd_restarts: u32,
    tokens: u32,
    hands: u32,
    orphans: Vec<String>,
    frozen: Vec<Frozen>,
    started: Instant,
}

impl Soak {
    fn options(&self, node: &str) -> ControllerOptions {
        controller(
            &self.installation.keys,
            node,
            &self.endpoints,
            Some(&self.host),
        )
    }

    fn note(&self, text: &str) {
        eprintln!(
            "[soak +{:.1}s] {text}",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Notes a deed that is never a reason to replace a container.
    fn context(&self, game: Option<&str>, what: String, issued: SystemTime) -> String {
        self.installation
            .record(game, Deed::Note, what.clone(), issued);
        what
    }

    /// Replaces slot `i`'s controller by a fresh one (with `failpoint`,
    /// if given), killing the old one if it still runs.
    async fn replace(&mut self, i: usize, failpoint: Option<&str>) {
        self.slots[i].process.kill();
        self.slots[i].frozen = false;
        let mut options = self.options(&self.slots[i].node.clone());
        if let Some(step) = failpoint {
            options = options.env("RTM_FAILPOINT", step);
        }
        let process = options.spawn();
        self.slots[i].process = process;
        // Ready, or (with a failpoint) maybe already crashed.
        let slot = &mut self.slots[i];
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if has_exited(&slot.process) {
                break;
            }
            if matches!(slot.process.get("/readyz").await, Ok((200, _))) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "soak controller {} not ready in 30 s{}",
                slot.node,
                slot.process.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Eligible games for a fault that makes a container exit.
    fn may_exit(&self) -> Vec<String> {
        self.games
            .iter()
            .filter(|g| self.exits.get(*g).copied().unwrap_or(0) < 2)
            .cloned()
            .collect()
    }

    fn pick_game(&mut self) -> String {
        self.rng.pick(&self.games).clone()
    }

    /// Runs `docker args` on the soak's engine; a hand that worked is
    /// written down as `deed` for `game`.
    fn docker_hand(&mut self, game: &str, deed: Deed, args: &[&str]) -> (bool, String) {
        let issued = SystemTime::now();
        let out = self.dockerd.cli(args);
        let what = format!("docker {}: {}", args.join(" "), outcome(&out));
        if out.status.success() {
            self.installation
                .record(Some(game), deed, what.clone(), issued);
        }
        (out.status.success(), what)
    }

    /// A container-exiting hand (`docker kill` or `stop`) on a game that
    /// may still exit, or a restart burst when none may.
    async fn exit_by_hand(&mut self, how: &str) -> String {
        let eligible = self.may_exit();
        if eligible.is_empty() {
            return self.restart_burst().await;
        }
        let game = self.rng.pick(&eligible).clone();
        let name = container_name(self.installation.keys.prefix(), &game);
        let (done, what) = self.docker_hand(&game, Deed::Container, &[how, &name]);
        if done {
            *self.exits.entry(game).or_default() += 1;
        }
        what
    }

    async fn request_restart(&mut self, game: &str) -> (String, rtm_core::store::Revision) {
        self.tokens += 1;
        let token = format!("soak-{}", self.tokens);
        let doc = self
            .installation
            .request_restart(game, &token, &format!("REQ-{token}-{game}"))
            .await;
        let revision = doc
            .metadata
            .resource_version
            .as_deref()
            .and_then(|rv| rv.parse().ok())
            .unwrap_or_default();
        (token, revision)
    }

    async fn inject(&mut self, fault: Fault) -> String {
        let issued = SystemTime::now();
        match fault {
            Fault::KillController => {
                let i = self.rng.below(self.slots.len());
                self.slots[i].process.kill();
                let down = self.rng.duration(Duration::ZERO, Duration::from_secs(2));
                tokio::time::sleep(down).await;
                self.replace(i, None).await;
                let what = format!(
                    "SIGKILL controller {}, restarted after {down:?}",
                    self.slots[i].node
                );
                self.context(None, what, issued)
            }
            Fault::FreezeController => self.freeze().await,
            Fault::CrashAtFailpoint => {
                let i = self.rng.below(self.slots.len());
                let step = self.rng.pick(&CRASH_POINTS).step;
                self.replace(i, Some(step)).await;
                self.tokens += 1;
                let token = format!("soak-{}", self.tokens);
                burst(&self.installation, &self.games, &token).await;
                let deadline = Instant::now() + Duration::from_secs(15);
                while !has_exited(&self.slots[i].process) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let crashed = has_exited(&self.slots[i].process);
                self.replace(i, None).await;
                let what = format!(
                    "controller {} with RTM_FAILPOINT={step} and a burst of restarts ({token}): {}",
                    self.slots[i].node,
                    if crashed {
                        "it crashed there"
                    } else {
                        "the other controller took the restarts"
                    }
                );
                self.context(None, what, issued)
            }
            Fault::RestartEtcd => {
                let outage = self.rng.duration(
                    Duration::from_millis(500),
                    LEASE_TTL + Duration::from_secs(2),
                );
                self.etcd.kill(0);
                tokio::time::sleep(outage).await;
                self.etcd.restart(0);
                self.etcd.wait_healthy(Duration::from_secs(30)).await;
                self.context(
                    None,
                    format!("etcd SIGKILLed, back after {outage:?}"),
                    issued,
                )
            }
            Fault::RestartDockerd => {
                if self.dockerd_restarts > 0 || self.may_exit().len() < self.games.len() {
                    return self.restart_burst().await;
                }
                self.dockerd_restarts += 1;
                self.dockerd.stop().await;
                self.dockerd.restart().await;
                for game in &self.games {
                    *self.exits.entry(game.clone()).or_default() += 1;
                }
                let what = "dockerd stopped (its containers with it) and restarted".to_owned();
                self.installation
                    .record(None, Deed::Engine, what.clone(), issued);
                what
            }
            Fault::KillContainer => self.exit_by_hand("kill").await,
            Fault::StopContainer => self.exit_by_hand("stop").await,
            Fault::RemoveContainer => {
                let game = self.pick_game();
                let name = container_name(self.installation.keys.prefix(), &game);
                self.docker_hand(&game, Deed::Container, &["rm", "-f", &name])
                    .1
            }
            Fault::PauseContainer => {
                let game = self.pick_game();
                let name = container_name(self.installation.keys.prefix(), &game);
                let (_, mut what) = self.docker_hand(&game, Deed::Note, &["pause", &name]);
                // Half the time a restart is asked for the paused game
                // (stop, rm and start must work on a paused container).
                if self.rng.below(2) == 0 {
                    let (token, _) = self.request_restart(&game).await;
                    what.push_str(&format!(", then restart {token} asked for"));
                }
                what
            }
            Fault::RenameContainer => {
                let game = self.pick_game();
                self.hands += 1;
                let name = container_name(self.installation.keys.prefix(), &game);
                let moved = format!("{name}-moved{}", self.hands);
                self.docker_hand(&game, Deed::Note, &["rename", &name, &moved])
                    .1
            }
            Fault::UntagImage => self.untag().await,
            Fault::RestartBurst => self.restart_burst().await,
            Fault::ChangeImage => {
                let game = self.pick_game();
                let [(one, _), (two, _)] = self.images.clone();
                let doc = self
                    .installation
                    .change(&game, |doc| {
                        doc.spec.image = if doc.spec.image == one {
                            two.clone()
                        } else {
                            one.clone()
                        };
                    })
                    .await;
                format!("{game}: image changed to {}", doc.spec.image)
            }
            Fault::Orphan => {
                let orphan = game_name(&format!("soak-orphan{}", self.orphans.len()));
                let id = self.installation.start_labelled(&orphan).await;
                self.orphans.push(orphan.clone());
                format!(
                    "orphan container {} ({}) started by hand",
                    container_name(self.installation.keys.prefix(), &orphan),
                    short(&id)
                )
            }
            Fault::WipeStatus => {
                let keys = self.installation.keys.clone();
                let (key, prefix, game) = if self.rng.below(2) == 0 {
                    let game = self.pick_game();
                    (keys.status(&game), false, Some(game))
                } else {
                    (keys.statuses(), true, None)
                };
                let done = self.installation.delete_by_hand(&key, prefix).await;
                let what = format!(
                    "deleted {key}{} by hand: {}",
                    if prefix { " (every status)" } else { "" },
                    done.map_or_else(|e| e, |rev| format!("rev {rev}"))
                );
                self.context(game.as_deref(), what, issued)
            }
            Fault::GarbleStatus => {
                let eligible = self.may_exit();
                let game = if eligible.is_empty() {
                    self.pick_game()
                } else {
                    self.rng.pick(&eligible).clone()
                };
                let garbage = self.rng.pick(&GARBAGE).to_vec();
                let key = self.installation.keys.status(&game);
                let done = self
                    .installation
                    .put_by_hand(&key, garbage.clone(), false)
                    .await;
                let mut what = self.context(
                    Some(&game),
                    format!(
                        "garbage {:?} put at {key}: {}",
                        String::from_utf8_lossy(&garbage),
                        done.map_or_else(|e| e, |rev| format!("rev {rev}"))
                    ),
                    issued,
                );
                // Then the game needs repair: its container is killed.
                if !eligible.is_empty() {
                    let wait = self
                        .rng
                        .duration(Duration::from_millis(300), Duration::from_millis(1500));
                    tokio::time::sleep(wait).await;
                    let name = container_name(self.installation.keys.prefix(), &game);
                    let (done, kill) = self.docker_hand(&game, Deed::Container, &["kill", &name]);
                    if done {
                        *self.exits.entry(game).or_default() += 1;
                    }
                    what.push_str(&format!("; {wait:?} later {kill}"));
                }
                what
            }
            Fault::DeleteHistory => {
                let game = self.pick_game();
                let prefix = self.installation.keys.history(&game);
                let keys = self.keys_under(&prefix).await;
                let (key, whole) = if keys.is_empty() || self.rng.below(3) == 0 {
                    (prefix, true)
                } else {
                    (self.rng.pick(&keys).clone(), false)
                };
                let done = self.installation.delete_by_hand(&key, whole).await;
                let what = format!(
                    "deleted {key}{} by hand: {}",
                    if whole { " (the whole history)" } else { "" },
                    done.map_or_else(|e| e, |rev| format!("rev {rev}"))
                );
                self.context(Some(&game), what, issued)
            }
            Fault::GarbleHistory => {
                let game = self.pick_game();
                let prefix = self.installation.keys.history(&game);
                let keys = self.keys_under(&prefix).await;
                let newest = keys
                    .iter()
                    .filter_map(|k| self.installation.keys.history_seq(&game, k))
                    .max()
                    .unwrap_or(0);
                // An entry overwritten, or one that takes the next number.
                let key = if keys.is_empty() || self.rng.below(2) == 0 {
                    self.installation.keys.history_entry(&game, newest + 1)
                } else {
                    self.rng.pick(&keys).clone()
                };
                let garbage = self.rng.pick(&GARBAGE).to_vec();
                let done = self
                    .installation
                    .put_by_hand(&key, garbage.clone(), true)
                    .await;
                let what = format!(
                    "garbage {:?} put at {key}: {}",
                    String::from_utf8_lossy(&garbage),
                    done.map_or_else(|e| e, |rev| format!("rev {rev}"))
                );
                self.context(Some(&game), what, issued)
            }
            Fault::DeleteLease => {
                // A lease is there only while an operation runs: ask for
                // one and delete its lease key under it.
                let game = self.pick_game();
                let (token, _) = self.request_restart(&game).await;
                let key = self.installation.keys.lease(&game);
                let deadline = Instant::now() + Duration::from_secs(5);
                let mut held = None;
                while Instant::now() < deadline {
                    if let Ok(Some(kv)) = self.installation.store.get(&key).await {
                        held = Some(String::from_utf8_lossy(&kv.value).into_owned());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let what = match held {
                    Some(record) => {
                        let done = self.installation.delete_by_hand(&key, false).await;
                        format!(
                            "restart {token} asked for, then its live lease key {key} ({record}) \
                             deleted by hand: {}",
                            done.map_or_else(|e| e, |rev| format!("rev {rev}"))
                        )
                    }
                    None => format!("restart {token} asked for; no lease key seen to delete"),
                };
                self.context(Some(&game), what, issued)
            }
            Fault::GarbleLease | Fault::ForgeLease => {
                let game = self.pick_game();
                self.hands += 1;
                let value = if fault == Fault::GarbleLease {
                    self.rng.pick(&GARBAGE).to_vec()
                } else {
                    serde_json::to_vec(&rtm_core::records::lease::LeaseRecord {
                        holder: format!("forged-{}", self.hands),
                        token: format!("{:032x}", self.rng.next_u64()),
                        op_id: format!("forged-op-{}", self.hands),
                    })
                    .expect("a lease record encodes")
                };
                let key = self.installation.keys.lease(&game);
                let done = self
                    .installation
                    .put_by_hand(&key, value.clone(), false)
                    .await;
                let mut what = self.context(
                    Some(&game),
                    format!(
                        "{:?} put at {key} by hand, attached to no etcd lease: {}",
                        String::from_utf8_lossy(&value),
                        done.map_or_else(|e| e, |rev| format!("rev {rev}"))
                    ),
                    issued,
                );
                // The game needs its lease now.
                let (token, _) = self.request_restart(&game).await;
                what.push_str(&format!("; restart {token} asked for"));
                what
            }
        }
    }

    async fn keys_under(&self, prefix: &str) -> Vec<String> {
        match self.installation.store.list(prefix, None).await {
            Ok(listing) => listing.items.into_iter().map(|kv| kv.key).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// SIGSTOP a controller past its session TTL, then SIGCONT; when its
    /// session expired meanwhile, it is audited for fencing at the end.
    async fn freeze(&mut self) -> String {
        let issued = SystemTime::now();
        let i = self.rng.below(self.slots.len());
        let frozen_for = self
            .rng
            .duration(LEASE_TTL + Duration::from_millis(500), LEASE_TTL * 2);
        let node = self.slots[i].node.clone();
        let before = self.installation.heartbeats().await.unwrap_or_default();
        let mine: Vec<&String> = before
            .iter()
            .filter(|h| h.starts_with(&format!("{node}-")))
            .collect();
        signal(&self.slots[i].process, "STOP");
        self.slots[i].frozen = true;
        let landed = Instant::now() + Duration::from_secs(5);
        while process_state(&self.slots[i].process) != Some('T') && Instant::now() < landed {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let at = self.installation.store.revision().await.ok();
        tokio::time::sleep(frozen_for).await;
        let live = self.installation.heartbeats().await.unwrap_or_default();
        signal(&self.slots[i].process, "CONT");
        self.slots[i].frozen = false;
        let audited = match (mine.as_slice(), at) {
            ([holder], Some(at)) if !live.contains(*holder) => {
                self.frozen.push(Frozen {
                    holder: (*holder).clone(),
                    at,
                });
                format!("its session {holder} expired: audited for fencing from rev {at}")
            }
            _ => format!("not audited (sessions {mine:?}, live after {live:?})"),
        };
        let what = format!("SIGSTOP controller {node} for {frozen_for:?}, then SIGCONT; {audited}");
        self.context(None, what, issued)
    }

    /// Untags the image a game runs from (`docker rmi` of the soak's tag,
    /// the container keeps its image), asks for a restart, waits until
    /// that restart was tried, and tags the image again.
    async fn untag(&mut self) -> String {
        let issued = SystemTime::now();
        let game = self.pick_game();
        let image = match self.installation.documents.get(&game).await {
            Ok(Some(doc)) => doc.spec.image,
            _ => return self.restart_burst().await,
        };
        let Some((_, source)) = self.images.iter().find(|(tag, _)| *tag == image).cloned() else {
            return self.restart_burst().await;
        };
        let out = self.dockerd.cli(&["rmi", &image]);
        let untagged = format!("docker rmi {image}: {}", outcome(&out));
        self.context(Some(&game), untagged.clone(), issued);
        let (token, revision) = self.request_restart(&game).await;
        // The restart is tried (it has an outcome) or 10 s pass.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut tried = "not tried within 10 s".to_owned();
        while Instant::now() < deadline {
            if let Ok(entries) = self.installation.history(&game).await
                && let Some(e) = entries.iter().find(|e| {
                    e.op_kind == OpKind::Restart
                        && e.outcome != Outcome::InProgress
                        && e.fence_revision.is_some_and(|f| f > revision)
                })
            {
                tried = format!(
                    "restart #{} {:?} {}",
                    e.seq,
                    e.outcome,
                    e.error_code.map_or("", |c| c.as_str())
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let issued = SystemTime::now();
        let out = self.dockerd.cli(&["tag", source, &image]);
        let restored = format!("docker tag {source} {image}: {}", outcome(&out));
        assert!(
            out.status.success(),
            "the soak could not restore its image tag: {restored}"
        );
        self.context(Some(&game), restored.clone(), issued);
        format!("{untagged}; restart {token} asked for: {tried}; {restored}")
    }

    async fn restart_burst(&mut self) -> String {
        self.tokens += 1;
        let token = format!("soak-{}", self.tokens);
        let count = 1 + self.rng.below(self.games.len());
        let mut games = self.games.clone();
        // A random subset of `count` games.
        for i in 0..games.len() {
            let j = i + self.rng.below(games.len() - i);
            games.swap(i, j);
        }
        games.truncate(count);
        burst(&self.installation, &games, &token).await;
        format!("restart burst {token} on {games:?}")
    }

    /// Undoes what a fault may have left: every controller running and
    /// thawed (etcd and dockerd are back, and the image tagged again, at
    /// the end of their own fault). The hands (paused or renamed
    /// containers, records in etcd) are the controllers' to repair.
    async fn heal(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i].frozen {
                signal(&self.slots[i].process, "CONT");
                self.slots[i].frozen = false;
            }
            if has_exited(&self.slots[i].process) {
                self.replace(i, None).await;
            }
        }
        for slot in &mut self.slots {
            slot.process.wait_ready(Duration::from_secs(30)).await;
        }
    }
}

fn outcome(output: &std::process::Output) -> String {
    if output.status.success() {
        "done".to_owned()
    } else {
        format!(
            "refused ({})",
            String::from_utf8_lossy(&output.stderr).trim()
        )
    }
}

/// The soak's settings from the environment: the seed (printed, to replay
/// a run), the fault set, the number of faults and the fault phase bound.
fn soak_settings() -> (u64, String, Vec<Fault>, usize, Duration) {
    let seed = std::env::var("RTM_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let (set_name, set) = fault_set();
    let faults = std::env::var("RTM_FAULTS_SOAK_FAULTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(SOAK_FAULTS);
    let phase = std::env::var("RTM_FAULTS_SOAK_PHASE")
        .ok()
        .and_then(|p| humantime::parse_duration(&p).ok())
        .unwrap_or(SOAK_FAULT_PHASE);
    (seed, set_name, set, faults, phase)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_randomized_soak_of_faults_ends_with_every_game_converged_once() {
    use futures::FutureExt as _;
    let _serial = serial("soak").await;
    let (seed, set_name, set, faults, phase) = soak_settings();
    let replay = format!(
        "soak seed {seed}, fault set {set_name}, {faults} faults (replay with RTM_FAULTS_SEED={seed} \
         RTM_FAULTS_SET={set_name} RTM_FAULTS_SOAK_FAULTS={faults})"
    );
    eprintln!("[soak] {replay}");
    // Every failure of the run names its seed, whatever part failed.
    let run = std::panic::AssertUnwindSafe(soak(seed, set, faults, phase, &replay));
    if let Err(panic) = run.catch_unwind().await {
        let message = panic_message(panic.as_ref());
        if message.contains(&replay) {
            std::panic::resume_unwind(panic);
        }
        panic!("[{replay}] {message}");
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Runs one final check of the soak; a failure is kept, so that every
/// check runs and one report shows all that went wrong.
async fn check(failures: &mut Vec<String>, name: &str, check: impl Future<Output = ()>) {
    use futures::FutureExt as _;
    if let Err(panic) = std::panic::AssertUnwindSafe(check).catch_unwind().await {
        failures.push(format!("--- {name} ---\n{}", panic_message(panic.as_ref())));
    }
}

async fn soak(seed: u64, set: Vec<Fault>, faults: usize, phase_bound: Duration, replay: &str) {
    let started = Instant::now();
    let etcd = EtcdCluster::start(1).await;
    let dockerd = PrivateDockerd::start().await;
    let endpoints = etcd.endpoints();
    let host = dockerd.host();
    // The soak's own tags of the test images, in its own engine: the ones
    // it untags and restores.
    let images = [IMAGE_1, IMAGE_2].map(|source| {
        let tag = format!(
            "rtmanager-test/soak-{}:{}",
            std::process::id(),
            source.rsplit(':').next().unwrap_or("x")
        );
        let out = dockerd.cli(&["tag", source, &tag]);
        assert!(
            out.status.success(),
            "docker tag {source} {tag}: {}",
            outcome(&out)
        );
        (tag, source)
    });
    let store = connect_store(&endpoints).await;
    let docker: Arc<DockerRuntime> = connect_docker(Some(&host)).await;
    let keys = unique_keys("faults-soak");
    let installation = Installation::new(store.clone(), keys.clone(), docker.clone());
    let games: Vec<String> = (0..SOAK_GAMES)
        .map(|i| game_name(&format!("soak{i}")))
        .collect();
    let monitor = Monitor::start(docker.clone(), vec![installation.clone()], GC_BOUND).await;
    let mut slots = Vec::new();
    for node in ["soak-a", "soak-b"] {
        let process = controller(&keys, node, &endpoints, Some(&host))
            .start()
            .await;
        slots.push(Slot {
            node: node.to_owned(),
            process,
            frozen: false,
        });
    }
    create_mixed_from(&installation, &games, &images[0].0).await;
    installation.wait_converged(&games, CONVERGE).await;
    // Every game honours a restart token from here on: a status record
    // lost later must not replay it.
    burst(&installation, &games, "soak-0").await;
    installation.wait_converged(&games, CONVERGE).await;

    let mut soak = Soak {
        installation: installation.clone(),
        etcd,
        dockerd,
        endpoints,
        host,
        games: games.clone(),
        slots,
        rng: Rng::new(seed),
        images,
        exits: BTreeMap::new(),
        dockerd_restarts: 0,
        tokens: 0,
        hands: 0,
        orphans: Vec::new(),
        frozen: Vec::new(),
        started,
    };
    let mut injected = Vec::new();
    let phase = Instant::now();
    for k in 0..faults {
        if phase.elapsed() > phase_bound {
            soak.note("fault phase over its time bound: no more faults");
            break;
        }
        let fault = *soak.rng.pick(&set);
        let what = soak.inject(fault).await;
        soak.note(&format!("fault {}/{faults} {fault:?}: {what}", k + 1));
        injected.push(format!("{fault:?}: {what}"));
        let pause = soak
            .rng
            .duration(Duration::from_millis(200), Duration::from_secs(2));
        tokio::time::sleep(pause).await;
    }
    soak.heal().await;
    let faults_stopped = Instant::now();
    soak.note("faults stopped; waiting for convergence");
    let mut failures = Vec::new();
    check(&mut failures, "every game converges", async {
        installation
            .wait_converged_explained(&games, CONVERGE + CONVERGE / 2, replay)
            .await;
    })
    .await;
    let converged_in = faults_stopped.elapsed();
    check(&mut failures, "no history entry left in progress", async {
        installation.wait_history_resolved(CONVERGE).await;
    })
    .await;
    check(
        &mut failures,
        "no orphan left",
        installation.wait_no_orphans(GC_BOUND),
    )
    .await;
    soak.dockerd.assert_host_network_untouched();
    let report = monitor.finish().await;
    eprintln!(
        "[soak] {replay}, {:?}: {} faults:{}\n  converged (or gave up) {converged_in:?} after the \
         faults stopped\n  monitor: {}",
        started.elapsed(),
        injected.len(),
        block(&injected),
        report.line()
    );
    check(&mut failures, "the monitor's invariants", async {
        report.assert_clean(replay);
    })
    .await;
    check(
        &mut failures,
        "every container accounted for",
        installation.assert_containers_accounted(&report),
    )
    .await;
    check(&mut failures, "fencing", async {
        audit_freezes(&installation, &report, &soak.frozen);
    })
    .await;
    check(
        &mut failures,
        "no running container replaced without a reason",
        async {
            report.assert_replacements_explained(replay, games.len());
        },
    )
    .await;
    drop(soak);
    assert!(
        failures.is_empty(),
        "[{replay}] {} of the soak's checks failed; the faults were:{}\n\n{}",
        failures.len(),
        block(&injected),
        failures.join("\n\n")
    );
}

/// The fencing audit of the freeze drill, for every controller the soak
/// froze past its session: nothing it wrote after another controller took
/// over a game counts. The test's own writes (garbage, forged leases) are
/// left out: they are not a controller's.
fn audit_freezes(
    installation: &Installation,
    report: &invariants::MonitorReport,
    frozen: &[Frozen],
) {
    let prefix = installation.keys.prefix();
    let own = &report.ledgers[prefix].own_writes;
    let events: Vec<rtm_core::store::WatchEvent> = report.writes[prefix]
        .iter()
        .filter(|e| !own.contains(&e.mod_revision()))
        .cloned()
        .collect();
    let mut violations = Vec::new();
    for f in frozen {
        let audit = audit_stale_holder(&installation.keys, &events, &f.holder, f.at);
        eprintln!(
            "[soak] fencing audit of {} (frozen at rev {}): takeovers {:?}, {} entries resolved \
             by others, refusals {:?}",
            f.holder, f.at, audit.takeovers, audit.resolved_by_others, audit.refusal_records
        );
        violations.extend(audit.violations);
    }
    assert!(
        violations.is_empty(),
        "a controller frozen past its session wrote after another took over:{}",
        block(&violations)
    );
}

// ---------------------------------------------------------------------------
// The replacement check itself, on hand-made observations (no services).

mod replacement_check {
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    use rtm_core::ErrorCode;
    use rtm_core::model::{OpKind, OpSource, Timestamp};
    use rtm_core::records::history::HistoryEntry;

    use crate::invariants::{Deed, Disappearance, Hand, Op, judge_replacements};

    const GAME: &str = "g1";

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
    }

    /// Container `id` of g1, seen up from 0 s, gone between `s` and `s + 0.1`.
    fn gone(id: &str, s: u64) -> Disappearance {
        Disappearance {
            prefix: "/p".to_owned(),
            game: GAME.to_owned(),
            id: id.to_owned(),
            name: "rtm-g1".to_owned(),
            up_since: at(0),
            after: at(s),
            by: at(s) + Duration::from_millis(100),
            left: "gone".to_owned(),
            before: format!("[rtm-g1 {id}]"),
            then: "[]".to_owned(),
        }
    }

    /// An operation of g1 under `fence`, from `from` to `to` seconds, on
    /// container `before`.
    fn op(kind: OpKind, fence: i64, from: u64, to: u64, before: &str) -> Op {
        let mut entry = HistoryEntry::begin(
            GAME,
            &format!("op{fence}{kind:?}"),
            kind,
            OpSource::Reconcile,
        );
        entry.started_at = Timestamp::from(at(from));
        entry.container_id_before = Some(before.to_owned());
        entry.succeed();
        entry.finished_at = Some(Timestamp::from(at(to)));
        entry.fence_revision = Some(fence);
        Op {
            key: format!("/p/history/g1/{fence}"),
            entry,
            first_revision: fence,
            fence,
            deleted: false,
        }
    }

    fn ops(list: Vec<Op>) -> BTreeMap<String, Vec<Op>> {
        BTreeMap::from([(GAME.to_owned(), list)])
    }

    fn hand(deed: Deed, s: u64) -> Hand {
        Hand {
            game: Some(GAME.to_owned()),
            deed,
            what: format!("deed at {s}"),
            issued: at(s),
            acked: at(s) + Duration::from_millis(50),
        }
    }

    /// A restart request of the test, written at `revision` at `s` seconds.
    fn request(revision: i64, s: u64) -> Hand {
        hand(
            Deed::Spec {
                revision,
                source_ref: Some(format!("REQ-{revision}")),
            },
            s,
        )
    }

    #[test]
    fn a_requested_restart_explains_the_end_of_the_container_it_replaced() {
        let audit = judge_replacements(
            &[gone("x", 5)],
            &ops(vec![op(OpKind::Restart, 20, 5, 7, "x")]),
            &[request(10, 4)],
        );
        assert_eq!(
            (audit.explained.len(), audit.unexplained.len()),
            (1, 0),
            "{audit:?}"
        );
    }

    #[test]
    fn a_restart_replayed_after_its_request_was_answered_has_no_reason() {
        // Restart #1 (fence 20) answered the request (rev 10); a second
        // restart (fence 40) after the status was lost replays it.
        let audit = judge_replacements(
            &[gone("x", 5), gone("y", 30)],
            &ops(vec![
                op(OpKind::Restart, 20, 5, 7, "x"),
                op(OpKind::Restart, 40, 30, 32, "y"),
            ]),
            &[request(10, 4), hand(Deed::Note, 29)],
        );
        assert_eq!(
            (audit.explained.len(), audit.unexplained.len()),
            (1, 1),
            "{audit:?}"
        );
        let message = &audit.unexplained[0];
        assert!(
            message.contains("g1 rtm-g1 y") && message.contains("answered by an earlier operation"),
            "the message names the container and why no reason holds: {message}"
        );
    }

    #[test]
    fn an_adopt_between_a_request_and_its_restart_answers_nothing() {
        // The request (rev 10) came; the container was renamed by hand and an adopt (fence
        // 15, no ref) named it back; the restart that follows (fence 20) names the request:
        // it is the request's answer, not a replay.
        let mut adopt = op(OpKind::Adopt, 15, 4, 4, "x");
        adopt.entry.source_ref = String::new();
        let mut restart = op(OpKind::Restart, 20, 5, 7, "x");
        restart.entry.source_ref = "REQ-10".to_owned();
        let audit = judge_replacements(
            &[gone("x", 5)],
            &ops(vec![adopt, restart.clone()]),
            &[request(10, 3)],
        );
        assert_eq!(
            (audit.explained.len(), audit.unexplained.len()),
            (1, 0),
            "{audit:?}"
        );
        // An adopt that names the request answers it: a restart after it has no reason.
        let mut naming = op(OpKind::Adopt, 15, 4, 4, "x");
        naming.entry.source_ref = "REQ-10".to_owned();
        let audit = judge_replacements(
            &[gone("x", 5)],
            &ops(vec![naming, restart]),
            &[request(10, 3)],
        );
        assert_eq!(
            (audit.explained.len(), audit.unexplained.len()),
            (0, 1),
            "{audit:?}"
        );
    }

    #[test]
    fn a_request_answered_by_a_new_container_explains_no_later_restart() {
        // The container was killed (a hand), the request (rev 10) answered
        // by the start that replaced it (fence 20): a restart later has no
        // reason.
        let audit = judge_replacements(
            &[gone("x", 3), gone("y", 30)],
            &ops(vec![
                op(OpKind::Start, 20, 5, 6, "x"),
                op(OpKind::Restart, 40, 30, 32, "y"),
            ]),
            &[hand(Deed::Container, 3), request(10, 4)],
        );
        assert_eq!(
            (audit.explained.len(), audit.unexplained.len()),
            (1, 1),
            "{audit:?}"
        );
    }

    #[test]
    fn a_restart_refused_before_it_touched_the_container_neither_explains_nor_strands_it() {
        // Restart (fence 20) refused for a missing image, stopping nothing;
        // the image back, the same request is retried (fence 30) and
        // replaces the container.
        let mut refused = op(OpKind::Restart, 20, 4, 4, "x");
        refused.entry.container_id_before = None;
        refused
            .entry
            .fail(ErrorCode::ImageNotFound, "image is not present");
        refused.entry.finished_at = Some(Timestamp::from(at(4)));
        refused.entry.source_ref = "REQ-10".to_owned();
        let mut retried = op(OpKind::Restart, 30, 5, 6, "x");
        retried.entry.source_ref = "REQ-10".to_owned();
        let audit = judge_replacements(
            &[gone("x", 5)],
            &ops(vec![refused, retried]),
            &[request(10, 3)],
        );
        assert_eq!(
            (
                audit.explained.len(),
                audit.unexplained.len(),
                audit.stranded.len()
            ),
            (1, 0, 0),
            "{audit:?}"
        );
    }

    #[test]
    fn an_operation_that_began_before_the_request_is_not_explained_by_it() {
        let audit = judge_replacements(
            &[gone("x", 5)],
            &ops(vec![op(OpKind::Restart, 20, 5, 7, "x")]),
            &[request(25, 5)],
        );
        assert_eq!(audit.unexplained.len(), 1, "{audit:?}");
    }

    #[test]
    fn an_operation_that_read_the_document_under_its_lease_is_explained_by_a_later_request() {
        // The lease was taken plainly (fence 20), the document read under
        // it saw the request written at 25; the entry came at 30.
        let mut restart = op(OpKind::Restart, 20, 5, 7, "x");
        restart.first_revision = 30;
        restart.entry.source_ref = "REQ-25".to_owned();
        let audit = judge_replacements(&[gone("x", 5)], &ops(vec![restart]), &[request(25, 5)]);
        assert_eq!(audit.explained.len(), 1, "{audit:?}");
    }

    #[test]
    fn a_change_made_during_a_restart_explains_the_recreate_after_it() {
        // Restart (fence 192) for the request at 183 reads the document once,
        // writes its outer entry at 193 and its inner start at 200; the spec
        // changes at 196 (the annotations carried over, so the same request
        // id). The inner start made its container from the document read
        // before 196, so the next recreate (fence 214) is for 196.
        let mut outer = op(OpKind::Restart, 192, 4, 8, "a");
        outer.first_revision = 193;
        let mut stop = op(OpKind::Stop, 192, 4, 7, "a");
        stop.first_revision = 194;
        let mut start = op(OpKind::Start, 192, 7, 8, "a");
        start.entry.container_id_before = None;
        start.first_revision = 200;
        let mut again = op(OpKind::Restart, 214, 8, 11, "b");
        again.first_revision = 215;
        let mut list = vec![outer, stop, start, again];
        for op in &mut list {
            op.entry.source_ref = "REQ-183".to_owned();
        }
        let change = hand(
            Deed::Spec {
                revision: 196,
                source_ref: Some("REQ-183".to_owned()),
            },
            5,
        );
        let audit = judge_replacements(
            &[gone("a", 6), gone("b", 10)],
            &ops(list),
            &[request(183, 3), change],
        );
        assert_eq!(
            (audit.explained.len(), audit.unexplained.len()),
            (2, 0),
            "{audit:?}"
        );
    }

    #[test]
    fn a_request_answered_by_an_operation_that_read_it_under_its_lease_explains_no_replay() {
        let mut first = op(OpKind::Restart, 20, 5, 7, "x");
        first.first_revision = 30;
        first.entry.source_ref = "REQ-25".to_owned();
        let mut replay = op(OpKind::Restart, 40, 30, 32, "y");
        replay.entry.source_ref = "REQ-25".to_owned();
        let audit = judge_replacements(
            &[gone("x", 5), gone("y", 30)],
            &ops(vec![first, replay]),
            &[request(25, 5)],
        );
        assert_eq!(
            (audit.explained.len(), audit.unexplained.len()),
            (1, 1),
            "{audit:?}"
        );
    }

    #[test]
    fn an_operation_on_another_container_or_at_another_time_explains_nothing() {
        let audit = judge_replacements(
            &[gone("x", 50)],
            &ops(vec![
                op(OpKind::Restart, 20, 49, 51, "other"),
                op(OpKind::Restart, 30, 5, 7, "x"),
            ]),
            &[request(10, 4)],
        );
        assert_eq!(audit.unexplained.len(), 1, "{audit:?}");
    }

    #[test]
    fn a_hand_on_the_container_explains_one_end_only() {
        let audit = judge_replacements(
            &[gone("x", 3), gone("y", 6)],
            &ops(Vec::new()),
            &[hand(Deed::Container, 3)],
        );
        assert_eq!(
            (audit.explained.len(), audit.unexplained.len()),
            (1, 1),
            "{audit:?}"
        );
    }

    #[test]
    fn an_engine_restart_explains_every_end_within_its_window() {
        // The engine went down at 3: it took the game's container, and the
        // one the controller had started as it was going down.
        let mut later = gone("y", 5);
        later.up_since = at(3);
        let audit = judge_replacements(
            &[gone("x", 3), later],
            &ops(Vec::new()),
            &[hand(Deed::Engine, 3)],
        );
        assert_eq!(
            (audit.explained.len(), audit.unexplained.len()),
            (2, 0),
            "{audit:?}"
        );
    }

    #[test]
    fn a_pause_or_a_rename_is_no_reason() {
        let audit = judge_replacements(&[gone("x", 3)], &ops(Vec::new()), &[hand(Deed::Note, 3)]);
        assert_eq!(audit.unexplained.len(), 1, "{audit:?}");
    }

    #[test]
    fn a_sweep_removal_with_a_note_and_an_orphan_collected_are_reasons() {
        let mut removal = op(OpKind::Remove, 20, 5, 6, "x");
        removal.entry.note = Some("duplicate of the game's container".to_owned());
        let audit = judge_replacements(&[gone("x", 5)], &ops(vec![removal]), &[]);
        assert_eq!(audit.explained.len(), 1, "{audit:?}");
        let audit = judge_replacements(&[gone("z", 5)], &ops(Vec::new()), &[hand(Deed::Orphan, 1)]);
        assert_eq!(audit.explained.len(), 1, "{audit:?}");
    }

    #[test]
    fn a_restart_that_removed_the_container_and_found_no_image_strands_the_game() {
        let mut restart = op(OpKind::Restart, 20, 5, 7, "x");
        restart.entry.fail(
            ErrorCode::ImageNotFound,
            "inner start failed: no such image",
        );
        restart.entry.finished_at = Some(Timestamp::from(at(7)));
        let audit = judge_replacements(&[gone("x", 5)], &ops(vec![restart]), &[request(10, 4)]);
        assert_eq!(
            (audit.explained.len(), audit.stranded.len()),
            (1, 1),
            "{audit:?}"
        );
    }
}
