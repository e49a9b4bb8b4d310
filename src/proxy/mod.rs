//! The public listener: read a request, decide, forward or refuse.

pub mod aws;
mod body;
pub mod forward;
mod front;
mod h1;
pub mod limits;
pub mod pool;
pub mod response;
pub mod server;
pub mod tls;
pub mod write_timeout;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use crate::audit::{self, AuditLog};
use crate::auth::RequestView;
use crate::error::Rejection;
use crate::policy::bruteforce;
use crate::policy::source_ip::{self, SourceIp};
use crate::rules::{AccessKey, Origin, RulesStore};
use crate::state::{State, Use};
use crate::time::Clock;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub use body::Body;

/// A request body [`Gateway::handle`] reads: hyper's, or one the lean HTTP/1.1 path already
/// holds in memory.
pub trait RequestBody: hyper::body::Body<Data = Bytes> + Send + Unpin {
    /// Nothing left to wait for: reading it needs no timer.
    fn complete(&self) -> bool;
}

impl RequestBody for Incoming {
    fn complete(&self) -> bool {
        hyper::body::Body::is_end_stream(self)
    }
}

impl RequestBody for http_body_util::Full<Bytes> {
    fn complete(&self) -> bool {
        true
    }
}

/// Everything a request needs, shared by all connections.
pub struct Gateway {
    pub rules: Arc<RulesStore>,
    /// Nonces, usage, second-factor windows: outside the snapshot, maybe shared by a fleet.
    pub state: Arc<State>,
    pub clock: Arc<dyn Clock>,
    pub audit: AuditLog,
    client: forward::UpstreamClient,
    ids: RequestIds,
    limits: limits::Limits,
    gate: limits::RequestGate,
    budget: limits::BodyBudget,
}

/// What the audit line needs from a decision, copied out before the request's buffers go.
struct Learned<'s> {
    key: Option<&'s AccessKey>,
    source: SourceIp,
    scheme: Option<crate::auth::Scheme>,
    action: Option<String>,
    rule: Option<&'s Origin>,
    would_deny: Vec<(&'static str, Option<&'s Origin>)>,
}

impl Gateway {
    /// A gateway that writes no audit lines (see [`Gateway::with_audit`]).
    pub fn new(rules: Arc<RulesStore>, state: Arc<State>, clock: Arc<dyn Clock>) -> Self {
        Gateway {
            rules,
            state,
            clock,
            audit: AuditLog::off(),
            client: forward::client(),
            ids: RequestIds::new(),
            gate: limits::RequestGate::new(&limits::Limits::default()),
            budget: limits::BodyBudget::new(&limits::Limits::default()),
            limits: limits::Limits::default(),
        }
    }

    pub fn with_limits(mut self, limits: limits::Limits) -> Self {
        self.gate = limits::RequestGate::new(&limits);
        self.budget = limits::BodyBudget::new(&limits);
        self.limits = limits;
        self
    }

    /// The answer to every request on a connection over a connection cap: 503 in the caller's
    /// error shape, and the connection closed after it.
    pub fn refuse_overloaded<B>(&self, req: Request<B>) -> Response<Body> {
        crate::metrics::overloaded("connection_cap");
        let snap = self.rules.load();
        let (parts, _body) = req.into_parts();
        let host = request_host(&parts).ok().flatten();
        let route = snap.route(host, parts.uri.path());
        let shape = response::ErrorShape::of(&parts, route);
        let mut resp = response::error(&Rejection::Overloaded, shape, &self.ids.next(), host);
        resp.headers_mut()
            .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        resp
    }

    pub fn with_audit(mut self, audit: AuditLog) -> Self {
        self.audit = audit;
        self
    }

    pub async fn handle<B: RequestBody>(
        &self,
        req: Request<B>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let started = Instant::now();
        let snap = self.rules.load();
        let request_id = self.ids.next();
        let (parts, body) = req.into_parts();
        let host_value = request_host(&parts);
        let host_str = host_value.as_ref().ok().copied().flatten();
        let route = snap.route(host_str, parts.uri.path());
        // Decided from the request alone so that even a request refused before its signature is
        // parsed gets an error its SDK can read.
        let shape = response::ErrorShape::of(&parts, route);
        let mut learned = Learned {
            key: None,
            source: source_ip::resolve(peer.ip(), &parts.headers, &snap.settings.trusted_proxies),
            scheme: None,
            action: None,
            rule: None,
            would_deny: Vec::new(),
        };
        let guard_on = snap.settings.auth_failure_limit > 0;
        let audit_on = self.audit.enabled();

        let outcome: Result<Response<Body>, Rejection> = async {
            // The brute-force guard answers first, before any of the body is read.
            if guard_on
                && let Some(ip) = learned.source.ip()
                && self.state.source_blocked(ip, started)
            {
                return Err(Rejection::SourceThrottled);
            }
            // Held until the answer's head is ready; a streamed answer body is not counted.
            let _slot = self.gate.enter().await?;
            let host = match &host_value {
                Ok(host) => *host,
                Err(e) => return Err(e.clone()),
            };
            let limit = snap.settings.max_body_bytes;
            // Refuse an announced oversized body before reading any of it.
            let announced = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if announced.is_some_and(|len| len > limit) {
                return Err(Rejection::BodyTooLarge);
            }
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            // A request whose head said there is no body (most SDK calls), or whose body is
            // already in memory, has nothing to wait for: no timer is armed for it.
            let complete = body.complete();
            let read = read_body(body, limit, announced, &self.budget);
            let (body, _body_memory) = if complete {
                read.await?
            } else {
                match tokio::time::timeout(self.limits.body_read_timeout, read).await {
                    Ok(read) => read?,
                    Err(_) => return Err(Rejection::RequestTimeout),
                }
            };
            let view = RequestView {
                method: parts.method.as_str(),
                path: parts.uri.path(),
                query: parts.uri.query().unwrap_or(""),
                host,
                headers: &parts.headers,
                body: &body,
            };
            let now = self.clock.now();
            let pending = crate::decision::begin(&snap, &view, peer.ip(), now, &*self.state);
            let claims = pending.claims();
            let outcome = if claims.is_empty() {
                Ok(Default::default())
            } else {
                self.state.claim(&claims).await
            };
            let decision = pending.finish(outcome);
            learned.source = decision.source;
            learned.scheme = decision.scheme;
            learned.key = decision.key;
            learned.rule = decision.deciding_rule;
            if audit_on {
                learned.action = decision.action.as_deref().map(str::to_owned);
            }
            for w in &decision.would_deny {
                crate::metrics::would_deny(w.rejection.code());
                learned.would_deny.push((w.rejection.code(), w.rule));
            }
            if let Err(r) = decision.result {
                if r == Rejection::KeyIdle {
                    crate::metrics::idle_refused();
                }
                tracing::debug!(request_id = %request_id, code = r.code(), reason = %r, source = ?decision.source, "refused");
                return Err(r);
            }
            let (Some(route), Some(key)) = (decision.route, decision.key) else {
                // decide() returns Ok only after finding both.
                return Err(Rejection::BadRequest("internal: no route or key".into()));
            };
            if let Some(action) = decision.action.as_deref() {
                self.state.record_use(&Use {
                    key_id: &key.id,
                    at: now,
                    source: decision.source.ip(),
                    service: &route.service,
                    action,
                });
            }
            let identity = forward::Identity { key, request_id: &request_id, source: decision.source, peer: peer.ip() };
            let out = forward::upstream_request(route, &parts.method, &parts.uri, &parts.headers, host, body, &identity);
            let is_head = parts.method == http::Method::HEAD;
            forward::send(&self.client, route, &out, is_head, snap.settings.upstream_timeout).await
        }
        .await;

        let elapsed = started.elapsed();
        let scheme = learned.scheme;
        let (resp, decision, code) = match outcome {
            Ok(resp) => {
                crate::metrics::request("allowed", "OK", scheme, elapsed);
                let decision = if learned.would_deny.is_empty() {
                    "allowed"
                } else {
                    "would_deny"
                };
                (resp, decision, "OK")
            }
            Err(rejection) => {
                let decision = rejection.decision();
                crate::metrics::request(decision, rejection.code(), scheme, elapsed);
                if bruteforce::counts_as_auth_failure(&rejection) {
                    crate::metrics::auth_failure(rejection.code());
                    if guard_on
                        && let Some(ip) = learned.source.ip()
                        && self.state.record_auth_failure(
                            ip,
                            snap.settings.auth_failure_limit,
                            snap.settings.auth_failure_cooldown,
                            Instant::now(),
                        )
                    {
                        crate::metrics::throttle_started();
                        let cooldown = snap.settings.auth_failure_cooldown;
                        tracing::warn!(
                            source = %ip,
                            ?cooldown,
                            "source refused for repeated authentication failures"
                        );
                    }
                }
                (
                    response::error(&rejection, shape, &request_id, host_str),
                    decision,
                    rejection.code(),
                )
            }
        };

        if audit_on {
            let key = learned.key;
            let mut record = audit::Record {
                time: audit::rfc3339_millis(SystemTime::now()),
                request_id: &request_id,
                key_id: key.map(|k| k.id.as_str()),
                account: key.map(|k| k.account.id.as_str()),
                user: key.and_then(|k| k.user.as_deref()).map(|u| u.name.as_str()),
                source_ip: None,
                source: "unknown",
                hops: 0,
                service: route.map(|r| r.service.as_str()),
                action: learned.action.as_deref(),
                scheme: learned.scheme.map(crate::auth::Scheme::as_str),
                decision,
                code,
                status: resp.status().as_u16(),
                rule: learned.rule.map(|o| o.to_string()),
                would_deny: learned
                    .would_deny
                    .iter()
                    .map(|(code, rule)| audit::WouldDenyEntry {
                        code,
                        rule: rule.map(|o| o.to_string()),
                    })
                    .collect(),
                latency_ms: elapsed.as_secs_f64() * 1000.0,
            };
            record.set_source(learned.source);
            self.audit.log(&record);
        }
        resp
    }
}

/// Reads the whole body, at most `limit` bytes, charging the shared body budget as it arrives.
/// The permit returned keeps the charge until the request is done with the bytes.
async fn read_body<B: RequestBody>(
    mut body: B,
    limit: usize,
    announced: Option<u64>,
    budget: &limits::BodyBudget,
) -> Result<(Bytes, Option<tokio::sync::OwnedSemaphorePermit>), Rejection> {
    let mut charge = None;
    let mut first: Option<Bytes> = None;
    let mut rest: Option<bytes::BytesMut> = None;
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|_| Rejection::BadRequest("the body could not be read".into()))?;
        let Ok(data) = frame.into_data() else {
            // Trailers: not signed by any scheme, so not forwarded either.
            continue;
        };
        total = total.saturating_add(data.len());
        if total > limit {
            return Err(Rejection::BodyTooLarge);
        }
        if budget.charge(&mut charge, total).is_none() {
            crate::metrics::overloaded("body_memory");
            return Err(Rejection::Overloaded);
        }
        // Most bodies arrive in one frame: keep it as is, copy only when a second one comes.
        match (&mut first, &mut rest) {
            (None, None) => first = Some(data),
            (Some(f), None) => {
                let hint = announced
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(0)
                    .clamp(total, limit);
                let mut buf = bytes::BytesMut::with_capacity(hint);
                buf.extend_from_slice(f);
                buf.extend_from_slice(&data);
                first = None;
                rest = Some(buf);
            }
            (_, Some(buf)) => buf.extend_from_slice(&data),
        }
    }
    let bytes = match (first, rest) {
        (_, Some(buf)) => buf.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    };
    Ok((bytes, charge))
}

/// The request's host: `Host` for HTTP/1.1, `:authority` for HTTP/2. Two different values would
/// let the signature cover one and routing use the other, so that is refused.
fn request_host(parts: &http::request::Parts) -> Result<Option<&str>, Rejection> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let header_host = match (hosts.next(), hosts.next()) {
        (None, _) => None,
        (Some(v), None) => Some(
            v.to_str()
                .map_err(|_| Rejection::BadRequest("Host is not ASCII".into()))?,
        ),
        (Some(_), Some(_)) => {
            return Err(Rejection::BadRequest("more than one Host header".into()));
        }
    };
    let authority = parts.uri.authority().map(|a| a.as_str());
    match (header_host, authority) {
        (Some(h), Some(a)) if !h.eq_ignore_ascii_case(a) => Err(Rejection::BadRequest(
            "Host does not match the request target".into(),
        )),
        (Some(h), _) => Ok(Some(h)),
        (None, a) => Ok(a),
    }
}

/// Request ids in the UUID shape Alibaba uses (upper-case hex). Unique per process run; not
/// secret and not used for anything but correlation, so a counter scrambled by SplitMix64 from a
/// random start does (two SipHash rounds per request did the same job at ten times the cost).
struct RequestIds {
    start: u64,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        RequestIds {
            start: RandomState::new().hash_one(0u64),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> RequestId {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // Two outputs of the same bijective mixer on distinct inputs: distinct ids for 2^63
        // requests.
        let a = self.start.wrapping_add(n.wrapping_mul(2));
        uuid_shape(splitmix64(a), splitmix64(a.wrapping_add(1)))
    }
}

/// SplitMix64's output function: a bijection of u64 that scatters consecutive inputs.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A request id, held inline: it lives as long as its request, and a `String` for it was one
/// heap allocation per request.
#[derive(Clone, Copy)]
struct RequestId([u8; 36]);

impl std::ops::Deref for RequestId {
    type Target = str;
    fn deref(&self) -> &str {
        // Only `uuid_shape` makes one: hex digits and dashes, ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

/// `XXXXXXXX-XXXX-4XXX-YXXX-XXXXXXXXXXXX` from two random words, written by hand: `format!` with
/// widths costs more than the rest of the id, once per request.
fn uuid_shape(hi: u64, lo: u64) -> RequestId {
    fn put(out: &mut [u8], mut v: u64) {
        for b in out.iter_mut().rev() {
            *b = b"0123456789ABCDEF"[(v & 0xf) as usize];
            v >>= 4;
        }
    }
    let mut id = [b'-'; 36];
    put(&mut id[0..8], hi >> 32);
    put(&mut id[9..13], (hi >> 16) & 0xffff);
    id[14] = b'4';
    put(&mut id[15..18], hi & 0xfff);
    put(&mut id[19..23], (lo >> 48) & 0x3fff | 0x8000);
    put(&mut id[24..36], lo & 0xffff_ffff_ffff);
    RequestId(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_have_the_uuid_shape_alibaba_uses() {
        for (hi, lo) in [
            (0, 0),
            (u64::MAX, u64::MAX),
            (0x0123_4567_89AB_CDEF, 0xFEDC_BA98_7654_3210),
        ] {
            let want = format!(
                "{:08X}-{:04X}-4{:03X}-{:04X}-{:012X}",
                hi >> 32,
                (hi >> 16) & 0xffff,
                hi & 0xfff,
                (lo >> 48) & 0x3fff | 0x8000,
                lo & 0xffff_ffff_ffff
            );
            assert_eq!(&*uuid_shape(hi, lo), want);
        }
        assert_eq!(&*uuid_shape(0, 0), "00000000-0000-4000-8000-000000000000");
        let ids = RequestIds::new();
        let many: std::collections::HashSet<String> =
            (0..10_000).map(|_| ids.next().to_string()).collect();
        assert_eq!(many.len(), 10_000, "request ids repeat");
    }
}
