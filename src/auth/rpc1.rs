//! Alibaba RPC v1 (SIGNATURES.md §2): the signature is the `Signature` parameter, a base64
//! HMAC-SHA1 keyed with `secret + "&"` over `METHOD&%2F&PE(canonical parameters)`.
//!
//! Parameters come from the query and, for form-encoded bodies, the body. A parameter that appears
//! twice is refused: the SDKs never send one, and if this verifier read one copy (say, the
//! `Action`) while the upstream read the other, the high-risk check would judge a different call
//! from the one executed. Headers, including `Host`, are not covered by this scheme.

use base64::Engine;
use hmac::Mac;
use std::borrow::Cow;

use super::encoding::{Buffered, MacSink, Sink, is_unreserved, percent_decode, raw_pairs};
use super::{Credential, ParsedAuth, RequestView, Scheme, Window, incomplete};
use crate::error::Rejection;
use crate::rules::KeyMaterial;
use crate::time::parse_iso8601_utc;

type Param<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

#[derive(Debug, Clone)]
pub struct RpcCredential<'a> {
    /// Decoded parameters without `Signature`, sorted by name.
    pub params: Vec<Param<'a>>,
    pub signature: [u8; 20],
}

/// Whether the parameters carry an RPC v1 signature.
pub fn looks_signed(req: &RequestView<'_>) -> bool {
    let has = |s: &str| raw_pairs(s).any(|(k, _)| k == b"Signature");
    has(req.query) || (is_form(req) && std::str::from_utf8(req.body).is_ok_and(has))
}

fn is_form(req: &RequestView<'_>) -> bool {
    req.content_type().is_some_and(super::is_form_content_type)
}

fn text<'a>(v: &Cow<'a, [u8]>, name: &'static str) -> Result<Cow<'a, str>, Rejection> {
    match v {
        Cow::Borrowed(b) => std::str::from_utf8(b).map(Cow::Borrowed),
        Cow::Owned(b) => String::from_utf8(b.clone())
            .map(Cow::Owned)
            .map_err(|e| e.utf8_error()),
    }
    .map_err(|_| {
        Rejection::IncompleteSignature(Cow::Owned(format!("parameter {name} is not UTF-8")))
    })
}

pub fn parse<'a>(req: &RequestView<'a>) -> Result<ParsedAuth<'a>, Rejection> {
    if !matches!(req.path, "" | "/") {
        // The string to sign names the path as "/" whatever it is, so any other path would go
        // unverified.
        return Err(incomplete("RPC v1 requests must be sent to the path /"));
    }
    // Sized for the query's parameters at once (an SDK sends a dozen), not grown to them.
    let mut params: Vec<Param<'a>> =
        Vec::with_capacity(req.query.bytes().filter(|&b| b == b'&').count() + 1);
    params.extend(
        raw_pairs(req.query).map(|(k, v)| (percent_decode(k, true), percent_decode(v, true))),
    );
    let form = is_form(req);
    if form && !req.body.is_empty() {
        let body =
            std::str::from_utf8(req.body).map_err(|_| incomplete("form body is not UTF-8"))?;
        params.extend(
            raw_pairs(body).map(|(k, v)| (percent_decode(k, true), percent_decode(v, true))),
        );
    }
    params.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = params.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Rejection::IncompleteSignature(Cow::Owned(format!(
            "parameter {} appears more than once",
            String::from_utf8_lossy(&w[0].0)
        ))));
    }
    let find = |name: &str| {
        params
            .iter()
            .position(|(k, _)| k.as_ref() == name.as_bytes())
    };
    let sig_index =
        find("Signature").ok_or_else(|| incomplete("parameter Signature is missing"))?;
    let (_, sig_value) = params.remove(sig_index);
    let get = |name: &'static str| -> Result<Option<Cow<'a, str>>, Rejection> {
        match params.iter().find(|(k, _)| k.as_ref() == name.as_bytes()) {
            Some((_, v)) => text(v, name).map(Some),
            None => Ok(None),
        }
    };
    let required = |name: &'static str| -> Result<Cow<'a, str>, Rejection> {
        match get(name)? {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(Rejection::IncompleteSignature(Cow::Owned(format!(
                "parameter {name} is missing"
            )))),
        }
    };
    let key_id = match get("AccessKeyId")? {
        Some(k) if !k.is_empty() => k,
        _ => return Err(Rejection::MissingAccessKeyId),
    };
    if required("SignatureMethod")? != "HMAC-SHA1" || required("SignatureVersion")? != "1.0" {
        return Err(incomplete(
            "only SignatureMethod=HMAC-SHA1, SignatureVersion=1.0 are supported",
        ));
    }
    let action = required("Action")?;
    let timestamp = required("Timestamp")?;
    let nonce = required("SignatureNonce")?;
    let security_token = get("SecurityToken")?;

    // Base64 has no spaces: a `+` sent unencoded was form-decoded to one.
    let sig_text: Vec<u8> = sig_value
        .iter()
        .map(|&b| if b == b' ' { b'+' } else { b })
        .collect();
    let mut signature = [0u8; 20];
    match base64::engine::general_purpose::STANDARD.decode(&sig_text) {
        Ok(bytes) if bytes.len() == 20 => signature.copy_from_slice(&bytes),
        _ => return Err(incomplete("Signature is not a base64 HMAC-SHA1")),
    }

    Ok(ParsedAuth {
        scheme: Scheme::RpcHmacSha1,
        window: parse_iso8601_utc(&timestamp).map_or(Window::Malformed, Window::SignedAt),
        key_id,
        action,
        nonce: Some(nonce),
        security_token,
        // A body that is not form-encoded is not among the signed parameters.
        body_signed: req.body.is_empty() || form,
        credential: Credential::Rpc(RpcCredential { params, signature }),
    })
}

/// `PE(PE(bytes))`, in one pass: the string to sign encodes the already encoded canonical query
/// a second time. The second encoding leaves unreserved bytes alone and turns the `%` of each
/// first-pass escape into `%25` (its two hex digits are unreserved), so a byte the first pass
/// escapes becomes `%25XX`.
fn percent_encode_twice_into(bytes: &[u8], out: &mut impl Sink) {
    const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !is_unreserved(b) {
            out.put(&bytes[start..i]);
            out.put(&[
                b'%',
                b'2',
                b'5',
                HEX_UPPER[usize::from(b >> 4)],
                HEX_UPPER[usize::from(b & 0xf)],
            ]);
            start = i + 1;
        }
    }
    out.put(&bytes[start..]);
}

pub fn write_string_to_sign(method: &str, params: &[Param<'_>], out: &mut impl Sink) {
    out.put(method.as_bytes());
    out.put(b"&%2F&");
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            // PE("&")
            out.put(b"%26");
        }
        percent_encode_twice_into(k, out);
        // PE("=")
        out.put(b"%3D");
        percent_encode_twice_into(v, out);
    }
}

pub fn verify(
    cred: &RpcCredential<'_>,
    req: &RequestView<'_>,
    material: &KeyMaterial,
    transcript: Option<&mut Vec<u8>>,
) -> Result<(), Rejection> {
    let KeyMaterial::Secret(secret) = material else {
        return Err(incomplete(
            "the signature algorithm does not match the AccessKey's kind",
        ));
    };
    if let Some(t) = transcript {
        write_string_to_sign(req.method, &cred.params, t);
    }
    let mut mac = MacSink(secret.hmac_sha1_amp());
    // The string to sign is written a byte run at a time (every escape is its own piece).
    let mut buffered = Buffered::new(&mut mac);
    write_string_to_sign(req.method, &cred.params, &mut buffered);
    buffered.finish();
    mac.0.verify_slice(&cred.signature).map_err(|_| {
        // Only on failure: the client compares this with its own string to sign to tell a wrong
        // secret from a wrong canonicalisation.
        let mut sts = Vec::new();
        write_string_to_sign(req.method, &cred.params, &mut sts);
        Rejection::SignatureDoesNotMatch {
            string_to_sign: String::from_utf8_lossy(&sts).into_owned(),
        }
    })
}

/// Signs RPC parameters the way aliyun-python-sdk-core does; returns the base64 signature. For
/// tests and tooling.
pub fn sign(method: &str, params: &[(&str, &str)], secret: &str) -> String {
    let mut sorted: Vec<Param<'_>> = params
        .iter()
        .map(|(k, v)| (Cow::Borrowed(k.as_bytes()), Cow::Borrowed(v.as_bytes())))
        .collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut mac = MacSink(crate::rules::Secret::new(secret.as_bytes()).hmac_sha1_amp());
    write_string_to_sign(method, &sorted, &mut mac);
    base64::engine::general_purpose::STANDARD.encode(mac.0.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_twice_in_one_pass_is_encoding_twice() {
        use crate::auth::encoding::percent_encode;
        for s in [
            "",
            "abc",
            "a b",
            "2016-02-23T12:46:24Z",
            "x/y=z&w",
            "é*~",
            "%41+",
        ] {
            let mut once = Vec::new();
            percent_encode_twice_into(s.as_bytes(), &mut once);
            assert_eq!(
                String::from_utf8(once).unwrap(),
                percent_encode(&percent_encode(s)),
                "{s}"
            );
        }
    }

    #[test]
    fn documented_example() {
        // Alibaba's documented ECS example: secret "testsecret".
        let params = [
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("Format", "XML"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2016-02-23T12:46:24Z"),
            ("Version", "2014-05-26"),
        ];
        assert_eq!(
            sign("GET", &params, "testsecret"),
            "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
        );
    }
}
