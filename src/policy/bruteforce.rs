//! The brute-force guard: a source that keeps failing signatures is refused for a while.
//!
//! Failures are counted per source in a fixed one-minute window that starts at the source's
//! first failure. Once a source has failed `auth_failure_limit` times within its window, every
//! further request from it — good signatures included — is refused with `SourceThrottled`
//! (`Throttling.AuthFailure`, 429) until `auth_failure_cooldown` has passed; then its count
//! starts again from zero. With a limit of 3, the fourth attempt is the first one refused.
//!
//! What counts as a failure ([`counts_as_auth_failure`]) is what guessing produces: a wrong
//! signature, a malformed one, an unknown AccessKey id, a body that does not match its signed
//! hash, a security token that is not the key's. Mistakes a legitimate client makes without
//! guessing anything (no signature at all, a skewed clock, a disabled key, an expired token, a
//! reused nonce, an allowlist refusal) do not count.
//!
//! A source is an IPv4 address, or an IPv6 /64 (one host usually owns a whole /64, so counting
//! single IPv6 addresses would let it rotate freely). An unknown source (a trusted proxy that
//! forwarded garbage) is not tracked.
//!
//! The table is sharded (`DashMap`) and bounded: stale entries are evicted by the server's
//! maintenance tick, and when [`MAX_SOURCES`] sources are tracked, failures from new sources are
//! counted in metrics only. Entries already blocked are never evicted early.

use dashmap::DashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::error::Rejection;

/// The counting window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most sources tracked at once.
pub const MAX_SOURCES: usize = 100_000;

/// The refusals that count as a failed authentication attempt.
pub fn counts_as_auth_failure(r: &Rejection) -> bool {
    matches!(
        r,
        Rejection::SignatureDoesNotMatch { .. }
            | Rejection::IncompleteSignature(_)
            | Rejection::KeyNotFound
            | Rejection::ContentHashMismatch
            | Rejection::ContentMd5Mismatch
            | Rejection::SecurityTokenMismatch
    )
}

/// The codes of [`counts_as_auth_failure`], for documentation and tests.
pub const COUNTED_CODES: [&str; 6] = [
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "InvalidAccessKeyId.NotFound",
    "InvalidContentSha256",
    "InvalidContentMD5",
    "InvalidSecurityToken.MismatchWithAccessKey",
];

/// A source as the guard counts it: IPv4 address or IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKey {
    V4(u32),
    /// The upper 64 bits.
    V6(u64),
}

impl SourceKey {
    pub fn of(ip: IpAddr) -> SourceKey {
        match crate::policy::allowlist::canonical_ip(ip) {
            IpAddr::V4(v4) => SourceKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => SourceKey::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
}

/// Failure counts and blocks, shared by all connections; outlives rule reloads.
#[derive(Debug, Default)]
pub struct AuthFailureGuard {
    sources: DashMap<SourceKey, Entry>,
}

impl AuthFailureGuard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `ip` is serving a cool-down at `now`.
    pub fn is_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.sources
            .get(&SourceKey::of(ip))
            .and_then(|e| e.blocked_until)
            .is_some_and(|until| now < until)
    }

    /// Records one failure from `ip`; returns true when this failure starts a cool-down.
    pub fn record_failure(&self, ip: IpAddr, limit: u32, cooldown: Duration, now: Instant) -> bool {
        if limit == 0 {
            return false;
        }
        let key = SourceKey::of(ip);
        if !self.sources.contains_key(&key) && self.sources.len() >= MAX_SOURCES {
            self.evict(now);
            if self.sources.len() >= MAX_SOURCES {
                return false;
            }
        }
        let mut e = self.sources.entry(key).or_insert(Entry {
            window_start: now,
            failures: 0,
            blocked_until: None,
        });
        if let Some(until) = e.blocked_until {
            if now < until {
                // Already refused; a failure during the cool-down does not extend it.
                return false;
            }
            e.blocked_until = None;
            e.failures = 0;
            e.window_start = now;
        }
        if now.duration_since(e.window_start) >= WINDOW {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures >= limit {
            e.blocked_until = Some(now + cooldown);
            return true;
        }
        false
    }

    /// Drops entries whose window and cool-down are over; returns how many sources are
    /// currently blocked.
    pub fn evict(&self, now: Instant) -> usize {
        let mut blocked = 0;
        self.sources.retain(|_, e| match e.blocked_until {
            Some(until) if now < until => {
                blocked += 1;
                true
            }
            Some(_) => false,
            None => now.duration_since(e.window_start) < WINDOW,
        });
        blocked
    }

    pub fn tracked(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_after_limit_failures_until_cooldown() {
        let g = AuthFailureGuard::new();
        let t0 = Instant::now();
        let cool = Duration::from_secs(2);
        let bad = ip("127.0.0.2");
        assert!(!g.record_failure(bad, 3, cool, t0));
        assert!(!g.record_failure(bad, 3, cool, t0));
        assert!(!g.is_blocked(bad, t0));
        assert!(g.record_failure(bad, 3, cool, t0));
        assert!(g.is_blocked(bad, t0));
        assert!(!g.is_blocked(ip("127.0.0.1"), t0));
        // Failures during the cool-down do not extend it.
        assert!(!g.record_failure(bad, 3, cool, t0 + Duration::from_secs(1)));
        assert!(!g.is_blocked(bad, t0 + cool));
        // Counting starts again.
        assert!(!g.record_failure(bad, 3, cool, t0 + cool));
        assert!(!g.is_blocked(bad, t0 + cool));
    }

    #[test]
    fn window_resets_and_off_is_off() {
        let g = AuthFailureGuard::new();
        let t0 = Instant::now();
        let cool = Duration::from_secs(60);
        let a = ip("198.51.100.1");
        g.record_failure(a, 2, cool, t0);
        assert!(!g.record_failure(a, 2, cool, t0 + WINDOW));
        assert!(g.record_failure(a, 2, cool, t0 + WINDOW));
        for _ in 0..100 {
            assert!(!g.record_failure(ip("198.51.100.2"), 0, cool, t0));
        }
        assert!(!g.is_blocked(ip("198.51.100.2"), t0));
    }

    #[test]
    fn ipv6_counts_per_64_and_eviction() {
        let g = AuthFailureGuard::new();
        let t0 = Instant::now();
        let cool = Duration::from_secs(10);
        assert!(!g.record_failure(ip("2001:db8::1"), 2, cool, t0));
        assert!(g.record_failure(ip("2001:db8::2"), 2, cool, t0));
        assert!(g.is_blocked(ip("2001:db8::ffff"), t0));
        assert!(!g.is_blocked(ip("2001:db8:0:1::1"), t0));
        g.record_failure(ip("192.0.2.1"), 5, cool, t0);
        assert_eq!(g.tracked(), 2);
        assert_eq!(g.evict(t0 + Duration::from_secs(5)), 1);
        assert_eq!(g.tracked(), 2);
        assert_eq!(g.evict(t0 + WINDOW), 0);
        assert_eq!(g.tracked(), 0);
    }

    #[test]
    fn counted_codes_match() {
        let counted = [
            Rejection::SignatureDoesNotMatch {
                string_to_sign: String::new(),
            },
            Rejection::IncompleteSignature("x".into()),
            Rejection::KeyNotFound,
            Rejection::ContentHashMismatch,
            Rejection::ContentMd5Mismatch,
            Rejection::SecurityTokenMismatch,
        ];
        for (r, code) in counted.iter().zip(COUNTED_CODES) {
            assert!(counts_as_auth_failure(r));
            assert_eq!(r.code(), code);
        }
        for r in [
            Rejection::MissingAccessKeyId,
            Rejection::TimestampExpired,
            Rejection::KeyDisabled,
            Rejection::NonceUsed,
            Rejection::SecurityTokenExpired,
        ] {
            assert!(!counts_as_auth_failure(&r));
        }
    }
}
