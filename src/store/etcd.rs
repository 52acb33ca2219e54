//! The production [`Store`]: etcd v3 through `etcd_client`, the only module
//! that imports it. It maps etcd's answers into [`StoreError`] so that no
//! caller ever matches on gRPC codes or message strings.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare as EtcdCompare, CompareOp, ConnectOptions, DeleteOptions,
    EventType, GetOptions, Identity, LeaseKeepAliveStream, LeaseKeeper, PutOptions, SortOrder,
    SortTarget, TlsOptions, Txn as EtcdTxn, TxnOp, WatchOptions,
};
use futures::StreamExt;
use tokio::sync::Mutex;

use super::{
    Compare, KeyValue, LeaseGrant, LeaseId, Listing, Mutation, Revision, Store, StoreError, Txn,
    TxnOutcome, WatchBatch, WatchEvent, WatchStream,
};

/// The default endpoint when `RTM_ETCD_ENDPOINTS` is not set.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

/// Keys fetched per page when listing: keeps each response far below
/// gRPC's 4 MiB message limit even with 256 KiB documents... at 16 per MiB
/// a page of 500 small documents is ~0.5 MiB, and large documents are rare.
const LIST_PAGE_SIZE: i64 = 500;

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
    pub tls: Option<TlsFiles>,
    pub credentials: Option<Credentials>,
}

impl EtcdConfig {
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
    pub ca_file: PathBuf,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// etcd user and password (etcd's own auth).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
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
    endpoints: String,
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
        let connect = Client::connect(&config.endpoints, Some(options));
        let client = match tokio::time::timeout(
            config.connect_timeout + config.request_timeout + GUARD_MARGIN,
            connect,
        )
        .await
        {
            Ok(result) => {
                result.map_err(|e| map_error("connect", &endpoints, config.connect_timeout, e))?
            }
            Err(_) => {
                return Err(StoreError::Timeout {
                    endpoints,
                    operation: "connect",
                    timeout: config.connect_timeout,
                });
            }
        };
        Ok(Self {
            client,
            endpoints,
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
        match tokio::time::timeout(limit, attempts).await {
            Ok(result) => {
                result.map_err(|e| map_error(operation, &self.endpoints, self.request_timeout, e))
            }
            Err(_) => Err(StoreError::Timeout {
                endpoints: self.endpoints.clone(),
                operation,
                timeout: limit,
            }),
        }
    }
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
    use tonic::Code;
    let unavailable = |message: String| StoreError::Unavailable {
        endpoints: endpoints.to_owned(),
        message,
    };
    match error {
        E::GRpcStatus(status) => {
            // The status message alone often says only "tcp connect
            // error"; its sources say why (connection refused, ...).
            let message = cause_chain(status.message(), std::error::Error::source(&status));
            match status.code() {
                Code::Unavailable | Code::Unknown if is_transport_failure(&message) => {
                    unavailable(message)
                }
                Code::Unavailable => unavailable(message),
                Code::DeadlineExceeded | Code::Cancelled => StoreError::Timeout {
                    endpoints: endpoints.to_owned(),
                    operation,
                    timeout,
                },
                Code::PermissionDenied | Code::Unauthenticated => {
                    StoreError::PermissionDenied { message }
                }
                Code::OutOfRange if message.contains("compacted") => StoreError::Compacted {
                    requested: 0,
                    compacted: 0,
                },
                Code::NotFound if message.contains("lease not found") => {
                    StoreError::LeaseNotFound { lease: 0 }
                }
                Code::InvalidArgument if message.contains("authentication failed") => {
                    StoreError::PermissionDenied { message }
                }
                _ => StoreError::Rejected { operation, message },
            }
        }
        E::TransportError(e) => unavailable(error_chain(&e)),
        E::IoError(e) => unavailable(e.to_string()),
        E::WatchError(message) => unavailable(message),
        E::LeaseKeepAliveError(message) if message.contains("lease not found") => {
            StoreError::LeaseNotFound { lease: 0 }
        }
        E::LeaseKeepAliveError(message) => unavailable(message),
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

/// Whether the request failed to connect, so etcd never saw it.
fn never_sent(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status)
        if status.code() == tonic::Code::Unavailable
            && status.message().contains("tcp connect error"))
}

fn is_transport_failure(message: &str) -> bool {
    message.contains("transport error") || message.contains("connection")
}

/// The error and its causes on one line ("transport error: connection
/// refused"), because the top-level message alone rarely says why.
fn error_chain(error: &dyn std::error::Error) -> String {
    cause_chain(&error.to_string(), error.source())
}

/// `first`, then each cause that adds something (the layers of a
/// connection error repeat each other's words).
fn cause_chain(first: &str, mut source: Option<&dyn std::error::Error>) -> String {
    let mut text = first.to_owned();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !more.is_empty() && !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let response = self
            .call("get", || {
                let mut kv = self.client.kv_client();
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
        // Pages are read at one revision (the first page's, unless given) so
        // the listing is one consistent snapshot.
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE_SIZE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let response = self
                .call("list", || {
                    let mut kv = self.client.kv_client();
                    let (start, options) = (start.clone(), options.clone());
                    async move { kv.get(start, Some(options)).await }
                })
                .await
                .map_err(|e| match e {
                    StoreError::Compacted { .. } => StoreError::Compacted {
                        requested: revision,
                        compacted: 0,
                    },
                    other => other,
                })?;
            if revision == 0 {
                revision = response.header().map(|h| h.revision()).unwrap_or_default();
            }
            items.extend(response.kvs().iter().map(key_value));
            match (response.more(), response.kvs().last()) {
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
        let options = GetOptions::new()
            .with_range(prefix_end(prefix))
            .with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let response = self
            .call("newest", || {
                let mut kv = self.client.kv_client();
                let options = options.clone();
                async move { kv.get(prefix, Some(options)).await }
            })
            .await?;
        Ok(response.kvs().iter().map(key_value).collect())
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let request = EtcdTxn::new()
            .when(txn.when.into_iter().map(compare).collect::<Vec<_>>())
            .and_then(txn.then.into_iter().map(mutation).collect::<Vec<_>>());
        let response = self
            .call("txn", || {
                let mut kv = self.client.kv_client();
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
                let mut watch = self.client.watch_client();
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
                let mut kv = self.client.kv_client();
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
            let mut kv = self.client.kv_client();
            async move { kv.compact(revision, None).await }
        })
        .await?;
        Ok(())
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
