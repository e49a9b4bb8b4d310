//! What the fuzz targets do with their input, shared by the libFuzzer targets
//! (`fuzz/fuzz_targets/*.rs`, nightly-only tooling) and by `tests/fuzz_corpus.rs`, which replays
//! the committed corpus on stable Rust so that CI guards against regressions without libFuzzer.
//!
//! Every `run_*` function takes raw fuzzer bytes, must never panic on any input except to report
//! a broken property (a panic is what libFuzzer records as a crash), and returns what it reached,
//! so that the replay test can assert that the corpus still exercises the deep paths.
//!
//! A request is written as HTTP/1.1 text (`METHOD target` line, `name: value` lines, blank line,
//! body) and read the way the gateway's HTTP layer hands it over: method, target and headers go
//! through the `http` crate's own parsers (what hyper uses), header values lose surrounding
//! whitespace, and the host comes from `Host` or an absolute-form target. Lines that HTTP would
//! refuse are skipped rather than failing the whole input, so that mutations stay useful.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use akgate::auth::{self, Credential, ParsedAuth, RequestView, Scheme, acs3, roa1, rpc1, sigv4};
use akgate::error::Rejection;
use akgate::policy::NonceCache;
use akgate::rules::load::{CheckOptions, LoadOptions, load_sources};
use akgate::rules::{AccessKey, KeyMaterial, Snapshot};
use akgate::time::UnixSeconds;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

/// A request as the decision sees it, owning its parts.
#[derive(Debug, Clone)]
pub struct WireRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub host: Option<String>,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl WireRequest {
    pub fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            host: self.host.as_deref(),
            headers: &self.headers,
            body: &self.body,
        }
    }

    /// The headers as `(name, value)` text, in map order, skipping values that are not text.
    fn header_pairs(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect()
    }
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| matches!(b, b' ' | b'\t');
    let start = v.iter().position(|b| !is_ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !is_ows(b)).map_or(start, |e| e + 1);
    &v[start..end]
}

/// Reads fuzz input as an HTTP/1.1 request (see the module documentation). `None` for what the
/// gateway's HTTP layer would refuse before the decision: no request line, a method or target
/// `http` cannot parse, two `Host` headers, a non-ASCII `Host`, or a `Host` that contradicts an
/// absolute-form target.
pub fn decode_request(data: &[u8]) -> Option<WireRequest> {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &data[data.len()..]),
    };
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next()?;
    let mut words = request_line.splitn(3, |&b| b == b' ');
    let method = Method::from_bytes(words.next()?).ok()?;
    let uri = Uri::try_from(words.next()?).ok()?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(trim_ows(&line[colon + 1..])),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let mut hosts = headers.get_all(http::header::HOST).iter();
    let header_host = match (hosts.next(), hosts.next()) {
        (None, _) => None,
        (Some(h), None) => Some(h.to_str().ok()?.to_string()),
        (Some(_), Some(_)) => return None,
    };
    let authority = uri.authority().map(|a| a.as_str().to_string());
    let host = match (header_host, authority) {
        (Some(h), Some(a)) if !h.eq_ignore_ascii_case(&a) => return None,
        (Some(h), _) => Some(h),
        (None, a) => a,
    };
    Some(WireRequest {
        method: method.as_str().to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        host,
        headers,
        body: body.to_vec(),
    })
}

/// The inverse of [`decode_request`] for what a signer produced: origin-form target, one line
/// per header (host included, as a signer lists it).
fn encode_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    if !query.is_empty() {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\n");
    for (n, v) in headers {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

// ---------------------------------------------------------------------------------------------
// The fixed rule set the signature targets verify against

/// The clock of the decision target: a few minutes after the SDK vectors in
/// `tests/fixtures/signatures.json` were signed, so that seeds taken from them pass the time
/// check and reach the signature, nonce and leaked-key steps.
pub const NOW: UnixSeconds = 1_795_359_000; // 2026-11-22T14:50:00Z

/// Clearly fake keys: the SDK vectors' (already public in tests/fixtures) and the fuzz key.
const VECTOR_KEY_ID: &str = "LTAI5tVectorTestKeyId01";
const VECTOR_SECRET: &str = "VectorTestSecret0123456789ABCDEF";
const AWS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const FUZZ_KEY_ID: &str = "FuzzKeyId";
const FUZZ_SECRET: &str = "fuzz-secret-not-real";
const RSA_KEY_ID: &str = "FuzzRsaKeyId";
/// The public half of the RSA key of the SDK vector `v3-rsa-describeregions`.
const RSA_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqgVZwhKDi/CZdYYeblgx
0antojQsZpTKP7d+iBzhRA2U28w7zd4K03bKqa1XxUsnrBdZwE5/MphO58ce+tLJ
5SCkr3O2/hQeV7pidn7nAsM2dn2GCPoJ0VcOHYtHkhoR0rcSAA8bWBZBB0HLYwwF
29BQsHlsxJSQXsbiacIr7msp7YFP5OEG6fO25EJm5t3B+x5bpyB5kSuVzwGrTZz/
WwbD/rhg6KFSxtktBOmFu/3VStkZu+J6ISbSW+NuzlzT5U+J9R9if59xcLz6Dbes
cNQcT8LhV2RrHW0b9t+k1SigwTOKCp9ldsvVGa+yIUTXk517ZUh4F5I4jduvAB2k
kQIDAQAB
-----END PUBLIC KEY-----";

/// The services a decision input can put its request behind, with their signature family.
const SERVICES: [(&str, &str); 8] = [
    ("ecs", "alibaba"),
    ("ram", "alibaba"),
    ("cs", "alibaba"),
    ("sts", "aws"),
    ("ec2", "aws"),
    ("dynamodb", "aws"),
    ("s3", "aws"),
    ("iam", "aws"),
];

fn rules_text(service: &str, family: &str) -> String {
    format!(
        r#"
[settings]
clock_skew = "15m"
trusted_proxies = ["127.0.0.1/32"]
unsigned_body = "allow"

[[account]]
id = "1001"
api_source_cidrs = ["127.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"]

[[account]]
id = "1002"
api_source_cidrs = ["198.51.100.0/24"]
allowlist_mode = "shadow"

[[user]]
name = "ci"
account = "1001"
api_source_cidrs = ["127.0.0.0/16", "2001:db8::/48"]

[[access_key]]
id = "{VECTOR_KEY_ID}"
account = "1001"
user = "ci"
secret = "{VECTOR_SECRET}"
status = "active"

[[access_key]]
id = "{AWS_KEY_ID}"
account = "1001"
secret = "{AWS_SECRET}"
status = "active"

[[access_key]]
id = "{FUZZ_KEY_ID}"
account = "1002"
secret = "{FUZZ_SECRET}"
status = "active"
temporary = true
expires = 2026-12-01T00:00:00Z
security_token = "fuzz-token"

[[access_key]]
id = "{RSA_KEY_ID}"
account = "1001"
public_key = """{RSA_PUBLIC_KEY}"""
status = "active"

[[access_key]]
id = "FuzzDisabledKeyId"
account = "1001"
secret = "fuzz-disabled-secret"
status = "disabled"

[[leaked_key]]
id = "{VECTOR_KEY_ID}"
reason = "fuzz"

[[leaked_key]]
id = "{AWS_KEY_ID}"
mode = "shadow"

[[service]]
name = "ecs"
actions = ["DeleteInstance", "RunInstances"]

[[service]]
name = "ram"
actions = ["*"]

[[service]]
name = "s3"
actions = ["DeleteObject", "PutObject", "Unknown"]

[[service]]
name = "iam"
actions = ["Create*", "Unknown"]

[[service]]
name = "cs"
actions = ["DeleteCluster"]

[[service]]
name = "sts"
actions = []

[[service]]
name = "ec2"
actions = ["RunInstances", "Unknown"]

[[service]]
name = "dynamodb"
actions = ["DeleteTable"]

[[route]]
path_prefix = "/"
service = "{service}"
upstream = "http://127.0.0.1:9"
signatures = "{family}"
"#
    )
}

fn load_options() -> LoadOptions {
    LoadOptions {
        // Names starting with UNSET are missing, so that branch is reachable too.
        env: Arc::new(|name| (!name.starts_with("UNSET")).then(|| format!("fuzz-env-{name}"))),
        upstream_override: None,
    }
}

/// A directory that does not exist: `secret_file`-style references in fuzzed rules resolve
/// against it and fail cleanly (unless absolute).
fn no_dir() -> &'static Path {
    Path::new("akgate-fuzz-no-such-rules-dir")
}

/// One snapshot per entry of [`SERVICES`], built once.
fn snapshots() -> &'static [Snapshot] {
    static SNAPSHOTS: OnceLock<Vec<Snapshot>> = OnceLock::new();
    SNAPSHOTS.get_or_init(|| {
        SERVICES
            .iter()
            .map(|(service, family)| {
                let files = [("rules.toml".to_string(), rules_text(service, family))];
                match load_sources(no_dir(), files, &load_options(), &CheckOptions::default()) {
                    Ok(s) => s,
                    Err(e) => panic!("the fuzz harness's own rules do not load: {e}"),
                }
            })
            .collect()
    })
}

/// The key a parsed request is verified with: its own if the rule set has it, else a key of the
/// right kind, so that every parsed request gets as far as the canonicalisation.
fn key_for<'s>(snap: &'s Snapshot, auth: &ParsedAuth<'_>) -> &'s AccessKey {
    let rsa = auth.scheme == Scheme::Acs3RsaSha256;
    if let Some(k) = snap.key(&auth.key_id)
        && matches!(k.material, KeyMaterial::RsaPublicKey(_)) == rsa
    {
        return k;
    }
    let id = if rsa { RSA_KEY_ID } else { FUZZ_KEY_ID };
    snap.key(id)
        .unwrap_or_else(|| panic!("the harness rule set lost key {id}"))
}

// ---------------------------------------------------------------------------------------------
// Targets

/// What one input reached.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    /// The input decoded to a request (or, for rules, was text).
    pub decoded: bool,
    /// `auth::parse` accepted it (or the rule set loaded).
    pub parsed: bool,
    /// The signature verified (or the decision let the request through).
    pub verified: bool,
    /// Sign→verify round trips checked.
    pub round_trips: usize,
}

/// `auth_parse`: every scheme's `Authorization` / parameter parser, the action readers and the
/// action-consistency check.
pub fn run_auth_parse(data: &[u8]) -> Reached {
    let mut reached = Reached::default();
    let Some(req) = decode_request(data) else {
        return reached;
    };
    reached.decoded = true;
    let view = req.view();
    // What the error shape and the S3 route would read, whatever the scheme.
    let _ = sigv4::s3_action(&view);
    for service in [
        "s3",
        "sts",
        "dynamodb",
        "lambda",
        "bedrock",
        "codebuild",
        "x",
    ] {
        let _ = sigv4::action_of(&view, service);
    }
    let _ = rpc1::looks_signed(&view);
    let Ok(auth) = auth::parse(&view) else {
        return reached;
    };
    reached.parsed = true;
    check_parsed(&view, &auth);
    let _ = auth::check_action_consistency(&view, &auth);
    reached
}

/// Properties of any successfully parsed credential.
fn check_parsed(view: &RequestView<'_>, auth: &ParsedAuth<'_>) {
    assert!(!auth.key_id.is_empty(), "parsed with an empty key id");
    if auth.scheme.family() == auth::Family::Alibaba {
        assert!(
            auth.nonce.is_some() || auth.scheme == Scheme::RoaHmacSha1,
            "{:?} parsed without a nonce",
            auth.scheme
        );
    }
    if let Credential::SigV4(c) = &auth.credential {
        // The scope's parts are what the signing key is derived from.
        let _ = (c.date(), c.region(), c.service());
        assert_eq!(
            c.presigned,
            auth.scheme == Scheme::AwsSigV4Presigned,
            "presigned flag disagrees with the scheme"
        );
    }
    let _ = view.content_type();
}

/// `canonicalize`: parse, then verify against a fixed key with a transcript and build the string
/// to sign; then sign the request's parts with each of akgate's signers and check that the
/// result, read back as the gateway would read it, verifies.
pub fn run_canonicalize(data: &[u8]) -> Reached {
    let mut reached = Reached::default();
    let Some(req) = decode_request(data) else {
        return reached;
    };
    reached.decoded = true;
    let view = req.view();
    if let Ok(auth) = auth::parse(&view) {
        reached.parsed = true;
        let snap = &snapshots()[0];
        let key = key_for(snap, &auth);
        let mut transcript = Vec::new();
        let result = auth.verify(&view, key, Some(&mut transcript));
        let sts = auth.string_to_sign(&transcript);
        match result {
            Ok(()) => reached.verified = true,
            Err(Rejection::SignatureDoesNotMatch { string_to_sign }) => {
                // The error tells the client the gateway's string to sign; it must be the one
                // the transcript (what `explain` shows) implies.
                assert_eq!(
                    string_to_sign, sts,
                    "SignatureDoesNotMatch reports a different string to sign than the transcript"
                );
            }
            Err(_) => {}
        }
    }
    reached.round_trips = round_trips(&req);
    reached
}

/// Signs `req`'s method, path, query, headers and body with akgate's own signers, one scheme at
/// a time, and asserts that each signed request verifies once read back off the wire. Returns the
/// number of round trips that got as far as verification.
fn round_trips(req: &WireRequest) -> usize {
    let mut checked = 0;
    let secret = FUZZ_SECRET.as_bytes();
    let host = req.host.clone().unwrap_or_else(|| "fuzz.example".into());
    let base: Vec<(String, String)> = req
        .header_pairs()
        .into_iter()
        .filter(|(n, _)| n != "authorization" && n != "host")
        .collect();

    // ACS3-HMAC-SHA256.
    {
        let mut h = base.clone();
        keep_single(&mut h, "x-acs-action", "FuzzAction");
        keep_single(&mut h, "x-acs-date", "2026-11-22T14:47:22Z");
        keep_single(&mut h, "x-acs-signature-nonce", "fuzz-nonce");
        keep_single(&mut h, "x-acs-version", "2014-05-26");
        dedup(&mut h, "x-acs-security-token");
        h.push(("host".into(), host.clone()));
        acs3::sign(
            &req.method,
            &req.path,
            &req.query,
            &mut h,
            &req.body,
            FUZZ_KEY_ID,
            secret,
        );
        checked += check_round_trip(
            Scheme::Acs3HmacSha256,
            &req.method,
            &req.path,
            &req.query,
            &h,
            &req.body,
        );
    }

    // ROA v1.
    {
        let mut h = base.clone();
        keep_single(&mut h, "x-acs-action", "FuzzAction");
        keep_single(&mut h, "date", "Sun, 22 Nov 2026 14:55:12 GMT");
        for name in ["accept", "content-type"] {
            dedup(&mut h, name);
        }
        let acs: Vec<String> = h
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| n.starts_with("x-acs-"))
            .collect();
        for name in acs {
            dedup(&mut h, &name);
        }
        h.push(("host".into(), host.clone()));
        roa1::sign(
            &req.method,
            &req.path,
            &req.query,
            &mut h,
            &req.body,
            FUZZ_KEY_ID,
            secret,
        );
        checked += check_round_trip(
            Scheme::RoaHmacSha1,
            &req.method,
            &req.path,
            &req.query,
            &h,
            &req.body,
        );
    }

    // RPC v1: the request's query parameters (and form body, when it has one) plus the required
    // ones, each name once, sent to `/`.
    {
        use akgate::auth::encoding::{percent_decode, percent_encode, raw_pairs};
        // The verifier reads the first content type of the headers actually sent.
        let form = base
            .iter()
            .find(|(n, _)| n == "content-type")
            .is_some_and(|(_, ct)| {
                ct.to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            });
        let mut params: Vec<(String, String)> = vec![
            ("AccessKeyId".into(), FUZZ_KEY_ID.into()),
            ("Action".into(), "FuzzAction".into()),
            ("SignatureMethod".into(), "HMAC-SHA1".into()),
            ("SignatureVersion".into(), "1.0".into()),
            ("SignatureNonce".into(), "fuzz-nonce".into()),
            ("Timestamp".into(), "2026-11-22T14:55:12Z".into()),
            ("Version".into(), "2014-05-26".into()),
        ];
        let text = |b: Cow<'_, [u8]>| String::from_utf8(b.into_owned()).ok();
        for (k, v) in raw_pairs(&req.query) {
            let (Some(k), Some(v)) = (text(percent_decode(k, true)), text(percent_decode(v, true)))
            else {
                continue;
            };
            if k != "Signature" && !params.iter().any(|(n, _)| *n == k) {
                params.push((k, v));
            }
        }
        let borrowed: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let signature = rpc1::sign(&req.method, &borrowed, FUZZ_SECRET);
        params.push(("Signature".into(), signature));
        let encoded = params
            .iter()
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut h = base.clone();
        h.push(("host".into(), host.clone()));
        let (query, body) = if form {
            (String::new(), encoded.into_bytes())
        } else {
            (encoded, req.body.clone())
        };
        checked += check_round_trip(Scheme::RpcHmacSha1, &req.method, "/", &query, &h, &body);
    }

    // SigV4 in the Authorization header, for a service picked by the input.
    {
        let service = ["s3", "sts", "ec2", "dynamodb", "lambda", "iam"][req.body.len() % 6];
        let mut h = base;
        dedup(&mut h, "x-amz-security-token");
        h.push(("host".into(), host));
        sigv4::sign_headers(
            &req.method,
            &req.path,
            &req.query,
            &mut h,
            &req.body,
            FUZZ_KEY_ID,
            secret,
            "us-east-1",
            service,
            "20261122T144841Z",
        );
        checked += check_round_trip(
            Scheme::AwsSigV4,
            &req.method,
            &req.path,
            &req.query,
            &h,
            &req.body,
        );
    }
    checked
}

/// Leaves exactly one `name` header: the request's own if it had exactly one non-blank value,
/// else `default`.
fn keep_single(h: &mut Vec<(String, String)>, name: &str, default: &str) {
    let values: Vec<&String> = h
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v)
        .collect();
    if values.len() == 1 && !values[0].trim().is_empty() {
        return;
    }
    h.retain(|(n, _)| n != name);
    h.push((name.into(), default.into()));
}

/// Keeps only the first `name` header.
fn dedup(h: &mut Vec<(String, String)>, name: &str) {
    let mut seen = false;
    h.retain(|(n, _)| {
        if n != name {
            return true;
        }
        !std::mem::replace(&mut seen, true)
    });
}

/// Sends a signed request through the wire model and verifies it with the key it was signed
/// with. A request the parser refuses, or reads as another scheme, is not a round trip (the
/// signers accept inputs no SDK sends, such as an `Action` parameter that is not an operation
/// name); one it accepts as `scheme` must verify. Returns 1 when the verifier ran.
fn check_round_trip(
    scheme: Scheme,
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> usize {
    let wire = encode_request(method, path, query, headers, body);
    let Some(req) = decode_request(&wire) else {
        return 0;
    };
    if req.path != path || req.query != query {
        // The target did not survive as a URI (e.g. an authority-form one rewritten as a path):
        // not a request a client could send this way.
        return 0;
    }
    let view = req.view();
    let Ok(auth) = auth::parse(&view) else {
        return 0;
    };
    if auth.scheme != scheme {
        // Another scheme's markers among the fuzzed parts (say, X-Amz-Signature in an RPC
        // query) take precedence; the request is then refused as that scheme's.
        return 0;
    }
    let snap = &snapshots()[0];
    let Some(key) = snap.key(FUZZ_KEY_ID) else {
        panic!("the harness rule set lost key {FUZZ_KEY_ID}");
    };
    if let Err(e) = auth.verify(&view, key, None) {
        panic!(
            "{scheme:?}: a request signed by akgate does not verify: {e:?}\n--- request ---\n{}",
            String::from_utf8_lossy(&wire)
        );
    }
    1
}

/// `decide`: the whole decision on one of the fixed rule sets. Input: a first line
/// `<peer ip> <service>` (service from the fixed list; anything unknown means the first), then
/// the request.
pub fn run_decide(data: &[u8]) -> Reached {
    let mut reached = Reached::default();
    let (first, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => return reached,
    };
    let first = String::from_utf8_lossy(first);
    let mut words = first.split_whitespace();
    let peer: IpAddr = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let service = words.next().unwrap_or("");
    let index = SERVICES
        .iter()
        .position(|(s, _)| *s == service)
        .unwrap_or(0);
    let Some(req) = decode_request(rest) else {
        return reached;
    };
    reached.decoded = true;
    let snap = &snapshots()[index];
    let view = req.view();
    let nonces = NonceCache::new();
    let d = akgate::decision::decide(snap, &view, peer, NOW, &nonces);
    reached.parsed = d.scheme.is_some();
    if d.result.is_ok() {
        reached.verified = true;
        let (Some(key), Some(_), Some(_)) = (d.key, d.route, d.scheme) else {
            panic!("a request passed without a key, route and scheme: {d:?}");
        };
        // Whatever passed must carry a signature that verifies with the key it was judged by.
        let auth = match auth::parse(&view) {
            Ok(a) => a,
            Err(e) => panic!("a request passed whose signature does not parse: {e:?}"),
        };
        if let Err(e) = auth.verify(&view, key, None) {
            panic!("a request passed whose signature does not verify: {e:?}");
        }
        // The same request again is a replay wherever the scheme carries a nonce.
        let again = akgate::decision::decide(snap, &view, peer, NOW, &nonces);
        match (&auth.nonce, &again.result) {
            (Some(_), Err(Rejection::NonceUsed)) | (None, Ok(())) => {}
            (nonce, result) => {
                panic!("replaying a passed request (nonce {nonce:?}) was decided as {result:?}")
            }
        }
    }
    reached
}

/// `rules_load`: the input is one rule file, or two separated by a NUL byte (which TOML never
/// contains), compiled as `serve` validates and as `check --skip-secrets --allow-empty` does.
pub fn run_rules_load(data: &[u8]) -> Reached {
    let mut reached = Reached::default();
    let text = String::from_utf8_lossy(data);
    reached.decoded = true;
    let mut files: Vec<(String, String)> = Vec::new();
    for (i, part) in text.splitn(2, '\0').enumerate() {
        files.push((format!("{}.toml", ["a", "b"][i]), part.to_string()));
    }
    for check in [
        CheckOptions::default(),
        CheckOptions {
            skip_secrets: true,
            allow_empty: true,
        },
    ] {
        match load_sources(no_dir(), files.clone(), &load_options(), &check) {
            Ok(snap) => {
                reached.parsed = true;
                assert!(!snap.routes.is_empty(), "a rule set loaded without routes");
                assert!(
                    check.allow_empty || !snap.keys.is_empty(),
                    "a rule set loaded without keys"
                );
                for w in &snap.warnings {
                    check_position(&files, &w.file, w.line, w.col);
                }
            }
            Err(e) => {
                assert!(!e.problems.is_empty(), "a refused rule set with no problem");
                for p in &e.problems {
                    check_position(&files, &p.file, p.line, p.col);
                }
                let _ = e.to_string();
            }
        }
    }
    reached
}

/// A problem's position must be inside the file it names (or 0:0 for the whole set).
fn check_position(files: &[(String, String)], file: &str, line: usize, col: usize) {
    let Some((_, text)) = files.iter().find(|(n, _)| n == file) else {
        assert_eq!((line, col), (0, 0), "a problem in unknown file {file}");
        return;
    };
    let lines = text.split('\n').count();
    assert!(
        (1..=lines).contains(&line),
        "{file}:{line}:{col} is past the file's {lines} lines"
    );
    let width = text.split('\n').nth(line - 1).map_or(0, str::len);
    assert!(
        (1..=width + 1).contains(&col),
        "{file}:{line}:{col} is past the line's {width} bytes"
    );
}
