//! The usage table kept in a `--state DIR`, so that a restart loses at most one flush interval
//! of it.
//!
//! The directory holds:
//! - `usage`: the table, rewritten whole (temporary file, fsync, rename) when something changed;
//! - `lock`: locked exclusively by the gateway that owns the directory, so two processes never
//!   write the same table (the second one refuses to start).
//!
//! `usage` is UTF-8 text, one record per line; blank lines and lines starting with `#` are
//! ignored:
//!
//! ```text
//! akgate-usage 1
//! since 2026-11-01T00:00:00Z
//! key AKALICEKEY000001 2026-11-23T10:15:02Z 1532 203.0.113.7 ecs DescribeRegions
//! ```
//!
//! The first line names the format and its version. `since` is when tracking began: use before
//! it is unknown, so idle days never count from before it. Each `key` line is: key id, last use
//! (UTC), requests, source address, service, action. A field that is unknown or empty is `-`;
//! any byte outside `!`..`~`, and `%`, is written `%XX` (so a literal `-` is `%2D`). There is no
//! secret in the file: key ids are not secrets.
//!
//! A file that cannot be read back exactly is a startup error naming the file and line; it is
//! never overwritten, since it is the only record of the keys' past use.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::state::usage::{Usage, UsageTable};
use crate::time::{UnixSeconds, format_iso8601_utc, parse_iso8601_utc};

pub const USAGE_FILE: &str = "usage";
pub const LOCK_FILE: &str = "lock";
const TEMP_FILE: &str = "usage.tmp";
const HEADER: &str = "akgate-usage 1";

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: another akgate holds this state directory (two processes must not share one)")]
    Locked { path: PathBuf },
    #[error("{path}:{line}: {message} (the file was left as it is: fix or remove it)")]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: no key usage recorded here (has a gateway run with --state on it?)")]
    Missing { path: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Opens the state directory for a gateway: creates it if missing, takes its lock, and loads the
/// usage table (or starts one tracking from `now`, written at once so `since` survives a crash).
pub fn open(dir: &Path, now: UnixSeconds) -> Result<Arc<UsageTable>, PersistError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(PersistError::Locked { path: dir.into() });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
    }
    match read(dir) {
        Ok((since, entries)) => Ok(Arc::new(UsageTable::restore(since, entries, Some(lock)))),
        Err(PersistError::Missing { .. }) => {
            let table = Arc::new(UsageTable::restore(now, [], Some(lock)));
            write(dir, &table)?;
            Ok(table)
        }
        Err(e) => Err(e),
    }
}

/// Reads the usage table of `dir` without taking its lock (a running gateway holds it), for
/// `akgate keys`. The gateway replaces the file by renaming, so what is read is one whole write.
pub fn read(dir: &Path) -> Result<(UnixSeconds, Vec<(String, Usage)>), PersistError> {
    let path = dir.join(USAGE_FILE);
    let text = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PersistError::Missing { path });
        }
        Err(e) => return Err(io(&path)(e)),
    };
    parse(&text).map_err(|(line, message)| PersistError::Corrupt {
        path,
        line,
        message,
    })
}

/// The file's text for `since` and `entries`.
pub fn render(since: UnixSeconds, entries: &[(String, Usage)]) -> String {
    let mut out = String::with_capacity(64 + entries.len() * 96);
    out.push_str(HEADER);
    out.push('\n');
    let _ = writeln!(out, "since {}", format_iso8601_utc(since));
    for (id, u) in entries {
        out.push_str("key ");
        field(&mut out, id);
        let _ = write!(out, " {} {} ", format_iso8601_utc(u.last_used), u.requests);
        match u.source {
            Some(ip) => {
                let _ = write!(out, "{ip}");
            }
            None => out.push('-'),
        }
        out.push(' ');
        field(&mut out, &u.service);
        out.push(' ');
        field(&mut out, &u.action);
        out.push('\n');
    }
    out
}

fn field(out: &mut String, s: &str) {
    if s.is_empty() {
        out.push('-');
        return;
    }
    if s == "-" {
        out.push_str("%2D");
        return;
    }
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

fn unfield(s: &str) -> Result<String, String> {
    if s == "-" {
        return Ok(String::new());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("`{s}`: bad %-escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` is not UTF-8 once unescaped"))
}

type Parsed = (UnixSeconds, Vec<(String, Usage)>);

/// Parses the file; an error is (line number, message).
pub fn parse(bytes: &[u8]) -> Result<Parsed, (usize, String)> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        (line + 1, "not UTF-8 text".to_string())
    })?;
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    match lines.next() {
        Some((_, HEADER)) => {}
        Some((n, l)) if l.starts_with("akgate-usage ") => {
            return Err((
                n,
                format!("`{l}`: unsupported version (expected `{HEADER}`)"),
            ));
        }
        Some((n, _)) => return Err((n, format!("not an akgate usage file (expected `{HEADER}`)"))),
        None => return Err((1, format!("empty (expected `{HEADER}`)"))),
    }
    let time = |s: &str| {
        parse_iso8601_utc(s).ok_or_else(|| format!("`{s}` is not a time like 2026-11-01T00:00:00Z"))
    };
    let mut since = None;
    let mut entries: Vec<(String, Usage)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (n, line) in lines {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["since", t] if since.is_none() => since = Some(time(t).map_err(|m| (n, m))?),
            ["since", _] => return Err((n, "a second `since` line".into())),
            ["key", id, last, requests, source, service, action] => {
                let entry = (|| {
                    let id = unfield(id)?;
                    if id.is_empty() {
                        return Err("a key line without a key id".to_string());
                    }
                    if !seen.insert(id.clone()) {
                        return Err(format!("key `{id}` appears twice"));
                    }
                    let source = match *source {
                        "-" => None,
                        s => Some(
                            s.parse::<IpAddr>()
                                .map_err(|_| format!("`{s}` is not an IP address"))?,
                        ),
                    };
                    Ok((
                        id,
                        Usage {
                            last_used: time(last)?,
                            source,
                            service: unfield(service)?,
                            action: unfield(action)?,
                            requests: requests
                                .parse()
                                .map_err(|_| format!("`{requests}` is not a request count"))?,
                        },
                    ))
                })()
                .map_err(|m| (n, m))?;
                entries.push(entry);
            }
            _ => {
                return Err((
                    n,
                    "expected `since TIME` or `key ID LAST_USED REQUESTS SOURCE SERVICE ACTION`"
                        .into(),
                ));
            }
        }
    }
    let since = since.ok_or((1, "no `since` line".to_string()))?;
    Ok((since, entries))
}

/// Writes the table: a temporary file, fsynced, renamed over `usage`, then the directory fsynced
/// so the rename itself survives a power cut. A reader sees the old file or the new, never half.
fn write(dir: &Path, table: &UsageTable) -> Result<(), PersistError> {
    let text = render(table.since(), &table.all());
    let tmp = dir.join(TEMP_FILE);
    let path = dir.join(USAGE_FILE);
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    // Directories cannot be opened as files everywhere; where they can, this makes the rename
    // durable.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes a table to `dir` when it changed. Dropping it stops the background thread after one
/// last write and waits for it; [`Persister::flush`] writes at once and reports the outcome.
pub struct Persister {
    inner: Arc<Inner>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Inner {
    table: Arc<UsageTable>,
    dir: PathBuf,
    /// One writer at a time: the thread and a shutdown flush share the temporary file.
    writing: Mutex<()>,
}

impl Inner {
    fn flush(&self) -> Result<bool, PersistError> {
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        if !self.table.changed_since_last_look() {
            return Ok(false);
        }
        write(&self.dir, &self.table).inspect_err(|_| self.table.mark_changed())?;
        Ok(true)
    }

    fn flush_logged(&self) {
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "cannot write the key usage; will retry");
        }
    }
}

/// Starts writing `table` to `dir` every `every` when it changed. `dir` must be the directory
/// `table` was [`open`]ed from.
pub fn spawn(table: Arc<UsageTable>, dir: PathBuf, every: Duration) -> Persister {
    let inner = Arc::new(Inner {
        table,
        dir,
        writing: Mutex::new(()),
    });
    let (stop, stopped) = mpsc::channel::<()>();
    let worker = inner.clone();
    let spawned = std::thread::Builder::new()
        .name("akgate-usage".into())
        .spawn(move || {
            loop {
                match stopped.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => worker.flush_logged(),
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                        worker.flush_logged();
                        return;
                    }
                }
            }
        });
    let thread = spawned
        .inspect_err(|e| {
            // Without the thread, usage is still written by Persister::flush and on drop.
            tracing::warn!(error = %e, "cannot start the key usage writer");
        })
        .ok();
    Persister {
        inner,
        stop: Some(stop),
        thread,
    }
}

impl Drop for Persister {
    fn drop(&mut self) {
        drop(self.stop.take());
        match self.thread.take() {
            Some(t) => {
                let _ = t.join();
            }
            None => self.inner.flush_logged(),
        }
    }
}

impl Persister {
    /// Writes now if anything changed (shutdown). Errors are returned, and logged by the
    /// background thread's next attempt.
    pub fn flush(&self) -> Result<(), PersistError> {
        self.inner.flush().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Use;

    fn sample() -> Vec<(String, Usage)> {
        vec![
            (
                "AK1".into(),
                Usage {
                    last_used: 1_795_358_842,
                    source: Some("2001:db8::1".parse().unwrap()),
                    service: "ecs".into(),
                    action: "Describe Regions\n%-".into(),
                    requests: 12,
                },
            ),
            ("AK2".into(), Usage::default()),
            (
                "AK3".into(),
                Usage {
                    action: "-".into(),
                    ..Usage::default()
                },
            ),
        ]
    }

    #[test]
    fn round_trip() {
        let text = render(100, &sample());
        assert!(text.starts_with("akgate-usage 1\nsince 1970-01-01T00:01:40Z\n"));
        assert!(text.contains(" Describe%20Regions%0A%25-\n"), "{text}");
        assert_eq!(text.lines().count(), 5, "one line per key: {text}");
        assert_eq!(parse(text.as_bytes()).unwrap(), (100, sample()));
    }

    #[test]
    fn corruption_names_the_line() {
        let good = render(100, &sample());
        let cases = [
            ("", 1),
            ("akgate-usage 2\nsince 1970-01-01T00:00:00Z\n", 1),
            ("hello\n", 1),
            ("akgate-usage 1\n\n# note\nkey AK1 x 1 - a b\n", 4),
            ("akgate-usage 1\nkey AK1 1970-01-01T00:00:00Z 1 - a\n", 2),
            ("akgate-usage 1\nkey AK1 1970-01-01T00:00:00Z x - a b\n", 2),
            (
                "akgate-usage 1\nkey AK1 1970-01-01T00:00:00Z 1 1.2.3 a b\n",
                2,
            ),
            (
                "akgate-usage 1\nkey AK1 1970-01-01T00:00:00Z 1 - a%4 b\n",
                2,
            ),
            ("akgate-usage 1\nkey AK1 1970-01-01T00:00:00Z 1 - a b\n", 1),
        ];
        for (text, line) in cases {
            let err = parse(text.as_bytes()).unwrap_err();
            assert_eq!(err.0, line, "{text:?}: {err:?}");
        }
        let twice = format!("{good}{}", good.lines().nth(2).unwrap());
        assert_eq!(parse(twice.as_bytes()).unwrap_err().0, 6);
        let mut bad = good.into_bytes();
        bad.extend_from_slice(b"\nkey \xff");
        assert_eq!(parse(&bad).unwrap_err().0, 7);
    }

    #[test]
    fn open_writes_since_locks_and_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let table = open(&state, 1000).unwrap();
        assert_eq!(read(&state).unwrap(), (1000, vec![]));
        assert!(matches!(
            open(&state, 2000),
            Err(PersistError::Locked { .. })
        ));
        let p = spawn(table.clone(), state.clone(), Duration::from_secs(3600));
        table.record(&Use {
            key_id: "AK1",
            at: 5000,
            source: None,
            service: "ecs",
            action: "A",
        });
        p.flush().unwrap();
        let (since, entries) = read(&state).unwrap();
        assert_eq!((since, entries[0].1.requests), (1000, 1));
        drop(p);
        drop(table);
        let again = open(&state, 9000).unwrap();
        assert_eq!(
            (again.since(), again.get("AK1").unwrap().last_used),
            (1000, 5000)
        );
    }

    #[test]
    fn corrupt_file_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(USAGE_FILE);
        std::fs::write(&path, "akgate-usage 1\nsince yesterday\n").unwrap();
        let err = open(dir.path(), 0).unwrap_err().to_string();
        assert!(err.contains("usage:2:"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "akgate-usage 1\nsince yesterday\n"
        );
    }
}
