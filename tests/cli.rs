//! The rule tooling through the real binary: `check`, `explain`, `sign`, `diff`.

mod common;

use std::path::Path;
use std::process::{Command, Output};

const SECRET_ENV: &str = "AKGATE_CLI_TEST_SECRET";
const SECRET: &str = "cli-test-secret";
const NOW: &str = "2026-01-15T08:00:00Z";

const KEYS: &str = r#"[[account]]
id = "1001"
api_source_cidrs = ["203.0.113.0/24"]

[[user]]
name = "ci"
account = "1001"

[[access_key]]
id = "AKOK"
user = "ci"
account = "1001"
secret_env = "AKGATE_CLI_TEST_SECRET"
status = "active"

[[access_key]]
id = "AKLEAK"
account = "1001"
secret_env = "AKGATE_CLI_TEST_SECRET"
status = "active"

[[access_key]]
id = "AKSHADOW"
account = "1001"
secret_env = "AKGATE_CLI_TEST_SECRET"
status = "active"
api_source_cidrs = ["10.0.0.0/8"]
allowlist_mode = "shadow"
"#;

const LEAKED: &str = r#"# incident 42
[[leaked_key]]
id = "AKLEAK"
reported = 2026-01-10T00:00:00Z
reason = "found in a public repository"
"#;

const ROUTES: &str = r#"[[service]]
name = "ecs"
actions = ["DeleteInstance"]

[[service]]
name = "sts"
actions = []

[[route]]
host = "sts.test"
service = "sts"
upstream = "http://127.0.0.1:9"
signatures = "aws"

[[route]]
path_prefix = "/"
service = "ecs"
upstream = "http://127.0.0.1:9"
"#;

fn akgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_akgate"))
        .args(args)
        .env(SECRET_ENV, SECRET)
        .env_remove("AKGATE_RULES")
        .output()
        .map(captured)
        .expect("run akgate")
}

/// Every output is also kept for the secrets scan (tests/secrets.rs).
fn captured(o: Output) -> Output {
    common::capture_output(&o);
    o
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn write_set(dir: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

fn valid_set() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    write_set(
        d.path(),
        &[
            ("keys.toml", KEYS),
            ("leaked.toml", LEAKED),
            ("routes.toml", ROUTES),
        ],
    );
    d
}

/// `file:line:col` of the first occurrence of `needle` in `text`.
fn pos(file: &str, text: &str, needle: &str) -> String {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} not in {file}"));
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |p| p + 1) + 1;
    format!("{file}:{line}:{col}")
}

/// The line of the first occurrence of `needle`.
fn line(text: &str, needle: &str) -> usize {
    text[..text.find(needle).unwrap()].matches('\n').count() + 1
}

fn dir_arg(d: &tempfile::TempDir) -> String {
    d.path().display().to_string()
}

// ------------------------------------------------------------------------------------------
// check

#[test]
fn check_accepts_a_valid_set_with_a_summary() {
    let d = valid_set();
    let o = akgate(&["check", &dir_arg(&d)]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "{}: 3 keys, 2 routes, 2 services: ok",
            d.path().display()
        )),
        "{out}"
    );
}

#[test]
fn check_warns_about_an_inline_secret_but_passes() {
    let d = valid_set();
    let keys = KEYS.replacen(
        "secret_env = \"AKGATE_CLI_TEST_SECRET\"",
        "secret = \"inline\"",
        1,
    );
    write_set(d.path(), &[("keys.toml", &keys)]);
    let o = akgate(&["check", &dir_arg(&d)]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let want = format!(
        "{}: warning: access key `AKOK` has an inline secret",
        pos("keys.toml", &keys, "\"inline\"")
    );
    assert!(out.contains(&want), "{want}\n{out}");
    assert!(out.contains("hint:"), "{out}");
    assert!(out.contains(": ok, 1 warning"), "{out}");
}

#[test]
fn check_reports_every_problem_with_its_position() {
    let d = tempfile::tempdir().unwrap();
    let keys = format!(
        "{}{}",
        KEYS.replace("203.0.113.0/24", "203.0.113.0/33"),
        r#"
[[access_key]]
id = "AKOK"
account = "1001"
secret_env = "AKGATE_CLI_TEST_SECRET"
status = "disabled"

[[access_key]]
id = "AKNOUSER"
user = "nobody"
account = "1001"
secret_env = "AKGATE_CLI_TEST_SECRET"
status = "active"

[[access_key]]
id = "AKNOACCOUNT"
account = "9999"
secret_env = "AKGATE_CLI_TEST_SECRET"
status = "active"

[[access_key]]
id = "AKCI2"
user = "ci"
account = "1001"
secret_env = "AKGATE_CLI_TEST_SECRET"
status = "active"

[[access_key]]
id = "AKCI3"
user = "ci"
account = "1001"
secret_env = "AKGATE_CLI_TEST_SECRET"
status = "active"
"#
    );
    let routes = ROUTES.replace("service = \"ecs\"\nupstream", "service = \"oss\"\nupstream");
    write_set(d.path(), &[("keys.toml", &keys), ("routes.toml", &routes)]);
    let o = akgate(&["check", &dir_arg(&d)]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let dup_at = keys.rfind("id = \"AKOK\"").unwrap() + 5;
    let dup_line = keys[..dup_at].matches('\n').count() + 1;
    for want in [
        format!(
            "{}: `203.0.113.0/33` is not an IP network",
            pos("keys.toml", &keys, "\"203.0.113.0/33\"")
        ),
        format!("keys.toml:{dup_line}:6: duplicate access key id `AKOK`"),
        format!(
            "{}: access key `AKNOUSER` refers to unknown user `nobody`",
            pos("keys.toml", &keys, "\"nobody\"")
        ),
        format!(
            "{}: access key `AKNOACCOUNT` refers to unknown account `9999`",
            pos("keys.toml", &keys, "\"9999\"")
        ),
        format!(
            "{}: user `ci` has more than two active access keys",
            pos("keys.toml", &keys, "\"AKCI3\"")
        ),
        format!(
            "{}: route to unknown service `oss`",
            pos("routes.toml", &routes, "\"oss\"")
        ),
    ] {
        assert!(out.contains(&want), "missing {want}\n{out}");
    }
    assert!(out.matches("    hint: ").count() >= 6, "{out}");
    assert!(out.contains(": 6 errors"), "{out}");
}

#[test]
fn check_reports_unknown_fields() {
    let d = valid_set();
    let keys = KEYS.replacen(
        "status = \"active\"",
        "status = \"active\"\ncolour = \"red\"",
        1,
    );
    write_set(d.path(), &[("keys.toml", &keys)]);
    let o = akgate(&["check", &dir_arg(&d)]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let want = format!(
        "{}: unknown field `colour`",
        pos("keys.toml", &keys, "colour")
    );
    assert!(out.contains(&want), "{want}\n{out}");
}

#[test]
fn check_refuses_an_empty_key_table_unless_allowed() {
    let d = tempfile::tempdir().unwrap();
    write_set(d.path(), &[("routes.toml", ROUTES)]);
    let o = akgate(&["check", &dir_arg(&d)]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("has no [[access_key]]"), "{out}");
    assert!(out.contains("--allow-empty"), "{out}");
    let o = akgate(&["check", "--allow-empty", &dir_arg(&d)]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("0 keys, 2 routes, 2 services: ok"));
}

#[test]
fn check_skip_secrets_needs_no_secret_but_still_one_source() {
    let d = valid_set();
    let o = Command::new(env!("CARGO_BIN_EXE_akgate"))
        .args(["check", &dir_arg(&d)])
        .env_remove(SECRET_ENV)
        .output()
        .map(captured)
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("`AKGATE_CLI_TEST_SECRET` is not set"));
    let o = Command::new(env!("CARGO_BIN_EXE_akgate"))
        .args(["check", "--skip-secrets", &dir_arg(&d)])
        .env_remove(SECRET_ENV)
        .output()
        .map(captured)
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let keys = KEYS.replacen(
        "secret_env = \"AKGATE_CLI_TEST_SECRET\"",
        "secret_env = \"AKGATE_CLI_TEST_SECRET\"\nsecret_file = \"x\"",
        1,
    );
    write_set(d.path(), &[("keys.toml", &keys)]);
    let o = akgate(&["check", "--skip-secrets", &dir_arg(&d)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("needs exactly one of"),
        "{}",
        stdout(&o)
    );
}

// ------------------------------------------------------------------------------------------
// explain

/// An ACS3-signed request as `--header` arguments.
fn signed_headers(key: &str, action: &str, nonce: &str) -> Vec<String> {
    let mut headers = vec![
        ("host".to_string(), "ecs.test".to_string()),
        ("x-acs-action".to_string(), action.to_string()),
        ("x-acs-version".to_string(), "2014-05-26".to_string()),
        ("x-acs-date".to_string(), NOW.to_string()),
        ("x-acs-signature-nonce".to_string(), nonce.to_string()),
    ];
    akgate::auth::acs3::sign(
        "POST",
        "/",
        "RegionId=cn-hangzhou",
        &mut headers,
        b"",
        key,
        SECRET.as_bytes(),
    );
    headers
        .into_iter()
        .filter(|(k, _)| k != "host")
        .map(|(k, v)| format!("{k}: {v}"))
        .collect()
}

fn explain(d: &tempfile::TempDir, ip: &str, key: &str, action: &str) -> Output {
    let rules = dir_arg(d);
    let headers = signed_headers(key, action, "nonce-0001");
    let mut args = vec![
        "explain",
        "--rules",
        &rules,
        "--ip",
        ip,
        "--now",
        NOW,
        "--method",
        "POST",
        "--url",
        "http://ecs.test/?RegionId=cn-hangzhou",
    ];
    for h in &headers {
        args.extend(["--header", h.as_str()]);
    }
    akgate(&args)
}

#[test]
fn explain_an_allowed_request_step_by_step() {
    let d = valid_set();
    let o = explain(&d, "203.0.113.5", "AKOK", "DescribeInstances");
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    for want in [
        "✓ source:".to_string(),
        format!(
            "✓ route: service ecs → 127.0.0.1:9  (routes.toml:{})",
            line(ROUTES, "[[route]]\npath_prefix")
        ),
        "✓ scheme: ACS3-HMAC-SHA256 for key AKOK, action DescribeInstances".into(),
        format!(
            "✓ key: account 1001, user ci  (keys.toml:{})",
            line(KEYS, "[[access_key]]")
        ),
        "✓ allowlist: account: ".to_string(),
        "- allowlist: user: no list".into(),
        "- allowlist: key: no list".into(),
        "✓ time: ".into(),
        "✓ signature: verified; canonical request:".into(),
        "      POST".into(),
        "      RegionId=cn-hangzhou".into(),
        "      string to sign:\n      ACS3-HMAC-SHA256\n".into(),
        "✓ nonce: nonce-0001".into(),
        "- leaked key: the key is not flagged".into(),
    ] {
        assert!(out.contains(&want), "missing {want}\n{out}");
    }
    assert!(out.trim_end().ends_with("decision: allowed"), "{out}");
    assert!(!out.contains(SECRET));
}

#[test]
fn explain_a_leaked_key_calling_a_high_risk_action() {
    let d = valid_set();
    let o = explain(&d, "203.0.113.5", "AKLEAK", "DeleteInstance");
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let rule = format!("leaked.toml:{}", line(LEAKED, "[[leaked_key]]"));
    assert!(
        out.contains(&format!(
            "✗ leaked key: DeleteInstance is high-risk for ecs  ({rule})"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "decision: denied Forbidden (HTTP 403) There is a risk of leakage of this AccessKey.  ({rule})"
        )),
        "{out}"
    );
    // The same key may still call what is not high-risk.
    let o = explain(&d, "203.0.113.5", "AKLEAK", "DescribeInstances");
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn explain_an_allowlist_refusal_names_the_rule() {
    let d = valid_set();
    let o = explain(&d, "198.51.100.1", "AKOK", "DescribeInstances");
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let rule = format!("keys.toml:{}", line(KEYS, "[[account]]"));
    assert!(
        out.contains("✗ allowlist: account: ") && out.contains(&format!("({rule})")),
        "{out}"
    );
    assert!(
        out.contains("decision: denied Forbidden.SourceIpNotAllowed (HTTP 403)"),
        "{out}"
    );
    assert!(out.trim_end().ends_with(&format!("({rule})")), "{out}");
    assert!(
        !out.contains("✓ signature"),
        "stops at the first refusal\n{out}"
    );
}

#[test]
fn explain_a_shadow_allowlist_allows_with_would_deny() {
    let d = valid_set();
    let o = explain(&d, "203.0.113.5", "AKSHADOW", "DescribeInstances");
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let rule = format!(
        "keys.toml:{}",
        line(KEYS, "[[access_key]]\nid = \"AKSHADOW\"")
    );
    assert!(out.contains("~ allowlist: key: "), "{out}");
    assert!(
        out.contains(&format!(
            "would_deny: Forbidden.SourceIpNotAllowed (HTTP 403) source IP not allowed by the key allowlist  ({rule})"
        )),
        "{out}"
    );
    assert!(out.trim_end().ends_with("decision: allowed"), "{out}");
}

#[test]
fn explain_reads_a_raw_request_and_a_wrong_clock_refuses() {
    let d = valid_set();
    let headers = signed_headers("AKOK", "DescribeInstances", "nonce-raw");
    let raw = format!(
        "POST /?RegionId=cn-hangzhou HTTP/1.1\nHost: ecs.test\n{}\n\n",
        headers.join("\n")
    );
    let f = d.path().join("req.http.txt");
    std::fs::write(&f, raw).unwrap();
    let (rules, req) = (dir_arg(&d), f.display().to_string());
    let o = akgate(&[
        "explain",
        "--rules",
        &rules,
        "--ip",
        "203.0.113.5",
        "--now",
        NOW,
        "--request",
        &req,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = akgate(&[
        "explain",
        "--rules",
        &rules,
        "--ip",
        "203.0.113.5",
        "--now",
        "2026-01-15T09:00:00Z",
        "--request",
        &req,
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("✗ time:"), "{out}");
    assert!(
        out.contains("decision: denied InvalidTimeStamp.Expired (HTTP 400)"),
        "{out}"
    );
}

// ------------------------------------------------------------------------------------------
// sign

/// Signs with `akgate sign --format http`, then judges the result with `akgate explain`.
fn sign_then_explain(d: &tempfile::TempDir, sign_args: &[&str]) -> (String, String) {
    let mut args = vec![
        "sign",
        "--key-id",
        "AKOK",
        "--secret-env",
        SECRET_ENV,
        "--now",
        NOW,
        "--format",
        "http",
    ];
    args.extend(sign_args);
    let o = akgate(&args);
    let signed = stdout(&o);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{signed}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!signed.contains(SECRET));
    let f = d.path().join("signed.http.txt");
    std::fs::write(&f, &signed).unwrap();
    let (rules, req) = (dir_arg(d), f.display().to_string());
    let o = akgate(&[
        "explain",
        "--rules",
        &rules,
        "--ip",
        "203.0.113.5",
        "--now",
        NOW,
        "--request",
        &req,
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{signed}\n{out}");
    (signed, out)
}

#[test]
fn signed_acs3_request_passes_explain() {
    let d = valid_set();
    let body = d.path().join("body.json");
    std::fs::write(&body, "{\"a\":1}").unwrap();
    let body = body.display().to_string();
    let (signed, out) = sign_then_explain(
        &d,
        &[
            "--method",
            "POST",
            "--url",
            "http://ecs.test/?RegionId=cn-hangzhou",
            "--action",
            "DescribeInstances",
            "--header",
            "content-type: application/json",
            "--body-file",
            &body,
        ],
    );
    assert!(
        signed.contains("Authorization: ACS3-HMAC-SHA256 Credential=AKOK"),
        "{signed}"
    );
    assert!(
        out.contains("✓ scheme: ACS3-HMAC-SHA256 for key AKOK, action DescribeInstances"),
        "{out}"
    );
}

#[test]
fn signed_rpc_request_passes_explain() {
    let d = valid_set();
    let (signed, out) = sign_then_explain(
        &d,
        &[
            "--scheme",
            "rpc",
            "--url",
            "http://ecs.test/?RegionId=cn-hangzhou",
            "--action",
            "DescribeInstances",
        ],
    );
    assert!(signed.contains("&Signature="), "{signed}");
    assert!(out.contains("action DescribeInstances"), "{out}");
}

#[test]
fn signed_roa_request_passes_explain() {
    let d = valid_set();
    let body = d.path().join("body.json");
    std::fs::write(&body, "{\"name\":\"web 1\"}").unwrap();
    let body = body.display().to_string();
    let (signed, out) = sign_then_explain(
        &d,
        &[
            "--scheme",
            "roa",
            "--method",
            "PUT",
            "--url",
            "http://ecs.test/clusters/c%201/tags?empty=&RegionId=cn-hangzhou",
            "--action",
            "TagCluster",
            "--header",
            "content-type: application/json",
            "--body-file",
            &body,
        ],
    );
    assert!(signed.contains("Authorization: acs AKOK:"), "{signed}");
    assert!(
        signed.contains("content-md5: "),
        "the body is signed through Content-MD5: {signed}"
    );
    assert!(
        out.contains("✓ scheme: ACS-ROA-HMAC-SHA1 for key AKOK, action TagCluster"),
        "{out}"
    );
    assert!(out.contains("string to sign:\n      PUT\n"), "{out}");
}

#[test]
fn signed_sigv4_request_passes_explain() {
    let d = valid_set();
    let (signed, out) = sign_then_explain(
        &d,
        &[
            "--scheme",
            "sigv4",
            "--url",
            "http://sts.test/?Action=GetCallerIdentity&Version=2011-06-15",
            "--region",
            "us-east-1",
            "--service",
            "sts",
        ],
    );
    assert!(
        signed.contains(
            "Authorization: AWS4-HMAC-SHA256 Credential=AKOK/20260115/us-east-1/sts/aws4_request"
        ),
        "{signed}"
    );
    assert!(out.contains("action GetCallerIdentity"), "{out}");
}

#[test]
fn sign_prints_a_curl_command_without_the_secret() {
    let o = akgate(&[
        "sign",
        "--key-id",
        "AKOK",
        "--secret-env",
        SECRET_ENV,
        "--method",
        "POST",
        "--url",
        "http://127.0.0.1:8080/?RegionId=cn-hangzhou",
        "--action",
        "DescribeInstances",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.starts_with(
            "curl -sS --path-as-is -X POST 'http://127.0.0.1:8080/?RegionId=cn-hangzhou'"
        ),
        "{out}"
    );
    for h in [
        "-H 'x-acs-action: DescribeInstances'",
        "-H 'x-acs-signature-nonce: ",
        "-H 'Authorization: ACS3-HMAC-SHA256 Credential=AKOK,SignedHeaders=host;x-acs-action;",
    ] {
        assert!(out.contains(h), "{h}\n{out}");
    }
    assert!(!out.contains(SECRET));
    let o = Command::new(env!("CARGO_BIN_EXE_akgate"))
        .args([
            "sign",
            "--key-id",
            "AKOK",
            "--secret-env",
            "AKGATE_CLI_NOPE",
            "--url",
            "http://h/",
            "--action",
            "X",
        ])
        .output()
        .map(captured)
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("`AKGATE_CLI_NOPE` is not set"));
}

// ------------------------------------------------------------------------------------------
// diff

#[test]
fn diff_shows_the_effect_of_a_change() {
    let old = valid_set();
    let new = valid_set();
    let o = akgate(&["diff", &dir_arg(&old), &dir_arg(&new)]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("no change in effect"));

    let leaked =
        format!("{LEAKED}\n[[leaked_key]]\nid = \"AKOK\"\nreason = \"pasted in a ticket\"\n");
    write_set(
        new.path(),
        &[
            (
                "keys.toml",
                &KEYS
                    .replace(
                        "[\"203.0.113.0/24\"]",
                        "[\"203.0.113.0/24\", \"198.51.100.0/24\"]",
                    )
                    .replacen(
                        "status = \"active\"\napi_source_cidrs",
                        "status = \"disabled\"\napi_source_cidrs",
                        1,
                    ),
            ),
            ("leaked.toml", &leaked),
            (
                "routes.toml",
                &ROUTES.replace(
                    "[\"DeleteInstance\"]",
                    "[\"DeleteInstance\", \"StopInstance\"]",
                ),
            ),
            (
                "settings.toml",
                "[settings]\nclock_skew = \"5m\"\ntrusted_proxies = [\"10.1.0.0/16\"]\n",
            ),
        ],
    );
    let o = akgate(&["diff", &dir_arg(&old), &dir_arg(&new)]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    for want in [
        format!(
            "key AKOK: flagged as leaked (enforce: pasted in a ticket) (leaked.toml:{})",
            line(&leaked, "[[leaked_key]]\nid = \"AKOK\"")
        ),
        "key AKSHADOW: disabled".into(),
        "account 1001 allowlist: widened: +198.51.100.0/24".into(),
        "service ecs: high-risk action added: stopinstance".into(),
        "trusted_proxies: widened: +10.1.0.0/16".into(),
        "settings.clock_skew: 900s → 300s".into(),
    ] {
        assert!(out.contains(&want), "missing {want}\n{out}");
    }
    // And back: the reverse change narrows.
    let o = akgate(&["diff", &dir_arg(&new), &dir_arg(&old)]);
    let out = stdout(&o);
    assert!(
        out.contains("account 1001 allowlist: narrowed: -198.51.100.0/24"),
        "{out}"
    );
    assert!(
        out.contains("key AKOK: no longer flagged as leaked"),
        "{out}"
    );
    assert!(
        out.contains("service ecs: high-risk action removed: stopinstance"),
        "{out}"
    );
}
