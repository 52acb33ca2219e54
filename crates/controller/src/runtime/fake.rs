//! `FakeRuntime`: an in-memory `ContainerRuntime` that behaves like Docker
//! where the controller can tell (name conflicts, 304-style no-ops, port
//! conflicts, event order), with knobs for tests: per-call latency, scripted
//! failures, a call log, and helpers that play the world outside rtmanager
//! (an engine crashing, an operator removing a container by hand, dockerd
//! going away). Every `ContainerSpec` it is given is kept (`spec_of`), so
//! tests can assert what the container was created with (limits,
//! capabilities, network).
//!
//! For health checks a running container has an address (`10.88.x.y`, from
//! its serial) and the spec's published ports; Docker's HEALTHCHECK verdict
//! ([`FakeRuntime::set_docker_health`]) and what an exec answers
//! ([`FakeRuntime::set_exec`], [`FakeExec`]) are scripted per container and
//! per game.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use rtm_core::model::{Protocol, PublishedPort};

use super::{
    ContainerEvent, ContainerInfo, ContainerRuntime, ContainerSpec, ContainerState, DockerHealth,
    EXEC_OUTPUT_LIMIT, ExecOutcome, HostResources, ImageInfo, LABEL_MANAGED_BY, MANAGED_BY,
    MountSource, PortProtocol, RuntimeError, RuntimeOp, VolumeInfo, VolumeSpec,
    cut_at_char_boundary,
};

/// The operation a scripted failure or a logged call refers to (the
/// benchmark counts calls by it).
pub type FakeOp = RuntimeOp;

/// Events a subscriber may fall behind by before it is dropped, like
/// Docker's lossy event stream (which keeps 256).
const EVENT_BUFFER: usize = 256;

/// Exit code of a container killed by SIGKILL.
const EXIT_SIGKILL: i64 = 137;

/// One call the fake received, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeCall {
    /// Which operation was called.
    pub op: FakeOp,
    /// The name, id or image the call was about; empty for ping, list and
    /// events.
    pub target: String,
    /// The signal a stop named (`stop_with_signal`); `None` for every other
    /// call, and for a plain `stop` (the container's own signal).
    pub signal: Option<String>,
    /// When it was received (tokio time: paused-time tests see the delays
    /// between calls).
    pub at: tokio::time::Instant,
}

impl fmt::Display for FakeCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.target.is_empty() {
            f.write_str(self.op.as_str())?;
        } else {
            write!(f, "{} {}", self.op, self.target)?;
        }
        match &self.signal {
            Some(signal) => write!(f, " with {signal}"),
            None => Ok(()),
        }
    }
}

/// What an exec in a game's container answers ([`FakeRuntime::set_exec`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeExec {
    /// The command ends at once with this exit code and output (cut to
    /// 4 KiB like Docker's).
    Exit {
        /// The exit code.
        code: i64,
        /// Its output.
        output: String,
    },
    /// The command outlives the timeout: the call returns after it (tokio
    /// time) without an exit code, and the exec keeps running until
    /// [`FakeRuntime::release_execs`] or the container stops.
    Hang,
    /// The call fails with this error (e.g. `Conflict`, `Unreachable`).
    Fail(RuntimeError),
}

impl Default for FakeExec {
    /// What Docker answers for a command that succeeds silently.
    fn default() -> Self {
        FakeExec::Exit {
            code: 0,
            output: String::new(),
        }
    }
}

/// Prefix of the fake's exec ids (Docker's are 64 hex digits).
const EXEC_ID_PREFIX: &str = "exec-";

/// When a scripted failure strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strike {
    /// Fail without doing anything.
    Before,
    /// Do the operation, then fail: a client timeout after Docker acted.
    /// Only this crate's unit tests script it (`fail_next_after_applying`).
    #[cfg_attr(not(test), allow(dead_code))]
    After,
}

/// An in-memory Docker. Cheap to clone: clones share the same state.
#[derive(Clone)]
pub struct FakeRuntime {
    shared: Arc<Shared>,
    latency: Duration,
}

struct Shared {
    state: Mutex<State>,
}

struct State {
    /// By container id.
    containers: BTreeMap<String, FakeContainer>,
    /// Container name → id, so that a lookup by name does not scan every
    /// container (the scale benchmark holds 100,000).
    names: HashMap<String, String>,
    /// Game label → container ids, for `list_game` (same reason).
    games: HashMap<String, Vec<String>>,
    /// Image reference → image id.
    images: BTreeMap<String, String>,
    /// An image reference the next stop removes (`docker rmi` by hand while
    /// a stop waits), for [`FakeRuntime::untag_during_next_stop`].
    untag_on_stop: Option<(String, bool)>,
    /// Ids of images whose tag was removed while a container used them:
    /// Docker keeps such an image (untagged) until it is removed by id.
    untagged: std::collections::BTreeSet<String>,
    /// The registry: reference (`host/repo:tag`) → the content it names (its
    /// image id and manifest digest derive from it). See [`FakeRuntime::push`].
    registry: BTreeMap<String, String>,
    /// Registry host → the user and password it wants; absent: anonymous pulls.
    registry_users: HashMap<String, (String, String)>,
    /// Image id → its repository digests (`repo@sha256:...`), from pulls.
    repo_digests: BTreeMap<String, std::collections::BTreeSet<String>>,
    next_serial: u64,
    failures: HashMap<FakeOp, VecDeque<(Strike, RuntimeError)>>,
    calls: Vec<FakeCall>,
    /// When set, every call fails with `Unreachable` (dockerd is down).
    down: bool,
    /// Replaced to end every open event stream (a daemon restart).
    events: broadcast::Sender<ContainerEvent>,
    /// What `host_resources` answers.
    host: Option<HostResources>,
    /// Game → what an exec in its containers answers; absent: the default.
    exec_answers: HashMap<String, FakeExec>,
    /// Game → exec calls that reached one of its containers.
    exec_counts: HashMap<String, usize>,
    /// Hung execs still running: exec id → container id.
    running_execs: HashMap<String, String>,
    next_exec: u64,
    /// Docker volumes: name → labels.
    volumes: BTreeMap<String, BTreeMap<String, String>>,
}

/// The host the fake plays unless a test says otherwise: big enough for
/// every default limit.
const FAKE_HOST: HostResources = HostResources {
    cpus: 8,
    memory_bytes: 32 << 30,
};

#[derive(Debug, Clone)]
struct FakeContainer {
    info: ContainerInfo,
    spec: ContainerSpec,
    /// Whether the engine exits on SIGTERM; `false` plays an engine that
    /// ignores it, so a stop ends in SIGKILL (exit 137).
    honours_sigterm: bool,
    /// Its creation order, from which its address is made.
    serial: u64,
    /// What the engine printed ([`FakeRuntime::print`]), as `last_output` answers it.
    output: String,
}

impl fmt::Debug for FakeRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("FakeRuntime")
            .field("containers", &state.containers.len())
            .field("images", &state.images.len())
            .field("down", &state.down)
            .field("latency", &self.latency)
            .finish()
    }
}

impl Default for FakeRuntime {
    fn default() -> Self {
        FakeRuntime::new()
    }
}

fn hex_id(seed: &str) -> String {
    hex::encode(Sha256::digest(seed.as_bytes()))
}

impl FakeRuntime {
    /// An empty Docker: no images, no containers, no latency.
    pub fn new() -> FakeRuntime {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        FakeRuntime {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    containers: BTreeMap::new(),
                    names: HashMap::new(),
                    games: HashMap::new(),
                    images: BTreeMap::new(),
                    untag_on_stop: None,
                    untagged: std::collections::BTreeSet::new(),
                    registry: BTreeMap::new(),
                    registry_users: HashMap::new(),
                    repo_digests: BTreeMap::new(),
                    next_serial: 1,
                    failures: HashMap::new(),
                    calls: Vec::new(),
                    down: false,
                    events,
                    host: Some(FAKE_HOST),
                    exec_answers: HashMap::new(),
                    exec_counts: HashMap::new(),
                    running_execs: HashMap::new(),
                    next_exec: 1,
                    volumes: BTreeMap::new(),
                }),
            }),
            latency: Duration::ZERO,
        }
    }

    /// Every call of the returned handle first sleeps `latency` (tokio time,
    /// so paused-time tests stay instant). Shares state with `self`.
    pub fn with_latency(&self, latency: Duration) -> FakeRuntime {
        FakeRuntime {
            shared: Arc::clone(&self.shared),
            latency,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a failed test already; keep
        // serving the state rather than cascading poison panics.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The volume `name`, as `docker volume inspect` shows it.
    pub fn volume(&self, name: &str) -> Option<VolumeInfo> {
        let state = self.state();
        state.volumes.get(name).map(|labels| VolumeInfo {
            name: name.to_owned(),
            labels: labels.clone(),
        })
    }

    /// Every volume's name.
    pub fn volume_names(&self) -> Vec<String> {
        self.state().volumes.keys().cloned().collect()
    }

    /// `docker volume create` by hand: a volume `name` with `labels`
    /// (replacing one of that name).
    pub fn add_volume(&self, name: &str, labels: &[(&str, &str)]) {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.state().volumes.insert(name.to_owned(), labels);
    }

    /// Makes `reference` present; returns its image id. Idempotent.
    pub fn add_image(&self, reference: &str) -> String {
        let mut state = self.state();
        let id = format!("sha256:{}", hex_id(&format!("image {reference}")));
        state.images.insert(reference.to_owned(), id.clone());
        id
    }

    /// The registry's `reference` (`host/repo:tag`) names `content` from now on:
    /// a push, or a move of the tag when it named other content. Returns the
    /// manifest digest it has in the registry. The image a pull then makes has the
    /// id `add_image(content)` would give.
    pub fn push(&self, reference: &str, content: &str) -> String {
        self.state()
            .registry
            .insert(reference.to_owned(), content.to_owned());
        manifest_digest(content)
    }

    /// Deletes the tag `reference` from the registry.
    pub fn unpush(&self, reference: &str) {
        self.state().registry.remove(reference);
    }

    /// The registry `host` refuses pulls without this user and password.
    pub fn require_credentials(&self, host: &str, username: &str, password: &str) {
        self.state()
            .registry_users
            .insert(host.to_owned(), (username.to_owned(), password.to_owned()));
    }

    /// The next pull fails as `failure` (a timeout, refused credentials, ...).
    pub fn fail_next_pull(&self, failure: super::PullFailure) {
        self.fail_next(
            FakeOp::PullImage,
            RuntimeError::Pull {
                image: String::new(),
                failure,
                message: format!("scripted {failure:?}"),
            },
        );
    }

    /// Removes the image `reference` (containers made from it keep running).
    #[cfg(test)]
    pub(crate) fn remove_image(&self, reference: &str) {
        self.state().images.remove(reference);
    }

    /// The next stop removes the tag `reference` while it stops the
    /// container (a `docker rmi` by hand in the middle of a restart); the
    /// image stays, untagged, as Docker keeps an image a container uses.
    #[cfg(test)]
    pub(crate) fn untag_during_next_stop(&self, reference: &str) {
        self.state().untag_on_stop = Some((reference.to_owned(), true));
    }

    /// The next stop removes the image `reference` altogether (its only
    /// tag, of an image no container uses).
    #[cfg(test)]
    pub(crate) fn remove_image_during_next_stop(&self, reference: &str) {
        self.state().untag_on_stop = Some((reference.to_owned(), false));
    }

    /// The next call of `op` fails with `err` and does nothing. Failures
    /// queue up per operation, first scripted first served.
    pub fn fail_next(&self, op: FakeOp, err: RuntimeError) {
        self.script(op, Strike::Before, err);
    }

    /// The next call of `op` is carried out, then fails with `err`: plays a
    /// client timeout after Docker acted (the outcome-unknown case).
    #[cfg(test)]
    pub(crate) fn fail_next_after_applying(&self, op: FakeOp, err: RuntimeError) {
        self.script(op, Strike::After, err);
    }

    fn script(&self, op: FakeOp, strike: Strike, err: RuntimeError) {
        self.state()
            .failures
            .entry(op)
            .or_default()
            .push_back((strike, err));
    }

    /// Every call received so far, in order (failed ones included).
    pub fn calls(&self) -> Vec<FakeCall> {
        self.state().calls.clone()
    }

    /// How many calls of `op` were received.
    pub fn count(&self, op: FakeOp) -> usize {
        self.state().calls.iter().filter(|c| c.op == op).count()
    }

    /// Forgets the calls received so far, so a later [`FakeRuntime::count`]
    /// measures one phase alone.
    pub fn clear_calls(&self) {
        self.state().calls.clear();
    }

    /// dockerd goes down (`true`): every call fails with `Unreachable` and
    /// open event streams end. Back up (`false`): containers are as they
    /// were, like a daemon with live-restore.
    #[cfg(test)]
    pub(crate) fn set_down(&self, down: bool) {
        let mut state = self.state();
        state.down = down;
        if down {
            state.restart_event_streams();
        }
    }

    /// Ends every open event stream, as a daemon restart does.
    pub fn drop_event_streams(&self) {
        self.state().restart_event_streams();
    }

    /// The container by name or id, without logging a call.
    pub fn container(&self, name_or_id: &str) -> Option<ContainerInfo> {
        let state = self.state();
        state
            .resolve(name_or_id)
            .map(|id| state.containers[&id].info.clone())
    }

    /// Every container, managed or not, sorted by name.
    pub fn containers(&self) -> Vec<ContainerInfo> {
        let mut all: Vec<ContainerInfo> = self
            .state()
            .containers
            .values()
            .map(|c| c.info.clone())
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The spec a container was created from.
    #[cfg(test)]
    pub(crate) fn spec_of(&self, name_or_id: &str) -> Option<ContainerSpec> {
        let state = self.state();
        state
            .resolve(name_or_id)
            .map(|id| state.containers[&id].spec.clone())
    }

    /// Makes the container's engine ignore SIGTERM: a stop then takes the
    /// whole timeout (in tokio time) and ends with exit code 137.
    #[cfg(test)]
    pub(crate) fn ignore_sigterm(&self, name_or_id: &str) -> Result<(), RuntimeError> {
        let mut state = self.state();
        let id = state.existing(name_or_id)?;
        if let Some(container) = state.containers.get_mut(&id) {
            container.honours_sigterm = false;
        }
        Ok(())
    }

    /// The engine exits by itself with `code` (a crash when non-zero):
    /// `die` event, state `Exited`.
    #[cfg(test)]
    pub(crate) fn exit_container(&self, name_or_id: &str, code: i64) -> Result<(), RuntimeError> {
        let mut state = self.state();
        let id = state.existing(name_or_id)?;
        if state.containers[&id].info.is_running() {
            state.exit(&id, code, false);
        }
        Ok(())
    }

    /// The engine prints `line` (a newline is added), logged as Docker logs it: an RFC 3339
    /// timestamp, a space, the line.
    #[cfg(test)]
    pub(crate) fn print(&self, name_or_id: &str, line: &str) -> Result<(), RuntimeError> {
        let mut state = self.state();
        let id = state.existing(name_or_id)?;
        if let Some(container) = state.containers.get_mut(&id) {
            let at = rtm_core::model::Timestamp::now();
            container.output.push_str(&format!("{at} {line}\n"));
        }
        Ok(())
    }

    /// The kernel OOM-kills the engine: `oom` and `die` events, exit 137.
    #[cfg(test)]
    pub(crate) fn oom_kill(&self, name_or_id: &str) -> Result<(), RuntimeError> {
        let mut state = self.state();
        let id = state.existing(name_or_id)?;
        if state.containers[&id].info.is_running() {
            state.emit(&id, "oom");
            state.exit(&id, EXIT_SIGKILL, true);
        }
        Ok(())
    }

    /// Someone runs `docker pause` by hand: `pause` event, state `Paused`.
    #[cfg(test)]
    pub(crate) fn pause_by_hand(&self, name_or_id: &str) -> Result<(), RuntimeError> {
        let mut state = self.state();
        let id = state.existing(name_or_id)?;
        if let Some(container) = state.containers.get_mut(&id)
            && container.info.is_running()
        {
            container.info.state = ContainerState::Paused;
            state.emit(&id, "pause");
        }
        Ok(())
    }

    /// Someone runs `docker rm -f` by hand.
    #[cfg(test)]
    pub(crate) fn remove_by_hand(&self, name_or_id: &str) -> Result<(), RuntimeError> {
        let mut state = self.state();
        let id = state.existing(name_or_id)?;
        state.destroy(&id, true);
        Ok(())
    }

    /// Sets Docker's HEALTHCHECK verdict of the container (`None`: the image
    /// has no HEALTHCHECK). It stays as set, whatever the container does,
    /// until set again.
    pub fn set_docker_health(
        &self,
        name_or_id: &str,
        health: Option<DockerHealth>,
    ) -> Result<(), RuntimeError> {
        let mut state = self.state();
        let id = state.existing(name_or_id)?;
        if let Some(container) = state.containers.get_mut(&id) {
            container.info.health = health;
        }
        Ok(())
    }

    /// What every later exec in `game`'s containers answers, until set
    /// again; the default is exit 0 with no output. A one-off failure is
    /// [`FakeRuntime::fail_next`] with [`FakeOp::Exec`] instead.
    pub fn set_exec(&self, game: &str, answer: FakeExec) {
        self.state().exec_answers.insert(game.to_owned(), answer);
    }

    /// Ends every hung exec ([`FakeExec::Hang`]) in `game`'s containers:
    /// `exec_running` says `false` for them from now on.
    pub fn release_execs(&self, game: &str) {
        let mut state = self.state();
        let ids: Vec<String> = state
            .running_execs
            .iter()
            .filter(|(_, container)| {
                state.containers.get(*container).and_then(|c| c.info.game()) == Some(game)
            })
            .map(|(exec, _)| exec.clone())
            .collect();
        for exec in ids {
            state.running_execs.remove(&exec);
        }
    }

    /// How many exec calls reached a container of `game` (failed ones
    /// included; `exec_running` calls not). The call log has both under
    /// [`FakeOp::Exec`]: an exec's target is the container, an
    /// `exec_running`'s the exec id.
    pub fn exec_count(&self, game: &str) -> usize {
        self.state().exec_counts.get(game).copied().unwrap_or(0)
    }

    /// A stop once its call is logged: the engine exits at once (0) on
    /// the signal, or, when it ignores it, after `timeout` (tokio time) by
    /// SIGKILL (137).
    async fn stop_entered(
        &self,
        id: &str,
        timeout: Duration,
        after: Option<RuntimeError>,
    ) -> Result<(), RuntimeError> {
        let honours_sigterm = {
            let state = self.state();
            let id = state.existing(id)?;
            let container = &state.containers[&id];
            if !container.info.is_alive() {
                return settle(after, Ok(()));
            }
            container.honours_sigterm
        };
        if !honours_sigterm {
            // Docker waits the whole timeout before SIGKILL.
            tokio::time::sleep(timeout).await;
        }
        let mut state = self.state();
        if let Some((reference, kept)) = state.untag_on_stop.take()
            && let Some(image_id) = state.images.remove(&reference)
            && kept
        {
            state.untagged.insert(image_id);
        }
        // The container may have gone while we waited.
        let id = state.existing(id)?;
        if state.containers[&id].info.is_alive() {
            state.emit(&id, "kill");
            let code = if honours_sigterm { 0 } else { EXIT_SIGKILL };
            state.exit(&id, code, false);
            state.emit(&id, "stop");
        }
        settle(after, Ok(()))
    }

    /// Records the call, waits the latency, then applies any scripted
    /// failure. Returns the `After` failure to raise once the operation ran.
    async fn enter(&self, op: FakeOp, target: &str) -> Result<Option<RuntimeError>, RuntimeError> {
        self.enter_signalled(op, target, None).await
    }

    /// [`FakeRuntime::enter`] for a call that names a signal.
    async fn enter_signalled(
        &self,
        op: FakeOp,
        target: &str,
        signal: Option<&str>,
    ) -> Result<Option<RuntimeError>, RuntimeError> {
        self.state().calls.push(FakeCall {
            op,
            target: target.to_owned(),
            signal: signal.map(str::to_owned),
            at: tokio::time::Instant::now(),
        });
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let mut state = self.state();
        if let Some((strike, err)) = state.failures.get_mut(&op).and_then(VecDeque::pop_front) {
            match strike {
                Strike::Before => return Err(err),
                Strike::After => return Ok(Some(err)),
            }
        }
        if state.down {
            return Err(unreachable());
        }
        Ok(None)
    }
}

/// The address of the container created `serial`th: `10.88.x.y`, one per
/// container for the first 65,534 (the scale benchmark's 100,000 wrap).
fn address_of(serial: u64) -> IpAddr {
    let host = (serial.saturating_sub(1) % 65_534) + 1;
    let [.., x, y] = host.to_be_bytes();
    IpAddr::V4(Ipv4Addr::new(10, 88, x, y))
}

/// The ports Docker reports for a running container of `spec`: those with a
/// host port, sorted, each once.
fn published_ports(spec: &ContainerSpec) -> Vec<PublishedPort> {
    let mut ports: Vec<PublishedPort> = spec
        .ports
        .iter()
        .filter_map(|port| {
            Some(PublishedPort {
                container_port: port.container_port,
                protocol: match port.protocol {
                    PortProtocol::Tcp => Protocol::Tcp,
                    PortProtocol::Udp => Protocol::Udp,
                },
                host_ip: port.host_ip.clone(),
                host_port: port.host_port?,
            })
        })
        .collect();
    ports.sort();
    ports.dedup();
    ports
}

fn unreachable() -> RuntimeError {
    RuntimeError::Unreachable {
        message: "fake dockerd is down".to_owned(),
    }
}

/// The result of an operation that ran, with an `After` failure applied.
fn settle<T>(
    after: Option<RuntimeError>,
    result: Result<T, RuntimeError>,
) -> Result<T, RuntimeError> {
    match after {
        Some(err) => Err(err),
        None => result,
    }
}

/// The manifest digest the fake registry gives `content`.
fn manifest_digest(content: &str) -> String {
    format!("sha256:{}", hex_id(&format!("manifest {content}")))
}

impl State {
    /// What `image` names in the registry, as its host lets `credentials` see it.
    fn registry_content(
        &self,
        image: &str,
        credentials: Option<&super::RegistryCredentials>,
    ) -> Result<String, RuntimeError> {
        let failed = |failure, message: &str| RuntimeError::Pull {
            image: image.to_owned(),
            failure,
            message: message.to_owned(),
        };
        let host = rtm_core::model::ImageName::parse(image)
            .map(|name| name.registry)
            .unwrap_or_default();
        if let Some((user, password)) = self.registry_users.get(&host) {
            let given = credentials.map(|c| (&c.username, &c.password));
            if given != Some((user, password)) {
                return Err(failed(
                    super::PullFailure::Unauthorized,
                    "unauthorized: authentication required",
                ));
            }
        }
        self.registry.get(image).cloned().ok_or_else(|| {
            failed(
                super::PullFailure::NotFound,
                "manifest unknown: manifest unknown",
            )
        })
    }

    fn image_info(&self, id: String) -> ImageInfo {
        let repo_digests = self
            .repo_digests
            .get(&id)
            .map(|digests| digests.iter().cloned().collect())
            .unwrap_or_default();
        ImageInfo { id, repo_digests }
    }

    /// The id of the image `reference` names (a tag, or an id): like
    /// Docker, an image whose every tag was removed stays while a container
    /// was made from it.
    fn image_id(&self, reference: &str) -> Option<String> {
        self.images
            .get(reference)
            .or_else(|| self.images.values().find(|id| id.as_str() == reference))
            .or_else(|| self.untagged.get(reference))
            .or_else(|| {
                self.containers
                    .values()
                    .map(|c| &c.info.image_id)
                    .find(|id| id.as_str() == reference)
            })
            .cloned()
    }

    /// Docker's lookup: exact id, exact name (with or without `/`), or a
    /// unique id prefix.
    fn resolve(&self, name_or_id: &str) -> Option<String> {
        if name_or_id.is_empty() {
            return None;
        }
        if self.containers.contains_key(name_or_id) {
            return Some(name_or_id.to_owned());
        }
        let name = name_or_id.trim_start_matches('/');
        if let Some(id) = self.names.get(name) {
            return Some(id.clone());
        }
        let mut prefixed = self
            .containers
            .range::<str, _>((
                std::ops::Bound::Included(name_or_id),
                std::ops::Bound::Unbounded,
            ))
            .map(|(id, _)| id)
            .take_while(|id| id.starts_with(name_or_id));
        match (prefixed.next(), prefixed.next()) {
            (Some(id), None) => Some(id.clone()),
            _ => None,
        }
    }

    fn existing(&self, name_or_id: &str) -> Result<String, RuntimeError> {
        self.resolve(name_or_id)
            .ok_or_else(|| RuntimeError::NotFound {
                what: format!("No such container: {name_or_id}"),
            })
    }

    fn emit(&self, id: &str, action: &str) {
        let game = self
            .containers
            .get(id)
            .and_then(|c| c.info.game().map(str::to_owned));
        // Only managed containers reach subscribers, as with the label filter.
        let managed = self.containers.get(id).is_some_and(|c| c.info.is_managed());
        if managed {
            // No subscriber is fine: Docker does not wait for readers either.
            let _ = self.events.send(ContainerEvent {
                container_id: id.to_owned(),
                game,
                action: action.to_owned(),
            });
        }
    }

    fn rename(&mut self, id: &str, name: &str) -> Result<(), RuntimeError> {
        if self.names.get(name).is_some_and(|holder| holder != id) {
            return Err(RuntimeError::NameConflict {
                name: name.to_owned(),
            });
        }
        let Some(container) = self.containers.get_mut(id) else {
            return Err(RuntimeError::NotFound {
                what: format!("No such container: {id}"),
            });
        };
        let old = std::mem::replace(&mut container.info.name, name.to_owned());
        container.spec.name = name.to_owned();
        self.names.remove(&old);
        self.names.insert(name.to_owned(), id.to_owned());
        self.emit(id, "rename");
        Ok(())
    }

    fn exit(&mut self, id: &str, code: i64, oom: bool) {
        if let Some(container) = self.containers.get_mut(id) {
            container.info.state = ContainerState::Exited;
            container.info.exit_code = Some(code);
            container.info.oom_killed = oom;
            container.info.finished_at = Some(SystemTime::now());
            // Docker releases the endpoint and the port bindings with the
            // process; its execs die with it.
            container.info.address = None;
            container.info.ports.clear();
        }
        self.running_execs.retain(|_, container| container != id);
        self.emit(id, "die");
    }

    fn destroy(&mut self, id: &str, kill_first: bool) {
        let running = self.containers.get(id).is_some_and(|c| c.info.is_alive());
        if running && kill_first {
            self.emit(id, "kill");
            self.exit(id, EXIT_SIGKILL, false);
        }
        self.emit(id, "destroy");
        self.running_execs.retain(|_, container| container != id);
        if let Some(gone) = self.containers.remove(id) {
            self.names.remove(&gone.info.name);
            if let Some(game) = gone.info.game()
                && let Some(ids) = self.games.get_mut(game)
            {
                ids.retain(|other| other != id);
                if ids.is_empty() {
                    self.games.remove(game);
                }
            }
        }
    }

    fn restart_event_streams(&mut self) {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        // Dropping the old sender ends every receiver after its backlog.
        self.events = events;
    }

    fn host_port_holder(&self, id: &str) -> Option<String> {
        let wanted = &self.containers.get(id)?.spec.ports;
        if wanted.iter().all(|p| p.host_port.is_none()) {
            return None;
        }
        for other in self.containers.values() {
            if other.info.id == id || !other.info.is_running() {
                continue;
            }
            for mine in wanted.iter().filter(|p| p.host_port.is_some()) {
                let clash = other.spec.ports.iter().any(|theirs| {
                    theirs.host_port == mine.host_port
                        && theirs.protocol == mine.protocol
                        && (theirs.host_ip.is_none()
                            || mine.host_ip.is_none()
                            || theirs.host_ip == mine.host_ip)
                });
                if clash {
                    let port = mine.host_port.unwrap_or_default();
                    let ip = mine.host_ip.as_deref().unwrap_or("0.0.0.0");
                    return Some(format!(
                        "driver failed programming external connectivity on endpoint {}: Bind for {ip}:{port} failed: port is already allocated",
                        self.containers[id].info.name
                    ));
                }
            }
        }
        None
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    /// Not logged as a call: the real runtime asks Docker once and caches
    /// the answer, so call-order assertions should not see it.
    async fn host_resources(&self) -> Result<Option<HostResources>, RuntimeError> {
        let state = self.state();
        if state.down {
            return Err(unreachable());
        }
        Ok(state.host)
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        let after = self.enter(FakeOp::Ping, "").await?;
        settle(after, Ok(()))
    }

    async fn inspect_image(&self, image: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        let after = self.enter(FakeOp::InspectImage, image).await?;
        let state = self.state();
        let found = state.image_id(image).map(|id| state.image_info(id));
        settle(after, Ok(found))
    }

    async fn pull_image(
        &self,
        image: &str,
        credentials: Option<&super::RegistryCredentials>,
        _timeout: Duration,
    ) -> Result<ImageInfo, RuntimeError> {
        let after = self.enter(FakeOp::PullImage, image).await?;
        let mut state = self.state();
        let content = state.registry_content(image, credentials)?;
        let id = format!("sha256:{}", hex_id(&format!("image {content}")));
        let repository = image
            .split_once('@')
            .map_or(image, |(r, _)| r)
            .rsplit_once(':')
            .filter(|(_, tag)| !tag.contains('/'))
            .map_or(image, |(r, _)| r);
        state
            .repo_digests
            .entry(id.clone())
            .or_default()
            .insert(format!("{repository}@{}", manifest_digest(&content)));
        state.images.insert(image.to_owned(), id.clone());
        let info = state.image_info(id);
        settle(after, Ok(info))
    }

    async fn registry_digest(
        &self,
        image: &str,
        credentials: Option<&super::RegistryCredentials>,
        _timeout: Duration,
    ) -> Result<String, RuntimeError> {
        let after = self.enter(FakeOp::RegistryDigest, image).await?;
        let state = self.state();
        let content = state.registry_content(image, credentials)?;
        settle(after, Ok(manifest_digest(&content)))
    }

    async fn inspect_container(
        &self,
        name_or_id: &str,
    ) -> Result<Option<ContainerInfo>, RuntimeError> {
        let after = self.enter(FakeOp::InspectContainer, name_or_id).await?;
        let state = self.state();
        let found = state
            .resolve(name_or_id)
            .map(|id| state.containers[&id].info.clone());
        settle(after, Ok(found))
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let after = self.enter(FakeOp::Create, &spec.name).await?;
        let mut state = self.state();
        let Some(image_id) = state.image_id(&spec.image) else {
            return Err(RuntimeError::ImageNotFound {
                image: spec.image.clone(),
            });
        };
        if state.names.contains_key(&spec.name) {
            return Err(RuntimeError::NameConflict {
                name: spec.name.clone(),
            });
        }
        // Like Docker, a named volume a mount names is created (with the
        // mount's labels) when missing.
        for mount in &spec.mounts {
            if let MountSource::Volume { name, labels } = &mount.source {
                state
                    .volumes
                    .entry(name.clone())
                    .or_insert_with(|| labels.clone());
            }
        }
        let serial = state.next_serial;
        state.next_serial += 1;
        let id = hex_id(&format!("container {serial} {}", spec.name));
        let info = ContainerInfo {
            id: id.clone(),
            name: spec.name.clone(),
            image: spec.image.clone(),
            image_id,
            hostname: spec.hostname.clone(),
            labels: spec.effective_labels(),
            state: ContainerState::Created,
            exit_code: None,
            oom_killed: false,
            started_at: None,
            finished_at: None,
            error: None,
            address: None,
            ports: Vec::new(),
            health: None,
        };
        state.names.insert(spec.name.clone(), id.clone());
        state
            .games
            .entry(spec.game.clone())
            .or_default()
            .push(id.clone());
        state.containers.insert(
            id.clone(),
            FakeContainer {
                info,
                spec: spec.clone(),
                honours_sigterm: true,
                serial,
                output: String::new(),
            },
        );
        state.emit(&id, "create");
        settle(after, Ok(id))
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let after = self.enter(FakeOp::Start, id).await?;
        let mut state = self.state();
        let id = state.existing(id)?;
        if state.containers[&id].info.is_running() {
            return settle(after, Ok(()));
        }
        if let Some(message) = state.host_port_holder(&id) {
            if let Some(container) = state.containers.get_mut(&id) {
                container.info.error = Some(message.clone());
            }
            return Err(RuntimeError::PortAllocated { message });
        }
        if let Some(container) = state.containers.get_mut(&id) {
            container.info.state = ContainerState::Running;
            container.info.exit_code = None;
            container.info.oom_killed = false;
            container.info.error = None;
            container.info.started_at = Some(SystemTime::now());
            container.info.address = Some(address_of(container.serial));
            container.info.ports = published_ports(&container.spec);
        }
        state.emit(&id, "start");
        settle(after, Ok(()))
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let after = self.enter(FakeOp::Stop, id).await?;
        self.stop_entered(id, timeout, after).await
    }

    /// Logged as a stop, with the signal: the fake's engines exit on any
    /// stop signal unless told to ignore it ([`FakeRuntime::ignore_sigterm`]).
    async fn stop_with_signal(
        &self,
        id: &str,
        signal: &str,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        let after = self.enter_signalled(FakeOp::Stop, id, Some(signal)).await?;
        self.stop_entered(id, timeout, after).await
    }

    async fn kill(&self, id: &str) -> Result<(), RuntimeError> {
        let after = self.enter(FakeOp::Kill, id).await?;
        let mut state = self.state();
        let id = state.existing(id)?;
        if state.containers[&id].info.is_alive() {
            state.emit(&id, "kill");
            state.exit(&id, EXIT_SIGKILL, false);
        }
        settle(after, Ok(()))
    }

    async fn remove(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let after = self.enter(FakeOp::Remove, id).await?;
        let mut state = self.state();
        let id = state.existing(id)?;
        if state.containers[&id].info.is_alive() && !force {
            return Err(RuntimeError::Conflict {
                message: format!(
                    "You cannot remove a running container {id}. Stop the container before attempting removal or force remove"
                ),
            });
        }
        state.destroy(&id, force);
        settle(after, Ok(()))
    }

    async fn unpause(&self, id: &str) -> Result<(), RuntimeError> {
        let after = self.enter(FakeOp::Unpause, id).await?;
        let mut state = self.state();
        let id = state.existing(id)?;
        if let Some(container) = state.containers.get_mut(&id)
            && container.info.state == ContainerState::Paused
        {
            container.info.state = ContainerState::Running;
            state.emit(&id, "unpause");
        }
        settle(after, Ok(()))
    }

    async fn rename(&self, id: &str, name: &str) -> Result<(), RuntimeError> {
        let after = self.enter(FakeOp::Rename, id).await?;
        let mut state = self.state();
        let id = state.existing(id)?;
        state.rename(&id, name)?;
        settle(after, Ok(()))
    }

    async fn list_game(&self, game: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let after = self.enter(FakeOp::ListManaged, game).await?;
        let state = self.state();
        let mut found: Vec<ContainerInfo> = state
            .games
            .get(game)
            .into_iter()
            .flatten()
            .filter_map(|id| state.containers.get(id))
            .filter(|c| c.info.is_managed() && c.info.game() == Some(game))
            .map(|c| c.info.clone())
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        settle(after, Ok(found))
    }

    async fn list_labelled(&self, key: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let after = self.enter(FakeOp::ListManaged, key).await?;
        let state = self.state();
        let mut found: Vec<ContainerInfo> = state
            .containers
            .values()
            .filter(|c| c.info.is_managed() && c.info.labels.contains_key(key))
            .map(|c| c.info.clone())
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        settle(after, Ok(found))
    }

    async fn list_managed(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let after = self.enter(FakeOp::ListManaged, "").await?;
        let state = self.state();
        let mut managed: Vec<ContainerInfo> = state
            .containers
            .values()
            .filter(|c| c.info.labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY))
            .map(|c| c.info.clone())
            .collect();
        managed.sort_by(|a, b| a.name.cmp(&b.name));
        settle(after, Ok(managed))
    }

    async fn exec(
        &self,
        id: &str,
        _command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError> {
        let after = self.enter(FakeOp::Exec, id).await?;
        let (exec_id, answer) = {
            let mut state = self.state();
            let id = state.existing(id)?;
            let info = &state.containers[&id].info;
            let game = info.game().unwrap_or_default().to_owned();
            // Docker's refusals (409) for a container without a process
            // to join, or a frozen one.
            let refusal = match info.state {
                ContainerState::Running => None,
                ContainerState::Paused => Some(format!(
                    "Container {id} is paused, unpause the container before exec"
                )),
                _ => Some(format!("Container {id} is not running")),
            };
            *state.exec_counts.entry(game.clone()).or_default() += 1;
            if let Some(message) = refusal {
                return Err(RuntimeError::Conflict { message });
            }
            let answer = state.exec_answers.get(&game).cloned().unwrap_or_default();
            let exec_id = format!("{EXEC_ID_PREFIX}{}", state.next_exec);
            state.next_exec += 1;
            if answer == FakeExec::Hang {
                state.running_execs.insert(exec_id.clone(), id);
            }
            (exec_id, answer)
        };
        let outcome = match answer {
            FakeExec::Exit { code, output } => Ok(ExecOutcome {
                exec_id,
                exit_code: Some(code),
                output: cut_at_char_boundary(&output, EXEC_OUTPUT_LIMIT).to_owned(),
            }),
            FakeExec::Hang => {
                // Docker's exec call gives up at its timeout.
                tokio::time::sleep(timeout).await;
                Ok(ExecOutcome {
                    exec_id,
                    exit_code: None,
                    output: String::new(),
                })
            }
            FakeExec::Fail(err) => Err(err),
        };
        settle(after, outcome)
    }

    async fn last_output(&self, id: &str, max_bytes: usize) -> Result<String, RuntimeError> {
        let after = self.enter(FakeOp::Logs, id).await?;
        let output = {
            let state = self.state();
            let id = state.existing(id)?;
            let output = &state.containers[&id].output;
            let mut start = output.len().saturating_sub(2 * max_bytes);
            while !output.is_char_boundary(start) {
                start += 1;
            }
            output[start..].to_owned()
        };
        settle(after, Ok(output))
    }

    async fn exec_running(&self, exec_id: &str) -> Result<bool, RuntimeError> {
        let after = self.enter(FakeOp::Exec, exec_id).await?;
        let running = self.state().running_execs.contains_key(exec_id);
        settle(after, Ok(running))
    }

    async fn inspect_volume(&self, name: &str) -> Result<Option<VolumeInfo>, RuntimeError> {
        let after = self.enter(FakeOp::Volume, name).await?;
        let state = self.state();
        let found = state.volumes.get(name).map(|labels| VolumeInfo {
            name: name.to_owned(),
            labels: labels.clone(),
        });
        settle(after, Ok(found))
    }

    async fn create_volume(&self, spec: &VolumeSpec) -> Result<VolumeInfo, RuntimeError> {
        let after = self.enter(FakeOp::Volume, &spec.name).await?;
        let mut state = self.state();
        // Docker answers an existing volume as it is, labels unchanged.
        let labels = state
            .volumes
            .entry(spec.name.clone())
            .or_insert_with(|| spec.labels.clone())
            .clone();
        settle(
            after,
            Ok(VolumeInfo {
                name: spec.name.clone(),
                labels,
            }),
        )
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let after = self.enter(FakeOp::Volume, name).await?;
        let mut state = self.state();
        if !state.volumes.contains_key(name) {
            return Err(RuntimeError::NotFound {
                what: format!("get {name}: no such volume"),
            });
        }
        // Docker refuses while any container, running or not, mounts it.
        let users: Vec<String> = state
            .containers
            .values()
            .filter(|c| {
                c.spec.mounts.iter().any(
                    |m| matches!(&m.source, MountSource::Volume { name: used, .. } if used == name),
                )
            })
            .map(|c| c.info.id.clone())
            .collect();
        if !users.is_empty() {
            return Err(RuntimeError::Conflict {
                message: format!("remove {name}: volume is in use - [{}]", users.join(", ")),
            });
        }
        state.volumes.remove(name);
        settle(after, Ok(()))
    }

    async fn list_volumes(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<VolumeInfo>, RuntimeError> {
        let after = self.enter(FakeOp::Volume, "").await?;
        let state = self.state();
        let found = state
            .volumes
            .iter()
            .filter(|(_, have)| labels.iter().all(|(k, v)| have.get(k) == Some(v)))
            .map(|(name, have)| VolumeInfo {
                name: name.clone(),
                labels: have.clone(),
            })
            .collect();
        settle(after, Ok(found))
    }

    fn events(&self) -> BoxStream<'static, Result<ContainerEvent, RuntimeError>> {
        // Synchronous like Docker's subscribe: events after this call are
        // seen. Latency does not apply; scripted failures and `down` do.
        let mut state = self.state();
        state.calls.push(FakeCall {
            op: FakeOp::Events,
            target: String::new(),
            signal: None,
            at: tokio::time::Instant::now(),
        });
        if let Some((_, err)) = state
            .failures
            .get_mut(&FakeOp::Events)
            .and_then(VecDeque::pop_front)
        {
            return stream::iter([Err(err)]).boxed();
        }
        if state.down {
            return stream::iter([Err(unreachable())]).boxed();
        }
        let receiver = state.events.subscribe();
        stream::unfold(receiver, |mut receiver| async move {
            match receiver.recv().await {
                Ok(event) => Some((Ok(event), receiver)),
                // Closed: the daemon restarted. Lagged: Docker drops slow
                // subscribers; either way the stream ends and the caller
                // re-opens it and relists.
                Err(
                    broadcast::error::RecvError::Closed | broadcast::error::RecvError::Lagged(_),
                ) => None,
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name the default installation gives `game`'s container.
    fn name(game: &str) -> String {
        crate::runtime::container_name(rtm_core::store::keys::DEFAULT_PREFIX, game)
    }
    use crate::runtime::{LABEL_GAME, PortBinding};

    const IMAGE: &str = "engine:1";

    fn fake() -> FakeRuntime {
        let fake = FakeRuntime::new();
        fake.add_image(IMAGE);
        fake
    }

    async fn running(fake: &FakeRuntime, game: &str) -> String {
        let id = fake.create(&ContainerSpec::new(game, IMAGE)).await.unwrap();
        fake.start(&id).await.unwrap();
        id
    }

    async fn next_actions(
        events: &mut BoxStream<'static, Result<ContainerEvent, RuntimeError>>,
        n: usize,
    ) -> Vec<String> {
        let mut actions = Vec::new();
        for _ in 0..n {
            let event = tokio::time::timeout(Duration::from_secs(1), events.next())
                .await
                .expect("an event the fake should have sent is missing")
                .expect("stream ended early")
                .unwrap();
            actions.push(event.action);
        }
        actions
    }

    #[tokio::test]
    async fn create_and_start_make_a_running_labelled_container() {
        let fake = fake();
        let id = running(&fake, "g1").await;
        let info = fake.inspect_container(&name("g1")).await.unwrap().unwrap();
        assert_eq!(info.id, id);
        assert!(info.is_running());
        assert!(info.is_managed());
        assert_eq!(info.game(), Some("g1"));
        assert_eq!(info.hostname, "g1");
        assert_eq!(
            info.image_id,
            fake.inspect_image(IMAGE).await.unwrap().unwrap().id
        );
        assert!(info.started_at.is_some());
        assert_eq!(
            fake.inspect_container(&id[..12]).await.unwrap().unwrap().id,
            id
        );
    }

    #[tokio::test]
    async fn names_are_unique_and_images_must_exist() {
        let fake = fake();
        fake.create(&ContainerSpec::new("g1", IMAGE)).await.unwrap();
        assert_eq!(
            fake.create(&ContainerSpec::new("g1", IMAGE)).await,
            Err(RuntimeError::NameConflict { name: name("g1") })
        );
        assert_eq!(
            fake.create(&ContainerSpec::new("g2", "engine:9")).await,
            Err(RuntimeError::ImageNotFound {
                image: "engine:9".into()
            })
        );
        assert_eq!(fake.inspect_image("engine:9").await, Ok(None));
    }

    #[tokio::test]
    async fn no_ops_succeed_like_dockers_304_and_missing_targets_are_not_found() {
        let fake = fake();
        let id = running(&fake, "g1").await;
        fake.start(&id).await.unwrap();
        fake.stop(&id, Duration::from_secs(1)).await.unwrap();
        fake.stop(&id, Duration::from_secs(1)).await.unwrap();
        fake.kill(&id).await.unwrap();
        let info = fake.container(&id).unwrap();
        assert_eq!(info.state, ContainerState::Exited);
        assert_eq!(info.exit_code, Some(0));

        assert_eq!(fake.inspect_container("rtm-nope").await, Ok(None));
        assert!(
            fake.remove("rtm-nope", true)
                .await
                .unwrap_err()
                .is_not_found()
        );
        assert!(
            fake.stop("rtm-nope", Duration::ZERO)
                .await
                .unwrap_err()
                .is_not_found()
        );
        assert!(fake.start("rtm-nope").await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn removing_a_running_container_needs_force() {
        let fake = fake();
        let id = running(&fake, "g1").await;
        assert!(matches!(
            fake.remove(&id, false).await,
            Err(RuntimeError::Conflict { .. })
        ));
        fake.remove(&id, true).await.unwrap();
        assert_eq!(fake.inspect_container(&id).await, Ok(None));
    }

    #[tokio::test]
    async fn a_taken_host_port_fails_the_second_start() {
        let fake = fake();
        let mut spec = ContainerSpec::new("g1", IMAGE);
        spec.ports = vec![PortBinding {
            container_port: 7000,
            host_port: Some(17000),
            protocol: PortProtocol::Tcp,
            host_ip: None,
        }];
        let first = fake.create(&spec).await.unwrap();
        fake.start(&first).await.unwrap();
        spec.name = name("g2");
        spec.game = "g2".into();
        let second = fake.create(&spec).await.unwrap();
        let err = fake.start(&second).await.unwrap_err();
        assert!(matches!(err, RuntimeError::PortAllocated { .. }), "{err:?}");
        assert_eq!(
            fake.container(&second).unwrap().state,
            ContainerState::Created
        );

        fake.stop(&first, Duration::ZERO).await.unwrap();
        fake.start(&second).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_engine_ignoring_sigterm_is_killed_after_the_timeout() {
        let fake = fake();
        let id = running(&fake, "g1").await;
        fake.ignore_sigterm(&id).unwrap();
        let started = tokio::time::Instant::now();
        fake.stop(&id, Duration::from_secs(30)).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(fake.container(&id).unwrap().exit_code, Some(137));
    }

    #[tokio::test]
    async fn scripted_failures_strike_in_order_and_are_logged() {
        let fake = fake();
        let id = running(&fake, "g1").await;
        fake.fail_next(
            FakeOp::Stop,
            RuntimeError::Unreachable {
                message: "down".into(),
            },
        );
        fake.fail_next(
            FakeOp::Stop,
            RuntimeError::Rejected {
                status: 500,
                message: "x".into(),
            },
        );
        assert!(matches!(
            fake.stop(&id, Duration::ZERO).await,
            Err(RuntimeError::Unreachable { .. })
        ));
        assert!(matches!(
            fake.stop(&id, Duration::ZERO).await,
            Err(RuntimeError::Rejected { status: 500, .. })
        ));
        assert!(
            fake.container(&id).unwrap().is_running(),
            "failed stops did nothing"
        );
        fake.stop(&id, Duration::ZERO).await.unwrap();
        assert!(!fake.container(&id).unwrap().is_running());
        assert_eq!(fake.count(FakeOp::Stop), 3);
        let log: Vec<String> = fake.calls().iter().map(ToString::to_string).collect();
        assert_eq!(log[0], format!("create {}", name("g1")));
        assert_eq!(log[1], format!("start {id}"));
    }

    #[tokio::test]
    async fn a_timeout_after_applying_leaves_the_operation_done() {
        let fake = fake();
        let id = running(&fake, "g1").await;
        fake.fail_next_after_applying(
            FakeOp::Stop,
            RuntimeError::Timeout {
                operation: "stop".into(),
            },
        );
        let err = fake.stop(&id, Duration::ZERO).await.unwrap_err();
        assert!(err.outcome_unknown());
        assert!(
            !fake.container(&id).unwrap().is_running(),
            "the stop happened anyway"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn latency_delays_every_call() {
        let fake = fake().with_latency(Duration::from_millis(250));
        let started = tokio::time::Instant::now();
        fake.ping().await.unwrap();
        fake.list_managed().await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test]
    async fn list_managed_skips_foreign_containers() {
        let fake = fake();
        running(&fake, "g2").await;
        running(&fake, "g1").await;
        // A foreign container: effective_labels forces ours, so plant one.
        let foreign = fake
            .create(&ContainerSpec::new("other", IMAGE))
            .await
            .unwrap();
        fake.state()
            .containers
            .get_mut(&foreign)
            .unwrap()
            .info
            .labels
            .remove(LABEL_MANAGED_BY);
        let names: Vec<String> = fake
            .list_managed()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, [name("g1"), name("g2")]);
        assert_eq!(fake.containers().len(), 3);
    }

    #[tokio::test]
    async fn events_follow_dockers_order_for_stop_crash_and_removal() {
        let fake = fake();
        let mut events = fake.events();
        let id = running(&fake, "g1").await;
        assert_eq!(next_actions(&mut events, 2).await, ["create", "start"]);
        fake.stop(&id, Duration::ZERO).await.unwrap();
        assert_eq!(next_actions(&mut events, 3).await, ["kill", "die", "stop"]);
        fake.start(&id).await.unwrap();
        fake.exit_container(&id, 3).unwrap();
        assert_eq!(next_actions(&mut events, 2).await, ["start", "die"]);
        assert_eq!(fake.container(&id).unwrap().exit_code, Some(3));
        fake.start(&id).await.unwrap();
        fake.oom_kill(&id).unwrap();
        assert_eq!(next_actions(&mut events, 3).await, ["start", "oom", "die"]);
        assert!(fake.container(&id).unwrap().oom_killed);
        fake.remove_by_hand(&id).unwrap();
        assert_eq!(next_actions(&mut events, 1).await, ["destroy"]);
        assert_eq!(fake.container(&id), None);
    }

    #[tokio::test]
    async fn events_carry_the_game_label() {
        let fake = fake();
        let mut events = fake.events();
        let id = fake.create(&ContainerSpec::new("g7", IMAGE)).await.unwrap();
        let event = events.next().await.unwrap().unwrap();
        assert_eq!(
            event,
            ContainerEvent {
                container_id: id,
                game: Some("g7".into()),
                action: "create".into()
            }
        );
        assert_eq!(
            fake.container(&name("g7")).unwrap().labels[LABEL_GAME],
            "g7"
        );
    }

    fn cmd() -> Vec<String> {
        vec!["/bin/check".to_owned()]
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn a_running_container_has_an_address_and_its_published_ports_until_it_stops() {
        let fake = fake();
        let mut spec = ContainerSpec::new("g1", IMAGE);
        spec.ports = vec![
            PortBinding {
                container_port: 7001,
                host_port: Some(17001),
                protocol: PortProtocol::Udp,
                host_ip: Some("127.0.0.1".into()),
            },
            PortBinding {
                container_port: 7000,
                host_port: Some(17000),
                protocol: PortProtocol::Tcp,
                host_ip: None,
            },
            PortBinding {
                container_port: 8080,
                host_port: None,
                protocol: PortProtocol::Tcp,
                host_ip: None,
            },
        ];
        let id = fake.create(&spec).await.unwrap();
        let created = fake.container(&id).unwrap();
        assert_eq!((created.address, created.ports.len()), (None, 0));

        fake.start(&id).await.unwrap();
        let info = fake.inspect_container(&id).await.unwrap().unwrap();
        assert_eq!(info.address, Some("10.88.0.1".parse().unwrap()));
        assert_eq!(
            info.ports,
            [
                PublishedPort {
                    container_port: 7000,
                    protocol: Protocol::Tcp,
                    host_ip: None,
                    host_port: 17000
                },
                PublishedPort {
                    container_port: 7001,
                    protocol: Protocol::Udp,
                    host_ip: Some("127.0.0.1".into()),
                    host_port: 17001
                },
            ]
        );
        let other = running(&fake, "g2").await;
        assert_eq!(
            fake.container(&other).unwrap().address,
            Some("10.88.0.2".parse().unwrap()),
            "each container has its own address"
        );

        fake.stop(&id, Duration::ZERO).await.unwrap();
        let stopped = fake.container(&id).unwrap();
        assert_eq!((stopped.address, stopped.ports.len()), (None, 0));
        fake.start(&id).await.unwrap();
        assert_eq!(
            fake.container(&id).unwrap().address,
            info.address,
            "the same container gets its address back"
        );
    }

    #[test]
    fn fake_addresses_stay_in_10_88_and_wrap_after_65534_containers() {
        assert_eq!(address_of(1), "10.88.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(address_of(256), "10.88.1.0".parse::<IpAddr>().unwrap());
        assert_eq!(
            address_of(65_534),
            "10.88.255.254".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            address_of(65_535),
            address_of(1),
            "the scale benchmark wraps"
        );
        assert_eq!(address_of(0), address_of(1));
    }

    #[tokio::test]
    async fn docker_health_is_what_the_test_sets() {
        let fake = fake();
        let id = running(&fake, "g1").await;
        assert_eq!(
            fake.container(&id).unwrap().health,
            None,
            "no HEALTHCHECK by default"
        );
        let unhealthy = DockerHealth {
            status: crate::runtime::DockerHealthStatus::Unhealthy,
            failing_streak: 3,
            last_output: Some("no marker".into()),
            last_exit_code: Some(1),
        };
        fake.set_docker_health(&name("g1"), Some(unhealthy.clone()))
            .unwrap();
        assert_eq!(
            fake.inspect_container(&id).await.unwrap().unwrap().health,
            Some(unhealthy)
        );
        fake.set_docker_health(&id, None).unwrap();
        assert_eq!(fake.container(&id).unwrap().health, None);
        assert!(
            fake.set_docker_health("rtm-nope", None)
                .unwrap_err()
                .is_not_found()
        );
    }

    #[tokio::test]
    async fn exec_answers_exit_zero_by_default_and_what_the_game_is_scripted_to() {
        let fake = fake();
        let id = running(&fake, "g1").await;
        let other = running(&fake, "g2").await;
        let outcome = fake.exec(&id, &cmd(), SECOND).await.unwrap();
        assert_eq!((outcome.exit_code, outcome.output.as_str()), (Some(0), ""));
        assert!(!fake.exec_running(&outcome.exec_id).await.unwrap());

        fake.set_exec(
            "g1",
            FakeExec::Exit {
                code: 3,
                output: "é".repeat(3000),
            },
        );
        let failed = fake.exec(&id, &cmd(), SECOND).await.unwrap();
        assert_eq!(failed.exit_code, Some(3));
        assert_eq!(failed.output, "é".repeat(2048), "cut to 4 KiB");
        assert_ne!(failed.exec_id, outcome.exec_id);
        assert_eq!(
            fake.exec(&other, &cmd(), SECOND).await.unwrap().exit_code,
            Some(0),
            "another game's script does not apply"
        );

        let refused = RuntimeError::Unreachable {
            message: "gone".into(),
        };
        fake.set_exec("g1", FakeExec::Fail(refused.clone()));
        assert_eq!(fake.exec(&id, &cmd(), SECOND).await, Err(refused.clone()));
        assert_eq!(
            fake.exec(&id, &cmd(), SECOND).await,
            Err(refused),
            "until set again"
        );
        assert_eq!((fake.exec_count("g1"), fake.exec_count("g2")), (4, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_exec_returns_at_its_timeout_and_runs_until_released() {
        let fake = fake();
        let id = running(&fake, "g1").await;
        fake.set_exec("g1", FakeExec::Hang);
        let started = tokio::time::Instant::now();
        let hung = fake
            .exec(&id, &cmd(), Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(hung.exit_code, None);
        assert!(fake.exec_running(&hung.exec_id).await.unwrap());
        fake.release_execs("g2");
        assert!(
            fake.exec_running(&hung.exec_id).await.unwrap(),
            "another game's release"
        );
        fake.release_execs("g1");
        assert!(!fake.exec_running(&hung.exec_id).await.unwrap());
        assert!(
            !fake.exec_running("exec-999").await.unwrap(),
            "an unknown exec"
        );
    }

    #[tokio::test]
    async fn a_hung_exec_ends_with_its_container() {
        let fake = fake();
        let id = running(&fake, "g1").await;
        fake.set_exec("g1", FakeExec::Hang);
        let hung = fake.exec(&id, &cmd(), Duration::ZERO).await.unwrap();
        assert!(fake.exec_running(&hung.exec_id).await.unwrap());
        fake.kill(&id).await.unwrap();
        assert!(!fake.exec_running(&hung.exec_id).await.unwrap());

        fake.start(&id).await.unwrap();
        let hung = fake.exec(&id, &cmd(), Duration::ZERO).await.unwrap();
        fake.remove(&id, true).await.unwrap();
        assert!(!fake.exec_running(&hung.exec_id).await.unwrap());
    }

    #[tokio::test]
    async fn exec_needs_a_running_container_and_is_logged_like_every_call() {
        let fake = fake();
        let id = fake.create(&ContainerSpec::new("g1", IMAGE)).await.unwrap();
        let err = fake.exec(&id, &cmd(), SECOND).await.unwrap_err();
        assert!(
            matches!(&err, RuntimeError::Conflict { message } if message.contains("is not running")),
            "{err:?}"
        );
        fake.start(&id).await.unwrap();
        fake.state().containers.get_mut(&id).unwrap().info.state = ContainerState::Paused;
        let err = fake.exec(&id, &cmd(), SECOND).await.unwrap_err();
        assert!(
            matches!(&err, RuntimeError::Conflict { message } if message.contains("paused")),
            "{err:?}"
        );
        assert!(
            fake.exec("rtm-nope", &cmd(), SECOND)
                .await
                .unwrap_err()
                .is_not_found()
        );

        fake.unpause(&id).await.unwrap();
        fake.fail_next(
            FakeOp::Exec,
            RuntimeError::Timeout {
                operation: "exec".into(),
            },
        );
        assert!(
            fake.exec(&id, &cmd(), SECOND)
                .await
                .unwrap_err()
                .outcome_unknown()
        );
        let done = fake.exec(&id, &cmd(), SECOND).await.unwrap();
        fake.exec_running(&done.exec_id).await.unwrap();
        let execs: Vec<String> = fake
            .calls()
            .iter()
            .filter(|c| c.op == FakeOp::Exec)
            .map(|c| c.target.clone())
            .collect();
        assert_eq!(
            execs,
            [
                id.clone(),
                id.clone(),
                "rtm-nope".into(),
                id.clone(),
                id,
                done.exec_id
            ]
        );
        assert_eq!(
            fake.exec_count("g1"),
            3,
            "the scripted failure struck before the container"
        );
    }

    #[tokio::test]
    async fn a_daemon_going_down_ends_event_streams_and_fails_calls() {
        let fake = fake();
        let id = running(&fake, "g1").await;
        let mut events = fake.events();
        fake.set_down(true);
        let end = tokio::time::timeout(Duration::from_secs(1), events.next())
            .await
            .expect("set_down must end open event streams");
        assert!(end.is_none());
        assert!(matches!(
            fake.ping().await,
            Err(RuntimeError::Unreachable { .. })
        ));
        assert!(matches!(
            fake.events().next().await,
            Some(Err(RuntimeError::Unreachable { .. }))
        ));
        fake.set_down(false);
        assert!(
            fake.inspect_container(&id)
                .await
                .unwrap()
                .unwrap()
                .is_running()
        );
    }
}
