//! `rtm-bench`: the benchmark program. Every scenario measures the
//! controller side by side with a baseline in the same run (these machines
//! are noisy, so ratios mean more than absolute figures), prints a table
//! and writes `target/bench/<scenario>.json`. See BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p rtm-bench -- restart-overhead | apply-latency | scale | adoption | parsing | placement | all
//! ```
//!
//! The scenarios (one module each), what they share (`harness`), how
//! results are reported (`report`), and the child processes the scale
//! scenario measures (`child`).

#![warn(missing_docs, unreachable_pub)]

mod adoption;
mod apply;
mod child;
mod harness;
mod parsing;
mod placement;
mod report;
mod restart;
mod scale;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use self::harness::Result;
use self::report::Report;

/// Benchmarks of the rtmanager controller against baselines measured in
/// the same run. Needs etcd and Docker: eval "$(scripts/services)".
#[derive(Debug, Parser)]
#[command(name = "rtm-bench")]
struct Cli {
    /// Directory of the JSON results (`<scenario>.json`).
    #[arg(long, default_value = "target/bench", global = true)]
    out_dir: PathBuf,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Restart through the controller vs raw Docker stop+rm+create+start (real Docker).
    RestartOverhead(restart::Args),
    /// Spec write → start of its reconcile, with 100 and 10,000 games (simulated Docker).
    ApplyLatency(apply::Args),
    /// Converge 10,000 games from scratch; RSS; etcd writes (simulated Docker).
    Scale(scale::Args),
    /// Controller restart with 200 running containers (real Docker).
    Adoption(adoption::Args),
    /// Refusing hostile documents vs parsing a normal one (the parser alone).
    Parsing(parsing::Args),
    /// The elected scheduler places 100,000 games over 1,000 nodes, per strategy (real etcd).
    Placement(placement::Args),
    /// Every scenario with its defaults.
    All,
    #[command(hide = true)]
    ChildController(child::ControllerArgs),
    #[command(hide = true)]
    ChildFakeBaseline(child::BaselineArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The controller's own logs stay quiet unless RUST_LOG asks for them.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rtm-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // SIGINT or SIGTERM: stop waiting, clean up keys and containers.
        tokio::spawn(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            eprintln!("rtm-bench: interrupted; cleaning up");
            harness::interrupted().cancel();
        });
        dispatch(&cli).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rtm-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: &Cli) -> Result<()> {
    match &cli.scenario {
        Scenario::ChildController(args) => return child::controller(args).await,
        Scenario::ChildFakeBaseline(args) => return child::baseline(args).await,
        _ => {}
    }
    cleanup_leftovers().await;
    let scenarios: Vec<Scenario> = match &cli.scenario {
        Scenario::All => vec![
            Scenario::RestartOverhead(restart::Args::parse_from(["restart-overhead"])),
            Scenario::ApplyLatency(apply::Args::parse_from(["apply-latency"])),
            Scenario::Scale(scale::Args::parse_from(["scale"])),
            Scenario::Adoption(adoption::Args::parse_from(["adoption"])),
            Scenario::Parsing(parsing::Args::parse_from(["parsing"])),
            Scenario::Placement(placement::Args::parse_from(["placement"])),
        ],
        _ => Vec::new(),
    };
    let scenarios: Vec<&Scenario> = if scenarios.is_empty() {
        vec![&cli.scenario]
    } else {
        scenarios.iter().collect()
    };
    let mut failed = 0;
    for scenario in scenarios {
        let started = std::time::Instant::now();
        let outcome =
            futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run(scenario))).await;
        let report = match outcome {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => {
                eprintln!("rtm-bench: {} failed: {e}", name(scenario));
                failed += 1;
                continue;
            }
            Err(_) => {
                eprintln!("rtm-bench: {} panicked", name(scenario));
                failed += 1;
                continue;
            }
        };
        print!("{}", report.table());
        println!(
            "  ({} took {:.0} s)",
            report.scenario,
            started.elapsed().as_secs_f64()
        );
        match report.write(&cli.out_dir) {
            Ok(path) => println!("  results: {}", path.display()),
            Err(e) => {
                eprintln!("rtm-bench: cannot write the results: {e}");
                failed += 1;
            }
        }
        if harness::interrupted().is_cancelled() {
            break;
        }
    }
    if failed > 0 {
        return Err(harness::error(format!("{failed} scenario(s) failed")));
    }
    Ok(())
}

fn name(scenario: &Scenario) -> &'static str {
    match scenario {
        Scenario::RestartOverhead(_) => "restart-overhead",
        Scenario::ApplyLatency(_) => "apply-latency",
        Scenario::Scale(_) => "scale",
        Scenario::Adoption(_) => "adoption",
        Scenario::Parsing(_) => "parsing",
        Scenario::Placement(_) => "placement",
        Scenario::All => "all",
        Scenario::ChildController(_) => "child-controller",
        Scenario::ChildFakeBaseline(_) => "child-fake-baseline",
    }
}

async fn run(scenario: &Scenario) -> Result<Report> {
    match scenario {
        Scenario::RestartOverhead(args) => restart::run(args).await,
        Scenario::ApplyLatency(args) => apply::run(args).await,
        Scenario::Scale(args) => scale::run(args).await,
        Scenario::Adoption(args) => adoption::run(args).await,
        Scenario::Parsing(args) => parsing::run(args).await,
        Scenario::Placement(args) => placement::run(args).await,
        _ => Err(harness::error("not a scenario")),
    }
}

/// Containers left by an earlier run that was killed before cleaning up.
async fn cleanup_leftovers() {
    let Ok(docker) =
        rtm_controller::runtime::DockerRuntime::connect(None, std::time::Duration::from_secs(30))
            .await
    else {
        return;
    };
    match harness::remove_leftovers(&docker).await {
        Ok(0) | Err(_) => {}
        Ok(removed) => eprintln!("rtm-bench: removed {removed} containers of an earlier run"),
    }
}
