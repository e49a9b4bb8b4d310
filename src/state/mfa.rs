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

#[cfg(test)]
mod tests {
    use super::*;

    fn redeem<'a>(key_id: &'a str, token: &'a str, now: UnixSeconds) -> MfaClaim<'a> {
        MfaClaim::Redeem {
            key_id,
            token,
            now,
            token_expires: now + 90,
            trust_until: now + 60,
        }
    }

    #[test]
    fn a_token_opens_a_window_once() {
        let w = MfaWindows::new();
        let check = |now| MfaClaim::Check { key_id: "K", now };
        assert_eq!(w.claim(&check(100)), MfaOutcome::NotTrusted);
        assert_eq!(w.claim(&redeem("K", "totp:3", 100)), MfaOutcome::Redeemed);
        assert_eq!(w.claim(&check(159)), MfaOutcome::Trusted);
        assert_eq!(w.claim(&check(160)), MfaOutcome::NotTrusted);
        // Reused while the token lives, whatever the window; another key's tokens are its own.
        assert_eq!(w.claim(&redeem("K", "totp:3", 120)), MfaOutcome::Reused);
        assert_eq!(w.claim(&redeem("K2", "totp:3", 120)), MfaOutcome::Redeemed);
        assert_eq!(w.claim(&check(170)), MfaOutcome::NotTrusted);
        // A fresh token extends the window; an expired one may be redeemed again.
        assert_eq!(w.claim(&redeem("K", "totp:4", 170)), MfaOutcome::Redeemed);
        assert_eq!(w.claim(&check(229)), MfaOutcome::Trusted);
        assert_eq!(w.claim(&redeem("K", "totp:3", 190)), MfaOutcome::Redeemed);
        // Eviction forgets only what expired.
        w.evict_expired(225);
        assert_eq!(w.claim(&check(226)), MfaOutcome::Trusted);
        assert_eq!(w.claim(&redeem("K", "totp:4", 226)), MfaOutcome::Reused);
        assert_eq!(w.redeemed.len(), 2, "K2's expired token is gone");
        w.evict_expired(400);
        assert_eq!(w.claim(&check(400)), MfaOutcome::NotTrusted);
    }
}
