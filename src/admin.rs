//! The admin listener: metrics, health, readiness, the state of the rules and the keys' usage. Bound separately
//! from the public listener so none of it is reachable by API callers.

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;

use crate::proxy::Body;
use crate::rules::RulesStore;
use crate::state::State;

pub async fn serve(
    listener: TcpListener,
    rules: Arc<RulesStore>,
    ready: Arc<AtomicBool>,
    state: Arc<State>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let rules = rules.clone();
        let ready = ready.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let rules = rules.clone();
                let ready = ready.clone();
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(req, &rules, &ready, state).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<bytes::Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

async fn route(
    req: Request<Incoming>,
    rules: &Arc<RulesStore>,
    ready: &AtomicBool,
    state: Arc<State>,
) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            crate::metrics::install().render(),
        ),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, "/readyz") => {
            if !ready.load(Ordering::SeqCst) {
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n")
            } else if !state.healthy() {
                // Fail-closed fleet mode refuses every signed request while the store is down;
                // a load balancer should send them to an instance that can answer.
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "shared state unavailable\n",
                )
            } else {
                text(StatusCode::OK, "text/plain", "ready\n")
            }
        }
        (&Method::GET, "/rules") => rules_status(rules),
        // A row per key: with 100k keys, tens of milliseconds that must not hold up a runtime
        // worker (and the requests it serves).
        (&Method::GET, "/keys") => {
            let rules = rules.clone();
            tokio::task::spawn_blocking(move || keys(&rules, &state, None))
                .await
                .unwrap_or_else(|_| {
                    text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        "internal error\n",
                    )
                })
        }
        (&Method::GET, path) if path.starts_with("/keys/") => {
            let raw = &path["/keys/".len()..];
            let id = crate::auth::encoding::percent_decode(raw.as_bytes(), false);
            keys(rules, &state, Some(&String::from_utf8_lossy(&id)))
        }
        (&Method::POST, "/rules/reload") => {
            let store = rules.clone();
            let outcome = tokio::task::spawn_blocking(move || store.reload()).await;
            let (status, result) = match outcome {
                Ok(crate::rules::store::ReloadOutcome::Applied { .. }) => {
                    (StatusCode::OK, "applied")
                }
                Ok(crate::rules::store::ReloadOutcome::Unchanged) => (StatusCode::OK, "unchanged"),
                _ => (StatusCode::UNPROCESSABLE_ENTITY, "error"),
            };
            let mut resp = rules_status(rules);
            *resp.status_mut() = status;
            resp.headers_mut()
                .insert("x-akgate-reload", http::HeaderValue::from_static(result));
            resp
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

fn rules_status(rules: &RulesStore) -> Response<Body> {
    let snap = rules.load();
    let status = rules.status();
    let body = serde_json::json!({
        "generation": snap.generation,
        "content_hash": snap.content_hash,
        "loaded_at": crate::time::format_iso8601_utc(snap.loaded_at),
        "keys": snap.keys.len(),
        // Keys that can authenticate a request; 0 comes with a warning below.
        "active_keys": snap.usable_keys,
        "routes": snap.routes.len(),
        "last_error": status.last_error,
        "last_error_at": status.last_error_at.map(crate::time::format_iso8601_utc),
        "warnings": warning_list(&snap.warnings),
        "warnings_total": snap.warnings.len(),
    });
    text(StatusCode::OK, "application/json", body.to_string())
}

/// Past this many, `/rules` lists warnings as the log does: one line per kind with its count and
/// first instances. 100k keys with inline secrets would otherwise make every `/rules` and every
/// `POST /rules/reload` answer 100k strings long, and bury a rarer, graver warning among them.
const WARNINGS_LISTED: usize = 100;

fn warning_list(warnings: &crate::rules::Warnings) -> Vec<String> {
    if warnings.len() <= WARNINGS_LISTED {
        warnings.iter().map(|w| w.to_string()).collect()
    } else {
        warnings.log_lines().cloned().collect()
    }
}

/// `GET /keys` (every key of the snapshot) and `GET /keys/{id}`: last use and idleness, never a
/// secret.
fn keys(rules: &RulesStore, state: &State, id: Option<&str>) -> Response<Body> {
    use crate::time::Clock;
    let snap = rules.load();
    let now = crate::time::SystemClock.now();
    let since = state.usage.since();
    let max = snap.settings.max_idle_days;
    let body = match id {
        None => {
            let rows = crate::tools::keys::rows(&snap, |id| state.usage.get(id), Some(since), now);
            crate::tools::keys::document(&rows, max, Some(since))
        }
        Some(id) => match snap.key(id) {
            Some(key) => serde_json::json!(crate::tools::keys::row(
                key,
                state.usage.get(id).as_ref(),
                Some(since),
                max,
                now,
            )),
            None => {
                let body =
                    serde_json::json!({ "error": "no such access key in the rules", "id": id });
                return text(StatusCode::NOT_FOUND, "application/json", body.to_string());
            }
        },
    };
    text(StatusCode::OK, "application/json", body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Problem, WarningPart, Warnings};

    #[test]
    fn a_few_warnings_are_listed_whole_and_a_flood_by_kind() {
        let few: Vec<Problem> = (0..4)
            .map(|i| Problem::in_keys_file(i, format!("key `K{i}` has no address in common")))
            .collect();
        let listed = warning_list(&Warnings::from_parts([WarningPart::new(few)]));
        assert_eq!(listed.len(), 4, "{listed:?}");
        assert!(listed.iter().all(|l| l.contains("no address in common")));

        let mut flood: Vec<Problem> = (0..1000)
            .map(|i| Problem::in_keys_file(i, format!("key `K{i}` has its secret inline")))
            .collect();
        flood.push(Problem::in_keys_file(2000, "every key is disabled".into()));
        let listed = warning_list(&Warnings::from_parts([WarningPart::new(flood)]));
        assert!(listed.len() < 10, "{listed:?}");
        assert!(
            listed.iter().any(|l| l.contains("every key is disabled")),
            "the rare warning stays visible: {listed:?}"
        );
        assert!(
            listed.iter().any(|l| l.contains("1000")),
            "the flood is counted: {listed:?}"
        );
    }
}
