//! The live rule set: one `ArcSwap` pointer that requests load without locking, replaced whole
//! by a reload only when a new rule set compiled cleanly and differs from the current one.

use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{LoadError, LoadOptions, Snapshot, load_dir};
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
    /// keeps serving.
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
                    crate::metrics::rules_reload_unchanged();
                    return ReloadOutcome::Unchanged;
                }
                snap.generation = current.generation + 1;
                snap.loaded_at = now;
                let generation = snap.generation;
                for w in &snap.warnings {
                    tracing::warn!(warning = %w, "rule warning");
                }
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

/// Keeps the directory watcher alive; dropping it stops watching.
pub struct Watcher {
    _debouncer: notify_debouncer_full::Debouncer<
        notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
}

/// Watches the rules directory (not the files: editors replace files by rename and Kubernetes
/// swaps a `..data` symlink, and both are events on the directory) and reloads after a quiet
/// period, so a burst of writes becomes one reload.
pub fn watch(store: Arc<RulesStore>, debounce: Duration) -> notify::Result<Watcher> {
    use notify::RecursiveMode;
    let dir = store.dir().to_path_buf();
    let mut debouncer = notify_debouncer_full::new_debouncer(
        debounce,
        None,
        move |result: notify_debouncer_full::DebounceEventResult| match result {
            Ok(events) => {
                if events.iter().any(|e| !e.kind.is_access()) {
                    store.reload();
                }
            }
            Err(errors) => {
                for e in errors {
                    tracing::warn!(error = %e, "rules watcher error");
                }
            }
        },
    )?;
    debouncer.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(Watcher {
        _debouncer: debouncer,
    })
}
