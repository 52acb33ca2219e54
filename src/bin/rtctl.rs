//! `rtctl`: the command-line tool for GameRuntimes (see `rtctl`).

use std::process::ExitCode;

fn main() -> ExitCode {
    rtctl::main()
}
