//! The official-SDK interoperability suite: every signature scheme akgate verifies, driven by the
//! SDKs real users run, against the real `akgate` binary.
//!
//! | driver (tests/interop/)  | SDK                                   | schemes                          |
//! |--------------------------|---------------------------------------|----------------------------------|
//! | `alibaba_tea.py`         | alibabacloud-tea-openapi + ECS/RAM    | ACS3 (V3), RPC v1 and ROA v1 (v2) |
//! | `aliyun_core.py`         | aliyun-python-sdk-core (+ -ecs)       | RPC v1, ROA v1                   |
//! | `aws_botocore.py`        | botocore                              | AWS SigV4 (query, ec2, JSON, S3)  |
//!
//! Two akgate instances, each with its own rules directory and recording upstream:
//! * Alibaba: Host `127.0.0.1` → `ecs` (paths `/clusters`, `/api/v2/clusters` → `cs`, a ROA
//!   service), Host `localhost` → `ram` (`*`); the upstream answers a JSON echo.
//! * AWS: Host `localhost` → `s3`; on `127.0.0.1` the path prefixes `/sts`, `/ec2`, `/iam`,
//!   `/dynamodb` (botocore keeps the path of `endpoint_url`); the upstream answers bodies botocore's
//!   parsers accept (XML, JSON, object bytes).
//!
//! Each driver prints `PASS name` / `FAIL name: detail` and `N passed, M failed`. This test runs all
//! of them even when some fail, checks what the upstreams saw (refused requests never arrive, allowed
//! ones do, no nonce is forwarded twice), prints everything (`-- --nocapture`) and fails at the end
//! with the list of every failure.
//!
//! Python: `AKGATE_PYTHON`, else the venv made by `tests/interop/setup-venv.sh` (needs PyPI);
//! `AKGATE_SKIP_INTEROP=1` skips the test (not allowed when `CI` is set).

mod common;

use bytes::Bytes;
use common::{Akgate, sdk_python};
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one driver may run before it is killed (each SDK call has its own 10 s timeout).
const DRIVER_TIMEOUT: Duration = Duration::from_secs(600);
/// Must equal `OBJECT_BODY` in aws_botocore.py.
const S3_OBJECT_BODY: &[u8] = b"interop object body\n";

// ------------------------------------------------------------------------------------------------
// Credentials and rules

/// One test credential. All of these are fake and exist only in this test.
struct Cred {
    /// `ok`, `leaked`, `sts`, `expired`: the role tag the drivers put in their User-Agent.
    role: &'static str,
    id: &'static str,
    secret: &'static str,
    /// Temporary keys: (security token, expires).
    temporary: Option<(&'static str, &'static str)>,
}

/// A base64-looking token with `+`, `/` and `=`, like real STS tokens (exercises query encoding).
const STS_TOKEN: &str = "CAISinterop+sts/token+FAKE+for/tests/only==";
const EXPIRED_TOKEN: &str = "CAISinterop+expired/token+FAKE+for/tests==";

const ALI_KEYS: [Cred; 4] = [
    Cred {
        role: "ok",
        id: "LTAI5tInteropOkKey000001",
        secret: "interop-ok-secret-FAKE-tests-only",
        temporary: None,
    },
    Cred {
        role: "leaked",
        id: "LTAI5tInteropLeakedKey01",
        secret: "interop-leaked-secret-FAKE-tests-only",
        temporary: None,
    },
    Cred {
        role: "sts",
        id: "STS.InteropStsKey0000001",
        secret: "interop-sts-secret-FAKE-tests-only",
        temporary: Some((STS_TOKEN, "2099-01-01T00:00:00Z")),
    },
    Cred {
        role: "expired",
        id: "STS.InteropExpiredKey001",
        secret: "interop-expired-secret-FAKE-tests-only",
        temporary: Some((EXPIRED_TOKEN, "2020-01-01T00:00:00Z")),
    },
];

const AWS_KEYS: [Cred; 4] = [
    Cred {
        role: "ok",
        id: "AKIAINTEROPOK0000001",
        secret: "interopOkSecretFAKEforTestsOnly000000001",
        temporary: None,
    },
    Cred {
        role: "leaked",
        id: "AKIAINTEROPLEAKED001",
        secret: "interopLeakedSecretFAKEforTestsOnly00001",
        temporary: None,
    },
    Cred {
        role: "sts",
        id: "ASIAINTEROPSTS000001",
        secret: "interopStsSecretFAKEforTestsOnly00000001",
        temporary: Some((STS_TOKEN, "2099-01-01T00:00:00Z")),
    },
    Cred {
        role: "expired",
        id: "ASIAINTEROPEXPIRED01",
        secret: "interopExpiredSecretFAKEforTestsOnly0001",
        temporary: Some((EXPIRED_TOKEN, "2020-01-01T00:00:00Z")),
    },
];

type Services = &'static [(&'static str, &'static [&'static str])];

/// High-risk actions per service of the Alibaba instance.
const ALI_SERVICES: Services = &[
    ("ecs", &["RunInstances", "DeleteInstance"]),
    ("ram", &["*"]),
    ("cs", &["DeleteCluster"]),
];

/// High-risk actions per service of the AWS instance.
const AWS_SERVICES: Services = &[
    (
        "s3",
        &["DeleteBucket", "PutBucketPolicy", "DeleteBucketPolicy"],
    ),
    ("sts", &["AssumeRole", "GetFederationToken"]),
    ("ec2", &["RunInstances", "TerminateInstances"]),
    (
        "iam",
        &["CreateAccessKey", "CreateUser", "AttachUserPolicy"],
    ),
    ("dynamodb", &["DeleteTable"]),
];

/// A route: (host, path prefix, service), in file order (first match wins).
type Routes = &'static [(Option<&'static str>, Option<&'static str>, &'static str)];

const ALI_ROUTES: Routes = &[
    (Some("127.0.0.1"), Some("/clusters"), "cs"),
    (Some("127.0.0.1"), Some("/api/v2/clusters"), "cs"),
    (Some("127.0.0.1"), None, "ecs"),
    (Some("localhost"), None, "ram"),
];

const AWS_ROUTES: Routes = &[
    (Some("localhost"), None, "s3"),
    (Some("127.0.0.1"), Some("/sts"), "sts"),
    (Some("127.0.0.1"), Some("/ec2"), "ec2"),
    (Some("127.0.0.1"), Some("/iam"), "iam"),
    (Some("127.0.0.1"), Some("/dynamodb"), "dynamodb"),
];

/// The service akgate's routes give a request (the same first-match rules, for the checks below).
fn route_service(routes: Routes, host: &str, path: &str) -> Option<&'static str> {
    let bare = host.rsplit_once(':').map_or(host, |(h, _)| h);
    routes.iter().find_map(|(h, p, service)| {
        let host_ok = h.is_none_or(|h| h == bare);
        let path_ok = p.is_none_or(|p| path == p || path.starts_with(&format!("{p}/")));
        (host_ok && path_ok).then_some(*service)
    })
}

fn is_high_risk(services: Services, service: &str, action: &str) -> bool {
    services.iter().any(|(name, actions)| {
        *name == service
            && actions
                .iter()
                .any(|a| *a == "*" || a.eq_ignore_ascii_case(action))
    })
}

// One call per gateway instance, each argument a different part of its rule set.
#[allow(clippy::too_many_arguments)]
fn write_rules(
    dir: &Path,
    account: &str,
    keys: &[Cred],
    services: Services,
    routes: Routes,
    upstream: SocketAddr,
    unsigned_body: &str,
    signatures: &str,
) {
    let mut k = format!("[[account]]\nid = \"{account}\"\nname = \"interop\"\n");
    for c in keys {
        k += &format!(
            "\n[[access_key]]\nid = \"{}\"\naccount = \"{account}\"\nsecret = \"{}\"\nstatus = \"active\"\n",
            c.id, c.secret
        );
        if let Some((token, expires)) = c.temporary {
            k += &format!("temporary = true\nexpires = {expires}\nsecurity_token = \"{token}\"\n");
        }
    }
    std::fs::write(dir.join("keys.toml"), k).unwrap();

    let leaked = keys.iter().find(|c| c.role == "leaked").unwrap();
    std::fs::write(
        dir.join("leaked.toml"),
        format!(
            "[[leaked_key]]\nid = \"{}\"\nreported = 2026-11-20T08:00:00Z\nreason = \"interop suite\"\n",
            leaked.id
        ),
    )
    .unwrap();

    let mut s = String::new();
    for (name, actions) in services {
        let list: Vec<String> = actions.iter().map(|a| format!("\"{a}\"")).collect();
        s += &format!(
            "[[service]]\nname = \"{name}\"\nactions = [{}]\n\n",
            list.join(", ")
        );
    }
    std::fs::write(dir.join("high_risk.toml"), s).unwrap();

    let mut r = String::new();
    for (host, prefix, service) in routes {
        r += "[[route]]\n";
        if let Some(h) = host {
            r += &format!("host = \"{h}\"\n");
        }
        if let Some(p) = prefix {
            r += &format!("path_prefix = \"{p}\"\n");
        }
        r += &format!(
            "service = \"{service}\"\nsignatures = \"{signatures}\"\nupstream = \"http://{upstream}\"\n\n"
        );
    }
    std::fs::write(dir.join("routes.toml"), r).unwrap();

    std::fs::write(
        dir.join("settings.toml"),
        format!(
            "[settings]\nclock_skew = \"15m\"\nnonce_ttl = \"15m\"\nupstream_timeout = \"10s\"\nunsigned_body = \"{unsigned_body}\"\n"
        ),
    )
    .unwrap();
}

// ------------------------------------------------------------------------------------------------
// Recording upstream

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Alibaba SDKs: 200 JSON `{"RequestId": …, "Echo": {…}}` for everything.
    Alibaba,
    /// botocore: a body in each protocol's success shape.
    Aws,
}

/// What the upstream received (after akgate).
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    host: String,
    path: String,
    query: String,
    /// `X-Akgate-Key`, if akgate set it.
    key: Option<String>,
    action: String,
    /// Service by akgate's routes.
    service: Option<&'static str>,
    /// From the User-Agent tag `akgate-interop/<driver>/<role>` (absent for hand-made requests,
    /// e.g. presigned URLs fetched with http.client).
    driver: Option<String>,
    role: Option<String>,
    /// Alibaba nonce (`x-acs-signature-nonce` or `SignatureNonce`).
    nonce: Option<String>,
}

struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn pct_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < b.len()
                && b[i + 1].is_ascii_hexdigit()
                && b[i + 2].is_ascii_hexdigit() =>
            {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first value of `name` in a form-encoded string.
fn form_value(s: &str, name: &str) -> Option<String> {
    s.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (pct_decode(k, true) == name).then(|| pct_decode(v, true))
    })
}

fn has_param(query: &str, name: &str) -> bool {
    query
        .split('&')
        .any(|kv| kv.split('=').next() == Some(name))
}

fn s3_action(method: &str, path: &str, query: &str) -> String {
    let rest = path.trim_start_matches('/');
    let has_key = rest.split_once('/').is_some_and(|(_, k)| !k.is_empty());
    let a = match (method, has_key) {
        ("GET", false) if has_param(query, "list-type") => "ListObjectsV2",
        ("GET", false) if has_param(query, "policy") => "GetBucketPolicy",
        ("GET", false) => "ListObjects",
        ("GET", true) => "GetObject",
        ("HEAD", false) => "HeadBucket",
        ("HEAD", true) => "HeadObject",
        ("PUT", false) if has_param(query, "policy") => "PutBucketPolicy",
        ("PUT", false) => "CreateBucket",
        ("PUT", true) => "PutObject",
        ("DELETE", false) if has_param(query, "policy") => "DeleteBucketPolicy",
        ("DELETE", false) => "DeleteBucket",
        ("DELETE", true) => "DeleteObject",
        _ => return format!("{method} {path}"),
    };
    a.to_string()
}

fn header(parts: &http::request::Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn ua_tag(user_agent: &str) -> (Option<String>, Option<String>) {
    let Some(i) = user_agent.find("akgate-interop/") else {
        return (None, None);
    };
    let tag = user_agent[i + "akgate-interop/".len()..]
        .split_whitespace()
        .next()
        .unwrap_or("");
    let mut it = tag.splitn(2, '/');
    (it.next().map(str::to_string), it.next().map(str::to_string))
}

fn classify(mode: Mode, parts: &http::request::Parts, body: &[u8]) -> Seen {
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let host = header(parts, "host").unwrap_or_default();
    let method = parts.method.to_string();
    let (driver, role) = ua_tag(&header(parts, "user-agent").unwrap_or_default());
    let service = match mode {
        Mode::Alibaba => route_service(ALI_ROUTES, &host, &path),
        Mode::Aws => route_service(AWS_ROUTES, &host, &path),
    };
    let form = String::from_utf8_lossy(body);
    let action = match (mode, service) {
        (Mode::Alibaba, _) => header(parts, "x-acs-action")
            .or_else(|| form_value(&query, "Action"))
            .unwrap_or_default(),
        (Mode::Aws, Some("s3")) => s3_action(&method, &path, &query),
        (Mode::Aws, Some("dynamodb")) => header(parts, "x-amz-target")
            .and_then(|t| t.rsplit('.').next().map(str::to_string))
            .unwrap_or_default(),
        (Mode::Aws, _) => form_value(&form, "Action")
            .or_else(|| form_value(&query, "Action"))
            .unwrap_or_default(),
    };
    let nonce =
        header(parts, "x-acs-signature-nonce").or_else(|| form_value(&query, "SignatureNonce"));
    Seen {
        method,
        host,
        path,
        query,
        key: header(parts, "x-akgate-key"),
        action,
        service,
        driver,
        role,
        nonce,
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Status, content type and body of the upstream's answer.
fn answer(mode: Mode, seen: &Seen, n: u64) -> (u16, &'static str, Vec<u8>) {
    let key = seen.key.clone().unwrap_or_default();
    let a = seen.action.as_str();
    match (mode, seen.service) {
        (Mode::Alibaba, _) => {
            let body = serde_json::json!({
                "RequestId": format!("UPSTREAM-{n}"),
                "Echo": {
                    "Method": seen.method, "Host": seen.host, "Path": seen.path,
                    "Query": seen.query, "Key": key, "Action": seen.action,
                },
            });
            (200, "application/json;charset=utf-8", body.to_string().into_bytes())
        }
        (Mode::Aws, Some("sts")) if a == "GetCallerIdentity" => (
            200,
            "text/xml",
            format!(
                "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult><Arn>arn:aws:iam::000000000000:user/interop</Arn><UserId>{}</UserId><Account>000000000000</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>upstream-{n}</RequestId></ResponseMetadata></GetCallerIdentityResponse>",
                xml_escape(&key)
            )
            .into_bytes(),
        ),
        (Mode::Aws, Some(svc @ ("sts" | "iam"))) => {
            let ns = if svc == "sts" {
                "https://sts.amazonaws.com/doc/2011-06-15/"
            } else {
                "https://iam.amazonaws.com/doc/2010-05-08/"
            };
            let a = xml_escape(a);
            (
                200,
                "text/xml",
                format!("<{a}Response xmlns=\"{ns}\"><{a}Result></{a}Result><ResponseMetadata><RequestId>upstream-{n}</RequestId></ResponseMetadata></{a}Response>").into_bytes(),
            )
        }
        (Mode::Aws, Some("ec2")) => {
            let inner = if a == "DescribeRegions" {
                "<regionInfo><item><regionName>interop-1</regionName><regionEndpoint>upstream</regionEndpoint></item></regionInfo>"
            } else {
                ""
            };
            let a = xml_escape(a);
            (
                200,
                "text/xml",
                format!("<{a}Response xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>upstream-{n}</requestId>{inner}</{a}Response>").into_bytes(),
            )
        }
        (Mode::Aws, Some("dynamodb")) => {
            let body = if a == "ListTables" {
                r#"{"TableNames":[]}"#
            } else {
                "{}"
            };
            (200, "application/x-amz-json-1.0", body.as_bytes().to_vec())
        }
        (Mode::Aws, Some("s3")) => match a {
            "ListObjectsV2" | "ListObjects" => {
                let bucket = seen.path.trim_start_matches('/').split('/').next().unwrap_or("");
                (
                    200,
                    "application/xml",
                    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>{}</Name><Prefix></Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>", xml_escape(bucket)).into_bytes(),
                )
            }
            "GetObject" => (200, "application/octet-stream", S3_OBJECT_BODY.to_vec()),
            _ => (200, "application/xml", Vec::new()),
        },
        (Mode::Aws, _) => (404, "text/plain", b"no such service in the test upstream".to_vec()),
    }
}

async fn upstream(mode: Mode) -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let counter = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let record = record.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let record = record.clone();
                    let counter = counter.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let seen = classify(mode, &parts, &body);
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        let (status, content_type, out) = answer(mode, &seen, n);
                        let mut resp = Response::new(Full::new(Bytes::from(out)));
                        *resp.status_mut() = status.try_into().unwrap();
                        let h = resp.headers_mut();
                        h.insert("content-type", HeaderValue::from_static(content_type));
                        let value = |s: &str| {
                            HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("-"))
                        };
                        h.insert("x-echo-key", value(seen.key.as_deref().unwrap_or("")));
                        h.insert("x-echo-action", value(&seen.action));
                        h.insert("x-amzn-requestid", value(&format!("upstream-{n}")));
                        h.insert("x-amz-request-id", value(&format!("upstream-{n}")));
                        record.lock().unwrap().push(seen);
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Upstream { addr, seen }
}

// ------------------------------------------------------------------------------------------------
// Running the drivers

struct DriverRun {
    script: &'static str,
    stdout: String,
    stderr: String,
    exit: Option<i32>,
    timed_out: bool,
}

fn run_driver(python: &Path, script: &'static str, endpoint: &str, keys: &[Cred]) -> DriverRun {
    let path = format!("{}/tests/interop/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new(python);
    cmd.args([path.as_str(), "--endpoint", endpoint])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for c in keys {
        let role = c.role.to_uppercase();
        cmd.env(format!("AKGATE_IT_{role}_ID"), c.id)
            .env(format!("AKGATE_IT_{role}_SECRET"), c.secret);
        if let Some((token, _)) = c.temporary {
            cmd.env(format!("AKGATE_IT_{role}_TOKEN"), token);
        }
    }
    let mut child = cmd.spawn().expect("python");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > DRIVER_TIMEOUT {
            timed_out = true;
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    DriverRun {
        script,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
        exit: status.and_then(|s| s.code()),
        timed_out,
    }
}

/// Failures of one driver run: its FAIL lines, a missing or non-zero summary, a bad exit.
fn driver_failures(run: &DriverRun) -> Vec<String> {
    let mut failures = Vec::new();
    let hint = |line: &str| {
        if line.contains("IncompleteSignature") {
            " [akgate answered IncompleteSignature: scheme not implemented?]"
        } else {
            ""
        }
    };
    for line in run.stdout.lines().filter(|l| l.starts_with("FAIL ")) {
        failures.push(format!("{}: {line}{}", run.script, hint(line)));
    }
    if run.timed_out {
        failures.push(format!("{}: killed after {DRIVER_TIMEOUT:?}", run.script));
    }
    let summary = run.stdout.lines().rev().find_map(|l| {
        let (p, f) = l.trim().split_once(" passed, ")?;
        let f = f.strip_suffix(" failed")?;
        Some((p.parse::<u32>().ok()?, f.parse::<u32>().ok()?))
    });
    match summary {
        Some((p, 0)) if p > 0 && run.exit == Some(0) => {}
        Some((p, f)) if f > 0 || p == 0 || run.exit != Some(0) => {
            if failures.is_empty() {
                failures.push(format!(
                    "{}: summary {p} passed, {f} failed, exit {:?}; stderr:\n{}",
                    run.script, run.exit, run.stderr
                ));
            }
        }
        _ => failures.push(format!(
            "{}: no `N passed, M failed` line (exit {:?}); stderr:\n{}",
            run.script, run.exit, run.stderr
        )),
    }
    failures
}

// ------------------------------------------------------------------------------------------------
// What the upstreams must (not) have seen

/// (driver tag, role, action) that must have reached the upstream: the allowed calls.
const ALI_EXPECTED: &[(&str, &str, &str)] = &[
    ("alibaba_tea.v3", "ok", "DescribeRegions"),
    ("alibaba_tea.v3", "leaked", "DescribeRegions"),
    ("alibaba_tea.v3", "ok", "DeleteInstance"),
    ("alibaba_tea.v3", "ok", "GetUser"),
    ("alibaba_tea.v3", "sts", "DescribeRegions"),
    ("alibaba_tea.v3", "ok", "DescribeClusterDetail"),
    ("alibaba_tea.v3", "ok", "ModifyCluster"),
    ("alibaba_tea.v3", "sts", "DescribeClusterDetail"),
    ("alibaba_tea.v2", "ok", "DescribeRegions"),
    ("alibaba_tea.v2", "leaked", "DescribeRegions"),
    ("alibaba_tea.v2", "ok", "DeleteInstance"),
    ("alibaba_tea.v2", "ok", "GetUser"),
    ("alibaba_tea.v2", "sts", "DescribeRegions"),
    ("alibaba_tea.v2", "ok", "DescribeClusterDetail"),
    ("alibaba_tea.v2", "ok", "ModifyCluster"),
    ("alibaba_tea.v2", "sts", "DescribeClusterDetail"),
    ("aliyun_core.rpc", "ok", "DescribeRegions"),
    ("aliyun_core.rpc", "leaked", "DescribeRegions"),
    ("aliyun_core.rpc", "ok", "DeleteInstance"),
    ("aliyun_core.rpc", "sts", "DescribeRegions"),
    ("aliyun_core.roa", "ok", "DescribeClusterDetail"),
    ("aliyun_core.roa", "ok", "ModifyCluster"),
    ("aliyun_core.roa", "sts", "DescribeClusterDetail"),
];

const AWS_EXPECTED: &[(&str, &str, &str)] = &[
    ("aws_botocore", "ok", "GetCallerIdentity"),
    ("aws_botocore", "leaked", "GetCallerIdentity"),
    ("aws_botocore", "ok", "DescribeRegions"),
    ("aws_botocore", "ok", "ListTables"),
    ("aws_botocore", "ok", "ListObjectsV2"),
    ("aws_botocore", "ok", "PutObject"),
    ("aws_botocore", "ok", "GetObject"),
    ("aws_botocore", "sts", "GetCallerIdentity"),
    ("aws_botocore", "sts", "ListObjectsV2"),
];

/// (driver tag, role, action) that must never reach the upstream although the key may call the
/// action otherwise: here, an UNSIGNED-PAYLOAD high-risk S3 call (`unsigned_body = "refuse_high_risk"`).
const AWS_NEVER: &[(&str, &str, &str)] = &[("aws_botocore", "ok", "PutBucketPolicy")];

fn upstream_failures(
    instance: &str,
    seen: &[Seen],
    keys: &[Cred],
    services: Services,
    expected: &[(&str, &str, &str)],
    never: &[(&str, &str, &str)],
) -> Vec<String> {
    let mut failures = Vec::new();
    let id_of = |role: &str| keys.iter().find(|c| c.role == role).map(|c| c.id);
    let leaked = id_of("leaked").unwrap();
    let expired = id_of("expired").unwrap();
    let mut nonces: HashMap<(String, String), usize> = HashMap::new();
    for s in seen {
        let what = format!(
            "{} {} {}{} (action {:?}, key {:?}, from {}/{})",
            s.method,
            s.host,
            s.path,
            if s.query.is_empty() {
                String::new()
            } else {
                format!("?{}", s.query)
            },
            s.action,
            s.key,
            s.driver.as_deref().unwrap_or("?"),
            s.role.as_deref().unwrap_or("?"),
        );
        let Some(key) = s.key.as_deref() else {
            failures.push(format!(
                "UPSTREAM {instance}: forwarded without X-Akgate-Key: {what}"
            ));
            continue;
        };
        if let Some(role @ ("wrong" | "unknown" | "expired")) = s.role.as_deref() {
            failures.push(format!(
                "UPSTREAM {instance}: a request that must be refused ({role} credentials) reached the upstream: {what}"
            ));
        } else if key == expired {
            failures.push(format!(
                "UPSTREAM {instance}: the expired temporary key reached the upstream: {what}"
            ));
        }
        if let Some(role @ ("ok" | "leaked" | "sts")) = s.role.as_deref()
            && id_of(role) != Some(key)
        {
            failures.push(format!(
                "UPSTREAM {instance}: X-Akgate-Key {key} is not the {role} key: {what}"
            ));
        }
        if key == leaked
            && let Some(service) = s.service
            && is_high_risk(services, service, &s.action)
        {
            failures.push(format!(
                "UPSTREAM {instance}: the leaked key's high-risk {service} call reached the upstream: {what}"
            ));
        }
        if let (Some(d), Some(r)) = (s.driver.as_deref(), s.role.as_deref())
            && never
                .iter()
                .any(|(nd, nr, na)| *nd == d && *nr == r && *na == s.action)
        {
            failures.push(format!(
                "UPSTREAM {instance}: a request that must be refused reached the upstream: {what}"
            ));
        }
        if let Some(n) = &s.nonce {
            *nonces.entry((key.to_string(), n.clone())).or_default() += 1;
        }
    }
    for ((key, nonce), count) in nonces {
        if count > 1 {
            failures.push(format!(
                "UPSTREAM {instance}: nonce {nonce} of key {key} was forwarded {count} times (replay not refused)"
            ));
        }
    }
    let mut missing: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (driver, role, action) in expected {
        let hit = seen.iter().any(|s| {
            s.driver.as_deref() == Some(*driver)
                && s.role.as_deref() == Some(*role)
                && s.action == *action
        });
        if !hit {
            missing
                .entry(driver)
                .or_default()
                .push(format!("{action} by the {role} key"));
        }
    }
    for (driver, items) in missing {
        failures.push(format!(
            "UPSTREAM {instance}: allowed calls of {driver} never reached the upstream: {}",
            items.join(", ")
        ));
    }
    failures
}

fn print_seen(instance: &str, seen: &[Seen]) {
    let mut counts: BTreeMap<(String, String, String, String), usize> = BTreeMap::new();
    for s in seen {
        *counts
            .entry((
                s.driver.clone().unwrap_or_else(|| "-".into()),
                s.role.clone().unwrap_or_else(|| "-".into()),
                s.service.unwrap_or("-").to_string(),
                s.action.clone(),
            ))
            .or_default() += 1;
    }
    println!("--- {instance} upstream saw {} requests:", seen.len());
    for ((driver, role, service, action), n) in counts {
        println!("    {n:>3} × {driver} {role} {service} {action}");
    }
}

// ------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_interop() {
    let Some(python) = sdk_python() else { return };

    let ali_up = upstream(Mode::Alibaba).await;
    let ali_dir = tempfile::tempdir().unwrap();
    write_rules(
        ali_dir.path(),
        "1000000000000001",
        &ALI_KEYS,
        ALI_SERVICES,
        ALI_ROUTES,
        ali_up.addr,
        // tea-openapi's ROA v1 never signs its body (no Content-MD5); this suite is about the SDKs,
        // the unsigned-body policy has its own tests.
        "allow",
        "alibaba",
    );
    let ali_gw = Akgate::start(ali_dir.path(), "127.0.0.1:0", &[]);

    let aws_up = upstream(Mode::Aws).await;
    let aws_dir = tempfile::tempdir().unwrap();
    write_rules(
        aws_dir.path(),
        "000000000000",
        &AWS_KEYS,
        AWS_SERVICES,
        AWS_ROUTES,
        aws_up.addr,
        "refuse_high_risk",
        "aws",
    );
    let aws_gw = Akgate::start(aws_dir.path(), "127.0.0.1:0", &[]);

    let ali_endpoint = ali_gw.proxy.to_string();
    let aws_endpoint = aws_gw.proxy.to_string();
    let runs = tokio::task::spawn_blocking(move || {
        vec![
            run_driver(&python, "alibaba_tea.py", &ali_endpoint, &ALI_KEYS),
            run_driver(&python, "aliyun_core.py", &ali_endpoint, &ALI_KEYS),
            run_driver(&python, "aws_botocore.py", &aws_endpoint, &AWS_KEYS),
        ]
    })
    .await
    .unwrap();

    let mut failures = Vec::new();
    for run in &runs {
        println!(
            "=== {} (exit {:?}{})",
            run.script,
            run.exit,
            if run.timed_out { ", timed out" } else { "" }
        );
        print!("{}", run.stdout);
        if !run.stderr.trim().is_empty() {
            println!("--- {} stderr:\n{}", run.script, run.stderr.trim_end());
        }
        failures.extend(driver_failures(run));
    }

    let ali_seen = ali_up.seen.lock().unwrap().clone();
    let aws_seen = aws_up.seen.lock().unwrap().clone();
    print_seen("alibaba", &ali_seen);
    print_seen("aws", &aws_seen);
    failures.extend(upstream_failures(
        "alibaba",
        &ali_seen,
        &ALI_KEYS,
        ALI_SERVICES,
        ALI_EXPECTED,
        &[],
    ));
    failures.extend(upstream_failures(
        "aws",
        &aws_seen,
        &AWS_KEYS,
        AWS_SERVICES,
        AWS_EXPECTED,
        AWS_NEVER,
    ));
    drop(ali_gw);
    drop(aws_gw);

    println!("=== {} failure(s)", failures.len());
    assert!(
        failures.is_empty(),
        "{} interop failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The upstream checks above must catch what they claim to: fed requests that akgate must never
/// forward, they report each one.
#[test]
fn upstream_checks_flag_what_must_not_be_forwarded() {
    let seen = |driver: &str, role: &str, key: &str, host: &str, path: &str, action: &str| Seen {
        method: "POST".into(),
        host: host.into(),
        path: path.into(),
        query: String::new(),
        key: Some(key.into()),
        action: action.into(),
        service: route_service(ALI_ROUTES, host, path),
        driver: Some(driver.into()),
        role: Some(role.into()),
        nonce: None,
    };
    let [ok, leaked, sts, expired] = &ALI_KEYS;
    let allowed = vec![
        seen("d", "ok", ok.id, "127.0.0.1:1", "/", "DeleteInstance"),
        seen(
            "d",
            "leaked",
            leaked.id,
            "127.0.0.1:1",
            "/",
            "DescribeRegions",
        ),
        seen(
            "d",
            "sts",
            sts.id,
            "127.0.0.1:1",
            "/clusters/c-1",
            "DeleteCluster",
        ),
    ];
    let expected = [("d", "ok", "DeleteInstance"), ("d", "sts", "DeleteCluster")];
    assert_eq!(
        upstream_failures("t", &allowed, &ALI_KEYS, ALI_SERVICES, &expected, &[]),
        Vec::<String>::new()
    );

    let mut dup = seen("d", "ok", ok.id, "127.0.0.1:1", "/", "DescribeRegions");
    dup.nonce = Some("n-1".into());
    let mut no_key = seen("d", "ok", ok.id, "127.0.0.1:1", "/", "DescribeRegions");
    no_key.key = None;
    let bad = vec![
        seen(
            "d",
            "leaked",
            leaked.id,
            "127.0.0.1:1",
            "/",
            "DeleteInstance",
        ),
        seen("d", "leaked", leaked.id, "localhost:1", "/", "GetUser"),
        seen(
            "d",
            "leaked",
            leaked.id,
            "127.0.0.1:1",
            "/clusters/c-1",
            "deletecluster",
        ),
        seen("d", "wrong", ok.id, "127.0.0.1:1", "/", "DescribeRegions"),
        seen(
            "d",
            "expired",
            expired.id,
            "127.0.0.1:1",
            "/",
            "DescribeRegions",
        ),
        seen("d", "sts", ok.id, "127.0.0.1:1", "/", "DescribeRegions"),
        seen("d", "ok", ok.id, "127.0.0.1:1", "/", "Never"),
        dup.clone(),
        dup,
        no_key,
    ];
    let failures = upstream_failures(
        "t",
        &bad,
        &ALI_KEYS,
        ALI_SERVICES,
        &[("d", "ok", "Missing")],
        &[("d", "ok", "Never")],
    );
    for needle in [
        "leaked key's high-risk ecs call",
        "leaked key's high-risk ram call",
        "leaked key's high-risk cs call",
        "(wrong credentials)",
        "(expired credentials)",
        "is not the sts key",
        "must be refused reached the upstream: POST 127.0.0.1:1 / (action \"Never\"",
        "nonce n-1",
        "without X-Akgate-Key",
        "never reached the upstream: Missing by the ok key",
    ] {
        assert!(
            failures.iter().any(|f| f.contains(needle)),
            "{needle:?} not in {failures:#?}"
        );
    }
    assert_eq!(failures.len(), 10, "{failures:#?}");
}
