//! Critical-operation protection: which requests need a second factor, and whether the one they
//! carry is good. Pure; the state (trust windows, redeemed codes) is asked through
//! [`crate::state::MfaClaim`].

use crate::auth::{ParsedAuth, RequestView};
use crate::error::Rejection;
use crate::rules::{AccessKey, Route, Snapshot};
use crate::state::{MfaClaim, MfaOutcome};
use crate::time::UnixSeconds;

/// What a critical operation needs from the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    /// No code came: the key must be inside a trust window.
    Check,
    /// A code verified against the key's seed; `token` identifies its use.
    Redeem {
        token: String,
        token_expires: UnixSeconds,
        trust_until: UnixSeconds,
    },
    /// Refused whatever the state says (a wrong code, no second factor set up).
    Refuse(Rejection),
}

impl Assessment {
    pub fn claim<'a>(&'a self, key_id: &'a str, now: UnixSeconds) -> Option<MfaClaim<'a>> {
        match self {
            Assessment::Check => Some(MfaClaim::Check { key_id, now }),
            Assessment::Redeem {
                token,
                token_expires,
                trust_until,
            } => Some(MfaClaim::Redeem {
                key_id,
                token,
                now,
                token_expires: *token_expires,
                trust_until: *trust_until,
            }),
            Assessment::Refuse(_) => None,
        }
    }
}

/// `None` when the request is not a critical operation.
pub fn assess(
    _snap: &Snapshot,
    _route: &Route,
    _key: &AccessKey,
    _auth: &ParsedAuth<'_>,
    _req: &RequestView<'_>,
    _now: UnixSeconds,
) -> Option<Assessment> {
    None
}

/// The verdict, once the state has answered.
pub fn judge(a: &Assessment, outcome: Option<MfaOutcome>) -> Result<(), Rejection> {
    match (a, outcome) {
        (Assessment::Refuse(r), _) => Err(r.clone()),
        (_, Some(MfaOutcome::Trusted | MfaOutcome::Redeemed)) => Ok(()),
        (_, Some(MfaOutcome::Reused)) => Err(Rejection::MfaInvalid(
            "this code was used already; wait for the next one".into(),
        )),
        (Assessment::Redeem { .. }, _) => {
            Err(Rejection::MfaInvalid("the code was not accepted".into()))
        }
        (Assessment::Check, _) => Err(Rejection::MfaRequired),
    }
}
