//! A bounded soak: minutes of sustained signed traffic on 127.0.0.1 (every request with a fresh
//! nonce, so the replay cache is flooded; some replays, bad signatures and HTTP/2 mixed in), then
//! checks that the gateway's memory stayed flat, no file descriptor leaked and the nonce cache
//! stayed within its bound. `AKGATE_SOAK_SECS` sets the length (default 120 s).
//!
//! It measures nothing against a clock: the only assertions are on bounds and leaks.

mod common;

use common::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    replay_refused: AtomicU64,
    bad_sig_refused: AtomicU64,
    overloaded: AtomicU64,
    unexpected: AtomicU64,
}

/// One client: a keep-alive HTTP/1.1 connection (or HTTP/2 for `h2`), sending until `until`.
async fn client(proxy: SocketAddr, worker: usize, until: Instant, tally: Arc<Tally>) {
    use http_body_util::BodyExt;
    let h2 = worker % 4 == 3;
    let mut n = 0u64;
    'reconnect: while Instant::now() < until {
        let Ok(stream) = tokio::net::TcpStream::connect(proxy).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let io = hyper_util::rt::TokioIo::new(stream);
        enum Sender {
            H1(hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>),
            H2(hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>),
        }
        let mut sender = if h2 {
            let Ok((s, c)) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
            else {
                continue;
            };
            tokio::spawn(c);
            Sender::H2(s)
        } else {
            let Ok((s, c)) = hyper::client::conn::http1::handshake(io).await else {
                continue;
            };
            tokio::spawn(c);
            Sender::H1(s)
        };
        let mut last_good: Option<Req> = None;
        while Instant::now() < until {
            n += 1;
            // Connection churn, so that a descriptor leaked per connection would show.
            if n.is_multiple_of(200) {
                continue 'reconnect;
            }
            // 1 in 20 a replay of the previous good request, 1 in 20 a bad signature.
            let (req, expect) = match (n % 20, &last_good) {
                (7, Some(prev)) => (prev.clone(), "SignatureNonceUsed"),
                (13, _) => (
                    signed(
                        "127.0.0.1",
                        "DescribeRegions",
                        "",
                        (ALICE.0, "wrong"),
                        b"",
                        0,
                    ),
                    "SignatureDoesNotMatch",
                ),
                _ => {
                    let r = signed("127.0.0.1", "DescribeRegions", "", ALICE, b"k=v", 0);
                    last_good = Some(r.clone());
                    (r, "OK")
                }
            };
            let mut b = http::Request::builder()
                .method(req.method.as_str())
                .uri(if h2 {
                    format!("http://127.0.0.1{}", req.path_and_query)
                } else {
                    req.path_and_query.clone()
                });
            for (k, v) in &req.headers {
                if h2 && k == "host" {
                    continue;
                }
                b = b.header(k.as_str(), v.as_str());
            }
            let http_req = b
                .body(http_body_util::Full::new(bytes::Bytes::from(req.body)))
                .unwrap();
            let sent = match &mut sender {
                Sender::H1(s) => s.send_request(http_req).await,
                Sender::H2(s) => s.send_request(http_req).await,
            };
            let Ok(resp) = sent else {
                continue 'reconnect;
            };
            let status = resp.status().as_u16();
            let Ok(body) = resp.into_body().collect().await else {
                continue 'reconnect;
            };
            let body = body.to_bytes();
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["Code"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let counter = match (status, expect, code.as_str()) {
                (200, "OK", _) => &tally.ok,
                (400, "SignatureNonceUsed", "SignatureNonceUsed") => &tally.replay_refused,
                (400, "SignatureDoesNotMatch", "SignatureDoesNotMatch") => &tally.bad_sig_refused,
                (503, _, "ServiceUnavailable") => &tally.overloaded,
                _ => {
                    eprintln!("unexpected: {status} {code} for {expect}");
                    &tally.unexpected
                }
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_load_keeps_memory_fds_and_nonce_cache_bounded() {
    let secs: u64 = std::env::var("AKGATE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    // Far above what this load needs: the cache must stay small because entries expire, not
    // because it hits its bound (that fail-closed path is tested in tests/lifecycle.rs).
    const MAX_NONCES: usize = 1_000_000;
    const CLIENTS: usize = 16;
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let hang = hanging_upstream().await;
    write_rules(dir.path(), up.addr, hang);
    // Short lifetimes so that the cache reaches a steady state within the warm-up.
    std::fs::write(
        dir.path().join("settings.toml"),
        "[settings]\nclock_skew = \"5s\"\nnonce_ttl = \"5s\"\nmax_body_bytes = 65536\nupstream_timeout = \"5s\"\n",
    )
    .unwrap();
    let nonces = MAX_NONCES.to_string();
    let gw = Akgate::start(
        dir.path(),
        "127.0.0.1:0",
        &["--audit-log", "/dev/null", "--max-nonces", &nonces],
    );
    let pid = gw.pid();
    let fds_idle = open_fds(pid);
    let rss_idle = rss_kib(pid);

    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let tally = Arc::new(Tally::default());
    let workers: Vec<_> = (0..CLIENTS)
        .map(|w| tokio::spawn(client(gw.proxy, w, until, tally.clone())))
        .collect();

    // Baseline after a warm-up long enough for the nonce cache (and allocator) to fill.
    let warmup = Duration::from_secs((secs / 4).clamp(5, 30));
    tokio::time::sleep(warmup).await;
    let rss_warm = rss_kib(pid);
    let fds_warm = open_fds(pid);
    let mut fds_max = fds_warm;
    let mut rss_max = rss_warm;
    let mut nonce_max = 0.0f64;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(2)).await;
        rss_max = rss_max.max(rss_kib(pid));
        fds_max = fds_max.max(open_fds(pid));
        let m = String::from_utf8(admin_get(gw.admin, "/metrics").await.body.to_vec()).unwrap();
        if let Some(n) = metric(&m, "akgate_nonce_cache_entries", &[]) {
            nonce_max = nonce_max.max(n);
        }
    }
    for w in workers {
        w.await.unwrap();
    }
    let rss_end = rss_kib(pid);
    // Client connections close; the gateway's side follows. What stays is the upstream pool's
    // idle keep-alive connections, at most one per concurrent client.
    let fds_settled = eventually(Duration::from_secs(10), || async {
        open_fds(pid) <= fds_idle + CLIENTS + 2
    })
    .await;
    let fds_end = open_fds(pid);

    let total: u64 = [
        &tally.ok,
        &tally.replay_refused,
        &tally.bad_sig_refused,
        &tally.overloaded,
        &tally.unexpected,
    ]
    .iter()
    .map(|c| c.load(Ordering::Relaxed))
    .sum();
    eprintln!(
        "soak: {secs} s, {total} requests ({:.0}/s): {} ok, {} replays refused, {} bad signatures refused, {} 503, {} unexpected; \
         RSS idle {rss_idle} KiB, after warm-up {rss_warm} KiB, max {rss_max} KiB, end {rss_end} KiB; \
         fds idle {fds_idle}, under load {fds_warm}..{fds_max}, after {fds_end}; nonce cache max {nonce_max} (bound {MAX_NONCES})",
        total as f64 / secs as f64,
        tally.ok.load(Ordering::Relaxed),
        tally.replay_refused.load(Ordering::Relaxed),
        tally.bad_sig_refused.load(Ordering::Relaxed),
        tally.overloaded.load(Ordering::Relaxed),
        tally.unexpected.load(Ordering::Relaxed),
    );

    assert_eq!(tally.unexpected.load(Ordering::Relaxed), 0);
    assert!(
        tally.ok.load(Ordering::Relaxed) > 1000,
        "too little traffic to judge"
    );
    assert!(tally.replay_refused.load(Ordering::Relaxed) > 0);
    assert!(tally.bad_sig_refused.load(Ordering::Relaxed) > 0);
    assert_eq!(tally.overloaded.load(Ordering::Relaxed), 0);
    // Memory flat after the warm-up: within 25% (and 16 MiB of slack for allocator noise).
    assert!(
        rss_max <= rss_warm + (rss_warm / 4).max(16 * 1024),
        "RSS grew under steady load: {rss_warm} KiB after warm-up, {rss_max} KiB at most"
    );
    assert!(
        fds_max <= fds_warm + CLIENTS + 4,
        "file descriptors grew under steady load: {fds_warm} after warm-up, {fds_max} at most"
    );
    assert!(
        fds_settled,
        "file descriptors leaked: {fds_idle} idle, {fds_end} after the load"
    );
    // A nonce lives about 6 s here (nonce_ttl 5 s + 1, swept every 5 s): the cache holds at
    // most ~11 s of fresh nonces, whatever the length of the run.
    let per_sec = tally.ok.load(Ordering::Relaxed) as f64 / secs as f64;
    assert!(nonce_max > 0.0, "the nonce gauge never reported");
    assert!(
        nonce_max <= per_sec * 20.0 + 1000.0,
        "nonce cache not evicting: {nonce_max} entries at {per_sec:.0} fresh nonces/s"
    );
    // Still serving normally.
    assert_eq!(
        send(
            gw.proxy,
            &signed("127.0.0.1", "DescribeRegions", "", ALICE, b"", 0)
        )
        .await
        .status,
        200
    );
}
