//! Hardened containers, end to end: the real `rtmanager` against the real
//! etcd and Docker, judged by `docker inspect`, `docker exec` and TCP from
//! the host — every capability dropped, no-new-privileges, a pids limit that
//! holds against a fork bomb, memory and CPU limits, games that cannot reach
//! each other while clients reach their host ports, refusals with their
//! codes, a read-only root filesystem, and a container made before any of
//! this adopted as it is until its next voluntary recreate.
//!
//! Ignored by a bare `cargo test` (they need etcd and Docker). Each test has
//! its own prefix, games, and network, and removes what it made.

use rtm_testkit as common;
use rtm_testkit::process;

use std::io::Read as _;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtm_controller::hardening::default_network_name;
use rtm_controller::lifecycle::{ContainerPolicy, container_spec, new_id};
use rtm_controller::runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, DockerRuntime, NetworkSpec,
};
use rtm_core::ErrorCode;
use rtm_core::model::parse::parse_documents;
use rtm_core::model::{GameRuntime, GameRuntimeStatus, PortMapping, Protocol};
use rtm_core::records::Documents;
use rtm_core::store::Keys;

use common::docker::{IMAGE_1, docker, docker_cli, game as game_id, run_bounded};
use common::{etcd, revision_of, unique_keys};
use process::{ControllerOptions, ControllerProcess, WipeOnDrop, eventually, free_loopback_addr};

/// A start of the test engine takes about a second; the rest is slack.
const CONVERGE: Duration = Duration::from_secs(60);

/// One test at a time: the fork bomb and the timing runs want the machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The test's installation: its prefix, documents, Docker, and the
/// network its controller uses. Dropped last: removes the containers
/// labelled with the prefix, then the network, then wipes the prefix.
struct Harness {
    keys: Keys,
    documents: Documents,
    runtime: Arc<DockerRuntime>,
    network: String,
    _wipe: WipeOnDrop,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

async fn harness(test: &str) -> Harness {
    let serial = SERIAL.lock().await;
    let keys = unique_keys(test);
    let store = etcd().await;
    Harness {
        documents: Documents::new(store, keys.clone()),
        runtime: Arc::new(docker().await),
        network: default_network_name(keys.prefix()),
        _wipe: WipeOnDrop(keys.clone()),
        keys,
        _serial: serial,
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        common::docker::remove_installation_containers(self.keys.prefix());
        let mut command = std::process::Command::new("docker");
        command.args(["network", "rm", &self.network]);
        let _ = run_bounded(command, Duration::from_secs(30));
    }
}

fn doc(name: &str) -> GameRuntime {
    let yaml = format!(
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n\
         spec:\n  image: {IMAGE_1}\n  stopTimeout: 5s\n"
    );
    parse_documents(&yaml).expect("fixture parses").remove(0)
}

/// Publishes the engine's port 7000 on a free loopback port; returns it.
fn publish(doc: &mut GameRuntime) -> u16 {
    let port = free_loopback_addr().port();
    doc.spec.ports.push(PortMapping {
        container_port: 7000,
        host_port: Some(port.into()),
        protocol: Protocol::Tcp,
        host_ip: Some("127.0.0.1".into()),
    });
    port
}

impl Harness {
    /// A controller on the test's own network (so the test can remove it).
    async fn controller(&self, name: &str) -> ControllerProcess {
        self.controller_with(name, &[]).await
    }

    async fn controller_with(&self, name: &str, env: &[(&str, &str)]) -> ControllerProcess {
        // The games publish on loopback only, which the operator allows
        // (--host-ips admits only the wildcards by default).
        let mut options = ControllerOptions::new(&self.keys, name)
            .env("RTM_NETWORK", &self.network)
            .env("RTM_HOST_IPS", "127.0.0.1,0.0.0.0,::");
        for (var, value) in env {
            options = options.env(var, value);
        }
        options.start().await
    }

    async fn create(&self, doc: &GameRuntime) -> GameRuntime {
        self.documents.create(doc).await.expect("document written")
    }

    async fn status(&self, game: &str) -> Result<GameRuntimeStatus, String> {
        self.documents
            .get_status(game)
            .await
            .map_err(|e| format!("status read: {e}"))?
            .ok_or_else(|| "no status yet".to_owned())
    }

    /// The game's one running container, once the status names it.
    async fn wait_running(&self, game: &str) -> ContainerInfo {
        eventually(CONVERGE, &format!("{game} to run"), async || {
            let status = self.status(game).await?;
            let id = status
                .container_id
                .clone()
                .ok_or_else(|| format!("no container in the status: {status:?}"))?;
            match self.runtime.inspect_container(&id).await {
                Ok(Some(c)) if c.is_running() && status.phase.as_str() == "Running" => Ok(c),
                other => Err(format!("status {:?}, container {other:?}", status.phase)),
            }
        })
        .await
    }

    /// Waits for the last operation to fail with `code`; returns its message.
    async fn wait_refused(&self, game: &str, code: ErrorCode) -> String {
        eventually(
            CONVERGE,
            &format!("{game} refused with {code}"),
            async || {
                let status = self.status(game).await?;
                match &status.last_operation {
                    Some(op) if op.error_code.as_deref() == Some(code.as_str()) => {
                        Ok(op.error_message.clone().unwrap_or_default())
                    }
                    other => Err(format!("last operation {other:?}")),
                }
            },
        )
        .await
    }

    async fn containers(&self, game: &str) -> Vec<ContainerInfo> {
        self.runtime
            .list_game(game)
            .await
            .expect("docker lists")
            .into_iter()
            .filter(|c| c.prefix() == Some(self.keys.prefix()))
            .collect()
    }
}

/// `docker inspect -f <format> <target>`, trimmed.
fn inspect(target: &str, format: &str) -> String {
    let output = docker_cli(&["inspect", "-f", format, target]);
    assert!(
        output.status.success(),
        "docker inspect {target}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `docker exec <container> sh -c <script>`: (exit code, stdout + stderr).
fn exec(container: &str, script: &str) -> (i32, String) {
    let mut command = std::process::Command::new("docker");
    command.args(["exec", container, "sh", "-c", script]);
    let output = run_bounded(command, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("docker exec {container} {script:?} hung"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// What the engine answers on 127.0.0.1:`port`, read by a client on the host.
fn engine_line(port: u16) -> Result<String, String> {
    let addr = ([127, 0, 0, 1], port).into();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    let _ = stream.read_to_string(&mut line);
    if line.contains("rtmanager-test engine") {
        Ok(line)
    } else {
        Err(format!("{addr} answered {line:?}"))
    }
}

#[tokio::test]
#[ignore = "needs etcd and Docker"]
async fn a_game_runs_with_every_capability_dropped_no_new_privileges_and_limits() {
    let h = harness("hardened").await;
    let _controller = h.controller("c1").await;
    let mut game = doc(&game_id("hardened"));
    let port = publish(&mut game);
    h.create(&game).await;
    let container = h.wait_running(game.name()).await;

    let id = &container.id;
    assert_eq!(inspect(id, "{{json .HostConfig.CapDrop}}"), r#"["ALL"]"#);
    assert_eq!(inspect(id, "{{json .HostConfig.CapAdd}}"), "null");
    assert_eq!(
        inspect(id, "{{json .HostConfig.SecurityOpt}}"),
        r#"["no-new-privileges"]"#
    );
    assert_eq!(inspect(id, "{{.HostConfig.PidsLimit}}"), "1024");
    assert_eq!(
        inspect(id, "{{.HostConfig.Memory}}"),
        (1u64 << 30).to_string()
    );
    assert_eq!(inspect(id, "{{.HostConfig.NanoCpus}}"), "1000000000");
    // A bounded log by default: json-file, 10 MiB, three files.
    assert_eq!(
        inspect(
            id,
            r#"{{.HostConfig.LogConfig.Type}} {{index .HostConfig.LogConfig.Config "max-size"}} {{index .HostConfig.LogConfig.Config "max-file"}}"#
        ),
        format!("json-file {} 3", 10u64 << 20)
    );
    // The kernel agrees: no capability in any set, no_new_privs on.
    let (_, proc_status) = exec(
        id,
        "grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/1/status",
    );
    for line in proc_status.lines() {
        let (field, value) = line.split_once(':').unwrap();
        let expected = if field == "NoNewPrivs" {
            "1"
        } else {
            "0000000000000000"
        };
        assert_eq!(value.trim(), expected, "{proc_status}");
    }
    // On the installation's network, created with inter-container traffic off.
    let network_id = inspect(&h.network, "{{.Id}}");
    assert_eq!(inspect(id, "{{.HostConfig.NetworkMode}}"), network_id);
    assert_eq!(
        inspect(
            &h.network,
            r#"{{index .Options "com.docker.network.bridge.enable_icc"}}"#
        ),
        "false"
    );
    assert!(h.network.starts_with("rtm-games-"), "{}", h.network);
    // And a client on the host still reaches the game on its host port.
    eventually(
        CONVERGE,
        "the engine to answer on its host port",
        async || engine_line(port),
    )
    .await;
}

#[tokio::test]
#[ignore = "needs etcd and Docker"]
async fn a_fork_bomb_inside_a_game_stays_within_its_pids_limit() {
    let h = harness("forkbomb").await;
    let mut controller = h.controller("c1").await;
    let mut game = doc(&game_id("forkbomb"));
    game.spec.resources.pids = Some(64);
    game.spec.logging.max_files = Some(1);
    h.create(&game).await;
    let container = h.wait_running(game.name()).await;
    assert_eq!(inspect(&container.id, "{{.HostConfig.PidsLimit}}"), "64");
    assert_eq!(
        inspect(
            &container.id,
            r#"{{index .HostConfig.LogConfig.Config "max-size"}} {{index .HostConfig.LogConfig.Config "max-file"}}"#
        ),
        format!("{} 1", 10u64 << 20),
        "spec.logging.maxFiles set, maxSize the controller's"
    );

    // Forks until the kernel says no; asks for 1,000 processes.
    let started = Instant::now();
    let (_, output) = exec(
        &container.id,
        // The sleepers must not hold the exec's output open, or it never ends.
        "i=0; while [ $i -lt 1000 ]; do sleep 300 </dev/null >/dev/null 2>&1 & i=$((i+1)); \
         done 2>&1 | head -c 200",
    );
    assert!(
        output.contains("can't fork") || output.contains("Resource temporarily unavailable"),
        "the fork bomb was not stopped: {output:?}"
    );
    let processes = docker_cli(&["top", &container.id]);
    let count = String::from_utf8_lossy(&processes.stdout).lines().count() - 1;
    assert!(
        (10..=64).contains(&count),
        "{count} processes in the game: the limit is 64 and the bomb should have reached it"
    );
    // The host and the controller are fine: a process starts at once, the
    // controller answers, and the game is still the one running.
    assert!(
        std::process::Command::new("true")
            .status()
            .unwrap()
            .success()
    );
    let (code, _) = controller
        .get("/readyz")
        .await
        .expect("the controller answers");
    assert_eq!(code, 200);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let status = h.status(game.name()).await.unwrap();
    assert_eq!(status.container_id.as_deref(), Some(container.id.as_str()));
    controller.terminate();
}

#[tokio::test]
#[ignore = "needs etcd and Docker"]
async fn games_cannot_reach_each_other_while_clients_reach_their_host_ports() {
    let h = harness("isolation").await;
    let _controller = h.controller("c1").await;
    let mut a = doc(&game_id("iso-a"));
    let port = publish(&mut a);
    let b = doc(&game_id("iso-b"));
    h.create(&a).await;
    h.create(&b).await;
    let a_container = h.wait_running(a.name()).await;
    let b_container = h.wait_running(b.name()).await;
    let a_ip = inspect(
        &a_container.id,
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
    );
    assert!(!a_ip.is_empty(), "game A has an address on the network");
    eventually(CONVERGE, "A to answer on its host port", async || {
        engine_line(port)
    })
    .await;

    // A reaches itself on its own address: the engine listens there...
    let (_, own) = exec(&a_container.id, &format!("nc -w 2 {a_ip} 7000 </dev/null"));
    assert!(
        own.contains("rtmanager-test engine"),
        "A on its own address: {own:?}"
    );
    // ...but B, on the same network, cannot reach it.
    let (_, from_b) = exec(
        &b_container.id,
        &format!("nc -w 2 {a_ip} 7000 </dev/null; echo exit=$?"),
    );
    assert!(
        !from_b.contains("rtmanager-test engine") && !from_b.contains("exit=0"),
        "game B reached game A at {a_ip}:7000: {from_b:?}"
    );
    // Clients outside still do, on the host port.
    engine_line(port).expect("a client on the host reaches A on its host port");
}

#[tokio::test]
#[ignore = "needs etcd and Docker"]
async fn a_capability_the_controller_does_not_allow_is_refused_with_its_code() {
    let h = harness("caps").await;
    let _controller = h.controller("c1").await;
    let mut game = doc(&game_id("caps"));
    game.spec.security_context.capabilities.add = vec!["NET_RAW".into()];
    let stored = h.create(&game).await;
    let message = h
        .wait_refused(game.name(), ErrorCode::CapabilityNotAllowed)
        .await;
    assert!(message.contains("NET_RAW not allowed"), "{message}");
    assert!(
        message.contains("NET_BIND_SERVICE"),
        "names what is allowed: {message}"
    );
    assert!(
        h.containers(game.name()).await.is_empty(),
        "nothing was created"
    );

    // Asking for the allowed one instead runs the game with it.
    let mut fixed = stored.clone();
    fixed.spec.security_context.capabilities.add = vec!["NET_BIND_SERVICE".into()];
    let expected = revision_of(&fixed);
    h.documents
        .update(&fixed, expected)
        .await
        .expect("document updated");
    let container = h.wait_running(game.name()).await;
    assert_eq!(
        inspect(&container.id, "{{json .HostConfig.CapAdd}}"),
        r#"["NET_BIND_SERVICE"]"#
    );
    assert_eq!(
        inspect(&container.id, "{{json .HostConfig.CapDrop}}"),
        r#"["ALL"]"#
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker"]
async fn cpus_above_the_hosts_are_refused_with_resources_exceed_host() {
    let h = harness("hostcpus").await;
    let host_cpus = h
        .runtime
        .host_resources()
        .await
        .expect("docker info answers")
        .expect("Docker reports the host")
        .cpus;
    let _controller = h.controller_with("c1", &[("RTM_MAX_CPUS", "512")]).await;
    let mut game = doc(&game_id("hostcpus"));
    game.spec.resources.cpus = Some((host_cpus + 1).to_string().parse().unwrap());
    h.create(&game).await;
    let message = h
        .wait_refused(game.name(), ErrorCode::ResourcesExceedHost)
        .await;
    assert!(
        message.contains(&format!("host's {host_cpus} CPUs")),
        "{message}"
    );
    assert!(
        h.containers(game.name()).await.is_empty(),
        "nothing was created"
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker"]
async fn a_read_only_root_filesystem_blocks_writes_but_tmp_and_the_user_work() {
    let h = harness("readonly").await;
    let _controller = h.controller("c1").await;
    let mut game = doc(&game_id("readonly"));
    let port = publish(&mut game);
    let context = &mut game.spec.security_context;
    context.read_only_root_filesystem = true;
    context.run_as_user = Some(1000);
    context.run_as_group = Some(1000);
    h.create(&game).await;
    let container = h.wait_running(game.name()).await;
    let id = &container.id;
    assert_eq!(inspect(id, "{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(inspect(id, "{{.Config.User}}"), "1000:1000");

    let (code, output) = exec(id, "echo x > /written-by-the-game");
    assert_ne!(
        code, 0,
        "a write to the root filesystem succeeded: {output:?}"
    );
    assert!(output.contains("Read-only file system"), "{output:?}");
    let (code, output) = exec(id, "echo x > /tmp/scratch && cat /tmp/scratch");
    assert_eq!((code, output.trim()), (0, "x"), "/tmp stays writable");
    let (_, ids) = exec(id, "id -u; id -g");
    assert_eq!(ids.split_whitespace().collect::<Vec<_>>(), ["1000", "1000"]);
    // The engine serves as that user, from a read-only image.
    eventually(CONVERGE, "the engine to answer", async || engine_line(port)).await;
}

#[tokio::test]
#[ignore = "needs etcd and Docker"]
async fn a_container_made_before_hardening_is_adopted_as_is_until_its_next_recreate() {
    let h = harness("adopt").await;
    let mut game = doc(&game_id("adopt"));
    game.apply_defaults();
    let stored = h.create(&game).await;
    // What an older controller made: Docker's defaults, on the default
    // bridge, labelled with the same spec hash.
    let mut old = container_spec(
        &stored,
        h.keys.prefix(),
        &new_id(),
        &ContainerPolicy::default(),
    );
    old.drop_all_capabilities = false;
    old.no_new_privileges = false;
    old.pids_limit = None;
    old.memory_bytes = None;
    old.nano_cpus = None;
    old.network = None;
    let old_id = h.runtime.create(&old).await.expect("created by hand");
    h.runtime.start(&old_id).await.expect("started by hand");

    let _controller = h.controller("c1").await;
    let adopted = h.wait_running(game.name()).await;
    assert_eq!(
        adopted.id, old_id,
        "the old container is adopted, not recreated"
    );
    assert_eq!(inspect(&old_id, "{{json .HostConfig.CapDrop}}"), "null");

    // A voluntary recreate (rtctl restart) brings the hardening.
    let mut restart = stored.clone();
    restart.spec.restart_token = "REQ-harden".into();
    let expected = revision_of(&restart);
    h.documents
        .update(&restart, expected)
        .await
        .expect("restart asked");
    let recreated = eventually(CONVERGE, "the restart to recreate the game", async || {
        let status = h.status(game.name()).await?;
        match status.container_id.as_deref() {
            Some(id) if id != old_id && status.phase.as_str() == "Running" => Ok(h
                .runtime
                .inspect_container(id)
                .await
                .ok()
                .flatten()
                .ok_or("gone")?),
            other => Err(format!("status names {other:?}, phase {:?}", status.phase)),
        }
    })
    .await;
    assert_eq!(
        inspect(&recreated.id, "{{json .HostConfig.CapDrop}}"),
        r#"["ALL"]"#
    );
    assert_eq!(inspect(&recreated.id, "{{.HostConfig.PidsLimit}}"), "1024");
}

/// The cost of the isolated network on start time: N creates and starts of
/// the test engine on Docker's default bridge and on an isolated
/// user-defined bridge, alternated so load drifts hit both alike. Prints
/// the figures; fails only if the network more than doubles the median.
#[tokio::test]
#[ignore = "needs Docker; a measurement"]
async fn starting_on_the_isolated_network_costs_about_what_the_default_bridge_does() {
    let h = harness("startcost").await;
    let runtime = &h.runtime;
    const RUNS: usize = 10;
    let network = NetworkSpec {
        name: h.network.clone(),
        isolated: true,
        labels: [(
            rtm_controller::runtime::LABEL_PREFIX.to_owned(),
            h.keys.prefix().to_owned(),
        )]
        .into(),
    };
    // The network's one-off creation is not part of a start: make it first.
    let mut warm = ContainerSpec::new(&game_id("startcost-warm"), IMAGE_1);
    warm.labels.insert(
        rtm_controller::runtime::LABEL_PREFIX.into(),
        h.keys.prefix().into(),
    );
    warm.network = Some(network.clone());
    let id = runtime.create(&warm).await.expect("warm-up create");
    runtime.remove(&id, true).await.expect("warm-up remove");

    let mut bridge = Vec::new();
    let mut isolated = Vec::new();
    for run in 0..RUNS {
        for on_network in [false, true] {
            let mut spec = ContainerSpec::new(
                &game_id(&format!("startcost-{run}-{}", u8::from(on_network))),
                IMAGE_1,
            );
            spec.labels.insert(
                rtm_controller::runtime::LABEL_PREFIX.into(),
                h.keys.prefix().into(),
            );
            spec.network = on_network.then(|| network.clone());
            let started = Instant::now();
            let id = runtime.create(&spec).await.expect("create");
            runtime.start(&id).await.expect("start");
            let elapsed = started.elapsed();
            runtime.remove(&id, true).await.expect("remove");
            if on_network {
                &mut isolated
            } else {
                &mut bridge
            }
            .push(elapsed);
        }
    }
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let mean = |times: &[Duration]| times.iter().sum::<Duration>() / times.len() as u32;
    let (bridge_mean, isolated_mean) = (mean(&bridge), mean(&isolated));
    let (bridge_median, isolated_median) = (median(&mut bridge), median(&mut isolated));
    eprintln!(
        "create+start of the test engine, {RUNS} runs each: default bridge median {bridge_median:?} \
         mean {bridge_mean:?}; isolated network median {isolated_median:?} mean {isolated_mean:?}"
    );
    assert!(
        isolated_median < bridge_median * 2,
        "the isolated network doubles the start time: {isolated_median:?} vs {bridge_median:?}"
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker"]
/// Docker 20.10 creates a container into a network id that is gone and
/// refuses only its start: that start fails once, and the retry makes the
/// network again.
async fn a_network_removed_by_hand_is_created_again_at_the_next_start() {
    let h = harness("netgone").await;
    let _controller = h.controller("c1").await;
    let game = doc(&game_id("netgone"));
    let stored = h.create(&game).await;
    let first = h.wait_running(game.name()).await;
    let old_network = inspect(&h.network, "{{.Id}}");

    // Stopped, the container no longer holds the network: an operator
    // removes it by hand.
    let mut stopped = stored.clone();
    stopped.spec.state = rtm_core::model::DesiredState::Stopped;
    let expected = revision_of(&stopped);
    let stopped = h
        .documents
        .update(&stopped, expected)
        .await
        .expect("stop asked");
    eventually(CONVERGE, "the game to stop", async || {
        let status = h.status(game.name()).await?;
        (status.phase.as_str() == "Stopped")
            .then_some(())
            .ok_or(format!("phase {:?}", status.phase))
    })
    .await;
    let removed = docker_cli(&["network", "rm", &h.network]);
    assert!(
        removed.status.success(),
        "docker network rm: {}",
        String::from_utf8_lossy(&removed.stderr)
    );

    let mut running = stopped.clone();
    running.spec.state = rtm_core::model::DesiredState::Running;
    let expected = revision_of(&running);
    h.documents
        .update(&running, expected)
        .await
        .expect("start asked");
    let second = eventually(CONVERGE, "the game to run again", async || {
        let status = h.status(game.name()).await?;
        match status.container_id.as_deref() {
            Some(id) if id != first.id && status.phase.as_str() == "Running" => Ok(id.to_owned()),
            other => Err(format!("status names {other:?}, phase {:?}", status.phase)),
        }
    })
    .await;
    let new_network = inspect(&h.network, "{{.Id}}");
    assert_ne!(new_network, old_network, "the network was made again");
    assert_eq!(inspect(&second, "{{.HostConfig.NetworkMode}}"), new_network);
    assert_eq!(
        inspect(
            &h.network,
            r#"{{index .Options "com.docker.network.bridge.enable_icc"}}"#
        ),
        "false"
    );
}
