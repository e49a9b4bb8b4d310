//! State that outlives a rule snapshot: the nonces seen, each key's last use, second-factor
//! trust windows and used one-time codes.
//!
//! One process keeps it in memory ([`Local`]; the usage table optionally persisted to a
//! `--state DIR`). A fleet shares it through Redis (`--state redis://…`), so a replay sent to a
//! different instance is refused too. The decision asks for everything it needs from here in one
//! [`Claims`] batch, answered in one round trip, so fleet mode costs at most one round trip per
//! request.

pub mod fleet;
pub mod mfa;
pub mod persist;
pub mod usage;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::policy::NonceCache;
use crate::policy::bruteforce::AuthFailureGuard;
use crate::policy::replay::NonceOutcome;
use crate::time::UnixSeconds;

pub use mfa::MfaWindows;
pub use usage::UsageTable;

/// Where the state lives (`--state`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StateSpec {
    /// This process's memory only.
    #[default]
    Memory,
    /// Memory, with the usage table persisted in this directory.
    Dir(PathBuf),
    /// Shared through Redis at `host:port`.
    Redis { addr: String },
}

impl StateSpec {
    pub fn parse(s: &str) -> Result<StateSpec, String> {
        if let Some(rest) = s.strip_prefix("redis://") {
            let addr = rest.trim_end_matches('/');
            if addr.is_empty() || addr.contains(['/', '@', '?']) {
                return Err(format!(
                    "`{s}`: expected redis://HOST:PORT (no user, password, database or options)"
                ));
            }
            let addr = if addr.contains(':') && !addr.ends_with(']') {
                addr.to_string()
            } else {
                format!("{addr}:6379")
            };
            return Ok(StateSpec::Redis { addr });
        }
        if s.contains("://") {
            return Err(format!(
                "`{s}`: the state is a directory or redis://HOST:PORT"
            ));
        }
        if s.is_empty() {
            return Err("the state directory is empty".into());
        }
        Ok(StateSpec::Dir(PathBuf::from(s)))
    }
}

/// What to do when the shared store cannot answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FailMode {
    /// Refuse (503) what cannot be checked against the fleet.
    #[default]
    Closed,
    /// Check against this instance's memory instead.
    Open,
}

#[derive(Debug, Clone, Default)]
pub struct StateConfig {
    pub spec: StateSpec,
    pub fail: FailMode,
    pub timeout: Duration,
}

/// Record `nonce` for `key_id` until `expires`, unless it is already recorded.
#[derive(Debug, Clone, Copy)]
pub struct NonceClaim<'a> {
    pub key_id: &'a str,
    pub nonce: &'a str,
    pub now: UnixSeconds,
    pub expires: UnixSeconds,
}

/// What a critical operation asks of the second-factor state.
#[derive(Debug, Clone, Copy)]
pub enum MfaClaim<'a> {
    /// No code came with the request: it passes only inside a trust window.
    Check { key_id: &'a str, now: UnixSeconds },
    /// A code that verified against the key's seed: it passes unless `token` (which identifies the
    /// code's use) was redeemed already; redeeming it opens a trust window until `trust_until`.
    Redeem {
        key_id: &'a str,
        token: &'a str,
        now: UnixSeconds,
        token_expires: UnixSeconds,
        trust_until: UnixSeconds,
    },
}

/// Everything one request needs from the state, asked at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct Claims<'a> {
    pub nonce: Option<NonceClaim<'a>>,
    pub mfa: Option<MfaClaim<'a>>,
}

impl Claims<'_> {
    pub fn is_empty(&self) -> bool {
        self.nonce.is_none() && self.mfa.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfaOutcome {
    /// Inside a trust window opened by an earlier code.
    Trusted,
    NotTrusted,
    /// The code was fresh; a trust window is open from now.
    Redeemed,
    /// The code was used already.
    Reused,
}

/// The answers to a [`Claims`], field by field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    pub nonce: Option<NonceOutcome>,
    pub mfa: Option<MfaOutcome>,
}

/// The shared store could not answer (fleet mode, fail-closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the shared state store is unavailable")]
pub struct Unavailable;

/// One allowed request, for the usage table.
#[derive(Debug, Clone, Copy)]
pub struct Use<'a> {
    pub key_id: &'a str,
    pub at: UnixSeconds,
    pub source: Option<IpAddr>,
    pub service: &'a str,
    pub action: &'a str,
}

/// This process's own state; in fleet mode also the fallback when the store is down and the
/// switch says fail-open.
pub struct Local {
    pub nonces: NonceCache,
    pub mfa: MfaWindows,
    /// Authentication failures per source seen by this instance.
    pub guard: AuthFailureGuard,
}

impl Local {
    pub fn new(nonces: NonceCache) -> Self {
        Local {
            nonces,
            mfa: MfaWindows::new(),
            guard: AuthFailureGuard::new(),
        }
    }

    pub fn claim(&self, c: &Claims<'_>) -> Outcome {
        Outcome {
            nonce: c.nonce.map(|n| {
                self.nonces
                    .check_and_record(n.key_id, n.nonce, n.now, n.expires)
            }),
            mfa: c.mfa.map(|m| self.mfa.claim(&m)),
        }
    }
}

/// What the decision reads and asks of the state without waiting: the usage view (for idle
/// keys) and claims answered from memory (`explain`, tests, benches, embedded mode).
pub trait StateView {
    fn last_used(&self, key_id: &str) -> Option<UnixSeconds>;
    fn tracking_since(&self) -> UnixSeconds;
    fn claim_now(&self, claims: &Claims<'_>) -> Outcome;
}

/// A bare nonce cache: no usage known (so idle days count from each key's creation) and no
/// second-factor window ever open.
impl StateView for NonceCache {
    fn last_used(&self, _key_id: &str) -> Option<UnixSeconds> {
        None
    }
    fn tracking_since(&self) -> UnixSeconds {
        UnixSeconds::MIN
    }
    fn claim_now(&self, c: &Claims<'_>) -> Outcome {
        Outcome {
            nonce: c
                .nonce
                .map(|n| self.check_and_record(n.key_id, n.nonce, n.now, n.expires)),
            mfa: c.mfa.map(|_| MfaOutcome::NotTrusted),
        }
    }
}

impl StateView for State {
    fn last_used(&self, key_id: &str) -> Option<UnixSeconds> {
        self.usage.last_used(key_id)
    }
    fn tracking_since(&self) -> UnixSeconds {
        self.usage.since()
    }
    fn claim_now(&self, c: &Claims<'_>) -> Outcome {
        self.local.claim(c)
    }
}

/// The state a gateway runs with.
pub struct State {
    pub local: Local,
    pub usage: Arc<UsageTable>,
    /// Fleet mode: the claims go to Redis.
    pub fleet: Option<Arc<fleet::Fleet>>,
    pub fail: FailMode,
    /// Embedded mode with a `--state DIR`: writes the usage table there.
    persister: Option<persist::Persister>,
}

impl State {
    /// In-memory state; usage tracking starts now.
    pub fn in_memory(nonces: NonceCache, now: UnixSeconds) -> Self {
        Self::with_usage(nonces, Arc::new(UsageTable::new(now)))
    }

    /// In-memory state around a usage table (loaded from a `--state DIR`, say).
    pub fn with_usage(nonces: NonceCache, usage: Arc<UsageTable>) -> Self {
        State {
            local: Local::new(nonces),
            usage,
            fleet: None,
            fail: FailMode::Closed,
            persister: None,
        }
    }

    /// In-memory state with the usage table kept in `dir`, written every `every` when it
    /// changed: a restart loses at most that much of it.
    pub fn in_dir(
        nonces: NonceCache,
        dir: &std::path::Path,
        now: UnixSeconds,
        every: Duration,
    ) -> Result<Self, persist::PersistError> {
        let usage = persist::open(dir, now)?;
        let persister = persist::spawn(usage.clone(), dir.to_path_buf(), every);
        Ok(State {
            persister: Some(persister),
            ..Self::with_usage(nonces, usage)
        })
    }

    /// Fleet mode: claims, usage and the brute-force guard shared through Redis. Must be called
    /// inside a Tokio runtime.
    pub fn fleet(
        nonces: NonceCache,
        now: UnixSeconds,
        cfg: fleet::FleetConfig,
        fail: FailMode,
    ) -> Self {
        let usage = Arc::new(UsageTable::new(now));
        State {
            local: Local::new(nonces),
            fleet: Some(fleet::Fleet::start(cfg, usage.clone())),
            usage,
            fail,
            persister: None,
        }
    }

    pub fn nonces(&self) -> &NonceCache {
        &self.local.nonces
    }

    /// Answers `claims`; at most one round trip to a shared store. When the store cannot answer,
    /// fail-open answers from this instance's memory, which still refuses a replay sent to it.
    pub async fn claim(&self, claims: &Claims<'_>) -> Result<Outcome, Unavailable> {
        let Some(fleet) = &self.fleet else {
            return Ok(self.claim_local(claims));
        };
        match fleet.claim(claims).await {
            Ok(outcome) => Ok(outcome),
            Err(Unavailable) if self.fail == FailMode::Open => Ok(self.claim_local(claims)),
            Err(e) => Err(e),
        }
    }

    /// Answers `claims` from this process's memory only (`explain`, tests, embedded mode).
    pub fn claim_local(&self, claims: &Claims<'_>) -> Outcome {
        self.local.claim(claims)
    }

    /// Counts one allowed request. Cheap and non-blocking: persistence and sharing are batched
    /// off the request path.
    pub fn record_use(&self, u: &Use<'_>) {
        self.usage.record(u);
    }

    /// Whether requests can be served (readiness). A fail-open instance serves without its
    /// store, so taking it out of rotation would only turn an outage of Redis into one of the
    /// whole fleet.
    pub fn healthy(&self) -> bool {
        self.store_up() || self.fail == FailMode::Open
    }

    /// Whether the shared store, if any, answers.
    pub fn store_up(&self) -> bool {
        self.fleet.as_ref().is_none_or(|f| f.healthy())
    }

    /// Whether `ip` is on a brute-force cool-down, here or (as of the last fetch, about a
    /// second ago) anywhere in the fleet. Reads memory only.
    pub fn source_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.local.guard.is_blocked(ip, now)
            || self.fleet.as_ref().is_some_and(|f| f.is_blocked(ip))
    }

    /// Counts a failed authentication from `ip`, here and (without waiting) in the fleet. True
    /// when this instance's count just started a cool-down.
    pub fn record_auth_failure(
        &self,
        ip: IpAddr,
        limit: u32,
        cooldown: Duration,
        now: Instant,
    ) -> bool {
        if let Some(f) = &self.fleet {
            f.record_failure(ip, limit, cooldown);
        }
        self.local.guard.record_failure(ip, limit, cooldown, now)
    }

    /// Shares or writes what is not shared or written yet, and stops the background tasks.
    pub async fn shutdown(&self) {
        if let Some(f) = &self.fleet {
            f.shutdown().await;
        }
        if let Some(p) = &self.persister
            && let Err(e) = p.flush()
        {
            tracing::warn!(error = %e, "cannot write the key usage at shutdown");
        }
    }
}
