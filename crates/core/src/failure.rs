//! [`Failure`], the one error that crosses a layer: a stable [`ErrorCode`],
//! the message people read (the one history entries and status records
//! keep), and the error it came from as its `source`, so a log that walks
//! the chain still sees the etcd or Docker error underneath. Every module
//! error that has a code ([`Coded`]) turns into one with `?`.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use crate::error_code::ErrorCode;

/// An error and its causes on one line, `a: b: c`, leaving out a cause that adds nothing
/// (the layers of a transport error repeat each other's words): the top-level message of a
/// client error (bollard's "client error (Connect)", tonic's "transport error") rarely says
/// why by itself.
pub fn error_chain(error: &dyn StdError) -> String {
    cause_chain(&error.to_string(), error.source())
}

/// `first`, then each cause from `source` on that adds something, `: `-separated (what
/// [`error_chain`] does for an error whose own message is `first`).
pub fn cause_chain(first: &str, mut source: Option<&dyn StdError>) -> String {
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

/// An error that carries a stable code.
pub trait Coded: StdError {
    /// The stable code of this failure.
    fn code(&self) -> ErrorCode;
}

/// A failed step or reconcile: its stable code, a message for people, and
/// what caused it.
///
/// `Display` is the message alone, exactly as recorded; `source()` is the
/// error it was made from, if any. Cheap to clone (the source is shared), as
/// a failure is both recorded and returned.
#[derive(Clone)]
pub struct Failure {
    /// The stable code: what the failure means to a caller.
    pub code: ErrorCode,
    /// What failed and why, for people.
    pub message: String,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

impl Failure {
    /// A failure found by the caller itself (no error underneath).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            source: None,
        }
    }

    /// A failure caused by `source`, described by `message`.
    pub fn caused_by(
        code: ErrorCode,
        message: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        Self {
            code,
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// The same failure, its message put in context (`"<context>: <message>"`).
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl<E: Coded + Send + Sync + 'static> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure::caused_by(error.code(), error.to_string(), error)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Failure");
        debug
            .field("code", &self.code)
            .field("message", &self.message);
        if let Some(source) = &self.source {
            debug.field("source", source);
        }
        debug.finish()
    }
}

impl StdError for Failure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

/// Two failures are equal when code and message are: what a caller can
/// observe of one (the source is for people reading logs).
impl PartialEq for Failure {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code && self.message == other.message
    }
}

impl Eq for Failure {}

/// The core's module errors keep their own `code()`; these let `?` turn
/// them into a [`Failure`].
macro_rules! coded {
    ($($ty:ty),* $(,)?) => {$(
        impl Coded for $ty {
            fn code(&self) -> ErrorCode {
                <$ty>::code(self)
            }
        }
    )*};
}

coded!(
    crate::store::StoreError,
    crate::model::parse::ParseError,
    crate::records::documents::DocumentError,
    crate::records::history::HistoryError,
    crate::records::status::StatusError,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_names_each_cause_that_adds_something() {
        let inner =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let outer = Failure::caused_by(
            ErrorCode::ServiceUnavailable,
            "client error (Connect)",
            inner,
        );
        assert_eq!(
            error_chain(&outer),
            "client error (Connect): connection refused"
        );
        let repeats = Failure::caused_by(
            ErrorCode::ServiceUnavailable,
            "transport error: connection refused",
            std::io::Error::other("connection refused"),
        );
        assert_eq!(error_chain(&repeats), "transport error: connection refused");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("etcd is unreachable")]
    struct Unreachable;

    impl Coded for Unreachable {
        fn code(&self) -> ErrorCode {
            ErrorCode::ServiceUnavailable
        }
    }

    #[test]
    fn a_coded_error_becomes_a_failure_that_keeps_it_as_its_source() {
        let failure = Failure::from(Unreachable);
        assert_eq!(failure.code, ErrorCode::ServiceUnavailable);
        assert_eq!(failure.to_string(), "etcd is unreachable");
        let source = failure.source().expect("the error it came from");
        assert!(source.downcast_ref::<Unreachable>().is_some());
    }

    #[test]
    fn context_prefixes_the_message_and_keeps_the_code_and_source() {
        let failure = Failure::from(Unreachable).context("docker start");
        assert_eq!(failure.to_string(), "docker start: etcd is unreachable");
        assert_eq!(failure.code, ErrorCode::ServiceUnavailable);
        assert!(failure.source().is_some());
    }
}
