//! The production [`Store`]: etcd v3 through `etcd_client`, the only module
//! that imports it. It maps etcd's answers into [`StoreError`] so that no
//! caller ever matches on gRPC codes or message strings.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare as EtcdCompare, CompareOp, ConnectOptions, DeleteOptions,
    EventType, GetOptions, Identity, KvClient, LeaseKeepAliveStream, LeaseKeeper, PutOptions,
    SortOrder, SortTarget, TlsOptions, Txn as EtcdTxn, TxnOp, WatchClient, WatchOptions,
};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::failure::{cause_chain, error_chain};

use super::{
    Compare, KeyValue, LeaseGrant, LeaseId, Listing, Mutation, Revision, Store, StoreError, Txn,
    TxnOutcome, WatchBatch, WatchEvent, WatchStream,
};

/// The default endpoint when `RTM_ETCD_ENDPOINTS` is not set.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

/// The largest message the client accepts from etcd. gRPC's default, 4 MiB, is the size of
/// sixteen 256 KiB documents (`MAX_DOCUMENT_BYTES`): one page of them, or one key a writer made
/// as large as etcd's own request limit allows (`--max-request-bytes`, 1.5 MiB by default, at
/// most ~10 MiB as etcd advises), must fit, with room left. A larger answer is refused by the
/// client before it is buffered, so this also bounds what one answer costs in memory.
const RECEIVE_LIMIT: usize = 64 * 1024 * 1024;

/// Bytes of records one list page aims at: a quarter of [`RECEIVE_LIMIT`], so a page sized
/// from the records seen so far stays under the limit even when the next records are up to
/// four times larger than those (a larger jump is a refused page, halved and asked again).
const PAGE_BUDGET: usize = RECEIVE_LIMIT / 4;

/// Most keys one page asks for, however small the records: at 500 small documents (~1 KiB) a
/// page is ~0.5 MiB, and 10,000 games list in 20 round trips.
const LIST_PAGE_SIZE: usize = 500;

/// The size a record is assumed to have before any was seen: etcd's default request limit
/// (1.5 MiB) plus the key and the framing, the largest record a default etcd stores. The
/// first page of a listing so asks for 10 keys, and grows from what it got.
const ASSUMED_RECORD_BYTES: usize = 1_600 * 1024;

/// Extra time the outer guard allows beyond the client's own request
/// timeout, so the client's (more precise) error wins when it fires.
const GUARD_MARGIN: Duration = Duration::from_secs(1);

/// Attempts of one request while it fails before it was sent (no
/// connection to the endpoint the client picked), with several endpoints.
/// The client's balancer keeps picking a member that refuses connections
/// as if it were ready (tonic's lazy reconnect reports ready and fails the
/// call: grpc-rust issue 2839); it picks the less loaded of two random
/// members, and the dead one is never loaded, so an attempt lands on it
/// with a chance of at most 2/3 with one of three members down: sixteen
/// all fail with a chance under 0.2% (and the caller retries). Each failed
/// attempt is one refused connect; all stay within the request timeout.
/// With one endpoint there is nothing else to try: one attempt.
const UNSENT_ATTEMPTS: usize = 16;

/// How to reach etcd.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `http://host:port` or `https://host:port`; several for a cluster.
    pub endpoints: Vec<String>,
    /// Bound on establishing a connection to one endpoint.
    pub connect_timeout: Duration,
    /// Bound on one request (not on the life of a watch stream).
    pub request_timeout: Duration,
    /// TLS to etcd; `None` for plain `http://`.
    pub tls: Option<TlsFiles>,
    /// etcd's own authentication; `None` when etcd has none.
    pub credentials: Option<Credentials>,
}

impl EtcdConfig {
    /// Plain connections to `endpoints` with the default time bounds (3 s to connect, 5 s
    /// per request), no TLS and no authentication.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            tls: None,
            credentials: None,
        }
    }

    fn endpoints_text(&self) -> String {
        self.endpoints.join(",")
    }
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("tls", &self.tls)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// PEM files for TLS to etcd: the CA that signed the server's certificate
/// and, for client-certificate auth, our certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signed etcd's server certificate.
    pub ca_file: PathBuf,
    /// Our client certificate, for etcd's `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    /// The key of [`TlsFiles::cert_file`].
    pub key_file: Option<PathBuf>,
}

/// etcd user and password (etcd's own auth).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The etcd user.
    pub user: String,
    /// Its password (never logged: see the `Debug` below).
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password never reaches a log line.
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A connection to etcd. Cheap to clone: clones share one channel.
pub struct EtcdStore {
    client: Client,
    /// The client's KV and watch services, accepting answers up to [`RECEIVE_LIMIT`].
    kv: KvClient,
    watch: WatchClient,
    endpoints: String,
    /// What a failure before the first answer is read against (see [`Diagnosis`]).
    diagnosis: Diagnosis,
    /// Set by the first answer: from then on the settings are known to work, and a failure is
    /// etcd's, not theirs.
    answered: AtomicBool,
    request_timeout: Duration,
    /// One keepalive stream per lease, opened on first use and reused: a
    /// keepalive is one message on it instead of a new stream per renewal.
    keepers: Mutex<HashMap<LeaseId, (LeaseKeeper, LeaseKeepAliveStream)>>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects lazily: an unreachable etcd is reported by the first call
    /// (within the timeouts), except with credentials, whose authentication
    /// is a first round trip.
    pub async fn connect(config: &EtcdConfig) -> Result<Self, StoreError> {
        if config.endpoints.is_empty() {
            return Err(StoreError::Config {
                message: "no etcd endpoint given".into(),
            });
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.request_timeout)
            // Detect a dead server on an idle watch within ~20 s.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(10))
            .with_auto_token_refresh(true);
        if let Some(tls) = &config.tls {
            options = options.with_tls(tls_options(tls)?);
        }
        if let Some(credentials) = &config.credentials {
            options = options.with_user(&credentials.user, &credentials.password);
        }
        let endpoints = config.endpoints_text();
        let diagnosis = Diagnosis {
            endpoints: config.endpoints.clone(),
            tls: config.tls.clone(),
            probe_timeout: config.connect_timeout.min(PROBE_TIMEOUT),
            probed: AtomicBool::new(false),
        };
        let connect = Client::connect(&config.endpoints, Some(options));
        let client = match tokio::time::timeout(
            config.connect_timeout + config.request_timeout + GUARD_MARGIN,
            connect,
        )
        .await
        {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                let error = map_error("connect", &endpoints, config.connect_timeout, e);
                return Err(diagnosis.first_failure(error).await);
            }
            Err(_) => {
                let error = StoreError::Timeout {
                    endpoints,
                    operation: "connect",
                    timeout: config.connect_timeout,
                };
                return Err(diagnosis.first_failure(error).await);
            }
        };
        Ok(Self {
            kv: client.kv_client().max_decoding_message_size(RECEIVE_LIMIT),
            watch: client
                .watch_client()
                .max_decoding_message_size(RECEIVE_LIMIT),
            client,
            endpoints,
            diagnosis,
            answered: AtomicBool::new(false),
            request_timeout: config.request_timeout,
            keepers: Mutex::new(HashMap::new()),
        })
    }

    /// Runs one request under an outer timeout, so that no call can hang
    /// even where the client's own timeout does not apply. `request` makes
    /// the request afresh for each attempt: one that could not even
    /// connect (so never reached etcd, and is safe to send again, writes
    /// included) is tried again, within the same timeout.
    async fn call<T, F, Fut>(
        &self,
        operation: &'static str,
        mut request: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let limit = self.request_timeout + GUARD_MARGIN;
        let most = if self.endpoints.contains(',') {
            UNSENT_ATTEMPTS
        } else {
            1
        };
        let attempts = async {
            let mut attempt = 1;
            loop {
                match request().await {
                    Err(e) if attempt < most && never_sent(&e) => attempt += 1,
                    result => return result,
                }
            }
        };
        let error = match tokio::time::timeout(limit, attempts).await {
            Ok(Ok(answer)) => {
                self.answered.store(true, Ordering::Relaxed);
                return Ok(answer);
            }
            Ok(Err(e)) => map_error(operation, &self.endpoints, self.request_timeout, e),
            Err(_) => StoreError::Timeout {
                endpoints: self.endpoints.clone(),
                operation,
                timeout: limit,
            },
        };
        if self.answered.load(Ordering::Relaxed) {
            Err(error)
        } else {
            Err(self.diagnosis.first_failure(error).await)
        }
    }

    /// One round trip, failing only when the connection settings are wrong (TLS, the client
    /// certificate, the user name or password; see [`StoreError::is_misconfiguration`]): the
    /// controller checks them at start and exits, where an etcd that is down or slow is waited
    /// for.
    pub async fn check_settings(&self) -> Result<(), StoreError> {
        match self.revision().await {
            Err(error) if error.is_misconfiguration() => Err(error),
            _ => Ok(()),
        }
    }
}

/// Bound on each probe of [`Diagnosis::first_failure`].
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What is known of the settings, to tell a wrong setting from an etcd that is down when a
/// connection fails before etcd ever answered. The client reports both as a transport
/// failure: `http://` to a TLS port as a broken pipe (or a timeout, as it reconnects), a client
/// certificate that etcd refuses (or none, where one is required) as a TLS alert, as a broken
/// pipe when the alert raced our first write, or as a timeout when the client kept
/// reconnecting until the deadline.
#[derive(Debug)]
struct Diagnosis {
    endpoints: Vec<String>,
    tls: Option<TlsFiles>,
    probe_timeout: Duration,
    /// The probes run once: an endpoint's scheme and its wish for a certificate do not
    /// change, and an etcd that is only slow must not cost a probe per failed call.
    probed: AtomicBool,
}

impl Diagnosis {
    /// A failure before etcd's first answer, with its likely cause named.
    async fn first_failure(&self, error: StoreError) -> StoreError {
        let closed = match &error {
            StoreError::Unavailable { message, .. } => connection_closed(message),
            StoreError::Timeout { .. } => true,
            _ => false,
        };
        if !closed || self.probed.swap(true, Ordering::Relaxed) {
            return error;
        }
        for endpoint in &self.endpoints {
            let Some(address) = endpoint.strip_prefix("http://") else {
                continue;
            };
            let address = address.split('/').next().unwrap_or(address);
            if speaks_tls(address, self.probe_timeout).await {
                return StoreError::TlsRequired {
                    endpoint: endpoint.clone(),
                    address: address.to_owned(),
                };
            }
        }
        self.certificate_refused().await.unwrap_or(error)
    }

    /// Over TLS without a client certificate: asks once more, on a connection of its own to
    /// the first endpoint (no balancer, no reconnects: etcd_client's channel retries a refused
    /// handshake until its deadline, which hides the cause), so that the server's refusal (a
    /// TLS alert, or a hang-up right after the handshake) is what we see.
    async fn certificate_refused(&self) -> Option<StoreError> {
        use tonic::codegen::{Service, http};
        use tonic::transport::{Certificate as CaCertificate, ClientTlsConfig, Endpoint};

        let tls = self.tls.as_ref().filter(|tls| tls.cert_file.is_none())?;
        let endpoint = self
            .endpoints
            .first()
            .filter(|e| e.starts_with("https://"))?;
        // etcd_client's `tls` feature turns on tonic's TLS, which this uses too.
        let ca = std::fs::read(&tls.ca_file).ok()?;
        let config = ClientTlsConfig::new().ca_certificate(CaCertificate::from_pem(ca));
        let target = Endpoint::from_shared(endpoint.clone())
            .ok()?
            .tls_config(config)
            .ok()?
            .connect_timeout(self.probe_timeout)
            .timeout(self.probe_timeout);
        let probe = async {
            let mut channel = target.connect().await.map_err(|e| error_chain(&e))?;
            // Any request: the refusal comes before an answer.
            let request =
                http::Request::post(format!("{endpoint}/etcdserverpb.Maintenance/Status"))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(tonic::body::Body::empty())
                    .map_err(|e| e.to_string())?;
            std::future::poll_fn(|cx| channel.poll_ready(cx))
                .await
                .map_err(|e| error_chain(&e))?;
            channel.call(request).await.map_err(|e| error_chain(&e))?;
            Ok::<(), String>(())
        };
        let Ok(Err(message)) = tokio::time::timeout(self.probe_timeout, probe).await else {
            return None;
        };
        let endpoints = self.endpoints.join(",");
        if let Some(alert) = certificate_alert(&message) {
            Some(StoreError::CertificateRefused {
                endpoints,
                why: format!("TLS alert {alert}"),
            })
        } else if connection_closed(&message) {
            Some(StoreError::CertificateRefused {
                endpoints,
                why: "it closed the connection after the TLS handshake, and no client \
                      certificate was given"
                    .into(),
            })
        } else {
            None
        }
    }
}

/// Whether the server at `address` (`host:port`) answers a TLS ClientHello with a TLS record:
/// a handshake (0x16) or an alert (0x15), either way TLS. A plain etcd answers an HTTP error
/// or nothing.
async fn speaks_tls(address: &str, timeout: Duration) -> bool {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        stream.write_all(&client_hello()).await.ok()?;
        let mut reply = [0u8; 2];
        stream.read_exact(&mut reply).await.ok()?;
        Some(matches!(reply, [0x15 | 0x16, 0x03]))
    };
    matches!(tokio::time::timeout(timeout, probe).await, Ok(Some(true)))
}

/// A TLS 1.2 ClientHello that any TLS server answers, with a ServerHello or an alert: common
/// ECDHE and RSA suites, the groups and signature schemes they need.
fn client_hello() -> Vec<u8> {
    let suites: &[u8] = &[
        0xC0, 0x2F, 0xC0, 0x2B, 0xC0, 0x30, 0xC0, 0x2C, 0x00, 0x9C, 0x00, 0x2F,
    ];
    let extensions: &[u8] = &[
        // supported_groups: x25519, secp256r1, secp384r1.
        0x00, 0x0A, 0x00, 0x08, 0x00, 0x06, 0x00, 0x1D, 0x00, 0x17, 0x00, 0x18,
        // ec_point_formats: uncompressed.
        0x00, 0x0B, 0x00, 0x02, 0x01, 0x00,
        // signature_algorithms: rsa_pss_rsae_sha256, ecdsa_secp256r1_sha256, rsa_pkcs1_sha256.
        0x00, 0x0D, 0x00, 0x08, 0x00, 0x06, 0x08, 0x04, 0x04, 0x03, 0x04, 0x01,
    ];
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x2A; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&(suites.len() as u16).to_be_bytes());
    body.extend_from_slice(suites);
    body.extend_from_slice(&[1, 0]); // compression: none
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(extensions);
    let mut handshake = vec![0x01]; // ClientHello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Whether a transport failure says the server hung up on us (as opposed to refusing the
/// connection or not answering).
fn connection_closed(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "broken pipe",
        "connection reset",
        "connection closed",
        "unexpected eof",
    ]
    .iter()
    .any(|sign| message.contains(sign))
}

/// The TLS alert a transport failure reports, when it is about our client certificate
/// (rustls names the alert: "received fatal alert: BadCertificate").
fn certificate_alert(message: &str) -> Option<&'static str> {
    const ALERTS: [&str; 7] = [
        "BadCertificate",
        "CertificateRequired",
        "UnknownCA",
        "CertificateUnknown",
        "UnsupportedCertificate",
        "CertificateExpired",
        "CertificateRevoked",
    ];
    if !message.contains("alert") {
        return None;
    }
    ALERTS.into_iter().find(|alert| message.contains(alert))
}

fn tls_options(files: &TlsFiles) -> Result<TlsOptions, StoreError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|e| StoreError::Config {
            message: format!("cannot read {}: {e}", path.display()),
        })
    };
    let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read(&files.ca_file)?));
    match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        (None, None) => {}
        _ => {
            return Err(StoreError::Config {
                message: "a client certificate needs both its cert file and its key file".into(),
            });
        }
    }
    Ok(tls)
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // A prefix of only 0xff bytes: etcd's "to the end of the keyspace".
    vec![0]
}

fn key_value(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}

fn compare(compare: Compare) -> EtcdCompare {
    match compare {
        Compare::Absent { key } => EtcdCompare::create_revision(key, CompareOp::Equal, 0),
        Compare::ModRevision { key, revision } => {
            EtcdCompare::mod_revision(key, CompareOp::Equal, revision)
        }
        Compare::CreateRevision { key, revision } => {
            EtcdCompare::create_revision(key, CompareOp::Equal, revision)
        }
        Compare::Value { key, value } => EtcdCompare::value(key, CompareOp::Equal, value),
        // Over a range, etcd compares every key in it, and an empty range
        // as one absent key: "created at 0" holds only when none exists.
        Compare::PrefixEmpty { prefix } => {
            EtcdCompare::create_revision(prefix, CompareOp::Equal, 0).with_prefix()
        }
    }
}

fn mutation(mutation: Mutation) -> TxnOp {
    match mutation {
        Mutation::Put { key, value, lease } => {
            let options = lease.map(|lease| PutOptions::new().with_lease(lease));
            TxnOp::put(key, value, options)
        }
        Mutation::Delete { key } => TxnOp::delete(key, None),
        Mutation::DeletePrefix { prefix } => TxnOp::delete(
            prefix.clone(),
            Some(DeleteOptions::new().with_range(prefix_end(&prefix))),
        ),
        Mutation::DeleteRange { from, to } => {
            TxnOp::delete(from, Some(DeleteOptions::new().with_range(to)))
        }
    }
}

/// Maps the client's error to ours. The gRPC code decides; the message is
/// kept for people.
fn map_error(
    operation: &'static str,
    endpoints: &str,
    timeout: Duration,
    error: etcd_client::Error,
) -> StoreError {
    use etcd_client::Error as E;
    match error {
        E::GRpcStatus(status) => map_status(operation, endpoints, timeout, &status),
        E::TransportError(e) => transport_failure(endpoints, error_chain(&e)),
        E::IoError(e) => transport_failure(endpoints, e.to_string()),
        E::WatchError(message) => transport_failure(endpoints, message),
        E::LeaseKeepAliveError(message) if message.contains("lease not found") => {
            StoreError::LeaseNotFound { lease: 0 }
        }
        E::LeaseKeepAliveError(message) => transport_failure(endpoints, message),
        E::InvalidArgs(message) => StoreError::Config { message },
        E::InvalidUri(e) => StoreError::Config {
            message: format!("invalid endpoint URL: {e}"),
        },
        E::EndpointError(message) => StoreError::Config { message },
        other => StoreError::Rejected {
            operation,
            message: other.to_string(),
        },
    }
}

/// Maps a gRPC status from etcd: its code decides, its message (with the
/// sources' reasons) picks between causes that share a code.
fn map_status(
    operation: &'static str,
    endpoints: &str,
    timeout: Duration,
    status: &tonic::Status,
) -> StoreError {
    use tonic::Code;
    // The status message alone often says only "tcp connect error"; its
    // sources say why (connection refused, ...).
    let message = cause_chain(status.message(), std::error::Error::source(status));
    match status.code() {
        Code::Unavailable | Code::Unknown if is_transport_failure(&message) => {
            transport_failure(endpoints, message)
        }
        Code::Unavailable => transport_failure(endpoints, message),
        Code::DeadlineExceeded | Code::Cancelled => StoreError::Timeout {
            endpoints: endpoints.to_owned(),
            operation,
            timeout,
        },
        Code::PermissionDenied | Code::Unauthenticated
            if message.contains("authentication failed") =>
        {
            StoreError::AuthenticationFailed {
                endpoints: endpoints.to_owned(),
            }
        }
        Code::PermissionDenied | Code::Unauthenticated => StoreError::PermissionDenied { message },
        Code::OutOfRange if message.contains("compacted") => StoreError::Compacted {
            requested: 0,
            compacted: 0,
        },
        Code::NotFound if message.contains("lease not found") => {
            StoreError::LeaseNotFound { lease: 0 }
        }
        Code::InvalidArgument if message.contains("authentication failed") => {
            StoreError::AuthenticationFailed {
                endpoints: endpoints.to_owned(),
            }
        }
        _ => StoreError::Rejected { operation, message },
    }
}

/// A failure of the connection itself. Refused connections and TLS alerts
/// have causes of their own, and so errors of their own.
fn transport_failure(endpoints: &str, message: String) -> StoreError {
    if message.to_ascii_lowercase().contains("connection refused") {
        StoreError::Refused {
            endpoints: endpoints.to_owned(),
        }
    } else if let Some(alert) = certificate_alert(&message) {
        StoreError::CertificateRefused {
            endpoints: endpoints.to_owned(),
            why: format!("TLS alert {alert}"),
        }
    } else {
        StoreError::Unavailable {
            endpoints: endpoints.to_owned(),
            message,
        }
    }
}

/// Whether the request failed to connect, so etcd never saw it.
fn never_sent(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status)
        if status.code() == tonic::Code::Unavailable
            && status.message().contains("tcp connect error"))
}

fn is_transport_failure(message: &str) -> bool {
    message.contains("transport error") || message.contains("connection")
}

impl EtcdStore {
    /// One page of keys in `[start, end)` at `revision` (0: the latest), as many as `pager`
    /// asks for. A page larger than [`RECEIVE_LIMIT`] is refused by the client before it is
    /// read; it is asked again at half the size, at the same revision, down to one key.
    #[allow(clippy::too_many_arguments)] // one range read, spelled out: no natural group
    async fn range_page(
        &self,
        operation: &'static str,
        prefix: &str,
        pager: &mut Pager,
        start: &[u8],
        end: &[u8],
        revision: Revision,
        order: SortOrder,
    ) -> Result<etcd_client::GetResponse, StoreError> {
        loop {
            let mut options = GetOptions::new()
                .with_range(end.to_vec())
                .with_limit(i64::try_from(pager.limit()).unwrap_or(i64::MAX));
            if order == SortOrder::Descend {
                options = options.with_sort(SortTarget::Key, SortOrder::Descend);
            }
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let answer = self
                .call(operation, || {
                    let mut kv = self.kv.clone();
                    let (start, options) = (start.to_vec(), options.clone());
                    async move {
                        match kv.get(start, Some(options)).await {
                            Err(error) => match too_large(&error) {
                                Some(found) => Ok(Err(found)),
                                None => Err(error),
                            },
                            Ok(page) => Ok(Ok(page)),
                        }
                    }
                })
                .await
                .map_err(|e| match e {
                    StoreError::Compacted { .. } => StoreError::Compacted {
                        requested: revision,
                        compacted: 0,
                    },
                    other => other,
                })?;
            match answer {
                Ok(page) => {
                    pager.served(page.kvs().iter().map(record_bytes).max().unwrap_or(0));
                    return Ok(page);
                }
                Err(found) => {
                    tracing::debug!(
                        operation,
                        prefix,
                        keys = pager.limit(),
                        bytes = found,
                        "a page was larger than the receive limit; asking for half"
                    );
                    if !pager.refused() {
                        return Err(StoreError::Rejected {
                            operation,
                            message: format!(
                                "one key under {prefix} is larger than the {} MiB the client \
                                 accepts in one answer ({found} bytes); find it with `etcdctl \
                                 get --prefix --keys-only {prefix}` and delete it",
                                RECEIVE_LIMIT / (1024 * 1024)
                            ),
                        });
                    }
                }
            }
        }
    }
}

/// How many keys the next page of a listing asks for. It is sized from the largest record of
/// the page before, so that a page holds about [`PAGE_BUDGET`] bytes; it at most doubles from
/// one page to the next (records are not all alike: a small page is no promise about the
/// next), and halves when a page came back too large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pager {
    limit: usize,
    most: usize,
}

impl Pager {
    /// A pager asking for at most `most` keys a page (at least one).
    fn new(most: usize) -> Pager {
        let most = most.clamp(1, LIST_PAGE_SIZE);
        Pager {
            limit: (PAGE_BUDGET / ASSUMED_RECORD_BYTES).clamp(1, most),
            most,
        }
    }

    fn limit(&self) -> usize {
        self.limit
    }

    /// No page asks for more than `remaining` keys from now on.
    fn at_most(&mut self, remaining: usize) {
        self.most = self.most.min(remaining).max(1);
        self.limit = self.limit.min(self.most);
    }

    /// A page came back whose largest record was `largest` bytes.
    fn served(&mut self, largest: usize) {
        let by_bytes = PAGE_BUDGET / largest.max(1);
        self.limit = by_bytes.min(self.limit * 2).clamp(1, self.most);
    }

    /// The page was too large: halve it. False when it was one key already.
    fn refused(&mut self) -> bool {
        if self.limit == 1 {
            return false;
        }
        self.limit /= 2;
        true
    }
}

/// What one record costs in an answer: its key and value (the revisions and framing are a few
/// dozen bytes more, inside the budget's margin).
fn record_bytes(kv: &etcd_client::KeyValue) -> usize {
    kv.key().len() + kv.value().len()
}

/// The size of an answer the client refused as larger than its receive limit (tonic: "decoded
/// message length too large: found N bytes, the limit is: M bytes").
fn too_large(error: &etcd_client::Error) -> Option<usize> {
    let etcd_client::Error::GRpcStatus(status) = error else {
        return None;
    };
    if status.code() != tonic::Code::OutOfRange {
        return None;
    }
    let rest = status
        .message()
        .split_once("message length too large: found ")?
        .1;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let response = self
            .call("get", || {
                let mut kv = self.kv.clone();
                async move { kv.get(key, None).await }
            })
            .await?;
        Ok(response.kvs().first().map(key_value))
    }

    async fn list(&self, prefix: &str, at: Option<Revision>) -> Result<Listing, StoreError> {
        let end = prefix_end(prefix);
        let mut start = prefix.as_bytes().to_vec();
        let mut revision = at.unwrap_or(0);
        let mut items = Vec::new();
        let mut pager = Pager::new(LIST_PAGE_SIZE);
        // Pages are read at one revision (the first page's, unless given) so
        // the listing is one consistent snapshot, a page asked again included.
        loop {
            let page = self
                .range_page(
                    "list",
                    prefix,
                    &mut pager,
                    &start,
                    &end,
                    revision,
                    SortOrder::Ascend,
                )
                .await?;
            if revision == 0 {
                revision = page.header().map(|h| h.revision()).unwrap_or_default();
            }
            items.extend(page.kvs().iter().map(key_value));
            match (page.more(), page.kvs().last()) {
                (true, Some(last)) => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok(Listing { items, revision })
    }

    async fn newest(&self, prefix: &str, limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        let mut end = prefix_end(prefix);
        let mut revision = 0;
        let mut items = Vec::new();
        let mut pager = Pager::new(limit);
        // Paged from the end: each page stops below the last (lowest) key of the one before.
        while items.len() < limit {
            pager.at_most(limit - items.len());
            let page = self
                .range_page(
                    "newest",
                    prefix,
                    &mut pager,
                    prefix.as_bytes(),
                    &end,
                    revision,
                    SortOrder::Descend,
                )
                .await?;
            if revision == 0 {
                revision = page.header().map(|h| h.revision()).unwrap_or_default();
            }
            items.extend(page.kvs().iter().map(key_value));
            match (page.more(), page.kvs().last()) {
                (true, Some(last)) => end = last.key().to_vec(),
                _ => break,
            }
        }
        items.truncate(limit);
        Ok(items)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let request = EtcdTxn::new()
            .when(txn.when.into_iter().map(compare).collect::<Vec<_>>())
            .and_then(txn.then.into_iter().map(mutation).collect::<Vec<_>>());
        let response = self
            .call("txn", || {
                let mut kv = self.kv.clone();
                let request = request.clone();
                async move { kv.txn(request).await }
            })
            .await?;
        Ok(TxnOutcome {
            succeeded: response.succeeded(),
            revision: response.header().map(|h| h.revision()).unwrap_or_default(),
        })
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let stream = self
            .call("watch", || {
                let mut watch = self.watch.clone();
                let options = options.clone();
                async move { watch.watch(prefix, Some(options)).await }
            })
            .await?;
        let endpoints = self.endpoints.clone();
        let request_timeout = self.request_timeout;
        // The stream ends after its first error: the caller relists.
        let batches = futures::stream::unfold(Some(stream), move |state| {
            let endpoints = endpoints.clone();
            async move {
                let mut stream = state?;
                loop {
                    let item = match stream.next().await {
                        None => Err(StoreError::Unavailable {
                            endpoints,
                            message: "the watch stream ended".into(),
                        }),
                        Some(Err(e)) => Err(map_error("watch", &endpoints, request_timeout, e)),
                        Some(Ok(response)) if response.canceled() => {
                            if response.compact_revision() > 0 {
                                Err(StoreError::Compacted {
                                    requested: from,
                                    compacted: response.compact_revision(),
                                })
                            } else {
                                Err(StoreError::Unavailable {
                                    endpoints,
                                    message: format!(
                                        "the watch was canceled: {}",
                                        response.cancel_reason()
                                    ),
                                })
                            }
                        }
                        Some(Ok(response)) => {
                            let batch: WatchBatch = response
                                .events()
                                .iter()
                                .filter_map(|event| {
                                    let kv = event.kv()?;
                                    Some(match event.event_type() {
                                        EventType::Put => WatchEvent::Put(key_value(kv)),
                                        EventType::Delete => WatchEvent::Delete {
                                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                                            mod_revision: kv.mod_revision(),
                                        },
                                    })
                                })
                                .collect();
                            if batch.is_empty() {
                                // `created` and progress notifications.
                                continue;
                            }
                            return Some((Ok(batch), Some(stream)));
                        }
                    };
                    return Some((item, None));
                }
            }
        });
        Ok(batches.boxed())
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseGrant, StoreError> {
        let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let response = self
            .call("lease grant", || {
                let mut lease = self.client.lease_client();
                async move { lease.grant(seconds, None).await }
            })
            .await?;
        Ok(LeaseGrant {
            id: response.id(),
            ttl: Duration::from_secs(u64::try_from(response.ttl()).unwrap_or(0)),
        })
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let mut keepers = self.keepers.lock().await;
        // The open stream, if any, serves the first attempt; a retry (the
        // first could not connect) opens a new one.
        let mut open = keepers.remove(&lease);
        let (keeper, stream, response) = self
            .call("lease keepalive", || {
                let open = open.take();
                let mut client = self.client.lease_client();
                async move {
                    let (mut keeper, mut stream) = match open {
                        Some(open) => open,
                        None => client.keep_alive(lease).await?,
                    };
                    keeper.keep_alive().await?;
                    let response = stream.message().await?;
                    Ok((keeper, stream, response))
                }
            })
            .await
            .map_err(|e| match e {
                StoreError::LeaseNotFound { .. } => StoreError::LeaseNotFound { lease },
                other => other,
            })?;
        match response {
            Some(response) if response.ttl() > 0 => {
                keepers.insert(lease, (keeper, stream));
                Ok(Duration::from_secs(
                    u64::try_from(response.ttl()).unwrap_or(0),
                ))
            }
            Some(_) => Err(StoreError::LeaseNotFound { lease }),
            None => Err(StoreError::Unavailable {
                endpoints: self.endpoints.clone(),
                message: "the lease keepalive stream ended".into(),
            }),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.keepers.lock().await.remove(&lease);
        let revoke = self.call("lease revoke", || {
            let mut client = self.client.lease_client();
            async move { client.revoke(lease).await }
        });
        match revoke.await {
            Ok(_) | Err(StoreError::LeaseNotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        // A count-only read of one key: the header carries the revision.
        let options = GetOptions::new().with_count_only();
        let response = self
            .call("revision", || {
                let mut kv = self.kv.clone();
                let options = options.clone();
                async move { kv.get("\0", Some(options)).await }
            })
            .await?;
        Ok(response.header().map(|h| h.revision()).unwrap_or_default())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        // Not `physical`: etcd marks the revisions compacted at once (reads
        // and watches before it fail from then on) and frees the space in
        // the background; waiting for that can take longer than a request
        // timeout on a large keyspace.
        self.call("compact", || {
            let mut kv = self.kv.clone();
            async move { kv.compact(revision, None).await }
        })
        .await?;
        Ok(())
    }

    async fn keys_from(
        &self,
        prefix: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let options = GetOptions::new()
            .with_range(prefix_end(prefix))
            .with_keys_only()
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let response = self
            .call("keys", || {
                let mut kv = self.client.kv_client();
                let options = options.clone();
                async move { kv.get(from, Some(options)).await }
            })
            .await?;
        Ok(response
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end("ab\u{7f}"), b"ab\x80".to_vec());
    }

    fn status(code: tonic::Code, message: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, message))
    }

    fn mapped(error: etcd_client::Error) -> StoreError {
        map_error("get", "https://e:2379", Duration::from_secs(1), error)
    }

    #[test]
    fn each_connection_failure_is_named_for_its_cause() {
        assert!(matches!(
            mapped(status(
                tonic::Code::Unavailable,
                "tcp connect error: transport error: Connection refused (os error 111)"
            )),
            StoreError::Refused { .. }
        ));
        match mapped(status(
            tonic::Code::Unavailable,
            "transport error: connection error: received fatal alert: BadCertificate",
        )) {
            StoreError::CertificateRefused { why, .. } => {
                assert_eq!(why, "TLS alert BadCertificate")
            }
            other => panic!("{other:?}"),
        }
        for code in [tonic::Code::InvalidArgument, tonic::Code::Unauthenticated] {
            let error = mapped(status(
                code,
                "etcdserver: authentication failed, invalid user ID or password",
            ));
            assert!(
                matches!(error, StoreError::AuthenticationFailed { .. }),
                "{error:?}"
            );
            assert_eq!(error.code(), crate::ErrorCode::PermissionDenied);
            assert!(error.is_misconfiguration());
        }
        let denied = mapped(status(
            tonic::Code::PermissionDenied,
            "etcdserver: permission denied",
        ));
        assert!(
            matches!(denied, StoreError::PermissionDenied { .. }),
            "{denied:?}"
        );
        assert!(!denied.is_misconfiguration(), "a role, not a setting");
        let other = mapped(status(
            tonic::Code::Unavailable,
            "connection closed because of a broken pipe",
        ));
        assert!(matches!(other, StoreError::Unavailable { .. }), "{other:?}");
    }

    #[test]
    fn hang_ups_are_told_from_refusals_and_silence() {
        assert!(connection_closed("stream closed because of a broken pipe"));
        assert!(connection_closed("Connection reset by peer (os error 104)"));
        assert!(!connection_closed("Connection refused (os error 111)"));
        assert!(!connection_closed("no answer within 3s"));
        assert_eq!(
            certificate_alert("received fatal alert: CertificateRequired"),
            Some("CertificateRequired")
        );
        assert_eq!(
            certificate_alert("a message naming BadCertificate outside a TLS warning"),
            None
        );
    }

    #[test]
    fn the_client_hello_is_one_well_formed_record() {
        let hello = client_hello();
        let record = usize::from(u16::from_be_bytes([hello[3], hello[4]]));
        assert_eq!(hello[..3], [0x16, 0x03, 0x01]);
        assert_eq!(record, hello.len() - 5, "the record length");
        let handshake =
            usize::from(hello[6]) << 16 | usize::from(hello[7]) << 8 | usize::from(hello[8]);
        assert_eq!(
            (hello[5], handshake),
            (0x01, record - 4),
            "a ClientHello, its length"
        );
    }

    /// A one-connection server that answers whatever it is sent with `reply`.
    async fn answering(reply: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("its address").to_string();
        tokio::spawn(async move {
            if let Ok((mut stream, _)) = listener.accept().await {
                let mut request = [0u8; 16];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(reply).await;
            }
        });
        address
    }

    #[tokio::test]
    async fn an_endpoint_speaks_tls_when_it_answers_a_client_hello_with_a_tls_record() {
        let second = Duration::from_secs(5);
        // An alert (handshake_failure) is as much TLS as a ServerHello.
        assert!(
            speaks_tls(
                &answering(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]).await,
                second
            )
            .await
        );
        assert!(speaks_tls(&answering(&[0x16, 0x03, 0x03, 0x00, 0x31]).await, second).await);
        assert!(
            !speaks_tls(
                &answering(b"HTTP/1.1 400 Bad Request\r\n\r\n").await,
                second
            )
            .await
        );
        assert!(
            !speaks_tls(&answering(b"").await, second).await,
            "a hang-up"
        );
    }

    #[test]
    fn a_page_of_the_largest_records_stays_under_the_receive_limit() {
        let mut pager = Pager::new(LIST_PAGE_SIZE);
        // Before any record is seen, the first page fits records as large as etcd stores.
        assert!(pager.limit() * ASSUMED_RECORD_BYTES <= PAGE_BUDGET);
        assert!(pager.limit() >= 1);
        // 256 KiB documents: pages of PAGE_BUDGET / 256 KiB, far under the limit.
        for _ in 0..4 {
            pager.served(256 * 1024);
        }
        assert_eq!(pager.limit(), PAGE_BUDGET / (256 * 1024));
        assert!(pager.limit() * 256 * 1024 * 4 <= RECEIVE_LIMIT);
        // Small records grow the page, at most doubling, up to the count bound.
        let mut grown = Vec::new();
        for _ in 0..8 {
            pager.served(1024);
            grown.push(pager.limit());
        }
        assert_eq!(grown.first(), Some(&(PAGE_BUDGET / (256 * 1024) * 2)));
        assert_eq!(grown.last(), Some(&LIST_PAGE_SIZE));
        assert!(grown.windows(2).all(|w| w[1] <= w[0] * 2), "{grown:?}");
        // A record larger than the budget: one key a page.
        pager.served(PAGE_BUDGET * 2);
        assert_eq!(pager.limit(), 1);
    }

    #[test]
    fn a_refused_page_is_halved_down_to_one_key() {
        let mut pager = Pager::new(LIST_PAGE_SIZE);
        for _ in 0..10 {
            pager.served(10);
        }
        assert_eq!(pager.limit(), LIST_PAGE_SIZE);
        let mut sizes = vec![pager.limit()];
        while pager.refused() {
            sizes.push(pager.limit());
        }
        assert_eq!(sizes, [500, 250, 125, 62, 31, 15, 7, 3, 1]);
        assert!(!pager.refused(), "one key cannot be halved");
    }

    #[test]
    fn the_newest_pages_never_ask_for_more_than_the_limit() {
        let mut pager = Pager::new(3);
        assert_eq!(pager.limit(), 3);
        pager.served(1);
        assert_eq!(pager.limit(), 3);
        pager.at_most(2);
        assert_eq!(pager.limit(), 2);
        assert_eq!(Pager::new(0).limit(), 1);
    }

    #[test]
    fn an_answer_over_the_receive_limit_is_told_from_other_errors() {
        let refused = status(
            tonic::Code::OutOfRange,
            "Error, decoded message length too large: found 5243838 bytes, the limit is: \
             4194304 bytes",
        );
        assert_eq!(too_large(&refused), Some(5_243_838));
        let compacted = status(
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        );
        assert_eq!(too_large(&compacted), None);
        assert!(matches!(mapped(compacted), StoreError::Compacted { .. }));
        let other = status(
            tonic::Code::Unavailable,
            "message length too large: found 1 bytes",
        );
        assert_eq!(too_large(&other), None);
    }

    #[test]
    fn credentials_never_print_the_password() {
        let credentials = Credentials {
            user: "root".into(),
            password: "s3cret".into(),
        };
        let text = format!("{credentials:?}");
        assert!(text.contains("root") && !text.contains("s3cret"), "{text}");
    }
}
