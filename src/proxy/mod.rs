//! The public listener: read a request, decide, forward or refuse.

pub mod aws;
pub mod forward;
pub mod response;
pub mod server;
pub mod tls;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::auth::RequestView;
use crate::decision::decide;
use crate::error::Rejection;
use crate::policy::NonceCache;
use crate::rules::RulesStore;
use crate::time::Clock;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// Everything a request needs, shared by all connections.
pub struct Gateway {
    pub rules: Arc<RulesStore>,
    pub nonces: Arc<NonceCache>,
    pub clock: Arc<dyn Clock>,
    client: forward::UpstreamClient,
    ids: RequestIds,
}

impl Gateway {
    pub fn new(rules: Arc<RulesStore>, nonces: Arc<NonceCache>, clock: Arc<dyn Clock>) -> Self {
        Gateway {
            rules,
            nonces,
            clock,
            client: forward::client(),
            ids: RequestIds::new(),
        }
    }

    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let snap = self.rules.load();
        let request_id = self.ids.next();
        let (parts, body) = req.into_parts();
        let host = request_host(&parts);
        let host_str = host.as_ref().ok().copied().flatten();
        // Decided from the request alone so that even a request refused before its signature is
        // parsed gets an error its SDK can read.
        let shape = response::ErrorShape::of(
            &parts,
            snap.route(host_str, parts.uri.path())
                .map(|r| r.service.as_str()),
        );

        let mut scheme = "none";
        let outcome: Result<Response<Body>, (Rejection, &'static str)> = async {
            let host = host.map_err(|r| (r, "denied"))?;
            let limit = snap.settings.max_body_bytes;
            // Refuse an announced oversized body before reading any of it.
            let announced = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if announced.is_some_and(|len| len > limit) {
                return Err((Rejection::BodyTooLarge, "denied"));
            }
            let body: Bytes = match Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX)).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err((Rejection::BodyTooLarge, "denied")),
                Err(_) => return Err((Rejection::BadRequest("the body could not be read".into()), "denied")),
            };
            let view = RequestView {
                method: parts.method.as_str(),
                path: parts.uri.path(),
                query: parts.uri.query().unwrap_or(""),
                host,
                headers: &parts.headers,
                body: &body,
            };
            let decision = decide(&snap, &view, peer.ip(), self.clock.now(), &self.nonces);
            scheme = decision.scheme.map_or("none", |s| s.as_str());
            if let Err(r) = decision.result {
                tracing::debug!(request_id = %request_id, code = r.code(), reason = %r, source = ?decision.source, "refused");
                return Err((r, "denied"));
            }
            let (Some(route), Some(key)) = (decision.route, decision.key) else {
                // decide() returns Ok only after finding both.
                return Err((Rejection::BadRequest("internal: no route or key".into()), "denied"));
            };
            let identity = forward::Identity { key, request_id: &request_id, source: decision.source, peer: peer.ip() };
            let upstream_req = forward::upstream_request(route, &parts, host, body.clone(), &identity).map_err(|r| (r, "denied"))?;
            forward::send(&self.client, upstream_req, snap.settings.upstream_timeout).await.map_err(|r| (r, "upstream_error"))
        }
        .await;

        match outcome {
            Ok(resp) => {
                crate::metrics::request("allowed", "OK", scheme, started.elapsed());
                resp
            }
            Err((rejection, decision)) => {
                crate::metrics::request(decision, rejection.code(), scheme, started.elapsed());
                response::error(&rejection, shape, &request_id, host_str)
            }
        }
    }
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
/// secret and not used for anything but correlation.
struct RequestIds {
    seed: RandomState,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        RequestIds {
            seed: RandomState::new(),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let hi = self.seed.hash_one(n);
        let lo = self.seed.hash_one(!n);
        format!(
            "{:08X}-{:04X}-4{:03X}-{:04X}-{:012X}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xfff,
            (lo >> 48) & 0x3fff | 0x8000,
            lo & 0xffff_ffff_ffff
        )
    }
}
