//! The upstream connection pool against real HTTP/1.1 upstreams on 127.0.0.1: connections are
//! reused, survive upstream restarts and `Connection: close`, are not poisoned by abandoned
//! bodies, expire, and a request that reached the upstream is never sent twice. Hand-written
//! upstreams pin how answers are framed (RFC 9112 §6.3): chunked, interim, bodiless,
//! close-delimited, conflicting or malformed lengths, oversized heads, bytes trickling in.

use akgate::proxy::pool::{PoolConfig, PoolError, PooledBody, UpstreamError, UpstreamPool};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HOST: &str = "api.example.test";
/// What `/big` answers: far more than hyper reads ahead, so a body dropped after its first frame
/// is dropped mid-way.
const BIG: usize = 4 << 20;
const LARGE: usize = 100_000;

fn pool() -> UpstreamPool {
    UpstreamPool::new(PoolConfig::default())
}

/// A request as a user of the pool builds it: absolute URI, Host set by the caller.
fn request(addr: SocketAddr, path_and_query: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path_and_query}"))
        .header("host", HOST)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"hello\":1}")))
        .unwrap()
}

async fn read(resp: Response<PooledBody>) -> Bytes {
    resp.into_body().collect().await.unwrap().to_bytes()
}

/// A hyper HTTP/1.1 upstream that counts the connections it accepts. Aborting `task` closes the
/// listener and every connection.
struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl RawUpstream {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Answers `/big` with [`BIG`] bytes, `/large` with [`LARGE`], `/empty` with 204, anything else
/// with `"<tag> <method> <path?query> host=<host>"`. Without `keep_alive` every answer says
/// `Connection: close` and the connection ends after it.
async fn upstream_on(addr: SocketAddr, tag: &'static str, keep_alive: bool) -> Upstream {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            conns.spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    let (parts, body) = req.into_parts();
                    let _ = body.collect().await;
                    let resp = match parts.uri.path() {
                        "/big" => Response::new(Full::new(Bytes::from(vec![b'b'; BIG]))),
                        "/large" => Response::new(Full::new(Bytes::from(vec![b'l'; LARGE]))),
                        "/empty" => {
                            let mut r = Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = http::StatusCode::NO_CONTENT;
                            r
                        }
                        _ => {
                            let host = parts
                                .headers
                                .get("host")
                                .and_then(|h| h.to_str().ok())
                                .unwrap_or("-");
                            let pq = parts.uri.path_and_query().map_or("", |p| p.as_str());
                            Response::new(Full::new(Bytes::from(format!(
                                "{tag} {} {pq} host={host}",
                                parts.method
                            ))))
                        }
                    };
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(keep_alive)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        accepted,
        task,
    }
}

async fn upstream() -> Upstream {
    upstream_on("127.0.0.1:0".parse().unwrap(), "up", true).await
}

/// What a raw upstream does after answering a connection's first request.
#[derive(Clone, Copy, PartialEq)]
enum Then {
    /// Keeps the connection and answers every request.
    KeepAnswering,
    /// Reads the next request whole, then closes without a word.
    HangUpOnTheNext,
    /// Closes the connection right after the answer, without announcing it.
    Close,
}

/// A hand-written HTTP/1.1 upstream: it records every request head byte for byte and answers
/// `200 ok` with a Content-Length.
struct RawUpstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

async fn raw_upstream(then: Then) -> RawUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let (count, record) = (accepted.clone(), heads.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for n in 0.. {
                    let Some(head) = read_request(&mut s, &mut buf).await else {
                        return;
                    };
                    record.lock().unwrap().push(head);
                    if n > 0 && then == Then::HangUpOnTheNext {
                        return;
                    }
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    if then == Then::Close {
                        return;
                    }
                }
            });
        }
    });
    RawUpstream {
        addr,
        accepted,
        heads,
    }
}

/// Reads one request (head and Content-Length body) and returns its head; None at EOF.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < end + len {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf.drain(..end + len);
    Some(head)
}

#[tokio::test]
async fn the_upstream_sees_origin_form_and_the_callers_host() {
    let up = raw_upstream(Then::KeepAnswering).await;
    let pool = pool();
    let resp = pool
        .send(request(up.addr, "/v1/regions?a=1&b=%2F"))
        .await
        .unwrap();
    assert_eq!(read(resp).await, "ok");
    let heads = up.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1);
    let head = &heads[0];
    assert!(
        head.starts_with("POST /v1/regions?a=1&b=%2F HTTP/1.1\r\n"),
        "{head}"
    );
    let hosts: Vec<&str> = head
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("host:"))
        .collect();
    assert_eq!(hosts, [format!("host: {HOST}")], "{head}");
}

#[tokio::test]
async fn a_request_without_host_gets_the_upstream_authority() {
    let up = raw_upstream(Then::KeepAnswering).await;
    let mut req = request(up.addr, "/");
    req.headers_mut().remove("host");
    read(pool().send(req).await.unwrap()).await;
    let head = up.heads.lock().unwrap()[0].clone();
    assert!(
        head.contains(&format!("\r\nhost: {}\r\n", up.addr)),
        "{head}"
    );
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let up = upstream().await;
    let pool = pool();
    for i in 0..20 {
        let path = format!("/seq?i={i}");
        let body = read(pool.send(request(up.addr, &path)).await.unwrap()).await;
        assert_eq!(body, format!("up POST {path} host={HOST}"));
    }
    // Answers with no body and with a body spread over several reads return theirs too.
    for path in ["/empty", "/large", "/empty", "/large"] {
        let resp = pool.send(request(up.addr, path)).await.unwrap();
        let want = if path == "/large" { LARGE } else { 0 };
        assert_eq!(read(resp).await.len(), want);
    }
    assert_eq!(up.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_open_at_most_one_connection_each_then_reuse_them() {
    const N: usize = 8;
    let up = upstream().await;
    let pool = pool();
    let round = || async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..N {
            let (pool, addr) = (pool.clone(), up.addr);
            tasks.spawn(async move {
                let path = format!("/c?i={i}");
                let body = read(pool.send(request(addr, &path)).await.unwrap()).await;
                assert_eq!(body, format!("up POST {path} host={HOST}"));
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    };
    round().await;
    let opened = up.accepted();
    assert!(
        (1..=N).contains(&opened),
        "{opened} connections for {N} requests"
    );
    for _ in 0..3 {
        round().await;
    }
    assert_eq!(up.accepted(), opened, "later rounds opened connections");
}

#[tokio::test]
async fn idle_connections_are_capped_per_upstream() {
    let up = upstream().await;
    let pool = UpstreamPool::new(PoolConfig {
        max_idle_per_upstream: 2,
        ..PoolConfig::default()
    });
    // Polled together on one task: each checks out before any answer is back, so four connect.
    let (a, b, c, d) = tokio::join!(
        pool.send(request(up.addr, "/1")),
        pool.send(request(up.addr, "/2")),
        pool.send(request(up.addr, "/3")),
        pool.send(request(up.addr, "/4")),
    );
    for resp in [a, b, c, d] {
        read(resp.unwrap()).await;
    }
    assert_eq!(up.accepted(), 4);
    let authority = up.addr.to_string().parse().unwrap();
    assert_eq!(pool.idle_count(&authority), 2);
    read(pool.send(request(up.addr, "/5")).await.unwrap()).await;
    assert_eq!(up.accepted(), 4);
}

/// The upstream goes away and comes back on the same port: the pooled connections to the old
/// process are dead, and no request may fail on one.
#[tokio::test]
async fn requests_after_the_upstream_restarts_all_succeed() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let first = upstream_on(addr, "first", true).await;
    let pool = pool();
    // Concurrent, so that several connections sit in the pool.
    let (a, b, c) = tokio::join!(
        pool.send(request(addr, "/a")),
        pool.send(request(addr, "/b")),
        pool.send(request(addr, "/c")),
    );
    for resp in [a, b, c] {
        assert!(read(resp.unwrap()).await.starts_with(b"first "));
    }
    assert_eq!(first.accepted(), 3);
    first.task.abort();
    let _ = first.task.await;
    // Time for the FINs to reach the idle connections.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let down = pool.send(request(addr, "/down")).await;
    assert!(
        matches!(down, Err(PoolError::ConnectRefused)),
        "{:?}",
        down.map(|r| r.status())
    );

    let second = upstream_on(addr, "second", true).await;
    for i in 0..8 {
        let resp = pool.send(request(addr, "/again")).await;
        let resp = resp.unwrap_or_else(|e| panic!("request {i} after the restart failed: {e}"));
        assert!(read(resp).await.starts_with(b"second "));
    }
    assert_eq!(second.accepted(), 1);
}

#[tokio::test]
async fn an_upstream_closing_after_each_answer_works_for_every_request() {
    let up = upstream_on("127.0.0.1:0".parse().unwrap(), "close", false).await;
    let pool = pool();
    for i in 0..10 {
        let resp = pool.send(request(up.addr, "/x")).await;
        let resp = resp.unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(resp.headers()["connection"], "close");
        assert!(read(resp).await.starts_with(b"close "));
    }
    assert_eq!(up.accepted(), 10);
}

#[tokio::test]
async fn an_upstream_hanging_up_after_each_answer_unannounced_works_for_every_request() {
    let up = raw_upstream(Then::Close).await;
    let pool = pool();
    for i in 0..10 {
        let resp = pool.send(request(up.addr, "/x")).await;
        let resp = resp.unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(read(resp).await, "ok");
        // Time for the FIN to arrive: a request written before it would be lost, which no
        // client can avoid (the upstream might have processed it).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(up.accepted(), 10);
    assert_eq!(up.heads.lock().unwrap().len(), 10);
}

#[tokio::test]
async fn a_request_written_on_a_reused_connection_is_not_resent() {
    let up = raw_upstream(Then::HangUpOnTheNext).await;
    let pool = pool();
    assert_eq!(
        read(pool.send(request(up.addr, "/1")).await.unwrap()).await,
        "ok"
    );
    let second = pool.send(request(up.addr, "/2")).await;
    assert!(
        matches!(second, Err(PoolError::Request(_))),
        "{:?}",
        second.map(|r| r.status())
    );
    // The upstream read it once, on the reused connection, and never again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let heads = up.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(heads[1].starts_with("POST /2 "));
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn a_body_dropped_mid_way_does_not_poison_the_pool() {
    let up = upstream().await;
    let pool = pool();
    read(pool.send(request(up.addr, "/warm")).await.unwrap()).await;
    let authority = up.addr.to_string().parse().unwrap();
    assert_eq!(pool.idle_count(&authority), 1);

    let mut body = pool
        .send(request(up.addr, "/big"))
        .await
        .unwrap()
        .into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.len() < BIG);
    drop(body);
    // Its connection is not handed out again (see `PooledBody`).
    assert_eq!(pool.idle_count(&authority), 0);

    let after = read(pool.send(request(up.addr, "/after")).await.unwrap()).await;
    assert_eq!(after, format!("up POST /after host={HOST}"));
    assert_eq!(up.accepted(), 2);
    // A body dropped before its first byte is read is no different.
    drop(pool.send(request(up.addr, "/big")).await.unwrap());
    for _ in 0..3 {
        let again = read(pool.send(request(up.addr, "/again")).await.unwrap()).await;
        assert_eq!(again, format!("up POST /again host={HOST}"));
    }
    assert_eq!(up.accepted(), 3);
}

#[tokio::test]
async fn a_refused_connect_is_connect_refused() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // A long connect timeout: only a refusal can end this quickly with this error.
    let pool = UpstreamPool::new(PoolConfig {
        connect_timeout: Duration::from_secs(60),
        ..PoolConfig::default()
    });
    let err = pool.send(request(addr, "/")).await.unwrap_err();
    assert!(matches!(err, PoolError::ConnectRefused), "{err:?}");
    assert!(err.is_connect());
    assert_eq!(err.to_string(), "the upstream refused the connection");
}

#[tokio::test]
async fn a_connect_that_gets_no_answer_is_connect_timeout() {
    // A listener that never accepts and has a full queue drops further SYNs (Linux), so a new
    // connect waits for an answer that does not come.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    while let Ok(Ok(s)) =
        tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await
    {
        held.push(s);
        assert!(held.len() < 64, "the listen queue never filled up");
    }
    let pool = UpstreamPool::new(PoolConfig {
        connect_timeout: Duration::from_millis(300),
        ..PoolConfig::default()
    });
    let err = pool.send(request(addr, "/")).await.unwrap_err();
    assert!(matches!(err, PoolError::ConnectTimeout), "{err:?}");
    assert!(err.is_connect());
}

#[tokio::test]
async fn idle_connections_past_the_idle_timeout_are_not_reused() {
    let up = upstream().await;
    let pool = UpstreamPool::new(PoolConfig {
        idle_timeout: Duration::from_millis(200),
        ..PoolConfig::default()
    });
    read(pool.send(request(up.addr, "/1")).await.unwrap()).await;
    read(pool.send(request(up.addr, "/2")).await.unwrap()).await;
    assert_eq!(up.accepted(), 1, "reused within the idle timeout");
    tokio::time::sleep(Duration::from_millis(600)).await;
    read(pool.send(request(up.addr, "/3")).await.unwrap()).await;
    assert_eq!(up.accepted(), 2, "reused past the idle timeout");
}

#[tokio::test]
async fn a_target_that_is_not_absolute_http_is_refused() {
    let up = upstream().await;
    let pool = pool();
    for uri in ["/relative".to_string(), format!("https://{}/tls", up.addr)] {
        let req = Request::builder()
            .uri(uri.as_str())
            .header("host", HOST)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let err = pool.send(req).await.unwrap_err();
        assert!(matches!(err, PoolError::NotAbsolute), "{uri}: {err:?}");
    }
    assert_eq!(up.accepted(), 0);
}

/// The pool's bodies served by hyper's server, as akgate does: hyper stops polling a body once
/// it reports its end, and the connection must come back all the same.
#[tokio::test]
async fn answers_streamed_through_a_hyper_server_return_their_connection() {
    let up = upstream().await;
    let pool = pool();
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let (upstream_addr, server_pool) = (up.addr, pool.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = proxy.accept().await {
            let pool = server_pool.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let pool = pool.clone();
                    async move {
                        let pq = req.uri().path_and_query().unwrap().as_str().to_string();
                        pool.send(request(upstream_addr, &pq)).await
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    let stream = TcpStream::connect(proxy_addr).await.unwrap();
    let (mut client, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for path in ["/large", "/small", "/empty", "/large", "/large", "/small"] {
        let req = Request::builder()
            .uri(path)
            .header("host", "proxy.test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = client.send_request(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        match path {
            "/large" => assert_eq!(body.len(), LARGE),
            "/empty" => assert!(body.is_empty()),
            _ => assert_eq!(body, format!("up POST {path} host={HOST}")),
        }
    }
    assert_eq!(up.accepted(), 1);
}

/// An upstream that answers as soon as it has a request head, never reads the body, and keeps the
/// connection open: the request's body cannot be written out, so hyper never finishes the
/// exchange and the connection never becomes ready again. The next request must not wait on it.
#[tokio::test]
async fn a_connection_stuck_writing_a_request_body_is_not_waited_on() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let mut head = Vec::new();
            let mut chunk = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
            held.push(s);
        }
    });
    let pool = pool();
    // Far more than the socket buffers on both sides hold.
    let mut big = request(addr, "/upload");
    *big.body_mut() = Full::new(Bytes::from(vec![b'u'; 64 << 20]));
    assert_eq!(read(pool.send(big).await.unwrap()).await, "ok");

    let next = tokio::time::timeout(Duration::from_secs(10), pool.send(request(addr, "/next")))
        .await
        .expect("the next request waited on the stuck connection");
    assert_eq!(read(next.unwrap()).await, "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// A hand-written upstream that answers the n-th request on each connection with
/// `answers[n % answers.len()]`, whole or (`piece` > 0) in pieces of `piece` bytes 1 ms apart,
/// and closes the connection after each answer when `close` says so.
async fn scripted(answers: Vec<Vec<u8>>, piece: usize, close: bool) -> RawUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let (count, record) = (accepted.clone(), heads.clone());
    let answers = Arc::new(answers);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            s.set_nodelay(true).unwrap();
            let (record, answers) = (record.clone(), answers.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for n in 0.. {
                    let Some(head) = read_request(&mut s, &mut buf).await else {
                        return;
                    };
                    record.lock().unwrap().push(head);
                    let answer = &answers[n % answers.len()];
                    if piece == 0 {
                        let _ = s.write_all(answer).await;
                    } else {
                        for p in answer.chunks(piece) {
                            let _ = s.write_all(p).await;
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    if close {
                        return;
                    }
                }
            });
        }
    });
    RawUpstream {
        addr,
        accepted,
        heads,
    }
}

fn answer(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

fn head_request(addr: SocketAddr) -> Request<Full<Bytes>> {
    Request::builder()
        .method("HEAD")
        .uri(format!("http://{addr}/h"))
        .header("host", HOST)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn authority(addr: SocketAddr) -> http::uri::Authority {
    addr.to_string().parse().unwrap()
}

const CHUNKED: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n\
    5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: t\r\n\r\n";

#[tokio::test]
async fn a_chunked_answer_is_decoded_and_its_trailers_dropped() {
    let up = scripted(vec![answer(CHUNKED)], 0, false).await;
    let pool = pool();
    for _ in 0..3 {
        let resp = pool.send(request(up.addr, "/c")).await.unwrap();
        assert_eq!(resp.headers()["content-type"], "text/plain");
        // The body is decoded, so the framing headers no longer describe it: the server
        // forwarding it frames it anew.
        assert!(resp.headers().get("transfer-encoding").is_none());
        assert!(resp.headers().get("content-length").is_none());
        assert_eq!(resp.body().size_hint().exact(), None);
        let collected = resp.into_body().collect().await.unwrap();
        assert!(collected.trailers().is_none());
        assert_eq!(collected.to_bytes(), "hello, world");
    }
    assert_eq!(
        up.accepted(),
        1,
        "a chunked answer read to its end returns its connection"
    );
    assert_eq!(pool.idle_count(&authority(up.addr)), 1);
}

#[tokio::test]
async fn interim_answers_before_the_answer_are_skipped() {
    let up = scripted(
        vec![answer(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
             HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
        )],
        0,
        false,
    )
    .await;
    let pool = pool();
    for _ in 0..2 {
        let resp = pool.send(request(up.addr, "/i")).await.unwrap();
        assert_eq!(resp.status(), 201);
        assert!(resp.headers().get("link").is_none());
        assert_eq!(read(resp).await, "ok");
    }
    assert_eq!(up.accepted(), 1);

    // akgate does not tunnel: a protocol switch is an error, and the connection is not kept.
    let up = scripted(
        vec![answer(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
        )],
        0,
        false,
    )
    .await;
    let err = pool.send(request(up.addr, "/u")).await.unwrap_err();
    assert!(
        matches!(err, PoolError::Request(UpstreamError::SwitchingProtocols)),
        "{err:?}"
    );
    assert!(!err.is_connect());
    assert_eq!(pool.idle_count(&authority(up.addr)), 0);
}

#[tokio::test]
async fn a_head_answer_has_no_body_whatever_its_content_length() {
    let up = scripted(
        vec![answer("HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n")],
        0,
        false,
    )
    .await;
    let pool = pool();
    for _ in 0..3 {
        let resp = pool.send(head_request(up.addr)).await.unwrap();
        // Kept: it tells the client what a GET would bring.
        assert_eq!(resp.headers()["content-length"], "1234");
        assert!(resp.body().is_end_stream());
        assert_eq!(resp.body().size_hint().exact(), Some(0));
        // Back in the pool before the body is even polled.
        assert_eq!(pool.idle_count(&authority(up.addr)), 1);
        assert!(read(resp).await.is_empty());
    }
    assert_eq!(up.accepted(), 1);
    let heads = up.heads.lock().unwrap().clone();
    assert!(heads[0].starts_with("HEAD /h HTTP/1.1\r\n"), "{heads:?}");
    assert!(!heads[0].contains("content-length"), "{heads:?}");
}

#[tokio::test]
async fn no_content_and_not_modified_answers_have_no_body() {
    let up = scripted(
        vec![
            answer("HTTP/1.1 204 No Content\r\nx-n: 1\r\n\r\n"),
            answer("HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\netag: \"e\"\r\n\r\n"),
            answer("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            answer("HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlast"),
        ],
        0,
        false,
    )
    .await;
    let pool = pool();
    for want in [204, 304, 200] {
        let resp = pool.send(request(up.addr, "/n")).await.unwrap();
        assert_eq!(resp.status(), want);
        assert!(resp.body().is_end_stream(), "{want}");
        assert_eq!(pool.idle_count(&authority(up.addr)), 1, "{want}");
        assert!(read(resp).await.is_empty());
    }
    // Had the 304's Content-Length been taken as a body, this would read "last" as its body.
    let resp = pool.send(request(up.addr, "/n")).await.unwrap();
    assert_eq!(resp.body().size_hint().exact(), Some(4));
    assert_eq!(read(resp).await, "last");
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn a_close_delimited_answer_is_read_to_its_end_and_its_connection_closed() {
    let up = scripted(vec![answer("HTTP/1.1 200 OK\r\n\r\nall of it, ")], 4, true).await;
    let pool = pool();
    for _ in 0..2 {
        let resp = pool.send(request(up.addr, "/e")).await.unwrap();
        assert_eq!(resp.body().size_hint().exact(), None);
        assert_eq!(read(resp).await, "all of it, ");
    }
    assert_eq!(up.accepted(), 2);
    assert_eq!(pool.idle_count(&authority(up.addr)), 0);
}

#[tokio::test]
async fn transfer_encoding_wins_over_content_length_and_the_connection_is_not_reused() {
    // The upstream keeps its connections open: only the pool's rule closes them.
    let up = scripted(
        vec![answer(
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n\
             5\r\nhello\r\n0\r\n\r\n",
        )],
        0,
        false,
    )
    .await;
    let pool = pool();
    for _ in 0..2 {
        let resp = pool.send(request(up.addr, "/te")).await.unwrap();
        assert!(resp.headers().get("content-length").is_none());
        assert!(resp.headers().get("transfer-encoding").is_none());
        assert_eq!(read(resp).await, "hello");
    }
    assert_eq!(up.accepted(), 2);

    // A coding other than a final `chunked` cannot be delimited: read until the upstream closes.
    let up = scripted(
        vec![answer("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\ncontent-length: 2\r\n\r\nraw bytes")],
        0,
        true,
    )
    .await;
    let resp = pool.send(request(up.addr, "/gz")).await.unwrap();
    assert!(resp.headers().get("content-length").is_none());
    assert_eq!(read(resp).await, "raw bytes");
}

#[tokio::test]
async fn a_malformed_or_conflicting_content_length_is_an_error() {
    let pool = pool();
    for framing in [
        "content-length: 12abc\r\n",
        "content-length: -1\r\n",
        "content-length: \r\n",
        "content-length: 2\r\ncontent-length: 3\r\n",
        "content-length: 2, 3\r\n",
    ] {
        let up = scripted(
            vec![answer(&format!("HTTP/1.1 200 OK\r\n{framing}\r\nok!"))],
            0,
            false,
        )
        .await;
        let err = pool.send(request(up.addr, "/cl")).await.unwrap_err();
        assert!(
            matches!(err, PoolError::Request(UpstreamError::BadContentLength)),
            "{framing:?}: {err:?}"
        );
        assert_eq!(pool.idle_count(&authority(up.addr)), 0);
    }
    // Repeated identical values are one length (RFC 9110 §8.6).
    let up = scripted(
        vec![answer(
            "HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\ncontent-length: 2\r\n\r\nok",
        )],
        0,
        false,
    )
    .await;
    assert_eq!(
        read(pool.send(request(up.addr, "/cl")).await.unwrap()).await,
        "ok"
    );
}

#[tokio::test]
async fn an_oversized_answer_head_is_refused_and_its_connection_closed() {
    let huge = format!(
        "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\nok",
        "a".repeat(70 * 1024)
    );
    let many = format!(
        "HTTP/1.1 200 OK\r\n{}content-length: 2\r\n\r\nok",
        (0..100)
            .map(|i| format!("x-h{i}: v\r\n"))
            .collect::<String>()
    );
    let pool = pool();
    for (answer_text, is_size) in [(huge, true), (many, false)] {
        let up = scripted(vec![answer(&answer_text)], 0, false).await;
        let err = pool.send(request(up.addr, "/big-head")).await.unwrap_err();
        if is_size {
            assert!(
                matches!(err, PoolError::Request(UpstreamError::HeadTooLarge)),
                "{err:?}"
            );
        } else {
            assert!(
                matches!(err, PoolError::Request(UpstreamError::TooManyHeaders)),
                "{err:?}"
            );
        }
        // Not about the request or the upstream: neither is named.
        let text = err.to_string();
        assert!(
            !text.contains("127.0.0.1") && !text.contains("big-head"),
            "{text}"
        );
        assert_eq!(pool.idle_count(&authority(up.addr)), 0);
    }
    // At the limits, a head is fine.
    let most = format!(
        "HTTP/1.1 200 OK\r\n{}content-length: 2\r\n\r\nok",
        (0..99)
            .map(|i| format!("x-h{i}: v\r\n"))
            .collect::<String>()
    );
    let up = scripted(vec![answer(&most)], 0, false).await;
    let resp = pool.send(request(up.addr, "/h")).await.unwrap();
    assert_eq!(resp.headers().len(), 100);
}

#[tokio::test]
async fn connections_the_upstream_does_not_keep_alive_are_not_reused() {
    // Each upstream leaves its connections open; the answer alone says not to reuse them.
    for (text, reused) in [
        (
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\nconnection: x-foo, Close\r\ncontent-length: 2\r\n\r\nok",
            false,
        ),
        ("HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
        (
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
            true,
        ),
        ("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", true),
    ] {
        let up = scripted(vec![answer(text)], 0, false).await;
        let pool = pool();
        for _ in 0..3 {
            assert_eq!(
                read(pool.send(request(up.addr, "/k")).await.unwrap()).await,
                "ok"
            );
        }
        assert_eq!(up.accepted(), if reused { 1 } else { 3 }, "{text:?}");
    }
}

#[tokio::test]
async fn bytes_after_the_answer_or_while_idle_close_the_connection() {
    // The upstream sends more than its answer said: its framing cannot be trusted again.
    let up = scripted(
        vec![answer(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA",
        )],
        0,
        false,
    )
    .await;
    let pool = pool();
    for _ in 0..2 {
        assert_eq!(
            read(pool.send(request(up.addr, "/x")).await.unwrap()).await,
            "ok"
        );
    }
    assert_eq!(up.accepted(), 2);

    // Bytes arriving while the connection sits idle.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while read_request(&mut s, &mut buf).await.is_some() {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    if n == 0 {
                        // Only the first connection speaks out of turn.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\n").await;
                    }
                }
            });
        }
    });
    read(pool.send(request(addr, "/y")).await.unwrap()).await;
    assert_eq!(pool.idle_count(&authority(addr)), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        assert_eq!(
            read(pool.send(request(addr, "/z")).await.unwrap()).await,
            "ok"
        );
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn answers_trickling_in_byte_by_byte_arrive_whole() {
    let chunked = format!(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{}0\r\n\r\n",
        (1..=9)
            .map(|i| format!("{i}\r\n{}\r\n", "abcdefghi".get(..i).unwrap()))
            .collect::<String>()
    );
    let expected: String = (1..=9).map(|i| &"abcdefghi"[..i]).collect();
    let up = scripted(
        vec![
            answer(&chunked),
            answer("HTTP/1.1 200 OK\r\ncontent-length: 26\r\n\r\nabcdefghijklmnopqrstuvwxyz"),
        ],
        3,
        false,
    )
    .await;
    let pool = pool();
    for _ in 0..2 {
        assert_eq!(
            read(pool.send(request(up.addr, "/t")).await.unwrap()).await,
            expected
        );
        assert_eq!(
            read(pool.send(request(up.addr, "/t")).await.unwrap()).await,
            "abcdefghijklmnopqrstuvwxyz"
        );
    }
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn a_big_answer_streams_in_bounded_frames() {
    const SIZE: usize = 16 << 20;
    let mut sized = answer(&format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {SIZE}\r\n\r\n"
    ));
    sized.extend(std::iter::repeat_n(b's', SIZE));
    let mut chunked = answer("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
    for _ in 0..SIZE / (1 << 20) {
        chunked.extend_from_slice(b"100000\r\n");
        chunked.extend(std::iter::repeat_n(b'c', 1 << 20));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let up = scripted(vec![sized, chunked], 0, false).await;
    let pool = pool();
    for byte in [b's', b'c'] {
        let mut body = pool
            .send(request(up.addr, "/big"))
            .await
            .unwrap()
            .into_body();
        let (mut total, mut largest) = (0, 0);
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data.iter().all(|&b| b == byte));
            total += data.len();
            largest = largest.max(data.len());
            if total == data.len() {
                // A slow reader: the upstream fills the socket buffers meanwhile, and the pool
                // must still hand the body out piece by piece rather than gather it.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        assert_eq!(total, SIZE);
        assert!(largest <= 256 << 10, "a frame of {largest} bytes");
        assert!(body.is_end_stream());
    }
    assert_eq!(up.accepted(), 1);
}
