//! Alibaba ROA v1 (SIGNATURES.md §3): `Authorization: acs <AccessKeyId>:<base64 HMAC-SHA1>` over
//! the method, `Accept`, `Content-MD5`, `Content-Type`, `Date`, every `x-acs-*` header and the
//! resource (path and decoded query).
//!
//! The two Python SDKs build the resource differently (path as sent or decoded; an empty value
//! as `k` or `k=`), so up to four resources are tried; the shared prefix is MACed once. The body
//! is covered only through `Content-MD5`, which tea-openapi does not send: such requests are
//! marked `body_signed = false` for the `unsigned_body` setting to judge. The resource is not
//! encoded, so `a=1%26b%3D2` and `a=1&b=2` sign alike — a weakness of the scheme itself.

use base64::Engine;
use hmac::Mac;
use md5::{Digest, Md5};
use std::borrow::Cow;

use super::encoding::{MacSink, Sink, percent_decode, raw_pairs};
use super::{Credential, ParsedAuth, RequestView, Scheme, Window, incomplete, single_header};
use crate::error::Rejection;
use crate::rules::KeyMaterial;
use crate::time::parse_http_date;

#[derive(Debug, Clone)]
pub struct RoaCredential<'a> {
    pub key_id: &'a str,
    pub signature: [u8; 20],
}

type Pair<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// Headers that appear in the string to sign by position; a repeat would make it ambiguous.
const POSITIONAL: [&str; 4] = ["accept", "content-md5", "content-type", "date"];

pub fn parse<'a>(
    authorization: &'a str,
    req: &RequestView<'a>,
) -> Result<ParsedAuth<'a>, Rejection> {
    let rest = authorization
        .strip_prefix("acs ")
        .unwrap_or_default()
        .trim();
    let (key_id, sig_b64) = rest
        .split_once(':')
        .ok_or_else(|| incomplete("Authorization must be `acs <AccessKeyId>:<signature>`"))?;
    if key_id.is_empty() {
        return Err(Rejection::MissingAccessKeyId);
    }
    let mut signature = [0u8; 20];
    match base64::engine::general_purpose::STANDARD.decode(sig_b64) {
        Ok(bytes) if bytes.len() == 20 => signature.copy_from_slice(&bytes),
        _ => return Err(incomplete("the signature is not a base64 HMAC-SHA1")),
    }
    for name in POSITIONAL {
        single_header(req.headers, name)?;
    }
    for name in req
        .headers
        .keys()
        .filter(|n| n.as_str().starts_with("x-acs-"))
    {
        single_header(req.headers, name.as_str())?;
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
    let date = required("date")?;
    let nonce = single_header(req.headers, "x-acs-signature-nonce")?;
    let security_token = single_header(req.headers, "x-acs-security-token")?;
    let has_md5 = single_header(req.headers, "content-md5")?.is_some();
    Ok(ParsedAuth {
        scheme: Scheme::RoaHmacSha1,
        key_id: Cow::Borrowed(key_id),
        action: Cow::Borrowed(action),
        window: parse_http_date(date).map_or(Window::Malformed, Window::SignedAt),
        nonce: nonce.map(Cow::Borrowed),
        security_token: security_token.map(Cow::Borrowed),
        body_signed: has_md5 || req.body.is_empty(),
        credential: Credential::Roa(RoaCredential { key_id, signature }),
    })
}

fn header_bytes<'a>(req: &RequestView<'a>, name: &str) -> &'a [u8] {
    req.headers.get(name).map_or(&b""[..], |v| v.as_bytes())
}

/// Everything before the resource.
fn write_prefix(req: &RequestView<'_>, out: &mut impl Sink) {
    out.put(req.method.as_bytes());
    out.put(b"\n");
    for name in POSITIONAL {
        out.put(header_bytes(req, name));
        out.put(b"\n");
    }
    // HeaderMap names are already lower-case; sort them for the canonical order.
    let mut acs: Vec<&str> = req
        .headers
        .keys()
        .map(|n| n.as_str())
        .filter(|n| n.starts_with("x-acs-"))
        .collect();
    acs.sort_unstable();
    for name in acs {
        out.put(name.as_bytes());
        out.put(b":");
        out.put(header_bytes(req, name));
        out.put(b"\n");
    }
}

/// The resource: path (as sent, or decoded) and the decoded query, sorted, unencoded.
fn write_resource(path: &[u8], query: &[Pair<'_>], empty_as_bare_key: bool, out: &mut impl Sink) {
    out.put(path);
    if query.is_empty() {
        return;
    }
    out.put(b"?");
    for (i, (k, v)) in query.iter().enumerate() {
        if i > 0 {
            out.put(b"&");
        }
        out.put(k);
        if !(v.is_empty() && empty_as_bare_key) {
            out.put(b"=");
            out.put(v);
        }
    }
}

pub fn verify(
    cred: &RoaCredential<'_>,
    req: &RequestView<'_>,
    material: &KeyMaterial,
    transcript: Option<&mut Vec<u8>>,
) -> Result<(), Rejection> {
    let KeyMaterial::Secret(secret) = material else {
        return Err(incomplete(
            "the signature algorithm does not match the AccessKey's kind",
        ));
    };
    if let Some(claimed) = single_header(req.headers, "content-md5")? {
        let actual = base64::engine::general_purpose::STANDARD.encode(Md5::digest(req.body));
        if claimed.trim() != actual {
            return Err(Rejection::ContentMd5Mismatch);
        }
    }
    let mut query: Vec<Pair<'_>> = raw_pairs(req.query)
        .map(|(k, v)| (percent_decode(k, true), percent_decode(v, true)))
        .collect();
    query.sort_unstable();
    let encoded_path: &[u8] = if req.path.is_empty() {
        b"/"
    } else {
        req.path.as_bytes()
    };
    let decoded_path = percent_decode(encoded_path, false);
    let has_empty = query.iter().any(|(_, v)| v.is_empty());

    let mut prefix = MacSink(secret.hmac_sha1());
    write_prefix(req, &mut prefix);
    let paths: &[&[u8]] = if decoded_path.as_ref() == encoded_path {
        &[encoded_path]
    } else {
        &[encoded_path, &decoded_path]
    };
    let empties: &[bool] = if has_empty { &[true, false] } else { &[true] };
    for path in paths {
        for &bare in empties {
            let mut mac = MacSink(prefix.0.clone());
            write_resource(path, &query, bare, &mut mac);
            // verify_slice compares in constant time.
            if mac.0.verify_slice(&cred.signature).is_ok() {
                if let Some(t) = transcript {
                    // The variant that matched, for explanations.
                    write_prefix(req, t);
                    write_resource(path, &query, bare, t);
                }
                return Ok(());
            }
        }
    }
    // Report the variant this client most likely used: tea-openapi sends a nonce and signs the
    // path as sent with bare empty keys; aliyun-python-sdk-core signs the decoded path with `k=`.
    let tea = req.headers.contains_key("x-acs-signature-nonce");
    let mut sts = Vec::new();
    write_prefix(req, &mut sts);
    write_resource(
        if tea { encoded_path } else { &decoded_path },
        &query,
        tea,
        &mut sts,
    );
    if let Some(t) = transcript {
        t.extend_from_slice(&sts);
    }
    Err(Rejection::SignatureDoesNotMatch {
        string_to_sign: String::from_utf8_lossy(&sts).into_owned(),
    })
}
/// Signs a ROA v1 request: adds `Content-MD5` when there is a body (so that, unlike
/// tea-openapi's requests, the body is signed) and `Authorization`. `headers` must already hold
/// `host`, `date`, `x-acs-action` and whatever else the request carries. For tooling and tests;
/// interoperability is proved with the official SDKs.
pub fn sign(
    method: &str,
    path: &str,
    query: &str,
    headers: &mut Vec<(String, String)>,
    body: &[u8],
    key_id: &str,
    secret: &[u8],
) {
    headers.retain(|(n, _)| {
        !n.eq_ignore_ascii_case("content-md5") && !n.eq_ignore_ascii_case("authorization")
    });
    if !body.is_empty() {
        headers.push((
            "content-md5".into(),
            base64::engine::general_purpose::STANDARD.encode(Md5::digest(body)),
        ));
    }
    // The host is not part of a ROA string to sign; only the map is needed.
    let (map, _, _) = super::signer_headers(headers);
    let req = RequestView {
        method,
        path,
        query,
        host: None,
        headers: &map,
        body,
    };
    let mut pairs: Vec<Pair<'_>> = raw_pairs(query)
        .map(|(k, v)| (percent_decode(k, true), percent_decode(v, true)))
        .collect();
    pairs.sort_unstable();
    let mut mac = MacSink(crate::rules::Secret::new(secret).hmac_sha1());
    write_prefix(&req, &mut mac);
    write_resource(
        if path.is_empty() {
            b"/"
        } else {
            path.as_bytes()
        },
        &pairs,
        true,
        &mut mac,
    );
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.0.finalize().into_bytes());
    headers.push(("Authorization".into(), format!("acs {key_id}:{signature}")));
}
