//! One probe of a game's health check (`http`, `tcp`, `exec` or `docker`) against its
//! container, and what it found ([`ProbeOutcome`]): when to probe and what the results add up
//! to is the prober's business, not this file's.
//!
//! Every probe is bounded by the check's `timeout`: the http and tcp probes by a timer around
//! the whole exchange, the exec probe by the runtime (Docker cannot kill an exec, so one that
//! outlives its timeout is handed back to the caller in [`ProbeOutcome::running_exec`]), the
//! docker probe by the runtime's own call timeout (it only reads Docker's verdict).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use rtm_core::model::health::{HealthCheck, HttpProbe, Probe, TcpProbe};

use crate::runtime::{ContainerRuntime, DockerHealthStatus, RuntimeError};

/// The `User-Agent` of http probes, so that a game's logs can tell them from players.
const USER_AGENT_VALUE: &str = "rtmanager-probe";

/// The most bytes of a response head (status line and headers) an http probe reads. A health
/// endpoint answers with a few short headers; 16 KiB leaves room for a proxy's cookies and
/// stops a server streaming headers forever (hyper's floor for its read buffer is 8 KiB).
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// The most characters of a command's (or Docker's) output a message quotes: enough for the
/// line that says what went wrong.
const MAX_OUTPUT_CHARS: usize = 200;

/// The most characters of a message: it ends up in `status.health.message` and in
/// `rtctl describe`, so it must stay one readable line.
const MAX_MESSAGE_CHARS: usize = 300;

/// Where and what to probe.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    /// The container (by id) the exec and docker probes ask the runtime about.
    pub(crate) container_id: &'a str,
    /// Its address on its Docker network, for the http and tcp probes; `None` when it is on
    /// none.
    pub(crate) address: Option<IpAddr>,
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProbeOutcome {
    /// Whether the probe passed.
    pub(crate) passed: bool,
    /// For people, one line of at most 300 characters: on failure what went wrong (e.g.
    /// `http 503 from 172.17.0.5:8080/healthz`, `timeout after 2s`,
    /// `connection refused by 172.17.0.5:7000`, `exec exited 1: <output>`,
    /// `docker: unhealthy (2 failures in a row): <last output>`); on success a short text.
    pub(crate) message: String,
    /// For the docker kind: Docker's failing streak (the prober uses it as the consecutive
    /// failure count); `None` for the other kinds, and when Docker gave no verdict (no
    /// HEALTHCHECK, container gone, Docker unreachable).
    pub(crate) docker_failing_streak: Option<u32>,
    /// Docker said `starting` (no verdict yet; `passed` is false) — docker kind only.
    pub(crate) pending: bool,
    /// The exec that outlived its timeout, or the previous one still running (exec kind):
    /// the next probe of this game must not start another exec while
    /// [`ContainerRuntime::exec_running`] says it still runs.
    pub(crate) running_exec: Option<String>,
}

impl ProbeOutcome {
    /// A pass, saying `message`.
    pub(crate) fn pass(message: impl fmt::Display) -> ProbeOutcome {
        ProbeOutcome {
            passed: true,
            message: one_line(&message.to_string(), MAX_MESSAGE_CHARS),
            docker_failing_streak: None,
            pending: false,
            running_exec: None,
        }
    }

    /// A failure, saying `message`.
    pub(crate) fn failed(message: impl fmt::Display) -> ProbeOutcome {
        ProbeOutcome {
            passed: false,
            message: one_line(&message.to_string(), MAX_MESSAGE_CHARS),
            docker_failing_streak: None,
            pending: false,
            running_exec: None,
        }
    }

    fn from_result(result: Result<String, Failure>) -> ProbeOutcome {
        match result {
            Ok(message) => ProbeOutcome::pass(message),
            Err(failure) => ProbeOutcome::failed(&failure),
        }
    }

    fn with_running_exec(mut self, exec_id: Option<String>) -> ProbeOutcome {
        self.running_exec = exec_id;
        self
    }

    fn with_docker_streak(mut self, streak: u32) -> ProbeOutcome {
        self.docker_failing_streak = Some(streak);
        self
    }
}

/// Why a probe failed; its `Display` is the message people read, causes included (so no
/// variant has a `source`: the message is all that is kept of it).
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The check names no probe, or several (validation allows exactly one).
    #[error("the health check does not name exactly one probe")]
    NoSingleProbe,
    /// http or tcp, and the container is on no network.
    #[error("the container has no address")]
    NoAddress,
    /// The probe did not end within the check's timeout.
    #[error("timeout after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// Nothing listens on the port.
    #[error("connection refused by {0}")]
    Refused(SocketAddr),
    /// Any other failure to connect (no route, reset, ...).
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// The socket's error.
        error: io::Error,
    },
    /// The path does not make a request target (validation should have caught it).
    #[error("http path {path:?} is not a valid request target")]
    BadPath {
        /// The path of the check.
        path: String,
    },
    /// The exchange failed: garbage for an answer, a head too large, the connection closed.
    #[error("http from {addr}{path}: {}", chain(.error))]
    Http {
        /// Where.
        addr: SocketAddr,
        /// The path asked for.
        path: String,
        /// hyper's error.
        error: hyper::Error,
    },
    /// An answer that is neither 2xx nor 3xx.
    #[error("http {} from {addr}{path}", .status.as_u16())]
    HttpStatus {
        /// The status of the answer.
        status: StatusCode,
        /// Where.
        addr: SocketAddr,
        /// The path asked for.
        path: String,
    },
    /// The exec probe of the previous round has not ended: another would pile up.
    #[error("the previous exec probe is still running")]
    ExecStillRunning,
    /// Whether the previous exec probe still runs cannot be told.
    #[error("cannot tell whether the previous exec probe still runs: {0}")]
    ExecRunningUnknown(RuntimeError),
    /// The command ended with a non-zero code.
    #[error("exec exited {code}{}", quoted(.output))]
    ExecExit {
        /// Its exit code.
        code: i64,
        /// The start of its output.
        output: String,
    },
    /// The runtime could not run the command.
    #[error("exec failed: {0}")]
    Exec(RuntimeError),
    /// Docker says the HEALTHCHECK fails.
    #[error(
        "docker: unhealthy ({streak} {} in a row){}",
        if *.streak == 1 { "failure" } else { "failures" },
        quoted(.output)
    )]
    DockerUnhealthy {
        /// Docker's failing streak.
        streak: u32,
        /// The start of the last check's output.
        output: String,
    },
    /// Docker has no verdict yet (within the image's start period).
    #[error("docker: starting (no verdict yet)")]
    DockerStarting,
    /// The container's image has no HEALTHCHECK to report on.
    #[error("the image declares no HEALTHCHECK")]
    NoHealthcheck,
    /// The container no longer exists.
    #[error("the container is gone")]
    ContainerGone,
    /// Docker could not be asked.
    #[error("docker: {0}")]
    Inspect(RuntimeError),
}

/// Runs the probe of `check` against `target` once, bounded by `check.timeout`.
///
/// `previous_exec` is the [`ProbeOutcome::running_exec`] of this game's last probe: while it
/// still runs, an exec probe fails without starting another.
pub(crate) async fn probe(
    check: &HealthCheck,
    target: &Target<'_>,
    runtime: &dyn ContainerRuntime,
    previous_exec: Option<&str>,
) -> ProbeOutcome {
    let timeout = check.timeout;
    match check.probe() {
        Some(Probe::Http(http)) => {
            ProbeOutcome::from_result(http_probe(http, target.address, timeout).await)
        }
        Some(Probe::Tcp(tcp)) => {
            ProbeOutcome::from_result(tcp_probe(tcp, target.address, timeout).await)
        }
        Some(Probe::Exec(exec)) => {
            exec_probe(&exec.command, target, runtime, timeout, previous_exec).await
        }
        Some(Probe::Docker) => docker_probe(target, runtime).await,
        None => ProbeOutcome::failed(Failure::NoSingleProbe),
    }
}

/// GET `path` on `address:port`: passes on 2xx or 3xx (redirects are not followed). Reads the
/// status line and headers only; the body is dropped with the connection.
async fn http_probe(
    http: &HttpProbe,
    address: Option<IpAddr>,
    timeout: Duration,
) -> Result<String, Failure> {
    let addr = SocketAddr::new(address.ok_or(Failure::NoAddress)?, http.port);
    let status = bounded(timeout, http_get(addr, &http.path)).await?;
    if status.is_success() || status.is_redirection() {
        Ok(format!("http {} from {addr}{}", status.as_u16(), http.path))
    } else {
        Err(Failure::HttpStatus {
            status,
            addr,
            path: http.path.clone(),
        })
    }
}

/// One request on a fresh connection, `Connection: close`; the status of the answer.
async fn http_get(addr: SocketAddr, path: &str) -> Result<StatusCode, Failure> {
    let http_failure = |error| Failure::Http {
        addr,
        path: path.to_owned(),
        error,
    };
    let request = Request::get(path)
        .header(HOST, host_header(addr))
        .header(USER_AGENT, USER_AGENT_VALUE)
        .header(CONNECTION, "close")
        .body(String::new())
        .map_err(|_| Failure::BadPath {
            path: path.to_owned(),
        })?;
    let stream = connect(addr).await?;
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_RESPONSE_HEAD)
        .max_header_size(MAX_RESPONSE_HEAD)
        .handshake::<_, String>(TokioIo::new(stream))
        .await
        .map_err(http_failure)?;
    // The connection is driven here, not in a task of its own: once the head is in, both are
    // dropped, which closes the socket and leaves the body unread.
    let mut response = std::pin::pin!(sender.send_request(request));
    let mut connection = std::pin::pin!(connection);
    let response = tokio::select! {
        response = &mut response => response,
        ended = &mut connection => match ended {
            Err(error) => return Err(http_failure(error)),
            // The connection may end once it has handed the answer over (or failed to get
            // one): the request's future then has its result at once.
            Ok(()) => response.await,
        },
    };
    response
        .map(|response| response.status())
        .map_err(http_failure)
}

/// Connects to `address:port`: passes when the connection opens (it is closed at once).
async fn tcp_probe(
    tcp: &TcpProbe,
    address: Option<IpAddr>,
    timeout: Duration,
) -> Result<String, Failure> {
    let addr = SocketAddr::new(address.ok_or(Failure::NoAddress)?, tcp.port);
    drop(bounded(timeout, connect(addr)).await?);
    Ok(format!("tcp {addr} open"))
}

/// Runs `command` in the container: passes when it exits 0.
async fn exec_probe(
    command: &[String],
    target: &Target<'_>,
    runtime: &dyn ContainerRuntime,
    timeout: Duration,
    previous_exec: Option<&str>,
) -> ProbeOutcome {
    if let Some(previous) = previous_exec {
        // Docker cannot kill an exec: starting another beside a hung one would pile them up
        // in the container, one per interval.
        let still = |failure: &Failure| {
            ProbeOutcome::failed(failure).with_running_exec(Some(previous.to_owned()))
        };
        match runtime.exec_running(previous).await {
            Ok(false) => {}
            Ok(true) => return still(&Failure::ExecStillRunning),
            Err(error) => return still(&Failure::ExecRunningUnknown(error)),
        }
    }
    // The runtime bounds the call: it waits at most `timeout` for the command, and its own
    // call timeout for Docker. A timer here would lose the exec's id when it fired.
    match runtime.exec(target.container_id, command, timeout).await {
        Ok(outcome) => match outcome.exit_code {
            Some(0) => ProbeOutcome::pass("exec exited 0"),
            Some(code) => ProbeOutcome::failed(Failure::ExecExit {
                code,
                output: one_line(&outcome.output, MAX_OUTPUT_CHARS),
            }),
            None => ProbeOutcome::failed(Failure::Timeout(timeout))
                .with_running_exec(Some(outcome.exec_id)),
        },
        Err(error) => ProbeOutcome::failed(Failure::Exec(error)),
    }
}

/// Reads Docker's verdict on the image's HEALTHCHECK: passes while it says healthy.
async fn docker_probe(target: &Target<'_>, runtime: &dyn ContainerRuntime) -> ProbeOutcome {
    let info = match runtime.inspect_container(target.container_id).await {
        Ok(Some(info)) => info,
        Ok(None) | Err(RuntimeError::NotFound { .. }) => {
            return ProbeOutcome::failed(Failure::ContainerGone);
        }
        Err(error) => return ProbeOutcome::failed(Failure::Inspect(error)),
    };
    let Some(health) = info.health else {
        return ProbeOutcome::failed(Failure::NoHealthcheck);
    };
    let outcome = match health.status {
        DockerHealthStatus::Healthy => ProbeOutcome::pass("docker: healthy"),
        DockerHealthStatus::Starting => ProbeOutcome {
            pending: true,
            ..ProbeOutcome::failed(Failure::DockerStarting)
        },
        DockerHealthStatus::Unhealthy => ProbeOutcome::failed(Failure::DockerUnhealthy {
            streak: health.failing_streak,
            output: one_line(
                health.last_output.as_deref().unwrap_or_default(),
                MAX_OUTPUT_CHARS,
            ),
        }),
    };
    outcome.with_docker_streak(health.failing_streak)
}

/// Opens a TCP connection, naming a refusal as such.
async fn connect(addr: SocketAddr) -> Result<TcpStream, Failure> {
    TcpStream::connect(addr).await.map_err(|error| {
        if error.kind() == io::ErrorKind::ConnectionRefused {
            Failure::Refused(addr)
        } else {
            Failure::Connect { addr, error }
        }
    })
}

/// `work`, or [`Failure::Timeout`] once `timeout` has passed.
async fn bounded<T>(
    timeout: Duration,
    work: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(Failure::Timeout(timeout)))
}

/// The `Host` header for `addr`: `172.17.0.5:8080`, `[fd00::5]:8080`.
fn host_header(addr: SocketAddr) -> String {
    // SocketAddr's Display brackets IPv6 addresses (and has no scope id here: the address
    // comes from Docker without one).
    addr.to_string()
}

/// `: <output>`, or nothing when there is no output.
fn quoted(output: &str) -> String {
    if output.is_empty() {
        String::new()
    } else {
        format!(": {output}")
    }
}

/// An error and its sources, `a: b: c` (hyper's own text is terse: `connection error`).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `text` on one line (control characters, newlines among them, become spaces; runs of
/// whitespace one space), trimmed, and at most `max` characters: cut ones end in `…`.
fn one_line(text: &str, max: usize) -> String {
    let mut line = String::with_capacity(text.len().min(max * 4));
    let mut count = 0;
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            pending_space = !line.is_empty();
            continue;
        }
        let needed = usize::from(pending_space) + 1;
        if count + needed > max {
            // Room for the ellipsis: drop what it would overflow.
            while count + 1 > max {
                if line.pop().is_none() {
                    break;
                }
                count -= 1;
            }
            // A cut right after a space: `a …` reads worse than `a…`.
            while line.ends_with(' ') {
                line.pop();
            }
            if max > 0 {
                line.push('…');
            }
            return line;
        }
        if pending_space {
            line.push(' ');
            pending_space = false;
        }
        line.push(c);
        count += needed;
    }
    line
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};
    use std::sync::Mutex;
    use std::time::Instant;

    use async_trait::async_trait;
    use futures::stream::{self, BoxStream, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    use rtm_core::model::health::ProbeKind;

    use super::*;
    use crate::runtime::{
        ContainerEvent, ContainerInfo, ContainerSpec, ContainerState, DockerHealth, ExecOutcome,
        ImageInfo,
    };

    const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// A short real timeout: the servers below run on real sockets.
    const SHORT: Duration = Duration::from_millis(200);

    /// How far past its own timeout a probe may end before the test calls it hung.
    const SLACK: Duration = Duration::from_secs(2);

    fn check(kind: ProbeKind, timeout: Duration) -> HealthCheck {
        let mut check = HealthCheck::of(kind);
        check.timeout = timeout;
        check
    }

    fn http_check(port: u16, path: &str) -> HealthCheck {
        check(
            ProbeKind::Http {
                port,
                path: path.to_owned(),
            },
            SHORT,
        )
    }

    /// An http probe of `path` on the loopback `port`.
    async fn get(port: u16, path: &str) -> ProbeOutcome {
        run(
            &http_check(port, path),
            &at(Some(LOCALHOST)),
            &no_runtime(),
            None,
        )
        .await
    }

    fn tcp_check(port: u16) -> HealthCheck {
        check(ProbeKind::Tcp { port }, SHORT)
    }

    fn exec_check() -> HealthCheck {
        check(
            ProbeKind::Exec {
                command: vec!["/bin/check".to_owned(), "--quick".to_owned()],
            },
            Duration::from_secs(2),
        )
    }

    fn at(address: Option<IpAddr>) -> Target<'static> {
        Target {
            container_id: "c1",
            address,
        }
    }

    /// Runs one probe, failing the test when it outlives its own timeout.
    async fn run(
        check: &HealthCheck,
        target: &Target<'_>,
        runtime: &dyn ContainerRuntime,
        previous_exec: Option<&str>,
    ) -> ProbeOutcome {
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            check.timeout + SLACK,
            probe(check, target, runtime, previous_exec),
        )
        .await
        .expect("the probe outlived its timeout: the bound around it is missing");
        assert!(started.elapsed() < check.timeout + SLACK);
        assert!(
            outcome.message.chars().count() <= MAX_MESSAGE_CHARS,
            "{outcome:?}"
        );
        assert!(!outcome.message.contains(['\n', '\r']), "{outcome:?}");
        outcome
    }

    /// A server that takes one connection, reads the request head, sends `answer` (unless
    /// `None`: then it holds the connection without a word) and reports the head it read.
    async fn serve_once(answer: Option<Vec<u8>>) -> (u16, oneshot::Receiver<String>) {
        let listener = TcpListener::bind((LOCALHOST, 0))
            .await
            .expect("binding a port on 127.0.0.1");
        let port = listener.local_addr().expect("a bound address").port();
        let (report, head) = oneshot::channel();
        tokio::spawn(async move {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut read = Vec::new();
            let mut buf = [0u8; 1024];
            while !read.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read.extend_from_slice(&buf[..n]),
                }
            }
            let _ = report.send(String::from_utf8_lossy(&read).into_owned());
            match answer {
                Some(answer) => {
                    let _ = socket.write_all(&answer).await;
                    let _ = socket.shutdown().await;
                }
                // Hold the connection until the client gives up.
                None => while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {},
            }
        });
        (port, head)
    }

    fn answer(status: &str) -> Option<Vec<u8>> {
        Some(
            format!("HTTP/1.1 {status}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
                .into_bytes(),
        )
    }

    /// A port on 127.0.0.1 nothing listens on (it was bound a moment ago, then let go).
    async fn closed_port() -> u16 {
        let listener = TcpListener::bind((LOCALHOST, 0))
            .await
            .expect("binding a port on 127.0.0.1");
        listener.local_addr().expect("a bound address").port()
    }

    fn no_runtime() -> ScriptedRuntime {
        ScriptedRuntime::default()
    }

    #[tokio::test]
    async fn http_200_passes() {
        let (port, _) = serve_once(answer("200 OK")).await;
        let outcome = get(port, "/healthz").await;
        assert!(outcome.passed, "{outcome:?}");
        assert_eq!(
            outcome.message,
            format!("http 200 from 127.0.0.1:{port}/healthz")
        );
        assert_eq!(outcome.docker_failing_streak, None);
        assert!(!outcome.pending);
        assert_eq!(outcome.running_exec, None);
    }

    #[tokio::test]
    async fn http_204_and_301_pass_and_redirects_are_not_followed() {
        for status in ["204 No Content", "301 Moved Permanently"] {
            let reply = format!(
                "HTTP/1.1 {status}\r\nLocation: http://127.0.0.1:1/elsewhere\r\nContent-Length: 0\r\n\r\n"
            );
            let (port, _) = serve_once(Some(reply.into_bytes())).await;
            let outcome = get(port, "/").await;
            assert!(outcome.passed, "{status}: {outcome:?}");
        }
    }

    #[tokio::test]
    async fn http_404_and_503_fail_naming_the_status() {
        for (status, code) in [("404 Not Found", 404), ("503 Service Unavailable", 503)] {
            let (port, _) = serve_once(answer(status)).await;
            let outcome = get(port, "/healthz").await;
            assert!(!outcome.passed, "{status}: {outcome:?}");
            assert_eq!(
                outcome.message,
                format!("http {code} from 127.0.0.1:{port}/healthz")
            );
        }
    }

    #[tokio::test]
    async fn http_server_that_never_answers_fails_with_a_timeout_in_time() {
        let (port, _) = serve_once(None).await;
        let started = Instant::now();
        let outcome = get(port, "/").await;
        assert!(!outcome.passed);
        assert_eq!(outcome.message, "timeout after 200ms");
        assert!(started.elapsed() >= SHORT, "gave up before its timeout");
    }

    #[tokio::test]
    async fn http_connection_refused_fails_naming_the_address() {
        let port = closed_port().await;
        let outcome = get(port, "/").await;
        assert!(!outcome.passed);
        assert_eq!(
            outcome.message,
            format!("connection refused by 127.0.0.1:{port}")
        );
    }

    #[tokio::test]
    async fn http_garbage_for_an_answer_fails_cleanly() {
        let (port, _) = serve_once(Some(b"\x00\xffSSH-2.0-not http\r\n\r\n".to_vec())).await;
        let outcome = get(port, "/healthz").await;
        assert!(!outcome.passed);
        assert!(
            outcome
                .message
                .starts_with(&format!("http from 127.0.0.1:{port}/healthz: ")),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn http_huge_headers_fail_with_a_bounded_message() {
        let mut reply = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..2000 {
            reply.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(64)).as_bytes());
        }
        reply.extend_from_slice(b"\r\n");
        let (port, _) = serve_once(Some(reply)).await;
        let outcome = get(port, "/").await;
        assert!(!outcome.passed, "{outcome:?}");
        assert!(outcome.message.starts_with("http from "), "{outcome:?}");
    }

    #[tokio::test]
    async fn http_request_carries_the_path_host_user_agent_and_connection_close() {
        let (port, head) = serve_once(answer("200 OK")).await;
        let outcome = get(port, "/healthz?deep=1").await;
        assert!(outcome.passed, "{outcome:?}");
        let head = tokio::time::timeout(SLACK, head)
            .await
            .expect("the server never reported the request it read")
            .expect("the server dropped its report");
        let lines: Vec<String> = head.lines().map(str::to_ascii_lowercase).collect();
        assert_eq!(lines[0], "get /healthz?deep=1 http/1.1", "{head}");
        assert!(lines.contains(&format!("host: 127.0.0.1:{port}")), "{head}");
        assert!(
            lines.contains(&"user-agent: rtmanager-probe".to_owned()),
            "{head}"
        );
        assert!(lines.contains(&"connection: close".to_owned()), "{head}");
    }

    #[test]
    fn host_header_brackets_ipv6_addresses() {
        let v6: IpAddr = "fd00::5".parse().expect("an IPv6 address");
        assert_eq!(host_header(SocketAddr::new(v6, 8080)), "[fd00::5]:8080");
        let v4: IpAddr = "172.17.0.5".parse().expect("an IPv4 address");
        assert_eq!(host_header(SocketAddr::new(v4, 8080)), "172.17.0.5:8080");
    }

    #[tokio::test]
    async fn http_and_tcp_fail_when_the_container_has_no_address() {
        for check in [http_check(8080, "/"), tcp_check(7000)] {
            let outcome = run(&check, &at(None), &no_runtime(), None).await;
            assert!(!outcome.passed);
            assert_eq!(outcome.message, "the container has no address");
        }
    }

    #[tokio::test]
    async fn tcp_open_port_passes() {
        let listener = TcpListener::bind((LOCALHOST, 0))
            .await
            .expect("binding a port on 127.0.0.1");
        let port = listener.local_addr().expect("a bound address").port();
        let outcome = run(&tcp_check(port), &at(Some(LOCALHOST)), &no_runtime(), None).await;
        assert!(outcome.passed, "{outcome:?}");
        assert_eq!(outcome.message, format!("tcp 127.0.0.1:{port} open"));
    }

    #[tokio::test]
    async fn tcp_closed_port_fails() {
        let port = closed_port().await;
        let outcome = run(&tcp_check(port), &at(Some(LOCALHOST)), &no_runtime(), None).await;
        assert!(!outcome.passed);
        assert_eq!(
            outcome.message,
            format!("connection refused by 127.0.0.1:{port}")
        );
    }

    #[tokio::test]
    async fn exec_exit_0_passes() {
        let runtime = no_runtime().exec_answers(Ok(Some(0)), "all good\n");
        let outcome = run(&exec_check(), &at(None), &runtime, None).await;
        assert!(outcome.passed, "{outcome:?}");
        assert_eq!(outcome.message, "exec exited 0");
        assert_eq!(outcome.running_exec, None);
        assert_eq!(
            runtime.calls(),
            ["exec c1 /bin/check --quick (2s)".to_owned()]
        );
    }

    #[tokio::test]
    async fn exec_exit_1_fails_quoting_its_output_on_one_line() {
        let runtime = no_runtime().exec_answers(Ok(Some(1)), "db down\nretry later\n");
        let outcome = run(&exec_check(), &at(None), &runtime, None).await;
        assert!(!outcome.passed);
        assert_eq!(outcome.message, "exec exited 1: db down retry later");
    }

    #[tokio::test]
    async fn exec_long_output_is_cut() {
        let runtime = no_runtime().exec_answers(Ok(Some(2)), &"é".repeat(5000));
        let outcome = run(&exec_check(), &at(None), &runtime, None).await;
        assert!(!outcome.passed);
        let output = outcome
            .message
            .strip_prefix("exec exited 2: ")
            .expect("the exit code, then the output");
        assert_eq!(output.chars().count(), MAX_OUTPUT_CHARS);
        assert!(output.ends_with('…'));
    }

    #[tokio::test]
    async fn exec_that_hangs_fails_with_a_timeout_and_hands_back_its_id() {
        let runtime = no_runtime().exec_answers(Ok(None), "");
        let outcome = run(&exec_check(), &at(None), &runtime, None).await;
        assert!(!outcome.passed);
        assert_eq!(outcome.message, "timeout after 2s");
        assert_eq!(outcome.running_exec.as_deref(), Some("exec-1"));
    }

    #[tokio::test]
    async fn exec_previous_still_running_fails_without_starting_another() {
        let runtime = no_runtime().exec_running_answers(Ok(true));
        let outcome = run(&exec_check(), &at(None), &runtime, Some("exec-1")).await;
        assert!(!outcome.passed);
        assert_eq!(outcome.message, "the previous exec probe is still running");
        assert_eq!(outcome.running_exec.as_deref(), Some("exec-1"));
        assert_eq!(runtime.calls(), ["exec_running exec-1".to_owned()]);
    }

    #[tokio::test]
    async fn exec_previous_that_ended_lets_the_next_one_run() {
        let runtime = no_runtime()
            .exec_running_answers(Ok(false))
            .exec_answers(Ok(Some(0)), "");
        let outcome = run(&exec_check(), &at(None), &runtime, Some("exec-1")).await;
        assert!(outcome.passed, "{outcome:?}");
        assert_eq!(outcome.running_exec, None);
        assert_eq!(runtime.calls().len(), 2, "{:?}", runtime.calls());
    }

    #[tokio::test]
    async fn exec_previous_unknown_fails_and_keeps_watching_it() {
        let runtime = no_runtime().exec_running_answers(Err(unreachable()));
        let outcome = run(&exec_check(), &at(None), &runtime, Some("exec-1")).await;
        assert!(!outcome.passed);
        assert!(
            outcome
                .message
                .starts_with("cannot tell whether the previous exec probe still runs: "),
            "{outcome:?}"
        );
        assert_eq!(outcome.running_exec.as_deref(), Some("exec-1"));
        assert_eq!(runtime.calls(), ["exec_running exec-1".to_owned()]);
    }

    #[tokio::test]
    async fn exec_the_runtime_refuses_fails_with_its_error() {
        let runtime = no_runtime().exec_answers(
            Err(RuntimeError::Conflict {
                message: "container c1 is not running".to_owned(),
            }),
            "",
        );
        let outcome = run(&exec_check(), &at(None), &runtime, None).await;
        assert!(!outcome.passed);
        assert_eq!(
            outcome.message,
            "exec failed: conflict: container c1 is not running"
        );
        assert_eq!(outcome.running_exec, None);
    }

    fn docker_check() -> HealthCheck {
        HealthCheck::of(ProbeKind::Docker)
    }

    fn health(status: DockerHealthStatus, streak: u32, output: &str) -> Option<DockerHealth> {
        Some(DockerHealth {
            status,
            failing_streak: streak,
            last_output: Some(output.to_owned()),
            last_exit_code: Some(i64::from(streak > 0)),
        })
    }

    #[tokio::test]
    async fn docker_healthy_passes() {
        let runtime = no_runtime().container(health(DockerHealthStatus::Healthy, 0, "ok"));
        let outcome = run(&docker_check(), &at(None), &runtime, None).await;
        assert!(outcome.passed, "{outcome:?}");
        assert!(!outcome.pending);
        assert_eq!(outcome.message, "docker: healthy");
        assert_eq!(outcome.docker_failing_streak, Some(0));
    }

    #[tokio::test]
    async fn docker_starting_is_pending_and_not_passed() {
        let runtime = no_runtime().container(health(DockerHealthStatus::Starting, 1, "booting"));
        let outcome = run(&docker_check(), &at(None), &runtime, None).await;
        assert!(!outcome.passed);
        assert!(outcome.pending);
        assert_eq!(outcome.docker_failing_streak, Some(1));
    }

    #[tokio::test]
    async fn docker_unhealthy_fails_with_the_streak_and_the_last_output() {
        let runtime = no_runtime().container(health(
            DockerHealthStatus::Unhealthy,
            2,
            "curl: (7) Failed to connect\r\n",
        ));
        let outcome = run(&docker_check(), &at(None), &runtime, None).await;
        assert!(!outcome.passed);
        assert!(!outcome.pending);
        assert_eq!(
            outcome.message,
            "docker: unhealthy (2 failures in a row): curl: (7) Failed to connect"
        );
        assert_eq!(outcome.docker_failing_streak, Some(2));
    }

    #[tokio::test]
    async fn docker_without_a_healthcheck_fails() {
        let runtime = no_runtime().container(None);
        let outcome = run(&docker_check(), &at(None), &runtime, None).await;
        assert!(!outcome.passed);
        assert!(!outcome.pending);
        assert_eq!(outcome.message, "the image declares no HEALTHCHECK");
        assert_eq!(outcome.docker_failing_streak, None);
    }

    #[tokio::test]
    async fn docker_container_gone_fails() {
        let outcome = run(&docker_check(), &at(None), &no_runtime(), None).await;
        assert!(!outcome.passed);
        assert_eq!(outcome.message, "the container is gone");
    }

    #[tokio::test]
    async fn a_check_without_a_single_probe_fails() {
        let mut check = docker_check();
        check.tcp = Some(TcpProbe { port: 1 });
        let outcome = run(&check, &at(Some(LOCALHOST)), &no_runtime(), None).await;
        assert!(!outcome.passed);
        assert_eq!(
            outcome.message,
            "the health check does not name exactly one probe"
        );
    }

    #[test]
    fn one_line_flattens_trims_and_cuts_at_characters() {
        assert_eq!(one_line("  a\nb\r\n\tc  ", 300), "a b c");
        assert_eq!(one_line("\u{0}x\u{7f}y", 300), "x y");
        assert_eq!(one_line("abcdef", 4), "abc…");
        assert_eq!(one_line("abcd", 4), "abcd");
        assert_eq!(one_line("ab cd", 3), "ab…");
        assert_eq!(one_line("a bcdef", 3), "a…");
        assert_eq!(one_line("ééééé", 3).chars().count(), 3);
        assert_eq!(one_line("abc", 0), "");
        assert_eq!(one_line("", 10), "");
    }

    fn unreachable() -> RuntimeError {
        RuntimeError::Unreachable {
            message: "connection refused".to_owned(),
        }
    }

    /// A runtime that answers `exec`, `exec_running` and `inspect_container` as scripted and
    /// logs those calls; every other call is refused.
    #[derive(Debug, Default)]
    struct ScriptedRuntime {
        exec: Mutex<VecDeque<Result<ExecOutcome, RuntimeError>>>,
        exec_running: Mutex<VecDeque<Result<bool, RuntimeError>>>,
        container: Option<ContainerInfo>,
        calls: Mutex<Vec<String>>,
    }

    impl ScriptedRuntime {
        fn exec_answers(self, exit: Result<Option<i64>, RuntimeError>, output: &str) -> Self {
            let mut queue = self.exec.lock().expect("the script lock");
            let id = format!("exec-{}", queue.len() + 1);
            queue.push_back(exit.map(|exit_code| ExecOutcome {
                exec_id: id,
                exit_code,
                output: output.to_owned(),
            }));
            drop(queue);
            self
        }

        fn exec_running_answers(self, running: Result<bool, RuntimeError>) -> Self {
            self.exec_running
                .lock()
                .expect("the script lock")
                .push_back(running);
            self
        }

        fn container(mut self, health: Option<DockerHealth>) -> Self {
            self.container = Some(ContainerInfo {
                id: "c1".to_owned(),
                name: "rtm-g1".to_owned(),
                image: "engine:1".to_owned(),
                image_id: "sha256:1".to_owned(),
                hostname: "g1".to_owned(),
                labels: BTreeMap::new(),
                state: ContainerState::Running,
                exit_code: None,
                oom_killed: false,
                started_at: None,
                finished_at: None,
                error: None,
                address: Some(LOCALHOST),
                ports: Vec::new(),
                health,
            });
            self
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().expect("the call log lock").clone()
        }

        fn log(&self, call: String) {
            self.calls.lock().expect("the call log lock").push(call);
        }
    }

    fn refused() -> RuntimeError {
        RuntimeError::Rejected {
            status: 501,
            message: "not scripted in this test".to_owned(),
        }
    }

    #[async_trait]
    impl ContainerRuntime for ScriptedRuntime {
        async fn ping(&self) -> Result<(), RuntimeError> {
            Err(refused())
        }

        async fn inspect_image(&self, _image: &str) -> Result<Option<ImageInfo>, RuntimeError> {
            Err(refused())
        }

        async fn pull_image(
            &self,
            _image: &str,
            _credentials: Option<&crate::runtime::RegistryCredentials>,
            _timeout: Duration,
        ) -> Result<ImageInfo, RuntimeError> {
            Err(refused())
        }

        async fn registry_digest(
            &self,
            _image: &str,
            _credentials: Option<&crate::runtime::RegistryCredentials>,
            _timeout: Duration,
        ) -> Result<String, RuntimeError> {
            Err(refused())
        }

        async fn inspect_container(
            &self,
            name_or_id: &str,
        ) -> Result<Option<ContainerInfo>, RuntimeError> {
            self.log(format!("inspect_container {name_or_id}"));
            Ok(self.container.clone().filter(|info| info.id == name_or_id))
        }

        async fn create(&self, _spec: &ContainerSpec) -> Result<String, RuntimeError> {
            Err(refused())
        }

        async fn start(&self, _id: &str) -> Result<(), RuntimeError> {
            Err(refused())
        }

        async fn stop(&self, _id: &str, _timeout: Duration) -> Result<(), RuntimeError> {
            Err(refused())
        }

        async fn kill(&self, _id: &str) -> Result<(), RuntimeError> {
            Err(refused())
        }

        async fn remove(&self, _id: &str, _force: bool) -> Result<(), RuntimeError> {
            Err(refused())
        }

        async fn unpause(&self, _id: &str) -> Result<(), RuntimeError> {
            Err(refused())
        }

        async fn rename(&self, _id: &str, _name: &str) -> Result<(), RuntimeError> {
            Err(refused())
        }

        async fn list_managed(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
            Err(refused())
        }

        async fn list_game(&self, _game: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
            Err(refused())
        }

        async fn list_labelled(&self, _key: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
            Err(refused())
        }

        async fn exec(
            &self,
            id: &str,
            command: &[String],
            timeout: Duration,
        ) -> Result<ExecOutcome, RuntimeError> {
            self.log(format!(
                "exec {id} {} ({})",
                command.join(" "),
                humantime::format_duration(timeout)
            ));
            self.exec
                .lock()
                .expect("the script lock")
                .pop_front()
                .unwrap_or_else(|| Err(refused()))
        }

        async fn last_output(&self, id: &str, _max: usize) -> Result<String, RuntimeError> {
            self.log(format!("last_output {id}"));
            Err(refused())
        }

        async fn inspect_volume(
            &self,
            name: &str,
        ) -> Result<Option<crate::runtime::VolumeInfo>, RuntimeError> {
            self.log(format!("inspect_volume {name}"));
            Err(refused())
        }

        async fn create_volume(
            &self,
            spec: &crate::runtime::VolumeSpec,
        ) -> Result<crate::runtime::VolumeInfo, RuntimeError> {
            self.log(format!("create_volume {}", spec.name));
            Err(refused())
        }

        async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
            self.log(format!("remove_volume {name}"));
            Err(refused())
        }

        async fn list_volumes(
            &self,
            _labels: &std::collections::BTreeMap<String, String>,
        ) -> Result<Vec<crate::runtime::VolumeInfo>, RuntimeError> {
            self.log("list_volumes".to_owned());
            Err(refused())
        }

        async fn exec_running(&self, exec_id: &str) -> Result<bool, RuntimeError> {
            self.log(format!("exec_running {exec_id}"));
            self.exec_running
                .lock()
                .expect("the script lock")
                .pop_front()
                .unwrap_or_else(|| Err(refused()))
        }

        fn events(&self) -> BoxStream<'static, Result<ContainerEvent, RuntimeError>> {
            stream::once(async { Err(refused()) }).boxed()
        }
    }
}
