//! Upstream connections kept alive between requests: HTTP/1.1 to plain `http://` upstreams,
//! spoken by akgate itself (the wire format is in `h1.rs`).
//!
//! hyper's client ran each connection on a spawned task fed through a channel, so every request
//! crossed tasks twice and paid for the channel, its wake-ups and hyper's general machinery
//! (~13 % of a proxied request's instructions). Here the request's own task writes the request
//! and reads the answer's head, and the answer's body ([`PooledBody`]) reads the socket when
//! polled. The pool is a map from upstream authority to a stack of idle connections behind one
//! short lock; a connection goes back on the stack when its answer's last byte is in.
//!
//! HTTP/1.1 carries one exchange at a time, so a connection is handed out to one request only. A
//! body dropped before its end takes its connection with it: the rest of the answer would have
//! to be read and thrown away first, and a body is dropped early only when the client went away
//! or the upstream stalled, where the connection is rarely worth keeping.

use super::h1;
use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};
use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use h1::{Conn, Decoded, Decoder, Failure};

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
    Request(UpstreamError),
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

/// What went wrong on an upstream connection once the request was on its way: in
/// [`PoolError::Request`] before the answer's head, and as [`PooledBody`]'s error after. The
/// connection is closed in every case.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("writing the request failed: {0}")]
    Write(std::io::Error),
    #[error("reading the answer failed: {0}")]
    Read(std::io::Error),
    #[error("the upstream closed the connection without answering")]
    NoAnswer,
    #[error("the upstream closed the connection before the end of its answer")]
    Truncated,
    #[error("the upstream's answer head is larger than 64 KiB")]
    HeadTooLarge,
    #[error("the upstream's answer head has more than 100 fields")]
    TooManyHeaders,
    #[error("the upstream's answer head is malformed")]
    MalformedHead,
    #[error("the upstream's answer has an invalid Content-Length")]
    BadContentLength,
    #[error("the upstream's chunked answer body is malformed")]
    BadChunk,
    #[error("the upstream switched protocols (101), which akgate does not forward")]
    SwitchingProtocols,
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
    conn: Conn,
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
    /// A reused connection on which the request's first write fails is replaced by a fresh one,
    /// once: nothing of the request left. A request of which any byte was written is never
    /// resent.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<PooledBody>, PoolError> {
        let (parts, body) = req.into_parts();
        let uri = parts.uri.into_parts();
        if uri.scheme != Some(Scheme::HTTP) {
            return Err(PoolError::NotAbsolute);
        }
        let Some(authority) = uri.authority else {
            return Err(PoolError::NotAbsolute);
        };
        let target = uri.path_and_query.as_ref().map_or("/", |pq| pq.as_str());
        let out = h1::encode_request(
            &parts.method,
            target,
            &parts.headers,
            &authority,
            body.into_inner().unwrap_or_default(),
        );
        self.send_encoded(authority, &out, parts.method == Method::HEAD)
            .await
    }

    /// Sends a request already written for the wire to `authority` (the gateway writes its
    /// upstream requests straight from the client's, without building an `http::Request`).
    pub(super) async fn send_encoded(
        &self,
        authority: Authority,
        out: &h1::Outgoing,
        is_head: bool,
    ) -> Result<Response<PooledBody>, PoolError> {
        let (mut conn, reused) = match self.inner.checkout(&authority) {
            Some(conn) => (conn, true),
            None => (self.connect(&authority).await?, false),
        };
        let head = match h1::exchange(&mut conn, out, is_head).await {
            Ok(head) => head,
            // Dead while idle (the upstream restarted or timed it out) in a way the idle check
            // could not see yet. Other idle ones are likely dead too; a new one is not.
            Err(Failure::NotSent(e)) if reused => {
                tracing::debug!(error = %e, "idle upstream connection was dead; retrying on a new one");
                conn = self.connect(&authority).await?;
                match h1::exchange(&mut conn, out, is_head).await {
                    Ok(head) => head,
                    Err(Failure::NotSent(e)) => {
                        return Err(PoolError::Request(UpstreamError::Write(e)));
                    }
                    Err(Failure::Failed(e)) => return Err(PoolError::Request(e)),
                }
            }
            Err(Failure::NotSent(e)) => return Err(PoolError::Request(UpstreamError::Write(e))),
            Err(Failure::Failed(e)) => return Err(PoolError::Request(e)),
        };

        let mut body = PooledBody {
            ready: None,
            conn: Some(conn),
            decoder: head.decoder,
            reuse: head.reuse,
            home: Some(Home {
                pool: self.inner.clone(),
                key: authority,
            }),
        };
        body.take_buffered();
        let mut resp = Response::new(body);
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        Ok(resp)
    }

    async fn connect(&self, authority: &Authority) -> Result<Conn, PoolError> {
        // Boxed: connecting is the rare path, and its futures (resolver, timer) would otherwise
        // enlarge every request's future.
        Box::pin(self.inner.connect(authority)).await
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

    /// An idle connection to `key` that is open and quiet, if any. Checked outside the lock.
    fn checkout(&self, key: &Authority) -> Option<Conn> {
        loop {
            let mut conn = self.take_idle(key)?;
            if conn.still_open() {
                return Some(conn);
            }
        }
    }

    fn take_idle(&self, key: &Authority) -> Option<Conn> {
        let now = Instant::now();
        let mut idle = self.lock();
        let list = idle.get_mut(key.as_str())?;
        let conn = list.pop_back()?;
        if now >= conn.expires {
            // The newest is too old, so are all the others. Closing sockets is done after the
            // lock is released.
            let stale = std::mem::take(list);
            drop(idle);
            drop(stale);
            drop(conn);
            return None;
        }
        Some(conn.conn)
    }

    fn put(&self, key: Authority, conn: Conn) {
        if self.config.max_idle_per_upstream == 0 {
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
        list.push_back(Idle { conn, expires });
        drop(idle);
        drop(evicted);
    }

    async fn connect(self: &Arc<Self>, authority: &Authority) -> Result<Conn, PoolError> {
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
        Ok(Conn::new(stream))
    }

    /// Closes idle connections past their time, or closed by their upstream, even for upstreams
    /// no request goes to any more. Started by the first connect, which runs inside the runtime;
    /// ends with the pool.
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
                if now >= conn.expires {
                    gone.push(conn);
                } else {
                    list.push_front(conn);
                    break;
                }
            }
            // Those the upstream hung up on go too. The check is a system call only for a
            // socket reported readable, which an idle one is only when its upstream spoke.
            let mut kept = VecDeque::with_capacity(list.len());
            for mut conn in list.drain(..) {
                if conn.conn.still_open() {
                    kept.push_back(conn);
                } else {
                    gone.push(conn);
                }
            }
            *list = kept;
            !list.is_empty()
        });
        drop(idle);
        drop(gone);
    }
}

/// An upstream answer's body, read from its connection's socket as it is polled. Reading it to
/// the end returns the connection to the pool; dropping it before then closes the connection.
pub struct PooledBody {
    /// Body bytes split off the buffer already, handed out by the next poll.
    ready: Option<Bytes>,
    /// Until the body's end returns it (or an error or drop closes it).
    conn: Option<Conn>,
    decoder: Decoder,
    /// The connection may carry another exchange after this one.
    reuse: bool,
    home: Option<Home>,
}

struct Home {
    pool: Arc<Inner>,
    key: Authority,
}

impl PooledBody {
    /// Takes the whole body at once when it is all in the buffer already (the common case for
    /// small answers), so that the connection goes back before the caller even polls.
    fn take_buffered(&mut self) {
        let Some(conn) = &mut self.conn else { return };
        match self.decoder {
            Decoder::Done => self.finish(),
            Decoder::Length(n) if n <= conn.buf.len() as u64 => {
                if let Ok(Decoded::Data(data)) = self.decoder.decode(&mut conn.buf) {
                    self.ready = Some(data);
                }
                self.finish();
            }
            _ => {}
        }
    }

    /// The last byte is in: the connection goes back if it may and nothing follows the answer.
    fn finish(&mut self) {
        let (Some(conn), Some(Home { pool, key })) = (self.conn.take(), self.home.take()) else {
            return;
        };
        // Bytes after the answer's end: the upstream spoke out of turn, and its framing cannot
        // be trusted.
        if self.reuse && conn.buf.is_empty() {
            pool.put(key, conn);
        }
    }

    fn fail(&mut self, e: UpstreamError) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        self.conn = None;
        self.home = None;
        self.decoder = Decoder::Done;
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = self.get_mut();
        if let Some(data) = this.ready.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        let Some(conn) = &mut this.conn else {
            return Poll::Ready(None);
        };
        loop {
            match this.decoder.decode(&mut conn.buf) {
                Ok(Decoded::Data(data)) => {
                    // The end is caught here when the buffer holds it, not only at the next
                    // poll: hyper's server stops polling a body once `is_end_stream` says so.
                    // An error is left for the next poll to report.
                    if this.decoder.skip_framing(&mut conn.buf).is_ok()
                        && this.decoder == Decoder::Done
                    {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {}
                Err(e) => return this.fail(e),
            }
            let want = this.decoder.read_size();
            match conn.poll_fill(cx, want) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if this.decoder == Decoder::Eof => {
                    // The end of a close-delimited body; its connection is done.
                    this.conn = None;
                    this.home = None;
                    this.decoder = Decoder::Done;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => return this.fail(UpstreamError::Truncated),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(UpstreamError::Read(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_none() && self.decoder == Decoder::Done
    }

    fn size_hint(&self) -> SizeHint {
        let ready = self.ready.as_ref().map_or(0, |b| b.len() as u64);
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(ready + n),
            None => {
                let mut hint = SizeHint::new();
                hint.set_lower(ready);
                hint
            }
        }
    }
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("pooled", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}
