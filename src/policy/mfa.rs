//! Critical-operation protection: which requests need a second factor, and whether the one they
//! carry is good. Pure; the state (trust windows, redeemed codes) is asked through
//! [`crate::state::MfaClaim`].

// Declared here rather than in policy/mod.rs, which this change does not own; the file sits
// beside this one.
pub use super::totp;

use http::HeaderName;
use std::borrow::Cow;

use crate::auth::{Credential, ParsedAuth, RequestView};
use crate::error::Rejection;
use crate::rules::{AccessKey, Route, RuleMode, ServiceRisk, Snapshot};
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

/// `None` when the request is not a critical operation, or its `[[critical]]` entry is in shadow
/// mode (see [`assess_rule`]).
pub fn assess(
    snap: &Snapshot,
    route: &Route,
    key: &AccessKey,
    auth: &ParsedAuth<'_>,
    req: &RequestView<'_>,
    now: UnixSeconds,
) -> Option<Assessment> {
    assess_rule(snap, route, key, auth, req, now)
        .and_then(|(a, rule)| (rule.mode == RuleMode::Enforce).then_some(a))
}

/// [`assess`] whatever the entry's mode, with the `[[critical]]` entry that made the request
/// critical (its mode and origin): for a decision that records shadow entries' would-deny.
pub fn assess_rule<'s>(
    snap: &'s Snapshot,
    route: &Route,
    key: &AccessKey,
    auth: &ParsedAuth<'_>,
    req: &RequestView<'_>,
    now: UnixSeconds,
) -> Option<(Assessment, &'s ServiceRisk)> {
    let rule = snap.critical(&route.service)?;
    if !rule.is_high_risk(&auth.action) {
        return None;
    }
    Some((assess_code(snap, key, auth, req, now), rule))
}

/// The header carrying the code, as documented.
pub static CODE_HEADER: HeaderName = HeaderName::from_static("x-akgate-mfa-code");
/// The same, under the `x-acs-` prefix: the official V3 SDKs (tea-openapi) sign only `x-acs-*`,
/// `host` and `content-type`, and ROA v1 signs every `x-acs-*` header.
pub static ACS_CODE_HEADER: HeaderName = HeaderName::from_static("x-acs-akgate-mfa-code");
/// RPC v1 signs parameters, not headers: the code travels as this (signed) parameter.
pub const CODE_PARAMETER: &str = "AkgateMfaCode";

fn invalid(why: &'static str) -> Assessment {
    Assessment::Refuse(Rejection::MfaInvalid(Cow::Borrowed(why)))
}

fn assess_code(
    snap: &Snapshot,
    key: &AccessKey,
    auth: &ParsedAuth<'_>,
    req: &RequestView<'_>,
    now: UnixSeconds,
) -> Assessment {
    let Some(seed) = &key.totp else {
        return Assessment::Refuse(Rejection::MfaNotSetUp);
    };
    let code = match sent_code(auth, req) {
        Ok(None) => return Assessment::Check,
        Ok(Some(code)) => code,
        Err(a) => return a,
    };
    let code = code.trim_matches([' ', '\t']);
    if code.len() != totp::DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return invalid("the code must be 6 digits");
    }
    match seed.verify(code, now, totp::DIGITS) {
        Some(step) => Assessment::Redeem {
            // One use per step: the code of that step cannot be redeemed again while it is
            // accepted. One more step of margin covers gateways of a fleet whose clocks differ.
            token: format!("totp:{step}"),
            token_expires: totp::accepted_until(step) + totp::STEP,
            trust_until: now.saturating_add(snap.settings.mfa_trust_window.as_secs() as i64),
        },
        None => invalid("it does not match the key's authenticator (check the device's clock)"),
    }
}

/// The code the request carries, if it carries exactly one, covered by its signature; otherwise
/// the refusal to give.
fn sent_code<'r>(
    auth: &'r ParsedAuth<'_>,
    req: &RequestView<'r>,
) -> Result<Option<Cow<'r, str>>, Assessment> {
    let mut found: Option<(Cow<'r, str>, bool)> = None;
    let mut count = 0usize;
    for name in [&CODE_HEADER, &ACS_CODE_HEADER] {
        for value in req.headers.get_all(name) {
            count += 1;
            let text = value
                .to_str()
                .map_err(|_| invalid("the code header is not ASCII"))?;
            found = Some((Cow::Borrowed(text), header_signed(auth, name)));
        }
    }
    if let Credential::Rpc(c) = &auth.credential
        && let Some((_, v)) = c
            .params
            .iter()
            .find(|(k, _)| k.as_ref() == CODE_PARAMETER.as_bytes())
    {
        count += 1;
        let text = std::str::from_utf8(v).map_err(|_| invalid("the code is not 6 digits"))?;
        // Every RPC v1 parameter is signed.
        found = Some((Cow::Owned(text.to_string()), true));
    }
    match (count, found) {
        (0, _) | (_, None) => Ok(None),
        (1, Some((code, true))) => Ok(Some(code)),
        (1, Some((_, false))) => Err(invalid(match auth.credential {
            Credential::Rpc(_) => {
                "RPC v1 signs no headers, so the code header must be signed another way: send the code as the AkgateMfaCode parameter"
            }
            Credential::Roa(_) => {
                "the code header must be signed: ROA v1 signs x-acs-* headers, so send it as x-acs-akgate-mfa-code"
            }
            _ => "the code header must be signed: list it in SignedHeaders",
        })),
        _ => Err(invalid("the code is sent more than once")),
    }
}

/// Whether the scheme's signature covers header `name`.
fn header_signed(auth: &ParsedAuth<'_>, name: &HeaderName) -> bool {
    let listed = |list: &str| list.split(';').any(|n| n == name.as_str());
    match &auth.credential {
        Credential::Acs3(c) => listed(c.signed_headers),
        Credential::SigV4(c) => listed(&c.signed_headers),
        // ROA v1 signs every x-acs-* header and no other custom one.
        Credential::Roa(_) => name.as_str().starts_with("x-acs-"),
        Credential::Rpc(_) => false,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let redeem = Assessment::Redeem {
            token: "totp:1".into(),
            token_expires: 90,
            trust_until: 900,
        };
        let refuse = Assessment::Refuse(Rejection::MfaRequired);
        assert_eq!(judge(&Assessment::Check, Some(MfaOutcome::Trusted)), Ok(()));
        assert_eq!(
            judge(&Assessment::Check, Some(MfaOutcome::NotTrusted)),
            Err(Rejection::MfaRequired)
        );
        // A store that left the claim unanswered vouches for nothing.
        assert_eq!(judge(&Assessment::Check, None), Err(Rejection::MfaRequired));
        assert!(matches!(
            judge(&redeem, None),
            Err(Rejection::MfaInvalid(_))
        ));
        assert_eq!(judge(&redeem, Some(MfaOutcome::Redeemed)), Ok(()));
        assert!(matches!(
            judge(&redeem, Some(MfaOutcome::Reused)),
            Err(Rejection::MfaInvalid(m)) if m.contains("used already")
        ));
        // A refusal stands whatever the state says, and asks it nothing.
        assert_eq!(
            judge(&refuse, Some(MfaOutcome::Trusted)),
            Err(Rejection::MfaRequired)
        );
        assert!(refuse.claim("K", 1).is_none());
        assert!(matches!(
            redeem.claim("K", 1),
            Some(MfaClaim::Redeem {
                token: "totp:1",
                trust_until: 900,
                ..
            })
        ));
    }
}
