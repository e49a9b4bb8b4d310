//! Hot-path micro-benchmarks: ACS3 verification of a typical SDK request, allowlist lookup, nonce
//! check-and-record and the whole decision. Run with `cargo bench`; medians are what matter on
//! these noisy machines.

use akgate::auth::{self, RequestView};
use akgate::decision::decide;
use akgate::policy::NonceCache;
use akgate::policy::allowlist::IpSet;
use akgate::rules::{LoadOptions, Snapshot, load_dir};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
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

fn decision(c: &mut Criterion) {
    let (headers, query) = sdk_request();
    let now = akgate::time::parse_iso8601_utc(DATE).unwrap();
    let mut group = c.benchmark_group("decide_sdk_request");
    for keys in [1usize, 10_000] {
        let snap = snapshot(keys - 1);
        let view = view(&headers, query);
        group.bench_with_input(BenchmarkId::from_parameter(keys), &keys, |b, _| {
            // A fresh cache per batch keeps the nonce check on its "first use" path, as in real traffic.
            b.iter_batched_ref(
                NonceCache::new,
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

fn nonce(c: &mut Criterion) {
    let cache = NonceCache::new();
    let mut n: u64 = 0;
    c.bench_function("nonce_check_and_record", |b| {
        b.iter(|| {
            n += 1;
            let nonce = format!("{n:032x}");
            black_box(cache.check_and_record(KEY_ID, &nonce, 0, 900));
        })
    });
}

criterion_group!(benches, acs3, decision, allowlist, nonce);
criterion_main!(benches);
