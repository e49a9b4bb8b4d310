//! Interoperability with the official Alibaba Cloud Python SDK: `alibabacloud-ecs20140526` on
//! `alibabacloud-tea-openapi` signs ACS3-HMAC-SHA256 requests the way real users' code does, and
//! akgate must accept, refuse and answer them in a shape that SDK understands.
//!
//! The SDK lives in a virtualenv made by `tests/interop/setup-venv.sh`. CI (`.ci/run`) creates it
//! and exports `AKGATE_PYTHON`; a plain `cargo test` creates it on first use (PyPI must be
//! reachable), unless `AKGATE_SKIP_INTEROP=1` says to skip this test.

mod common;

use common::*;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_v3() {
    let Some(python) = sdk_python() else { return };
    let up = upstream().await;
    let slow = hanging_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    write_rules(dir.path(), up.addr, slow);
    let gw = Akgate::start(dir.path(), "127.0.0.1:0", &[]);

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/alibaba_v3.py");
    let endpoint = gw.proxy.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args([script, "--endpoint", &endpoint])
            .env("AKGATE_IT_OK_ID", ALICE.0)
            .env("AKGATE_IT_OK_SECRET", ALICE.1)
            .env("AKGATE_IT_LEAKED_ID", LEAKED.0)
            .env("AKGATE_IT_LEAKED_SECRET", LEAKED.1)
            .output()
            .expect("python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "SDK checks failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.lines().any(|l| l.trim() == "6 passed, 0 failed"),
        "{stdout}"
    );

    // The allowed calls really reached the upstream, signed by the SDK and forwarded by akgate.
    let seen = up.seen.lock().unwrap().clone();
    let actions: Vec<String> = seen
        .iter()
        .map(|s| s.headers["x-acs-action"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| *a == "DescribeRegions").count(),
        2,
        "{actions:?}"
    );
    assert_eq!(
        actions.iter().filter(|a| *a == "DeleteInstance").count(),
        1,
        "only the unflagged key's delete: {actions:?}"
    );
    let delete = seen
        .iter()
        .find(|s| s.headers["x-acs-action"] == "DeleteInstance")
        .unwrap();
    assert_eq!(delete.headers["x-akgate-key"], ALICE.0);
    assert!(
        delete.headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("AlibabaCloud"),
        "the SDK's own headers pass through"
    );
}
