//! Fleet mode against a real `redis-server` (Debian's package; `.ci/run` installs it): each test
//! starts its own on a free 127.0.0.1 port, without persistence. Without `redis-server` these
//! tests fail; `AKGATE_SKIP_REDIS=1` skips them (never under CI).

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use akgate::policy::replay::NonceOutcome;
use akgate::state::fleet::{self, Fleet, FleetConfig};
use akgate::state::usage::UsageTable;
use akgate::state::{Claims, MfaClaim, MfaOutcome, NonceClaim, Use};
use common::eventually;

// ---------------------------------------------------------------------------------------------
// A redis-server of our own.

struct Redis {
    child: Option<Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

fn redis_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("redis-server"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let p = PathBuf::from("/usr/bin/redis-server");
        p.is_file().then_some(p)
    })
}

impl Redis {
    /// A fresh redis-server, or `None` when `AKGATE_SKIP_REDIS=1` and there is none.
    fn start() -> Option<Redis> {
        let Some(bin) = redis_binary() else {
            if std::env::var("AKGATE_SKIP_REDIS").as_deref() == Ok("1") {
                assert!(
                    std::env::var("CI").is_err(),
                    "CI must not skip the fleet tests"
                );
                eprintln!("SKIPPED: AKGATE_SKIP_REDIS=1 and no redis-server — fleet mode untested");
                return None;
            }
            panic!(
                "redis-server not found on PATH or in /usr/bin: install it \
                 (`apt-get install redis-server`, as .ci/run does) or set AKGATE_SKIP_REDIS=1"
            );
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Redis {
            child: None,
            port,
            _dir: tempfile::tempdir().unwrap(),
        };
        r.spawn(&bin);
        Some(r)
    }

    fn spawn(&mut self, bin: &PathBuf) {
        let child = Command::new(bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self._dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        let start = Instant::now();
        while !self.pings() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not answer on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pings(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The same port again, empty (no persistence).
    fn restart(&mut self) {
        self.stop();
        self.spawn(&redis_binary().unwrap());
    }

    /// A raw command through redis-cli-free RESP, for looking at what the fleet stored.
    fn command(&self, args: &[&[u8]]) -> Vec<u8> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut out = Vec::new();
        fleet::resp::encode(&mut out, args);
        s.write_all(&out).unwrap();
        let mut buf = vec![0u8; 64 << 10];
        let n = s.read(&mut buf).unwrap();
        buf.truncate(n);
        buf
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Library-level: two Fleet handles are two instances.

fn instance(redis: &Redis) -> (Arc<Fleet>, Arc<UsageTable>) {
    let usage = Arc::new(UsageTable::new(common::now()));
    let cfg = FleetConfig::new(redis.addr(), Duration::from_secs(2));
    (Fleet::start(cfg, usage.clone()), usage)
}

async fn healthy(f: &Fleet) -> bool {
    eventually(Duration::from_secs(10), || async { f.healthy() }).await
}

fn nonce_claim<'a>(key_id: &'a str, nonce: &'a str) -> Claims<'a> {
    let now = common::now();
    Claims {
        nonce: Some(NonceClaim {
            key_id,
            nonce,
            now,
            expires: now + 900,
        }),
        mfa: None,
    }
}

async fn nonce(f: &Fleet, key_id: &str, nonce: &str) -> NonceOutcome {
    f.claim(&nonce_claim(key_id, nonce))
        .await
        .expect("state store answers")
        .nonce
        .unwrap()
}

#[tokio::test]
async fn a_nonce_claimed_on_one_instance_is_a_replay_on_another() {
    let Some(redis) = Redis::start() else { return };
    let (a, _) = instance(&redis);
    let (b, _) = instance(&redis);
    assert!(healthy(&a).await && healthy(&b).await);
    let n = common::nonce();
    assert_eq!(nonce(&a, "AKALICEKEY000001", &n).await, NonceOutcome::Fresh);
    assert_eq!(
        nonce(&b, "AKALICEKEY000001", &n).await,
        NonceOutcome::Replayed
    );
    assert_eq!(
        nonce(&a, "AKALICEKEY000001", &n).await,
        NonceOutcome::Replayed
    );
    // Per key: another key may use the same nonce.
    assert_eq!(nonce(&b, "AKBOBLIMITED0001", &n).await, NonceOutcome::Fresh);
    // Many claims in flight on one connection get their own answers.
    let claims: Vec<String> = (0..200).map(|i| format!("{n}-{i}")).collect();
    let firsts = join_all(
        claims
            .iter()
            .map(|c| nonce(&a, "AKALICEKEY000001", c))
            .collect(),
    )
    .await;
    assert!(firsts.iter().all(|o| *o == NonceOutcome::Fresh));
    let seconds = join_all(
        claims
            .iter()
            .map(|c| nonce(&b, "AKALICEKEY000001", c))
            .collect(),
    )
    .await;
    assert!(seconds.iter().all(|o| *o == NonceOutcome::Replayed));
    // Stored with an expiry, under the prefix.
    let ttl = redis.command(&[
        b"PTTL",
        format!("akgate:n:16:AKALICEKEY000001:{n}").as_bytes(),
    ]);
    let ttl: i64 = String::from_utf8_lossy(&ttl[1..]).trim().parse().unwrap();
    assert!((1..=900_000).contains(&ttl), "PTTL {ttl}");
}

/// Polls all of `fs` together, so that they are in flight on the shared connection at once.
async fn join_all<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = fs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn hostile_key_ids_and_nonces_cannot_corrupt_the_protocol() {
    let Some(redis) = Redis::start() else { return };
    let (a, _) = instance(&redis);
    let (b, _) = instance(&redis);
    assert!(healthy(&a).await && healthy(&b).await);
    let huge = "n".repeat(1 << 20);
    let mut huge2 = huge.clone();
    huge2.push('!');
    let hostile = [
        ("AK\r\nFLUSHALL\r\n", "x"),
        ("AK1", "a b\r\n*1\r\n$8\r\nFLUSHALL\r\n"),
        ("AK1", "$-1\r\n"),
        ("AK 1", ":"),
        ("AK1", ""),
        ("AK1", huge.as_str()),
        ("AK1", huge2.as_str()),
        (huge.as_str(), "n1"),
    ];
    for (key_id, n) in hostile {
        assert_eq!(
            nonce(&a, key_id, n).await,
            NonceOutcome::Fresh,
            "{key_id:.20?} {n:.20?}"
        );
        assert_eq!(
            nonce(&b, key_id, n).await,
            NonceOutcome::Replayed,
            "{key_id:.20?} {n:.20?}"
        );
    }
    // Nothing was flushed or desynchronised: earlier claims still stand, new ones still work.
    assert_eq!(nonce(&b, "AK1", "$-1\r\n").await, NonceOutcome::Replayed);
    assert_eq!(nonce(&b, "AK1", "fresh").await, NonceOutcome::Fresh);
    // Long parts are stored hashed: no key near the 1 MiB of the nonce.
    let keys = redis.command(&[b"KEYS", b"akgate:n:*"]);
    assert!(keys.len() < 16 << 10, "{} bytes of keys", keys.len());
}

#[tokio::test]
async fn a_one_time_code_is_redeemed_once_in_the_fleet_and_opens_a_shared_window() {
    let Some(redis) = Redis::start() else { return };
    let (a, _) = instance(&redis);
    let (b, _) = instance(&redis);
    assert!(healthy(&a).await && healthy(&b).await);
    let now = common::now();
    let check = |at| Claims {
        nonce: None,
        mfa: Some(MfaClaim::Check {
            key_id: "AKLEAKED00000001",
            now: at,
        }),
    };
    let redeem = Claims {
        nonce: None,
        mfa: Some(MfaClaim::Redeem {
            key_id: "AKLEAKED00000001",
            token: "123456@59000001",
            now,
            token_expires: now + 90,
            trust_until: now + 300,
        }),
    };
    let mfa = |o: Result<akgate::state::Outcome, _>| o.expect("answers").mfa.unwrap();
    assert_eq!(mfa(b.claim(&check(now)).await), MfaOutcome::NotTrusted);
    assert_eq!(mfa(a.claim(&redeem).await), MfaOutcome::Redeemed);
    assert_eq!(mfa(b.claim(&redeem).await), MfaOutcome::Reused);
    assert_eq!(mfa(b.claim(&check(now + 10)).await), MfaOutcome::Trusted);
    assert_eq!(
        mfa(b.claim(&check(now + 300)).await),
        MfaOutcome::NotTrusted
    );
    // Nonce and second factor in one pipeline.
    let n = common::nonce();
    let both = Claims {
        nonce: nonce_claim("AKLEAKED00000001", &n).nonce,
        mfa: check(now).mfa,
    };
    let o = b.claim(&both).await.unwrap();
    assert_eq!(
        (o.nonce, o.mfa),
        (Some(NonceOutcome::Fresh), Some(MfaOutcome::Trusted))
    );
    let o = a.claim(&both).await.unwrap();
    assert_eq!(o.nonce, Some(NonceOutcome::Replayed));
    // After a script flush the redeem still works (by the script's text).
    redis.command(&[b"SCRIPT", b"FLUSH"]);
    let again = Claims {
        nonce: None,
        mfa: Some(MfaClaim::Redeem {
            key_id: "AKLEAKED00000001",
            token: "654321@59000002",
            now,
            token_expires: now + 90,
            trust_until: now + 600,
        }),
    };
    assert_eq!(mfa(b.claim(&again).await), MfaOutcome::Redeemed);
    assert_eq!(mfa(a.claim(&check(now + 500)).await), MfaOutcome::Trusted);
}

fn used(t: &UsageTable, key_id: &str, at: i64, action: &str) {
    t.record(&Use {
        key_id,
        at,
        source: Some("192.0.2.10".parse().unwrap()),
        service: "ecs",
        action,
    });
}

#[tokio::test]
async fn usage_recorded_by_one_instance_is_seen_by_the_other() {
    let Some(redis) = Redis::start() else { return };
    let (a, usage_a) = instance(&redis);
    let (b, usage_b) = instance(&redis);
    assert!(healthy(&a).await && healthy(&b).await);
    let t = common::now();
    used(&usage_a, "AKALICEKEY000001", t - 100, "DescribeRegions");
    used(&usage_a, "AKALICEKEY000001", t - 50, "DescribeInstances");
    used(&usage_b, "AKALICEKEY000001", t - 70, "RunInstances");
    let seen = eventually(Duration::from_secs(10), || async {
        let (Some(ua), Some(ub)) = (
            usage_a.get("AKALICEKEY000001"),
            usage_b.get("AKALICEKEY000001"),
        ) else {
            return false;
        };
        ua.requests == 3 && ub.requests == 3 && ub.last_used == t - 50
    })
    .await;
    assert!(
        seen,
        "A: {:?} B: {:?}",
        usage_a.get("AKALICEKEY000001"),
        usage_b.get("AKALICEKEY000001")
    );
    let ub = usage_b.get("AKALICEKEY000001").unwrap();
    assert_eq!(
        ub.action, "DescribeInstances",
        "the latest use's details win"
    );
    assert_eq!(ub.source, Some("192.0.2.10".parse().unwrap()));
    // A key only A has used reaches B.
    used(&usage_a, "AKBOBLIMITED0001", t, "DescribeRegions");
    assert!(
        eventually(Duration::from_secs(10), || async {
            usage_b.last_used("AKBOBLIMITED0001") == Some(t)
        })
        .await
    );
    // A third instance started later learns everything, including when the fleet began
    // tracking (or a key never used would count as idle from each restart).
    let usage_c = Arc::new(UsageTable::new(common::now() + 1_000));
    let _c = Fleet::start(
        FleetConfig::new(redis.addr(), Duration::from_secs(2)),
        usage_c.clone(),
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            usage_c.get("AKALICEKEY000001").map(|u| u.requests) == Some(3)
                && usage_c.last_used("AKBOBLIMITED0001") == Some(t)
        })
        .await
    );
    assert_eq!(usage_a.since(), usage_b.since());
    assert_eq!(
        usage_c.since(),
        usage_a.since(),
        "the fleet's start of tracking"
    );
}

#[tokio::test]
async fn failures_counted_across_the_fleet_block_the_source_everywhere() {
    let Some(redis) = Redis::start() else { return };
    let (a, _) = instance(&redis);
    let (b, _) = instance(&redis);
    assert!(healthy(&a).await && healthy(&b).await);
    let bad: IpAddr = "198.51.100.9".parse().unwrap();
    let same_64: IpAddr = "2001:db8::1".parse().unwrap();
    let cool = Duration::from_secs(60);
    // Four failures spread over two instances reach a limit of 4.
    a.record_failure(bad, 4, cool);
    b.record_failure(bad, 4, cool);
    a.record_failure(bad, 4, cool);
    b.record_failure(same_64, 4, cool);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!a.is_blocked(bad) && !b.is_blocked(bad), "3 of 4 failures");
    b.record_failure(bad, 4, cool);
    assert!(
        eventually(Duration::from_secs(10), || async {
            a.is_blocked(bad) && b.is_blocked(bad)
        })
        .await
    );
    assert!(!a.is_blocked("198.51.100.10".parse().unwrap()));
    assert!(!a.is_blocked(same_64));
    assert_eq!(a.blocked_sources(), 1);
    // A limit of 0 means the guard is off.
    for _ in 0..5 {
        a.record_failure(same_64, 0, cool);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!b.is_blocked("2001:db8::2".parse().unwrap()));
}

#[tokio::test]
async fn redis_down_is_unavailable_and_recovery_is_automatic() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let (a, _) = instance(&redis);
    assert!(healthy(&a).await);
    let n = common::nonce();
    assert_eq!(nonce(&a, "AK1", &n).await, NonceOutcome::Fresh);
    redis.stop();
    assert!(
        eventually(Duration::from_secs(10), || async { !a.healthy() }).await,
        "still healthy with Redis stopped"
    );
    assert!(a.claim(&nonce_claim("AK1", "during")).await.is_err());
    // Failures while down are dropped, not queued without bound.
    a.record_failure("192.0.2.1".parse().unwrap(), 1, Duration::from_secs(9));
    redis.restart();
    assert!(healthy(&a).await, "did not reconnect");
    // The restarted Redis has no memory (no persistence): the nonce is new to it.
    assert_eq!(nonce(&a, "AK1", &n).await, NonceOutcome::Fresh);
    assert_eq!(nonce(&a, "AK1", &n).await, NonceOutcome::Replayed);
}

#[tokio::test]
async fn start_up_does_not_wait_for_redis() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    redis.stop();
    let (a, _) = instance(&redis);
    assert!(!a.healthy());
    assert!(a.claim(&nonce_claim("AK1", "x")).await.is_err());
    // Nothing to ask: answered without the store.
    assert!(a.claim(&Claims::default()).await.is_ok());
    redis.restart();
    assert!(healthy(&a).await);
    a.shutdown().await;
    assert!(!a.healthy());
}

// ---------------------------------------------------------------------------------------------
// Two real gateways sharing one Redis.

struct Gateways {
    _dir: tempfile::TempDir,
    _up: common::Upstream,
    a: common::Akgate,
    b: common::Akgate,
}

async fn two_gateways(redis: &Redis, a_extra: &[&str], b_extra: &[&str]) -> Gateways {
    two_gateways_with(redis, "", a_extra, b_extra).await
}

/// `settings` is appended to the harness's `[settings]`.
async fn two_gateways_with(
    redis: &Redis,
    settings: &str,
    a_extra: &[&str],
    b_extra: &[&str],
) -> Gateways {
    let up = common::upstream().await;
    let slow = common::hanging_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    common::write_rules(dir.path(), up.addr, slow);
    let path = dir.path().join("settings.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(settings);
    std::fs::write(&path, text).unwrap();
    let url = format!("redis://{}", redis.addr());
    let start = |extra: &[&str]| {
        let mut args = vec!["--state", url.as_str(), "--state-timeout", "2s"];
        args.extend_from_slice(extra);
        common::Akgate::start(dir.path(), "127.0.0.1:0", &args)
    };
    let a = start(a_extra);
    let b = start(b_extra);
    for gw in [&a, &b] {
        assert!(
            eventually(Duration::from_secs(10), || async {
                common::admin_get(gw.admin, "/readyz").await.status == 200
            })
            .await,
            "not ready with Redis up: {}",
            gw.stderr()
        );
    }
    Gateways {
        _dir: dir,
        _up: up,
        a,
        b,
    }
}

fn describe_regions(host: &str) -> common::Req {
    common::signed(host, "DescribeRegions", "", common::ALICE, b"", 0)
}

async fn state_up(gw: &common::Akgate) -> Option<f64> {
    let m = common::admin_get(gw.admin, "/metrics").await;
    common::metric(&String::from_utf8_lossy(&m.body), "akgate_state_up", &[])
}

#[tokio::test]
async fn a_request_replayed_to_another_gateway_is_refused_and_usage_is_shared() {
    let Some(redis) = Redis::start() else { return };
    let g = two_gateways(&redis, &[], &[]).await;
    let host = g.a.proxy.to_string();
    let req = describe_regions(&host);
    let r = common::send(g.a.proxy, &req).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    common::send(g.b.proxy, &req)
        .await
        .assert_error(400, "SignatureNonceUsed");
    assert_eq!(state_up(&g.a).await, Some(1.0));
    // B's admin API shows the use A served.
    let path = format!("/keys/{}", common::ALICE.0);
    let seen = eventually(Duration::from_secs(10), || async {
        let r = common::admin_get(g.b.admin, &path).await;
        r.status == 200
            && r.json()["requests"].as_u64() == Some(1)
            && r.json()["last_used"].is_string()
    })
    .await;
    assert!(
        seen,
        "B: {}",
        String::from_utf8_lossy(&common::admin_get(g.b.admin, &path).await.body)
    );
}

#[tokio::test]
async fn redis_down_fail_closed_refuses_fail_open_serves_and_both_recover() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let g = two_gateways(&redis, &[], &["--state-fail", "open"]).await;
    let (closed, open) = (&g.a, &g.b);
    let host = closed.proxy.to_string();
    redis.stop();
    assert!(
        eventually(Duration::from_secs(10), || async {
            common::admin_get(closed.admin, "/readyz").await.status == 503
        })
        .await,
        "fail-closed gateway still ready with Redis down"
    );
    assert_eq!(state_up(closed).await, Some(0.0));
    assert_eq!(state_up(open).await, Some(0.0));
    common::send(closed.proxy, &describe_regions(&host))
        .await
        .assert_error(503, "ServiceUnavailable");
    // Fail-open: served from this instance's memory, which still refuses a replay to itself.
    assert_eq!(common::admin_get(open.admin, "/readyz").await.status, 200);
    let req = describe_regions(&host);
    let r = common::send(open.proxy, &req).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    common::send(open.proxy, &req)
        .await
        .assert_error(400, "SignatureNonceUsed");

    redis.restart();
    assert!(
        eventually(Duration::from_secs(15), || async {
            common::admin_get(closed.admin, "/readyz").await.status == 200
        })
        .await,
        "fail-closed gateway did not recover: {}",
        closed.stderr()
    );
    assert_eq!(state_up(closed).await, Some(1.0));
    let req = describe_regions(&host);
    assert_eq!(common::send(closed.proxy, &req).await.status, 200);
    common::send(open.proxy, &req)
        .await
        .assert_error(400, "SignatureNonceUsed");
}

#[tokio::test]
async fn failures_spread_over_two_gateways_throttle_the_source_on_both() {
    let Some(redis) = Redis::start() else { return };
    let g = two_gateways_with(
        &redis,
        "auth_failure_limit = 4\nauth_failure_cooldown = \"1m\"\n",
        &[],
        &[],
    )
    .await;
    let host = g.a.proxy.to_string();
    let attacker: Option<IpAddr> = Some("127.0.0.2".parse().unwrap());
    let bystander: Option<IpAddr> = Some("127.0.0.3".parse().unwrap());
    let guess = || {
        common::signed(
            &host,
            "DescribeRegions",
            "",
            ("AKNOSUCHKEY00001", "guess"),
            b"",
            0,
        )
    };
    // An unsigned request is not a counted failure: it shows whether the source is throttled.
    let unsigned = common::Req {
        method: "GET".into(),
        path_and_query: "/?Action=DescribeRegions".into(),
        headers: vec![("host".into(), host.clone())],
        body: vec![],
    };
    // Two failures on each gateway: under each one's own limit, at the fleet's.
    for gw in [&g.a, &g.b, &g.a, &g.b] {
        let r = common::send_from(gw.proxy, attacker, &guess()).await;
        assert_eq!(r.code(), "InvalidAccessKeyId.NotFound");
    }
    for gw in [&g.a, &g.b] {
        let throttled = eventually(Duration::from_secs(10), || async {
            common::send_from(gw.proxy, attacker, &unsigned)
                .await
                .status
                == 429
        })
        .await;
        assert!(throttled, "the fleet's count did not throttle the source");
        common::send_from(gw.proxy, attacker, &describe_regions(&host))
            .await
            .assert_error(429, "Throttling.AuthFailure");
        let r = common::send_from(gw.proxy, bystander, &unsigned).await;
        assert_ne!(r.status, 429, "another source is throttled too");
    }
}
