//! Forwarding an admitted request upstream and streaming the answer back.

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, Method, Response, Uri};
use std::net::IpAddr;
use std::time::Duration;

use super::Body;
use super::h1::{self, Outgoing, RequestHead};
use super::pool::{PoolConfig, PooledBody, UpstreamPool};
use crate::error::Rejection;
use crate::policy::source_ip::SourceIp;
use crate::rules::{AccessKey, Route};

pub type UpstreamClient = UpstreamPool;

pub fn client() -> UpstreamClient {
    UpstreamPool::new(PoolConfig {
        connect_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        max_idle_per_upstream: 256,
    })
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) belong to one connection and are never forwarded.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Names listed in `Connection` are hop-by-hop for this message too.
fn connection_listed(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .map(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case(name.as_str()))
            })
            .unwrap_or(false)
    })
}

/// Removes, in place, every header for which `drop` says so (all values of the name). Most
/// messages have none or one or two such names: finding them is one pass over the names with no
/// hashing, and only those found are removed.
fn remove_where(headers: &mut HeaderMap, mut drop: impl FnMut(&HeaderMap, &HeaderName) -> bool) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if drop(headers, name) && !doomed.contains(name) {
            doomed.push(name.clone());
        }
    }
    for name in doomed {
        headers.remove(name);
    }
}

pub struct Identity<'a> {
    pub key: &'a AccessKey,
    pub request_id: &'a str,
    pub source: SourceIp,
    pub peer: IpAddr,
}

/// Headers that only the gateway may set: a client sending them is ignored, so an upstream can
/// trust them.
fn is_gateway_owned(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.starts_with("x-akgate-")
        || n == "x-request-id"
        || n == "x-forwarded-for"
        || n == "authorization"
        || n == "host"
}

static X_AKGATE_ACCOUNT: HeaderName = HeaderName::from_static("x-akgate-account");
static X_AKGATE_USER: HeaderName = HeaderName::from_static("x-akgate-user");
static X_AKGATE_KEY: HeaderName = HeaderName::from_static("x-akgate-key");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The request the upstream gets, written for the wire straight from the client's: its fields
/// are filtered as they are copied and the gateway's own are written after them, so no header
/// map is built, changed or hashed, and no header value is allocated. The fields reach the
/// upstream in the client's order, behind the signed Host.
pub(super) fn upstream_request(
    route: &Route,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    host: Option<&str>,
    body: Bytes,
    id: &Identity<'_>,
) -> Outgoing {
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    // Addresses a client claims for itself mean nothing unless a trusted proxy vouched for them;
    // an upstream reading them must not be misled either (X-Forwarded-For is rewritten below).
    let direct = matches!(id.source, SourceIp::Peer(_));
    let has_connection = headers.contains_key(header::CONNECTION);
    let dropped = |name: &HeaderName| {
        is_hop_by_hop(name)
            || is_gateway_owned(name)
            // The body is forwarded as the bytes verified, whatever framing carried them in; its
            // length is the head's to write, not the client's.
            || *name == header::CONTENT_LENGTH
            || (direct && (*name == header::FORWARDED || *name == X_REAL_IP))
            || (has_connection && connection_listed(headers, name))
    };
    // The gateway's fields: names, ids, a request id and an address chain, a few hundred bytes.
    let mut head = RequestHead::new(method, target, headers, 256, body.len());
    // The Host the client signed is the one the upstream sees: the gateway is transparent. (Its
    // value came through a header value or the request's authority: valid field bytes.)
    head.field(b"host", host.unwrap_or(route.upstream.as_str()).as_bytes());
    for (name, value) in headers {
        if !dropped(name) {
            head.field(name.as_str().as_bytes(), value.as_bytes());
        }
    }
    let key = id.key;
    let mut own = |name: &HeaderName, value: &str| {
        // Names in the rules could hold a line break; such a field is left out, not sent broken.
        if h1::is_field_value(value.as_bytes()) {
            head.field(name.as_str().as_bytes(), value.as_bytes());
        }
    };
    own(&X_AKGATE_ACCOUNT, &key.account.id);
    if let Some(user) = &key.user {
        own(&X_AKGATE_USER, &user.name);
    }
    own(&X_AKGATE_KEY, &key.id);
    own(&X_REQUEST_ID, id.request_id);
    head.start_field(X_FORWARDED_FOR.as_str().as_bytes());
    forwarded_for(head.value(), headers, id);
    head.end_field();
    head.finish(body)
}

/// Writes the X-Forwarded-For the upstream gets: the peer, after the chain that reached us only
/// when a trusted proxy forwarded the request; otherwise the chain is whatever the client chose
/// to write, and the upstream would be misled by it.
fn forwarded_for(xff: &mut Vec<u8>, headers: &HeaderMap, id: &Identity<'_>) {
    use std::io::Write as _;
    if matches!(id.source, SourceIp::Forwarded { .. } | SourceIp::Unknown) {
        for prior in headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            xff.extend_from_slice(prior.as_bytes());
            xff.extend_from_slice(b", ");
        }
    }
    match id.peer {
        // By hand: `Display` for an address goes through the formatting machinery, about a
        // thousand instructions per request for what is four small numbers.
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    xff.push(b'.');
                }
                crate::ascii::push_decimal(xff, u64::from(octet));
            }
        }
        // Writing to a Vec cannot fail.
        IpAddr::V6(v6) => {
            let _ = write!(xff, "{v6}");
        }
    }
}

pub(super) async fn send(
    client: &UpstreamClient,
    route: &Route,
    out: &Outgoing,
    is_head: bool,
    timeout: Duration,
) -> Result<Response<Body>, Rejection> {
    let sent = client.send_encoded(route.upstream.clone(), out, is_head);
    let resp = match tokio::time::timeout(timeout, sent).await {
        Err(_) => return Err(Rejection::UpstreamTimeout),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "upstream request failed");
            return Err(Rejection::UpstreamUnavailable);
        }
        Ok(Ok(resp)) => resp,
    };
    let (mut parts, body) = resp.into_parts();
    let has_connection = parts.headers.contains_key(header::CONNECTION);
    remove_where(&mut parts.headers, |headers, name| {
        // Hop-by-hop: they describe our connection to the upstream, not the client's to us.
        matches!(
            name.as_str(),
            "connection"
                | "keep-alive"
                | "proxy-connection"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
        ) || (has_connection && connection_listed(headers, name))
    });
    Ok(Response::from_parts(
        parts,
        Body::upstream(IdleTimeout::new(body, timeout)),
    ))
}

/// An upstream answer body that must keep moving: a gap of `timeout` between frames ends it
/// with an error, so an upstream that stalls mid-answer cannot hold the client's connection (and
/// its slot) forever. The client sees the connection cut, never a truncated answer that looks
/// complete.
pub(super) struct IdleTimeout {
    inner: PooledBody,
    timeout: Duration,
    /// Created on the first wait only: most answers arrive whole, and this runs per request.
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// The last poll found nothing: the clock runs. Time spent while the client was not asking
    /// for more (a slow reader) is not the upstream's fault and does not count.
    waiting: bool,
}

impl IdleTimeout {
    fn new(inner: PooledBody, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            timeout,
            sleep: None,
            waiting: false,
        }
    }
}

impl hyper::body::Body for IdleTimeout {
    type Data = Bytes;
    type Error = super::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + this.timeout;
                let sleep = match &mut this.sleep {
                    Some(sleep) => {
                        if !this.waiting {
                            sleep.as_mut().reset(deadline);
                        }
                        sleep
                    }
                    None => this
                        .sleep
                        .insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                this.waiting = true;
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        tracing::debug!("upstream answer stalled; cutting the connection");
                        Poll::Ready(Some(Err("the upstream stopped sending its answer".into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
