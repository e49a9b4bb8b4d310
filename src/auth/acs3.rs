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
    Sink, Tee, canonical, canonicalize_into, for_each_sorted, hex_decode_into, hex_lower_into,
    raw_pairs,
};
use super::{Credential, ParsedAuth, RequestView, Scheme, Window, incomplete, single_header};
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
    let (alg, rest) = authorization.split_once(' ').unwrap_or((authorization, ""));
    let scheme = match alg {
        "ACS3-HMAC-SHA256" => Scheme::Acs3HmacSha256,
        "ACS3-HMAC-SM3" => Scheme::Acs3HmacSm3,
        "ACS3-RSA-SHA256" => Scheme::Acs3RsaSha256,
        _ => return Err(incomplete("unsupported ACS3 algorithm")),
    };
    let mut parts = rest.split(',');
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
    let hex_ok = signature_hex.bytes().all(|b| b.is_ascii_hexdigit());
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

    super::check_signed_headers(signed_headers)?;
    let signs = |name: &str| super::signs(signed_headers, name);
    for required in REQUIRED_SIGNED_HEADERS {
        if !signs(required) {
            return Err(Rejection::IncompleteSignature(Cow::Owned(format!(
                "header {required} must be signed"
            ))));
        }
    }
    // Any x-acs-* header the request carries is part of the API call (security token, resource
    // group, MFA code…) and must be covered; so is the body's content type.
    for name in req.headers.keys() {
        let n = name.as_str();
        if (n.starts_with("x-acs-") || (n == "content-type" && !req.body.is_empty())) && !signs(n) {
            return Err(Rejection::IncompleteSignature(Cow::Owned(format!(
                "header {n} is present but not signed"
            ))));
        }
    }
    if req.host.is_none() {
        return Err(incomplete("the request has no Host"));
    }
    let required = |name: &'static str| -> Result<&'a str, Rejection> {
        match single_header(req.headers, name)? {
            Some(v) if !v.trim().is_empty() => Ok(v.trim()),
            _ => Err(Rejection::IncompleteSignature(Cow::Owned(format!(
                "header {name} is missing"
            )))),
        }
    };
    let action = required("x-acs-action")?;
    let timestamp = required("x-acs-date")?;
    let nonce = required("x-acs-signature-nonce")?;
    required("x-acs-version")?;
    required("x-acs-content-sha256")?;
    let security_token = single_header(req.headers, "x-acs-security-token")?;

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
        }),
    })
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

/// Writes the canonical request (SIGNATURES.md §1.2) for the given signed-header list.
pub fn write_canonical_request(
    req: &RequestView<'_>,
    signed_headers: &str,
    hashed_payload: &[u8],
    out: &mut impl Sink,
) {
    out.put(req.method.as_bytes());
    out.put(b"\n");
    write_canonical_uri(req.path, out);
    out.put(b"\n");
    write_canonical_query(req.query, out);
    out.put(b"\n");
    write_canonical_headers(req, signed_headers, out);
    out.put(b"\n");
    out.put(signed_headers.as_bytes());
    out.put(b"\n");
    out.put(hashed_payload);
}

/// Each `/`-separated segment decoded then re-encoded, so any equivalent spelling of the path
/// canonicalises the same way.
fn write_canonical_uri(path: &str, out: &mut impl Sink) {
    if path.is_empty() || path == "/" {
        out.put(b"/");
        return;
    }
    for (i, segment) in path.as_bytes().split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.put(b"/");
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
            out.put(b"&");
        }
        out.put(k);
        out.put(b"=");
        out.put(v);
    });
}

fn write_canonical_headers(req: &RequestView<'_>, signed_headers: &str, out: &mut impl Sink) {
    for name in signed_headers.split(';') {
        out.put(name.as_bytes());
        out.put(b":");
        if name == "host" {
            out.put(trim_ows(req.host.unwrap_or_default().as_bytes()));
        } else {
            let mut values = req.headers.get_all(name).iter();
            match (values.next(), values.next()) {
                (None, _) => {}
                (Some(v), None) => out.put(trim_ows(v.as_bytes())),
                (Some(a), Some(b)) => {
                    let mut all: Vec<&[u8]> = vec![trim_ows(a.as_bytes()), trim_ows(b.as_bytes())];
                    all.extend(values.map(|v| trim_ows(v.as_bytes())));
                    all.sort_unstable();
                    for (i, v) in all.iter().enumerate() {
                        if i > 0 {
                            out.put(b",");
                        }
                        out.put(v);
                    }
                }
            }
        }
        out.put(b"\n");
    }
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

fn string_to_sign<D: Digest + Sink + Default>(
    alg: &str,
    req: &RequestView<'_>,
    signed_headers: &str,
    hashed_payload: &[u8],
    transcript: Option<&mut Vec<u8>>,
) -> StringToSign {
    let mut hasher = D::default();
    match transcript {
        Some(t) => write_canonical_request(
            req,
            signed_headers,
            hashed_payload,
            &mut Tee(&mut hasher, t),
        ),
        None => write_canonical_request(req, signed_headers, hashed_payload, &mut hasher),
    }
    let digest = hasher.finalize();
    let mut sts = StringToSign {
        buf: [0u8; 96],
        len: alg.len() + 1 + 2 * digest.len(),
    };
    sts.buf[..alg.len()].copy_from_slice(alg.as_bytes());
    sts.buf[alg.len()] = b'\n';
    hex_lower_into(&digest, &mut sts.buf[alg.len() + 1..sts.len]);
    sts
}

/// Lower-hex digest of the body with the algorithm's hash.
fn payload_hash(scheme: Scheme, body: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    match scheme {
        Scheme::Acs3HmacSm3 => hex_lower_into(&Sm3::digest(body), &mut out),
        _ => hex_lower_into(&Sha256::digest(body), &mut out),
    }
    out
}

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
    let claimed = single_header(req.headers, "x-acs-content-sha256")?.unwrap_or_default();
    if !claimed.trim().as_bytes().eq_ignore_ascii_case(&payload) {
        return Err(Rejection::ContentHashMismatch);
    }
    let alg = scheme.as_str();
    let signed = cred.signed_headers;
    match (scheme, material) {
        (Scheme::Acs3HmacSha256, KeyMaterial::Secret(secret)) => {
            let sts = string_to_sign::<Sha256>(alg, req, signed, &payload, transcript);
            let mut mac = secret.hmac_sha256.clone();
            mac.update(sts.as_bytes());
            verify_tag(mac, cred.signature_hex, &sts)
        }
        (Scheme::Acs3HmacSm3, KeyMaterial::Secret(secret)) => {
            let sts = string_to_sign::<Sm3>(alg, req, signed, &payload, transcript);
            let mut mac = secret.hmac_sm3.clone();
            mac.update(sts.as_bytes());
            verify_tag(mac, cred.signature_hex, &sts)
        }
        (Scheme::Acs3RsaSha256, KeyMaterial::RsaPublicKey(key)) => {
            let sts = string_to_sign::<Sha256>(alg, req, signed, &payload, transcript);
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
    let sts = string_to_sign::<Sha256>(ALGORITHM, &view, &signed, &payload, None);
    let mut mac = Secret::new(secret).hmac_sha256;
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
    fn canonical_uri_reencodes_segments() {
        let mut out = Vec::new();
        write_canonical_uri("/clusters/c%203%2a~%C3%A9/x y", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "/clusters/c%203%2A~%C3%A9/x%20y"
        );
    }
}
