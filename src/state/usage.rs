//! Each key's last use and request count, updated on every allowed request.
//!
//! Kept beside the snapshot (a reload must not forget it) and updated without allocating in the
//! common case: the same key calling the same action from the same source rewrites numbers only.
//! Everything that is slow (writing a file, telling a fleet) reads the table from a background
//! task: [`UsageTable::changed_since_last_look`] tells a persister whether to write at all, and
//! [`UsageTable::take_dirty`] hands a fleet flusher each key's requests since its last call.

use dashmap::DashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use super::Use;
use crate::inline_str::InlineStr;
use crate::rules::IdHash;
use crate::time::UnixSeconds;

/// What is known of one key's use. Never holds a secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub last_used: UnixSeconds,
    pub source: Option<IpAddr>,
    pub service: String,
    pub action: String,
    pub requests: u64,
}

/// One key's use that a fleet flusher has not taken yet (see [`UsageTable::take_dirty`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyUsage {
    pub key_id: String,
    /// The key's usage as this process knows it now (`requests` is the total, deltas included).
    pub usage: Usage,
    /// Requests recorded here since the previous [`UsageTable::take_dirty`].
    pub delta: u64,
}

/// A key's [`Usage`] as the table holds it: its strings in place (see [`InlineStr`]), so that
/// recording a request reads and writes the entry alone.
#[derive(Debug, Default)]
struct Entry {
    last_used: UnixSeconds,
    source: Option<IpAddr>,
    service: InlineStr,
    action: InlineStr,
    requests: u64,
    /// Requests not yet taken by [`UsageTable::take_dirty`].
    pending: u64,
}

impl Entry {
    fn restored(u: &Usage) -> Self {
        Entry {
            last_used: u.last_used,
            source: u.source,
            service: InlineStr::new(&u.service),
            action: InlineStr::new(&u.action),
            requests: u.requests,
            pending: 0,
        }
    }

    fn usage(&self) -> Usage {
        Usage {
            last_used: self.last_used,
            source: self.source,
            service: self.service.to_string(),
            action: self.action.to_string(),
            requests: self.requests,
        }
    }
}

pub struct UsageTable {
    /// Hashed like the rules' key table ([`IdHash`]): every request records its key here, and
    /// only ids that passed verification (or a store we trust) are ever added.
    keys: DashMap<InlineStr, Entry, IdHash>,
    since: AtomicI64,
    /// Something changed since the persister last looked.
    changed: AtomicBool,
    /// Some entry has `pending > 0`: lets an idle fleet flusher skip the scan.
    undrained: AtomicBool,
    /// The `--state DIR` lock, held as long as the table lives (see `persist::open`).
    _lock: Option<std::fs::File>,
}

impl std::fmt::Debug for UsageTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageTable")
            .field("keys", &self.keys.len())
            .field("since", &self.since())
            .finish_non_exhaustive()
    }
}

/// Sets `flag` without writing its cache line when it is already set: on the request path most
/// calls find it set, and a read keeps the line shared between cores.
fn raise(flag: &AtomicBool) {
    if !flag.load(Ordering::Relaxed) {
        flag.store(true, Ordering::Relaxed);
    }
}

impl UsageTable {
    /// An empty table; use is known from `since` on.
    pub fn new(since: UnixSeconds) -> Self {
        UsageTable {
            keys: DashMap::with_hasher(IdHash::default()),
            since: AtomicI64::new(since),
            changed: AtomicBool::new(false),
            undrained: AtomicBool::new(false),
            _lock: None,
        }
    }

    /// A table restored from storage. Restored entries are not dirty: they are already stored.
    pub fn restore(
        since: UnixSeconds,
        entries: impl IntoIterator<Item = (String, Usage)>,
        lock: Option<std::fs::File>,
    ) -> Self {
        let mut t = UsageTable::new(since);
        t._lock = lock;
        for (id, usage) in entries {
            t.keys.insert(InlineStr::new(&id), Entry::restored(&usage));
        }
        t
    }

    /// Adopts the start of tracking of a shared store (fleet mode).
    pub fn set_since(&self, since: UnixSeconds) {
        self.since.store(since, Ordering::Relaxed);
    }

    pub fn record(&self, u: &Use<'_>) {
        let update = |e: &mut Entry| {
            // A request decided a moment earlier may be recorded after a later one: last_used
            // keeps the later time, and the details go with it.
            if u.at >= e.last_used {
                e.last_used = u.at;
                e.source = u.source;
                e.service.set(u.service);
                e.action.set(u.action);
            }
            e.requests += 1;
            e.pending += 1;
        };
        if let Some(mut e) = self.keys.get_mut(u.key_id.as_bytes()) {
            update(&mut e);
        } else {
            update(&mut self.keys.entry(u.key_id.into()).or_default());
        }
        raise(&self.changed);
        raise(&self.undrained);
    }

    pub fn last_used(&self, key_id: &str) -> Option<UnixSeconds> {
        self.keys.get(key_id.as_bytes()).map(|e| e.last_used)
    }

    pub fn get(&self, key_id: &str) -> Option<Usage> {
        self.keys.get(key_id.as_bytes()).map(|e| e.usage())
    }

    /// Since when use is known: idle time is never counted from before it.
    pub fn since(&self) -> UnixSeconds {
        self.since.load(Ordering::Relaxed)
    }

    /// Every key's usage, sorted by key id.
    pub fn all(&self) -> Vec<(String, Usage)> {
        let mut out: Vec<(String, Usage)> = self
            .keys
            .iter()
            .map(|e| (e.key().to_string(), e.value().usage()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether anything changed since the previous call (for a persister that writes only when
    /// there is something new). A change racing with this call is reported by the next one.
    pub fn changed_since_last_look(&self) -> bool {
        self.changed.swap(false, Ordering::AcqRel)
    }

    /// Marks the table changed again, e.g. after a write that failed.
    pub fn mark_changed(&self) {
        self.changed.store(true, Ordering::Release);
    }

    /// The keys used since the previous call, each with its requests since then; their deltas
    /// are reset. For a fleet flusher, which adds the deltas to the shared totals and then hands
    /// the totals back through [`UsageTable::apply_remote`].
    pub fn take_dirty(&self) -> Vec<DirtyUsage> {
        if !self.undrained.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for mut e in self.keys.iter_mut() {
            if e.pending == 0 {
                continue;
            }
            let delta = std::mem::take(&mut e.pending);
            out.push(DirtyUsage {
                key_id: e.key().to_string(),
                usage: e.usage(),
                delta,
            });
        }
        out
    }

    /// Merges what the fleet knows of `key_id`: the later `last_used` wins (with its source,
    /// service and action), and the request count becomes the fleet's total plus what this
    /// process recorded since its last [`UsageTable::take_dirty`] (not yet in that total).
    pub fn apply_remote(&self, key_id: &str, remote: Usage) {
        let mut e = self.keys.entry(key_id.into()).or_default();
        if remote.last_used > e.last_used {
            e.last_used = remote.last_used;
            e.source = remote.source;
            e.service.set(&remote.service);
            e.action.set(&remote.action);
        }
        e.requests = remote.requests.saturating_add(e.pending);
        drop(e);
        raise(&self.changed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn use_at<'a>(key_id: &'a str, at: UnixSeconds, action: &'a str) -> Use<'a> {
        Use {
            key_id,
            at,
            source: Some("192.0.2.1".parse().unwrap()),
            service: "ecs",
            action,
        }
    }

    #[test]
    fn records_last_use_and_counts() {
        let t = UsageTable::new(100);
        t.record(&use_at("AK1", 200, "DescribeRegions"));
        t.record(&use_at("AK1", 150, "RunInstances"));
        let u = t.get("AK1").unwrap();
        assert_eq!(u.last_used, 200);
        assert_eq!(u.action, "DescribeRegions", "the earlier use does not win");
        assert_eq!(u.requests, 2);
        assert_eq!(t.last_used("AK2"), None);
        assert_eq!(t.since(), 100);
    }

    #[test]
    fn take_dirty_hands_each_delta_once() {
        let t = UsageTable::new(0);
        assert!(t.take_dirty().is_empty());
        t.record(&use_at("AK1", 10, "A"));
        t.record(&use_at("AK1", 11, "A"));
        t.record(&use_at("AK2", 12, "B"));
        let mut d = t.take_dirty();
        d.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        assert_eq!(
            d.iter()
                .map(|d| (d.key_id.as_str(), d.delta))
                .collect::<Vec<_>>(),
            [("AK1", 2), ("AK2", 1)]
        );
        assert!(t.take_dirty().is_empty());
        t.record(&use_at("AK2", 13, "B"));
        let d = t.take_dirty();
        assert_eq!((d.len(), d[0].delta, d[0].usage.requests), (1, 1, 2));
    }

    #[test]
    fn apply_remote_merges_fleet_totals() {
        let t = UsageTable::new(0);
        t.record(&use_at("AK1", 100, "Local"));
        let taken = t.take_dirty();
        assert_eq!(taken[0].delta, 1);
        // Recorded after the flusher took the delta: not yet in the fleet's total.
        t.record(&use_at("AK1", 101, "Local"));
        let remote = Usage {
            last_used: 500,
            source: Some("198.51.100.7".parse().unwrap()),
            service: "ram".into(),
            action: "Remote".into(),
            requests: 40,
        };
        t.apply_remote("AK1", remote.clone());
        let u = t.get("AK1").unwrap();
        assert_eq!(
            (u.last_used, u.action.as_str(), u.requests),
            (500, "Remote", 41)
        );
        // An older remote use does not replace a newer local one.
        t.record(&use_at("AK1", 900, "Newer"));
        t.apply_remote("AK1", remote);
        let u = t.get("AK1").unwrap();
        assert_eq!(
            (u.last_used, u.action.as_str(), u.requests),
            (900, "Newer", 42)
        );
        // A key only the fleet has seen.
        t.apply_remote(
            "AK9",
            Usage {
                last_used: 7,
                requests: 3,
                ..Usage::default()
            },
        );
        assert_eq!(t.get("AK9").unwrap().requests, 3);
        assert!(
            t.take_dirty().iter().all(|d| d.key_id == "AK1"),
            "remote totals are not deltas"
        );
    }

    #[test]
    fn change_flag_for_the_persister() {
        let t = UsageTable::restore(5, [("AK1".to_string(), Usage::default())], None);
        assert!(
            !t.changed_since_last_look(),
            "restored entries are stored already"
        );
        t.record(&use_at("AK1", 10, "A"));
        assert!(t.changed_since_last_look());
        assert!(!t.changed_since_last_look());
        t.mark_changed();
        assert!(t.changed_since_last_look());
        assert_eq!(t.all().len(), 1);
    }
}
