//! Listeners and the process around them: public listener (HTTP/1.1 and HTTP/2, optional TLS),
//! admin listener, rules watcher, SIGHUP, nonce eviction.

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;

use super::{Gateway, tls};
use crate::policy::NonceCache;
use crate::policy::bruteforce::AuthFailureGuard;
use crate::rules::{LoadError, LoadOptions, RulesStore, store};
use crate::time::{Clock, SystemClock};

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
}

/// A running gateway.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    pub ready: Arc<AtomicBool>,
    _watcher: Option<store::Watcher>,
}

pub async fn start(cfg: ServeConfig) -> Result<Running, StartError> {
    crate::metrics::install();
    let rules = Arc::new(RulesStore::open(&cfg.rules_dir, cfg.load.clone())?);
    for w in &rules.load().warnings {
        tracing::warn!(warning = %w, "rule warning");
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let nonces = Arc::new(NonceCache::new());
    let audit = crate::audit::AuditLog::open(&cfg.audit_log)?;
    let gateway =
        Arc::new(Gateway::new(rules.clone(), nonces.clone(), clock.clone()).with_audit(audit));

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
    spawn_maintenance(nonces, gateway.guard.clone(), clock);
    crate::metrics::spawn_upkeep();

    let ready = Arc::new(AtomicBool::new(true));
    tokio::spawn(crate::admin::serve(admin_listener, rules, ready.clone()));
    tokio::spawn(accept_loop(listener, gateway.clone(), acceptor));

    Ok(Running {
        proxy_addr,
        admin_addr,
        gateway,
        ready,
        _watcher: watcher,
    })
}

fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(64 * 1024);
    builder
}

async fn accept_loop(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) {
    let builder = Arc::new(connection_builder());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(gateway.handle(req, peer).await) }
            });
            let result = match acceptor {
                None => builder.serve_connection(TokioIo::new(stream), svc).await,
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls_stream)) => {
                            builder
                                .serve_connection(TokioIo::new(tls_stream), svc)
                                .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
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
fn spawn_maintenance(nonces: Arc<NonceCache>, guard: Arc<AuthFailureGuard>, clock: Arc<dyn Clock>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let nonces = nonces.clone();
            let guard = guard.clone();
            let now = clock.now();
            let _ = tokio::task::spawn_blocking(move || {
                nonces.evict_expired(now);
                let blocked = guard.evict(std::time::Instant::now());
                crate::metrics::sources_throttled(blocked);
            })
            .await;
        }
    });
}

/// Waits for SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

impl Running {
    /// Marks the gateway not ready (so load balancers stop sending) before the process exits,
    /// and writes out the audit lines still queued (waiting at most a second).
    pub fn drain(&self) {
        self.ready.store(false, Ordering::SeqCst);
        self.gateway.audit.flush(Duration::from_secs(1));
    }
}
