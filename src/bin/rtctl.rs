//! `rtctl`: the command-line tool for GameRuntimes (see `rtmanager::cli`).

use std::process::ExitCode;

fn main() -> ExitCode {
    rtmanager::cli::main()
}
