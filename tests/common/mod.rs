//! Shared harness for the socket-level tests: a recording upstream, the real `akgate` binary run
//! as a child process on 127.0.0.1 ports, a signer and a client that can pick its source address.
#![allow(dead_code)]

pub mod vectors;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const ALICE: (&str, &str) = ("AKALICEKEY000001", "alice-secret-for-tests-only");
pub const BOB_LIMITED: (&str, &str) = ("AKBOBLIMITED0001", "bob-secret-for-tests-only");
pub const DISABLED: (&str, &str) = ("AKDISABLED000001", "disabled-secret-for-tests-only");
pub const LEAKED: (&str, &str) = ("AKLEAKED00000001", "leaked-secret-for-tests-only");
pub const OTHER_ACCOUNT: (&str, &str) = ("AKOTHERACCT00001", "other-secret-for-tests-only");
pub const STS_KEY: (&str, &str) = ("STS.AKTEMPORARY01", "sts-secret-for-tests-only");
pub const STS_EXPIRED: (&str, &str) = ("STS.AKEXPIRED0001", "sts-expired-secret-for-tests-only");
pub const STS_TOKEN: &str = "CAIS+fake/sts==token-for-tests";
/// The SigV4 key of tests/secrets.rs.
pub const AWS_SECRETS_TEST: (&str, &str) =
    ("AKIASECRETSSCAN00001", "aws-scan-secret/for+tests=only");

/// Secrets configured by test files that keep their own constants: (file in tests/, secret).
/// `tests/secrets.rs` checks that each still appears in its file, so that this list cannot go
/// stale unnoticed.
pub const OTHER_TEST_SECRETS: &[(&str, &str)] = &[
    ("audit.rs", "plain-secret-for-tests-only"),
    ("audit.rs", "shadow-user-secret-for-tests-only"),
    ("audit.rs", "shadow-leak-secret-for-tests-only"),
    ("cli.rs", "cli-test-secret"),
    ("sigv4.rs", "aws-secret-for-tests-only/+abc"),
    ("interop.rs", "interop-ok-secret-FAKE-tests-only"),
    ("interop.rs", "interop-leaked-secret-FAKE-tests-only"),
    ("interop.rs", "interop-sts-secret-FAKE-tests-only"),
    ("interop.rs", "interop-expired-secret-FAKE-tests-only"),
    ("interop.rs", "interopOkSecretFAKEforTestsOnly000000001"),
    ("interop.rs", "interopLeakedSecretFAKEforTestsOnly00001"),
    ("interop.rs", "interopStsSecretFAKEforTestsOnly00000001"),
    ("interop.rs", "interopExpiredSecretFAKEforTestsOnly0001"),
    ("deploy.rs", "FAKE-example-secret-ci-deployer-not-real"),
    ("deploy.rs", "FAKE-example-secret-ops-oncall-not-real"),
    ("deploy.rs", "FAKE-EXAMPLE-TOTP-SEED-NOTREAL-AAAAAA"),
    ("mfa.rs", "mfa-secret-for-tests-only"),
    ("mfa.rs", "mfa-second-secret-for-tests-only"),
    ("mfa.rs", "mfa-plain-secret-for-tests-only"),
    ("mfa.rs", "aws-mfa-secret/for+tests=only"),
    ("mfa.rs", "MFVWOYLUMUWWMYLLMUWXI33UOAWXGZLFMQWTAMI"),
];

/// Every AccessKey secret the test suite and the shipped demo configure, with a label naming
/// it: what akgate must never write. The one list the secrets scan uses.
pub fn configured_secrets() -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = [
        ("ALICE", ALICE.1),
        ("BOB_LIMITED", BOB_LIMITED.1),
        ("DISABLED", DISABLED.1),
        ("LEAKED", LEAKED.1),
        ("OTHER_ACCOUNT", OTHER_ACCOUNT.1),
        ("STS_KEY", STS_KEY.1),
        ("STS_EXPIRED", STS_EXPIRED.1),
        ("AWS_SECRETS_TEST", AWS_SECRETS_TEST.1),
    ]
    .iter()
    .map(|(l, s)| (l.to_string(), s.to_string()))
    .collect();
    for (id, _, secret) in akgate::demo::DEMO_KEYS {
        all.push((format!("demo key {id}"), secret.to_string()));
    }
    for (file, secret) in OTHER_TEST_SECRETS {
        all.push((format!("tests/{file}"), secret.to_string()));
    }
    all
}

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream saw no request")
    }
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

pub const UPSTREAM_BODY: &str =
    r#"{"RequestId":"UPSTREAM-1","Regions":{"Region":[]},"note":"from upstream"}"#;

/// An upstream that records every request and answers 200 with a fixed body and header.
pub async fn upstream() -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let record = record.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let record = record.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        record.lock().unwrap().push(Seen {
                            method: parts.method.to_string(),
                            path_and_query: parts
                                .uri
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default(),
                            headers: parts.headers,
                            body,
                        });
                        let mut resp =
                            Response::new(Full::new(Bytes::from_static(UPSTREAM_BODY.as_bytes())));
                        resp.headers_mut()
                            .insert("x-upstream", "yes".parse().unwrap());
                        resp.headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
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

/// An upstream that accepts connections and never answers.
pub async fn hanging_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    addr
}

/// The rule set the socket tests run against.
pub fn write_rules(dir: &Path, upstream: SocketAddr, slow: SocketAddr) {
    std::fs::write(dir.join("bob.secret"), format!("{}\n", BOB_LIMITED.1)).unwrap();
    std::fs::write(
        dir.join("keys.toml"),
        format!(
            r#"
[[account]]
id = "100"
name = "main"
api_source_cidrs = ["127.0.0.0/8", "::1/128"]

[[account]]
id = "200"
name = "partner"
api_source_cidrs = ["127.0.0.5/32", "2001:db8::/32"]

[[user]]
name = "alice"
account = "100"
api_source_cidrs = ["127.0.0.1/32", "127.0.0.9/32", "::1/128"]

[[user]]
name = "bob"
account = "100"

[[access_key]]
id = "{alice}"
user = "alice"
account = "100"
secret_env = "AKGATE_IT_SECRET_ALICE"
status = "active"

[[access_key]]
id = "{bob}"
user = "bob"
account = "100"
secret_file = "bob.secret"
status = "active"
api_source_cidrs = ["127.0.0.3/32"]

[[access_key]]
id = "{disabled}"
user = "bob"
account = "100"
secret = "{disabled_secret}"
status = "disabled"

[[access_key]]
id = "{leaked}"
user = "bob"
account = "100"
secret = "{leaked_secret}"
status = "active"

[[access_key]]
id = "{other}"
account = "200"
secret = "{other_secret}"
status = "active"

[[access_key]]
id = "{sts}"
account = "100"
secret = "{sts_secret}"
status = "active"
temporary = true
expires = 2099-01-01T00:00:00Z
security_token = "{sts_token}"

[[access_key]]
id = "{sts_expired}"
account = "100"
secret = "{sts_expired_secret}"
status = "active"
temporary = true
expires = 2020-01-01T00:00:00Z
security_token = "{sts_token}"
"#,
            alice = ALICE.0,
            bob = BOB_LIMITED.0,
            disabled = DISABLED.0,
            disabled_secret = DISABLED.1,
            leaked = LEAKED.0,
            leaked_secret = LEAKED.1,
            other = OTHER_ACCOUNT.0,
            other_secret = OTHER_ACCOUNT.1,
            sts = STS_KEY.0,
            sts_secret = STS_KEY.1,
            sts_expired = STS_EXPIRED.0,
            sts_expired_secret = STS_EXPIRED.1,
            sts_token = STS_TOKEN,
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("leaked.toml"),
        format!(
            "[[leaked_key]]\nid = \"{}\"\nreported = 2026-11-20T08:00:00Z\nreason = \"test\"\n",
            LEAKED.0
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("high_risk.toml"),
        r#"
[[service]]
name = "ecs"
actions = ["RunInstances", "DeleteInstance"]

[[service]]
name = "ram"
actions = ["*"]
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("routes.toml"),
        format!(
            r#"
[[route]]
host = "ram.test"
service = "ram"
upstream = "http://{upstream}"

[[route]]
host = "down.test"
service = "ecs"
upstream = "http://127.0.0.1:1"

[[route]]
host = "slow.test"
service = "ecs"
upstream = "http://{slow}"

[[route]]
host = "127.0.0.1"
service = "ecs"
upstream = "http://{upstream}"

[[route]]
host = "[::1]"
service = "ecs"
upstream = "http://{upstream}"
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("settings.toml"),
        r#"
[settings]
clock_skew = "15m"
nonce_ttl = "15m"
trusted_proxies = ["127.0.0.9/32"]
max_body_bytes = 65536
upstream_timeout = "1s"
"#,
    )
    .unwrap();
}

/// Where the harness keeps a copy of everything akgate writes during the test run (its stdout,
/// stderr and audit-log files, the response bodies the helpers receive, the CLI tools' output),
/// for `tests/secrets.rs` to scan for secrets. `.ci/run` empties it before `cargo test`.
pub fn capture_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_TARGET_TMPDIR"), "/akgate-capture"))
}

/// A new file in [`capture_dir`], named after the test binary, this process and `what`. `None`
/// if it cannot be created; the scan then finds too little and fails.
pub fn capture_file(what: &str) -> Option<std::fs::File> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = capture_dir();
    std::fs::create_dir_all(&dir).ok()?;
    let exe = std::env::current_exe().ok()?;
    let bin = exe.file_stem()?.to_str()?.to_string();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let name = format!("{bin}-{}-{seq:04}-{what}.log", std::process::id());
    std::fs::File::create(dir.join(name)).ok()
}

/// Appends to this process's capture file of `what` (one file per kind, opened on first use).
pub fn capture(what: &'static str, bytes: &[u8]) {
    static FILES: Mutex<Vec<(&'static str, std::fs::File)>> = Mutex::new(Vec::new());
    let mut files = FILES.lock().unwrap_or_else(|p| p.into_inner());
    if !files.iter().any(|(w, _)| *w == what) {
        let Some(f) = capture_file(what) else { return };
        files.push((what, f));
    }
    if let Some((_, f)) = files.iter_mut().find(|(w, _)| *w == what) {
        let _ = f.write_all(bytes);
    }
}

/// Captures a finished command's stdout and stderr (the CLI tools).
pub fn capture_output(out: &std::process::Output) {
    capture("cli-stdout", &out.stdout);
    capture("cli-stderr", &out.stderr);
}

/// The `akgate` binary, running `serve` until dropped.
///
/// Its stdout (the "listening" line, then audit lines unless `--audit-log` says otherwise) and
/// stderr are drained by threads so the child never blocks on a full pipe; both are also copied
/// to [`capture_dir`], and so is an `--audit-log` file when the gateway is dropped.
pub struct Akgate {
    child: Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    stdout_lines: Arc<Mutex<Vec<String>>>,
    stderr_text: Arc<Mutex<String>>,
    drains: Vec<std::thread::JoinHandle<()>>,
    audit_file: Option<PathBuf>,
}

impl Akgate {
    pub fn start(rules: &Path, listen: &str, extra: &[&str]) -> Akgate {
        Akgate::start_with_env(rules, listen, extra, &[])
    }

    /// [`Akgate::start`] with more environment variables (set after the defaults, so
    /// `AKGATE_LOG` may be overridden).
    pub fn start_with_env(
        rules: &Path,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Akgate {
        let mut child = Command::new(env!("CARGO_BIN_EXE_akgate"))
            .args(["serve", "--rules"])
            .arg(rules)
            .args(["--listen", listen, "--admin", "127.0.0.1:0"])
            .args(extra)
            .env("AKGATE_IT_SECRET_ALICE", ALICE.1)
            .env(
                "AKGATE_LOG",
                std::env::var("AKGATE_TEST_LOG").unwrap_or("warn".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("akgate binary");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        let mut stdout_capture = capture_file("akgate-stdout");
        if let Some(f) = &mut stdout_capture {
            let _ = f.write_all(line.as_bytes());
        }
        if line.is_empty() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            capture("akgate-stderr", err.as_bytes());
            panic!("akgate did not start: {err}");
        }
        // "akgate listening on http://A admin http://B"
        let words: Vec<&str> = line.split_whitespace().collect();
        let addr = |w: &str| w.split("://").nth(1).unwrap().parse().unwrap();
        let stdout_lines = Arc::new(Mutex::new(Vec::new()));
        let sink = stdout_lines.clone();
        let stdout_drain = std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if let Some(f) = &mut stdout_capture {
                    let _ = writeln!(f, "{line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let sink = stderr_text.clone();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut stderr_capture = capture_file("akgate-stderr");
        let stderr_drain = std::thread::spawn(move || {
            let mut line = String::new();
            while stderr.read_line(&mut line).is_ok_and(|n| n > 0) {
                if let Some(f) = &mut stderr_capture {
                    let _ = f.write_all(line.as_bytes());
                }
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let audit_file = extra
            .windows(2)
            .find(|w| w[0] == "--audit-log" && !matches!(w[1], "stdout" | "off" | "-"))
            .map(|w| PathBuf::from(w[1]));
        Akgate {
            proxy: addr(words[3]),
            admin: addr(words[5]),
            child,
            stdout_lines,
            stderr_text,
            drains: vec![stdout_drain, stderr_drain],
            audit_file,
        }
    }

    /// Stops the gateway (SIGTERM, so it flushes what it buffers; SIGKILL after 10 s) and waits
    /// until everything it wrote on stdout and stderr has been read, so that [`Self::audit_lines`]
    /// and [`Self::stderr`] are complete.
    pub fn stop(&mut self) {
        self.signal("TERM");
        if self.wait_exit(Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for drain in self.drains.drain(..) {
            let _ = drain.join();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `INT`, `HUP`…) to the gateway process.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -s {name} failed");
    }

    /// Waits up to `within` for the process to exit; its status, or `None` if it is still running.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if start.elapsed() > within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lines printed on stdout after the "listening" line so far (audit lines by default).
    pub fn audit_lines(&self) -> Vec<String> {
        self.stdout_lines.lock().unwrap().clone()
    }

    /// What the gateway logged on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr_text.lock().unwrap().clone()
    }

    /// The stdout audit line of `request_id`, waiting up to 5 s for the writer thread.
    pub async fn audit_for(&self, request_id: &str) -> serde_json::Value {
        find_audit_line(request_id, || self.audit_lines())
            .await
            .unwrap_or_else(|| {
                panic!(
                    "no audit line for request {request_id}; lines: {:#?}",
                    self.audit_lines()
                )
            })
    }
}

/// Polls `lines` for the JSON audit line whose `request_id` matches, up to 5 s.
pub async fn find_audit_line(
    request_id: &str,
    mut lines: impl FnMut() -> Vec<String>,
) -> Option<serde_json::Value> {
    let start = Instant::now();
    loop {
        let found = lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["request_id"] == request_id);
        if found.is_some() || start.elapsed() > Duration::from_secs(5) {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for Akgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(text) = self.audit_file.as_ref().and_then(|p| std::fs::read(p).ok()) {
            capture("akgate-audit-file", &text);
        }
    }
}

/// A request ready to send.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn without(mut self, k: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
        self
    }
    pub fn set(self, k: &str, v: &str) -> Self {
        self.without(k).header(k, v)
    }
}

pub fn nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{t:x}{:08x}{}",
        N.fetch_add(1, Ordering::Relaxed),
        std::process::id()
    )
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An RPC v1 call as aliyun-python-sdk-core sends it: every parameter in the query.
pub fn rpc_signed(
    host: &str,
    method: &str,
    action: &str,
    extra: &[(&str, &str)],
    key: (&str, &str),
    clock_offset: i64,
) -> Req {
    let date = akgate::time::format_iso8601_utc(now() + clock_offset);
    let nonce = nonce();
    let mut params: Vec<(&str, &str)> = vec![
        ("Action", action),
        ("Version", "2014-05-26"),
        ("Format", "JSON"),
        ("AccessKeyId", key.0),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", &nonce),
        ("Timestamp", &date),
    ];
    params.extend_from_slice(extra);
    let signature = akgate::auth::rpc1::sign(method, &params, key.1);
    let enc = akgate::auth::encoding::percent_encode;
    let mut query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    query.push(format!("Signature={}", enc(&signature)));
    Req {
        method: method.into(),
        path_and_query: format!("/?{}", query.join("&")),
        headers: vec![("host".into(), host.into())],
        body: vec![],
    }
}

/// An ACS3-signed ECS-style call. `clock_offset` shifts the signed date (seconds).
pub fn signed(
    host: &str,
    action: &str,
    query: &str,
    key: (&str, &str),
    body: &[u8],
    clock_offset: i64,
) -> Req {
    signed_with(
        host,
        "POST",
        "/",
        action,
        query,
        key,
        body,
        clock_offset,
        &[],
    )
}

#[allow(clippy::too_many_arguments)]
pub fn signed_with(
    host: &str,
    method: &str,
    path: &str,
    action: &str,
    query: &str,
    key: (&str, &str),
    body: &[u8],
    clock_offset: i64,
    extra: &[(&str, &str)],
) -> Req {
    let mut headers = vec![
        ("host".to_string(), host.to_string()),
        ("x-acs-action".to_string(), action.to_string()),
        ("x-acs-version".to_string(), "2014-05-26".to_string()),
        (
            "x-acs-date".to_string(),
            akgate::time::format_iso8601_utc(now() + clock_offset),
        ),
        ("x-acs-signature-nonce".to_string(), nonce()),
        ("accept".to_string(), "application/json".to_string()),
    ];
    if !body.is_empty() {
        headers.push((
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        ));
    }
    for (k, v) in extra {
        headers.push((k.to_string(), v.to_string()));
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
    let path_and_query = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    Req {
        method: method.into(),
        path_and_query,
        headers,
        body: body.to_vec(),
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn code(&self) -> String {
        self.json()["Code"].as_str().unwrap_or_default().to_string()
    }
    pub fn message(&self) -> String {
        self.json()["Message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    /// Asserts an Alibaba-shaped error with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.headers["content-type"],
            "application/json;charset=utf-8"
        );
        let j = self.json();
        assert_eq!(j["Code"], code, "body: {j}");
        for field in ["RequestId", "HostId", "Message", "Recommend"] {
            assert!(j[field].is_string(), "missing {field}: {j}");
        }
    }
}

fn build(req: &Req, authority: &str) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(req.method.as_str())
        .uri(req.path_and_query.as_str());
    let mut has_host = false;
    for (k, v) in &req.headers {
        has_host |= k.eq_ignore_ascii_case("host");
        b = b.header(k.as_str(), v.as_str());
    }
    if !has_host {
        b = b.header("host", authority);
    }
    b.body(Full::new(Bytes::from(req.body.clone()))).unwrap()
}

/// Sends one request over a new HTTP/1.1 connection, from `source` if given.
pub async fn send_from(addr: SocketAddr, source: Option<IpAddr>, req: &Req) -> Resp {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4().unwrap(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6().unwrap(),
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0)).unwrap();
    }
    let stream = socket.connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(build(req, &addr.to_string()))
        .await
        .unwrap();
    collect(resp).await
}

pub async fn send(addr: SocketAddr, req: &Req) -> Resp {
    send_from(addr, None, req).await
}

/// Sends requests over one HTTP/2 (prior knowledge) connection.
pub async fn send_h2(addr: SocketAddr, reqs: &[Req]) -> Vec<Resp> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut out = Vec::new();
    for req in reqs {
        let mut r = build(req, &addr.to_string());
        // HTTP/2 carries the host as :authority, not as a Host header.
        let host = r.headers_mut().remove("host").unwrap();
        *r.uri_mut() = format!("http://{}{}", host.to_str().unwrap(), req.path_and_query)
            .parse()
            .unwrap();
        out.push(collect(sender.send_request(r).await.unwrap()).await);
    }
    out
}

pub async fn collect(resp: Response<Incoming>) -> Resp {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let mut copy = format!("{status}\n").into_bytes();
    for (k, v) in &headers {
        copy.extend_from_slice(format!("{k}: ").as_bytes());
        copy.extend_from_slice(v.as_bytes());
        copy.push(b'\n');
    }
    copy.push(b'\n');
    copy.extend_from_slice(&body);
    copy.extend_from_slice(b"\n\n");
    capture("responses", &copy);
    Resp {
        status,
        headers,
        body,
    }
}

/// GET on the admin listener.
pub async fn admin_get(admin: SocketAddr, path: &str) -> Resp {
    let req = Req {
        method: "GET".into(),
        path_and_query: path.into(),
        headers: vec![],
        body: vec![],
    };
    send(admin, &req).await
}

/// Polls `check` until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Extracts one sample of a Prometheus metric line matching all `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l.as_bytes().get(name.len()) == Some(&b'{')
                    || l.as_bytes().get(name.len()) == Some(&b' '))
        })
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The Python of the SDK virtualenv: `AKGATE_PYTHON`, else the venv `tests/interop/setup-venv.sh`
/// creates (PyPI must be reachable). `AKGATE_SKIP_INTEROP=1` skips the SDK tests (`None`), except
/// under CI, where skipping would hide a failure.
pub fn sdk_python() -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var("AKGATE_PYTHON") {
        return Some(p.into());
    }
    if std::env::var("AKGATE_SKIP_INTEROP").as_deref() == Ok("1") {
        assert!(
            std::env::var("CI").is_err(),
            "CI must not skip the SDK interop tests"
        );
        eprintln!("SKIPPED: AKGATE_SKIP_INTEROP=1 — the official SDKs were not exercised");
        return None;
    }
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/setup-venv.sh"
        ))
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "could not create the SDK virtualenv (set AKGATE_SKIP_INTEROP=1 to skip offline):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    Some(stdout.lines().last().unwrap().trim().into())
}
