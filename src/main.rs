//! The `perfd` binary: CLI → Config → Daemon::start → wait for SIGTERM/SIGINT → Daemon::shutdown.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use perfd::config::{Config, Overrides, Source};
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
    /// Verify a data directory (the daemon must be stopped) or a backup file, and print counts.
    Check(CheckArgs),
    /// Write a backup: offline from a stopped daemon's data dir, or ask a running one (--url).
    Backup(BackupArgs),
    /// Restore a backup into a data dir (verified first; refuses a non-empty dir without --force).
    Restore(RestoreArgs),
    /// Load and validate the configuration `serve` would use and print it (no secrets); exit
    /// code 2 when it does not load. Run it before `systemctl reload perfd`.
    Config(ServeArgs),
}

#[derive(Args, Clone)]
struct BackupArgs {
    /// Where to write the backup file (offline mode).
    #[arg(long, value_name = "FILE", required_unless_present = "url")]
    out: Option<PathBuf>,
    /// Ask the running daemon at this loopback URL instead (e.g. http://127.0.0.1:8470); the
    /// file lands in its data dir's backups/ folder. Uses PERFD_AUTH_TOKEN when set.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    #[command(flatten)]
    common: ServeArgs,
}

#[derive(Args, Clone)]
struct RestoreArgs {
    /// The backup file.
    file: PathBuf,
    /// Replace an existing database.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    common: ServeArgs,
}

#[derive(Args, Clone, Default)]
struct CheckArgs {
    /// A backup file to verify instead of the data dir.
    file: Option<PathBuf>,
    #[command(flatten)]
    common: ServeArgs,
    /// Also rewrite the file without free pages (shrinks it after large deletions).
    #[arg(long)]
    compact: bool,
    /// Take the database back to schema 1, for a perfd built before schema 2 (a daemon takes
    /// it to its own schema again when it next opens it).
    #[arg(long)]
    downgrade: bool,
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
    let command = cli.command.unwrap_or(Command::Serve(cli.serve));
    let args = match &command {
        Command::Serve(a) => a.clone(),
        Command::Check(a) => a.common.clone(),
        Command::Backup(a) => a.common.clone(),
        Command::Restore(a) => a.common.clone(),
        Command::Config(a) => a.clone(),
    };
    let flags = Overrides { config_file: args.config, listen: args.listen, data_dir: args.data_dir };
    let source = Source::new(flags, std::env::vars());
    let config = match source.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("perfd: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Serve(_) => serve(config, source),
        Command::Config(_) => print_json(&serde_json::json!({"config": config.shown()})),
        Command::Check(CheckArgs { file: Some(file), .. }) => {
            perfd::store::backup::check(&file).map_err(Into::into).and_then(|i| print_json(&i))
        }
        Command::Check(a) => run_check(config, a.compact, a.downgrade),
        Command::Backup(BackupArgs { url: Some(url), .. }) => backup_online(&url),
        Command::Backup(a) => backup_offline(config, &a.out.unwrap_or_else(|| PathBuf::from("perfd.pfbk"))),
        Command::Restore(a) => perfd::store::backup::restore(&a.file, &config.data_dir, a.force)
            .map_err(Into::into)
            .and_then(|i| print_json(&i)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("perfd: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated, leaving out a cause the message before it already
/// quotes (perfd's errors show their source: "io: No such file…: No such file…" otherwise).
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    let mut last = text.clone();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !last.contains(&cause) {
            text = format!("{text}: {cause}");
        }
        last = cause;
    }
    text
}

/// Raises the soft limit on open files to the hard one, as Redis and Go programs do: each
/// connection takes two descriptors (`api/peer.rs`), and the usual soft limit of 1024 would
/// stop accepting at about 500 connections.
fn raise_descriptor_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if n < 4096 => {
            log::warn!("at most {n} open files: perfd accepts about {} connections at once", n / 2)
        }
        Ok(n) => log::debug!("open file limit: {n}"),
        Err(e) => log::warn!("could not raise the open file limit: {e}"),
    }
}

fn serve(config: Config, source: Source) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    // The watchdog stops pinging when the writer (which turns at least every second) or the
    // sampler (every interval, which a reload may change) has not turned for this long.
    let writer_stall = Duration::from_secs(60);
    let sampler_stall = |interval: Duration| interval * 3 + Duration::from_secs(10);
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    // SIGHUP reads the configuration again (`systemctl reload perfd`; perfd::reload).
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("installing signal handlers")?;
    // A file size limit (systemd's LimitFSIZE=) must not kill the daemon: with SIGXFSZ handled,
    // a write past it fails with EFBIG, which the writer treats like a full disk.
    signal_hook::flag::register(signal_hook::consts::SIGXFSZ, Arc::new(AtomicBool::new(false)))
        .context("installing the SIGXFSZ handler")?;
    raise_descriptor_limit();
    let notifier = Notifier::from_env(std::env::var("NOTIFY_SOCKET").ok());
    let watchdog_usec = std::env::var("WATCHDOG_USEC").ok().and_then(|v| v.parse::<u64>().ok());
    let mut daemon = perfd::Daemon::start_with_source(config, Some(source)).context("starting perfd")?;
    log::info!("perfd listening on http://{} with data dir {}", daemon.addr, data_dir.display());
    // The listener is bound and the WAL replayed: ready.
    notifier.send("READY=1");
    let stop_watchdog = Arc::new(AtomicBool::new(false));
    let watchdog = match watchdog_usec {
        Some(usec) if usec > 0 => {
            let (writer, published) = (daemon.writer.clone(), daemon.sampler.published.clone());
            let config = daemon.reloader.config.clone();
            let alive = move || {
                let now = perfd::model::now_ms();
                let sampler_stall = sampler_stall(config.load().sampler.interval);
                now - writer.stats.alive_ms.load(Relaxed) < writer_stall.as_millis() as i64
                    && now - published.alive_ms.load(Relaxed) < sampler_stall.as_millis() as i64
            };
            let interval = Duration::from_micros(usec);
            Some(notify::start_watchdog(notifier.clone(), interval, alive, stop_watchdog.clone())?)
        }
        _ => None,
    };
    for sig in signals.forever() {
        if sig == SIGHUP {
            // systemd waits for READY=1 after RELOADING=1 (Type=notify-reload); the outcome is logged.
            notifier.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", notify::monotonic_usec()));
            let _ = daemon.reloader.reload();
            notifier.send("READY=1");
            continue;
        }
        log::info!("signal {sig} received; shutting down");
        break;
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

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    print_out(&serde_json::to_string_pretty(v)?)
}

/// Prints a line to stdout; a reader that went away (`perfd check | head`) is not an error
/// (`println!` panicked on the broken pipe).
fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => Ok(written?),
    }
}

/// Offline backup of a stopped daemon's data dir. A running daemon holds the file: say so.
fn backup_offline(config: Config, out: &std::path::Path) -> anyhow::Result<()> {
    let store = perfd::store::Store::open_existing(&config.data_dir).map_err(|e| match e {
        perfd::Error::Conflict(m) => {
            anyhow::anyhow!("{m}; is perfd running? use `perfd backup --url http://127.0.0.1:8470`")
        }
        e => anyhow::Error::new(e).context("opening the database"),
    })?;
    print_json(&perfd::store::backup::write(&store, out)?)
}

/// Asks a running daemon (loopback only) to write a backup; prints its answer.
fn backup_online(url: &str) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let sock: std::net::SocketAddr = addr.parse().context("--url must look like http://127.0.0.1:8470")?;
    anyhow::ensure!(sock.ip().is_loopback(), "--url must be a loopback address");
    let mut stream = std::net::TcpStream::connect(sock).with_context(|| format!("connecting to {sock}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    let auth = std::env::var("PERFD_AUTH_TOKEN")
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "POST /api/v1/admin/backup HTTP/1.1\r\nHost: {sock}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    stream.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    anyhow::ensure!(head.starts_with("HTTP/1.1 201"), "the daemon answered: {head} {body}");
    print_out(body)
}

fn run_check(config: Config, compact: bool, downgrade: bool) -> anyhow::Result<()> {
    let store = perfd::store::Store::open_existing(&config.data_dir).context("opening the database")?;
    let downgraded = match downgrade {
        true => Some(store.downgrade().context("downgrading")?),
        false => None,
    };
    let store = match compact {
        true => {
            store.compact().context("compacting")?;
            perfd::store::Store::open_existing(&config.data_dir).context("opening the compacted database")?
        }
        false => store,
    };
    let mut counts = serde_json::to_value(store.counts()?)?;
    if let (Some(done), Some(fields)) = (downgraded, counts.as_object_mut()) {
        fields.insert("downgrade".into(), serde_json::to_value(done)?);
    }
    print_out(&serde_json::to_string_pretty(&counts)?)
}
