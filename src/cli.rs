//! Command line. `main.rs` only calls [`main`].

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::proxy::server::{ServeConfig, shutdown_signal, start};
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
        Command::Check(_) | Command::Explain(_) | Command::Sign(_) | Command::Diff(_) => {
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
    };
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
    shutdown_signal().await;
    running.drain();
    tracing::info!("shutting down");
    ExitCode::SUCCESS
}
