//! Command line. `main.rs` only calls [`main`].

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::proxy::server::{ServeConfig, ShutdownOutcome, ShutdownSignals, start};
use crate::rules::LoadOptions;

#[derive(Debug, Parser)]
#[command(
    name = "akgate",
    version,
    about = "AccessKey gateway: verifies signatures, enforces source-IP allowlists, blocks leaked keys' high-risk calls"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Run the shipped rules in front of a built-in echo upstream and show one allowed and one
    /// refused request.
    Demo(DemoArgs),
    /// Validate a rules directory exactly as `serve` would load it; exit 1 on errors.
    Check(crate::tools::check::CheckArgs),
    /// Run the full decision on one request offline and print every step with its rule.
    Explain(crate::tools::explain::ExplainArgs),
    /// Print a signed request as a curl command (fresh nonce, current time).
    Sign(crate::tools::sign::SignArgs),
    /// Show what a change to the rules changes: keys, allowlists, high-risk actions, routes,
    /// settings. Exit 0 when nothing changes, 1 when something does.
    Diff(crate::tools::diff::DiffArgs),
    /// List every key with its last use and idle days (from a gateway's --state DIR), marking
    /// keys refused as idle and keys that will be within 14 days.
    Keys(crate::tools::keys::KeysArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Rules directory: every *.toml file in it is one rule set.
    #[arg(long, env = "AKGATE_RULES", default_value = "rules")]
    pub rules: PathBuf,
    /// Public listener.
    #[arg(long, env = "AKGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Admin listener (/metrics, /healthz, /readyz, /rules).
    #[arg(long, env = "AKGATE_ADMIN", default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,
    /// PEM certificate chain; enables TLS on the public listener.
    #[arg(long, env = "AKGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "AKGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    #[arg(long, env = "AKGATE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Do not watch the rules directory; reload only on SIGHUP or POST /rules/reload.
    #[arg(long, env = "AKGATE_NO_WATCH")]
    pub no_watch: bool,
    /// Audit log: one JSON line per decision. `-` for stdout, `off`, or a file path (appended).
    #[arg(long, env = "AKGATE_AUDIT_LOG", default_value = "-")]
    pub audit_log: String,
    /// Where state that outlives a rule snapshot lives (nonces, key usage, MFA windows,
    /// brute-force counters): unset = this process's memory; a directory = memory, with key usage
    /// persisted there; `redis://HOST:PORT` = shared by every instance pointed at that Redis.
    #[arg(long, env = "AKGATE_STATE", value_parser = crate::state::StateSpec::parse)]
    pub state: Option<crate::state::StateSpec>,
    /// When the shared state store (Redis) cannot answer: `closed` refuses signed requests with
    /// 503 and turns /readyz to 503; `open` falls back to this instance's own memory (a replay
    /// sent to another instance may then pass).
    #[arg(long, env = "AKGATE_STATE_FAIL", value_enum, default_value = "closed")]
    pub state_fail: crate::state::FailMode,
    /// How long a request waits for the shared state store before that counts as unavailable.
    #[arg(long, env = "AKGATE_STATE_TIMEOUT", default_value = "250ms", value_parser = duration)]
    pub state_timeout: Duration,
    #[command(flatten)]
    pub limits: LimitArgs,
}

fn duration(s: &str) -> Result<Duration, String> {
    crate::time::parse_duration(s)
        .ok_or_else(|| format!("`{s}` is not a duration like 500ms, 30s, 5m"))
}

/// Bounds on connections, requests, memory and time. Past a bound the caller gets a fast 503
/// (or the connection is closed), never unbounded memory.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Connections served at once; past it each new connection gets 503 and is closed.
    #[arg(long, env = "AKGATE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Connections per TCP peer address (0 = no cap). Leave 0 behind a load balancer.
    #[arg(long, env = "AKGATE_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,
    /// Requests decided or forwarded at once (HTTP/2 streams included).
    #[arg(long, env = "AKGATE_MAX_IN_FLIGHT", default_value_t = 2_048)]
    pub max_in_flight: usize,
    /// Requests that may wait for an in-flight slot (0 = 503 at once when full).
    #[arg(long, env = "AKGATE_MAX_QUEUED", default_value_t = 1_024)]
    pub max_queued: usize,
    /// How long a queued request waits for a slot before 503.
    #[arg(long, env = "AKGATE_QUEUE_TIMEOUT", default_value = "1s", value_parser = duration)]
    pub queue_timeout: Duration,
    /// Bytes of request bodies held in memory by all requests together.
    #[arg(long, env = "AKGATE_MAX_BUFFERED_BODY_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub max_buffered_body_bytes: u64,
    /// Time allowed for a request head, and idle time between keep-alive requests (HTTP/1).
    #[arg(long, env = "AKGATE_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub header_read_timeout: Duration,
    /// Time allowed for a request body once its head is in (408 `RequestTimeout` after).
    #[arg(long, env = "AKGATE_BODY_READ_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub body_read_timeout: Duration,
    /// A write to a client that stays blocked this long closes the connection.
    #[arg(long, env = "AKGATE_WRITE_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub write_timeout: Duration,
    /// Replay-cache entries (nonces) kept at most; past it fresh nonces get 503 (fail closed).
    /// Size it as requests per second x nonce lifetime.
    #[arg(long, env = "AKGATE_MAX_NONCES", default_value_t = crate::policy::replay::DEFAULT_MAX_NONCES)]
    pub max_nonces: usize,
    /// On SIGTERM/SIGINT: time between /readyz turning 503 and the listener closing.
    #[arg(long, env = "AKGATE_SHUTDOWN_DELAY", default_value = "0s", value_parser = duration)]
    pub shutdown_delay: Duration,
    /// On SIGTERM/SIGINT: time in-flight requests get to finish once the listener is closed.
    #[arg(long, env = "AKGATE_SHUTDOWN_GRACE", default_value = "30s", value_parser = duration)]
    pub shutdown_grace: Duration,
}

impl LimitArgs {
    fn limits(&self) -> crate::proxy::limits::Limits {
        crate::proxy::limits::Limits {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_in_flight: self.max_in_flight,
            max_queued: self.max_queued,
            queue_timeout: self.queue_timeout,
            max_buffered_body_bytes: self.max_buffered_body_bytes,
            header_read_timeout: self.header_read_timeout,
            body_read_timeout: self.body_read_timeout,
            write_timeout: self.write_timeout,
        }
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[arg(long, env = "AKGATE_RULES", default_value = "rules")]
    pub rules: PathBuf,
    #[arg(long, env = "AKGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[arg(long, env = "AKGATE_ADMIN", default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,
    /// Exit after showing the two requests instead of serving until interrupted.
    #[arg(long)]
    pub once: bool,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AKGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal; in files and log collectors they are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The offline tools need no async runtime.
    match &cli.command {
        Command::Check(args) => return crate::tools::check::run(args),
        Command::Explain(args) => return crate::tools::explain::run(args),
        Command::Sign(args) => return crate::tools::sign::run(args),
        Command::Diff(args) => return crate::tools::diff::run(args),
        Command::Keys(args) => return crate::tools::keys::run(args),
        Command::Serve(_) | Command::Demo(_) => {}
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("akgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(args) => {
            init_logging(args.log_format);
            rt.block_on(serve(args))
        }
        Command::Demo(args) => {
            init_logging(LogFormat::Text);
            match rt.block_on(crate::demo::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("akgate demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check(_)
        | Command::Explain(_)
        | Command::Sign(_)
        | Command::Diff(_)
        | Command::Keys(_) => {
            unreachable!("handled above")
        }
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    let tls = args.tls_cert.zip(args.tls_key);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let cfg = ServeConfig {
        rules_dir: args.rules,
        listen: args.listen,
        admin: args.admin,
        tls,
        load: LoadOptions::default(),
        reload_debounce: Duration::from_millis(200),
        watch: !args.no_watch,
        audit_log: args.audit_log,
        limits: args.limits.limits(),
        max_nonces: args.limits.max_nonces,
        state: crate::state::StateConfig {
            spec: args.state.unwrap_or_default(),
            fail: args.state_fail,
            timeout: args.state_timeout,
        },
    };
    // Before the "listening" line: see ShutdownSignals.
    let mut signals = ShutdownSignals::install();
    // Start-up time is mostly the rule load: logged so operators see what a big rule set costs.
    let starting = std::time::Instant::now();
    let running = match start(cfg).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("akgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One stable line on stdout so scripts (and tests) can find the bound ports.
    println!(
        "akgate listening on {scheme}://{} admin http://{}",
        running.proxy_addr, running.admin_addr
    );
    let _ = std::io::stdout().flush();
    tracing::info!(
        start_ms = starting.elapsed().as_millis() as u64,
        "ready: rules loaded, listeners bound"
    );
    signals.recv().await;
    tracing::info!(
        delay = ?args.limits.shutdown_delay,
        grace = ?args.limits.shutdown_grace,
        "shutting down: not ready; send the signal again to exit at once"
    );
    let outcome = running
        .shutdown(
            args.limits.shutdown_delay,
            args.limits.shutdown_grace,
            signals.recv(),
        )
        .await;
    match outcome {
        ShutdownOutcome::Drained => {
            tracing::info!("every in-flight request finished; exiting");
            ExitCode::SUCCESS
        }
        ShutdownOutcome::GraceExpired { connections } => {
            tracing::warn!(
                connections,
                "grace period over; closing the connections still open"
            );
            ExitCode::SUCCESS
        }
        ShutdownOutcome::Forced => {
            tracing::warn!("second signal: exiting at once");
            ExitCode::from(130)
        }
    }
}
