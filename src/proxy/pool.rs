//! Upstream connections kept alive between requests: HTTP/1.1 to plain `http://` upstreams on
//! hyper's connection-level client.
//!
//! hyper-util's legacy `Client` does the same job with a general pool (futures, a spawned task
//! per answer to wait for the connection, `Extensions`, boxed futures) that costs several
//! thousand instructions per request. This pool is a map from upstream authority to a stack of
//! idle senders behind one short lock; a connection goes back on the stack when its answer has
//! been read to the end.
//!
//! HTTP/1.1 carries one exchange at a time, so a connection is handed out to one request only and
//! returned by the answer's body ([`PooledBody`]) once the last byte is in. A body dropped before
//! its end takes its connection with it (hyper closes it unless it could drain the rest from what
//! was already buffered; the pool does not wait to find out, see [`PooledBody`]).

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{HeaderValue, Request, Response, header};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

type Sender = SendRequest<Full<Bytes>>;

/// How long a checkout waits for an idle connection to become ready before closing it instead.
const READY_GRACE: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// For the TCP connect, name resolution included.
    pub connect_timeout: Duration,
    /// An idle connection older than this is closed rather than reused (at most a year).
    pub idle_timeout: Duration,
    /// Idle connections kept per upstream; the oldest goes when a return would exceed it.
    pub max_idle_per_upstream: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_idle_per_upstream: 256,
        }
    }
}

/// Why a request got no answer. Messages name no request content and no upstream address (an
/// authority may carry userinfo).
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("the request target is not an absolute http:// URI")]
    NotAbsolute,
    #[error("the upstream refused the connection")]
    ConnectRefused,
    #[error("connecting to the upstream failed: {0}")]
    ConnectFailed(std::io::Error),
    #[error("connecting to the upstream timed out")]
    ConnectTimeout,
    /// The request may have reached the upstream: it is not resent.
    #[error("the upstream request failed: {0}")]
    Request(hyper::Error),
}

impl PoolError {
    /// True when no connection could be opened, so the upstream never saw the request.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            PoolError::ConnectRefused | PoolError::ConnectFailed(_) | PoolError::ConnectTimeout
        )
    }
}

/// Cheap to clone; clones share the idle connections.
#[derive(Clone)]
pub struct UpstreamPool {
    inner: Arc<Inner>,
}

struct Inner {
    config: PoolConfig,
    /// Per authority, oldest first: returns push at the back, checkouts pop from the back, so
    /// the busiest connections stay warm and surplus ones age out at the front.
    idle: Mutex<IdleMap>,
    reaper: AtomicBool,
}

type IdleMap = HashMap<Key, VecDeque<Idle>, BuildHasherDefault<KeyHasher>>;

struct Idle {
    sender: Sender,
    /// When it stops being reused. Stored rather than the return time so that a checkout only
    /// compares two instants.
    expires: Instant,
}

/// An upstream authority compared and hashed as the bytes of the route's `upstream`.
/// `Authority`'s own `Hash` feeds the hasher one lowercased byte at a time, which cost ~700
/// instructions per lookup with SipHash, twice per request. Two spellings of one host differing in
/// case only get separate idle lists, which is harmless.
struct Key(Authority);

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.as_str().hash(state);
    }
}

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

/// A multiply-rotate hash over 8-byte words. Not keyed: the keys are the upstreams the rules
/// name, never anything a client chooses, so there is no collision attack to resist.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut h = self.0;
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let w = w.try_into().map_or(0, u64::from_le_bytes);
            h = (h.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in words.remainder() {
            h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl UpstreamPool {
    pub fn new(mut config: PoolConfig) -> Self {
        // Expiry instants are `now + idle_timeout`; a year is "never" and cannot overflow.
        config.idle_timeout = config
            .idle_timeout
            .min(Duration::from_secs(365 * 24 * 3600));
        UpstreamPool {
            inner: Arc::new(Inner {
                config,
                idle: Mutex::new(IdleMap::default()),
                reaper: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `req` (absolute `http://host:port/path?query` URI) in origin-form on an idle
    /// connection to its authority, or on a new one. The caller sets `Host`; without one, the
    /// URI's authority is used.
    ///
    /// A reused connection that turns out dead before the request was written on it is replaced
    /// by a fresh one, once. A request that was written is never resent.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<PooledBody>, PoolError> {
        let (mut parts, body) = req.into_parts();
        // hyper's connection-level client writes the URI as given; an absolute one would reach
        // the upstream in absolute-form, which is meant for proxies.
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        if uri.scheme.take() != Some(Scheme::HTTP) {
            return Err(PoolError::NotAbsolute);
        }
        let Some(authority) = uri.authority.take() else {
            return Err(PoolError::NotAbsolute);
        };
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        parts.uri = Uri::from_parts(uri).map_err(|_| PoolError::NotAbsolute)?;
        if !parts.headers.contains_key(header::HOST) {
            let host =
                HeaderValue::from_str(authority.as_str()).map_err(|_| PoolError::NotAbsolute)?;
            parts.headers.insert(header::HOST, host);
        }
        let req = Request::from_parts(parts, body);

        let (resp, sender) = match self.inner.checkout(&authority).await {
            Some(mut sender) => match sender.try_send_request(req).await {
                Ok(resp) => (resp, sender),
                Err(mut e) => match e.take_message() {
                    // Not written: the connection died while idle (the upstream restarted or
                    // timed it out). Other idle ones are likely dead too; a new one is not.
                    Some(req) => {
                        tracing::debug!(error = %e.error(), "idle upstream connection was dead; retrying on a new one");
                        self.on_fresh(&authority, req).await?
                    }
                    None => return Err(PoolError::Request(e.into_error())),
                },
            },
            None => self.on_fresh(&authority, req).await?,
        };
        let (head, body) = resp.into_parts();
        let mut body = PooledBody {
            inner: body,
            slot: Some(Slot {
                pool: self.inner.clone(),
                key: authority,
                sender,
            }),
        };
        // No body to read (Content-Length: 0, 204, 304, HEAD): the exchange is over already.
        if body.inner.is_end_stream() {
            body.release();
        }
        Ok(Response::from_parts(head, body))
    }

    async fn on_fresh(
        &self,
        authority: &Authority,
        req: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Sender), PoolError> {
        // Boxed: connecting is the rare path, and its futures (resolver, timer) would otherwise
        // enlarge every request's future.
        let mut sender = Box::pin(self.inner.connect(authority)).await?;
        let resp = sender.send_request(req).await.map_err(PoolError::Request)?;
        Ok((resp, sender))
    }

    /// Idle connections to `authority` (closed or expired ones included until they are pruned).
    pub fn idle_count(&self, authority: &Authority) -> usize {
        self.inner
            .lock()
            .get(authority.as_str())
            .map_or(0, VecDeque::len)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, IdleMap> {
        // No critical section can leave the map half-updated; a panic elsewhere must not stop
        // forwarding.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An idle connection to `key` that is open and ready for a request, if any.
    async fn checkout(&self, key: &Authority) -> Option<Sender> {
        loop {
            let mut sender = self.take_idle(key)?;
            match std::future::poll_fn(|cx| Poll::Ready(sender.poll_ready(cx))).await {
                Poll::Ready(Ok(())) => return Some(sender),
                Poll::Ready(Err(_)) => continue,
                // hyper marks a connection ready once its connection task has finished the
                // previous exchange, which can lag the answer's last byte by a moment. A
                // connection not ready after the grace is stuck (say, an upstream that answered
                // early and stopped reading the request body): it is closed, not waited on.
                Poll::Pending => {
                    if let Ok(Ok(())) = tokio::time::timeout(READY_GRACE, sender.ready()).await {
                        return Some(sender);
                    }
                }
            }
        }
    }

    fn take_idle(&self, key: &Authority) -> Option<Sender> {
        let now = Instant::now();
        let mut idle = self.lock();
        let list = idle.get_mut(key.as_str())?;
        while let Some(conn) = list.pop_back() {
            if now >= conn.expires {
                // The newest is too old, so are all the others. Their drop wakes their tasks:
                // done after the lock is released.
                let stale = std::mem::take(list);
                drop(idle);
                drop(stale);
                drop(conn);
                return None;
            }
            if !conn.sender.is_closed() {
                return Some(conn.sender);
            }
        }
        None
    }

    fn put(&self, key: Authority, sender: Sender) {
        if sender.is_closed() || self.config.max_idle_per_upstream == 0 {
            return;
        }
        let expires = Instant::now() + self.config.idle_timeout;
        let mut idle = self.lock();
        let list = idle.entry(Key(key)).or_default();
        let evicted = if list.len() >= self.config.max_idle_per_upstream {
            list.pop_front()
        } else {
            None
        };
        list.push_back(Idle { sender, expires });
        drop(idle);
        drop(evicted);
    }

    async fn connect(self: &Arc<Self>, authority: &Authority) -> Result<Sender, PoolError> {
        self.start_reaper();
        let host = authority.host();
        // `host()` keeps an IPv6 literal's brackets; the resolver wants the bare address.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = authority.port_u16().unwrap_or(80);
        let connecting = tokio::net::TcpStream::connect((host, port));
        let stream = match tokio::time::timeout(self.config.connect_timeout, connecting).await {
            Err(_) => return Err(PoolError::ConnectTimeout),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(PoolError::ConnectRefused);
            }
            Ok(Err(e)) => return Err(PoolError::ConnectFailed(e)),
            Ok(Ok(stream)) => stream,
        };
        // Requests are written whole; Nagle would only hold the last segment back.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY could not be set on an upstream connection");
        }
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(PoolError::Request)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Closes idle connections past their time even for upstreams no request goes to any more.
    /// Started by the first connect, which runs inside the runtime; ends with the pool.
    fn start_reaper(self: &Arc<Self>) {
        if self.reaper.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool: Weak<Inner> = Arc::downgrade(self);
        let every = self.config.idle_timeout.max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                pool.reap();
            }
        });
    }

    fn reap(&self) {
        let now = Instant::now();
        let mut gone = Vec::new();
        let mut idle = self.lock();
        idle.retain(|_, list| {
            while let Some(conn) = list.pop_front() {
                if conn.sender.is_closed() || now >= conn.expires {
                    gone.push(conn);
                } else {
                    list.push_front(conn);
                    break;
                }
            }
            // Closed ones further back (their upstream hung up) go too.
            list.retain(|conn| !conn.sender.is_closed());
            !list.is_empty()
        });
        drop(idle);
        drop(gone);
    }
}

/// An upstream answer's body. Reading it to the end returns its connection to the pool; dropping
/// it before then closes the connection.
///
/// Why not return a connection whose body was dropped part-way: hyper can reuse it only if the
/// rest of the body was already buffered (it drains that, else closes), and it decides that on
/// the connection task after the drop. Handing it out meanwhile would make the next request wait
/// on that decision, and a body is dropped early only when the client went away or the upstream
/// stalled, where the connection is rarely worth keeping. A new connection costs one connect.
pub struct PooledBody {
    inner: Incoming,
    /// The connection, until the body's end returns it (or an error or drop loses it).
    slot: Option<Slot>,
}

struct Slot {
    pool: Arc<Inner>,
    key: Authority,
    sender: Sender,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some(Slot { pool, key, sender }) = self.slot.take() {
            pool.put(key, sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            // hyper's server stops polling a body once `is_end_stream` says so after a data
            // frame, so the end is caught there and not only at `None`.
            Some(Ok(_)) if !this.inner.is_end_stream() => {}
            Some(Err(_)) => this.slot = None,
            Some(Ok(_)) | None => this.release(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("pooled", &self.slot.is_some())
            .finish_non_exhaustive()
    }
}
