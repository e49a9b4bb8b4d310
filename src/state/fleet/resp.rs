//! The little of RESP2 that the fleet needs: commands out as arrays of bulk strings, replies in.
//!
//! Every argument goes out as a length-prefixed bulk string, so nothing a client puts in a key id
//! or a nonce (CR, LF, spaces, `*`, `$`) can be read by Redis as protocol.

use crate::ascii::push_decimal;
use bytes::{Buf, Bytes, BytesMut};

/// A reply bigger than this is treated as a broken stream rather than buffered.
const MAX_BULK: usize = 64 << 20;
/// Arrays nested deeper than this are refused (the fleet's replies are at most two deep).
const MAX_DEPTH: usize = 8;
/// Elements of one array; the largest reply the fleet asks for is a bounded range.
const MAX_ARRAY: usize = 1 << 20;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Nil,
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Bytes),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            Value::Bulk(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            Value::Simple(s) => s.parse().ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Bulk(b) => std::str::from_utf8(b).ok(),
            Value::Simple(s) => Some(s),
            _ => None,
        }
    }
}

/// The stream is not RESP2 as this client reads it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed reply from the state store: {0}")]
pub struct ProtocolError(pub &'static str);

/// Appends one command (an array of bulk strings) to `out`.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    push_decimal(out, args.len() as u64);
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        push_decimal(out, a.len() as u64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Takes one complete reply off the front of `buf`; `Ok(None)` when more bytes are needed.
pub fn parse(buf: &mut BytesMut) -> Result<Option<Value>, ProtocolError> {
    match scan(buf, 0, 0)? {
        None => Ok(None),
        Some(end) => {
            let mut frame = buf.split_to(end).freeze();
            Ok(Some(build(&mut frame)?))
        }
    }
}

/// The end of the reply starting at `at`, if it is complete; validates as it goes so that
/// [`build`] cannot fail on a scanned frame except for numbers.
fn scan(buf: &[u8], at: usize, depth: usize) -> Result<Option<usize>, ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError("nested too deep"));
    }
    let Some((&kind, line_end)) = buf.get(at).zip(find_crlf(buf, at + 1)) else {
        return Ok(None);
    };
    let line = &buf[at + 1..line_end];
    let next = line_end + 2;
    match kind {
        b'+' | b'-' => Ok(Some(next)),
        b':' => {
            parse_i64(line)?;
            Ok(Some(next))
        }
        b'$' => {
            let n = parse_i64(line)?;
            if n == -1 {
                return Ok(Some(next));
            }
            let n = usize::try_from(n).map_err(|_| ProtocolError("negative length"))?;
            if n > MAX_BULK {
                return Err(ProtocolError("bulk string too long"));
            }
            let end = next + n + 2;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[next + n..end] != b"\r\n" {
                return Err(ProtocolError("bulk string not terminated"));
            }
            Ok(Some(end))
        }
        b'*' => {
            let n = parse_i64(line)?;
            if n == -1 {
                return Ok(Some(next));
            }
            let n = usize::try_from(n).map_err(|_| ProtocolError("negative length"))?;
            if n > MAX_ARRAY {
                return Err(ProtocolError("array too long"));
            }
            let mut pos = next;
            for _ in 0..n {
                match scan(buf, pos, depth + 1)? {
                    Some(p) => pos = p,
                    None => return Ok(None),
                }
            }
            Ok(Some(pos))
        }
        _ => Err(ProtocolError("unknown reply type")),
    }
}

fn build(frame: &mut Bytes) -> Result<Value, ProtocolError> {
    let kind = frame.get_u8();
    let line_end = find_crlf(frame, 0).ok_or(ProtocolError("truncated"))?;
    let line = frame.split_to(line_end);
    frame.advance(2);
    let text = || String::from_utf8_lossy(&line).into_owned();
    Ok(match kind {
        b'+' => Value::Simple(text()),
        b'-' => Value::Error(text()),
        b':' => Value::Int(parse_i64(&line)?),
        b'$' => match parse_i64(&line)? {
            -1 => Value::Nil,
            n => {
                // scan() checked the length and the terminator.
                let n = usize::try_from(n).map_err(|_| ProtocolError("negative length"))?;
                let b = frame.split_to(n);
                frame.advance(2);
                Value::Bulk(b)
            }
        },
        b'*' => match parse_i64(&line)? {
            -1 => Value::Nil,
            n => {
                let n = usize::try_from(n).map_err(|_| ProtocolError("negative length"))?;
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    items.push(build(frame)?);
                }
                Value::Array(items)
            }
        },
        _ => return Err(ProtocolError("unknown reply type")),
    })
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    rest.windows(2).position(|w| w == b"\r\n").map(|p| from + p)
}

fn parse_i64(line: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ProtocolError("bad number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &[u8]) -> Vec<Value> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(v) = parse(&mut buf).unwrap() {
            out.push(v);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        out
    }

    #[test]
    fn encodes_binary_safe_bulk_strings() {
        let mut out = Vec::new();
        encode(&mut out, &[b"SET", b"k\r\n*1\r\n", b""]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$7\r\nk\r\n*1\r\n\r\n$0\r\n\r\n");
    }

    #[test]
    fn parses_every_reply_type() {
        let v = all(
            b"+OK\r\n-ERR no\r\n:42\r\n$-1\r\n$5\r\na\r\nbc\r\n*-1\r\n*2\r\n:1\r\n*1\r\n$0\r\n\r\n",
        );
        assert_eq!(
            v,
            vec![
                Value::Simple("OK".into()),
                Value::Error("ERR no".into()),
                Value::Int(42),
                Value::Nil,
                Value::Bulk(Bytes::from_static(b"a\r\nbc")),
                Value::Nil,
                Value::Array(vec![
                    Value::Int(1),
                    Value::Array(vec![Value::Bulk(Bytes::new())])
                ]),
            ]
        );
    }

    #[test]
    fn waits_for_partial_replies_at_every_split() {
        let whole: &[u8] = b"*3\r\n$3\r\nabc\r\n:7\r\n+OK\r\n";
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            assert_eq!(parse(&mut buf).unwrap(), None, "cut at {cut}");
            assert_eq!(buf.len(), cut);
            buf.extend_from_slice(&whole[cut..]);
            assert!(matches!(parse(&mut buf).unwrap(), Some(Value::Array(_))));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            &b"?x\r\n"[..],
            b":12a\r\n",
            b"$3\r\nabcd\r\n",
            b"$-5\r\n",
            b"$999999999999\r\n",
        ] {
            assert!(parse(&mut BytesMut::from(bad)).is_err(), "{bad:?}");
        }
        let mut deep = Vec::new();
        for _ in 0..20 {
            deep.extend_from_slice(b"*1\r\n");
        }
        deep.extend_from_slice(b":1\r\n");
        assert!(parse(&mut BytesMut::from(&deep[..])).is_err());
    }
}
