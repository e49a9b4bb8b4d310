//! The lean HTTP/1.1 path for plain requests, and the hand-off to hyper for everything else, on
//! real sockets: pipelining, a hand-off in the middle of a keep-alive connection, framing the
//! client and upstream cannot see differently, HEAD, answers without a length, large bodies.

mod common;

use common::*;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the raw upstream received: method, path, body.
type Log = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// An upstream speaking HTTP/1.1 by hand, so that its answers' framing is chosen here: a path
/// starting with `/chunked` gets a chunked answer (no length), anything else a
/// `Content-Length` answer. The answer body names the path and the body length it received.
async fn raw_upstream() -> (SocketAddr, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Log = Arc::default();
    let record = log.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 64 * 1024];
                loop {
                    let (method, path, head_len, body_len) = loop {
                        let mut slots = [httparse::EMPTY_HEADER; 64];
                        let mut req = httparse::Request::new(&mut slots);
                        if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                            let len = req
                                .headers
                                .iter()
                                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                                .map_or(0, |h| {
                                    std::str::from_utf8(h.value).unwrap().parse().unwrap()
                                });
                            break (
                                req.method.unwrap().to_owned(),
                                req.path.unwrap().to_owned(),
                                n,
                                len,
                            );
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    while buf.len() < head_len + body_len {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = buf[head_len..head_len + body_len].to_vec();
                    buf.drain(..head_len + body_len);
                    let text = format!("{method} {path} {}", body.len());
                    record
                        .lock()
                        .unwrap()
                        .push((method.clone(), path.clone(), body));
                    let answer = if path.starts_with("/chunked") {
                        let half = text.len() / 2;
                        format!(
                            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
                            half,
                            &text[..half],
                            text.len() - half,
                            &text[half..]
                        )
                    } else if method == "HEAD" {
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", text.len())
                    } else {
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
                            text.len()
                        )
                    };
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, log)
}

struct World {
    _dir: tempfile::TempDir,
    gw: Akgate,
    log: Log,
    host: String,
}

async fn world() -> World {
    world_with(&[]).await
}

async fn world_with(args: &[&str]) -> World {
    let (up, log) = raw_upstream().await;
    let slow = hanging_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    write_rules(dir.path(), up, slow);
    let gw = Akgate::start(dir.path(), "127.0.0.1:0", args);
    let host = format!("127.0.0.1:{}", gw.proxy.port());
    World {
        _dir: dir,
        gw,
        log,
        host,
    }
}

fn post(host: &str, path: &str, body: &[u8]) -> Req {
    signed_with(
        host,
        "POST",
        path,
        "DescribeRegions",
        "",
        ALICE,
        body,
        0,
        &[],
    )
}

/// `req` as HTTP/1.1 bytes; `framing` replaces the `Content-Length` line (and then the caller
/// appends the body in that framing).
fn wire(req: &Req, extra: &str, framing: Option<&str>) -> Vec<u8> {
    let mut out = format!("{} {} HTTP/1.1\r\n", req.method, req.path_and_query).into_bytes();
    for (k, v) in &req.headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(extra.as_bytes());
    match framing {
        Some(f) => out.extend_from_slice(f.as_bytes()),
        None => out.extend_from_slice(format!("content-length: {}\r\n", req.body.len()).as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    if framing.is_none() {
        out.extend_from_slice(&req.body);
    }
    out
}

fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in body.chunks(7) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One answer off the front of `buf`: `(answer, bytes used)`. `head_only`: an answer to HEAD.
fn parse_answer(buf: &[u8], head_only: bool) -> Option<(Answer, usize)> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut slots);
    let httparse::Status::Complete(head) = resp.parse(buf).ok()? else {
        return None;
    };
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let status = resp.code?;
    let mut a = Answer {
        status,
        headers,
        body: Vec::new(),
    };
    let mut pos = head;
    if head_only {
        return Some((a, pos));
    }
    if a.get("transfer-encoding").is_some() {
        loop {
            let line = buf[pos..].windows(2).position(|w| w == b"\r\n")? + pos;
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[pos..line]).ok()?, 16).ok()?;
            pos = line + 2;
            if buf.len() < pos + size + 2 {
                return None;
            }
            a.body.extend_from_slice(&buf[pos..pos + size]);
            pos += size + 2;
            if size == 0 {
                break;
            }
        }
    } else {
        let len: usize = a.get("content-length")?.parse().ok()?;
        if buf.len() < pos + len {
            return None;
        }
        a.body = buf[pos..pos + len].to_vec();
        pos += len;
    }
    Some((a, pos))
}

/// Reads answers (`heads[i]`: the i-th is an answer to HEAD) until all arrived or the server
/// closed; then whether it closed right after (waits a little for the close, a bound on a hung
/// test only when `expect_close`).
fn bodies_of(answers: &[Answer]) -> Vec<String> {
    answers
        .iter()
        .map(|a| String::from_utf8_lossy(&a.body).into_owned())
        .collect()
}

async fn read_answers(
    s: &mut TcpStream,
    heads: &[bool],
    expect_close: bool,
) -> (Vec<Answer>, bool) {
    let mut buf = Vec::new();
    let mut answers = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while answers.len() < heads.len() {
        while let Some((a, used)) = parse_answer(&buf, heads[answers.len()]) {
            answers.push(a);
            buf.drain(..used);
            if answers.len() == heads.len() {
                break;
            }
        }
        if answers.len() == heads.len() {
            break;
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return (answers, true),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    assert!(buf.is_empty(), "bytes after the answers: {buf:?}");
    let wait = if expect_close {
        Duration::from_secs(10)
    } else {
        Duration::from_millis(300)
    };
    let closed = match tokio::time::timeout(wait, s.read(&mut chunk)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => panic!(
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&chunk[..n])
        ),
        Err(_) => false,
    };
    (answers, closed)
}

#[tokio::test]
async fn pipelined_plain_requests_are_answered_in_order() {
    let w = world().await;
    let mut bytes = Vec::new();
    for (path, body) in [("/a", &b"one"[..]), ("/b", b""), ("/c", b"three33")] {
        bytes.extend_from_slice(&wire(&post(&w.host, path, body), "", None));
    }
    let mut s = TcpStream::connect(w.gw.proxy).await.unwrap();
    s.write_all(&bytes).await.unwrap();
    let (answers, closed) = read_answers(&mut s, &[false; 3], false).await;
    let bodies = bodies_of(&answers);
    assert_eq!(
        bodies,
        ["POST /a 3", "POST /b 0", "POST /c 7"],
        "{answers:?}"
    );
    for a in &answers {
        assert_eq!(a.status, 200);
        assert!(a.get("date").is_some_and(|d| d.ends_with(" GMT")), "{a:?}");
    }
    assert!(!closed, "a keep-alive connection was closed");
    // Still usable afterwards.
    s.write_all(&wire(&post(&w.host, "/d", b"x"), "", None))
        .await
        .unwrap();
    let (answers, _) = read_answers(&mut s, &[false], false).await;
    assert_eq!(answers[0].body, b"POST /d 1");
    assert_eq!(w.log.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn a_chunked_request_hands_the_connection_to_hyper_mid_way() {
    let w = world().await;
    let chunked_body = b"InstanceName=web&Size=large".to_vec();
    let second = post(&w.host, "/second", &chunked_body);
    let mut bytes = wire(&post(&w.host, "/first", b"abc"), "", None);
    bytes.extend_from_slice(&wire(&second, "", Some("transfer-encoding: chunked\r\n")));
    bytes.extend_from_slice(&chunked(&chunked_body));
    bytes.extend_from_slice(&wire(&post(&w.host, "/third", b"xyz1"), "", None));
    let mut s = TcpStream::connect(w.gw.proxy).await.unwrap();
    s.write_all(&bytes).await.unwrap();
    let (answers, closed) = read_answers(&mut s, &[false; 3], false).await;
    let bodies = bodies_of(&answers);
    assert_eq!(
        bodies,
        ["POST /first 3", "POST /second 27", "POST /third 4"],
        "{answers:?}"
    );
    assert!(!closed);
    let log = w.log.lock().unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(
        log[1].2, chunked_body,
        "the chunked body, forwarded byte-exact"
    );
}

#[tokio::test]
async fn ambiguous_framing_after_a_plain_request_is_handled_as_before() {
    let w = world().await;
    let body = b"InstanceName=web";
    let hidden = wire(&post(&w.host, "/hidden", b""), "", None);
    let mut payload = chunked(body);
    payload.extend_from_slice(&hidden);
    let cl_te = format!(
        "content-length: {}\r\ntransfer-encoding: chunked\r\n",
        payload.len()
    );
    let mut two_lengths_payload = body.to_vec();
    two_lengths_payload.extend_from_slice(&hidden);
    let two_lengths = format!(
        "content-length: {}\r\ncontent-length: {}\r\n",
        body.len(),
        two_lengths_payload.len()
    );
    // hyper's answers, kept: CL with TE is read as chunked and the connection closed after it;
    // two differing lengths are a 400.
    for (framing, payload, status) in [
        (cl_te, payload, 200),
        (two_lengths, two_lengths_payload, 400),
    ] {
        let before = w.log.lock().unwrap().len();
        let mut bytes = wire(&post(&w.host, "/plain", b"ok"), "", None);
        bytes.extend_from_slice(&wire(&post(&w.host, "/front", body), "", Some(&framing)));
        bytes.extend_from_slice(&payload);
        let mut s = TcpStream::connect(w.gw.proxy).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        let (answers, closed) = read_answers(&mut s, &[false; 2], true).await;
        assert_eq!(answers.len(), 2, "{framing}: {answers:?}");
        assert_eq!(answers[0].status, 200, "{framing}");
        assert_eq!(answers[1].status, status, "{framing}: {answers:?}");
        assert!(closed, "{framing}: the connection stayed open");
        let log = w.log.lock().unwrap();
        let paths: Vec<&str> = log[before..].iter().map(|(_, p, _)| p.as_str()).collect();
        let want: &[&str] = if status == 200 {
            &["/plain", "/front"]
        } else {
            &["/plain"]
        };
        assert_eq!(paths, want, "{framing}: the hidden request was forwarded");
    }
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let w = world().await;
    let mut s = TcpStream::connect(w.gw.proxy).await.unwrap();
    let mut bytes = wire(&post(&w.host, "/a", b"1"), "connection: close\r\n", None);
    // Never read: the connection ends with the first answer.
    bytes.extend_from_slice(&wire(&post(&w.host, "/b", b"2"), "", None));
    s.write_all(&bytes).await.unwrap();
    let (answers, closed) = read_answers(&mut s, &[false], true).await;
    assert_eq!(answers[0].status, 200);
    assert_eq!(answers[0].get("connection"), Some("close"));
    assert!(closed);
    assert_eq!(w.log.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn head_answers_carry_the_length_and_no_body() {
    let w = world().await;
    let head = signed_with(
        &w.host,
        "HEAD",
        "/h",
        "DescribeRegions",
        "",
        ALICE,
        b"",
        0,
        &[],
    );
    let mut bytes = wire(&head, "", Some(""));
    bytes.extend_from_slice(&wire(&post(&w.host, "/after", b""), "", None));
    let mut s = TcpStream::connect(w.gw.proxy).await.unwrap();
    s.write_all(&bytes).await.unwrap();
    let (answers, closed) = read_answers(&mut s, &[true, false], false).await;
    assert_eq!(answers[0].status, 200, "{answers:?}");
    assert_eq!(
        answers[0].get("content-length"),
        Some("HEAD /h 0".len().to_string().as_str())
    );
    // Had the HEAD answer carried body bytes, they would have been read as this answer.
    assert_eq!(answers[1].body, b"POST /after 0");
    assert!(!closed);
}

#[tokio::test]
async fn an_upstream_answer_without_a_length_is_relayed_chunked() {
    let w = world().await;
    let mut s = TcpStream::connect(w.gw.proxy).await.unwrap();
    let mut bytes = wire(&post(&w.host, "/chunked", b"12345"), "", None);
    bytes.extend_from_slice(&wire(&post(&w.host, "/after", b""), "", None));
    s.write_all(&bytes).await.unwrap();
    let (answers, closed) = read_answers(&mut s, &[false, false], false).await;
    assert_eq!(answers[0].get("transfer-encoding"), Some("chunked"));
    assert_eq!(answers[0].get("content-length"), None);
    assert_eq!(answers[0].body, b"POST /chunked 5");
    assert_eq!(answers[1].body, b"POST /after 0");
    assert!(!closed);
}

#[tokio::test]
async fn a_body_larger_than_one_read_is_verified_and_forwarded_byte_exact() {
    let w = world().await;
    let body: Vec<u8> = (0..60_000u32)
        .map(|i| b"abcdefghij"[(i % 10) as usize])
        .collect();
    let req = post(&w.host, "/big", &body);
    let bytes = wire(&req, "", None);
    let mut s = TcpStream::connect(w.gw.proxy).await.unwrap();
    let (first, rest) = bytes.split_at(bytes.len() / 3);
    s.write_all(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(rest).await.unwrap();
    let (answers, _) = read_answers(&mut s, &[false], false).await;
    assert_eq!(answers[0].status, 200, "{answers:?}");
    assert_eq!(answers[0].body, b"POST /big 60000");
    assert_eq!(w.log.lock().unwrap()[0].2, body);
}

#[tokio::test]
async fn h2_prior_knowledge_still_works() {
    let w = world().await;
    let answers = send_h2(w.gw.proxy, &[post(&w.host, "/h2", b"abc")]).await;
    assert_eq!(answers[0].status, 200);
    assert_eq!(&answers[0].body[..], b"POST /h2 3");
}

#[tokio::test]
async fn a_head_in_pieces_is_served_and_its_time_counts_from_the_wait_for_it() {
    let w = world_with(&["--header-read-timeout", "2s"]).await;
    let bytes = wire(&post(&w.host, "/split", b"abc"), "", None);
    let (first, rest) = bytes.split_at(bytes.len() / 2);
    let mut s = TcpStream::connect(w.gw.proxy).await.unwrap();
    s.write_all(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(rest).await.unwrap();
    let (answers, _) = read_answers(&mut s, &[false], false).await;
    assert_eq!(answers[0].status, 200, "{answers:?}");
    assert_eq!(answers[0].body, b"POST /split 3");

    // A new connection idle for 1.8 s, then half a head, then nothing: one timeout (2 s from
    // the connection's start) ends it, not a fresh one started by the first bytes (3.8 s).
    let mut s = TcpStream::connect(w.gw.proxy).await.unwrap();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(1800)).await;
    s.write_all(first).await.unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the connection was left open")
        .unwrap_or(0);
    let cut_after = started.elapsed();
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    assert!(cut_after < Duration::from_millis(3000), "{cut_after:?}");
    assert_eq!(w.log.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_body_arriving_after_its_head_is_read_from_the_connection() {
    let w = world().await;
    let body = b"InstanceName=web&Tag=late";
    let bytes = wire(&post(&w.host, "/late", body), "", None);
    let body_at = bytes.len() - body.len();
    let mut s = TcpStream::connect(w.gw.proxy).await.unwrap();
    s.write_all(&bytes[..body_at + 4]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The rest of the body and the next request in one write: the body ends where its length
    // says, and what follows is the next request.
    let mut rest = bytes[body_at + 4..].to_vec();
    rest.extend_from_slice(&wire(&post(&w.host, "/next", b"xyz"), "", None));
    s.write_all(&rest).await.unwrap();
    let (answers, closed) = read_answers(&mut s, &[false, false], false).await;
    assert_eq!(answers[0].status, 200, "{answers:?}");
    assert_eq!(
        answers[0].body,
        format!("POST /late {}", body.len()).as_bytes()
    );
    assert_eq!(answers[1].body, b"POST /next 3");
    assert!(!closed, "a keep-alive connection was closed");
    let log = w.log.lock().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].2, body, "the body, forwarded byte-exact");
    assert_eq!(log[1].2, b"xyz");
}

#[tokio::test]
async fn a_request_refused_before_its_body_is_read_ends_the_connection() {
    let w = world().await;
    // The unread part of the refused request's body is a whole signed request: it must never be
    // taken for the next one.
    let hidden = wire(&post(&w.host, "/hidden", b""), "", None);
    let bytes = wire(
        &post(&w.host, "/refused", &hidden),
        "host: elsewhere.example\r\n",
        None,
    );
    let body_at = bytes.len() - hidden.len();
    let mut s = TcpStream::connect(w.gw.proxy).await.unwrap();
    s.write_all(&bytes[..body_at + 3]).await.unwrap();
    let (answers, closed) = read_answers(&mut s, &[false], true).await;
    assert_eq!(answers[0].status, 400, "{answers:?}");
    assert_eq!(answers[0].get("connection"), Some("close"));
    assert!(closed, "the connection stayed open with the body unread");
    let _ = s.write_all(&bytes[body_at + 3..]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(w.log.lock().unwrap().is_empty(), "something was forwarded");
}
