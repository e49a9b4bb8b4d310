//! The body of every answer akgate gives: one it wrote itself, or the upstream's.
//!
//! A closed enum rather than a boxed trait object: every proxied answer would otherwise cost an
//! allocation and a free for the box, and a virtual call per frame.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::BoxError;
use super::forward::IdleTimeout;

pub struct Body(Kind);

enum Kind {
    /// Written by akgate (errors, admin pages): in memory, cannot fail.
    Full(Full<Bytes>),
    /// The upstream's answer, cut if it stalls (see [`IdleTimeout`]).
    Upstream(IdleTimeout),
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Body(Kind::Full(Full::new(bytes.into())))
    }

    pub(super) fn upstream(body: IdleTimeout) -> Self {
        Body(Kind::Upstream(body))
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Kind::Full(_) => "Body::Full",
            Kind::Upstream(_) => "Body::Upstream",
        })
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Both kinds are `Unpin`.
        match &mut self.get_mut().0 {
            Kind::Full(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(|never| match never {}))),
            Kind::Upstream(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(b) => b.is_end_stream(),
            Kind::Upstream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(b) => b.size_hint(),
            Kind::Upstream(b) => b.size_hint(),
        }
    }
}
