//! How many heap allocations one decision makes, for a typical SDK request through the whole
//! decision (route, parse, key, allowlists, time, body hash, signature, nonce, risk). The decision
//! runs per request: every allocation here is paid on every call.
//!
//! The ceiling below is the count today; lower it when an allocation goes, never raise it without
//! saying in the commit which one was added and why the request needs it.

use akgate::auth::acs3;
use akgate::decision::decide;
use akgate::policy::NonceCache;
use akgate::rules::{LoadOptions, load_dir};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const KEY_ID: &str = "LTAI5tAllocTestKey0001";
const SECRET: &str = "alloc-test-secret-0123456789";

/// Allocations one allowed decision may make: none. A request whose query values need
/// re-encoding, or with more than 16 parameters, costs one each; this one has neither.
const CEILING: u64 = 0;

fn headers_for(nonce: usize, now: i64) -> HeaderMap {
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), "ecs.test".into()),
        ("x-acs-action".into(), "DescribeRegions".into()),
        ("x-acs-version".into(), "2014-05-26".into()),
        ("x-acs-date".into(), akgate::time::format_iso8601_utc(now)),
        ("x-acs-signature-nonce".into(), format!("nonce-{nonce:08}")),
        ("accept".into(), "application/json".into()),
        (
            "user-agent".into(),
            "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2".into(),
        ),
    ];
    acs3::sign(
        "POST",
        "/",
        "RegionId=cn-hangzhou&AcceptLanguage=zh-CN",
        &mut headers,
        b"",
        KEY_ID,
        SECRET.as_bytes(),
    );
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(&v).unwrap(),
        );
    }
    map
}

#[test]
fn one_allowed_decision_allocates_no_more_than_the_ceiling() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("keys.toml"),
        format!(
            "[[account]]\nid = \"1\"\napi_source_cidrs = [\"10.0.0.0/8\", \"192.0.2.0/24\"]\n\
             [[user]]\nname = \"u\"\naccount = \"1\"\napi_source_cidrs = [\"192.0.2.7/32\"]\n\
             [[access_key]]\nid = \"{KEY_ID}\"\nuser = \"u\"\naccount = \"1\"\nsecret = \"{SECRET}\"\nstatus = \"active\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("routes.toml"),
        "[[service]]\nname = \"ecs\"\nactions = [\"DeleteInstance\"]\n\
         [[route]]\nhost = \"ecs.test\"\nservice = \"ecs\"\nupstream = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    let snap = load_dir(dir.path(), &LoadOptions::default()).unwrap();
    let nonces = NonceCache::new();
    let now = akgate::time::parse_iso8601_utc("2026-11-23T12:00:00Z").unwrap();
    let peer: IpAddr = "192.0.2.7".parse().unwrap();
    const N: usize = 200;
    let requests: Vec<HeaderMap> = (0..=N).map(|i| headers_for(i, now)).collect();
    let query = "RegionId=cn-hangzhou&AcceptLanguage=zh-CN";
    let view = |h| akgate::auth::RequestView {
        method: "POST",
        path: "/",
        query,
        host: Some("ecs.test"),
        headers: h,
        body: b"",
    };
    // Warm-up: one decision, and a nonce table already grown to its working size, as it is in a
    // gateway that has been serving for a while (an expired entry's slot is reused, and sweeping
    // does not shrink the table). Growing it is amortised and depends on the shard count, so it
    // is kept out of the count.
    let first = decide(&snap, &view(&requests[0]), peer, now, &nonces);
    assert!(first.result.is_ok(), "{:?}", first.result);
    drop(first);
    for i in 0..20 * N {
        nonces.check_and_record("warm-up", &i.to_string(), now - 10, now - 5);
    }
    nonces.evict_expired(now);

    let _profiler = dhat::Profiler::builder().testing().build();
    let before = dhat::HeapStats::get();
    let mut allowed = 0;
    for h in &requests[1..] {
        let d = decide(&snap, &view(h), peer, now, &nonces);
        allowed += usize::from(d.result.is_ok());
    }
    let after = dhat::HeapStats::get();
    assert_eq!(allowed, N);
    let per_decision = (after.total_blocks - before.total_blocks) as f64 / N as f64;
    eprintln!("heap allocations per decision: {per_decision:.2}");
    assert!(
        per_decision <= CEILING as f64,
        "one decision makes {per_decision:.2} heap allocations; the ceiling is {CEILING}"
    );
}
