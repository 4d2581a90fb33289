//! The `respite` binary: parse flags, load the config, bind, run. No logic here.

use clap::Parser;
use respite::{Cli, Config, Proxy};
use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let config = match Config::from_cli(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("respite: {e}");
            return ExitCode::from(2);
        }
    };
    let listen = config.listen;
    let mut proxy = match Proxy::bind(config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("respite: cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = proxy.handle_signals() {
        eprintln!("respite: cannot install signal handlers: {e}");
        return ExitCode::from(1);
    }
    match proxy.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("respite: event loop failed: {e}");
            ExitCode::from(1)
        }
    }
}
