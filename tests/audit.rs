//! The audit log, the brute-force guard and shadow rules, through the real binary.

mod common;

use common::*;
use serde_json::Value;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

const PLAIN: (&str, &str) = ("AKPLAIN000000001", "plain-secret-for-tests-only");
const SHADOW_USER_KEY: (&str, &str) = ("AKSHADOWUSER0001", "shadow-user-secret-for-tests-only");
const SHADOW_LEAK: (&str, &str) = ("AKSHADOWLEAK0001", "shadow-leak-secret-for-tests-only");

const ALL_SECRETS: [&str; 10] = [
    ALICE.1,
    BOB_LIMITED.1,
    DISABLED.1,
    LEAKED.1,
    OTHER_ACCOUNT.1,
    STS_KEY.1,
    STS_EXPIRED.1,
    PLAIN.1,
    SHADOW_USER_KEY.1,
    SHADOW_LEAK.1,
];

struct World {
    dir: tempfile::TempDir,
    up: Upstream,
    gw: Akgate,
    host: String,
}

fn append(path: &Path, text: &str) {
    let mut s = std::fs::read_to_string(path).unwrap();
    s.push_str(text);
    std::fs::write(path, s).unwrap();
}

/// 1-based line of the `[[table]]` header whose first field is `field` (the line a rule's
/// `file:line` names).
fn line_of(dir: &Path, file: &str, field: &str) -> usize {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.trim() == field)
        .unwrap_or_else(|| panic!("{field} not in {file}"));
    assert!(lines[i - 1].starts_with("[["), "{field} opens its table");
    i
}

/// The shared test rules plus a plain key, a user whose allowlist is in shadow mode and a key
/// flagged as leaked in shadow mode; `settings` is appended to `[settings]`.
async fn world(settings: &str, args: &[&str]) -> World {
    let up = upstream().await;
    let slow = hanging_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    write_rules(dir.path(), up.addr, slow);
    append(
        &dir.path().join("keys.toml"),
        &format!(
            r#"
[[access_key]]
id = "{plain}"
account = "100"
secret = "{plain_secret}"
status = "active"

[[user]]
name = "shadowy"
account = "100"
api_source_cidrs = ["127.0.0.7/32"]
allowlist_mode = "shadow"

[[access_key]]
id = "{su}"
user = "shadowy"
account = "100"
secret = "{su_secret}"
status = "active"

[[access_key]]
id = "{sl}"
account = "100"
secret = "{sl_secret}"
status = "active"
"#,
            plain = PLAIN.0,
            plain_secret = PLAIN.1,
            su = SHADOW_USER_KEY.0,
            su_secret = SHADOW_USER_KEY.1,
            sl = SHADOW_LEAK.0,
            sl_secret = SHADOW_LEAK.1,
        ),
    );
    append(
        &dir.path().join("leaked.toml"),
        &format!(
            "\n[[leaked_key]]\nid = \"{}\"\nmode = \"shadow\"\n",
            SHADOW_LEAK.0
        ),
    );
    append(&dir.path().join("settings.toml"), settings);
    let gw = Akgate::start(dir.path(), "127.0.0.1:0", args);
    let host = gw.proxy.to_string();
    World { dir, up, gw, host }
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

/// The request id of the last forwarded request.
fn upstream_request_id(w: &World) -> String {
    w.up.last().headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_string()
}

fn error_request_id(r: &Resp) -> String {
    r.json()["RequestId"].as_str().unwrap().to_string()
}

fn assert_time_format(t: &Value) {
    let t = t.as_str().expect("time is a string");
    let b = t.as_bytes();
    assert_eq!(t.len(), 24, "{t}");
    assert!(
        b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && b[23] == b'Z',
        "{t}"
    );
}

#[tokio::test]
async fn allowed_call_and_each_refusal_produce_one_line() {
    let w = world("", &[]).await;
    let h = w.host.as_str();
    let mut expected = 0;

    // Allowed.
    let r = send_from(
        w.gw.proxy,
        ip("127.0.0.1"),
        &signed(h, "DescribeInstances", "RegionId=1", ALICE, b"", 0),
    )
    .await;
    assert_eq!(r.status, 200);
    expected += 1;
    let id = upstream_request_id(&w);
    let a = w.gw.audit_for(&id).await;
    assert_time_format(&a["time"]);
    assert_eq!(a["request_id"], id.as_str());
    assert_eq!(a["key_id"], ALICE.0);
    assert_eq!(a["account"], "100");
    assert_eq!(a["user"], "alice");
    assert_eq!(a["source_ip"], "127.0.0.1");
    assert_eq!(a["source"], "peer");
    assert_eq!(a["hops"], 0);
    assert_eq!(a["service"], "ecs");
    assert_eq!(a["action"], "DescribeInstances");
    assert_eq!(a["scheme"], "ACS3-HMAC-SHA256");
    assert_eq!(a["decision"], "allowed");
    assert_eq!(a["code"], "OK");
    assert_eq!(a["status"], 200);
    assert_eq!(a["rule"], Value::Null);
    assert_eq!(a["would_deny"], serde_json::json!([]));
    assert!(a["latency_ms"].as_f64().unwrap() >= 0.0);

    // Refusals: (request, source, status, code, decision, key_id, rule).
    let keys_line = |l: &str| format!("keys.toml:{}", line_of(w.dir.path(), "keys.toml", l));
    let bob_rule = keys_line(&format!("id = \"{}\"", BOB_LIMITED.0));
    let leak_rule = format!(
        "leaked.toml:{}",
        line_of(
            w.dir.path(),
            "leaked.toml",
            &format!("id = \"{}\"", LEAKED.0)
        )
    );
    let mut two_hosts = signed(h, "DescribeInstances", "", ALICE, b"", 0);
    two_hosts.headers.push(("host".into(), "other.test".into()));
    let big = vec![b'x'; 70_000];
    type Case<'a> = (
        &'a str,
        Req,
        u16,
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<String>,
    );
    let cases: Vec<Case> = vec![
        (
            "bad signature",
            signed(h, "DescribeInstances", "", (ALICE.0, "wrong"), b"", 0),
            400,
            "SignatureDoesNotMatch",
            "denied",
            Some(ALICE.0),
            None,
        ),
        (
            "unknown key (its id is not logged)",
            signed(
                h,
                "DescribeInstances",
                "",
                ("AKNOSUCHKEY00001", "x"),
                b"",
                0,
            ),
            404,
            "InvalidAccessKeyId.NotFound",
            "denied",
            None,
            None,
        ),
        (
            "allowlist",
            signed(h, "DescribeInstances", "", BOB_LIMITED, b"", 0),
            403,
            "Forbidden.SourceIpNotAllowed",
            "denied",
            Some(BOB_LIMITED.0),
            Some(bob_rule),
        ),
        (
            "leaked key",
            signed("ram.test", "CreateUser", "", LEAKED, b"", 0),
            403,
            "Forbidden",
            "denied",
            Some(LEAKED.0),
            Some(leak_rule),
        ),
        (
            "expired timestamp",
            signed(h, "DescribeInstances", "", ALICE, b"", -3600),
            400,
            "InvalidTimeStamp.Expired",
            "denied",
            Some(ALICE.0),
            None,
        ),
        (
            "no route",
            signed("nowhere.test", "DescribeInstances", "", ALICE, b"", 0),
            404,
            "InvalidRoute",
            "denied",
            None,
            None,
        ),
        (
            "upstream down",
            signed("down.test", "DescribeInstances", "", ALICE, b"", 0),
            502,
            "ServiceUnavailable",
            "upstream_error",
            Some(ALICE.0),
            None,
        ),
        (
            "body too large (before the decision)",
            signed(h, "DescribeInstances", "", ALICE, &big, 0),
            413,
            "RequestBodyTooLarge",
            "denied",
            None,
            None,
        ),
        (
            "two Host headers (before the decision)",
            two_hosts,
            400,
            "InvalidRequest",
            "denied",
            None,
            None,
        ),
    ];
    for (what, req, status, code, decision, key_id, rule) in cases {
        let r = send_from(w.gw.proxy, ip("127.0.0.1"), &req).await;
        r.assert_error(status, code);
        expected += 1;
        let id = error_request_id(&r);
        let a = w.gw.audit_for(&id).await;
        assert_time_format(&a["time"]);
        assert_eq!(a["decision"], decision, "{what}: {a}");
        assert_eq!(a["code"], code, "{what}: {a}");
        assert_eq!(a["status"], status, "{what}: {a}");
        assert_eq!(a["key_id"].as_str(), key_id, "{what}: {a}");
        assert_eq!(a["rule"].as_str(), rule.as_deref(), "{what}: {a}");
        assert_eq!(a["source_ip"], "127.0.0.1", "{what}: {a}");
        assert_eq!(a["source"], "peer", "{what}: {a}");
        assert!(a["latency_ms"].is_f64(), "{what}: {a}");
    }

    // One line per request, every one of them JSON.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = w.gw.audit_lines();
    assert_eq!(lines.len(), expected, "{lines:#?}");
    let mut ids: Vec<String> = lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a JSON line");
            v["request_id"].as_str().unwrap().to_string()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), expected, "request ids are unique");
}

#[tokio::test]
async fn source_and_hops_through_a_trusted_proxy() {
    let w = world("", &[]).await;
    let h = w.host.as_str();
    let proxy = ip("127.0.0.9"); // trusted_proxies = ["127.0.0.9/32"]

    let req =
        signed(h, "DescribeInstances", "", ALICE, b"", 0).header("x-forwarded-for", "127.0.0.1");
    assert_eq!(send_from(w.gw.proxy, proxy, &req).await.status, 200);
    let a = w.gw.audit_for(&upstream_request_id(&w)).await;
    assert_eq!(a["source_ip"], "127.0.0.1");
    assert_eq!(a["source"], "x-forwarded-for");
    assert_eq!(a["hops"], 1);

    let req = signed(h, "DescribeInstances", "", ALICE, b"", 0)
        .header("x-forwarded-for", "127.0.0.1, 127.0.0.9");
    assert_eq!(send_from(w.gw.proxy, proxy, &req).await.status, 200);
    let a = w.gw.audit_for(&upstream_request_id(&w)).await;
    assert_eq!(a["source_ip"], "127.0.0.1");
    assert_eq!(a["hops"], 2);

    // Refused by the account's list (127.0.0.0/8): the forwarded source is what is logged.
    let req =
        signed(h, "DescribeInstances", "", ALICE, b"", 0).header("x-forwarded-for", "203.0.113.7");
    let r = send_from(w.gw.proxy, proxy, &req).await;
    r.assert_error(403, "Forbidden.SourceIpNotAllowed");
    let a = w.gw.audit_for(&error_request_id(&r)).await;
    assert_eq!(a["source_ip"], "203.0.113.7");
    assert_eq!(a["source"], "x-forwarded-for");
    assert_eq!(a["hops"], 1);
    assert_eq!(a["decision"], "denied");

    // An untrusted peer's X-Forwarded-For is ignored.
    let req =
        signed(h, "DescribeInstances", "", ALICE, b"", 0).header("x-forwarded-for", "127.0.0.9");
    let r = send_from(w.gw.proxy, ip("127.0.0.1"), &req).await;
    assert_eq!(r.status, 200);
    let a = w.gw.audit_for(&upstream_request_id(&w)).await;
    assert_eq!(a["source_ip"], "127.0.0.1");
    assert_eq!(a["source"], "peer");
}

/// The signature value of a request: ACS3 `Signature=<hex>` or RPC `Signature=<base64>`.
fn signature_of(req: &Req) -> String {
    let from_header = req
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| v.split("Signature=").nth(1))
        .map(str::to_string);
    from_header.unwrap_or_else(|| {
        let q = req.path_and_query.split("Signature=").nth(1).unwrap();
        q.split('&').next().unwrap().to_string()
    })
}

#[tokio::test]
async fn no_secret_signature_or_token_in_audit_lines_metrics_or_logs() {
    let w = world("", &[]).await;
    let h = w.host.as_str();
    let token = |key| {
        signed_with(
            h,
            "POST",
            "/",
            "DescribeRegions",
            "",
            key,
            b"",
            0,
            &[("x-acs-security-token", STS_TOKEN)],
        )
    };
    let reqs = vec![
        signed(h, "DescribeInstances", "", ALICE, b"a=1", 0),
        signed(
            h,
            "DescribeInstances",
            "",
            (ALICE.0, "wrong-secret"),
            b"",
            0,
        ),
        signed(h, "DescribeInstances", "", BOB_LIMITED, b"", 0),
        signed(h, "DescribeInstances", "", DISABLED, b"", 0),
        signed("ram.test", "CreateUser", "", LEAKED, b"", 0),
        signed(h, "DescribeInstances", "", OTHER_ACCOUNT, b"", 0),
        token(STS_KEY),
        token(STS_EXPIRED),
        signed(h, "DescribeInstances", "", PLAIN, b"", 0),
        signed(h, "DescribeInstances", "", SHADOW_USER_KEY, b"", 0),
        signed("ram.test", "CreateUser", "", SHADOW_LEAK, b"", 0),
        // An unknown key id could be a pasted secret: it must not be logged.
        signed(h, "DescribeInstances", "", (ALICE.1, ALICE.1), b"", 0),
        rpc_signed(h, "GET", "DescribeInstances", &[], ALICE, 0),
        rpc_signed(h, "GET", "DescribeInstances", &[], (ALICE.0, "wrong"), 0),
    ];
    let mut forbidden: Vec<String> = ALL_SECRETS.iter().map(|s| s.to_string()).collect();
    forbidden.push(STS_TOKEN.into());
    let mut ids = Vec::new();
    for req in &reqs {
        let sig = signature_of(req);
        assert!(sig.len() >= 20, "{sig}");
        forbidden.push(sig.clone());
        forbidden.push(akgate::auth::encoding::percent_encode(&sig));
        let r = send(w.gw.proxy, req).await;
        let id = match r.headers.get("x-request-id") {
            Some(v) => v.to_str().unwrap().to_string(),
            None => upstream_request_id(&w),
        };
        ids.push(id);
    }
    for id in &ids {
        w.gw.audit_for(id).await;
    }
    let metrics = String::from_utf8(admin_get(w.gw.admin, "/metrics").await.body.to_vec()).unwrap();
    let lines = w.gw.audit_lines();
    assert!(lines.len() >= reqs.len());
    let logs = w.gw.stderr();
    for needle in &forbidden {
        for line in &lines {
            assert!(
                !line.contains(needle.as_str()),
                "audit line has {needle}: {line}"
            );
        }
        assert!(!metrics.contains(needle.as_str()), "/metrics has {needle}");
        assert!(!logs.contains(needle.as_str()), "stderr has {needle}");
    }
    for line in &lines {
        let lower = line.to_ascii_lowercase();
        assert!(!lower.contains("authorization"), "{line}");
        assert!(!lower.contains("signature="), "{line}");
    }
}

#[tokio::test]
async fn audit_log_to_a_file_and_off() {
    let file_dir = tempfile::tempdir().unwrap();
    let path = file_dir.path().join("sub-audit.log");
    std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
    let w = world("", &["--audit-log", path.to_str().unwrap()]).await;
    let r = send(
        w.gw.proxy,
        &signed(&w.host, "DescribeInstances", "", ALICE, b"", 0),
    )
    .await;
    assert_eq!(r.status, 200);
    let id = upstream_request_id(&w);
    let found = find_audit_line(&id, || {
        std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    })
    .await
    .expect("the line is in the file");
    assert_eq!(found["decision"], "allowed");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("{\"earlier\":true}\n"), "appended: {text}");
    assert!(w.gw.audit_lines().is_empty(), "nothing on stdout");
    drop(w);

    let w = world("", &["--audit-log", "off"]).await;
    let r = send(
        w.gw.proxy,
        &signed(&w.host, "DescribeInstances", "", ALICE, b"", 0),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = send(
        w.gw.proxy,
        &signed(&w.host, "DescribeInstances", "", (ALICE.0, "x"), b"", 0),
    )
    .await;
    r.assert_error(400, "SignatureDoesNotMatch");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(w.gw.audit_lines().is_empty(), "{:?}", w.gw.audit_lines());
}

async fn metrics_text(w: &World) -> String {
    String::from_utf8(admin_get(w.gw.admin, "/metrics").await.body.to_vec()).unwrap()
}

#[tokio::test]
async fn brute_force_guard_refuses_a_failing_source_for_its_cool_down() {
    let w = world(
        "auth_failure_limit = 3\nauth_failure_cooldown = \"2s\"\n",
        &[],
    )
    .await;
    let h = w.host.as_str();
    let bad = || signed(h, "DescribeInstances", "", (PLAIN.0, "wrong"), b"", 0);
    let good = || signed(h, "DescribeInstances", "", PLAIN, b"", 0);
    let attacker = ip("127.0.0.2");

    for _ in 0..3 {
        send_from(w.gw.proxy, attacker, &bad())
            .await
            .assert_error(400, "SignatureDoesNotMatch");
    }
    let r = send_from(w.gw.proxy, attacker, &bad()).await;
    r.assert_error(429, "Throttling.AuthFailure");
    let a = w.gw.audit_for(&error_request_id(&r)).await;
    assert_eq!(a["decision"], "denied");
    assert_eq!(a["code"], "Throttling.AuthFailure");
    assert_eq!(a["status"], 429);
    assert_eq!(a["source_ip"], "127.0.0.2");

    // Even a good signature from the throttled source is refused, before anything is checked.
    send_from(w.gw.proxy, attacker, &good())
        .await
        .assert_error(429, "Throttling.AuthFailure");
    // Other sources are not affected.
    assert_eq!(
        send_from(w.gw.proxy, ip("127.0.0.1"), &good()).await.status,
        200
    );

    let m = metrics_text(&w).await;
    assert_eq!(
        metric(
            &m,
            "akgate_auth_failures_total",
            &[("code", "SignatureDoesNotMatch")]
        ),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "akgate_requests_total",
            &[("code", "Throttling.AuthFailure")]
        ),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "akgate_source_throttle_starts_total", &[]),
        Some(1.0),
        "{m}"
    );

    // After the cool-down the source is served again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(send_from(w.gw.proxy, attacker, &good()).await.status, 200);
}

#[tokio::test]
async fn brute_force_guard_is_off_by_default_but_failures_are_counted() {
    let w = world("", &[]).await;
    let h = w.host.as_str();
    let attacker = ip("127.0.0.2");
    for _ in 0..12 {
        send_from(
            w.gw.proxy,
            attacker,
            &signed(h, "DescribeInstances", "", (PLAIN.0, "wrong"), b"", 0),
        )
        .await
        .assert_error(400, "SignatureDoesNotMatch");
    }
    send_from(
        w.gw.proxy,
        attacker,
        &signed(
            h,
            "DescribeInstances",
            "",
            ("AKNOSUCHKEY00001", "x"),
            b"",
            0,
        ),
    )
    .await
    .assert_error(404, "InvalidAccessKeyId.NotFound");
    let r = send_from(
        w.gw.proxy,
        attacker,
        &signed(h, "DescribeInstances", "", PLAIN, b"", 0),
    )
    .await;
    assert_eq!(r.status, 200);
    let m = metrics_text(&w).await;
    assert_eq!(
        metric(
            &m,
            "akgate_auth_failures_total",
            &[("code", "SignatureDoesNotMatch")]
        ),
        Some(12.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "akgate_auth_failures_total",
            &[("code", "InvalidAccessKeyId.NotFound")]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "akgate_requests_total",
            &[("code", "Throttling.AuthFailure")]
        ),
        None
    );
}

#[tokio::test]
async fn shadow_allowlist_forwards_and_logs_would_deny() {
    let w = world("", &[]).await;
    let h = w.host.as_str();
    // The shadow user admits 127.0.0.7 only; the account (enforced) admits 127.0.0.0/8.
    let r = send_from(
        w.gw.proxy,
        ip("127.0.0.1"),
        &signed(h, "DescribeInstances", "", SHADOW_USER_KEY, b"", 0),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let a = w.gw.audit_for(&upstream_request_id(&w)).await;
    assert_eq!(a["decision"], "would_deny", "{a}");
    assert_eq!(a["code"], "OK");
    assert_eq!(a["status"], 200);
    assert_eq!(a["rule"], Value::Null);
    let rule = format!(
        "keys.toml:{}",
        line_of(w.dir.path(), "keys.toml", "name = \"shadowy\"")
    );
    assert_eq!(
        a["would_deny"],
        serde_json::json!([{"code": "Forbidden.SourceIpNotAllowed", "rule": rule}]),
        "{a}"
    );
    // From inside the list: a plain allowed line.
    let r = send_from(
        w.gw.proxy,
        ip("127.0.0.7"),
        &signed(h, "DescribeInstances", "", SHADOW_USER_KEY, b"", 0),
    )
    .await;
    assert_eq!(r.status, 200);
    let a = w.gw.audit_for(&upstream_request_id(&w)).await;
    assert_eq!(a["decision"], "allowed");
    assert_eq!(a["would_deny"], serde_json::json!([]));
    let m = metrics_text(&w).await;
    assert_eq!(
        metric(
            &m,
            "akgate_shadow_would_deny_total",
            &[("code", "Forbidden.SourceIpNotAllowed")]
        ),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test]
async fn shadow_leaked_key_lets_a_high_risk_call_pass_with_would_deny() {
    let w = world("", &[]).await;
    let r = send(
        w.gw.proxy,
        &signed("ram.test", "CreateUser", "", SHADOW_LEAK, b"", 0),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let a = w.gw.audit_for(&upstream_request_id(&w)).await;
    assert_eq!(a["decision"], "would_deny", "{a}");
    assert_eq!(a["service"], "ram");
    assert_eq!(a["action"], "CreateUser");
    let rule = format!(
        "leaked.toml:{}",
        line_of(
            w.dir.path(),
            "leaked.toml",
            &format!("id = \"{}\"", SHADOW_LEAK.0)
        )
    );
    assert_eq!(
        a["would_deny"],
        serde_json::json!([{"code": "Forbidden", "rule": rule}]),
        "{a}"
    );
    // The enforced flag still refuses.
    send(
        w.gw.proxy,
        &signed("ram.test", "CreateUser", "", LEAKED, b"", 0),
    )
    .await
    .assert_error(403, "Forbidden");
}
