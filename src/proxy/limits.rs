//! Bounds on what the public listener takes on: open connections (in all and per source), requests
//! in flight with a short bounded queue, and bytes of request bodies held in memory. Past a bound
//! the caller gets a fast 503 in its SDK's error shape; memory never grows with the load.
//!
//! These are process settings (`serve` flags), not rules: they size the process, they do not say
//! who may call what, and a security team's rule edit should never be able to starve it.

use dashmap::DashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::error::Rejection;

#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served normally. Past it a connection is still accepted but every request on
    /// it gets 503 and it is closed (see [`Admission::Refuse`]).
    pub max_connections: usize,
    /// Connections per TCP peer address; 0 = no per-source cap. The peer, not `X-Forwarded-For`:
    /// behind a load balancer every connection comes from the balancer, so leave it off there.
    pub max_connections_per_ip: usize,
    /// Requests being decided or forwarded at once, HTTP/2 streams included.
    pub max_in_flight: usize,
    /// Requests allowed to wait for an in-flight slot; 0 = refuse at once when full.
    pub max_queued: usize,
    /// How long a queued request waits for a slot before 503.
    pub queue_timeout: Duration,
    /// Bytes of request bodies held in memory by all requests together.
    pub max_buffered_body_bytes: u64,
    /// Whole request head, and the idle time between keep-alive requests (HTTP/1).
    pub header_read_timeout: Duration,
    /// Whole request body, once the head is in.
    pub body_read_timeout: Duration,
    /// A write to the client that makes no progress for this long closes the connection.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_connections_per_ip: 0,
            max_in_flight: 2_048,
            max_queued: 1_024,
            queue_timeout: Duration::from_secs(1),
            max_buffered_body_bytes: 512 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// What to do with a freshly accepted connection.
pub enum Admission {
    /// Serve it.
    Serve(ConnGuard),
    /// Over a connection cap: answer its requests with 503 and close it. Costs a little memory for
    /// a short time, and tells a well-behaved client to back off instead of leaving it hanging.
    Refuse(ConnGuard),
    /// Even the refusals are over their own cap: close it without a word.
    Drop,
}

/// Counts open connections, in all and per peer address.
pub struct ConnTracker {
    open: AtomicUsize,
    refusing: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
    max: usize,
    per_ip_max: usize,
    refuse_max: usize,
}

impl ConnTracker {
    pub fn new(limits: &Limits) -> Arc<Self> {
        Arc::new(ConnTracker {
            open: AtomicUsize::new(0),
            refusing: AtomicUsize::new(0),
            per_ip: DashMap::new(),
            max: limits.max_connections,
            per_ip_max: limits.max_connections_per_ip,
            // Enough to answer a burst politely; small enough to be a rounding error in memory.
            refuse_max: (limits.max_connections / 8).clamp(64, 1024),
        })
    }

    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Admission {
        let per_ip_ok = self.per_ip_max == 0 || {
            let mut n = self.per_ip.entry(peer).or_insert(0);
            if *n < self.per_ip_max {
                *n += 1;
                true
            } else {
                false
            }
        };
        let total_ok = per_ip_ok
            && self
                .open
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < self.max).then_some(n + 1)
                })
                .is_ok();
        if total_ok {
            crate::metrics::connections_open(self.open.load(Ordering::Relaxed));
            return Admission::Serve(ConnGuard {
                tracker: self.clone(),
                ip: (self.per_ip_max > 0).then_some(peer),
                refusing: false,
            });
        }
        if per_ip_ok {
            // Counted per source above, but it will not be served: give the slot back.
            self.release_ip(peer);
        }
        let reason = if per_ip_ok { "total" } else { "per_ip" };
        crate::metrics::connection_refused(reason);
        let refusing = self
            .refusing
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.refuse_max).then_some(n + 1)
            })
            .is_ok();
        if refusing {
            Admission::Refuse(ConnGuard {
                tracker: self.clone(),
                ip: None,
                refusing: true,
            })
        } else {
            Admission::Drop
        }
    }

    fn release_ip(&self, ip: IpAddr) {
        if let dashmap::mapref::entry::Entry::Occupied(mut e) = self.per_ip.entry(ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// One admitted connection; gives its slots back when the connection ends.
pub struct ConnGuard {
    tracker: Arc<ConnTracker>,
    ip: Option<IpAddr>,
    refusing: bool,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.refusing {
            self.tracker.refusing.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let left = self.tracker.open.fetch_sub(1, Ordering::AcqRel) - 1;
        crate::metrics::connections_open(left);
        if let Some(ip) = self.ip {
            self.tracker.release_ip(ip);
        }
    }
}

/// Requests in flight, with a bounded wait.
pub struct RequestGate {
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    max_queued: usize,
    queue_timeout: Duration,
}

impl RequestGate {
    pub fn new(limits: &Limits) -> Self {
        RequestGate {
            slots: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            queued: AtomicUsize::new(0),
            max_queued: limits.max_queued,
            queue_timeout: limits.queue_timeout,
        }
    }

    /// A slot, at once if one is free, else after a bounded wait in a bounded queue.
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, Rejection> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => return Ok(permit),
            Err(TryAcquireError::Closed) => return Err(Rejection::Overloaded),
            Err(TryAcquireError::NoPermits) => {}
        }
        let joined = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_queued).then_some(n + 1)
            })
            .is_ok();
        if !joined {
            crate::metrics::overloaded("queue_full");
            return Err(Rejection::Overloaded);
        }
        let waited =
            tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        match waited {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                crate::metrics::overloaded("queue_timeout");
                Err(Rejection::Overloaded)
            }
        }
    }
}

/// Memory for request bodies, in KiB, shared by every request. A body takes its share frame by
/// frame as it arrives, so an announced length cannot reserve memory that is never sent and a
/// chunked body is charged for what it really is.
pub struct BodyBudget {
    kib: Arc<Semaphore>,
}

impl BodyBudget {
    pub fn new(limits: &Limits) -> Self {
        let kib = usize::try_from(limits.max_buffered_body_bytes / 1024)
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        BodyBudget {
            kib: Arc::new(Semaphore::new(kib)),
        }
    }

    /// Charges `held` (the body so far) up to `total` bytes; `None` when the budget is spent.
    pub fn charge(&self, held: &mut Option<OwnedSemaphorePermit>, total: usize) -> Option<()> {
        let want = total.div_ceil(1024);
        let have = held.as_ref().map_or(0, |p| p.num_permits());
        if want <= have {
            return Some(());
        }
        let more = u32::try_from(want - have).ok()?;
        let permit = self.kib.clone().try_acquire_many_owned(more).ok()?;
        match held {
            Some(h) => h.merge(permit),
            None => *held = Some(permit),
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: usize) -> Limits {
        Limits {
            max_connections: total,
            max_connections_per_ip: per_ip,
            ..Limits::default()
        }
    }

    #[test]
    fn per_source_cap_frees_its_slot_when_a_connection_ends() {
        let t = ConnTracker::new(&limits(100, 2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = t.admit(a);
        let second = t.admit(a);
        assert!(matches!(first, Admission::Serve(_)));
        assert!(matches!(second, Admission::Serve(_)));
        assert!(matches!(t.admit(a), Admission::Refuse(_)));
        assert!(matches!(t.admit(b), Admission::Serve(_)));
        drop(first);
        assert!(matches!(t.admit(a), Admission::Serve(_)));
        assert!(t.per_ip.len() <= 2);
    }

    #[test]
    fn total_cap_refuses_then_drops() {
        let t = ConnTracker::new(&limits(1, 0));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let _served = t.admit(ip);
        let mut refused = Vec::new();
        for _ in 0..64 {
            match t.admit(ip) {
                Admission::Refuse(g) => refused.push(g),
                _ => panic!("expected a refusal while the refusal cap has room"),
            }
        }
        assert!(matches!(t.admit(ip), Admission::Drop));
        refused.pop();
        assert!(matches!(t.admit(ip), Admission::Refuse(_)));
        assert_eq!(t.open(), 1);
    }

    #[test]
    fn body_budget_is_shared_and_given_back() {
        let b = BodyBudget::new(&Limits {
            max_buffered_body_bytes: 8 * 1024,
            ..Limits::default()
        });
        let mut one = None;
        assert!(b.charge(&mut one, 5000).is_some());
        assert!(b.charge(&mut one, 6000).is_some());
        let mut two = None;
        assert!(
            b.charge(&mut two, 3000).is_none(),
            "6 KiB held, 3 KiB more is over 8 KiB"
        );
        drop(one);
        assert!(b.charge(&mut two, 3000).is_some());
    }

    #[tokio::test]
    async fn gate_queues_briefly_then_refuses() {
        let gate = RequestGate::new(&Limits {
            max_in_flight: 1,
            max_queued: 1,
            queue_timeout: Duration::from_millis(50),
            ..Limits::default()
        });
        let held = gate.enter().await.unwrap();
        assert_eq!(gate.enter().await.unwrap_err(), Rejection::Overloaded);
        drop(held);
        assert!(gate.enter().await.is_ok());
    }
}
