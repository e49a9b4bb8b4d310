//! Prometheus metrics. Names start with `akgate_`; labels come from small fixed sets (decision,
//! code, scheme, result), never from key ids, addresses or paths.

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

use crate::auth::Scheme;
use crate::rules::Snapshot;
use crate::time::UnixSeconds;

pub const REQUESTS: &str = "akgate_requests_total";
pub const REQUEST_DURATION: &str = "akgate_request_duration_seconds";
pub const RELOADS: &str = "akgate_rules_reloads_total";
pub const GENERATION: &str = "akgate_rules_generation";
pub const LAST_RELOAD_SUCCESS: &str = "akgate_rules_last_reload_success_timestamp_seconds";
pub const KEYS: &str = "akgate_rules_keys";
pub const ACTIVE_KEYS: &str = "akgate_rules_active_keys";
pub const AUTH_FAILURES: &str = "akgate_auth_failures_total";
pub const SOURCES_THROTTLED: &str = "akgate_sources_throttled";
pub const THROTTLE_STARTS: &str = "akgate_source_throttle_starts_total";
pub const WOULD_DENY: &str = "akgate_shadow_would_deny_total";
pub const AUDIT_DROPPED: &str = "akgate_audit_dropped_total";
pub const STATE_UP: &str = "akgate_state_up";
pub const STATE_ERRORS: &str = "akgate_state_errors_total";
pub const STATE_ROUND_TRIP: &str = "akgate_state_round_trip_seconds";
pub const MFA: &str = "akgate_mfa_total";
pub const IDLE_REFUSED: &str = "akgate_keys_idle_refused_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let buckets = [
            0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
            0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), &buckets)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(STATE_ROUND_TRIP.into()), &buckets)
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        match builder.install_recorder() {
            Ok(handle) => {
                describe();
                handle
            }
            // Another recorder is installed (a host program embedding the library): render an
            // empty registry of our own rather than fail.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}

fn describe() {
    metrics::describe_gauge!(
        STATE_UP,
        "1 when the shared state store (Redis) answers, 0 when it does not; 1 without one"
    );
    metrics::describe_counter!(
        STATE_ERRORS,
        "Shared state store failures by operation (claim, usage_push, usage_pull, failures)"
    );
    metrics::describe_histogram!(
        STATE_ROUND_TRIP,
        metrics::Unit::Seconds,
        "Round trip of one request's claims to the shared state store"
    );
    metrics::describe_counter!(
        MFA,
        "Critical operations by second-factor result (trusted, redeemed, required, invalid, reused)"
    );
    metrics::describe_counter!(
        IDLE_REFUSED,
        "Requests refused because their AccessKey was idle longer than max_idle_days"
    );
    metrics::describe_counter!(
        REQUESTS,
        "Requests by decision (allowed, denied, upstream_error), code and signature scheme; \
         the denial rate by code is rate() of the denied series"
    );
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Time from request head to response head"
    );
    metrics::describe_counter!(
        RELOADS,
        "Rule reloads by result (success, error, unchanged)"
    );
    metrics::describe_gauge!(GENERATION, "Generation of the rule set in service");
    metrics::describe_gauge!(
        LAST_RELOAD_SUCCESS,
        "Unix time of the last successful rules load"
    );
    metrics::describe_gauge!(KEYS, "AccessKeys in the rule set in service");
    metrics::describe_gauge!(
        ACTIVE_KEYS,
        "AccessKeys in the rule set in service that can authenticate a request (active, and \
         admitted by some address at every allowlist level); 0 means every request is refused"
    );
    metrics::describe_counter!(
        AUTH_FAILURES,
        "Failed authentication attempts by code (the failures the brute-force guard counts), \
         counted whether or not the guard is on"
    );
    metrics::describe_gauge!(
        SOURCES_THROTTLED,
        "Sources currently refused for repeated authentication failures"
    );
    metrics::describe_counter!(
        THROTTLE_STARTS,
        "Times a source was put on cool-down for repeated authentication failures"
    );
    metrics::describe_counter!(
        WOULD_DENY,
        "Shadow rules that would have refused a request, by code"
    );
    metrics::describe_gauge!(
        CONNECTIONS_OPEN,
        "Connections being served on the public listener"
    );
    metrics::describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections over a cap (reason: total, per_ip), answered 503 or closed"
    );
    metrics::describe_counter!(
        OVERLOADED,
        "Requests refused with 503 because a bound was reached, by reason"
    );
    metrics::describe_gauge!(NONCES, "Entries in the replay-protection nonce cache");
    metrics::describe_counter!(
        AUDIT_DROPPED,
        "Audit lines dropped because the writer was behind or the write failed"
    );
}

/// Series that stay at zero in a healthy gateway are created at start, so that dashboards and
/// alerts see 0 rather than no data.
pub fn prime() {
    counter!(IDLE_REFUSED).increment(0);
    for result in ["trusted", "redeemed", "required", "invalid", "reused"] {
        counter!(MFA, "result" => result).increment(0);
    }
}

/// Histograms are aggregated lazily; this drains them so memory stays flat between scrapes.
pub fn spawn_upkeep() {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            install().run_upkeep();
        }
    });
}

/// Room for every `auth::Scheme` variant; one past it would only fall back to the slow path.
const SCHEMES: usize = 8;

/// Handles for the series every allowed request updates. Looking a series up by name and labels
/// costs about 3k instructions (the key is built, hashed and found in the registry); an allowed
/// request is the common case and should cost one atomic add. Each is registered on first use, so
/// `/metrics` shows the same series as before, and only once the recorder is installed: a handle
/// taken earlier would belong to the no-op recorder for good.
struct AllowedSeries {
    requests: [OnceLock<metrics::Counter>; SCHEMES],
    duration: OnceLock<metrics::Histogram>,
}

static ALLOWED: AllowedSeries = AllowedSeries {
    requests: [const { OnceLock::new() }; SCHEMES],
    duration: OnceLock::new(),
};

/// One decided request. `scheme` is `None` when the request was refused before its scheme was
/// known (label `none`).
#[inline]
pub fn request(
    decision: &'static str,
    code: &'static str,
    scheme: Option<Scheme>,
    elapsed: Duration,
) {
    if decision == "allowed"
        && code == "OK"
        && HANDLE.get().is_some()
        && let Some(s) = scheme
        && let Some(slot) = ALLOWED.requests.get(s as usize)
    {
        slot.get_or_init(
            || counter!(REQUESTS, "decision" => "allowed", "code" => "OK", "scheme" => s.as_str()),
        )
        .increment(1);
        ALLOWED
            .duration
            .get_or_init(|| histogram!(REQUEST_DURATION, "decision" => "allowed"))
            .record(elapsed.as_secs_f64());
        return;
    }
    let scheme = scheme.map_or("none", Scheme::as_str);
    counter!(REQUESTS, "decision" => decision, "code" => code, "scheme" => scheme).increment(1);
    histogram!(REQUEST_DURATION, "decision" => decision).record(elapsed.as_secs_f64());
}

pub fn rules_loaded(snap: &Snapshot, result: &'static str, now: UnixSeconds) {
    counter!(RELOADS, "result" => result).increment(1);
    gauge!(GENERATION).set(snap.generation as f64);
    gauge!(LAST_RELOAD_SUCCESS).set(now as f64);
    gauge!(KEYS).set(snap.keys.len() as f64);
    gauge!(ACTIVE_KEYS).set(snap.usable_keys as f64);
}

pub fn rules_reload_failed() {
    counter!(RELOADS, "result" => "error").increment(1);
}

pub fn rules_reload_unchanged() {
    counter!(RELOADS, "result" => "unchanged").increment(1);
}

/// A failed authentication attempt (see `policy::bruteforce::counts_as_auth_failure`).
pub fn auth_failure(code: &'static str) {
    counter!(AUTH_FAILURES, "code" => code).increment(1);
}

/// A source starts a cool-down.
pub fn throttle_started() {
    counter!(THROTTLE_STARTS).increment(1);
    gauge!(SOURCES_THROTTLED).increment(1.0);
}

/// Sources on cool-down, recounted by the maintenance tick.
pub fn sources_throttled(n: usize) {
    gauge!(SOURCES_THROTTLED).set(n as f64);
}

pub fn would_deny(code: &'static str) {
    counter!(WOULD_DENY, "code" => code).increment(1);
}

pub fn audit_dropped() {
    counter!(AUDIT_DROPPED).increment(1);
}

pub fn audit_dropped_n(n: u64) {
    counter!(AUDIT_DROPPED).increment(n);
}

pub const CONNECTIONS_OPEN: &str = "akgate_connections_open";
pub const CONNECTIONS_REFUSED: &str = "akgate_connections_refused_total";
pub const OVERLOADED: &str = "akgate_overloaded_total";
pub const NONCES: &str = "akgate_nonce_cache_entries";

/// Connections being served on the public listener (refused ones not counted).
pub fn connections_open(n: usize) {
    gauge!(CONNECTIONS_OPEN).set(n as f64);
}

/// A connection over a cap; `reason` is `total` or `per_ip`.
pub fn connection_refused(reason: &'static str) {
    counter!(CONNECTIONS_REFUSED, "reason" => reason).increment(1);
}

/// A request refused with 503 because a bound was reached: `queue_full`, `queue_timeout`,
/// `body_memory`, `nonce_cache_full`, `connection_cap`.
pub fn overloaded(reason: &'static str) {
    counter!(OVERLOADED, "reason" => reason).increment(1);
}

/// Entries in the replay cache, recounted by the maintenance tick.
pub fn nonces(n: usize) {
    gauge!(NONCES).set(n as f64);
}

/// Whether the shared state store answers.
pub fn state_up(up: bool) {
    gauge!(STATE_UP).set(if up { 1.0 } else { 0.0 });
}

/// A failed operation on the shared state store; `op` is one of a fixed few names.
pub fn state_error(op: &'static str) {
    counter!(STATE_ERRORS, "op" => op).increment(1);
}

pub fn state_round_trip(elapsed: Duration) {
    histogram!(STATE_ROUND_TRIP).record(elapsed.as_secs_f64());
}

/// A critical operation's second-factor result; `result` is one of a fixed few names.
pub fn mfa(result: &'static str) {
    counter!(MFA, "result" => result).increment(1);
}

pub fn idle_refused() {
    counter!(IDLE_REFUSED).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_has_a_cached_series() {
        for scheme in [
            Scheme::Acs3HmacSha256,
            Scheme::Acs3HmacSm3,
            Scheme::Acs3RsaSha256,
            Scheme::RpcHmacSha1,
            Scheme::RoaHmacSha1,
            Scheme::AwsSigV4,
            Scheme::AwsSigV4Presigned,
        ] {
            assert!(
                (scheme as usize) < SCHEMES,
                "{} has no slot",
                scheme.as_str()
            );
        }
    }
}
