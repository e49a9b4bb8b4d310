//! SHA-256 over `sha2`'s compression function, for canonical requests.
//!
//! A canonical request reaches the hash as some sixty small pieces. `sha2::Sha256` takes each
//! through its block buffer's bookkeeping, so the verifiers gathered pieces in a 256-byte
//! [`Buffered`](super::encoding::Buffered) first and the bytes were copied twice. [`Sha256Stream`]
//! gathers them once, in a buffer that holds a typical canonical request whole (~650 bytes for
//! an SDK call), and compresses every full block of it in one call.

use sha2::block_api::compress256;

use super::encoding::Sink;

/// SHA-256's initial state (FIPS 180-4 §5.3.3).
const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// Bytes gathered before compressing.
const BUF: usize = 1024;

/// A streaming SHA-256 that buffers up to [`BUF`] bytes.
pub struct Sha256Stream {
    state: [u32; 8],
    /// Bytes already compressed.
    done: u64,
    buf: [u8; BUF],
    /// Bytes waiting in `buf`; always below [`BUF`] between calls.
    len: usize,
}

impl Default for Sha256Stream {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256Stream {
    pub fn new() -> Self {
        Sha256Stream {
            state: IV,
            done: 0,
            buf: [0; BUF],
            len: 0,
        }
    }

    /// Takes what does not fit in the buffer: fills it, compresses it, and compresses whole
    /// blocks of the rest straight from `bytes`.
    #[cold]
    #[inline(never)]
    fn spill(&mut self, bytes: &[u8]) {
        let (head, rest) = bytes.split_at((BUF - self.len).min(bytes.len()));
        self.buf[self.len..self.len + head.len()].copy_from_slice(head);
        self.len += head.len();
        if self.len < BUF {
            return;
        }
        compress256(&mut self.state, self.buf.as_chunks::<64>().0);
        self.done += BUF as u64;
        let (blocks, tail) = rest.as_chunks::<64>();
        if !blocks.is_empty() {
            compress256(&mut self.state, blocks);
            self.done += (blocks.len() * 64) as u64;
        }
        self.buf[..tail.len()].copy_from_slice(tail);
        self.len = tail.len();
    }

    /// The digest of everything put.
    pub fn finish(mut self) -> [u8; 32] {
        let bits = (self.done + self.len as u64).wrapping_mul(8);
        // The padding (0x80, zeros, the 64-bit length) needs nine bytes after the message; when
        // the buffer cannot take them, its whole blocks go first.
        if self.len + 9 > BUF {
            let whole = self.len / 64 * 64;
            compress256(&mut self.state, self.buf[..whole].as_chunks::<64>().0);
            self.buf.copy_within(whole..self.len, 0);
            self.len -= whole;
        }
        let end = (self.len + 9).div_ceil(64) * 64;
        self.buf[self.len] = 0x80;
        self.buf[self.len + 1..end - 8].fill(0);
        self.buf[end - 8..end].copy_from_slice(&bits.to_be_bytes());
        compress256(&mut self.state, self.buf[..end].as_chunks::<64>().0);
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

impl Sink for Sha256Stream {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        // `len < BUF` and a slice is at most `isize::MAX` bytes, so this cannot overflow.
        let end = self.len + bytes.len();
        if end < BUF {
            copy_short(&mut self.buf[self.len..end], bytes);
            self.len = end;
        } else {
            self.spill(bytes);
        }
    }

    #[inline]
    fn put_byte(&mut self, byte: u8) {
        // `len < BUF` between calls, so the store is in bounds and only a full buffer spills.
        if self.len + 1 < BUF {
            self.buf[self.len] = byte;
            self.len += 1;
        } else {
            self.spill(&[byte]);
        }
    }
}

/// `dst.copy_from_slice(src)` (the two are as long), inline for the pieces of a canonical request
/// (names, separators, short values: mostly under 32 bytes), as two fixed-size copies that may
/// overlap; a copy of unknown length is otherwise a call to the C library's `memcpy`, which costs
/// more than copying a dozen bytes.
#[inline(always)]
fn copy_short(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    match n {
        0 => {}
        1..=3 => {
            dst[0] = src[0];
            dst[n / 2] = src[n / 2];
            dst[n - 1] = src[n - 1];
        }
        4..=7 => {
            dst[..4].copy_from_slice(&src[..4]);
            dst[n - 4..].copy_from_slice(&src[n - 4..]);
        }
        8..=16 => {
            dst[..8].copy_from_slice(&src[..8]);
            dst[n - 8..].copy_from_slice(&src[n - 8..]);
        }
        17..=32 => {
            dst[..16].copy_from_slice(&src[..16]);
            dst[n - 16..].copy_from_slice(&src[n - 16..]);
        }
        _ => dst.copy_from_slice(src),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn short_copies_copy_every_byte() {
        let src: Vec<u8> = (1..=80u8).collect();
        for n in 0..=80 {
            let mut dst = vec![0u8; n];
            copy_short(&mut dst, &src[..n]);
            assert_eq!(dst, src[..n], "{n}");
        }
    }

    #[test]
    fn digests_equal_sha2s_for_every_length_and_split() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 31 + 7) as u8).collect();
        for len in (0..200).chain([503, 504, 511, 512, 1015, 1016, 1023, 1024, 1025, 2100, 3000]) {
            let want: [u8; 32] = Sha256::digest(&data[..len]).into();
            for piece in (1..=40).chain([64, 100, 1023, 1024, 5000]) {
                let mut s = Sha256Stream::new();
                for chunk in data[..len].chunks(piece) {
                    s.put(chunk);
                }
                assert_eq!(s.finish(), want, "len {len}, pieces of {piece}");
            }
            // Byte by byte, and bytes between pieces, across every buffer boundary.
            let mut s = Sha256Stream::new();
            for &b in &data[..len] {
                s.put_byte(b);
            }
            assert_eq!(s.finish(), want, "len {len}, put_byte");
            let mut s = Sha256Stream::new();
            for (i, chunk) in data[..len].chunks(10).enumerate() {
                match chunk.split_first() {
                    Some((first, rest)) if i % 2 == 0 => {
                        s.put_byte(*first);
                        s.put(rest);
                    }
                    _ => s.put(chunk),
                }
            }
            assert_eq!(s.finish(), want, "len {len}, mixed");
        }
    }
}
