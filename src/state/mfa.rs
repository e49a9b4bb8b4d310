//! Second-factor trust windows and redeemed one-time codes, in this process's memory.

use dashmap::DashMap;

use super::{MfaClaim, MfaOutcome};
use crate::time::UnixSeconds;

#[derive(Default)]
pub struct MfaWindows {
    /// Key id → end of its trust window.
    trusted: DashMap<Box<str>, UnixSeconds>,
    /// (key id, token) → when the token may be forgotten.
    redeemed: DashMap<(Box<str>, Box<str>), UnixSeconds>,
}

impl MfaWindows {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn claim(&self, c: &MfaClaim<'_>) -> MfaOutcome {
        match *c {
            MfaClaim::Check { key_id, now } => match self.trusted.get(key_id) {
                Some(until) if *until > now => MfaOutcome::Trusted,
                _ => MfaOutcome::NotTrusted,
            },
            MfaClaim::Redeem {
                key_id,
                token,
                now,
                token_expires,
                trust_until,
            } => {
                use dashmap::mapref::entry::Entry;
                match self.redeemed.entry((key_id.into(), token.into())) {
                    Entry::Occupied(e) if *e.get() > now => return MfaOutcome::Reused,
                    Entry::Occupied(mut e) => {
                        e.insert(token_expires);
                    }
                    Entry::Vacant(e) => {
                        e.insert(token_expires);
                    }
                }
                self.trusted
                    .entry(key_id.into())
                    .and_modify(|t| *t = (*t).max(trust_until))
                    .or_insert(trust_until);
                MfaOutcome::Redeemed
            }
        }
    }

    /// Drops expired windows and tokens.
    pub fn evict_expired(&self, now: UnixSeconds) {
        self.trusted.retain(|_, until| *until > now);
        self.redeemed.retain(|_, until| *until > now);
    }
}
