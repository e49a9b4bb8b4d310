//! The decision: whether one request may pass, in the order DESIGN.md §3 fixes.
//!
//! A pure function of the rule snapshot, the request, the peer address and the clock. The state
//! it needs (nonces, second-factor windows) is asked in one batch, and only once the signature has
//! been proved, so a forged request can never burn a legitimate client's nonce. In between,
//! [`begin`] and [`Pending::finish`] leave room for that batch to go to a shared store; [`decide`]
//! answers it from memory, and [`decide_traced`] (for `explain`) runs the very same steps and
//! also records each one. The usage table is read (for idle keys) from this process's view.

use std::borrow::Cow;
use std::net::IpAddr;
use subtle::ConstantTimeEq;

use crate::auth::{self, Credential, Family, ParsedAuth, RequestView, Scheme, Window};
use crate::error::{AllowlistLevel, Rejection};
use crate::policy::replay::NonceOutcome;
use crate::policy::source_ip::{self, SourceIp};
use crate::policy::{idle, mfa};
use crate::rules::{
    AccessKey, KeyStatus, Origin, Route, RuleMode, ServiceRisk, Snapshot, UnsignedBodyPolicy,
};
use crate::state::{Claims, NonceClaim, Outcome, StateView, Unavailable};
use crate::time::UnixSeconds;

/// A shadow rule that would have refused the request.
#[derive(Debug, Clone)]
pub struct WouldDeny<'s> {
    pub rejection: Rejection,
    pub rule: Option<&'s Origin>,
}

/// What was decided and what was learned on the way (for forwarding, metrics and audit).
#[derive(Debug)]
pub struct Decision<'s, 'r> {
    pub route: Option<&'s Route>,
    pub key: Option<&'s AccessKey>,
    pub source: SourceIp,
    pub scheme: Option<Scheme>,
    pub action: Option<Cow<'r, str>>,
    pub result: Result<(), Rejection>,
    /// The rule file and line that decided a refusal, when one rule did.
    pub deciding_rule: Option<&'s Origin>,
    /// Shadow rules that would have refused this request; empty (and unallocated) normally.
    pub would_deny: Vec<WouldDeny<'s>>,
}

/// How one step of the decision went, for `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepVerdict {
    Pass,
    Refuse,
    /// A shadow rule that would refuse; the request continues.
    WouldRefuse,
    /// Not applicable to this request.
    Skip,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: &'static str,
    pub verdict: StepVerdict,
    pub detail: String,
    pub rule: Option<Origin>,
}

/// Records steps when explaining; does nothing (and builds no strings) when serving.
struct Trace<'t>(Option<&'t mut Vec<Step>>);

impl Trace<'_> {
    fn note(
        &mut self,
        name: &'static str,
        verdict: StepVerdict,
        detail: impl FnOnce() -> String,
        rule: Option<&Origin>,
    ) {
        if let Some(steps) = self.0.as_deref_mut() {
            steps.push(Step {
                name,
                verdict,
                detail: detail(),
                rule: rule.cloned(),
            });
        }
    }
    fn on(&self) -> bool {
        self.0.is_some()
    }
}

/// Runs the full decision for one request, answering its state claims from `state` at once.
pub fn decide<'s, 'r, S: StateView + ?Sized>(
    snap: &'s Snapshot,
    req: &RequestView<'r>,
    peer: IpAddr,
    now: UnixSeconds,
    state: &S,
) -> Decision<'s, 'r> {
    let pending = begin(snap, req, peer, now, state);
    let outcome = state.claim_now(&pending.claims());
    pending.finish(Ok(outcome))
}

/// [`decide`], recording every step (with the canonical request or string to sign of the
/// signature step) into `steps`.
pub fn decide_traced<'s, 'r, S: StateView + ?Sized>(
    snap: &'s Snapshot,
    req: &RequestView<'r>,
    peer: IpAddr,
    now: UnixSeconds,
    state: &S,
    steps: &mut Vec<Step>,
) -> Decision<'s, 'r> {
    let pending = run_begin(snap, req, peer, now, state, Trace(Some(steps)));
    let outcome = state.claim_now(&pending.claims());
    pending.finish(Ok(outcome))
}

/// The first half of the decision, up to what needs the state: everything that can be judged
/// from the snapshot and the request alone (steps 1 to 6). The server asks a shared store for
/// [`Pending::claims`] (one round trip) and hands the answer to [`Pending::finish`].
pub fn begin<'s, 'r, S: StateView + ?Sized>(
    snap: &'s Snapshot,
    req: &RequestView<'r>,
    peer: IpAddr,
    now: UnixSeconds,
    state: &S,
) -> Pending<'s, 'r, 'static> {
    run_begin(snap, req, peer, now, state, Trace(None))
}

/// A decision waiting for the state's answer.
pub struct Pending<'s, 'r, 't> {
    snap: &'s Snapshot,
    now: UnixSeconds,
    d: Decision<'s, 'r>,
    /// `None` when the first half already refused.
    front: Option<Front<'s, 'r>>,
    trace: Trace<'t>,
}

/// What the first half learned and the second half needs.
struct Front<'s, 'r> {
    route: &'s Route,
    key: &'s AccessKey,
    auth: ParsedAuth<'r>,
    nonce_expires: Option<UnixSeconds>,
    /// For a critical operation: what it needs, and the `[[critical]]` entry that says so.
    mfa: Option<(mfa::Assessment, &'s ServiceRisk)>,
}

impl<'s, 'r> Pending<'s, 'r, '_> {
    /// What to ask the state; empty when the request is refused already.
    pub fn claims(&self) -> Claims<'_> {
        let Some(f) = &self.front else {
            return Claims::default();
        };
        let key_id = f.key.id.as_str();
        Claims {
            nonce: f
                .auth
                .nonce
                .as_deref()
                .zip(f.nonce_expires)
                .map(|(nonce, expires)| NonceClaim {
                    key_id,
                    nonce,
                    now: self.now,
                    expires,
                }),
            mfa: f.mfa.as_ref().and_then(|(a, _)| a.claim(key_id, self.now)),
        }
    }

    /// Completes the decision with the state's answer to [`Pending::claims`].
    pub fn finish(mut self, outcome: Result<Outcome, Unavailable>) -> Decision<'s, 'r> {
        if let Some(front) = self.front.take() {
            self.d.result = run_finish(
                self.snap,
                front,
                outcome,
                self.now,
                &mut self.d,
                &mut self.trace,
            );
        }
        self.d
    }
}

fn run_begin<'s, 'r, 't, S: StateView + ?Sized>(
    snap: &'s Snapshot,
    req: &RequestView<'r>,
    peer: IpAddr,
    now: UnixSeconds,
    state: &S,
    mut trace: Trace<'t>,
) -> Pending<'s, 'r, 't> {
    let mut d = Decision {
        route: None,
        key: None,
        source: source_ip::resolve(peer, req.headers, &snap.settings.trusted_proxies),
        scheme: None,
        action: None,
        result: Ok(()),
        deciding_rule: None,
        would_deny: Vec::new(),
    };
    let source = d.source;
    trace.note(
        "source",
        StepVerdict::Pass,
        || format!("{source:?} (peer {peer})"),
        None,
    );
    let front = match run_front(snap, req, now, state, &mut d, &mut trace) {
        Ok(f) => Some(f),
        Err(e) => {
            d.result = Err(e);
            None
        }
    };
    Pending {
        snap,
        now,
        d,
        front,
        trace,
    }
}

fn run_front<'s, 'r, S: StateView + ?Sized>(
    snap: &'s Snapshot,
    req: &RequestView<'r>,
    now: UnixSeconds,
    state: &S,
    d: &mut Decision<'s, 'r>,
    trace: &mut Trace<'_>,
) -> Result<Front<'s, 'r>, Rejection> {
    // 1. Route. What is routed (and judged) must be what the upstream executes, so a target
    //    whose meaning depends on how the upstream normalises it is refused before routing.
    if let Some(why) = target_problem(req) {
        trace.note(
            "route",
            StepVerdict::Refuse,
            || format!("{why}: {} {}", req.path, req.query),
            None,
        );
        return Err(Rejection::BadRequest(Cow::Borrowed(why)));
    }
    let Some(route) = snap.route(req.host, req.path) else {
        trace.note(
            "route",
            StepVerdict::Refuse,
            || format!("no route for host {:?} and path {}", req.host, req.path),
            None,
        );
        return Err(Rejection::InvalidRoute);
    };
    d.route = Some(route);
    trace.note(
        "route",
        StepVerdict::Pass,
        || format!("service {} → {}", route.service, route.upstream),
        Some(&route.origin),
    );

    // 2. Signature scheme and credential. The action the gateway judges must be the one the
    //    upstream will execute: the route's API speaks one family of signatures, a SigV4 scope
    //    must name the route's service, and the action may not be named twice differently.
    let auth: ParsedAuth<'r> = match auth::parse(req) {
        Ok(a) => a,
        Err(e) => {
            trace.note("scheme", StepVerdict::Refuse, || e.to_string(), None);
            return Err(e);
        }
    };
    d.scheme = Some(auth.scheme);
    d.action = Some(auth.action.clone());
    let parsed = auth.scheme.family() == route.family
        && match &auth.credential {
            Credential::SigV4(c) => c.service() == Snapshot::signing_service(route),
            _ => true,
        };
    let consistency = if parsed {
        auth::check_action_consistency(req, &auth)
    } else if auth.scheme.family() != route.family {
        Err(Rejection::IncompleteSignature(Cow::Borrowed(
            match route.family {
                Family::Alibaba => "this endpoint accepts Alibaba Cloud signatures only",
                Family::Aws => "this endpoint accepts AWS Signature Version 4 only",
            },
        )))
    } else {
        Err(Rejection::IncompleteSignature(Cow::Borrowed(
            "the credential scope names a different service than this endpoint serves",
        )))
    };
    if let Err(e) = consistency {
        trace.note(
            "scheme",
            StepVerdict::Refuse,
            || e.to_string(),
            Some(&route.origin),
        );
        d.deciding_rule = Some(&route.origin);
        return Err(e);
    }
    trace.note(
        "scheme",
        StepVerdict::Pass,
        || {
            format!(
                "{} for key {}, action {}",
                auth.scheme.as_str(),
                auth.key_id,
                auth.action
            )
        },
        None,
    );

    // 3. Key: known, enabled, and for temporary credentials the right, unexpired token.
    let Some(key) = snap.key(&auth.key_id) else {
        trace.note(
            "key",
            StepVerdict::Refuse,
            || format!("no access key {} in the rules", auth.key_id),
            None,
        );
        return Err(Rejection::KeyNotFound);
    };
    d.key = Some(key);
    let key_check = if key.status == KeyStatus::Disabled {
        Err(Rejection::KeyDisabled)
    } else {
        idle::check(
            key,
            || state.last_used(&key.id),
            state.tracking_since(),
            snap.settings.max_idle_days,
            now,
        )
        .and_then(|()| check_security_token(key, auth.security_token.as_deref(), now))
    };
    if let Err(e) = key_check {
        trace.note(
            "key",
            StepVerdict::Refuse,
            || e.to_string(),
            Some(&key.origin),
        );
        d.deciding_rule = Some(&key.origin);
        return Err(e);
    }
    trace.note(
        "key",
        StepVerdict::Pass,
        || {
            format!(
                "account {}, user {}",
                key.account.id,
                key.user.as_ref().map_or("-", |u| u.name.as_str())
            )
        },
        Some(&key.origin),
    );

    // 4. Source IP against every allowlist that is set.
    check_allowlists(key, d, trace)?;

    // 5. Time window.
    let skew = snap.settings.clock_skew.as_secs() as i64;
    let signed_at = match auth.window {
        Window::SignedAt(ts) if (now - ts).abs() <= skew => ts,
        Window::Presigned { signed_at, expires }
            if now >= signed_at - skew && now <= signed_at + expires =>
        {
            signed_at
        }
        window => {
            let e = match window {
                Window::Malformed => Rejection::TimestampMalformed,
                _ => Rejection::TimestampExpired,
            };
            trace.note(
                "time",
                StepVerdict::Refuse,
                || format!("{window:?}, now {now}, clock_skew {skew}s"),
                None,
            );
            return Err(e);
        }
    };
    trace.note(
        "time",
        StepVerdict::Pass,
        || format!("signed at {signed_at}, now {now}, clock_skew {skew}s"),
        None,
    );

    // 6. Body hash, then signature. A body the scheme leaves unsigned could be swapped in
    //    transit, so the settings decide whether such a request may do anything risky.
    let mut transcript = trace.on().then(Vec::new);
    let verified = auth.verify(req, key, transcript.as_mut());
    let signed_text = || {
        let t = transcript.as_deref().unwrap_or_default();
        match auth.credential {
            Credential::Rpc(_) | Credential::Roa(_) => {
                format!("string to sign:\n{}", auth.string_to_sign(t))
            }
            _ => format!(
                "canonical request:\n{}\nstring to sign:\n{}",
                String::from_utf8_lossy(t),
                auth.string_to_sign(t)
            ),
        }
    };
    match verified {
        Ok(()) => trace.note(
            "signature",
            StepVerdict::Pass,
            || format!("verified; {}", signed_text()),
            None,
        ),
        Err(e) => {
            trace.note(
                "signature",
                StepVerdict::Refuse,
                || format!("{}; {}", e.message(), signed_text()),
                None,
            );
            return Err(e);
        }
    }
    if !auth.body_signed && !req.body.is_empty() {
        let high_risk = || {
            snap.service(&route.service)
                .is_some_and(|risk| risk.is_high_risk(&auth.action))
        };
        let refuse = match snap.settings.unsigned_body {
            UnsignedBodyPolicy::Allow => false,
            UnsignedBodyPolicy::Refuse => true,
            UnsignedBodyPolicy::RefuseHighRisk => high_risk(),
        };
        if refuse {
            trace.note(
                "unsigned body",
                StepVerdict::Refuse,
                || format!("{:?}", snap.settings.unsigned_body),
                None,
            );
            return Err(Rejection::UnsignedBody);
        }
        trace.note(
            "unsigned body",
            StepVerdict::Pass,
            || format!("{:?}", snap.settings.unsigned_body),
            None,
        );
    }

    // What the second half will ask the state: the nonce's lifetime (as long as the request's
    // timestamp stays acceptable, whatever nonce_ttl says, or a replay could slip in after the
    // entry expired) and, for a critical operation, the second factor.
    let ttl = snap.settings.nonce_ttl.as_secs() as i64;
    let nonce_expires = auth
        .nonce
        .is_some()
        .then(|| (now + ttl).max(signed_at + skew) + 1);
    let mfa = mfa::assess_rule(snap, route, key, &auth, req, now);
    Ok(Front {
        route,
        key,
        auth,
        nonce_expires,
        mfa,
    })
}

fn run_finish<'s>(
    snap: &'s Snapshot,
    front: Front<'s, '_>,
    outcome: Result<Outcome, Unavailable>,
    now: UnixSeconds,
    d: &mut Decision<'s, '_>,
    trace: &mut Trace<'_>,
) -> Result<(), Rejection> {
    let Front {
        route,
        key,
        auth,
        nonce_expires,
        mfa,
    } = front;
    let Ok(outcome) = outcome else {
        trace.note(
            "state",
            StepVerdict::Refuse,
            || "the shared state store did not answer (fail-closed)".into(),
            None,
        );
        return Err(Rejection::StateUnavailable);
    };
    let _ = now;

    // 7. Nonce, recorded only now that the request is proved to come from the key's holder.
    match &auth.nonce {
        Some(nonce) => {
            let expires = nonce_expires.unwrap_or_default();
            match outcome.nonce {
                // A backend that left the claim unanswered cannot vouch for the nonce.
                None => return Err(Rejection::StateUnavailable),
                Some(NonceOutcome::Fresh) => {}
                Some(NonceOutcome::Replayed) => {
                    trace.note(
                        "nonce",
                        StepVerdict::Refuse,
                        || format!("{nonce} was used already"),
                        None,
                    );
                    return Err(Rejection::NonceUsed);
                }
                Some(NonceOutcome::Full) => {
                    trace.note(
                        "nonce",
                        StepVerdict::Refuse,
                        || "the nonce cache is at its bound (--max-nonces)".to_string(),
                        None,
                    );
                    crate::metrics::overloaded("nonce_cache_full");
                    return Err(Rejection::Overloaded);
                }
            }
            trace.note(
                "nonce",
                StepVerdict::Pass,
                || format!("{nonce} recorded until {expires}"),
                None,
            );
        }
        None => trace.note(
            "nonce",
            StepVerdict::Skip,
            || "the scheme carries no nonce".into(),
            None,
        ),
    }

    // 8. Leaked key × high-risk action of the route's service.
    let risk = snap.service(&route.service);
    match (&key.leaked, risk) {
        (Some(leak), Some(risk)) if risk.is_high_risk(&auth.action) => {
            let rule = &leak.origin;
            if leak.mode == RuleMode::Enforce && risk.mode == RuleMode::Enforce {
                trace.note(
                    "leaked key",
                    StepVerdict::Refuse,
                    || format!("{} is high-risk for {}", auth.action, route.service),
                    Some(rule),
                );
                d.deciding_rule = Some(rule);
                return Err(Rejection::LeakedKeyHighRisk);
            }
            trace.note(
                "leaked key",
                StepVerdict::WouldRefuse,
                || {
                    format!(
                        "{} is high-risk for {} (shadow)",
                        auth.action, route.service
                    )
                },
                Some(rule),
            );
            d.would_deny.push(WouldDeny {
                rejection: Rejection::LeakedKeyHighRisk,
                rule: Some(rule),
            });
        }
        (Some(leak), _) => trace.note(
            "leaked key",
            StepVerdict::Pass,
            || format!("{} is not high-risk for {}", auth.action, route.service),
            Some(&leak.origin),
        ),
        (None, _) => trace.note(
            "leaked key",
            StepVerdict::Skip,
            || "the key is not flagged".into(),
            None,
        ),
    }
    // 9. Critical operation: a second factor, fresh or inside its trust window.
    if let Some((assessment, rule)) = &mfa {
        let verdict = mfa::judge(assessment, outcome.mfa);
        crate::metrics::mfa(match (&verdict, outcome.mfa) {
            (Ok(()), Some(crate::state::MfaOutcome::Redeemed)) => "redeemed",
            (Ok(()), _) => "trusted",
            (Err(Rejection::MfaRequired | Rejection::MfaNotSetUp), _) => "required",
            (Err(_), Some(crate::state::MfaOutcome::Reused)) => "reused",
            (Err(_), _) => "invalid",
        });
        match verdict {
            Ok(()) => trace.note(
                "second factor",
                StepVerdict::Pass,
                || {
                    format!(
                        "{} is critical for {}; {:?}",
                        auth.action, route.service, outcome.mfa
                    )
                },
                rule.origin.as_ref(),
            ),
            Err(e) if rule.mode == RuleMode::Shadow => {
                trace.note(
                    "second factor",
                    StepVerdict::WouldRefuse,
                    || {
                        format!(
                            "{} is critical for {} (shadow): {e}",
                            auth.action, route.service
                        )
                    },
                    rule.origin.as_ref(),
                );
                d.would_deny.push(WouldDeny {
                    rejection: e,
                    rule: rule.origin.as_ref(),
                });
            }
            Err(e) => {
                trace.note(
                    "second factor",
                    StepVerdict::Refuse,
                    || format!("{} is critical for {}: {e}", auth.action, route.service),
                    rule.origin.as_ref(),
                );
                d.deciding_rule = rule.origin.as_ref();
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Why a request cannot be judged safely, if it cannot.
///
/// * A `.` or `..` path segment, raw or percent-encoded, or hidden behind an encoded `/`, a `\`
///   or a `;` parameter (`/ecs/%2e%2e/ram`, `/ecs/x%2F..%2Fram`, `/ecs/..;/ram`): the gateway
///   routes the path as sent, but an upstream (or a proxy after the gateway) that resolves dot
///   segments would execute another route's API, judged under this one's service. No API needs
///   such a path, so it is refused rather than normalised.
/// * A `%` not followed by two hex digits, in the path or the query: upstreams disagree on what
///   it means, and the signature schemes read it literally.
/// * An encoded NUL in the path, which C-based servers truncate at.
fn target_problem(req: &RequestView<'_>) -> Option<&'static str> {
    // Most targets have no escape and no dot at all; a byte search (memchr) settles those
    // before the slower per-byte and per-segment checks below.
    let malformed_escape = |s: &str| {
        let b = s.as_bytes();
        b.contains(&b'%')
            && b.iter().enumerate().any(|(i, &c)| {
                c == b'%'
                    && !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                        && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
            })
    };
    if malformed_escape(req.path) || malformed_escape(req.query) {
        return Some("a `%` in the path or query is not followed by two hex digits");
    }
    let path = req.path.as_bytes();
    let escaped = path.contains(&b'%');
    if escaped && path.windows(3).any(|w| w.eq_ignore_ascii_case(b"%00")) {
        return Some("the path contains an encoded NUL");
    }
    // A `.` segment needs a `.`, literal or escaped.
    let dot_segment = (escaped || path.contains(&b'.'))
        && path.split(|&b| b == b'/').any(|segment| {
            auth::encoding::percent_decode(segment, false)
                .split(|&b| b == b'/' || b == b'\\')
                .any(|piece| {
                    let name = piece.split(|&b| b == b';').next().unwrap_or_default();
                    name == b"." || name == b".."
                })
        });
    if dot_segment {
        return Some("the path contains a `.` or `..` segment");
    }
    None
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

fn check_allowlists<'s>(
    key: &'s AccessKey,
    d: &mut Decision<'s, '_>,
    trace: &mut Trace<'_>,
) -> Result<(), Rejection> {
    let levels = [
        (
            AllowlistLevel::Account,
            Some((
                &key.account.allow,
                key.account.allow_mode,
                &key.account.origin,
            )),
        ),
        (
            AllowlistLevel::User,
            key.user
                .as_ref()
                .map(|u| (&u.allow, u.allow_mode, &u.origin)),
        ),
        (
            AllowlistLevel::Key,
            Some((&key.allow, key.allow_mode, &key.origin)),
        ),
    ];
    let name = |level: AllowlistLevel| match level {
        AllowlistLevel::Account => "allowlist: account",
        AllowlistLevel::User => "allowlist: user",
        AllowlistLevel::Key => "allowlist: key",
    };
    for (level, set) in levels {
        let Some((set, mode, origin)) = set else {
            trace.note(
                name(level),
                StepVerdict::Skip,
                || "the key belongs to no user".into(),
                None,
            );
            continue;
        };
        if set.is_empty() {
            trace.note(
                name(level),
                StepVerdict::Skip,
                || "no list: every address is admitted".into(),
                Some(origin),
            );
            continue;
        }
        let source = d.source;
        if source.ip().is_some_and(|ip| set.contains(ip)) {
            trace.note(
                name(level),
                StepVerdict::Pass,
                || format!("{source:?} is in the list ({} networks)", set.len()),
                Some(origin),
            );
            continue;
        }
        if mode == RuleMode::Shadow {
            trace.note(
                name(level),
                StepVerdict::WouldRefuse,
                || format!("{source:?} is not in the list (shadow)"),
                Some(origin),
            );
            d.would_deny.push(WouldDeny {
                rejection: Rejection::SourceIpNotAllowed(level),
                rule: Some(origin),
            });
            continue;
        }
        trace.note(
            name(level),
            StepVerdict::Refuse,
            || format!("{source:?} is not in the list"),
            Some(origin),
        );
        d.deciding_rule = Some(origin);
        return Err(Rejection::SourceIpNotAllowed(level));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(path: &str, query: &str) -> Option<&'static str> {
        let map = http::HeaderMap::new();
        target_problem(&RequestView {
            method: "GET",
            path,
            query,
            host: Some("h"),
            headers: &map,
            body: b"",
        })
    }

    #[test]
    fn dot_segments_in_any_spelling_are_refused() {
        for path in [
            "/ecs/../ram",
            "/ecs/./x",
            "/..",
            "/ecs/%2e%2e/ram",
            "/ecs/%2E%2e/ram",
            "/ecs/%2e/x",
            "/ecs/.%2e/ram",
            "/ecs/x%2F..%2Fram",
            "/ecs/x%2f.",
            "/ecs/x%5C..%5Cram",
            "/ecs\\..\\ram",
            "/ecs/..;/ram",
            "/ecs/.;x=1/y",
        ] {
            assert!(problem(path, "").is_some(), "{path}");
        }
        for path in [
            "/",
            "",
            "/ecs//x",
            "/ecs/.../x",
            "/ecs/..a/x",
            "/ecs/a.b",
            "/ecs/.hidden",
            "/ecs/%252e%252e/x",
            "/ecs/%e2%82",
        ] {
            assert_eq!(problem(path, ""), None, "{path}");
        }
    }

    #[test]
    fn malformed_escapes_and_nul_are_refused() {
        for (path, query) in [
            ("/a%", ""),
            ("/a%zz", ""),
            ("/a%2", ""),
            ("/", "a=%"),
            ("/", "a=%g1"),
            ("/x%00y", ""),
        ] {
            assert!(problem(path, query).is_some(), "{path}?{query}");
        }
        assert_eq!(problem("/", "a=%00&b=%7E"), None);
    }
}
