//! The process under pressure and at its end: connection and request caps answered with fast 503s
//! in the caller's error shape, bounded body memory and nonce cache, client timeouts, and
//! graceful shutdown on SIGTERM. All against the real binary on 127.0.0.1.

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An upstream that answers every request after `delay`, counting requests started and finished.
struct Delayed {
    addr: SocketAddr,
    started: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
}

impl Delayed {
    /// Waits until `n` requests have reached the upstream (and are held there).
    async fn wait_started(&self, n: usize) {
        assert!(
            eventually(Duration::from_secs(5), || async {
                self.started.load(Ordering::SeqCst) == n
            })
            .await,
            "{n} requests did not reach the upstream"
        );
    }
}

/// A request sent on its own connection and left waiting for its answer (up to 30 s); the
/// task's result is the answer, or `None` if the connection was cut.
fn stuck_request(proxy: SocketAddr) -> tokio::task::JoinHandle<Option<(u16, String)>> {
    tokio::spawn(async move {
        let mut s = open_with_request(proxy, None, &good()).await;
        read_response(&mut s, Duration::from_secs(30)).await
    })
}

async fn delayed_upstream(delay: Duration) -> Delayed {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let (s, f) = (started.clone(), finished.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (s, f) = (s.clone(), f.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| {
                    let (s, f) = (s.clone(), f.clone());
                    async move {
                        s.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        f.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                            b"{\"slow\":\"done\"}",
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Delayed {
        addr,
        started,
        finished,
    }
}

fn good() -> Req {
    signed("127.0.0.1", "DescribeRegions", "", ALICE, b"", 0)
}

async fn start_with(upstream: SocketAddr, extra: &[&str]) -> (tempfile::TempDir, Akgate) {
    let dir = tempfile::tempdir().unwrap();
    let hang = hanging_upstream().await;
    write_rules(dir.path(), upstream, hang);
    // Long enough for the slow upstreams here; the shared rules' 1 s would turn them into 504s.
    let settings = std::fs::read_to_string(dir.path().join("settings.toml")).unwrap();
    std::fs::write(
        dir.path().join("settings.toml"),
        settings.replace("upstream_timeout = \"1s\"", "upstream_timeout = \"60s\""),
    )
    .unwrap();
    let gw = Akgate::start(dir.path(), "127.0.0.1:0", extra);
    (dir, gw)
}

async fn metrics(gw: &Akgate) -> String {
    String::from_utf8(admin_get(gw.admin, "/metrics").await.body.to_vec()).unwrap()
}

/// Opens a connection and sends a complete request head for `req` without waiting for the answer.
async fn open_with_request(addr: SocketAddr, source: Option<IpAddr>, req: &Req) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0)).unwrap();
    }
    let mut s = socket.connect(addr).await.unwrap();
    s.write_all(&raw(req)).await.unwrap();
    s
}

fn raw(req: &Req) -> Vec<u8> {
    let mut out = format!("{} {} HTTP/1.1\r\n", req.method, req.path_and_query).into_bytes();
    for (k, v) in &req.headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", req.body.len()).as_bytes());
    out.extend_from_slice(&req.body);
    out
}

/// Reads one HTTP/1.1 response (status, body) from a raw stream, up to `within`.
async fn read_response(s: &mut TcpStream, within: Duration) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let deadline = Instant::now() + within;
    loop {
        let mut chunk = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

fn code_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .map(|v| v["Code"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let up = delayed_upstream(Duration::from_millis(1500)).await;
    let (_dir, mut gw) = start_with(up.addr, &["--shutdown-grace", "10s"]).await;
    assert_eq!(admin_get(gw.admin, "/readyz").await.status, 200);

    // Three requests in flight, on separate connections and one HTTP/2 stream pair.
    let proxy = gw.proxy;
    let h1: Vec<_> = (0..3)
        .map(|_| tokio::spawn(async move { send(proxy, &good()).await }))
        .collect();
    let h2 = tokio::spawn(async move { send_h2(proxy, &[good()]).await });
    up.wait_started(4).await;

    gw.signal("TERM");
    // Not ready at once, while the requests are still running.
    assert!(
        eventually(Duration::from_secs(2), || async {
            admin_get(gw.admin, "/readyz").await.status == 503
        })
        .await
    );
    // The listener is closed: a new connection is refused.
    assert!(
        eventually(Duration::from_secs(2), || async {
            TcpStream::connect(proxy).await.is_err()
        })
        .await,
        "the public listener still accepts connections after SIGTERM"
    );
    assert_eq!(up.finished.load(Ordering::SeqCst), 0);

    // Every in-flight request completes with the upstream's answer, which tells the client
    // that the connection ends with it.
    for h in h1 {
        let r = h.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..], b"{\"slow\":\"done\"}");
        assert_eq!(
            r.headers.get("connection").map(|v| v.as_bytes()),
            Some(&b"close"[..])
        );
    }
    let r = h2.await.unwrap();
    assert_eq!(r[0].status, 200);

    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("akgate did not exit after draining");
    assert_eq!(status.code(), Some(0), "stderr: {}", gw.stderr());
    assert_eq!(up.finished.load(Ordering::SeqCst), 4);
}

// Multi-threaded: `wait_exit` blocks its thread, and the HTTP/2 client must keep answering the
// gateway's GOAWAY ping meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_do_not_hold_up_shutdown() {
    let up = upstream().await;
    let (_dir, mut gw) = start_with(up.addr, &["--shutdown-grace", "20s"]).await;
    // An idle HTTP/1.1 keep-alive connection and an idle HTTP/2 connection.
    let mut idle = open_with_request(gw.proxy, None, &good()).await;
    assert_eq!(
        read_response(&mut idle, Duration::from_secs(5))
            .await
            .unwrap()
            .0,
        200
    );
    let h2 = TcpStream::connect(gw.proxy).await.unwrap();
    let (_sender, conn) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(h2),
    )
    .await
    .unwrap();
    let h2_conn = tokio::spawn(conn);

    let started = Instant::now();
    gw.signal("TERM");
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("idle connections kept akgate from exiting: {}", gw.stderr()));
    assert_eq!(
        status.code(),
        Some(0),
        "{status:?}; stderr: {}",
        gw.stderr()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited for idle connections instead of closing them"
    );
    // The idle connections were closed by the gateway, not left dangling.
    let mut buf = [0u8; 16];
    assert_eq!(idle.read(&mut buf).await.unwrap_or(0), 0);
    let _ = tokio::time::timeout(Duration::from_secs(5), h2_conn)
        .await
        .expect("the HTTP/2 connection was not closed");
}

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let up = delayed_upstream(Duration::from_secs(30)).await;
    let (_dir, mut gw) = start_with(up.addr, &["--shutdown-grace", "60s"]).await;
    let stuck = stuck_request(gw.proxy);
    up.wait_started(1).await;
    gw.signal("TERM");
    // Still draining: the request is in flight and the grace period is long.
    assert!(gw.wait_exit(Duration::from_millis(800)).is_none());
    gw.signal("TERM");
    let status = gw
        .wait_exit(Duration::from_secs(3))
        .expect("a second SIGTERM did not end the process");
    assert_eq!(status.code(), Some(130));
    // The cut request got no answer.
    assert!(stuck.await.unwrap().is_none());
}

#[tokio::test]
async fn grace_period_bounds_the_wait() {
    let up = delayed_upstream(Duration::from_secs(30)).await;
    let (_dir, mut gw) = start_with(up.addr, &["--shutdown-grace", "1s"]).await;
    let _stuck = stuck_request(gw.proxy);
    up.wait_started(1).await;
    gw.signal("TERM");
    let status = gw
        .wait_exit(Duration::from_secs(6))
        .expect("akgate kept waiting past its grace period");
    assert_eq!(status.code(), Some(0));
    assert!(gw.stderr().contains("grace period over"), "{}", gw.stderr());
}

// ---------------------------------------------------------------------------------------------
// Caps: a fast 503 in the caller's shape, never a hang or unbounded memory

#[tokio::test]
async fn requests_over_the_in_flight_cap_get_503_at_once() {
    let up = delayed_upstream(Duration::from_secs(2)).await;
    let (_dir, gw) = start_with(up.addr, &["--max-in-flight", "2", "--max-queued", "0"]).await;
    let proxy = gw.proxy;
    let busy: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { send(proxy, &good()).await }))
        .collect();
    up.wait_started(2).await;
    let t = Instant::now();
    let r = send(proxy, &good()).await;
    r.assert_error(503, "ServiceUnavailable");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "the refusal waited for a slot"
    );
    // AWS callers get AWS's shape for the same refusal.
    let aws = akgate_sigv4_get(proxy);
    let r = send(proxy, &aws).await;
    assert_eq!(r.status, 503);
    assert!(
        String::from_utf8_lossy(&r.body).contains("<Code>ServiceUnavailable</Code>"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    for b in busy {
        assert_eq!(b.await.unwrap().status, 200);
    }
    // Slots come back: the next request passes.
    assert_eq!(send(proxy, &good()).await.status, 200);
    let m = metrics(&gw).await;
    assert!(metric(&m, "akgate_overloaded_total", &[("reason", "queue_full")]).unwrap() >= 2.0);
}

/// A SigV4 request to a route that does not exist: refused before any upstream, but it still
/// needs a slot, so it shows the AWS shape of the overload refusal.
fn akgate_sigv4_get(proxy: SocketAddr) -> Req {
    let _ = proxy;
    Req {
        method: "GET".into(),
        path_and_query: "/?Action=GetCallerIdentity&Version=2011-06-15".into(),
        headers: vec![
            ("host".into(), "127.0.0.1".into()),
            (
                "authorization".into(),
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261123/us-east-1/sts/aws4_request, SignedHeaders=host;x-amz-date, Signature=00".into(),
            ),
            ("x-amz-date".into(), "20261123T000000Z".into()),
        ],
        body: vec![],
    }
}

#[tokio::test]
async fn queued_requests_wait_for_a_slot_within_the_queue_timeout() {
    let up = delayed_upstream(Duration::from_millis(500)).await;
    let (_dir, gw) = start_with(
        up.addr,
        &[
            "--max-in-flight",
            "1",
            "--max-queued",
            "4",
            "--queue-timeout",
            "10s",
        ],
    )
    .await;
    let proxy = gw.proxy;
    let all: Vec<_> = (0..4)
        .map(|_| tokio::spawn(async move { send(proxy, &good()).await }))
        .collect();
    for h in all {
        assert_eq!(h.await.unwrap().status, 200);
    }
    assert_eq!(up.finished.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn connections_over_the_cap_get_503_and_are_closed() {
    let up = upstream().await;
    let (_dir, gw) = start_with(up.addr, &["--max-connections", "3"]).await;
    // Three connections held open (keep-alive, each served once).
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = open_with_request(gw.proxy, None, &good()).await;
        assert_eq!(
            read_response(&mut s, Duration::from_secs(5))
                .await
                .unwrap()
                .0,
            200
        );
        held.push(s);
    }
    let before = up.count();
    let mut extra = open_with_request(gw.proxy, None, &good()).await;
    let (status, body) = read_response(&mut extra, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(code_of(&body), "ServiceUnavailable");
    // Closed after the refusal.
    let mut buf = [0u8; 16];
    assert_eq!(extra.read(&mut buf).await.unwrap_or(0), 0);
    assert_eq!(
        up.count(),
        before,
        "a refused connection's request reached the upstream"
    );
    // A held connection ends: a new one is served again.
    drop(held.pop());
    assert!(
        eventually(Duration::from_secs(5), || async {
            let mut s = open_with_request(gw.proxy, None, &good()).await;
            read_response(&mut s, Duration::from_secs(5))
                .await
                .map(|r| r.0)
                == Some(200)
        })
        .await
    );
    let m = metrics(&gw).await;
    assert!(
        metric(
            &m,
            "akgate_connections_refused_total",
            &[("reason", "total")]
        )
        .unwrap()
            >= 1.0
    );
}

#[tokio::test]
async fn per_source_connection_cap_spares_other_sources() {
    let up = upstream().await;
    let (_dir, gw) = start_with(up.addr, &["--max-connections-per-ip", "2"]).await;
    let a: IpAddr = "127.0.0.1".parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = open_with_request(gw.proxy, Some(a), &good()).await;
        assert_eq!(
            read_response(&mut s, Duration::from_secs(5))
                .await
                .unwrap()
                .0,
            200
        );
        held.push(s);
    }
    let mut third = open_with_request(gw.proxy, Some(a), &good()).await;
    let (status, body) = read_response(&mut third, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        (status, code_of(&body).as_str()),
        (503, "ServiceUnavailable")
    );
    // Another source (alice's allowlist admits 127.0.0.9) is unaffected.
    let b: IpAddr = "127.0.0.9".parse().unwrap();
    let mut other = open_with_request(gw.proxy, Some(b), &good()).await;
    assert_eq!(
        read_response(&mut other, Duration::from_secs(5))
            .await
            .unwrap()
            .0,
        200
    );
    let m = metrics(&gw).await;
    assert!(
        metric(
            &m,
            "akgate_connections_refused_total",
            &[("reason", "per_ip")]
        )
        .unwrap()
            >= 1.0
    );
}

#[tokio::test]
async fn body_memory_is_bounded_across_requests() {
    let up = upstream().await;
    // 48 KiB of body memory in all; max_body_bytes in the test rules is 64 KiB.
    let (_dir, gw) = start_with(up.addr, &["--max-buffered-body-bytes", "49152"]).await;
    // A request holding 40 KiB: its head and most of its body sent, the rest held back.
    let body = vec![b'a'; 41_000];
    let req = signed("127.0.0.1", "DescribeRegions", "", ALICE, &body, 0);
    let mut wire = raw(&req);
    let held_back = wire.split_off(wire.len() - 100);
    let mut slow = TcpStream::connect(gw.proxy).await.unwrap();
    slow.write_all(&wire).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A second 20 KiB body does not fit beside it.
    let second = signed(
        "127.0.0.1",
        "DescribeRegions",
        "",
        ALICE,
        &vec![b'b'; 20_000],
        0,
    );
    send(gw.proxy, &second)
        .await
        .assert_error(503, "ServiceUnavailable");
    // The first one completes, and gives its memory back.
    slow.write_all(&held_back).await.unwrap();
    let (status, _) = read_response(&mut slow, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let again = signed(
        "127.0.0.1",
        "DescribeRegions",
        "",
        ALICE,
        &vec![b'b'; 20_000],
        0,
    );
    assert_eq!(send(gw.proxy, &again).await.status, 200);
    let m = metrics(&gw).await;
    assert_eq!(
        metric(&m, "akgate_overloaded_total", &[("reason", "body_memory")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_full_nonce_cache_fails_closed() {
    let up = upstream().await;
    let (_dir, gw) = start_with(up.addr, &["--max-nonces", "5"]).await;
    for _ in 0..5 {
        assert_eq!(send(gw.proxy, &good()).await.status, 200);
    }
    let before = up.count();
    send(gw.proxy, &good())
        .await
        .assert_error(503, "ServiceUnavailable");
    assert_eq!(up.count(), before);
    let m = metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            "akgate_overloaded_total",
            &[("reason", "nonce_cache_full")]
        ),
        Some(1.0)
    );
}

// ---------------------------------------------------------------------------------------------
// Clients that are too slow

#[tokio::test]
async fn a_client_sending_its_head_byte_by_byte_is_cut_off() {
    let up = upstream().await;
    let (_dir, gw) = start_with(up.addr, &["--header-read-timeout", "1s"]).await;
    let wire = raw(&good());
    let mut s = TcpStream::connect(gw.proxy).await.unwrap();
    let started = Instant::now();
    let mut closed = false;
    for b in wire.iter().take(400) {
        if s.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    if !closed {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .expect("the connection was left open")
            .unwrap_or(0);
        // hyper may answer 408 before closing, or just close.
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    }
    assert!(started.elapsed() < Duration::from_secs(6));
    assert_eq!(up.count(), 0);
    assert_eq!(send(gw.proxy, &good()).await.status, 200);
}

#[tokio::test]
async fn a_body_that_stalls_gets_408() {
    let up = upstream().await;
    let (_dir, gw) = start_with(up.addr, &["--body-read-timeout", "1s"]).await;
    let req = signed("127.0.0.1", "DescribeRegions", "", ALICE, &[b'x'; 2000], 0);
    let mut wire = raw(&req);
    wire.truncate(wire.len() - 1000);
    let mut s = TcpStream::connect(gw.proxy).await.unwrap();
    s.write_all(&wire).await.unwrap();
    let (status, body) = read_response(&mut s, Duration::from_secs(5)).await.unwrap();
    assert_eq!((status, code_of(&body).as_str()), (408, "RequestTimeout"));
    assert_eq!(up.count(), 0);
}

/// An upstream whose answer is 32 MiB, streamed.
async fn big_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(vec![b'z'; 32 << 20]))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected() {
    let big = big_upstream().await;
    let (_dir, gw) = start_with(big, &["--write-timeout", "1s"]).await;
    let mut s = open_with_request(gw.proxy, None, &good()).await;
    // Read the head and a little, then stop reading.
    let mut first = [0u8; 1024];
    let n = s.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let m = metrics(&gw).await;
    assert_eq!(metric(&m, "akgate_connections_open", &[]), Some(1.0));
    // The gateway gives up on the connection after the write timeout.
    assert!(
        eventually(Duration::from_secs(8), || async {
            metric(&metrics(&gw).await, "akgate_connections_open", &[]) == Some(0.0)
        })
        .await,
        "a client that stopped reading still holds its connection"
    );
    // Draining what the kernel buffered ends in EOF or reset well short of 32 MiB.
    let mut total = n;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(k)) => total += k,
            Err(_) => panic!("the connection was not closed"),
        }
    }
    assert!(total < 32 << 20, "the whole body was delivered: {total}");
    assert_eq!(send(gw.proxy, &good()).await.status, 200);
}
