//! Time-based one-time passwords (RFC 6238 over RFC 4226 HOTP): HMAC-SHA1, 30-second steps,
//! 6 digits, as every authenticator app computes them by default.
//!
//! The seed is kept only as a prepared HMAC state, like an AccessKey secret
//! ([`crate::rules::Secret`]), so the raw bytes are not held and the state is wiped on drop.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use std::fmt;
use subtle::ConstantTimeEq;

use crate::time::UnixSeconds;

/// The length of one time step, in seconds.
pub const STEP: i64 = 30;
/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Steps accepted on either side of the current one, for clocks that disagree (RFC 6238 §5.2
/// recommends at most one step of network delay; one more the other way covers a slow clock).
pub const SKEW_STEPS: i64 = 1;

/// A TOTP seed, ready to compute codes. Never printed.
#[derive(Clone)]
pub struct TotpSeed {
    mac: Hmac<Sha1>,
}

impl fmt::Debug for TotpSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSeed(<redacted>)")
    }
}

/// Why a seed could not be read. Never quotes the seed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedError {
    #[error("the TOTP seed is empty")]
    Empty,
    #[error("the TOTP seed is not base32 (RFC 4648: letters A-Z and digits 2-7)")]
    NotBase32,
    #[error("the TOTP seed is shorter than 80 bits (16 base32 characters)")]
    TooShort,
}

impl TotpSeed {
    /// A seed from its raw bytes.
    pub fn from_bytes(seed: &[u8]) -> Self {
        TotpSeed {
            // HMAC accepts keys of any length, so this cannot fail.
            mac: Hmac::<Sha1>::new_from_slice(seed)
                .unwrap_or_else(|_| unreachable!("HMAC takes any key length")),
        }
    }

    /// A seed as authenticator apps show it: base32 (RFC 4648), case-insensitive, `=` padding
    /// optional, spaces and dashes (which apps insert for readability) ignored. At least 80 bits
    /// (RFC 4226 §4 asks for 128, 160 recommended; many issuers use 80).
    pub fn from_base32(text: &str) -> Result<Self, SeedError> {
        let bytes = base32_decode(text)?;
        if bytes.is_empty() {
            return Err(SeedError::Empty);
        }
        if bytes.len() < 10 {
            return Err(SeedError::TooShort);
        }
        Ok(Self::from_bytes(&bytes))
    }

    /// The HOTP value of `counter` with `digits` digits (RFC 4226 §5.3).
    pub fn hotp(&self, counter: u64, digits: u32) -> u32 {
        let mut mac = self.mac.clone();
        mac.update(&counter.to_be_bytes());
        let h = mac.finalize().into_bytes();
        let offset = usize::from(h[19] & 0x0f);
        let bin = u32::from_be_bytes([
            h[offset] & 0x7f,
            h[offset + 1],
            h[offset + 2],
            h[offset + 3],
        ]);
        bin % 10u32.pow(digits)
    }

    /// The code of the step holding `now`, zero-padded to `digits`.
    pub fn code_at(&self, now: UnixSeconds, digits: u32) -> String {
        format!(
            "{:0width$}",
            self.hotp(step_of(now).max(0) as u64, digits),
            width = digits as usize
        )
    }

    /// The step whose code `code` is, among the current step and [`SKEW_STEPS`] on either side;
    /// `None` if none. Every candidate is computed and compared in constant time, so the timing
    /// says nothing about which step (if any) matched or how many digits were right.
    pub fn verify(&self, code: &str, now: UnixSeconds, digits: u32) -> Option<i64> {
        if code.len() != digits as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let current = step_of(now);
        let mut found: Option<i64> = None;
        for step in current - SKEW_STEPS..=current + SKEW_STEPS {
            if step < 0 {
                continue;
            }
            let want = format!(
                "{:0width$}",
                self.hotp(step as u64, digits),
                width = digits as usize
            );
            let equal: bool = want.as_bytes().ct_eq(code.as_bytes()).into();
            // The latest matching step wins (two steps sharing a code is a 1-in-a-million event).
            if equal {
                found = Some(step);
            }
        }
        found
    }
}

/// The time step holding `now`.
pub fn step_of(now: UnixSeconds) -> i64 {
    now.div_euclid(STEP)
}

/// The first second at which `step`'s code is no longer accepted by [`TotpSeed::verify`].
pub fn accepted_until(step: i64) -> UnixSeconds {
    (step + SKEW_STEPS + 1) * STEP
}

/// RFC 4648 base32, case-insensitive, padding optional, spaces and dashes ignored. Trailing
/// bits that do not fill a byte are dropped, as decoders of authenticator seeds do.
fn base32_decode(text: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, SeedError> {
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(text.len() * 5 / 8));
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    let mut padding = false;
    for b in text.bytes() {
        let v = match b {
            b' ' | b'\t' | b'-' | b'\n' | b'\r' => continue,
            b'=' => {
                padding = true;
                continue;
            }
            _ if padding => return Err(SeedError::NotBase32),
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a',
            b'2'..=b'7' => b - b'2' + 26,
            _ => return Err(SeedError::NotBase32),
        };
        acc = (acc << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // The accumulator holds the seed's last bits.
    zeroize::Zeroize::zeroize(&mut acc);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B: the SHA-1 seed is the ASCII "12345678901234567890", 8 digits.
    #[test]
    fn rfc6238_appendix_b_sha1_vectors() {
        let seed = TotpSeed::from_bytes(b"12345678901234567890");
        for (t, code) in [
            (59, "94287082"),
            (1111111109, "07081804"),
            (1111111111, "14050471"),
            (1234567890, "89005924"),
            (2000000000, "69279037"),
            (20000000000, "65353130"),
        ] {
            assert_eq!(seed.code_at(t, 8), code, "T = {t}");
            assert_eq!(seed.verify(code, t, 8), Some(step_of(t)), "T = {t}");
        }
    }

    /// RFC 4226 Appendix D: HOTP of counters 0..9, 6 digits.
    #[test]
    fn rfc4226_appendix_d_hotp_vectors() {
        let seed = TotpSeed::from_bytes(b"12345678901234567890");
        let want = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (counter, code) in want.iter().enumerate() {
            assert_eq!(seed.hotp(counter as u64, 6), *code, "counter {counter}");
        }
    }

    #[test]
    fn one_step_of_skew_either_way_and_no_more() {
        let seed = TotpSeed::from_bytes(b"12345678901234567890");
        let t = 1_700_000_000;
        let code = seed.code_at(t, 6);
        let step = step_of(t);
        assert_eq!(seed.verify(&code, t, 6), Some(step));
        assert_eq!(seed.verify(&code, t + STEP, 6), Some(step));
        assert_eq!(seed.verify(&code, t - STEP, 6), Some(step));
        assert_eq!(seed.verify(&code, t + 2 * STEP, 6), None);
        assert_eq!(seed.verify(&code, t - 2 * STEP, 6), None);
        // Accepted up to, not at, accepted_until.
        assert_eq!(seed.verify(&code, accepted_until(step) - 1, 6), Some(step));
        assert_eq!(seed.verify(&code, accepted_until(step), 6), None);
    }

    #[test]
    fn malformed_codes_are_refused() {
        let seed = TotpSeed::from_bytes(b"12345678901234567890");
        let t = 1_700_000_000;
        let code = seed.code_at(t, 6);
        for bad in ["", "12345", "1234567", "12345a", " 123456", "１２３４５６"] {
            assert_eq!(seed.verify(bad, t, 6), None, "{bad:?}");
        }
        let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
        assert_eq!(seed.verify(&wrong, t, 6), None);
    }

    #[test]
    fn base32_seeds_as_apps_show_them() {
        // "12345678901234567890" in base32.
        let canonical = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        let t = 59;
        let want = TotpSeed::from_bytes(b"12345678901234567890").code_at(t, 6);
        for text in [
            canonical,
            "gezdgnbvgy3tqojqgezdgnbvgy3tqojq",
            "GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ",
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n",
        ] {
            assert_eq!(
                TotpSeed::from_base32(text).unwrap().code_at(t, 6),
                want,
                "{text:?}"
            );
        }
        // Padding optional: "1234567890" (10 bytes) is 16 characters, no padding needed; 11
        // bytes need 18 characters and 6 of padding.
        let eleven = TotpSeed::from_bytes(b"12345678901").code_at(t, 6);
        for text in ["GEZDGNBVGY3TQOJQGE", "GEZDGNBVGY3TQOJQGE======"] {
            assert_eq!(TotpSeed::from_base32(text).unwrap().code_at(t, 6), eleven);
        }
        assert_eq!(
            TotpSeed::from_base32("GEZDGNBVGY3TQOJ1").unwrap_err(),
            SeedError::NotBase32
        );
        assert_eq!(
            TotpSeed::from_base32("GEZD==GN").unwrap_err(),
            SeedError::NotBase32
        );
        assert_eq!(TotpSeed::from_base32("  ").unwrap_err(), SeedError::Empty);
        assert_eq!(
            TotpSeed::from_base32("GEZDGNBV").unwrap_err(),
            SeedError::TooShort
        );
        assert_eq!(
            format!("{:?}", TotpSeed::from_base32(canonical).unwrap()),
            "TotpSeed(<redacted>)"
        );
    }
}
