//! A lean HTTP/1.1 path for plain requests, with hyper kept for everything else.
//!
//! Most requests a gateway sees are plain: `Content-Length` framing, keep-alive, HTTP/1.1. For
//! those, hyper's general machinery (header-read timer per request, dispatcher, encoder, `auto`'s
//! preface sniffing) cost about as much CPU as the rest of the gateway. This loop parses such
//! requests itself: a head that comes in pieces waits under the same deadline hyper's header-read
//! timer would set, and a body that has not all arrived is read from the connection as the
//! gateway asks for it, under the gateway's body-read timeout. The first time it sees anything
//! else (chunked or `Expect`, an upgrade, HTTP/1.0, h2's preface, a parse error, a request longer
//! than hyper's buffer) it gives the connection, with every byte read and not consumed, to hyper
//! for the rest of its life.
//! hyper then sees exactly the bytes it would have seen, so the two cannot disagree on where a
//! request ends: this path only ever accepts a subset of what hyper accepts, framed the same way.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use std::cell::RefCell;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Body, BoxError, Gateway};

/// More headers than this: hyper decides (it allows 100).
const MAX_HEADERS: usize = 64;
/// hyper's `max_buf_size` in `connection_builder`: a head or request longer than this is hyper's
/// to refuse.
const MAX_REQUEST: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;
/// Answer bytes gathered before a write: head and a small body go out in one write.
const WRITE_GATHER: usize = 64 * 1024;

/// What the connection needs from the server around it.
pub(super) struct Front {
    pub gateway: Arc<Gateway>,
    pub builder: Arc<auto::Builder<TokioExecutor>>,
    pub header_read_timeout: Duration,
    /// Turns `true` when the gateway starts draining.
    pub stop: watch::Receiver<bool>,
}

/// Serves one plain-TCP connection. `watcher` keeps the connection counted by the graceful
/// shutdown until it ends, and watches hyper's connection after a hand-off.
pub(super) async fn serve<IO>(
    io: IO,
    peer: SocketAddr,
    front: Front,
    watcher: Watcher,
) -> Result<(), BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Front {
        gateway,
        builder,
        header_read_timeout,
        mut stop,
    } = front;
    let mut conn = Conn {
        io,
        buf: BytesMut::new(),
        pending: Bytes::new(),
        out: Vec::new(),
        names: Names::default(),
        body_left: 0,
    };
    // hyper's header-read timer runs from when it starts waiting for a request's head, idle time
    // included, to the head's end; this deadline is that timer, so a slow head cannot get it twice.
    let mut deadline = Instant::now() + header_read_timeout;
    loop {
        if *stop.borrow() {
            return conn.close().await;
        }
        if conn.pending.is_empty() {
            match conn.read_now() {
                Some(Ok(0)) => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => match conn.read_until(deadline, &mut stop).await {
                    Wait::Read(0) | Wait::TimedOut => return Ok(()),
                    Wait::Read(_) => {}
                    Wait::Stop => return conn.close().await,
                    Wait::Failed(e) => return Err(e.into()),
                },
            }
        }
        let (req, consumed, rest) = match parse(&conn.pending, &mut conn.names) {
            Parsed::Plain(req, consumed, rest) => (req, consumed, rest),
            // A head still coming in: wait for the rest under the same deadline. As hyper does
            // when its timer fires, the connection closes without an answer.
            Parsed::Partial if conn.pending.len() <= MAX_REQUEST => {
                match conn.read_until(deadline, &mut stop).await {
                    Wait::Read(0) => break,
                    Wait::Read(_) => continue,
                    Wait::TimedOut => return Ok(()),
                    Wait::Stop => return conn.close().await,
                    Wait::Failed(e) => return Err(e.into()),
                }
            }
            // A head longer than hyper's buffer, or a client that ended mid-head: hyper gives
            // the answer it gives to that.
            Parsed::Partial | Parsed::HandOff => break,
        };
        conn.pending.advance(consumed);
        conn.body_left = rest;
        let is_head = req.method() == Method::HEAD;
        let resp = if rest == 0 {
            gateway.handle(req.map(Full::new), peer).await
        } else {
            let req = req.map(|first| Streamed {
                first: Some(first),
                conn: &mut conn,
            });
            gateway.handle(req, peer).await
        };
        // An answer given without reading the whole body (a refusal, a timeout) leaves the rest
        // of it on the wire, where it must not be taken for the next request: the connection ends
        // after this answer.
        let unread = conn.body_left > 0;
        let close_after = *stop.borrow() || unread;
        match conn.answer(resp, is_head, close_after).await? {
            Next::KeepAlive => {}
            Next::Close => return conn.close().await,
        }
        deadline = Instant::now() + header_read_timeout;
    }
    let Conn { io, pending, .. } = conn;
    let svc = service_fn(move |req| {
        let gateway = gateway.clone();
        async move { Ok::<_, Infallible>(gateway.handle(req, peer).await) }
    });
    let io = TokioIo::new(Prefixed {
        prefix: pending,
        io,
    });
    watcher
        .watch(builder.serve_connection(io, svc).into_owned())
        .await
}

// Returned once per request and taken apart at once: boxing the request would cost an allocation
// per request to save a move.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    /// A plain request with the part of its body that has arrived, how many bytes (head and
    /// body) it took, and how many of its body's bytes are still to come.
    Plain(Request<Bytes>, usize, u64),
    /// The head is not complete yet.
    Partial,
    HandOff,
}

/// Takes a request only if it is plain (see the module's comment); everything it builds is
/// sliced from `data`, without copies.
fn parse(data: &Bytes, names: &mut Names) -> Parsed {
    if data.starts_with(b"PRI ") {
        return Parsed::HandOff;
    }
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let head_len = match req.parse(data) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::HandOff,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::HandOff;
    };
    if !target.starts_with('/') {
        return Parsed::HandOff;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::HandOff;
    };
    // hyper frames CONNECT as a tunnel, not as a request with a body.
    if method == Method::CONNECT {
        return Parsed::HandOff;
    }
    let Ok(uri) = Uri::from_maybe_shared(data.slice_ref(target.as_bytes())) else {
        return Parsed::HandOff;
    };
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    let mut content_length: Option<usize> = None;
    for (i, h) in req.headers.iter().enumerate() {
        let Some(name) = names.get(i, h.name.as_bytes()) else {
            return Parsed::HandOff;
        };
        match name {
            header::TRANSFER_ENCODING | header::EXPECT | header::UPGRADE | header::TE => {
                return Parsed::HandOff;
            }
            header::CONNECTION if !h.value.eq_ignore_ascii_case(b"keep-alive") => {
                return Parsed::HandOff;
            }
            header::CONTENT_LENGTH => {
                if content_length.is_some() {
                    return Parsed::HandOff;
                }
                match digits(h.value) {
                    Some(n) => content_length = Some(n),
                    None => return Parsed::HandOff,
                }
            }
            _ => {}
        }
        let Ok(value) = HeaderValue::from_maybe_shared(data.slice_ref(h.value)) else {
            return Parsed::HandOff;
        };
        headers.append(name, value);
    }
    let body_len = content_length.unwrap_or(0);
    let Some(end) = head_len.checked_add(body_len) else {
        return Parsed::HandOff;
    };
    if end > MAX_REQUEST {
        return Parsed::HandOff;
    }
    let arrived = end.min(data.len());
    let mut request = Request::new(data.slice(head_len..arrived));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    // `end - arrived` fits: both are at most `MAX_REQUEST`.
    Parsed::Plain(request, arrived, (end - arrived) as u64)
}

/// The header names a connection's requests used, spelled as they came. A client sends the same
/// names in the same spelling request after request; a name that is not one of `http`'s standard
/// ones (all the `x-acs-*`) costs an allocation and a lower-casing copy each time it is built.
#[derive(Default)]
struct Names(Vec<(Box<[u8]>, HeaderName)>);

/// More distinct spellings than this on one connection: the rest are built each time.
const NAMES_KEPT: usize = 48;

impl Names {
    /// The name spelled `raw`, the `at`-th field of its request. Names are kept in the order they
    /// first came, and an SDK sends its fields in the same order each time, so the `at`-th kept
    /// name is tried first: one comparison instead of a scan.
    fn get(&mut self, at: usize, raw: &[u8]) -> Option<HeaderName> {
        if let Some((k, name)) = self.0.get(at)
            && **k == *raw
        {
            return Some(name.clone());
        }
        if let Some((_, name)) = self.0.iter().find(|(k, _)| **k == *raw) {
            return Some(name.clone());
        }
        let name = HeaderName::from_bytes(raw).ok()?;
        if self.0.len() < NAMES_KEPT {
            self.0.push((raw.into(), name.clone()));
        }
        Some(name)
    }
}

/// A `Content-Length` value as hyper takes it: ASCII digits only, no sign, no spaces, no list.
fn digits(v: &[u8]) -> Option<usize> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

enum Wait {
    Read(usize),
    TimedOut,
    Stop,
    Failed(io::Error),
}

enum Next {
    KeepAlive,
    Close,
}

struct Conn<IO> {
    io: IO,
    /// Where reads land; frozen into `pending` after each read.
    buf: BytesMut,
    /// Bytes read and not consumed yet.
    pending: Bytes,
    /// The answer being written.
    out: Vec<u8>,
    names: Names,
    /// Bytes of the current request's body not read from the socket yet.
    body_left: u64,
}

/// The body of a request whose head and first bytes were parsed before the rest arrived: what
/// arrived, then the rest read from the connection as the gateway asks for it (under its
/// body-read timeout, as with hyper). Bytes after the body's end stay in `pending` for the next
/// request.
struct Streamed<'c, IO> {
    first: Option<Bytes>,
    conn: &'c mut Conn<IO>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> hyper::body::Body for Streamed<'_, IO> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(first) = this.first.take().filter(|b| !b.is_empty()) {
            return Poll::Ready(Some(Ok(hyper::body::Frame::data(first))));
        }
        let conn = &mut *this.conn;
        if conn.body_left == 0 {
            return Poll::Ready(None);
        }
        conn.buf.reserve(READ_CHUNK);
        let polled = {
            let read = std::pin::pin!(conn.io.read_buf(&mut conn.buf));
            read.poll(cx)
        };
        let n = match polled {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Ok(n)) => n,
        };
        if n == 0 {
            return Poll::Ready(Some(Err("the connection ended inside the body".into())));
        }
        let mut data = conn.buf.split().freeze();
        if let Ok(left) = usize::try_from(conn.body_left)
            && data.len() > left
        {
            conn.pending = data.split_off(left);
        }
        conn.body_left -= data.len() as u64;
        Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.first.as_ref().is_none_or(Bytes::is_empty) && self.conn.body_left == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let first = self.first.as_ref().map_or(0, Bytes::len) as u64;
        hyper::body::SizeHint::with_exact(first + self.conn.body_left)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send> super::RequestBody for Streamed<'_, IO> {
    fn complete(&self) -> bool {
        false
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    /// Reads what the socket has right now, without waiting: `None` if nothing.
    fn read_now(&mut self) -> Option<io::Result<usize>> {
        let mut cx = Context::from_waker(Waker::noop());
        let polled = {
            let read = std::pin::pin!(self.read());
            read.poll(&mut cx)
        };
        match polled {
            Poll::Ready(r) => Some(r),
            Poll::Pending => {
                // The bytes `read` moved into `buf` before it waited go back.
                if !self.buf.is_empty() {
                    self.pending = self.buf.split().freeze();
                }
                None
            }
        }
    }

    async fn read(&mut self) -> io::Result<usize> {
        if !self.pending.is_empty() {
            // Rare: a partial request left over after a pipelined one.
            self.buf.extend_from_slice(&self.pending);
            self.pending = Bytes::new();
        }
        self.buf.reserve(READ_CHUNK);
        let n = self.io.read_buf(&mut self.buf).await;
        self.pending = self.buf.split().freeze();
        n
    }

    /// Waits for the socket's next bytes until `deadline`, or until the gateway starts draining.
    async fn read_until(&mut self, deadline: Instant, stop: &mut watch::Receiver<bool>) -> Wait {
        let read = tokio::time::timeout_at(deadline, self.read());
        tokio::select! {
            biased;
            _ = stop.changed() => Wait::Stop,
            read = read => match read {
                Err(_) => Wait::TimedOut,
                Ok(Ok(n)) => Wait::Read(n),
                Ok(Err(e)) => Wait::Failed(e),
            },
        }
    }

    async fn close(&mut self) -> Result<(), BoxError> {
        let _ = self.io.shutdown().await;
        Ok(())
    }

    /// Writes the answer as hyper's HTTP/1.1 server would; `close_after` ends the connection after it.
    async fn answer(
        &mut self,
        resp: Response<Body>,
        is_head: bool,
        close_after: bool,
    ) -> io::Result<Next> {
        let (parts, mut body) = resp.into_parts();
        let status = parts.status;
        let can_body = !(is_head || status.is_informational() || no_content(status));
        // hyper's `BodyLength`: `None` for a body that is already over.
        let length = if body.is_end_stream() {
            None
        } else {
            Some(body.size_hint().exact())
        };
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut framing: Option<Framing> = None;
        let mut close = false;
        let mut wrote_date = false;
        let mut wrote_connection = false;
        let mut last: Option<&HeaderName> = None;
        for (name, value) in parts.headers.iter() {
            let repeat = last == Some(name);
            last = Some(name);
            match *name {
                header::CONTENT_LENGTH => {
                    if repeat {
                        // hyper writes the first value only.
                        continue;
                    }
                    match length {
                        Some(Some(n)) => framing = Some(Framing::Length(n)),
                        Some(None) => match digits(value.as_bytes()) {
                            Some(n) => framing = Some(Framing::Length(n as u64)),
                            None => {
                                return Err(io::Error::other("bad content-length in answer"));
                            }
                        },
                        None if is_head => framing = Some(Framing::Length(0)),
                        None => continue,
                    }
                }
                header::TRANSFER_ENCODING => {
                    // forward.rs strips it from upstream answers and no local answer sets it.
                    return Err(io::Error::other("transfer-encoding set on an answer"));
                }
                header::CONNECTION => {
                    if value.as_bytes().eq_ignore_ascii_case(b"close") {
                        close = true;
                    }
                    if repeat {
                        out.truncate(out.len() - 2);
                        out.extend_from_slice(b", ");
                        out.extend_from_slice(value.as_bytes());
                        out.extend_from_slice(b"\r\n");
                        continue;
                    }
                    wrote_connection = true;
                }
                header::DATE => wrote_date = true,
                _ => {}
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if close_after && !close {
            // The connection ends after this answer (draining, or a body left unread): say so,
            // as hyper does when a graceful shutdown turned keep-alive off.
            if wrote_connection {
                out.truncate(out.len() - 2);
                out.extend_from_slice(b", close\r\n");
            } else {
                out.extend_from_slice(b"connection: close\r\n");
            }
            close = true;
        }
        let framing = match framing {
            Some(f) => f,
            None => match length {
                Some(None) if can_body => {
                    out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                    Framing::Chunked
                }
                Some(None) => Framing::Length(0),
                None | Some(Some(0)) => {
                    if !(status.is_informational() || no_content(status) || is_head) {
                        out.extend_from_slice(b"content-length: 0\r\n");
                    }
                    Framing::Length(0)
                }
                Some(Some(n)) => {
                    if status.is_informational() || no_content(status) {
                        Framing::Length(0)
                    } else {
                        out.extend_from_slice(b"content-length: ");
                        crate::ascii::push_decimal(out, n);
                        out.extend_from_slice(b"\r\n");
                        Framing::Length(n)
                    }
                }
            },
        };
        if !wrote_date {
            out.extend_from_slice(b"date: ");
            http_date(out);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !can_body || length.is_none() {
            self.io.write_all(&self.out).await?;
            return Ok(if close { Next::Close } else { Next::KeepAlive });
        }
        let mut sent: u64 = 0;
        loop {
            let polled = {
                let mut cx = Context::from_waker(Waker::noop());
                Pin::new(&mut body).poll_frame(&mut cx)
            };
            let frame = match polled {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    // The rest is not there yet: what is ready goes out first.
                    if !self.out.is_empty() {
                        self.io.write_all(&self.out).await?;
                        self.out.clear();
                    }
                    body.frame().await
                }
            };
            let data = match frame {
                None => break,
                Some(Err(e)) => {
                    // No terminating chunk, no short body passed off as whole: the client
                    // must see a cut.
                    return Err(io::Error::other(e));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    // Trailers: hyper drops them unless declared, and nothing here declares any.
                    Err(_) => continue,
                },
            };
            if data.is_empty() {
                continue;
            }
            sent = sent.saturating_add(data.len() as u64);
            match framing {
                Framing::Length(n) => {
                    if sent > n {
                        return Err(io::Error::other("answer body longer than its length"));
                    }
                    self.out.extend_from_slice(&data);
                }
                Framing::Chunked => {
                    crate::ascii::push_hex(&mut self.out, data.len() as u64);
                    self.out.extend_from_slice(b"\r\n");
                    self.out.extend_from_slice(&data);
                    self.out.extend_from_slice(b"\r\n");
                }
            }
            if self.out.len() >= WRITE_GATHER {
                self.io.write_all(&self.out).await?;
                self.out.clear();
            }
        }
        match framing {
            Framing::Length(n) if sent != n => {
                return Err(io::Error::other("answer body shorter than its length"));
            }
            Framing::Length(_) => {}
            Framing::Chunked => self.out.extend_from_slice(b"0\r\n\r\n"),
        }
        self.io.write_all(&self.out).await?;
        Ok(if close { Next::Close } else { Next::KeepAlive })
    }
}

#[derive(Clone, Copy)]
enum Framing {
    Length(u64),
    Chunked,
}

fn no_content(status: StatusCode) -> bool {
    status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED
}

thread_local! {
    /// The `date` value, formatted once per second per thread.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// The `date` field's value as hyper writes it (IMF-fixdate).
fn http_date(out: &mut Vec<u8>) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            *at = secs;
            *text = crate::time::format_http_date(i64::try_from(secs).unwrap_or(i64::MAX));
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// The stream as hyper gets it after a hand-off: the bytes already read first, then the socket.
struct Prefixed<IO> {
    prefix: Bytes,
    io: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_kept_per_connection_are_the_ones_built() {
        let mut names = Names::default();
        let raws = [
            "X-Acs-Action",
            "x-acs-action",
            "Host",
            "X-Acs-Action",
            "host",
        ];
        // The position is only a hint: right, wrong or past the end, the name is the same.
        for at in [0, 1, 3, 7] {
            for (i, raw) in raws.iter().enumerate() {
                let want = HeaderName::from_bytes(raw.as_bytes()).unwrap();
                assert_eq!(
                    names.get((i + at) % 8, raw.as_bytes()),
                    Some(want),
                    "{raw} at {at}"
                );
            }
        }
        assert_eq!(names.0.len(), 4);
        assert_eq!(names.get(0, b"bad name"), None);
        for i in 0..100 {
            let raw = format!("x-{i}");
            assert_eq!(names.get(i, raw.as_bytes()).unwrap().as_str(), raw);
        }
        assert_eq!(names.0.len(), NAMES_KEPT);
    }

    #[test]
    fn the_date_field_is_now_as_an_http_date() {
        let now = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64
        };
        let before = now();
        let mut out = Vec::new();
        http_date(&mut out);
        http_date(&mut out);
        let text = std::str::from_utf8(&out).unwrap();
        let (a, b) = text.split_at(29);
        let at = crate::time::parse_http_date(a).expect(a);
        assert!(at >= before && at <= now(), "{text}");
        assert!(
            b == a || crate::time::parse_http_date(b).is_some_and(|t| t > at),
            "{text}"
        );
    }

    fn plain(raw: &[u8]) -> bool {
        matches!(
            parse(&Bytes::copy_from_slice(raw), &mut Names::default()),
            Parsed::Plain(..)
        )
    }

    #[test]
    fn only_plain_requests_take_the_fast_path() {
        assert!(plain(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(plain(b"POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nab"));
        assert!(plain(b"GET / HTTP/1.1\r\nConnection: Keep-Alive\r\n\r\n"));
        // The body's last byte is still to come: read from the connection when asked for.
        match parse(
            &Bytes::from_static(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab"),
            &mut Names::default(),
        ) {
            Parsed::Plain(req, consumed, rest) => {
                assert_eq!((req.body().as_ref(), consumed, rest), (&b"ab"[..], 40, 1));
            }
            _ => panic!("not plain"),
        }
        for raw in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"GET http://a/ HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 65536\r\n\r\nab",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na",
            b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\na",
            b"POST / HTTP/1.1\r\nContent-Length: 1,1\r\n\r\na",
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\na",
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nTE: trailers\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"CONNECT /x HTTP/1.1\r\nContent-Length: 1\r\n\r\na",
        ] {
            assert!(!plain(raw), "{}", String::from_utf8_lossy(raw));
        }
        assert!(matches!(
            parse(
                &Bytes::from_static(b"GET / HTTP/1.1\r\nHost: a\r\n"),
                &mut Names::default()
            ),
            Parsed::Partial
        ));
    }
}
