//! Alibaba Cloud V3 signatures (SIGNATURES.md §1): `ACS3-HMAC-SHA256`, `ACS3-HMAC-SM3` (SM3 in all
//! three places, including `x-acs-content-sha256` despite its name) and `ACS3-RSA-SHA256`.
//!
//! The canonical request is streamed into the hash rather than assembled: the verifier's cost is
//! the hashing itself. `SignedHeaders` is taken from the request because the SDKs disagree on what
//! they sign (Python signs every header it sends), but the headers that carry identity, time,
//! replay protection and the body hash must always be among them.

use hmac::Mac;
use sha2::{Digest, Sha256};
use sm3::Sm3;
use std::borrow::Cow;

use super::encoding::{
    Buffered, Sink, Tee, canonical, canonicalize_into, for_each_sorted, hex_decode_into,
    hex_lower_into, is_hex, raw_pairs, sha256_hex, short_eq,
};
use super::sha256::Sha256Stream;
use super::{Credential, ParsedAuth, RequestView, Scheme, SignedNames, Window, incomplete};
use crate::error::Rejection;
use crate::rules::{KeyMaterial, Secret};
use crate::time::parse_iso8601_utc;

pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// Headers every V3 request must sign: without them the signature would not bind the request to
/// this host, this action, this moment, this nonce or this body.
pub const REQUIRED_SIGNED_HEADERS: [&str; 6] = [
    "host",
    "x-acs-action",
    "x-acs-content-sha256",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-version",
];

#[derive(Debug, Clone)]
pub struct Acs3Credential<'a> {
    pub key_id: &'a str,
    /// `;`-separated, lower-case, ascending — validated by [`parse`].
    pub signed_headers: &'a str,
    /// Hex as sent; its length is checked against the algorithm by [`parse`].
    pub signature_hex: &'a str,
    /// `signed_headers` as [`parse`] split it, so verifying does not split it again.
    pub(crate) names: SignedNames<'a>,
    /// The one `x-acs-content-sha256` value, trimmed, as [`parse`] read it.
    claimed_body_hash: &'a str,
    /// The request's values of the signed headers, as [`parse`] met them in its walk over the
    /// headers, so that writing the canonical request does not walk them again.
    values: SignedValues<'a>,
}

/// For each name of a held [`SignedNames`] list (by its index), the first value the request
/// carries under that name, and whether it carries more than one.
///
/// Kept in the credential from parsing to verifying: this costs 200 bytes more to move, less
/// than a second walk over the headers comparing each name with the list (measured with the
/// hot-path bench).
#[derive(Clone, Copy)]
pub(crate) struct SignedValues<'a> {
    first: [Option<&'a http::HeaderValue>; SignedNames::INLINE],
    /// Bit `i`: name `i` has several values (then they are looked up again when writing).
    many: u32,
}

// `many` has a bit for each name a list can hold.
const _: () = assert!(SignedNames::INLINE <= 32);

impl<'a> SignedValues<'a> {
    fn new() -> Self {
        SignedValues {
            first: [None; SignedNames::INLINE],
            many: 0,
        }
    }

    /// Notes `value` for the `i`th signed name (`i` below [`SignedNames::INLINE`]).
    #[inline]
    fn record(&mut self, i: usize, value: &'a http::HeaderValue) {
        if let Some(slot) = self.first.get_mut(i) {
            if slot.is_some() {
                self.many |= 1 << i;
            } else {
                *slot = Some(value);
            }
        }
    }

    /// The values of a held list's names in `headers` (a no-op for a list that is not held: its
    /// headers are looked up by name).
    fn gather(headers: &'a http::HeaderMap, names: &SignedNames<'_>) -> Self {
        let mut values = Self::new();
        if names.held().is_some() {
            for (name, value) in headers {
                if let Some(i) = names.index(name.as_str()) {
                    values.record(i, value);
                }
            }
        }
        values
    }
}

/// Which names have values, not the values: an `x-acs-security-token` has no place in a log.
impl std::fmt::Debug for SignedValues<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let present: Vec<usize> = (0..self.first.len())
            .filter(|&i| self.first[i].is_some())
            .collect();
        f.debug_struct("SignedValues")
            .field("present", &present)
            .field("many", &format_args!("{:#x}", self.many))
            .finish()
    }
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl Sink for Sm3 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// Parses `<ALG> Credential=<id>,SignedHeaders=<h;h>,Signature=<hex>` and checks that the request
/// carries and signs everything it must.
pub fn parse<'a>(
    authorization: &'a str,
    req: &RequestView<'a>,
) -> Result<ParsedAuth<'a>, Rejection> {
    // Split on bytes: a byte search is cheaper than a `char` pattern, and in UTF-8 an ASCII byte
    // (space, comma) is always a character boundary, so the pieces are the same.
    let (alg, rest) = match authorization.bytes().position(|b| b == b' ') {
        Some(i) => (
            authorization.get(..i).unwrap_or_default(),
            authorization.get(i + 1..).unwrap_or_default(),
        ),
        None => (authorization, ""),
    };
    let scheme = match alg {
        "ACS3-HMAC-SHA256" => Scheme::Acs3HmacSha256,
        "ACS3-HMAC-SM3" => Scheme::Acs3HmacSm3,
        "ACS3-RSA-SHA256" => Scheme::Acs3RsaSha256,
        _ => return Err(incomplete("unsupported ACS3 algorithm")),
    };
    let mut parts = CommaFields { rest: Some(rest) };
    let mut field = |name: &str| -> Result<&'a str, Rejection> {
        parts
            .next()
            .map(str::trim_start)
            .and_then(|p| p.strip_prefix(name))
            .and_then(|p| p.strip_prefix('='))
            .ok_or_else(|| {
                incomplete("Authorization must be Credential=…,SignedHeaders=…,Signature=…")
            })
    };
    let key_id = field("Credential")?;
    let signed_headers = field("SignedHeaders")?;
    let signature_hex = field("Signature")?.trim_end();
    if parts.next().is_some() {
        return Err(incomplete("unexpected field after Signature"));
    }
    if key_id.is_empty() {
        return Err(Rejection::MissingAccessKeyId);
    }
    let hex_ok = is_hex(signature_hex.as_bytes());
    let len_ok = match scheme {
        Scheme::Acs3RsaSha256 => {
            signature_hex.len() % 2 == 0 && (128..=1024).contains(&signature_hex.len())
        }
        _ => signature_hex.len() == 64,
    };
    if !hex_ok || !len_ok {
        return Err(incomplete(
            "Signature is not a hex digest of the algorithm's length",
        ));
    }

    let signed = SignedNames::parse(signed_headers)?;
    // REQUIRED_SIGNED_HEADERS is ascending, so the first missing one is the first in its order.
    if let Some(required) = signed.first_missing(&REQUIRED_SIGNED_HEADERS) {
        return Err(Rejection::IncompleteSignature(Cow::Owned(format!(
            "header {required} must be signed"
        ))));
    }
    // One pass over the headers does all the jobs the verifier has for them: any x-acs-* header
    // the request carries is part of the API call (security token, resource group, MFA code…)
    // and must be covered, and so is the body's content type; the values of the headers the
    // verifier reads are picked up on the way; and so are those of the signed headers, for the
    // canonical request, rather than looked up again when verifying.
    let mut values = Values::default();
    let mut signed_values = SignedValues::new();
    let held = signed.held().is_some();
    for (name, value) in req.headers {
        let n = name.as_str();
        let at = signed.index(n);
        if let Some(i) = at {
            signed_values.record(i, value);
        }
        // In a held list `index` has answered; a longer one is scanned.
        let is_signed = || at.is_some() || (!held && signed.contains(n));
        if let Some(rest) = n.strip_prefix("x-acs-") {
            if !is_signed() {
                return Err(not_signed(n));
            }
            values.record(rest, value);
        } else if n == "content-type" && !req.body.is_empty() && !is_signed() {
            return Err(not_signed(n));
        }
    }
    if req.host.is_none() {
        return Err(incomplete("the request has no Host"));
    }
    let action = values.required(ACTION)?;
    let timestamp = values.required(DATE)?;
    let nonce = values.required(NONCE)?;
    values.required(VERSION)?;
    let claimed_body_hash = values.required(CONTENT_SHA256)?;
    let security_token = values.single(SECURITY_TOKEN)?;

    Ok(ParsedAuth {
        scheme,
        key_id: Cow::Borrowed(key_id),
        action: Cow::Borrowed(action),
        window: parse_iso8601_utc(timestamp).map_or(Window::Malformed, Window::SignedAt),
        nonce: Some(Cow::Borrowed(nonce)),
        security_token: security_token.map(Cow::Borrowed),
        body_signed: true,
        credential: Credential::Acs3(Acs3Credential {
            key_id,
            signed_headers,
            signature_hex,
            names: signed,
            claimed_body_hash,
            values: signed_values,
        }),
    })
}

/// The `,`-separated fields of a value, as `str::split(',')` gives them, found by byte search.
struct CommaFields<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for CommaFields<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match find_comma(rest.as_bytes()) {
            Some(i) => {
                self.rest = rest.get(i + 1..);
                rest.get(..i)
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// Where the first `,` is, looked for eight bytes at a time: the SignedHeaders field is a hundred
/// bytes or more, and `str::find` searches a byte at a time below 16 bytes and calls a generic
/// `memchr` above.
fn find_comma(s: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    const COMMAS: u64 = u64::from_ne_bytes([b','; 8]);
    let (words, tail) = s.as_chunks::<8>();
    for (k, word) in words.iter().enumerate() {
        // Little-endian, so byte 0 is the lowest: a byte of `x` is zero where the word had a
        // comma, and the lowest flag this sets is exact (a borrow only flags bytes above it).
        let x = u64::from_le_bytes(*word) ^ COMMAS;
        let zero = x.wrapping_sub(ONES) & !x & HIGH;
        if zero != 0 {
            return Some(8 * k + (zero.trailing_zeros() / 8) as usize);
        }
    }
    tail.iter()
        .position(|&b| b == b',')
        .map(|i| 8 * words.len() + i)
}

fn not_signed(name: &str) -> Rejection {
    Rejection::IncompleteSignature(Cow::Owned(format!(
        "header {name} is present but not signed"
    )))
}

/// The `x-acs-*` headers [`parse`] reads, by their name after `x-acs-`.
const READ: [&str; 6] = [
    "action",
    "date",
    "signature-nonce",
    "version",
    "content-sha256",
    "security-token",
];
const ACTION: usize = 0;
const DATE: usize = 1;
const NONCE: usize = 2;
const VERSION: usize = 3;
const CONTENT_SHA256: usize = 4;
const SECURITY_TOKEN: usize = 5;

/// The values of the [`READ`] headers, gathered in one pass over the request's headers, with the
/// same verdicts as [`single_header`] would give for each.
#[derive(Default)]
struct Values<'a> {
    first: [Option<&'a http::HeaderValue>; READ.len()],
    repeated: [bool; READ.len()],
}

impl<'a> Values<'a> {
    fn record(&mut self, suffix: &str, value: &'a http::HeaderValue) {
        // A match compares each name's length first and its bytes inline.
        let i = match suffix {
            "action" => ACTION,
            "date" => DATE,
            "signature-nonce" => NONCE,
            "version" => VERSION,
            "content-sha256" => CONTENT_SHA256,
            "security-token" => SECURITY_TOKEN,
            _ => return,
        };
        if self.first[i].is_some() {
            self.repeated[i] = true;
        } else {
            self.first[i] = Some(value);
        }
    }

    fn single(&self, i: usize) -> Result<Option<&'a str>, Rejection> {
        if self.repeated[i] {
            return Err(Rejection::IncompleteSignature(Cow::Owned(format!(
                "header x-acs-{} appears more than once",
                READ[i]
            ))));
        }
        self.first[i]
            .map(|v| {
                v.to_str().map_err(|_| {
                    Rejection::IncompleteSignature(Cow::Owned(format!(
                        "header x-acs-{} is not ASCII",
                        READ[i]
                    )))
                })
            })
            .transpose()
    }

    fn required(&self, i: usize) -> Result<&'a str, Rejection> {
        // `to_str` let through only visible ASCII, space and tab, and of those `str::trim` would
        // trim the same two.
        match self.single(i)?.map(str::trim_ascii) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(Rejection::IncompleteSignature(Cow::Owned(format!(
                "header x-acs-{} is missing",
                READ[i]
            )))),
        }
    }
}

#[inline]
fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// Writes the canonical request (SIGNATURES.md §1.2) for the given signed-header list, whose
/// values in `req` are `values`.
pub(crate) fn write_canonical_request(
    req: &RequestView<'_>,
    signed_headers: &SignedNames<'_>,
    values: &SignedValues<'_>,
    hashed_payload: &[u8],
    out: &mut impl Sink,
) {
    out.put(req.method.as_bytes());
    out.put_byte(b'\n');
    write_canonical_uri(req.path, out);
    out.put_byte(b'\n');
    write_canonical_query(req.query, out);
    out.put_byte(b'\n');
    write_canonical_headers(req, signed_headers, values, out);
    out.put_byte(b'\n');
    out.put(signed_headers.raw().as_bytes());
    out.put_byte(b'\n');
    out.put(hashed_payload);
}

/// Each `/`-separated segment decoded then re-encoded, so any equivalent spelling of the path
/// canonicalises the same way.
fn write_canonical_uri(path: &str, out: &mut impl Sink) {
    if path.is_empty() || path == "/" {
        out.put_byte(b'/');
        return;
    }
    for (i, segment) in path.as_bytes().split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.put_byte(b'/');
        }
        canonicalize_into(segment, false, out);
    }
}

type CanonicalPair<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

fn write_canonical_query(query: &str, out: &mut impl Sink) {
    if query.is_empty() {
        return;
    }
    let pairs = raw_pairs(query)
        .map(|(k, v)| -> CanonicalPair<'_> { (canonical(k, true), canonical(v, true)) });
    for_each_sorted(pairs, |i, (k, v)| {
        if i > 0 {
            out.put_byte(b'&');
        }
        out.put(k);
        out.put_byte(b'=');
        out.put(v);
    });
}

fn write_canonical_headers(
    req: &RequestView<'_>,
    signed_headers: &SignedNames<'_>,
    values: &SignedValues<'_>,
    out: &mut impl Sink,
) {
    let Some(held) = signed_headers.held() else {
        for name in signed_headers.raw().split(';') {
            write_canonical_header(req, name, req.headers.get_all(name).iter(), out);
        }
        return;
    };
    for (i, first) in values.first.iter().enumerate().take(held) {
        let name = signed_headers.name(i);
        // SDKs do not send a signed header twice; when a request does, its values are looked up
        // again by name, in the order they came.
        if values.many & (1 << i) != 0 {
            write_canonical_header(req, name, req.headers.get_all(name).iter(), out);
        } else {
            write_canonical_header(req, name, first.iter().copied(), out);
        }
    }
}

/// One `name:value\n` line: `host` from the request's authority, several values trimmed, sorted
/// and joined with `,`.
fn write_canonical_header<'h>(
    req: &RequestView<'_>,
    name: &str,
    mut values: impl Iterator<Item = &'h http::HeaderValue>,
    out: &mut impl Sink,
) {
    out.put(name.as_bytes());
    out.put_byte(b':');
    if name == "host" {
        out.put(trim_ows(req.host.unwrap_or_default().as_bytes()));
    } else {
        match (values.next(), values.next()) {
            (None, _) => {}
            (Some(v), None) => out.put(trim_ows(v.as_bytes())),
            (Some(a), Some(b)) => {
                let mut all: Vec<&[u8]> = vec![trim_ows(a.as_bytes()), trim_ows(b.as_bytes())];
                all.extend(values.map(|v| trim_ows(v.as_bytes())));
                all.sort_unstable();
                for (i, v) in all.iter().enumerate() {
                    if i > 0 {
                        out.put_byte(b',');
                    }
                    out.put(v);
                }
            }
        }
    }
    out.put_byte(b'\n');
}

/// A string to sign: the algorithm name, a newline and a 64-hex-digit digest, on the stack.
pub struct StringToSign {
    buf: [u8; 96],
    len: usize,
}

impl StringToSign {
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }
}

/// SHA-256 of the canonical request, streamed: the SDKs' canonical requests fit
/// [`Sha256Stream`]'s buffer whole, so the pieces are copied once and compressed in one call.
fn canonical_sha256(
    req: &RequestView<'_>,
    signed_headers: &SignedNames<'_>,
    values: &SignedValues<'_>,
    hashed_payload: &[u8],
    transcript: Option<&mut Vec<u8>>,
) -> [u8; 32] {
    let mut hasher = Sha256Stream::new();
    feed_canonical(
        req,
        (signed_headers, values),
        hashed_payload,
        transcript,
        &mut hasher,
    );
    hasher.finish()
}

/// SM3 of the canonical request, its pieces gathered in [`Buffered`] first.
fn canonical_sm3(
    req: &RequestView<'_>,
    signed_headers: &SignedNames<'_>,
    values: &SignedValues<'_>,
    hashed_payload: &[u8],
    transcript: Option<&mut Vec<u8>>,
) -> [u8; 32] {
    let mut hasher = Sm3::default();
    let mut buffered = Buffered::new(&mut hasher);
    feed_canonical(
        req,
        (signed_headers, values),
        hashed_payload,
        transcript,
        &mut buffered,
    );
    buffered.finish();
    hasher.finalize().into()
}

/// Writes the canonical request into `sink`, and into `transcript` too when one is asked for.
fn feed_canonical(
    req: &RequestView<'_>,
    (names, values): (&SignedNames<'_>, &SignedValues<'_>),
    hashed_payload: &[u8],
    transcript: Option<&mut Vec<u8>>,
    sink: &mut impl Sink,
) {
    match transcript {
        Some(t) => write_canonical_request(req, names, values, hashed_payload, &mut Tee(sink, t)),
        None => write_canonical_request(req, names, values, hashed_payload, sink),
    }
}

/// `<alg>\n<hex digest>`.
fn string_to_sign(alg: &str, digest: &[u8; 32]) -> StringToSign {
    let mut sts = StringToSign {
        buf: [0u8; 96],
        len: alg.len() + 1 + 2 * digest.len(),
    };
    sts.buf[..alg.len()].copy_from_slice(alg.as_bytes());
    sts.buf[alg.len()] = b'\n';
    hex_lower_into(digest, &mut sts.buf[alg.len() + 1..sts.len]);
    sts
}

/// Lower-hex digest of the body with the algorithm's hash.
fn payload_hash(scheme: Scheme, body: &[u8]) -> [u8; 64] {
    match scheme {
        Scheme::Acs3HmacSm3 if body.is_empty() => EMPTY_SM3_HEX,
        Scheme::Acs3HmacSm3 => {
            let mut out = [0u8; 64];
            hex_lower_into(&Sm3::digest(body), &mut out);
            out
        }
        _ => sha256_hex(body),
    }
}

/// SM3 of the empty string, in lower-case hex (see [`sha256_hex`] for why).
const EMPTY_SM3_HEX: [u8; 64] =
    *b"1ab21d8355cfa17f8e61194831e81a8f22bec8c728fefb747ed035eb5082aa2b";

fn mismatch(sts: &StringToSign) -> Rejection {
    Rejection::SignatureDoesNotMatch {
        string_to_sign: sts.to_string_lossy(),
    }
}

/// Verifies the body hash, then the signature. HMAC tags are compared in constant time.
pub fn verify(
    cred: &Acs3Credential<'_>,
    req: &RequestView<'_>,
    scheme: Scheme,
    material: &KeyMaterial,
    transcript: Option<&mut Vec<u8>>,
) -> Result<(), Rejection> {
    let payload = payload_hash(scheme, req.body);
    // Read by `parse`, which refused the request unless it came once, as text, and not blank.
    // SDKs send it in lower case, as `payload` is: the exact comparison settles most requests.
    let claimed = cred.claimed_body_hash.as_bytes();
    if !short_eq(claimed, &payload) && !claimed.eq_ignore_ascii_case(&payload) {
        return Err(Rejection::ContentHashMismatch);
    }
    let alg = scheme.as_str();
    let signed = &cred.names;
    let values = &cred.values;
    match (scheme, material) {
        (Scheme::Acs3HmacSha256, KeyMaterial::Secret(secret)) => {
            let sts = string_to_sign(
                alg,
                &canonical_sha256(req, signed, values, &payload, transcript),
            );
            let mut mac = secret.hmac_sha256();
            mac.update(sts.as_bytes());
            verify_tag(mac, cred.signature_hex, &sts)
        }
        (Scheme::Acs3HmacSm3, KeyMaterial::Secret(secret)) => {
            let sts = string_to_sign(
                alg,
                &canonical_sm3(req, signed, values, &payload, transcript),
            );
            let mut mac = secret.hmac_sm3();
            mac.update(sts.as_bytes());
            verify_tag(mac, cred.signature_hex, &sts)
        }
        (Scheme::Acs3RsaSha256, KeyMaterial::RsaPublicKey(key)) => {
            let sts = string_to_sign(
                alg,
                &canonical_sha256(req, signed, values, &payload, transcript),
            );
            let mut sig = vec![0u8; cred.signature_hex.len() / 2];
            if !hex_decode_into(cred.signature_hex.as_bytes(), &mut sig) {
                return Err(mismatch(&sts));
            }
            let public = ring::signature::UnparsedPublicKey::new(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                &key.der,
            );
            public
                .verify(sts.as_bytes(), &sig)
                .map_err(|_| mismatch(&sts))
        }
        // A secret key used with RSA, or an RSA key with an HMAC algorithm: the client signed with
        // something this key does not have.
        _ => Err(incomplete(
            "the signature algorithm does not match the AccessKey's kind",
        )),
    }
}

/// Constant-time comparison of an HMAC tag with the hex the client sent.
fn verify_tag<M: Mac>(mac: M, signature_hex: &str, sts: &StringToSign) -> Result<(), Rejection> {
    let mut tag = [0u8; 32];
    if !hex_decode_into(signature_hex.as_bytes(), &mut tag) {
        return Err(mismatch(sts));
    }
    mac.verify_slice(&tag).map_err(|_| mismatch(sts))
}

/// Signs a request the way the Python SDK does: every header given is signed. Adds
/// `x-acs-content-sha256` and `Authorization` to `headers`. Used by `demo`, tests and tooling;
/// interoperability is proved against the official SDKs, not against this function.
pub fn sign(
    method: &str,
    path: &str,
    query: &str,
    headers: &mut Vec<(String, String)>,
    body: &[u8],
    key_id: &str,
    secret: &[u8],
) {
    let payload = payload_hash(Scheme::Acs3HmacSha256, body);
    headers.retain(|(n, _)| {
        !n.eq_ignore_ascii_case("x-acs-content-sha256") && !n.eq_ignore_ascii_case("authorization")
    });
    headers.push((
        "x-acs-content-sha256".into(),
        String::from_utf8_lossy(&payload).into_owned(),
    ));
    let (map, host, signed) = super::signer_headers(headers);
    let view = RequestView {
        method,
        path,
        query,
        host,
        headers: &map,
        body,
    };
    // The list is built sorted and deduplicated above, as `split_checked` requires.
    let names = SignedNames::split_checked(&signed);
    let values = SignedValues::gather(&map, &names);
    let sts = string_to_sign(
        ALGORITHM,
        &canonical_sha256(&view, &names, &values, &payload, None),
    );
    let mut mac = Secret::new(secret).hmac_sha256();
    mac.update(sts.as_bytes());
    let mut sig = [0u8; 64];
    hex_lower_into(&mac.finalize().into_bytes(), &mut sig);
    headers.push((
        "Authorization".into(),
        format!(
            "{ALGORITHM} Credential={key_id},SignedHeaders={signed},Signature={}",
            String::from_utf8_lossy(&sig)
        ),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_query_sorts_encoded_pairs() {
        let mut out = Vec::new();
        write_canonical_query("b=2&a=x+y%2A&a.b=1&c", &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "a=x%20y%2A&a.b=1&b=2&c=");
    }

    #[test]
    fn empty_body_hashes_are_the_hashes_of_nothing() {
        let hex = |d: &[u8]| super::super::encoding::hex_lower(d).into_bytes();
        assert_eq!(
            payload_hash(Scheme::Acs3HmacSm3, b"").to_vec(),
            hex(&Sm3::digest(b""))
        );
        assert_eq!(
            payload_hash(Scheme::Acs3HmacSm3, b"x").to_vec(),
            hex(&Sm3::digest(b"x"))
        );
        assert_eq!(
            payload_hash(Scheme::Acs3HmacSha256, b"").to_vec(),
            hex(&Sha256::digest(b""))
        );
    }

    #[test]
    fn canonical_uri_reencodes_segments() {
        let mut out = Vec::new();
        write_canonical_uri("/clusters/c%203%2a~%C3%A9/x y", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "/clusters/c%203%2A~%C3%A9/x%20y"
        );
    }

    #[test]
    fn required_signed_headers_are_ascending() {
        assert!(REQUIRED_SIGNED_HEADERS.is_sorted_by(|a, b| a < b));
    }

    #[test]
    fn find_comma_finds_the_first_comma_anywhere() {
        for len in 0..40 {
            let plain = "a".repeat(len);
            assert_eq!(find_comma(plain.as_bytes()), None, "{len}");
            for at in 0..len {
                let mut s = plain.clone().into_bytes();
                s[at] = b',';
                // A second comma after the first must not move the answer.
                if at + 3 < len {
                    s[at + 3] = b',';
                }
                // Bytes that differ from a comma by one bit or by a borrow.
                if at > 0 {
                    s[at - 1] = b'-';
                }
                assert_eq!(find_comma(&s), Some(at), "{len} at {at}");
            }
        }
        assert_eq!(find_comma(b"+-./+-./+-.,"), Some(11));
    }

    /// Signs with every header given, so the tests choose what is signed.
    fn signed(headers: &[(&str, &str)]) -> (http::HeaderMap, Option<String>) {
        let mut h: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        sign("GET", "/", "", &mut h, b"", "AKID", b"secret");
        let (map, host, _) = super::super::signer_headers(&h);
        (map, host.map(String::from))
    }

    fn verdict(map: &http::HeaderMap, host: Option<&str>) -> Result<(), String> {
        let view = RequestView {
            method: "GET",
            path: "/",
            query: "",
            host,
            headers: map,
            body: b"",
        };
        let auth = super::super::parse(&view).map_err(|e| e.to_string())?;
        let Credential::Acs3(cred) = &auth.credential else {
            return Err("not ACS3".into());
        };
        let material = KeyMaterial::Secret(Box::new(Secret::new(b"secret")));
        verify(cred, &view, auth.scheme, &material, None).map_err(|e| e.to_string())
    }

    const BASE: [(&str, &str); 5] = [
        ("host", "ecs.example.com"),
        ("x-acs-action", "DescribeRegions"),
        ("x-acs-version", "2014-05-26"),
        ("x-acs-date", "2026-11-22T14:47:22Z"),
        ("x-acs-signature-nonce", "n1"),
    ];

    #[test]
    fn repeated_signed_headers_are_all_covered() {
        let mut headers = BASE.to_vec();
        headers.extend([("x-custom", "b"), ("x-custom", " a "), ("accept", "*/*")]);
        let (map, host) = signed(&headers);
        assert_eq!(verdict(&map, host.as_deref()), Ok(()));
        // The canonical request joins both values: changing the second breaks the signature.
        let mut changed = map.clone();
        let mut values: Vec<_> = changed.get_all("x-custom").iter().cloned().collect();
        values[1] = http::HeaderValue::from_static("c");
        changed.remove("x-custom");
        for v in values {
            changed.append("x-custom", v);
        }
        assert!(verdict(&changed, host.as_deref()).is_err());
        // The same values in another order canonicalise the same (sorted).
        let mut swapped = map.clone();
        let values: Vec<_> = swapped.get_all("x-custom").iter().cloned().collect();
        swapped.remove("x-custom");
        for v in values.into_iter().rev() {
            swapped.append("x-custom", v);
        }
        assert_eq!(verdict(&swapped, host.as_deref()), Ok(()));
        // A repeated x-acs-* header the verifier reads is refused.
        let mut twice = map.clone();
        twice.append(
            "x-acs-action",
            http::HeaderValue::from_static("DeleteInstance"),
        );
        assert!(
            verdict(&twice, host.as_deref())
                .unwrap_err()
                .contains("more than once")
        );
    }

    #[test]
    fn a_header_named_by_a_prefix_or_extension_of_a_signed_name_is_not_it() {
        let mut headers = BASE.to_vec();
        headers.push(("x-acs-resource-group", "rg-1"));
        let (map, host) = signed(&headers);
        assert_eq!(verdict(&map, host.as_deref()), Ok(()));
        // Unsigned x-acs-* headers whose names are a prefix, or an extension, of signed ones.
        for extra in ["x-acs-resource-grou", "x-acs-resource-groups", "x-acs-dat"] {
            let mut m = map.clone();
            m.append(
                http::HeaderName::from_static(extra),
                http::HeaderValue::from_static("x"),
            );
            let why = verdict(&m, host.as_deref()).unwrap_err();
            assert!(why.contains(extra) && why.contains("not signed"), "{why}");
        }
        // A non-x-acs header with such a name is outside the signature and changes nothing.
        let mut m = map.clone();
        m.append("accep", http::HeaderValue::from_static("x"));
        assert_eq!(verdict(&m, host.as_deref()), Ok(()));
    }

    #[test]
    fn more_signed_headers_than_are_held_verify_alike() {
        let names: Vec<String> = (0..30).map(|i| format!("x-extra-{i:02}")).collect();
        let mut headers = BASE.to_vec();
        for n in &names {
            headers.push((n, "v"));
        }
        headers.push(("x-extra-07", "w"));
        let (map, host) = signed(&headers);
        assert_eq!(verdict(&map, host.as_deref()), Ok(()));
        let mut m = map.clone();
        m.insert("x-extra-29", http::HeaderValue::from_static("changed"));
        assert!(verdict(&m, host.as_deref()).is_err());
        // A repeated header's second value is covered too.
        let mut m = map.clone();
        m.remove("x-extra-07");
        m.append("x-extra-07", http::HeaderValue::from_static("v"));
        m.append("x-extra-07", http::HeaderValue::from_static("changed"));
        assert!(verdict(&m, host.as_deref()).is_err());
    }

    #[test]
    fn signed_values_do_not_show_header_values_in_debug() {
        let mut headers = BASE.to_vec();
        headers.push(("x-acs-security-token", "SECRET-TOKEN-VALUE"));
        let (map, host) = signed(&headers);
        let view = RequestView {
            method: "GET",
            path: "/",
            query: "",
            host: host.as_deref(),
            headers: &map,
            body: b"",
        };
        let auth = super::super::parse(&view).unwrap();
        let Credential::Acs3(cred) = &auth.credential else {
            panic!("not ACS3")
        };
        let debug = format!("{:?}", cred.values);
        assert!(!debug.contains("SECRET-TOKEN-VALUE"), "{debug}");
        assert!(debug.contains("present"), "{debug}");
    }
}
