//! Forwarding an admitted request upstream and streaming the answer back.

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Response, Uri, request::Parts};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::net::IpAddr;
use std::time::Duration;

use super::Body;
use crate::error::Rejection;
use crate::policy::source_ip::SourceIp;
use crate::rules::{AccessKey, Route};

pub type UpstreamClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
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

pub fn upstream_request(
    route: &Route,
    parts: &Parts,
    host: Option<&str>,
    body: Bytes,
    id: &Identity<'_>,
) -> Result<Request<Full<Bytes>>, Rejection> {
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let uri = Uri::builder()
        .scheme("http")
        .authority(route.upstream.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| Rejection::BadRequest("request target cannot be forwarded".into()))?;

    // Addresses a client claims for itself mean nothing unless a trusted proxy vouched for them;
    // an upstream reading them must not be misled either (X-Forwarded-For is rewritten below).
    let claimed_address = |name: &HeaderName| {
        matches!(id.source, SourceIp::Peer(_))
            && (name == header::FORWARDED || name.as_str() == "x-real-ip")
    };
    let mut headers = HeaderMap::with_capacity(parts.headers.len() + 6);
    for (name, value) in &parts.headers {
        // The body is forwarded as the bytes verified, whatever framing carried them in; the
        // client's Content-Length must not describe it to the upstream.
        if is_hop_by_hop(name)
            || is_gateway_owned(name)
            || connection_listed(&parts.headers, name)
            || name == header::CONTENT_LENGTH
            || claimed_address(name)
        {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    // The Host the client signed is the one the upstream sees: the gateway is transparent.
    if let Some(h) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert(header::HOST, h);
    }
    let key = id.key;
    let set = |headers: &mut HeaderMap, name: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            headers.insert(name, v);
        }
    };
    set(&mut headers, "x-akgate-account", &key.account.id);
    if let Some(user) = &key.user {
        set(&mut headers, "x-akgate-user", &user.name);
    }
    set(&mut headers, "x-akgate-key", &key.id);
    set(&mut headers, "x-request-id", id.request_id);
    // A chain of X-Forwarded-For is kept only when it came through a proxy we trust; otherwise it
    // is whatever the client chose to write, and the upstream would be misled by it.
    let peer = id.peer.to_string();
    let xff = match id.source {
        SourceIp::Forwarded { .. } | SourceIp::Unknown => {
            let prior: Vec<&str> = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if prior.is_empty() {
                peer
            } else {
                format!("{}, {peer}", prior.join(", "))
            }
        }
        SourceIp::Peer(_) => peer,
    };
    set(&mut headers, "x-forwarded-for", &xff);

    let mut req = Request::new(Full::new(body));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Ok(req)
}

pub async fn send(
    client: &UpstreamClient,
    req: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<Response<Body>, Rejection> {
    let resp = match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => return Err(Rejection::UpstreamTimeout),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "upstream request failed");
            return Err(Rejection::UpstreamUnavailable);
        }
        Ok(Ok(resp)) => resp,
    };
    let (mut parts, body) = resp.into_parts();
    let listed: Vec<HeaderName> = parts
        .headers
        .keys()
        .filter(|n| connection_listed(&parts.headers, n))
        .cloned()
        .collect();
    for name in listed {
        parts.headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        parts.headers.remove(name);
    }
    Ok(Response::from_parts(
        parts,
        IdleTimeout::new(body, timeout).boxed(),
    ))
}

/// An upstream answer body that must keep moving: a gap of `timeout` between frames ends it
/// with an error, so an upstream that stalls mid-answer cannot hold the client's connection (and
/// its slot) forever. The client sees the connection cut, never a truncated answer that looks
/// complete.
struct IdleTimeout {
    inner: hyper::body::Incoming,
    timeout: Duration,
    /// Created on the first wait only: most answers arrive whole, and this runs per request.
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// The last poll found nothing: the clock runs. Time spent while the client was not asking
    /// for more (a slow reader) is not the upstream's fault and does not count.
    waiting: bool,
}

impl IdleTimeout {
    fn new(inner: hyper::body::Incoming, timeout: Duration) -> Self {
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
