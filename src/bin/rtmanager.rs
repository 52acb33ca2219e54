//! `rtmanager`, the controller binary: parses its configuration and runs the
//! controller until a signal stops it.

use std::process::ExitCode;

use rtmanager::controller::config::ControllerConfig;

fn main() -> ExitCode {
    let config = match ControllerConfig::load(std::env::args_os()) {
        Ok(config) => config,
        Err(rtmanager::controller::config::LoadError::Args(error)) => error.exit(),
        Err(error) => {
            eprintln!("rtmanager: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    if config.print_config {
        println!("{config}");
        return ExitCode::SUCCESS;
    }
    eprintln!("rtmanager: the controller loop is not part of this build yet; use --print-config");
    ExitCode::from(2)
}
