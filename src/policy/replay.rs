//! Replay protection: a signature nonce may be used once per AccessKey within its lifetime.
//!
//! Entries are keyed by a 128-bit keyed hash of (key id, nonce), so recording a nonce allocates
//! nothing and an attacker who does not know the per-process hash keys cannot aim collisions. A
//! collision would at worst refuse one honest request; it can never admit a replay. The cache lives
//! outside the rule snapshot so a reload does not forget which nonces were seen.

use dashmap::DashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::time::UnixSeconds;

pub struct NonceCache {
    /// Fingerprint → expiry. Sharded finely (see [`shards_for`]) so the eviction sweep, which
    /// write-locks one shard at a time, holds each lock briefly.
    seen: DashMap<u128, UnixSeconds, BuildHasherDefault<FingerprintHasher>>,
    /// Entries, kept beside the map because `DashMap::len` locks every shard.
    entries: AtomicUsize,
    /// Past this many unexpired entries a fresh nonce is refused (fail closed) rather than
    /// recorded: forgetting a nonce to make room would let its replay through.
    max_entries: usize,
    k1: RandomState,
    k2: RandomState,
}

/// The default bound: about 40 bytes an entry, so at most a few hundred MB. Size it as
/// requests per second × the nonce lifetime (up to twice `clock_skew`).
pub const DEFAULT_MAX_NONCES: usize = 8_000_000;

/// Entries per shard at the cache's bound. The sweep write-locks one shard at a time, so a request
/// landing on the shard being swept waits for at most one shard's sweep: at a million live nonces
/// that is some 4k entries, tens of microseconds (with `DashMap`'s default of 4 × cores shards it
/// was an eighth of a million entries, milliseconds).
const ENTRIES_PER_SHARD: usize = 32 * 1024;

/// Shards for a cache bounded at `max_entries`: a power of two (as `DashMap` requires), from 4 to
/// 256 (256 for [`DEFAULT_MAX_NONCES`]). Not more: each shard is a cache-padded lock and a table
/// that grows separately, and a gateway warms every one of them up before its nonces stop
/// allocating.
fn shards_for(max_entries: usize) -> usize {
    (max_entries / ENTRIES_PER_SHARD)
        .clamp(4, 256)
        .next_power_of_two()
}

/// Hashes a fingerprint for the map by folding it: it is already the output of a keyed hash, so
/// hashing it again (the map's default, SipHash) would only cost time.
#[derive(Default, Clone, Copy)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is used by `u128`'s `Hash`; this fold keeps any other input usable.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 ^= (v as u64) ^ ((v >> 64) as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for NonceCache {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether a nonce was fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceOutcome {
    Fresh,
    Replayed,
    /// Not seen, but the cache is at its bound: the request cannot be protected, so it is refused.
    Full,
}

impl NonceCache {
    pub fn new() -> Self {
        Self::with_capacity_limit(DEFAULT_MAX_NONCES)
    }

    pub fn with_capacity_limit(max_entries: usize) -> Self {
        NonceCache {
            seen: DashMap::with_hasher_and_shard_amount(
                BuildHasherDefault::default(),
                shards_for(max_entries),
            ),
            entries: AtomicUsize::new(0),
            max_entries,
            k1: RandomState::new(),
            k2: RandomState::new(),
        }
    }

    fn fingerprint(&self, key_id: &str, nonce: &str) -> u128 {
        let h = |k: &RandomState| {
            let mut h = k.build_hasher();
            h.write(key_id.as_bytes());
            // A separator that cannot occur in a key id keeps ("ab","c") and ("a","bc") apart.
            h.write_u8(0xff);
            h.write(nonce.as_bytes());
            h.finish()
        };
        (u128::from(h(&self.k1)) << 64) | u128::from(h(&self.k2))
    }

    /// Records `nonce` for `key_id` until `expires`, unless it is already recorded and unexpired.
    /// Atomic per entry: of two concurrent requests with one nonce, exactly one is `Fresh`.
    pub fn check_and_record(
        &self,
        key_id: &str,
        nonce: &str,
        now: UnixSeconds,
        expires: UnixSeconds,
    ) -> NonceOutcome {
        use dashmap::mapref::entry::Entry;
        match self.seen.entry(self.fingerprint(key_id, nonce)) {
            Entry::Occupied(mut e) => {
                if *e.get() > now {
                    NonceOutcome::Replayed
                } else {
                    e.insert(expires);
                    NonceOutcome::Fresh
                }
            }
            Entry::Vacant(e) => {
                // Checked under the shard lock, so concurrent inserts can overshoot the bound by
                // at most one per shard.
                if self.entries.load(Ordering::Relaxed) >= self.max_entries {
                    return NonceOutcome::Full;
                }
                self.entries.fetch_add(1, Ordering::Relaxed);
                e.insert(expires);
                NonceOutcome::Fresh
            }
        }
    }

    /// Drops every entry that expired at or before `now`. Shard by shard: each shard is
    /// write-locked only while its own entries (1/256 of the cache by default) are swept, so
    /// requests are never held up by a sweep of the whole cache.
    pub fn evict_expired(&self, now: UnixSeconds) {
        self.seen.retain(|_, exp| {
            let keep = *exp > now;
            if !keep {
                self.entries.fetch_sub(1, Ordering::Relaxed);
            }
            keep
        });
    }

    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_within_lifetime_is_refused() {
        let c = NonceCache::new();
        assert_eq!(
            c.check_and_record("k1", "n1", 100, 1000),
            NonceOutcome::Fresh
        );
        assert_eq!(
            c.check_and_record("k1", "n1", 999, 1999),
            NonceOutcome::Replayed
        );
        // Per key: another key may use the same nonce.
        assert_eq!(
            c.check_and_record("k2", "n1", 100, 1000),
            NonceOutcome::Fresh
        );
        // Separator: ("k1n", "1") is not ("k1", "n1").
        assert_eq!(
            c.check_and_record("k1n", "1", 100, 1000),
            NonceOutcome::Fresh
        );
        // After expiry the nonce may be used again.
        assert_eq!(
            c.check_and_record("k1", "n1", 1000, 2000),
            NonceOutcome::Fresh
        );
    }

    #[test]
    fn eviction_bounds_memory() {
        let c = NonceCache::new();
        for i in 0..10_000 {
            c.check_and_record("k", &i.to_string(), 0, 10 + (i % 2));
        }
        assert_eq!(c.len(), 10_000);
        c.evict_expired(10);
        assert_eq!(c.len(), 5_000);
        c.evict_expired(11);
        assert!(c.is_empty());
    }

    #[test]
    fn a_finely_sharded_cache_forgets_only_what_expired() {
        let c = NonceCache::new();
        assert_eq!(shards_for(DEFAULT_MAX_NONCES), 256);
        assert_eq!(shards_for(100), 4);
        for i in 0..20_000 {
            c.check_and_record("k", &i.to_string(), 0, 10 + (i % 3));
        }
        c.evict_expired(11);
        assert_eq!(c.len(), (0..20_000).filter(|i| i % 3 == 2).count());
        for i in 0..20_000 {
            let want = if i % 3 == 2 {
                NonceOutcome::Replayed
            } else {
                NonceOutcome::Fresh
            };
            assert_eq!(c.check_and_record("k", &i.to_string(), 11, 20), want, "{i}");
        }
    }

    #[test]
    fn full_cache_refuses_fresh_nonces_until_entries_expire() {
        let c = NonceCache::with_capacity_limit(100);
        for i in 0..100 {
            assert_eq!(
                c.check_and_record("k", &i.to_string(), 0, 10),
                NonceOutcome::Fresh
            );
        }
        assert_eq!(c.check_and_record("k", "new", 5, 15), NonceOutcome::Full);
        // A replay is still recognised as one when the cache is full.
        assert_eq!(c.check_and_record("k", "7", 5, 15), NonceOutcome::Replayed);
        c.evict_expired(10);
        assert!(c.is_empty());
        assert_eq!(c.check_and_record("k", "new", 11, 20), NonceOutcome::Fresh);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn concurrent_duplicates_admit_exactly_one() {
        let c = std::sync::Arc::new(NonceCache::new());
        let fresh = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for n in 0..2000 {
                        if c.check_and_record("k", &n.to_string(), 0, 100) == NonceOutcome::Fresh {
                            fresh.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(fresh.into_inner(), 2000);
    }
}
