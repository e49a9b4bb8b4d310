//! Rules edited on disk while akgate serves: changes take effect without a restart, broken edits
//! are refused whole while the last good rules keep serving, and replay state survives reloads.

mod common;

use common::*;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

struct World {
    dir: tempfile::TempDir,
    _up: Upstream,
    gw: Akgate,
    host: String,
}

async fn world(extra: &[&str]) -> World {
    let up = upstream().await;
    let slow = hanging_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    write_rules(dir.path(), up.addr, slow);
    let gw = Akgate::start(dir.path(), "127.0.0.1:0", extra);
    let host = gw.proxy.to_string();
    World {
        dir,
        _up: up,
        gw,
        host,
    }
}

/// Rewrites a file in place: same inode, truncated and written (what `echo >` and many editors do).
fn write_in_place(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
}

/// Writes a temporary file beside the target and renames it over (vim, `sed -i`, most editors).
fn save_by_rename(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.swp",
        path.file_name().unwrap().to_str().unwrap()
    ));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn generation(w: &World) -> u64 {
    admin_get(w.gw.admin, "/rules").await.json()["generation"]
        .as_u64()
        .unwrap()
}

async fn status_of(w: &World, action: &str, key: (&str, &str)) -> u16 {
    send(w.gw.proxy, &signed(&w.host, action, "", key, b"", 0))
        .await
        .status
        .as_u16()
}

#[tokio::test]
async fn edit_in_place_takes_effect_without_restart() {
    let w = world(&[]).await;
    assert_eq!(status_of(&w, "DescribeRegions", DISABLED).await, 400);
    let keys = w.dir.path().join("keys.toml");
    let text = std::fs::read_to_string(&keys).unwrap();
    let enabled = text.replace(
        &format!("id = \"{}\"\nuser = \"bob\"\naccount = \"100\"\nsecret = \"{}\"\nstatus = \"disabled\"", DISABLED.0, DISABLED.1),
        &format!("id = \"{}\"\nuser = \"bob\"\naccount = \"100\"\nsecret = \"{}\"\nstatus = \"active\"", DISABLED.0, DISABLED.1),
    );
    assert_ne!(enabled, text);
    // bob would now have three active keys; disable the leaked one to stay within two.
    let enabled = enabled.replace(
        &format!("secret = \"{}\"\nstatus = \"active\"", LEAKED.1),
        &format!("secret = \"{}\"\nstatus = \"disabled\"", LEAKED.1),
    );
    write_in_place(&keys, &enabled);
    assert!(
        eventually(WAIT, || async {
            status_of(&w, "DescribeRegions", DISABLED).await == 200
        })
        .await,
        "the edit never took effect"
    );
    assert_eq!(generation(&w).await, 2);
    assert_eq!(
        status_of(&w, "DescribeRegions", LEAKED).await,
        400,
        "and the other edit too"
    );
}

#[tokio::test]
async fn save_by_rename_takes_effect_without_restart() {
    let w = world(&[]).await;
    assert_eq!(status_of(&w, "DeleteInstance", ALICE).await, 200);
    let leaked = w.dir.path().join("leaked.toml");
    let mut text = std::fs::read_to_string(&leaked).unwrap();
    text.push_str(&format!(
        "\n[[leaked_key]]\nid = \"{}\"\nreason = \"pasted in a chat\"\n",
        ALICE.0
    ));
    save_by_rename(&leaked, &text);
    assert!(
        eventually(WAIT, || async {
            status_of(&w, "DeleteInstance", ALICE).await == 403
        })
        .await,
        "the flag never took effect"
    );
    assert_eq!(status_of(&w, "DescribeRegions", ALICE).await, 200);
}

#[tokio::test]
async fn a_broken_edit_is_refused_and_the_last_good_rules_keep_serving() {
    let w = world(&[]).await;
    let keys = w.dir.path().join("keys.toml");
    let good = std::fs::read_to_string(&keys).unwrap();

    // A syntax error: the whole set is refused, the error names file and line.
    write_in_place(
        &keys,
        &good.replacen("[[access_key]]", "[[access_key]\n", 1),
    );
    assert!(
        eventually(WAIT, || async {
            admin_get(w.gw.admin, "/rules").await.json()["last_error"].is_string()
        })
        .await,
        "the failed reload was not reported"
    );
    let rules = admin_get(w.gw.admin, "/rules").await.json();
    assert!(
        rules["last_error"]
            .as_str()
            .unwrap()
            .starts_with("keys.toml:"),
        "{rules}"
    );
    assert_eq!(rules["generation"], 1);
    assert_eq!(
        status_of(&w, "DescribeRegions", ALICE).await,
        200,
        "old rules still serve"
    );
    assert_eq!(status_of(&w, "DescribeRegions", DISABLED).await, 400);
    let metrics =
        String::from_utf8_lossy(&admin_get(w.gw.admin, "/metrics").await.body).to_string();
    assert!(
        metric(
            &metrics,
            "akgate_rules_reloads_total",
            &[("result", "error")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );

    // A semantic error (a key for an unknown user) is refused the same way, and the key it would
    // have added does not appear.
    let bad = format!(
        "{good}\n[[access_key]]\nid = \"AKNEWKEY00000001\"\nuser = \"carol\"\naccount = \"100\"\nsecret = \"s\"\nstatus = \"active\"\n"
    );
    write_in_place(&keys, &bad);
    assert!(
        eventually(WAIT, || async {
            admin_get(w.gw.admin, "/rules").await.json()["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("unknown user `carol`"))
        })
        .await
    );
    assert_eq!(
        status_of(&w, "DescribeRegions", ("AKNEWKEY00000001", "s")).await,
        404
    );
    assert_eq!(generation(&w).await, 1);

    // Fixed: the next good version is applied.
    write_in_place(
        &keys,
        &good.replace("name = \"main\"", "name = \"main-renamed\""),
    );
    assert!(eventually(WAIT, || async { generation(&w).await == 2 }).await);
    assert!(admin_get(w.gw.admin, "/rules").await.json()["last_error"].is_null());
}

#[tokio::test]
async fn sighup_reloads_when_watching_is_off() {
    let w = world(&["--no-watch"]).await;
    let leaked = w.dir.path().join("leaked.toml");
    let text = std::fs::read_to_string(&leaked).unwrap();
    save_by_rename(
        &leaked,
        &format!("{text}\n[[leaked_key]]\nid = \"{}\"\n", ALICE.0),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        generation(&w).await,
        1,
        "no watcher: nothing reloads by itself"
    );
    assert_eq!(status_of(&w, "DeleteInstance", ALICE).await, 200);
    let killed = std::process::Command::new("kill")
        .args(["-HUP", &w.gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(
        eventually(WAIT, || async { generation(&w).await == 2 }).await,
        "SIGHUP did not reload"
    );
    assert_eq!(status_of(&w, "DeleteInstance", ALICE).await, 403);
}

#[tokio::test]
async fn a_reload_does_not_forget_used_nonces() {
    let w = world(&[]).await;
    let req = signed(&w.host, "DescribeRegions", "", ALICE, b"", 0);
    assert_eq!(send(w.gw.proxy, &req).await.status, 200);
    let keys = w.dir.path().join("keys.toml");
    let text = std::fs::read_to_string(&keys).unwrap();
    write_in_place(&keys, &text.replace("name = \"main\"", "name = \"main2\""));
    assert!(eventually(WAIT, || async { generation(&w).await == 2 }).await);
    send(w.gw.proxy, &req)
        .await
        .assert_error(400, "SignatureNonceUsed");
}

#[tokio::test]
async fn forced_reload_from_the_admin_listener() {
    let w = world(&["--no-watch"]).await;
    let keys = w.dir.path().join("keys.toml");
    let text = std::fs::read_to_string(&keys).unwrap();
    write_in_place(&keys, &text.replace("name = \"main\"", "name = \"main2\""));
    let req = Req {
        method: "POST".into(),
        path_and_query: "/rules/reload".into(),
        headers: vec![],
        body: vec![],
    };
    let r = send(w.gw.admin, &req).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-akgate-reload"], "applied");
    assert_eq!(r.json()["generation"], 2);
    let r = send(w.gw.admin, &req).await;
    assert_eq!(
        r.headers["x-akgate-reload"], "unchanged",
        "same content: no new generation"
    );
    assert_eq!(r.json()["generation"], 2);
}
