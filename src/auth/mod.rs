//! Signature schemes. Each scheme is one module that parses its credential out of a request and
//! verifies it; [`parse`] picks the scheme and [`ParsedAuth`] is what the decision works with.
//!
//! Adding a scheme means adding a [`Scheme`] variant, a [`Credential`] variant and a module.

pub mod acs3;
pub mod encoding;

use http::HeaderMap;
use std::borrow::Cow;

use crate::error::Rejection;
use crate::rules::Secret;
use crate::time::{UnixSeconds, parse_iso8601_utc};

/// The parts of a request that signatures cover, as received on the wire.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    /// Raw path, still percent-encoded.
    pub path: &'a str,
    /// Raw query without the `?`; empty when absent.
    pub query: &'a str,
    /// `Host` (HTTP/1.1) or `:authority` (HTTP/2).
    pub host: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Acs3HmacSha256,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Acs3HmacSha256 => acs3::ALGORITHM,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Credential<'a> {
    Acs3(acs3::Acs3Credential<'a>),
}

/// What the decision needs from a request's signature, whatever the scheme.
#[derive(Debug, Clone)]
pub struct ParsedAuth<'a> {
    pub scheme: Scheme,
    pub key_id: &'a str,
    pub action: &'a str,
    /// The signed request time, as sent.
    pub timestamp: &'a str,
    pub nonce: Option<&'a str>,
    pub security_token: Option<&'a str>,
    pub credential: Credential<'a>,
}

impl ParsedAuth<'_> {
    pub fn timestamp_secs(&self) -> Result<UnixSeconds, Rejection> {
        parse_iso8601_utc(self.timestamp).ok_or(Rejection::TimestampMalformed)
    }

    /// Verifies the body hash and the signature. `transcript`, when given, receives the canonical
    /// request, for explanations.
    pub fn verify(
        &self,
        req: &RequestView<'_>,
        secret: &Secret,
        transcript: Option<&mut Vec<u8>>,
    ) -> Result<(), Rejection> {
        match &self.credential {
            Credential::Acs3(c) => acs3::verify(c, req, secret, transcript),
        }
    }
}

/// Finds the signature scheme of a request and extracts its credential.
pub fn parse<'a>(req: &RequestView<'a>) -> Result<ParsedAuth<'a>, Rejection> {
    let mut auth = req.headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = auth.next() else {
        return Err(Rejection::MissingAccessKeyId);
    };
    if auth.next().is_some() {
        return Err(incomplete("more than one Authorization header"));
    }
    let value = value
        .to_str()
        .map_err(|_| incomplete("Authorization is not ASCII"))?;
    if value.starts_with("ACS3-") {
        return acs3::parse(value, req);
    }
    Err(incomplete("unsupported signature scheme"))
}

pub(crate) fn incomplete(why: &'static str) -> Rejection {
    Rejection::IncompleteSignature(Cow::Borrowed(why))
}

/// The value of a header that must appear at most once, as text.
pub(crate) fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<Option<&'a str>, Rejection> {
    let mut values = headers.get_all(name).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Rejection::IncompleteSignature(Cow::Owned(format!(
            "header {name} appears more than once"
        ))));
    }
    v.to_str().map(Some).map_err(|_| {
        Rejection::IncompleteSignature(Cow::Owned(format!("header {name} is not ASCII")))
    })
}
