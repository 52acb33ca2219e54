//! `rtctl`, the kubectl-like tool: argument parsing and the commands.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// rtctl: manage GameRuntimes — the desired state of game containers.
#[derive(Debug, Parser)]
#[command(name = "rtctl", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the GameRuntime CustomResourceDefinition (generated from the types).
    Crd,
}

/// Runs one rtctl invocation.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Crd => {
            print!("{}", crate::model::crd_yaml());
            ExitCode::SUCCESS
        }
    }
}
