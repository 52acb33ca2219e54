//! `DockerRuntime` against the real Docker engine: what only dockerd can
//! show (status codes, init and signals, port allocation, the event stream).
//!
//! Ignored by default; `scripts/test` runs them. They need a Docker daemon
//! at `DOCKER_HOST` (or /var/run/docker.sock) and FAIL, not skip, without
//! one. The first test to run builds the local images with
//! `scripts/build-test-image` (a no-op when they are current).
//!
//! Every container is named after its test and this process id and is
//! force-removed by a guard on every path, panics included.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rtm_controller::runtime::{
    ContainerRuntime, ContainerSpec, ContainerState, DockerHealthStatus, DockerRuntime, LABEL_GAME,
    LABEL_MANAGED_BY, LABEL_SPEC_HASH, MANAGED_BY, NetworkSpec, PortBinding, RuntimeError,
};
use rtm_core::model::{Protocol, PublishedPort};
use rtm_core::ports::PortProtocol;

use rtm_testkit as common;

use common::docker::{
    Cleanup, IMAGE_1, IMAGE_2, IMAGE_HEALTH, docker, docker_cli, game, wait_engine_listening,
    within_secs as within,
};

/// The name `ContainerSpec::new` gives `game`'s container: the default
/// installation's.
fn default_name(game: &str) -> String {
    rtm_controller::runtime::container_name(rtm_core::store::keys::DEFAULT_PREFIX, game)
}

fn spec(game: &str, image: &str) -> ContainerSpec {
    let mut spec = ContainerSpec::new(game, image);
    spec.stop_timeout = Duration::from_secs(10);
    spec.labels.insert(LABEL_SPEC_HASH.into(), "hash-1".into());
    spec
}

fn env(spec: &mut ContainerSpec, key: &str, value: &str) {
    spec.env.push((key.into(), value.into()));
}

fn publish(spec: &mut ContainerSpec, host_port: u16) {
    spec.ports.push(PortBinding {
        container_port: 7000,
        host_port: Some(host_port),
        protocol: PortProtocol::Tcp,
        host_ip: None,
    });
}

/// A host port nobody listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// `docker inspect -f <format> <name>` through the CLI: for settings our
/// ContainerInfo does not carry.
fn docker_inspect(name: &str, format: &str) -> String {
    let output = docker_cli(&["inspect", "-f", format, name]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

async fn create_and_start(docker: &DockerRuntime, spec: &ContainerSpec) -> String {
    let id = within(20, "create", docker.create(spec))
        .await
        .unwrap_or_else(|e| panic!("create {}: {e}", spec.name));
    within(20, "start", docker.start(&id))
        .await
        .unwrap_or_else(|e| panic!("start {}: {e}", spec.name));
    id
}

async fn inspect(docker: &DockerRuntime, id: &str) -> rtm_controller::runtime::ContainerInfo {
    within(10, "inspect", docker.inspect_container(id))
        .await
        .expect("inspect")
        .expect("the container exists")
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn created_container_runs_with_our_hostname_labels_init_and_no_restart_policy() {
    let docker = docker().await;
    let game = game("create");
    let name = default_name(&game);
    let _cleanup = Cleanup::new(&[&name]);

    let id = create_and_start(&docker, &spec(&game, IMAGE_1)).await;
    let info = inspect(&docker, &name).await;
    assert_eq!(info.id, id);
    assert_eq!(info.name, name);
    assert_eq!(info.state, ContainerState::Running);
    assert!(info.is_running());
    assert_eq!(info.hostname, game);
    assert_eq!(info.image, IMAGE_1);
    let image = within(10, "inspect_image", docker.inspect_image(IMAGE_1)).await;
    assert_eq!(Some(info.image_id.clone()), image.unwrap().map(|i| i.id));
    assert_eq!(info.game(), Some(game.as_str()));
    assert!(info.is_managed());
    assert_eq!(info.spec_hash(), Some("hash-1"));
    assert_eq!(info.exit_code, None);
    assert!(info.started_at.is_some());
    assert_eq!(info.finished_at, None);
    assert_eq!(
        docker_inspect(
            &name,
            "{{.HostConfig.Init}} {{.HostConfig.RestartPolicy.Name}} {{.Config.StopTimeout}}"
        ),
        "true no 10"
    );
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn stop_reaches_the_engine_through_init_and_it_exits_zero_quickly() {
    let docker = docker().await;
    let game = game("stop");
    let name = default_name(&game);
    let _cleanup = Cleanup::new(&[&name]);
    let id = create_and_start(&docker, &spec(&game, IMAGE_1)).await;
    wait_engine_listening(&id);

    let started = Instant::now();
    within(
        30,
        "stop with a 10 s timeout",
        docker.stop(&id, Duration::from_secs(10)),
    )
    .await
    .expect("stop");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "stop took {took:?}: SIGTERM did not reach the engine (no init?)"
    );
    let info = inspect(&docker, &id).await;
    assert_eq!(info.state, ContainerState::Exited);
    assert_eq!(info.exit_code, Some(0));
    assert!(info.finished_at.is_some());
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn init_stops_an_engine_that_has_no_sigterm_handler() {
    // `sleep` as PID 1 would ignore SIGTERM; under docker-init it dies of it.
    let docker = docker().await;
    let game = game("init");
    let name = default_name(&game);
    let _cleanup = Cleanup::new(&[&name]);
    let mut spec = spec(&game, IMAGE_1);
    spec.command = vec!["/bin/sleep".into()];
    spec.args = vec!["300".into()];
    let id = create_and_start(&docker, &spec).await;

    let started = Instant::now();
    within(30, "stop", docker.stop(&id, Duration::from_secs(10)))
        .await
        .expect("stop");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop waited {:?}: HostConfig.Init is missing",
        started.elapsed()
    );
    assert_eq!(inspect(&docker, &id).await.exit_code, Some(128 + 15));
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn repeated_start_stop_and_kill_are_no_ops_not_errors() {
    let docker = docker().await;
    let game = game("noop");
    let name = default_name(&game);
    let _cleanup = Cleanup::new(&[&name]);
    let id = create_and_start(&docker, &spec(&game, IMAGE_1)).await;
    wait_engine_listening(&id);

    within(20, "start of a running container (304)", docker.start(&id))
        .await
        .expect("start of a running container is Ok");
    within(30, "stop", docker.stop(&id, Duration::from_secs(10)))
        .await
        .expect("stop");
    within(
        30,
        "stop of a stopped container (304)",
        docker.stop(&id, Duration::from_secs(10)),
    )
    .await
    .expect("stop of a stopped container is Ok");
    within(20, "kill of a stopped container (409)", docker.kill(&id))
        .await
        .expect("kill of a stopped container is Ok");
    assert_eq!(inspect(&docker, &id).await.exit_code, Some(0));
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn missing_containers_inspect_as_none_and_remove_as_not_found() {
    let docker = docker().await;
    let name = default_name(&game("missing"));
    let found = within(
        10,
        "inspect of a missing container",
        docker.inspect_container(&name),
    )
    .await
    .expect("inspect of a missing container is not an error");
    assert_eq!(found, None);
    let err = within(10, "remove", docker.remove(&name, true))
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    let err = within(10, "stop", docker.stop(&name, Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    let err = within(10, "start", docker.start(&name)).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn images_inspect_by_reference_with_distinct_ids_and_missing_ones_as_none() {
    let docker = docker().await;
    let one = within(10, "inspect_image", docker.inspect_image(IMAGE_1)).await;
    let two = within(10, "inspect_image", docker.inspect_image(IMAGE_2)).await;
    let one = one.expect("inspect").expect("build-test-image made :1");
    let two = two.expect("inspect").expect("build-test-image made :2");
    assert!(one.id.starts_with("sha256:"), "{one:?}");
    assert_ne!(one.id, two.id, ":1 and :2 must differ in content");
    let missing = within(
        10,
        "inspect_image",
        docker.inspect_image("rtmanager-test/absent:1"),
    )
    .await;
    assert_eq!(missing, Ok(None));
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn creating_from_a_missing_image_is_image_not_found_and_leaves_nothing() {
    let docker = docker().await;
    let game = game("noimage");
    let name = default_name(&game);
    let _cleanup = Cleanup::new(&[&name]);
    let err = within(
        20,
        "create",
        docker.create(&spec(&game, "rtmanager-test/absent:1")),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        RuntimeError::ImageNotFound {
            image: "rtmanager-test/absent:1".into()
        }
    );
    assert_eq!(docker.inspect_container(&name).await, Ok(None));
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn creating_twice_with_one_name_is_name_conflict() {
    let docker = docker().await;
    let game = game("twice");
    let name = default_name(&game);
    let _cleanup = Cleanup::new(&[&name]);
    let first = within(20, "create", docker.create(&spec(&game, IMAGE_1)))
        .await
        .expect("first create");
    let err = within(20, "create", docker.create(&spec(&game, IMAGE_2)))
        .await
        .unwrap_err();
    assert_eq!(err, RuntimeError::NameConflict { name: name.clone() });
    assert_eq!(
        inspect(&docker, &name).await.id,
        first,
        "the first one is untouched"
    );
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn second_container_on_a_taken_host_port_fails_to_start_with_port_allocated() {
    let docker = docker().await;
    let (game_a, game_b) = (game("port-a"), game("port-b"));
    let (name_a, name_b) = (default_name(&game_a), default_name(&game_b));
    let _cleanup = Cleanup::new(&[&name_a, &name_b]);
    let port = free_port();
    let mut a = spec(&game_a, IMAGE_1);
    publish(&mut a, port);
    let mut b = spec(&game_b, IMAGE_1);
    publish(&mut b, port);

    create_and_start(&docker, &a).await;
    let id_b = within(20, "create", docker.create(&b))
        .await
        .expect("create b");
    let err = within(20, "start", docker.start(&id_b)).await.unwrap_err();
    assert!(
        matches!(&err, RuntimeError::PortAllocated { message } if message.contains(&port.to_string())),
        "{err:?}"
    );
    assert_eq!(err.code(), rtm_core::ErrorCode::PortConflict);
    let info = inspect(&docker, &id_b).await;
    assert_eq!(info.state, ContainerState::Created);
    assert!(info.error.is_some(), "Docker records why the start failed");
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn engine_answers_on_the_published_host_port_with_its_env() {
    let docker = docker().await;
    let game = game("serve");
    let name = default_name(&game);
    let _cleanup = Cleanup::new(&[&name]);
    let port = free_port();
    let mut spec = spec(&game, IMAGE_2);
    publish(&mut spec, port);
    create_and_start(&docker, &spec).await;

    // The engine needs a moment to listen; Docker's proxy accepts first.
    let greeting = within(15, "the engine never answered on its host port", async {
        loop {
            let answer = tokio::task::spawn_blocking(move || {
                let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
                stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                let mut text = String::new();
                stream.read_to_string(&mut text).ok()?;
                Some(text)
            })
            .await
            .expect("probe task");
            match answer {
                Some(text) if text.contains("rtmanager-test engine") => return text,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    assert!(
        greeting.contains(&format!("engine 2 on {game}")),
        "{greeting:?}"
    );
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn engine_ignoring_sigterm_is_killed_after_the_stop_timeout_with_137() {
    let docker = docker().await;
    let game = game("stubborn");
    let name = default_name(&game);
    let _cleanup = Cleanup::new(&[&name]);
    let mut spec = spec(&game, IMAGE_1);
    env(&mut spec, "IGNORE_SIGTERM", "1");
    let id = create_and_start(&docker, &spec).await;
    wait_engine_listening(&id);

    let started = Instant::now();
    within(
        30,
        "stop with a 2 s timeout",
        docker.stop(&id, Duration::from_secs(2)),
    )
    .await
    .expect("stop");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "stop returned after {took:?}, before SIGKILL"
    );
    assert!(took < Duration::from_secs(12), "stop took {took:?}");
    let info = inspect(&docker, &id).await;
    assert_eq!(info.state, ContainerState::Exited);
    assert_eq!(info.exit_code, Some(137));
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn removing_a_running_container_needs_force() {
    let docker = docker().await;
    let game = game("remove");
    let name = default_name(&game);
    let _cleanup = Cleanup::new(&[&name]);
    let id = create_and_start(&docker, &spec(&game, IMAGE_1)).await;

    let err = within(20, "remove", docker.remove(&id, false))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Conflict { .. }), "{err:?}");
    within(20, "remove -f", docker.remove(&id, true))
        .await
        .expect("forced remove");
    assert_eq!(docker.inspect_container(&id).await, Ok(None));
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn list_managed_finds_ours_in_every_state_and_not_foreign_containers() {
    let docker = docker().await;
    let (running_game, exited_game, created_game) =
        (game("list-run"), game("list-exit"), game("list-new"));
    let foreign = format!("foreign-{}", std::process::id());
    let names = [
        default_name(&running_game),
        default_name(&exited_game),
        default_name(&created_game),
    ];
    let _cleanup = Cleanup::new(&[&names[0], &names[1], &names[2], &foreign]);

    create_and_start(&docker, &spec(&running_game, IMAGE_1)).await;
    let exited = create_and_start(&docker, &spec(&exited_game, IMAGE_1)).await;
    wait_engine_listening(&exited);
    within(30, "stop", docker.stop(&exited, Duration::from_secs(10)))
        .await
        .expect("stop");
    within(20, "create", docker.create(&spec(&created_game, IMAGE_1)))
        .await
        .expect("create");
    let label = format!("{LABEL_GAME}=x");
    let status = docker_cli(&["create", "--name", &foreign, "--label", &label, IMAGE_1]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    let listed = within(30, "list_managed", docker.list_managed())
        .await
        .expect("list_managed");
    let by_name: BTreeMap<&str, _> = listed.iter().map(|c| (c.name.as_str(), c)).collect();
    assert!(
        !by_name.contains_key(foreign.as_str()),
        "a foreign container was listed"
    );
    assert!(
        listed
            .iter()
            .all(|c| c.labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY))
    );
    let running = by_name[names[0].as_str()];
    assert_eq!(running.state, ContainerState::Running);
    assert_eq!(running.hostname, running_game);
    let stopped = by_name[names[1].as_str()];
    assert_eq!(stopped.state, ContainerState::Exited);
    assert_eq!(
        stopped.exit_code,
        Some(0),
        "list_managed includes exit codes"
    );
    let created = by_name[names[2].as_str()];
    assert_eq!(created.state, ContainerState::Created);
    assert_eq!(created.exit_code, None);
    let mut sorted: Vec<&str> = listed.iter().map(|c| c.name.as_str()).collect();
    sorted.sort();
    assert_eq!(
        sorted,
        listed.iter().map(|c| c.name.as_str()).collect::<Vec<_>>()
    );
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn events_report_die_for_a_managed_container_we_stop() {
    let docker = docker().await;
    let game = game("events");
    let name = default_name(&game);
    let _cleanup = Cleanup::new(&[&name]);
    let mut events = docker.events();
    let id = create_and_start(&docker, &spec(&game, IMAGE_1)).await;
    within(30, "stop", docker.stop(&id, Duration::from_secs(10)))
        .await
        .expect("stop");

    let mut seen = Vec::new();
    within(
        15,
        "no `die` event for the stopped container: wrong event filter?",
        async {
            while let Some(event) = events.next().await {
                let event = event.expect("the event stream failed");
                if event.container_id != id {
                    continue; // another test's container
                }
                assert_eq!(event.game.as_deref(), Some(game.as_str()));
                seen.push(event.action.clone());
                if event.action == "die" {
                    return;
                }
            }
            panic!("the event stream ended before `die`");
        },
    )
    .await;
    assert!(seen.contains(&"start".to_owned()), "{seen:?}");
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn a_crashing_engine_reports_its_exit_code_and_a_die_event() {
    let docker = docker().await;
    let game = game("crash");
    let name = default_name(&game);
    let _cleanup = Cleanup::new(&[&name]);
    let mut spec = spec(&game, IMAGE_1);
    env(&mut spec, "EXIT_AFTER", "1");
    env(&mut spec, "EXIT_CODE", "3");
    let mut events = docker.events();
    let id = create_and_start(&docker, &spec).await;

    within(
        15,
        "no `die` event: EXIT_AFTER not honoured or events filtered out",
        async {
            while let Some(event) = events.next().await {
                let event = event.expect("the event stream failed");
                if event.container_id == id && event.action == "die" {
                    return;
                }
            }
            panic!("the event stream ended before `die`");
        },
    )
    .await;
    let info = inspect(&docker, &id).await;
    assert_eq!(info.state, ContainerState::Exited);
    assert_eq!(info.exit_code, Some(3));
    assert!(!info.oom_killed);
    assert!(info.finished_at >= info.started_at);
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn the_api_version_is_negotiated_and_never_above_1_41() {
    let docker = docker().await;
    let version = docker.api_version().await.expect("api_version");
    let (major, minor) = version.split_once('.').expect("major.minor");
    let parsed: (u32, u32) = (major.parse().unwrap(), minor.parse().unwrap());
    assert!(parsed <= (1, 41), "we speak {version}, above Debian's 1.41");
    assert!(
        parsed >= (1, 25),
        "{version}: init and StopTimeout need 1.25"
    );
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn an_unreachable_docker_host_makes_ping_fail_with_unreachable() {
    let docker = DockerRuntime::connect(Some("unix:///nonexistent.sock"), Duration::from_secs(2))
        .await
        .expect("connect is lazy: a missing daemon is not a connect error");
    let err = within(
        10,
        "ping of a missing socket must fail at once",
        docker.ping(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RuntimeError::Unreachable { .. }), "{err:?}");
    assert_eq!(err.code(), rtm_core::ErrorCode::ServiceUnavailable);
}

fn command(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// Polls `check` every 100 ms until it yields a value; fails the test after
/// `secs` naming `what`.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within(secs, what, async {
        loop {
            if let Some(value) = check().await {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// The status code of `GET /healthz` at `address`, with a plain socket;
/// `None` when nothing answers (yet).
async fn get_healthz(address: SocketAddr) -> Option<u16> {
    tokio::task::spawn_blocking(move || {
        let mut stream =
            std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream
            .write_all(b"GET /healthz HTTP/1.0\r\nHost: engine\r\n\r\n")
            .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        answer.split_whitespace().nth(1)?.parse().ok()
    })
    .await
    .expect("probe task")
}

/// Removes a Docker network when dropped (after the containers on it:
/// declare it first).
struct NetworkCleanup(String);

impl NetworkCleanup {
    fn new(name: &str) -> NetworkCleanup {
        let _ = docker_cli(&["network", "rm", name]); // an earlier run's
        NetworkCleanup(name.to_owned())
    }
}

impl Drop for NetworkCleanup {
    fn drop(&mut self) {
        let _ = docker_cli(&["network", "rm", &self.0]);
    }
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn exec_returns_the_exit_code_and_the_output() {
    let docker = docker().await;
    let game = game("exec-ok");
    let name = default_name(&game);
    let _cleanup = Cleanup::new(&[&name]);
    let id = create_and_start(&docker, &spec(&game, IMAGE_1)).await;

    let outcome = within(
        15,
        "exec",
        docker.exec(
            &id,
            &command(&["/bin/sh", "-c", "echo out; echo err >&2"]),
            Duration::from_secs(5),
        ),
    )
    .await
    .expect("exec");
    assert_eq!(outcome.exit_code, Some(0), "{outcome:?}");
    assert!(
        outcome.output.contains("out\n") && outcome.output.contains("err\n"),
        "stdout and stderr both: {outcome:?}"
    );
    assert!(!outcome.exec_id.is_empty());
    assert!(
        !docker
            .exec_running(&outcome.exec_id)
            .await
            .expect("exec_running"),
        "an exec that returned its code has ended"
    );
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn a_failing_command_returns_its_exit_code_and_long_output_is_cut_to_4_kib() {
    let docker = docker().await;
    let game = game("exec-fail");
    let name = default_name(&game);
    let _cleanup = Cleanup::new(&[&name]);
    let id = create_and_start(&docker, &spec(&game, IMAGE_1)).await;

    let failed = within(
        15,
        "exec",
        docker.exec(
            &id,
            &command(&["/bin/sh", "-c", "echo no marker >&2; exit 3"]),
            Duration::from_secs(5),
        ),
    )
    .await
    .expect("exec");
    assert_eq!(failed.exit_code, Some(3), "{failed:?}");
    assert_eq!(failed.output, "no marker\n");

    // 64 KiB of output: the start is kept, the rest drained (the command
    // must not block on a full pipe and still report its code).
    let chatty = within(
        15,
        "exec of a chatty command",
        docker.exec(
            &id,
            &command(&[
                "/bin/sh",
                "-c",
                "yes 0123456789abcdef | head -c 65536; exit 4",
            ]),
            Duration::from_secs(5),
        ),
    )
    .await
    .expect("exec");
    assert_eq!(chatty.exit_code, Some(4));
    assert_eq!(chatty.output.len(), 4096);
    assert!(chatty.output.starts_with("0123456789abcdef\n"));
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn a_command_outliving_its_timeout_returns_without_an_exit_code_and_runs_on_until_it_ends() {
    let docker = docker().await;
    let game = game("exec-hang");
    let name = default_name(&game);
    let _cleanup = Cleanup::new(&[&name]);
    let id = create_and_start(&docker, &spec(&game, IMAGE_1)).await;

    let timeout = Duration::from_secs(1);
    let started = Instant::now();
    let hung = within(
        15,
        "exec past its timeout",
        docker.exec(
            &id,
            &command(&["/bin/sh", "-c", "echo begun; sleep 3"]),
            timeout,
        ),
    )
    .await
    .expect("a timed-out exec is not an error");
    let took = started.elapsed();
    assert!(
        took >= timeout && took < timeout + Duration::from_millis(1500),
        "exec returned after {took:?} for a {timeout:?} timeout"
    );
    assert_eq!(hung.exit_code, None, "{hung:?}");
    assert_eq!(hung.output, "begun\n", "the output so far");
    assert!(
        docker
            .exec_running(&hung.exec_id)
            .await
            .expect("exec_running"),
        "Docker cannot kill an exec: it still runs"
    );
    eventually(15, "the exec never ended", || async {
        let running = docker
            .exec_running(&hung.exec_id)
            .await
            .expect("exec_running");
        (!running).then_some(())
    })
    .await;
    assert!(
        !docker
            .exec_running("0000000000000000000000000000000000000000000000000000000000000000")
            .await
            .expect("exec_running of an unknown exec"),
        "an exec Docker does not know is not running"
    );
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn exec_in_a_stopped_container_is_conflict_and_in_a_missing_one_not_found() {
    let docker = docker().await;
    let game = game("exec-stopped");
    let name = default_name(&game);
    let _cleanup = Cleanup::new(&[&name]);
    let id = create_and_start(&docker, &spec(&game, IMAGE_1)).await;
    wait_engine_listening(&id);
    within(30, "stop", docker.stop(&id, Duration::from_secs(10)))
        .await
        .expect("stop");

    let err = within(
        15,
        "exec in a stopped container",
        docker.exec(&id, &command(&["/bin/true"]), Duration::from_secs(5)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RuntimeError::Conflict { .. }), "{err:?}");
    let missing = default_name(&format!("{game}-missing"));
    let err = within(
        15,
        "exec in a missing container",
        docker.exec(&missing, &command(&["/bin/true"]), Duration::from_secs(5)),
    )
    .await
    .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn inspect_of_a_running_container_on_a_user_network_reports_its_address_and_published_ports()
{
    let docker = docker().await;
    let game = game("address");
    let name = default_name(&game);
    let network = format!("rtm-it-net-{}", std::process::id());
    let _network = NetworkCleanup::new(&network);
    let _cleanup = Cleanup::new(&[&name]);
    let port = free_port();
    let mut spec = spec(&game, IMAGE_1);
    publish(&mut spec, port);
    spec.network = Some(NetworkSpec {
        name: network.clone(),
        isolated: true,
        labels: BTreeMap::new(),
    });
    create_and_start(&docker, &spec).await;

    let info = inspect(&docker, &name).await;
    let address = info.address.expect("a running container has an address");
    let expected: IpAddr = docker_inspect(
        &name,
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
    )
    .parse()
    .expect("docker inspect shows an IPv4 address");
    assert_eq!(address, expected, "the address on the games' network");
    assert!(!info.ports.is_empty(), "{info:?}");
    for published in &info.ports {
        assert_eq!(
            (
                published.container_port,
                published.protocol,
                published.host_port
            ),
            (7000, Protocol::Tcp, port),
            "{:?}",
            info.ports
        );
    }
    assert!(info.ports.contains(&PublishedPort {
        container_port: 7000,
        protocol: Protocol::Tcp,
        host_ip: Some("0.0.0.0".into()),
        host_port: port,
    }));

    // The engine serves its health endpoint on that address.
    let status = eventually(15, "GET /healthz never answered 200", || async {
        get_healthz(SocketAddr::new(address, 8080))
            .await
            .filter(|status| *status == 200)
    })
    .await;
    assert_eq!(status, 200);

    within(30, "stop", docker.stop(&name, Duration::from_secs(10)))
        .await
        .expect("stop");
    let stopped = inspect(&docker, &name).await;
    assert_eq!(
        (stopped.address, stopped.ports.len()),
        (None, 0),
        "a stopped container has neither"
    );
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn the_health_image_is_healthy_then_unhealthy_with_a_failing_streak_once_its_marker_is_gone()
{
    let docker = docker().await;
    let game = game("docker-health");
    let name = default_name(&game);
    let _cleanup = Cleanup::new(&[&name]);
    let id = create_and_start(&docker, &spec(&game, IMAGE_HEALTH)).await;

    let first = inspect(&docker, &id)
        .await
        .health
        .expect("the image declares a HEALTHCHECK");
    assert!(
        matches!(
            first.status,
            DockerHealthStatus::Starting | DockerHealthStatus::Healthy
        ),
        "{first:?}"
    );
    eventually(15, "the container never became healthy", || async {
        let health = inspect(&docker, &id).await.health?;
        (health.status == DockerHealthStatus::Healthy).then_some(())
    })
    .await;

    let removed = within(
        15,
        "exec rm",
        docker.exec(
            &id,
            &command(&["rm", "/tmp/www/healthz"]),
            Duration::from_secs(5),
        ),
    )
    .await
    .expect("exec rm");
    assert_eq!(removed.exit_code, Some(0), "{removed:?}");
    let sick = eventually(15, "the container never became unhealthy", || async {
        let health = inspect(&docker, &id).await.health?;
        (health.status == DockerHealthStatus::Unhealthy).then_some(health)
    })
    .await;
    assert!(sick.failing_streak >= 2, "{sick:?}");
    assert_eq!(sick.last_exit_code, Some(1), "{sick:?}");

    // A plain engine has no HEALTHCHECK.
    let plain = default_name(&format!("{game}-plain"));
    let _plain = Cleanup::new(&[&plain]);
    let plain_spec = spec(&format!("{game}-plain"), IMAGE_1);
    create_and_start(&docker, &plain_spec).await;
    assert_eq!(inspect(&docker, &plain).await.health, None);
}

/// An engine that says which stop signal it got, then exits 0 (`trap ''`
/// for one of them: it ignores that one). It logs "listening" once its
/// traps are in place.
fn signal_reporter(game: &str, ignored: Option<&str>) -> ContainerSpec {
    let mut traps = String::new();
    for signal in ["INT", "TERM"] {
        if ignored == Some(signal) {
            traps.push_str(&format!("trap '' {signal}\n"));
        } else {
            traps.push_str(&format!("trap 'echo got SIG{signal}; exit 0' {signal}\n"));
        }
    }
    let script = format!("{traps}echo listening\nwhile :; do sleep 1 & wait $!; done\n");
    let mut spec = spec(game, IMAGE_1);
    spec.command = vec!["/bin/sh".into(), "-c".into(), script];
    spec
}

/// The container's log (stdout and stderr).
fn logs(container: &str) -> String {
    let output = docker_cli(&["logs", container]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Waits until the container's log says "listening" `times` times (once per
/// run of the engine): its traps are in place.
fn wait_listening(container: &str, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while logs(container).matches("listening").count() < times {
        assert!(
            Instant::now() < deadline,
            "{container} did not log \"listening\" {times} time(s) within 20 s: {}",
            logs(container)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn a_stop_with_a_signal_sends_that_signal_whatever_the_container_was_created_with() {
    let docker = docker().await;
    let game = game("signal");
    let name = default_name(&game);
    let _cleanup = Cleanup::new(&[&name]);
    let mut spec = signal_reporter(&game, None);
    spec.stop_signal = Some("SIGINT".into());
    let id = create_and_start(&docker, &spec).await;
    assert_eq!(docker_inspect(&id, "{{.Config.StopSignal}}"), "SIGINT");
    wait_listening(&id, 1);

    within(
        40,
        "stop with SIGTERM",
        docker.stop_with_signal(&id, "SIGTERM", Duration::from_secs(20)),
    )
    .await
    .expect("stop with a signal");
    let stopped = inspect(&docker, &id).await;
    assert!(!stopped.is_running());
    assert_eq!(stopped.exit_code, Some(0), "the engine's trap, not SIGKILL");
    assert!(logs(&id).contains("got SIGTERM"), "{}", logs(&id));
    assert!(!logs(&id).contains("got SIGINT"), "{}", logs(&id));

    // A `docker stop` by hand sends the signal the container was created with.
    within(20, "start again", docker.start(&id))
        .await
        .expect("start");
    wait_listening(&id, 2);
    let by_hand = docker_cli(&["stop", "-t", "20", &id]);
    assert!(by_hand.status.success(), "{by_hand:?}");
    assert!(logs(&id).contains("got SIGINT"), "{}", logs(&id));

    within(
        20,
        "stop of a stopped container",
        docker.stop_with_signal(&id, "SIGINT", Duration::from_secs(5)),
    )
    .await
    .expect("stopping a stopped container is Ok");
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn a_stop_with_a_signal_the_engine_ignores_ends_in_sigkill_at_the_timeout() {
    let docker = docker().await;
    let game = game("signal-ignored");
    let name = default_name(&game);
    let _cleanup = Cleanup::new(&[&name]);
    let id = create_and_start(&docker, &signal_reporter(&game, Some("INT"))).await;
    wait_listening(&id, 1);
    within(
        30,
        "stop with an ignored SIGINT",
        docker.stop_with_signal(&id, "SIGINT", Duration::from_secs(1)),
    )
    .await
    .expect("the SIGKILL ends it");
    let stopped = inspect(&docker, &id).await;
    assert!(!stopped.is_running());
    assert_eq!(stopped.exit_code, Some(137), "{}", logs(&id));
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn a_stop_with_a_signal_of_a_missing_container_is_not_found() {
    let docker = docker().await;
    let name = default_name(&game("signal-missing"));
    let err = within(
        20,
        "stop with a signal",
        docker.stop_with_signal(&name, "SIGINT", Duration::from_secs(1)),
    )
    .await
    .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn the_log_is_a_json_file_rotated_at_its_size_with_its_files_kept() {
    let docker = docker().await;
    let game = game("logrot");
    let name = default_name(&game);
    let _cleanup = Cleanup::new(&[&name]);
    let mut spec = spec(&game, IMAGE_1);
    // A chatty engine: about 1 MiB of output every few milliseconds.
    spec.command = vec!["/bin/sh".into(), "-c".into()];
    spec.args = vec!["yes 0123456789012345678901234567890123456789".into()];
    spec.log_rotation = Some(rtm_controller::runtime::LogRotation {
        max_size_bytes: 1 << 20,
        max_files: 2,
    });
    create_and_start(&docker, &spec).await;
    assert_eq!(
        docker_inspect(
            &name,
            "{{.HostConfig.LogConfig.Type}} {{index .HostConfig.LogConfig.Config \"max-size\"}} \
             {{index .HostConfig.LogConfig.Config \"max-file\"}}"
        ),
        "json-file 1048576 2"
    );
    // Where the engine runs on this host (the scripts' dockerd or the machine's), the
    // files themselves show the rotation: one rotated file, none beyond max-file, each
    // at most max-size (Docker rotates after the write that crosses it: one line more).
    let log_path = std::path::PathBuf::from(docker_inspect(&name, "{{.LogPath}}"));
    if log_path.exists() {
        let rotated = log_path.with_extension("log.1");
        eventually(20, "the log to rotate", || {
            let rotated = rotated.clone();
            async move { rotated.exists().then_some(()) }
        })
        .await;
        let beyond = log_path.with_extension("log.2");
        assert!(
            !beyond.exists(),
            "{} kept beyond max-file",
            beyond.display()
        );
        let size = std::fs::metadata(&rotated).expect("the rotated file").len();
        assert!(size <= (1 << 20) + 4096, "rotated at {size} bytes");
    }
    within(20, "kill", docker.kill(&name)).await.expect("kill");
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn volumes_are_created_with_labels_listed_by_label_and_removed_once_unused() {
    use rtm_controller::runtime::{Mount, MountSource, VolumeSpec};
    let docker = docker().await;
    let game = game("volcalls");
    let name = default_name(&game);
    let _cleanup = Cleanup::new(&[&name]);
    let volume = format!("{name}_saves");
    let labels: BTreeMap<String, String> = [
        ("rtmanager.dev/game".to_owned(), game.clone()),
        ("rtmanager.dev/volume".to_owned(), "saves".to_owned()),
    ]
    .into();
    assert_eq!(
        within(20, "inspect", docker.inspect_volume(&volume))
            .await
            .unwrap(),
        None
    );
    let made = within(
        20,
        "create",
        docker.create_volume(&VolumeSpec {
            name: volume.clone(),
            labels: labels.clone(),
        }),
    )
    .await
    .expect("created");
    assert_eq!(made.labels, labels);
    // Docker answers an existing volume as it is: other labels are not applied.
    let again = within(
        20,
        "create again",
        docker.create_volume(&VolumeSpec {
            name: volume.clone(),
            labels: [("x".to_owned(), "y".to_owned())].into(),
        }),
    )
    .await
    .expect("answered");
    assert_eq!(again.labels, labels);
    let listed = within(20, "list", docker.list_volumes(&labels))
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        [volume.as_str()]
    );

    let mut spec = spec(&game, IMAGE_1);
    spec.mounts = vec![Mount {
        source: MountSource::Volume {
            name: volume.clone(),
            labels: BTreeMap::new(),
        },
        target: "/data".into(),
        read_only: false,
    }];
    create_and_start(&docker, &spec).await;
    let err = within(20, "remove in use", docker.remove_volume(&volume))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Conflict { .. }), "{err:?}");
    within(20, "remove container", docker.remove(&name, true))
        .await
        .expect("container removed");
    within(20, "remove", docker.remove_volume(&volume))
        .await
        .expect("volume removed");
    let err = within(20, "remove again", docker.remove_volume(&volume))
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
}
