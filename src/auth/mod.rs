//! Signature schemes. Each scheme is one module that parses its credential out of a request and
//! verifies it; [`parse`] picks the scheme and [`ParsedAuth`] is what the decision works with.
//!
//! Adding a scheme means adding a [`Scheme`] variant, a [`Credential`] variant and a module with a
//! `parse` and a `verify`.

pub mod acs3;
pub mod der;
pub mod encoding;
pub mod roa1;
pub mod rpc1;
pub mod sha256;
pub mod sigv4;

use http::HeaderMap;
use std::borrow::Cow;

use crate::error::Rejection;
use crate::rules::AccessKey;
use crate::time::UnixSeconds;
use encoding::short_eq;

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

impl<'a> RequestView<'a> {
    /// The `content-type` header, if present and text.
    pub fn content_type(&self) -> Option<&'a str> {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Acs3HmacSha256,
    Acs3HmacSm3,
    Acs3RsaSha256,
    /// Alibaba RPC v1: `Signature` parameter, HMAC-SHA1.
    RpcHmacSha1,
    /// Alibaba ROA v1: `Authorization: acs <id>:<sig>`, HMAC-SHA1.
    RoaHmacSha1,
    /// AWS Signature Version 4 in the `Authorization` header.
    AwsSigV4,
    /// AWS Signature Version 4 in the query string (presigned URL).
    AwsSigV4Presigned,
}

/// Whose conventions a request follows, which decides the shape of its error responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Alibaba,
    Aws,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Acs3HmacSha256 => "ACS3-HMAC-SHA256",
            Scheme::Acs3HmacSm3 => "ACS3-HMAC-SM3",
            Scheme::Acs3RsaSha256 => "ACS3-RSA-SHA256",
            Scheme::RpcHmacSha1 => "ACS-RPC-HMAC-SHA1",
            Scheme::RoaHmacSha1 => "ACS-ROA-HMAC-SHA1",
            Scheme::AwsSigV4 => "AWS4-HMAC-SHA256",
            Scheme::AwsSigV4Presigned => "AWS4-HMAC-SHA256-QUERY",
        }
    }

    pub fn family(self) -> Family {
        match self {
            Scheme::Acs3HmacSha256
            | Scheme::Acs3HmacSm3
            | Scheme::Acs3RsaSha256
            | Scheme::RpcHmacSha1
            | Scheme::RoaHmacSha1 => Family::Alibaba,
            Scheme::AwsSigV4 | Scheme::AwsSigV4Presigned => Family::Aws,
        }
    }
}

/// When a signed request may be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Signed at this time: accepted within `clock_skew` of it, in both directions.
    SignedAt(UnixSeconds),
    /// A presigned URL: accepted from `signed_at - clock_skew` until `signed_at + expires`.
    Presigned {
        signed_at: UnixSeconds,
        expires: i64,
    },
    /// The request's time could not be read.
    Malformed,
}

/// The V3 variant is the largest by some 200 bytes (the signed headers' values, carried from
/// parsing to verifying); boxing it would put a heap allocation on every V3 request to spare
/// copying those bytes, and a credential lives on the stack for the one request it belongs to.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Credential<'a> {
    Acs3(acs3::Acs3Credential<'a>),
    Rpc(rpc1::RpcCredential<'a>),
    Roa(roa1::RoaCredential<'a>),
    SigV4(sigv4::SigV4Credential<'a>),
}

/// What the decision needs from a request's signature, whatever the scheme.
#[derive(Debug, Clone)]
pub struct ParsedAuth<'a> {
    pub scheme: Scheme,
    pub key_id: Cow<'a, str>,
    pub action: Cow<'a, str>,
    pub window: Window,
    /// The replay-protection nonce, for schemes that carry one.
    pub nonce: Option<Cow<'a, str>>,
    /// An STS security token, if the request carries one.
    pub security_token: Option<Cow<'a, str>>,
    /// False when the scheme lets this request's body go unsigned (ROA v1 without Content-MD5,
    /// SigV4 `UNSIGNED-PAYLOAD`); `settings.unsigned_body` decides what to do with it.
    pub body_signed: bool,
    pub credential: Credential<'a>,
}

impl ParsedAuth<'_> {
    /// Verifies the body hash and the signature against the key. `transcript`, when given,
    /// receives the canonical request (or string to sign), for explanations.
    pub fn verify(
        &self,
        req: &RequestView<'_>,
        key: &AccessKey,
        transcript: Option<&mut Vec<u8>>,
    ) -> Result<(), Rejection> {
        let material = &key.material;
        match &self.credential {
            Credential::Acs3(c) => acs3::verify(c, req, self.scheme, material, transcript),
            Credential::Rpc(c) => rpc1::verify(c, req, material, transcript),
            Credential::Roa(c) => roa1::verify(c, req, material, transcript),
            Credential::SigV4(c) => {
                sigv4::verify_cached(c, req, material, &key.sigv4_keys, transcript)
            }
        }
    }
}

impl ParsedAuth<'_> {
    /// The string to sign, from the transcript [`ParsedAuth::verify`] wrote: the canonical request
    /// for V3 and SigV4 (hashed here), the string to sign itself for RPC and ROA v1.
    pub fn string_to_sign(&self, transcript: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        let hex = |d: &[u8]| encoding::hex_lower(d);
        match &self.credential {
            Credential::Acs3(_) => {
                let digest = match self.scheme {
                    Scheme::Acs3HmacSm3 => hex(&sm3::Sm3::digest(transcript)),
                    _ => hex(&Sha256::digest(transcript)),
                };
                format!("{}\n{digest}", self.scheme.as_str())
            }
            Credential::SigV4(c) => {
                format!(
                    "{}\n{}\n{}\n{}",
                    sigv4::ALGORITHM,
                    c.amz_date,
                    c.scope,
                    hex(&Sha256::digest(transcript))
                )
            }
            Credential::Rpc(_) | Credential::Roa(_) => {
                String::from_utf8_lossy(transcript).into_owned()
            }
        }
    }
}

/// Finds the signature scheme of a request and extracts its credential.
pub fn parse<'a>(req: &RequestView<'a>) -> Result<ParsedAuth<'a>, Rejection> {
    let auth = parse_scheme(req)?;
    // Whether a body is a form (and so may name the action) hangs on its one content type. With
    // two, the gateway would read the first and an upstream might read the other.
    single_header(req.headers, &http::header::CONTENT_TYPE)?;
    Ok(auth)
}

fn parse_scheme<'a>(req: &RequestView<'a>) -> Result<ParsedAuth<'a>, Rejection> {
    let mut auth = req.headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = auth.next() else {
        // No Authorization: the signature, if any, is in the parameters.
        if req.query.contains("X-Amz-Signature=") || req.query.contains("X-Amz-Algorithm=") {
            return sigv4::parse_presigned(req);
        }
        if rpc1::looks_signed(req) {
            return rpc1::parse(req);
        }
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
    if value.starts_with("acs ") {
        return roa1::parse(value, req);
    }
    if value.starts_with("AWS4-") {
        return sigv4::parse_header(value, req);
    }
    Err(incomplete("unsupported signature scheme"))
}

/// Every place an Alibaba request can name its action must name the one its signature scheme
/// reads. Otherwise a request could show the gateway one action (say, in `x-acs-action`) and the
/// upstream another (an `Action` parameter it prefers), and the high-risk check would judge the
/// wrong call. Parameter names are compared without regard to case for the same reason.
pub fn check_action_consistency(
    req: &RequestView<'_>,
    auth: &ParsedAuth<'_>,
) -> Result<(), Rejection> {
    if auth.scheme.family() != Family::Alibaba {
        // SigV4 parsing refuses an operation named twice itself.
        return Ok(());
    }
    let want = auth.action.as_bytes();
    let conflict = || incomplete("the action is named more than once, differently");
    // A V3 action is the one `x-acs-action` value itself, trimmed (its parser refuses a second
    // one, or one that is not text), so only the other schemes need the header compared.
    if !matches!(auth.credential, Credential::Acs3(_)) {
        for v in req.headers.get_all(&X_ACS_ACTION) {
            if v.as_bytes().trim_ascii() != want {
                return Err(conflict());
            }
        }
    }
    let agrees = |raw: &str| {
        encoding::raw_pairs(raw).all(|(k, v)| {
            !may_name_action(k)
                || !encoding::percent_decode(k, true).eq_ignore_ascii_case(b"action")
                || *encoding::percent_decode(v, true) == *want
        })
    };
    if !agrees(req.query) {
        return Err(conflict());
    }
    let form = !req.body.is_empty() && req.content_type().is_some_and(is_form_content_type);
    if form {
        let body =
            std::str::from_utf8(req.body).map_err(|_| incomplete("form body is not UTF-8"))?;
        if !agrees(body) {
            return Err(conflict());
        }
    }
    Ok(())
}

/// Whether a raw parameter name could decode to `action` in some case, judged without decoding:
/// each decoded byte takes one to three raw bytes, and an `a` can only come from itself or from
/// an escape. Most names fail this, and are spared the decoding.
fn may_name_action(raw: &[u8]) -> bool {
    (6..=18).contains(&raw.len()) && matches!(raw.first(), Some(b'a' | b'A' | b'%'))
}

static X_ACS_ACTION: http::HeaderName = http::HeaderName::from_static("x-acs-action");

/// Whether a `Content-Type` value names a form (`application/x-www-form-urlencoded`, any case,
/// any parameters).
pub(crate) fn is_form_content_type(ct: &str) -> bool {
    const FORM: &[u8] = b"application/x-www-form-urlencoded";
    ct.trim_start()
        .as_bytes()
        .get(..FORM.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(FORM))
}

/// A signer's header list in the form the verifiers read: the `HeaderMap` (without `host`), the
/// host, and the lower-cased names sorted and deduplicated — the `SignedHeaders` of a signer that,
/// like the Python SDK, signs every header it sends. Headers that are not valid HTTP are skipped.
pub(crate) fn signer_headers(headers: &[(String, String)]) -> (HeaderMap, Option<&str>, String) {
    let mut map = HeaderMap::new();
    let mut host = None;
    let mut names: Vec<String> = Vec::new();
    for (n, v) in headers {
        let lower = n.to_ascii_lowercase();
        if lower == "host" {
            host = Some(v.as_str());
        } else if let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(lower.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            map.append(name, value);
        }
        names.push(lower);
    }
    names.sort();
    names.dedup();
    (map, host, names.join(";"))
}

/// Bytes of an HTTP token (RFC 9110 `tchar`) that may appear in a lower-case header name.
const TOKEN_LOWER: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

/// A `SignedHeaders` list (V3 and SigV4), validated and split once: lower-case header names,
/// `;`-separated, ascending, no repeats. Anything else is refused rather than normalised: the list
/// is signed as written.
///
/// Membership is asked a dozen times per request (required headers, every `x-acs-*`/`x-amz-*`
/// header present), so where each name lies is kept on the stack instead of splitting the list
/// again for each question; as 16-bit offsets and 8-bit lengths rather than `&str`s, because the
/// V3 credential carries this from parsing to verifying and a smaller request state is cheaper to
/// move, and because eight lengths fit a word, so [`SignedNames::index`] finds the names of a
/// given length eight at a time. Longer lists than [`SignedNames::INLINE`] (no SDK sends one),
/// lists longer than 64 KiB or with a name longer than 255 bytes are answered by scanning the
/// text.
#[derive(Debug, Clone)]
pub(crate) struct SignedNames<'a> {
    raw: &'a str,
    /// Where in `raw` each name starts.
    starts: [u16; SignedNames::INLINE],
    /// Each name's length; 0 past the last name (no name is empty).
    lens: [u8; SignedNames::INLINE],
    /// Bit `min(length, 63)` of each held name's length: most headers a request carries unsigned
    /// have a length no signed name has, and this answers them without looking further.
    lengths: u64,
    /// Names held in `starts` and `lens`, or `None` when the list is not held.
    len: Option<u8>,
}

// `index` reads the lengths a word of eight at a time.
const _: () = assert!(SignedNames::INLINE.is_multiple_of(8));

impl<'a> SignedNames<'a> {
    pub(crate) const INLINE: usize = 24;

    pub(crate) fn parse(raw: &'a str) -> Result<Self, Rejection> {
        let not_token =
            || incomplete("SignedHeaders must be lower-case header names separated by `;`");
        let bytes = raw.as_bytes();
        let mut spans = [(0u16, 0u16); Self::INLINE];
        let mut n = 0;
        let mut previous: &[u8] = b"";
        let mut start = 0;
        // Name by name, as a split would give them: each name's characters are checked, then its
        // order against the one before. `;` is not a token character, so one scan for the first
        // byte that is not finds where the name ends, or what is wrong with it.
        loop {
            let rest = &bytes[start..];
            let len = rest
                .iter()
                .position(|&b| !TOKEN_LOWER[usize::from(b)])
                .unwrap_or(rest.len());
            let end = start + len;
            if len == 0 || bytes.get(end).is_some_and(|&b| b != b';') {
                return Err(not_token());
            }
            let name = &bytes[start..end];
            // The first bytes settle the order of most pairs of adjacent names; the others are
            // compared here rather than by a call to the C library's `memcmp`.
            let in_order = match (previous.first(), name.first()) {
                (Some(p), Some(f)) if p != f => f > p,
                _ => sorts_after(name, previous),
            };
            if !in_order {
                return Err(incomplete(
                    "SignedHeaders must be sorted and without repeats",
                ));
            }
            previous = name;
            if n < Self::INLINE {
                spans[n] = span(start, end);
            }
            n += 1;
            if end == bytes.len() {
                break;
            }
            start = end + 1;
        }
        Ok(Self::new(raw, spans, n))
    }

    /// Splits a list [`SignedNames::parse`] has already accepted (so without checking it again).
    pub(crate) fn split_checked(raw: &'a str) -> Self {
        let mut spans = [(0u16, 0u16); Self::INLINE];
        let mut n = 0;
        let mut start = 0;
        for name in raw.as_bytes().split(|&b| b == b';') {
            if n < Self::INLINE {
                spans[n] = span(start, start + name.len());
            }
            n += 1;
            start += name.len() + 1;
        }
        Self::new(raw, spans, n)
    }

    fn new(raw: &'a str, spans: [(u16, u16); SignedNames::INLINE], n: usize) -> Self {
        let mut starts = [0u16; Self::INLINE];
        let mut lens = [0u8; Self::INLINE];
        let mut lengths = 0u64;
        let mut fits = n <= Self::INLINE && u16::try_from(raw.len()).is_ok();
        for (i, &(start, len)) in spans.iter().enumerate().take(n) {
            starts[i] = start;
            lengths |= length_bit(usize::from(len));
            match u8::try_from(len) {
                Ok(len) => lens[i] = len,
                Err(_) => fits = false,
            }
        }
        SignedNames {
            raw,
            starts,
            lens,
            lengths,
            // `n` is at most INLINE (24) when the list fits.
            len: if fits { u8::try_from(n).ok() } else { None },
        }
    }

    /// The list as sent.
    pub(crate) fn raw(&self) -> &'a str {
        self.raw
    }

    /// How many names [`SignedNames::name`] answers for: `None` when the list is too long to
    /// be held, and must be read from [`SignedNames::raw`].
    pub(crate) fn held(&self) -> Option<usize> {
        self.len.map(usize::from)
    }

    /// The `i`th name, for `i` below [`SignedNames::held`].
    pub(crate) fn name(&self, i: usize) -> &'a str {
        let start = usize::from(self.starts[i]);
        // Split at ASCII `;`, so these are character boundaries.
        self.raw
            .get(start..start + usize::from(self.lens[i]))
            .unwrap_or_default()
    }

    /// Where `name` is in a held list (see [`SignedNames::held`]); `None` when it is not there,
    /// or when the list is not held.
    ///
    /// The lengths are compared a word (eight names) at a time, and the bytes only of names of
    /// the right length: in an SDK's list of a dozen names that is mostly one name, or none.
    #[inline]
    pub(crate) fn index(&self, name: &str) -> Option<usize> {
        let held = usize::from(self.len?);
        let want = name.as_bytes();
        if self.lengths & length_bit(want.len()) == 0 {
            return None;
        }
        // No name is empty or longer than 255 bytes in a held list, and unused slots are 0.
        let len = u8::try_from(want.len()).ok().filter(|&l| l > 0)?;
        const LOW7: u64 = u64::from_ne_bytes([0x7f; 8]);
        let pattern = u64::from_ne_bytes([len; 8]);
        let (words, _) = self.lens.as_chunks::<8>();
        for (w, word) in words.iter().enumerate().take(held.div_ceil(8)) {
            // Little-endian, so name `8w + k` is byte `k`. A byte of `x` is zero where the
            // length matches; `hits` has the high bit of exactly those bytes set.
            let x = u64::from_le_bytes(*word) ^ pattern;
            let mut hits = !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7);
            while hits != 0 {
                let i = 8 * w + (hits.trailing_zeros() / 8) as usize;
                if short_eq(self.name(i).as_bytes(), want) {
                    return Some(i);
                }
                hits &= hits - 1;
            }
        }
        None
    }

    /// The first of `wanted` (ascending, without repeats) that the list does not name, found by
    /// one merge of the two sorted lists rather than a search for each.
    pub(crate) fn first_missing<'w>(&self, wanted: &[&'w str]) -> Option<&'w str> {
        debug_assert!(wanted.is_sorted_by(|a, b| a < b));
        let Some(held) = self.held() else {
            return wanted.iter().copied().find(|w| !self.contains(w));
        };
        let mut i = 0;
        for &w in wanted {
            loop {
                if i == held {
                    return Some(w);
                }
                let name = self.name(i).as_bytes();
                i += 1;
                if short_eq(name, w.as_bytes()) {
                    break;
                }
                if sorts_after(name, w.as_bytes()) {
                    // Past where `w` would be.
                    return Some(w);
                }
            }
        }
        None
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        match self.len {
            Some(_) => self.index(name).is_some(),
            None => self.raw.split(';').any(|n| n == name),
        }
    }
}

/// A length's bit in [`SignedNames`]'s `lengths`.
#[inline]
fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

/// Whether `name` sorts after `previous` as byte strings (`name > previous`), for names of a few
/// dozen bytes: eight bytes at a time (as big-endian numbers they order as the bytes do), where
/// `x-acs-*` names share their first six.
#[inline]
fn sorts_after(name: &[u8], previous: &[u8]) -> bool {
    let (mut a, mut b) = (name, previous);
    while let (Some((x, a_rest)), Some((y, b_rest))) =
        (a.split_first_chunk::<8>(), b.split_first_chunk::<8>())
    {
        if x != y {
            return u64::from_be_bytes(*x) > u64::from_be_bytes(*y);
        }
        (a, b) = (a_rest, b_rest);
    }
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => a[i] > b[i],
        None => a.len() > b.len(),
    }
}

/// A name's place in a list, as [`SignedNames`] keeps it. Lists that do not fit 16 bits are not
/// kept (see [`SignedNames::new`]), so the truncation never matters for a list that is.
fn span(start: usize, end: usize) -> (u16, u16) {
    (
        u16::try_from(start).unwrap_or(u16::MAX),
        u16::try_from(end - start).unwrap_or(u16::MAX),
    )
}

pub(crate) fn incomplete(why: &'static str) -> Rejection {
    Rejection::IncompleteSignature(Cow::Borrowed(why))
}

/// The value of a header that must appear at most once, as text. Known names are best passed as
/// a `&HeaderName` (a static), which spares parsing the name on every request.
pub(crate) fn single_header<K>(headers: &HeaderMap, name: K) -> Result<Option<&str>, Rejection>
where
    K: http::header::AsHeaderName + std::fmt::Display + Copy,
{
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_content_types() {
        assert!(is_form_content_type("application/x-www-form-urlencoded"));
        assert!(is_form_content_type(
            " Application/X-WWW-Form-Urlencoded; charset=utf-8"
        ));
        assert!(!is_form_content_type("application/json"));
        assert!(!is_form_content_type("application/x-www-form"));
        assert!(!is_form_content_type(""));
    }

    #[test]
    fn every_spelling_of_action_is_looked_at() {
        for mut spelling in 0u32..4096 {
            let mut raw = Vec::new();
            for c in b"action" {
                match spelling % 4 {
                    0 => raw.push(*c),
                    1 => raw.push(c.to_ascii_uppercase()),
                    2 => raw.extend(format!("%{c:02x}").bytes()),
                    _ => raw.extend(format!("%{:02X}", c.to_ascii_uppercase()).bytes()),
                }
                spelling /= 4;
            }
            assert!(
                encoding::percent_decode(&raw, true).eq_ignore_ascii_case(b"action"),
                "{raw:?}"
            );
            assert!(may_name_action(&raw), "{}", String::from_utf8_lossy(&raw));
        }
        assert!(!may_name_action(b"ResourceType"));
        assert!(!may_name_action(b"actio"));
    }

    #[test]
    fn a_v3_request_naming_another_action_in_its_query_is_refused() {
        let mut headers: Vec<(String, String)> = [
            ("host", "ecs.example.com"),
            ("x-acs-action", "DescribeRegions"),
            ("x-acs-version", "2014-05-26"),
            ("x-acs-date", "2026-11-22T14:47:22Z"),
            ("x-acs-signature-nonce", "n1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        acs3::sign("GET", "/", "", &mut headers, b"", "AKID", b"secret");
        let (map, host, _) = signer_headers(&headers);
        let consistent = |query: &str| {
            let view = RequestView {
                method: "GET",
                path: "/",
                query,
                host,
                headers: &map,
                body: b"",
            };
            let auth = parse(&view).unwrap();
            check_action_consistency(&view, &auth).is_ok()
        };
        for query in [
            "Action=DescribeRegions",
            "a=1&ACTION=DescribeRegions",
            "RegionId=x",
            "",
        ] {
            assert!(consistent(query), "{query}");
        }
        for query in [
            "Action=DeleteInstance",
            "%41ction=DeleteInstance",
            "x=1&aCtIoN=DeleteInstance",
            "%61%63%74%69%6F%6E=DeleteInstance",
        ] {
            assert!(!consistent(query), "{query}");
        }
    }

    #[test]
    fn signed_names_split_and_answer_alike_short_and_long() {
        let short = "host;x-acs-action;x-acs-date";
        let s = SignedNames::parse(short).unwrap();
        let held: Vec<&str> = (0..s.held().unwrap()).map(|i| s.name(i)).collect();
        assert_eq!(held, ["host", "x-acs-action", "x-acs-date"]);
        assert!(s.contains("x-acs-date") && !s.contains("x-acs") && !s.contains("date"));
        let long: Vec<String> = (0..40).map(|i| format!("x-h{i:02}")).collect();
        let long = long.join(";");
        let l = SignedNames::parse(&long).unwrap();
        assert!(l.held().is_none());
        assert!(l.contains("x-h00") && l.contains("x-h39") && !l.contains("x-h40"));
        assert!(SignedNames::parse("b;a").is_err());
        assert!(SignedNames::parse("a;a").is_err());
        assert!(SignedNames::parse("a;;b").is_err());
        assert!(SignedNames::parse("Host").is_err());
        // The first fault in reading order decides the message.
        let why = |raw: &str| match SignedNames::parse(raw) {
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        };
        assert!(why("b;a;C").contains("sorted"), "{}", why("b;a;C"));
        assert!(why("a;C;b;a").contains("lower-case"));
        for bad in ["", "a;", ";a", "a b", "a;b;"] {
            assert!(why(bad).contains("lower-case"), "{bad:?}");
        }
        let ok = SignedNames::parse("a;ab;b").unwrap();
        assert!(ok.contains("ab") && ok.contains("b") && !ok.contains("a;ab"));
    }

    /// Sorted names with many of one length, prefixes of each other and long shared prefixes.
    fn pool() -> Vec<String> {
        let mut names: Vec<String> = (0..12).map(|i| format!("x-h{i:02}")).collect();
        names.extend(["a", "ab", "abc", "accept", "host", "user-agent"].map(String::from));
        names.extend(
            [
                "x-acs-action",
                "x-acs-content-sha256",
                "x-acs-date",
                "x-acs-signature-nonce",
                "x-acs-signature-nonce2",
                "x-acs-version",
                "x-acs-versioo",
                "x-acs-versiop",
            ]
            .map(String::from),
        );
        names.sort();
        names
    }

    #[test]
    fn signed_names_index_finds_each_name_and_nothing_else() {
        let pool = pool();
        for n in 1..=pool.len() {
            // Every window of n names, so each name sits at every slot of the words.
            for from in 0..=pool.len() - n {
                let list = &pool[from..from + n];
                let raw = list.join(";");
                let s = SignedNames::parse(&raw).unwrap();
                assert_eq!(s.held(), (n <= SignedNames::INLINE).then_some(n), "{raw}");
                for probe in pool
                    .iter()
                    .flat_map(|p| [p.clone(), format!("{p}x"), p[..p.len() - 1].to_string()])
                {
                    let want = list.iter().position(|l| *l == probe);
                    let got = s.index(&probe);
                    if s.held().is_some() {
                        assert_eq!(got, want, "{probe} in {raw}");
                    } else {
                        assert_eq!(got, None, "{probe} in {raw}");
                    }
                    assert_eq!(s.contains(&probe), want.is_some(), "{probe} in {raw}");
                }
                if let Some(held) = s.held() {
                    let names: Vec<&str> = (0..held).map(|i| s.name(i)).collect();
                    assert_eq!(names, list, "{raw}");
                }
            }
        }
    }

    #[test]
    fn first_missing_is_the_first_wanted_name_not_listed() {
        let pool = pool();
        let reference = |list: &[String], wanted: &[&str]| -> Option<String> {
            wanted
                .iter()
                .find(|w| !list.iter().any(|l| l == *w))
                .map(|w| w.to_string())
        };
        let wanted_sets: [&[&str]; 5] = [
            &["host", "x-acs-action", "x-acs-date"],
            &["a", "abc", "x-h05", "x-h11"],
            &["ab", "x-acs-signature-nonce", "x-acs-versioo"],
            &["x-acs-signature-nonc", "x-acs-version"],
            &["zz"],
        ];
        for n in 1..=pool.len() {
            for from in 0..=pool.len() - n {
                let list = &pool[from..from + n];
                let raw = list.join(";");
                let s = SignedNames::parse(&raw).unwrap();
                for wanted in wanted_sets {
                    assert_eq!(
                        s.first_missing(wanted).map(String::from),
                        reference(list, wanted),
                        "{wanted:?} in {raw}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_list_with_a_name_past_255_bytes_is_scanned() {
        let long = format!("x-{}", "a".repeat(300));
        let raw = format!("host;{long};x-acs-date");
        let s = SignedNames::parse(&raw).unwrap();
        assert_eq!(s.held(), None);
        assert!(s.contains(&long) && s.contains("host") && s.contains("x-acs-date"));
        assert!(!s.contains(&long[..long.len() - 1]) && !s.contains(""));
        // 255 bytes still fits.
        let edge = format!("x-{}", "a".repeat(253));
        let s = SignedNames::parse(&edge).unwrap();
        assert_eq!(s.held(), Some(1));
        assert_eq!(s.index(&edge), Some(0));
    }

    #[test]
    fn sorts_after_orders_as_bytes_do() {
        let mut pool = pool();
        pool.extend(
            [
                "",
                "x-acs-ab",
                "x-acs-aa",
                "x-acs-abx",
                "x-acs-ab~",
                "x-acs-content-sha25",
                "x-acs-content-sha256-",
                "~",
            ]
            .map(String::from),
        );
        for a in &pool {
            for b in &pool {
                assert_eq!(
                    sorts_after(a.as_bytes(), b.as_bytes()),
                    a.as_bytes() > b.as_bytes(),
                    "{a:?} {b:?}"
                );
            }
        }
    }
}
