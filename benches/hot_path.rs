//! Hot-path micro-benchmarks: ACS3, RPC v1 and SigV4 verification of typical SDK requests,
//! allowlist lookup, nonce check-and-record and the whole decision (with a cold and with a warm
//! nonce cache: see [`decision`]). Run with `cargo bench`; medians are what matter on these noisy
//! machines.
//!
//! With `HOT_PATH_LOOP=<name>:<count>` (names: acs3, rpc, sigv4, decide, nonce; and sha256_1mb,
//! which prints the SHA-256 throughput of sha2 and of ring side by side) the binary instead
//! runs that one operation `count` times in a function named `hot_path::loop_<name>` and exits, for
//! instruction counts that do not depend on the machine's load:
//!
//! ```sh
//! HOT_PATH_LOOP=acs3:10000 valgrind --tool=callgrind --toggle-collect='hot_path::loop_*' \
//!     target/release/deps/hot_path-<hash>
//! ```
//!
//! and divide the `Collected` total by `count`.

use akgate::auth::{self, RequestView};
use akgate::decision::decide;
use akgate::policy::NonceCache;
use akgate::policy::allowlist::IpSet;
use akgate::rules::{LoadOptions, Snapshot, load_dir};
use criterion::{BenchmarkId, Criterion, criterion_group};
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::{IpNet, Ipv4Net};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

const KEY_ID: &str = "LTAI5tVectorTestKeyId01";
const SECRET: &str = "VectorTestSecret0123456789ABCDEF";
const DATE: &str = "2026-11-22T14:47:22Z";

/// The tea-openapi DescribeRegions request from tests/fixtures/signatures.json.
fn sdk_request() -> (HeaderMap, &'static str) {
    let headers = [
        ("accept-encoding", "identity"),
        ("host", "127.0.0.1:33749"),
        ("x-acs-version", "2014-05-26"),
        ("x-acs-action", "DescribeRegions"),
        (
            "user-agent",
            "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2",
        ),
        ("x-acs-date", DATE),
        ("x-acs-signature-nonce", "9c7df97de26575b84649853be7fcb389"),
        ("accept", "application/json"),
        (
            "x-acs-content-sha256",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        ("x-acs-credentials-provider", "static_ak"),
        (
            "authorization",
            "ACS3-HMAC-SHA256 Credential=LTAI5tVectorTestKeyId01,SignedHeaders=accept;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-credentials-provider;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=63275a666fe2896bf5349d53f3ccd67ee83e40e6159203d15855209a1c40b910",
        ),
        ("content-length", "0"),
    ];
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    (
        map,
        "AcceptLanguage=zh-CN&InstanceChargeType=PrePaid&ResourceType=instance",
    )
}

fn view<'a>(headers: &'a HeaderMap, query: &'a str) -> RequestView<'a> {
    RequestView {
        method: "POST",
        path: "/",
        query,
        host: Some("127.0.0.1:33749"),
        headers,
        body: b"",
    }
}

fn snapshot(extra_keys: usize) -> Snapshot {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = format!(
        "[[account]]\nid = \"1\"\napi_source_cidrs = [\"127.0.0.0/8\", \"10.0.0.0/8\"]\n\
         [[access_key]]\nid = \"{KEY_ID}\"\naccount = \"1\"\nsecret = \"{SECRET}\"\nstatus = \"active\"\n"
    );
    for i in 0..extra_keys {
        keys.push_str(&format!("[[access_key]]\nid = \"LTAI5tBENCH{i:012}\"\naccount = \"1\"\nsecret = \"s{i}\"\nstatus = \"active\"\n"));
    }
    std::fs::write(dir.path().join("keys.toml"), keys).unwrap();
    std::fs::write(
        dir.path().join("routes.toml"),
        "[[service]]\nname = \"ecs\"\nactions = [\"DeleteInstance\"]\n[[route]]\npath_prefix = \"/\"\nservice = \"ecs\"\nupstream = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    load_dir(dir.path(), &LoadOptions::default()).unwrap()
}

fn acs3(c: &mut Criterion) {
    let (headers, query) = sdk_request();
    let snap = snapshot(0);
    let key = snap.key(KEY_ID).unwrap();
    let view = view(&headers, query);
    c.bench_function("acs3_parse_and_verify_sdk_request", |b| {
        b.iter(|| {
            let parsed = auth::parse(black_box(&view)).unwrap();
            parsed.verify(&view, key, None).unwrap();
        })
    });
}

/// The whole decision, twice over:
///
/// - `decide_sdk_request` (cold nonce cache): one request, replayed, with a fresh, empty
///   `NonceCache` per decision, so every decision pays the first insert into an empty shard's
///   table (an allocation, and memory not in cache). Kept as it was so the figures stay comparable
///   with earlier runs; a serving gateway never sees it.
/// - `decide_sdk_request_warm`: a pool of requests signed beforehand, each with its own nonce,
///   decided one after the other against a cache whose tables were grown to their working size
///   outside the timed part (as tests/allocations.rs does), with a fresh such cache for each pass
///   through the pool so no nonce is seen twice. This is the cost of a decision in a gateway that
///   has been serving for a while: distinct requests, and nonce tables that no longer grow.
fn decision(c: &mut Criterion) {
    let (headers, query) = sdk_request();
    let now = akgate::time::parse_iso8601_utc(DATE).unwrap();
    let mut group = c.benchmark_group("decide_sdk_request");
    for keys in [1usize, 10_000] {
        let snap = snapshot(keys - 1);
        let view = view(&headers, query);
        group.bench_with_input(BenchmarkId::from_parameter(keys), &keys, |b, _| {
            // A fresh cache per batch keeps the nonce check on its "first use" path, as in real
            // traffic. A small one: the cache is sharded by its bound, and criterion makes many.
            b.iter_batched_ref(
                || NonceCache::with_capacity_limit(1024),
                |nonces| {
                    let d = decide(
                        &snap,
                        black_box(&view),
                        IpAddr::V4(Ipv4Addr::LOCALHOST),
                        now,
                        nonces,
                    );
                    assert!(d.result.is_ok());
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    // Small enough that the pool's requests stay in the CPU caches, as a request just read from
    // its socket is.
    const POOL: usize = 256;
    let requests = signed_sdk_requests(POOL);
    let warm_up: Vec<String> = (0..8 * POOL).map(|n| format!("{n:032x}")).collect();
    let mut group = c.benchmark_group("decide_sdk_request_warm");
    for keys in [1usize, 10_000] {
        let snap = snapshot(keys - 1);
        group.bench_with_input(BenchmarkId::from_parameter(keys), &keys, |b, _| {
            b.iter_custom(|iters| {
                let mut spent = std::time::Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let nonces = warm_nonce_cache(&warm_up);
                    let take = usize::try_from(left).unwrap_or(POOL).min(POOL);
                    let start = std::time::Instant::now();
                    for headers in &requests[..take] {
                        let d = decide(
                            &snap,
                            black_box(&view(headers, query)),
                            IpAddr::V4(Ipv4Addr::LOCALHOST),
                            now,
                            &nonces,
                        );
                        assert!(d.result.is_ok());
                    }
                    spent += start.elapsed();
                    left -= take as u64;
                }
                spent
            })
        });
    }
    group.finish();
}

/// A nonce cache of the gateway's default size as a gateway that has been serving for a while
/// has it: holding other nonces (under another key id, alive for the whole run), eight times as
/// many as the timed part records, so its tables are at their working size and a probe crosses
/// occupied slots.
fn warm_nonce_cache(warm_up: &[String]) -> NonceCache {
    let cache = NonceCache::new();
    for n in warm_up {
        cache.check_and_record("warm-up", n, 0, i64::from(u32::MAX));
    }
    cache
}

fn allowlist(c: &mut Criterion) {
    let mut group = c.benchmark_group("allowlist_lookup");
    let mut x: u32 = 0x9E37_79B9;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    for n in [10usize, 10_000, 100_000] {
        let nets: Vec<IpNet> = (0..n)
            .map(|_| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(next()), 24).unwrap().trunc()))
            .collect();
        let set: IpSet = nets.iter().copied().collect();
        let probes: Vec<IpAddr> = (0..1024)
            .map(|_| IpAddr::V4(Ipv4Addr::from(next())))
            .collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 1023;
                black_box(set.contains(probes[i]))
            })
        });
    }
    group.finish();
}

/// The nonce check of a gateway in its steady state: `live` nonces alive (requests per second ×
/// nonce lifetime), each request recording a fresh one while as many expire, and the 5-second
/// sweep running as in `serve`. 1M is about 1,100 requests/s under the default 15-minute
/// lifetime, or 11,000 under a 90-second `nonce_ttl` with a 45-second `clock_skew`.
fn nonce(c: &mut Criterion) {
    let mut group = c.benchmark_group("nonce_check_and_record");
    for live in [100_000u64, 1_000_000] {
        const PER_SECOND: u64 = 10_000;
        let cache = NonceCache::new();
        let lifetime = (live / PER_SECOND) as i64;
        let mut n: u64 = 0;
        let mut nonce = [b'0'; 32];
        let mut step = |cache: &NonceCache, n: &mut u64| {
            // Hex digits of a counter, unique per request.
            for (i, d) in nonce.iter_mut().rev().take(16).enumerate() {
                *d = b"0123456789abcdef"[((*n >> (4 * i)) & 15) as usize];
            }
            let now = (*n / PER_SECOND) as i64;
            let nonce = std::str::from_utf8(&nonce).expect("hex digits are ASCII");
            black_box(cache.check_and_record(KEY_ID, nonce, now, now + lifetime));
            *n += 1;
            if (*n).is_multiple_of(5 * PER_SECOND) {
                cache.evict_expired(now);
            }
        };
        // Two lifetimes first: the tables at their working size, expired entries being reused.
        for _ in 0..2 * live {
            step(&cache, &mut n);
        }
        group.bench_with_input(BenchmarkId::from_parameter(live), &live, |b, _| {
            b.iter(|| step(&cache, &mut n))
        });
    }
    group.finish();
}

/// An RPC v1 (HMAC-SHA1) DescribeRegions call as aliyun-python-sdk-core sends it: every parameter
/// in the query, GET /.
fn rpc_request() -> (HeaderMap, String) {
    let params = [
        ("AccessKeyId", KEY_ID),
        ("Action", "DescribeRegions"),
        ("Format", "JSON"),
        ("RegionId", "cn-hangzhou"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
        ("SignatureVersion", "1.0"),
        ("Timestamp", DATE),
        ("Version", "2014-05-26"),
    ];
    let sig = auth::rpc1::sign("GET", &params, SECRET);
    let mut query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", auth::encoding::percent_encode(v)))
        .collect();
    query.push(format!(
        "Signature={}",
        auth::encoding::percent_encode(&sig)
    ));
    let mut map = HeaderMap::new();
    for (k, v) in [
        ("accept-encoding", "identity"),
        (
            "user-agent",
            "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/2.13.3 python-requests/2.31.0",
        ),
        ("accept", "application/json"),
    ] {
        map.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    (map, query.join("&"))
}

/// A SigV4 EC2 DescribeInstances query call as botocore sends it (form body, signed headers host,
/// x-amz-date, x-amz-content-sha256, content-type).
fn sigv4_request() -> (HeaderMap, &'static str) {
    const BODY: &str = "Action=DescribeInstances&Version=2016-11-15&MaxResults=10";
    let mut headers = vec![
        (
            "host".to_string(),
            "ec2.us-east-1.amazonaws.com".to_string(),
        ),
        (
            "content-type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        ),
    ];
    auth::sigv4::sign_headers(
        "POST",
        "/",
        "",
        &mut headers,
        BODY.as_bytes(),
        KEY_ID,
        SECRET.as_bytes(),
        "us-east-1",
        "ec2",
        "20261122T144722Z",
    );
    headers.push((
        "user-agent".to_string(),
        "Boto3/1.34.0 md/Botocore#1.34.0 ua/2.0 os/linux#6.1 md/arch#x86_64 lang/python#3.11.7"
            .to_string(),
    ));
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        if k != "host" {
            map.append(
                HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(),
                HeaderValue::from_str(&v).unwrap(),
            );
        }
    }
    (map, BODY)
}

fn rpc(c: &mut Criterion) {
    let (headers, query) = rpc_request();
    let snap = snapshot(0);
    let key = snap.key(KEY_ID).unwrap();
    let view = RequestView {
        method: "GET",
        path: "/",
        query: &query,
        host: Some("ecs.aliyuncs.com"),
        headers: &headers,
        body: b"",
    };
    c.bench_function("rpc_parse_and_verify_sdk_request", |b| {
        b.iter(|| {
            let parsed = auth::parse(black_box(&view)).unwrap();
            parsed.verify(&view, key, None).unwrap();
        })
    });
}

fn sigv4_view<'a>(headers: &'a HeaderMap, body: &'a str) -> RequestView<'a> {
    RequestView {
        method: "POST",
        path: "/",
        query: "",
        host: Some("ec2.us-east-1.amazonaws.com"),
        headers,
        body: body.as_bytes(),
    }
}

fn sigv4(c: &mut Criterion) {
    let (headers, body) = sigv4_request();
    let snap = snapshot(0);
    let key = snap.key(KEY_ID).unwrap();
    let view = sigv4_view(&headers, body);
    c.bench_function("sigv4_parse_and_verify_sdk_request", |b| {
        b.iter(|| {
            let parsed = auth::parse(black_box(&view)).unwrap();
            parsed.verify(&view, key, None).unwrap();
        })
    });
}

/// `count` copies of the SDK request, each with its own nonce (and so its own signature), so the
/// decisions in a loop all take the first-use path of the nonce cache.
fn signed_sdk_requests(count: usize) -> Vec<HeaderMap> {
    let (template, query) = sdk_request();
    (0..count)
        .map(|i| {
            let mut headers: Vec<(String, String)> = template
                .iter()
                .filter(|(k, _)| *k != "authorization" && *k != "host")
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
                .map(|(k, v)| {
                    if k == "x-acs-signature-nonce" {
                        (k, format!("{i:032x}"))
                    } else {
                        (k, v)
                    }
                })
                .collect();
            headers.push(("host".into(), "127.0.0.1:33749".into()));
            auth::acs3::sign(
                "POST",
                "/",
                query,
                &mut headers,
                b"",
                KEY_ID,
                SECRET.as_bytes(),
            );
            let mut map = HeaderMap::new();
            for (k, v) in headers {
                if k != "host" {
                    map.append(
                        HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(),
                        HeaderValue::from_str(&v).unwrap(),
                    );
                }
            }
            map
        })
        .collect()
}

#[inline(never)]
fn loop_acs3(view: &RequestView<'_>, key: &akgate::rules::AccessKey, count: usize) {
    for _ in 0..count {
        let parsed = auth::parse(black_box(view)).unwrap();
        parsed.verify(view, key, None).unwrap();
    }
}

#[inline(never)]
fn loop_decide(snap: &Snapshot, requests: &[HeaderMap], query: &str, nonces: &NonceCache) {
    let now = akgate::time::parse_iso8601_utc(DATE).unwrap();
    for headers in requests {
        let d = decide(
            snap,
            black_box(&view(headers, query)),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            now,
            nonces,
        );
        assert!(d.result.is_ok());
    }
}

#[inline(never)]
fn loop_nonce(cache: &NonceCache, nonces: &[String]) {
    for n in nonces {
        black_box(cache.check_and_record(KEY_ID, n, 0, 900));
    }
}

/// The `HOT_PATH_LOOP` mode (see the top of this file).
fn run_loop(spec: &str) {
    let (name, count) = spec.split_once(':').expect("HOT_PATH_LOOP=<name>:<count>");
    let count: usize = count.parse().expect("count");
    let snap = snapshot(0);
    let key = snap.key(KEY_ID).unwrap();
    match name {
        "acs3" => {
            let (headers, query) = sdk_request();
            loop_acs3(&view(&headers, query), key, count);
        }
        "rpc" => {
            let (headers, query) = rpc_request();
            let view = RequestView {
                method: "GET",
                path: "/",
                query: &query,
                host: Some("ecs.aliyuncs.com"),
                headers: &headers,
                body: b"",
            };
            loop_acs3(&view, key, count);
        }
        "sigv4" => {
            let (headers, body) = sigv4_request();
            loop_acs3(&sigv4_view(&headers, body), key, count);
        }
        "decide" => {
            let (_, query) = sdk_request();
            let requests = signed_sdk_requests(count);
            loop_decide(&snap, &requests, query, &NonceCache::new());
        }
        "nonce" => {
            let nonces: Vec<String> = (0..count).map(|n| format!("{n:032x}")).collect();
            loop_nonce(&NonceCache::new(), &nonces);
        }
        "sha256_1mb" => {
            // Which SHA-256 is faster here: sha2 (SHA-NI when the CPU has it, chosen at run
            // time) or ring's. Wall-clock, so only a side-by-side comparison means anything.
            use sha2::Digest;
            let data = vec![0x5au8; 1 << 20];
            for _ in 0..3 {
                let t = std::time::Instant::now();
                for _ in 0..count {
                    black_box(sha2::Sha256::digest(black_box(&data)));
                }
                let sha2 = t.elapsed();
                let t = std::time::Instant::now();
                for _ in 0..count {
                    black_box(ring::digest::digest(
                        &ring::digest::SHA256,
                        black_box(&data),
                    ));
                }
                let ring = t.elapsed();
                let mbps = |d: std::time::Duration| count as f64 / d.as_secs_f64();
                println!(
                    "SHA-256 of 1 MB: sha2 {:.0} MB/s, ring {:.0} MB/s",
                    mbps(sha2),
                    mbps(ring)
                );
            }
        }
        other => panic!("unknown HOT_PATH_LOOP {other}"),
    }
}

criterion_group!(benches, acs3, rpc, sigv4, decision, allowlist, nonce);

fn main() {
    if let Ok(spec) = std::env::var("HOT_PATH_LOOP") {
        run_loop(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
