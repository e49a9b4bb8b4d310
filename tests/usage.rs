//! Key usage tracking and idle keys, through the real binary: what `GET /keys` and `akgate keys`
//! show after real signed requests, the `--state DIR` file across restarts, and idle keys being
//! refused and re-admitted by a rules reload.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const DAY: i64 = 86_400;

fn iso(t: i64) -> String {
    akgate::time::format_iso8601_utc(t)
}

async fn call(gw: &Akgate, action: &str, key: (&str, &str)) -> Resp {
    send(
        gw.proxy,
        &signed(&gw.proxy.to_string(), action, "", key, b"", 0),
    )
    .await
}

async fn keys_doc(gw: &Akgate) -> serde_json::Value {
    let r = admin_get(gw.admin, "/keys").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_no_secret("GET /keys", &String::from_utf8_lossy(&r.body));
    r.json()
}

fn row<'a>(doc: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {doc:#}"))
}

fn assert_no_secret(what: &str, text: &str) {
    for (label, secret) in configured_secrets() {
        assert!(
            !text.contains(&secret),
            "{what} shows the secret of {label}"
        );
    }
}

/// `akgate keys` with no secret in its environment (it must not need them).
fn keys_cmd(args: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_akgate"))
        .arg("keys")
        .args(args)
        .env_remove("AKGATE_RULES")
        .env_remove("AKGATE_STATE")
        .env_remove("AKGATE_IT_SECRET_ALICE")
        .output()
        .expect("run akgate keys");
    capture_output(&o);
    o
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn set_max_idle_days(rules: &Path, days: u32) {
    let path = rules.join("settings.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.starts_with("max_idle_days"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, format!("{kept}max_idle_days = {days}\n")).unwrap();
}

async fn reload(gw: &Akgate) {
    let req = Req {
        method: "POST".into(),
        path_and_query: "/rules/reload".into(),
        headers: vec![],
        body: vec![],
    };
    let r = send(gw.admin, &req).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test]
async fn allowed_requests_are_counted_with_source_service_and_action() {
    let up = upstream().await;
    let slow = hanging_upstream().await;
    let rules = tempfile::tempdir().unwrap();
    write_rules(rules.path(), up.addr, slow);
    let gw = Akgate::start(rules.path(), "127.0.0.1:0", &[]);

    let before = now();
    for _ in 0..2 {
        assert_eq!(call(&gw, "DescribeRegions", ALICE).await.status, 200);
    }
    assert_eq!(call(&gw, "DescribeInstances", ALICE).await.status, 200);
    // Refused requests are not use: a wrong signature for Alice's key, Bob's key from an
    // address outside its allowlist, a disabled key.
    call(&gw, "DescribeRegions", (ALICE.0, "not-alices-secret"))
        .await
        .assert_error(400, "SignatureDoesNotMatch");
    assert_eq!(call(&gw, "DescribeRegions", BOB_LIMITED).await.status, 403);
    assert_eq!(call(&gw, "DescribeRegions", DISABLED).await.status, 400);
    assert_eq!(up.count(), 3);

    let doc = keys_doc(&gw).await;
    assert_eq!(doc["max_idle_days"], 0);
    let alice = row(&doc, ALICE.0);
    assert_eq!(alice["requests"], 3, "{alice:#}");
    assert_eq!(alice["last_source"], "127.0.0.1");
    assert_eq!(alice["last_service"], "ecs");
    assert_eq!(alice["last_action"], "DescribeInstances");
    assert_eq!(
        (alice["account"].as_str(), alice["user"].as_str()),
        (Some("100"), Some("alice"))
    );
    assert_eq!(
        (alice["status"].as_str(), alice["leaked"].as_bool()),
        (Some("active"), Some(false))
    );
    let last = akgate::time::parse_iso8601_utc(alice["last_used"].as_str().unwrap()).unwrap();
    assert!(last >= before && last <= now(), "{alice:#}");
    assert_eq!(
        (alice["idle"].as_bool(), alice["idle_soon"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(alice["idle_days"], 0);
    for refused in [BOB_LIMITED.0, DISABLED.0] {
        let r = row(&doc, refused);
        assert_eq!(r["requests"], 0, "{r:#}");
        assert!(r["last_used"].is_null(), "{r:#}");
    }
    assert_eq!(row(&doc, DISABLED.0)["status"], "disabled");
    assert_eq!(row(&doc, LEAKED.0)["leaked"], true);
    assert_eq!(
        doc["keys"].as_array().unwrap().len(),
        7,
        "every key of the rules"
    );

    let one = admin_get(gw.admin, &format!("/keys/{}", ALICE.0)).await;
    assert_eq!(one.status, 200);
    assert_eq!(&one.json(), alice);
    let unknown = admin_get(gw.admin, "/keys/AKNOSUCHKEY00001").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.headers["content-type"], "application/json");
    assert_eq!(unknown.json()["id"], "AKNOSUCHKEY00001");
}

/// A state directory with Alice last used 100 days ago, the leaked key (used from account 100,
/// not high-risk calls, so any active key would do) 2 days ago, the other account's key 80 days
/// ago, tracking begun 200 days ago.
fn seed_state(dir: &Path, now: i64) -> String {
    let text = format!(
        "akgate-usage 1\n# seeded by tests/usage.rs\nsince {}\nkey {} {} 41 127.0.0.1 ecs DescribeRegions\nkey {} {} 5 127.0.0.1 ecs DescribeZones\nkey {} {} 9 127.0.0.5 ecs Describe%20Odd\n",
        iso(now - 200 * DAY),
        ALICE.0,
        iso(now - 100 * DAY),
        LEAKED.0,
        iso(now - 2 * DAY),
        OTHER_ACCOUNT.0,
        iso(now - 80 * DAY),
    );
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("usage"), &text).unwrap();
    text
}

#[tokio::test]
async fn idle_key_is_refused_listed_and_readmitted_by_a_reload() {
    let up = upstream().await;
    let slow = hanging_upstream().await;
    let rules = tempfile::tempdir().unwrap();
    write_rules(rules.path(), up.addr, slow);
    set_max_idle_days(rules.path(), 90);
    let state = tempfile::tempdir().unwrap();
    let t0 = now();
    seed_state(state.path(), t0);
    let gw = Akgate::start(
        rules.path(),
        "127.0.0.1:0",
        &["--state", s(state.path()), "--no-watch"],
    );

    let r = call(&gw, "DescribeRegions", ALICE).await;
    r.assert_error(400, "InvalidAccessKeyId.Inactive");
    assert_eq!(call(&gw, "DescribeRegions", LEAKED).await.status, 200);
    let metrics = admin_get(gw.admin, "/metrics").await;
    let refused = metric(
        &String::from_utf8_lossy(&metrics.body),
        "akgate_keys_idle_refused_total",
        &[],
    );
    assert_eq!(refused, Some(1.0));

    let doc = keys_doc(&gw).await;
    assert_eq!(doc["max_idle_days"], 90);
    assert_eq!(doc["tracking_since"], iso(t0 - 200 * DAY));
    let alice = row(&doc, ALICE.0);
    assert_eq!(
        (alice["idle"].as_bool(), alice["idle_days"].as_i64()),
        (Some(true), Some(100))
    );
    assert_eq!(
        alice["requests"], 41,
        "the refusal is not counted: {alice:#}"
    );
    let other = row(&doc, OTHER_ACCOUNT.0);
    assert_eq!(
        (other["idle"].as_bool(), other["idle_soon"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(other["last_action"], "Describe Odd");
    let leaked = row(&doc, LEAKED.0);
    assert_eq!(
        (leaked["requests"].as_u64(), leaked["idle_soon"].as_bool()),
        (Some(6), Some(false))
    );
    // Never used since tracking began 200 days ago: idle too. A disabled key is refused as
    // disabled, not as idle.
    assert_eq!(row(&doc, BOB_LIMITED.0)["idle"], true);
    let disabled = row(&doc, DISABLED.0);
    assert_eq!(
        (disabled["idle_days"].as_i64(), disabled["idle"].as_bool()),
        (Some(200), Some(false))
    );

    // `akgate keys` reads the directory the running gateway holds, with no secret at hand.
    let o = keys_cmd(&["--rules", s(rules.path()), "--state", s(state.path())]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_no_secret("akgate keys", &out);
    let line_of = |id: &str| {
        out.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no {id} in:\n{out}"))
            .to_string()
    };
    assert!(out.lines().next().unwrap().starts_with("ID "), "{out}");
    let alice = line_of(ALICE.0);
    assert!(
        alice.contains(" 100 ") && alice.ends_with("IDLE: refused"),
        "{alice}"
    );
    assert!(
        alice.contains("100/alice") && alice.contains(&iso(t0 - 100 * DAY)),
        "{alice}"
    );
    assert!(
        line_of(OTHER_ACCOUNT.0).ends_with("idle within 14 days"),
        "{out}"
    );
    let leaked = line_of(LEAKED.0);
    assert!(
        leaked.contains(" yes ") && !leaked.contains("idle"),
        "{leaked}"
    );
    assert!(out.contains("max_idle_days = 90"), "{out}");
    let o = keys_cmd(&[
        "--rules",
        s(rules.path()),
        "--state",
        s(state.path()),
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(row(&json, ALICE.0)["idle"], true);

    // Idle disabling turned off: the same key passes again and its use is recorded.
    set_max_idle_days(rules.path(), 0);
    reload(&gw).await;
    assert_eq!(call(&gw, "DescribeRegions", ALICE).await.status, 200);
    let alice = row(&keys_doc(&gw).await, ALICE.0).clone();
    assert_eq!(
        (alice["requests"].as_u64(), alice["idle"].as_bool()),
        (Some(42), Some(false))
    );
    assert_eq!(alice["idle_days"], 0);
}

#[tokio::test]
async fn usage_survives_a_restart_and_reaches_the_disk_without_one() {
    let up = upstream().await;
    let slow = hanging_upstream().await;
    let rules = tempfile::tempdir().unwrap();
    write_rules(rules.path(), up.addr, slow);
    let parent = tempfile::tempdir().unwrap();
    // Created by the gateway.
    let state = parent.path().join("state");
    let extra = ["--state", s(&state)];

    let mut gw = Akgate::start(rules.path(), "127.0.0.1:0", &extra);
    for _ in 0..3 {
        assert_eq!(call(&gw, "DescribeRegions", ALICE).await.status, 200);
    }
    let first = keys_doc(&gw).await;
    let since = first["tracking_since"].clone();
    assert!(since.is_string());
    gw.stop();
    let file = std::fs::read_to_string(state.join("usage")).unwrap();
    assert!(file.starts_with("akgate-usage 1\n"), "{file}");
    assert!(file.contains(&format!("\nkey {} ", ALICE.0)), "{file}");
    assert_no_secret("the usage file", &file);

    let mut gw = Akgate::start(rules.path(), "127.0.0.1:0", &extra);
    let doc = keys_doc(&gw).await;
    assert_eq!(doc["tracking_since"], since, "tracking does not restart");
    assert_eq!(row(&doc, ALICE.0), row(&first, ALICE.0));

    // A second gateway on the same directory would overwrite the first one's table.
    let second = Command::new(env!("CARGO_BIN_EXE_akgate"))
        .args(["serve", "--rules", s(rules.path()), "--state", s(&state)])
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env("AKGATE_IT_SECRET_ALICE", ALICE.1)
        .output()
        .unwrap();
    capture_output(&second);
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("another akgate holds this state directory"),
        "{err}"
    );

    // Without any shutdown: the use reaches the disk within the flush interval, so a crash
    // loses at most that much.
    assert_eq!(call(&gw, "DescribeZones", ALICE).await.status, 200);
    let on_disk = eventually(Duration::from_secs(10), || async {
        std::fs::read_to_string(state.join("usage"))
            .is_ok_and(|f| f.contains(" 4 127.0.0.1 ecs DescribeZones\n"))
    })
    .await;
    assert!(
        on_disk,
        "{}",
        std::fs::read_to_string(state.join("usage")).unwrap()
    );
    gw.signal("KILL");
    gw.wait_exit(Duration::from_secs(10)).unwrap();
    let gw = Akgate::start(rules.path(), "127.0.0.1:0", &extra);
    let alice = row(&keys_doc(&gw).await, ALICE.0).clone();
    assert_eq!(
        (alice["requests"].as_u64(), alice["last_action"].as_str()),
        (Some(4), Some("DescribeZones"))
    );
}

#[tokio::test]
async fn a_corrupt_usage_file_stops_serve_and_is_left_untouched() {
    let up = upstream().await;
    let slow = hanging_upstream().await;
    let rules = tempfile::tempdir().unwrap();
    write_rules(rules.path(), up.addr, slow);
    let state = tempfile::tempdir().unwrap();
    let t0 = now();
    let good = seed_state(state.path(), t0);
    let corrupt = good.replace(" 41 ", " forty-one ");
    std::fs::write(state.path().join("usage"), &corrupt).unwrap();

    let o = Command::new(env!("CARGO_BIN_EXE_akgate"))
        .args([
            "serve",
            "--rules",
            s(rules.path()),
            "--state",
            s(state.path()),
        ])
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env("AKGATE_IT_SECRET_ALICE", ALICE.1)
        .output()
        .unwrap();
    capture_output(&o);
    assert!(!o.status.success());
    assert!(o.stdout.is_empty(), "it never listened");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("usage:4: `forty-one` is not a request count"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(state.path().join("usage")).unwrap(),
        corrupt
    );

    // `akgate keys` says the same, and without --state it lists what the rules know.
    let o = keys_cmd(&["--rules", s(rules.path()), "--state", s(state.path())]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("usage:4:"));
    let o = keys_cmd(&["--rules", s(rules.path())]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("unknown") && out.contains("pass --state DIR"),
        "{out}"
    );
}
