//! The audit log: one JSON line per decision, written by a dedicated thread.
//!
//! The request path serialises its line into a `String` and hands it to a bounded channel with
//! `try_send`; it never waits for I/O. When the channel is full (a slow disk, a stdout pipe nobody
//! reads), the line is dropped and counted in `akgate_audit_dropped_total`. The writer thread
//! batches whatever is queued into one write (letting lines gather for a few milliseconds first)
//! and flushes when the queue is empty.
//!
//! A line carries identities, the source, the action and the outcome — never a secret, a
//! signature, a security token or a header value. The key id is logged only when it names a key of
//! the rule set: an unknown id may be a secret pasted into the wrong field.
//!
//! ```json
//! {"time":"2026-11-23T20:08:11.123Z","request_id":"…","key_id":"AK…","account":"100",
//!  "user":"alice","source_ip":"203.0.113.7","source":"x-forwarded-for","hops":1,
//!  "service":"ecs","action":"DescribeInstances","scheme":"ACS3-HMAC-SHA256",
//!  "decision":"allowed","code":"OK","status":200,"rule":null,"would_deny":[],"latency_ms":1.234}
//! ```

use serde::Serialize;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::policy::source_ip::SourceIp;

/// Lines queued for the writer before new ones are dropped.
pub const QUEUE_LINES: usize = 16 * 1024;

/// How long the writer lets lines gather after the first one of a batch before writing them.
/// While it waits it is not parked on the queue, so queuing a line wakes nobody: without the
/// pause every request woke the writer (a futex call and two context switches, on a busy CPU)
/// and cost one `write` of its own, which took a third off the gateway's throughput. Lines
/// reach the file at most this much later, and `flush` (at shutdown) waits at most this much
/// longer.
const BATCH_WINDOW: Duration = Duration::from_millis(5);

/// One shadow rule that would have refused.
#[derive(Debug, Serialize)]
pub struct WouldDenyEntry {
    pub code: &'static str,
    pub rule: Option<String>,
}

/// One audit line. Borrowed fields come from the rule snapshot or the request handler.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    pub time: String,
    pub request_id: &'a str,
    pub key_id: Option<&'a str>,
    pub account: Option<&'a str>,
    pub user: Option<&'a str>,
    pub source_ip: Option<String>,
    /// `peer` (the TCP peer), `x-forwarded-for` (read through trusted proxies) or `unknown`.
    pub source: &'static str,
    /// Trusted proxies between the gateway and the source (0 for `peer`).
    pub hops: usize,
    pub service: Option<&'a str>,
    pub action: Option<&'a str>,
    pub scheme: Option<&'static str>,
    /// `allowed`, `denied`, `upstream_error`, or `would_deny` (allowed, but a shadow rule
    /// would have refused).
    pub decision: &'static str,
    /// `OK` when allowed, else the error code sent to the client.
    pub code: &'static str,
    /// The HTTP status sent to the client (the upstream's when allowed).
    pub status: u16,
    /// The rule (`file:line`) that decided a refusal, when one rule did.
    pub rule: Option<String>,
    pub would_deny: Vec<WouldDenyEntry>,
    pub latency_ms: f64,
}

impl Record<'_> {
    pub fn set_source(&mut self, source: SourceIp) {
        let (ip, kind, hops) = match source {
            SourceIp::Peer(ip) => (Some(ip), "peer", 0),
            SourceIp::Forwarded { ip, hops } => (Some(ip), "x-forwarded-for", hops),
            SourceIp::Unknown => (None, "unknown", 0),
        };
        self.source_ip = ip.map(|ip| ip.to_string());
        self.source = kind;
        self.hops = hops;
    }
}

enum Msg {
    Line(String),
    Flush(SyncSender<()>),
}

/// Where audit lines go. Cheap to share; `log` never blocks.
pub struct AuditLog {
    tx: Option<SyncSender<Msg>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open the audit log {path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("cannot start the audit writer: {0}")]
    Thread(io::Error),
}

impl AuditLog {
    /// No audit lines.
    pub fn off() -> AuditLog {
        AuditLog { tx: None }
    }

    /// `-` = stdout, `off` = none, anything else = a file opened for appending (created if
    /// missing).
    pub fn open(target: &str) -> Result<AuditLog, AuditError> {
        match target {
            "off" => Ok(AuditLog::off()),
            "-" | "" => AuditLog::spawn(Sink::Stdout),
            path => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AuditError::Open {
                        path: path.to_string(),
                        source,
                    })?;
                AuditLog::spawn(Sink::File(file))
            }
        }
    }

    fn spawn(sink: Sink) -> Result<AuditLog, AuditError> {
        let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
        std::thread::Builder::new()
            .name("akgate-audit".into())
            .spawn(move || writer(rx, sink))
            .map_err(AuditError::Thread)?;
        Ok(AuditLog { tx: Some(tx) })
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues one line; drops it (and counts the drop) when the writer is behind.
    pub fn log(&self, record: &Record<'_>) {
        let Some(tx) = &self.tx else { return };
        let mut line = match serde_json::to_string(record) {
            Ok(l) => l,
            Err(_) => return crate::metrics::audit_dropped(),
        };
        line.push('\n');
        match tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                crate::metrics::audit_dropped()
            }
        }
    }

    /// Waits (at most `within`) until every line queued so far is written. For shutdown.
    pub fn flush(&self, within: Duration) {
        let Some(tx) = &self.tx else { return };
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        // A full queue: the writer is draining it, so a blocking send only waits for I/O.
        if tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(within);
        }
    }
}

enum Sink {
    Stdout,
    File(std::fs::File),
}

impl Sink {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        match self {
            // One write per batch: stdout's line buffering passes a buffer of whole lines
            // through in one call.
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(batch)?;
                out.flush()
            }
            Sink::File(f) => f.write_all(batch),
        }
    }
}

fn writer(rx: Receiver<Msg>, mut sink: Sink) {
    let mut batch: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut acks: Vec<SyncSender<()>> = Vec::new();
    let mut warned = false;
    loop {
        // Block for the first message, then take whatever else is queued.
        let Ok(first) = rx.recv() else { return };
        let mut lines = 0u64;
        let mut take = |m: Msg, batch: &mut Vec<u8>, acks: &mut Vec<SyncSender<()>>| match m {
            Msg::Line(l) => {
                batch.extend_from_slice(l.as_bytes());
                lines += 1;
            }
            Msg::Flush(ack) => acks.push(ack),
        };
        let pause = matches!(first, Msg::Line(_));
        take(first, &mut batch, &mut acks);
        if pause {
            std::thread::sleep(BATCH_WINDOW);
        }
        while batch.len() < 1024 * 1024 {
            match rx.try_recv() {
                Ok(m) => take(m, &mut batch, &mut acks),
                Err(_) => break,
            }
        }
        if !batch.is_empty()
            && let Err(e) = sink.write_batch(&batch)
        {
            crate::metrics::audit_dropped_n(lines);
            if !warned {
                tracing::warn!(error = %e, "audit log write failed; lines are being dropped");
                warned = true;
            }
        }
        batch.clear();
        for ack in acks.drain(..) {
            let _ = ack.try_send(());
        }
    }
}

/// RFC 3339 UTC with milliseconds: `2026-11-23T20:08:11.123Z`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (y, m, day) = crate::time::civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_464_491_123);
        assert_eq!(rfc3339_millis(t), "2026-11-23T20:08:11.123Z");
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    fn record(id: &str) -> Record<'_> {
        Record {
            time: rfc3339_millis(SystemTime::now()),
            request_id: id,
            key_id: None,
            account: None,
            user: None,
            source_ip: None,
            source: "unknown",
            hops: 0,
            service: None,
            action: None,
            scheme: None,
            decision: "denied",
            code: "InvalidRoute",
            status: 404,
            rule: None,
            would_deny: Vec::new(),
            latency_ms: 0.5,
        }
    }

    #[test]
    fn a_full_queue_drops_instead_of_blocking() {
        // A writer that never reads: the queue holds one line, the rest are dropped at once.
        let (tx, rx) = mpsc::sync_channel(1);
        let log = AuditLog { tx: Some(tx) };
        for _ in 0..3 {
            log.log(&record("R"));
        }
        assert_eq!(rx.try_iter().count(), 1);
    }

    #[test]
    fn file_sink_appends_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, "existing\n").unwrap();
        let log = AuditLog::open(path.to_str().unwrap()).unwrap();
        let mut r = record("R1");
        r.set_source(SourceIp::Forwarded {
            ip: "203.0.113.7".parse().unwrap(),
            hops: 2,
        });
        log.log(&r);
        log.flush(Duration::from_secs(5));
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("existing"));
        let v: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(v["request_id"], "R1");
        assert_eq!(v["source"], "x-forwarded-for");
        assert_eq!(v["hops"], 2);
        assert_eq!(v["source_ip"], "203.0.113.7");
        assert_eq!(v["rule"], serde_json::Value::Null);
    }
}
