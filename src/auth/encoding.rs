//! Percent-encoding as the signature schemes define it (SIGNATURES.md §0).
//!
//! Canonical forms are produced straight into a [`Sink`] so a verifier can feed a hasher without
//! building the canonical request as a string; the string form exists only for error messages and
//! explanations.

use std::borrow::Cow;

/// Where canonical bytes go: a hash state while verifying, a buffer while explaining.
pub trait Sink {
    fn put(&mut self, bytes: &[u8]);

    /// One byte: canonical requests are full of one-byte separators (`:`, `\n`, `&`, `=`), and a
    /// sink that buffers can store one where `put` would copy a slice of unknown length.
    #[inline]
    fn put_byte(&mut self, byte: u8) {
        self.put(&[byte]);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Feeds a MAC through the [`Sink`] interface, so a string to sign can be streamed into it.
pub struct MacSink<M: hmac::Mac>(pub M);

impl<M: hmac::Mac> Sink for MacSink<M> {
    fn put(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Gathers many small writes (a canonical request is some sixty pieces, most a few bytes) into
/// a few large ones: a hash state's `update` does bookkeeping per call that dwarfs copying a few
/// bytes. Call [`Buffered::finish`] before reading the inner sink.
pub struct Buffered<'s, S: Sink> {
    inner: &'s mut S,
    buf: [u8; 256],
    len: usize,
}

impl<'s, S: Sink> Buffered<'s, S> {
    pub fn new(inner: &'s mut S) -> Self {
        Buffered {
            inner,
            buf: [0; 256],
            len: 0,
        }
    }

    /// Passes on what is still buffered.
    pub fn finish(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        if self.len > 0 {
            self.inner.put(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl<S: Sink> Sink for Buffered<'_, S> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        if let Some(room) = self.buf.get_mut(self.len..self.len + bytes.len()) {
            room.copy_from_slice(bytes);
            self.len += bytes.len();
            return;
        }
        self.flush();
        if bytes.len() >= self.buf.len() {
            self.inner.put(bytes);
        } else {
            self.buf[..bytes.len()].copy_from_slice(bytes);
            self.len = bytes.len();
        }
    }

    #[inline]
    fn put_byte(&mut self, byte: u8) {
        match self.buf.get_mut(self.len) {
            Some(slot) => {
                *slot = byte;
                self.len += 1;
            }
            None => self.put(&[byte]),
        }
    }
}

/// Writes to two sinks at once (hash and transcript).
pub struct Tee<'a, A: Sink, B: Sink>(pub &'a mut A, pub &'a mut B);

impl<A: Sink, B: Sink> Sink for Tee<'_, A, B> {
    fn put(&mut self, bytes: &[u8]) {
        self.0.put(bytes);
        self.1.put(bytes);
    }
    fn put_byte(&mut self, byte: u8) {
        self.0.put_byte(byte);
        self.1.put_byte(byte);
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

/// RFC 3986 unreserved characters: the only bytes `PE` leaves literal.
#[inline]
pub fn is_unreserved(b: u8) -> bool {
    UNRESERVED[usize::from(b)]
}

/// [`is_unreserved`] as a table: one load per byte where the test is five comparisons, and
/// canonicalising runs it on every byte of every path and parameter.
const UNRESERVED: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~');
        b += 1;
    }
    t
};

/// The value of each byte as a hex digit (either case), or 0xff. A table, because signatures and
/// digests are decoded and escapes read on every request, and a load is cheaper than the three
/// range tests of a `match`.
const HEX_VALUE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => 0xff,
        };
        b += 1;
    }
    t
};

/// Each byte's two lower-case hex digits, so a digest is written a byte (one load, one
/// two-byte store) rather than a nibble at a time.
const HEX_PAIRS: [[u8; 2]; 256] = {
    let mut t = [[0u8; 2]; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = [HEX_LOWER[b >> 4], HEX_LOWER[b & 0xf]];
        b += 1;
    }
    t
};

#[inline]
fn hex_val(b: u8) -> Option<u8> {
    let v = HEX_VALUE[usize::from(b)];
    (v < 16).then_some(v)
}

/// Lower-case hex of `bytes` into `out`, which must be exactly twice as long.
pub fn hex_lower_into(bytes: &[u8], out: &mut [u8]) {
    debug_assert_eq!(out.len(), 2 * bytes.len());
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
    }
}

pub fn hex_lower(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex_lower_into(bytes, &mut out);
    // Hex digits are ASCII.
    String::from_utf8(out).unwrap_or_default()
}

/// SHA-256 of the empty string, in lower-case hex.
pub const EMPTY_SHA256_HEX: [u8; 64] =
    *b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Lower-case hex of the SHA-256 of `body`. Most API calls have no body, and their hash is a
/// constant: that saves a hash state and a block on every such request.
pub fn sha256_hex(body: &[u8]) -> [u8; 64] {
    use sha2::{Digest, Sha256};
    if body.is_empty() {
        return EMPTY_SHA256_HEX;
    }
    let mut out = [0u8; 64];
    hex_lower_into(&Sha256::digest(body), &mut out);
    out
}

/// Decodes hex (either case) into `out`; false unless `s` is exactly `2 * out.len()` hex digits.
pub fn hex_decode_into(s: &[u8], out: &mut [u8]) -> bool {
    if s.len() != out.len() * 2 {
        return false;
    }
    // A digit's value is below 16 and anything else is 0xff, so one test of the high bits of
    // everything read, at the end, finds a bad digit anywhere (`out` is then garbage, as before).
    let mut seen = 0u8;
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let (h, l) = (
            HEX_VALUE[usize::from(pair[0])],
            HEX_VALUE[usize::from(pair[1])],
        );
        seen |= h | l;
        *o = (h << 4) | l;
    }
    seen < 16
}

/// Whether every byte is a hex digit (either case): one table load per byte, the results ORed
/// and tested once.
pub fn is_hex(s: &[u8]) -> bool {
    s.iter()
        .fold(0u8, |seen, &b| seen | HEX_VALUE[usize::from(b)])
        < 16
}

/// Whether two byte strings of a few dozen bytes are equal, compared eight bytes at a time
/// inline: header names and digests are that short, and a call to the C library's `bcmp` costs
/// more than the comparison itself.
#[inline]
pub fn short_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_ne_bytes(w)
    };
    let half = |s: &[u8], at: usize| -> u32 {
        let mut w = [0u8; 4];
        w.copy_from_slice(&s[at..at + 4]);
        u32::from_ne_bytes(w)
    };
    let n = a.len();
    if n < 4 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    if n < 8 {
        return half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4);
    }
    let mut at = 0;
    while at + 8 < n {
        if word(a, at) != word(b, at) {
            return false;
        }
        at += 8;
    }
    // The last eight bytes, overlapping what was compared already when `n` is not a multiple.
    word(a, n - 8) == word(b, n - 8)
}

/// Iterates the decoded bytes of a wire component. An `%` not followed by two hex digits is kept
/// literally (as the reference verifier does), so a malformed escape canonicalises to `%25…` and
/// can only match a signature computed over that same reading.
struct Decoded<'a> {
    raw: &'a [u8],
    pos: usize,
    plus_is_space: bool,
}

impl Iterator for Decoded<'_> {
    type Item = u8;
    #[inline]
    fn next(&mut self) -> Option<u8> {
        let c = *self.raw.get(self.pos)?;
        if c == b'%'
            && let (Some(h), Some(l)) = (
                self.raw.get(self.pos + 1).copied().and_then(hex_val),
                self.raw.get(self.pos + 2).copied().and_then(hex_val),
            )
        {
            self.pos += 3;
            return Some((h << 4) | l);
        }
        self.pos += 1;
        Some(if c == b'+' && self.plus_is_space {
            b' '
        } else {
            c
        })
    }
}

fn decoded(raw: &[u8], plus_is_space: bool) -> Decoded<'_> {
    Decoded {
        raw,
        pos: 0,
        plus_is_space,
    }
}

/// Percent-decodes a component.
pub fn percent_decode(raw: &[u8], plus_is_space: bool) -> Cow<'_, [u8]> {
    if !raw
        .iter()
        .any(|&b| b == b'%' || (plus_is_space && b == b'+'))
    {
        return Cow::Borrowed(raw);
    }
    Cow::Owned(decoded(raw, plus_is_space).collect())
}

/// `PE(decode(raw))` written to `sink`, without allocating.
pub fn canonicalize_into(raw: &[u8], plus_is_space: bool, sink: &mut impl Sink) {
    // Runs of bytes that are already canonical are passed through as slices.
    let mut start = 0;
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if is_unreserved(c) {
            i += 1;
            continue;
        }
        if c == b'%'
            && let (Some(h), Some(l)) = (
                raw.get(i + 1).copied().and_then(hex_val),
                raw.get(i + 2).copied().and_then(hex_val),
            )
        {
            let byte = (h << 4) | l;
            let upper = |b: u8| b.is_ascii_digit() || b.is_ascii_uppercase();
            if !is_unreserved(byte) && upper(raw[i + 1]) && upper(raw[i + 2]) {
                // Already the canonical escape.
                i += 3;
                continue;
            }
            sink.put(&raw[start..i]);
            put_encoded_byte(byte, sink);
            i += 3;
            start = i;
            continue;
        }
        sink.put(&raw[start..i]);
        let byte = if c == b'+' && plus_is_space { b' ' } else { c };
        put_encoded_byte(byte, sink);
        i += 1;
        start = i;
    }
    sink.put(&raw[start..]);
}

#[inline]
fn put_encoded_byte(b: u8, sink: &mut impl Sink) {
    if is_unreserved(b) {
        sink.put(&[b]);
    } else {
        sink.put(&[
            b'%',
            HEX_UPPER[usize::from(b >> 4)],
            HEX_UPPER[usize::from(b & 0xf)],
        ]);
    }
}

/// `PE(decode(raw))` as an owned or borrowed value; borrowed when the wire form is already
/// canonical, which is the common case for parameter names and most values.
pub fn canonical(raw: &[u8], plus_is_space: bool) -> Cow<'_, [u8]> {
    // Plain names and values (most of them) need neither escaping nor a probe.
    if raw.iter().all(|&b| is_unreserved(b)) {
        return Cow::Borrowed(raw);
    }
    let mut probe = Probe::default();
    canonicalize_into(raw, plus_is_space, &mut probe);
    if probe.pieces <= 1 && probe.len == raw.len() {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(probe.len);
    canonicalize_into(raw, plus_is_space, &mut out);
    Cow::Owned(out)
}

/// Counts what `canonicalize_into` would write, to detect the pass-through case.
#[derive(Default)]
struct Probe {
    pieces: usize,
    len: usize,
}

impl Sink for Probe {
    fn put(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.pieces += 1;
            self.len += bytes.len();
        }
    }
}

/// `PE` of raw (unencoded) bytes.
pub fn percent_encode_into(bytes: &[u8], sink: &mut impl Sink) {
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !is_unreserved(b) {
            sink.put(&bytes[start..i]);
            put_encoded_byte(b, sink);
            start = i + 1;
        }
    }
    sink.put(&bytes[start..]);
}

pub fn percent_encode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    percent_encode_into(s.as_bytes(), &mut out);
    // PE output is ASCII.
    String::from_utf8(out).unwrap_or_default()
}

/// Splits a raw `application/x-www-form-urlencoded` string (or query) into raw `(key, value)`
/// pairs, skipping empty parts. A part without `=` has an empty value.
pub fn raw_pairs(raw: &str) -> impl Iterator<Item = (&[u8], &[u8])> {
    raw.as_bytes()
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&b| b == b'=') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, &p[p.len()..]),
        })
}

/// Calls `f` with each item in sorted order. Up to 16 items are sorted on the stack: canonical
/// queries run on every request and almost all have a handful of parameters, so the common case
/// allocates nothing; more items spill to the heap.
pub fn for_each_sorted<T: Ord>(items: impl Iterator<Item = T>, mut f: impl FnMut(usize, &T)) {
    const INLINE: usize = 16;
    let mut inline: [Option<T>; INLINE] = [const { None }; INLINE];
    let mut n = 0;
    let mut spill: Vec<T> = Vec::new();
    for item in items {
        if n < INLINE {
            inline[n] = Some(item);
            n += 1;
        } else {
            if spill.is_empty() {
                spill.extend(inline.iter_mut().filter_map(Option::take));
            }
            spill.push(item);
        }
    }
    if spill.is_empty() {
        // Every slot below `n` is `Some`, so sorting the options sorts the items.
        let filled = &mut inline[..n];
        filled.sort_unstable();
        for (i, item) in filled.iter().flatten().enumerate() {
            f(i, item);
        }
    } else {
        spill.sort_unstable();
        for (i, item) in spill.iter().enumerate() {
            f(i, item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_on_the_stack_and_spilled_alike() {
        for n in [0usize, 1, 5, 16, 17, 40] {
            let items: Vec<u32> = (0..n as u32).map(|i| (i * 7919) % 101).collect();
            let mut want = items.clone();
            want.sort_unstable();
            let mut got = Vec::new();
            for_each_sorted(items.into_iter(), |i, x| {
                assert_eq!(i, got.len());
                got.push(*x);
            });
            assert_eq!(got, want, "{n} items");
        }
    }

    fn canon(s: &str, plus: bool) -> String {
        String::from_utf8(canonical(s.as_bytes(), plus).into_owned()).unwrap()
    }

    #[test]
    fn canonical_matches_the_reference_reading() {
        assert_eq!(canon("a+b%2Ac", true), "a%20b%2Ac");
        assert_eq!(canon("a+b", false), "a%2Bb");
        assert_eq!(canon("a%2ab", true), "a%2Ab");
        assert_eq!(canon("%7E~", true), "~~");
        assert_eq!(canon("*", true), "%2A");
        assert_eq!(canon("é", true), "%C3%A9");
        assert_eq!(canon("100%", true), "100%25");
        assert_eq!(canon("%zz", true), "%25zz");
        assert_eq!(canon("%4", true), "%254");
        assert_eq!(canon("%41", true), "A");
        assert_eq!(canon("", true), "");
        assert!(matches!(canonical(b"abc%2F", true), Cow::Borrowed(_)));
    }

    #[test]
    fn decode_and_pairs() {
        assert_eq!(&*percent_decode(b"a+b%20c", true), b"a b c");
        assert_eq!(&*percent_decode(b"a+b", false), b"a+b");
        let pairs: Vec<_> = raw_pairs("a=1&&b&c=&d=x=y").collect();
        assert_eq!(
            pairs,
            vec![
                (&b"a"[..], &b"1"[..]),
                (&b"b"[..], &b""[..]),
                (&b"c"[..], &b""[..]),
                (&b"d"[..], &b"x=y"[..])
            ]
        );
    }

    #[test]
    fn empty_body_hash_is_the_hash_of_nothing() {
        use sha2::{Digest, Sha256};
        assert_eq!(hex_lower(&Sha256::digest(b"")).as_bytes(), EMPTY_SHA256_HEX);
        assert_eq!(sha256_hex(b""), EMPTY_SHA256_HEX);
        assert_eq!(
            &sha256_hex(b"abc")[..],
            hex_lower(&Sha256::digest(b"abc")).as_bytes()
        );
    }

    #[test]
    fn buffered_writes_arrive_whole_and_in_order() {
        let mut want = Vec::new();
        let mut got = Vec::new();
        let mut b = Buffered::new(&mut got);
        for i in 0..200usize {
            let piece: Vec<u8> = (0..(i * 7) % 300).map(|j| (i + j) as u8).collect();
            want.extend_from_slice(&piece);
            b.put(&piece);
        }
        b.finish();
        assert_eq!(got, want);
    }

    #[test]
    fn hex() {
        let mut out = [0u8; 2];
        assert!(hex_decode_into(b"aBff", &mut out));
        assert_eq!(out, [0xab, 0xff]);
        assert!(!hex_decode_into(b"abf", &mut out));
        assert!(!hex_decode_into(b"zzzz", &mut out));
        assert_eq!(hex_lower(&[0xde, 0xad]), "dead");
    }

    #[test]
    fn hex_tables_agree_with_the_standard_library() {
        let all: Vec<u8> = (0..=255).collect();
        let mut out = vec![0u8; 512];
        hex_lower_into(&all, &mut out);
        let want: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(out, want.as_bytes());
        // Every pair of bytes: decoded exactly when both are hex digits, to their value.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let mut one = [0u8; 1];
                let ok = hex_decode_into(&[a, b], &mut one);
                let want = std::str::from_utf8(&[a, b])
                    .ok()
                    .filter(|s| s.bytes().all(|c| c.is_ascii_hexdigit()))
                    .and_then(|s| u8::from_str_radix(s, 16).ok());
                assert_eq!(ok.then_some(one[0]), want, "{a:#x} {b:#x}");
            }
        }
        for b in 0..=255u8 {
            assert_eq!(is_hex(&[b'0', b, b'f']), b.is_ascii_hexdigit(), "{b:#x}");
        }
        assert!(is_hex(b"") && is_hex(b"0123456789abcdefABCDEF"));
        // A bad digit anywhere, not only in the first pair.
        let mut four = [0u8; 4];
        assert!(hex_decode_into(b"00112233", &mut four));
        assert!(!hex_decode_into(b"001122g3", &mut four));
    }

    #[test]
    fn short_eq_compares_every_byte_of_every_length() {
        let base: Vec<u8> = (0..70u8).map(|i| b'a' + i % 26).collect();
        for n in 0..70 {
            let a = &base[..n];
            assert!(short_eq(a, a), "{n}");
            for i in 0..n {
                let mut b = a.to_vec();
                b[i] ^= 0x20;
                assert!(!short_eq(a, &b), "{n} differing at {i}");
            }
            assert!(!short_eq(a, &base[..n + 1]), "{n} vs {}", n + 1);
        }
    }
}
