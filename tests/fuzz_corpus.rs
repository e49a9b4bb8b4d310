//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and kept crash reproducers
//! (`fuzz/artifacts/<target>/regression-*`) through the very functions the libFuzzer targets call,
//! so that a stable `cargo test` (CI cannot run libFuzzer) fails if any of them panics again or
//! if a property the targets check (sign→verify round trips, the reported string to sign,
//! replays refused, problem positions inside their file) breaks.

#[path = "../fuzz/src/lib.rs"]
mod harness;

use harness::Reached;
use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    // Crash reproducers are kept only when named regression-*; the rest of artifacts/ is scratch.
    let sources = [
        (root.join("corpus").join(target), false),
        (root.join("artifacts").join(target), true),
    ];
    for (dir, regressions_only) in sources {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let keep = if regressions_only {
                name.starts_with("regression-")
            } else {
                !name.starts_with('.')
            };
            if keep && path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Runs every input of `target`, naming the input that panics, and adds up what they reached.
fn replay(target: &str, run: fn(&[u8]) -> Reached) -> (usize, Reached) {
    let files = inputs(target);
    let mut total = Reached::default();
    let mut counts = [0usize; 3];
    for path in &files {
        let data = std::fs::read(path).unwrap();
        let r = std::panic::catch_unwind(|| run(&data))
            .unwrap_or_else(|_| panic!("{target}: input {} panics", path.display()));
        counts[0] += usize::from(r.decoded);
        counts[1] += usize::from(r.parsed);
        counts[2] += usize::from(r.verified);
        total.round_trips += r.round_trips;
    }
    total.decoded = counts[0] > 0;
    total.parsed = counts[1] > 0;
    total.verified = counts[2] > 0;
    eprintln!(
        "{target}: {} inputs, {} decoded, {} parsed, {} verified, {} sign→verify round trips",
        files.len(),
        counts[0],
        counts[1],
        counts[2],
        total.round_trips
    );
    (files.len(), total)
}

#[test]
fn auth_parse_corpus_parses_every_scheme_without_panicking() {
    let (n, r) = replay("auth_parse", harness::run_auth_parse);
    assert!(n > 0, "fuzz/corpus/auth_parse is empty");
    assert!(
        r.parsed,
        "no auth_parse input parses: the corpus lost its seeds"
    );
}

#[test]
fn canonicalize_corpus_verifies_and_round_trips_through_every_signer() {
    let (n, r) = replay("canonicalize", harness::run_canonicalize);
    assert!(n > 0, "fuzz/corpus/canonicalize is empty");
    assert!(r.parsed, "no canonicalize input parses");
    // The SDK vectors among the seeds are signed with keys the harness rule set holds.
    assert!(r.verified, "no canonicalize input verifies");
    assert!(r.round_trips > n, "too few sign→verify round trips ran");
}

#[test]
fn decide_corpus_reaches_passing_decisions() {
    let (n, r) = replay("decide", harness::run_decide);
    assert!(n > 0, "fuzz/corpus/decide is empty");
    assert!(r.verified, "no decide input passes the whole decision");
}

#[test]
fn rules_load_corpus_loads_or_fails_cleanly() {
    let (n, r) = replay("rules_load", harness::run_rules_load);
    assert!(n > 0, "fuzz/corpus/rules_load is empty");
    assert!(r.parsed, "no rules_load input loads");
}

/// The decoder the targets share reads a request as the gateway's HTTP layer would.
#[test]
fn decoder_reads_http_text_like_the_server() {
    let req = harness::decode_request(
        b"POST http://api.example/a%20b?x=1 HTTP/1.1\nHost: API.example\nX-Acs-Action:  Run \n\nbody",
    )
    .unwrap();
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/a%20b");
    assert_eq!(req.query, "x=1");
    assert_eq!(req.host.as_deref(), Some("API.example"));
    assert_eq!(req.headers["x-acs-action"], "Run");
    assert_eq!(req.body, b"body");
    // Two Host headers, or one that contradicts the target, never reach the decision.
    assert!(harness::decode_request(b"GET / HTTP/1.1\nHost: a\nHost: b\n\n").is_none());
    assert!(harness::decode_request(b"GET http://a/ HTTP/1.1\nHost: b\n\n").is_none());
}

mod common;

/// Found while fuzzing the RPC round trip: the gateway reads a body as a form only when the
/// *first* `Content-Type` says so, and the action-consistency check reads form bodies only. With
/// `text/plain` first and a form type second, a leaked key's holder could sign a harmless
/// `x-acs-action` and put a high-risk `Action` in a form body for an upstream that reads the other
/// content type. A signed request with more than one `Content-Type` is refused, never forwarded.
#[tokio::test]
async fn a_second_content_type_cannot_smuggle_a_form_action() {
    use common::*;
    let up = upstream().await;
    let slow = hanging_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    write_rules(dir.path(), up.addr, slow);
    let gw = Akgate::start(dir.path(), "127.0.0.1:0", &[]);
    let host = gw.proxy.to_string();
    let body = b"Action=DeleteInstance&InstanceId=i-1";
    let request = |content_types: &[&str]| {
        let mut headers = vec![
            ("host".to_string(), host.clone()),
            ("x-acs-action".to_string(), "DescribeRegions".to_string()),
            ("x-acs-version".to_string(), "2014-05-26".to_string()),
            (
                "x-acs-date".to_string(),
                akgate::time::format_iso8601_utc(now()),
            ),
            ("x-acs-signature-nonce".to_string(), nonce()),
        ];
        for ct in content_types {
            headers.push(("content-type".to_string(), ct.to_string()));
        }
        akgate::auth::acs3::sign(
            "POST",
            "/",
            "",
            &mut headers,
            body,
            LEAKED.0,
            LEAKED.1.as_bytes(),
        );
        Req {
            method: "POST".into(),
            path_and_query: "/".into(),
            headers,
            body: body.to_vec(),
        }
    };

    // One form content type: the body's Action is read, disagrees, and is refused.
    let r = send(gw.proxy, &request(&["application/x-www-form-urlencoded"])).await;
    r.assert_error(400, "IncompleteSignature");
    // The same body behind a first content type that is not a form.
    for pair in [
        ["text/plain", "application/x-www-form-urlencoded"],
        ["application/x-www-form-urlencoded", "text/plain"],
    ] {
        let r = send(gw.proxy, &request(&pair)).await;
        r.assert_error(400, "IncompleteSignature");
        assert!(
            r.message().contains("content-type"),
            "{pair:?}: {}",
            r.message()
        );
    }
    // A plain text body with one content type still passes: the refusal is about the repeat.
    let r = send(gw.proxy, &request(&["text/plain"])).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(up.count(), 1, "only the unambiguous request is forwarded");
}
