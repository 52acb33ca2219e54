//! `rtctl`: the command-line tool for GameRuntimes.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    rtmanager::cli::run(rtmanager::cli::Cli::parse())
}
