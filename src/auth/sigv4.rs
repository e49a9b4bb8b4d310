//! AWS Signature Version 4 (SIGNATURES.md §4), as botocore signs: `Authorization:
//! AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…` and presigned URLs
//! (`X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=…&…&X-Amz-Signature=…` in the query).
//!
//! Like the V3 verifier, the canonical request is streamed into the hash rather than assembled.
//! Differences from Alibaba V3 that matter here:
//!
//! * the path is signed as sent for S3, and for every other service re-encoded (`%` → `%25`)
//!   after botocore's dot-segment and double-slash removal;
//! * query values are decoded `%XX` only (a raw `+` is a literal `+`), pairs sorted by (key, value)
//!   with repeats kept; a presigned URL's own `X-Amz-Signature` is left out;
//! * header values are *trimall*ed and repeated headers joined with `,` in arrival order;
//! * `X-Amz-Content-SHA256`, when present, is signed literally: `UNSIGNED-PAYLOAD` and
//!   `STREAMING-…` leave the body unsigned, a hex digest must equal SHA-256 of the body;
//! * the MAC key is derived from the secret, the date, the region and the service.
//!
//! The action is not in the signature's fields: it is read from the request the way the service
//! reads it (see [`action_of`]).

use arc_swap::ArcSwapOption;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use super::encoding::{
    Buffered, Sink, Tee, canonical, for_each_sorted, hex_decode_into, hex_lower_into,
    percent_decode, percent_encode_into, raw_pairs, sha256_hex,
};
use super::{
    Credential, ParsedAuth, RequestView, Scheme, SignedNames, Window, incomplete, single_header,
};
use crate::error::Rejection;
use crate::rules::{KeyMaterial, Secret};
use crate::time::parse_amz_date;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

static X_AMZ_DATE: http::HeaderName = http::HeaderName::from_static("x-amz-date");
static X_AMZ_SECURITY_TOKEN: http::HeaderName =
    http::HeaderName::from_static("x-amz-security-token");
static X_AMZ_CONTENT_SHA256: http::HeaderName =
    http::HeaderName::from_static("x-amz-content-sha256");
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// The longest a presigned URL may stay valid: seven days.
pub const MAX_EXPIRES: i64 = 604_800;
/// The action name used when a request's operation cannot be told from its method and path.
/// High-risk lists can name it (the shipped AWS section does) so that a leaked key cannot
/// hide an operation behind a shape the gateway does not recognise.
pub const UNKNOWN_ACTION: &str = "Unknown";
/// Bound on the region and service parts of a credential scope (real ones are far shorter); it
/// keeps the string to sign small and the signing-key cache cheap to compare.
const MAX_SCOPE_PART: usize = 64;

/// What a SigV4 request claims, as parsed from its `Authorization` header or query.
#[derive(Debug, Clone)]
pub struct SigV4Credential<'a> {
    pub key_id: Cow<'a, str>,
    /// `<yyyymmdd>/<region>/<service>/aws4_request`, validated by the parsers.
    pub scope: Cow<'a, str>,
    /// `X-Amz-Date` as sent (header or presigned query).
    pub amz_date: Cow<'a, str>,
    /// `;`-separated, lower-case, ascending — validated by the parsers.
    pub signed_headers: Cow<'a, str>,
    pub signature: [u8; 32],
    pub payload: Payload<'a>,
    pub presigned: bool,
}

impl SigV4Credential<'_> {
    fn scope_part(&self, i: usize) -> &str {
        self.scope.split('/').nth(i).unwrap_or_default()
    }
    /// `yyyymmdd` of the credential scope.
    pub fn date(&self) -> &str {
        self.scope_part(0)
    }
    pub fn region(&self) -> &str {
        self.scope_part(1)
    }
    /// The service the client signed for (`s3`, `sts`, `dynamodb`…): the signing name, which the
    /// client chooses. Routing does not depend on it.
    pub fn service(&self) -> &str {
        self.scope_part(2)
    }
}

/// The last line of the canonical request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    /// `X-Amz-Content-SHA256: <hex>`: signed literally, and must equal SHA-256 of the body.
    Declared(&'a str),
    /// `UNSIGNED-PAYLOAD` or `STREAMING-…`: signed literally; the body is not covered.
    Unsigned(&'a str),
    /// No declaration: SHA-256 of the received body.
    Body,
}

// ---------------------------------------------------------------------------------------------
// Signing keys

/// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`,
/// returned as a MAC state keyed with it, ready to take the string to sign.
pub fn derive_signing_mac(
    secret: &Secret,
    date: &str,
    region: &str,
    service: &str,
) -> Hmac<Sha256> {
    let mut mac = secret.aws4();
    for part in [date, region, service, "aws4_request"] {
        mac.update(part.as_bytes());
        // Each intermediate key is keyed from in place: the `CtOutput` holding it is wiped when
        // dropped, and no copy of it is made.
        let key = mac.finalize();
        mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    }
    mac
}

/// One derived signing key and what it was derived for. Immutable once published. `mac` is wiped
/// when the entry is dropped (replaced in its slot, or its snapshot retired): see
/// `rules::_hmac_states_are_zeroized_on_drop`.
struct Derived {
    date: Box<str>,
    region: Box<str>,
    service: Box<str>,
    mac: Hmac<Sha256>,
}

const CACHE_SLOTS: usize = 4;

/// Derived signing keys, cached per key, date, region and service so a request does not redo the
/// four-step derivation. Lives in each key of a snapshot: a reload that changes the secret starts
/// with an empty cache.
///
/// A few slots, chosen by region and service, each holding the last key derived for them behind
/// an `ArcSwapOption`: a hit is one lock-free load, a compare and a clone of the MAC state; a miss
/// derives and publishes a new entry (concurrent misses may both derive; either result is right).
/// A new day, region or service simply replaces the slot's entry, so the cache never grows.
#[derive(Default)]
pub struct SigningKeyCache {
    slots: [ArcSwapOption<Derived>; CACHE_SLOTS],
}

impl fmt::Debug for SigningKeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Scopes only; derived keys are secret.
        let scopes: Vec<String> = self
            .slots
            .iter()
            .filter_map(|s| {
                s.load()
                    .as_ref()
                    .map(|d| format!("{}/{}/{}", d.date, d.region, d.service))
            })
            .collect();
        f.debug_struct("SigningKeyCache")
            .field("scopes", &scopes)
            .finish()
    }
}

impl SigningKeyCache {
    fn slot(region: &str, service: &str) -> usize {
        // FNV-1a: cheap and stable; the slot only spreads services over the few entries.
        let mut h: u32 = 0x811c_9dc5;
        for b in region.bytes().chain([b'/']).chain(service.bytes()) {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        h as usize % CACHE_SLOTS
    }

    /// The signing MAC for this scope, from the cache or derived (and then cached).
    pub fn signing_mac(
        &self,
        secret: &Secret,
        date: &str,
        region: &str,
        service: &str,
    ) -> Hmac<Sha256> {
        let slot = &self.slots[Self::slot(region, service)];
        if let Some(d) = slot.load().as_ref()
            && &*d.date == date
            && &*d.region == region
            && &*d.service == service
        {
            return d.mac.clone();
        }
        let mac = derive_signing_mac(secret, date, region, service);
        slot.store(Some(Arc::new(Derived {
            date: date.into(),
            region: region.into(),
            service: service.into(),
            mac: mac.clone(),
        })));
        mac
    }

    /// How many slots hold a derived key (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.load().is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// `<AccessKeyId>/<yyyymmdd>/<region>/<service>/aws4_request` → (key id, scope).
fn split_credential(credential: Cow<'_, str>) -> Result<(Cow<'_, str>, Cow<'_, str>), Rejection> {
    let shape = "Credential must be <AccessKeyId>/<yyyymmdd>/<region>/<service>/aws4_request";
    let Some(slash) = credential.find('/') else {
        return Err(if credential.is_empty() {
            Rejection::MissingAccessKeyId
        } else {
            incomplete(shape)
        });
    };
    if slash == 0 {
        return Err(Rejection::MissingAccessKeyId);
    }
    let (key_id, scope) = match credential {
        Cow::Borrowed(s) => (Cow::Borrowed(&s[..slash]), Cow::Borrowed(&s[slash + 1..])),
        Cow::Owned(s) => (
            Cow::Owned(s[..slash].to_owned()),
            Cow::Owned(s[slash + 1..].to_owned()),
        ),
    };
    let mut parts = scope.split('/');
    let (Some(date), Some(region), Some(service), Some(terminator), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(incomplete(shape));
    };
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= MAX_SCOPE_PART
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(incomplete("the credential scope date must be yyyymmdd"));
    }
    if !name_ok(region) || !name_ok(service) {
        return Err(incomplete(
            "the credential scope region and service must be short names of letters, digits, `-`, `_` and `.`",
        ));
    }
    if terminator != "aws4_request" {
        return Err(incomplete(
            "the credential scope must end with aws4_request",
        ));
    }
    Ok((key_id, scope))
}

/// What every SigV4 request must sign: the host, and every `x-amz-*` header it carries (date,
/// security token, payload hash, target, copy source, ACL, checksums…: all part of the call).
/// Header-authenticated requests with a body must also sign its content type, which botocore
/// always does; presigned URLs are exempt from that (browsers add their own).
fn check_coverage(
    req: &RequestView<'_>,
    signed_headers: &SignedNames<'_>,
    presigned: bool,
) -> Result<(), Rejection> {
    if req.host.is_none() {
        return Err(incomplete("the request has no Host"));
    }
    if !signed_headers.contains("host") {
        return Err(incomplete("header host must be signed"));
    }
    for name in req.headers.keys() {
        let n = name.as_str();
        let must =
            n.starts_with("x-amz-") || (!presigned && n == "content-type" && !req.body.is_empty());
        if must && !signed_headers.contains(n) {
            return Err(Rejection::IncompleteSignature(Cow::Owned(format!(
                "header {n} is present but not signed"
            ))));
        }
    }
    Ok(())
}

/// `X-Amz-Content-SHA256` as declared by the client.
fn declared_payload(value: Option<&str>) -> Result<Payload<'_>, Rejection> {
    match value.map(str::trim) {
        None => Ok(Payload::Body),
        Some(v) if v == UNSIGNED_PAYLOAD || v.starts_with("STREAMING-") => Ok(Payload::Unsigned(v)),
        Some(v) if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(Payload::Declared(v))
        }
        Some(_) => Err(incomplete(
            "x-amz-content-sha256 must be a hex SHA-256, UNSIGNED-PAYLOAD or STREAMING-…",
        )),
    }
}

fn decode_signature(hex: &str) -> Result<[u8; 32], Rejection> {
    let mut sig = [0u8; 32];
    if hex_decode_into(hex.as_bytes(), &mut sig) {
        Ok(sig)
    } else {
        Err(incomplete("Signature must be 64 hex digits"))
    }
}

fn check_date_matches_scope(amz_date: &str, scope: &str) -> Result<(), Rejection> {
    if amz_date.get(..8) != scope.get(..8) {
        return Err(incomplete(
            "the first 8 characters of X-Amz-Date must be the credential scope date",
        ));
    }
    Ok(())
}

/// Percent-decodes a query value (`%XX` only) into text.
fn decoded_str(raw: &[u8]) -> Result<Cow<'_, str>, Rejection> {
    let bad = || incomplete("a signature parameter is not UTF-8");
    match percent_decode(raw, false) {
        Cow::Borrowed(b) => std::str::from_utf8(b).map(Cow::Borrowed).map_err(|_| bad()),
        Cow::Owned(v) => String::from_utf8(v).map(Cow::Owned).map_err(|_| bad()),
    }
}

/// Parses `AWS4-HMAC-SHA256 Credential=<…>, SignedHeaders=<h;h>, Signature=<hex>` (botocore puts a
/// space after each comma; none is accepted too) and checks that the request signs what it must.
pub fn parse_header<'a>(
    authorization: &'a str,
    req: &RequestView<'a>,
) -> Result<ParsedAuth<'a>, Rejection> {
    let Some(rest) = authorization
        .strip_prefix(ALGORITHM)
        .and_then(|r| r.strip_prefix(' '))
    else {
        return Err(incomplete(
            "unsupported AWS signature algorithm: only AWS4-HMAC-SHA256 is supported",
        ));
    };
    let mut parts = rest.split(',');
    let mut field = |name: &str| -> Result<&'a str, Rejection> {
        parts
            .next()
            .map(|p| p.strip_prefix(' ').unwrap_or(p))
            .and_then(|p| p.strip_prefix(name))
            .and_then(|p| p.strip_prefix('='))
            .ok_or_else(|| {
                incomplete("Authorization must be Credential=…, SignedHeaders=…, Signature=…")
            })
    };
    let credential = field("Credential")?;
    let signed_headers = field("SignedHeaders")?;
    let signature_hex = field("Signature")?.trim_end();
    if parts.next().is_some() {
        return Err(incomplete("unexpected field after Signature"));
    }
    let (key_id, scope) = split_credential(Cow::Borrowed(credential))?;
    let signature = decode_signature(signature_hex)?;
    let signed = SignedNames::parse(signed_headers)?;
    if !signed.contains("x-amz-date") {
        return Err(incomplete("header x-amz-date must be signed"));
    }
    check_coverage(req, &signed, false)?;
    let amz_date = match single_header(req.headers, &X_AMZ_DATE)? {
        Some(d) if !d.trim().is_empty() => d.trim(),
        _ => {
            return Err(incomplete(
                "header x-amz-date is missing (a Date header is not accepted instead)",
            ));
        }
    };
    check_date_matches_scope(amz_date, &scope)?;
    let security_token = match single_header(req.headers, &X_AMZ_SECURITY_TOKEN)? {
        Some(t) => Some(Cow::Borrowed(t.trim())),
        None => None,
    };
    let payload = declared_payload(single_header(req.headers, &X_AMZ_CONTENT_SHA256)?)?;
    let service = scope.split('/').nth(2).unwrap_or_default();
    let action = action_of(req, service)?;

    Ok(ParsedAuth {
        scheme: Scheme::AwsSigV4,
        key_id: key_id.clone(),
        action,
        window: parse_amz_date(amz_date).map_or(Window::Malformed, Window::SignedAt),
        nonce: None,
        security_token,
        body_signed: !matches!(payload, Payload::Unsigned(_)),
        credential: Credential::SigV4(SigV4Credential {
            key_id,
            scope,
            amz_date: Cow::Borrowed(amz_date),
            signed_headers: Cow::Borrowed(signed_headers),
            signature,
            payload,
            presigned: false,
        }),
    })
}

/// Parses a presigned URL's `X-Amz-*` query parameters. Each must appear once; the URL is valid
/// from `X-Amz-Date` for `X-Amz-Expires` seconds (1 to 604800).
pub fn parse_presigned<'a>(req: &RequestView<'a>) -> Result<ParsedAuth<'a>, Rejection> {
    let mut algorithm = None;
    let mut credential = None;
    let mut date = None;
    let mut expires = None;
    let mut signed_headers = None;
    let mut signature = None;
    let mut token = None;
    for (k, v) in raw_pairs(req.query) {
        let slot = match &*percent_decode(k, false) {
            b"X-Amz-Algorithm" => &mut algorithm,
            b"X-Amz-Credential" => &mut credential,
            b"X-Amz-Date" => &mut date,
            b"X-Amz-Expires" => &mut expires,
            b"X-Amz-SignedHeaders" => &mut signed_headers,
            b"X-Amz-Signature" => &mut signature,
            b"X-Amz-Security-Token" => &mut token,
            _ => continue,
        };
        if slot.replace(v).is_some() {
            return Err(incomplete(
                "an X-Amz-* parameter of the presigned URL is repeated",
            ));
        }
    }
    let required = |v: Option<&'a [u8]>| {
        v.ok_or_else(|| {
            incomplete(
                "a presigned URL needs X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date, X-Amz-Expires, X-Amz-SignedHeaders and X-Amz-Signature",
            )
        })
    };
    if &*decoded_str(required(algorithm)?)? != ALGORITHM {
        return Err(incomplete(
            "unsupported AWS signature algorithm: only AWS4-HMAC-SHA256 is supported",
        ));
    }
    let (key_id, scope) = split_credential(decoded_str(required(credential)?)?)?;
    let amz_date = decoded_str(required(date)?)?;
    let expires = decoded_str(required(expires)?)?;
    let signed_headers = decoded_str(required(signed_headers)?)?;
    let signature = decode_signature(&decoded_str(required(signature)?)?)?;
    let expires: i64 = match expires.parse() {
        Ok(n) if expires.bytes().all(|b| b.is_ascii_digit()) && (1..=MAX_EXPIRES).contains(&n) => n,
        _ => {
            return Err(incomplete(
                "X-Amz-Expires must be a number of seconds from 1 to 604800",
            ));
        }
    };
    check_coverage(req, &SignedNames::parse(&signed_headers)?, true)?;
    check_date_matches_scope(&amz_date, &scope)?;
    let security_token = match token {
        Some(t) => {
            if req.headers.contains_key("x-amz-security-token") {
                return Err(incomplete(
                    "the security token is given both in the query and in a header",
                ));
            }
            Some(decoded_str(t)?)
        }
        None => None,
    };
    let service = scope.split('/').nth(2).unwrap_or_default();
    // botocore presigns S3 with UNSIGNED-PAYLOAD; other services' presigned URLs (SigV4QueryAuth)
    // hash the body like a header-signed request — botocore moved it into the query, so it is empty.
    let payload = if service == "s3" {
        Payload::Unsigned(UNSIGNED_PAYLOAD)
    } else {
        declared_payload(single_header(req.headers, &X_AMZ_CONTENT_SHA256)?)?
    };
    let action = action_of(req, service)?;

    Ok(ParsedAuth {
        scheme: Scheme::AwsSigV4Presigned,
        key_id: key_id.clone(),
        action,
        window: parse_amz_date(&amz_date).map_or(Window::Malformed, |signed_at| {
            Window::Presigned { signed_at, expires }
        }),
        nonce: None,
        security_token,
        body_signed: !matches!(payload, Payload::Unsigned(_)),
        credential: Credential::SigV4(SigV4Credential {
            key_id,
            scope,
            amz_date,
            signed_headers,
            signature,
            payload,
            presigned: true,
        }),
    })
}

// ---------------------------------------------------------------------------------------------
// The action

/// An operation name as AWS spells them: letters, digits, `_`, `-`.
fn operation_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

fn not_an_operation() -> Rejection {
    incomplete("the request names an operation that is not an AWS operation name")
}

/// `application/x-www-form-urlencoded` bodies (and bodies with no content type, which a query
/// service may still read as a form) can carry query-protocol parameters.
fn body_is_form(req: &RequestView<'_>) -> bool {
    if req.body.is_empty() {
        return false;
    }
    match req.content_type() {
        None => !req.headers.contains_key(http::header::CONTENT_TYPE),
        Some(ct) => ct
            .get(..33)
            .is_some_and(|p| p.eq_ignore_ascii_case("application/x-www-form-urlencoded")),
    }
}

/// Raw `(key, value)` pairs of a form body, which need not be UTF-8.
fn byte_pairs(raw: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    raw.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&b| b == b'=') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, &p[p.len()..]),
        })
}

/// The query protocol's `Action`, from the query or a form body. More than one `Action` (even
/// twice the same) is refused: the gateway and the service could read different ones.
fn query_action<'a>(req: &RequestView<'a>) -> Result<Option<Cow<'a, str>>, Rejection> {
    let from_query = raw_pairs(req.query);
    let from_body = byte_pairs(if body_is_form(req) { req.body } else { &[] });
    let mut found: Option<&'a [u8]> = None;
    for (k, v) in from_query.chain(from_body) {
        if &*percent_decode(k, true) == b"Action" && found.replace(v).is_some() {
            return Err(incomplete("the Action parameter appears more than once"));
        }
    }
    let Some(raw) = found else {
        return Ok(None);
    };
    // `+` is a space to a form reader; either way it cannot be part of an operation name.
    let action: Cow<'a, str> = match percent_decode(raw, true) {
        Cow::Borrowed(b) => Cow::Borrowed(std::str::from_utf8(b).map_err(|_| not_an_operation())?),
        Cow::Owned(v) => Cow::Owned(String::from_utf8(v).map_err(|_| not_an_operation())?),
    };
    if !operation_name(&action) {
        return Err(not_an_operation());
    }
    Ok(Some(action))
}

/// Smithy RPC v2 (CBOR), used by botocore for e.g. CodeBuild and CloudWatch:
/// `POST /service/<ServiceName>/operation/<OperationName>`.
fn smithy_rpc_operation(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/service/")?;
    let (_service, rest) = rest.split_once('/')?;
    let op = rest.strip_prefix("operation/")?;
    (!op.is_empty() && !op.contains('/')).then_some(op)
}

/// The action of a SigV4 request, read the way the service named by the credential scope reads
/// it, so that high-risk lists use AWS's operation names (as botocore names operations, e.g.
/// `ListObjectsV2`, `CreateUser`; not IAM permission names like `s3:ListBucket`):
///
/// * `s3`: from the method, the path (path-style, or virtual-hosted when the Host is
///   `<bucket>.s3….`) and the sub-resource in the query — see [`s3_action`];
/// * JSON protocols: `X-Amz-Target` after its last `.` (`DynamoDB_20120810.ListTables` →
///   `ListTables`);
/// * query and EC2 protocols: the `Action` parameter (query or form body);
/// * Smithy RPC v2: the operation segment of `/service/…/operation/<Op>`;
/// * REST services whose routes are tabulated (`lambda`, `bedrock`, `savingsplans`, the
///   `amplify` and `mediapackagev2` operations of the quarantine policy): matched against
///   botocore's request URIs;
/// * anything else: [`UNKNOWN_ACTION`], never a `METHOD /path` string.
///
/// A request naming its operation in more than one of these ways is refused: the service might
/// read a different one than the gateway.
pub fn action_of<'a>(req: &RequestView<'a>, service: &str) -> Result<Cow<'a, str>, Rejection> {
    if service == "s3" {
        return Ok(Cow::Borrowed(s3_action(req)));
    }
    let target = single_header(req.headers, "x-amz-target")?;
    let action = query_action(req)?;
    let smithy = smithy_rpc_operation(req.path);
    let named = usize::from(target.is_some())
        + usize::from(action.is_some())
        + usize::from(smithy.is_some());
    if named > 1 {
        return Err(incomplete(
            "the request names its operation more than once (X-Amz-Target, Action, /service/…/operation/…)",
        ));
    }
    if let Some(target) = target {
        let op = target.trim().rsplit('.').next().unwrap_or_default();
        return if operation_name(op) {
            Ok(Cow::Borrowed(op))
        } else {
            Err(not_an_operation())
        };
    }
    if let Some(action) = action {
        return Ok(action);
    }
    if let Some(op) = smithy {
        return if operation_name(op) {
            Ok(Cow::Borrowed(op))
        } else {
            Err(not_an_operation())
        };
    }
    let table = match service {
        "lambda" => LAMBDA,
        "bedrock" => BEDROCK,
        "savingsplans" => SAVINGSPLANS,
        "amplify" => AMPLIFY,
        "mediapackagev2" => MEDIAPACKAGEV2,
        _ => return Ok(Cow::Borrowed(UNKNOWN_ACTION)),
    };
    Ok(Cow::Borrowed(rest_action(table, req)))
}

/// botocore's `remove_dot_segments` over the raw path, yielding the non-empty segments
/// (`//` collapses, `.` goes, `..` pops).
fn normalized_segments(path: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    out
}

/// One REST operation as botocore's model declares it.
struct RestOp {
    method: &'static str,
    /// Request URI template; `{Name}` matches one segment.
    path: &'static str,
    /// A query parameter the URI template also requires.
    query: Option<(&'static str, &'static str)>,
    name: &'static str,
}

impl RestOp {
    const fn new(
        method: &'static str,
        path: &'static str,
        query: Option<(&'static str, &'static str)>,
        name: &'static str,
    ) -> Self {
        RestOp {
            method,
            path,
            query,
            name,
        }
    }

    fn matches_path(&self, segments: &[&str]) -> bool {
        let mut i = 0;
        for t in self.path.split('/').filter(|t| !t.is_empty()) {
            let Some(s) = segments.get(i) else {
                return false;
            };
            // A literal segment is compared decoded, so `%66unctions` cannot dodge `functions`.
            if !t.starts_with('{') && *percent_decode(s.as_bytes(), false) != *t.as_bytes() {
                return false;
            }
            i += 1;
        }
        i == segments.len()
    }
}

fn query_has(query: &str, key: &str, value: &str) -> bool {
    raw_pairs(query).any(|(k, v)| {
        *percent_decode(k, false) == *key.as_bytes()
            && *percent_decode(v, false) == *value.as_bytes()
    })
}

fn rest_action(table: &[RestOp], req: &RequestView<'_>) -> &'static str {
    let segments = normalized_segments(req.path);
    let mut found = None;
    for op in table {
        if op.method != req.method || !op.matches_path(&segments) {
            continue;
        }
        match op.query {
            Some((k, v)) if query_has(req.query, k, v) => return op.name,
            Some(_) => {}
            None => found = found.or(Some(op.name)),
        }
    }
    found.unwrap_or(UNKNOWN_ACTION)
}

/// Is this Host an S3 virtual-hosted endpoint (`<bucket>.s3.<region>.amazonaws.com`,
/// `<bucket>.s3-<region>…`, `<bucket>.s3express-…`)? Any other host is read path-style, which is
/// how botocore talks to a custom endpoint (`addressing_style="path"`).
fn s3_virtual_hosted(host: &str) -> bool {
    let host = crate::rules::strip_port(host).to_ascii_lowercase();
    [".s3.", ".s3-", ".s3express-"]
        .iter()
        .any(|m| host.find(m).is_some_and(|i| i > 0))
}

/// S3 sub-resources: (query key, method, bucket-level operation, object-level operation). A
/// sub-resource that exists at one level only maps to that operation whatever the path looks
/// like, so a misread of path-style against virtual-hosted cannot turn `PUT ?policy` into
/// `PutObject`.
#[rustfmt::skip]
const S3_SUBRESOURCES: &[(&str, &str, &str, &str)] = &[
    ("abac", "GET", "GetBucketAbac", "GetBucketAbac"),
    ("abac", "PUT", "PutBucketAbac", "PutBucketAbac"),
    ("accelerate", "GET", "GetBucketAccelerateConfiguration", "GetBucketAccelerateConfiguration"),
    ("accelerate", "PUT", "PutBucketAccelerateConfiguration", "PutBucketAccelerateConfiguration"),
    ("acl", "GET", "GetBucketAcl", "GetObjectAcl"),
    ("acl", "PUT", "PutBucketAcl", "PutObjectAcl"),
    ("analytics", "DELETE", "DeleteBucketAnalyticsConfiguration", "DeleteBucketAnalyticsConfiguration"),
    ("analytics", "GET", "GetBucketAnalyticsConfiguration", "GetBucketAnalyticsConfiguration"),
    ("analytics", "PUT", "PutBucketAnalyticsConfiguration", "PutBucketAnalyticsConfiguration"),
    ("annotation", "DELETE", "DeleteObjectAnnotation", "DeleteObjectAnnotation"),
    ("annotation", "GET", "GetObjectAnnotation", "GetObjectAnnotation"),
    ("annotation", "PUT", "PutObjectAnnotation", "PutObjectAnnotation"),
    ("attributes", "GET", "GetObjectAttributes", "GetObjectAttributes"),
    ("cors", "DELETE", "DeleteBucketCors", "DeleteBucketCors"),
    ("cors", "GET", "GetBucketCors", "GetBucketCors"),
    ("cors", "PUT", "PutBucketCors", "PutBucketCors"),
    ("delete", "POST", "DeleteObjects", "DeleteObjects"),
    ("encryption", "DELETE", "DeleteBucketEncryption", "DeleteBucketEncryption"),
    ("encryption", "GET", "GetBucketEncryption", "GetBucketEncryption"),
    ("encryption", "PUT", "PutBucketEncryption", "UpdateObjectEncryption"),
    ("intelligent-tiering", "DELETE", "DeleteBucketIntelligentTieringConfiguration", "DeleteBucketIntelligentTieringConfiguration"),
    ("intelligent-tiering", "GET", "GetBucketIntelligentTieringConfiguration", "GetBucketIntelligentTieringConfiguration"),
    ("intelligent-tiering", "PUT", "PutBucketIntelligentTieringConfiguration", "PutBucketIntelligentTieringConfiguration"),
    ("inventory", "DELETE", "DeleteBucketInventoryConfiguration", "DeleteBucketInventoryConfiguration"),
    ("inventory", "GET", "GetBucketInventoryConfiguration", "GetBucketInventoryConfiguration"),
    ("inventory", "PUT", "PutBucketInventoryConfiguration", "PutBucketInventoryConfiguration"),
    ("legal-hold", "GET", "GetObjectLegalHold", "GetObjectLegalHold"),
    ("legal-hold", "PUT", "PutObjectLegalHold", "PutObjectLegalHold"),
    ("lifecycle", "DELETE", "DeleteBucketLifecycle", "DeleteBucketLifecycle"),
    ("lifecycle", "GET", "GetBucketLifecycleConfiguration", "GetBucketLifecycleConfiguration"),
    ("lifecycle", "PUT", "PutBucketLifecycleConfiguration", "PutBucketLifecycleConfiguration"),
    ("location", "GET", "GetBucketLocation", "GetBucketLocation"),
    ("logging", "GET", "GetBucketLogging", "GetBucketLogging"),
    ("logging", "PUT", "PutBucketLogging", "PutBucketLogging"),
    ("metadataAnnotationTable", "PUT", "UpdateBucketMetadataAnnotationTableConfiguration", "UpdateBucketMetadataAnnotationTableConfiguration"),
    ("metadataConfiguration", "DELETE", "DeleteBucketMetadataConfiguration", "DeleteBucketMetadataConfiguration"),
    ("metadataConfiguration", "GET", "GetBucketMetadataConfiguration", "GetBucketMetadataConfiguration"),
    ("metadataConfiguration", "POST", "CreateBucketMetadataConfiguration", "CreateBucketMetadataConfiguration"),
    ("metadataInventoryTable", "PUT", "UpdateBucketMetadataInventoryTableConfiguration", "UpdateBucketMetadataInventoryTableConfiguration"),
    ("metadataJournalTable", "PUT", "UpdateBucketMetadataJournalTableConfiguration", "UpdateBucketMetadataJournalTableConfiguration"),
    ("metadataTable", "DELETE", "DeleteBucketMetadataTableConfiguration", "DeleteBucketMetadataTableConfiguration"),
    ("metadataTable", "GET", "GetBucketMetadataTableConfiguration", "GetBucketMetadataTableConfiguration"),
    ("metadataTable", "POST", "CreateBucketMetadataTableConfiguration", "CreateBucketMetadataTableConfiguration"),
    ("metrics", "DELETE", "DeleteBucketMetricsConfiguration", "DeleteBucketMetricsConfiguration"),
    ("metrics", "GET", "GetBucketMetricsConfiguration", "GetBucketMetricsConfiguration"),
    ("metrics", "PUT", "PutBucketMetricsConfiguration", "PutBucketMetricsConfiguration"),
    ("notification", "GET", "GetBucketNotificationConfiguration", "GetBucketNotificationConfiguration"),
    ("notification", "PUT", "PutBucketNotificationConfiguration", "PutBucketNotificationConfiguration"),
    ("object-lock", "GET", "GetObjectLockConfiguration", "GetObjectLockConfiguration"),
    ("object-lock", "PUT", "PutObjectLockConfiguration", "PutObjectLockConfiguration"),
    ("ownershipControls", "DELETE", "DeleteBucketOwnershipControls", "DeleteBucketOwnershipControls"),
    ("ownershipControls", "GET", "GetBucketOwnershipControls", "GetBucketOwnershipControls"),
    ("ownershipControls", "PUT", "PutBucketOwnershipControls", "PutBucketOwnershipControls"),
    ("policy", "DELETE", "DeleteBucketPolicy", "DeleteBucketPolicy"),
    ("policy", "GET", "GetBucketPolicy", "GetBucketPolicy"),
    ("policy", "PUT", "PutBucketPolicy", "PutBucketPolicy"),
    ("policyStatus", "GET", "GetBucketPolicyStatus", "GetBucketPolicyStatus"),
    ("publicAccessBlock", "DELETE", "DeletePublicAccessBlock", "DeletePublicAccessBlock"),
    ("publicAccessBlock", "GET", "GetPublicAccessBlock", "GetPublicAccessBlock"),
    ("publicAccessBlock", "PUT", "PutPublicAccessBlock", "PutPublicAccessBlock"),
    ("renameObject", "PUT", "RenameObject", "RenameObject"),
    ("replication", "DELETE", "DeleteBucketReplication", "DeleteBucketReplication"),
    ("replication", "GET", "GetBucketReplication", "GetBucketReplication"),
    ("replication", "PUT", "PutBucketReplication", "PutBucketReplication"),
    ("requestPayment", "GET", "GetBucketRequestPayment", "GetBucketRequestPayment"),
    ("requestPayment", "PUT", "PutBucketRequestPayment", "PutBucketRequestPayment"),
    ("restore", "POST", "RestoreObject", "RestoreObject"),
    ("retention", "GET", "GetObjectRetention", "GetObjectRetention"),
    ("retention", "PUT", "PutObjectRetention", "PutObjectRetention"),
    ("select", "POST", "SelectObjectContent", "SelectObjectContent"),
    ("session", "GET", "CreateSession", "CreateSession"),
    ("tagging", "DELETE", "DeleteBucketTagging", "DeleteObjectTagging"),
    ("tagging", "GET", "GetBucketTagging", "GetObjectTagging"),
    ("tagging", "PUT", "PutBucketTagging", "PutObjectTagging"),
    ("torrent", "GET", "GetObjectTorrent", "GetObjectTorrent"),
    ("uploadId", "DELETE", "AbortMultipartUpload", "AbortMultipartUpload"),
    ("uploadId", "GET", "ListParts", "ListParts"),
    ("uploadId", "POST", "CompleteMultipartUpload", "CompleteMultipartUpload"),
    ("uploadId", "PUT", "UploadPart", "UploadPart"),
    ("uploads", "GET", "ListMultipartUploads", "ListMultipartUploads"),
    ("uploads", "POST", "CreateMultipartUpload", "CreateMultipartUpload"),
    ("versioning", "GET", "GetBucketVersioning", "GetBucketVersioning"),
    ("versioning", "PUT", "PutBucketVersioning", "PutBucketVersioning"),
    ("versions", "GET", "ListObjectVersions", "ListObjectVersions"),
    ("website", "DELETE", "DeleteBucketWebsite", "DeleteBucketWebsite"),
    ("website", "GET", "GetBucketWebsite", "GetBucketWebsite"),
    ("website", "PUT", "PutBucketWebsite", "PutBucketWebsite"),
];

/// Sub-resources whose `GET` lists the configurations unless an `id` names one.
const S3_LISTABLE: &[(&str, &str)] = &[
    ("analytics", "ListBucketAnalyticsConfigurations"),
    (
        "intelligent-tiering",
        "ListBucketIntelligentTieringConfigurations",
    ),
    ("inventory", "ListBucketInventoryConfigurations"),
    ("metrics", "ListBucketMetricsConfigurations"),
];

/// The S3 operation of a request (botocore's S3 model, `/{Bucket}` and `/{Bucket}/{Key+}`).
/// More than one sub-resource in the query, or a method a sub-resource does not take, gives
/// [`UNKNOWN_ACTION`].
pub fn s3_action(req: &RequestView<'_>) -> &'static str {
    // S3 Control signs as `s3` too: `/v20180820/…` with `x-amz-account-id`.
    if let Some(rest) = req.path.strip_prefix("/v20180820/")
        && req.headers.contains_key("x-amz-account-id")
    {
        return match (req.method, rest.trim_end_matches('/')) {
            ("GET", "configuration/publicAccessBlock") => "GetPublicAccessBlock",
            ("PUT", "configuration/publicAccessBlock") => "PutPublicAccessBlock",
            ("DELETE", "configuration/publicAccessBlock") => "DeletePublicAccessBlock",
            _ => UNKNOWN_ACTION,
        };
    }
    let path = req.path.strip_prefix('/').unwrap_or(req.path);
    let (bucket, has_key) = if req.host.is_some_and(s3_virtual_hosted) {
        (Some(""), !path.is_empty())
    } else {
        match path.split_once('/') {
            Some((b, k)) => (Some(b), !k.is_empty()),
            None if path.is_empty() => (None, false),
            None => (Some(path), false),
        }
    };
    let mut sub: Option<&str> = None;
    let mut subs = 0;
    let mut has_id = false;
    let mut list_v2 = false;
    for (k, v) in raw_pairs(req.query) {
        let key = percent_decode(k, false);
        let known = S3_SUBRESOURCES
            .iter()
            .map(|s| s.0)
            .find(|name| name.as_bytes() == &*key);
        if let Some(name) = known {
            if sub != Some(name) {
                subs += 1;
                sub = Some(name);
            }
        } else if &*key == b"id" {
            has_id = true;
        } else if &*key == b"list-type" && &*percent_decode(v, false) == b"2" {
            list_v2 = true;
        }
    }
    if subs > 1 {
        return UNKNOWN_ACTION;
    }
    let method = req.method;
    let copy = req.headers.contains_key("x-amz-copy-source");
    if let Some(sub) = sub {
        if method == "GET"
            && !has_id
            && let Some((_, list)) = S3_LISTABLE.iter().find(|(s, _)| *s == sub)
        {
            return list;
        }
        if sub == "uploadId" && method == "PUT" && copy {
            return "UploadPartCopy";
        }
        return S3_SUBRESOURCES
            .iter()
            .find(|(s, m, _, _)| *s == sub && *m == method)
            .map_or(
                UNKNOWN_ACTION,
                |(_, _, bucket_op, object_op)| {
                    if has_key { object_op } else { bucket_op }
                },
            );
    }
    match (method, bucket, has_key) {
        ("GET", _, true) => "GetObject",
        ("HEAD", _, true) => "HeadObject",
        ("PUT", _, true) if copy => "CopyObject",
        ("PUT", _, true) => "PutObject",
        ("DELETE", _, true) => "DeleteObject",
        ("GET", Some(_), false) if list_v2 => "ListObjectsV2",
        ("GET", Some(_), false) => "ListObjects",
        ("HEAD", Some(_), false) => "HeadBucket",
        ("PUT", Some(_), false) => "CreateBucket",
        ("DELETE", Some(_), false) => "DeleteBucket",
        ("POST", Some("WriteGetObjectResponse"), false) => "WriteGetObjectResponse",
        // A browser-form upload (POST policy); it needs s3:PutObject.
        ("POST", Some(_), false) => "PostObject",
        ("GET", None, _) => "ListBuckets",
        _ => UNKNOWN_ACTION,
    }
}

// REST request URIs from botocore 1.44.5 service models (lambda 2015-03-31 in full; bedrock and
// bedrock-runtime share the signing name `bedrock`; the quarantine-relevant operations of
// amplify and mediapackagev2; savingsplans in full). Generated, sorted by path.
#[rustfmt::skip]
const LAMBDA: &[RestOp] = &[
    RestOp::new("POST", "/2014-11-13/functions/{FunctionName}/invoke-async", None, "InvokeAsync"),
    RestOp::new("GET", "/2015-03-31/event-source-mappings", None, "ListEventSourceMappings"),
    RestOp::new("POST", "/2015-03-31/event-source-mappings", None, "CreateEventSourceMapping"),
    RestOp::new("DELETE", "/2015-03-31/event-source-mappings/{UUID}", None, "DeleteEventSourceMapping"),
    RestOp::new("GET", "/2015-03-31/event-source-mappings/{UUID}", None, "GetEventSourceMapping"),
    RestOp::new("PUT", "/2015-03-31/event-source-mappings/{UUID}", None, "UpdateEventSourceMapping"),
    RestOp::new("GET", "/2015-03-31/functions", None, "ListFunctions"),
    RestOp::new("POST", "/2015-03-31/functions", None, "CreateFunction"),
    RestOp::new("DELETE", "/2015-03-31/functions/{FunctionName}", None, "DeleteFunction"),
    RestOp::new("GET", "/2015-03-31/functions/{FunctionName}", None, "GetFunction"),
    RestOp::new("GET", "/2015-03-31/functions/{FunctionName}/aliases", None, "ListAliases"),
    RestOp::new("POST", "/2015-03-31/functions/{FunctionName}/aliases", None, "CreateAlias"),
    RestOp::new("DELETE", "/2015-03-31/functions/{FunctionName}/aliases/{Name}", None, "DeleteAlias"),
    RestOp::new("GET", "/2015-03-31/functions/{FunctionName}/aliases/{Name}", None, "GetAlias"),
    RestOp::new("PUT", "/2015-03-31/functions/{FunctionName}/aliases/{Name}", None, "UpdateAlias"),
    RestOp::new("PUT", "/2015-03-31/functions/{FunctionName}/code", None, "UpdateFunctionCode"),
    RestOp::new("GET", "/2015-03-31/functions/{FunctionName}/configuration", None, "GetFunctionConfiguration"),
    RestOp::new("PUT", "/2015-03-31/functions/{FunctionName}/configuration", None, "UpdateFunctionConfiguration"),
    RestOp::new("POST", "/2015-03-31/functions/{FunctionName}/invocations", None, "Invoke"),
    RestOp::new("GET", "/2015-03-31/functions/{FunctionName}/policy", None, "GetPolicy"),
    RestOp::new("POST", "/2015-03-31/functions/{FunctionName}/policy", None, "AddPermission"),
    RestOp::new("DELETE", "/2015-03-31/functions/{FunctionName}/policy/{StatementId}", None, "RemovePermission"),
    RestOp::new("GET", "/2015-03-31/functions/{FunctionName}/versions", None, "ListVersionsByFunction"),
    RestOp::new("POST", "/2015-03-31/functions/{FunctionName}/versions", None, "PublishVersion"),
    RestOp::new("GET", "/2016-08-19/account-settings", None, "GetAccountSettings"),
    RestOp::new("DELETE", "/2017-03-31/tags/{Resource}", None, "UntagResource"),
    RestOp::new("GET", "/2017-03-31/tags/{Resource}", None, "ListTags"),
    RestOp::new("POST", "/2017-03-31/tags/{Resource}", None, "TagResource"),
    RestOp::new("DELETE", "/2017-10-31/functions/{FunctionName}/concurrency", None, "DeleteFunctionConcurrency"),
    RestOp::new("PUT", "/2017-10-31/functions/{FunctionName}/concurrency", None, "PutFunctionConcurrency"),
    RestOp::new("GET", "/2018-10-31/layers", None, "ListLayers"),
    RestOp::new("GET", "/2018-10-31/layers", Some(("find", "LayerVersion")), "GetLayerVersionByArn"),
    RestOp::new("GET", "/2018-10-31/layers/{LayerName}/versions", None, "ListLayerVersions"),
    RestOp::new("POST", "/2018-10-31/layers/{LayerName}/versions", None, "PublishLayerVersion"),
    RestOp::new("DELETE", "/2018-10-31/layers/{LayerName}/versions/{VersionNumber}", None, "DeleteLayerVersion"),
    RestOp::new("GET", "/2018-10-31/layers/{LayerName}/versions/{VersionNumber}", None, "GetLayerVersion"),
    RestOp::new("GET", "/2018-10-31/layers/{LayerName}/versions/{VersionNumber}/policy", None, "GetLayerVersionPolicy"),
    RestOp::new("POST", "/2018-10-31/layers/{LayerName}/versions/{VersionNumber}/policy", None, "AddLayerVersionPermission"),
    RestOp::new("DELETE", "/2018-10-31/layers/{LayerName}/versions/{VersionNumber}/policy/{StatementId}", None, "RemoveLayerVersionPermission"),
    RestOp::new("DELETE", "/2019-09-25/functions/{FunctionName}/event-invoke-config", None, "DeleteFunctionEventInvokeConfig"),
    RestOp::new("GET", "/2019-09-25/functions/{FunctionName}/event-invoke-config", None, "GetFunctionEventInvokeConfig"),
    RestOp::new("POST", "/2019-09-25/functions/{FunctionName}/event-invoke-config", None, "UpdateFunctionEventInvokeConfig"),
    RestOp::new("PUT", "/2019-09-25/functions/{FunctionName}/event-invoke-config", None, "PutFunctionEventInvokeConfig"),
    RestOp::new("GET", "/2019-09-25/functions/{FunctionName}/event-invoke-config/list", None, "ListFunctionEventInvokeConfigs"),
    RestOp::new("GET", "/2019-09-30/functions/{FunctionName}/concurrency", None, "GetFunctionConcurrency"),
    RestOp::new("DELETE", "/2019-09-30/functions/{FunctionName}/provisioned-concurrency", None, "DeleteProvisionedConcurrencyConfig"),
    RestOp::new("GET", "/2019-09-30/functions/{FunctionName}/provisioned-concurrency", None, "GetProvisionedConcurrencyConfig"),
    RestOp::new("GET", "/2019-09-30/functions/{FunctionName}/provisioned-concurrency", Some(("List", "ALL")), "ListProvisionedConcurrencyConfigs"),
    RestOp::new("PUT", "/2019-09-30/functions/{FunctionName}/provisioned-concurrency", None, "PutProvisionedConcurrencyConfig"),
    RestOp::new("GET", "/2020-04-22/code-signing-configs", None, "ListCodeSigningConfigs"),
    RestOp::new("POST", "/2020-04-22/code-signing-configs", None, "CreateCodeSigningConfig"),
    RestOp::new("DELETE", "/2020-04-22/code-signing-configs/{CodeSigningConfigArn}", None, "DeleteCodeSigningConfig"),
    RestOp::new("GET", "/2020-04-22/code-signing-configs/{CodeSigningConfigArn}", None, "GetCodeSigningConfig"),
    RestOp::new("PUT", "/2020-04-22/code-signing-configs/{CodeSigningConfigArn}", None, "UpdateCodeSigningConfig"),
    RestOp::new("GET", "/2020-04-22/code-signing-configs/{CodeSigningConfigArn}/functions", None, "ListFunctionsByCodeSigningConfig"),
    RestOp::new("DELETE", "/2020-06-30/functions/{FunctionName}/code-signing-config", None, "DeleteFunctionCodeSigningConfig"),
    RestOp::new("GET", "/2020-06-30/functions/{FunctionName}/code-signing-config", None, "GetFunctionCodeSigningConfig"),
    RestOp::new("PUT", "/2020-06-30/functions/{FunctionName}/code-signing-config", None, "PutFunctionCodeSigningConfig"),
    RestOp::new("GET", "/2021-07-20/functions/{FunctionName}/runtime-management-config", None, "GetRuntimeManagementConfig"),
    RestOp::new("PUT", "/2021-07-20/functions/{FunctionName}/runtime-management-config", None, "PutRuntimeManagementConfig"),
    RestOp::new("DELETE", "/2021-10-31/functions/{FunctionName}/url", None, "DeleteFunctionUrlConfig"),
    RestOp::new("GET", "/2021-10-31/functions/{FunctionName}/url", None, "GetFunctionUrlConfig"),
    RestOp::new("POST", "/2021-10-31/functions/{FunctionName}/url", None, "CreateFunctionUrlConfig"),
    RestOp::new("PUT", "/2021-10-31/functions/{FunctionName}/url", None, "UpdateFunctionUrlConfig"),
    RestOp::new("GET", "/2021-10-31/functions/{FunctionName}/urls", None, "ListFunctionUrlConfigs"),
    RestOp::new("POST", "/2021-11-15/functions/{FunctionName}/response-streaming-invocations", None, "InvokeWithResponseStream"),
    RestOp::new("GET", "/2024-08-31/functions/{FunctionName}/recursion-config", None, "GetFunctionRecursionConfig"),
    RestOp::new("PUT", "/2024-08-31/functions/{FunctionName}/recursion-config", None, "PutFunctionRecursionConfig"),
    RestOp::new("GET", "/2025-11-30/capacity-providers", None, "ListCapacityProviders"),
    RestOp::new("POST", "/2025-11-30/capacity-providers", None, "CreateCapacityProvider"),
    RestOp::new("DELETE", "/2025-11-30/capacity-providers/{CapacityProviderName}", None, "DeleteCapacityProvider"),
    RestOp::new("GET", "/2025-11-30/capacity-providers/{CapacityProviderName}", None, "GetCapacityProvider"),
    RestOp::new("PUT", "/2025-11-30/capacity-providers/{CapacityProviderName}", None, "UpdateCapacityProvider"),
    RestOp::new("GET", "/2025-11-30/capacity-providers/{CapacityProviderName}/function-versions", None, "ListFunctionVersionsByCapacityProvider"),
    RestOp::new("GET", "/2025-11-30/functions/{FunctionName}/function-scaling-config", None, "GetFunctionScalingConfig"),
    RestOp::new("PUT", "/2025-11-30/functions/{FunctionName}/function-scaling-config", None, "PutFunctionScalingConfig"),
    RestOp::new("POST", "/2025-12-01/durable-execution-callbacks/{CallbackId}/fail", None, "SendDurableExecutionCallbackFailure"),
    RestOp::new("POST", "/2025-12-01/durable-execution-callbacks/{CallbackId}/heartbeat", None, "SendDurableExecutionCallbackHeartbeat"),
    RestOp::new("POST", "/2025-12-01/durable-execution-callbacks/{CallbackId}/succeed", None, "SendDurableExecutionCallbackSuccess"),
    RestOp::new("DELETE", "/2025-12-01/durable-executions/{DurableExecutionArn}", None, "DeleteDurableExecution"),
    RestOp::new("GET", "/2025-12-01/durable-executions/{DurableExecutionArn}", None, "GetDurableExecution"),
    RestOp::new("POST", "/2025-12-01/durable-executions/{DurableExecutionArn}/checkpoint", None, "CheckpointDurableExecution"),
    RestOp::new("GET", "/2025-12-01/durable-executions/{DurableExecutionArn}/history", None, "GetDurableExecutionHistory"),
    RestOp::new("POST", "/2025-12-01/durable-executions/{DurableExecutionArn}/pause", None, "PauseDurableExecution"),
    RestOp::new("POST", "/2025-12-01/durable-executions/{DurableExecutionArn}/resume", None, "ResumeDurableExecution"),
    RestOp::new("GET", "/2025-12-01/durable-executions/{DurableExecutionArn}/state", None, "GetDurableExecutionState"),
    RestOp::new("POST", "/2025-12-01/durable-executions/{DurableExecutionArn}/stop", None, "StopDurableExecution"),
    RestOp::new("GET", "/2025-12-01/functions/{FunctionName}/durable-executions", None, "ListDurableExecutionsByFunction"),
    RestOp::new("DELETE", "/2026-07-09/resource-policy/{ResourceArn}", None, "DeleteResourcePolicy"),
    RestOp::new("GET", "/2026-07-09/resource-policy/{ResourceArn}", None, "GetResourcePolicy"),
    RestOp::new("PUT", "/2026-07-09/resource-policy/{ResourceArn}", None, "PutResourcePolicy"),
];
#[rustfmt::skip]
const BEDROCK: &[RestOp] = &[
    RestOp::new("GET", "/async-invoke", None, "ListAsyncInvokes"),
    RestOp::new("POST", "/async-invoke", None, "StartAsyncInvoke"),
    RestOp::new("GET", "/async-invoke/{invocationArn}", None, "GetAsyncInvoke"),
    RestOp::new("POST", "/create-foundation-model-agreement", None, "CreateFoundationModelAgreement"),
    RestOp::new("POST", "/guardrail-checks/invoke", None, "InvokeGuardrailChecks"),
    RestOp::new("POST", "/guardrail/{guardrailIdentifier}/version/{guardrailVersion}/apply", None, "ApplyGuardrail"),
    RestOp::new("POST", "/model-invocation-job", None, "CreateModelInvocationJob"),
    RestOp::new("POST", "/model/{modelId}/converse", None, "Converse"),
    RestOp::new("POST", "/model/{modelId}/converse-stream", None, "ConverseStream"),
    RestOp::new("POST", "/model/{modelId}/count-tokens", None, "CountTokens"),
    RestOp::new("POST", "/model/{modelId}/invoke", None, "InvokeModel"),
    RestOp::new("POST", "/model/{modelId}/invoke-with-bidirectional-stream", None, "InvokeModelWithBidirectionalStream"),
    RestOp::new("POST", "/model/{modelId}/invoke-with-response-stream", None, "InvokeModelWithResponseStream"),
];
#[rustfmt::skip]
const AMPLIFY: &[RestOp] = &[
    RestOp::new("POST", "/apps/{appId}/backendenvironments", None, "CreateBackendEnvironment"),
    RestOp::new("POST", "/apps/{appId}/branches/{branchName}/deployments", None, "CreateDeployment"),
];
#[rustfmt::skip]
const MEDIAPACKAGEV2: &[RestOp] = &[
    RestOp::new("POST", "/channelGroup/{ChannelGroupName}/channel", None, "CreateChannel"),
];
#[rustfmt::skip]
const SAVINGSPLANS: &[RestOp] = &[
    RestOp::new("POST", "/CreateSavingsPlan", None, "CreateSavingsPlan"),
    RestOp::new("POST", "/DeleteQueuedSavingsPlan", None, "DeleteQueuedSavingsPlan"),
    RestOp::new("POST", "/DescribeSavingsPlanRates", None, "DescribeSavingsPlanRates"),
    RestOp::new("POST", "/DescribeSavingsPlans", None, "DescribeSavingsPlans"),
    RestOp::new("POST", "/DescribeSavingsPlansOfferingRates", None, "DescribeSavingsPlansOfferingRates"),
    RestOp::new("POST", "/DescribeSavingsPlansOfferings", None, "DescribeSavingsPlansOfferings"),
    RestOp::new("POST", "/ListTagsForResource", None, "ListTagsForResource"),
    RestOp::new("POST", "/ReturnSavingsPlan", None, "ReturnSavingsPlan"),
    RestOp::new("POST", "/TagResource", None, "TagResource"),
    RestOp::new("POST", "/UntagResource", None, "UntagResource"),
];

// ---------------------------------------------------------------------------------------------
// Canonical request and verification

/// `PE` of each `/`-separated piece, the `/` kept (Python's `quote(path, safe='/~')`).
fn encode_keeping_slashes(raw: &[u8], out: &mut impl Sink) {
    for (i, piece) in raw.split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.put(b"/");
        }
        percent_encode_into(piece, out);
    }
}

/// Non-S3 services: botocore's `quote(remove_dot_segments(path), safe='/~')` over the path as
/// sent, so an escape is encoded a second time (`%3A` → `%253A`).
fn write_normalized_uri(path: &str, out: &mut impl Sink) {
    if path.is_empty() {
        out.put(b"/");
        return;
    }
    let needs_work = path.contains("//") || path.split('/').any(|s| s == "." || s == "..");
    if path.starts_with('/') && !needs_work {
        encode_keeping_slashes(path.as_bytes(), out);
        return;
    }
    let segments = normalized_segments(path);
    if path.starts_with('/') {
        out.put(b"/");
    }
    for (i, s) in segments.iter().enumerate() {
        if i > 0 {
            out.put(b"/");
        }
        percent_encode_into(s.as_bytes(), out);
    }
    if path.ends_with('/') && !segments.is_empty() {
        out.put(b"/");
    }
}

type CanonicalPair<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// Decode `%XX` only, `PE` key and value, sort by (key, value), repeats kept, `k=` for empty.
fn write_canonical_query(query: &str, presigned: bool, out: &mut impl Sink) {
    if query.is_empty() {
        return;
    }
    let pairs = raw_pairs(query)
        .map(|(k, v)| -> CanonicalPair<'_> { (canonical(k, false), canonical(v, false)) })
        .filter(|(k, _)| !(presigned && &**k == b"X-Amz-Signature"));
    for_each_sorted(pairs, |i, (k, v)| {
        if i > 0 {
            out.put(b"&");
        }
        out.put(k);
        out.put(b"=");
        out.put(v);
    });
}

/// Trimall: surrounding whitespace removed, inner runs collapsed to one space.
fn put_trimall(value: &[u8], out: &mut impl Sink) {
    let mut first = true;
    for word in value
        .split(|&b| matches!(b, b' ' | b'\t'))
        .filter(|w| !w.is_empty())
    {
        if !first {
            out.put(b" ");
        }
        out.put(word);
        first = false;
    }
}

fn write_canonical_headers(req: &RequestView<'_>, signed_headers: &str, out: &mut impl Sink) {
    for name in signed_headers.split(';') {
        out.put(name.as_bytes());
        out.put(b":");
        if name == "host" {
            put_trimall(req.host.unwrap_or_default().as_bytes(), out);
        } else {
            for (i, v) in req.headers.get_all(name).iter().enumerate() {
                if i > 0 {
                    out.put(b",");
                }
                put_trimall(v.as_bytes(), out);
            }
        }
        out.put(b"\n");
    }
}

/// Writes the canonical request (SIGNATURES.md §4) for a parsed credential.
pub fn write_canonical_request(
    cred: &SigV4Credential<'_>,
    req: &RequestView<'_>,
    hashed_payload: &[u8],
    out: &mut impl Sink,
) {
    out.put(req.method.as_bytes());
    out.put(b"\n");
    if cred.service() == "s3" {
        out.put(if req.path.is_empty() {
            b"/"
        } else {
            req.path.as_bytes()
        });
    } else {
        write_normalized_uri(req.path, out);
    }
    out.put(b"\n");
    write_canonical_query(req.query, cred.presigned, out);
    out.put(b"\n");
    write_canonical_headers(req, &cred.signed_headers, out);
    out.put(b"\n");
    out.put(cred.signed_headers.as_bytes());
    out.put(b"\n");
    out.put(hashed_payload);
}

fn string_to_sign(cred: &SigV4Credential<'_>, canonical_hash_hex: &[u8]) -> String {
    format!(
        "{ALGORITHM}\n{}\n{}\n{}",
        cred.amz_date,
        cred.scope,
        String::from_utf8_lossy(canonical_hash_hex)
    )
}

/// Verifies without the signing-key cache (the key is derived for this request).
pub fn verify(
    cred: &SigV4Credential<'_>,
    req: &RequestView<'_>,
    material: &KeyMaterial,
    transcript: Option<&mut Vec<u8>>,
) -> Result<(), Rejection> {
    verify_with(cred, req, material, None, transcript)
}

/// Verifies using (and filling) the key's signing-key cache.
pub fn verify_cached(
    cred: &SigV4Credential<'_>,
    req: &RequestView<'_>,
    material: &KeyMaterial,
    cache: &SigningKeyCache,
    transcript: Option<&mut Vec<u8>>,
) -> Result<(), Rejection> {
    verify_with(cred, req, material, Some(cache), transcript)
}

/// Checks a declared body hash, then the signature (HMAC tags compared in constant time).
/// `transcript`, when given, receives the canonical request.
pub fn verify_with(
    cred: &SigV4Credential<'_>,
    req: &RequestView<'_>,
    material: &KeyMaterial,
    cache: Option<&SigningKeyCache>,
    transcript: Option<&mut Vec<u8>>,
) -> Result<(), Rejection> {
    let KeyMaterial::Secret(secret) = material else {
        return Err(incomplete(
            "the signature algorithm does not match the AccessKey's kind",
        ));
    };
    let body_hex;
    let hashed_payload: &[u8] = match cred.payload {
        Payload::Declared(declared) => {
            if !declared
                .as_bytes()
                .eq_ignore_ascii_case(&sha256_hex(req.body))
            {
                return Err(Rejection::ContentHashMismatch);
            }
            declared.as_bytes()
        }
        Payload::Unsigned(literal) => literal.as_bytes(),
        Payload::Body => {
            body_hex = sha256_hex(req.body);
            &body_hex
        }
    };
    let mut hasher = Sha256::new();
    match transcript {
        Some(t) => write_canonical_request(cred, req, hashed_payload, &mut Tee(&mut hasher, t)),
        None => {
            let mut buffered = Buffered::new(&mut hasher);
            write_canonical_request(cred, req, hashed_payload, &mut buffered);
            buffered.finish();
        }
    }
    let mut canonical_hex = [0u8; 64];
    hex_lower_into(&hasher.finalize(), &mut canonical_hex);

    let (date, region, service) = (cred.date(), cred.region(), cred.service());
    let mut mac = match cache {
        Some(cache) => cache.signing_mac(secret, date, region, service),
        None => derive_signing_mac(secret, date, region, service),
    };
    for piece in [
        ALGORITHM.as_bytes(),
        b"\n",
        cred.amz_date.as_bytes(),
        b"\n",
        cred.scope.as_bytes(),
        b"\n",
        &canonical_hex,
    ] {
        mac.update(piece);
    }
    mac.verify_slice(&cred.signature)
        .map_err(|_| Rejection::SignatureDoesNotMatch {
            string_to_sign: string_to_sign(cred, &canonical_hex),
        })
}

/// Signs a request with SigV4 in the `Authorization` header, as botocore does: adds
/// `x-amz-date` and `x-amz-content-sha256` (the body's SHA-256) to `headers`, signs every header
/// given (`host` included, which must be among them) and adds `Authorization`. For tooling
/// (`akgate sign`) and tests; interoperability is proved against botocore, not against this.
#[allow(clippy::too_many_arguments)]
pub fn sign_headers(
    method: &str,
    path: &str,
    query: &str,
    headers: &mut Vec<(String, String)>,
    body: &[u8],
    key_id: &str,
    secret: &[u8],
    region: &str,
    service: &str,
    amz_date: &str,
) {
    headers.retain(|(n, _)| {
        !n.eq_ignore_ascii_case("x-amz-date")
            && !n.eq_ignore_ascii_case("x-amz-content-sha256")
            && !n.eq_ignore_ascii_case("authorization")
    });
    let mut body_hex = [0u8; 64];
    hex_lower_into(&Sha256::digest(body), &mut body_hex);
    let body_hex = String::from_utf8_lossy(&body_hex).into_owned();
    headers.push(("x-amz-date".into(), amz_date.to_string()));
    headers.push(("x-amz-content-sha256".into(), body_hex.clone()));
    let (map, host, signed_headers) = super::signer_headers(headers);
    let date = amz_date.get(..8).unwrap_or_default();
    let cred = SigV4Credential {
        key_id: Cow::Borrowed(key_id),
        scope: Cow::Owned(format!("{date}/{region}/{service}/aws4_request")),
        amz_date: Cow::Borrowed(amz_date),
        signed_headers: Cow::Borrowed(&signed_headers),
        signature: [0; 32],
        payload: Payload::Declared(&body_hex),
        presigned: false,
    };
    let view = RequestView {
        method,
        path,
        query,
        host,
        headers: &map,
        body,
    };
    let mut hasher = Sha256::new();
    write_canonical_request(&cred, &view, body_hex.as_bytes(), &mut hasher);
    let mut canonical_hex = [0u8; 64];
    hex_lower_into(&hasher.finalize(), &mut canonical_hex);
    let mut mac = derive_signing_mac(&Secret::new(secret), date, region, service);
    mac.update(string_to_sign(&cred, &canonical_hex).as_bytes());
    let mut sig = [0u8; 64];
    hex_lower_into(&mac.finalize().into_bytes(), &mut sig);
    let authorization = format!(
        "{ALGORITHM} Credential={key_id}/{}, SignedHeaders={signed_headers}, Signature={}",
        cred.scope,
        String::from_utf8_lossy(&sig)
    );
    headers.push(("Authorization".into(), authorization));
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn view<'a>(
        method: &'a str,
        path: &'a str,
        query: &'a str,
        host: Option<&'a str>,
        headers: &'a HeaderMap,
        body: &'a [u8],
    ) -> RequestView<'a> {
        RequestView {
            method,
            path,
            query,
            host,
            headers,
            body,
        }
    }

    #[test]
    fn signing_key_matches_the_aws_documentation_example() {
        let secret = Secret::new(b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        // kSigning for 20120215/us-east-1/iam (AWS General Reference, "Deriving the signing key").
        let k = "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d";
        let mut key = [0u8; 32];
        assert!(hex_decode_into(k.as_bytes(), &mut key));
        let mut expected = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
        expected.update(b"message");
        let mut got = derive_signing_mac(&secret, "20120215", "us-east-1", "iam");
        got.update(b"message");
        assert_eq!(
            got.finalize().into_bytes(),
            expected.finalize().into_bytes()
        );
    }

    fn tag(mut mac: Hmac<Sha256>) -> Vec<u8> {
        mac.update(b"string to sign");
        mac.finalize().into_bytes().to_vec()
    }

    #[test]
    fn cache_hits_misses_and_replacement_give_the_derived_key() {
        let secret = Secret::new(b"secret");
        let cache = SigningKeyCache::default();
        assert!(cache.is_empty());
        let scopes = [
            ("20261122", "us-east-1", "s3"),
            ("20261122", "us-east-1", "sts"),
            ("20261122", "eu-west-1", "ec2"),
            ("20261123", "us-east-1", "s3"),
            ("20261122", "us-east-1", "s3"),
        ];
        for _ in 0..3 {
            for (d, r, s) in scopes {
                assert_eq!(
                    tag(cache.signing_mac(&secret, d, r, s)),
                    tag(derive_signing_mac(&secret, d, r, s)),
                    "{d}/{r}/{s}"
                );
            }
        }
        assert!(!cache.is_empty() && cache.len() <= CACHE_SLOTS);
        // Debug shows scopes, never key bytes.
        let debug = format!("{cache:?}");
        assert!(debug.contains("us-east-1"), "{debug}");
    }

    #[test]
    fn cache_is_correct_under_concurrency() {
        let secret = Secret::new(b"concurrent-secret");
        let cache = SigningKeyCache::default();
        let scopes: Vec<(String, String, String)> = (0..12)
            .map(|i| {
                (
                    format!("202611{:02}", 10 + i % 3),
                    format!("region-{}", i % 5),
                    format!("svc{}", i % 7),
                )
            })
            .collect();
        let expected: Vec<Vec<u8>> = scopes
            .iter()
            .map(|(d, r, s)| tag(derive_signing_mac(&secret, d, r, s)))
            .collect();
        std::thread::scope(|t| {
            for worker in 0..8 {
                let (cache, secret, scopes, expected) = (&cache, &secret, &scopes, &expected);
                t.spawn(move || {
                    for round in 0..200 {
                        let i = (worker * 7 + round) % scopes.len();
                        let (d, r, s) = &scopes[i];
                        assert_eq!(tag(cache.signing_mac(secret, d, r, s)), expected[i]);
                    }
                });
            }
        });
    }

    fn uri(path: &str) -> String {
        let mut out = Vec::new();
        write_normalized_uri(path, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn non_s3_paths_are_normalized_then_encoded_again() {
        assert_eq!(uri(""), "/");
        assert_eq!(uri("/"), "/");
        assert_eq!(uri("/a/b/"), "/a/b/");
        assert_eq!(uri("/a/./b/../c//d/"), "/a/c/d/");
        assert_eq!(uri("/.."), "/");
        assert_eq!(uri("//"), "/");
        assert_eq!(
            uri("/2015-03-31/functions/arn%3Aaws%3Alambda/configuration"),
            "/2015-03-31/functions/arn%253Aaws%253Alambda/configuration"
        );
        assert_eq!(uri("/a b~*"), "/a%20b~%2A");
    }

    fn query(q: &str, presigned: bool) -> String {
        let mut out = Vec::new();
        write_canonical_query(q, presigned, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn canonical_query_keeps_repeats_and_plus() {
        assert_eq!(query("b=2&a=1&a=0&c", false), "a=0&a=1&b=2&c=");
        assert_eq!(query("x=a+b%2a%7E", false), "x=a%2Bb%2A~");
        assert_eq!(
            query("X-Amz-Signature=ab&X-Amz-Date=1", true),
            "X-Amz-Date=1"
        );
        assert_eq!(query("X-Amz-Signature=ab", false), "X-Amz-Signature=ab");
    }

    #[test]
    fn header_values_are_trimalled_and_joined_in_order() {
        let mut headers = HeaderMap::new();
        headers.append("x-amz-meta-a", HeaderValue::from_static("  b   c\t d "));
        headers.append("x-amz-meta-a", HeaderValue::from_static("z"));
        headers.append("x-amz-meta-a", HeaderValue::from_static("a"));
        let req = view("GET", "/", "", Some(" h:1 "), &headers, b"");
        let mut out = Vec::new();
        write_canonical_headers(&req, "host;x-amz-meta-a", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "host:h:1\nx-amz-meta-a:b c d,z,a\n"
        );
    }

    fn s3(method: &str, path: &str, query: &str) -> &'static str {
        s3_with(method, path, query, "127.0.0.1:9000", &[])
    }

    fn s3_with(
        method: &str,
        path: &str,
        query: &str,
        host: &str,
        extra: &[(&'static str, &'static str)],
    ) -> &'static str {
        let mut headers = HeaderMap::new();
        for (k, v) in extra {
            headers.append(*k, HeaderValue::from_static(v));
        }
        s3_action(&view(method, path, query, Some(host), &headers, b""))
    }

    #[test]
    fn s3_operations_from_method_path_and_subresource() {
        assert_eq!(s3("GET", "/", ""), "ListBuckets");
        assert_eq!(s3("GET", "/b", ""), "ListObjects");
        assert_eq!(s3("GET", "/b", "list-type=2&prefix=x"), "ListObjectsV2");
        assert_eq!(s3("PUT", "/b", ""), "CreateBucket");
        assert_eq!(s3("DELETE", "/b", ""), "DeleteBucket");
        assert_eq!(s3("HEAD", "/b", ""), "HeadBucket");
        assert_eq!(s3("GET", "/b/k/x.txt", ""), "GetObject");
        assert_eq!(s3("HEAD", "/b/k", ""), "HeadObject");
        assert_eq!(s3("PUT", "/b/k", ""), "PutObject");
        assert_eq!(s3("DELETE", "/b/k", "versionId=3"), "DeleteObject");
        assert_eq!(s3("GET", "/b", "policy"), "GetBucketPolicy");
        assert_eq!(s3("PUT", "/b", "policy"), "PutBucketPolicy");
        assert_eq!(s3("DELETE", "/b", "policy="), "DeleteBucketPolicy");
        assert_eq!(s3("PUT", "/b", "acl"), "PutBucketAcl");
        assert_eq!(s3("PUT", "/b/k", "acl"), "PutObjectAcl");
        assert_eq!(s3("PUT", "/b", "publicAccessBlock"), "PutPublicAccessBlock");
        assert_eq!(s3("POST", "/b", "delete"), "DeleteObjects");
        assert_eq!(s3("POST", "/b/k", "uploads"), "CreateMultipartUpload");
        assert_eq!(s3("GET", "/b", "uploads"), "ListMultipartUploads");
        assert_eq!(s3("PUT", "/b/k", "partNumber=1&uploadId=x"), "UploadPart");
        assert_eq!(s3("POST", "/b/k", "uploadId=x"), "CompleteMultipartUpload");
        assert_eq!(s3("DELETE", "/b/k", "uploadId=x"), "AbortMultipartUpload");
        assert_eq!(s3("GET", "/b/k", "uploadId=x"), "ListParts");
        assert_eq!(
            s3("GET", "/b", "metrics"),
            "ListBucketMetricsConfigurations"
        );
        assert_eq!(
            s3("GET", "/b", "metrics&id=a"),
            "GetBucketMetricsConfiguration"
        );
        assert_eq!(
            s3("PUT", "/b", "lifecycle"),
            "PutBucketLifecycleConfiguration"
        );
        assert_eq!(s3("PUT", "/b/k", "tagging"), "PutObjectTagging");
        assert_eq!(s3("PUT", "/b", "tagging"), "PutBucketTagging");
        // A bucket-only sub-resource on an object path still names the bucket operation.
        assert_eq!(s3("PUT", "/b/k", "policy"), "PutBucketPolicy");
        // Ambiguous or unsupported.
        assert_eq!(s3("PUT", "/b", "acl&policy"), UNKNOWN_ACTION);
        assert_eq!(s3("POST", "/b", "policy"), UNKNOWN_ACTION);
        assert_eq!(s3("HEAD", "/", ""), UNKNOWN_ACTION);
        // Headers that change the operation.
        let copy = [("x-amz-copy-source", "/src/k")];
        assert_eq!(s3_with("PUT", "/b/k", "", "h", &copy), "CopyObject");
        assert_eq!(
            s3_with("PUT", "/b/k", "uploadId=u&partNumber=2", "h", &copy),
            "UploadPartCopy"
        );
        // Virtual-hosted style: the bucket is in the Host.
        let vh = "my-bucket.s3.us-east-1.amazonaws.com";
        assert_eq!(s3_with("GET", "/", "", vh, &[]), "ListObjects");
        assert_eq!(s3_with("DELETE", "/", "", vh, &[]), "DeleteBucket");
        assert_eq!(s3_with("DELETE", "/k", "", vh, &[]), "DeleteObject");
        assert_eq!(s3_with("PUT", "/", "policy", vh, &[]), "PutBucketPolicy");
        assert_eq!(
            s3_with("GET", "/", "", "s3.us-east-1.amazonaws.com", &[]),
            "ListBuckets"
        );
        // S3 Control shares the signing name.
        let account = [("x-amz-account-id", "123456789012")];
        assert_eq!(
            s3_with(
                "PUT",
                "/v20180820/configuration/publicAccessBlock",
                "",
                "h",
                &account
            ),
            "PutPublicAccessBlock"
        );
        assert_eq!(
            s3_with("GET", "/v20180820/accesspoint", "", "h", &account),
            UNKNOWN_ACTION
        );
    }

    fn action(
        method: &str,
        path: &str,
        query: &str,
        service: &str,
        headers: &[(&'static str, &'static str)],
        body: &[u8],
    ) -> Result<String, Rejection> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(*k, HeaderValue::from_static(v));
        }
        action_of(&view(method, path, query, Some("h"), &map, body), service).map(Cow::into_owned)
    }

    #[test]
    fn actions_of_the_other_protocols() {
        let form = [(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )];
        assert_eq!(
            action(
                "POST",
                "/",
                "",
                "iam",
                &form,
                b"Action=CreateUser&UserName=a"
            )
            .unwrap(),
            "CreateUser"
        );
        assert_eq!(
            action(
                "GET",
                "/",
                "Action=ListUsers&Version=2010-05-08",
                "iam",
                &[],
                b""
            )
            .unwrap(),
            "ListUsers"
        );
        assert_eq!(
            action("POST", "/", "", "iam", &[], b"Action=CreateUser").unwrap(),
            "CreateUser"
        );
        // A body that is not a form is not read for Action.
        let json = [("content-type", "application/json")];
        assert_eq!(
            action("POST", "/", "", "iam", &json, b"Action=CreateUser").unwrap(),
            UNKNOWN_ACTION
        );
        // Twice, even the same, is refused; so is naming the operation two ways.
        assert!(
            action(
                "POST",
                "/",
                "Action=ListUsers",
                "iam",
                &form,
                b"Action=CreateUser"
            )
            .is_err()
        );
        assert!(
            action(
                "POST",
                "/",
                "Action=ListUsers&Action=ListUsers",
                "iam",
                &[],
                b""
            )
            .is_err()
        );
        let target = [("x-amz-target", "DynamoDB_20120810.ListTables")];
        assert_eq!(
            action("POST", "/", "", "dynamodb", &target, b"{}").unwrap(),
            "ListTables"
        );
        assert!(
            action(
                "POST",
                "/",
                "Action=DeleteTable",
                "dynamodb",
                &target,
                b"{}"
            )
            .is_err()
        );
        assert!(action("POST", "/", "Action=Create%20User", "iam", &[], b"").is_err());
        assert!(action("POST", "/", "Action=Create+User", "iam", &[], b"").is_err());
        assert_eq!(
            action(
                "POST",
                "/service/CodeBuild_20161006/operation/CreateProject",
                "",
                "codebuild",
                &[],
                b""
            )
            .unwrap(),
            "CreateProject"
        );
        // REST: Lambda from botocore's request URIs.
        assert_eq!(
            action("POST", "/2015-03-31/functions", "", "lambda", &[], b"{}").unwrap(),
            "CreateFunction"
        );
        assert_eq!(
            action("GET", "/2015-03-31/functions/", "", "lambda", &[], b"").unwrap(),
            "ListFunctions"
        );
        assert_eq!(
            action(
                "GET",
                "/2015-03-31/functions/my%3Afn",
                "",
                "lambda",
                &[],
                b""
            )
            .unwrap(),
            "GetFunction"
        );
        assert_eq!(
            action(
                "PUT",
                "/2015-03-31/functions/f/code",
                "",
                "lambda",
                &[],
                b""
            )
            .unwrap(),
            "UpdateFunctionCode"
        );
        assert_eq!(
            action(
                "PUT",
                "/2015-03-31/x/../functions/f/./code",
                "",
                "lambda",
                &[],
                b""
            )
            .unwrap(),
            "UpdateFunctionCode"
        );
        assert_eq!(
            action(
                "PUT",
                "/2015-03-31/%66unctions/f/code",
                "",
                "lambda",
                &[],
                b""
            )
            .unwrap(),
            "UpdateFunctionCode"
        );
        assert_eq!(
            action(
                "POST",
                "/2015-03-31/functions/f/invocations",
                "",
                "lambda",
                &[],
                b""
            )
            .unwrap(),
            "Invoke"
        );
        assert_eq!(
            action(
                "GET",
                "/2018-10-31/layers",
                "find=LayerVersion&Arn=x",
                "lambda",
                &[],
                b""
            )
            .unwrap(),
            "GetLayerVersionByArn"
        );
        assert_eq!(
            action("GET", "/2018-10-31/layers", "", "lambda", &[], b"").unwrap(),
            "ListLayers"
        );
        assert_eq!(
            action("PATCH", "/2015-03-31/functions", "", "lambda", &[], b"").unwrap(),
            UNKNOWN_ACTION
        );
        assert_eq!(
            action("POST", "/model/m/converse", "", "bedrock", &[], b"").unwrap(),
            "Converse"
        );
        assert_eq!(
            action("GET", "/anything", "", "execute-api", &[], b"").unwrap(),
            UNKNOWN_ACTION
        );
    }

    fn parse_with(
        authorization: &str,
        headers: &[(&'static str, &'static str)],
    ) -> Result<Scheme, Rejection> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(*k, HeaderValue::from_static(v));
        }
        let req = view("GET", "/", "Action=ListUsers", Some("h"), &map, b"");
        parse_header(authorization, &req).map(|p| p.scheme)
    }

    const SIG: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn authorization_is_parsed_strictly() {
        let date = [("x-amz-date", "20261122T144840Z")];
        let ok = |a: String| parse_with(&a, &date);
        let cred = "AKID/20261122/us-east-1/iam/aws4_request";
        assert_eq!(
            ok(format!(
                "AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders=host;x-amz-date, Signature={SIG}"
            )),
            Ok(Scheme::AwsSigV4)
        );
        assert_eq!(
            ok(format!(
                "AWS4-HMAC-SHA256 Credential={cred},SignedHeaders=host;x-amz-date,Signature={SIG}"
            )),
            Ok(Scheme::AwsSigV4)
        );
        for bad in [
            format!(
                "AWS4-HMAC-SHA512 Credential={cred}, SignedHeaders=host;x-amz-date, Signature={SIG}"
            ),
            format!(
                "AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date, Credential={cred}, Signature={SIG}"
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders=host;x-amz-date, Signature={}",
                &SIG[1..]
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders=x-amz-date;host, Signature={SIG}"
            ),
            format!("AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders=host, Signature={SIG}"),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKID/20261122/us-east-1/iam/aws4_reques, SignedHeaders=host;x-amz-date, Signature={SIG}"
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKID/2026112/us-east-1/iam/aws4_request, SignedHeaders=host;x-amz-date, Signature={SIG}"
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKID/20261121/us-east-1/iam/aws4_request, SignedHeaders=host;x-amz-date, Signature={SIG}"
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKID/20261122/us-east-1/iam/aws4_request/x, SignedHeaders=host;x-amz-date, Signature={SIG}"
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders=host;x-amz-date, Signature={SIG}, Extra=1"
            ),
        ] {
            assert!(
                matches!(ok(bad.clone()), Err(Rejection::IncompleteSignature(_))),
                "{bad}"
            );
        }
        assert_eq!(
            ok(format!(
                "AWS4-HMAC-SHA256 Credential=/20261122/us-east-1/iam/aws4_request, SignedHeaders=host;x-amz-date, Signature={SIG}"
            )),
            Err(Rejection::MissingAccessKeyId)
        );
        // An x-amz-* header that is not signed.
        let unsigned = [
            ("x-amz-date", "20261122T144840Z"),
            ("x-amz-security-token", "t"),
        ];
        assert!(matches!(
            parse_with(
                &format!(
                    "AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders=host;x-amz-date, Signature={SIG}"
                ),
                &unsigned
            ),
            Err(Rejection::IncompleteSignature(_))
        ));
        // No X-Amz-Date at all.
        assert!(matches!(
            parse_with(
                &format!(
                    "AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders=host;x-amz-date, Signature={SIG}"
                ),
                &[]
            ),
            Err(Rejection::IncompleteSignature(_))
        ));
    }
}
