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
    world_with(extra, write_rules).await
}

/// A world whose rules directory is laid out by `layout(dir, upstream, slow_upstream)`.
async fn world_with(
    extra: &[&str],
    layout: impl FnOnce(&Path, std::net::SocketAddr, std::net::SocketAddr),
) -> World {
    let up = upstream().await;
    let slow = hanging_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    layout(dir.path(), up.addr, slow);
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
fn save_by_rename(path: &Path, text: impl AsRef<[u8]>) {
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

/// A reload that finds the key file as it last read it, and unchanged since well before, does not
/// read it again (akgate compares its stamp: size, times, inode). An edit of that file must still
/// be seen, even one that keeps its size and its inode, and even when the reload comes long
/// after the edit (no watcher; an operator's `POST /rules/reload`).
#[tokio::test]
async fn a_settled_key_file_edited_in_place_to_the_same_size_takes_effect() {
    let w = world(&["--no-watch"]).await;
    let reload = || async {
        let r = post_reload(&w).await;
        assert_eq!(r.status, 200);
        r.headers["x-akgate-reload"].clone()
    };
    // A file's stamp stands for its bytes two seconds after its last change. Past that, a reload
    // (of a leaked-key flag) reads keys.toml once more and keeps its stamp.
    let settle = Duration::from_millis(2300);
    tokio::time::sleep(settle).await;
    let leaked = w.dir.path().join("leaked.toml");
    let mut text = std::fs::read_to_string(&leaked).unwrap();
    text.push_str(&format!("\n[[leaked_key]]\nid = \"{}\"\n", ALICE.0));
    save_by_rename(&leaked, &text);
    assert_eq!(reload().await, "applied");
    assert_eq!(status_of(&w, "DeleteInstance", ALICE).await, 403);
    assert_eq!(reload().await, "unchanged");

    let keys = w.dir.path().join("keys.toml");
    let text = std::fs::read_to_string(&keys).unwrap();
    let enabled = keys_with_disabled_enabled(&text);
    assert_eq!(enabled.len(), text.len(), "the edit keeps the file's size");
    write_in_place(&keys, &enabled);
    // Settled again before the reload: only the stamp's times tell the edit.
    tokio::time::sleep(settle).await;
    assert_eq!(reload().await, "applied");
    assert_eq!(status_of(&w, "DescribeRegions", DISABLED).await, 200);
    assert_eq!(
        status_of(&w, "DeleteInstance", ALICE).await,
        403,
        "the flag stays"
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
        format!("{text}\n[[leaked_key]]\nid = \"{}\"\n", ALICE.0),
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
    let r = post_reload(&w).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-akgate-reload"], "applied");
    assert_eq!(r.json()["generation"], 2);
    let r = post_reload(&w).await;
    assert_eq!(
        r.headers["x-akgate-reload"], "unchanged",
        "same content: no new generation"
    );
    assert_eq!(r.json()["generation"], 2);
}

async fn rules(w: &World) -> serde_json::Value {
    admin_get(w.gw.admin, "/rules").await.json()
}

async fn metrics(w: &World) -> String {
    String::from_utf8_lossy(&admin_get(w.gw.admin, "/metrics").await.body).to_string()
}

async fn reloads(w: &World, result: &str) -> f64 {
    metric(
        &metrics(w).await,
        "akgate_rules_reloads_total",
        &[("result", result)],
    )
    .unwrap_or(0.0)
}

/// `keys.toml` with bob's disabled key enabled (and his leaked key disabled, to stay within two
/// active keys): the edit the tests below apply, seen as DISABLED going from 400 to 200.
fn keys_with_disabled_enabled(text: &str) -> String {
    let enabled = text
        .replace(
            &format!("secret = \"{}\"\nstatus = \"disabled\"", DISABLED.1),
            &format!("secret = \"{}\"\nstatus = \"active\"", DISABLED.1),
        )
        .replace(
            &format!("secret = \"{}\"\nstatus = \"active\"", LEAKED.1),
            &format!("secret = \"{}\"\nstatus = \"disabled\"", LEAKED.1),
        );
    assert_ne!(enabled, text);
    enabled
}

/// `file:line:col: message`, with a non-empty file and numeric line and column.
fn has_position(error: &str) -> bool {
    let mut parts = error.splitn(4, ':');
    let (Some(file), Some(line), Some(col), Some(msg)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !file.is_empty()
        && !line.is_empty()
        && line.bytes().all(|b| b.is_ascii_digit())
        && !col.is_empty()
        && col.bytes().all(|b| b.is_ascii_digit())
        && msg.starts_with(' ')
}

/// `YYYY-MM-DDTHH:MM:SSZ` (optionally with fractional seconds).
fn is_iso8601_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && s.ends_with('Z')
}

const CM_FILES: [&str; 6] = [
    "bob.secret",
    "keys.toml",
    "leaked.toml",
    "high_risk.toml",
    "routes.toml",
    "settings.toml",
];

/// What kubelet's AtomicWriter does to a ConfigMap volume: the files go into a new hidden
/// timestamped directory, a `..data_tmp` symlink to it is renamed over `..data`, and the old
/// directory is removed. The visible names are symlinks through `..data` and never change.
fn configmap_update(dir: &Path, from: &str, to: &str, edit: impl FnOnce(&Path)) {
    let new = dir.join(to);
    std::fs::create_dir(&new).unwrap();
    for f in CM_FILES {
        std::fs::copy(dir.join(from).join(f), new.join(f)).unwrap();
    }
    edit(&new);
    std::os::unix::fs::symlink(to, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join(from)).unwrap();
}

#[tokio::test]
async fn a_configmap_data_symlink_swap_takes_effect() {
    let w = world_with(&[], |dir, up, slow| {
        let first = dir.join("..2026_11_23_01");
        std::fs::create_dir(&first).unwrap();
        write_rules(&first, up, slow);
        std::os::unix::fs::symlink("..2026_11_23_01", dir.join("..data")).unwrap();
        for f in CM_FILES {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
    })
    .await;
    assert_eq!(status_of(&w, "DescribeRegions", DISABLED).await, 400);
    assert_eq!(
        status_of(&w, "DescribeRegions", BOB_LIMITED).await,
        403,
        "bob's secret_file is read through the symlinks (and his key is pinned to 127.0.0.3)"
    );
    configmap_update(w.dir.path(), "..2026_11_23_01", "..2026_11_23_02", |new| {
        let keys = new.join("keys.toml");
        let text = std::fs::read_to_string(&keys).unwrap();
        std::fs::write(&keys, keys_with_disabled_enabled(&text)).unwrap();
    });
    assert!(
        eventually(WAIT, || async {
            status_of(&w, "DescribeRegions", DISABLED).await == 200
        })
        .await,
        "the ConfigMap update never took effect: {}",
        rules(&w).await
    );
    assert_eq!(status_of(&w, "DescribeRegions", LEAKED).await, 400);
    assert_eq!(generation(&w).await, 2);
    assert!(rules(&w).await["last_error"].is_null());

    // A second swap, to a set that only differs in the secret file behind a symlink.
    configmap_update(w.dir.path(), "..2026_11_23_02", "..2026_11_23_03", |new| {
        std::fs::write(new.join("bob.secret"), "rotated-bob-secret\n").unwrap();
    });
    assert!(
        eventually(WAIT, || async { generation(&w).await == 3 }).await,
        "a rotated secret behind ..data is a change: {}",
        rules(&w).await
    );
}

#[tokio::test]
async fn a_deleted_file_is_refused_then_its_recreation_applied() {
    let w = world(&[]).await;
    let keys = w.dir.path().join("keys.toml");
    let text = std::fs::read_to_string(&keys).unwrap();
    std::fs::remove_file(&keys).unwrap();
    // Without keys.toml the rule set has no keys (and leaked.toml flags an unknown one): refused.
    assert!(
        eventually(WAIT, || async { rules(&w).await["last_error"].is_string() }).await,
        "the deletion was not reported: {}",
        rules(&w).await
    );
    let r = rules(&w).await;
    assert_eq!(r["generation"], 1, "{r}");
    assert_eq!(
        status_of(&w, "DescribeRegions", ALICE).await,
        200,
        "the last good rules keep serving"
    );
    assert!(reloads(&w, "error").await >= 1.0);

    // Recreated (by a new file, not the old inode), with an edit.
    std::fs::write(&keys, keys_with_disabled_enabled(&text)).unwrap();
    assert!(
        eventually(WAIT, || async {
            status_of(&w, "DescribeRegions", DISABLED).await == 200
        })
        .await,
        "the recreated file was not applied: {}",
        rules(&w).await
    );
    let r = rules(&w).await;
    assert_eq!(r["generation"], 2, "{r}");
    assert!(r["last_error"].is_null(), "a success clears the error: {r}");

    // Deleted and recreated exactly as it was: no new generation, and the error clears.
    let now = std::fs::read_to_string(&keys).unwrap();
    std::fs::remove_file(&keys).unwrap();
    assert!(eventually(WAIT, || async { rules(&w).await["last_error"].is_string() }).await);
    std::fs::write(&keys, now).unwrap();
    assert!(
        eventually(WAIT, || async { rules(&w).await["last_error"].is_null() }).await,
        "{}",
        rules(&w).await
    );
    assert_eq!(generation(&w).await, 2);
}

/// A file caught half-written is refused, and the reload is retried until the file is complete,
/// with no further event. To make "no further event" hold, `keys.toml` is a symlink to a file
/// outside the watched directory (as a deploy tool keeps releases beside the live directory):
/// switching the symlink is an event in the directory, finishing the file it points to is not.
/// (Finishing a file that lives in the directory would itself be an event and so prove nothing
/// about retries.)
#[tokio::test]
async fn a_half_written_file_is_retried_until_complete() {
    let releases = tempfile::tempdir().unwrap();
    let rel = releases.path().to_path_buf();
    let w = world_with(&[], move |dir, up, slow| {
        write_rules(dir, up, slow);
        std::fs::rename(dir.join("keys.toml"), rel.join("keys-1.toml")).unwrap();
        std::os::unix::fs::symlink(rel.join("keys-1.toml"), dir.join("keys.toml")).unwrap();
    })
    .await;
    let text = std::fs::read_to_string(releases.path().join("keys-1.toml")).unwrap();
    let next = keys_with_disabled_enabled(&text);
    // Cut inside a table header so that the first half is invalid TOML.
    let cut = next.rfind("[[access_key]]").unwrap() + 5;
    let (first, rest) = next.split_at(cut);

    let target = releases.path().join("keys-2.toml");
    let mut f = std::fs::File::create(&target).unwrap();
    f.write_all(first.as_bytes()).unwrap();
    f.sync_all().unwrap();
    let link = w.dir.path().join(".keys.toml.tmp");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    std::fs::rename(&link, w.dir.path().join("keys.toml")).unwrap();

    // The half is seen and refused; the last good set keeps serving meanwhile.
    assert!(
        eventually(WAIT, || async { rules(&w).await["last_error"].is_string() }).await,
        "the half-written file was not seen: {}",
        rules(&w).await
    );
    let r = rules(&w).await;
    assert!(
        r["last_error"].as_str().unwrap().starts_with("keys.toml:"),
        "{r}"
    );
    assert_eq!(r["generation"], 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status_of(&w, "DescribeRegions", ALICE).await, 200);
    assert_eq!(status_of(&w, "DescribeRegions", DISABLED).await, 400);

    // The rest arrives, outside the watched directory: only a retry can see it.
    f.write_all(rest.as_bytes()).unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert!(
        eventually(WAIT, || async {
            status_of(&w, "DescribeRegions", DISABLED).await == 200
        })
        .await,
        "the completed file was never applied: {}",
        rules(&w).await
    );
    let r = rules(&w).await;
    assert_eq!(r["generation"], 2, "{r}");
    assert!(r["last_error"].is_null(), "{r}");
    assert!(reloads(&w, "error").await >= 1.0);
}

/// Editors write a burst (temporary file, rename, backup, chmod); many tools write several files.
/// Twenty edits inside the debounce window make one new generation.
#[tokio::test]
async fn a_burst_of_edits_is_one_reload() {
    let w = world(&[]).await;
    let dir = w.dir.path().to_path_buf();
    let keys = dir.join("keys.toml");
    let text = std::fs::read_to_string(&keys).unwrap();
    // A machine stalled mid-burst breaks the premise (all edits inside 200 ms), not the gateway:
    // in that case, let things settle and burst again.
    for attempt in 1..=5 {
        let before_gen = generation(&w).await;
        let before_ok = reloads(&w, "success").await;
        let hash = rules(&w).await["content_hash"].clone();
        let started = std::time::Instant::now();
        for i in 0..20 {
            let edited = text.replace("name = \"main\"", &format!("name = \"main-{attempt}-{i}\""));
            match i % 4 {
                // Editor leftovers, which must not matter.
                0 => std::fs::write(dir.join(format!(".keys.toml.swp{i}")), "junk [[").unwrap(),
                1 => std::fs::write(dir.join("keys.toml~"), "junk [[").unwrap(),
                2 => std::fs::write(dir.join("4913"), "").unwrap(),
                _ => {}
            }
            if i % 2 == 0 {
                write_in_place(&keys, &edited);
            } else {
                save_by_rename(&keys, &edited);
            }
        }
        let _ = std::fs::remove_file(dir.join("4913"));
        let took = started.elapsed();
        if took > Duration::from_millis(120) {
            eprintln!("burst {attempt} took {took:?}; retrying");
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        assert!(
            eventually(WAIT, || async { generation(&w).await > before_gen }).await,
            "the burst was never applied: {}",
            rules(&w).await
        );
        // Nothing more happens: no second generation trickles in.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let r = rules(&w).await;
        assert_eq!(r["generation"].as_u64().unwrap(), before_gen + 1, "{r}");
        assert_ne!(r["content_hash"], hash);
        assert!(r["last_error"].is_null(), "{r}");
        assert_eq!(reloads(&w, "success").await, before_ok + 1.0);
        return;
    }
    panic!("could not write 20 edits within 120 ms in five attempts");
}

#[tokio::test]
async fn rules_status_shows_hash_time_and_positioned_error() {
    let w = world(&[]).await;
    let r = rules(&w).await;
    assert_eq!(r["generation"], 1);
    let hash = r["content_hash"].as_str().unwrap().to_string();
    assert!(
        hash.len() >= 32 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{r}"
    );
    assert!(is_iso8601_utc(r["loaded_at"].as_str().unwrap()), "{r}");
    assert!(r["last_error"].is_null(), "{r}");
    let m = metrics(&w).await;
    assert_eq!(metric(&m, "akgate_rules_generation", &[]), Some(1.0), "{m}");
    assert!(
        metric(
            &m,
            "akgate_rules_last_reload_success_timestamp_seconds",
            &[]
        )
        .is_some_and(|t| (t - now() as f64).abs() < 600.0),
        "{m}"
    );

    let routes = w.dir.path().join("routes.toml");
    let good = std::fs::read_to_string(&routes).unwrap();
    write_in_place(
        &routes,
        &good.replacen("service = \"ram\"", "service = ", 1),
    );
    assert!(
        eventually(WAIT, || async { rules(&w).await["last_error"].is_string() }).await,
        "{}",
        rules(&w).await
    );
    let r = rules(&w).await;
    let err = r["last_error"].as_str().unwrap();
    assert!(err.starts_with("routes.toml:"), "{r}");
    assert!(has_position(err), "not file:line:col: {err}");
    assert!(is_iso8601_utc(r["last_error_at"].as_str().unwrap()), "{r}");
    assert_eq!(
        r["content_hash"],
        hash.as_str(),
        "the refused set is not loaded"
    );
    assert_eq!(r["loaded_at"], rules(&w).await["loaded_at"]);

    write_in_place(&routes, &good.replace("down.test", "down2.test"));
    assert!(eventually(WAIT, || async { generation(&w).await == 2 }).await);
    let r2 = rules(&w).await;
    assert_ne!(r2["content_hash"], hash.as_str());
    assert!(is_iso8601_utc(r2["loaded_at"].as_str().unwrap()), "{r2}");
    assert!(r2["last_error"].is_null(), "{r2}");
    assert_eq!(
        metric(&metrics(&w).await, "akgate_rules_generation", &[]),
        Some(2.0)
    );
}

// ------------------------------------------------------------------------------------------
// Rule safety: whatever happens to the files, a broken set never replaces a good one.

async fn post_reload(w: &World) -> Resp {
    let req = Req {
        method: "POST".into(),
        path_and_query: "/rules/reload".into(),
        headers: vec![],
        body: vec![],
    };
    send(w.gw.admin, &req).await
}

/// Waits until a failed reload whose error contains `error` is reported, then checks that the
/// first rule set still serves, leaked-key flags included, and that the failure was counted.
async fn refused_while_the_old_rules_serve(w: &World, error: &str) {
    assert!(
        eventually(WAIT, || async {
            rules(w).await["last_error"]
                .as_str()
                .is_some_and(|e| e.contains(error))
        })
        .await,
        "no failed reload mentioning {error:?}: {}",
        rules(w).await
    );
    let r = rules(w).await;
    assert_eq!(r["generation"], 1, "{r}");
    assert_eq!(r["keys"], 7, "{r}");
    assert_eq!(status_of(w, "DescribeRegions", ALICE).await, 200);
    assert_eq!(
        status_of(w, "DeleteInstance", LEAKED).await,
        403,
        "the leaked key's flag is still in force"
    );
    assert_eq!(status_of(w, "DescribeRegions", DISABLED).await, 400);
    assert!(reloads(w, "error").await >= 1.0, "{}", metrics(w).await);
}

/// Waits until the error clears (the files are as they were: no new generation).
async fn recovered(w: &World) {
    assert!(
        eventually(WAIT, || async { rules(w).await["last_error"].is_null() }).await,
        "{}",
        rules(w).await
    );
    assert_eq!(generation(w).await, 1);
}

#[tokio::test]
async fn deleting_every_rule_file_is_refused() {
    let w = world(&[]).await;
    let dir = w.dir.path();
    let names = [
        "keys.toml",
        "leaked.toml",
        "high_risk.toml",
        "routes.toml",
        "settings.toml",
    ];
    let saved: Vec<(&str, String)> = names
        .iter()
        .map(|n| (*n, std::fs::read_to_string(dir.join(n)).unwrap()))
        .collect();
    // keys.toml first, so that no state on the way (a set without its leaked flags, say) is a
    // valid rule set that could be applied.
    for n in names {
        std::fs::remove_file(dir.join(n)).unwrap();
    }
    refused_while_the_old_rules_serve(&w, "no rule files").await;
    // Restored, keys.toml last: the same set as before.
    for (n, text) in saved.iter().rev() {
        std::fs::write(dir.join(n), text).unwrap();
    }
    recovered(&w).await;
}

#[tokio::test]
async fn a_file_truncated_mid_table_is_refused() {
    let w = world(&[]).await;
    let keys = w.dir.path().join("keys.toml");
    let good = std::fs::read_to_string(&keys).unwrap();
    // Cut inside the leaked key's table, in the middle of its secret.
    let cut = good.find(LEAKED.1).unwrap() + 5;
    write_in_place(&keys, &good[..cut]);
    refused_while_the_old_rules_serve(&w, "keys.toml:").await;
    write_in_place(&keys, &good);
    recovered(&w).await;
    // Cut between two fields of the table: its required `account` and `status` are missing.
    let cut = good.find(&format!("id = \"{}\"", LEAKED.0)).unwrap();
    let cut = cut + good[cut..].find('\n').unwrap() + 1;
    write_in_place(&keys, &good[..cut]);
    refused_while_the_old_rules_serve(&w, "missing field").await;
    write_in_place(&keys, &good);
    recovered(&w).await;
}

#[tokio::test]
async fn a_binary_rule_file_is_refused() {
    let w = world(&[]).await;
    let leaked = w.dir.path().join("leaked.toml");
    let good = std::fs::read(&leaked).unwrap();
    // Every write by rename: written in place, the file is empty for an instant, and a reload
    // (a retry of the refused one, say) that reads it then applies a valid set without the
    // leaked flags. The debounce covers editors, not a writer descheduled mid-write.
    // Not UTF-8.
    save_by_rename(&leaked, [0xff, 0xfe, 0x00, 0x5b, 0x5b, 0x80, 0x81, 0x0a]);
    refused_while_the_old_rules_serve(&w, "leaked.toml").await;
    save_by_rename(&leaked, &good);
    recovered(&w).await;
    // UTF-8, but NUL bytes and control characters rather than TOML.
    save_by_rename(&leaked, "\u{0}\u{0}\u{1}\u{7f}[[leaked_key]]\u{0}\n");
    refused_while_the_old_rules_serve(&w, "leaked.toml:").await;
    save_by_rename(&leaked, &good);
    recovered(&w).await;
}

/// A rule file replaced by a directory or by a symlink to nothing fails the reload: skipping it
/// would apply the rest of the set without it (here: without the leaked-key flags). Without the
/// watcher, so that the instant between removing the file and creating the directory is never
/// reloaded on its own (a set without `leaked.toml` is valid).
#[tokio::test]
async fn a_rule_file_replaced_by_a_directory_or_a_dangling_link_is_refused() {
    let w = world(&["--no-watch"]).await;
    let leaked = w.dir.path().join("leaked.toml");
    let good = std::fs::read_to_string(&leaked).unwrap();

    std::fs::remove_file(&leaked).unwrap();
    std::fs::create_dir(&leaked).unwrap();
    let r = post_reload(&w).await;
    assert_eq!(r.headers["x-akgate-reload"], "error");
    refused_while_the_old_rules_serve(&w, "`leaked.toml` is not a regular file").await;

    std::fs::remove_dir(&leaked).unwrap();
    let link = w.dir.path().join(".leaked.toml.link");
    std::os::unix::fs::symlink(w.dir.path().join("gone.toml"), &link).unwrap();
    std::fs::rename(&link, &leaked).unwrap();
    let r = post_reload(&w).await;
    assert_eq!(r.headers["x-akgate-reload"], "error");
    refused_while_the_old_rules_serve(&w, "`leaked.toml`").await;

    std::fs::remove_file(&leaked).unwrap();
    std::fs::write(&leaked, good).unwrap();
    let r = post_reload(&w).await;
    assert_eq!(r.headers["x-akgate-reload"], "unchanged");
    recovered(&w).await;
}

/// The same, with the watcher: the link is renamed over the file in one step.
#[tokio::test]
async fn a_rule_file_swapped_for_a_dangling_link_is_refused_by_the_watcher() {
    let w = world(&[]).await;
    let leaked = w.dir.path().join("leaked.toml");
    let good = std::fs::read_to_string(&leaked).unwrap();
    let link = w.dir.path().join(".leaked.toml.link");
    std::os::unix::fs::symlink("nowhere.toml", &link).unwrap();
    std::fs::rename(&link, &leaked).unwrap();
    refused_while_the_old_rules_serve(&w, "`leaked.toml`").await;
    save_by_rename(&leaked, &good);
    recovered(&w).await;
}

#[tokio::test]
async fn an_unreadable_secret_file_is_refused() {
    let w = world(&[]).await;
    let secret = w.dir.path().join("bob.secret");
    let good = std::fs::read_to_string(&secret).unwrap();
    let bob_ok = || async {
        send_from(
            w.gw.proxy,
            Some("127.0.0.3".parse().unwrap()),
            &signed(&w.host, "DescribeRegions", "", BOB_LIMITED, b"", 0),
        )
        .await
        .status
    };
    assert_eq!(bob_ok().await, 200);

    std::fs::remove_file(&secret).unwrap();
    refused_while_the_old_rules_serve(&w, "cannot read secret file `bob.secret`").await;
    assert_eq!(bob_ok().await, 200, "bob's key keeps its secret");

    std::fs::create_dir(&secret).unwrap();
    refused_while_the_old_rules_serve(&w, "cannot read secret file `bob.secret`").await;
    std::fs::remove_dir(&secret).unwrap();
    std::fs::write(&secret, &good).unwrap();
    recovered(&w).await;

    // Permission denied, where that means anything (root reads a mode-000 file).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(&secret).is_err() {
        refused_while_the_old_rules_serve(&w, "cannot read secret file `bob.secret`").await;
    } else {
        eprintln!("mode 000 does not stop this user from reading: permission case not exercised");
    }
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    recovered(&w).await;
    assert_eq!(bob_ok().await, 200);
}

#[tokio::test]
async fn a_missing_secret_env_is_refused() {
    let w = world(&[]).await;
    let keys = w.dir.path().join("keys.toml");
    let good = std::fs::read_to_string(&keys).unwrap();
    write_in_place(
        &keys,
        &good.replace("AKGATE_IT_SECRET_ALICE", "AKGATE_IT_SECRET_NOBODY_SET"),
    );
    refused_while_the_old_rules_serve(
        &w,
        "environment variable `AKGATE_IT_SECRET_NOBODY_SET` is not set",
    )
    .await;
    write_in_place(&keys, &good);
    recovered(&w).await;
}

/// `akgate check DIR` with the gateway's secrets in the environment: (exit code, stdout).
fn check(dir: &Path) -> (Option<i32>, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_akgate"))
        .args(["check", dir.to_str().unwrap()])
        .env("AKGATE_IT_SECRET_ALICE", ALICE.1)
        .env_remove("AKGATE_RULES")
        .output()
        .unwrap();
    capture_output(&o);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

const REFUSE_ALL: &str = "every request will be refused";

/// A rule set that refuses every request is reported in every place an operator looks: the
/// `akgate_rules_active_keys` gauge at 0, a WARN log line, and `akgate check` (which still exits
/// 0: the set is valid). Returns `check`'s output for more specific assertions.
async fn assert_refuse_all_reported(w: &World) -> String {
    assert_eq!(
        metric(&metrics(w).await, "akgate_rules_active_keys", &[]),
        Some(0.0)
    );
    assert!(
        eventually(WAIT, || async {
            w.gw.stderr()
                .lines()
                .any(|l| l.contains("WARN") && l.contains(REFUSE_ALL))
        })
        .await,
        "no warn-level log line: {}",
        w.gw.stderr()
    );
    let (code, out) = check(w.dir.path());
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(REFUSE_ALL), "{out}");
    out
}

/// Disabling every key at once is valid (an incident response may do it) and is applied, but it
/// is said loudly: a warning in the log, in `/rules` and from `akgate check`, and
/// `akgate_rules_active_keys` drops to 0.
#[tokio::test]
async fn a_set_refusing_every_key_is_applied_and_warned_about() {
    let w = world(&[]).await;
    let r = rules(&w).await;
    assert_eq!(r["active_keys"], 6, "{r}");
    assert_eq!(
        metric(&metrics(&w).await, "akgate_rules_active_keys", &[]),
        Some(6.0)
    );
    assert!(!r["warnings"].to_string().contains(REFUSE_ALL), "{r}");
    let keys = w.dir.path().join("keys.toml");
    let good = std::fs::read_to_string(&keys).unwrap();
    write_in_place(
        &keys,
        &good.replace("status = \"active\"", "status = \"disabled\""),
    );
    assert!(
        eventually(WAIT, || async { generation(&w).await == 2 }).await,
        "{}",
        rules(&w).await
    );
    let r = rules(&w).await;
    assert!(r["last_error"].is_null(), "{r}");
    assert_eq!(r["active_keys"], 0, "{r}");
    let warnings = r["warnings"].to_string();
    assert!(warnings.contains(REFUSE_ALL), "{r}");
    assert!(warnings.contains("every key is disabled"), "{r}");
    assert_refuse_all_reported(&w).await;
    send(
        w.gw.proxy,
        &signed(&w.host, "DescribeRegions", "", ALICE, b"", 0),
    )
    .await
    .assert_error(400, "InvalidAccessKeyId.Inactive");

    // Enabled again: the warning and the gauge follow.
    write_in_place(&keys, &good);
    assert!(eventually(WAIT, || async { generation(&w).await == 3 }).await);
    let r = rules(&w).await;
    assert_eq!(r["active_keys"], 6, "{r}");
    assert!(!r["warnings"].to_string().contains(REFUSE_ALL), "{r}");
    assert_eq!(
        metric(&metrics(&w).await, "akgate_rules_active_keys", &[]),
        Some(6.0)
    );
}

/// Keys whose account, user and key allowlists have no address in common can never be used:
/// each is warned about, and a set made only of them is warned about as a whole, from the
/// start of `serve` as on reload.
#[tokio::test]
async fn keys_whose_allowlists_do_not_intersect_are_warned_about() {
    let w = world_with(&[], |dir, up, slow| {
        write_rules(dir, up, slow);
        let keys = std::fs::read_to_string(dir.join("keys.toml")).unwrap();
        // Every active key gets a key-level list outside its account's.
        let narrowed = keys.replace(
            "status = \"active\"",
            "status = \"active\"\napi_source_cidrs = [\"192.0.2.0/24\"]",
        );
        // bob's key already has one: drop its old line so the table has one list.
        let narrowed = narrowed.replace("api_source_cidrs = [\"127.0.0.3/32\"]\n", "");
        std::fs::write(dir.join("keys.toml"), narrowed).unwrap();
    })
    .await;
    let r = rules(&w).await;
    assert_eq!(r["generation"], 1, "{r}");
    assert_eq!(r["active_keys"], 0, "{r}");
    let warnings: Vec<String> = r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(
        warnings.iter().any(|x| x.contains(REFUSE_ALL)),
        "{warnings:?}"
    );
    for key in [ALICE.0, BOB_LIMITED.0, LEAKED.0, OTHER_ACCOUNT.0] {
        assert!(
            warnings.iter().any(|x| x.starts_with("keys.toml:")
                && x.contains(key)
                && x.contains("no address in common")),
            "{key}: {warnings:?}"
        );
    }
    let out = assert_refuse_all_reported(&w).await;
    assert!(out.contains("no address in common"), "{out}");
}

/// A rule file rewritten in place is empty for an instant. A reload reading it then (a retry, a
/// `SIGHUP`, `POST /rules/reload`) must not apply the set without that file's rules: with
/// `leaked.toml`, the leaked key would get its high-risk actions back. A file that was not empty
/// in the served set and is now zero bytes long is refused as being written; to empty one on
/// purpose, leave a comment in it or delete it.
#[tokio::test]
async fn a_rule_file_caught_empty_is_refused_until_written() {
    let w = world(&["--no-watch"]).await;
    let leaked = w.dir.path().join("leaked.toml");
    let good = std::fs::read_to_string(&leaked).unwrap();
    assert_eq!(status_of(&w, "DeleteInstance", LEAKED).await, 403);
    for round in 0..3 {
        write_in_place(&leaked, "");
        let r = post_reload(&w).await;
        assert_eq!(r.headers["x-akgate-reload"], "error", "round {round}");
        refused_while_the_old_rules_serve(&w, "leaked.toml:0:0: empty").await;
        // Refused again on the next trigger, for as long as the file stays empty.
        assert_eq!(post_reload(&w).await.headers["x-akgate-reload"], "error");
        assert_eq!(status_of(&w, "DeleteInstance", LEAKED).await, 403);
        // Written back: the same set, no new generation, the error clears.
        write_in_place(&leaked, &good);
        assert_eq!(
            post_reload(&w).await.headers["x-akgate-reload"],
            "unchanged"
        );
        recovered(&w).await;
    }

    // Emptied on purpose, with a comment: applied, and the flag is gone.
    write_in_place(&leaked, "# no leaked keys for now\n");
    assert_eq!(post_reload(&w).await.headers["x-akgate-reload"], "applied");
    assert_eq!(status_of(&w, "DeleteInstance", LEAKED).await, 200);
    // Zero bytes after the comment: still taken as a write under way.
    write_in_place(&leaked, "");
    assert_eq!(post_reload(&w).await.headers["x-akgate-reload"], "error");
    // Deleted: applied (a set without leaked.toml is valid).
    std::fs::remove_file(&leaked).unwrap();
    assert_eq!(post_reload(&w).await.headers["x-akgate-reload"], "applied");
    // Created empty (a new file: nothing of it is being served): accepted.
    std::fs::write(&leaked, "").unwrap();
    assert_eq!(post_reload(&w).await.headers["x-akgate-reload"], "applied");
    // And filled: the flag is back.
    write_in_place(&leaked, &good);
    assert_eq!(post_reload(&w).await.headers["x-akgate-reload"], "applied");
    assert_eq!(status_of(&w, "DeleteInstance", LEAKED).await, 403);
}

/// The same with the watcher: the file truncated in place is seen, refused (its retries too),
/// and the leaked key stays refused until the file is whole again.
#[tokio::test]
async fn a_rule_file_truncated_in_place_keeps_the_leaked_flags_with_the_watcher() {
    let w = world(&[]).await;
    let leaked = w.dir.path().join("leaked.toml");
    let good = std::fs::read_to_string(&leaked).unwrap();
    write_in_place(&leaked, "");
    refused_while_the_old_rules_serve(&w, "leaked.toml:0:0: empty").await;
    write_in_place(&leaked, &good);
    recovered(&w).await;
    assert_eq!(status_of(&w, "DeleteInstance", LEAKED).await, 403);
}
