//! Replay protection: a signature nonce may be used once per AccessKey within its lifetime.
//!
//! Entries are 96 bits of a keyed hash of (key id, nonce) and an expiry, 16 bytes, so recording a
//! nonce allocates nothing (but a table's growth now and then) and an attacker who does not know
//! the per-process hash keys cannot aim collisions. A collision would at worst refuse one honest
//! request; it can never admit a replay. The cache lives
//! outside the rule snapshot so a reload does not forget which nonces were seen.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::time::UnixSeconds;

pub struct NonceCache {
    /// A fingerprint's top bits pick its shard. Sharded finely (see [`shards_for`]) so the
    /// eviction sweep and a shard's growth, which hold one shard's lock, hold it briefly.
    shards: Box<[Shard]>,
    /// `64 - log2(shards)`: the shift that leaves a fingerprint's shard bits.
    shard_shift: u32,
    /// Unexpired entries, plus those expired since the last sweep.
    entries: AtomicUsize,
    /// Past this many unexpired entries a fresh nonce is refused (fail closed) rather than
    /// recorded: forgetting a nonce to make room would let its replay through.
    max_entries: usize,
    k1: RandomState,
    k2: RandomState,
}

/// The default bound: 20 to 40 bytes an entry as a shard's table fills up and doubles, so at most
/// some 320 MB. Size it as requests per second × the nonce lifetime (up to twice `clock_skew`).
pub const DEFAULT_MAX_NONCES: usize = 8_000_000;

/// Entries per shard at the cache's bound. The sweep locks one shard at a time, so a request
/// landing on the shard being swept waits for at most one shard's sweep: at a million live nonces
/// that is some 4k entries, tens of microseconds.
const ENTRIES_PER_SHARD: usize = 32 * 1024;

/// Shards for a cache bounded at `max_entries`: a power of two, from 4 to 256 (256 for
/// [`DEFAULT_MAX_NONCES`]). Not more: each shard is a cache line of its own and a table that
/// grows separately, and a gateway warms every one of them up before its nonces stop allocating.
fn shards_for(max_entries: usize) -> usize {
    (max_entries / ENTRIES_PER_SHARD)
        .clamp(4, 256)
        .next_power_of_two()
}

/// One recorded nonce: 96 bits of its fingerprint and when it expires, 16 bytes. A slot's
/// `expires` also says what the slot is: [`EMPTY`] (never used; it ends a probe), [`SWEPT`]
/// (expired and already uncounted by a sweep), or a time (an entry, alive until then).
#[derive(Clone, Copy, Default)]
struct Slot {
    hi: u64,
    lo: u32,
    expires: u32,
}

const EMPTY: u32 = 0;
const SWEPT: u32 = 1;

impl Slot {
    /// Times are kept as `u32` seconds (good until 2106); the clamp keeps real entries off the
    /// two marker values.
    fn stored(expires: UnixSeconds) -> u32 {
        expires.clamp(2, i64::from(u32::MAX)) as u32
    }
    fn alive(&self, now: UnixSeconds) -> bool {
        i64::from(self.expires) > now
    }
}

/// Four slots, one cache line: a lookup usually reads one line, where a map with a separate
/// control array reads two. A bucket with a never-used slot ends every probe that reaches it: an
/// entry is only ever placed past its home bucket when every bucket in between is full, and slots
/// are only emptied by rebuilding the table.
#[derive(Clone, Copy, Default)]
#[repr(align(64))]
struct Bucket([Slot; 4]);

/// Its own cache line, so two workers on neighbouring shards do not share one.
#[repr(align(64))]
struct Shard(Mutex<Table>);

impl Shard {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // Nothing under the lock panics: every index is masked to the table's length, and an
        // allocation failure aborts. Poisoning therefore cannot happen; recovering keeps the
        // type honest without an unwrap.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Open addressing over buckets with linear probing. Slots are never emptied one at a time (that
/// would cut the probe chains running through them): an expired entry stays in place, is reused
/// by the next insert whose probe passes it, and is dropped when the table is rebuilt.
struct Table {
    buckets: Vec<Bucket>,
    /// Slots that are not [`EMPTY`]: what fills the table up.
    used: usize,
    /// Of those, the [`SWEPT`] ones: what a rebuild would win back.
    swept: usize,
}

const MIN_BUCKETS: usize = 4;

/// What the cache's count of entries has to do after a slot was written.
enum Counted {
    /// Refused: the slot would be one entry more and the cache is at its bound.
    Full,
    /// The slot held an entry that was still counted (the same nonce's, or one expired since the
    /// last sweep).
    Same,
    /// One entry more.
    More,
}

impl Table {
    fn new() -> Self {
        Table {
            buckets: vec![Bucket::default(); MIN_BUCKETS],
            used: 0,
            swept: 0,
        }
    }

    fn home(&self, hi: u64) -> usize {
        // The low bits; the shard took the top ones.
        (hi as usize) & (self.buckets.len() - 1)
    }

    /// Records the entry `(hi, lo)` until `expires` unless it is already there and alive.
    /// `room` says whether one more entry fits under the cache's bound.
    fn check_and_record(
        &mut self,
        hi: u64,
        lo: u32,
        now: UnixSeconds,
        expires: UnixSeconds,
        room: bool,
    ) -> Option<Counted> {
        let mask = self.buckets.len() - 1;
        let mut b = self.home(hi);
        // The first expired slot on the probe: where the entry goes if it is not found.
        let mut reuse = None;
        loop {
            let mut empty = None;
            for (i, s) in self.buckets[b].0.iter().enumerate() {
                if s.expires == EMPTY {
                    empty = empty.or(Some(i));
                } else if s.hi == hi && s.lo == lo {
                    if s.alive(now) {
                        return None;
                    }
                    return Some(self.put(b, i, hi, lo, expires, room));
                } else if reuse.is_none() && !s.alive(now) {
                    reuse = Some((b, i));
                }
            }
            if let Some(i) = empty {
                let (b, i) = reuse.unwrap_or((b, i));
                return Some(self.put(b, i, hi, lo, expires, room));
            }
            b = (b + 1) & mask;
        }
    }

    /// Writes an entry into slot `i` of bucket `b`, which is empty or holds an expired entry, and
    /// keeps the counts.
    fn put(
        &mut self,
        b: usize,
        i: usize,
        hi: u64,
        lo: u32,
        expires: UnixSeconds,
        room: bool,
    ) -> Counted {
        let slot = &mut self.buckets[b].0[i];
        let counted = match slot.expires {
            EMPTY | SWEPT if !room => return Counted::Full,
            EMPTY => {
                self.used += 1;
                Counted::More
            }
            SWEPT => {
                self.swept -= 1;
                Counted::More
            }
            // Expired since the last sweep: still counted, as this entry now is.
            _ => Counted::Same,
        };
        *slot = Slot {
            hi,
            lo,
            expires: Slot::stored(expires),
        };
        counted
    }

    /// Whether the table should be rebuilt before it takes more: more than 4/5 of its slots used.
    fn crowded(&self) -> bool {
        self.used * 5 > self.buckets.len() * 4 * 4
    }

    /// Rebuilds the table without its expired entries, at the smallest size where what is left
    /// fills at most half of it: doubled when it was crowded with live entries (so filled at 2/5
    /// again), smaller when most of it had expired. Returns how many counted entries were dropped
    /// (expired since the last sweep).
    fn rebuild(&mut self, now: UnixSeconds) -> usize {
        // At most this many are kept: the swept ones go, and maybe some expired since.
        let keep = self.used - self.swept;
        let mut len = MIN_BUCKETS;
        while keep * 2 > len * 4 {
            len *= 2;
        }
        let old = std::mem::replace(&mut self.buckets, vec![Bucket::default(); len]);
        let mask = len - 1;
        let mut dropped = 0;
        self.used = 0;
        for s in old.iter().flat_map(|b| b.0.iter()) {
            if s.expires == EMPTY || s.expires == SWEPT {
                continue;
            }
            if !s.alive(now) {
                dropped += 1;
                continue;
            }
            let mut b = self.home(s.hi);
            loop {
                if let Some(free) = self.buckets[b].0.iter_mut().find(|f| f.expires == EMPTY) {
                    *free = *s;
                    break;
                }
                b = (b + 1) & mask;
            }
            self.used += 1;
        }
        self.swept = 0;
        dropped
    }

    /// Marks the entries expired at `now` as swept and returns how many there were; rebuilds the
    /// table when swept slots make up a quarter of it, so probes stay short and memory follows
    /// the live entries down.
    fn sweep(&mut self, now: UnixSeconds) -> usize {
        let mut expired = 0;
        for s in self.buckets.iter_mut().flat_map(|b| b.0.iter_mut()) {
            if s.expires > SWEPT && !s.alive(now) {
                s.expires = SWEPT;
                expired += 1;
            }
        }
        self.swept += expired;
        if self.swept * 4 > self.used {
            // Nothing counted is left to drop (all that expired by `now` was just swept), but
            // the count stays right whatever the rebuild finds.
            expired += self.rebuild(now);
        }
        expired
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
        Self::with_shards(shards_for(max_entries), max_entries)
    }

    /// `shards`: a power of two, at least 4.
    fn with_shards(shards: usize, max_entries: usize) -> Self {
        NonceCache {
            shards: (0..shards)
                .map(|_| Shard(Mutex::new(Table::new())))
                .collect(),
            shard_shift: 64 - shards.trailing_zeros(),
            entries: AtomicUsize::new(0),
            max_entries,
            k1: RandomState::new(),
            k2: RandomState::new(),
        }
    }

    /// 96 bits of a keyed hash of (key id, nonce): 64 from one key, 32 from another.
    fn fingerprint(&self, key_id: &str, nonce: &str) -> (u64, u32) {
        let h = |k: &RandomState| {
            let mut h = k.build_hasher();
            h.write(key_id.as_bytes());
            // A separator that cannot occur in a key id keeps ("ab","c") and ("a","bc") apart.
            h.write_u8(0xff);
            h.write(nonce.as_bytes());
            h.finish()
        };
        (h(&self.k1), h(&self.k2) as u32)
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
        let (hi, lo) = self.fingerprint(key_id, nonce);
        // `shard_shift` is at most 62 (at least 4 shards), and the shifted value is below the
        // shard count.
        let mut table = self.shards[(hi >> self.shard_shift) as usize].lock();
        if table.crowded() {
            let dropped = table.rebuild(now);
            self.entries.fetch_sub(dropped, Ordering::Relaxed);
        }
        // Checked under the shard lock, so concurrent inserts can overshoot the bound by at most
        // one per shard.
        let room = self.entries.load(Ordering::Relaxed) < self.max_entries;
        match table.check_and_record(hi, lo, now, expires, room) {
            None => NonceOutcome::Replayed,
            Some(Counted::Full) => NonceOutcome::Full,
            Some(Counted::Same) => NonceOutcome::Fresh,
            Some(Counted::More) => {
                self.entries.fetch_add(1, Ordering::Relaxed);
                NonceOutcome::Fresh
            }
        }
    }

    /// Uncounts every entry that expired at or before `now`. Shard by shard: each shard is locked
    /// only while its own entries (1/256 of the cache by default) are swept, so requests are never
    /// held up by a sweep of the whole cache.
    pub fn evict_expired(&self, now: UnixSeconds) {
        for shard in self.shards.iter() {
            let expired = shard.lock().sweep(now);
            self.entries.fetch_sub(expired, Ordering::Relaxed);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the shards' tables.
    #[cfg(test)]
    fn table_bytes(&self) -> usize {
        let per_bucket = std::mem::size_of::<Bucket>();
        self.shards
            .iter()
            .map(|s| s.lock().buckets.len() * per_bucket)
            .sum()
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

    /// Replays the same random traffic (a small pool of nonces, so many repeat; time moving on;
    /// sweeps now and then) through a cache with four small shards, whose tables keep growing,
    /// reusing expired slots and being rebuilt, and through a plain map of what was recorded.
    #[test]
    fn a_cache_whose_tables_grow_and_rebuild_answers_as_a_plain_map() {
        let c = NonceCache::with_shards(4, usize::MAX);
        let mut model: std::collections::HashMap<(u64, u64), UnixSeconds> = Default::default();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut now: UnixSeconds = 1_000;
        let (mut fresh, mut replayed) = (0, 0);
        for step in 0..300_000 {
            now += (next() % 4 == 0) as i64;
            let (key, nonce) = (next() % 3, next() % 700);
            let expires = now + 1 + (next() % 400) as i64;
            let want = match model.get(&(key, nonce)) {
                Some(&e) if e > now => NonceOutcome::Replayed,
                _ => NonceOutcome::Fresh,
            };
            let got = c.check_and_record(&format!("k{key}"), &nonce.to_string(), now, expires);
            assert_eq!(got, want, "step {step}");
            if got == NonceOutcome::Fresh {
                model.insert((key, nonce), expires);
                fresh += 1;
            } else {
                replayed += 1;
            }
            if step % 300 == 0 {
                c.evict_expired(now);
                model.retain(|_, e| *e > now);
                assert_eq!(c.len(), model.len(), "step {step}");
            }
            // Between sweeps the count may lag: it holds every live entry and at most the
            // expired ones not swept yet.
            let live = model.values().filter(|e| **e > now).count();
            if step % 997 == 0 {
                assert!((live..=model.len()).contains(&c.len()), "step {step}");
            }
        }
        assert!(
            fresh > 50_000 && replayed > 50_000,
            "{fresh} fresh, {replayed} replayed"
        );
        // Everything expired: swept, the tables shrink back.
        c.evict_expired(now + 1_000);
        assert!(c.is_empty());
        assert_eq!(c.table_bytes(), 4 * MIN_BUCKETS * 64);
    }

    #[test]
    fn an_entry_takes_at_most_40_bytes() {
        let c = NonceCache::new();
        let mut peak = 0.0f64;
        for i in 0..200_000 {
            c.check_and_record("k", &i.to_string(), 0, 10);
            if i % 10_000 == 9_999 {
                peak = peak.max(c.table_bytes() as f64 / c.len() as f64);
            }
        }
        assert!(peak <= 40.0, "{peak} bytes an entry");
        assert!(std::mem::size_of::<Bucket>() == 64);
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
