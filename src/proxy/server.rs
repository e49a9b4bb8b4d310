//! Listeners and the process around them: public listener (HTTP/1.1 and HTTP/2, optional TLS),
//! admin listener, rules watcher, SIGHUP, nonce eviction, connection limits and graceful
//! shutdown.

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::limits::{Admission, ConnTracker, Limits};
use super::write_timeout::WriteTimeout;
use super::{Gateway, front, tls};
use crate::policy::NonceCache;
use crate::rules::{LoadError, LoadOptions, RulesStore, store};
use crate::state::fleet::FleetConfig;
use crate::state::{State, StateSpec};
use crate::time::{Clock, SystemClock};

/// How often a `--state DIR` gets the usage table written (when it changed): the most usage a
/// crash can lose.
const USAGE_WRITE_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub rules_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub load: LoadOptions,
    /// Quiet period after the last change in the rules directory before reloading.
    pub reload_debounce: Duration,
    /// Watch the rules directory; when false, rules reload only on SIGHUP or the admin endpoint.
    pub watch: bool,
    /// Where audit lines go: `-` (stdout), `off`, or a file path.
    pub audit_log: String,
    pub limits: Limits,
    /// Bound on the replay cache (see [`crate::policy::replay::DEFAULT_MAX_NONCES`]).
    pub max_nonces: usize,
    pub state: crate::state::StateConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the rule set cannot be loaded:\n{0}")]
    Rules(#[from] LoadError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot watch the rules directory: {0}")]
    Watch(#[from] notify::Error),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("cannot open the state: {0}")]
    State(String),
}

/// A running gateway.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    pub ready: Arc<AtomicBool>,
    pub connections: Arc<ConnTracker>,
    stop_accepting: watch::Sender<bool>,
    accept_task: JoinHandle<GracefulShutdown>,
    _watcher: Option<store::Watcher>,
}

pub async fn start(cfg: ServeConfig) -> Result<Running, StartError> {
    crate::metrics::install();
    let rules = Arc::new(RulesStore::open(&cfg.rules_dir, cfg.load.clone())?);
    // One line per kind of warning: a set of 100k keys with inline secrets is one line, not 100k.
    store::log_warnings(&rules.load().warnings);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let nonces = NonceCache::with_capacity_limit(cfg.max_nonces);
    let state = Arc::new(match &cfg.state.spec {
        StateSpec::Memory => State::in_memory(nonces, clock.now()),
        StateSpec::Dir(dir) => State::in_dir(nonces, dir, clock.now(), USAGE_WRITE_EVERY)
            .map_err(|e| StartError::State(e.to_string()))?,
        StateSpec::Redis { addr } => {
            tracing::info!(redis = %addr, fail = ?cfg.state.fail, "fleet state in Redis");
            State::fleet(
                nonces,
                clock.now(),
                FleetConfig::new(addr.clone(), cfg.state.timeout),
                cfg.state.fail,
            )
        }
    });
    let audit = crate::audit::AuditLog::open(&cfg.audit_log)?;
    let gateway = Arc::new(
        Gateway::new(rules.clone(), state.clone(), clock.clone())
            .with_audit(audit)
            .with_limits(cfg.limits.clone()),
    );

    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })
    };
    let listener = bind(cfg.listen).await?;
    let admin_listener = bind(cfg.admin).await?;
    let proxy_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: cfg.admin,
            source,
        })?;
    let acceptor = match &cfg.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };

    let watcher = match cfg.watch {
        true => Some(store::watch(rules.clone(), cfg.reload_debounce)?),
        false => None,
    };
    spawn_sighup(rules.clone());
    spawn_maintenance(state.clone(), clock);
    crate::metrics::spawn_upkeep();
    crate::metrics::prime();
    crate::metrics::state_up(state.store_up());

    let ready = Arc::new(AtomicBool::new(true));
    tokio::spawn(crate::admin::serve(
        admin_listener,
        rules,
        ready.clone(),
        state,
    ));
    let connections = ConnTracker::new(&cfg.limits);
    let (stop_accepting, stop) = watch::channel(false);
    let accept_task = tokio::spawn(accept_loop(
        listener,
        gateway.clone(),
        acceptor,
        cfg.limits.clone(),
        connections.clone(),
        stop,
    ));

    Ok(Running {
        proxy_addr,
        admin_addr,
        gateway,
        ready,
        connections,
        stop_accepting,
        accept_task,
        _watcher: watcher,
    })
}

fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Also the idle time allowed between keep-alive requests: hyper restarts it for each head.
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(64 * 1024)
        .max_concurrent_streams(256)
        // A peer that stops answering pings is gone; without this an idle h2 connection whose
        // client vanished would be held until the kernel notices.
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(limits.write_timeout);
    builder
}

async fn accept_loop(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    connections: Arc<ConnTracker>,
    mut stop: watch::Receiver<bool>,
) -> GracefulShutdown {
    let builder = Arc::new(connection_builder(&limits));
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (guard, refusing) = match connections.admit(peer.ip()) {
            Admission::Serve(g) => (g, false),
            Admission::Refuse(g) => (g, true),
            Admission::Drop => continue,
        };
        let _ = stream.set_nodelay(true);
        let stream = WriteTimeout::new(stream, limits.write_timeout);
        let gateway = gateway.clone();
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        if !refusing && acceptor.is_none() {
            let front = front::Front {
                gateway,
                builder,
                header_read_timeout: limits.header_read_timeout,
                stop: stop.clone(),
            };
            tokio::spawn(async move {
                let _guard = guard;
                if let Err(e) = front::serve(stream, peer, front, watcher).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
            continue;
        }
        tokio::spawn(async move {
            let _guard = guard;
            let svc = service_fn(move |req| {
                let gateway = gateway.clone();
                async move {
                    Ok::<_, Infallible>(if refusing {
                        gateway.refuse_overloaded(req)
                    } else {
                        gateway.handle(req, peer).await
                    })
                }
            });
            let serve = async {
                match acceptor {
                    None => {
                        let conn = builder.serve_connection(TokioIo::new(stream), svc);
                        watcher.watch(conn.into_owned()).await
                    }
                    Some(acceptor) => {
                        let tls_stream = match tokio::time::timeout(
                            Duration::from_secs(10),
                            acceptor.accept(stream),
                        )
                        .await
                        {
                            Ok(Ok(tls_stream)) => tls_stream,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return Ok(());
                            }
                            Err(_) => return Ok(()),
                        };
                        let conn = builder.serve_connection(TokioIo::new(tls_stream), svc);
                        watcher.watch(conn.into_owned()).await
                    }
                }
            };
            let result = if refusing {
                // Long enough to read one request and answer it, no longer.
                match tokio::time::timeout(Duration::from_secs(5), serve).await {
                    Ok(r) => r,
                    Err(_) => Ok(()),
                }
            } else {
                serve.await
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    // Dropping the listener here closes the socket: new connections are refused by the kernel
    // from now on, so a load balancer fails over at once instead of timing out.
    drop(listener);
    graceful
}

fn spawn_sighup(rules: Arc<RulesStore>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("SIGHUP handler could not be installed");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading rules");
            let rules = rules.clone();
            let _ = tokio::task::spawn_blocking(move || rules.reload()).await;
        }
    });
}

/// Every 5 s: expired nonces out, stale brute-force entries out, the throttled-sources gauge
/// recounted.
fn spawn_maintenance(state: Arc<State>, clock: Arc<dyn Clock>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let state = state.clone();
            let now = clock.now();
            let _ = tokio::task::spawn_blocking(move || {
                state.nonces().evict_expired(now);
                state.local.mfa.evict_expired(now);
                crate::metrics::nonces(state.nonces().len());
                let blocked = state.local.guard.evict(std::time::Instant::now());
                crate::metrics::sources_throttled(blocked);
            })
            .await;
        }
    });
}

/// SIGTERM and SIGINT, listened for from the moment this is created. Create it before telling
/// anyone the gateway is up: until a handler is installed, SIGTERM's default action kills the
/// process on the spot, and an orchestrator may send it as soon as it sees the listener.
pub struct ShutdownSignals {
    #[cfg(unix)]
    unix: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl ShutdownSignals {
    /// Installs the handlers. Needs a running Tokio runtime.
    pub fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let unix = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(term), Ok(int)) => Some((term, int)),
                _ => {
                    tracing::warn!("signal handlers could not be installed; using Ctrl-C only");
                    None
                }
            };
            ShutdownSignals { unix }
        }
        #[cfg(not(unix))]
        ShutdownSignals {}
    }

    /// The next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some((term, int)) = &mut self.unix {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// Every in-flight request finished within the grace period.
    Drained,
    /// The grace period ended with this many connections still open; they were cut.
    GraceExpired { connections: usize },
    /// A second signal: nothing was waited for.
    Forced,
}

impl Running {
    /// Graceful shutdown: `/readyz` turns 503 at once; after `delay` (time for load balancers to
    /// notice) the listener closes; in-flight requests then get up to `grace` to finish, keep-alive
    /// connections are closed after their current request and HTTP/2 clients get GOAWAY.
    /// `interrupt` (a second signal) cuts both waits short.
    pub async fn shutdown(
        self,
        delay: Duration,
        grace: Duration,
        interrupt: impl std::future::Future<Output = ()>,
    ) -> ShutdownOutcome {
        self.ready.store(false, Ordering::SeqCst);
        tokio::pin!(interrupt);
        let outcome = async {
            if !delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = &mut interrupt => return ShutdownOutcome::Forced,
                }
            }
            let _ = self.stop_accepting.send(true);
            let graceful = match self.accept_task.await {
                Ok(g) => g,
                // The accept loop does not panic; if it did, there is nothing left to drain.
                Err(_) => return ShutdownOutcome::Drained,
            };
            tracing::info!(
                connections = graceful.count(),
                ?grace,
                "listener closed; draining in-flight requests"
            );
            let connections = graceful.count();
            tokio::select! {
                _ = graceful.shutdown() => ShutdownOutcome::Drained,
                _ = tokio::time::sleep(grace) => ShutdownOutcome::GraceExpired { connections },
                _ = &mut interrupt => ShutdownOutcome::Forced,
            }
        }
        .await;
        self.gateway.audit.flush(Duration::from_secs(1));
        if outcome != ShutdownOutcome::Forced {
            // Bounded by the store's own timeout; what a forced exit skips is at most the
            // last second of usage.
            let _ =
                tokio::time::timeout(Duration::from_secs(2), self.gateway.state.shutdown()).await;
        }
        outcome
    }

    /// Marks the gateway not ready and writes out the audit lines still queued (waiting at most a
    /// second), for callers that end the process without draining (the demo).
    pub fn drain(&self) {
        self.ready.store(false, Ordering::SeqCst);
        self.gateway.audit.flush(Duration::from_secs(1));
    }
}
