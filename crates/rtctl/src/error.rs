//! rtctl's failures: one enum, one line on stderr each ("error: what, which object, why, what
//! to do"), and one exit code per class, so scripts can branch on the code without parsing
//! the message.
//!
//! | exit | class | when |
//! | ---- | ----- | ---- |
//! | 0    | success | the command did what it was asked; `diff`: no differences |
//! | 1    | differences | `diff` only: live and applied differ |
//! | 2    | usage | a bad flag, argument, selector, config file or connection setting |
//! | 3    | invalid_request | a file, document or name is invalid; nothing was written |
//! | 4    | not_found | the game does not exist |
//! | 5    | conflict | a concurrent change won (stale resourceVersion, retries exhausted) |
//! | 6    | service_unavailable | etcd is unreachable or did not answer in time |
//! | 7    | permission_denied | etcd refused the credentials or the operation |
//! | 8    | operation failed | the controller reported a failed restart, start or stop, or a failed pull of `prepull` |
//! | 9    | timeout | `--wait`, `wait` or `prepull` gave up before the condition held (or a node answered) |
//! | 10   | internal | other corrupt data in etcd (a history entry), or a bug in rtctl |
//! | 11   | output | the output could not be written (other than a closed pipe) |
//! | 12   | corrupt | a stored document cannot be read: `get` shows it `Invalid`; `apply --force` replaces it |
//! | 13   | not_ready | `allocate`: the game is not Ready, so no match is sent to it |
//! | 14   | in_session | `delete`: the game is Allocated (release it, or `--force`) |
//! | 15   | not done | `rollout status`: some game is not yet updated and Ready (`-w` waits; its timeout is 9) |
//! | 130  | interrupted | Ctrl-C while waiting |
//!
//! [`EXIT_CODES_HELP`] is the same table for `rtctl --help`; a test keeps them together.

use std::process::ExitCode;

#[cfg(test)]
use rtm_core::error_code::ErrorCode;

/// Exit codes, one per class of failure (see the module doc).
pub(crate) mod exit {
    pub(crate) const SUCCESS: u8 = 0;
    pub(crate) const DIFFERENCES: u8 = 1;
    pub(crate) const USAGE: u8 = 2;
    pub(crate) const INVALID: u8 = 3;
    pub(crate) const NOT_FOUND: u8 = 4;
    pub(crate) const CONFLICT: u8 = 5;
    pub(crate) const UNAVAILABLE: u8 = 6;
    pub(crate) const PERMISSION_DENIED: u8 = 7;
    pub(crate) const OPERATION_FAILED: u8 = 8;
    pub(crate) const TIMEOUT: u8 = 9;
    pub(crate) const INTERNAL: u8 = 10;
    pub(crate) const OUTPUT: u8 = 11;
    pub(crate) const CORRUPT: u8 = 12;
    pub(crate) const NOT_READY: u8 = 13;
    pub(crate) const IN_SESSION: u8 = 14;
    pub(crate) const NOT_DONE: u8 = 15;
    pub(crate) const INTERRUPTED: u8 = 130;
}

/// The exit-code table as `rtctl --help` prints it (after the options).
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
    0    success (diff: no differences)
    1    diff: live and applied differ
    2    usage: bad flag, argument, selector, config file or connection setting
    3    invalid_request: a file, document or name is invalid; nothing was written
    4    not_found: the game does not exist
    5    conflict: a concurrent change won
    6    service_unavailable: etcd is unreachable or did not answer in time
    7    permission_denied: etcd refused the credentials or the operation
    8    the controller reported a failed restart, start or stop (prepull: a failed pull)
    9    timed out waiting (--wait, wait, prepull)
    10   internal: other corrupt data in etcd (a history entry), or a bug in rtctl
    11   the output could not be written
    12   corrupt: a stored document cannot be read (get shows it Invalid; apply --force replaces it)
    13   not_ready: allocate: the game is not Ready
    14   in_session: delete: the game is Allocated (release it, or --force)
    15   rollout status: not every game is updated and Ready yet (-w waits; its timeout is 9)
    130  interrupted (Ctrl-C) while waiting";

/// Why an rtctl command failed. Every message is one line, names the object and says what
/// to do next.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// Bad flags, selector, config file or connection settings.
    #[error("{message}")]
    Usage { message: String },

    /// A file, document or name the user gave is invalid; nothing was written.
    #[error("{message}")]
    Invalid { message: String },

    /// The game does not exist.
    #[error("gameruntime/{name} not found under prefix {prefix}; list the games with `rtctl get`")]
    NotFound { name: String, prefix: String },

    /// An object of another kind (a budget, a revision) does not exist.
    #[error("{kind}/{name} not found under prefix {prefix}; list them with `{list}`")]
    NotFoundKind {
        kind: &'static str,
        name: String,
        prefix: String,
        list: &'static str,
    },

    /// Something asked for is not there (e.g. an earlier revision to roll back to).
    #[error("{message}")]
    Missing { message: String },

    /// A concurrent change won.
    #[error("{message}")]
    Conflict { message: String },

    /// etcd could not be reached or did not answer in time.
    #[error(
        "cannot reach etcd at {endpoints} while {doing}: {detail}; check that etcd runs there \
         and that --etcd-endpoints, RTM_ETCD_ENDPOINTS or the context's endpoints point at it{}",
        if *.outcome_unknown { " (the write may have been applied: check with `rtctl get`)" } else { "" }
    )]
    Unavailable {
        endpoints: String,
        doing: String,
        detail: String,
        /// A write whose answer was lost may have been applied.
        outcome_unknown: bool,
    },

    /// etcd refused the credentials or the operation.
    #[error(
        "etcd at {endpoints} refused {doing}: {detail}; check --etcd-user / RTM_ETCD_USER, the \
         password and the user's role"
    )]
    PermissionDenied {
        endpoints: String,
        doing: String,
        detail: String,
    },

    /// etcd refused who we are: the user name or password, or the client certificate. Same
    /// class as [`CliError::PermissionDenied`]; the message names what to fix.
    #[error("{message}")]
    Credentials { message: String },

    /// The controller recorded a failed operation.
    #[error(
        "{op} of gameruntime/{name} failed: {code}: {message}; see `rtctl history {name}` and \
         `rtctl describe {name}`"
    )]
    OperationFailed {
        op: String,
        name: String,
        code: String,
        message: String,
    },

    /// A wait gave up.
    #[error("timed out after {after} waiting for {what}; {hint}")]
    Timeout {
        what: String,
        after: String,
        hint: String,
    },

    /// Ctrl-C while waiting.
    #[error("interrupted while waiting for {what}; {hint}")]
    Interrupted { what: String, hint: String },

    /// Corrupt data in etcd, or a bug.
    #[error("{message}")]
    Internal { message: String },

    /// A stored document cannot be read (bytes written by hand, a broken tool, another
    /// version): `get` shows it as `Invalid`, `apply --force` replaces it, `delete` removes it.
    #[error("{message}")]
    Corrupt { message: String },

    /// The game is not Ready, so it cannot be allocated.
    #[error("{message}")]
    NotReady { message: String },

    /// The game is Allocated: a delete would end its match.
    #[error("{message}")]
    InSession { message: String },

    /// A Docker engine (`rtctl logs`) could not be reached or did not answer.
    #[error("{message}")]
    DockerUnavailable { message: String },

    /// A Docker engine refused us (no access to its socket).
    #[error("{message}")]
    DockerDenied { message: String },

    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    pub(crate) fn usage(message: impl Into<String>) -> CliError {
        CliError::Usage {
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> CliError {
        CliError::Invalid {
            message: message.into(),
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> CliError {
        CliError::Internal {
            message: message.into(),
        }
    }

    /// The process exit code of this class of failure.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage { .. } => exit::USAGE,
            CliError::Invalid { .. } => exit::INVALID,
            CliError::NotFound { .. }
            | CliError::NotFoundKind { .. }
            | CliError::Missing { .. } => exit::NOT_FOUND,
            CliError::Conflict { .. } => exit::CONFLICT,
            CliError::Unavailable { .. } | CliError::DockerUnavailable { .. } => exit::UNAVAILABLE,
            CliError::PermissionDenied { .. }
            | CliError::Credentials { .. }
            | CliError::DockerDenied { .. } => exit::PERMISSION_DENIED,
            CliError::OperationFailed { .. } => exit::OPERATION_FAILED,
            CliError::Timeout { .. } => exit::TIMEOUT,
            CliError::Internal { .. } => exit::INTERNAL,
            CliError::Output(_) => exit::OUTPUT,
            CliError::Corrupt { .. } => exit::CORRUPT,
            CliError::NotReady { .. } => exit::NOT_READY,
            CliError::InSession { .. } => exit::IN_SESSION,
            CliError::Interrupted { .. } => exit::INTERRUPTED,
        }
    }

    /// The stable error code of the failure, where one applies (no command prints it yet;
    /// the tests keep the mapping).
    #[cfg(test)]
    pub(crate) fn code(&self) -> Option<ErrorCode> {
        match self {
            CliError::Usage { .. } | CliError::Invalid { .. } => Some(ErrorCode::InvalidRequest),
            CliError::NotFound { .. }
            | CliError::NotFoundKind { .. }
            | CliError::Missing { .. } => Some(ErrorCode::NotFound),
            CliError::Conflict { .. } => Some(ErrorCode::Conflict),
            CliError::Unavailable { .. } | CliError::DockerUnavailable { .. } => {
                Some(ErrorCode::ServiceUnavailable)
            }
            CliError::PermissionDenied { .. }
            | CliError::Credentials { .. }
            | CliError::DockerDenied { .. } => Some(ErrorCode::PermissionDenied),
            CliError::OperationFailed { code, .. } => ErrorCode::parse(code),
            CliError::Internal { .. } => Some(ErrorCode::Internal),
            // Not rtmanager's invariant breaking: someone stored what no version wrote.
            CliError::Corrupt { .. } => Some(ErrorCode::InvalidRequest),
            CliError::NotReady { .. } => Some(ErrorCode::NotReady),
            CliError::InSession { .. } => Some(ErrorCode::InSession),
            CliError::Timeout { .. } | CliError::Interrupted { .. } | CliError::Output(_) => None,
        }
    }

    /// True for a write to stdout that failed because the reader went away (`rtctl get | head`):
    /// not a failure worth a message.
    pub(crate) fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// What a command that ran to its end reports: success, `diff`'s "differences found", or
/// the exit code of a command that reported its failures itself (a bulk verb's worst, one
/// line per game; `rollout status` not done).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Differences,
    Exit(u8),
}

impl Outcome {
    pub(crate) fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Success => ExitCode::from(exit::SUCCESS),
            Outcome::Differences => ExitCode::from(exit::DIFFERENCES),
            Outcome::Exit(code) => ExitCode::from(code),
        }
    }

    /// The worse of two outcomes of a bulk verb: the higher exit code (success is 0).
    pub(crate) fn worst(self, other: Outcome) -> Outcome {
        let code = |o: Outcome| match o {
            Outcome::Success => exit::SUCCESS,
            Outcome::Differences => exit::DIFFERENCES,
            Outcome::Exit(code) => code,
        };
        if code(other) > code(self) {
            other
        } else {
            self
        }
    }
}

/// Keeps a message on one line: a newline inside a cause (a YAML error, a gRPC status) would
/// split what scripts and people read as one error.
pub(crate) fn one_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len());
    for (i, part) in text
        .lines()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .enumerate()
    {
        if i > 0 {
            line.push_str("; ");
        }
        line.push_str(part);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes_in_module_doc() -> Vec<u8> {
        include_str!("error.rs")
            .lines()
            .filter_map(|line| line.strip_prefix("//! | "))
            .filter_map(|rest| rest.split('|').next())
            .filter_map(|cell| cell.trim().parse().ok())
            .collect()
    }

    fn codes_in_help() -> Vec<u8> {
        EXIT_CODES_HELP
            .lines()
            .skip(1)
            .filter_map(|line| line.split_whitespace().next())
            .filter_map(|cell| cell.parse().ok())
            .collect()
    }

    #[test]
    fn the_module_doc_and_the_help_list_the_same_exit_codes() {
        let expected = vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 130];
        assert_eq!(codes_in_module_doc(), expected);
        assert_eq!(codes_in_help(), expected);
    }

    #[test]
    fn every_class_has_its_own_exit_code() {
        let errors = [
            CliError::usage("u"),
            CliError::invalid("i"),
            CliError::NotFound {
                name: "g".into(),
                prefix: "/p".into(),
            },
            CliError::Conflict {
                message: "c".into(),
            },
            CliError::Unavailable {
                endpoints: "e".into(),
                doing: "d".into(),
                detail: "x".into(),
                outcome_unknown: false,
            },
            CliError::PermissionDenied {
                endpoints: "e".into(),
                doing: "d".into(),
                detail: "x".into(),
            },
            CliError::OperationFailed {
                op: "restart".into(),
                name: "g".into(),
                code: "start_failed".into(),
                message: "m".into(),
            },
            CliError::Timeout {
                what: "w".into(),
                after: "1s".into(),
                hint: "h".into(),
            },
            CliError::internal("b"),
            CliError::Output(std::io::Error::other("o")),
            CliError::Corrupt {
                message: "k".into(),
            },
            CliError::Interrupted {
                what: "w".into(),
                hint: "h".into(),
            },
            CliError::NotReady {
                message: "n".into(),
            },
            CliError::InSession {
                message: "s".into(),
            },
        ];
        let mut codes: Vec<u8> = errors.iter().map(CliError::exit_code).collect();
        assert!(!codes.contains(&exit::SUCCESS) && !codes.contains(&exit::DIFFERENCES));
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), errors.len(), "exit codes must be distinct");
    }

    #[test]
    fn an_operation_failure_reads_error_code_colon_message() {
        let error = CliError::OperationFailed {
            op: "restart".into(),
            name: "g1".into(),
            code: "start_failed".into(),
            message: "boom".into(),
        };
        assert!(
            error
                .to_string()
                .starts_with("restart of gameruntime/g1 failed: start_failed: boom;"),
            "{error}"
        );
        assert_eq!(error.code(), Some(ErrorCode::StartFailed));
    }

    #[test]
    fn one_line_joins_lines() {
        assert_eq!(one_line("a\n  b\n\nc"), "a; b; c");
        assert_eq!(one_line("plain"), "plain");
    }
}
