//! The SDK requests captured in tests/fixtures/signatures.json (a copy of
//! shared/vectors/signatures.json), and running the decision on them.

use akgate::auth::RequestView;
use akgate::decision::decide;
use akgate::error::Rejection;
use akgate::policy::NonceCache;
use akgate::rules::Snapshot;
use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use std::net::IpAddr;

/// One captured request, as received on the wire, with what the SDK expected.
#[derive(Clone, Debug)]
pub struct Vector {
    pub id: String,
    pub scheme: String,
    pub method: String,
    pub path: String,
    pub query: String,
    /// Original case and order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub key_id: String,
    pub secret: String,
    /// RSA vectors: the PEM public key.
    pub public_key: Option<String>,
    /// SigV4 vectors: the signing service (empty otherwise).
    pub service: String,
    pub action: String,
    /// From the independent reference verifier (empty where it records none).
    pub canonical_request: String,
    pub string_to_sign: String,
}

pub fn all() -> Vec<Vector> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/signatures.json"
    ))
    .unwrap();
    let all: Vec<Value> = serde_json::from_str(&text).unwrap();
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    all.iter()
        .map(|v| Vector {
            id: s(&v["id"]),
            scheme: s(&v["scheme"]),
            method: s(&v["method"]),
            path: s(&v["path"]),
            query: s(&v["query"]),
            headers: v["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| (s(&h[0]), s(&h[1])))
                .collect(),
            body: base64::engine::general_purpose::STANDARD
                .decode(s(&v["body"]))
                .unwrap(),
            key_id: s(&v["access_key_id"]),
            secret: s(&v["access_key_secret"]),
            public_key: v["public_key"].as_str().map(String::from),
            service: s(&v["aws_service"]),
            action: s(&v["expected"]["action"]),
            canonical_request: s(&v["derived"]["canonical_request"]),
            string_to_sign: s(&v["derived"]["string_to_sign"]),
        })
        .collect()
}

pub fn header<'v>(v: &'v Vector, name: &str) -> Option<&'v str> {
    v.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The headers as a verifier receives them, and the Host among them.
pub fn header_map(headers: &[(String, String)]) -> (HeaderMap, Option<String>) {
    let mut map = HeaderMap::new();
    let mut host = None;
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("host") {
            host = Some(v.clone());
        }
        map.append(
            HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(),
            HeaderValue::from_bytes(v.as_bytes()).unwrap(),
        );
    }
    (map, host)
}

/// Runs the decision (with an empty nonce cache); returns the verdict and the action it read.
pub fn decide_on(snap: &Snapshot, v: &Vector, now: i64) -> (Result<(), Rejection>, Option<String>) {
    let (headers, host) = header_map(&v.headers);
    let view = RequestView {
        method: &v.method,
        path: &v.path,
        query: &v.query,
        host: host.as_deref(),
        headers: &headers,
        body: &v.body,
    };
    let d = decide(
        snap,
        &view,
        "127.0.0.1".parse::<IpAddr>().unwrap(),
        now,
        &NonceCache::new(),
    );
    (d.result, d.action.map(|a| a.into_owned()))
}

pub fn run(snap: &Snapshot, v: &Vector, now: i64) -> Result<(), Rejection> {
    decide_on(snap, v, now).0
}

/// Replaces byte `i` of `s` with a different letter.
pub fn flip(s: &str, i: usize) -> String {
    let mut b = s.as_bytes().to_vec();
    b[i] = if b[i] == b'Z' { b'Y' } else { b'Z' };
    String::from_utf8_lossy(&b).into_owned()
}
