//! Upstream faults: refused, hanging, stalling mid-answer, resetting, speaking garbage, closing
//! without an answer, restarting. The client always gets either the upstream's complete answer or
//! a clear error (502/504 in its shape, or a cut connection mid-body), never a truncated answer
//! that looks complete; and the gateway keeps serving.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a raw upstream does with each connection once it has read a request head.
#[derive(Clone, Copy)]
enum Misbehaviour {
    /// Headers announcing 1000 bytes, 10 of them, then a TCP reset.
    ResetMidBody,
    /// Headers announcing 1000 bytes, 10 of them, then silence (connection kept open).
    StallMidBody,
    /// Bytes that are not HTTP.
    Garbage,
    /// Closes the connection without a word.
    CloseWithoutAnswer,
    /// A complete, well-formed 500 answer.
    ServerError,
}

async fn raw_upstream(what: Misbehaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let partial = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"partial\":";
                match what {
                    Misbehaviour::ResetMidBody => {
                        let _ = s.write_all(partial).await;
                        let _ = s.flush().await;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        // SO_LINGER 0: close sends RST instead of FIN.
                        let _ = s.set_zero_linger();
                        drop(s);
                    }
                    Misbehaviour::StallMidBody => {
                        let _ = s.write_all(partial).await;
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    Misbehaviour::Garbage => {
                        let _ = s
                            .write_all(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02garbage\r\n\r\n")
                            .await;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Misbehaviour::CloseWithoutAnswer => drop(s),
                    Misbehaviour::ServerError => {
                        let body = br#"{"Code":"InternalError","Message":"upstream broke"}"#;
                        let head = format!(
                            "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        let _ = s.write_all(head.as_bytes()).await;
                        let _ = s.write_all(body).await;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            });
        }
    });
    addr
}

/// Rules whose `127.0.0.1` route goes to `upstream`, with a 1 s upstream timeout.
async fn gateway_for(upstream: SocketAddr) -> (tempfile::TempDir, Akgate) {
    let dir = tempfile::tempdir().unwrap();
    let hang = hanging_upstream().await;
    write_rules(dir.path(), upstream, hang);
    let gw = Akgate::start(dir.path(), "127.0.0.1:0", &[]);
    (dir, gw)
}

fn good() -> Req {
    signed("127.0.0.1", "DescribeRegions", "", ALICE, b"", 0)
}

/// Sends `req` and returns the head's status and whether the body arrived complete.
async fn send_raw_body(addr: SocketAddr, req: &Req) -> (u16, Result<bytes::Bytes, String>) {
    use http_body_util::BodyExt;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut b = http::Request::builder()
        .method(req.method.as_str())
        .uri(req.path_and_query.as_str());
    for (k, v) in &req.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let r = b
        .body(http_body_util::Full::new(bytes::Bytes::from(
            req.body.clone(),
        )))
        .unwrap();
    let resp = sender.send_request(r).await.unwrap();
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("the body neither completed nor failed")
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string());
    (status, body)
}

#[tokio::test]
async fn upstream_refusing_connections_is_502_in_the_callers_shape() {
    let up = upstream().await;
    let (_dir, gw) = gateway_for(up.addr).await;
    send(
        gw.proxy,
        &signed("down.test", "DescribeRegions", "", ALICE, b"", 0),
    )
    .await
    .assert_error(502, "ServiceUnavailable");
    // The gateway is fine: a request to a live upstream passes.
    assert_eq!(send(gw.proxy, &good()).await.status, 200);
}

#[tokio::test]
async fn upstream_hanging_before_its_answer_is_504_after_the_timeout() {
    let up = upstream().await;
    let (_dir, gw) = gateway_for(up.addr).await;
    let t = Instant::now();
    send(
        gw.proxy,
        &signed("slow.test", "DescribeRegions", "", ALICE, b"", 0),
    )
    .await
    .assert_error(504, "GatewayTimeout");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn upstream_resetting_mid_answer_cuts_the_client_off() {
    let up = raw_upstream(Misbehaviour::ResetMidBody).await;
    let (_dir, gw) = gateway_for(up).await;
    let (status, body) = send_raw_body(gw.proxy, &good()).await;
    assert_eq!(status, 200, "the head had already been forwarded");
    assert!(
        body.is_err(),
        "a truncated answer was delivered as complete: {body:?}"
    );
    let healthy = upstream().await;
    let (_dir2, gw2) = gateway_for(healthy.addr).await;
    assert_eq!(send(gw2.proxy, &good()).await.status, 200);
    // The first gateway is still serving too.
    assert_eq!(admin_get(gw.admin, "/healthz").await.status, 200);
}

#[tokio::test]
async fn upstream_stalling_mid_answer_cuts_the_client_off_after_the_timeout() {
    let up = raw_upstream(Misbehaviour::StallMidBody).await;
    let (_dir, gw) = gateway_for(up).await;
    let t = Instant::now();
    let (status, body) = send_raw_body(gw.proxy, &good()).await;
    assert_eq!(status, 200);
    assert!(body.is_err(), "{body:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test]
async fn upstream_speaking_garbage_is_502() {
    let up = raw_upstream(Misbehaviour::Garbage).await;
    let (_dir, gw) = gateway_for(up).await;
    send(gw.proxy, &good())
        .await
        .assert_error(502, "ServiceUnavailable");
}

#[tokio::test]
async fn upstream_closing_without_an_answer_is_502() {
    let up = raw_upstream(Misbehaviour::CloseWithoutAnswer).await;
    let (_dir, gw) = gateway_for(up).await;
    send(gw.proxy, &good())
        .await
        .assert_error(502, "ServiceUnavailable");
}

#[tokio::test]
async fn upstream_errors_are_passed_through_untouched() {
    let up = raw_upstream(Misbehaviour::ServerError).await;
    let (_dir, gw) = gateway_for(up).await;
    let r = send(gw.proxy, &good()).await;
    assert_eq!(r.status, 500);
    assert_eq!(
        &r.body[..],
        br#"{"Code":"InternalError","Message":"upstream broke"}"#
    );
}

/// The upstream goes away and comes back on the same port: pooled connections to the old
/// process are dead, and the gateway must not keep failing on them.
#[tokio::test]
async fn the_upstream_pool_recovers_after_the_upstream_restarts() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let first = hyper_upstream_on(addr, "first").await;
    let (_dir, gw) = gateway_for(addr).await;
    // Several requests leave pooled keep-alive connections to the first process.
    for _ in 0..4 {
        let r = send(gw.proxy, &good()).await;
        assert_eq!(&r.body[..], b"first");
    }
    first.abort();
    let _ = first.await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Down: a clear 502, not a hang.
    let r = send(gw.proxy, &good()).await;
    r.assert_error(502, "ServiceUnavailable");
    // Back: every request succeeds again, none fails on a stale pooled connection.
    let _second = hyper_upstream_on(addr, "second").await;
    for i in 0..8 {
        let r = send(gw.proxy, &good()).await;
        assert_eq!(r.status, 200, "request {i} after the restart failed");
        assert_eq!(&r.body[..], b"second");
    }
}

/// A keep-alive HTTP/1.1 upstream on `addr` answering `body`; aborting the task closes the
/// listener and every connection it accepted.
async fn hyper_upstream_on(addr: SocketAddr, body: &'static str) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            conns.spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(body.as_bytes())),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}
