//! The live rule set: one `ArcSwap` pointer that requests load without locking, replaced whole
//! by a reload only when a new rule set compiled cleanly and differs from the current one.

use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{LoadError, LoadOptions, Problem, Snapshot, load_dir};
use crate::time::{Clock, SystemClock, UnixSeconds};

/// What one reload did.
#[derive(Debug)]
pub enum ReloadOutcome {
    Applied { generation: u64 },
    Unchanged,
    Failed(LoadError),
}

/// Reload history for the admin listener; never read by requests.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    pub last_error: Option<String>,
    pub last_error_at: Option<UnixSeconds>,
    pub last_success_at: Option<UnixSeconds>,
}

pub struct RulesStore {
    dir: PathBuf,
    opts: LoadOptions,
    current: ArcSwap<Snapshot>,
    /// Serialises reloads (watcher, SIGHUP, admin) and holds their history. Requests never take it.
    status: Mutex<ReloadStatus>,
}

impl RulesStore {
    /// Loads the initial rule set; there is no last good set to fall back on, so failure is fatal.
    pub fn open(dir: &Path, opts: LoadOptions) -> Result<Self, LoadError> {
        let mut snap = load_dir(dir, &opts)?;
        let now = SystemClock.now();
        snap.generation = 1;
        snap.loaded_at = now;
        crate::metrics::rules_loaded(&snap, "success", now);
        Ok(RulesStore {
            dir: dir.to_path_buf(),
            opts,
            current: ArcSwap::from_pointee(snap),
            status: Mutex::new(ReloadStatus {
                last_success_at: Some(now),
                ..Default::default()
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current snapshot. One atomic load and reference-count increment; no lock.
    #[inline]
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn status(&self) -> ReloadStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Re-reads the directory. A rule set that fails to load is refused whole and the current one
    /// keeps serving; a new generation is made only for a valid set whose content hash differs.
    /// Any valid outcome clears `last_error`.
    pub fn reload(&self) -> ReloadOutcome {
        let mut status = match self.status.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = SystemClock.now();
        match load_dir(&self.dir, &self.opts) {
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "rule reload refused; the previous rule set keeps serving");
                status.last_error = Some(e.to_string());
                status.last_error_at = Some(now);
                crate::metrics::rules_reload_failed();
                ReloadOutcome::Failed(e)
            }
            Ok(mut snap) => {
                let current = self.current.load();
                if snap.content_hash == current.content_hash {
                    // The files are good again (a half-written file completed, a deleted one
                    // restored as it was): an earlier failure no longer describes them.
                    status.last_error = None;
                    crate::metrics::rules_reload_unchanged();
                    return ReloadOutcome::Unchanged;
                }
                snap.generation = current.generation + 1;
                snap.loaded_at = now;
                let generation = snap.generation;
                log_warnings(&snap.warnings);
                crate::metrics::rules_loaded(&snap, "success", now);
                self.current.store(Arc::new(snap));
                status.last_error = None;
                status.last_success_at = Some(now);
                tracing::info!(generation, "rules reloaded");
                ReloadOutcome::Applied { generation }
            }
        }
    }
}

/// Warnings of one kind past this many are summarised in one line.
const WARNINGS_SHOWN: usize = 3;

/// Logs a rule set's warnings, one `WARN` line each, except that a kind of warning repeated more
/// than [`WARNINGS_SHOWN`] times (100k keys with inline secrets) becomes one line with its count
/// and its first few instances: a reload must not flood the log, nor bury a rarer warning (a rule
/// that refuses everything) among a hundred thousand alike.
pub fn log_warnings(warnings: &[Problem]) {
    for line in warning_lines(warnings) {
        tracing::warn!(warning = %line, "rule warning");
    }
}

/// The lines [`log_warnings`] writes. Warnings are of one kind when their messages agree outside
/// their `quoted` parts (key ids, names).
fn warning_lines(warnings: &[Problem]) -> Vec<String> {
    let kind = |message: &str| -> String {
        message
            .split('`')
            .enumerate()
            .map(|(i, part)| if i % 2 == 1 { "`…`" } else { part })
            .collect()
    };
    let mut kinds: Vec<(String, Vec<&Problem>)> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for w in warnings {
        let k = kind(&w.message);
        match index.get(&k) {
            Some(&i) => kinds[i].1.push(w),
            None => {
                index.insert(k.clone(), kinds.len());
                kinds.push((k, vec![w]));
            }
        }
    }
    let mut lines = Vec::new();
    for (kind, all) in kinds {
        if all.len() <= WARNINGS_SHOWN {
            lines.extend(all.iter().map(|w| w.to_string()));
        } else {
            let first: Vec<String> = all[..WARNINGS_SHOWN]
                .iter()
                .map(|w| w.to_string())
                .collect();
            lines.push(format!(
                "{} warnings: {kind}; the first {WARNINGS_SHOWN}: {}",
                all.len(),
                first.join(" | ")
            ));
        }
    }
    lines
}

/// After a watcher-triggered reload fails (a file caught half-written, a file deleted and not yet
/// recreated, a secret file that is not there yet), the reload is tried again after each of these
/// delays, then given up until the next change in the directory. A change in the directory
/// meanwhile starts the schedule afresh.
pub const RETRY_DELAYS: [Duration; 5] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// Keeps the directory watcher alive; dropping it stops watching (and, at its next wake-up, the
/// reload thread).
pub struct Watcher {
    _watcher: notify::RecommendedWatcher,
}

/// Watches the rules directory (not the files: editors replace files by rename and Kubernetes
/// swaps a `..data` symlink, and both are events on the directory) and reloads once `debounce`
/// has passed with no further event, so a burst of writes becomes one reload.
///
/// Events only wake one reload thread (`akgate-rules-reload`) through a one-slot channel: reloads
/// never run on a request's task, never overlap, and a storm of events cannot queue up work or
/// threads. That thread waits for the quiet period (at most `10 × debounce` while events keep
/// coming), reloads, retries a failed reload on the [`RETRY_DELAYS`] schedule while the last good
/// set keeps serving, and exits when the watcher is dropped. Debouncing is done here rather than
/// per path (as `notify-debouncer-full` does): that one cancels a create followed by a remove of
/// the same path, which loses the event when a retry has loaded the file in between.
///
/// Which files count is decided by [`super::load::rule_files`]: only non-hidden `*.toml`, so
/// editor leftovers (`.keys.toml.swp`, `keys.toml~`, vim's `4913` probe) can wake the thread but
/// never change what is loaded, and the content hash turns such wake-ups into `unchanged`.
///
/// The watch is on the directory's inode. Replacing what is *inside* it is seen, including a
/// Kubernetes ConfigMap's `..data` symlink swap (the mount point itself is never replaced), but
/// files reached through symlinks that point out of the directory are not watched: a change
/// there is seen only by a retry still under way, `SIGHUP` or `POST /rules/reload`. If the
/// directory itself is deleted and recreated, or another directory is renamed over its path, the
/// watch stays with the old inode and later edits are not seen: reloading still reads the path,
/// so `SIGHUP` or `POST /rules/reload` picks up the new directory, and a restart re-attaches the
/// watch. Point `--rules` at a directory that is kept, not swapped (or at the ConfigMap mount).
pub fn watch(store: Arc<RulesStore>, debounce: Duration) -> notify::Result<Watcher> {
    use notify::{RecursiveMode, Watcher as _};
    use std::sync::mpsc;
    let dir = store.dir().to_path_buf();
    // One slot: a pending wake-up already covers any further event.
    let (wake, woken) = mpsc::sync_channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            // Opening and reading (our own reloads do) changes nothing.
            Ok(e) if e.kind.is_access() => {}
            Ok(_) => {
                let _ = wake.try_send(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "rules watcher error");
                // Events may have been lost: look for ourselves.
                let _ = wake.try_send(());
            }
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let quiet = debounce.max(Duration::from_millis(10));
    std::thread::Builder::new()
        .name("akgate-rules-reload".into())
        .spawn(move || reload_loop(&store, &woken, quiet, &RETRY_DELAYS))
        .map_err(notify::Error::io)?;
    Ok(Watcher { _watcher: watcher })
}

/// The reload thread: waits for a change, lets it settle, reloads, and retries failures. Returns
/// when the sending side (the watcher) is gone.
fn reload_loop(
    store: &RulesStore,
    woken: &std::sync::mpsc::Receiver<()>,
    quiet: Duration,
    delays: &[Duration],
) {
    use std::sync::mpsc::RecvTimeoutError;
    // At most this long between the first event of a burst and its reload, however long the
    // burst goes on (a file in the directory written continuously must not starve reloads).
    let max_settle = quiet * 10;
    'idle: while woken.recv().is_ok() {
        'changed: loop {
            // Settle: keep waiting while events keep coming.
            let started = std::time::Instant::now();
            loop {
                match woken.recv_timeout(quiet) {
                    Ok(()) if started.elapsed() < max_settle => continue,
                    Ok(()) | Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            let mut retries = delays.iter();
            loop {
                if !matches!(store.reload(), ReloadOutcome::Failed(_)) {
                    continue 'idle;
                }
                let Some(&delay) = retries.next() else {
                    tracing::warn!(
                        dir = %store.dir().display(),
                        "rule reload still failing after {} retries; waiting for the next change",
                        delays.len()
                    );
                    continue 'idle;
                };
                match woken.recv_timeout(delay) {
                    Ok(()) => continue 'changed,
                    Err(RecvTimeoutError::Timeout) => {
                        tracing::info!(?delay, "retrying the failed rule reload");
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(line: usize, message: String) -> Problem {
        Problem {
            file: "keys.toml".into(),
            line,
            col: 1,
            message,
        }
    }

    #[test]
    fn many_warnings_of_a_kind_become_one_line_and_rarer_ones_stay_visible() {
        let mut warnings: Vec<Problem> = (0..100_000)
            .map(|i| {
                problem(
                    i + 1,
                    format!("access key `LTAI{i}` has an inline secret; prefer secret_env"),
                )
            })
            .collect();
        warnings.insert(5, problem(7, "this rule refuses every request".into()));
        warnings.push(problem(9, "account `a` has no key".into()));
        let lines = warning_lines(&warnings);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("100000 warnings: access key `…` has an inline secret"));
        assert!(lines[0].contains("keys.toml:1:1: access key `LTAI0`"));
        assert!(lines[0].contains("`LTAI2`") && !lines[0].contains("`LTAI3`"));
        assert_eq!(lines[1], "keys.toml:7:1: this rule refuses every request");
        assert_eq!(lines[2], "keys.toml:9:1: account `a` has no key");
    }

    #[test]
    fn a_few_warnings_are_logged_as_they_are() {
        let warnings: Vec<Problem> = (0..WARNINGS_SHOWN)
            .map(|i| problem(i, format!("access key `k{i}` has an inline secret")))
            .collect();
        let lines = warning_lines(&warnings);
        let want: Vec<String> = warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(lines, want);
    }
}
