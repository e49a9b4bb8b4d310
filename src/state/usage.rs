//! Each key's last use and request count, updated on every allowed request.
//!
//! Kept beside the snapshot (a reload must not forget it) and updated without allocating in the
//! common case: the same key calling the same action from the same source rewrites numbers only.

use dashmap::DashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};

use super::Use;
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

pub struct UsageTable {
    keys: DashMap<Box<str>, Usage>,
    since: AtomicI64,
}

impl UsageTable {
    pub fn new(since: UnixSeconds) -> Self {
        UsageTable {
            keys: DashMap::new(),
            since: AtomicI64::new(since),
        }
    }

    pub fn record(&self, u: &Use<'_>) {
        let update = |e: &mut Usage| {
            e.last_used = e.last_used.max(u.at);
            e.source = u.source;
            if e.service != u.service {
                u.service.clone_into(&mut e.service);
            }
            if e.action != u.action {
                u.action.clone_into(&mut e.action);
            }
            e.requests += 1;
        };
        if let Some(mut e) = self.keys.get_mut(u.key_id) {
            update(&mut e);
            return;
        }
        update(&mut self.keys.entry(u.key_id.into()).or_default());
    }

    pub fn last_used(&self, key_id: &str) -> Option<UnixSeconds> {
        self.keys.get(key_id).map(|e| e.last_used)
    }

    pub fn get(&self, key_id: &str) -> Option<Usage> {
        self.keys.get(key_id).map(|e| e.clone())
    }

    pub fn since(&self) -> UnixSeconds {
        self.since.load(Ordering::Relaxed)
    }
}
