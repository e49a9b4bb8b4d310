//! Fleet mode: the state shared through Redis (`--state redis://HOST:PORT`), so that N instances
//! behind one load balancer refuse a replay sent to a different instance, share each key's last
//! use, second-factor windows and the brute-force guard.
//!
//! The request path costs at most one round trip: a request's claims (the nonce's `SET NX PX`,
//! the second factor's `GET` or redeem script) go out as one pipeline on one multiplexed
//! connection, bounded by the configured timeout. Everything else (usage, the brute-force
//! counters and the list of blocked sources) is batched by background tasks about every second.
//!
//! Keys, under the configured prefix (`akgate:` by default):
//! - `n:{len}:{key id}:{nonce}` — a nonce, until the request's validity ends;
//! - `mfa:t:{key id}` — end of the key's second-factor trust window (Unix seconds);
//! - `mfa:u:{len}:{key id}:{token}` — a redeemed one-time code;
//! - `u:k:{key id}` (hash), `u:seq`, `u:changed` (sorted set) — usage, and which keys changed;
//! - `u:since` — when the fleet began tracking usage (Unix seconds; set once, by the first
//!   instance to connect);
//! - `bf:c:{source}`, `bf:blocked` (sorted set, scored by the end of the cool-down in Redis
//!   server milliseconds) — the brute-force guard.
//!
//! Key ids and nonces come from clients. Every argument is sent as a length-prefixed bulk string
//! (so no byte in them is protocol), the key id's length is part of the key (so `A` + `B:C` and
//! `A:B` + `C` differ), and a part longer than [`MAX_PART`] is replaced by its SHA-256.

mod conn;
pub mod resp;

use arc_swap::{ArcSwap, ArcSwapOption};
use sha2::Digest;
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

use self::conn::{Conn, ConnError, Sink};
use self::resp::Value;
use super::usage::{DirtyUsage, Usage, UsageTable};
use super::{Claims, MfaClaim, MfaOutcome, Outcome, Unavailable};
use crate::policy::bruteforce::{self, SourceKey};
use crate::policy::replay::NonceOutcome;

/// Longest key id, nonce or token used verbatim in a Redis key.
pub const MAX_PART: usize = 256;
/// How often usage is pushed and pulled, and the blocked sources fetched.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);
/// How often an idle connection is checked.
const PING_EVERY: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Keys per usage push script call, and per pull page.
const USAGE_BATCH: usize = 256;
const PULL_PAGE: usize = 1000;
/// Pull pages per tick: a first pull of a huge fleet's table is spread over a few ticks.
const PULL_PAGES_PER_TICK: usize = 50;
/// Usage deltas kept for a retry while Redis is down; past this the oldest news is dropped.
const MAX_RETRY_KEYS: usize = 100_000;
/// Blocked sources fetched at most.
const MAX_BLOCKED: usize = 100_000;

/// The operation names of `akgate_state_errors_total`.
pub mod op {
    pub const CLAIM: &str = "claim";
    pub const USAGE_PUSH: &str = "usage_push";
    pub const USAGE_PULL: &str = "usage_pull";
    pub const FAILURES: &str = "failures";
}

#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// `host:port`.
    pub addr: String,
    /// Put before every key, so that several fleets (or other programs) can share a Redis.
    pub prefix: String,
    /// Bound on one request's round trip (`--state-timeout`).
    pub timeout: Duration,
}

impl FleetConfig {
    pub fn new(addr: impl Into<String>, timeout: Duration) -> Self {
        FleetConfig {
            addr: addr.into(),
            prefix: "akgate:".into(),
            timeout,
        }
    }
}

/// A Lua script, run by its SHA-1 (loaded at every connect), by its text after a script flush.
struct Script {
    text: &'static str,
    sha: String,
}

impl Script {
    fn new(text: &'static str) -> Script {
        Script {
            text,
            sha: crate::auth::encoding::hex_lower(&sha1::Sha1::digest(text.as_bytes())),
        }
    }

    fn encode(&self, out: &mut Vec<u8>, by_text: bool, keys: &[&[u8]], args: &[&[u8]]) {
        let n = keys.len().to_string();
        let mut all: Vec<&[u8]> = Vec::with_capacity(3 + keys.len() + args.len());
        if by_text {
            all.extend([&b"EVAL"[..], self.text.as_bytes()]);
        } else {
            all.extend([&b"EVALSHA"[..], self.sha.as_bytes()]);
        }
        all.push(n.as_bytes());
        all.extend_from_slice(keys);
        all.extend_from_slice(args);
        resp::encode(out, &all);
    }
}

/// KEYS: used-token key, trust key. ARGV: token lifetime (ms), trust end (Unix s), trust
/// lifetime (ms). 1 when the token was fresh (and the window is open until at least the end),
/// 0 when it was used already.
const REDEEM: &str = r#"
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  local cur = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  if tonumber(ARGV[2]) > cur then
    redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  end
  return 1
end
return 0
"#;

/// KEYS: sequence, changed set, then one usage hash per key. ARGV: six per key (id, last used,
/// source, service, action, request delta). The latest use wins the details; counts add up; each
/// key's score in the changed set becomes this call's sequence number.
const PUSH: &str = r#"
local seq = redis.call('INCR', KEYS[1])
for i = 3, #KEYS do
  local a = (i - 3) * 6
  local h = KEYS[i]
  local cur = redis.call('HGET', h, 'last')
  if (not cur) or tonumber(ARGV[a + 2]) >= tonumber(cur) then
    redis.call('HSET', h, 'last', ARGV[a + 2], 'src', ARGV[a + 3], 'svc', ARGV[a + 4], 'act', ARGV[a + 5])
  end
  redis.call('HINCRBY', h, 'n', ARGV[a + 6])
  redis.call('ZADD', KEYS[2], seq, ARGV[a + 1])
end
return seq
"#;

/// KEYS: sequence, changed set. ARGV: last sequence seen, page size, usage hash key prefix.
/// Returns the current sequence and, per key changed since, its id, sequence and fields.
const PULL: &str = r#"
local now = tonumber(redis.call('GET', KEYS[1]) or '0')
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for i = 1, #ids, 2 do
  out[#out + 1] = ids[i]
  out[#out + 1] = ids[i + 1]
  out[#out + 1] = redis.call('HMGET', ARGV[3] .. ids[i], 'last', 'src', 'svc', 'act', 'n')
end
return {now, out}
"#;

/// KEYS: failure counter, blocked set. ARGV: window (ms), limit, cool-down (ms), source. Times
/// are the Redis server's, so instances' clocks need not agree. 1 when this failure starts a
/// cool-down.
const FAILURE: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local blocked = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[4]) or '0')
if blocked > now then return 0 end
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n >= tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// KEYS: blocked set. ARGV: most entries. Drops ended cool-downs; returns the server's time (ms)
/// and the sources still blocked with the end of their cool-down.
const BLOCKED: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return {now, redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))}
"#;

struct Scripts {
    redeem: Script,
    push: Script,
    pull: Script,
    failure: Script,
    blocked: Script,
}

/// The state shared by a fleet. Create with [`Fleet::start`] inside a Tokio runtime.
pub struct Fleet {
    cfg: FleetConfig,
    usage: Arc<UsageTable>,
    scripts: Scripts,
    conn: ArcSwapOption<Conn>,
    healthy: AtomicBool,
    /// Sources on cool-down anywhere in the fleet, with when it ends (this process's clock).
    blocked: ArcSwap<HashMap<SourceKey, Instant>>,
    stop: watch::Sender<bool>,
    /// Usage deltas whose push failed, retried with the next push.
    retry: std::sync::Mutex<HashMap<String, DirtyUsage>>,
}

impl Fleet {
    /// Never blocks start-up on Redis: connects (and reconnects with backoff) in the background;
    /// [`Fleet::healthy`] is false until connected. Must be called inside a Tokio runtime.
    pub fn start(cfg: FleetConfig, usage: Arc<UsageTable>) -> Arc<Fleet> {
        let (stop, _) = watch::channel(false);
        let fleet = Arc::new(Fleet {
            cfg,
            usage,
            scripts: Scripts {
                redeem: Script::new(REDEEM),
                push: Script::new(PUSH),
                pull: Script::new(PULL),
                failure: Script::new(FAILURE),
                blocked: Script::new(BLOCKED),
            },
            conn: ArcSwapOption::empty(),
            healthy: AtomicBool::new(false),
            blocked: ArcSwap::from_pointee(HashMap::new()),
            stop,
            retry: std::sync::Mutex::default(),
        });
        crate::metrics::state_up(false);
        tokio::spawn(fleet.clone().supervise());
        tokio::spawn(fleet.clone().sync_loop());
        fleet
    }

    pub fn config(&self) -> &FleetConfig {
        &self.cfg
    }

    /// Whether Redis is connected and answering (readiness, `akgate_state_up`).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn set_healthy(&self, up: bool) {
        if self.healthy.swap(up, Ordering::Relaxed) != up {
            crate::metrics::state_up(up);
        }
    }

    fn live_conn(&self) -> Option<Arc<Conn>> {
        self.conn.load_full().filter(|c| !c.is_closed())
    }

    /// Answers a request's claims with one pipelined round trip, bounded by the configured
    /// timeout. `Err(Unavailable)` on timeout, connection loss or an unexpected reply.
    pub async fn claim(&self, c: &Claims<'_>) -> Result<Outcome, Unavailable> {
        if c.is_empty() {
            return Ok(Outcome::default());
        }
        let Some(conn) = self.live_conn() else {
            crate::metrics::state_error(op::CLAIM);
            return Err(Unavailable);
        };
        let started = Instant::now();
        let mut buf = Vec::with_capacity(256);
        let mut n = 0;
        if let Some(nc) = c.nonce {
            let key = self.nonce_key(nc.key_id, nc.nonce);
            let px = ttl_ms(nc.now, nc.expires).to_string();
            resp::encode(&mut buf, &[b"SET", &key, b"1", b"NX", b"PX", px.as_bytes()]);
            n += 1;
        }
        if let Some(m) = &c.mfa {
            self.encode_mfa(&mut buf, m, false);
            n += 1;
        }
        let replies = conn.call(buf, n, self.cfg.timeout).await;
        crate::metrics::state_round_trip(started.elapsed());
        let replies = replies.map_err(|_| claim_failed())?;
        let mut it = replies.into_iter();
        let mut out = Outcome::default();
        if c.nonce.is_some() {
            out.nonce = Some(match it.next() {
                Some(Value::Simple(s)) if s == "OK" => NonceOutcome::Fresh,
                Some(Value::Nil) => NonceOutcome::Replayed,
                _ => return Err(claim_failed()),
            });
        }
        if let Some(m) = &c.mfa {
            let mut reply = it.next().ok_or_else(claim_failed)?;
            if is_noscript(&reply) {
                // A script flush since the connect: once more by its text, within what is left
                // of the budget.
                let mut buf = Vec::with_capacity(512);
                self.encode_mfa(&mut buf, m, true);
                let left = self.cfg.timeout.saturating_sub(started.elapsed());
                reply = conn
                    .call(buf, 1, left)
                    .await
                    .map_err(|_| claim_failed())?
                    .pop()
                    .ok_or_else(claim_failed)?;
            }
            out.mfa = Some(mfa_outcome(m, &reply).ok_or_else(claim_failed)?);
        }
        Ok(out)
    }

    fn encode_mfa(&self, buf: &mut Vec<u8>, m: &MfaClaim<'_>, by_text: bool) {
        match *m {
            MfaClaim::Check { key_id, .. } => {
                resp::encode(buf, &[b"GET", &self.trust_key(key_id)]);
            }
            MfaClaim::Redeem {
                key_id,
                token,
                now,
                token_expires,
                trust_until,
            } => {
                let used = self.key2("mfa:u:", key_id, token);
                let trust = self.trust_key(key_id);
                let token_px = ttl_ms(now, token_expires).to_string();
                let until = trust_until.to_string();
                let trust_px = ttl_ms(now, trust_until).to_string();
                self.scripts.redeem.encode(
                    buf,
                    by_text,
                    &[&used, &trust],
                    &[token_px.as_bytes(), until.as_bytes(), trust_px.as_bytes()],
                );
            }
        }
    }

    fn nonce_key(&self, key_id: &str, nonce: &str) -> Vec<u8> {
        self.key2("n:", key_id, nonce)
    }

    fn trust_key(&self, key_id: &str) -> Vec<u8> {
        let mut k = self.key("mfa:t:");
        k.extend_from_slice(part(key_id).as_bytes());
        k
    }

    fn key(&self, kind: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.cfg.prefix.len() + kind.len() + 64);
        k.extend_from_slice(self.cfg.prefix.as_bytes());
        k.extend_from_slice(kind.as_bytes());
        k
    }

    fn key2(&self, kind: &str, a: &str, b: &str) -> Vec<u8> {
        key2(&self.cfg.prefix, kind, a, b)
    }

    /// Counts one failed authentication from `ip` across the fleet, without waiting for Redis.
    /// Once the fleet has counted `limit` failures from the source within the guard's window,
    /// every instance refuses it for `cooldown` (seen by [`Fleet::is_blocked`] within about a
    /// second).
    pub fn record_failure(&self, ip: IpAddr, limit: u32, cooldown: Duration) {
        if limit == 0 {
            return;
        }
        let Some(conn) = self.live_conn() else {
            crate::metrics::state_error(op::FAILURES);
            return;
        };
        let member = source_member(SourceKey::of(ip));
        let mut counter = self.key("bf:c:");
        counter.extend_from_slice(member.as_bytes());
        let set = self.key("bf:blocked");
        let window = bruteforce::WINDOW.as_millis().to_string();
        let limit = limit.to_string();
        let cooldown = cooldown.as_millis().max(1).to_string();
        let mut buf = Vec::with_capacity(256);
        self.scripts.failure.encode(
            &mut buf,
            false,
            &[&counter, &set],
            &[
                window.as_bytes(),
                limit.as_bytes(),
                cooldown.as_bytes(),
                member.as_bytes(),
            ],
        );
        if conn.send(buf, 1, Sink::Discard(op::FAILURES)).is_err() {
            crate::metrics::state_error(op::FAILURES);
        }
    }

    /// Whether `ip` is on cool-down somewhere in the fleet, as of the last fetch (about every
    /// second). Reads memory only.
    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        let blocked = self.blocked.load();
        if blocked.is_empty() {
            return false;
        }
        blocked
            .get(&SourceKey::of(ip))
            .is_some_and(|until| Instant::now() < *until)
    }

    /// Sources the fleet has on cool-down now.
    pub fn blocked_sources(&self) -> usize {
        let now = Instant::now();
        self.blocked.load().values().filter(|u| now < **u).count()
    }

    /// Pushes the usage not yet shared (bounded by the timeout) and stops the background tasks.
    pub async fn shutdown(&self) {
        if self.healthy() {
            let _ = self.push_usage().await;
        }
        let _ = self.stop.send(true);
        if let Some(c) = self.conn.swap(None) {
            c.shut();
        }
        self.set_healthy(false);
    }

    /// Connects, watches the connection, reconnects with backoff.
    async fn supervise(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut backoff = BACKOFF_MIN;
        let mut failures = 0u32;
        let mut ever_up = false;
        loop {
            if *stop.borrow() {
                return;
            }
            match self.connect().await {
                Ok(conn) => {
                    let conn = Arc::new(conn);
                    self.conn.store(Some(conn.clone()));
                    self.set_healthy(true);
                    tracing::info!(addr = %self.cfg.addr, "state store connected");
                    ever_up = true;
                    backoff = BACKOFF_MIN;
                    failures = 0;
                    let why = self.watch(&conn, &mut stop).await;
                    self.conn.store(None);
                    conn.shut();
                    self.set_healthy(false);
                    if *stop.borrow() {
                        return;
                    }
                    tracing::warn!(addr = %self.cfg.addr, reason = why, "state store lost; reconnecting");
                }
                Err(e) => {
                    failures += 1;
                    // Every attempt is logged at first, then one in 20 (about every 100 s).
                    if failures <= 3 || failures.is_multiple_of(20) {
                        tracing::warn!(addr = %self.cfg.addr, error = %e, attempts = failures, ever_up, "state store unreachable");
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// A connection that answers PING and has the scripts loaded.
    async fn connect(&self) -> Result<Conn, String> {
        let within = self.cfg.timeout.max(Duration::from_secs(1));
        let conn = Conn::connect(&self.cfg.addr, within)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        resp::encode(&mut buf, &[b"PING"]);
        let s = &self.scripts;
        for script in [&s.redeem, &s.push, &s.pull, &s.failure, &s.blocked] {
            resp::encode(&mut buf, &[b"SCRIPT", b"LOAD", script.text.as_bytes()]);
        }
        // When the fleet began tracking usage: the first instance ever to connect sets it. Kept
        // per process it would restart with every deploy, and a key never used would then never
        // go idle in a fleet that restarts more often than max_idle_days.
        let since_key = self.key("u:since");
        let since = self.usage.since().to_string();
        resp::encode(&mut buf, &[b"SET", &since_key, since.as_bytes(), b"NX"]);
        resp::encode(&mut buf, &[b"GET", &since_key]);
        let replies = conn.call(buf, 8, within).await.map_err(|e| e.to_string())?;
        if let Some(Value::Error(e)) = replies.iter().find(|v| matches!(v, Value::Error(_))) {
            // Redis's own message (NOAUTH, LOADING, MISCONF…): no secret in it.
            return Err(e.clone());
        }
        match replies.last().and_then(Value::as_int) {
            Some(since) => self.usage.set_since(since),
            None => return Err("unexpected reply to GET u:since".into()),
        }
        Ok(conn)
    }

    /// Until the connection is lost, does not answer a PING, or the fleet stops.
    async fn watch(&self, conn: &Conn, stop: &mut watch::Receiver<bool>) -> &'static str {
        let within = self.cfg.timeout.max(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = conn.closed() => return "connection closed",
                _ = stop.changed() => return "stopping",
                _ = tokio::time::sleep(PING_EVERY) => {
                    let mut buf = Vec::new();
                    resp::encode(&mut buf, &[b"PING"]);
                    match conn.call(buf, 1, within).await {
                        Ok(v) if matches!(v.first(), Some(Value::Simple(_))) => {
                            // Re-asserted: a start-up report of the gauge may race the connect.
                            crate::metrics::state_up(true);
                        }
                        Ok(_) => return "unexpected PING reply",
                        Err(ConnError::Timeout) => return "PING timed out",
                        Err(_) => return "connection closed",
                    }
                }
            }
        }
    }

    /// About every second: usage out and in, blocked sources in.
    async fn sync_loop(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut tick = tokio::time::interval(SYNC_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_seq: i64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if !self.healthy() {
                continue;
            }
            if self.push_usage().await.is_err() {
                crate::metrics::state_error(op::USAGE_PUSH);
            }
            match self.pull_usage(last_seq).await {
                Ok(seq) => last_seq = seq,
                Err(_) => crate::metrics::state_error(op::USAGE_PULL),
            }
            if self.fetch_blocked().await.is_err() {
                crate::metrics::state_error(op::FAILURES);
            }
        }
    }

    /// Runs one script call in the background (no request waits), by SHA, then by text if Redis
    /// forgot it.
    async fn run(
        &self,
        script: &Script,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> Result<Value, ConnError> {
        let within = self.cfg.timeout.max(Duration::from_secs(2));
        for by_text in [false, true] {
            let conn = self.live_conn().ok_or(ConnError::Closed)?;
            let mut buf = Vec::new();
            script.encode(&mut buf, by_text, keys, args);
            let v = conn
                .call(buf, 1, within)
                .await?
                .pop()
                .ok_or(ConnError::Closed)?;
            if !is_noscript(&v) {
                return Ok(v);
            }
        }
        Err(ConnError::Closed)
    }

    /// Adds this process's new requests to the fleet's totals; what fails is kept for the next
    /// push.
    async fn push_usage(&self) -> Result<(), ConnError> {
        let mut batch: Vec<DirtyUsage> = {
            let mut retry = lock(&self.retry);
            for d in self.usage.take_dirty() {
                match retry.get_mut(&d.key_id) {
                    Some(r) => {
                        r.delta = r.delta.saturating_add(d.delta);
                        if d.usage.last_used >= r.usage.last_used {
                            r.usage = d.usage;
                        }
                    }
                    None => {
                        retry.insert(d.key_id.clone(), d);
                    }
                }
            }
            retry.drain().map(|(_, d)| d).collect()
        };
        if batch.is_empty() {
            return Ok(());
        }
        let seq = self.key("u:seq");
        let changed = self.key("u:changed");
        let mut result = Ok(());
        while !batch.is_empty() {
            let chunk: Vec<DirtyUsage> = batch.drain(..batch.len().min(USAGE_BATCH)).collect();
            let r = self.push_chunk(&seq, &changed, &chunk).await;
            if let Err(e) = r {
                result = Err(e);
                let mut retry = lock(&self.retry);
                for d in chunk.into_iter().chain(batch.drain(..)) {
                    if retry.len() < MAX_RETRY_KEYS {
                        retry.insert(d.key_id.clone(), d);
                    }
                }
            }
        }
        result
    }

    async fn push_chunk(
        &self,
        seq: &[u8],
        changed: &[u8],
        chunk: &[DirtyUsage],
    ) -> Result<(), ConnError> {
        let hashes: Vec<Vec<u8>> = chunk
            .iter()
            .map(|d| {
                let mut k = self.key("u:k:");
                k.extend_from_slice(d.key_id.as_bytes());
                k
            })
            .collect();
        let fields: Vec<[String; 5]> = chunk
            .iter()
            .map(|d| {
                [
                    d.usage.last_used.to_string(),
                    d.usage.source.map(|s| s.to_string()).unwrap_or_default(),
                    d.usage.service.clone(),
                    d.usage.action.clone(),
                    d.delta.to_string(),
                ]
            })
            .collect();
        let mut keys: Vec<&[u8]> = vec![seq, changed];
        keys.extend(hashes.iter().map(|h| h.as_slice()));
        let mut args: Vec<&[u8]> = Vec::with_capacity(chunk.len() * 6);
        for (d, f) in chunk.iter().zip(&fields) {
            args.push(d.key_id.as_bytes());
            args.extend(f.iter().map(|s| s.as_bytes()));
        }
        match self.run(&self.scripts.push, &keys, &args).await? {
            Value::Int(_) => Ok(()),
            _ => Err(ConnError::Closed),
        }
    }

    /// Brings in every key's usage that changed in the fleet since `last_seq`; the sequence
    /// reached.
    async fn pull_usage(&self, mut last_seq: i64) -> Result<i64, ConnError> {
        let seq = self.key("u:seq");
        let changed = self.key("u:changed");
        let hash_prefix = self.key("u:k:");
        let page = PULL_PAGE.to_string();
        for _ in 0..PULL_PAGES_PER_TICK {
            let since = last_seq.to_string();
            let v = self
                .run(
                    &self.scripts.pull,
                    &[&seq, &changed],
                    &[since.as_bytes(), page.as_bytes(), &hash_prefix],
                )
                .await?;
            let Value::Array(mut top) = v else {
                return Err(ConnError::Closed);
            };
            let (Some(Value::Array(items)), Some(current)) = (top.pop(), top.pop()) else {
                return Err(ConnError::Closed);
            };
            let current = current.as_int().unwrap_or(0);
            if current < last_seq {
                // Redis lost its data (a restart without persistence): start over.
                last_seq = 0;
                continue;
            }
            let n = items.len() / 3;
            let mut it = items.into_iter();
            while let (Some(id), Some(s), Some(Value::Array(f))) = (it.next(), it.next(), it.next())
            {
                let (Some(id), Some(s)) = (id.as_str(), s.as_str()) else {
                    continue;
                };
                // Scores are integers that Redis may print as floats.
                if let Ok(s) = s.parse::<f64>() {
                    last_seq = last_seq.max(s as i64);
                }
                if let Some(u) = usage_of(&f) {
                    self.usage.apply_remote(id, u);
                }
            }
            if n < PULL_PAGE {
                break;
            }
        }
        Ok(last_seq)
    }

    /// Replaces the local view of blocked sources with the fleet's.
    async fn fetch_blocked(&self) -> Result<(), ConnError> {
        let set = self.key("bf:blocked");
        let most = MAX_BLOCKED.to_string();
        let v = self
            .run(&self.scripts.blocked, &[&set], &[most.as_bytes()])
            .await?;
        let local_now = Instant::now();
        let Value::Array(mut top) = v else {
            return Err(ConnError::Closed);
        };
        let (Some(Value::Array(items)), Some(server_now)) = (top.pop(), top.pop()) else {
            return Err(ConnError::Closed);
        };
        let server_now = server_now.as_int().ok_or(ConnError::Closed)?;
        let mut map = HashMap::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(member), Some(score)) = (it.next(), it.next()) {
            let (Some(source), Some(until)) = (
                member.as_str().and_then(parse_member),
                score.as_str().and_then(|s| s.parse::<f64>().ok()),
            ) else {
                continue;
            };
            let left = (until as i64).saturating_sub(server_now).max(0);
            map.insert(source, local_now + Duration::from_millis(left as u64));
        }
        self.blocked.store(Arc::new(map));
        Ok(())
    }
}

fn claim_failed() -> Unavailable {
    crate::metrics::state_error(op::CLAIM);
    Unavailable
}

fn is_noscript(v: &Value) -> bool {
    matches!(v, Value::Error(e) if e.starts_with("NOSCRIPT"))
}

fn mfa_outcome(m: &MfaClaim<'_>, reply: &Value) -> Option<MfaOutcome> {
    match *m {
        MfaClaim::Check { now, .. } => match reply {
            Value::Nil => Some(MfaOutcome::NotTrusted),
            v @ Value::Bulk(_) => Some(if v.as_int()? > now {
                MfaOutcome::Trusted
            } else {
                MfaOutcome::NotTrusted
            }),
            _ => None,
        },
        MfaClaim::Redeem { .. } => match reply {
            Value::Int(1) => Some(MfaOutcome::Redeemed),
            Value::Int(0) => Some(MfaOutcome::Reused),
            _ => None,
        },
    }
}

/// Milliseconds from `now` to `until`, at least 1 (Redis refuses `PX 0`).
fn ttl_ms(now: i64, until: i64) -> i64 {
    until.saturating_sub(now).saturating_mul(1000).max(1)
}

/// A client-supplied part of a key, verbatim when short, else `#` and its SHA-256.
fn part(s: &str) -> Cow<'_, str> {
    if s.len() <= MAX_PART {
        Cow::Borrowed(s)
    } else {
        let digest = sha2::Sha256::digest(s.as_bytes());
        Cow::Owned(format!("#{}", crate::auth::encoding::hex_lower(&digest)))
    }
}

/// `{prefix}{kind}{len(a)}:{a}:{b}`: the length keeps any `:` in `a` from shifting the split.
fn key2(prefix: &str, kind: &str, a: &str, b: &str) -> Vec<u8> {
    let (a, b) = (part(a), part(b));
    let mut k = Vec::with_capacity(prefix.len() + kind.len() + a.len() + b.len() + 8);
    k.extend_from_slice(prefix.as_bytes());
    k.extend_from_slice(kind.as_bytes());
    k.extend_from_slice(a.len().to_string().as_bytes());
    k.push(b':');
    k.extend_from_slice(a.as_bytes());
    k.push(b':');
    k.extend_from_slice(b.as_bytes());
    k
}

fn source_member(s: SourceKey) -> String {
    match s {
        SourceKey::V4(v) => format!("4:{v:08x}"),
        SourceKey::V6(v) => format!("6:{v:016x}"),
    }
}

fn parse_member(s: &str) -> Option<SourceKey> {
    let (kind, hex) = s.split_once(':')?;
    match kind {
        "4" => u32::from_str_radix(hex, 16).ok().map(SourceKey::V4),
        "6" => u64::from_str_radix(hex, 16).ok().map(SourceKey::V6),
        _ => None,
    }
}

/// A usage hash's fields (last, src, svc, act, n) as a [`Usage`]; `None` when it has none.
fn usage_of(f: &[Value]) -> Option<Usage> {
    let [last, src, svc, act, n] = f else {
        return None;
    };
    Some(Usage {
        last_used: last.as_int()?,
        source: src.as_str().and_then(|s| s.parse().ok()),
        service: svc.as_str().unwrap_or_default().to_string(),
        action: act.as_str().unwrap_or_default().to_string(),
        requests: n.as_int().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
    })
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain data that no panic leaves half-updated.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parts_cannot_shift_or_grow() {
        assert_ne!(key2("p:", "n:", "A", "B:C"), key2("p:", "n:", "A:B", "C"));
        assert_eq!(key2("p:", "n:", "AK1", "x y\r\n"), b"p:n:3:AK1:x y\r\n");
        let long = "x".repeat(10_000);
        let k = key2("p:", "n:", "AK1", &long);
        assert_eq!(k.len(), "p:n:3:AK1:".len() + 65);
        let mut other = long.clone();
        other.push('y');
        assert_ne!(k, key2("p:", "n:", "AK1", &other));
        assert_eq!(part("short"), "short");
        assert_eq!(FleetConfig::new("h:1", Duration::ZERO).prefix, "akgate:");
    }

    #[test]
    fn source_members_round_trip() {
        for ip in ["192.0.2.7", "2001:db8::1", "::ffff:10.0.0.1"] {
            let s = SourceKey::of(ip.parse().unwrap());
            assert_eq!(parse_member(&source_member(s)), Some(s));
        }
        assert_eq!(parse_member("9:zz"), None);
    }

    #[test]
    fn ttl_is_never_zero() {
        assert_eq!(ttl_ms(10, 10), 1);
        assert_eq!(ttl_ms(10, 5), 1);
        assert_eq!(ttl_ms(10, 12), 2000);
    }
}
