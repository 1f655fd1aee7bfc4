//! The `perfd` binary: CLI → Config → Daemon::start → wait for SIGTERM/SIGINT → Daemon::shutdown.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use perfd::config::{Config, Overrides};
use perfd::notify::{self, Notifier};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

/// perfd: single-host caching and performance-monitoring daemon.
#[derive(Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default command).
    Serve(ServeArgs),
    /// Open a data directory, verify it and print its counts (the daemon must be stopped).
    Check(CheckArgs),
}

#[derive(Args, Clone, Default)]
struct CheckArgs {
    #[command(flatten)]
    common: ServeArgs,
    /// Also rewrite the file without free pages (shrinks it after large deletions).
    #[arg(long)]
    compact: bool,
}

#[derive(Args, Clone, Default)]
struct ServeArgs {
    /// TOML configuration file (see systemd/perfd.toml for every key).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8470; env PERFD_LISTEN].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Data directory holding perfd.redb, created if missing [default: ./data; env PERFD_DATA_DIR].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let (args, check) = match cli.command {
        None => (cli.serve, None),
        Some(Command::Serve(a)) => (a, None),
        Some(Command::Check(a)) => (a.common, Some(a.compact)),
    };
    let flags = Overrides { config_file: args.config, listen: args.listen, data_dir: args.data_dir };
    let config = match Config::load(&flags, std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("perfd: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match check {
        Some(compact) => run_check(config, compact),
        None => serve(config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("perfd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    // The watchdog stops pinging when the writer (which turns at least every second) or the
    // sampler (every interval) has not turned for this long.
    let writer_stall = Duration::from_secs(60);
    let sampler_stall = config.sampler.interval * 3 + Duration::from_secs(10);
    let mut signals =
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
            .context("installing signal handlers")?;
    let notifier = Notifier::from_env(std::env::var("NOTIFY_SOCKET").ok());
    let watchdog_usec = std::env::var("WATCHDOG_USEC").ok().and_then(|v| v.parse::<u64>().ok());
    let mut daemon = perfd::Daemon::start(config).context("starting perfd")?;
    log::info!("perfd listening on http://{} with data dir {}", daemon.addr, data_dir.display());
    // The listener is bound and the WAL replayed: ready.
    notifier.send("READY=1");
    let stop_watchdog = Arc::new(AtomicBool::new(false));
    let watchdog = match watchdog_usec {
        Some(usec) if usec > 0 => {
            let (writer, published) = (daemon.writer.clone(), daemon.sampler.published.clone());
            let alive = move || {
                let now = perfd::model::now_ms();
                now - writer.stats.alive_ms.load(Relaxed) < writer_stall.as_millis() as i64
                    && now - published.alive_ms.load(Relaxed) < sampler_stall.as_millis() as i64
            };
            let interval = Duration::from_micros(usec);
            Some(notify::start_watchdog(notifier.clone(), interval, alive, stop_watchdog.clone())?)
        }
        _ => None,
    };
    if let Some(sig) = signals.forever().next() {
        log::info!("signal {sig} received; shutting down");
    }
    notifier.send("STOPPING=1");
    daemon.shutdown();
    stop_watchdog.store(true, Relaxed);
    if let Some(w) = watchdog {
        w.thread().unpark();
        let _ = w.join();
    }
    log::info!("perfd stopped cleanly");
    Ok(())
}

fn run_check(config: Config, compact: bool) -> anyhow::Result<()> {
    let store = perfd::store::Store::open(&config.data_dir).context("opening the database")?;
    if compact {
        store.compact().context("compacting")?;
        return run_check(config, false);
    }
    let counts = store.counts()?;
    println!("{}", serde_json::to_string_pretty(&counts)?);
    Ok(())
}
