//! `rtmanager`, the controller binary: configuration, logging, signals, and
//! [`rtm_controller::run`].

use std::process::ExitCode;
use std::time::Duration;

use rtm_controller::config::{ControllerConfig, LoadError, LogFormat};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config = match ControllerConfig::load(std::env::args_os()) {
        Ok(config) => config,
        Err(LoadError::Args(error)) => error.exit(),
        Err(error) => {
            eprintln!("rtmanager: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    if config.print_config {
        println!("{config}");
        return ExitCode::SUCCESS;
    }
    init_logging(config.log_format);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("rtmanager: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone(), config.drain_timeout));
        match rtm_controller::run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "rtmanager failed");
                ExitCode::FAILURE
            }
        }
    });
    // The work is done: a blocking task still running (a name lookup of a connection that
    // never came up, say) need not hold the exit.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    code
}

/// How long the exit waits for blocking tasks once the controller stopped.
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(200);

/// `RUST_LOG` filters (default `info`); text for people, JSON for collectors.
fn init_logging(format: LogFormat) {
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let filter =
        EnvFilter::try_new(log_directives(&spec)).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal, not for files and log collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The crates the controller logs under (their targets are module paths).
const LOG_TARGETS: [&str; 2] = ["rtm_controller", "rtm_core"];

/// `RUST_LOG` (`info` when empty), with a directive for the target
/// `rtmanager` — the one crate of earlier versions, and the project's
/// name — given to every crate the controller logs under, so that
/// `RUST_LOG=info,rtmanager=debug` keeps meaning what it says.
fn log_directives(spec: &str) -> String {
    if spec.trim().is_empty() {
        return "info".to_owned();
    }
    spec.split(',')
        .flat_map(|directive| {
            let directive = directive.trim();
            let level = match directive.strip_prefix("rtmanager") {
                Some("") => Some(""),
                Some(rest) if rest.starts_with('=') => Some(rest),
                _ => None,
            };
            match level {
                Some(level) => LOG_TARGETS
                    .map(|target| format!("{target}{level}"))
                    .to_vec(),
                None => vec![directive.to_owned()],
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// What a drain may take beyond `--drain-timeout` (which bounds the in-flight operations):
/// revoking the session and closing the HTTP connections, milliseconds with a live etcd, and
/// bounded by the request timeout and the HTTP close grace when not.
const EXIT_MARGIN: Duration = Duration::from_secs(5);

/// First SIGTERM or SIGINT: drain. Second: exit at once. A drain still running after the drain
/// timeout and [`EXIT_MARGIN`] (etcd or Docker not answering, whatever the controller was
/// doing) ends the process: the drain timeout always applies. What was left is what a crash
/// leaves: the session lease expires after its TTL and the next controller recovers the
/// history.
async fn watch_signals(shutdown: CancellationToken, drain_timeout: Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop rtmanager with SIGKILL");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("signal received: draining (send it again to exit at once)");
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {
            tracing::warn!("second signal: exiting at once");
            std::process::exit(130);
        }
        _ = int.recv() => {
            tracing::warn!("second signal: exiting at once");
            std::process::exit(130);
        }
        _ = tokio::time::sleep(drain_timeout + EXIT_MARGIN) => {
            tracing::error!(
                drain_timeout = ?drain_timeout,
                "the drain did not end within the drain timeout; exiting (the session lease \
                 expires after its TTL)"
            );
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::log_directives;

    #[test]
    fn a_directive_for_rtmanager_reaches_every_crate_the_controller_logs_under() {
        assert_eq!(
            log_directives("info,rtmanager=debug"),
            "info,rtm_controller=debug,rtm_core=debug"
        );
        assert_eq!(log_directives("rtmanager"), "rtm_controller,rtm_core");
        assert_eq!(log_directives("warn,rtm_core=trace"), "warn,rtm_core=trace");
        assert_eq!(
            log_directives("rtmanager_other=debug"),
            "rtmanager_other=debug"
        );
        assert_eq!(log_directives(""), "info");
    }
}
