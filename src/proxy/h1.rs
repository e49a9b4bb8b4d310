//! HTTP/1.1 on an upstream connection, for the pool: the request written in origin-form, the
//! answer's head parsed with `httparse`, and its body framed per RFC 9112 §6.3 and read straight
//! from the socket by whoever polls it. No task and no channel sits between the request's task and
//! the socket.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName};
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use std::io::{self, IoSlice};
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker, ready};
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

use super::pool::UpstreamError;

/// An answer head larger than this is refused (and its connection closed).
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// Header fields in one answer head, and trailer lines of a chunked body.
pub(super) const MAX_HEADERS: usize = 100;
/// A chunk-size line (extensions included) longer than this is refused.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Read size while waiting for a head: most answers, head and body, fit in one read.
const HEAD_READ: usize = 8 * 1024;
/// Largest read for a body; each read becomes one frame, so this bounds what one frame holds.
const BODY_READ: usize = 64 * 1024;
/// A request body up to this size is copied behind the head and written with it in one call.
const INLINE_BODY: usize = 16 * 1024;

/// One upstream connection and what has been read from it but not consumed yet.
pub(super) struct Conn {
    stream: TcpStream,
    pub(super) buf: BytesMut,
}

impl Conn {
    pub(super) fn new(stream: TcpStream) -> Self {
        Conn {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Reads at most about `want` more bytes into the buffer; `Ok(0)` is the upstream's EOF.
    pub(super) fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        want: usize,
    ) -> Poll<io::Result<usize>> {
        self.buf.reserve(want);
        // tokio's `read_buf` reads into the spare capacity without zeroing it first, and a read
        // that does not fill it clears the socket's readiness, so the next idle check costs no
        // system call. The future holds no state of its own: dropping it when pending is fine.
        pin!(self.stream.read_buf(&mut self.buf)).poll(cx)
    }

    /// Whether an idle connection can carry a request: the upstream has not closed it and has
    /// not said anything out of turn. Never waits; costs a system call only when the socket was
    /// reported readable since its last read.
    pub(super) fn still_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => return true,
            Poll::Ready(Err(_)) => return false,
            Poll::Ready(Ok(())) => {}
        }
        // Readable: EOF, an error, stray bytes, or a stale report from the previous answer.
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// A request ready for the wire: the head (with a small body behind it) and a large body.
pub(super) struct Outgoing {
    head: Vec<u8>,
    body: Bytes,
}

/// Writes `method target HTTP/1.1`, the headers, `host` from `authority` when the caller set
/// none, and a Content-Length for the body (the caller's Content-Length and Transfer-Encoding
/// are dropped: the body is whole, so its length is known).
pub(super) fn encode_request(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    authority: &Authority,
    body: Bytes,
) -> Outgoing {
    let has_host = headers.contains_key(header::HOST);
    let mut head = RequestHead::new(
        method,
        target,
        headers,
        authority.as_str().len() + 8,
        body.len(),
    );
    if !has_host {
        head.field(b"host", authority.as_str().as_bytes());
    }
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        head.field(name.as_str().as_bytes(), value.as_bytes());
    }
    head.finish(body)
}

/// A request head written field by field, for callers that hold the fields in some other shape
/// than a header map (the gateway filters the client's fields and adds its own as it writes).
/// Framing is the head's: callers never write Content-Length or Transfer-Encoding.
pub(super) struct RequestHead {
    head: Vec<u8>,
    /// RFC 9110 §8.6: a Content-Length goes out for an empty body too when the method gives the
    /// body a meaning.
    length_always: bool,
}

impl RequestHead {
    /// The buffer is sized once for the request line, `fields`' lines, `extra` bytes of other
    /// fields and a small body.
    pub(super) fn new(
        method: &Method,
        target: &str,
        fields: &HeaderMap,
        extra: usize,
        body_len: usize,
    ) -> Self {
        let lines: usize = fields
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        let mut size = method.as_str().len() + target.len() + lines + extra + 64;
        if body_len <= INLINE_BODY {
            size += body_len;
        }
        let mut head = Vec::with_capacity(size);
        head.extend_from_slice(method.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        RequestHead {
            head,
            length_always: matches!(*method, Method::POST | Method::PUT | Method::PATCH),
        }
    }

    /// One `name: value` line. The caller vouches that both are valid field bytes (they come
    /// from a parsed header map, or are checked with [`is_field_value`]).
    pub(super) fn field(&mut self, name: &[u8], value: &[u8]) {
        self.head.extend_from_slice(name);
        self.head.extend_from_slice(b": ");
        self.head.extend_from_slice(value);
        self.head.extend_from_slice(b"\r\n");
    }

    /// Starts a field whose value the caller writes in pieces with [`RequestHead::value`],
    /// then ends with [`RequestHead::end_field`].
    pub(super) fn start_field(&mut self, name: &[u8]) {
        self.head.extend_from_slice(name);
        self.head.extend_from_slice(b": ");
    }

    pub(super) fn value(&mut self) -> &mut Vec<u8> {
        &mut self.head
    }

    pub(super) fn end_field(&mut self) {
        self.head.extend_from_slice(b"\r\n");
    }

    /// The Content-Length, the blank line, and the body behind them when it is small.
    pub(super) fn finish(mut self, mut body: Bytes) -> Outgoing {
        if !body.is_empty() || self.length_always {
            self.head.extend_from_slice(b"content-length: ");
            crate::ascii::push_decimal(&mut self.head, body.len() as u64);
            self.head.extend_from_slice(b"\r\n");
        }
        self.head.extend_from_slice(b"\r\n");
        if body.len() <= INLINE_BODY {
            self.head.extend_from_slice(&body);
            body = Bytes::new();
        }
        Outgoing {
            head: self.head,
            body,
        }
    }
}

/// Whether `value` may be sent as a field value as is: what `HeaderValue::from_bytes` accepts
/// (visible bytes, spaces and tabs; no CR, LF, NUL or DEL), so nothing can end the line early.
pub(super) fn is_field_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t')
}

/// How an exchange failed.
pub(super) enum Failure {
    /// The very first write failed: not one byte of the request left, so it may be sent again.
    NotSent(io::Error),
    /// The request may have reached the upstream.
    Failed(UpstreamError),
}

/// An answer's head, and how its body is delimited.
pub(super) struct Head {
    pub(super) status: StatusCode,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
    pub(super) decoder: Decoder,
    /// The connection may carry another exchange once this body is read to its end.
    pub(super) reuse: bool,
}

/// Writes the request and reads the answer's head. The answer is read while the request is
/// still being written: an upstream may answer early and stop reading (an error for a large
/// upload), and waiting for the write to finish would then wait forever. Such a connection is
/// not reused, since the rest of its request was never written.
pub(super) async fn exchange(
    conn: &mut Conn,
    out: &Outgoing,
    is_head: bool,
) -> Result<Head, Failure> {
    let total = out.head.len() + out.body.len();
    let mut sent = 0;
    std::future::poll_fn(|cx| {
        while sent < total {
            let stream = Pin::new(&mut conn.stream);
            let polled = if let Some(head) = out.head.get(sent..).filter(|h| !h.is_empty()) {
                if out.body.is_empty() {
                    stream.poll_write(cx, head)
                } else {
                    let parts = [IoSlice::new(head), IoSlice::new(&out.body)];
                    stream.poll_write_vectored(cx, &parts)
                }
            } else {
                stream.poll_write(cx, &out.body[sent - out.head.len()..])
            };
            match polled {
                Poll::Ready(Ok(0)) => {
                    let e = io::Error::from(io::ErrorKind::WriteZero);
                    return Poll::Ready(Err(Failure::Failed(UpstreamError::Write(e))));
                }
                Poll::Ready(Ok(n)) => sent += n,
                Poll::Ready(Err(e)) if sent == 0 => return Poll::Ready(Err(Failure::NotSent(e))),
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Err(Failure::Failed(UpstreamError::Write(e))));
                }
                Poll::Pending => break,
            }
        }
        loop {
            if !conn.buf.is_empty() {
                match parse_head(&mut conn.buf, is_head) {
                    Ok(Some(mut head)) => {
                        head.reuse &= sent == total;
                        return Poll::Ready(Ok(head));
                    }
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Err(Failure::Failed(e))),
                }
            }
            match ready!(conn.poll_fill(cx, HEAD_READ)) {
                Ok(0) => return Poll::Ready(Err(Failure::Failed(UpstreamError::NoAnswer))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(Failure::Failed(UpstreamError::Read(e)))),
            }
        }
    })
    .await
}

/// Parses the answer head at the front of `buf`, skipping interim (1xx) answers. `None`: not
/// all of it is in yet.
fn parse_head(buf: &mut BytesMut, is_head: bool) -> Result<Option<Head>, UpstreamError> {
    loop {
        // Where each field's name and value lie in `buf`, kept so that the values can become
        // slices of the head's bytes (no copy) once `httparse`'s borrow of `buf` ends.
        let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut fields);
        let len = match resp.parse(&buf[..]) {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
            Ok(httparse::Status::Complete(_)) => return Err(UpstreamError::HeadTooLarge),
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                return Err(UpstreamError::HeadTooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(UpstreamError::TooManyHeaders),
            Err(_) => return Err(UpstreamError::MalformedHead),
        };
        let code = resp.code.unwrap_or(0);
        if code == 101 {
            return Err(UpstreamError::SwitchingProtocols);
        }
        if (100..200).contains(&code) {
            // 100 Continue, 102, 103 Early Hints and the like: the real answer follows.
            buf.advance(len);
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|_| UpstreamError::MalformedHead)?;
        let version = if resp.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };

        let base = buf.as_ptr() as usize;
        let at = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut has_te = false;
        let (mut close, mut keep_alive) = (false, false);
        let count = resp.headers.len();
        for (field, span) in resp.headers.iter().zip(spans.iter_mut()) {
            let (name, value) = (field.name.as_bytes(), field.value);
            *span = (
                at(name),
                at(name) + name.len() as u32,
                at(value),
                at(value) + value.len() as u32,
            );
            if name.eq_ignore_ascii_case(b"content-length") {
                let n = parse_content_length(value).ok_or(UpstreamError::BadContentLength)?;
                if length.is_some_and(|l| l != n) {
                    return Err(UpstreamError::BadContentLength);
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                has_te = true;
                // Only a final `chunked` delimits the body; a later field can undo it.
                chunked = tokens(value)
                    .last()
                    .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case(b"connection") {
                for t in tokens(value) {
                    close |= t.eq_ignore_ascii_case(b"close");
                    keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
                }
            }
        }
        let mut reuse = !close && (version == Version::HTTP_11 || keep_alive);

        let bodyless =
            is_head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        let decoder = if bodyless {
            Decoder::Done
        } else if has_te {
            // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3), but a message with both
            // may be an attempt at request smuggling: its connection is not trusted again.
            reuse &= length.is_none() && chunked;
            if chunked {
                Decoder::Chunked(Chunk::Size)
            } else {
                Decoder::Eof
            }
        } else {
            match length {
                Some(0) => Decoder::Done,
                Some(n) => Decoder::Length(n),
                None => {
                    reuse = false;
                    Decoder::Eof
                }
            }
        };

        let head = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(count);
        for &(ns, ne, vs, ve) in &spans[..count] {
            let name = HeaderName::from_bytes(&head[ns as usize..ne as usize])
                .map_err(|_| UpstreamError::MalformedHead)?;
            // The framing headers describe this connection's bytes, which the body decodes; the
            // server that forwards the answer frames it anew.
            if !bodyless
                && has_te
                && (name == header::CONTENT_LENGTH
                    || (chunked && name == header::TRANSFER_ENCODING))
            {
                continue;
            }
            let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
                .map_err(|_| UpstreamError::MalformedHead)?;
            headers.append(name, value);
        }
        return Ok(Some(Head {
            status,
            version,
            headers,
            decoder,
            reuse,
        }));
    }
}

/// The comma-separated tokens of a field value, without surrounding whitespace; empty list
/// elements are skipped (RFC 9110 §5.6.1).
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// A Content-Length value: digits, or a list of identical ones (`5, 5`), which RFC 9110 §8.6
/// lets a recipient take as one.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let mut length = None;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 18 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    length
}

/// Where a body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decoder {
    /// This many bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Eof,
    /// The last byte is in.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data still to come.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines (this many so far) until an empty line.
    Trailers(usize),
}

pub(super) enum Decoded {
    Data(Bytes),
    /// Everything buffered is consumed; the socket must be read.
    NeedMore,
    End,
}

impl Decoder {
    /// The next step using only the bytes already in `buf`.
    pub(super) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, UpstreamError> {
        self.skip_framing(buf)?;
        match self {
            Decoder::Done => Ok(Decoded::End),
            Decoder::Length(rest) | Decoder::Chunked(Chunk::Data(rest)) => {
                let data = take(buf, rest);
                if *rest == 0 {
                    *self = match self {
                        Decoder::Length(_) => Decoder::Done,
                        _ => Decoder::Chunked(Chunk::DataEnd),
                    };
                }
                Ok(data.map_or(Decoded::NeedMore, Decoded::Data))
            }
            Decoder::Eof if buf.is_empty() => Ok(Decoded::NeedMore),
            Decoder::Eof => Ok(Decoded::Data(buf.split().freeze())),
            // Chunk framing that is not all in yet.
            Decoder::Chunked(_) => Ok(Decoded::NeedMore),
        }
    }

    /// Steps over the chunk framing (the CRLF after data, size lines, trailers) that is in
    /// `buf`; stops at data, at the end, or where the buffer runs out. Consumes nothing on error.
    pub(super) fn skip_framing(&mut self, buf: &mut BytesMut) -> Result<(), UpstreamError> {
        loop {
            let Decoder::Chunked(chunk) = self else {
                return Ok(());
            };
            match chunk {
                Chunk::Data(_) => return Ok(()),
                Chunk::DataEnd => {
                    match buf.get(..2) {
                        Some(b"\r\n") => buf.advance(2),
                        Some(_) => return Err(UpstreamError::BadChunk),
                        None if buf.first().is_none_or(|&b| b == b'\r') => return Ok(()),
                        None => return Err(UpstreamError::BadChunk),
                    }
                    *chunk = Chunk::Size;
                }
                Chunk::Size => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(());
                    };
                    let size = parse_chunk_size(&line).ok_or(UpstreamError::BadChunk)?;
                    *chunk = if size == 0 {
                        Chunk::Trailers(0)
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Trailers(lines) => {
                    let Some(line) = take_line(buf, MAX_HEAD)? else {
                        return Ok(());
                    };
                    if line.is_empty() {
                        *self = Decoder::Done;
                    } else if *lines >= MAX_HEADERS {
                        return Err(UpstreamError::BadChunk);
                    } else {
                        // Trailers are dropped: the answer's head has gone out already.
                        *lines += 1;
                    }
                }
            }
        }
    }

    /// Bytes of body still to come, when that is known.
    pub(super) fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Done => Some(0),
            Decoder::Chunked(_) | Decoder::Eof => None,
        }
    }

    /// Read size for the next socket read.
    pub(super) fn read_size(&self) -> usize {
        match self {
            Decoder::Length(n) | Decoder::Chunked(Chunk::Data(n)) => {
                usize::try_from(*n).map_or(BODY_READ, |n| n.clamp(HEAD_READ, BODY_READ))
            }
            _ => HEAD_READ,
        }
    }
}

/// Up to `*rest` bytes from the front of `buf`, counted off `rest`.
fn take(buf: &mut BytesMut, rest: &mut u64) -> Option<Bytes> {
    if buf.is_empty() {
        return None;
    }
    let n = usize::try_from(*rest).map_or(buf.len(), |r| r.min(buf.len()));
    *rest -= n as u64;
    Some(buf.split_to(n).freeze())
}

/// A CRLF-terminated line from the front of `buf`, without its CRLF.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, UpstreamError> {
    let Some(lf) = buf.iter().take(max + 2).position(|&b| b == b'\n') else {
        if buf.len() >= max + 2 {
            return Err(UpstreamError::BadChunk);
        }
        return Ok(None);
    };
    // A bare LF is not accepted: peers that disagree on line ends disagree on framing.
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err(UpstreamError::BadChunk);
    }
    let mut line = buf.split_to(lf + 1);
    line.truncate(lf - 1);
    Ok(Some(line))
}

/// `chunk-size [ chunk-ext ]`: hex digits, then nothing or extensions (ignored).
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return None;
    }
    let rest = line[digits..].trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return None;
    }
    line[..digits].iter().try_fold(0u64, |n, &d| {
        let v = char::from(d).to_digit(16)?;
        Some((n << 4) | u64::from(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_value_is_accepted_exactly_when_a_header_value_would_be() {
        // Every byte, alone and inside a value: the gateway's own fields are written with this
        // check instead of building a `HeaderValue`, and a byte it let through that `http`
        // refuses (CR, LF, NUL) could split the request.
        for b in 0..=255u8 {
            for value in [vec![b], vec![b'a', b, b'z']] {
                assert_eq!(
                    is_field_value(&value),
                    HeaderValue::from_bytes(&value).is_ok(),
                    "byte {b:#04x}"
                );
            }
        }
        assert!(!is_field_value(b"alice\r\nx-akgate-key: forged"));
        assert!(is_field_value("名前".as_bytes()));
    }

    #[test]
    fn a_request_head_has_the_request_line_the_fields_and_its_own_framing() {
        let body = Bytes::from_static(b"a=1");
        let mut head = RequestHead::new(&Method::POST, "/p?q=1", &HeaderMap::new(), 0, body.len());
        head.field(b"host", b"api.test");
        head.start_field(b"x-forwarded-for");
        head.value().extend_from_slice(b"10.0.0.1, 127.0.0.1");
        head.end_field();
        let out = head.finish(body);
        assert_eq!(
            out.head,
            b"POST /p?q=1 HTTP/1.1\r\nhost: api.test\r\nx-forwarded-for: 10.0.0.1, 127.0.0.1\r\n\
              content-length: 3\r\n\r\na=1"
        );
        assert!(out.body.is_empty(), "a small body goes behind the head");
        let out = RequestHead::new(&Method::GET, "/", &HeaderMap::new(), 0, 0).finish(Bytes::new());
        assert_eq!(
            out.head, b"GET / HTTP/1.1\r\n\r\n",
            "no length for an empty GET"
        );
    }

    fn decode_all(wire: &[u8], pieces: usize) -> Result<(Vec<u8>, Decoder, usize), UpstreamError> {
        let mut d = Decoder::Chunked(Chunk::Size);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(pieces) {
            buf.extend_from_slice(piece);
            while let Decoded::Data(b) = d.decode(&mut buf)? {
                out.extend_from_slice(&b);
            }
        }
        Ok((out, d, buf.len()))
    }

    #[test]
    fn chunked_bodies_decode_the_same_whatever_the_read_boundaries() {
        let wire = b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-t: 1\r\n\r\n";
        for pieces in 1..wire.len() {
            let (out, d, left) = decode_all(wire, pieces).unwrap();
            assert_eq!(
                out, b"helloabcdefghijklmnopqrstuvwxyz",
                "pieces of {pieces}"
            );
            assert_eq!(d, Decoder::Done);
            assert_eq!(left, 0);
        }
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for wire in [
            &b"x\r\n"[..],
            b"5\nhello\r\n",
            b"5\r\nhelloXX",
            b"10000000000000000\r\n",
            b"5 junk\r\n",
        ] {
            assert!(decode_all(wire, wire.len()).is_err(), "{wire:?}");
        }
    }

    #[test]
    fn content_lengths() {
        assert_eq!(parse_content_length(b"42"), Some(42));
        assert_eq!(parse_content_length(b"42, 42"), Some(42));
        for bad in [
            &b""[..],
            b"4 2",
            b"+4",
            b"-1",
            b"42, 43",
            b"0x10",
            b",",
            b"1234567890123456789",
        ] {
            assert_eq!(parse_content_length(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn requests_carry_their_length_and_a_host() {
        let authority = Authority::from_static("10.0.0.1:8080");
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        headers.insert("x-a", HeaderValue::from_static("b"));
        let out = encode_request(
            &Method::POST,
            "/p?q=1",
            &headers,
            &authority,
            Bytes::from_static(b"body"),
        );
        assert_eq!(
            out.head,
            b"POST /p?q=1 HTTP/1.1\r\nhost: 10.0.0.1:8080\r\nx-a: b\r\ncontent-length: 4\r\n\r\nbody"
        );
        assert!(out.body.is_empty());
        let big = Bytes::from(vec![b'x'; INLINE_BODY + 1]);
        let out = encode_request(&Method::PUT, "/", &headers, &authority, big.clone());
        assert!(
            out.head
                .ends_with(format!("content-length: {}\r\n\r\n", big.len()).as_bytes())
        );
        assert_eq!(out.body, big);
        let out = encode_request(
            &Method::GET,
            "/",
            &HeaderMap::new(),
            &authority,
            Bytes::new(),
        );
        assert_eq!(out.head, b"GET / HTTP/1.1\r\nhost: 10.0.0.1:8080\r\n\r\n");
    }
}
