//! Every captured Alibaba SDK request in tests/fixtures/signatures.json (a copy of
//! shared/vectors/signatures.json) — V3 (HMAC-SHA256, HMAC-SM3, RSA), RPC v1 and ROA v1 — goes
//! through the real decision with a clock set to the request's own time: each must pass with the
//! SDK's action, and a one-byte change to any part its scheme signs must be refused.

mod common;

use akgate::error::Rejection;
use akgate::rules::{LoadOptions, Snapshot, load_dir};
use akgate::time::parse_iso8601_utc;
use common::vectors::{Vector, decide_on, flip, header, run};

/// A rule set holding the vector's key, with a catch-all route. The RSA vector's key is
/// registered by its public key; a vector carrying an STS token gets a temporary key with it.
/// The scheme families this file checks; SigV4 vectors are covered in tests/sigv4.rs.
fn is_alibaba(v: &Vector) -> bool {
    v.scheme.starts_with("ACS3-")
        || v.scheme.starts_with("ACS-RPC-")
        || v.scheme.starts_with("ACS-ROA-")
}

/// A query parameter, decoded.
fn param(v: &Vector, name: &str) -> Option<String> {
    v.query
        .split('&')
        .find_map(|p| p.strip_prefix(&format!("{name}=")))
        .map(|raw| {
            let raw = raw.replace('+', " ");
            let mut out = Vec::new();
            let b = raw.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%'
                    && i + 2 < b.len() + 1
                    && u8::from_str_radix(&raw[i + 1..i + 3], 16).is_ok()
                {
                    out.push(u8::from_str_radix(&raw[i + 1..i + 3], 16).unwrap());
                    i += 3;
                } else {
                    out.push(b[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).unwrap()
        })
}

/// The vector's own signing time: the decision runs with the clock set to it.
fn date_of(v: &Vector) -> i64 {
    if let Some(d) = header(v, "x-acs-date") {
        return parse_iso8601_utc(d).unwrap();
    }
    if let Some(d) = param(v, "Timestamp") {
        return parse_iso8601_utc(&d).unwrap();
    }
    let d = header(v, "date").expect("a date");
    akgate::time::parse_http_date(d).unwrap()
}

fn security_token(v: &Vector) -> Option<String> {
    header(v, "x-acs-security-token")
        .map(String::from)
        .or_else(|| param(v, "SecurityToken"))
}

/// A rule set holding the vector's key, with a catch-all route. The RSA vector's key is
/// registered by its public key; a vector carrying an STS token gets a temporary key with it.
fn snapshot_for(v: &Vector, secret: &str) -> Snapshot {
    let material = match &v.public_key {
        Some(pem) => format!("public_key = '''\n{pem}'''"),
        None => format!("secret = {secret:?}"),
    };
    let temporary = match security_token(v) {
        Some(t) => {
            format!("temporary = true\nexpires = 2099-01-01T00:00:00Z\nsecurity_token = {t:?}\n")
        }
        None => String::new(),
    };
    snapshot_with(&v.key_id, &format!("{material}\n{temporary}"), "allow")
}

fn snapshot_with(key_id: &str, key_lines: &str, unsigned_body: &str) -> Snapshot {
    snapshot_route(key_id, key_lines, unsigned_body, "service = \"ecs\"")
}

fn snapshot_route(
    key_id: &str,
    key_lines: &str,
    unsigned_body: &str,
    route_lines: &str,
) -> Snapshot {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.toml"),
        format!(
            r#"
[[account]]
id = "1"
[[access_key]]
id = "{key_id}"
account = "1"
status = "active"
{key_lines}
[[service]]
name = "ecs"
actions = []
[[route]]
path_prefix = "/"
{route_lines}
upstream = "http://127.0.0.1:9"
[settings]
unsigned_body = "{unsigned_body}"
"#
        ),
    )
    .unwrap();
    load_dir(dir.path(), &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn alibaba_vectors() -> Vec<Vector> {
    let v: Vec<Vector> = common::vectors::all()
        .into_iter()
        .filter(is_alibaba)
        .collect();
    let count = |p: &str| v.iter().filter(|v| v.scheme.starts_with(p)).count();
    assert_eq!(
        (count("ACS3-"), count("ACS-RPC-"), count("ACS-ROA-")),
        (10, 9, 8),
        "the fixture's Alibaba vectors"
    );
    v
}

#[test]
fn every_alibaba_vector_verifies_with_its_action() {
    for v in alibaba_vectors() {
        let snap = snapshot_for(&v, &v.secret);
        let (result, action) = decide_on(&snap, &v, date_of(&v));
        assert_eq!(result, Ok(()), "{}", v.id);
        assert_eq!(action.as_deref(), Some(v.action.as_str()), "{}", v.id);
        // Same request, a clock 15 minutes and one second off: outside the window.
        assert_eq!(
            run(&snap, &v, date_of(&v) + 901),
            Err(Rejection::TimestampExpired),
            "{}",
            v.id
        );
        assert_eq!(
            run(&snap, &v, date_of(&v) - 901),
            Err(Rejection::TimestampExpired),
            "{}",
            v.id
        );
    }
}

#[test]
fn wrong_secret_is_a_signature_mismatch_with_the_string_to_sign() {
    for v in alibaba_vectors()
        .into_iter()
        .filter(|v| v.public_key.is_none())
    {
        let snap = snapshot_for(&v, "not-the-secret");
        match run(&snap, &v, date_of(&v)) {
            Err(Rejection::SignatureDoesNotMatch { string_to_sign }) => {
                if v.scheme.starts_with("ACS3-") {
                    let alg = header(&v, "Authorization")
                        .unwrap()
                        .split(' ')
                        .next()
                        .unwrap();
                    assert!(string_to_sign.starts_with(&format!("{alg}\n")), "{}", v.id);
                    assert_eq!(string_to_sign.len(), alg.len() + 1 + 64, "{}", v.id);
                } else if v.scheme.starts_with("ACS-RPC-") {
                    assert!(
                        string_to_sign.starts_with(&format!("{}&%2F&", v.method)),
                        "{}: {string_to_sign}",
                        v.id
                    );
                } else {
                    assert!(
                        string_to_sign.starts_with(&format!("{}\n", v.method)),
                        "{}: {string_to_sign}",
                        v.id
                    );
                }
            }
            other => panic!("{}: {other:?}", v.id),
        }
    }
}

/// The headers a vector's scheme signs.
fn signed_headers(v: &Vector) -> Vec<String> {
    if v.scheme.starts_with("ACS3-") {
        let auth = header(v, "Authorization").unwrap();
        let list = auth
            .split("SignedHeaders=")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        return list.split(';').map(String::from).collect();
    }
    if v.scheme.starts_with("ACS-ROA-") {
        return v
            .headers
            .iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .filter(|k| {
                k.starts_with("x-acs-")
                    || ["accept", "content-md5", "content-type", "date"].contains(&k.as_str())
            })
            .collect();
    }
    Vec::new()
}

/// Whether a vector's scheme covers its body.
fn body_signed(v: &Vector) -> bool {
    !v.scheme.starts_with("ACS-ROA-") || header(v, "content-md5").is_some()
}

#[test]
fn one_byte_changed_anywhere_signed_is_refused() {
    let mut checked = 0;
    for v in alibaba_vectors() {
        let snap = snapshot_for(&v, &v.secret);
        let now = date_of(&v);
        let mut expect_refused = |t: Vector, what: &str| {
            assert!(
                run(&snap, &t, now).is_err(),
                "{}: changing {what} was not detected",
                v.id
            );
            checked += 1;
        };
        let clone = |f: &dyn Fn(&mut Vector)| {
            let mut t = v.clone();
            f(&mut t);
            t
        };
        expect_refused(
            clone(&|t| {
                t.method = if t.method == "POST" {
                    "PUT".into()
                } else {
                    "POST".into()
                }
            }),
            "method",
        );
        for i in 0..v.path.len() {
            expect_refused(
                clone(&|t| t.path = flip(&t.path, i)),
                &format!("path byte {i}"),
            );
        }
        for i in 0..v.query.len() {
            expect_refused(
                clone(&|t| t.query = flip(&t.query, i)),
                &format!("query byte {i}"),
            );
        }
        expect_refused(
            clone(&|t| t.query = format!("{}&Extra=1", t.query)),
            "an added parameter",
        );
        for name in signed_headers(&v) {
            let idx = v
                .headers
                .iter()
                .position(|(k, _)| k.eq_ignore_ascii_case(&name))
                .unwrap();
            for i in 0..v.headers[idx].1.len() {
                expect_refused(
                    clone(&|t| t.headers[idx].1 = flip(&t.headers[idx].1, i)),
                    &format!("header {name} byte {i}"),
                );
            }
            expect_refused(
                clone(&|t| {
                    t.headers.remove(idx);
                }),
                &format!("removing header {name}"),
            );
            expect_refused(
                clone(&|t| {
                    let h = t.headers[idx].clone();
                    t.headers.push((h.0, "dup".into()));
                }),
                &format!("repeating header {name}"),
            );
        }
        if body_signed(&v) {
            for i in 0..v.body.len() {
                expect_refused(clone(&|t| t.body[i] ^= 0x01), &format!("body byte {i}"));
            }
            if !v.body.is_empty() {
                expect_refused(clone(&|t| t.body.push(b' ')), "body length");
            }
        }
        // The signature itself.
        let auth_idx = v
            .headers
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        if let Some(auth_idx) = auth_idx {
            let value = &v.headers[auth_idx].1;
            let start = value
                .find("Signature=")
                .map(|i| i + 10)
                .unwrap_or_else(|| value.find(':').unwrap() + 1);
            for i in start..value.len() {
                let t = clone(&|t| {
                    let mut b = t.headers[auth_idx].1.clone().into_bytes();
                    // A value change in both hex and base64 (a case change would not be one in hex).
                    b[i] = if b[i] == b'0' { b'1' } else { b'0' };
                    t.headers[auth_idx].1 = String::from_utf8(b).unwrap();
                });
                expect_refused(t, &format!("signature byte {i}"));
            }
        }
        // Headers the scheme does not sign may change without breaking the signature.
        let unsigned = clone(&|t| {
            t.headers
                .push(("x-unsigned-extra".into(), "anything".into()))
        });
        assert_eq!(run(&snap, &unsigned, now), Ok(()), "{}", v.id);
    }
    assert!(
        checked > 6000,
        "only {checked} tampered requests were checked"
    );
}

#[test]
fn an_acs3_body_swapped_with_a_fixed_up_hash_fails_the_signature() {
    use sha2::{Digest, Sha256};
    for v in alibaba_vectors()
        .into_iter()
        .filter(|v| v.scheme == "ACS3-HMAC-SHA256")
    {
        let snap = snapshot_for(&v, &v.secret);
        let mut t = v.clone();
        t.body.extend_from_slice(b"&Extra=1");
        let hash: String = Sha256::digest(&t.body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        for h in t
            .headers
            .iter_mut()
            .filter(|(k, _)| k == "x-acs-content-sha256")
        {
            h.1 = hash.clone();
        }
        assert!(
            matches!(
                run(&snap, &t, date_of(&v)),
                Err(Rejection::SignatureDoesNotMatch { .. })
            ),
            "{}",
            v.id
        );
    }
}

#[test]
fn unsigned_roa_bodies_follow_the_unsigned_body_setting() {
    // tea-openapi's ROA v1 PUT with a form body and no Content-MD5: the body is not signed.
    let v = alibaba_vectors()
        .into_iter()
        .find(|v| v.id == "roa1-tea-put-form")
        .unwrap();
    assert!(!v.body.is_empty() && header(&v, "content-md5").is_none());
    let key = format!("secret = {:?}", v.secret);
    let now = date_of(&v);
    assert_eq!(
        run(&snapshot_with(&v.key_id, &key, "allow"), &v, now),
        Ok(())
    );
    assert_eq!(
        run(&snapshot_with(&v.key_id, &key, "refuse"), &v, now),
        Err(Rejection::UnsignedBody)
    );
    // The default refuses only high-risk actions; UpdateThing is not listed here.
    assert_eq!(
        run(&snapshot_with(&v.key_id, &key, "refuse_high_risk"), &v, now),
        Ok(())
    );
}

#[test]
fn repeated_rpc_parameters_are_refused() {
    let v = alibaba_vectors()
        .into_iter()
        .find(|v| v.id == "rpc1-tea-ecs-deleteinstance")
        .unwrap();
    let snap = snapshot_for(&v, &v.secret);
    let mut t = v.clone();
    t.query = format!("Action=DescribeRegions&{}", t.query);
    assert!(matches!(
        run(&snap, &t, date_of(&v)),
        Err(Rejection::IncompleteSignature(_))
    ));
}

/// The signing time of a SigV4 vector (header or presigned query).
fn amz_date_of(v: &Vector) -> i64 {
    let raw = header(v, "x-amz-date")
        .map(String::from)
        .or_else(|| param(v, "X-Amz-Date"))
        .unwrap();
    akgate::time::parse_amz_date(&raw).unwrap()
}

#[test]
fn a_route_accepts_only_its_own_signature_family() {
    // SigV4 requests, at their own time, sent to an Alibaba route: the action they name (from the
    // AWS request) is not what an Alibaba API would execute.
    for v in common::vectors::all()
        .into_iter()
        .filter(|v| !is_alibaba(v))
    {
        let snap = snapshot_with(&v.key_id, &format!("secret = {:?}", v.secret), "allow");
        let r = run(&snap, &v, amz_date_of(&v));
        assert!(
            matches!(r, Err(Rejection::IncompleteSignature(_))),
            "{}: {r:?}",
            v.id
        );
    }
    // Alibaba requests sent to an AWS route.
    for v in alibaba_vectors() {
        let key = match &v.public_key {
            Some(pem) => format!("public_key = '''\n{pem}'''"),
            None => format!("secret = {:?}", v.secret),
        };
        let snap = snapshot_route(
            &v.key_id,
            &key,
            "allow",
            "service = \"ecs\"\nsignatures = \"aws\"",
        );
        let r = run(&snap, &v, date_of(&v));
        assert!(
            matches!(r, Err(Rejection::IncompleteSignature(_))),
            "{}: {r:?}",
            v.id
        );
    }
}

#[test]
fn an_action_named_twice_differently_is_refused() {
    // A V3 request whose signed x-acs-action says one thing and an Action parameter another: an
    // upstream that prefers the parameter would execute a call the gateway never judged.
    let v = alibaba_vectors()
        .into_iter()
        .find(|v| v.id == "v3-ecs-describeregions")
        .unwrap();
    let snap = snapshot_for(&v, &v.secret);
    let mut t = v.clone();
    t.query = format!("{}&action=DeleteInstance", t.query);
    // The added parameter also breaks the signature; the conflict is found first, before any key
    // material is used, and whatever the signature says.
    assert!(matches!(
        run(&snap, &t, date_of(&v)),
        Err(Rejection::IncompleteSignature(_))
    ));
    // The same name twice, agreeing, is fine (tea-openapi v2 sends both the header and the parameter).
    let rpc = alibaba_vectors()
        .into_iter()
        .find(|v| v.id == "rpc1-tea-ecs-describeregions")
        .unwrap();
    let mut t = rpc.clone();
    t.headers
        .push(("x-acs-action".into(), "DescribeRegions".into()));
    assert_eq!(
        run(&snapshot_for(&rpc, &rpc.secret), &t, date_of(&rpc)),
        Ok(())
    );
    t.headers.last_mut().unwrap().1 = "DeleteInstance".into();
    assert!(matches!(
        run(&snapshot_for(&rpc, &rpc.secret), &t, date_of(&rpc)),
        Err(Rejection::IncompleteSignature(_))
    ));
}
