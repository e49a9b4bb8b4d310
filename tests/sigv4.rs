//! AWS Signature Version 4: every botocore-captured SigV4 request in
//! tests/fixtures/signatures.json goes through the real decision with the clock at its own
//! `X-Amz-Date`; one-byte changes to anything signed are refused; presigned windows, unsigned
//! payloads and temporary keys behave as documented; and, over a socket, the real binary forwards
//! a SigV4-signed request and answers a bad one in the AWS protocol's error shape.

mod common;

use akgate::auth::{self, Credential, RequestView, Scheme};
use akgate::error::Rejection;
use akgate::proxy::aws::code_and_status;
use akgate::proxy::response::ErrorShape;
use akgate::rules::{LoadOptions, Snapshot, load_dir};
use akgate::time::parse_amz_date;
use common::vectors::{Vector, decide_on, flip, header, header_map, run};
use common::{Akgate, Req, send, upstream};
use hmac::{Hmac, KeyInit, Mac};
use http::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn vectors() -> Vec<Vector> {
    let v: Vec<Vector> = common::vectors::all()
        .into_iter()
        .filter(|v| v.scheme == "AWS4-HMAC-SHA256")
        .collect();
    assert_eq!(v.len(), 7, "the fixture's SigV4 vectors");
    v
}

/// The action the gateway reports. The fixture records the JSON protocol's whole
/// `X-Amz-Target` (`DynamoDB_20120810.ListTables`); akgate names the operation only (the part
/// after the last `.`), which is what high-risk lists name.
fn expected_action(v: &Vector) -> &str {
    v.action.rsplit('.').next().unwrap()
}

fn is_presigned(v: &Vector) -> bool {
    v.query.contains("X-Amz-Signature=")
}

/// The vector's signing time: `X-Amz-Date` from the header, or from the presigned query.
fn date_of(v: &Vector) -> i64 {
    let d = header(v, "x-amz-date")
        .map(String::from)
        .unwrap_or_else(|| {
            v.query
                .split('&')
                .find_map(|p| p.strip_prefix("X-Amz-Date="))
                .unwrap()
                .to_string()
        });
    parse_amz_date(&d).unwrap()
}

struct Rules<'a> {
    secret: &'a str,
    /// High-risk actions of the route's service.
    high_risk: &'a [&'a str],
    unsigned_body: &'a str,
    leaked: bool,
    /// Declare the key temporary with this token.
    token: Option<&'a str>,
}

impl Rules<'_> {
    fn for_vector(v: &Vector) -> Rules<'_> {
        Rules {
            secret: &v.secret,
            high_risk: &[],
            unsigned_body: "refuse_high_risk",
            leaked: false,
            token: header(v, "x-amz-security-token"),
        }
    }
}

/// A rule set with the vector's key and a catch-all route to a service named like the
/// vector's `aws_service`.
fn snapshot(v: &Vector, r: &Rules<'_>) -> Snapshot {
    let temporary = match r.token {
        Some(t) => {
            format!("temporary = true\nexpires = 2099-01-01T00:00:00Z\nsecurity_token = {t:?}\n")
        }
        None => String::new(),
    };
    let leaked = if r.leaked {
        format!("[[leaked_key]]\nid = \"{}\"\n", v.key_id)
    } else {
        String::new()
    };
    let actions: Vec<String> = r.high_risk.iter().map(|a| format!("{a:?}")).collect();
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
secret = {secret:?}
{temporary}
{leaked}
[[service]]
name = "{service}"
actions = [{actions}]
[[route]]
path_prefix = "/"
service = "{service}"
signatures = "aws"
upstream = "http://127.0.0.1:9"
[settings]
unsigned_body = "{unsigned_body}"
"#,
            key_id = v.key_id,
            secret = r.secret,
            service = v.service,
            actions = actions.join(", "),
            unsigned_body = r.unsigned_body,
        ),
    )
    .unwrap();
    load_dir(dir.path(), &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_sigv4_vector_verifies_with_its_action() {
    for v in vectors() {
        let snap = snapshot(&v, &Rules::for_vector(&v));
        let (result, action) = decide_on(&snap, &v, date_of(&v));
        assert_eq!(result, Ok(()), "{}", v.id);
        assert_eq!(action.as_deref(), Some(expected_action(&v)), "{}", v.id);
    }
}

#[test]
fn canonical_request_and_string_to_sign_match_the_reference() {
    for v in vectors() {
        let (headers, host) = header_map(&v.headers);
        let view = RequestView {
            method: &v.method,
            path: &v.path,
            query: &v.query,
            host: host.as_deref(),
            headers: &headers,
            body: &v.body,
        };
        let parsed = auth::parse(&view).unwrap_or_else(|e| panic!("{}: {e:?}", v.id));
        let want_scheme = if is_presigned(&v) {
            Scheme::AwsSigV4Presigned
        } else {
            Scheme::AwsSigV4
        };
        assert_eq!(parsed.scheme, want_scheme, "{}", v.id);
        assert_eq!(parsed.key_id, v.key_id, "{}", v.id);
        assert_eq!(parsed.nonce, None, "{}", v.id);
        assert_eq!(
            parsed.security_token.as_deref(),
            header(&v, "x-amz-security-token"),
            "{}",
            v.id
        );
        let Credential::SigV4(cred) = &parsed.credential else {
            panic!("{}: not a SigV4 credential", v.id)
        };
        assert_eq!(cred.service(), v.service, "{}", v.id);

        // The right secret: the canonical request is the reference's, byte for byte.
        let right = snapshot(&v, &Rules::for_vector(&v));
        let key = right.key(&v.key_id).unwrap();
        let mut transcript = Vec::new();
        parsed
            .verify(&view, key, Some(&mut transcript))
            .unwrap_or_else(|e| panic!("{}: {e:?}", v.id));
        assert_eq!(
            String::from_utf8(transcript).unwrap(),
            v.canonical_request,
            "{}",
            v.id
        );
        // Through the signing-key cache too, twice (miss, then hit).
        for _ in 0..2 {
            akgate::auth::sigv4::verify_cached(cred, &view, &key.material, &key.sigv4_keys, None)
                .unwrap_or_else(|e| panic!("{}: {e:?}", v.id));
        }
        assert!(!key.sigv4_keys.is_empty());

        // A wrong secret: SignatureDoesNotMatch carrying the reference's string to sign.
        let wrong = snapshot(
            &v,
            &Rules {
                secret: "not-the-secret",
                ..Rules::for_vector(&v)
            },
        );
        match run(&wrong, &v, date_of(&v)) {
            Err(Rejection::SignatureDoesNotMatch { string_to_sign }) => {
                assert_eq!(string_to_sign, v.string_to_sign, "{}", v.id);
                assert!(!string_to_sign.contains(&v.secret));
            }
            other => panic!("{}: {other:?}", v.id),
        }
    }
}

#[test]
fn header_signed_vectors_are_refused_outside_the_clock_skew() {
    for v in vectors().into_iter().filter(|v| !is_presigned(v)) {
        let snap = snapshot(&v, &Rules::for_vector(&v));
        let t = date_of(&v);
        assert_eq!(run(&snap, &v, t + 900), Ok(()), "{}", v.id);
        assert_eq!(run(&snap, &v, t - 900), Ok(()), "{}", v.id);
        assert_eq!(
            run(&snap, &v, t + 901),
            Err(Rejection::TimestampExpired),
            "{}",
            v.id
        );
        assert_eq!(
            run(&snap, &v, t - 901),
            Err(Rejection::TimestampExpired),
            "{}",
            v.id
        );
    }
}

#[test]
fn presigned_url_is_accepted_inside_its_window_only() {
    let v = vectors()
        .into_iter()
        .find(|v| v.id == "sigv4-s3-presigned-get")
        .unwrap();
    let snap = snapshot(&v, &Rules::for_vector(&v));
    let signed_at = date_of(&v);
    let expires = 600; // X-Amz-Expires=600
    assert!(v.query.contains("X-Amz-Expires=600"));
    for now in [
        signed_at,
        signed_at + expires,
        signed_at - 900,
        signed_at + 1,
    ] {
        assert_eq!(run(&snap, &v, now), Ok(()), "at {}", now - signed_at);
    }
    for now in [signed_at + expires + 1, signed_at - 901, signed_at + 86_400] {
        assert_eq!(
            run(&snap, &v, now),
            Err(Rejection::TimestampExpired),
            "at {}",
            now - signed_at
        );
    }
    // The expiry is signed: a longer X-Amz-Expires breaks the signature.
    let mut longer = v.clone();
    longer.query = longer
        .query
        .replace("X-Amz-Expires=600", "X-Amz-Expires=3600");
    assert!(matches!(
        run(&snap, &longer, signed_at + 1000),
        Err(Rejection::SignatureDoesNotMatch { .. })
    ));
    // Out-of-range expiries are malformed, whatever the signature.
    for bad in ["0", "604801", "-1", "abc", ""] {
        let mut t = v.clone();
        t.query = t
            .query
            .replace("X-Amz-Expires=600", &format!("X-Amz-Expires={bad}"));
        assert!(
            matches!(
                run(&snap, &t, signed_at),
                Err(Rejection::IncompleteSignature(_))
            ),
            "X-Amz-Expires={bad}"
        );
    }
    // Repeated authentication parameters are refused.
    let mut repeated = v.clone();
    repeated.query = format!("{}&X-Amz-Date=20261122T144841Z", repeated.query);
    assert!(matches!(
        run(&snap, &repeated, signed_at),
        Err(Rejection::IncompleteSignature(_))
    ));
}

fn signed_header_names(v: &Vector) -> Vec<String> {
    if is_presigned(v) {
        let list = v
            .query
            .split('&')
            .find_map(|p| p.strip_prefix("X-Amz-SignedHeaders="))
            .unwrap();
        return list.split("%3B").map(String::from).collect();
    }
    let auth = header(v, "authorization").unwrap();
    let list = auth
        .split("SignedHeaders=")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    list.split(';').map(String::from).collect()
}

fn body_is_signed(v: &Vector) -> bool {
    !is_presigned(v) && header(v, "x-amz-content-sha256") != Some("UNSIGNED-PAYLOAD")
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn one_byte_changed_anywhere_signed_is_refused() {
    let mut checked = 0;
    for v in vectors() {
        let snap = snapshot(&v, &Rules::for_vector(&v));
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
        for method in ["GET", "PUT", "POST", "DELETE", "HEAD", "get"] {
            if method != v.method {
                expect_refused(clone(&|t| t.method = method.into()), "the method");
            }
        }
        for i in 0..v.path.len() {
            expect_refused(
                clone(&|t| t.path = flip(&t.path, i)),
                &format!("path byte {i}"),
            );
        }
        expect_refused(clone(&|t| t.path = format!("{}x", t.path)), "path length");
        for i in 0..v.query.len() {
            expect_refused(
                clone(&|t| t.query = flip(&t.query, i)),
                &format!("query byte {i}"),
            );
        }
        expect_refused(
            clone(&|t| {
                t.query = if t.query.is_empty() {
                    "Extra=1".into()
                } else {
                    format!("{}&Extra=1", t.query)
                }
            }),
            "an added parameter",
        );
        for name in signed_header_names(&v) {
            let idx = v
                .headers
                .iter()
                .position(|(k, _)| k.eq_ignore_ascii_case(&name))
                .unwrap_or_else(|| panic!("{}: signed header {name} not sent", v.id));
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
        if body_is_signed(&v) {
            for i in 0..v.body.len() {
                expect_refused(clone(&|t| t.body[i] ^= 0x01), &format!("body byte {i}"));
            }
            expect_refused(clone(&|t| t.body.push(b' ')), "body length");
            // With the declared hash fixed up for the new body, the signature fails instead.
            if header(&v, "x-amz-content-sha256").is_some() {
                let t = clone(&|t| {
                    t.body.extend_from_slice(b"extra");
                    let hash = sha256_hex(&t.body);
                    for h in t
                        .headers
                        .iter_mut()
                        .filter(|(k, _)| k.eq_ignore_ascii_case("x-amz-content-sha256"))
                    {
                        h.1 = hash.clone();
                    }
                });
                assert!(
                    matches!(
                        run(&snap, &t, now),
                        Err(Rejection::SignatureDoesNotMatch { .. })
                    ),
                    "{}",
                    v.id
                );
            }
        }
        // Every digit of the signature.
        let (in_query, holder) = if is_presigned(&v) {
            (true, v.query.clone())
        } else {
            (false, header(&v, "authorization").unwrap().to_string())
        };
        let marker = if in_query {
            "X-Amz-Signature="
        } else {
            "Signature="
        };
        let start = holder.find(marker).unwrap() + marker.len();
        for i in start..start + 64 {
            let mut b = holder.clone().into_bytes();
            b[i] = if b[i] == b'0' { b'1' } else { b'0' };
            let changed = String::from_utf8(b).unwrap();
            let t = clone(&|t| {
                if in_query {
                    t.query = changed.clone();
                } else {
                    for h in t
                        .headers
                        .iter_mut()
                        .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                    {
                        h.1 = changed.clone();
                    }
                }
            });
            expect_refused(t, &format!("signature digit {}", i - start));
        }
    }
    assert!(
        checked > 1500,
        "only {checked} tampered requests were checked"
    );
}

#[test]
fn unsigned_headers_may_change() {
    for v in vectors() {
        let snap = snapshot(&v, &Rules::for_vector(&v));
        let now = date_of(&v);
        let signed = signed_header_names(&v);
        let mut changed = 0;
        for (idx, (name, value)) in v.headers.iter().enumerate() {
            let lower = name.to_ascii_lowercase();
            if signed.contains(&lower) || lower == "authorization" {
                continue;
            }
            for i in 0..value.len() {
                let mut t = v.clone();
                t.headers[idx].1 = flip(value, i);
                assert_eq!(run(&snap, &t, now), Ok(()), "{}: {name} byte {i}", v.id);
                changed += 1;
            }
        }
        let mut t = v.clone();
        t.headers
            .push(("X-Unsigned-Extra".into(), "anything".into()));
        t.headers.push(("User-Agent".into(), "another".into()));
        assert_eq!(run(&snap, &t, now), Ok(()), "{}", v.id);
        assert!(changed > 0, "{}: no unsigned header to change", v.id);
        // But an x-amz-* header the client did not sign is refused.
        let mut t = v.clone();
        t.headers.push(("x-amz-acl".into(), "public-read".into()));
        assert!(
            matches!(run(&snap, &t, now), Err(Rejection::IncompleteSignature(_))),
            "{}",
            v.id
        );
    }
}

#[test]
fn unsigned_payload_is_left_to_the_unsigned_body_setting() {
    let v = vectors()
        .into_iter()
        .find(|v| v.id == "sigv4-s3-unsigned-payload")
        .unwrap();
    assert_eq!(expected_action(&v), "PutObject");
    let now = date_of(&v);
    {
        let (headers, host) = header_map(&v.headers);
        let view = RequestView {
            method: &v.method,
            path: &v.path,
            query: &v.query,
            host: host.as_deref(),
            headers: &headers,
            body: &v.body,
        };
        let parsed = auth::parse(&view).unwrap();
        assert!(!parsed.body_signed);
    }
    let with = |unsigned_body: &str, high_risk: &[&str]| {
        let snap = snapshot(
            &v,
            &Rules {
                unsigned_body,
                high_risk,
                ..Rules::for_vector(&v)
            },
        );
        run(&snap, &v, now)
    };
    assert_eq!(with("refuse", &[]), Err(Rejection::UnsignedBody));
    assert_eq!(
        with("refuse_high_risk", &["PutObject"]),
        Err(Rejection::UnsignedBody)
    );
    assert_eq!(
        with("refuse_high_risk", &["Put*"]),
        Err(Rejection::UnsignedBody)
    );
    assert_eq!(with("refuse_high_risk", &["DeleteObject"]), Ok(()));
    assert_eq!(with("allow", &["PutObject"]), Ok(()));
    // The body is not covered: with it allowed, a different body still passes.
    let snap = snapshot(
        &v,
        &Rules {
            unsigned_body: "allow",
            ..Rules::for_vector(&v)
        },
    );
    let mut other = v.clone();
    other.body = b"something else entirely".to_vec();
    assert_eq!(run(&snap, &other, now), Ok(()));
    // AWS clients see S3's AccessDenied.
    assert_eq!(
        code_and_status(&Rejection::UnsignedBody, ErrorShape::AwsS3Xml),
        ("AccessDenied", StatusCode::FORBIDDEN)
    );
    // The signed vectors are unaffected by "refuse".
    for v in vectors().into_iter().filter(body_is_signed) {
        let snap = snapshot(
            &v,
            &Rules {
                unsigned_body: "refuse",
                ..Rules::for_vector(&v)
            },
        );
        assert_eq!(run(&snap, &v, date_of(&v)), Ok(()), "{}", v.id);
    }
}

#[test]
fn temporary_keys_need_their_session_token() {
    let v = vectors()
        .into_iter()
        .find(|v| v.id == "sigv4-sts-sessiontoken")
        .unwrap();
    let now = date_of(&v);
    // Declared as a permanent key: the request's token does not belong to it.
    let permanent = snapshot(
        &v,
        &Rules {
            token: None,
            ..Rules::for_vector(&v)
        },
    );
    assert_eq!(
        run(&permanent, &v, now),
        Err(Rejection::SecurityTokenMismatch)
    );
    let other_token = snapshot(
        &v,
        &Rules {
            token: Some("another-token"),
            ..Rules::for_vector(&v)
        },
    );
    assert_eq!(
        run(&other_token, &v, now),
        Err(Rejection::SecurityTokenMismatch)
    );
    // A temporary key used without a token.
    let plain = vectors()
        .into_iter()
        .find(|v| v.id == "sigv4-sts-getcalleridentity")
        .unwrap();
    let temporary = snapshot(
        &plain,
        &Rules {
            token: Some("FQoGZXIvYXdzE+session/token=="),
            ..Rules::for_vector(&plain)
        },
    );
    assert_eq!(
        run(&temporary, &plain, now),
        Err(Rejection::SecurityTokenMissing)
    );
}

#[test]
fn leaked_keys_are_refused_high_risk_actions_only() {
    for v in vectors() {
        let now = date_of(&v);
        let action = expected_action(&v);
        let risky = snapshot(
            &v,
            &Rules {
                leaked: true,
                high_risk: &[action],
                // Else the unsigned-payload vector is refused one step earlier, as UnsignedBody.
                unsigned_body: "allow",
                ..Rules::for_vector(&v)
            },
        );
        assert_eq!(
            run(&risky, &v, now),
            Err(Rejection::LeakedKeyHighRisk),
            "{}",
            v.id
        );
        let harmless = snapshot(
            &v,
            &Rules {
                leaked: true,
                high_risk: &["SomethingElse"],
                ..Rules::for_vector(&v)
            },
        );
        assert_eq!(run(&harmless, &v, now), Ok(()), "{}", v.id);
    }
}

#[test]
fn the_operation_cannot_be_named_twice() {
    let v = vectors()
        .into_iter()
        .find(|v| v.id == "sigv4-dynamodb-listtables")
        .unwrap();
    let snap = snapshot(&v, &Rules::for_vector(&v));
    // An Action in the query next to X-Amz-Target: a query-protocol upstream would read it.
    let mut t = v.clone();
    t.query = "Action=DeleteTable".into();
    assert!(matches!(
        run(&snap, &t, date_of(&v)),
        Err(Rejection::IncompleteSignature(_))
    ));
    let sts = vectors()
        .into_iter()
        .find(|v| v.id == "sigv4-sts-getcalleridentity")
        .unwrap();
    let snap = snapshot(&sts, &Rules::for_vector(&sts));
    let mut t = sts.clone();
    t.query = "Action=AssumeRole".into();
    assert!(matches!(
        run(&snap, &t, date_of(&sts)),
        Err(Rejection::IncompleteSignature(_))
    ));
}

// ------------------------------------------------------------------------------------------
// Socket level: the real binary.

const AWS_KEY: (&str, &str) = ("AKIAAKGATETEST000001", "aws-secret-for-tests-only/+abc");

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn amz_date(t: i64) -> String {
    // yyyy-MM-ddTHH:mm:ssZ → yyyyMMddTHHmmssZ
    akgate::time::format_iso8601_utc(t).replace(['-', ':'], "")
}

/// A minimal botocore-style SigV4 signer, independent of the gateway's code: signs every
/// header given, `path` as sent (for the services used here, S3's single encoding and the
/// others' double encoding agree on these plain paths), the query already canonical.
#[allow(clippy::too_many_arguments)]
fn sigv4_signed(
    method: &str,
    host: &str,
    path: &str,
    query: &str,
    service: &str,
    mut headers: Vec<(String, String)>,
    body: &[u8],
    key: (&str, &str),
) -> Req {
    let date = amz_date(common::now());
    let payload = sha256_hex(body);
    headers.push(("host".into(), host.into()));
    headers.push(("x-amz-date".into(), date.clone()));
    if service == "s3" {
        headers.push(("x-amz-content-sha256".into(), payload.clone()));
    }
    let mut sorted: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    sorted.sort();
    let signed: Vec<&str> = sorted.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let canonical_headers: String = sorted.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let canonical = format!("{method}\n{path}\n{query}\n{canonical_headers}\n{signed}\n{payload}");
    let scope = format!("{}/us-east-1/{service}/aws4_request", &date[..8]);
    let sts = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let mut k = format!("AWS4{}", key.1).into_bytes();
    for part in [&date[..8], "us-east-1", service, "aws4_request"] {
        k = hmac(&k, part.as_bytes());
    }
    let signature = hex(&hmac(&k, sts.as_bytes()));
    headers.push((
        "Authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            key.0
        ),
    ));
    Req {
        method: method.into(),
        path_and_query: if query.is_empty() {
            path.into()
        } else {
            format!("{path}?{query}")
        },
        headers,
        body: body.to_vec(),
    }
}

fn write_aws_rules(dir: &std::path::Path, upstream: std::net::SocketAddr) {
    std::fs::write(
        dir.join("rules.toml"),
        format!(
            r#"
[[account]]
id = "300"
api_source_cidrs = ["127.0.0.0/8"]

[[access_key]]
id = "{id}"
account = "300"
secret = "{secret}"
status = "active"

[[service]]
name = "sts"
actions = ["GetFederationToken"]
[[service]]
name = "s3"
actions = ["DeleteBucket"]
[[service]]
name = "dynamodb"
actions = ["DeleteTable"]

[[route]]
host = "sts.test"
service = "sts"
signatures = "aws"
upstream = "http://{upstream}"
[[route]]
host = "s3.test"
service = "s3"
signatures = "aws"
upstream = "http://{upstream}"
[[route]]
host = "dynamodb.test"
service = "dynamodb"
signatures = "aws"
upstream = "http://{upstream}"
"#,
            id = AWS_KEY.0,
            secret = AWS_KEY.1,
        ),
    )
    .unwrap();
}

fn sts_call(key: (&str, &str)) -> Req {
    sigv4_signed(
        "POST",
        "sts.test",
        "/",
        "",
        "sts",
        vec![(
            "Content-Type".into(),
            "application/x-www-form-urlencoded; charset=utf-8".into(),
        )],
        b"Action=GetCallerIdentity&Version=2011-06-15",
        key,
    )
}

fn body_text(r: &common::Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigv4_requests_over_the_wire() {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    write_aws_rules(dir.path(), up.addr);
    let gw = Akgate::start(dir.path(), "127.0.0.1:0", &[]);

    // A query-protocol call is verified and forwarded, without its Authorization.
    let r = send(gw.proxy, &sts_call(AWS_KEY)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", body_text(&r));
    let seen = up.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(
        &seen.body[..],
        b"Action=GetCallerIdentity&Version=2011-06-15"
    );
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(seen.headers["x-akgate-key"], AWS_KEY.0);

    // S3 (path-style) and DynamoDB (JSON) are forwarded too.
    let s3 = sigv4_signed(
        "GET",
        "s3.test",
        "/my-bucket",
        "list-type=2&prefix=a",
        "s3",
        vec![],
        b"",
        AWS_KEY,
    );
    let r = send(gw.proxy, &s3).await;
    assert_eq!(r.status, StatusCode::OK, "{}", body_text(&r));
    assert_eq!(up.last().path_and_query, "/my-bucket?list-type=2&prefix=a");
    let ddb = sigv4_signed(
        "POST",
        "dynamodb.test",
        "/",
        "",
        "dynamodb",
        vec![
            ("X-Amz-Target".into(), "DynamoDB_20120810.ListTables".into()),
            ("Content-Type".into(), "application/x-amz-json-1.0".into()),
        ],
        b"{}",
        AWS_KEY,
    );
    let r = send(gw.proxy, &ddb).await;
    assert_eq!(r.status, StatusCode::OK, "{}", body_text(&r));
    let forwarded = up.count();

    // A wrong secret: each protocol's own error shape and status.
    let wrong = (AWS_KEY.0, "not-the-secret");
    let r = send(gw.proxy, &sts_call(wrong)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.headers["content-type"], "text/xml");
    assert_eq!(r.headers["x-amzn-errortype"], "SignatureDoesNotMatch");
    let text = body_text(&r);
    assert!(
        text.contains(
            "<ErrorResponse><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code>"
        ),
        "{text}"
    );
    assert!(
        text.contains("The String-to-Sign should have been"),
        "{text}"
    );
    assert!(text.contains("/us-east-1/sts/aws4_request"), "{text}");
    assert!(
        !text.contains(AWS_KEY.1) && !text.contains("not-the-secret"),
        "{text}"
    );

    let mut bad_ddb = ddb.clone();
    for h in bad_ddb
        .headers
        .iter_mut()
        .filter(|(k, _)| k == "Authorization")
    {
        let last = if h.1.ends_with('0') { '1' } else { '0' };
        h.1.pop();
        h.1.push(last);
    }
    let r = send(gw.proxy, &bad_ddb).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", body_text(&r));
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/x-amz-json")
    );
    let j: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(j["__type"], "InvalidSignatureException", "{j}");
    assert!(j["message"].is_string());

    let mut bad_s3 = s3.clone();
    bad_s3.path_and_query = "/my-bucket?list-type=2&prefix=b".into();
    let r = send(gw.proxy, &bad_s3).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", body_text(&r));
    assert_eq!(r.headers["content-type"], "application/xml");
    let text = body_text(&r);
    assert!(
        text.contains("<Error><Code>SignatureDoesNotMatch</Code>"),
        "{text}"
    );
    assert!(text.contains("<StringToSign>AWS4-HMAC-SHA256\n"), "{text}");

    // An unknown key: InvalidClientTokenId (query) / InvalidAccessKeyId (S3).
    let r = send(gw.proxy, &sts_call(("AKIAUNKNOWN000000000", "x"))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(body_text(&r).contains("<Code>InvalidClientTokenId</Code>"));
    let unknown_s3 = sigv4_signed(
        "GET",
        "s3.test",
        "/b",
        "",
        "s3",
        vec![],
        b"",
        ("AKIAUNKNOWN000000000", "x"),
    );
    let r = send(gw.proxy, &unknown_s3).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(body_text(&r).contains("<Error><Code>InvalidAccessKeyId</Code>"));

    // Nothing refused reached the upstream.
    assert_eq!(up.count(), forwarded);
}

#[test]
fn shipped_aws_high_risk_list_loads_and_names_operations() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/rules/high_risk.toml"),
        dir.path().join("high_risk.toml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rest.toml"),
        r#"
[[account]]
id = "1"
[[access_key]]
id = "AKIAEXAMPLE"
account = "1"
secret = "s"
status = "active"
[[route]]
path_prefix = "/"
service = "s3"
signatures = "aws"
upstream = "http://127.0.0.1:9"
"#,
    )
    .unwrap();
    let snap = load_dir(dir.path(), &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let risky = |service: &str, action: &str| {
        snap.service(service)
            .unwrap_or_else(|| panic!("no service {service}"))
            .is_high_risk(action)
    };
    for (service, action) in [
        ("iam", "CreateAccessKey"),
        ("iam", "AttachUserPolicy"),
        ("iam", "ListUsers"),
        ("sts", "GetFederationToken"),
        ("ec2", "RunInstances"),
        ("lambda", "UpdateFunctionCode"),
        ("s3", "PutBucketPolicy"),
        ("s3", "DeleteObjects"),
        ("s3", "Unknown"),
        ("organizations", "LeaveOrganization"),
        ("lightsail", "CreateInstances"),
        ("bedrock", "InvokeModel"),
    ] {
        assert!(risky(service, action), "{service}:{action}");
    }
    for (service, action) in [
        ("iam", "ListRoles"),
        ("iam", "GetUser"),
        ("sts", "GetCallerIdentity"),
        ("ec2", "DescribeRegions"),
        ("lambda", "ListFunctions"),
        ("s3", "PutObject"),
    ] {
        assert!(!risky(service, action), "{service}:{action}");
    }
    // The Alibaba entries are untouched.
    assert!(risky("ecs", "DeleteInstance"));
    assert!(risky("ram", "ListUsers"));
}
