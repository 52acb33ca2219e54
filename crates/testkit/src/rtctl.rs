//! rtctl as the integration tests run it against the test etcd and one installation's
//! prefix (and no config file of the machine's): one bounded run read whole
//! ([`Rtctl::run`], and [`Rtctl::ok`] / [`Rtctl::fails`], which also assert its exit
//! code, saying all it printed when it is not the one expected).

use std::process::Command;
use std::time::Duration;

use rtm_core::store::Keys;

use crate::docker::run_bounded;

/// What one rtctl run said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Said {
    /// Its exit code (`None`: killed by a signal, or past the bound).
    pub code: Option<i32>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// The rtctl binary, pointed at the test etcd and one prefix.
#[derive(Debug, Clone)]
pub struct Rtctl {
    bin: String,
    prefix: String,
    limit: Duration,
}

impl Rtctl {
    /// `bin` (a test's `env!("CARGO_BIN_EXE_rtctl")`) on `keys`' prefix, each run
    /// bounded by `limit`.
    pub fn new(bin: &str, keys: &Keys, limit: Duration) -> Rtctl {
        Rtctl {
            bin: bin.to_owned(),
            prefix: keys.prefix().to_owned(),
            limit,
        }
    }

    /// The command with the environment every run gets.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .env("RTM_ETCD_ENDPOINTS", crate::etcd_endpoints().join(","))
            .env("RTM_PREFIX", &self.prefix)
            .env("RTMCONFIG", "/dev/null");
        command
    }

    /// `rtctl ARGS`, to its end (or the bound).
    pub fn run(&self, args: &[&str]) -> Said {
        let mut command = self.command();
        command.args(args);
        match run_bounded(command, self.limit) {
            Some(output) => Said {
                code: output.status.code(),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            },
            None => Said {
                code: None,
                stdout: String::new(),
                stderr: format!("rtctl {args:?} did not end within {:?}", self.limit),
            },
        }
    }

    /// `rtctl ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.fails(args, 0).stdout
    }

    /// `rtctl ARGS`, which must exit with `code`.
    pub fn fails(&self, args: &[&str], code: i32) -> Said {
        let said = self.run(args);
        assert_eq!(
            said.code,
            Some(code),
            "rtctl {args:?}\nstdout: {}\nstderr: {}",
            said.stdout,
            said.stderr
        );
        said
    }
}
