//! Malformed and hostile requests against the real binary over real sockets.
//!
//! Every case names what it sends, the answer it must get (status and error `Code`, in the error
//! shape of the route's signature family) and whether the upstream may see it. Cases run in
//! tables grouped by theme; after every group the gateway must still answer `/healthz` and pass a
//! good request, and the recording upstream's count proves that nothing refused was forwarded.
//! Byte-level cases are written to a raw `TcpStream`; the rest go through hyper's client, over
//! HTTP/1.1 or HTTP/2 (prior knowledge).

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ------------------------------------------------------------------------------------------
// The world: write_rules' set plus AWS routes, path-prefix routes and an account whose
// allowlist holds link-local addresses.

const AWS: (&str, &str) = ("AKIABADINPUTTEST0001", "aws-secret-for-bad-input-tests/+x");
/// Account 300 admits fe80::/10 and 127.0.0.1 (the latter so the key works without a proxy).
const ZONED: (&str, &str) = ("AKZONEDKEY000001", "zoned-secret-for-tests-only");

struct World {
    dir: tempfile::TempDir,
    up: Upstream,
    gw: Akgate,
    /// `127.0.0.1:<port>`: routed to the `ecs` service.
    host: String,
}

async fn world() -> World {
    let up = upstream().await;
    let slow = hanging_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    write_rules(dir.path(), up.addr, slow);
    std::fs::write(
        dir.path().join("extra.toml"),
        format!(
            r#"
[[account]]
id = "300"
api_source_cidrs = ["fe80::/10", "127.0.0.1/32"]

[[access_key]]
id = "{aws}"
account = "100"
secret = "{aws_secret}"
status = "active"

[[access_key]]
id = "{zoned}"
account = "300"
secret = "{zoned_secret}"
status = "active"

[[service]]
name = "sts"
actions = ["GetFederationToken"]

[[service]]
name = "s3"
actions = ["DeleteBucket"]

[[service]]
name = "dynamodb"
actions = ["DeleteTable"]

[[route]]
host = "sts.test"
service = "sts"
signatures = "aws"
upstream = "http://{up}"

[[route]]
host = "s3.test"
service = "s3"
signatures = "aws"
upstream = "http://{up}"

[[route]]
host = "ddb.test"
service = "dynamodb"
signatures = "aws"
upstream = "http://{up}"

# One upstream serving two products under two prefixes: a path that leaves its prefix after
# normalisation would be judged as one and executed as the other.
[[route]]
host = "paths.test"
path_prefix = "/ecs"
service = "ecs"
upstream = "http://{up}"

[[route]]
host = "paths.test"
path_prefix = "/ram"
service = "ram"
upstream = "http://{up}"
"#,
            aws = AWS.0,
            aws_secret = AWS.1,
            zoned = ZONED.0,
            zoned_secret = ZONED.1,
            up = up.addr,
        ),
    )
    .unwrap();
    let gw = Akgate::start(dir.path(), "127.0.0.1:0", &["--audit-log", "off"]);
    let host = gw.proxy.to_string();
    World { dir, up, gw, host }
}

impl World {
    fn good(&self) -> Req {
        signed(&self.host, "DescribeRegions", "", ALICE, b"", 0)
    }

    /// After a group: the process answers its admin listener and still forwards a good request.
    async fn assert_alive(&self) {
        assert_eq!(admin_get(self.gw.admin, "/healthz").await.status, 200);
        let before = self.up.count();
        let r = send(self.gw.proxy, &self.good()).await;
        assert_eq!(
            r.status,
            200,
            "a good request after the group: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(self.up.count(), before + 1);
    }
}

// ------------------------------------------------------------------------------------------
// Expectations and the table runner.

/// What a case must produce.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// Verified and forwarded: 200 from the upstream, which saw exactly one more request.
    Pass,
    /// Refused by the gateway in Alibaba's JSON shape.
    Ali(u16, &'static str),
    /// Refused by the gateway in an AWS shape (query XML, JSON or S3 XML: whichever the body is,
    /// it must carry this code, and `x-amzn-ErrorType` too).
    Aws(u16, &'static str),
    /// Refused while parsing HTTP itself, before any decision: this status, no JSON body.
    Http(u16),
}

/// An answer, from hyper's client or parsed off a raw socket.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn code(&self) -> Option<String> {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|j| j["Code"].as_str().map(str::to_owned))
    }
}

impl From<Resp> for Answer {
    fn from(r: Resp) -> Self {
        Answer {
            status: r.status.as_u16(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: r.body.to_vec(),
        }
    }
}

/// Checks one answer; `forwarded` is how many requests the upstream saw because of it.
fn judge(answer: &Answer, want: Want, forwarded: usize) -> Result<(), String> {
    let fail = |why: String| {
        Err(format!(
            "{why}; got HTTP {} {}",
            answer.status,
            answer.text().chars().take(400).collect::<String>()
        ))
    };
    match want {
        Want::Pass => {
            if answer.status != 200 || answer.body != UPSTREAM_BODY.as_bytes() {
                return fail("expected the upstream's 200".into());
            }
            if forwarded != 1 {
                return fail(format!("the upstream saw {forwarded} requests, not 1"));
            }
            return Ok(());
        }
        _ if forwarded != 0 => {
            return fail(format!(
                "refused, yet the upstream saw {forwarded} requests"
            ));
        }
        Want::Ali(status, code) => {
            if answer.status != status {
                return fail(format!("expected HTTP {status} {code}"));
            }
            if answer.header("content-type") != Some("application/json;charset=utf-8") {
                return fail("expected Alibaba's JSON content type".into());
            }
            let j: serde_json::Value = match serde_json::from_slice(&answer.body) {
                Ok(j) => j,
                Err(_) => return fail("expected a JSON body".into()),
            };
            if j["Code"] != code {
                return fail(format!("expected Code {code}"));
            }
            for field in ["RequestId", "HostId", "Message", "Recommend"] {
                if !j[field].is_string() {
                    return fail(format!("missing {field}"));
                }
            }
        }
        Want::Aws(status, code) => {
            if answer.status != status {
                return fail(format!("expected HTTP {status} {code}"));
            }
            let text = answer.text();
            let ct = answer.header("content-type").unwrap_or_default();
            let shaped = if ct.starts_with("application/x-amz-json") {
                serde_json::from_slice::<serde_json::Value>(&answer.body)
                    .is_ok_and(|j| j["__type"] == code && j["message"].is_string())
            } else if ct == "text/xml" {
                text.contains("<ErrorResponse><Error><Type>Sender</Type>")
                    && text.contains(&format!("<Code>{code}</Code>"))
            } else if ct == "application/xml" {
                text.contains(&format!("<Error><Code>{code}</Code>"))
            } else {
                false
            };
            if !shaped {
                return fail(format!("expected an AWS-shaped {code}"));
            }
            if answer.header("x-amzn-errortype") != Some(code) {
                return fail(format!("expected x-amzn-ErrorType {code}"));
            }
        }
        Want::Http(status) => {
            if answer.status != status {
                return fail(format!("expected HTTP {status} from the HTTP layer"));
            }
            if answer.code().is_some() {
                return fail("expected no decision (no error code) for unparseable HTTP".into());
            }
        }
    }
    Ok(())
}

/// A request as sent: through hyper's HTTP/1.1 client, or as raw bytes.
enum Send {
    H1(Req),
    Raw(Vec<u8>),
}

struct Case {
    name: &'static str,
    send: Send,
    want: Want,
}

fn case(name: &'static str, req: Req, want: Want) -> Case {
    Case {
        name,
        send: Send::H1(req),
        want,
    }
}

fn raw_case(name: &'static str, bytes: impl Into<Vec<u8>>, want: Want) -> Case {
    Case {
        name,
        send: Send::Raw(bytes.into()),
        want,
    }
}

/// Runs every case (all of them, even after a failure) and reports all failures at once.
async fn run_table(w: &World, group: &str, cases: Vec<Case>) {
    let mut failures = Vec::new();
    let total = cases.len();
    for c in cases {
        let before = w.up.count();
        let answer = match &c.send {
            Send::H1(req) => Answer::from(send(w.gw.proxy, req).await),
            Send::Raw(bytes) => {
                let ex = exchange(w.gw.proxy, None, bytes, 1).await;
                match ex.answers.into_iter().next() {
                    Some(a) => a,
                    None => {
                        failures.push(format!("{}: no answer, connection closed", c.name));
                        continue;
                    }
                }
            }
        };
        let forwarded = w.up.count() - before;
        if let Err(e) = judge(&answer, c.want, forwarded) {
            failures.push(format!("{}: {e}", c.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{group}: {} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    w.assert_alive().await;
}

// ------------------------------------------------------------------------------------------
// Raw HTTP/1.1 over a socket.

struct Exchange {
    answers: Vec<Answer>,
    /// The server closed the connection after the answers.
    closed: bool,
}

async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0)).unwrap();
    }
    socket.connect(addr).await.unwrap()
}

/// Parses one complete HTTP/1.1 response off the front of `buf`; `(answer, bytes used)`.
fn parse_answer(buf: &[u8]) -> Option<(Answer, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut pos = end + 4;
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let body = if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let line_end = buf[pos..].windows(2).position(|w| w == b"\r\n")? + pos;
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[pos..line_end]).ok()?, 16).ok()?;
            pos = line_end + 2;
            if size == 0 {
                // No trailers from these servers: the final CRLF follows.
                if buf.len() < pos + 2 {
                    return None;
                }
                pos += 2;
                break;
            }
            if buf.len() < pos + size + 2 {
                return None;
            }
            body.extend_from_slice(&buf[pos..pos + size]);
            pos += size + 2;
        }
        body
    } else {
        let len: usize = get("content-length").map_or(Some(0), |v| v.parse().ok())?;
        if buf.len() < pos + len {
            return None;
        }
        pos += len;
        buf[end + 4..pos].to_vec()
    };
    Some((
        Answer {
            status,
            headers,
            body,
        },
        pos,
    ))
}

/// Reads answers until `want` arrived or the server closed the connection (10 s at most: a
/// bound on a hung test, not a speed requirement).
async fn read_answers(s: &mut TcpStream, want: usize) -> Exchange {
    let mut buf = Vec::new();
    let mut answers = Vec::new();
    let mut closed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut chunk = vec![0u8; 16 * 1024];
    while answers.len() < want {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
        while let Some((a, used)) = parse_answer(&buf) {
            answers.push(a);
            buf.drain(..used);
        }
    }
    Exchange { answers, closed }
}

/// Whether the server closes the connection (reads until EOF, 10 s at most).
async fn closes(s: &mut TcpStream) -> bool {
    let mut chunk = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn exchange(addr: SocketAddr, source: Option<IpAddr>, bytes: &[u8], want: usize) -> Exchange {
    let mut s = connect(addr, source).await;
    // The server may answer and close before reading everything; that is not an error here.
    let _ = s.write_all(bytes).await;
    read_answers(&mut s, want).await
}

/// A request as HTTP/1.1 bytes: its headers in order, `Content-Length` added for a body unless
/// `framing` replaces it (the caller then writes the framing headers and body itself).
fn wire_head(req: &Req, framing: Option<&str>) -> Vec<u8> {
    let mut out = format!("{} {} HTTP/1.1\r\n", req.method, req.path_and_query).into_bytes();
    for (k, v) in &req.headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    match framing {
        Some(f) => out.extend_from_slice(f.as_bytes()),
        None if !req.body.is_empty() => {
            out.extend_from_slice(format!("content-length: {}\r\n", req.body.len()).as_bytes())
        }
        None => {}
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// `req` as bytes with `name` replaced by a value of arbitrary bytes.
fn wire_with(req: &Req, name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = wire_head(&req.clone().without(name), None);
    let at = out.len() - 2;
    let mut line = format!("{name}: ").into_bytes();
    line.extend_from_slice(value);
    line.extend_from_slice(b"\r\n");
    out.splice(at..at, line);
    out.extend_from_slice(&req.body);
    out
}

fn wire(req: &Req) -> Vec<u8> {
    let mut out = wire_head(req, None);
    out.extend_from_slice(&req.body);
    out
}

/// `body` in chunked encoding, in pieces of `size`.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

// ------------------------------------------------------------------------------------------
// Signers and request surgery.

fn header<'a>(r: &'a Req, name: &str) -> &'a str {
    r.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header"))
}

/// Rewrites the Authorization header's value.
fn auth(r: &Req, f: impl FnOnce(&str) -> String) -> Req {
    let value = f(header(r, "authorization"));
    r.clone().set("Authorization", &value)
}

/// Rewrites the path and query.
fn target(r: &Req, f: impl FnOnce(&str) -> String) -> Req {
    let mut r = r.clone();
    r.path_and_query = f(&r.path_and_query);
    r
}

/// Adds a second copy of a header, with the same value unless `value` is given.
fn twice(r: &Req, name: &str, value: Option<&str>) -> Req {
    let v = value.unwrap_or(header(r, name)).to_owned();
    r.clone().header(name, &v)
}

/// A V3 request with every part chosen by the caller; the date is sent as given.
#[allow(clippy::too_many_arguments)]
fn v3(
    host: &str,
    method: &str,
    path: &str,
    query: &str,
    action: &str,
    key: (&str, &str),
    body: &[u8],
    date: &str,
) -> Req {
    let mut headers = vec![
        ("host".to_string(), host.to_string()),
        ("x-acs-action".to_string(), action.to_string()),
        ("x-acs-version".to_string(), "2014-05-26".to_string()),
        ("x-acs-date".to_string(), date.to_string()),
        ("x-acs-signature-nonce".to_string(), nonce()),
    ];
    if !body.is_empty() {
        headers.push((
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        ));
    }
    akgate::auth::acs3::sign(
        method,
        path,
        query,
        &mut headers,
        body,
        key.0,
        key.1.as_bytes(),
    );
    Req {
        method: method.into(),
        path_and_query: if query.is_empty() {
            path.into()
        } else {
            format!("{path}?{query}")
        },
        headers,
        body: body.to_vec(),
    }
}

fn iso(offset: i64) -> String {
    akgate::time::format_iso8601_utc(now() + offset)
}

/// RPC v1 with every parameter chosen by the caller (signed over exactly these).
fn rpc(host: &str, params: &[(&str, &str)], key: (&str, &str)) -> Req {
    let signature = akgate::auth::rpc1::sign("GET", params, key.1);
    let enc = akgate::auth::encoding::percent_encode;
    let mut query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    query.push(format!("Signature={}", enc(&signature)));
    Req {
        method: "GET".into(),
        path_and_query: format!("/?{}", query.join("&")),
        headers: vec![("host".into(), host.into())],
        body: vec![],
    }
}

fn rpc_at(host: &str, timestamp: &str) -> Req {
    let n = nonce();
    rpc(
        host,
        &[
            ("AccessKeyId", ALICE.0),
            ("Action", "DescribeRegions"),
            ("Format", "JSON"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", &n),
            ("SignatureVersion", "1.0"),
            ("Timestamp", timestamp),
            ("Version", "2014-05-26"),
        ],
        ALICE,
    )
}

/// ROA v1 as tea-openapi sends it (with a nonce), signed by the gateway's own signer.
fn roa(host: &str, path: &str, date: &str, body: &[u8], key: (&str, &str)) -> Req {
    let mut headers = vec![
        ("host".to_string(), host.to_string()),
        ("accept".to_string(), "application/json".to_string()),
        ("date".to_string(), date.to_string()),
        ("x-acs-action".to_string(), "DescribeClusters".to_string()),
        ("x-acs-version".to_string(), "2015-12-15".to_string()),
        ("x-acs-signature-nonce".to_string(), nonce()),
    ];
    if !body.is_empty() {
        headers.push(("content-type".into(), "application/json".into()));
    }
    akgate::auth::roa1::sign(
        "POST",
        path,
        "",
        &mut headers,
        body,
        key.0,
        key.1.as_bytes(),
    );
    Req {
        method: "POST".into(),
        path_and_query: path.into(),
        headers,
        body: body.to_vec(),
    }
}

fn http_date(offset: i64) -> String {
    akgate::time::format_http_date(now() + offset)
}

fn amz_date(t: i64) -> String {
    akgate::time::format_iso8601_utc(t).replace(['-', ':'], "")
}

/// SigV4 in the Authorization header, signed by the gateway's botocore-style signer.
#[allow(clippy::too_many_arguments)]
fn sigv4_at(
    method: &str,
    host: &str,
    path: &str,
    query: &str,
    service: &str,
    mut headers: Vec<(String, String)>,
    body: &[u8],
    amz: &str,
) -> Req {
    headers.insert(0, ("host".into(), host.into()));
    akgate::auth::sigv4::sign_headers(
        method,
        path,
        query,
        &mut headers,
        body,
        AWS.0,
        AWS.1.as_bytes(),
        "us-east-1",
        service,
        amz,
    );
    Req {
        method: method.into(),
        path_and_query: if query.is_empty() {
            path.into()
        } else {
            format!("{path}?{query}")
        },
        headers,
        body: body.to_vec(),
    }
}

const STS_BODY: &[u8] = b"Action=GetCallerIdentity&Version=2011-06-15";

fn sts_at(amz: &str) -> Req {
    sigv4_at(
        "POST",
        "sts.test",
        "/",
        "",
        "sts",
        vec![(
            "content-type".into(),
            "application/x-www-form-urlencoded; charset=utf-8".into(),
        )],
        STS_BODY,
        amz,
    )
}

fn sts() -> Req {
    sts_at(&amz_date(now()))
}

fn ddb() -> Req {
    sigv4_at(
        "POST",
        "ddb.test",
        "/",
        "",
        "dynamodb",
        vec![
            ("content-type".into(), "application/x-amz-json-1.0".into()),
            ("x-amz-target".into(), "DynamoDB_20120810.ListTables".into()),
        ],
        b"{}",
        &amz_date(now()),
    )
}

fn hex_sha256(data: &[u8]) -> String {
    akgate::auth::encoding::hex_lower(&Sha256::digest(data))
}

/// A presigned S3 GET, signed independently of the gateway's verifier: `extra` query parameters
/// (already encoded, sorted after the X-Amz-* ones) are signed too.
fn presigned_s3(path: &str, signed_at: i64, expires: &str, extra: &str) -> Req {
    let date = amz_date(signed_at);
    let scope = format!("{}/us-east-1/s3/aws4_request", &date[..8]);
    let credential = format!("{}/{scope}", AWS.0).replace('/', "%2F");
    let mut query = format!(
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={credential}&X-Amz-Date={date}\
         &X-Amz-Expires={expires}&X-Amz-SignedHeaders=host"
    );
    if !extra.is_empty() {
        query = format!("{query}&{extra}");
    }
    let canonical = format!("GET\n{path}\n{query}\nhost:s3.test\n\nhost\nUNSIGNED-PAYLOAD");
    let sts = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex_sha256(canonical.as_bytes())
    );
    let mut mac = akgate::auth::sigv4::derive_signing_mac(
        &akgate::rules::Secret::new(AWS.1.as_bytes()),
        &date[..8],
        "us-east-1",
        "s3",
    );
    hmac::Mac::update(&mut mac, sts.as_bytes());
    let sig = akgate::auth::encoding::hex_lower(&hmac::Mac::finalize(mac).into_bytes());
    Req {
        method: "GET".into(),
        path_and_query: format!("{path}?{query}&X-Amz-Signature={sig}"),
        headers: vec![("host".into(), "s3.test".into())],
        body: vec![],
    }
}

fn presigned() -> Req {
    presigned_s3("/bucket/key.txt", now(), "300", "")
}

const BIG: usize = 60 * 1024;

// ------------------------------------------------------------------------------------------
// Malformed Authorization, V3.

#[tokio::test]
async fn malformed_v3_authorization() {
    let w = world().await;
    let incomplete = Want::Ali(400, "IncompleteSignature");
    let fresh = || w.good();
    let with = |v: String| fresh().set("Authorization", &v);
    // Each case re-signs (fresh nonce) and then rewrites Authorization the same way.
    let rewrite = |f: &dyn Fn(&str, &str, &str, &str) -> String| {
        let r = fresh();
        let a = header(&r, "authorization").to_owned();
        let (alg, fields) = a.split_once(' ').unwrap();
        let mut p = fields.split(',');
        let v = f(alg, p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
        r.set("Authorization", &v)
    };
    let raw_non_utf8 = wire_with(
        &fresh(),
        "Authorization",
        b"ACS3-HMAC-SHA256 Credential=AK\xc3\xff\xfe,SignedHeaders=host,Signature=00",
    );
    let cases = vec![
        case("control: as signed", fresh(), Want::Pass),
        case(
            "Credential missing",
            rewrite(&|alg, _, sh, sig| format!("{alg} {sh},{sig}")),
            incomplete,
        ),
        case(
            "SignedHeaders missing",
            rewrite(&|alg, c, _, sig| format!("{alg} {c},{sig}")),
            incomplete,
        ),
        case(
            "Signature missing",
            rewrite(&|alg, c, sh, _| format!("{alg} {c},{sh}")),
            incomplete,
        ),
        case(
            "only the algorithm",
            with("ACS3-HMAC-SHA256".to_owned()),
            incomplete,
        ),
        case(
            "Credential twice",
            rewrite(&|alg, c, sh, sig| format!("{alg} {c},{c},{sh},{sig}")),
            incomplete,
        ),
        case(
            "Signature twice",
            rewrite(&|alg, c, sh, sig| format!("{alg} {c},{sh},{sig},{sig}")),
            incomplete,
        ),
        case(
            "fields out of order",
            rewrite(&|alg, c, sh, sig| format!("{alg} {sh},{c},{sig}")),
            incomplete,
        ),
        case(
            "two Authorization headers, both the signed one",
            twice(&fresh(), "authorization", None),
            incomplete,
        ),
        case(
            "two Authorization headers, the second garbage",
            twice(&fresh(), "authorization", Some("Bearer x")),
            incomplete,
        ),
        // Whitespace the grammar tolerates does not change what is verified.
        case(
            "two spaces after the algorithm",
            rewrite(&|alg, c, sh, sig| format!("{alg}  {c},{sh},{sig}")),
            Want::Pass,
        ),
        case(
            "a space after each comma",
            rewrite(&|alg, c, sh, sig| format!("{alg} {c}, {sh}, {sig}")),
            Want::Pass,
        ),
        case(
            "a space before =",
            rewrite(&|alg, c, sh, sig| format!("{alg} {},{sh},{sig}", c.replace('=', " ="))),
            incomplete,
        ),
        case(
            "a tab instead of the space",
            rewrite(&|alg, c, sh, sig| format!("{alg}\t{c},{sh},{sig}")),
            incomplete,
        ),
        case(
            "algorithm in lower case",
            rewrite(&|alg, c, sh, sig| format!("{} {c},{sh},{sig}", alg.to_lowercase())),
            incomplete,
        ),
        case(
            "field names in lower case",
            rewrite(&|alg, c, sh, sig| {
                format!(
                    "{alg} {},{},{}",
                    c.replace("Credential", "credential"),
                    sh.replace("SignedHeaders", "signedheaders"),
                    sig.replace("Signature", "signature")
                )
            }),
            incomplete,
        ),
        case(
            "an unknown ACS3 algorithm",
            rewrite(&|_, c, sh, sig| format!("ACS3-HMAC-SHA512 {c},{sh},{sig}")),
            incomplete,
        ),
        // The SM3 body digest of an empty body is not the SHA-256 one the client declared.
        case(
            "algorithm relabelled SM3",
            rewrite(&|_, c, sh, sig| format!("ACS3-HMAC-SM3 {c},{sh},{sig}")),
            Want::Ali(400, "InvalidContentSha256"),
        ),
        case(
            "algorithm relabelled RSA",
            rewrite(&|_, c, sh, sig| format!("ACS3-RSA-SHA256 {c},{sh},{sig}")),
            incomplete,
        ),
        case(
            "60 KB Credential",
            rewrite(&|alg, _, sh, sig| format!("{alg} Credential={},{sh},{sig}", "A".repeat(BIG))),
            Want::Ali(404, "InvalidAccessKeyId.NotFound"),
        ),
        case(
            "60 KB Signature",
            rewrite(&|alg, c, sh, _| format!("{alg} {c},{sh},Signature={}", "a".repeat(BIG))),
            incomplete,
        ),
        case(
            "60 KB SignedHeaders",
            rewrite(&|alg, c, sh, sig| format!("{alg} {c},{sh};{},{sig}", "x".repeat(BIG))),
            // A well-formed list naming a header that was not sent: it is canonicalised as
            // empty, which is not what the client signed.
            Want::Ali(400, "SignatureDoesNotMatch"),
        ),
        case(
            "empty Authorization",
            fresh().set("Authorization", ""),
            incomplete,
        ),
        case(
            "empty Credential",
            rewrite(&|alg, _, sh, sig| format!("{alg} Credential=,{sh},{sig}")),
            Want::Ali(400, "MissingAccessKeyId"),
        ),
        case(
            "empty SignedHeaders",
            rewrite(&|alg, c, _, sig| format!("{alg} {c},SignedHeaders=,{sig}")),
            incomplete,
        ),
        case(
            "empty Signature",
            rewrite(&|alg, c, sh, _| format!("{alg} {c},{sh},Signature=")),
            incomplete,
        ),
        case(
            "trailing comma",
            rewrite(&|alg, c, sh, sig| format!("{alg} {c},{sh},{sig},")),
            incomplete,
        ),
        case(
            "non-hex Signature of the right length",
            rewrite(&|alg, c, sh, _| format!("{alg} {c},{sh},Signature={}", "g".repeat(64))),
            incomplete,
        ),
        case(
            "one Signature digit changed",
            rewrite(&|alg, c, sh, sig| {
                let last = if sig.ends_with('0') { "1" } else { "0" };
                format!("{alg} {c},{sh},{}{last}", &sig[..sig.len() - 1])
            }),
            Want::Ali(400, "SignatureDoesNotMatch"),
        ),
        raw_case("non-UTF-8 bytes in Authorization", raw_non_utf8, incomplete),
    ];
    run_table(&w, "V3 Authorization", cases).await;
}

// ------------------------------------------------------------------------------------------
// Malformed RPC v1 parameters.

#[tokio::test]
async fn malformed_rpc_parameters() {
    let w = world().await;
    let h = w.host.as_str();
    let incomplete = Want::Ali(400, "IncompleteSignature");
    let fresh = || rpc_signed(h, "GET", "DescribeRegions", &[], ALICE, 0);
    // Replaces the first `name=value` pair of the query.
    let edit = |name: &str, f: &dyn Fn(&str) -> String| {
        target(&fresh(), |pq| {
            let (path, q) = pq.split_once('?').unwrap();
            let pairs: Vec<String> = q
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, v)) if k == name => f(v),
                    _ => p.to_owned(),
                })
                .filter(|p| !p.is_empty())
                .collect();
            format!("{path}?{}", pairs.join("&"))
        })
    };
    let value_of = |r: &Req, name: &str| {
        r.path_and_query
            .split(['?', '&'])
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };
    let form_sig = {
        let r = fresh();
        let sig = value_of(&r, "Signature");
        let mut r = r.set("content-type", "application/x-www-form-urlencoded");
        r.body = format!("Signature={sig}").into_bytes();
        r
    };
    let cases = vec![
        case("control: as signed", fresh(), Want::Pass),
        case(
            "Signature removed",
            edit("Signature", &|_| String::new()),
            Want::Ali(400, "MissingAccessKeyId"),
        ),
        case(
            "Signature twice",
            edit("Signature", &|v| format!("Signature={v}&Signature={v}")),
            incomplete,
        ),
        case(
            "Signature in the query and in the form body",
            form_sig,
            incomplete,
        ),
        case(
            "AccessKeyId twice",
            edit("AccessKeyId", &|v| {
                format!("AccessKeyId={v}&AccessKeyId={v}")
            }),
            incomplete,
        ),
        case(
            "AccessKeyId twice, the second another key",
            edit("AccessKeyId", &|v| {
                format!("AccessKeyId={v}&AccessKeyId={}", LEAKED.0)
            }),
            incomplete,
        ),
        case(
            "AccessKeyId removed",
            edit("AccessKeyId", &|_| String::new()),
            Want::Ali(400, "MissingAccessKeyId"),
        ),
        case(
            "AccessKeyId empty",
            edit("AccessKeyId", &|_| "AccessKeyId=".into()),
            Want::Ali(400, "MissingAccessKeyId"),
        ),
        case(
            "AccessKeyId 60 KB",
            edit("AccessKeyId", &|_| {
                format!("AccessKeyId={}", "A".repeat(BIG))
            }),
            Want::Ali(404, "InvalidAccessKeyId.NotFound"),
        ),
        case(
            "AccessKeyId not UTF-8",
            edit("AccessKeyId", &|v| format!("AccessKeyId={v}%FF")),
            incomplete,
        ),
        case(
            "SignatureNonce removed",
            edit("SignatureNonce", &|_| String::new()),
            incomplete,
        ),
        case(
            "SignatureNonce empty",
            edit("SignatureNonce", &|_| "SignatureNonce=".into()),
            incomplete,
        ),
        case(
            "SignatureNonce twice",
            edit("SignatureNonce", &|v| {
                format!("SignatureNonce={v}&SignatureNonce={v}x")
            }),
            incomplete,
        ),
        case(
            "Timestamp removed",
            edit("Timestamp", &|_| String::new()),
            incomplete,
        ),
        case(
            "Timestamp garbage",
            edit("Timestamp", &|_| "Timestamp=yesterday".into()),
            Want::Ali(400, "InvalidTimeStamp.Format"),
        ),
        case(
            "Signature not base64",
            edit("Signature", &|_| "Signature=not*base64!".into()),
            incomplete,
        ),
        case(
            "Signature a non-UTF-8 escape",
            edit("Signature", &|_| "Signature=%FF%FE".into()),
            incomplete,
        ),
        case(
            "Signature 60 KB",
            edit("Signature", &|_| format!("Signature={}", "A".repeat(BIG))),
            incomplete,
        ),
        case(
            "Signature of another request",
            edit("Signature", &|_| {
                format!("Signature={}", value_of(&fresh(), "Signature"))
            }),
            Want::Ali(400, "SignatureDoesNotMatch"),
        ),
        // Parameter names are case-sensitive: `signature` is not a signature.
        case(
            "signature in lower case",
            edit("Signature", &|v| format!("signature={v}")),
            Want::Ali(400, "MissingAccessKeyId"),
        ),
        case(
            "accesskeyid in lower case",
            edit("AccessKeyId", &|v| format!("accesskeyid={v}")),
            Want::Ali(400, "MissingAccessKeyId"),
        ),
        case(
            "SignatureMethod HMAC-SHA256",
            edit("SignatureMethod", &|_| "SignatureMethod=HMAC-SHA256".into()),
            incomplete,
        ),
        case(
            "SignatureVersion 2.0",
            edit("SignatureVersion", &|_| "SignatureVersion=2.0".into()),
            incomplete,
        ),
        case(
            "Action twice, differently",
            edit("Action", &|v| format!("Action={v}&action=DeleteInstance")),
            incomplete,
        ),
        case(
            "a path other than /",
            target(&fresh(), |pq| format!("/x{pq}")),
            incomplete,
        ),
        // Empty pairs are no parameters: the signed set is unchanged, and the upstream receives
        // the query byte for byte.
        case(
            "empty pairs around the parameters",
            target(&fresh(), |pq| pq.replacen('?', "?&&", 1) + "&"),
            Want::Pass,
        ),
    ];
    run_table(&w, "RPC v1 parameters", cases).await;
    let r = target(&fresh(), |pq| pq.replacen('?', "?&&", 1) + "&");
    assert_eq!(send(w.gw.proxy, &r).await.status, 200);
    assert_eq!(w.up.last().path_and_query, r.path_and_query);
}

// ------------------------------------------------------------------------------------------
// Malformed ROA v1 `Authorization: acs ID:SIG`.

#[tokio::test]
async fn malformed_roa_authorization() {
    let w = world().await;
    let h = w.host.as_str();
    let incomplete = Want::Ali(400, "IncompleteSignature");
    let fresh = || roa(h, "/clusters", &http_date(0), b"", ALICE);
    let sig_of = |r: &Req| {
        header(r, "authorization")
            .rsplit(':')
            .next()
            .unwrap()
            .to_owned()
    };
    let cases = vec![
        case("control: as signed", fresh(), Want::Pass),
        case(
            "with a body and its Content-MD5",
            roa(h, "/clusters", &http_date(0), b"{\"a\":1}", ALICE),
            Want::Pass,
        ),
        case(
            "nothing after acs",
            fresh().set("Authorization", "acs "),
            incomplete,
        ),
        case(
            "no colon",
            auth(&fresh(), |a| a.replace(':', "")),
            incomplete,
        ),
        case(
            "empty AccessKeyId",
            auth(&fresh(), |a| {
                format!("acs :{}", a.rsplit(':').next().unwrap())
            }),
            Want::Ali(400, "MissingAccessKeyId"),
        ),
        case(
            "empty signature",
            fresh().set("Authorization", &format!("acs {}:", ALICE.0)),
            incomplete,
        ),
        case(
            "a second colon",
            auth(&fresh(), |a| format!("{a}:extra")),
            incomplete,
        ),
        case(
            "scheme in upper case",
            auth(&fresh(), |a| a.replacen("acs", "ACS", 1)),
            incomplete,
        ),
        case(
            "two spaces after acs",
            auth(&fresh(), |a| a.replacen("acs ", "acs  ", 1)),
            Want::Pass,
        ),
        case(
            "a space after the colon",
            auth(&fresh(), |a| a.replacen(':', ": ", 1)),
            incomplete,
        ),
        case(
            "trailing comma",
            auth(&fresh(), |a| format!("{a},")),
            incomplete,
        ),
        case(
            "60 KB signature",
            fresh().set(
                "Authorization",
                &format!("acs {}:{}", ALICE.0, "A".repeat(BIG)),
            ),
            incomplete,
        ),
        case(
            "two Authorization headers",
            twice(&fresh(), "authorization", None),
            incomplete,
        ),
        case(
            "signature of another request",
            {
                let other = sig_of(&fresh());
                auth(&fresh(), |a| {
                    format!("{}:{other}", a.rsplit_once(':').unwrap().0)
                })
            },
            Want::Ali(400, "SignatureDoesNotMatch"),
        ),
        case("Date missing", fresh().without("date"), incomplete),
        case("Date twice", twice(&fresh(), "date", None), incomplete),
        case(
            "x-acs-signature-nonce twice",
            twice(&fresh(), "x-acs-signature-nonce", None),
            incomplete,
        ),
        case(
            "Content-MD5 not the body's",
            {
                let mut r = roa(h, "/clusters", &http_date(0), b"{\"a\":1}", ALICE);
                r.body = b"{\"a\":2}".to_vec();
                r
            },
            Want::Ali(400, "InvalidContentMD5"),
        ),
        raw_case(
            "non-UTF-8 bytes in Authorization",
            wire_with(&fresh(), "Authorization", b"acs AK\xff:AAAA"),
            incomplete,
        ),
    ];
    run_table(&w, "ROA v1 Authorization", cases).await;
}

// ------------------------------------------------------------------------------------------
// Malformed SigV4, in the header and presigned: AWS error shapes and codes.

#[tokio::test]
async fn malformed_sigv4_header_and_presigned() {
    let w = world().await;
    let incomplete = Want::Aws(400, "IncompleteSignature");
    let rewrite = |r: Req, f: &dyn Fn(&str, &str, &str) -> String| {
        auth(&r, |a| {
            let rest = a.strip_prefix("AWS4-HMAC-SHA256 ").unwrap();
            let mut p = rest.split(", ");
            f(p.next().unwrap(), p.next().unwrap(), p.next().unwrap())
        })
    };
    let alg = "AWS4-HMAC-SHA256";
    let presigned_edit = |f: &dyn Fn(&str) -> String| target(&presigned(), f);
    let cases = vec![
        case("control: STS query call", sts(), Want::Pass),
        case("control: DynamoDB JSON call", ddb(), Want::Pass),
        case("control: presigned S3 GET", presigned(), Want::Pass),
        case(
            "Credential missing",
            rewrite(sts(), &|_, sh, sig| format!("{alg} {sh}, {sig}")),
            incomplete,
        ),
        case(
            "Signature missing",
            rewrite(sts(), &|c, sh, _| format!("{alg} {c}, {sh}")),
            incomplete,
        ),
        case(
            "Signature twice",
            rewrite(sts(), &|c, sh, sig| {
                format!("{alg} {c}, {sh}, {sig}, {sig}")
            }),
            incomplete,
        ),
        case(
            "trailing comma",
            rewrite(sts(), &|c, sh, sig| format!("{alg} {c}, {sh}, {sig},")),
            incomplete,
        ),
        case(
            "two Authorization headers",
            twice(&sts(), "authorization", None),
            incomplete,
        ),
        case(
            "algorithm in lower case",
            rewrite(sts(), &|c, sh, sig| {
                format!("aws4-hmac-sha256 {c}, {sh}, {sig}")
            }),
            incomplete,
        ),
        case(
            "AWS4-HMAC-SHA512",
            rewrite(sts(), &|c, sh, sig| {
                format!("AWS4-HMAC-SHA512 {c}, {sh}, {sig}")
            }),
            incomplete,
        ),
        case(
            "field names in lower case",
            rewrite(sts(), &|c, sh, sig| {
                format!(
                    "{alg} {}, {sh}, {sig}",
                    c.replace("Credential", "credential")
                )
            }),
            incomplete,
        ),
        case(
            "empty Credential",
            rewrite(sts(), &|_, sh, sig| {
                format!("{alg} Credential=, {sh}, {sig}")
            }),
            Want::Aws(403, "MissingAuthenticationToken"),
        ),
        case(
            "Credential without a scope",
            rewrite(sts(), &|_, sh, sig| {
                format!("{alg} Credential={}, {sh}, {sig}", AWS.0)
            }),
            incomplete,
        ),
        case(
            "Credential scope for another service",
            rewrite(sts(), &|c, sh, sig| {
                format!("{alg} {}, {sh}, {sig}", c.replace("/sts/", "/iam/"))
            }),
            incomplete,
        ),
        case(
            "Credential 60 KB",
            rewrite(sts(), &|_, sh, sig| {
                format!("{alg} Credential={}, {sh}, {sig}", "A".repeat(BIG))
            }),
            incomplete,
        ),
        case(
            "Signature of 63 digits",
            rewrite(sts(), &|c, sh, sig| {
                format!("{alg} {c}, {sh}, {}", &sig[..sig.len() - 1])
            }),
            incomplete,
        ),
        case(
            "empty SignedHeaders",
            rewrite(sts(), &|c, _, sig| {
                format!("{alg} {c}, SignedHeaders=, {sig}")
            }),
            incomplete,
        ),
        case(
            "SignedHeaders without host",
            rewrite(sts(), &|c, sh, sig| {
                format!("{alg} {c}, {}, {sig}", sh.replace("host;", ""))
            }),
            incomplete,
        ),
        case(
            "SignedHeaders without x-amz-date",
            rewrite(sts(), &|c, sh, sig| {
                format!("{alg} {c}, {}, {sig}", sh.replace(";x-amz-date", ""))
            }),
            incomplete,
        ),
        case(
            "SignedHeaders not sorted",
            rewrite(sts(), &|c, sh, sig| {
                format!(
                    "{alg} {c}, {}, {sig}",
                    sh.replace("content-type;host", "host;content-type")
                )
            }),
            incomplete,
        ),
        case(
            "SignedHeaders in upper case",
            rewrite(sts(), &|c, sh, sig| {
                format!("{alg} {c}, {}, {sig}", sh.replace("host", "Host"))
            }),
            incomplete,
        ),
        case(
            "X-Amz-Date twice",
            twice(&sts(), "x-amz-date", None),
            incomplete,
        ),
        case(
            "x-amz-content-sha256 not the body's",
            {
                let mut r = sts();
                r.body = b"Action=GetFederationToken&Version=2011-06-15".to_vec();
                r
            },
            Want::Aws(400, "XAmzContentSHA256Mismatch"),
        ),
        case(
            "one Signature digit changed (JSON protocol)",
            rewrite(ddb(), &|c, sh, sig| {
                let last = if sig.ends_with('0') { "1" } else { "0" };
                format!("{alg} {c}, {sh}, {}{last}", &sig[..sig.len() - 1])
            }),
            Want::Aws(400, "InvalidSignatureException"),
        ),
        case(
            "SignedHeaders without x-amz-target (JSON protocol)",
            rewrite(ddb(), &|c, sh, sig| {
                format!("{alg} {c}, {}, {sig}", sh.replace(";x-amz-target", ""))
            }),
            Want::Aws(400, "IncompleteSignatureException"),
        ),
        raw_case(
            "non-UTF-8 bytes in Authorization",
            wire_with(
                &sts(),
                "Authorization",
                b"AWS4-HMAC-SHA256 Credential=\xff\xfe",
            ),
            incomplete,
        ),
        // Presigned URLs: every X-Amz-* parameter once, well-formed.
        case(
            "presigned: X-Amz-Signature twice",
            presigned_edit(&|pq| {
                let sig = pq.rsplit('=').next().unwrap().to_owned();
                format!("{pq}&X-Amz-Signature={sig}")
            }),
            incomplete,
        ),
        case(
            "presigned: X-Amz-Credential missing",
            presigned_edit(&|pq| {
                pq.split('&')
                    .filter(|p| !p.starts_with("X-Amz-Credential="))
                    .collect::<Vec<_>>()
                    .join("&")
            }),
            incomplete,
        ),
        case(
            "presigned: X-Amz-Algorithm in lower case",
            presigned_edit(&|pq| pq.replace("=AWS4-HMAC-SHA256", "=aws4-hmac-sha256")),
            incomplete,
        ),
        case(
            "presigned: x-amz-signature in lower case",
            presigned_edit(&|pq| pq.replace("X-Amz-Signature=", "x-amz-signature=")),
            incomplete,
        ),
        case(
            "presigned: X-Amz-Expires 0",
            presigned_s3("/bucket/key.txt", now(), "0", ""),
            incomplete,
        ),
        case(
            "presigned: X-Amz-Expires over 7 days",
            presigned_s3("/bucket/key.txt", now(), "604801", ""),
            incomplete,
        ),
        case(
            "presigned: X-Amz-Expires negative",
            presigned_s3("/bucket/key.txt", now(), "-1", ""),
            incomplete,
        ),
        case(
            "presigned: X-Amz-Expires 1e3",
            presigned_s3("/bucket/key.txt", now(), "1e3", ""),
            incomplete,
        ),
        case(
            "presigned: X-Amz-Expires empty",
            presigned_s3("/bucket/key.txt", now(), "", ""),
            incomplete,
        ),
        case(
            "presigned: X-Amz-Signature not hex",
            presigned_edit(&|pq| format!("{}{}", &pq[..pq.len() - 64], "z".repeat(64))),
            incomplete,
        ),
        case(
            "presigned: X-Amz-Credential not UTF-8",
            presigned_edit(&|pq| pq.replace("X-Amz-Credential=", "X-Amz-Credential=%FF")),
            incomplete,
        ),
        case(
            "presigned: X-Amz-SignedHeaders empty",
            presigned_edit(&|pq| pq.replace("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=")),
            incomplete,
        ),
        case(
            "presigned: an unsigned extra parameter",
            presigned_edit(&|pq| format!("{pq}&versionId=2")),
            Want::Aws(403, "SignatureDoesNotMatch"),
        ),
        case(
            "presigned: expired an hour ago",
            presigned_s3("/bucket/key.txt", now() - 3600, "60", ""),
            Want::Aws(403, "AccessDenied"),
        ),
    ];
    run_table(&w, "SigV4", cases).await;
}

// ------------------------------------------------------------------------------------------
// Signed headers: repeated, omitted, unsorted, unknown, empty.

#[tokio::test]
async fn signed_headers_repeated_omitted_or_malformed() {
    let w = world().await;
    let incomplete = Want::Ali(400, "IncompleteSignature");
    let fresh = || w.good();
    // Rewrites the SignedHeaders list of a fresh request.
    let list = |f: &dyn Fn(&str) -> String| {
        auth(&fresh(), |a| {
            let start = a.find("SignedHeaders=").unwrap() + "SignedHeaders=".len();
            let end = start + a[start..].find(',').unwrap();
            format!("{}{}{}", &a[..start], f(&a[start..end]), &a[end..])
        })
    };
    let drop_name = |name: &'static str| {
        list(&move |l: &str| {
            l.split(';')
                .filter(|n| *n != name)
                .collect::<Vec<_>>()
                .join(";")
        })
    };
    let cases = vec![
        case(
            "two x-acs-date",
            twice(&fresh(), "x-acs-date", None),
            incomplete,
        ),
        case(
            "two x-acs-date, the second another time",
            twice(&fresh(), "x-acs-date", Some(&iso(-3600))),
            incomplete,
        ),
        case(
            "two x-acs-signature-nonce",
            twice(&fresh(), "x-acs-signature-nonce", None),
            incomplete,
        ),
        case(
            "two x-acs-content-sha256",
            twice(&fresh(), "x-acs-content-sha256", None),
            incomplete,
        ),
        case(
            "two x-acs-action, the second high-risk",
            twice(&fresh(), "x-acs-action", Some("DeleteInstance")),
            incomplete,
        ),
        case(
            "two x-acs-version",
            twice(&fresh(), "x-acs-version", None),
            incomplete,
        ),
        case(
            "two x-acs-security-token",
            fresh()
                .header("x-acs-security-token", "a")
                .header("x-acs-security-token", "b"),
            incomplete,
        ),
        case("host not signed", drop_name("host"), incomplete),
        case("x-acs-date not signed", drop_name("x-acs-date"), incomplete),
        case(
            "x-acs-signature-nonce not signed",
            drop_name("x-acs-signature-nonce"),
            incomplete,
        ),
        case(
            "x-acs-content-sha256 not signed",
            drop_name("x-acs-content-sha256"),
            incomplete,
        ),
        case(
            "x-acs-action not signed",
            drop_name("x-acs-action"),
            incomplete,
        ),
        case(
            "x-acs-version not signed",
            drop_name("x-acs-version"),
            incomplete,
        ),
        case(
            "not sorted",
            list(&|l: &str| {
                let mut v: Vec<&str> = l.split(';').collect();
                v.swap(0, 1);
                v.join(";")
            }),
            incomplete,
        ),
        case(
            "a name repeated",
            list(&|l: &str| l.replacen("host", "host;host", 1)),
            incomplete,
        ),
        case(
            "a name in upper case",
            list(&|l: &str| l.replace("host", "HOST")),
            incomplete,
        ),
        case("empty", list(&|_: &str| String::new()), incomplete),
        case("a trailing ;", list(&|l: &str| format!("{l};")), incomplete),
        case("a leading ;", list(&|l: &str| format!(";{l}")), incomplete),
        case(
            "a name with a space",
            list(&|l: &str| l.replace("host", "ho st")),
            incomplete,
        ),
        // Well-formed but naming a header that is not sent: the canonical request then holds it
        // empty, which is not what was signed.
        case(
            "an unknown header name",
            list(&|l: &str| format!("{l};zz-unknown")),
            Want::Ali(400, "SignatureDoesNotMatch"),
        ),
        case(
            "an x-acs-* header sent but not signed",
            fresh().header("x-acs-resourcegroupid", "rg-1"),
            incomplete,
        ),
        case(
            "a signed header changed after signing",
            fresh().set("accept", "text/xml"),
            Want::Ali(400, "SignatureDoesNotMatch"),
        ),
        case(
            "an unsigned, unrelated header added",
            fresh().header("x-unrelated", "1"),
            Want::Pass,
        ),
    ];
    run_table(&w, "SignedHeaders", cases).await;
}

// ------------------------------------------------------------------------------------------
// Host: signed for one, sent with another.

#[tokio::test]
async fn host_mismatches() {
    let w = world().await;
    let h = w.host.as_str();
    let port = w.gw.proxy.port();
    let bad = Want::Ali(400, "InvalidRequest");
    // Signed for another port of the same address: routed to the same service, so only the
    // signature can tell.
    let other_port = signed(
        &format!("127.0.0.1:{}", port + 1),
        "DescribeRegions",
        "",
        ALICE,
        b"",
        0,
    )
    .set("host", h);
    let absolute = |authority: &str, r: &Req| {
        let mut bytes = wire(r);
        let line = format!("{} {}", r.method, r.path_and_query);
        let with = format!("{} http://{authority}{}", r.method, r.path_and_query);
        let at = bytes
            .windows(line.len())
            .position(|x| x == line.as_bytes())
            .unwrap();
        bytes.splice(at..at + line.len(), with.bytes());
        bytes
    };
    let cases = vec![
        case(
            "signed for another host",
            other_port,
            Want::Ali(400, "SignatureDoesNotMatch"),
        ),
        case(
            "signed for ram.test, sent to the ecs host",
            signed("ram.test", "GetUser", "", ALICE, b"", 0).set("host", h),
            Want::Ali(400, "SignatureDoesNotMatch"),
        ),
        raw_case(
            "absolute-form target agreeing with Host",
            absolute(h, &w.good()),
            Want::Pass,
        ),
        raw_case(
            "absolute-form target naming another host than Host",
            absolute("ram.test", &w.good()),
            bad,
        ),
        raw_case(
            "absolute-form target naming the signed host, Host another",
            absolute(
                h,
                &signed("ram.test", "GetUser", "", ALICE, b"", 0).set("host", h),
            ),
            Want::Ali(400, "SignatureDoesNotMatch"),
        ),
        raw_case(
            "absolute-form target and no Host header",
            absolute(h, &w.good().without("host")),
            Want::Pass,
        ),
        case(
            "two Host headers, equal",
            twice(&w.good(), "host", None),
            bad,
        ),
        case(
            "two Host headers, the second ram.test",
            twice(&w.good(), "host", Some("ram.test")),
            bad,
        ),
        case(
            "Host with a trailing dot",
            signed(
                &format!("127.0.0.1.:{port}"),
                "DescribeRegions",
                "",
                ALICE,
                b"",
                0,
            ),
            Want::Ali(404, "InvalidRoute"),
        ),
        raw_case(
            "Host not ASCII",
            wire_with(&w.good(), "host", b"127.0.0.1\xff"),
            bad,
        ),
        raw_case(
            "no Host at all",
            wire(&w.good().without("host")),
            Want::Ali(404, "InvalidRoute"),
        ),
    ];
    run_table(&w, "Host", cases).await;
    // What the upstream saw of an absolute-form request: the origin-form path and the Host.
    let r = w.good();
    let ex = exchange(w.gw.proxy, None, &absolute(h, &r), 1).await;
    assert_eq!(ex.answers[0].status, 200);
    let seen = w.up.last();
    assert_eq!(seen.path_and_query, "/");
    assert_eq!(seen.headers["host"], h);
}

// ------------------------------------------------------------------------------------------
// Bodies: shorter or longer than announced, hash mismatches, chunked, over the limit.

#[tokio::test]
async fn bodies_framing_hashes_and_limits() {
    let w = world().await;
    let h = w.host.as_str();
    let body = b"InstanceName=web&Description=a%20b".to_vec();
    let fresh = || signed(h, "CreateThing", "", ALICE, &body, 0);
    let chunked_req = |r: &Req| {
        let mut bytes = wire_head(r, Some("transfer-encoding: chunked\r\n"));
        bytes.extend_from_slice(&chunked(&r.body, 7));
        bytes
    };
    let tampered_chunked = {
        let r = fresh();
        let mut bytes = wire_head(&r, Some("transfer-encoding: chunked\r\n"));
        let mut b = r.body.clone();
        b[0] = b'X';
        bytes.extend_from_slice(&chunked(&b, 7));
        bytes
    };
    let longer = {
        // Signed over the whole body, announced one byte short: the gateway reads what is
        // announced, and that is not what was signed.
        let r = fresh();
        let mut bytes = wire_head(
            &r,
            Some(&format!("content-length: {}\r\n", r.body.len() - 1)),
        );
        bytes.extend_from_slice(&r.body);
        bytes
    };
    let cases = vec![
        case("control: form body", fresh(), Want::Pass),
        raw_case(
            "chunked, signed over the whole body",
            chunked_req(&fresh()),
            Want::Pass,
        ),
        raw_case(
            "chunked, one byte changed",
            tampered_chunked,
            Want::Ali(400, "InvalidContentSha256"),
        ),
        raw_case(
            "body longer than Content-Length",
            longer,
            Want::Ali(400, "InvalidContentSha256"),
        ),
        case(
            "x-acs-content-sha256 of another body",
            {
                let mut r = fresh();
                r.body = b"InstanceName=evil&Description=a%20b".to_vec();
                r
            },
            Want::Ali(400, "InvalidContentSha256"),
        ),
        case(
            "x-acs-content-sha256 not hex",
            fresh().set("x-acs-content-sha256", "zz"),
            Want::Ali(400, "InvalidContentSha256"),
        ),
        case(
            "x-acs-content-sha256 empty",
            fresh().set("x-acs-content-sha256", ""),
            Want::Ali(400, "IncompleteSignature"),
        ),
        raw_case(
            "Content-Length not a number",
            {
                let r = fresh();
                let mut b = wire_head(&r, Some("content-length: 3x\r\n"));
                b.extend_from_slice(&r.body);
                b
            },
            Want::Http(400),
        ),
        raw_case(
            "Content-Length negative",
            {
                let r = fresh();
                let mut b = wire_head(&r, Some("content-length: -1\r\n"));
                b.extend_from_slice(&r.body);
                b
            },
            Want::Http(400),
        ),
        raw_case(
            "chunk size not hex",
            {
                let r = fresh();
                let mut b = wire_head(&r, Some("transfer-encoding: chunked\r\n"));
                b.extend_from_slice(b"zz\r\nabc\r\n0\r\n\r\n");
                b
            },
            Want::Ali(400, "InvalidRequest"),
        ),
        raw_case(
            "Content-Length over max_body_bytes, announced only",
            {
                let r = fresh();
                let mut b = wire_head(&r, Some("content-length: 1000000\r\n"));
                b.extend_from_slice(&r.body);
                b
            },
            Want::Ali(413, "RequestBodyTooLarge"),
        ),
    ];
    run_table(&w, "bodies", cases).await;

    // The exact verified bytes reach the upstream, however they were framed.
    let r = fresh();
    let ex = exchange(w.gw.proxy, None, &chunked_req(&r), 1).await;
    assert_eq!(ex.answers[0].status, 200);
    let seen = w.up.last();
    assert_eq!(seen.body, r.body);
    assert_eq!(
        seen.headers.get_all("content-length").iter().count(),
        1,
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.headers["content-length"], r.body.len().to_string());
    assert!(seen.headers.get("transfer-encoding").is_none());

    let before = w.up.count();
    // Shorter than announced: the client stops sending and half-closes. Nothing is forwarded,
    // whatever the gateway answers.
    let r = fresh();
    let mut s = connect(w.gw.proxy, None).await;
    let mut bytes = wire_head(
        &r,
        Some(&format!("content-length: {}\r\n", r.body.len() + 10)),
    );
    bytes.extend_from_slice(&r.body);
    s.write_all(&bytes).await.unwrap();
    s.shutdown().await.unwrap();
    let ex = read_answers(&mut s, 1).await;
    if let Some(a) = ex.answers.first() {
        judge(a, Want::Ali(400, "InvalidRequest"), 0).unwrap();
    }
    assert!(ex.answers.len() == 1 || ex.closed);

    // Over the limit with a huge Content-Length: the 413 arrives while the client has sent
    // 1 KB of 50 MB and is still holding the connection open.
    let mut s = connect(w.gw.proxy, None).await;
    let mut head = wire_head(&fresh(), Some("content-length: 50000000\r\n"));
    head.extend_from_slice(&[b'a'; 1024]);
    s.write_all(&head).await.unwrap();
    let ex = read_answers(&mut s, 1).await;
    judge(&ex.answers[0], Want::Ali(413, "RequestBodyTooLarge"), 0).unwrap();

    // Chunked over the limit (64 KiB here): 80 KiB in 8 KiB chunks, no final chunk sent.
    let mut s = connect(w.gw.proxy, None).await;
    s.write_all(&wire_head(&fresh(), Some("transfer-encoding: chunked\r\n")))
        .await
        .unwrap();
    for _ in 0..10 {
        let mut c = b"2000\r\n".to_vec();
        c.extend_from_slice(&[b'a'; 0x2000]);
        c.extend_from_slice(b"\r\n");
        if s.write_all(&c).await.is_err() {
            break;
        }
    }
    let ex = read_answers(&mut s, 1).await;
    judge(&ex.answers[0], Want::Ali(413, "RequestBodyTooLarge"), 0).unwrap();
    assert_eq!(w.up.count(), before, "nothing over the limit was forwarded");
    w.assert_alive().await;
}

// ------------------------------------------------------------------------------------------
// Oversized header sections.

#[tokio::test]
async fn oversized_header_sections_are_refused_and_the_connection_closed() {
    let w = world().await;
    let g = || w.good();
    let many_kb = {
        let mut r = g();
        for i in 0..100 {
            r = r.header(&format!("x-pad-{i}"), &"p".repeat(1024));
        }
        r
    };
    let one_huge = g().header("x-pad", &"p".repeat(100 * 1024));
    let many_small = {
        let mut r = g();
        for i in 0..150 {
            r = r.header(&format!("x-n-{i}"), "1");
        }
        r
    };
    let huge_target = target(&g(), |pq| format!("{pq}?{}", "q".repeat(100 * 1024)));
    let before = w.up.count();
    for (name, bytes) in [
        ("100 headers of 1 KB", wire(&many_kb)),
        ("one 100 KB header", wire(&one_huge)),
        ("150 small headers", wire(&many_small)),
        ("a 100 KB request target", wire(&huge_target)),
    ] {
        let mut s = connect(w.gw.proxy, None).await;
        let _ = s.write_all(&bytes).await;
        let ex = read_answers(&mut s, 1).await;
        let status = ex.answers.first().map(|a| a.status);
        assert!(
            matches!(status, Some(431) | Some(400) | Some(414)),
            "{name}: {status:?}"
        );
        assert!(ex.closed || closes(&mut s).await, "{name}: left open");
    }
    // Over HTTP/2 the header list is bounded too: the stream is refused, the process serves on.
    let stream = TcpStream::connect(w.gw.proxy).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}/", w.host));
    for (k, v) in &one_huge.headers {
        if k != "host" {
            req = req.header(k.as_str(), v.as_str());
        }
    }
    let answer = sender
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await;
    if let Ok(resp) = answer {
        assert_eq!(resp.status(), 431);
    }
    assert_eq!(w.up.count(), before);
    w.assert_alive().await;
}

// ------------------------------------------------------------------------------------------
// Request smuggling: ambiguous framing is refused, the connection closed, and a request hidden
// behind it never reaches the upstream.

#[tokio::test]
async fn smuggling_attempts_are_refused_and_nothing_behind_them_is_forwarded() {
    let w = world().await;
    let h = w.host.as_str();
    let body = b"InstanceName=web".to_vec();
    // A request that would pass on its own: if the gateway ever read it out of another
    // request's body, the upstream would show it.
    let hidden = || {
        wire(&signed_with(
            h,
            "POST",
            "/smuggled",
            "DescribeRegions",
            "",
            ALICE,
            b"",
            0,
            &[],
        ))
    };
    let front = || signed(h, "CreateThing", "", ALICE, &body, 0);
    let with_framing = |framing: &str, payload: &[u8]| {
        let mut b = wire_head(&front(), Some(framing));
        b.extend_from_slice(payload);
        b
    };
    let chunked_then_hidden = || {
        let mut p = chunked(&body, 64);
        p.extend_from_slice(&hidden());
        p
    };
    let cl_and_te = {
        let p = chunked_then_hidden();
        with_framing(
            &format!(
                "content-length: {}\r\ntransfer-encoding: chunked\r\n",
                p.len()
            ),
            &p,
        )
    };
    let te_and_cl = {
        // The other order, and a Content-Length covering the chunked body only.
        let p = chunked_then_hidden();
        with_framing(
            &format!(
                "transfer-encoding: chunked\r\ncontent-length: {}\r\n",
                body.len()
            ),
            &p,
        )
    };
    let two_lengths = {
        let mut p = body.clone();
        p.extend_from_slice(&hidden());
        with_framing(
            &format!(
                "content-length: {}\r\ncontent-length: {}\r\n",
                body.len(),
                p.len()
            ),
            &p,
        )
    };
    let length_list = {
        let mut p = body.clone();
        p.extend_from_slice(&hidden());
        with_framing(
            &format!("content-length: {}, {}\r\n", body.len(), p.len()),
            &p,
        )
    };
    let te_chunked_identity = with_framing(
        "transfer-encoding: chunked, identity\r\n",
        &chunked_then_hidden(),
    );
    let te_identity_line = with_framing(
        "transfer-encoding: chunked\r\ntransfer-encoding: identity\r\n",
        &chunked_then_hidden(),
    );
    let te_gzip = with_framing("transfer-encoding: gzip\r\n", &chunked_then_hidden());
    let te_folded = with_framing(
        "transfer-encoding: identity\r\n chunked\r\n",
        &chunked_then_hidden(),
    );
    let te_space_before_colon = with_framing(
        &format!(
            "transfer-encoding : chunked\r\ncontent-length: {}\r\n",
            body.len()
        ),
        &chunked_then_hidden(),
    );
    let folded_action = {
        let r = front();
        let mut b = wire_head(&r, None);
        let needle = b"x-acs-action: CreateThing\r\n";
        let at = b.windows(needle.len()).position(|x| x == needle).unwrap() + needle.len() - 2;
        b.splice(at..at, b"\r\n DeleteInstance".iter().copied());
        b.extend_from_slice(&r.body);
        b.extend_from_slice(&hidden());
        b
    };
    let bare_cr = {
        let r = front();
        let mut b = wire_head(&r.clone().header("x-a", "1"), None);
        let needle = b"x-a: 1";
        let at = b.windows(needle.len()).position(|x| x == needle).unwrap() + needle.len();
        b.splice(at..at, b"\rtransfer-encoding: chunked".iter().copied());
        b.extend_from_slice(&r.body);
        b.extend_from_slice(&hidden());
        b
    };
    let nul_in_value = {
        let mut b = wire_with(&front(), "x-a", b"1\x002");
        b.extend_from_slice(&hidden());
        b
    };
    // Content-Length next to Transfer-Encoding: chunked is read by the chunked framing alone and
    // the connection is closed after the answer (RFC 9112 §6.1), so the front request is judged
    // on exactly the bytes forwarded and whatever follows it is never read. Every other
    // ambiguity is refused outright.
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("Content-Length and Transfer-Encoding", cl_and_te, true),
        (
            "Transfer-Encoding, then a short Content-Length",
            te_and_cl,
            true,
        ),
        ("two Content-Length headers, different", two_lengths, false),
        ("Content-Length as a list of two values", length_list, false),
        (
            "Transfer-Encoding: chunked, identity",
            te_chunked_identity,
            false,
        ),
        (
            "Transfer-Encoding chunked then identity lines",
            te_identity_line,
            false,
        ),
        ("Transfer-Encoding: gzip", te_gzip, false),
        ("Transfer-Encoding folded (obs-fold)", te_folded, false),
        ("a space before the colon", te_space_before_colon, false),
        ("x-acs-action folded (obs-fold)", folded_action, false),
        ("a bare CR inside a header line", bare_cr, false),
        ("a NUL in a header value", nul_in_value, false),
    ];
    let mut failures = Vec::new();
    for (name, bytes, front_passes) in cases {
        let before = w.up.count();
        let mut s = connect(w.gw.proxy, None).await;
        let _ = s.write_all(&bytes).await;
        let ex = read_answers(&mut s, 2).await;
        let statuses: Vec<u16> = ex.answers.iter().map(|a| a.status).collect();
        let forwarded: Vec<String> = w.up.seen.lock().unwrap()[before..]
            .iter()
            .map(|s| format!("{} {:?}", s.path_and_query, s.body))
            .collect();
        let ok = if front_passes {
            statuses == [200] && forwarded == [format!("/ {:?}", Bytes::from(body.clone()))]
        } else {
            statuses.len() == 1 && (400..500).contains(&statuses[0]) && forwarded.is_empty()
        };
        if !ok || !ex.closed {
            failures.push(format!(
                "{name}: answers {statuses:?}, closed {}, forwarded {forwarded:?}",
                ex.closed
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let before = w.up.count();

    // A request refused by the gateway itself (not by HTTP parsing) leaves the connection
    // usable: the next request on it is judged on its own, and an unsigned one is refused.
    let mut s = connect(w.gw.proxy, None).await;
    let mut bytes = wire(&front().set("x-acs-content-sha256", &"0".repeat(64)));
    bytes.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nhost: ");
    bytes.extend_from_slice(h.as_bytes());
    bytes.extend_from_slice(b"\r\n\r\n");
    s.write_all(&bytes).await.unwrap();
    let ex = read_answers(&mut s, 2).await;
    assert_eq!(ex.answers.len(), 2);
    judge(&ex.answers[0], Want::Ali(400, "InvalidContentSha256"), 0).unwrap();
    judge(&ex.answers[1], Want::Ali(400, "MissingAccessKeyId"), 0).unwrap();
    assert_eq!(w.up.count(), before);

    // Bare LF line endings are the same request as CRLF ones: it is parsed, verified and
    // forwarded as a well-formed request carrying the same headers.
    let r = front();
    let lf: Vec<u8> = String::from_utf8(wire(&r))
        .unwrap()
        .replace("\r\n", "\n")
        .into_bytes();
    let ex = exchange(w.gw.proxy, None, &lf, 1).await;
    judge(&ex.answers[0], Want::Pass, w.up.count() - before).unwrap();
    let seen = w.up.last();
    assert_eq!(seen.body, r.body);
    assert_eq!(seen.headers["x-acs-action"], "CreateThing");
    w.assert_alive().await;
}

// ------------------------------------------------------------------------------------------
// Request targets: absolute form, dot segments in every spelling, encoded slashes, backslashes.
// The rule: the upstream receives exactly the path and query that were verified, and a path
// cannot be judged under one route's service and executed under another's.

#[tokio::test]
async fn paths_cannot_escape_their_route() {
    let w = world().await;
    let bad = Want::Ali(400, "InvalidRequest");
    // The leaked key may call RAM nothing (`*`) and ECS everything but Run/DeleteInstance:
    // GetUser judged as ECS would pass.
    let call = |path: &str, key| v3("paths.test", "GET", path, "", "GetUser", key, b"", &iso(0));
    let cases = vec![
        case("control: ECS path", call("/ecs/users", ALICE), Want::Pass),
        case(
            "control: RAM path, leaked key",
            call("/ram/users", LEAKED),
            Want::Ali(403, "Forbidden"),
        ),
        case("/ecs/../ram", call("/ecs/../ram/users", LEAKED), bad),
        case(
            "/ecs/%2e%2e/ram",
            call("/ecs/%2e%2e/ram/users", LEAKED),
            bad,
        ),
        case(
            "/ecs/%2E%2e/ram",
            call("/ecs/%2E%2e/ram/users", LEAKED),
            bad,
        ),
        case("/ecs/.%2e/ram", call("/ecs/.%2e/ram/users", LEAKED), bad),
        case("/ecs/%2E%2e/ (trailing)", call("/ecs/%2E%2e/", LEAKED), bad),
        case("/ecs/./users", call("/ecs/./users", ALICE), bad),
        case("/ecs/%2e/users", call("/ecs/%2e/users", ALICE), bad),
        case("/ecs/.. at the end", call("/ecs/..", LEAKED), bad),
        case("/ecs/..;/ram", call("/ecs/..;/ram/users", LEAKED), bad),
        case(
            "encoded slashes around ..",
            call("/ecs/x%2F..%2F..%2Fram/users", LEAKED),
            bad,
        ),
        case(
            "encoded backslashes around ..",
            call("/ecs/x%5C..%5C..%5Cram/users", LEAKED),
            bad,
        ),
        raw_case(
            "raw backslashes around ..",
            wire(&call("/ecs\\..\\ram\\users", LEAKED)),
            bad,
        ),
        // `//` is kept: signed and forwarded as sent, within its route.
        case("/ecs//users", call("/ecs//users", ALICE), Want::Pass),
        case(
            "//ram is no route of this host",
            call("//ram/users", LEAKED),
            Want::Ali(404, "InvalidRoute"),
        ),
        case(
            "an encoded slash is not a segment boundary",
            call("/ecs%2Fusers", ALICE),
            Want::Ali(404, "InvalidRoute"),
        ),
        case(
            "three dots are a name",
            call("/ecs/.../x", ALICE),
            Want::Pass,
        ),
        case("..a is a name", call("/ecs/..a", ALICE), Want::Pass),
        case(
            "a double-encoded dot segment is a name",
            call("/ecs/%252e%252e/ram", ALICE),
            Want::Pass,
        ),
        case(
            "RPC v1 behind a dot segment",
            target(&rpc_at(&w.host, &iso(0)), |pq| format!("/x/..{pq}")),
            bad,
        ),
        case(
            "SigV4 (which normalises dot segments when it signs)",
            sigv4_at(
                "POST",
                "sts.test",
                "/a/../",
                "",
                "sts",
                vec![(
                    "content-type".into(),
                    "application/x-www-form-urlencoded; charset=utf-8".into(),
                )],
                STS_BODY,
                &amz_date(now()),
            ),
            Want::Aws(400, "InvalidRequest"),
        ),
        case(
            "S3 key with a dot segment",
            presigned_s3("/bucket/../other/key", now(), "300", ""),
            Want::Aws(400, "InvalidRequest"),
        ),
    ];
    run_table(&w, "paths", cases).await;

    // What passed was forwarded byte for byte.
    for path in ["/ecs//users", "/ecs/%252e%252e/ram", "/ecs/.../x"] {
        let r = call(path, ALICE);
        assert_eq!(send(w.gw.proxy, &r).await.status, 200, "{path}");
        assert_eq!(w.up.last().path_and_query, path);
    }

    // explain judges the same way: a captured escape attempt is denied there too.
    let attempt = call("/ecs/%2e%2e/ram/users", LEAKED);
    let file = w.dir.path().join("attempt.http");
    std::fs::write(&file, wire(&attempt)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_akgate"))
        .args(["explain", "--rules"])
        .arg(w.dir.path())
        .args(["--ip", "127.0.0.1", "--request"])
        .arg(&file)
        .env("AKGATE_IT_SECRET_ALICE", ALICE.1)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("decision: denied InvalidRequest (HTTP 400)"),
        "{text}"
    );
}

// ------------------------------------------------------------------------------------------
// Percent-encoding and NUL bytes.

#[tokio::test]
async fn invalid_percent_encoding_and_nul_bytes() {
    let w = world().await;
    let h = w.host.as_str();
    let bad = Want::Ali(400, "InvalidRequest");
    let at = |path: &str, query: &str| {
        v3(
            h,
            "GET",
            path,
            query,
            "DescribeRegions",
            ALICE,
            b"",
            &iso(0),
        )
    };
    let cases = vec![
        case("a lone % in the path", at("/a%", ""), bad),
        case("%zz in the path", at("/a%zzb", ""), bad),
        case("%2 at the end of the path", at("/a%2", ""), bad),
        case("a lone % in the query", at("/", "a=%"), bad),
        case("%zz in the query", at("/", "a=%zz"), bad),
        case(
            "%zz in an RPC parameter",
            target(&rpc_at(h, &iso(0)), |pq| format!("{pq}&x=%zz")),
            bad,
        ),
        case("an encoded NUL in the path", at("/a%00b", ""), bad),
        // Well-formed escapes of bytes that are not UTF-8 are bytes like any other: signed and
        // forwarded as sent.
        case(
            "truncated UTF-8 in the path",
            at("/a%e2%82", ""),
            Want::Pass,
        ),
        case(
            "truncated UTF-8 in the query",
            at("/", "name=%e2%82"),
            Want::Pass,
        ),
        case(
            "an encoded NUL in the query",
            at("/", "name=a%00b"),
            Want::Pass,
        ),
        case(
            "truncated UTF-8 in the RPC Action",
            target(&rpc_at(h, &iso(0)), |pq| {
                pq.replace("Action=DescribeRegions", "Action=Describe%E2%82")
            }),
            Want::Ali(400, "IncompleteSignature"),
        ),
        raw_case(
            "a raw NUL in the path",
            wire(&at("/a\0b", "")),
            Want::Http(400),
        ),
        raw_case(
            "a raw NUL in a signed header",
            wire_with(&w.good(), "x-acs-action", b"Describe\0Regions"),
            Want::Http(400),
        ),
        raw_case(
            "non-ASCII bytes in x-acs-action",
            wire_with(&w.good(), "x-acs-action", b"Describe\xffRegions"),
            Want::Ali(400, "IncompleteSignature"),
        ),
        raw_case(
            "a raw space in the path",
            wire(&at("/a b", "")),
            Want::Http(400),
        ),
    ];
    run_table(&w, "percent-encoding", cases).await;
    for (path, query) in [("/a%e2%82", ""), ("/", "name=%e2%82"), ("/", "name=a%00b")] {
        let r = at(path, query);
        assert_eq!(send(w.gw.proxy, &r).await.status, 200);
        assert_eq!(w.up.last().path_and_query, r.path_and_query);
    }
}

// ------------------------------------------------------------------------------------------
// Dates: future, past, garbage, wrong formats, leap seconds, years 0000 and 9999.

#[tokio::test]
async fn dates_out_of_window_or_malformed() {
    let w = world().await;
    let h = w.host.as_str();
    let expired = Want::Ali(400, "InvalidTimeStamp.Expired");
    let format = Want::Ali(400, "InvalidTimeStamp.Format");
    let acs = |date: &str| v3(h, "POST", "/", "", "DescribeRegions", ALICE, b"", date);
    let today = iso(0);
    let day = &today[..10];
    let mut cases = vec![
        case("x-acs-date: now", acs(&iso(0)), Want::Pass),
        case(
            "x-acs-date: 14 minutes ahead",
            acs(&iso(14 * 60)),
            Want::Pass,
        ),
        case("x-acs-date: an hour ahead", acs(&iso(3600)), expired),
        case("x-acs-date: an hour ago", acs(&iso(-3600)), expired),
        case("x-acs-date: a year ahead", acs(&iso(366 * 86400)), expired),
        case(
            "x-acs-date: a leap second",
            acs("2016-12-31T23:59:60Z"),
            expired,
        ),
        case(
            "x-acs-date: year 0000",
            acs("0000-01-01T00:00:00Z"),
            expired,
        ),
        case(
            "x-acs-date: year 9999",
            acs("9999-12-31T23:59:59Z"),
            expired,
        ),
        case("x-acs-date: 1970", acs("1970-01-01T00:00:00Z"), expired),
        case(
            "x-acs-date: two seconds spelled as one leap second",
            acs(&format!("{day}T23:59:61Z")),
            format,
        ),
        case("x-acs-date: garbage", acs("yesterday"), format),
        case("x-acs-date: RFC 1123", acs(&http_date(0)), format),
        case(
            "x-acs-date: with milliseconds",
            acs(&today.replace('Z', ".000Z")),
            format,
        ),
        case(
            "x-acs-date: with an offset",
            acs(&today.replace('Z', "+00:00")),
            format,
        ),
        case(
            "x-acs-date: lower-case t and z",
            acs(&today.replace('T', "t").replace('Z', "z")),
            format,
        ),
        case(
            "x-acs-date: a space for T",
            acs(&today.replace('T', " ")),
            format,
        ),
        case(
            "x-acs-date: month 13",
            acs(&format!("{}-13-01T00:00:00Z", &today[..4])),
            format,
        ),
        case(
            "x-acs-date: 30 February",
            acs(&format!("{}-02-30T00:00:00Z", &today[..4])),
            format,
        ),
        case(
            "x-acs-date: hour 24",
            acs(&format!("{day}T24:00:00Z")),
            format,
        ),
        case(
            "x-acs-date: negative year",
            acs("-001-01-01T00:00:00Z"),
            format,
        ),
        case("x-acs-date: Unix seconds", acs(&now().to_string()), format),
        case(
            "x-acs-date: empty",
            acs(""),
            Want::Ali(400, "IncompleteSignature"),
        ),
        case("RPC Timestamp: now", rpc_at(h, &iso(0)), Want::Pass),
        case(
            "RPC Timestamp: an hour ahead",
            rpc_at(h, &iso(3600)),
            expired,
        ),
        case("RPC Timestamp: a day ago", rpc_at(h, &iso(-86400)), expired),
        case(
            "RPC Timestamp: year 0000",
            rpc_at(h, "0000-01-01T00:00:00Z"),
            expired,
        ),
        case(
            "RPC Timestamp: year 9999",
            rpc_at(h, "9999-12-31T23:59:59Z"),
            expired,
        ),
        case(
            "RPC Timestamp: a leap second",
            rpc_at(h, "2016-12-31T23:59:60Z"),
            expired,
        ),
        case("RPC Timestamp: garbage", rpc_at(h, "now"), format),
        case(
            "RPC Timestamp: without Z",
            rpc_at(h, &today.replace('Z', "")),
            format,
        ),
        case(
            "RPC Timestamp: basic format",
            rpc_at(h, &amz_date(now())),
            format,
        ),
        case(
            "ROA Date: now",
            roa(h, "/clusters", &http_date(0), b"", ALICE),
            Want::Pass,
        ),
        case(
            "ROA Date: an hour ahead",
            roa(h, "/clusters", &http_date(3600), b"", ALICE),
            expired,
        ),
        case(
            "ROA Date: a day ago",
            roa(h, "/clusters", &http_date(-86400), b"", ALICE),
            expired,
        ),
        case(
            "ROA Date: ISO 8601",
            roa(h, "/clusters", &iso(0), b"", ALICE),
            format,
        ),
        case(
            "ROA Date: the wrong weekday",
            roa(
                h,
                "/clusters",
                &http_date(86400).replacen(&http_date(86400)[..3], &http_date(0)[..3], 1),
                b"",
                ALICE,
            ),
            format,
        ),
        case(
            "ROA Date: year 9999",
            roa(h, "/clusters", "Fri, 31 Dec 9999 23:59:59 GMT", b"", ALICE),
            expired,
        ),
    ];
    let aws_expired = Want::Aws(400, "RequestExpired");
    let aws_malformed = Want::Aws(400, "IncompleteSignature");
    let amz_now = amz_date(now());
    cases.extend([
        case("X-Amz-Date: now", sts_at(&amz_now), Want::Pass),
        case(
            "X-Amz-Date: an hour ahead",
            sts_at(&amz_date(now() + 3600)),
            aws_expired,
        ),
        case(
            "X-Amz-Date: an hour ago",
            sts_at(&amz_date(now() - 3600)),
            aws_expired,
        ),
        case(
            "X-Amz-Date: year 9999",
            sts_at("99991231T235959Z"),
            aws_expired,
        ),
        case(
            "X-Amz-Date: year 0000",
            sts_at("00000101T000000Z"),
            aws_expired,
        ),
        case(
            "X-Amz-Date: a leap second",
            sts_at("20161231T235960Z"),
            aws_expired,
        ),
        case(
            "X-Amz-Date: extended format",
            sts_at(&iso(0)),
            aws_malformed,
        ),
        case(
            "X-Amz-Date: garbage after the date",
            sts_at(&format!("{}Tnoon", &amz_now[..8])),
            aws_malformed,
        ),
        case(
            "X-Amz-Date: not the scope's day",
            {
                let r = sts();
                let other = amz_date(now() - 86400);
                r.set("x-amz-date", &other)
            },
            aws_malformed,
        ),
        case(
            "presigned X-Amz-Date an hour ahead",
            presigned_s3("/bucket/key.txt", now() + 3600, "300", ""),
            Want::Aws(403, "AccessDenied"),
        ),
        case(
            "presigned X-Amz-Date year 9999",
            presigned_s3(
                "/bucket/key.txt",
                akgate::time::parse_iso8601_utc("9999-12-31T23:59:59Z").unwrap(),
                "300",
                "",
            ),
            Want::Aws(403, "AccessDenied"),
        ),
    ]);
    run_table(&w, "dates", cases).await;
}

// ------------------------------------------------------------------------------------------
// Replays across HTTP/1.1 and HTTP/2, and concurrent duplicates.

/// Sends one request on an HTTP/2 connection of its own (prior knowledge).
async fn send_h2_one(addr: SocketAddr, req: &Req) -> Answer {
    Answer::from(send_h2(addr, std::slice::from_ref(req)).await.remove(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replays_across_protocols_and_concurrent_duplicates() {
    let w = world().await;
    let h = w.host.as_str();
    let used = Want::Ali(400, "SignatureNonceUsed");
    let mut failures = Vec::new();
    let mut check = |name: &str, a: Answer, want: Want, forwarded: usize| {
        if let Err(e) = judge(&a, want, forwarded) {
            failures.push(format!("{name}: {e}"));
        }
    };
    let requests = [
        ("V3", signed(h, "DescribeRegions", "", ALICE, b"Name=x", 0)),
        ("RPC v1", rpc_at(h, &iso(0))),
        (
            "ROA v1 with a nonce",
            roa(h, "/clusters", &http_date(0), b"{}", ALICE),
        ),
    ];
    for (scheme, r) in &requests {
        // HTTP/1.1 first, then the same bytes over HTTP/2.
        let n = w.up.count();
        let a = Answer::from(send(w.gw.proxy, r).await);
        check(&format!("{scheme} h1"), a, Want::Pass, w.up.count() - n);
        let n = w.up.count();
        let a = send_h2_one(w.gw.proxy, r).await;
        check(&format!("{scheme} h1 then h2"), a, used, w.up.count() - n);
    }
    let requests = [
        ("V3", signed(h, "DescribeRegions", "", ALICE, b"Name=y", 0)),
        ("RPC v1", rpc_at(h, &iso(0))),
        (
            "ROA v1 with a nonce",
            roa(h, "/clusters", &http_date(0), b"{}", ALICE),
        ),
    ];
    for (scheme, r) in &requests {
        // HTTP/2 first, then HTTP/1.1.
        let n = w.up.count();
        let a = send_h2_one(w.gw.proxy, r).await;
        check(&format!("{scheme} h2"), a, Want::Pass, w.up.count() - n);
        let n = w.up.count();
        let a = Answer::from(send(w.gw.proxy, r).await);
        check(&format!("{scheme} h2 then h1"), a, used, w.up.count() - n);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The same signed request, 16 times at once: 8 over separate HTTP/1.1 connections and 8 as
    // concurrent streams of one HTTP/2 connection. Exactly one may pass.
    for (scheme, r) in [
        ("V3", signed(h, "DescribeRegions", "", ALICE, b"", 0)),
        ("RPC v1", rpc_at(h, &iso(0))),
    ] {
        let before = w.up.count();
        let stream = TcpStream::connect(w.gw.proxy).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(16));
        let mut tasks = Vec::new();
        for i in 0..16 {
            let (r, barrier, addr) = (r.clone(), barrier.clone(), w.gw.proxy);
            let mut sender = sender.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                if i % 2 == 0 {
                    send(addr, &r).await.status.as_u16()
                } else {
                    let mut b = http::Request::builder()
                        .method(r.method.as_str())
                        .uri(format!("http://{}{}", header(&r, "host"), r.path_and_query));
                    for (k, v) in r.headers.iter().filter(|(k, _)| k != "host") {
                        b = b.header(k.as_str(), v.as_str());
                    }
                    let req = b.body(Full::new(Bytes::from(r.body.clone()))).unwrap();
                    collect(sender.send_request(req).await.unwrap())
                        .await
                        .status
                        .as_u16()
                }
            }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.unwrap());
        }
        let passed = statuses.iter().filter(|&&s| s == 200).count();
        let replayed = statuses.iter().filter(|&&s| s == 400).count();
        assert_eq!((passed, replayed), (1, 15), "{scheme}: {statuses:?}");
        assert_eq!(w.up.count(), before + 1, "{scheme}");
    }
    w.assert_alive().await;
}

// ------------------------------------------------------------------------------------------
// Source addresses: what an untrusted peer claims is ignored; a trusted proxy's X-Forwarded-For
// and Forwarded are believed by the rightmost-untrusted rule; zone ids and garbage are no
// address at all.

#[tokio::test]
async fn spoofed_and_malformed_forwarding_headers() {
    let w = world().await;
    let h = w.host.as_str();
    // OTHER_ACCOUNT's account admits 127.0.0.5 and 2001:db8::/32 only; 127.0.0.9 is the one
    // trusted proxy; ZONED's account admits fe80::/10 and 127.0.0.1.
    let other = || signed(h, "DescribeRegions", "", OTHER_ACCOUNT, b"", 0);
    let zoned = || signed(h, "DescribeRegions", "", ZONED, b"", 0);
    let denied = Want::Ali(403, "Forbidden.SourceIpNotAllowed");
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    let (client, allowed, proxy) = (ip("127.0.0.1"), ip("127.0.0.5"), ip("127.0.0.9"));
    let cases: Vec<(&str, Option<IpAddr>, Req, Want)> = vec![
        (
            "control: from the allowed address",
            allowed,
            other(),
            Want::Pass,
        ),
        ("control: from elsewhere", client, other(), denied),
        // An untrusted peer's claims.
        (
            "untrusted: X-Forwarded-For",
            client,
            other().header("x-forwarded-for", "127.0.0.5"),
            denied,
        ),
        (
            "untrusted: Forwarded",
            client,
            other().header("forwarded", "for=127.0.0.5"),
            denied,
        ),
        (
            "untrusted: X-Real-IP",
            client,
            other().header("x-real-ip", "127.0.0.5"),
            denied,
        ),
        (
            "untrusted: all three",
            client,
            other()
                .header("x-forwarded-for", "127.0.0.5")
                .header("forwarded", "for=127.0.0.5")
                .header("x-real-ip", "127.0.0.5"),
            denied,
        ),
        (
            "untrusted: claims do not hurt an allowed peer",
            allowed,
            other()
                .header("x-forwarded-for", "203.0.113.1, garbage")
                .header("forwarded", "for=_hidden")
                .header("x-real-ip", "fe80::1%eth0"),
            Want::Pass,
        ),
        // A trusted proxy.
        (
            "trusted: X-Forwarded-For",
            proxy,
            other().header("x-forwarded-for", "127.0.0.5"),
            Want::Pass,
        ),
        (
            "trusted: X-Real-IP is not read",
            proxy,
            other().header("x-real-ip", "127.0.0.5"),
            denied,
        ),
        (
            "trusted: Forwarded",
            proxy,
            other().header("forwarded", "for=127.0.0.5"),
            Want::Pass,
        ),
        (
            "trusted: Forwarded with a port, quoted",
            proxy,
            other().header("forwarded", "for=\"127.0.0.5:4711\";proto=http"),
            Want::Pass,
        ),
        (
            "trusted: Forwarded, quoted IPv6 with a port",
            proxy,
            other().header("forwarded", "for=\"[2001:db8::1]:4711\""),
            Want::Pass,
        ),
        (
            "trusted: Forwarded, unquoted IPv6 is still one address",
            proxy,
            other().header("forwarded", "for=2001:db8::1"),
            Want::Pass,
        ),
        (
            "trusted: Forwarded, the client's element left of the real one",
            proxy,
            other().header("forwarded", "for=127.0.0.5, for=127.0.0.2"),
            denied,
        ),
        (
            "trusted: Forwarded, the real one rightmost",
            proxy,
            other().header("forwarded", "for=127.0.0.2, for=127.0.0.5"),
            Want::Pass,
        ),
        (
            "trusted: Forwarded in two header lines",
            proxy,
            other()
                .header("forwarded", "for=127.0.0.2")
                .header("forwarded", "for=127.0.0.5;by=x"),
            Want::Pass,
        ),
        (
            "trusted: Forwarded obfuscated",
            proxy,
            other().header("forwarded", "for=_hidden"),
            denied,
        ),
        (
            "trusted: Forwarded unknown",
            proxy,
            other().header("forwarded", "for=unknown"),
            denied,
        ),
        (
            "trusted: Forwarded without for",
            proxy,
            other().header("forwarded", "proto=https"),
            denied,
        ),
        (
            "trusted: Forwarded with for twice",
            proxy,
            other().header("forwarded", "for=127.0.0.5;for=127.0.0.2"),
            denied,
        ),
        (
            "trusted: both headers, agreeing",
            proxy,
            other()
                .header("x-forwarded-for", "127.0.0.5")
                .header("forwarded", "for=127.0.0.5"),
            Want::Pass,
        ),
        (
            "trusted: both headers, disagreeing",
            proxy,
            other()
                .header("x-forwarded-for", "127.0.0.5")
                .header("forwarded", "for=127.0.0.2"),
            denied,
        ),
        (
            "trusted: both headers, the allowed one only in Forwarded",
            proxy,
            other()
                .header("x-forwarded-for", "127.0.0.2")
                .header("forwarded", "for=127.0.0.5"),
            denied,
        ),
        // Garbage from a trusted proxy makes the source unknown.
        (
            "trusted: XFF garbage",
            proxy,
            other().header("x-forwarded-for", "garbage"),
            denied,
        ),
        (
            "trusted: XFF garbage right of the address",
            proxy,
            other().header("x-forwarded-for", "127.0.0.5, garbage"),
            denied,
        ),
        (
            "trusted: XFF garbage left of the address is never reached",
            proxy,
            other().header("x-forwarded-for", "garbage, 127.0.0.5"),
            Want::Pass,
        ),
        (
            "trusted: XFF quoted",
            proxy,
            other().header("x-forwarded-for", "\"127.0.0.5\""),
            denied,
        ),
        (
            "trusted: XFF with a port",
            proxy,
            other().header("x-forwarded-for", "127.0.0.5:80"),
            Want::Pass,
        ),
        (
            "trusted: XFF empty elements",
            proxy,
            other().header("x-forwarded-for", " , 127.0.0.5 ,, "),
            Want::Pass,
        ),
        (
            "trusted: XFF empty",
            proxy,
            other().header("x-forwarded-for", ""),
            denied,
        ),
        (
            "trusted: XFF a CIDR",
            proxy,
            other().header("x-forwarded-for", "127.0.0.5/32"),
            denied,
        ),
        (
            "trusted: XFF an IPv4-mapped address",
            proxy,
            other().header("x-forwarded-for", "::ffff:127.0.0.5"),
            Want::Pass,
        ),
        // Link-local addresses with zone ids are never addresses, however written.
        (
            "control: trusted, link-local",
            proxy,
            zoned().header("x-forwarded-for", "fe80::1"),
            Want::Pass,
        ),
        (
            "trusted: XFF zone id",
            proxy,
            zoned().header("x-forwarded-for", "fe80::1%eth0"),
            denied,
        ),
        (
            "trusted: XFF %25 zone id",
            proxy,
            zoned().header("x-forwarded-for", "fe80::1%25eth0"),
            denied,
        ),
        (
            "trusted: XFF numeric zone id with a port",
            proxy,
            zoned().header("x-forwarded-for", "[fe80::1%2]:80"),
            denied,
        ),
        (
            "trusted: Forwarded zone id",
            proxy,
            zoned().header("forwarded", "for=\"[fe80::1%25eth0]:80\""),
            denied,
        ),
        (
            "untrusted: a zone id changes nothing",
            client,
            zoned().header("x-forwarded-for", "fe80::1%2"),
            Want::Pass,
        ),
    ];
    let mut failures = Vec::new();
    for (name, from, req, want) in cases {
        let before = w.up.count();
        let a = Answer::from(send_from(w.gw.proxy, from, &req).await);
        if let Err(e) = judge(&a, want, w.up.count() - before) {
            failures.push(format!("{name}: {e}"));
        }
    }
    // Non-ASCII bytes in X-Forwarded-For from a trusted proxy: unknown, refused.
    let before = w.up.count();
    let ex = exchange(
        w.gw.proxy,
        proxy,
        &wire_with(&other(), "x-forwarded-for", b"127.0.0.5\xff"),
        1,
    )
    .await;
    if let Err(e) = judge(&ex.answers[0], denied, w.up.count() - before) {
        failures.push(format!("trusted: XFF not ASCII: {e}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // What the upstream is told: the peer, never the client's own claims.
    let r = other()
        .header("x-forwarded-for", "203.0.113.1")
        .header("forwarded", "for=203.0.113.1")
        .header("x-real-ip", "203.0.113.1");
    assert_eq!(send_from(w.gw.proxy, allowed, &r).await.status, 200);
    let seen = w.up.last();
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.5");
    assert!(seen.headers.get("forwarded").is_none());
    assert!(seen.headers.get("x-real-ip").is_none());
    // Through the trusted proxy, its Forwarded is passed on as received and XFF names the proxy.
    let r = other().header("forwarded", "for=127.0.0.5");
    assert_eq!(send_from(w.gw.proxy, proxy, &r).await.status, 200);
    let seen = w.up.last();
    assert_eq!(seen.headers["forwarded"], "for=127.0.0.5");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.9");
    w.assert_alive().await;
}
