//! The live rule set: one `ArcSwap` pointer that requests load without locking, replaced whole
//! by a reload only when a new rule set compiled cleanly and differs from the current one.

use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::load::{read_for_reload, reload_sources};
use super::{LoadError, LoadOptions, Problem, Snapshot, load_dir};
use crate::time::{Clock, SystemClock, UnixSeconds};

/// What one reload did.
#[derive(Debug, Clone)]
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
    /// Serialises and paces reloads (watcher, SIGHUP, admin); held for a whole reload, pacing
    /// wait included. Requests and status reads never take it.
    pacing: Mutex<Pacing>,
    /// Reload history; taken only for short reads and updates, never across a reload, so the
    /// admin listener answers (on a runtime worker) while a long reload runs.
    status: Mutex<ReloadStatus>,
    /// Snapshots replaced by a reload, kept until no request holds them any more.
    retired: Arc<Retired>,
}

/// When reloads may run, and what the last one found.
#[derive(Default)]
struct Pacing {
    /// No reload starts before this: the last one's end plus its duration.
    not_before: Option<Instant>,
    /// When the last reload started reading the files, and its outcome.
    last: Option<(Instant, ReloadOutcome)>,
    /// (start, end) of every reload run, for the pacing tests.
    #[cfg(test)]
    runs: Vec<(Instant, Instant)>,
}

/// A request holds the snapshot it started with (an `Arc`) until its response is sent, upstream
/// round trip included. Were the store to let go of a replaced snapshot at once, the last such
/// request to finish would run its destructor: freeing 100k keys and their allowlist tries takes
/// tens to hundreds of milliseconds, on a runtime worker, stalling every connection it serves.
/// So the store keeps each replaced snapshot here, and a reclaimer thread
/// (`akgate-rules-reclaim`) drops it once it is the only holder left: a request's clone is then
/// never the last one.
///
/// Bounded: at most [`MAX_RETIRED`] are kept. Past that (a request holding a snapshot across
/// many reloads: a slow upstream, a long upload), the oldest is let go and freed by whoever holds
/// it last, as if there were no reclaimer; the list never grows without end.
struct Retired {
    state: Mutex<RetiredState>,
    /// Wakes the reclaimer: a snapshot was retired, or the store is gone.
    wake: Condvar,
}

#[derive(Default)]
struct RetiredState {
    held: Vec<Arc<Snapshot>>,
    /// The store was dropped: the reclaimer exits.
    closed: bool,
    reclaimer: Reclaimer,
}

#[derive(Default, PartialEq, Eq, Debug)]
enum Reclaimer {
    /// Started with the first retired snapshot (a store that never reloads needs no thread).
    #[default]
    NotStarted,
    Running,
    /// The thread could not be spawned; each reload sweeps instead, on its own thread.
    Unavailable,
    /// Unit tests drive [`Retired::sweep`] by hand.
    #[cfg(test)]
    Manual,
}

/// At most this many replaced snapshots are kept for the reclaimer; see [`Retired`].
const MAX_RETIRED: usize = 16;

/// The reclaimer looks again this soon after a snapshot is retired (requests in flight usually
/// finish within milliseconds), then backs off, doubling up to [`RECLAIM_MAX_DELAY`], while some
/// snapshot is still held. Reading a reference count is all a look costs.
const RECLAIM_FIRST_DELAY: Duration = Duration::from_millis(10);
const RECLAIM_MAX_DELAY: Duration = Duration::from_secs(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these leaves plain data behind, still consistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Retired {
    fn new() -> Arc<Self> {
        Arc::new(Retired {
            state: Mutex::new(RetiredState::default()),
            wake: Condvar::new(),
        })
    }

    /// Keeps `old` until nobody else holds it. Called by a reload, off the request path.
    fn retire(self: &Arc<Self>, old: Arc<Snapshot>) {
        let mut st = lock(&self.state);
        st.held.push(old);
        let mut freed = Vec::new();
        let mut given_up = None;
        if st.reclaimer == Reclaimer::NotStarted {
            st.reclaimer = match self.spawn_reclaimer() {
                Ok(()) => Reclaimer::Running,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the rules reclaimer thread; replaced rule sets are freed by the next reload");
                    Reclaimer::Unavailable
                }
            };
        }
        if st.reclaimer == Reclaimer::Unavailable || st.held.len() > MAX_RETIRED {
            freed = take_unshared(&mut st.held);
        }
        if st.held.len() > MAX_RETIRED {
            given_up = Some(st.held.remove(0));
        }
        let generation = given_up.as_ref().map(|s| s.generation);
        drop(st);
        self.wake.notify_all();
        // Freed here, on the reloading thread, outside the lock.
        drop(freed);
        if let Some(generation) = generation {
            tracing::info!(
                generation,
                "a replaced rule set is still in use after {MAX_RETIRED} reloads; the request holding it will free it"
            );
        }
        drop(given_up);
    }

    fn spawn_reclaimer(self: &Arc<Self>) -> std::io::Result<()> {
        let this = self.clone();
        std::thread::Builder::new()
            .name("akgate-rules-reclaim".into())
            .spawn(move || this.reclaim_loop())
            .map(drop)
    }

    /// Drops every retired snapshot nobody else holds any more; returns how many it dropped.
    fn sweep(&self) -> usize {
        let freed = take_unshared(&mut lock(&self.state).held);
        let n = freed.len();
        // Destructors run here, outside the lock, so a reload retiring meanwhile never waits.
        drop(freed);
        n
    }

    fn reclaim_loop(&self) {
        let mut delay = RECLAIM_FIRST_DELAY;
        loop {
            {
                let mut st = lock(&self.state);
                loop {
                    if st.closed {
                        return;
                    }
                    if !st.held.is_empty() {
                        break;
                    }
                    delay = RECLAIM_FIRST_DELAY;
                    st = self
                        .wake
                        .wait(st)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                // Wait before looking: a snapshot just retired is usually still in use for a few
                // milliseconds. A newly retired one or the store's end wakes this early.
                st = self
                    .wake
                    .wait_timeout(st, delay)
                    .map(|(st, _)| st)
                    .unwrap_or_else(|poisoned| poisoned.into_inner().0);
                if st.closed {
                    return;
                }
            }
            if self.sweep() == 0 {
                delay = (delay * 2).min(RECLAIM_MAX_DELAY);
            } else {
                delay = RECLAIM_FIRST_DELAY;
            }
        }
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.wake.notify_all();
    }
}

/// Takes out of `held` the snapshots only the list still holds. A retired snapshot is no longer
/// reachable through the store's pointer, so nobody can take a new reference to it: once its count
/// is 1, it stays 1.
fn take_unshared(held: &mut Vec<Arc<Snapshot>>) -> Vec<Arc<Snapshot>> {
    let mut freed = Vec::new();
    let mut i = 0;
    while i < held.len() {
        if Arc::strong_count(&held[i]) == 1 {
            freed.push(held.remove(i));
        } else {
            i += 1;
        }
    }
    freed
}

/// The reclaimer thread exits when the store goes (it is never joined: nothing waits for it).
impl Drop for RulesStore {
    fn drop(&mut self) {
        self.retired.close();
    }
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
            pacing: Mutex::new(Pacing::default()),
            status: Mutex::new(ReloadStatus {
                last_success_at: Some(now),
                ..Default::default()
            }),
            retired: Retired::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current snapshot. One atomic load and reference-count increment; no lock. Hold it as
    /// long as the request needs it: a snapshot replaced meanwhile is freed by the store's
    /// reclaimer thread, not by the caller's drop (see [`Retired`]).
    #[inline]
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn status(&self) -> ReloadStatus {
        lock(&self.status).clone()
    }

    /// Re-reads the directory. A rule set that fails to load is refused whole and the current one
    /// keeps serving; a new generation is made only for a valid set whose content hash differs.
    /// Any valid outcome clears `last_error`.
    ///
    /// Every trigger (the watcher, `SIGHUP`, `POST /rules/reload`) comes through here, and reloads
    /// are paced: a reload that took T is not followed by the next before T has passed (it waits,
    /// on the caller's thread, which is never a request's), so back-to-back reloads of a large
    /// rule set use at most about half a CPU, and the request workers keep the rest. Triggers
    /// that arrive while a reload waits or runs are not queued up one reload each: a call returns
    /// the outcome of a reload that started reading the files after the call arrived (that reload
    /// saw every change made before the call), and only otherwise reloads itself.
    pub fn reload(&self) -> ReloadOutcome {
        self.reload_arrived(Instant::now())
    }

    /// [`Self::reload`] for a trigger that arrived at `arrived`.
    fn reload_arrived(&self, arrived: Instant) -> ReloadOutcome {
        let mut pacing = lock(&self.pacing);
        if let Some((started, outcome)) = &pacing.last
            && *started > arrived
        {
            return outcome.clone();
        }
        if let Some(wait) = pacing
            .not_before
            .and_then(|t| t.checked_duration_since(Instant::now()))
        {
            std::thread::sleep(wait);
        }
        let started = Instant::now();
        let outcome = self.reload_now();
        let ended = Instant::now();
        pacing.not_before = Some(ended + (ended - started));
        pacing.last = Some((started, outcome.clone()));
        #[cfg(test)]
        pacing.runs.push((started, ended));
        outcome
    }

    fn reload_now(&self) -> ReloadOutcome {
        let now = SystemClock.now();
        match self.load_next() {
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "rule reload refused; the previous rule set keeps serving");
                {
                    let mut status = lock(&self.status);
                    status.last_error = Some(e.to_string());
                    status.last_error_at = Some(now);
                }
                crate::metrics::rules_reload_failed();
                ReloadOutcome::Failed(e)
            }
            Ok(None) => {
                lock(&self.status).last_error = None;
                crate::metrics::rules_reload_unchanged();
                ReloadOutcome::Unchanged
            }
            Ok(Some(mut snap)) => {
                let current = self.current.load();
                if snap.content_hash == current.content_hash {
                    // The files are good again (a half-written file completed, a deleted one
                    // restored as it was): an earlier failure no longer describes them.
                    lock(&self.status).last_error = None;
                    crate::metrics::rules_reload_unchanged();
                    return ReloadOutcome::Unchanged;
                }
                snap.generation = current.generation + 1;
                snap.loaded_at = now;
                let generation = snap.generation;
                log_warnings(&snap.warnings);
                crate::metrics::rules_loaded(&snap, "success", now);
                drop(current);
                let old = self.current.swap(Arc::new(snap));
                {
                    let mut status = lock(&self.status);
                    status.last_error = None;
                    status.last_success_at = Some(now);
                }
                self.retired.retire(old);
                tracing::info!(generation, "rules reloaded");
                ReloadOutcome::Applied { generation }
            }
        }
    }
}

impl RulesStore {
    /// Reads and compiles the directory as it is now, refusing files caught mid-write. `None`:
    /// the rule set is the current one (same files, same outside values), found without parsing
    /// or compiling it; a reload with nothing changed costs a read and a hash of the files. A
    /// reload where no file with keys or accounts changed reuses the current set's compiled keys
    /// ([`reload_sources`]).
    fn load_next(&self) -> Result<Option<Snapshot>, LoadError> {
        // Held for the whole compile: an `Arc`, not a guard, which is for short reads.
        let current = self.current.load_full();
        let read = read_for_reload(&self.dir, &current)?;
        reload_sources(&self.dir, read, &current, &self.opts)
    }
}

/// Warnings of one kind past this many are summarised in one line.
const WARNINGS_SHOWN: usize = 3;

/// Logs a rule set's warnings, one `WARN` line each, except that a kind of warning repeated more
/// than [`WARNINGS_SHOWN`] times (100k keys with inline secrets) becomes one line with its count
/// and its first few instances: a reload must not flood the log, nor bury a rarer warning (a rule
/// that refuses everything) among a hundred thousand alike.
pub fn log_warnings(warnings: &super::Warnings) {
    for line in warnings.log_lines() {
        tracing::warn!(warning = %line, "rule warning");
    }
}

/// The lines [`log_warnings`] writes. Warnings are of one kind when their messages agree outside
/// their `quoted` parts (key ids, names).
pub(crate) fn warning_lines<'a>(warnings: impl IntoIterator<Item = &'a Problem>) -> Vec<String> {
    // Grouped without building each message's kind: a reload logs 100k warnings of one kind.
    let mut kinds: Vec<(Kind<'a>, Vec<&Problem>)> = Vec::new();
    let mut index: std::collections::HashMap<Kind<'a>, usize> = std::collections::HashMap::new();
    for w in warnings {
        let k = Kind(&w.message);
        match index.get(&k) {
            Some(&i) => kinds[i].1.push(w),
            None => {
                index.insert(k, kinds.len());
                kinds.push((k, vec![w]));
            }
        }
    }
    let mut lines = Vec::new();
    for (kind, all) in kinds {
        let kind = kind.shown();
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

/// A warning's message compared outside its `quoted` parts.
#[derive(Clone, Copy)]
struct Kind<'a>(&'a str);

impl<'a> Kind<'a> {
    /// The parts outside quotes, and `None` for each quoted one.
    fn outside_quotes(self) -> impl Iterator<Item = Option<&'a str>> {
        self.0
            .split('`')
            .enumerate()
            .map(|(i, part)| (i % 2 == 0).then_some(part))
    }

    fn shown(self) -> String {
        self.0
            .split('`')
            .enumerate()
            .map(|(i, part)| if i % 2 == 1 { "`…`" } else { part })
            .collect()
    }
}

impl PartialEq for Kind<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.outside_quotes().eq(other.outside_quotes())
    }
}

impl Eq for Kind<'_> {}

impl std::hash::Hash for Kind<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for part in self.outside_quotes() {
            match part {
                Some(p) => {
                    state.write(p.as_bytes());
                    state.write_u8(0xff);
                }
                None => state.write_u8(0xfe),
            }
        }
    }
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
/// threads. Like every reload, they are paced (see [`RulesStore::reload`]). That thread waits for the quiet period (at most `10 × debounce` while events keep
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

    #[test]
    fn many_warnings_of_a_kind_become_one_line_and_rarer_ones_stay_visible() {
        let mut warnings: Vec<Problem> = (0..100_000)
            .map(|i| {
                Problem::in_keys_file(
                    i + 1,
                    format!("access key `LTAI{i}` has an inline secret; prefer secret_env"),
                )
            })
            .collect();
        warnings.insert(
            5,
            Problem::in_keys_file(7, "this rule refuses every request".into()),
        );
        warnings.push(Problem::in_keys_file(9, "account `a` has no key".into()));
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
            .map(|i| Problem::in_keys_file(i, format!("access key `k{i}` has an inline secret")))
            .collect();
        let lines = warning_lines(&warnings);
        let want: Vec<String> = warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(lines, want);
    }
}

#[cfg(test)]
mod retire_tests {
    use super::*;
    use std::sync::Weak;

    const RULES: &str = r#"
[[account]]
id = "1001"

[[access_key]]
id = "AK1"
account = "1001"
secret = "s1"
status = "active"

[[service]]
name = "ecs"

[[route]]
path_prefix = "/"
service = "ecs"
upstream = "http://127.0.0.1:9000"
"#;

    /// A store on a fresh directory; `manual`: no reclaimer thread, the test sweeps.
    fn store(manual: bool) -> (tempfile::TempDir, RulesStore) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("rules.toml"), RULES).unwrap();
        let store = RulesStore::open(d.path(), LoadOptions::default()).unwrap();
        if manual {
            lock(&store.retired.state).reclaimer = Reclaimer::Manual;
        }
        (d, store)
    }

    /// Edits the rule set (a new account name each time) and reloads it.
    fn edit_and_reload(dir: &Path, store: &RulesStore, n: usize) {
        let text = RULES.replace(
            "id = \"1001\"\n",
            &format!("id = \"1001\"\nname = \"n{n}\"\n"),
        );
        std::fs::write(dir.join("rules.toml"), text).unwrap();
        assert!(
            matches!(store.reload(), ReloadOutcome::Applied { .. }),
            "edit {n}"
        );
    }

    fn held(store: &RulesStore) -> usize {
        lock(&store.retired.state).held.len()
    }

    #[test]
    fn a_replaced_snapshot_outlives_its_last_request_until_swept() {
        let (d, store) = store(true);
        let in_flight = store.load();
        let weak: Weak<Snapshot> = Arc::downgrade(&in_flight);
        edit_and_reload(d.path(), &store, 1);
        assert_eq!(store.load().generation, 2);
        assert_eq!(store.retired.sweep(), 0, "still in use by the request");
        // The request ends: its drop is not the last one, the store still holds the snapshot.
        drop(in_flight);
        assert!(weak.upgrade().is_some(), "freed by the request's drop");
        assert_eq!(held(&store), 1);
        assert_eq!(store.retired.sweep(), 1);
        assert!(weak.upgrade().is_none(), "the sweep freed it");
        assert_eq!(held(&store), 0);
        // A snapshot nobody held when it was replaced goes at the next sweep too.
        let weak = Arc::downgrade(&store.load());
        edit_and_reload(d.path(), &store, 2);
        assert!(weak.upgrade().is_some());
        assert_eq!(store.retired.sweep(), 1);
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn the_reclaimer_thread_frees_replaced_snapshots() {
        let (d, store) = store(false);
        let in_flight = store.load();
        let weak = Arc::downgrade(&in_flight);
        edit_and_reload(d.path(), &store, 1);
        assert_eq!(lock(&store.retired.state).reclaimer, Reclaimer::Running);
        drop(in_flight);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while weak.upgrade().is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(weak.upgrade().is_none(), "never reclaimed");
        assert_eq!(held(&store), 0);
        // Dropping the store ends the reclaimer without waiting for anything.
        let in_flight = store.load();
        edit_and_reload(d.path(), &store, 2);
        drop(store);
        assert_eq!(
            in_flight.generation, 2,
            "a request's snapshot outlives the store"
        );
    }

    #[test]
    fn snapshots_held_across_many_reloads_do_not_grow_the_list() {
        let (d, store) = store(true);
        let mut in_flight = Vec::new();
        for n in 0..MAX_RETIRED + 3 {
            in_flight.push(store.load());
            edit_and_reload(d.path(), &store, n);
            assert!(held(&store) <= MAX_RETIRED, "{}", held(&store));
        }
        assert_eq!(held(&store), MAX_RETIRED);
        // The oldest were let go: their last holder (this test) frees them.
        let oldest = Arc::downgrade(&in_flight[0]);
        let newest = Arc::downgrade(in_flight.last().unwrap());
        in_flight.clear();
        assert!(oldest.upgrade().is_none(), "given up by the store");
        assert!(newest.upgrade().is_some(), "kept for the reclaimer");
        assert_eq!(store.retired.sweep(), MAX_RETIRED);
        assert!(newest.upgrade().is_none());
        // Snapshots nobody holds are swept on the way rather than given up.
        for n in 100..100 + 2 * MAX_RETIRED {
            edit_and_reload(d.path(), &store, n);
        }
        assert!(held(&store) <= MAX_RETIRED);
    }

    fn runs(store: &RulesStore) -> Vec<(Instant, Instant)> {
        lock(&store.pacing).runs.clone()
    }

    #[test]
    fn a_reload_that_took_t_is_followed_by_the_next_after_t() {
        let (d, store) = store(true);
        // Enough keys that a reload takes a while.
        let mut text = RULES.to_string();
        for i in 0..2000 {
            text.push_str(&format!(
                "[[access_key]]\nid = \"AKX{i}\"\naccount = \"1001\"\nsecret = \"s{i}\"\nstatus = \"active\"\n"
            ));
        }
        std::fs::write(d.path().join("rules.toml"), &text).unwrap();
        assert!(matches!(store.reload(), ReloadOutcome::Applied { .. }));
        // Unchanged and failed reloads cost as much and are paced alike.
        assert!(matches!(store.reload(), ReloadOutcome::Unchanged));
        std::fs::write(d.path().join("rules.toml"), "[[access_key]\n").unwrap();
        assert!(matches!(store.reload(), ReloadOutcome::Failed(_)));
        std::fs::write(d.path().join("rules.toml"), &text).unwrap();
        assert!(matches!(store.reload(), ReloadOutcome::Unchanged));
        let runs = runs(&store);
        assert_eq!(runs.len(), 4);
        for pair in runs.windows(2) {
            let ((s1, e1), (s2, _)) = (pair[0], pair[1]);
            assert!(s2 >= e1 + (e1 - s1), "{pair:?}");
        }
    }

    #[test]
    fn triggers_arriving_during_a_reload_share_its_outcome() {
        let (d, store) = store(true);
        let store = Arc::new(store);
        let arrived = Instant::now();
        std::fs::write(d.path().join("rules.toml"), RULES.replace("s1", "s2")).unwrap();
        // Five triggers arrive while another reload holds the store (here: the test).
        let pacing = lock(&store.pacing);
        let threads: Vec<_> = (0..5)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || store.reload_arrived(arrived))
            })
            .collect();
        drop(pacing);
        for t in threads {
            let outcome = t.join().unwrap();
            assert!(
                matches!(outcome, ReloadOutcome::Applied { generation: 2 }),
                "{outcome:?}"
            );
        }
        assert_eq!(
            runs(&store).len(),
            1,
            "one reload read the files for all five"
        );
        // A trigger arriving after that reload started reads the files itself.
        assert!(matches!(store.reload(), ReloadOutcome::Unchanged));
        assert_eq!(runs(&store).len(), 2);
    }

    #[test]
    fn without_a_reclaimer_each_reload_sweeps() {
        let (d, store) = store(true);
        lock(&store.retired.state).reclaimer = Reclaimer::Unavailable;
        let weak = Arc::downgrade(&store.load());
        edit_and_reload(d.path(), &store, 1);
        edit_and_reload(d.path(), &store, 2);
        assert!(weak.upgrade().is_none());
        assert_eq!(
            held(&store),
            0,
            "nobody held them: freed by the reloads themselves"
        );
    }
}

/// A reload that reuses the served set's compiled keys must give the snapshot a full load of the
/// same directory gives.
#[cfg(test)]
mod incremental_tests {
    use super::*;
    use crate::rules::load::LoadOptions;
    use hmac::Mac;
    use std::net::IpAddr;

    const ACCOUNTS: &str = r#"
[[account]]
id = "1001"
api_source_cidrs = ["10.0.0.0/8", "2001:db8::/32"]

[[account]]
id = "1002"

[[user]]
name = "alice"
account = "1001"
api_source_cidrs = ["10.1.0.0/16"]
"#;

    const KEYS: &str = r#"
[[access_key]]
id = "AK1"
account = "1002"
secret = "inline-1"
status = "active"

[[access_key]]
id = "AK2"
account = "1002"
secret_file = "ak2.secret"
status = "active"

[[access_key]]
id = "AK3"
account = "1001"
user = "alice"
secret_env = "AKGATE_INCR_AK3"
status = "active"
api_source_cidrs = ["10.1.2.0/24"]

[[access_key]]
id = "AK4"
account = "1001"
secret = "inline-4"
status = "disabled"

[[access_key]]
id = "AK5"
account = "1001"
user = "alice"
secret = "inline-5"
status = "active"
api_source_cidrs = ["192.168.0.0/16"]
"#;

    const LEAKED: &str = r#"
[[leaked_key]]
id = "AK1"
reason = "pasted in a chat"

[[leaked_key]]
id = "AKNOPE"
"#;

    const ROUTES: &str = r#"
[[service]]
name = "ecs"
actions = ["DeleteInstance", "Create*"]

[[critical]]
service = "ecs"
actions = ["DeleteInstance"]
mode = "shadow"

[[route]]
host = "ecs.example.internal"
service = "ecs"
upstream = "http://127.0.0.1:9000"
"#;

    const PROBES: [&str; 6] = [
        "10.1.2.3",
        "10.9.9.9",
        "192.168.1.1",
        "2001:db8::1",
        "127.0.0.1",
        "::ffff:10.1.2.3",
    ];

    /// Everything a request's decision reads from a key, in comparable form.
    fn key_facts(k: &crate::rules::AccessKey) -> String {
        let mac = match &k.material {
            crate::rules::KeyMaterial::Secret(s) => {
                let mut m = s.hmac_sha256();
                m.update(b"probe");
                crate::auth::encoding::hex_lower(&m.finalize().into_bytes())
            }
            crate::rules::KeyMaterial::RsaPublicKey(r) => format!("{:?}", r.der),
        };
        // Each level's answer for each probe address.
        let allowed: Vec<(bool, Option<bool>, bool)> = PROBES
            .iter()
            .map(|ip| {
                let ip: IpAddr = ip.parse().unwrap();
                let ip = crate::policy::allowlist::canonical_ip(ip);
                (
                    k.account.allow.contains(ip),
                    k.user.as_ref().map(|u| u.allow.contains(ip)),
                    k.allow.contains(ip),
                )
            })
            .collect();
        format!(
            "{} {:?} {:?} {:?} {:?} {:?} {:?} {} {:?} {:?} {} {:?} {:?} {:?}",
            k.id,
            k.status,
            k.account.id,
            k.account.allow,
            k.user.as_ref().map(|u| (&u.name, &u.allow, &u.origin)),
            k.allow,
            k.leaked,
            mac,
            k.temporary,
            k.created_at,
            k.origin,
            k.allow_mode,
            allowed,
            k.totp.is_some(),
        )
    }

    fn risks(m: &std::collections::HashMap<String, crate::rules::ServiceRisk>) -> Vec<String> {
        let mut out: Vec<String> = m
            .iter()
            .map(|(name, r)| {
                let mut actions: Vec<&String> = r.actions.iter().collect();
                actions.sort();
                format!(
                    "{name} {} {actions:?} {:?} {:?} {:?}",
                    r.all, r.prefixes, r.mode, r.origin
                )
            })
            .collect();
        out.sort();
        out
    }

    fn sorted(ps: impl IntoIterator<Item = impl ToString>) -> Vec<String> {
        let mut v: Vec<String> = ps.into_iter().map(|p| p.to_string()).collect();
        v.sort();
        v
    }

    /// `inc` decides every request as `full` does.
    fn assert_same(inc: &Snapshot, full: &Snapshot, step: &str) {
        assert_eq!(inc.content_hash, full.content_hash, "{step}: content hash");
        assert_eq!(inc.external_inputs, full.external_inputs, "{step}");
        assert_eq!(inc.usable_keys, full.usable_keys, "{step}: usable keys");
        assert_eq!(inc.keys.len(), full.keys.len(), "{step}: key count");
        for (id, k) in full.keys.iter() {
            let got = inc
                .keys
                .get(id)
                .unwrap_or_else(|| panic!("{step}: {id} missing"));
            assert_eq!(key_facts(got), key_facts(k), "{step}: key {id}");
        }
        let mut ids: Vec<_> = inc.keys.keys().collect();
        ids.sort();
        let mut by_iter: Vec<_> = inc.keys.iter().map(|(id, k)| (id, key_facts(k))).collect();
        by_iter.sort();
        let mut want: Vec<_> = full.keys.iter().map(|(id, k)| (id, key_facts(k))).collect();
        want.sort();
        assert_eq!(by_iter, want, "{step}: iterating the keys");
        assert_eq!(sorted(&inc.warnings), sorted(&full.warnings), "{step}");
        assert_eq!(inc.warnings.len(), full.warnings.len(), "{step}");
        // Logged part by part as if grouped whole.
        assert_eq!(
            sorted(inc.warnings.log_lines()),
            sorted(warning_lines(full.warnings.iter())),
            "{step}: logged"
        );
        assert_eq!(
            format!("{:?}", inc.routes),
            format!("{:?}", full.routes),
            "{step}"
        );
        assert_eq!(risks(&inc.services), risks(&full.services), "{step}");
        assert_eq!(risks(&inc.critical), risks(&full.critical), "{step}");
        assert_eq!(
            format!("{:?}", inc.settings),
            format!("{:?}", full.settings),
            "{step}"
        );
        let names = |s: &Snapshot| -> Vec<(String, u64)> {
            s.sources
                .iter()
                .map(|f| (f.name.to_string(), f.len))
                .collect()
        };
        assert_eq!(names(inc), names(full), "{step}");
    }

    struct World {
        dir: tempfile::TempDir,
        opts: LoadOptions,
        store: RulesStore,
        env: Arc<Mutex<String>>,
    }

    impl World {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let w = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
            w("accounts.toml", ACCOUNTS);
            w("keys.toml", KEYS);
            w("leaked.toml", LEAKED);
            w("routes.toml", ROUTES);
            w("settings.toml", "[settings]\nclock_skew = \"5m\"\n");
            w("ak2.secret", "from-a-file\n");
            let env = Arc::new(Mutex::new("from-env".to_string()));
            let e = env.clone();
            let opts = LoadOptions {
                env: Arc::new(move |n| (n == "AKGATE_INCR_AK3").then(|| e.lock().unwrap().clone())),
                upstream_override: None,
            };
            let store = RulesStore::open(dir.path(), opts.clone()).unwrap();
            World {
                dir,
                opts,
                store,
                env,
            }
        }

        fn write(&self, name: &str, text: &str) {
            std::fs::write(self.dir.path().join(name), text).unwrap();
        }

        fn remove(&self, name: &str) {
            std::fs::remove_file(self.dir.path().join(name)).unwrap();
        }

        fn read(&self, name: &str) -> String {
            std::fs::read_to_string(self.dir.path().join(name)).unwrap()
        }

        /// Reloads; checks the outcome against a full load of the directory, and whether the
        /// compiled keys were reused as `reused` says.
        fn step(&self, step: &str, reused: bool) {
            let before = self.store.load();
            let outcome = self.store.reload();
            let full = crate::rules::load_dir(self.dir.path(), &self.opts);
            match (outcome, full) {
                (ReloadOutcome::Applied { .. }, Ok(full)) => {
                    let now = self.store.load();
                    assert_same(&now, &full, step);
                    assert_eq!(
                        now.keys.shares_keys_with(&before.keys),
                        reused,
                        "{step}: compiled keys reused"
                    );
                }
                (ReloadOutcome::Failed(e), Err(full)) => {
                    assert_eq!(sorted(&e.problems), sorted(&full.problems), "{step}");
                    assert!(
                        e.problems.iter().all(|p| p.line > 0),
                        "{step}: errors name a line: {e}"
                    );
                    assert!(
                        Arc::ptr_eq(&before, &self.store.load()),
                        "{step}: still served"
                    );
                }
                (ReloadOutcome::Unchanged, Ok(full)) => {
                    let now = self.store.load();
                    assert!(Arc::ptr_eq(&before, &now), "{step}: unchanged");
                    assert_same(&now, &full, step);
                }
                (o, f) => panic!("{step}: reload {o:?}, full load {:?}", f.map(|_| "ok")),
            }
        }
    }

    #[test]
    fn a_reload_reusing_the_compiled_keys_equals_a_full_load() {
        let w = World::new();
        let full = crate::rules::load_dir(w.dir.path(), &w.opts).unwrap();
        assert_same(&w.store.load(), &full, "open");

        // Leaked flags: one added, one changed, then the whole file moved down two lines
        // (every flag's origin changes).
        let leaked = LEAKED.replace("pasted in a chat", "in a public repo")
            + "\n[[leaked_key]]\nid = \"AK3\"\nmode = \"shadow\"\n";
        w.write("leaked.toml", &leaked);
        w.step("leaked flags edited", true);
        w.write("leaked.toml", &format!("\n\n{leaked}"));
        w.step("leaked flags moved", true);

        // A file with leaked flags and routes added, changed, then removed.
        w.write(
            "zz-extra.toml",
            "[[leaked_key]]\nid = \"AK5\"\n\n[[service]]\nname = \"vpc\"\n",
        );
        w.step("a file added", true);
        w.write(
            "zz-extra.toml",
            "[[leaked_key]]\nid = \"AK4\"\nreason = \"x\"\n",
        );
        w.step("the added file rewritten", true);
        w.remove("zz-extra.toml");
        w.step("the added file removed", true);

        // The first file to flag a key gives its flag: a file sorted before `leaked.toml` takes
        // over a flag that file still holds, unchanged, and gives it back when it goes.
        w.write(
            "aa-first.toml",
            "[[leaked_key]]\nid = \"AK1\"\nreason = \"seen first here\"\n\n[[leaked_key]]\nid = \"AK2\"\n\n[[leaked_key]]\nid = \"AK2\"\nmode = \"shadow\"\n",
        );
        w.step("an earlier file flags the same key", true);
        w.remove("aa-first.toml");
        w.step("the earlier file removed", true);

        // Routes, critical operations and settings.
        w.write("routes.toml", &ROUTES.replace("9000", "9001"));
        w.step("an upstream changed", true);
        w.write(
            "settings.toml",
            "[settings]\nclock_skew = \"1m\"\ntrusted_proxies = [\"10.0.0.1\"]\n",
        );
        w.step("settings changed", true);

        // Errors, in a file without keys: refused with the full load's problems, then fixed.
        w.write(
            "routes.toml",
            &ROUTES.replace("service = \"ecs\"\nupstream", "service = \"ebs\"\nupstream"),
        );
        w.step("a route to an unknown service", true);
        w.write("leaked.toml", "[[leaked_key]\nid = \"AK1\"\n");
        w.step("a syntax error", true);
        w.write("routes.toml", ROUTES);
        w.write("leaked.toml", LEAKED);
        w.step("errors fixed", true);

        // Changes to keys, accounts and outside values compile the keys again.
        w.write(
            "keys.toml",
            &KEYS.replace("status = \"disabled\"", "status = \"active\""),
        );
        w.step("a key enabled", false);
        // With the keys just compiled, `leaked.toml` is unchanged since they were: a later file
        // flags a key it flags (its flag stands), one the table lacks, and one of its own; a
        // file without flags sorted before `leaked.toml` moves it down the list, not out of the
        // unchanged leading files.
        w.write(
            "zz-extra.toml",
            "[[leaked_key]]\nid = \"AK1\"\nreason = \"later\"\n\n[[leaked_key]]\nid = \"AKNOPE2\"\n\n[[leaked_key]]\nid = \"AK2\"\n",
        );
        w.step("a later file flags a key flagged earlier", true);
        w.write("b-services.toml", "[[service]]\nname = \"vpc\"\n");
        w.step("a file without flags sorted first", true);
        w.write(
            "zz-extra.toml",
            "[[leaked_key]]\nid = \"AK2\"\nmode = \"shadow\"\n",
        );
        w.step("the later file edited behind it", true);
        w.remove("b-services.toml");
        w.remove("zz-extra.toml");
        w.step("both removed", true);
        // Keys compiled while a later file flags a key `leaked.toml` flags too: dropping the
        // later flag leaves the earlier one in force.
        w.write(
            "zz-extra.toml",
            "[[leaked_key]]\nid = \"AK1\"\nreason = \"later\"\n",
        );
        *w.env.lock().unwrap() = "rotated-while-flagged".into();
        w.step("keys compiled with a key flagged twice", false);
        w.write("zz-extra.toml", "# none\n");
        w.step("the later flag dropped", true);
        w.remove("zz-extra.toml");
        w.step("the later file removed", true);
        w.write("leaked.toml", "# none\n");
        w.step("every flag removed", true);
        w.write("ak2.secret", "rotated\n");
        w.step("a secret file rotated", false);
        *w.env.lock().unwrap() = "rotated-env".into();
        w.step("a secret variable rotated", false);
        w.write(
            "accounts.toml",
            &ACCOUNTS.replace("10.1.0.0/16", "10.1.2.0/24"),
        );
        w.step("a user's allowlist narrowed", false);
        w.write("zz-keys.toml", &format!("{}\n[[leaked_key]]\nid = \"AK6\"\n", "[[access_key]]\nid = \"AK6\"\naccount = \"1002\"\nsecret = \"s6\"\nstatus = \"active\"\n"));
        w.step("a file with a key added", false);
        w.remove("zz-keys.toml");
        w.step("a file with a key removed", false);
        w.write("zz-keys.toml", &format!("{}\n[[leaked_key]]\nid = \"AK6\"\n", "[[access_key]]\nid = \"AK6\"\naccount = \"1002\"\nsecret = \"s6\"\nstatus = \"active\"\n"));
        w.step("and added again", false);
        w.write("zz-keys.toml", "[[leaked_key]]\nid = \"AK6\"\n");
        w.step("its key taken out", false);
        w.write("zz-keys.toml", "[[access_key]]\nid = \"AK7\"\naccount = \"1002\"\nsecret_env = \"UNSET_VAR\"\nstatus = \"active\"\n");
        w.step("a key whose secret cannot be read", false);
        w.remove("zz-keys.toml");
        // Removed as the served set has it (the failed reload applied nothing): no key tables.
        w.step("the key file removed", true);
        let keys = w.read("keys.toml");
        w.write(
            "keys.toml",
            &keys.replace(
                "account = \"1002\"\nsecret = \"inline-1\"",
                "account = \"1003\"\nsecret = \"inline-1\"",
            ),
        );
        w.step("a key of an unknown account", false);
        w.write("keys.toml", &keys);
        w.step("keys fixed: the set served", true);
        w.write("leaked.toml", LEAKED);
        w.step("flags back", true);
    }
}
