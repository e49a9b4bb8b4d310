//! Critical operations and their second factor, through the real binary: a `[[critical]]` action
//! needs a current TOTP code covered by the signature (a header for V3, ROA v1 and SigV4, the
//! `AkgateMfaCode` parameter for RPC v1); a verified code trusts the key for `mfa_trust_window`;
//! a code is good once; keys without a seed, unsigned or repeated code headers are refused.
//!
//! The expected codes are computed here by a small RFC 6238 implementation of the test's own,
//! not by the gateway's module.

mod common;

use common::{Akgate, Req, Resp, capture_output, send, signed_with, upstream};
use hmac::{Hmac, KeyInit, Mac};
use http::StatusCode;
use std::path::Path;
use std::time::Duration;

/// A key with a second factor. Fake.
const MFA_KEY: (&str, &str) = ("AKMFAKEY00000001", "mfa-secret-for-tests-only");
/// Another key with the same seed (its codes are its own to redeem). Fake.
const MFA_KEY2: (&str, &str) = ("AKMFAKEY00000002", "mfa-second-secret-for-tests-only");
/// A key of the same account without one. Fake.
const PLAIN_KEY: (&str, &str) = ("AKMFAPLAIN000001", "mfa-plain-secret-for-tests-only");
/// An AWS-style key with a second factor. Fake.
const AWS_MFA_KEY: (&str, &str) = ("AKIAMFATEST000000001", "aws-mfa-secret/for+tests=only");
/// `akgate-fake-totp-seed-01` in base32. The seed file holds it as authenticator apps show it, in
/// groups of four.
const SEED_BASE32: &str = "MFVWOYLUMUWWMYLLMUWXI33UOAWXGZLFMQWTAMI=";
const SEED: &[u8] = b"akgate-fake-totp-seed-01";

/// RFC 6238 with HMAC-SHA1, 30 s steps, 6 digits: the code of `step`.
fn code_of_step(step: i64) -> String {
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(SEED).unwrap();
    mac.update(&(step as u64).to_be_bytes());
    let h = mac.finalize().into_bytes();
    let o = (h[19] & 0x0f) as usize;
    let n = u32::from_be_bytes([h[o] & 0x7f, h[o + 1], h[o + 2], h[o + 3]]) % 1_000_000;
    format!("{n:06}")
}

fn current_step() -> i64 {
    common::now() / 30
}

fn current_code() -> String {
    code_of_step(current_step())
}

/// A code that is none of the accepted ones (the current step and one either side).
fn wrong_code() -> String {
    let step = current_step();
    let taken: Vec<String> = (step - 1..=step + 1).map(code_of_step).collect();
    (0..)
        .map(|n: u32| {
            format!(
                "{:06}",
                (taken[1].parse::<u32>().unwrap() + 1 + n) % 1_000_000
            )
        })
        .find(|c| !taken.contains(c))
        .unwrap()
}

fn write_rules(dir: &Path, up: std::net::SocketAddr, trust_window: &str) {
    let grouped: Vec<String> = SEED_BASE32
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    std::fs::write(dir.join("mfa.seed"), format!("{}\n", grouped.join(" "))).unwrap();
    std::fs::write(
        dir.join("keys.toml"),
        format!(
            r#"
[[account]]
id = "500"
api_source_cidrs = ["127.0.0.0/8"]

[[access_key]]
id = "{mfa}"
account = "500"
secret = "{mfa_secret}"
status = "active"
totp_secret_file = "mfa.seed"

[[access_key]]
id = "{mfa2}"
account = "500"
secret = "{mfa2_secret}"
status = "active"
totp_secret_file = "mfa.seed"

[[access_key]]
id = "{plain}"
account = "500"
secret = "{plain_secret}"
status = "active"

[[access_key]]
id = "{aws}"
account = "500"
secret = "{aws_secret}"
status = "active"
totp_secret_env = "AKGATE_IT_TOTP_SEED"
"#,
            mfa = MFA_KEY.0,
            mfa_secret = MFA_KEY.1,
            mfa2 = MFA_KEY2.0,
            mfa2_secret = MFA_KEY2.1,
            plain = PLAIN_KEY.0,
            plain_secret = PLAIN_KEY.1,
            aws = AWS_MFA_KEY.0,
            aws_secret = AWS_MFA_KEY.1,
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("routes.toml"),
        format!(
            r#"
[[service]]
name = "ecs"
actions = ["DeleteInstance"]

[[service]]
name = "s3"

[[service]]
name = "ram"

[[route]]
host = "127.0.0.1"
service = "ecs"
upstream = "http://{up}"

[[route]]
host = "s3.test"
service = "s3"
signatures = "aws"
upstream = "http://{up}"

[[route]]
host = "ram.test"
service = "ram"
upstream = "http://{up}"

# botocore's path-style endpoint (tests/interop/mfa_sdk.py).
[[route]]
host = "localhost"
service = "s3"
signatures = "aws"
upstream = "http://{up}"
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("critical.toml"),
        r#"
[[critical]]
service = "ecs"
actions = ["DeleteInstance", "ModifyInstance*"]

[[critical]]
service = "s3"
actions = ["DeleteBucket"]

[[critical]]
service = "ram"
actions = ["*"]
mode = "shadow"
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("settings.toml"),
        format!("[settings]\nmfa_trust_window = \"{trust_window}\"\n"),
    )
    .unwrap();
}

struct World {
    gw: Akgate,
    up: common::Upstream,
    _dir: tempfile::TempDir,
}

async fn world(trust_window: &str) -> World {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    write_rules(dir.path(), up.addr, trust_window);
    let gw = Akgate::start_with_env(
        dir.path(),
        "127.0.0.1:0",
        &[],
        &[("AKGATE_IT_TOTP_SEED", SEED_BASE32)],
    );
    World { gw, up, _dir: dir }
}

/// A V3-signed ECS call; `extra` headers are signed.
fn v3(action: &str, key: (&str, &str), extra: &[(&str, &str)]) -> Req {
    signed_with("127.0.0.1", "POST", "/", action, "", key, b"", 0, extra)
}

/// A ROA v1 call (`x-acs-*` headers and the ones given are in the string to sign only if they
/// are `x-acs-*`).
fn roa(action: &str, key: (&str, &str), extra: &[(&str, &str)]) -> Req {
    let mut headers = vec![
        ("host".to_string(), "127.0.0.1".to_string()),
        ("accept".to_string(), "application/json".to_string()),
        (
            "date".to_string(),
            akgate::time::format_http_date(common::now()),
        ),
        ("x-acs-action".to_string(), action.to_string()),
        ("x-acs-version".to_string(), "2014-05-26".to_string()),
        ("x-acs-signature-nonce".to_string(), common::nonce()),
        (
            "x-acs-signature-method".to_string(),
            "HMAC-SHA1".to_string(),
        ),
        ("x-acs-signature-version".to_string(), "1.0".to_string()),
    ];
    headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    akgate::auth::roa1::sign(
        "POST",
        "/instances",
        "",
        &mut headers,
        b"",
        key.0,
        key.1.as_bytes(),
    );
    Req {
        method: "POST".into(),
        path_and_query: "/instances".into(),
        headers,
        body: vec![],
    }
}

/// A SigV4-signed S3 call; every header given is signed.
fn s3(method: &str, path: &str, extra: &[(&str, &str)]) -> Req {
    let mut headers = vec![("host".to_string(), "s3.test".to_string())];
    headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let date = akgate::time::format_iso8601_utc(common::now()).replace(['-', ':'], "");
    akgate::auth::sigv4::sign_headers(
        method,
        path,
        "",
        &mut headers,
        b"",
        AWS_MFA_KEY.0,
        AWS_MFA_KEY.1.as_bytes(),
        "us-east-1",
        "s3",
        &date,
    );
    Req {
        method: method.into(),
        path_and_query: path.into(),
        headers,
        body: vec![],
    }
}

fn assert_refused(r: &Resp, code: &str, message_part: &str) {
    r.assert_error(403, code);
    assert!(
        r.message().contains(message_part),
        "message {:?} lacks {message_part:?}",
        r.message()
    );
}

#[tokio::test]
async fn a_critical_operation_needs_a_signed_code_once_then_the_key_is_trusted() {
    let w = world("15m").await;
    let p = w.gw.proxy;

    // Not critical: nothing needed.
    let r = send(p, &v3("DescribeInstances", MFA_KEY, &[])).await;
    assert_eq!(r.status, StatusCode::OK);
    let forwarded = w.up.count();

    // No code.
    let r = send(p, &v3("DeleteInstance", MFA_KEY, &[])).await;
    assert_refused(&r, "Forbidden.MFARequired", "X-Akgate-MFA-Code");
    // Case does not dodge the list.
    let r = send(p, &v3("deleteinstance", MFA_KEY, &[])).await;
    r.assert_error(403, "Forbidden.MFARequired");
    // A prefix entry.
    let r = send(p, &v3("ModifyInstanceAttribute", MFA_KEY, &[])).await;
    r.assert_error(403, "Forbidden.MFARequired");

    // A wrong code.
    let r = send(
        p,
        &v3(
            "DeleteInstance",
            MFA_KEY,
            &[("X-Akgate-MFA-Code", &wrong_code())],
        ),
    )
    .await;
    assert_refused(&r, "Forbidden.MFAInvalid", "does not match");
    // Not six digits.
    let r = send(
        p,
        &v3("DeleteInstance", MFA_KEY, &[("X-Akgate-MFA-Code", "12345")]),
    )
    .await;
    assert_refused(&r, "Forbidden.MFAInvalid", "6 digits");

    // The right code, but added after signing: anyone on the path could have added it.
    let unsigned = v3("DeleteInstance", MFA_KEY, &[]).header("X-Akgate-MFA-Code", &current_code());
    let r = send(p, &unsigned).await;
    assert_refused(&r, "Forbidden.MFAInvalid", "must be signed");

    // Two code headers, both signed.
    let code = current_code();
    let r = send(
        p,
        &v3(
            "DeleteInstance",
            MFA_KEY,
            &[
                ("X-Akgate-MFA-Code", &code),
                ("x-acs-akgate-mfa-code", &code),
            ],
        ),
    )
    .await;
    assert_refused(&r, "Forbidden.MFAInvalid", "more than once");
    assert_eq!(w.up.count(), forwarded, "nothing refused was forwarded");

    // The right code, signed: forwarded (the code itself, an x-akgate-* header, is the
    // gateway's and is not passed on).
    let r = send(
        p,
        &v3("DeleteInstance", MFA_KEY, &[("X-Akgate-MFA-Code", &code)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.message());
    assert_eq!(w.up.count(), forwarded + 1);
    let seen = w.up.last();
    assert_eq!(seen.headers["x-acs-action"], "DeleteInstance");
    assert!(seen.headers.get("x-akgate-mfa-code").is_none());

    // Trusted now: critical calls without a code pass, under any scheme.
    let r = send(p, &v3("DeleteInstance", MFA_KEY, &[])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.message());
    let r = send(p, &roa("DeleteInstance", MFA_KEY, &[])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.message());

    // The same code on a new request (fresh nonce, fresh signature) is refused, trusted or not:
    // a code is good once.
    let r = send(
        p,
        &v3("DeleteInstance", MFA_KEY, &[("X-Akgate-MFA-Code", &code)]),
    )
    .await;
    assert_refused(&r, "Forbidden.MFAInvalid", "used already");

    // The trust belongs to the key, not to the account.
    let r = send(p, &v3("DeleteInstance", PLAIN_KEY, &[])).await;
    r.assert_error(403, "Forbidden.MFARequired");
    assert_eq!(w.up.count(), forwarded + 3);
}

#[tokio::test]
async fn the_trust_window_expires_and_a_used_code_stays_used() {
    let w = world("2s").await;
    let p = w.gw.proxy;
    let code = current_code();
    let step = current_step();
    let r = send(
        p,
        &v3("DeleteInstance", MFA_KEY, &[("X-Akgate-MFA-Code", &code)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.message());
    let r = send(p, &v3("DeleteInstance", MFA_KEY, &[])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.message());

    // Past the window (2 s; whole seconds, so up to 3 s).
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let r = send(p, &v3("DeleteInstance", MFA_KEY, &[])).await;
    assert_refused(&r, "Forbidden.MFARequired", "X-Akgate-MFA-Code");

    // The code redeemed before is still within its accepted steps, but used: refused, and it
    // opens no window.
    assert!(
        current_step() <= step + 1,
        "the test ran longer than a step"
    );
    let r = send(
        p,
        &v3("DeleteInstance", MFA_KEY, &[("X-Akgate-MFA-Code", &code)]),
    )
    .await;
    assert_refused(&r, "Forbidden.MFAInvalid", "used already");
    let r = send(p, &v3("DeleteInstance", MFA_KEY, &[])).await;
    r.assert_error(403, "Forbidden.MFARequired");

    // The next step's code is a new code (accepted one step early for clock skew): it opens the
    // window again.
    let next = code_of_step(step + 1);
    assert_ne!(next, code);
    let r = send(
        p,
        &v3("DeleteInstance", MFA_KEY, &[("X-Akgate-MFA-Code", &next)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.message());
    let r = send(p, &v3("DeleteInstance", MFA_KEY, &[])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.message());
}

#[tokio::test]
async fn a_key_without_a_second_factor_cannot_call_critical_operations() {
    let w = world("15m").await;
    let p = w.gw.proxy;
    let r = send(p, &v3("DescribeInstances", PLAIN_KEY, &[])).await;
    assert_eq!(r.status, StatusCode::OK);
    let before = w.up.count();
    let r = send(p, &v3("DeleteInstance", PLAIN_KEY, &[])).await;
    assert_refused(&r, "Forbidden.MFARequired", "no second factor is set up");
    // A code does not help: there is nothing to check it against.
    let r = send(
        p,
        &v3(
            "DeleteInstance",
            PLAIN_KEY,
            &[("X-Akgate-MFA-Code", &current_code())],
        ),
    )
    .await;
    r.assert_error(403, "Forbidden.MFARequired");
    assert_eq!(w.up.count(), before);
    // Nothing about the seed in what the client sees.
    assert!(!String::from_utf8_lossy(&r.body).contains("MFVW"));
}

#[tokio::test]
async fn roa_signs_the_x_acs_code_header_only() {
    let w = world("15m").await;
    let p = w.gw.proxy;
    // X-Akgate-MFA-Code is not in a ROA v1 string to sign.
    let r = send(
        p,
        &roa(
            "DeleteInstance",
            MFA_KEY,
            &[("X-Akgate-MFA-Code", &current_code())],
        ),
    )
    .await;
    assert_refused(&r, "Forbidden.MFAInvalid", "x-acs-akgate-mfa-code");
    let r = send(
        p,
        &roa(
            "DeleteInstance",
            MFA_KEY,
            &[("x-acs-akgate-mfa-code", &current_code())],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.message());
}

/// The official V3 SDKs (tea-openapi) sign only `x-acs-*`, `host` and `content-type` headers.
#[tokio::test]
async fn v3_accepts_the_code_under_the_x_acs_prefix() {
    let w = world("15m").await;
    let r = send(
        w.gw.proxy,
        &v3(
            "DeleteInstance",
            MFA_KEY,
            &[("x-acs-akgate-mfa-code", &current_code())],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.message());
}

#[tokio::test]
async fn rpc_carries_the_code_as_a_signed_parameter() {
    let w = world("15m").await;
    let p = w.gw.proxy;
    let rpc = |extra: &[(&str, &str)]| {
        common::rpc_signed("127.0.0.1", "GET", "DeleteInstance", extra, MFA_KEY, 0)
    };
    let r = send(p, &rpc(&[])).await;
    r.assert_error(403, "Forbidden.MFARequired");
    // RPC v1 signs no header.
    let r = send(p, &rpc(&[]).header("X-Akgate-MFA-Code", &current_code())).await;
    assert_refused(&r, "Forbidden.MFAInvalid", "AkgateMfaCode");
    let r = send(p, &rpc(&[("AkgateMfaCode", &wrong_code())])).await;
    r.assert_error(403, "Forbidden.MFAInvalid");
    let code = current_code();
    let r = send(p, &rpc(&[("AkgateMfaCode", &code)])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.message());
    assert!(w.up.last().path_and_query.contains("AkgateMfaCode="));
    let r = send(p, &rpc(&[])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.message());
}

#[tokio::test]
async fn sigv4_critical_operations_answer_in_the_aws_shape() {
    let w = world("15m").await;
    let p = w.gw.proxy;
    let r = send(p, &s3("GET", "/bucket-1", &[])).await;
    assert_eq!(r.status, StatusCode::OK, "ListObjects is not critical");

    let r = send(p, &s3("DELETE", "/bucket-1", &[])).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(text.contains("<Code>AccessDenied</Code>"), "{text}");
    assert!(text.contains("X-Akgate-MFA-Code"), "{text}");

    // Signed (botocore signs every header it sends, so a client adds it before signing).
    let r = send(
        p,
        &s3(
            "DELETE",
            "/bucket-1",
            &[("X-Akgate-MFA-Code", &current_code())],
        ),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(w.up.last().method, "DELETE");
}

#[tokio::test]
async fn akgate_sign_adds_and_signs_the_code() {
    let w = world("15m").await;
    let url = format!("http://{}/", w.gw.proxy);
    let seed_env = SEED_BASE32.to_string();
    let sign = |key: (&str, &str), scheme: &str, extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_akgate"))
            .args([
                "sign",
                "--key-id",
                key.0,
                "--secret-env",
                "AKGATE_IT_MFA_SECRET",
            ])
            .args(["--scheme", scheme, "--method", "POST", "--url", &url])
            .args(["--action", "DeleteInstance", "--format", "http"])
            .args(["-H", "Host: 127.0.0.1"])
            .args(extra)
            .env("AKGATE_IT_MFA_SECRET", key.1)
            .env("AKGATE_IT_MFA_SEED", &seed_env)
            .output()
            .unwrap();
        capture_output(&out);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(!text.contains("MFVW"), "the seed is never printed");
        parse_http(&text)
    };
    // --mfa-secret-env: the current code, computed from the seed.
    let req = sign(MFA_KEY, "acs3", &["--mfa-secret-env", "AKGATE_IT_MFA_SEED"]);
    let auth = &req
        .headers
        .iter()
        .find(|(k, _)| k == "Authorization")
        .unwrap()
        .1;
    assert!(auth.contains("x-akgate-mfa-code"), "{auth}");
    let r = send(w.gw.proxy, &req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.message());

    // --mfa-code over RPC v1 (another key with the same seed, whose codes are its own): the
    // parameter.
    let req = sign(AWS_MFA_KEY, "rpc", &["--mfa-code", &current_code()]);
    assert!(req.path_and_query.contains("AkgateMfaCode="));
    let r = send(w.gw.proxy, &req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.message());
    // ROA v1: the x-acs- form, which its string to sign covers.
    let req = sign(MFA_KEY, "roa", &["--mfa-code", "123456"]);
    assert!(
        req.headers
            .iter()
            .any(|(k, v)| k == "x-acs-akgate-mfa-code" && v == "123456"),
        "{:?}",
        req.headers
    );
}

/// A refusal names its `[[critical]]` entry in the audit line; a shadow entry refuses nothing
/// and logs what it would have refused.
#[tokio::test]
async fn the_audit_names_the_critical_entry_and_shadow_entries_only_log() {
    let w = world("15m").await;
    let p = w.gw.proxy;
    let r = send(p, &v3("DeleteInstance", MFA_KEY, &[])).await;
    r.assert_error(403, "Forbidden.MFARequired");
    let id = r.headers["x-acs-request-id"].to_str().unwrap().to_string();
    let a = w.gw.audit_for(&id).await;
    assert_eq!(a["code"], "Forbidden.MFARequired", "{a}");
    assert_eq!(a["rule"], "critical.toml:2", "{a}");

    let shadow = signed_with(
        "ram.test",
        "POST",
        "/",
        "CreateAccessKey",
        "",
        MFA_KEY,
        b"",
        0,
        &[],
    );
    let r = send(p, &shadow).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.message());
    let id = w.up.last().headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let a = w.gw.audit_for(&id).await;
    assert_eq!(a["decision"], "would_deny", "{a}");
    assert_eq!(
        a["would_deny"],
        serde_json::json!([{"code": "Forbidden.MFARequired", "rule": "critical.toml:10"}]),
        "{a}"
    );
}

/// The official SDKs, driven by tests/interop/mfa_sdk.py: tea-openapi V3 (the x-acs- header),
/// tea-openapi RPC v1 (the parameter) and botocore (a header added before signing).
#[tokio::test]
async fn official_sdks_send_the_code_signed() {
    let Some(python) = common::sdk_python() else {
        return;
    };
    let w = world("15m").await;
    let before = w.up.count();
    let endpoint = w.gw.proxy.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/interop/mfa_sdk.py"
            ))
            .args(["--endpoint", &endpoint])
            .env("AKGATE_IT_MFA_SEED", SEED_BASE32)
            .env("AKGATE_IT_MFA_V3_ID", MFA_KEY.0)
            .env("AKGATE_IT_MFA_V3_SECRET", MFA_KEY.1)
            .env("AKGATE_IT_MFA_RPC_ID", MFA_KEY2.0)
            .env("AKGATE_IT_MFA_RPC_SECRET", MFA_KEY2.1)
            .env("AKGATE_IT_MFA_AWS_ID", AWS_MFA_KEY.0)
            .env("AKGATE_IT_MFA_AWS_SECRET", AWS_MFA_KEY.1)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    capture_output(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("7 passed, 0 failed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The allowed calls arrived, the refused ones did not.
    assert_eq!(w.up.count(), before + 4);
}

/// Raw HTTP/1.1 request text (`akgate sign --format http`) → a request to send.
fn parse_http(text: &str) -> Req {
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap();
    let mut parts = first.split(' ');
    let method = parts.next().unwrap().to_string();
    let target = parts.next().unwrap().to_string();
    let mut headers = Vec::new();
    for l in lines.by_ref() {
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(": ").unwrap();
        headers.push((k.to_string(), v.to_string()));
    }
    Req {
        method,
        path_and_query: target,
        headers,
        body: vec![],
    }
}
