//! The gateway over real sockets: akgate's binary on 127.0.0.1 in front of a recording upstream,
//! driven with signed requests.

mod common;

use common::*;
use std::net::IpAddr;

struct World {
    _dir: tempfile::TempDir,
    up: Upstream,
    gw: Akgate,
    host: String,
}

async fn world() -> World {
    world_on("127.0.0.1:0").await
}

async fn world_on(listen: &str) -> World {
    let up = upstream().await;
    let slow = hanging_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    write_rules(dir.path(), up.addr, slow);
    let gw = Akgate::start(dir.path(), listen, &[]);
    let host = gw.proxy.to_string();
    World {
        _dir: dir,
        up,
        gw,
        host,
    }
}

/// One signed, bodiless call from 127.0.0.1.
async fn call(w: &World, host: &str, action: &str, query: &str, key: (&str, &str)) -> Resp {
    send(w.gw.proxy, &signed(host, action, query, key, b"", 0)).await
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

#[tokio::test]
async fn allowed_call_is_forwarded_with_identity_headers_and_answered_unchanged() {
    let w = world().await;
    let body = b"InstanceName=web%201&Tag.1.Key=env";
    let req = signed(
        &w.host,
        "DescribeInstances",
        "RegionId=cn-hangzhou&PageSize=10",
        ALICE,
        body,
        0,
    )
    // A client must not be able to pose as another identity to the upstream.
    .header("x-akgate-key", "SPOOFED")
    .header("x-akgate-account", "SPOOFED")
    .header("x-request-id", "client-chosen");
    let resp = send(w.gw.proxy, &req).await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(
        resp.body,
        UPSTREAM_BODY.as_bytes(),
        "the upstream's body comes back unchanged"
    );
    assert_eq!(resp.headers["x-upstream"], "yes");

    let seen = w.up.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path_and_query, "/?RegionId=cn-hangzhou&PageSize=10");
    assert_eq!(
        seen.body,
        &body[..],
        "exactly the verified bytes are forwarded"
    );
    assert!(
        seen.headers.get("authorization").is_none(),
        "Authorization is stripped"
    );
    assert_eq!(seen.headers["x-akgate-account"], "100");
    assert_eq!(seen.headers["x-akgate-user"], "alice");
    assert_eq!(seen.headers["x-akgate-key"], ALICE.0);
    assert_eq!(seen.headers.get_all("x-akgate-key").iter().count(), 1);
    let rid = seen.headers["x-request-id"].to_str().unwrap();
    assert_ne!(rid, "client-chosen");
    assert_eq!(rid.len(), 36, "UUID-shaped request id: {rid}");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(
        seen.headers["host"],
        w.host.as_str(),
        "the signed Host reaches the upstream"
    );
    assert_eq!(seen.headers["x-acs-action"], "DescribeInstances");
}

/// What belongs to the client's connection to us, or what a client claims about itself, stops
/// at the gateway; ordinary headers pass.
#[tokio::test]
async fn hop_by_hop_and_self_claimed_headers_stop_at_the_gateway() {
    let w = world().await;
    let req = signed(&w.host, "DescribeRegions", "", ALICE, b"", 0)
        .header("connection", "x-hop-listed, keep-alive")
        .header("x-hop-listed", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic ZmFrZTpmYWtl")
        .header("x-real-ip", "10.9.9.9")
        .header("forwarded", "for=10.9.9.9")
        .header("x-forwarded-for", "10.9.9.9")
        .header("x-kept", "yes");
    let resp = send(w.gw.proxy, &req).await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let seen = w.up.last();
    for gone in [
        "x-hop-listed",
        "keep-alive",
        "proxy-authorization",
        "x-real-ip",
        "forwarded",
        "authorization",
    ] {
        assert!(
            seen.headers.get(gone).is_none(),
            "{gone} reached the upstream: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.headers["x-kept"], "yes");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(seen.headers.get_all("host").iter().count(), 1);
    assert_eq!(seen.headers["x-akgate-key"], ALICE.0);
}

#[tokio::test]
async fn every_refusal_has_its_code_and_status() {
    let w = world().await;
    let h = w.host.as_str();
    let ok = || signed(h, "DescribeRegions", "", ALICE, b"", 0);

    // Signature mismatch: wrong secret. The message ends with the server's string to sign.
    let r = send(
        w.gw.proxy,
        &signed(h, "DescribeRegions", "", (ALICE.0, "wrong"), b"", 0),
    )
    .await;
    r.assert_error(400, "SignatureDoesNotMatch");
    let msg = r.message();
    let sts = msg.rsplit_once("server string to sign is:").expect(&msg).1;
    assert!(
        sts.starts_with("ACS3-HMAC-SHA256\n") && sts.len() == 81,
        "{msg:?}"
    );
    assert!(!msg.contains(ALICE.1));

    // Missing and malformed signature parts.
    send(w.gw.proxy, &ok().without("authorization"))
        .await
        .assert_error(400, "MissingAccessKeyId");
    send(
        w.gw.proxy,
        &ok().set(
            "authorization",
            "ACS3-HMAC-SHA256 Credential=,SignedHeaders=host,Signature=00",
        ),
    )
    .await
    .assert_error(400, "MissingAccessKeyId");
    send(
        w.gw.proxy,
        &ok().set("authorization", "ACS3-HMAC-SHA256 Credential=AK"),
    )
    .await
    .assert_error(400, "IncompleteSignature");
    send(w.gw.proxy, &ok().set("authorization", "Bearer abc"))
        .await
        .assert_error(400, "IncompleteSignature");
    // SignedHeaders must include the date, nonce, action...: re-sign without x-acs-date listed.
    let mut r = ok();
    let auth = r
        .headers
        .iter_mut()
        .find(|(k, _)| k == "Authorization")
        .unwrap();
    auth.1 = auth.1.replace("x-acs-date;", "");
    send(w.gw.proxy, &r)
        .await
        .assert_error(400, "IncompleteSignature");
    // An x-acs-* header that is present must be signed.
    send(w.gw.proxy, &ok().header("x-acs-resourcegroupid", "rg-1"))
        .await
        .assert_error(400, "IncompleteSignature");

    // Unknown and disabled keys.
    send(
        w.gw.proxy,
        &signed(h, "DescribeRegions", "", ("AKNOSUCHKEY00001", "x"), b"", 0),
    )
    .await
    .assert_error(404, "InvalidAccessKeyId.NotFound");
    send(
        w.gw.proxy,
        &signed(h, "DescribeRegions", "", DISABLED, b"", 0),
    )
    .await
    .assert_error(400, "InvalidAccessKeyId.Inactive");

    // Time window, both directions.
    send(
        w.gw.proxy,
        &signed(h, "DescribeRegions", "", ALICE, b"", -16 * 60),
    )
    .await
    .assert_error(400, "InvalidTimeStamp.Expired");
    send(
        w.gw.proxy,
        &signed(h, "DescribeRegions", "", ALICE, b"", 16 * 60),
    )
    .await
    .assert_error(400, "InvalidTimeStamp.Expired");
    assert_eq!(
        send(
            w.gw.proxy,
            &signed(h, "DescribeRegions", "", ALICE, b"", -14 * 60)
        )
        .await
        .status,
        200
    );
    send(w.gw.proxy, &ok().set("x-acs-date", "yesterday"))
        .await
        .assert_error(400, "InvalidTimeStamp.Format");

    // Body changed after signing.
    let mut r = signed(h, "CreateThing", "", ALICE, b"Name=a", 0);
    r.body = b"Name=b".to_vec();
    send(w.gw.proxy, &r)
        .await
        .assert_error(400, "InvalidContentSha256");

    // Nonce reuse.
    let once = ok();
    assert_eq!(send(w.gw.proxy, &once).await.status, 200);
    send(w.gw.proxy, &once)
        .await
        .assert_error(400, "SignatureNonceUsed");

    // Source IP (alice's user allowlist does not include 127.0.0.2).
    send_from(w.gw.proxy, ip("127.0.0.2"), &ok())
        .await
        .assert_error(403, "Forbidden.SourceIpNotAllowed");

    // Leaked key, high-risk action.
    let r = send(
        w.gw.proxy,
        &signed(h, "DeleteInstance", "InstanceId=i-1", LEAKED, b"", 0),
    )
    .await;
    r.assert_error(403, "Forbidden");
    assert_eq!(r.message(), "There is a risk of leakage of this AccessKey.");

    // Body over max_body_bytes (64 KiB here).
    let big = vec![b'a'; 70_000];
    send(w.gw.proxy, &signed(h, "CreateThing", "", ALICE, &big, 0))
        .await
        .assert_error(413, "RequestBodyTooLarge");

    // No route for this host.
    send(
        w.gw.proxy,
        &signed("nowhere.test", "DescribeRegions", "", ALICE, b"", 0),
    )
    .await
    .assert_error(404, "InvalidRoute");

    // Upstream down, upstream too slow.
    send(
        w.gw.proxy,
        &signed("down.test", "DescribeRegions", "", ALICE, b"", 0),
    )
    .await
    .assert_error(502, "ServiceUnavailable");
    send(
        w.gw.proxy,
        &signed("slow.test", "DescribeRegions", "", ALICE, b"", 0),
    )
    .await
    .assert_error(504, "GatewayTimeout");

    // Only the two allowed calls (the -14 min one and the first use of the nonce) were forwarded;
    // slow.test's upstream is a different server.
    assert_eq!(w.up.count(), 2, "only allowed requests are forwarded");
}

#[tokio::test]
async fn a_forged_request_does_not_burn_the_nonce() {
    let w = world().await;
    let good = signed(&w.host, "DescribeRegions", "", ALICE, b"", 0);
    let nonce = good
        .headers
        .iter()
        .find(|(k, _)| k == "x-acs-signature-nonce")
        .unwrap()
        .1
        .clone();
    let forged = signed(&w.host, "DescribeRegions", "", (ALICE.0, "guess"), b"", 0)
        .set("x-acs-signature-nonce", &nonce);
    send(w.gw.proxy, &forged)
        .await
        .assert_error(400, "SignatureDoesNotMatch");
    assert_eq!(send(w.gw.proxy, &good).await.status, 200);
}

#[tokio::test]
async fn oversized_body_is_refused_from_its_content_length_alone() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = world().await;
    let mut s = tokio::net::TcpStream::connect(w.gw.proxy).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nhost: {}\r\ncontent-length: 50000000\r\n\r\n",
        w.host
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // No body is sent: the answer must come anyway.
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("413 without reading the body")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("RequestBodyTooLarge"), "{text}");
}

#[tokio::test]
async fn allowlists_apply_at_account_user_and_key_level() {
    let w = world().await;
    let h = w.host.as_str();
    let call = |key| signed(h, "DescribeRegions", "", key, b"", 0);
    // User level: alice admits 127.0.0.1 only (and the trusted proxy).
    assert_eq!(
        send_from(w.gw.proxy, ip("127.0.0.1"), &call(ALICE))
            .await
            .status,
        200
    );
    let r = send_from(w.gw.proxy, ip("127.0.0.2"), &call(ALICE)).await;
    r.assert_error(403, "Forbidden.SourceIpNotAllowed");
    assert!(
        !r.message().contains("user"),
        "the refusing level is not revealed: {}",
        r.message()
    );
    // Key level: bob's limited key admits 127.0.0.3 only; bob's user has no list.
    send_from(w.gw.proxy, ip("127.0.0.1"), &call(BOB_LIMITED))
        .await
        .assert_error(403, "Forbidden.SourceIpNotAllowed");
    assert_eq!(
        send_from(w.gw.proxy, ip("127.0.0.3"), &call(BOB_LIMITED))
            .await
            .status,
        200
    );
    // Account level: the partner account admits 127.0.0.5 only.
    send_from(w.gw.proxy, ip("127.0.0.1"), &call(OTHER_ACCOUNT))
        .await
        .assert_error(403, "Forbidden.SourceIpNotAllowed");
    assert_eq!(
        send_from(w.gw.proxy, ip("127.0.0.5"), &call(OTHER_ACCOUNT))
            .await
            .status,
        200
    );
    assert_eq!(w.up.last().headers["x-forwarded-for"], "127.0.0.5");
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_trusted_proxies() {
    let w = world().await;
    let h = w.host.as_str();
    let call = |key| signed(h, "DescribeRegions", "", key, b"", 0);
    // An untrusted peer claiming to be 127.0.0.5 is still 127.0.0.1.
    let spoofed = call(OTHER_ACCOUNT).header("x-forwarded-for", "127.0.0.5");
    send_from(w.gw.proxy, ip("127.0.0.1"), &spoofed)
        .await
        .assert_error(403, "Forbidden.SourceIpNotAllowed");
    // The trusted proxy (127.0.0.9) vouches for 127.0.0.5.
    let vouched = call(OTHER_ACCOUNT).header("x-forwarded-for", "127.0.0.5");
    assert_eq!(
        send_from(w.gw.proxy, ip("127.0.0.9"), &vouched)
            .await
            .status,
        200
    );
    assert_eq!(
        w.up.last().headers["x-forwarded-for"],
        "127.0.0.5, 127.0.0.9"
    );
    // Through the trusted proxy, an IPv4-mapped IPv6 address is the same host.
    let mapped = call(OTHER_ACCOUNT).header("x-forwarded-for", "::ffff:127.0.0.5");
    assert_eq!(
        send_from(w.gw.proxy, ip("127.0.0.9"), &mapped).await.status,
        200
    );
    // The client's own spoofed hop left of the real one is ignored.
    let chained = call(OTHER_ACCOUNT).header("x-forwarded-for", "127.0.0.5, 127.0.0.2");
    send_from(w.gw.proxy, ip("127.0.0.9"), &chained)
        .await
        .assert_error(403, "Forbidden.SourceIpNotAllowed");
    // Garbage from a trusted proxy admits nothing that has an allowlist.
    let garbage = call(OTHER_ACCOUNT).header("x-forwarded-for", "fe80::1%eth0");
    send_from(w.gw.proxy, ip("127.0.0.9"), &garbage)
        .await
        .assert_error(403, "Forbidden.SourceIpNotAllowed");
}

#[tokio::test]
async fn allowlists_over_ipv6() {
    let w = world_on("[::1]:0").await;
    let h = w.host.as_str();
    assert!(h.starts_with("[::1]:"), "{h}");
    let r = send(w.gw.proxy, &signed(h, "DescribeRegions", "", ALICE, b"", 0)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(w.up.last().headers["x-forwarded-for"], "::1");
    // The partner account admits 127.0.0.5 and 2001:db8::/32 — not ::1.
    send(
        w.gw.proxy,
        &signed(h, "DescribeRegions", "", OTHER_ACCOUNT, b"", 0),
    )
    .await
    .assert_error(403, "Forbidden.SourceIpNotAllowed");
}

#[tokio::test]
async fn leaked_key_loses_high_risk_actions_only() {
    let w = world().await;
    let h = w.host.as_str();
    let r = call(&w, h, "DeleteInstance", "InstanceId=i-1&Force=True", LEAKED).await;
    r.assert_error(403, "Forbidden");
    assert_eq!(r.message(), "There is a risk of leakage of this AccessKey.");
    // Action names are compared without regard to case.
    call(&w, h, "runinstances", "", LEAKED)
        .await
        .assert_error(403, "Forbidden");
    // Read calls still pass.
    assert_eq!(
        call(&w, h, "DescribeInstances", "", LEAKED).await.status,
        200
    );
    // RAM is "*": every action is high-risk.
    call(&w, "ram.test", "GetUser", "UserName=a", LEAKED)
        .await
        .assert_error(403, "Forbidden");
    // Unflagged keys may call them.
    assert_eq!(
        call(&w, h, "DeleteInstance", "InstanceId=i-1", ALICE)
            .await
            .status,
        200
    );
    assert_eq!(call(&w, "ram.test", "GetUser", "", ALICE).await.status, 200);
    assert_eq!(w.up.count(), 3);
}

#[tokio::test]
async fn http2_is_served_and_replays_across_protocols_are_refused() {
    let w = world().await;
    let first = signed(&w.host, "DescribeRegions", "", ALICE, b"", 0);
    let second = signed(&w.host, "DescribeRegions", "", ALICE, b"Name=x", 0);
    let resps = send_h2(w.gw.proxy, &[first.clone(), second]).await;
    assert_eq!(
        resps[0].status,
        200,
        "{}",
        String::from_utf8_lossy(&resps[0].body)
    );
    assert_eq!(
        resps[1].status,
        200,
        "{}",
        String::from_utf8_lossy(&resps[1].body)
    );
    assert_eq!(w.up.last().body, &b"Name=x"[..]);
    // The same signed request again over HTTP/1.1 is a replay.
    send(w.gw.proxy, &first)
        .await
        .assert_error(400, "SignatureNonceUsed");
}

#[tokio::test]
async fn admin_listener_reports_metrics_health_and_rules() {
    let w = world().await;
    assert_eq!(
        send(
            w.gw.proxy,
            &signed(&w.host, "DescribeRegions", "", ALICE, b"", 0)
        )
        .await
        .status,
        200
    );
    send(
        w.gw.proxy,
        &signed(&w.host, "DeleteInstance", "", LEAKED, b"", 0),
    )
    .await
    .assert_error(403, "Forbidden");
    assert_eq!(admin_get(w.gw.admin, "/healthz").await.status, 200);
    assert_eq!(admin_get(w.gw.admin, "/readyz").await.status, 200);
    let m = admin_get(w.gw.admin, "/metrics").await;
    let text = String::from_utf8_lossy(&m.body).to_string();
    assert_eq!(
        metric(
            &text,
            "akgate_requests_total",
            &[("decision", "allowed"), ("code", "OK")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "akgate_requests_total",
            &[("decision", "denied"), ("code", "Forbidden")]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("akgate_request_duration_seconds_bucket"),
        "{text}"
    );
    assert_eq!(
        metric(&text, "akgate_rules_generation", &[]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "akgate_rules_reloads_total",
            &[("result", "success")]
        ),
        Some(1.0),
        "{text}"
    );
    for secret_or_id in [ALICE.0, ALICE.1, LEAKED.0, "127.0.0.1"] {
        assert!(
            !text.contains(secret_or_id),
            "metrics must not carry {secret_or_id}"
        );
    }
    let rules = admin_get(w.gw.admin, "/rules").await.json();
    assert_eq!(rules["generation"], 1);
    assert_eq!(rules["content_hash"].as_str().unwrap().len(), 64);
    assert!(rules["last_error"].is_null());
    // The public listener does not serve admin paths.
    let r = send(
        w.gw.proxy,
        &Req {
            method: "GET".into(),
            path_and_query: "/metrics".into(),
            headers: vec![],
            body: vec![],
        },
    )
    .await;
    r.assert_error(400, "MissingAccessKeyId");
}

#[tokio::test]
async fn tls_termination_with_http1_and_http2() {
    use std::sync::Arc;
    let up = upstream().await;
    let slow = hanging_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    write_rules(dir.path(), up.addr, slow);
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    // Outside the rules directory: PEM files there are not rules, but keep the two apart anyway.
    let tls_dir = tempfile::tempdir().unwrap();
    let cert_path = tls_dir.path().join("cert.pem");
    let key_path = tls_dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let gw = Akgate::start(
        dir.path(),
        "127.0.0.1:0",
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );

    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
        let mut cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        cfg.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
        let tls = connector
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        let host = format!("127.0.0.1:{}", gw.proxy.port());
        let req = signed(&host, "DescribeRegions", "", ALICE, b"", 0);
        let mut builder = http::Request::builder()
            .method("POST")
            .uri(format!("https://{host}/"));
        for (k, v) in &req.headers {
            if !(alpn == b"h2" && k == "host") {
                builder = builder.header(k.as_str(), v.as_str());
            }
        }
        let request = builder
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let io = hyper_util::rt::TokioIo::new(tls);
        let resp = if alpn == b"h2" {
            let (mut s, c) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(c);
            s.send_request(request).await.unwrap()
        } else {
            let (mut s, c) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(c);
            s.send_request(request).await.unwrap()
        };
        let r = collect(resp).await;
        assert_eq!(
            r.status,
            200,
            "{}: {}",
            String::from_utf8_lossy(alpn),
            String::from_utf8_lossy(&r.body)
        );
    }
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn temporary_credentials_need_their_token_and_expire() {
    let w = world().await;
    let h = w.host.as_str();
    let with_token = |key, token: &str| {
        signed_with(
            h,
            "POST",
            "/",
            "DescribeRegions",
            "",
            key,
            b"",
            0,
            &[("x-acs-security-token", token)],
        )
    };
    assert_eq!(
        send(w.gw.proxy, &with_token(STS_KEY, STS_TOKEN))
            .await
            .status,
        200
    );
    send(
        w.gw.proxy,
        &signed(h, "DescribeRegions", "", STS_KEY, b"", 0),
    )
    .await
    .assert_error(400, "MissingSecurityToken");
    send(w.gw.proxy, &with_token(STS_KEY, "CAIS+someone-elses-token"))
        .await
        .assert_error(400, "InvalidSecurityToken.MismatchWithAccessKey");
    send(w.gw.proxy, &with_token(STS_EXPIRED, STS_TOKEN))
        .await
        .assert_error(400, "InvalidSecurityToken.Expired");
    // A permanent key does not take a token.
    send(w.gw.proxy, &with_token(ALICE, STS_TOKEN))
        .await
        .assert_error(400, "InvalidSecurityToken.MismatchWithAccessKey");
    // RPC v1 carries the token as a parameter.
    let rpc = rpc_signed(
        h,
        "GET",
        "DescribeRegions",
        &[("SecurityToken", STS_TOKEN)],
        STS_KEY,
        0,
    );
    assert_eq!(send(w.gw.proxy, &rpc).await.status, 200);
}

#[tokio::test]
async fn rpc_v1_is_verified_forwarded_and_protected() {
    let w = world().await;
    let h = w.host.as_str();
    let req = rpc_signed(
        h,
        "GET",
        "DescribeInstances",
        &[("RegionId", "cn-hangzhou"), ("Name", "a b*~")],
        ALICE,
        0,
    );
    let r = send(w.gw.proxy, &req).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seen = w.up.last();
    assert_eq!(
        seen.path_and_query, req.path_and_query,
        "the signed query is forwarded as sent"
    );
    assert_eq!(seen.headers["x-akgate-key"], ALICE.0);
    // Replay.
    send(w.gw.proxy, &req)
        .await
        .assert_error(400, "SignatureNonceUsed");
    // Wrong secret: the message ends with the RPC string to sign.
    let r = send(
        w.gw.proxy,
        &rpc_signed(h, "GET", "DescribeInstances", &[], (ALICE.0, "wrong"), 0),
    )
    .await;
    r.assert_error(400, "SignatureDoesNotMatch");
    assert!(
        r.message()
            .contains("server string to sign is:GET&%2F&AccessKeyId%3D"),
        "{}",
        r.message()
    );
    // Leaked key, high-risk action named by the Action parameter.
    let r = send(
        w.gw.proxy,
        &rpc_signed(
            h,
            "GET",
            "DeleteInstance",
            &[("InstanceId", "i-1")],
            LEAKED,
            0,
        ),
    )
    .await;
    r.assert_error(403, "Forbidden");
    assert_eq!(r.message(), "There is a risk of leakage of this AccessKey.");
    // A second Action smuggled next to the signed one is refused, not guessed at.
    let mut smuggled = rpc_signed(h, "GET", "DescribeRegions", &[], LEAKED, 0);
    smuggled.path_and_query.push_str("&Action=DeleteInstance");
    send(w.gw.proxy, &smuggled)
        .await
        .assert_error(400, "IncompleteSignature");
    // Out of the time window.
    send(
        w.gw.proxy,
        &rpc_signed(h, "GET", "DescribeRegions", &[], ALICE, -3600),
    )
    .await
    .assert_error(400, "InvalidTimeStamp.Expired");
}
