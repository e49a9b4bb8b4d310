//! The decision: whether one request may pass, in the order DESIGN.md §3 fixes.
//!
//! A pure function of the rule snapshot, the request, the peer address and the clock. The only
//! state it touches is the nonce cache, and only once the signature has been proved, so a forged
//! request can never burn a legitimate client's nonce.

use std::borrow::Cow;
use std::net::IpAddr;
use subtle::ConstantTimeEq;

use crate::auth::{self, Credential, Family, ParsedAuth, RequestView, Scheme, Window};
use crate::error::{AllowlistLevel, Rejection};
use crate::policy::NonceCache;
use crate::policy::replay::NonceOutcome;
use crate::policy::source_ip::{self, SourceIp};
use crate::rules::{AccessKey, KeyStatus, Route, Snapshot, UnsignedBodyPolicy};
use crate::time::UnixSeconds;

/// What was decided and what was learned on the way (for forwarding, metrics and audit).
#[derive(Debug)]
pub struct Decision<'s, 'r> {
    pub route: Option<&'s Route>,
    pub key: Option<&'s AccessKey>,
    pub source: SourceIp,
    pub scheme: Option<Scheme>,
    pub action: Option<Cow<'r, str>>,
    pub result: Result<(), Rejection>,
}

/// Runs the full decision for one request.
pub fn decide<'s, 'r>(
    snap: &'s Snapshot,
    req: &RequestView<'r>,
    peer: IpAddr,
    now: UnixSeconds,
    nonces: &NonceCache,
) -> Decision<'s, 'r> {
    let mut d = Decision {
        route: None,
        key: None,
        source: source_ip::resolve(peer, req.headers, &snap.settings.trusted_proxies),
        scheme: None,
        action: None,
        result: Ok(()),
    };
    d.result = run(snap, req, now, nonces, &mut d);
    d
}

fn run<'s, 'r>(
    snap: &'s Snapshot,
    req: &RequestView<'r>,
    now: UnixSeconds,
    nonces: &NonceCache,
    d: &mut Decision<'s, 'r>,
) -> Result<(), Rejection> {
    // 1. Route.
    let route = snap
        .route(req.host, req.path)
        .ok_or(Rejection::InvalidRoute)?;
    d.route = Some(route);

    // 2. Signature scheme and credential. The action the gateway judges must be the one the
    //    upstream will execute: the route's API speaks one family of signatures, a SigV4 scope
    //    must name the route's service, and the action may not be named twice differently.
    let auth: ParsedAuth<'r> = auth::parse(req)?;
    d.scheme = Some(auth.scheme);
    d.action = Some(auth.action.clone());
    if auth.scheme.family() != route.family {
        return Err(Rejection::IncompleteSignature(Cow::Borrowed(
            match route.family {
                Family::Alibaba => "this endpoint accepts Alibaba Cloud signatures only",
                Family::Aws => "this endpoint accepts AWS Signature Version 4 only",
            },
        )));
    }
    if let Credential::SigV4(c) = &auth.credential
        && c.service() != Snapshot::signing_service(route)
    {
        return Err(Rejection::IncompleteSignature(Cow::Borrowed(
            "the credential scope names a different service than this endpoint serves",
        )));
    }
    auth::check_action_consistency(req, &auth)?;

    // 3. Key: known, enabled, and for temporary credentials the right, unexpired token.
    let key = snap.key(&auth.key_id).ok_or(Rejection::KeyNotFound)?;
    d.key = Some(key);
    if key.status == KeyStatus::Disabled {
        return Err(Rejection::KeyDisabled);
    }
    check_security_token(key, auth.security_token.as_deref(), now)?;

    // 4. Source IP against every allowlist that is set.
    check_allowlists(key, d.source)?;

    // 5. Time window.
    let skew = snap.settings.clock_skew.as_secs() as i64;
    let signed_at = match auth.window {
        Window::SignedAt(ts) if (now - ts).abs() <= skew => ts,
        Window::Presigned { signed_at, expires }
            if now >= signed_at - skew && now <= signed_at + expires =>
        {
            signed_at
        }
        Window::SignedAt(_) | Window::Presigned { .. } => return Err(Rejection::TimestampExpired),
        Window::Malformed => return Err(Rejection::TimestampMalformed),
    };

    // 6. Body hash, then signature. A body the scheme leaves unsigned could be swapped in
    //    transit, so the settings decide whether such a request may do anything risky.
    auth.verify(req, key, None)?;
    if !auth.body_signed && !req.body.is_empty() {
        let high_risk = || {
            snap.service(&route.service)
                .is_some_and(|risk| risk.is_high_risk(&auth.action))
        };
        match snap.settings.unsigned_body {
            UnsignedBodyPolicy::Allow => {}
            UnsignedBodyPolicy::Refuse => return Err(Rejection::UnsignedBody),
            UnsignedBodyPolicy::RefuseHighRisk if high_risk() => {
                return Err(Rejection::UnsignedBody);
            }
            UnsignedBodyPolicy::RefuseHighRisk => {}
        }
    }

    // 7. Nonce, only now that the request is proved to come from the key's holder. It must be
    //    remembered for as long as the request's timestamp stays acceptable, whatever nonce_ttl
    //    says, or a replay could slip in after the entry expired.
    if let Some(nonce) = &auth.nonce {
        let ttl = snap.settings.nonce_ttl.as_secs() as i64;
        let expires = (now + ttl).max(signed_at + skew) + 1;
        if nonces.check_and_record(key.id.as_str(), nonce, now, expires) == NonceOutcome::Replayed {
            return Err(Rejection::NonceUsed);
        }
    }

    // 8. Leaked key × high-risk action of the route's service.
    if key.leaked.is_some()
        && snap
            .service(&route.service)
            .is_some_and(|risk| risk.is_high_risk(&auth.action))
    {
        return Err(Rejection::LeakedKeyHighRisk);
    }
    Ok(())
}

/// Temporary keys need their own token, unexpired; permanent keys carry none.
fn check_security_token(
    key: &AccessKey,
    token: Option<&str>,
    now: UnixSeconds,
) -> Result<(), Rejection> {
    match (&key.temporary, token) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(Rejection::SecurityTokenMismatch),
        (Some(_), None) => Err(Rejection::SecurityTokenMissing),
        (Some(t), Some(token)) => {
            let digest: [u8; 32] =
                sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(token))
                    .into();
            if !bool::from(digest.ct_eq(&t.token_sha256)) {
                return Err(Rejection::SecurityTokenMismatch);
            }
            if now > t.expires {
                return Err(Rejection::SecurityTokenExpired);
            }
            Ok(())
        }
    }
}

fn check_allowlists(key: &AccessKey, source: SourceIp) -> Result<(), Rejection> {
    let levels = [
        (AllowlistLevel::Account, Some(&key.account.allow)),
        (AllowlistLevel::User, key.user.as_ref().map(|u| &u.allow)),
        (AllowlistLevel::Key, Some(&key.allow)),
    ];
    for (level, set) in levels {
        let Some(set) = set else { continue };
        if set.is_empty() {
            continue;
        }
        match source.ip() {
            Some(ip) if set.contains(ip) => {}
            _ => return Err(Rejection::SourceIpNotAllowed(level)),
        }
    }
    Ok(())
}
