//! `DockerRuntime`: the `ContainerRuntime` over the Docker Engine API through
//! bollard — the only file in the crate that imports bollard, and the one
//! place where Docker's answers become our outcomes (404 → absent or
//! `NotFound`, 304 → already so, 409 → conflict, I/O → `Unreachable`, client
//! timeout → `Timeout`).
//!
//! Facts about bollard 0.21.1 and Docker 20.10 this file relies on:
//!
//! - bollard checks that a unix socket file exists when the client is built,
//!   so the client is built lazily: the controller can start before dockerd
//!   and ride out its restarts; calls fail with `Unreachable` meanwhile.
//! - bollard's timeout is whole seconds (`Duration::as_secs`, so 500 ms
//!   would be 0 s) and covers only the wait for response headers. We bound
//!   every call with `tokio::time::timeout` ourselves and keep bollard's as a
//!   backstop one second longer.
//! - A timed-out call is not cancelled in the daemon: `Timeout` means the
//!   outcome is unknown.
//! - bollard sends unversioned request paths, so the daemon answers in its
//!   own default API version (1.41 on Debian's 20.10); we still start from a
//!   1.41 ceiling and negotiate down, so a later bollard that versions its
//!   paths cannot speak above what these machines understand.
//! - Docker 20.10 creates a second network of the same name when asked
//!   (`CheckDuplicate` defaults to false and bollard 0.21 cannot send it):
//!   containers join a network by its id, the smallest among those of the
//!   name, and the others are removed, so two controllers racing to create it
//!   converge on one.
//! - The stop API takes a signal only from API 1.42 on (1.41 ignores the
//!   parameter): a stop with a signal of its own is a kill with that signal,
//!   a wait for the exit and a SIGKILL, as Docker's stop does inside.
//! - Docker cannot kill an exec: one that outlives its timeout runs on, and
//!   `exec` returns without its exit code (`exec_running` tells when it ends).
//!   A container stopped or paused refuses `create_exec` with 409.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, EventMessage,
    EventMessageTypeEnum, ExecConfig, Health, HealthStatusEnum, HostConfig, HostConfigLogConfig,
    Mount as DockerMount, MountType, MountVolumeOptions, NetworkCreateRequest,
    PortBinding as DockerPortBinding, PortMap, RestartPolicy, RestartPolicyNameEnum,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, InspectContainerOptions, KillContainerOptions,
    ListContainersOptions, ListNetworksOptions, ListVolumesOptions, LogsOptions,
    RemoveContainerOptions, RemoveVolumeOptions, RenameContainerOptions, StartContainerOptions,
    StopContainerOptions, WaitContainerOptions,
};
use bollard::{ClientVersion, Docker};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use rtm_core::failure::error_chain;
use tokio::sync::OnceCell;

use rtm_core::model::{Protocol, PublishedPort};

use super::{
    ContainerEvent, ContainerInfo, ContainerRuntime, ContainerSpec, ContainerState, DockerHealth,
    DockerHealthStatus, EXEC_OUTPUT_LIMIT, ExecOutcome, HEALTH_OUTPUT_LIMIT, HostResources,
    ImageInfo, LABEL_GAME, LABEL_MANAGED_BY, MANAGED_BY, Mount, MountSource, NetworkSpec,
    RegistryCredentials, RuntimeError, RuntimeOp, VolumeInfo, VolumeSpec, cut_at_char_boundary,
};

mod pull;

/// Where Docker listens when neither the caller nor `DOCKER_HOST` says.
const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// The highest API version we ever speak: Debian's Docker 20.10.
const MAX_API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// How much longer than the stop timeout a stop call may take: Docker waits
/// the timeout, sends SIGKILL, then waits for the exit and the cleanup
/// (unmounts, network teardown), which takes seconds on a loaded host.
const STOP_MARGIN: Duration = Duration::from_secs(15);

/// How far back an event stream starts (see `events_since`).
const EVENTS_SLACK: Duration = Duration::from_secs(1);

/// The bridge option that stops containers on one network from reaching
/// each other (iptables drops bridge-to-bridge traffic).
const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";

/// Docker's predefined networks, used by name and never created.
const PREDEFINED_NETWORKS: [&str; 3] = ["bridge", "host", "none"];

/// Containers inspected at once by `list_managed`: enough to hide the
/// per-request latency, few enough not to crowd out the lifecycle calls.
const LIST_INSPECT_CONCURRENCY: usize = 8;

/// How often `exec` asks whether an exec whose output ended has exited:
/// Docker flips `Running` a few milliseconds after the stream closes, so the
/// first poll nearly always answers and a short period costs little.
const EXEC_POLL: Duration = Duration::from_millis(25);

/// The `ContainerRuntime` over a Docker daemon. Cheap to clone: clones share
/// one client.
#[derive(Clone)]
pub struct DockerRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    request_timeout: Duration,
    /// Built and version-negotiated on first use; retried while it fails.
    client: OnceCell<Docker>,
    /// Network name → the id containers join, once made sure of. The lock
    /// also keeps this process from creating one network twice at once.
    networks: tokio::sync::Mutex<HashMap<String, String>>,
    /// The host's CPUs and memory, asked once.
    host: OnceCell<HostResources>,
}

impl fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("endpoint", &self.inner.endpoint)
            .field("request_timeout", &self.inner.request_timeout)
            .field("connected", &self.inner.client.initialized())
            .finish()
    }
}

/// A parsed `DOCKER_HOST`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    /// The socket path.
    Unix(String),
    /// `host:port`.
    Http(String),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix://{path}"),
            Endpoint::Http(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

/// Parses `unix:///path`, `tcp://host:port` or `http://host:port`. TLS and
/// ssh are not built in.
fn parse_host(host: &str) -> Result<Endpoint, RuntimeError> {
    let unsupported = || RuntimeError::Unreachable {
        message: format!(
            "DOCKER_HOST {host:?} is not supported: use unix:///path, tcp://host:port or http://host:port"
        ),
    };
    if let Some(path) = host.strip_prefix("unix://") {
        if path.is_empty() {
            return Err(unsupported());
        }
        return Ok(Endpoint::Unix(path.to_owned()));
    }
    let addr = host
        .strip_prefix("tcp://")
        .or_else(|| host.strip_prefix("http://"))
        .ok_or_else(unsupported)?;
    let addr = addr.trim_end_matches('/');
    if addr.is_empty() {
        return Err(unsupported());
    }
    Ok(Endpoint::Http(addr.to_owned()))
}

/// bollard's timeout is whole seconds; round up and add one so ours (exact)
/// always fires first.
fn backstop_secs(timeout: Duration) -> u64 {
    timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0) + 1
}

/// Docker's `t`: whole seconds, rounded up so a 1.5 s timeout never becomes 1 s.
fn stop_seconds(timeout: Duration) -> i32 {
    let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

impl DockerRuntime {
    /// A runtime for `docker_host`, else `DOCKER_HOST`, else the default unix
    /// socket. Every call but the stops is bounded by `request_timeout`; a
    /// stop by its own timeout plus a margin.
    ///
    /// Connects lazily: it tries once to reach the daemon and negotiate the
    /// API version, and if the daemon is down it still returns the runtime
    /// (calls fail with `Unreachable` until it is back). Fails only when the
    /// host string is unusable.
    pub async fn connect(
        docker_host: Option<&str>,
        request_timeout: Duration,
    ) -> Result<DockerRuntime, RuntimeError> {
        let from_env = std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty());
        let host = docker_host
            .map(str::to_owned)
            .or(from_env)
            .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_owned());
        let runtime = DockerRuntime {
            inner: Arc::new(Inner {
                endpoint: parse_host(&host)?,
                request_timeout,
                client: OnceCell::new(),
                networks: tokio::sync::Mutex::new(HashMap::new()),
                host: OnceCell::new(),
            }),
        };
        match runtime.client().await {
            Ok(_) => tracing::debug!(endpoint = %runtime.inner.endpoint, "connected to Docker"),
            Err(err) => tracing::warn!(
                endpoint = %runtime.inner.endpoint,
                error = %err,
                "Docker is not reachable yet; will retry on each call"
            ),
        }
        Ok(runtime)
    }

    /// The API version spoken with the daemon, e.g. `1.41` (never above it).
    pub async fn api_version(&self) -> Result<String, RuntimeError> {
        let version = self.client().await?.client_version();
        Ok(format!(
            "{}.{}",
            version.major_version, version.minor_version
        ))
    }

    /// The client, built and version-negotiated on first success.
    async fn client(&self) -> Result<Docker, RuntimeError> {
        let inner = &self.inner;
        inner
            .client
            .get_or_try_init(|| async {
                let secs = backstop_secs(inner.request_timeout);
                let built = match &inner.endpoint {
                    Endpoint::Unix(path) => Docker::connect_with_unix(path, secs, &MAX_API_VERSION),
                    Endpoint::Http(addr) => Docker::connect_with_http(addr, secs, &MAX_API_VERSION),
                };
                let docker = built.map_err(|err| match classify(&Call::Connect, err) {
                    Outcome::Failed(err) => err,
                    other => RuntimeError::Rejected {
                        status: 0,
                        message: format!("unexpected answer while connecting: {other:?}"),
                    },
                })?;
                negotiate(docker, inner.request_timeout).await
            })
            .await
            .cloned()
    }

    /// Runs one bollard call under `deadline`, mapping its failure.
    async fn send<T>(
        &self,
        call: &Call<'_>,
        deadline: Duration,
        request: impl Future<Output = Result<T, DockerError>>,
    ) -> Result<T, Outcome> {
        match tokio::time::timeout(deadline, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(classify(call, err)),
            Err(_elapsed) => Err(Outcome::Failed(RuntimeError::Timeout {
                operation: call.to_string(),
            })),
        }
    }

    /// Waits until the container is not running, or `deadline`: `true` when
    /// it exited. Docker answers the wait's headers at once and its body at
    /// the exit (or at once when it is not running), so bollard's timeout,
    /// which covers the headers, does not cut it short.
    async fn wait_for_exit(
        &self,
        docker: &Docker,
        id: &str,
        deadline: tokio::time::Instant,
    ) -> Result<bool, RuntimeError> {
        let call = Call::Wait { id };
        let options = WaitContainerOptions {
            condition: "not-running".to_owned(),
        };
        let mut waiting = docker.wait_container(id, Some(options));
        match tokio::time::timeout_at(deadline, waiting.next()).await {
            Err(_elapsed) => Ok(false),
            // bollard reports a non-zero exit code as an error: it exited.
            Ok(Some(Ok(_) | Err(DockerError::DockerContainerWaitError { .. }))) => Ok(true),
            Ok(Some(Err(err))) => match classify(&call, err) {
                Outcome::Failed(err) => Err(err),
                other => Err(unexpected(&call, &other)),
            },
            // The answer ended without a word: the connection broke.
            Ok(None) => Err(RuntimeError::Unreachable {
                message: format!("{call}: the answer ended early"),
            }),
        }
    }

    /// A call that answers nothing: "already so" is success.
    async fn send_unit(
        &self,
        call: &Call<'_>,
        deadline: Duration,
        request: impl Future<Output = Result<(), DockerError>>,
    ) -> Result<(), RuntimeError> {
        match self.send(call, deadline, request).await {
            Ok(()) | Err(Outcome::AlreadySo) => Ok(()),
            Err(Outcome::Absent) => Err(RuntimeError::NotFound {
                what: call.to_string(),
            }),
            Err(Outcome::Failed(err)) => Err(err),
        }
    }

    /// Every managed container matching `filters` (Docker's label
    /// filters are ANDed), inspected, sorted by name.
    async fn list(
        &self,
        filters: HashMap<String, Vec<String>>,
    ) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let docker = self.client().await?;
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..ListContainersOptions::default()
        };
        let summaries = match self
            .send(
                &Call::ListManaged,
                self.inner.request_timeout,
                docker.list_containers(Some(options)),
            )
            .await
        {
            Ok(summaries) => summaries,
            Err(Outcome::Failed(err)) => return Err(err),
            Err(_) => Vec::new(),
        };
        // The summary lacks exit code, hostname and times: inspect each. A
        // container removed between the list and its inspect is skipped.
        let ids: Vec<String> = summaries.into_iter().filter_map(|s| s.id).collect();
        let mut containers: Vec<ContainerInfo> = stream::iter(ids)
            .map(|id| {
                let docker = docker.clone();
                async move { self.inspect(&docker, &id).await }
            })
            .buffer_unordered(LIST_INSPECT_CONCURRENCY)
            .try_filter_map(|info| async move { Ok(info) })
            .try_collect()
            .await?;
        containers.retain(ContainerInfo::is_managed);
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(containers)
    }

    /// The `NetworkMode` a container of `network` is created with: a
    /// predefined network's name, or the id of the user-defined network,
    /// created (isolated when asked) if there is none. Remembered after the
    /// first success; [`DockerRuntime::forget_network`] undoes that when the
    /// network vanished.
    async fn network_mode(
        &self,
        docker: &Docker,
        network: &NetworkSpec,
    ) -> Result<String, RuntimeError> {
        if PREDEFINED_NETWORKS.contains(&network.name.as_str()) {
            return Ok(network.name.clone());
        }
        let mut known = self.inner.networks.lock().await;
        if let Some(id) = known.get(&network.name) {
            return Ok(id.clone());
        }
        let mut found = self.networks_named(docker, &network.name).await?;
        if found.is_empty() {
            self.create_network(docker, network).await?;
            found = self.networks_named(docker, &network.name).await?;
        }
        let Some((id, options)) = found.first().cloned() else {
            return Err(RuntimeError::NotFound {
                what: format!(
                    "network {} vanished right after it was created",
                    network.name
                ),
            });
        };
        for (duplicate, _) in &found[1..] {
            // A twin made by a racing controller: nothing joined it (joins
            // go by the smallest id), so it goes; if it is in use, it stays.
            let removed = self
                .send(
                    &Call::Network {
                        name: &network.name,
                    },
                    self.inner.request_timeout,
                    docker.remove_network(duplicate),
                )
                .await;
            tracing::debug!(network = %network.name, %duplicate, ?removed, "removed a duplicate network");
        }
        if network.isolated && options.get(ICC_OPTION).map(String::as_str) != Some("false") {
            tracing::warn!(
                network = %network.name,
                "the network exists without {ICC_OPTION}=false: its containers can reach each \
                 other; remove it (docker network rm) to have rtmanager create it isolated"
            );
        }
        known.insert(network.name.clone(), id.clone());
        Ok(id)
    }

    /// Drops what [`DockerRuntime::network_mode`] remembered about `name`.
    async fn forget_network(&self, name: &str) {
        self.inner.networks.lock().await.remove(name);
    }

    /// The networks called exactly `name` (Docker's filter also matches
    /// parts of names), with their options, smallest id first.
    async fn networks_named(
        &self,
        docker: &Docker,
        name: &str,
    ) -> Result<Vec<(String, HashMap<String, String>)>, RuntimeError> {
        let options = ListNetworksOptions {
            filters: Some(HashMap::from([("name".to_owned(), vec![name.to_owned()])])),
        };
        let listed = self
            .send(
                &Call::Network { name },
                self.inner.request_timeout,
                docker.list_networks(Some(options)),
            )
            .await;
        let networks = match listed {
            Ok(networks) => networks,
            Err(Outcome::Failed(err)) => return Err(err),
            Err(_) => Vec::new(),
        };
        let mut named: Vec<(String, HashMap<String, String>)> = networks
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .filter_map(|n| Some((n.id?, n.options.unwrap_or_default())))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(named)
    }

    async fn create_network(
        &self,
        docker: &Docker,
        network: &NetworkSpec,
    ) -> Result<(), RuntimeError> {
        let mut options = HashMap::new();
        if network.isolated {
            options.insert(ICC_OPTION.to_owned(), "false".to_owned());
        }
        let mut labels: HashMap<String, String> = network.labels.clone().into_iter().collect();
        labels.insert(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned());
        let request = NetworkCreateRequest {
            name: network.name.clone(),
            driver: Some("bridge".to_owned()),
            options: Some(options),
            labels: Some(labels),
            ..NetworkCreateRequest::default()
        };
        let call = Call::Network {
            name: &network.name,
        };
        match self
            .send(
                &call,
                self.inner.request_timeout,
                docker.create_network(request),
            )
            .await
        {
            Ok(created) => {
                tracing::info!(network = %network.name, id = %created.id, isolated = network.isolated, "created the games' network");
                Ok(())
            }
            // Made by someone else meanwhile (a daemon that checks names).
            Err(Outcome::AlreadySo) | Err(Outcome::Failed(RuntimeError::Conflict { .. })) => Ok(()),
            Err(Outcome::Failed(err)) => Err(err),
            Err(Outcome::Absent) => Err(RuntimeError::NotFound {
                what: call.to_string(),
            }),
        }
    }

    async fn inspect(
        &self,
        docker: &Docker,
        name_or_id: &str,
    ) -> Result<Option<ContainerInfo>, RuntimeError> {
        let call = Call::InspectContainer { name_or_id };
        let request = docker.inspect_container(name_or_id, None::<InspectContainerOptions>);
        match self.send(&call, self.inner.request_timeout, request).await {
            Ok(response) => Ok(Some(container_info(response))),
            Err(Outcome::Absent | Outcome::AlreadySo) => Ok(None),
            Err(Outcome::Failed(err)) => Err(err),
        }
    }
}

/// Asks the daemon's API version and lowers the client's to it. Only an
/// unreachable daemon fails the connection: an answer we cannot parse leaves
/// the 1.41 ceiling, which is harmless since bollard 0.21.1 sends
/// unversioned paths anyway.
async fn negotiate(docker: Docker, timeout: Duration) -> Result<Docker, RuntimeError> {
    let fallback = docker.clone();
    match tokio::time::timeout(timeout, docker.negotiate_version()).await {
        Ok(Ok(docker)) => {
            let version = docker.client_version();
            tracing::debug!(
                api = %format!("{}.{}", version.major_version, version.minor_version),
                "negotiated Docker API version"
            );
            Ok(docker)
        }
        Ok(Err(err)) => match classify(&Call::Connect, err) {
            Outcome::Failed(
                err @ (RuntimeError::Unreachable { .. } | RuntimeError::Timeout { .. }),
            ) => Err(err),
            other => {
                tracing::warn!(answer = ?other, "could not negotiate the Docker API version; using 1.41");
                Ok(fallback)
            }
        },
        Err(_elapsed) => Err(RuntimeError::Timeout {
            operation: Call::Connect.to_string(),
        }),
    }
}

/// One Docker call and its subject: what the error mapping needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call<'a> {
    /// Building the client and negotiating the version.
    Connect,
    Ping,
    InspectImage {
        image: &'a str,
    },
    InspectContainer {
        name_or_id: &'a str,
    },
    Create {
        name: &'a str,
        image: &'a str,
    },
    Start {
        id: &'a str,
    },
    Stop {
        id: &'a str,
    },
    Kill {
        id: &'a str,
    },
    /// Waiting for a signalled container to exit (part of a stop).
    Wait {
        id: &'a str,
    },
    Remove {
        id: &'a str,
    },
    Unpause {
        id: &'a str,
    },
    Rename {
        id: &'a str,
        name: &'a str,
    },
    ListManaged,
    Events,
    /// Creating, starting and reading an exec in the container `id`.
    Exec {
        id: &'a str,
    },
    /// Asking whether an exec still runs.
    InspectExec {
        exec_id: &'a str,
    },
    /// Reading the end of a container's log.
    Logs {
        id: &'a str,
    },
    /// Listing, creating or removing the games' network (part of a create).
    Network {
        name: &'a str,
    },
    /// Reading one volume.
    InspectVolume {
        name: &'a str,
    },
    /// Creating, removing or listing volumes (`name` empty for a listing).
    Volume {
        name: &'a str,
    },
}

impl Call<'_> {
    fn op(&self) -> RuntimeOp {
        match self {
            Call::Connect | Call::Ping => RuntimeOp::Ping,
            Call::InspectImage { .. } => RuntimeOp::InspectImage,
            Call::InspectContainer { .. } => RuntimeOp::InspectContainer,
            Call::Create { .. } => RuntimeOp::Create,
            Call::Start { .. } => RuntimeOp::Start,
            Call::Stop { .. } => RuntimeOp::Stop,
            Call::Kill { .. } => RuntimeOp::Kill,
            Call::Wait { .. } => RuntimeOp::Stop,
            Call::Remove { .. } => RuntimeOp::Remove,
            Call::Unpause { .. } => RuntimeOp::Unpause,
            Call::Rename { .. } => RuntimeOp::Rename,
            Call::ListManaged => RuntimeOp::ListManaged,
            Call::Events => RuntimeOp::Events,
            Call::Exec { .. } | Call::InspectExec { .. } => RuntimeOp::Exec,
            Call::Logs { .. } => RuntimeOp::Logs,
            Call::Network { .. } => RuntimeOp::Create,
            Call::InspectVolume { .. } | Call::Volume { .. } => RuntimeOp::Volume,
        }
    }
}

impl fmt::Display for Call<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Connect => f.write_str("connect (API version negotiation)"),
            Call::Ping | Call::ListManaged | Call::Events => f.write_str(self.op().as_str()),
            Call::InspectImage { image } => write!(f, "inspect_image {image}"),
            Call::InspectContainer { name_or_id } => write!(f, "inspect_container {name_or_id}"),
            Call::Create { name, image } => write!(f, "create {name} from {image}"),
            Call::Start { id }
            | Call::Stop { id }
            | Call::Kill { id }
            | Call::Remove { id }
            | Call::Unpause { id }
            | Call::Logs { id } => write!(f, "{} {id}", self.op()),
            Call::Wait { id } => write!(f, "wait for the exit of {id}"),
            Call::Rename { id, name } => write!(f, "rename {id} to {name}"),
            Call::Network { name } => write!(f, "network {name}"),
            Call::Exec { id } => write!(f, "exec in {id}"),
            Call::InspectExec { exec_id } => write!(f, "inspect_exec {exec_id}"),
            Call::InspectVolume { name } => write!(f, "inspect_volume {name}"),
            Call::Volume { name } => write!(f, "volume {name}"),
        }
    }
}

/// What a failed bollard call means for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// The call was a no-op because the target already is in the asked state
    /// (304, or 409 "is not running" for a kill).
    AlreadySo,
    /// The inspected container or image does not exist.
    Absent,
    Failed(RuntimeError),
}

/// Maps any bollard error.
fn classify(call: &Call<'_>, err: DockerError) -> Outcome {
    match err {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => classify_status(call, status_code, message),
        DockerError::RequestTimeoutError => Outcome::Failed(RuntimeError::Timeout {
            operation: call.to_string(),
        }),
        DockerError::HyperLegacyError { .. }
        | DockerError::HyperResponseError { .. }
        | DockerError::IOError { .. }
        | DockerError::SocketNotFoundError(_) => Outcome::Failed(RuntimeError::Unreachable {
            message: error_chain(&err),
        }),
        other => Outcome::Failed(RuntimeError::Rejected {
            status: 0,
            message: format!("unexpected answer to {call}: {}", error_chain(&other)),
        }),
    }
}

/// Maps an HTTP error answer of Docker (pure: the table the unit tests pin).
fn classify_status(call: &Call<'_>, status: u16, message: String) -> Outcome {
    let lower = message.to_ascii_lowercase();
    if status == 304 {
        return Outcome::AlreadySo;
    }
    if matches!(call, Call::Start { .. })
        && (lower.contains("port is already allocated") || lower.contains("address already in use"))
    {
        return Outcome::Failed(RuntimeError::PortAllocated { message });
    }
    // The network a container joins can vanish (`docker network rm`): that
    // is not a missing image, and the caller makes the network again.
    if matches!(call, Call::Create { .. })
        && status == 404
        && lower.contains("network")
        && !lower.contains("no such image")
    {
        return Outcome::Failed(RuntimeError::NotFound { what: message });
    }
    if let Call::Create { image, .. } = call
        && (status == 404 || lower.contains("no such image"))
    {
        return Outcome::Failed(RuntimeError::ImageNotFound {
            image: (*image).to_owned(),
        });
    }
    match (status, call) {
        (
            404,
            Call::InspectContainer { .. }
            | Call::InspectImage { .. }
            | Call::InspectExec { .. }
            | Call::InspectVolume { .. },
        ) => Outcome::Absent,
        (404, _) => Outcome::Failed(RuntimeError::NotFound { what: message }),
        (409, Call::Create { name, .. }) if lower.contains("already in use") => {
            Outcome::Failed(RuntimeError::NameConflict {
                name: (*name).to_owned(),
            })
        }
        (409, Call::Kill { .. }) if lower.contains("is not running") => Outcome::AlreadySo,
        (409 | 500, Call::Unpause { .. }) if lower.contains("is not paused") => Outcome::AlreadySo,
        (409, Call::Rename { name, .. }) if lower.contains("already in use") => {
            Outcome::Failed(RuntimeError::NameConflict {
                name: (*name).to_owned(),
            })
        }
        (409, _) => Outcome::Failed(RuntimeError::Conflict { message }),
        _ => Outcome::Failed(RuntimeError::Rejected { status, message }),
    }
}

/// The create body for a spec: Kubernetes-style command/args, our labels,
/// an init so SIGTERM reaches the engine, no Docker restart policy (the
/// controller alone restarts), the stop timeout stored in the container,
/// and the hardening (capabilities, no-new-privileges, pids, user, read-only
/// root). `network_mode` is what [`DockerRuntime::network_mode`] resolved.
fn create_body(spec: &ContainerSpec, network_mode: Option<String>) -> ContainerCreateBody {
    let labels: HashMap<String, String> = spec.effective_labels().into_iter().collect();
    let env = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut exposed_ports = Vec::new();
    let mut port_bindings: HashMap<String, Option<Vec<DockerPortBinding>>> = HashMap::new();
    for port in &spec.ports {
        let key = format!("{}/{}", port.container_port, port.protocol);
        if !exposed_ports.contains(&key) {
            exposed_ports.push(key.clone());
        }
        if let Some(host_port) = port.host_port {
            port_bindings
                .entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(DockerPortBinding {
                    host_ip: port.host_ip.clone(),
                    host_port: Some(host_port.to_string()),
                });
        }
    }
    let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let security_opt = spec
        .no_new_privileges
        .then(|| vec!["no-new-privileges".to_owned()]);
    ContainerCreateBody {
        hostname: Some(spec.hostname.clone()),
        user: spec.user.clone(),
        image: Some(spec.image.clone()),
        entrypoint: non_empty(&spec.command),
        cmd: non_empty(&spec.args),
        env: Some(env),
        labels: Some(labels),
        exposed_ports: (!exposed_ports.is_empty()).then_some(exposed_ports),
        stop_timeout: Some(i64::from(stop_seconds(spec.stop_timeout))),
        stop_signal: spec.stop_signal.clone(),
        host_config: Some(HostConfig {
            init: Some(true),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            memory: spec
                .memory_bytes
                .map(|bytes| i64::try_from(bytes).unwrap_or(i64::MAX)),
            nano_cpus: spec.nano_cpus,
            cap_drop: spec.drop_all_capabilities.then(|| vec!["ALL".to_owned()]),
            cap_add: non_empty(&spec.cap_add),
            security_opt,
            pids_limit: spec.pids_limit,
            readonly_rootfs: spec.read_only_root_filesystem.then_some(true),
            tmpfs: (!spec.tmpfs.is_empty()).then(|| spec.tmpfs.clone().into_iter().collect()),
            network_mode,
            mounts: (!spec.mounts.is_empty()).then(|| spec.mounts.iter().map(mount).collect()),
            log_config: spec.log_rotation.map(|rotation| HostConfigLogConfig {
                typ: Some("json-file".to_owned()),
                config: Some(
                    [
                        ("max-size".to_owned(), rotation.max_size_bytes.to_string()),
                        ("max-file".to_owned(), rotation.max_files.to_string()),
                    ]
                    .into(),
                ),
            }),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

/// One of the spec's mounts as Docker's `HostConfig.Mounts` takes it: a
/// named volume (labelled, should Docker have to create it) or a bind of a
/// host path (which Docker refuses when missing, unlike `-v`).
fn mount(mount: &Mount) -> DockerMount {
    let (typ, source, volume_options) = match &mount.source {
        MountSource::Volume { name, labels } => (
            MountType::VOLUME,
            name.clone(),
            (!labels.is_empty()).then(|| MountVolumeOptions {
                labels: Some(labels.clone().into_iter().collect()),
                ..MountVolumeOptions::default()
            }),
        ),
        MountSource::Bind { path } => (MountType::BIND, path.clone(), None),
    };
    DockerMount {
        target: Some(mount.target.clone()),
        source: Some(source),
        typ: Some(typ),
        read_only: mount.read_only.then_some(true),
        volume_options,
        ..DockerMount::default()
    }
}

fn volume_info(volume: bollard::models::Volume) -> VolumeInfo {
    VolumeInfo {
        name: volume.name,
        labels: volume.labels.into_iter().collect(),
    }
}

/// Docker's timestamps are RFC 3339 in UTC with nanoseconds; "never" is
/// `0001-01-01T00:00:00Z`, which is before the epoch and so `None`.
fn parse_time(text: Option<&str>) -> Option<SystemTime> {
    humantime::parse_rfc3339(text?).ok()
}

/// The container's address: on the network its `HostConfig.NetworkMode`
/// names (by name or by id, as our creates give it), else on the first
/// network, by name, that has one. `None` when no network has one (stopped,
/// `host` or `none` network).
fn container_address(
    network_mode: Option<&str>,
    networks: &HashMap<String, EndpointSettings>,
) -> Option<IpAddr> {
    if let Some(mode) = network_mode.filter(|mode| !mode.is_empty()) {
        // `default` is what a create without a network records: the bridge.
        let mode = if mode == "default" { "bridge" } else { mode };
        let named = networks.iter().find(|(name, endpoint)| {
            name.as_str() == mode || endpoint.network_id.as_deref() == Some(mode)
        });
        if let Some(address) = named.and_then(|(_, endpoint)| endpoint_address(endpoint)) {
            return Some(address);
        }
    }
    let mut names: Vec<&String> = networks.keys().collect();
    names.sort();
    names
        .into_iter()
        .find_map(|name| endpoint_address(&networks[name]))
}

/// An endpoint's IPv4 address, else its global IPv6 one.
fn endpoint_address(endpoint: &EndpointSettings) -> Option<IpAddr> {
    let v4 = endpoint
        .ip_address
        .as_deref()
        .and_then(|text| text.parse::<Ipv4Addr>().ok())
        .map(IpAddr::V4);
    v4.or_else(|| {
        endpoint
            .global_ipv6_address
            .as_deref()
            .and_then(|text| text.parse::<Ipv6Addr>().ok())
            .map(IpAddr::V6)
    })
}

/// The published ports of `NetworkSettings.Ports` (`"7000/tcp"` → its host
/// bindings): one per binding with a host port, sorted, each once. Docker
/// 20.10 binds IPv4 and IPv6 separately, so one port often appears twice,
/// with `0.0.0.0` and `::`. Exposed ports without a binding and SCTP ports
/// are left out.
fn published_ports(ports: &PortMap) -> Vec<PublishedPort> {
    let mut published = Vec::new();
    for (key, bindings) in ports {
        // Docker always names the protocol; a bare port would mean TCP.
        let (port, protocol) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let protocol = match protocol {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => continue,
        };
        let Ok(container_port) = port.parse::<u16>() else {
            continue;
        };
        for binding in bindings.iter().flatten() {
            let Some(host_port) = binding
                .host_port
                .as_deref()
                .and_then(|text| text.parse::<u16>().ok())
            else {
                continue;
            };
            published.push(PublishedPort {
                container_port,
                protocol,
                host_ip: binding.host_ip.clone().filter(|ip| !ip.is_empty()),
                host_port,
            });
        }
    }
    published.sort();
    published.dedup();
    published
}

/// Docker's verdict on the HEALTHCHECK (`State.Health`); `None` without one
/// (no `Health`, or status `none`/empty).
fn docker_health(health: Option<Health>) -> Option<DockerHealth> {
    let health = health?;
    let status = match health.status? {
        HealthStatusEnum::STARTING => DockerHealthStatus::Starting,
        HealthStatusEnum::HEALTHY => DockerHealthStatus::Healthy,
        HealthStatusEnum::UNHEALTHY => DockerHealthStatus::Unhealthy,
        HealthStatusEnum::EMPTY | HealthStatusEnum::NONE => return None,
    };
    let last = health.log.and_then(|log| log.into_iter().last());
    let last_exit_code = last.as_ref().and_then(|result| result.exit_code);
    let last_output = last
        .and_then(|result| result.output)
        .map(|output| cut_at_char_boundary(output.trim(), HEALTH_OUTPUT_LIMIT).to_owned())
        .filter(|output| !output.is_empty());
    Some(DockerHealth {
        status,
        failing_streak: health
            .failing_streak
            .map(|streak| u32::try_from(streak.max(0)).unwrap_or(u32::MAX))
            .unwrap_or(0),
        last_output,
        last_exit_code,
    })
}

fn container_info(response: ContainerInspectResponse) -> ContainerInfo {
    let config = response.config.unwrap_or_default();
    let mut state = response.state.unwrap_or_default();
    let network_mode = response.host_config.and_then(|host| host.network_mode);
    let settings = response.network_settings.unwrap_or_default();
    let address = settings
        .networks
        .as_ref()
        .and_then(|networks| container_address(network_mode.as_deref(), networks));
    let ports = settings
        .ports
        .as_ref()
        .map(published_ports)
        .unwrap_or_default();
    let health = docker_health(state.health.take());
    let status = state
        .status
        .map(|status| ContainerState::parse(status.as_ref()))
        .unwrap_or_else(|| ContainerState::Unknown(String::new()));
    let exit_code = if status.has_exited() {
        state.exit_code
    } else {
        None
    };
    ContainerInfo {
        id: response.id.unwrap_or_default(),
        name: response
            .name
            .map(|name| name.trim_start_matches('/').to_owned())
            .unwrap_or_default(),
        image: config.image.unwrap_or_default(),
        image_id: response.image.unwrap_or_default(),
        hostname: config.hostname.unwrap_or_default(),
        labels: config
            .labels
            .unwrap_or_default()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        state: status,
        exit_code,
        oom_killed: state.oom_killed.unwrap_or(false),
        started_at: parse_time(state.started_at.as_deref()),
        finished_at: parse_time(state.finished_at.as_deref()),
        error: state.error.filter(|error| !error.is_empty()),
        address,
        ports,
        health,
    }
}

/// A container event, or `None` for events of other types.
fn container_event(message: EventMessage) -> Option<ContainerEvent> {
    if message.typ != Some(EventMessageTypeEnum::CONTAINER) {
        return None;
    }
    let actor = message.actor.unwrap_or_default();
    let mut attributes = actor.attributes.unwrap_or_default();
    Some(ContainerEvent {
        container_id: actor.id.unwrap_or_default(),
        game: attributes.remove(LABEL_GAME),
        action: message.action.unwrap_or_default(),
    })
}

/// Docker's `since` (unix seconds with nanoseconds) for events from `now`,
/// minus a second of slack: on a remote daemon our clock may run ahead, and
/// a replayed event costs a reconcile while a lost one costs a resync period.
fn events_since(now: SystemTime) -> String {
    let since = now
        .checked_sub(EVENTS_SLACK)
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .unwrap_or_default();
    format!("{}.{:09}", since.as_secs(), since.subsec_nanos())
}

/// The error for an answer a call cannot have (a 304 to a create, ...).
fn unexpected(call: &Call<'_>, outcome: &Outcome) -> RuntimeError {
    RuntimeError::Rejected {
        status: 0,
        message: format!("unexpected answer to {call}: {outcome:?}"),
    }
}

/// Appends an exec's output chunk, keeping at most [`EXEC_OUTPUT_LIMIT`]
/// bytes: the rest is read and dropped, so the exec never blocks on a full
/// pipe.
fn keep_output(collected: &mut Vec<u8>, chunk: &LogOutput) {
    let bytes: &[u8] = chunk.as_ref();
    let room = EXEC_OUTPUT_LIMIT.saturating_sub(collected.len());
    collected.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// The kept output as text: invalid UTF-8 replaced, then cut to the limit
/// again (a replacement character can be longer than the bytes it stands
/// for).
fn output_text(collected: &[u8]) -> String {
    let text = String::from_utf8_lossy(collected);
    cut_at_char_boundary(&text, EXEC_OUTPUT_LIMIT).to_owned()
}

fn managed_filter() -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_owned(),
        vec![format!("{LABEL_MANAGED_BY}={MANAGED_BY}")],
    )])
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    async fn host_resources(&self) -> Result<Option<HostResources>, RuntimeError> {
        let docker = self.client().await?;
        let host = self
            .inner
            .host
            .get_or_try_init(|| async {
                match self
                    .send(&Call::Ping, self.inner.request_timeout, docker.info())
                    .await
                {
                    Ok(info) => Ok(HostResources {
                        cpus: info.ncpu.and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
                        memory_bytes: info
                            .mem_total
                            .and_then(|n| u64::try_from(n).ok())
                            .unwrap_or(0),
                    }),
                    Err(Outcome::Failed(err)) => Err(err),
                    Err(other) => Err(RuntimeError::Rejected {
                        status: 0,
                        message: format!("unexpected answer to info: {other:?}"),
                    }),
                }
            })
            .await?;
        Ok(Some(*host))
    }

    async fn engine_id(&self) -> Result<Option<String>, RuntimeError> {
        let docker = self.client().await?;
        match self
            .send(&Call::Ping, self.inner.request_timeout, docker.info())
            .await
        {
            Ok(info) => Ok(info.id.filter(|id| !id.is_empty())),
            Err(Outcome::Failed(err)) => Err(err),
            Err(other) => Err(RuntimeError::Rejected {
                status: 0,
                message: format!("unexpected answer to info: {other:?}"),
            }),
        }
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        let call = Call::Ping;
        match self
            .send(&call, self.inner.request_timeout, docker.ping())
            .await
        {
            Ok(_) => Ok(()),
            Err(Outcome::Failed(err)) => Err(err),
            Err(other) => Err(RuntimeError::Rejected {
                status: 0,
                message: format!("unexpected answer to ping: {other:?}"),
            }),
        }
    }

    async fn inspect_image(&self, image: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        let docker = self.client().await?;
        let call = Call::InspectImage { image };
        match self
            .send(
                &call,
                self.inner.request_timeout,
                docker.inspect_image(image),
            )
            .await
        {
            Ok(inspect) => Ok(Some(ImageInfo {
                id: inspect.id.unwrap_or_default(),
                repo_digests: inspect.repo_digests.unwrap_or_default(),
            })),
            Err(Outcome::Absent | Outcome::AlreadySo) => Ok(None),
            Err(Outcome::Failed(err)) => Err(err),
        }
    }

    async fn pull_image(
        &self,
        image: &str,
        credentials: Option<&RegistryCredentials>,
        timeout: Duration,
    ) -> Result<ImageInfo, RuntimeError> {
        self.pull(image, credentials, timeout).await
    }

    async fn registry_digest(
        &self,
        image: &str,
        credentials: Option<&RegistryCredentials>,
        timeout: Duration,
    ) -> Result<String, RuntimeError> {
        self.digest_in_registry(image, credentials, timeout).await
    }

    async fn inspect_container(
        &self,
        name_or_id: &str,
    ) -> Result<Option<ContainerInfo>, RuntimeError> {
        let docker = self.client().await?;
        self.inspect(&docker, name_or_id).await
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let docker = self.client().await?;
        let call = Call::Create {
            name: &spec.name,
            image: &spec.image,
        };
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..CreateContainerOptions::default()
        };
        let network_mode = match &spec.network {
            Some(network) => Some(self.network_mode(&docker, network).await?),
            None => None,
        };
        let request =
            docker.create_container(Some(options.clone()), create_body(spec, network_mode));
        let mut answer = self.send(&call, self.inner.request_timeout, request).await;
        if let (Some(network), Err(Outcome::Failed(RuntimeError::NotFound { .. }))) =
            (&spec.network, &answer)
        {
            // The network was removed by hand since we made sure of it:
            // make it again, once.
            tracing::warn!(network = %network.name, "the games' network vanished; creating it again");
            self.forget_network(&network.name).await;
            let mode = self.network_mode(&docker, network).await?;
            let request = docker.create_container(Some(options), create_body(spec, Some(mode)));
            answer = self.send(&call, self.inner.request_timeout, request).await;
        }
        match answer {
            Ok(created) => {
                for warning in &created.warnings {
                    tracing::warn!(container = %spec.name, %warning, "Docker warned on create");
                }
                Ok(created.id)
            }
            Err(Outcome::Failed(err)) => Err(err),
            Err(other) => Err(RuntimeError::Rejected {
                status: 0,
                message: format!("unexpected answer to {call}: {other:?}"),
            }),
        }
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        let request = docker.start_container(id, None::<StartContainerOptions>);
        let started = self
            .send_unit(&Call::Start { id }, self.inner.request_timeout, request)
            .await;
        if let Err(RuntimeError::NotFound { what }) = &started
            && what.contains("network")
        {
            // Docker 20.10 accepts a create into a network id that no longer
            // exists and refuses only the start: forget what we knew, so the
            // next create makes the network again.
            tracing::warn!(container = %id, %what, "the games' network vanished; it is made again at the next create");
            self.inner.networks.lock().await.clear();
        }
        started
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        // The call lasts up to `timeout` by design: give it its own deadline
        // and a client whose backstop is longer still.
        let deadline = timeout.saturating_add(STOP_MARGIN);
        let docker = self
            .client()
            .await?
            .with_timeout(Duration::from_secs(backstop_secs(deadline)));
        let options = StopContainerOptions {
            t: Some(stop_seconds(timeout)),
            signal: None,
        };
        let request = docker.stop_container(id, Some(options));
        self.send_unit(&Call::Stop { id }, deadline, request).await
    }

    async fn stop_with_signal(
        &self,
        id: &str,
        signal: &str,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        // What Docker's own stop does, with our signal: the stop API takes
        // one only from API 1.42 on, and 1.41 ignores the parameter.
        let deadline = tokio::time::Instant::now() + timeout;
        let docker = self.client().await?;
        let options = KillContainerOptions {
            signal: signal.to_owned(),
        };
        let request = docker.kill_container(id, Some(options));
        match self
            .send(&Call::Kill { id }, self.inner.request_timeout, request)
            .await
        {
            Ok(()) => {}
            // 409 "is not running": stopped already, what a stop's 304 says.
            Err(Outcome::AlreadySo) => return Ok(()),
            Err(Outcome::Failed(err)) => return Err(err),
            Err(other) => return Err(unexpected(&Call::Kill { id }, &other)),
        }
        if self.wait_for_exit(&docker, id, deadline).await? {
            return Ok(());
        }
        self.kill(id).await?;
        // After SIGKILL Docker still reaps the process and tears down its
        // network: the same margin as a stop's.
        let killed = tokio::time::Instant::now() + STOP_MARGIN;
        if self.wait_for_exit(&docker, id, killed).await? {
            Ok(())
        } else {
            Err(RuntimeError::Timeout {
                operation: Call::Wait { id }.to_string(),
            })
        }
    }

    async fn kill(&self, id: &str) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        let options = KillContainerOptions {
            signal: "SIGKILL".to_owned(),
        };
        let request = docker.kill_container(id, Some(options));
        self.send_unit(&Call::Kill { id }, self.inner.request_timeout, request)
            .await
    }

    async fn remove(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        // `v`: anonymous volumes the image declares would otherwise pile up,
        // one set per recreate.
        let options = RemoveContainerOptions {
            force,
            v: true,
            link: false,
        };
        let request = docker.remove_container(id, Some(options));
        self.send_unit(&Call::Remove { id }, self.inner.request_timeout, request)
            .await
    }

    async fn unpause(&self, id: &str) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        let request = docker.unpause_container(id);
        self.send_unit(&Call::Unpause { id }, self.inner.request_timeout, request)
            .await
    }

    async fn rename(&self, id: &str, name: &str) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        let options = RenameContainerOptions {
            name: name.to_owned(),
        };
        let request = docker.rename_container(id, options);
        self.send_unit(
            &Call::Rename { id, name },
            self.inner.request_timeout,
            request,
        )
        .await
    }

    async fn list_managed(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        self.list(managed_filter()).await
    }

    async fn list_labelled(&self, key: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let mut filters = managed_filter();
        if let Some(labels) = filters.get_mut("label") {
            labels.push(key.to_owned());
        }
        let mut containers = self.list(filters).await?;
        containers.retain(|c| c.labels.contains_key(key));
        Ok(containers)
    }

    async fn list_game(&self, game: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let mut filters = managed_filter();
        if let Some(labels) = filters.get_mut("label") {
            labels.push(format!("{LABEL_GAME}={game}"));
        }
        let mut containers = self.list(filters).await?;
        containers.retain(|c| c.game() == Some(game));
        Ok(containers)
    }

    async fn exec(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let call = Call::Exec { id };
        let timed_out = || RuntimeError::Timeout {
            operation: call.to_string(),
        };
        let docker = tokio::time::timeout_at(deadline, self.client())
            .await
            .map_err(|_elapsed| timed_out())??;

        // Until Docker gave the exec an id there is nothing to report but
        // the timeout; the create gets what is left of the whole call.
        let config = ExecConfig {
            attach_stdin: Some(false),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            cmd: Some(command.to_vec()),
            ..ExecConfig::default()
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let exec_id = match self
            .send(
                &call,
                left.min(self.inner.request_timeout),
                docker.create_exec(id, config),
            )
            .await
        {
            Ok(created) => created.id,
            Err(Outcome::Failed(err)) => return Err(err),
            Err(other) => return Err(unexpected(&call, &other)),
        };
        let unfinished = |output: String| ExecOutcome {
            exec_id: exec_id.clone(),
            exit_code: None,
            output,
        };

        // From here on the exec may run: past the deadline the answer is
        // "no exit code yet" with its id, never an error.
        let options = StartExecOptions {
            detach: false,
            tty: false,
            output_capacity: None,
        };
        let started = tokio::time::timeout_at(
            deadline,
            self.send(
                &call,
                self.inner.request_timeout,
                docker.start_exec(&exec_id, Some(options)),
            ),
        )
        .await;
        let (mut stream, _input) = match started {
            Err(_elapsed) => return Ok(unfinished(String::new())),
            Ok(Ok(StartExecResults::Attached { output, input })) => (output, input),
            Ok(Ok(StartExecResults::Detached)) => {
                return Err(RuntimeError::Rejected {
                    status: 0,
                    message: format!("{call}: Docker detached an exec started attached"),
                });
            }
            Ok(Err(Outcome::Failed(err))) => return Err(err),
            Ok(Err(other)) => return Err(unexpected(&call, &other)),
        };

        let mut collected = Vec::new();
        let drained = tokio::time::timeout_at(deadline, async {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(chunk) => keep_output(&mut collected, &chunk),
                    // A broken stream: the inspect below says how it ended
                    // (or that Docker is gone).
                    Err(err) => {
                        tracing::debug!(container = %id, %exec_id, error = %error_chain(&err), "the exec's output stream broke");
                        return;
                    }
                }
            }
        })
        .await;
        drop(stream);
        let output = output_text(&collected);
        if drained.is_err() {
            return Ok(unfinished(output));
        }

        // The stream ends when the process does; `Running` follows a moment
        // later.
        let inspect_call = Call::InspectExec { exec_id: &exec_id };
        loop {
            let inspected = tokio::time::timeout_at(
                deadline,
                self.send(
                    &inspect_call,
                    self.inner.request_timeout,
                    docker.inspect_exec(&exec_id),
                ),
            )
            .await;
            match inspected {
                Err(_elapsed) => return Ok(unfinished(output)),
                Ok(Ok(inspect)) if inspect.running == Some(true) => {
                    let next = (tokio::time::Instant::now() + EXEC_POLL).min(deadline);
                    tokio::time::sleep_until(next).await;
                }
                Ok(Ok(inspect)) => {
                    return Ok(ExecOutcome {
                        exec_id: exec_id.clone(),
                        exit_code: inspect.exit_code,
                        output,
                    });
                }
                Ok(Err(Outcome::Absent)) => {
                    return Err(RuntimeError::NotFound {
                        what: inspect_call.to_string(),
                    });
                }
                Ok(Err(Outcome::Failed(err))) => return Err(err),
                Ok(Err(other)) => return Err(unexpected(&inspect_call, &other)),
            }
        }
    }

    async fn last_output(&self, id: &str, max_bytes: usize) -> Result<String, RuntimeError> {
        let docker = self.client().await?;
        let call = Call::Logs { id };
        // Docker's tail counts lines; a line is rarely under 16 bytes, so this many lines
        // hold `max_bytes` unless they are very short, and stay a bounded read when long.
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            timestamps: true,
            tail: (max_bytes / 16).max(100).to_string(),
            ..LogsOptions::default()
        };
        let mut stream = docker.logs(id, Some(options));
        let mut kept: Vec<u8> = Vec::new();
        let read = tokio::time::timeout(self.inner.request_timeout, async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|err| match classify(&call, err) {
                    Outcome::Failed(err) => err,
                    Outcome::Absent | Outcome::AlreadySo => RuntimeError::NotFound {
                        what: call.to_string(),
                    },
                })?;
                kept.extend_from_slice(chunk.as_ref());
                // Only the end is wanted: what lies more than twice the limit back goes.
                if kept.len() > 2 * max_bytes {
                    kept.drain(..kept.len() - max_bytes);
                }
            }
            Ok::<(), RuntimeError>(())
        })
        .await;
        match read {
            Ok(Ok(())) => Ok(String::from_utf8_lossy(&kept).into_owned()),
            Ok(Err(err)) => Err(err),
            Err(_elapsed) => Err(RuntimeError::Timeout {
                operation: call.to_string(),
            }),
        }
    }

    async fn exec_running(&self, exec_id: &str) -> Result<bool, RuntimeError> {
        let docker = self.client().await?;
        let call = Call::InspectExec { exec_id };
        match self
            .send(
                &call,
                self.inner.request_timeout,
                docker.inspect_exec(exec_id),
            )
            .await
        {
            Ok(inspect) => Ok(inspect.running == Some(true)),
            // Docker forgets an exec with its container.
            Err(Outcome::Absent) => Ok(false),
            Err(Outcome::Failed(err)) => Err(err),
            Err(other) => Err(unexpected(&call, &other)),
        }
    }

    async fn inspect_volume(&self, name: &str) -> Result<Option<VolumeInfo>, RuntimeError> {
        let docker = self.client().await?;
        let call = Call::InspectVolume { name };
        match self
            .send(
                &call,
                self.inner.request_timeout,
                docker.inspect_volume(name),
            )
            .await
        {
            Ok(volume) => Ok(Some(volume_info(volume))),
            Err(Outcome::Absent | Outcome::AlreadySo) => Ok(None),
            Err(Outcome::Failed(err)) => Err(err),
        }
    }

    async fn create_volume(&self, spec: &VolumeSpec) -> Result<VolumeInfo, RuntimeError> {
        let docker = self.client().await?;
        let request = VolumeCreateRequest {
            name: Some(spec.name.clone()),
            driver: Some("local".to_owned()),
            labels: Some(spec.labels.clone().into_iter().collect()),
            ..VolumeCreateRequest::default()
        };
        let call = Call::Volume { name: &spec.name };
        match self
            .send(
                &call,
                self.inner.request_timeout,
                docker.create_volume(request),
            )
            .await
        {
            Ok(volume) => Ok(volume_info(volume)),
            Err(Outcome::Failed(err)) => Err(err),
            Err(other) => Err(unexpected(&call, &other)),
        }
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        let request = docker.remove_volume(name, Some(RemoveVolumeOptions { force: false }));
        self.send_unit(&Call::Volume { name }, self.inner.request_timeout, request)
            .await
    }

    async fn list_volumes(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<VolumeInfo>, RuntimeError> {
        let docker = self.client().await?;
        let filters = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let options = ListVolumesOptions {
            filters: Some(HashMap::from([("label".to_owned(), filters)])),
        };
        let call = Call::Volume { name: "" };
        let listed = match self
            .send(
                &call,
                self.inner.request_timeout,
                docker.list_volumes(Some(options)),
            )
            .await
        {
            Ok(listed) => listed,
            Err(Outcome::Failed(err)) => return Err(err),
            Err(other) => return Err(unexpected(&call, &other)),
        };
        let mut volumes: Vec<VolumeInfo> = listed
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(volume_info)
            // Docker's label filter matches every one asked; checked again here.
            .filter(|v| labels.iter().all(|(k, val)| v.labels.get(k) == Some(val)))
            .collect();
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    fn events(&self) -> BoxStream<'static, Result<ContainerEvent, RuntimeError>> {
        let runtime = self.clone();
        let mut filters = managed_filter();
        filters.insert("type".to_owned(), vec!["container".to_owned()]);
        // The request goes out on the first poll, not now: ask for the events
        // since now so that nothing the caller does in between is missed.
        let options = EventsOptions {
            since: Some(events_since(SystemTime::now())),
            filters: Some(filters),
            ..EventsOptions::default()
        };
        let opened =
            stream::once(async move { runtime.client().await }).flat_map(
                move |client| match client {
                    Ok(docker) => docker
                        .events(Some(options.clone()))
                        .map(|item| match item {
                            Ok(message) => Ok(container_event(message)),
                            Err(err) => match classify(&Call::Events, err) {
                                Outcome::Failed(err) => Err(err),
                                other => Err(RuntimeError::Rejected {
                                    status: 0,
                                    message: format!("unexpected answer to events: {other:?}"),
                                }),
                            },
                        })
                        .boxed(),
                    Err(err) => stream::iter([Err(err)]).boxed(),
                },
            );
        // Skip non-container events; end after the first error (the stream
        // is broken then: the caller re-opens it and relists).
        opened
            .filter_map(|item| async move { item.transpose() })
            .scan(false, |failed, item| {
                let next = if *failed {
                    None
                } else {
                    *failed = item.is_err();
                    Some(item)
                };
                async move { next }
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::PortBinding;
    use rtm_core::ports::PortProtocol;

    fn failed(call: &Call<'_>, status: u16, message: &str) -> Outcome {
        classify_status(call, status, message.to_owned())
    }

    #[test]
    fn not_modified_means_already_so() {
        assert_eq!(
            failed(&Call::Start { id: "c" }, 304, ""),
            Outcome::AlreadySo
        );
        assert_eq!(failed(&Call::Stop { id: "c" }, 304, ""), Outcome::AlreadySo);
    }

    #[test]
    fn missing_containers_are_absent_for_inspect_and_not_found_otherwise() {
        let message = "No such container: rtm-g1";
        assert_eq!(
            failed(
                &Call::InspectContainer {
                    name_or_id: "rtm-g1"
                },
                404,
                message
            ),
            Outcome::Absent
        );
        assert_eq!(
            failed(
                &Call::InspectImage { image: "engine:9" },
                404,
                "No such image: engine:9"
            ),
            Outcome::Absent
        );
        for call in [
            Call::Start { id: "rtm-g1" },
            Call::Stop { id: "rtm-g1" },
            Call::Kill { id: "rtm-g1" },
            Call::Remove { id: "rtm-g1" },
        ] {
            assert_eq!(
                failed(&call, 404, message),
                Outcome::Failed(RuntimeError::NotFound {
                    what: message.into()
                }),
                "{call}"
            );
        }
    }

    #[test]
    fn create_of_a_missing_image_is_image_not_found() {
        let call = Call::Create {
            name: "rtm-g1",
            image: "engine:9",
        };
        let expected = Outcome::Failed(RuntimeError::ImageNotFound {
            image: "engine:9".into(),
        });
        assert_eq!(failed(&call, 404, "No such image: engine:9"), expected);
        assert_eq!(failed(&call, 400, "No such image: engine:9"), expected);
    }

    #[test]
    fn create_with_a_taken_name_is_name_conflict() {
        let call = Call::Create {
            name: "rtm-g1",
            image: "engine:1",
        };
        let message = "Conflict. The container name \"/rtm-g1\" is already in use by container \"9f2c\". You have to remove (or rename) that container to be able to reuse that name.";
        assert_eq!(
            failed(&call, 409, message),
            Outcome::Failed(RuntimeError::NameConflict {
                name: "rtm-g1".into()
            })
        );
    }

    #[test]
    fn start_on_a_taken_host_port_is_port_allocated_whoever_holds_it() {
        let call = Call::Start { id: "c" };
        for message in [
            "driver failed programming external connectivity on endpoint rtm-g2 (abc): Bind for 0.0.0.0:17000 failed: port is already allocated",
            "driver failed programming external connectivity on endpoint rtm-g2 (abc): Error starting userland proxy: listen tcp4 0.0.0.0:17000: bind: address already in use",
        ] {
            assert_eq!(
                failed(&call, 500, message),
                Outcome::Failed(RuntimeError::PortAllocated {
                    message: message.into()
                })
            );
        }
    }

    #[test]
    fn killing_a_stopped_container_is_already_so_but_other_conflicts_are_not() {
        assert_eq!(
            failed(&Call::Kill { id: "c" }, 409, "Container c is not running"),
            Outcome::AlreadySo
        );
        let message = "You cannot remove a running container c. Stop the container before attempting removal or force remove";
        assert_eq!(
            failed(&Call::Remove { id: "c" }, 409, message),
            Outcome::Failed(RuntimeError::Conflict {
                message: message.into()
            })
        );
    }

    #[test]
    fn other_answers_are_rejected_with_dockers_status_and_message() {
        let message = "OCI runtime create failed: exec: \"/nope\": no such file or directory";
        assert_eq!(
            failed(&Call::Start { id: "c" }, 400, message),
            Outcome::Failed(RuntimeError::Rejected {
                status: 400,
                message: message.into()
            })
        );
    }

    #[test]
    fn client_timeouts_and_io_errors_become_timeout_and_unreachable() {
        let call = Call::Stop { id: "rtm-g1" };
        assert_eq!(
            classify(&call, DockerError::RequestTimeoutError),
            Outcome::Failed(RuntimeError::Timeout {
                operation: "stop rtm-g1".into()
            })
        );
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(matches!(
            classify(&call, DockerError::IOError { err: io }),
            Outcome::Failed(RuntimeError::Unreachable { message }) if message.contains("refused")
        ));
        assert!(matches!(
            classify(&call, DockerError::SocketNotFoundError("/x.sock".into())),
            Outcome::Failed(RuntimeError::Unreachable { message }) if message.contains("/x.sock")
        ));
    }

    #[test]
    fn docker_host_forms_we_understand() {
        assert_eq!(
            parse_host("unix:///var/run/docker.sock"),
            Ok(Endpoint::Unix("/var/run/docker.sock".into()))
        );
        assert_eq!(
            parse_host("tcp://127.0.0.1:2375"),
            Ok(Endpoint::Http("127.0.0.1:2375".into()))
        );
        assert_eq!(
            parse_host("http://docker:2375/"),
            Ok(Endpoint::Http("docker:2375".into()))
        );
        for bad in [
            "ssh://me@host",
            "https://host:2376",
            "/var/run/docker.sock",
            "unix://",
            "",
        ] {
            assert!(
                matches!(parse_host(bad), Err(RuntimeError::Unreachable { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn timeouts_round_up_to_whole_seconds() {
        assert_eq!(stop_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(stop_seconds(Duration::from_secs(30)), 30);
        assert_eq!(stop_seconds(Duration::ZERO), 0);
        assert_eq!(backstop_secs(Duration::from_millis(500)), 2);
        assert_eq!(backstop_secs(Duration::from_secs(5)), 6);
    }

    #[test]
    fn create_body_carries_the_spec_the_way_docker_expects() {
        let mut spec = ContainerSpec::new("g1", "engine:1");
        spec.command = vec!["/engine".into()];
        spec.args = vec!["--fast".into()];
        spec.env = vec![("SEED".into(), "42".into())];
        spec.ports = vec![
            PortBinding {
                container_port: 7000,
                host_port: Some(17000),
                protocol: PortProtocol::Tcp,
                host_ip: None,
            },
            PortBinding {
                container_port: 7001,
                host_port: None,
                protocol: PortProtocol::Udp,
                host_ip: None,
            },
        ];
        spec.memory_bytes = Some(512 << 20);
        spec.nano_cpus = Some(1_500_000_000);
        spec.stop_timeout = Duration::from_millis(2500);

        let body = create_body(&spec, None);
        assert_eq!(body.hostname.as_deref(), Some("g1"));
        assert_eq!(body.entrypoint, Some(vec!["/engine".to_owned()]));
        assert_eq!(body.cmd, Some(vec!["--fast".to_owned()]));
        assert_eq!(body.env, Some(vec!["SEED=42".to_owned()]));
        assert_eq!(body.stop_timeout, Some(3));
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_GAME], "g1");
        assert_eq!(labels[LABEL_MANAGED_BY], MANAGED_BY);
        assert_eq!(
            body.exposed_ports,
            Some(vec!["7000/tcp".to_owned(), "7001/udp".to_owned()])
        );
        let host = body.host_config.unwrap();
        assert_eq!(host.init, Some(true));
        assert_eq!(
            host.restart_policy.and_then(|p| p.name),
            Some(RestartPolicyNameEnum::NO)
        );
        assert_eq!(host.memory, Some(512 << 20));
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        let bindings = host.port_bindings.unwrap();
        assert_eq!(
            bindings.len(),
            1,
            "only ports with a host port are published"
        );
        assert_eq!(
            bindings["7000/tcp"],
            Some(vec![DockerPortBinding {
                host_ip: None,
                host_port: Some("17000".into())
            }])
        );
    }

    #[test]
    fn create_body_mounts_named_volumes_and_binds_with_read_only_honoured() {
        let mut spec = ContainerSpec::new("g1", "engine:1");
        let labels: BTreeMap<String, String> =
            [("rtmanager.dev/volume".to_owned(), "saves".to_owned())].into();
        spec.mounts = vec![
            Mount {
                source: MountSource::Volume {
                    name: "rtm-1a2b3c-g1_saves".into(),
                    labels: labels.clone(),
                },
                target: "/data".into(),
                read_only: false,
            },
            Mount {
                source: MountSource::Volume {
                    name: "shared-maps".into(),
                    labels: BTreeMap::new(),
                },
                target: "/maps".into(),
                read_only: true,
            },
            Mount {
                source: MountSource::Bind {
                    path: "/srv/maps".into(),
                },
                target: "/host".into(),
                read_only: true,
            },
        ];
        let mounts = create_body(&spec, None)
            .host_config
            .unwrap()
            .mounts
            .unwrap();
        let seen: Vec<_> = mounts
            .iter()
            .map(|m| {
                (
                    m.typ,
                    m.source.as_deref().unwrap(),
                    m.target.as_deref().unwrap(),
                    m.read_only,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    Some(MountType::VOLUME),
                    "rtm-1a2b3c-g1_saves",
                    "/data",
                    None
                ),
                (Some(MountType::VOLUME), "shared-maps", "/maps", Some(true)),
                (Some(MountType::BIND), "/srv/maps", "/host", Some(true)),
            ]
        );
        // A game's own volume carries its labels should Docker make it; a
        // shared one gets none, a bind no volume options at all.
        assert_eq!(
            mounts[0].volume_options.as_ref().unwrap().labels,
            Some(labels.into_iter().collect())
        );
        assert!(mounts[1].volume_options.is_none());
        assert!(mounts[2].volume_options.is_none());
        // The wire form Docker reads.
        let json = serde_json::to_value(&mounts[2]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"Target": "/host", "Source": "/srv/maps", "Type": "bind", "ReadOnly": true})
        );
        assert!(
            create_body(&ContainerSpec::new("g1", "engine:1"), None)
                .host_config
                .unwrap()
                .mounts
                .is_none()
        );
    }

    #[test]
    fn a_missing_volume_is_absent_for_an_inspect_and_not_found_for_a_removal() {
        let inspect = Call::InspectVolume { name: "v" };
        assert_eq!(
            classify_status(&inspect, 404, "no such volume".into()),
            Outcome::Absent
        );
        let remove = Call::Volume { name: "v" };
        assert!(matches!(
            classify_status(&remove, 404, "no such volume".into()),
            Outcome::Failed(RuntimeError::NotFound { .. })
        ));
        assert!(matches!(
            classify_status(&remove, 409, "volume is in use".into()),
            Outcome::Failed(RuntimeError::Conflict { .. })
        ));
        assert_eq!(remove.op(), RuntimeOp::Volume);
    }

    #[test]
    fn create_body_hardens_the_container() {
        let mut spec = ContainerSpec::new("g1", "engine:1");
        let host = create_body(&spec, None).host_config.unwrap();
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(host.cap_add, None);
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_owned()])
        );
        assert_eq!(host.readonly_rootfs, None);
        assert_eq!(host.network_mode, None, "Docker's default bridge");

        spec.cap_add = vec!["NET_BIND_SERVICE".into()];
        spec.pids_limit = Some(256);
        spec.user = Some("1000:100".into());
        spec.read_only_root_filesystem = true;
        spec.tmpfs
            .insert("/tmp".into(), "rw,nosuid,nodev,size=64m".into());
        let body = create_body(&spec, Some("4f2a".into()));
        assert_eq!(body.user.as_deref(), Some("1000:100"));
        let host = body.host_config.unwrap();
        assert_eq!(host.cap_add, Some(vec!["NET_BIND_SERVICE".to_owned()]));
        assert_eq!(host.pids_limit, Some(256));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(
            host.tmpfs.unwrap()["/tmp"],
            "rw,nosuid,nodev,size=64m".to_owned()
        );
        assert_eq!(host.network_mode.as_deref(), Some("4f2a"));

        // Docker's defaults only when the caller asks for them.
        spec.drop_all_capabilities = false;
        spec.no_new_privileges = false;
        let host = create_body(&spec, None).host_config.unwrap();
        assert_eq!(host.cap_drop, None);
        assert_eq!(host.security_opt, None);
    }

    #[test]
    fn create_into_a_vanished_network_is_not_a_missing_image() {
        let call = Call::Create {
            name: "rtm-g1",
            image: "engine:1",
        };
        assert!(matches!(
            classify_status(&call, 404, "network rtm-net-1 not found".into()),
            Outcome::Failed(RuntimeError::NotFound { .. })
        ));
        assert!(matches!(
            classify_status(&call, 404, "No such image: engine:1".into()),
            Outcome::Failed(RuntimeError::ImageNotFound { .. })
        ));
    }

    #[test]
    fn empty_command_and_args_keep_the_images_entrypoint_and_cmd() {
        let body = create_body(&ContainerSpec::new("g1", "engine:1"), None);
        assert_eq!(body.entrypoint, None);
        assert_eq!(body.cmd, None);
        assert_eq!(body.exposed_ports, None);
    }

    #[test]
    fn docker_never_timestamps_are_none() {
        assert_eq!(parse_time(Some("0001-01-01T00:00:00Z")), None);
        assert_eq!(parse_time(None), None);
        let parsed = parse_time(Some("2024-05-07T21:09:36.123456789Z")).unwrap();
        let secs = parsed
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(secs, 1_715_116_176);
    }

    #[test]
    fn event_streams_start_a_second_before_they_were_asked_for() {
        let now = SystemTime::UNIX_EPOCH + Duration::new(1_715_116_176, 5);
        assert_eq!(events_since(now), "1715116175.000000005");
    }

    #[test]
    fn events_keep_container_id_game_and_action() {
        let message: EventMessage = serde_json::from_value(serde_json::json!({
            "Type": "container",
            "Action": "die",
            "Actor": {"ID": "9f2c", "Attributes": {LABEL_GAME: "g1", "exitCode": "0"}},
            "time": 1
        }))
        .unwrap();
        assert_eq!(
            container_event(message),
            Some(ContainerEvent {
                container_id: "9f2c".into(),
                game: Some("g1".into()),
                action: "die".into()
            })
        );
        let network: EventMessage =
            serde_json::from_value(serde_json::json!({"Type": "network", "Action": "connect"}))
                .unwrap();
        assert_eq!(container_event(network), None);
    }

    fn endpoint(ipv4: &str, ipv6: &str, network_id: &str) -> EndpointSettings {
        EndpointSettings {
            ip_address: Some(ipv4.into()),
            global_ipv6_address: Some(ipv6.into()),
            network_id: Some(network_id.into()),
            ..EndpointSettings::default()
        }
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn the_address_is_on_the_network_the_host_config_names() {
        let networks = HashMap::from([
            ("a-other".to_owned(), endpoint("172.18.0.9", "", "1111")),
            ("rtm-games".to_owned(), endpoint("172.19.0.4", "", "4f2a")),
        ]);
        assert_eq!(
            container_address(Some("rtm-games"), &networks),
            ip("172.19.0.4")
        );
        // Our creates name the network by id.
        assert_eq!(container_address(Some("4f2a"), &networks), ip("172.19.0.4"));
        let bridge = HashMap::from([("bridge".to_owned(), endpoint("172.17.0.2", "", "b"))]);
        assert_eq!(
            container_address(Some("default"), &bridge),
            ip("172.17.0.2")
        );
    }

    #[test]
    fn without_an_address_on_its_own_network_the_first_network_by_name_that_has_one_answers() {
        let networks = HashMap::from([
            ("zeta".to_owned(), endpoint("172.20.0.2", "", "3")),
            ("beta".to_owned(), endpoint("172.21.0.3", "", "2")),
            ("alpha".to_owned(), endpoint("", "", "1")),
        ]);
        assert_eq!(
            container_address(Some("alpha"), &networks),
            ip("172.21.0.3")
        );
        assert_eq!(container_address(None, &networks), ip("172.21.0.3"));
        assert_eq!(container_address(Some("gone"), &networks), ip("172.21.0.3"));
    }

    #[test]
    fn the_address_is_ipv4_else_global_ipv6_else_none() {
        let v6 = HashMap::from([("n".to_owned(), endpoint("", "fd00::5", "1"))]);
        assert_eq!(container_address(Some("n"), &v6), ip("fd00::5"));
        let both = HashMap::from([("n".to_owned(), endpoint("10.0.0.7", "fd00::5", "1"))]);
        assert_eq!(container_address(Some("n"), &both), ip("10.0.0.7"));
        let garbage = HashMap::from([("n".to_owned(), endpoint("not-an-ip", "", "1"))]);
        assert_eq!(container_address(Some("n"), &garbage), None);
        let stopped = HashMap::from([("n".to_owned(), endpoint("", "", "1"))]);
        assert_eq!(container_address(Some("n"), &stopped), None);
        assert_eq!(container_address(Some("host"), &HashMap::new()), None);
    }

    fn binding(ip: &str, port: &str) -> DockerPortBinding {
        DockerPortBinding {
            host_ip: Some(ip.into()),
            host_port: Some(port.into()),
        }
    }

    fn published(
        container_port: u16,
        protocol: Protocol,
        ip: Option<&str>,
        host_port: u16,
    ) -> PublishedPort {
        PublishedPort {
            container_port,
            protocol,
            host_ip: ip.map(str::to_owned),
            host_port,
        }
    }

    #[test]
    fn published_ports_list_each_host_binding_sorted_and_once() {
        let ports: PortMap = HashMap::from([
            (
                "7000/tcp".to_owned(),
                Some(vec![
                    binding("::", "17000"),
                    binding("0.0.0.0", "17000"),
                    binding("0.0.0.0", "17000"),
                ]),
            ),
            ("7001/udp".to_owned(), Some(vec![binding("", "17001")])),
            // Exposed only: no binding.
            ("8080/tcp".to_owned(), None),
            ("8081/tcp".to_owned(), Some(Vec::new())),
            // Not ours to report.
            (
                "9000/sctp".to_owned(),
                Some(vec![binding("0.0.0.0", "19000")]),
            ),
            ("7002/tcp".to_owned(), Some(vec![binding("0.0.0.0", "")])),
            (
                "7003/tcp".to_owned(),
                Some(vec![binding("0.0.0.0", "99999")]),
            ),
            ("junk/tcp".to_owned(), Some(vec![binding("0.0.0.0", "1")])),
        ]);
        assert_eq!(
            published_ports(&ports),
            [
                published(7000, Protocol::Tcp, Some("0.0.0.0"), 17000),
                published(7000, Protocol::Tcp, Some("::"), 17000),
                published(7001, Protocol::Udp, None, 17001),
            ]
        );
        assert_eq!(published_ports(&HashMap::new()), []);
    }

    fn health(status: HealthStatusEnum, streak: i64, log: &[(&str, i64)]) -> Health {
        Health {
            status: Some(status),
            failing_streak: Some(streak),
            log: Some(
                log.iter()
                    .map(|(output, code)| bollard::models::HealthcheckResult {
                        output: Some((*output).to_owned()),
                        exit_code: Some(*code),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn docker_health_reports_status_streak_and_the_last_check() {
        let unhealthy = health(
            HealthStatusEnum::UNHEALTHY,
            2,
            &[("", 0), ("first failure\n", 1), ("  no marker\n", 1)],
        );
        assert_eq!(
            docker_health(Some(unhealthy)),
            Some(DockerHealth {
                status: DockerHealthStatus::Unhealthy,
                failing_streak: 2,
                last_output: Some("no marker".into()),
                last_exit_code: Some(1),
            })
        );
        let starting = health(HealthStatusEnum::STARTING, 0, &[]);
        assert_eq!(
            docker_health(Some(starting)),
            Some(DockerHealth {
                status: DockerHealthStatus::Starting,
                failing_streak: 0,
                last_output: None,
                last_exit_code: None,
            })
        );
        let healthy = docker_health(Some(health(HealthStatusEnum::HEALTHY, 0, &[("\n", 0)])));
        assert_eq!(
            healthy.map(|h| (h.status, h.last_output)),
            Some((DockerHealthStatus::Healthy, None))
        );
    }

    #[test]
    fn no_healthcheck_means_no_docker_health() {
        assert_eq!(docker_health(None), None);
        assert_eq!(
            docker_health(Some(health(HealthStatusEnum::NONE, 0, &[]))),
            None
        );
        assert_eq!(
            docker_health(Some(health(HealthStatusEnum::EMPTY, 0, &[]))),
            None
        );
        assert_eq!(docker_health(Some(Health::default())), None);
    }

    #[test]
    fn a_long_health_output_is_cut_at_a_character_boundary_within_512_bytes() {
        // 511 ASCII bytes then a two-byte character straddling the limit.
        let output = format!("{}é and more", "x".repeat(511));
        let parsed = docker_health(Some(health(
            HealthStatusEnum::UNHEALTHY,
            9,
            &[(&output, 1)],
        )))
        .and_then(|h| h.last_output)
        .unwrap();
        assert_eq!(parsed, "x".repeat(511));
        let streak = docker_health(Some(health(HealthStatusEnum::UNHEALTHY, -3, &[])))
            .map(|h| h.failing_streak);
        assert_eq!(streak, Some(0), "a negative streak is no streak");
    }

    #[test]
    fn inspect_reads_address_ports_and_health_from_dockers_json() {
        let response: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "Id": "9f2c",
            "Name": "/rtm-abc123-g1",
            "State": {
                "Status": "running",
                "Health": {
                    "Status": "healthy",
                    "FailingStreak": 0,
                    "Log": [{"Start": "2024-05-07T21:09:36Z", "End": "2024-05-07T21:09:36Z", "ExitCode": 0, "Output": ""}]
                }
            },
            "HostConfig": {"NetworkMode": "4f2a"},
            "NetworkSettings": {
                "Ports": {"7000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "17000"}], "8080/tcp": null},
                "Networks": {"rtm-games": {"NetworkID": "4f2a", "IPAddress": "172.19.0.4", "GlobalIPv6Address": ""}}
            }
        }))
        .unwrap();
        let info = container_info(response);
        assert_eq!(info.address, ip("172.19.0.4"));
        assert_eq!(
            info.ports,
            [published(7000, Protocol::Tcp, Some("0.0.0.0"), 17000)]
        );
        assert_eq!(
            info.health.map(|h| (h.status, h.last_exit_code)),
            Some((DockerHealthStatus::Healthy, Some(0)))
        );
    }

    #[test]
    fn exec_output_keeps_the_first_4_kib_as_text() {
        let mut kept = Vec::new();
        let chunk = |text: &str| LogOutput::StdOut {
            message: text.as_bytes().to_vec().into(),
        };
        keep_output(&mut kept, &chunk(&"a".repeat(4000)));
        keep_output(
            &mut kept,
            &LogOutput::StdErr {
                message: "b".repeat(200).into_bytes().into(),
            },
        );
        keep_output(&mut kept, &chunk("dropped"));
        assert_eq!(kept.len(), EXEC_OUTPUT_LIMIT);
        let text = output_text(&kept);
        assert!(text.starts_with(&"a".repeat(4000)) && text.ends_with(&"b".repeat(96)));
        // Invalid UTF-8 becomes U+FFFD (three bytes for one) and is cut again.
        let invalid = vec![0xff; EXEC_OUTPUT_LIMIT];
        let text = output_text(&invalid);
        assert!(text.len() <= EXEC_OUTPUT_LIMIT && text.chars().all(|c| c == '\u{fffd}'));
    }

    #[test]
    fn exec_in_a_stopped_or_missing_container_is_conflict_or_not_found() {
        let call = Call::Exec { id: "rtm-g1" };
        assert_eq!(
            failed(&call, 409, "Container 9f2c is not running"),
            Outcome::Failed(RuntimeError::Conflict {
                message: "Container 9f2c is not running".into()
            })
        );
        assert!(matches!(
            failed(
                &call,
                409,
                "Container 9f2c is paused, unpause the container before exec"
            ),
            Outcome::Failed(RuntimeError::Conflict { .. })
        ));
        assert!(matches!(
            failed(&call, 404, "No such container: rtm-g1"),
            Outcome::Failed(RuntimeError::NotFound { .. })
        ));
        assert_eq!(
            failed(
                &Call::InspectExec { exec_id: "e1" },
                404,
                "No such exec instance: e1"
            ),
            Outcome::Absent
        );
        assert_eq!(call.op(), RuntimeOp::Exec);
        assert_eq!(Call::InspectExec { exec_id: "e1" }.op(), RuntimeOp::Exec);
    }

    async fn runtime_at(path: &std::path::Path, timeout: Duration) -> DockerRuntime {
        let host = format!("unix://{}", path.display());
        DockerRuntime::connect(Some(&host), timeout).await.unwrap()
    }

    #[tokio::test]
    async fn a_missing_socket_makes_calls_unreachable_not_connect() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = runtime_at(&dir.path().join("docker.sock"), Duration::from_secs(1)).await;
        let err = runtime.ping().await.unwrap_err();
        assert!(matches!(err, RuntimeError::Unreachable { .. }), "{err:?}");
        let mut events = runtime.events();
        let first = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("the event stream of an unreachable daemon must fail at once");
        assert!(
            matches!(first, Some(Err(RuntimeError::Unreachable { .. }))),
            "{first:?}"
        );
        assert!(
            events.next().await.is_none(),
            "the stream ends after its error"
        );
    }

    #[tokio::test]
    async fn a_stale_socket_file_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let runtime = runtime_at(&path, Duration::from_secs(1)).await;
        let err = tokio::time::timeout(Duration::from_secs(5), runtime.ping())
            .await
            .expect("a refused connection must fail at once, not wait for the timeout")
            .unwrap_err();
        assert!(matches!(err, RuntimeError::Unreachable { .. }), "{err:?}");
        assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
    }

    #[tokio::test]
    async fn a_daemon_that_never_answers_times_out_with_outcome_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        // Accept and hold connections without ever answering.
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let runtime = runtime_at(&path, Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(5), runtime.start("rtm-g1"))
            .await
            .expect("our own deadline must fire, not bollard's whole-second one")
            .unwrap_err();
        assert!(err.outcome_unknown(), "{err:?}");
        assert!(
            matches!(&err, RuntimeError::Timeout { operation } if operation.as_str() == "connect (API version negotiation)"
                || operation.as_str() == "start rtm-g1"),
            "{err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        server.abort();
    }
}
