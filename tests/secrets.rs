//! Secrets never leak. Everything akgate writes — its logs at trace level (text and JSON), the
//! audit log, `/metrics`, `/rules`, every error body, and the output of `check`, `explain`,
//! `sign` and `diff` — is searched for every configured secret, raw and in the encodings a
//! careless line would use (hex, base64, percent-encoding, a truncated prefix).
//!
//! `scan_capture_dir` (ignored by default; `.ci/run` runs it after `cargo test`) searches what
//! the harness copied from the whole suite into `common::capture_dir()`.

mod common;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::*;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

// ------------------------------------------------------------------------------------------
// The search

/// One way a secret could appear in output.
struct Needle {
    what: String,
    bytes: Vec<u8>,
}

/// Shorter byte strings than this occur by chance and are not searched.
const MIN_NEEDLE: usize = 8;
/// How much of a secret's start counts as the secret: a truncated secret is still a leak.
const PREFIX: usize = 12;

/// Every encoding of every secret, without duplicates.
fn needles(secrets: &[(String, String)]) -> Vec<Needle> {
    let mut out: Vec<Needle> = Vec::new();
    for (label, secret) in secrets {
        let raw = secret.as_bytes();
        let mut add = |encoding: String, bytes: Vec<u8>| {
            if bytes.len() >= MIN_NEEDLE && !out.iter().any(|n| n.bytes == bytes) {
                out.push(Needle {
                    what: format!("{label} ({encoding})"),
                    bytes,
                });
            }
        };
        add("raw".into(), raw.to_vec());
        add(
            format!("first {PREFIX} characters"),
            raw[..raw.len().min(PREFIX)].to_vec(),
        );
        let hex = akgate::auth::encoding::hex_lower(raw);
        add("hex".into(), hex.clone().into_bytes());
        add(
            "upper-case hex".into(),
            hex.to_ascii_uppercase().into_bytes(),
        );
        add(
            "percent-encoded".into(),
            akgate::auth::encoding::percent_encode(secret).into_bytes(),
        );
        add("base64".into(), STANDARD.encode(raw).into_bytes());
        // Inside a longer base64 text the secret's characters depend on where it starts (its
        // offset modulo 3): for each offset, the groups made of the secret's bytes alone.
        for (name, engine) in [("base64", &STANDARD), ("base64url", &URL_SAFE_NO_PAD)] {
            for shift in 0..3usize {
                let mut shifted = vec![0u8; shift];
                shifted.extend_from_slice(raw);
                let encoded = engine.encode(&shifted);
                let whole_groups = shifted.len() / 3 * 4;
                let first = if shift == 0 { 0 } else { 4 };
                if whole_groups > first {
                    add(
                        format!("{name}, at offset {shift} mod 3"),
                        encoded.as_bytes()[first..whole_groups].to_vec(),
                    );
                }
            }
        }
    }
    out
}

/// Finds needles in bytes by their first [`MIN_NEEDLE`] bytes, in one pass.
struct Finder {
    needles: Vec<Needle>,
    by_head: HashMap<[u8; MIN_NEEDLE], Vec<usize>>,
}

impl Finder {
    fn new(needles: Vec<Needle>) -> Finder {
        let mut by_head: HashMap<[u8; MIN_NEEDLE], Vec<usize>> = HashMap::new();
        for (i, n) in needles.iter().enumerate() {
            let head: [u8; MIN_NEEDLE] = n.bytes[..MIN_NEEDLE].try_into().unwrap();
            by_head.entry(head).or_default().push(i);
        }
        Finder { needles, by_head }
    }

    fn for_configured_secrets() -> Finder {
        Finder::new(needles(&configured_secrets()))
    }

    /// One line per needle found in `bytes` (its first occurrence), naming `source`, the offset,
    /// the secret and encoding, and the text around it with the secret masked.
    fn leaks(&self, source: &str, bytes: &[u8]) -> Vec<String> {
        let mut first: HashMap<usize, usize> = HashMap::new();
        for (at, window) in bytes.windows(MIN_NEEDLE).enumerate() {
            let head: &[u8; MIN_NEEDLE] = window.try_into().unwrap();
            if let Some(candidates) = self.by_head.get(head) {
                for &n in candidates {
                    if bytes[at..].starts_with(&self.needles[n].bytes) {
                        first.entry(n).or_insert(at);
                    }
                }
            }
        }
        let mut out: Vec<(usize, String)> = first
            .into_iter()
            .map(|(n, at)| {
                let needle = &self.needles[n];
                let end = at + needle.bytes.len();
                let before = String::from_utf8_lossy(&bytes[at.saturating_sub(60)..at]);
                let after = String::from_utf8_lossy(&bytes[end..(end + 60).min(bytes.len())]);
                (
                    at,
                    format!(
                        "{source} at byte {at}: {} in …{before}<SECRET>{after}…",
                        needle.what
                    ),
                )
            })
            .collect();
        out.sort();
        out.into_iter().map(|(_, l)| l).collect()
    }
}

/// Scans every file in `dir`: (files, bytes, leaks).
fn scan_dir(dir: &Path, finder: &Finder) -> (usize, u64, Vec<String>) {
    let mut files = 0;
    let mut bytes = 0;
    let mut leaks = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    for path in entries {
        let data = std::fs::read(&path).unwrap();
        files += 1;
        bytes += data.len() as u64;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        leaks.extend(finder.leaks(&name, &data));
    }
    (files, bytes, leaks)
}

// ------------------------------------------------------------------------------------------
// The scanner itself

/// Each encoding of each secret is found inside other text, at every alignment for base64;
/// text that only resembles the keys (their ids, other strings) is not flagged.
#[test]
fn the_scan_finds_every_encoding_of_every_secret() {
    let secrets = configured_secrets();
    assert!(secrets.len() >= 20, "{} secrets", secrets.len());
    let finder = Finder::for_configured_secrets();
    for n in &finder.needles {
        let mut text = b"2026-01-15T08:00:00Z DEBUG akgate: value=\"".to_vec();
        text.extend_from_slice(&n.bytes);
        text.extend_from_slice(b"\" request_id=abc\n");
        let found = finder.leaks("planted", &text);
        assert!(
            found.iter().any(|l| l.contains(&n.what)),
            "{} not found: {found:?}",
            n.what
        );
    }
    for (label, secret) in &secrets {
        for filler in ["", "x", "xy", "xyz1"] {
            let blob = format!("{filler}{secret}:trailing context");
            for encoded in [STANDARD.encode(&blob), URL_SAFE_NO_PAD.encode(&blob)] {
                let text = format!("token={encoded}");
                assert!(
                    !finder.leaks("planted", text.as_bytes()).is_empty(),
                    "{label} base64-encoded after {filler:?} not found"
                );
            }
        }
        let truncated = format!("secret starts {}…", &secret[..PREFIX.min(secret.len())]);
        assert!(
            !finder.leaks("planted", truncated.as_bytes()).is_empty(),
            "{label}: its first {PREFIX} characters not found"
        );
    }
    let clean = format!(
        "{} {} {} signature ok, SignatureDoesNotMatch, secret_env = \"AKGATE_IT_SECRET_ALICE\"",
        ALICE.0, LEAKED.0, AWS_SECRETS_TEST.0
    );
    assert_eq!(
        finder.leaks("clean", clean.as_bytes()),
        Vec::<String>::new()
    );
}

/// The secrets of test files that keep their own constants are still the ones listed.
#[test]
fn the_secret_list_matches_the_test_files() {
    for (file, secret) in OTHER_TEST_SECRETS {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(secret),
            "tests/{file} no longer configures a secret listed in common::OTHER_TEST_SECRETS: \
             update the list"
        );
    }
    let demo =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/demo.rs")).unwrap();
    for (_, _, secret) in akgate::demo::DEMO_KEYS {
        assert!(demo.contains(secret));
    }
}

// ------------------------------------------------------------------------------------------
// A gateway driven through every scheme and refusal, and the tools

/// Everything akgate wrote, by where it came from.
#[derive(Default)]
struct Written {
    parts: Vec<(String, Vec<u8>)>,
}

impl Written {
    fn add(&mut self, source: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.parts.push((source.into(), bytes.into()));
    }

    fn response(&mut self, what: &str, r: &Resp) {
        let mut text = format!("{}\n", r.status).into_bytes();
        for (k, v) in &r.headers {
            text.extend_from_slice(k.as_str().as_bytes());
            text.extend_from_slice(b": ");
            text.extend_from_slice(v.as_bytes());
            text.push(b'\n');
        }
        text.push(b'\n');
        text.extend_from_slice(&r.body);
        self.add(format!("response to {what}"), text);
    }

    fn output(&mut self, what: &str, o: &Output) {
        self.add(format!("stdout of {what}"), o.stdout.clone());
        self.add(format!("stderr of {what}"), o.stderr.clone());
    }

    fn total(&self) -> usize {
        self.parts.iter().map(|(_, b)| b.len()).sum()
    }

    fn assert_no_secret(&self) {
        let finder = Finder::for_configured_secrets();
        let leaks: Vec<String> = self
            .parts
            .iter()
            .flat_map(|(source, bytes)| finder.leaks(source, bytes))
            .collect();
        assert!(
            leaks.is_empty(),
            "secrets in what akgate wrote:\n{}",
            leaks.join("\n")
        );
    }
}

/// The shared test rules, plus a SigV4 key (secret from a file), STS and S3 routes, and the
/// brute-force guard on.
fn write_scan_rules(dir: &Path, upstream: std::net::SocketAddr, slow: std::net::SocketAddr) {
    write_rules(dir, upstream, slow);
    std::fs::write(dir.join("aws.secret"), format!("{}\n", AWS_SECRETS_TEST.1)).unwrap();
    std::fs::write(
        dir.join("aws.toml"),
        format!(
            r#"
[[access_key]]
id = "{id}"
account = "100"
secret_file = "aws.secret"
status = "active"

[[service]]
name = "sts"
actions = ["GetFederationToken"]

[[service]]
name = "s3"
actions = ["DeleteBucket"]

[[route]]
host = "sts.aws.test"
service = "sts"
signatures = "aws"
upstream = "http://{upstream}"

[[route]]
host = "s3.aws.test"
service = "s3"
signatures = "aws"
upstream = "http://{upstream}"
"#,
            id = AWS_SECRETS_TEST.0
        ),
    )
    .unwrap();
    let settings = dir.join("settings.toml");
    let mut text = std::fs::read_to_string(&settings).unwrap();
    text.push_str("auth_failure_limit = 30\nauth_failure_cooldown = \"1m\"\n");
    std::fs::write(settings, text).unwrap();
}

fn hmac256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn amz_date(t: i64) -> String {
    akgate::time::format_iso8601_utc(t).replace(['-', ':'], "")
}

/// A SigV4 call in the `Authorization` header (STS `GetCallerIdentity`).
fn sigv4_sts(key: (&str, &str)) -> Req {
    let body = b"Action=GetCallerIdentity&Version=2011-06-15";
    let mut headers = vec![
        ("host".to_string(), "sts.aws.test".to_string()),
        (
            "content-type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        ),
    ];
    akgate::auth::sigv4::sign_headers(
        "POST",
        "/",
        "",
        &mut headers,
        body,
        key.0,
        key.1.as_bytes(),
        "us-east-1",
        "sts",
        &amz_date(now()),
    );
    Req {
        method: "POST".into(),
        path_and_query: "/".into(),
        headers,
        body: body.to_vec(),
    }
}

/// A presigned S3 GET, signed here from the SigV4 definition.
fn sigv4_presigned(key: (&str, &str)) -> Req {
    let (host, path) = ("s3.aws.test", "/scan-bucket/object.txt");
    let date = amz_date(now());
    let scope = format!("{}/us-east-1/s3/aws4_request", &date[..8]);
    let enc = akgate::auth::encoding::percent_encode;
    // Already in canonical (sorted) order.
    let params = [
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256".to_string()),
        ("X-Amz-Credential", format!("{}/{scope}", key.0)),
        ("X-Amz-Date", date.clone()),
        ("X-Amz-Expires", "300".to_string()),
        ("X-Amz-SignedHeaders", "host".to_string()),
    ];
    let query = params
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&");
    let canonical = format!("GET\n{path}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        akgate::auth::encoding::hex_lower(&Sha256::digest(canonical.as_bytes()))
    );
    let mut k = format!("AWS4{}", key.1).into_bytes();
    for part in [&date[..8], "us-east-1", "s3", "aws4_request"] {
        k = hmac256(&k, part.as_bytes());
    }
    let signature = akgate::auth::encoding::hex_lower(&hmac256(&k, to_sign.as_bytes()));
    Req {
        method: "GET".into(),
        path_and_query: format!("{path}?{query}&X-Amz-Signature={signature}"),
        headers: vec![("host".into(), host.into())],
        body: vec![],
    }
}

/// A ROA v1 call as aliyun-python-sdk-core sends it.
fn roa_signed(host: &str, action: &str, key: (&str, &str)) -> Req {
    let mut headers = vec![
        ("host".to_string(), host.to_string()),
        ("date".to_string(), akgate::time::format_http_date(now())),
        ("x-acs-action".to_string(), action.to_string()),
        ("x-acs-version".to_string(), "2014-05-26".to_string()),
        ("x-acs-signature-nonce".to_string(), nonce()),
        (
            "x-acs-signature-method".to_string(),
            "HMAC-SHA1".to_string(),
        ),
        ("x-acs-signature-version".to_string(), "1.0".to_string()),
        ("accept".to_string(), "application/json".to_string()),
    ];
    akgate::auth::roa1::sign("GET", "/", "", &mut headers, b"", key.0, key.1.as_bytes());
    Req {
        method: "GET".into(),
        path_and_query: "/".into(),
        headers,
        body: vec![],
    }
}

/// Runs an `akgate` tool; its output is kept for this scan and for the suite's.
fn tool(args: &[&str], env: &[(&str, &str)]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_akgate"))
        .args(args)
        .env_remove("AKGATE_RULES")
        .env("AKGATE_LOG", "trace")
        .envs(env.iter().copied())
        .output()
        .expect("run akgate");
    capture_output(&o);
    o
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct Drive<'a> {
    gw: &'a Akgate,
    written: &'a mut Written,
    host: String,
}

impl Drive<'_> {
    async fn send(&mut self, what: &str, source: Option<&str>, req: &Req) -> Resp {
        let ip: Option<IpAddr> = source.map(|s| s.parse().unwrap());
        let r = send_from(self.gw.proxy, ip, req).await;
        self.written.response(what, &r);
        r
    }

    /// Sends and asserts the status and, for Alibaba-shaped errors, the code.
    async fn expect(&mut self, what: &str, req: &Req, status: u16, code: Option<&str>) -> Resp {
        let r = self.send(what, None, req).await;
        assert_eq!(r.status.as_u16(), status, "{what}: {}", text(&r.body));
        if let Some(code) = code {
            r.assert_error(status, code);
        }
        r
    }

    async fn admin(&mut self, path: &str) -> Resp {
        let r = admin_get(self.gw.admin, path).await;
        self.written.response(&format!("admin {path}"), &r);
        r
    }
}

/// Every scheme, accepted and refused, every refusal the rules can produce, a failed and a
/// successful reload, and the admin pages. Returns how many requests were sent.
async fn drive_gateway(d: &mut Drive<'_>, rules: &Path) -> usize {
    let h = d.host.clone();
    let wrong_alice = (ALICE.0, "not-alices-secret-but-close");
    let mut sent = 0;

    // ACS3
    let ok = signed(&h, "DescribeRegions", "", ALICE, b"", 0);
    d.expect("acs3 ok", &ok, 200, None).await;
    sent += 1;
    d.expect("acs3 replay", &ok, 400, Some("SignatureNonceUsed"))
        .await;
    sent += 1;
    let r = d
        .expect(
            "acs3 wrong secret",
            &signed(&h, "DescribeRegions", "", wrong_alice, b"", 0),
            400,
            Some("SignatureDoesNotMatch"),
        )
        .await;
    sent += 1;
    assert!(
        r.message().contains("server string to sign is:"),
        "{}",
        r.message()
    );
    let mut sm3 = signed(&h, "DescribeRegions", "", ALICE, b"", 0);
    for (k, v) in &mut sm3.headers {
        if k.eq_ignore_ascii_case("authorization") {
            *v = v.replace("ACS3-HMAC-SHA256", "ACS3-HMAC-SM3");
        }
    }
    d.expect("acs3 sm3 signature refused", &sm3, 400, None)
        .await;
    sent += 1;
    let form = signed(&h, "DescribeInstances", "RegionId=cn", ALICE, b"a=1&b=2", 0);
    d.expect("acs3 form body", &form, 200, None).await;
    sent += 1;
    for (what, req, status, code) in [
        (
            "leaked key, high-risk action",
            signed(&h, "DeleteInstance", "", LEAKED, b"", 0),
            403,
            "Forbidden",
        ),
        (
            "disabled key",
            signed(&h, "DescribeRegions", "", DISABLED, b"", 0),
            400,
            "InvalidAccessKeyId.Inactive",
        ),
        (
            "unknown key",
            signed(
                &h,
                "DescribeRegions",
                "",
                ("AKUNKNOWN0000001", "unknown-key-secret"),
                b"",
                0,
            ),
            404,
            "InvalidAccessKeyId.NotFound",
        ),
        (
            "key allowlist",
            signed(&h, "DescribeRegions", "", BOB_LIMITED, b"", 0),
            403,
            "Forbidden.SourceIpNotAllowed",
        ),
        (
            "account allowlist",
            signed(&h, "DescribeRegions", "", OTHER_ACCOUNT, b"", 0),
            403,
            "Forbidden.SourceIpNotAllowed",
        ),
        (
            "clock skew",
            signed(&h, "DescribeRegions", "", ALICE, b"", 3600),
            400,
            "InvalidTimeStamp.Expired",
        ),
        (
            "body too large",
            signed(&h, "DescribeRegions", "", ALICE, &vec![b'a'; 70_000], 0),
            413,
            "RequestBodyTooLarge",
        ),
        (
            "unknown route",
            signed("nowhere.test", "DescribeRegions", "", ALICE, b"", 0),
            404,
            "InvalidRoute",
        ),
        (
            "upstream down",
            signed("down.test", "DescribeRegions", "", ALICE, b"", 0),
            502,
            "ServiceUnavailable",
        ),
        (
            "upstream timeout",
            signed("slow.test", "DescribeRegions", "", ALICE, b"", 0),
            504,
            "GatewayTimeout",
        ),
        (
            "sts key without its token",
            signed(&h, "DescribeRegions", "", STS_KEY, b"", 0),
            400,
            "MissingSecurityToken",
        ),
    ] {
        d.expect(what, &req, status, Some(code)).await;
        sent += 1;
    }
    let r = d
        .send(
            "key allowlist, admitted source",
            Some("127.0.0.3"),
            &signed(&h, "DescribeRegions", "", BOB_LIMITED, b"", 0),
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r.body));
    sent += 1;
    let unsigned = Req {
        method: "GET".into(),
        path_and_query: "/?Action=DescribeRegions".into(),
        headers: vec![("host".into(), h.clone())],
        body: vec![],
    };
    d.expect("no signature", &unsigned, 400, None).await;
    sent += 1;
    let sts = |key: (&str, &str), token: &str| {
        signed_with(
            &h,
            "POST",
            "/",
            "DescribeRegions",
            "",
            key,
            b"",
            0,
            &[("x-acs-security-token", token)],
        )
    };
    d.expect("sts ok", &sts(STS_KEY, STS_TOKEN), 200, None)
        .await;
    d.expect(
        "sts wrong token",
        &sts(STS_KEY, "CAISnot-the-token"),
        400,
        Some("InvalidSecurityToken.MismatchWithAccessKey"),
    )
    .await;
    d.expect(
        "sts expired",
        &sts(STS_EXPIRED, STS_TOKEN),
        400,
        Some("InvalidSecurityToken.Expired"),
    )
    .await;
    d.expect(
        "sts wrong secret",
        &sts((STS_KEY.0, "sts-secret-but-not-this-one"), STS_TOKEN),
        400,
        Some("SignatureDoesNotMatch"),
    )
    .await;
    sent += 4;

    // RPC v1
    let rpc = |key| rpc_signed(&h, "GET", "DescribeRegions", &[], key, 0);
    d.expect("rpc ok", &rpc(ALICE), 200, None).await;
    d.expect(
        "rpc wrong secret",
        &rpc(wrong_alice),
        400,
        Some("SignatureDoesNotMatch"),
    )
    .await;
    d.expect(
        "rpc sts ok",
        &rpc_signed(
            &h,
            "GET",
            "DescribeRegions",
            &[("SecurityToken", STS_TOKEN)],
            STS_KEY,
            0,
        ),
        200,
        None,
    )
    .await;
    d.expect(
        "rpc leaked key, high-risk action",
        &rpc_signed(&h, "GET", "DeleteInstance", &[], LEAKED, 0),
        403,
        Some("Forbidden"),
    )
    .await;
    sent += 4;

    // ROA v1
    d.expect(
        "roa ok",
        &roa_signed(&h, "DescribeRegions", ALICE),
        200,
        None,
    )
    .await;
    d.expect(
        "roa wrong secret",
        &roa_signed(&h, "DescribeRegions", wrong_alice),
        400,
        Some("SignatureDoesNotMatch"),
    )
    .await;
    sent += 2;

    // SigV4, header and presigned
    let wrong_aws = (AWS_SECRETS_TEST.0, "aws-scan-secret/but+not=this");
    d.expect("sigv4 ok", &sigv4_sts(AWS_SECRETS_TEST), 200, None)
        .await;
    let r = d
        .expect("sigv4 wrong secret", &sigv4_sts(wrong_aws), 403, None)
        .await;
    assert!(
        text(&r.body).contains("The String-to-Sign should have been"),
        "{}",
        text(&r.body)
    );
    d.expect(
        "sigv4 presigned ok",
        &sigv4_presigned(AWS_SECRETS_TEST),
        200,
        None,
    )
    .await;
    d.expect(
        "sigv4 presigned wrong secret",
        &sigv4_presigned(wrong_aws),
        403,
        None,
    )
    .await;
    sent += 4;

    // Brute force from one source until it is throttled.
    let mut throttled = false;
    for _ in 0..40 {
        let r = d
            .send(
                "repeated wrong secret",
                Some("127.0.0.9"),
                &signed(&h, "DescribeRegions", "", wrong_alice, b"", 0),
            )
            .await;
        sent += 1;
        if r.status == 429 || r.code() == "Throttling.AuthFailure" {
            throttled = true;
            break;
        }
    }
    assert!(throttled, "the brute-force guard never refused the source");

    // A reload refused because of the line holding an inline secret, then the good rules back.
    let keys = rules.join("keys.toml");
    let good = std::fs::read_to_string(&keys).unwrap();
    let broken = good.replacen(
        &format!("secret = \"{}\"", LEAKED.1),
        &format!("secret = \"{}", LEAKED.1),
        1,
    );
    assert_ne!(broken, good);
    std::fs::write(&keys, broken).unwrap();
    let gw_admin = d.gw.admin;
    assert!(
        eventually(Duration::from_secs(10), || async {
            admin_get(gw_admin, "/rules").await.json()["last_error"].is_string()
        })
        .await
    );
    d.admin("/rules").await;
    // And one refused because a secret was pasted where its variable's name belongs.
    std::fs::write(&keys, with_pasted_secret(&good, "secret_env")).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            admin_get(gw_admin, "/rules").await.json()["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("is it the secret itself?"))
        })
        .await
    );
    d.admin("/rules").await;
    std::fs::write(&keys, &good).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            admin_get(gw_admin, "/rules").await.json()["last_error"].is_null()
        })
        .await
    );

    for path in ["/metrics", "/rules", "/healthz", "/readyz", "/nothing-here"] {
        d.admin(path).await;
    }
    sent
}

/// `check`, `sign` (every scheme, both formats), `explain` on accepted and refused requests, and
/// `diff`, against the same rules.
fn drive_tools(w: &mut Written, rules: &Path, host: &str) {
    let dir = rules.to_str().unwrap();
    let env = [
        ("AKGATE_IT_SECRET_ALICE", ALICE.1),
        ("AKGATE_SCAN_ALICE", ALICE.1),
        ("AKGATE_SCAN_AWS", AWS_SECRETS_TEST.1),
        ("AKGATE_SCAN_WRONG", "wrong-secret-for-the-scan"),
    ];
    let o = tool(&["check", dir], &env);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    assert!(text(&o.stdout).contains("warning"), "{}", text(&o.stdout));
    w.output("check", &o);
    let o = tool(&["check", "--skip-secrets", dir], &[]);
    w.output("check --skip-secrets", &o);

    let work = tempfile::tempdir().unwrap();
    let url = format!("http://{host}/?RegionId=cn-hangzhou");
    let sts_url = "http://sts.aws.test/".to_string();
    let body = work.path().join("body");
    std::fs::write(&body, "Action=GetCallerIdentity&Version=2011-06-15").unwrap();
    let body = body.to_str().unwrap().to_string();
    let schemes: [(&str, Vec<&str>); 4] = [
        (
            "acs3",
            vec![
                "--key-id",
                ALICE.0,
                "--action",
                "DescribeRegions",
                "--method",
                "POST",
                "--url",
                &url,
            ],
        ),
        (
            "rpc",
            vec![
                "--key-id",
                ALICE.0,
                "--action",
                "DescribeRegions",
                "--url",
                &url,
            ],
        ),
        (
            "roa",
            vec![
                "--key-id",
                ALICE.0,
                "--action",
                "DescribeRegions",
                "--url",
                &url,
            ],
        ),
        (
            "sigv4",
            vec![
                "--key-id",
                AWS_SECRETS_TEST.0,
                "--region",
                "us-east-1",
                "--service",
                "sts",
                "--method",
                "POST",
                "--url",
                &sts_url,
                "-H",
                "content-type: application/x-www-form-urlencoded; charset=utf-8",
                "--body-file",
                &body,
            ],
        ),
    ];
    let mut explained = 0;
    for (scheme, args) in &schemes {
        let right = if *scheme == "sigv4" {
            "AKGATE_SCAN_AWS"
        } else {
            "AKGATE_SCAN_ALICE"
        };
        for (secret_env, accepted) in [(right, true), ("AKGATE_SCAN_WRONG", false)] {
            for format in ["curl", "http"] {
                let mut a = vec!["sign", "--scheme", scheme, "--secret-env", secret_env];
                a.extend(["--format", format]);
                a.extend(args.iter().copied());
                let o = tool(&a, &env);
                let what = format!("sign --scheme {scheme} --format {format} ({secret_env})");
                assert_eq!(o.status.code(), Some(0), "{what}: {}", text(&o.stderr));
                assert!(
                    text(&o.stdout).to_ascii_lowercase().contains("signature")
                        || text(&o.stdout).contains("authorization"),
                    "{what}: {}",
                    text(&o.stdout)
                );
                w.output(&what, &o);
                if format != "http" {
                    continue;
                }
                let req = work.path().join(format!("{scheme}-{accepted}.http"));
                std::fs::write(&req, &o.stdout).unwrap();
                let o = tool(
                    &[
                        "explain",
                        "--rules",
                        dir,
                        "--ip",
                        "127.0.0.1",
                        "--request",
                        req.to_str().unwrap(),
                    ],
                    &env,
                );
                let out = text(&o.stdout);
                assert_eq!(
                    o.status.code(),
                    Some(if accepted { 0 } else { 1 }),
                    "explain of {what}: {out}{}",
                    text(&o.stderr)
                );
                assert!(
                    out.to_ascii_lowercase().contains("string to sign"),
                    "explain of {what} shows no string to sign: {out}"
                );
                w.output(&format!("explain of {what}"), &o);
                explained += 1;
            }
        }
    }
    assert_eq!(explained, 8);

    // diff: a key enabled, another's inline secret replaced.
    let new = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(rules).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, new.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let keys = new.path().join("keys.toml");
    let k = std::fs::read_to_string(&keys).unwrap();
    let changed = k
        .replace(
            &format!("secret = \"{}\"\nstatus = \"disabled\"", DISABLED.1),
            &format!("secret = \"{}\"\nstatus = \"active\"", DISABLED.1),
        )
        .replace(
            &format!("secret = \"{}\"\nstatus = \"active\"", LEAKED.1),
            &format!("secret = \"{}\"\nstatus = \"disabled\"", OTHER_ACCOUNT.1),
        );
    assert_ne!(changed, k);
    std::fs::write(&keys, changed).unwrap();
    let o = tool(&["diff", dir, new.path().to_str().unwrap()], &env);
    assert!(!o.stdout.is_empty(), "{}", text(&o.stderr));
    w.output("diff", &o);

    // check and diff of a set whose inline-secret line is broken.
    let broken = k.replacen(
        &format!("secret = \"{}\"", LEAKED.1),
        &format!("secret = \"{}", LEAKED.1),
        1,
    );
    std::fs::write(&keys, broken).unwrap();
    let o = tool(&["check", new.path().to_str().unwrap()], &env);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    w.output("check of a broken set", &o);
    let o = tool(&["diff", dir, new.path().to_str().unwrap()], &env);
    w.output("diff with a broken set", &o);

    // A secret pasted where its variable's or file's name belongs.
    for field in ["secret_env", "secret_file"] {
        std::fs::write(&keys, with_pasted_secret(&k, field)).unwrap();
        let o = tool(&["check", new.path().to_str().unwrap()], &env);
        let out = text(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{out}");
        assert!(out.contains("is it the secret itself?"), "{out}");
        w.output(&format!("check of a secret pasted as {field}"), &o);
    }
}

/// `keys.toml` with alice's `secret_env` replaced by `field = "<a configured secret>"`.
fn with_pasted_secret(keys: &str, field: &str) -> String {
    let (_, pasted) = OTHER_TEST_SECRETS
        .iter()
        .find(|(_, s)| s.starts_with("interopOk"))
        .unwrap();
    let out = keys.replacen(
        "secret_env = \"AKGATE_IT_SECRET_ALICE\"",
        &format!("{field} = \"{pasted}\""),
        1,
    );
    assert_ne!(out, keys);
    out
}

async fn everything_is_clean(log_format: &str) {
    let up = upstream().await;
    let slow = hanging_upstream().await;
    let rules = tempfile::tempdir().unwrap();
    write_scan_rules(rules.path(), up.addr, slow);
    let audit_dir = tempfile::tempdir().unwrap();
    let audit = audit_dir.path().join("audit.jsonl");
    let mut gw = Akgate::start_with_env(
        rules.path(),
        "127.0.0.1:0",
        &[
            "--audit-log",
            audit.to_str().unwrap(),
            "--log-format",
            log_format,
        ],
        &[("AKGATE_LOG", "trace")],
    );
    let mut written = Written::default();
    let sent = {
        let mut d = Drive {
            gw: &gw,
            written: &mut written,
            host: gw.proxy.to_string(),
        };
        drive_gateway(&mut d, rules.path()).await
    };
    drive_tools(&mut written, rules.path(), &gw.proxy.to_string());
    gw.stop();

    let stdout = gw.audit_lines().join("\n");
    let stderr = gw.stderr();
    let audit_text = std::fs::read_to_string(&audit).unwrap_or_default();
    // Not vacuous: the logs are at trace level, in the format asked for, and cover the
    // requests; the audit log has a line per request.
    assert!(stderr.len() > 20_000, "only {} bytes of logs", stderr.len());
    match log_format {
        "json" => assert!(
            stderr
                .lines()
                .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
                .count()
                > 50,
            "not JSON logs: {}",
            &stderr[..stderr.len().min(2000)]
        ),
        _ => assert!(stderr.contains("TRACE"), "not trace logs"),
    }
    assert!(
        stderr.contains("SignatureDoesNotMatch"),
        "the refusals are not logged"
    );
    let audit_lines = audit_text.lines().count();
    assert!(
        audit_lines >= sent,
        "{audit_lines} audit lines for {sent} requests"
    );
    written.add("stdout of serve", stdout);
    written.add(format!("stderr of serve ({log_format} logs)"), stderr);
    written.add("audit log file", audit_text);
    assert!(
        written.parts.len() > 80 && written.total() > 100_000,
        "{} outputs, {} bytes",
        written.parts.len(),
        written.total()
    );
    written.assert_no_secret();
    // And the scan would have seen a secret had one been there.
    written.add("planted", format!("x{}y", STANDARD.encode(LEAKED.1)));
    let finder = Finder::for_configured_secrets();
    let found: Vec<String> = written
        .parts
        .iter()
        .flat_map(|(s, b)| finder.leaks(s, b))
        .collect();
    assert!(
        !found.is_empty()
            && found
                .iter()
                .all(|l| l.starts_with("planted at byte 1: LEAKED")),
        "{found:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_akgate_writes_holds_a_secret_text_logs() {
    everything_is_clean("text").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_akgate_writes_holds_a_secret_json_logs() {
    everything_is_clean("json").await;
}

// ------------------------------------------------------------------------------------------
// The whole suite

/// What the suite must have left in the capture directory for its scan to mean anything (a
/// full run leaves about 190 files and, without its largest file, 1.4 MB).
const MIN_CAPTURE_FILES: usize = 100;
const MIN_CAPTURE_BYTES: u64 = 1_000_000;
const CAPTURING_SUITES: [&str; 10] = [
    "gateway", "reload", "audit", "cli", "sigv4", "secrets", "usage", "mfa", "fleet", "deploy",
];
const CAPTURE_KINDS: [&str; 4] = ["akgate-stderr", "akgate-stdout", "responses", "cli-stdout"];

#[test]
#[ignore = "scans what the whole suite captured: run after `cargo test` (.ci/run does)"]
fn scan_capture_dir() {
    let finder = Finder::for_configured_secrets();

    // The scan of a directory finds a planted secret (the same code as below, on a copy).
    let planted = tempfile::tempdir().unwrap();
    std::fs::write(planted.path().join("clean.log"), "nothing to see\n").unwrap();
    std::fs::write(
        planted.path().join("leaky.log"),
        format!(
            "value={}\n",
            akgate::auth::encoding::hex_lower(ALICE.1.as_bytes())
        ),
    )
    .unwrap();
    let (files, _, leaks) = scan_dir(planted.path(), &finder);
    assert_eq!(files, 2);
    assert_eq!(leaks.len(), 1, "{leaks:?}");
    assert!(leaks[0].starts_with("leaky.log") && leaks[0].contains("ALICE (hex)"));

    let dir = capture_dir();
    let (files, bytes, leaks) = scan_dir(&dir, &finder);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files >= MIN_CAPTURE_FILES && bytes >= MIN_CAPTURE_BYTES,
        "{} holds {files} files, {bytes} bytes: did the suite run with the capturing harness?",
        dir.display()
    );
    for suite in CAPTURING_SUITES {
        assert!(
            names.iter().any(|n| n.starts_with(&format!("{suite}-"))),
            "nothing captured from tests/{suite}.rs"
        );
    }
    for kind in CAPTURE_KINDS {
        assert!(
            names.iter().any(|n| n.ends_with(&format!("-{kind}.log"))),
            "no {kind} captured"
        );
    }
    assert!(
        leaks.is_empty(),
        "secrets in what akgate wrote during the test suite ({}):\n{}",
        dir.display(),
        leaks.join("\n")
    );
    eprintln!(
        "scanned {files} files, {bytes} bytes in {} for {} encodings of {} secrets: clean",
        dir.display(),
        finder.needles.len(),
        configured_secrets().len()
    );
}
