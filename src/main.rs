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
    let workers = config.workers;
    if workers == 1 {
        return serve(config, cli, 0, false);
    }
    // One independent loop per worker, each with its own SO_REUSEPORT listener, backend
    // connections and health state; only worker 0 serves /metrics (the port is not shared).
    let threads: Vec<_> = (0..workers)
        .map(|id| {
            let mut config = config.clone();
            if id > 0 {
                config.metrics_listen = None;
            }
            let cli = cli.clone();
            std::thread::Builder::new()
                .name(format!("respite-worker-{id}"))
                .spawn(move || serve(config, cli, id, true))
        })
        .collect();
    let mut code = ExitCode::SUCCESS;
    for t in threads {
        match t.map(|h| h.join()) {
            Ok(Ok(c)) if c == ExitCode::SUCCESS => {}
            Ok(Ok(c)) => code = c,
            _ => code = ExitCode::from(1),
        }
    }
    code
}

fn serve(config: Config, cli: Cli, worker: usize, reuse_port: bool) -> ExitCode {
    let addrs = [config.listen, config.tls.listen];
    let listen: Vec<String> = addrs.iter().flatten().map(|a| a.to_string()).collect();
    let listen = listen.join(" and ");
    let mut proxy = match Proxy::bind(config, reuse_port) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("respite: cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    proxy.set_worker_id(worker);
    proxy.enable_reload(cli);
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
