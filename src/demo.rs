//! `akgate demo`: the shipped rules in front of a built-in echo upstream, with one request that
//! passes and one refused because its key is flagged as leaked.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

use crate::auth::acs3;
use crate::cli::DemoArgs;
use crate::proxy::server::{ServeConfig, ShutdownSignals, start};
use crate::rules::LoadOptions;
use crate::time::{Clock, SystemClock, format_iso8601_utc};

/// The shipped demo keys and the environment variables their secrets are read from. When a
/// variable is unset the demo uses the fake value here; `serve` never does.
pub const DEMO_KEYS: [(&str, &str, &str); 2] = [
    (
        "LTAI5tDEMOKEY0000000001",
        "AKGATE_SECRET_CI",
        "demo-only-secret-ci-NOT-A-REAL-KEY",
    ),
    (
        "LTAI5tDEMOKEY0000000002",
        "AKGATE_SECRET_OPS",
        "demo-only-secret-ops-NOT-A-REAL-KEY",
    ),
];

fn demo_env(name: &str) -> Option<String> {
    std::env::var(name).ok().or_else(|| {
        DEMO_KEYS
            .iter()
            .find(|(_, var, _)| *var == name)
            .map(|(_, _, s)| s.to_string())
    })
}

/// Starts an upstream that answers every request with 200 and a JSON description of what it
/// received, in a shape the Alibaba SDKs accept as a response.
pub async fn echo_upstream() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(echo(req).await)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn echo(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let headers: BTreeMap<String, String> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let json = serde_json::json!({
        "RequestId": parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or(""),
        "Echo": {
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query().unwrap_or(""),
            "headers": headers,
            "body_bytes": body.len(),
        }
    });
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A fresh 32-hex-digit nonce.
pub fn fresh_nonce() -> String {
    let s = RandomState::new();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:016x}{:016x}",
        s.hash_one(t),
        s.hash_one(t.wrapping_add(1))
    )
}

/// A signed ECS-style V3 call: (path+query, headers).
pub fn signed_call(
    host: &str,
    action: &str,
    query: &str,
    key_id: &str,
    secret: &str,
) -> Vec<(String, String)> {
    let mut headers = vec![
        ("host".to_string(), host.to_string()),
        ("x-acs-action".to_string(), action.to_string()),
        ("x-acs-version".to_string(), "2014-05-26".to_string()),
        (
            "x-acs-date".to_string(),
            format_iso8601_utc(SystemClock.now()),
        ),
        ("x-acs-signature-nonce".to_string(), fresh_nonce()),
    ];
    acs3::sign(
        "POST",
        "/",
        query,
        &mut headers,
        b"",
        key_id,
        secret.as_bytes(),
    );
    headers
}

fn curl(base: SocketAddr, query: &str, headers: &[(String, String)]) -> String {
    let mut cmd = format!("curl -sS -X POST 'http://{base}/?{query}'");
    for (k, v) in headers {
        if k != "host" {
            cmd.push_str(&format!(" \\\n  -H '{k}: {v}'"));
        }
    }
    cmd
}

async fn send(
    base: SocketAddr,
    query: &str,
    headers: &[(String, String)],
) -> Result<(u16, String), Box<dyn std::error::Error>> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut req = Request::builder()
        .method("POST")
        .uri(format!("http://{base}/?{query}"));
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = client.request(req.body(Full::new(Bytes::new()))?).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

pub async fn run(args: DemoArgs) -> Result<(), Box<dyn std::error::Error>> {
    let echo = echo_upstream().await?;
    let load = LoadOptions {
        env: Arc::new(demo_env),
        upstream_override: Some(echo.to_string().parse()?),
    };
    let mut signals = ShutdownSignals::install();
    let running = start(ServeConfig {
        rules_dir: args.rules.clone(),
        listen: args.listen,
        admin: args.admin,
        tls: None,
        load,
        reload_debounce: Duration::from_millis(200),
        watch: true,
        // The demo prints its own summary; its audit lines would bury it.
        audit_log: "off".into(),
        limits: Default::default(),
        max_nonces: crate::policy::replay::DEFAULT_MAX_NONCES,
        state: Default::default(),
    })
    .await
    .map_err(|e| {
        format!(
            "{e}\n(is another program on {}? try --listen 127.0.0.1:0)",
            args.listen
        )
    })?;
    let base = running.proxy_addr;
    let host = base.to_string();
    let secret = |i: usize| demo_env(DEMO_KEYS[i].1).unwrap_or_default();

    println!(
        "akgate demo: gateway on http://{base} (admin http://{}), rules from {}, echo upstream on {echo}\n",
        running.admin_addr,
        args.rules.display()
    );
    let query = "RegionId=cn-hangzhou";
    let allowed = signed_call(&host, "DescribeRegions", query, DEMO_KEYS[0].0, &secret(0));
    let (status, body) = send(base, query, &allowed).await?;
    println!(
        "1) DescribeRegions with active key {} -> HTTP {status} (forwarded)\n   {}\n",
        DEMO_KEYS[0].0,
        truncate(&body, 300)
    );
    let del_query = "InstanceId=i-demo0001&Force=True";
    let blocked = signed_call(
        &host,
        "DeleteInstance",
        del_query,
        DEMO_KEYS[1].0,
        &secret(1),
    );
    let (status, body) = send(base, del_query, &blocked).await?;
    println!(
        "2) DeleteInstance with leaked key {} -> HTTP {status} (refused)\n   {body}\n",
        DEMO_KEYS[1].0
    );

    println!(
        "Try them yourself (fresh signatures, valid for 15 minutes, once each — a second try is a replay):\n"
    );
    println!(
        "# allowed\n{}\n",
        curl(
            base,
            query,
            &signed_call(&host, "DescribeRegions", query, DEMO_KEYS[0].0, &secret(0))
        )
    );
    println!(
        "# refused: the key is listed in rules/leaked.toml and DeleteInstance is in rules/high_risk.toml\n{}\n",
        curl(
            base,
            del_query,
            &signed_call(
                &host,
                "DeleteInstance",
                del_query,
                DEMO_KEYS[1].0,
                &secret(1)
            )
        )
    );
    println!(
        "Metrics: curl http://{}/metrics   Rules: curl http://{}/rules",
        running.admin_addr, running.admin_addr
    );
    if args.once {
        return Ok(());
    }
    println!(
        "Serving until Ctrl-C. Edit files in {} and they reload.",
        args.rules.display()
    );
    signals.recv().await;
    running.drain();
    Ok(())
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
