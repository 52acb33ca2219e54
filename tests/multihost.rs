//! Many Docker hosts (issue #16), end to end: three simulated machines
//! (`rtm_testkit::hosts`: a network namespace each, with its own dockerd
//! and the real `rtmanager` binary inside), a private 3-member etcd they
//! reach over their links, and a monitor polling every engine the whole
//! time, which fails the test if one game ever runs on two hosts.
//!
//! Needs root (namespaces, veth links), etcd's binaries and Docker's;
//! ignored by a bare `cargo test`, run by `scripts/test`. The private etcd
//! and engines are the test's own, stopped and deleted at the end; the
//! machine's engine is only read (the test images are copied from it).

use rtm_testkit as common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtm_controller::runtime::{LABEL_GAME, LABEL_MANAGED_BY, MANAGED_BY};
use rtm_core::model::parse::parse_documents;
use rtm_core::model::{GameRuntimeStatus, Phase};
use rtm_core::records::Documents;
use rtm_core::store::{Keys, Store};

use common::docker::{IMAGE_1, run_bounded};
use common::etcd_cluster::EtcdCluster;
use common::hosts::{Host, HostNetwork, Monitor};
use common::process::{ControllerOptions, eventually, summary};
use common::{connect_store, heartbeats, revision_of, unique_keys};

/// The controllers' session lease TTL (the minimum allowed): a session
/// lost behind a cut link expires fast.
const LEASE_TTL: &str = "3s";

/// How long a game may take to start on a fresh host (vfs copies the
/// image's layers on create) or to converge again.
const CONVERGE: Duration = Duration::from_secs(60);

/// A game pinned to `node`.
fn pinned(name: &str, node: &str) -> rtm_core::model::GameRuntime {
    let yaml = format!(
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n\
         spec:\n  image: {IMAGE_1}\n  imagePullPolicy: Never\n  stopTimeout: 3s\n  \
         restartPolicy: Always\n  node: {node}\n"
    );
    parse_documents(&yaml)
        .expect("the fixture parses")
        .remove(0)
}

/// The status of `game` once it is Running on `host`'s node with the
/// host's advertised address as `status.address` (the first Running status
/// may come before the address does).
async fn running_on(documents: &Documents, game: &str, host: &Host) -> GameRuntimeStatus {
    let node = host.name();
    let address = host.address().to_string();
    eventually(
        CONVERGE,
        &format!("{game} Running on {node}, at {address}"),
        async || match documents.get_status(game).await {
            Ok(Some(status))
                if status.phase == Phase::Running
                    && status.node.as_deref() == Some(node)
                    && status.address.as_deref() == Some(address.as_str()) =>
            {
                Ok(status)
            }
            Ok(Some(status)) => Err(format!(
                "{}, node {:?}, address {:?}",
                summary(&status),
                status.node,
                status.address
            )),
            Ok(None) => Err("no status yet".to_owned()),
            Err(e) => Err(e.to_string()),
        },
    )
    .await
}

/// Starts one host per name, at once (each copies the test images into
/// its engine).
async fn start_hosts(network: &HostNetwork, names: &[&'static str]) -> Vec<Host> {
    let starting: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, &name)| {
            let network = network.clone();
            let index = u8::try_from(i).expect("a few hosts");
            tokio::spawn(async move { Host::start(&network, index, name).await })
        })
        .collect();
    let mut hosts = Vec::new();
    for start in starting {
        hosts.push(start.await.expect("a host started"));
    }
    hosts
}

/// Starts `host`'s controller on `keys`, reaching etcd at `etcd`, as node
/// `host` (it runs the games assigned to it: the tests pin theirs).
async fn start_controller(host: &mut Host, keys: &Keys, etcd: &[String]) {
    let name = host.name().to_owned();
    let address = host.address().to_string();
    let options = ControllerOptions::new(keys, &name)
        .env("RTM_ETCD_ENDPOINTS", &etcd.join(","))
        .env("RTM_LEASE_TTL", LEASE_TTL)
        .env("RTM_RESYNC", "2s")
        .args(&["--node-name", &name, "--advertise-address", &address]);
    host.start_controller(options).await;
}

/// The heartbeats (controller holder ids) of `node`'s controller.
async fn heartbeats_of(store: &dyn Store, keys: &Keys, node: &str) -> Result<Vec<String>, String> {
    let prefix = format!("{node}-");
    Ok(heartbeats(store, keys)
        .await?
        .into_iter()
        .filter(|holder| holder.starts_with(&prefix))
        .collect())
}

/// One test at a time: each times lease expiries in seconds.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root, etcd and Docker: run scripts/test"]
async fn three_hosts_run_their_pinned_games_and_a_cut_link_heals_without_a_twin() {
    let _serial = SERIAL.lock().await;
    let began = Instant::now();
    let mut phases: Vec<String> = Vec::new();
    let mut mark = |what: &str, since: &mut Instant| {
        phases.push(format!("{what} {:?}", since.elapsed()));
        *since = Instant::now();
    };
    let mut since = Instant::now();

    // Declared in this order so they drop in reverse: the monitor, the
    // hosts (controllers, engines, namespaces), then etcd, then the network.
    let network = HostNetwork::create();
    let etcd = EtcdCluster::start_with_address(3, network.service_address()).await;
    mark("etcd", &mut since);
    let names: [&'static str; 3] = ["n1", "n2", "n3"];
    let mut hosts = start_hosts(&network, &names).await;
    mark("hosts (namespace, link, dockerd, images)", &mut since);

    let keys = unique_keys("multihost");
    let store = connect_store(&etcd.endpoints()).await;
    let documents = Documents::new(store.clone(), keys.clone());
    let reachable = etcd.endpoints_at_extra_address();
    for host in &mut hosts {
        start_controller(host, &keys, &reachable).await;
    }
    mark("controllers ready", &mut since);

    let monitor = Monitor::start(&hosts.iter().collect::<Vec<_>>()).await;
    let games: Vec<String> = names
        .iter()
        .map(|n| format!("mh-{n}-{}", std::process::id()))
        .collect();
    for (game, node) in games.iter().zip(names) {
        documents
            .create(&pinned(game, node))
            .await
            .unwrap_or_else(|e| panic!("create gameruntime/{game}: {e}"));
    }
    for ((game, node), host) in games.iter().zip(names).zip(&hosts) {
        running_on(&documents, game, host).await;
        monitor.wait_running_only_on(game, node, CONVERGE).await;
    }
    mark("3 games running, each on its host", &mut since);

    // Cut n2's link: its controller loses etcd (its session expires), its
    // engine and game run on.
    let (cut, cut_game) = (1, &games[1]);
    let before = heartbeats_of(store.as_ref(), &keys, "n2")
        .await
        .expect("read heartbeats");
    assert_eq!(
        before.len(),
        1,
        "one heartbeat of n2's controller: {before:?}"
    );
    hosts[cut].cut_link();
    eventually(
        Duration::from_secs(30),
        "n2's heartbeat to expire behind its cut link",
        async || match heartbeats_of(store.as_ref(), &keys, "n2").await? {
            now if now.iter().any(|h| before.contains(h)) => Err(format!("still {now:?}")),
            _ => Ok(()),
        },
    )
    .await;
    for node in ["n1", "n3"] {
        let live = heartbeats_of(store.as_ref(), &keys, node)
            .await
            .expect("read heartbeats");
        assert_eq!(
            live.len(),
            1,
            "{node}'s controller kept its session: {live:?}"
        );
    }
    monitor.wait_samples("n2", 3, Duration::from_secs(10)).await;
    assert_eq!(
        monitor.running_on(cut_game),
        ["n2".to_owned()].into(),
        "{cut_game} runs on in n2's engine while the link is cut, and nowhere else"
    );
    mark("link cut, session expired", &mut since);

    hosts[cut].restore_link();
    let after = eventually(
        Duration::from_secs(30),
        "n2's controller to open a new session once its link is back",
        async || match heartbeats_of(store.as_ref(), &keys, "n2").await? {
            now if now.len() == 1 && !before.contains(&now[0]) => Ok(now),
            now => Err(format!("heartbeats of n2: {now:?}")),
        },
    )
    .await;
    {
        let controller = hosts[cut].controller_mut();
        assert!(
            !controller.has_exited(),
            "n2's controller exited behind the cut link{}",
            controller.log_tail()
        );
        controller.wait_ready(Duration::from_secs(30)).await;
    }
    // It acts again: a restart asked for now is done by n2's controller,
    // on n2's engine.
    let doc = documents
        .get(cut_game)
        .await
        .expect("read the document")
        .expect("the document exists");
    let was = documents
        .get_status(cut_game)
        .await
        .expect("read the status")
        .expect("a status");
    let mut asked = doc.clone();
    asked.spec.restart_token = "after-the-cut".to_owned();
    documents
        .update(&asked, revision_of(&doc))
        .await
        .unwrap_or_else(|e| panic!("ask {cut_game} for a restart: {e}"));
    let restarted = eventually(
        CONVERGE,
        &format!("{cut_game} restarted by n2's controller after the cut"),
        async || match documents.get_status(cut_game).await {
            Ok(Some(status))
                if status.observed_restart_token.as_deref() == Some("after-the-cut")
                    && status.phase == Phase::Running =>
            {
                Ok(status)
            }
            Ok(Some(status)) => Err(summary(&status)),
            Ok(None) => Err("no status".to_owned()),
            Err(e) => Err(e.to_string()),
        },
    )
    .await;
    assert_eq!(
        restarted.node.as_deref(),
        Some("n2"),
        "{}",
        summary(&restarted)
    );
    assert_ne!(
        restarted.container_id,
        was.container_id,
        "the restart made a new container: {}",
        summary(&restarted)
    );
    monitor.wait_running_only_on(cut_game, "n2", CONVERGE).await;
    mark("link restored, new session, restart done", &mut since);

    for ((game, node), host) in games.iter().zip(names).zip(&hosts) {
        assert_eq!(
            monitor.hosts_seen(game),
            [node.to_owned()].into(),
            "{game} only ever ran on {node}"
        );
        running_on(&documents, game, host).await;
    }
    monitor.assert_never_two();
    eprintln!(
        "[multihost] {:?}: {}; n2 sessions {before:?} -> {after:?}\n  {}",
        began.elapsed(),
        phases.join(", "),
        monitor.summary()
    );
}

/// The harness's other faults, on one host: a frozen engine's games count
/// as not running (they were paused) and come back when it is thawed; a
/// killed controller, restarted, opens a new session and keeps the game's
/// container.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root, etcd and Docker: run scripts/test"]
async fn a_frozen_engine_runs_nothing_until_thawed_and_a_restarted_controller_keeps_its_game() {
    let _serial = SERIAL.lock().await;
    let began = Instant::now();
    let network = HostNetwork::create();
    let etcd = EtcdCluster::start_with_address(1, network.service_address()).await;
    let mut hosts = start_hosts(&network, &["solo"]).await;
    let host = &mut hosts[0];
    let keys = unique_keys("multihost-freeze");
    let store = connect_store(&etcd.endpoints()).await;
    let documents = Documents::new(store.clone(), keys.clone());
    start_controller(host, &keys, &etcd.endpoints_at_extra_address()).await;
    let monitor = Monitor::start(&[&*host]).await;
    let game = format!("mh-freeze-{}", std::process::id());
    documents
        .create(&pinned(&game, "solo"))
        .await
        .unwrap_or_else(|e| panic!("create gameruntime/{game}: {e}"));
    let first = running_on(&documents, &game, host).await;
    monitor.wait_running_only_on(&game, "solo", CONVERGE).await;

    host.freeze_engine().await;
    let listings = monitor.samples("solo");
    let mut ps = std::process::Command::new("docker");
    ps.args(["-H", &host.docker_host(), "ps"]);
    assert!(
        run_bounded(ps, Duration::from_secs(2)).is_none(),
        "a frozen engine answers nothing"
    );
    assert!(
        monitor.running_on(&game).is_empty(),
        "{game}'s container was paused before the freeze, so the engine's last answer shows \
         it not running: {}",
        monitor.summary()
    );
    host.thaw_engine().await;
    monitor.wait_running_only_on(&game, "solo", CONVERGE).await;
    assert!(
        monitor.samples("solo") > listings,
        "the monitor lists the thawed engine again"
    );

    let before = heartbeats_of(store.as_ref(), &keys, "solo")
        .await
        .expect("read heartbeats");
    host.kill_controller();
    host.restart_controller().await;
    eventually(
        Duration::from_secs(30),
        "the restarted controller's new session",
        async || match heartbeats_of(store.as_ref(), &keys, "solo").await? {
            now if now.iter().any(|h| !before.contains(h)) => Ok(()),
            now => Err(format!("heartbeats of solo: {now:?}")),
        },
    )
    .await;
    let again = running_on(&documents, &game, host).await;
    assert_eq!(
        again.container_id,
        first.container_id,
        "the restarted controller kept the running container: {}",
        summary(&again)
    );
    assert!(
        host.controller().log_text().contains("solo"),
        "the restarted controller's log continues in the host's directory"
    );
    monitor.assert_never_two();
    eprintln!(
        "[multihost-freeze] {:?}\n  {}",
        began.elapsed(),
        monitor.summary()
    );
    // Left frozen: the host's drop thaws the engine before it removes the
    // containers and stops it (as after a test that failed mid-freeze).
    host.freeze_engine().await;
}

/// The referee itself: a container of one game started by hand on two
/// hosts' engines is reported, naming the game and both hosts; once one is
/// paused, the game runs on one host again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root and Docker: run scripts/test"]
async fn the_monitor_reports_a_game_running_on_two_hosts() {
    let _serial = SERIAL.lock().await;
    let network = HostNetwork::create();
    let hosts = start_hosts(&network, &["ta", "tb"]).await;
    let monitor = Monitor::start(&hosts.iter().collect::<Vec<_>>()).await;
    let game = format!("mh-twin-{}", std::process::id());
    let labels = [
        format!("{LABEL_MANAGED_BY}={MANAGED_BY}"),
        format!("{LABEL_GAME}={game}"),
    ];
    for host in &hosts {
        let run = host.docker(&[
            "run", "-d", "--name", &game, "--label", &labels[0], "--label", &labels[1], IMAGE_1,
        ]);
        assert!(
            run.status.success(),
            "docker run on {}: {}",
            host.name(),
            String::from_utf8_lossy(&run.stderr)
        );
    }
    eventually(
        Duration::from_secs(10),
        "the monitor to report the twin",
        async || match monitor.overlaps().as_slice() {
            [overlap, ..] => Ok(overlap.clone()),
            [] => Err(monitor.summary()),
        },
    )
    .await;
    let overlap = &monitor.overlaps()[0];
    assert_eq!(overlap.game, game);
    let on: Vec<&str> = overlap.hosts.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(on, ["ta", "tb"], "{overlap}");
    let message = monitor
        .check_never_two()
        .expect_err("the check fails once a game ran on two hosts");
    assert!(
        message.contains(&game) && message.contains("ta") && message.contains("tb"),
        "the failure names the game and the hosts: {message}"
    );

    let pause = hosts[1].docker(&["pause", &game]);
    assert!(pause.status.success(), "docker pause on tb");
    monitor
        .wait_running_only_on(&game, "ta", Duration::from_secs(10))
        .await;
}

/// The failure bounds the placement tests run with: a lost node's games move
/// max(grace, fence + 10 s) = 14 s after the scheduler sees it go, and its
/// controller stops them 4 s after its last keepalive (4 + 10 < 3 + 12).
const FAST_FAILURE: [&str; 4] = ["--self-fence-after", "4s", "--node-failure-grace", "12s"];

/// Starts `host`'s controller with `extra` options besides the common ones.
async fn start_controller_with(host: &mut Host, keys: &Keys, etcd: &[String], extra: &[&str]) {
    let name = host.name().to_owned();
    let address = host.address().to_string();
    let mut args = vec!["--node-name", &name, "--advertise-address", &address];
    args.extend_from_slice(extra);
    let options = ControllerOptions::new(keys, &name)
        .env("RTM_ETCD_ENDPOINTS", &etcd.join(","))
        .env("RTM_LEASE_TTL", LEASE_TTL)
        .env("RTM_RESYNC", "2s")
        .args(&args);
    host.start_controller(options).await;
}

/// A game with no node, `extra` YAML lines added to its spec.
fn unpinned(name: &str, extra: &str) -> rtm_core::model::GameRuntime {
    let yaml = format!(
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n\
         spec:\n  image: {IMAGE_1}\n  imagePullPolicy: Never\n  stopTimeout: 3s\n  \
         restartPolicy: Always\n{extra}"
    );
    parse_documents(&yaml)
        .expect("the fixture parses")
        .remove(0)
}

/// The status of `game` once it is Running (anywhere).
async fn running(documents: &Documents, game: &str) -> GameRuntimeStatus {
    eventually(
        CONVERGE,
        &format!("{game} Running"),
        async || match documents.get_status(game).await {
            Ok(Some(status)) if status.phase == Phase::Running && status.node.is_some() => {
                Ok(status)
            }
            Ok(Some(status)) => Err(summary(&status)),
            Ok(None) => Err("no status yet".to_owned()),
            Err(e) => Err(e.to_string()),
        },
    )
    .await
}

/// The assignment of `game` as stored.
async fn assignment(
    store: &dyn Store,
    keys: &Keys,
    game: &str,
) -> Option<rtm_core::records::nodes::Assignment> {
    let kv = store.get(&keys.assignment(game)).await.ok()??;
    rtm_core::records::nodes::decode(&kv.value)
}

/// Runs the rtctl binary against the private etcd.
fn rtctl(keys: &Keys, etcd: &[String], args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_rtctl"));
    command
        .args(args)
        .env("RTM_ETCD_ENDPOINTS", etcd.join(","))
        .env("RTM_PREFIX", keys.prefix());
    run_bounded(command, Duration::from_secs(120)).expect("rtctl finished")
}

/// Everything a placement test stands on, dropped in reverse order.
struct Fleet {
    monitor: Monitor,
    hosts: Vec<Host>,
    documents: Documents,
    store: Arc<dyn Store>,
    keys: Keys,
    etcd: EtcdCluster,
    _network: HostNetwork,
}

impl Fleet {
    /// Three hosts n1, n2, n3, each controller with its `extra` options.
    async fn start(test: &str, extra: [&[&str]; 3]) -> Fleet {
        let network = HostNetwork::create();
        let etcd = EtcdCluster::start_with_address(3, network.service_address()).await;
        let mut hosts = start_hosts(&network, &["n1", "n2", "n3"]).await;
        let keys = unique_keys(test);
        let store = connect_store(&etcd.endpoints()).await;
        let reachable = etcd.endpoints_at_extra_address();
        for (host, extra) in hosts.iter_mut().zip(extra) {
            start_controller_with(host, &keys, &reachable, extra).await;
        }
        let monitor = Monitor::start(&hosts.iter().collect::<Vec<_>>()).await;
        Fleet {
            monitor,
            hosts,
            documents: Documents::new(store.clone(), keys.clone()),
            store,
            keys,
            etcd,
            _network: network,
        }
    }

    fn host(&self, node: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name() == node)
            .unwrap_or_else(|| panic!("no host {node}"))
    }

    fn host_mut(&mut self, node: &str) -> &mut Host {
        self.hosts
            .iter_mut()
            .find(|h| h.name() == node)
            .unwrap_or_else(|| panic!("no host {node}"))
    }

    fn rtctl(&self, args: &[&str]) -> std::process::Output {
        rtctl(&self.keys, &self.etcd.endpoints(), args)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root, etcd and Docker: run scripts/test"]
async fn games_are_placed_by_selector_and_capacity_with_ports_of_their_own_node() {
    let _serial = SERIAL.lock().await;
    let eu = [
        "--node-labels",
        "region=eu",
        "--capacity",
        "games=2",
        "--placement-strategy",
        "Distributed",
    ];
    let us = [
        "--node-labels",
        "region=us",
        "--capacity",
        "games=2",
        "--placement-strategy",
        "Distributed",
    ];
    let fleet = Fleet::start("mh-place", [&eu, &eu, &us]).await;
    let pid = std::process::id();
    let auto = "  nodeSelector:\n    region: eu\n  ports:\n  - containerPort: 7777\n    hostPort: auto\n  - containerPort: 7777\n    protocol: UDP\n    hostPort: auto\n";
    let games: Vec<String> = (0..4).map(|i| format!("eu{i}-{pid}")).collect();
    for game in &games {
        fleet.documents.create(&unpinned(game, auto)).await.unwrap();
    }
    let mut on: std::collections::BTreeMap<String, Vec<u16>> = Default::default();
    for game in &games {
        let status = running(&fleet.documents, game).await;
        let node = status.node.clone().unwrap();
        assert!(
            node == "n1" || node == "n2",
            "{game} on {node}: the selector wants region=eu"
        );
        fleet
            .monitor
            .wait_running_only_on(game, &node, CONVERGE)
            .await;
        assert_eq!(
            status.address.as_deref(),
            Some(fleet.host(&node).address().to_string().as_str())
        );
        // One binding per address family; one port per protocol.
        let ports: std::collections::BTreeSet<(String, u16)> = status
            .ports
            .iter()
            .map(|p| (format!("{:?}", p.protocol), p.host_port))
            .collect();
        assert_eq!(ports.len(), 2, "{game}: {:?}", status.ports);
        assert!(
            ports.iter().all(|(_, p)| (17000..=17999).contains(p)),
            "{ports:?}"
        );
        let tcp = ports.iter().find(|(proto, _)| proto == "Tcp").unwrap().1;
        on.entry(node).or_default().push(tcp);
    }
    assert_eq!(on.len(), 2, "two per eu node: {on:?}");
    for (node, ports) in &on {
        assert_eq!(ports.len(), 2, "capacity games=2 on {node}: {on:?}");
        assert_ne!(ports[0], ports[1], "distinct ports on {node}");
    }
    // A fifth eu game fits nowhere: unschedulable, saying why.
    let fifth = format!("eu4-{pid}");
    fleet
        .documents
        .create(&unpinned(&fifth, auto))
        .await
        .unwrap();
    let why = eventually(
        Duration::from_secs(30),
        "the fifth game unschedulable",
        async || match assignment(fleet.store.as_ref(), &fleet.keys, &fifth).await {
            Some(a) if a.node.is_none() => Ok(a.unschedulable.unwrap_or_default()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    assert!(
        why.contains("0/3 nodes fit")
            && why.contains("insufficient games")
            && why.contains("node selector"),
        "{why}"
    );
    let listed = String::from_utf8_lossy(&fleet.rtctl(&["get", &fifth]).stdout).into_owned();
    assert!(listed.contains("Unschedulable"), "{listed}");
    // A restart recreates the container on the same node with the same ports.
    let game = &games[0];
    let before = running(&fleet.documents, game).await;
    let restarted = fleet.rtctl(&["restart", game, "--wait"]);
    assert!(
        restarted.status.success(),
        "{}",
        String::from_utf8_lossy(&restarted.stderr)
    );
    let after = eventually(CONVERGE, "a new container", async || {
        let status = running(&fleet.documents, game).await;
        if status.container_id != before.container_id {
            Ok(status)
        } else {
            Err("same container".to_owned())
        }
    })
    .await;
    assert_eq!(after.node, before.node, "stays on its node");
    assert_eq!(
        after.ports, before.ports,
        "keeps its ports across a recreate"
    );
    let env = fleet.host(after.node.as_deref().unwrap()).docker(&[
        "inspect",
        "--format",
        "{{range .Config.Env}}{{println .}}{{end}}",
        after.container_id.as_deref().unwrap(),
    ]);
    let env = String::from_utf8_lossy(&env.stdout).into_owned();
    let tcp = after
        .ports
        .iter()
        .find(|p| p.protocol == rtm_core::model::Protocol::Tcp)
        .unwrap();
    assert!(
        env.contains(&format!("RTM_PORT_7777={}", after.ports[0].host_port)),
        "{env}"
    );
    assert!(
        env.contains(&format!("RTM_PORT_7777_TCP={}", tcp.host_port)),
        "{env}"
    );
    fleet.monitor.assert_never_two();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root, etcd and Docker: run scripts/test"]
async fn a_drain_waits_for_the_session_then_moves_the_game_and_runs_nothing_new() {
    let _serial = SERIAL.lock().await;
    let packed: [&str; 2] = ["--placement-strategy", "Packed"];
    let fleet = Fleet::start("mh-drain", [&packed, &packed, &packed]).await;
    let game = format!("drained-{}", std::process::id());
    fleet.documents.create(&unpinned(&game, "")).await.unwrap();
    let first = running(&fleet.documents, &game).await;
    let from = first.node.clone().unwrap();
    assert_eq!(from, "n1", "Packed fills the first node");
    let sessions =
        rtm_core::records::sessions::Sessions::new(fleet.store.clone(), fleet.keys.clone());
    let request = rtm_core::records::sessions::SessionRequest {
        reference: Some("match-1".into()),
        source: None,
        expected: None,
    };
    eventually(Duration::from_secs(30), "allocated", async || {
        sessions
            .allocate(&game, &request)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    let drain = fleet.rtctl(&["drain", &from, "--no-wait"]);
    assert!(
        drain.status.success(),
        "{}",
        String::from_utf8_lossy(&drain.stderr)
    );
    // The scheduler gives it another node at once; the move waits for the match.
    let target = eventually(
        Duration::from_secs(30),
        "reassigned",
        async || match assignment(fleet.store.as_ref(), &fleet.keys, &game).await {
            Some(a) if a.node.as_deref().is_some_and(|n| n != from) => Ok(a.node.unwrap()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    let waiting = Instant::now();
    while waiting.elapsed() < Duration::from_secs(6) {
        assert_eq!(
            fleet.monitor.running_on(&game),
            [from.clone()].into_iter().collect(),
            "a live match is not moved"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sessions.release(&game, &request).await.unwrap();
    fleet
        .monitor
        .wait_running_only_on(&game, &target, CONVERGE)
        .await;
    eventually(
        CONVERGE,
        "the status to say the new node",
        async || match fleet.documents.get_status(&game).await {
            Ok(Some(s))
                if s.phase == Phase::Running && s.node.as_deref() == Some(target.as_str()) =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    // A drained node takes nothing new.
    let next = format!("after-drain-{}", std::process::id());
    fleet.documents.create(&unpinned(&next, "")).await.unwrap();
    let placed = running(&fleet.documents, &next).await;
    assert_ne!(placed.node.as_deref(), Some(from.as_str()));
    let drained = fleet.rtctl(&["drain", &from, "--timeout", "30s"]);
    assert!(
        drained.status.success(),
        "{}",
        String::from_utf8_lossy(&drained.stderr)
    );
    fleet.monitor.assert_never_two();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root, etcd and Docker: run scripts/test"]
async fn a_dead_nodes_games_run_elsewhere_after_the_grace_never_twice() {
    let _serial = SERIAL.lock().await;
    let mut fleet = Fleet::start("mh-dead", [&FAST_FAILURE, &FAST_FAILURE, &FAST_FAILURE]).await;
    let game = format!("survivor-{}", std::process::id());
    fleet.documents.create(&unpinned(&game, "")).await.unwrap();
    let first = running(&fleet.documents, &game).await;
    let dead = first.node.clone().unwrap();
    let killed = Instant::now();
    fleet.host_mut(&dead).kill_controller();
    fleet.host_mut(&dead).freeze_engine().await;
    let moved = eventually(
        Duration::from_secs(60),
        "the game Running elsewhere",
        async || match fleet.documents.get_status(&game).await {
            Ok(Some(s))
                if s.phase == Phase::Running && s.node.as_deref() != Some(dead.as_str()) =>
            {
                Ok(s)
            }
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    let took = killed.elapsed();
    // Lost after the 3 s TTL, moved 14 s later (grace 12 s, fence 4 s + 10 s).
    assert!(
        took >= Duration::from_secs(14),
        "moved after {took:?}: before the bound"
    );
    let to = moved.node.unwrap();
    fleet
        .monitor
        .wait_running_only_on(&game, &to, CONVERGE)
        .await;
    let reason = assignment(fleet.store.as_ref(), &fleet.keys, &game)
        .await
        .unwrap()
        .reason;
    assert_eq!(reason, rtm_core::records::nodes::AssignmentReason::NodeLost);
    fleet.monitor.assert_never_two();
    eprintln!("moved off the dead node {took:?} after it died");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root, etcd and Docker: run scripts/test"]
async fn a_node_cut_off_from_etcd_stops_its_games_before_another_starts_them() {
    let _serial = SERIAL.lock().await;
    let mut fleet = Fleet::start("mh-fence", [&FAST_FAILURE, &FAST_FAILURE, &FAST_FAILURE]).await;
    let game = format!("fenced-{}", std::process::id());
    fleet.documents.create(&unpinned(&game, "")).await.unwrap();
    let first = running(&fleet.documents, &game).await;
    let cut = first.node.clone().unwrap();
    fleet
        .monitor
        .wait_running_only_on(&game, &cut, CONVERGE)
        .await;
    let cut_at = Instant::now();
    fleet.host_mut(&cut).cut_link();
    // Its engine is alive: the controller itself stops the game (self-fence).
    eventually(
        Duration::from_secs(30),
        "the cut node to stop its game",
        async || {
            if fleet.monitor.running_on(&game).is_empty() {
                Ok(())
            } else {
                Err(format!("{:?}", fleet.monitor.running_on(&game)))
            }
        },
    )
    .await;
    let fenced_after = cut_at.elapsed();
    let moved = eventually(
        Duration::from_secs(60),
        "the game Running elsewhere",
        async || match fleet.documents.get_status(&game).await {
            Ok(Some(s)) if s.phase == Phase::Running && s.node.as_deref() != Some(cut.as_str()) => {
                Ok(s)
            }
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    let to = moved.node.unwrap();
    fleet
        .monitor
        .wait_running_only_on(&game, &to, CONVERGE)
        .await;
    let moved_after = cut_at.elapsed();
    assert!(
        fenced_after < moved_after,
        "stopped at {fenced_after:?}, moved at {moved_after:?}"
    );
    // Back on the network, the cut node records the fence and runs nothing of it.
    fleet.host_mut(&cut).restore_link();
    let history = eventually(
        Duration::from_secs(60),
        "the fence in the history",
        async || {
            let out = fleet.rtctl(&["history", &game]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.contains("self-fence") || text.contains("moved to node") {
                Ok(text)
            } else {
                Err(text)
            }
        },
    )
    .await;
    assert!(history.contains("self-fence"), "{history}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        fleet.monitor.running_on(&game),
        [to.clone()].into_iter().collect()
    );
    fleet.monitor.assert_never_two();
    eprintln!("fenced {fenced_after:?} after the cut, running elsewhere {moved_after:?} after it");
}
