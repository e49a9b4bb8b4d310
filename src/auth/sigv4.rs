//! AWS Signature Version 4 (SIGNATURES.md §4): `Authorization: AWS4-HMAC-SHA256 …` and presigned
//! URLs (`X-Amz-Algorithm=AWS4-HMAC-SHA256&…` in the query).

use std::borrow::Cow;

use super::{ParsedAuth, RequestView};
use crate::error::Rejection;
use crate::rules::KeyMaterial;

#[derive(Debug, Clone)]
pub struct SigV4Credential<'a> {
    pub key_id: &'a str,
}

/// Derived signing keys, cached per key, date, region and service so a request does not redo the
/// four-step derivation. Lives in each key of a snapshot: a reload that changes the secret starts
/// with an empty cache.
#[derive(Debug, Default)]
pub struct SigningKeyCache {}

fn unsupported() -> Rejection {
    Rejection::IncompleteSignature(Cow::Borrowed("AWS SigV4 is not supported yet"))
}

pub fn parse_header<'a>(_authorization: &'a str, _req: &RequestView<'a>) -> Result<ParsedAuth<'a>, Rejection> {
    Err(unsupported())
}

pub fn parse_presigned<'a>(_req: &RequestView<'a>) -> Result<ParsedAuth<'a>, Rejection> {
    Err(unsupported())
}

pub fn verify(
    _cred: &SigV4Credential<'_>,
    _req: &RequestView<'_>,
    _material: &KeyMaterial,
    _transcript: Option<&mut Vec<u8>>,
) -> Result<(), Rejection> {
    Err(unsupported())
}
