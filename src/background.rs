//! Work that must not take a CPU from requests while a request wants it.
//!
//! Linux's scheduler lets a running thread finish a protected slice (about a millisecond on a
//! small machine) before a request worker that just woke up gets the CPU, whatever the running
//! thread's nice value. A reload sharing a CPU with a worker therefore delays every request that
//! arrives while it runs by up to that slice: at 10 reloads a second, that was the p99. A
//! `SCHED_IDLE` thread is the one exception: a waking worker preempts it at once.
//!
//! The price is that an idle thread gets almost nothing while the workers keep every CPU busy.
//! Only work that is small runs here: a reload that reuses the compiled keys (a leaked-key
//! list, a route, a setting; 1 ms of CPU at 100k keys) still took 2 to 7 ms with one core at full
//! load in the benchmark. A reload that compiles keys again (a key disabled or added) does not:
//! at full load an idle thread took over 20 s for 100k keys, against 1.3 s at normal priority,
//! and disabling a key must not wait for the load to drop.

/// Runs `work` on a new thread at the lowest scheduling priority the OS has, and waits for it.
/// Where that priority cannot be had (not Linux, a sandbox refusing the call), `work` still runs,
/// at the priority it gets.
///
/// A new thread each time, because a thread cannot raise its own priority again without
/// privileges, and threads inherit their creator's: an idle thread must never be one that later
/// runs other work (tokio's blocking pool, say), nor spawn one.
pub(crate) fn run_idle<T: Send>(name: &str, work: impl FnOnce() -> T + Send) -> T {
    // Taken back if the thread cannot be started.
    let work = std::sync::Mutex::new(Some(work));
    let done = std::thread::scope(|s| {
        let started = std::thread::Builder::new()
            .name(name.to_string())
            .spawn_scoped(s, || {
                lower_this_thread();
                take(&work).map(|w| w())
            });
        match started {
            Ok(handle) => Some(
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            ),
            Err(e) => {
                tracing::debug!(error = %e, "cannot start a low-priority thread; working on this one");
                None
            }
        }
    });
    match done.flatten() {
        Some(out) => out,
        // The thread was not started (or never took the work): do it here.
        None => match take(&work) {
            Some(w) => w(),
            // The spawned thread took it and returned: `done` was `Some(Some(_))`.
            None => unreachable!("the work ran but gave no result"),
        },
    }
}

fn take<F>(work: &std::sync::Mutex<Option<F>>) -> Option<F> {
    // Poisoned only by a panic in `work` itself, which `run_idle` propagates before looking again.
    work.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take()
}

/// Moves the calling thread to `SCHED_IDLE`, for good. Quietly does nothing where that is not
/// possible: the work is the same, only its effect on requests' latency differs.
pub(crate) fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
            set_thread_priority_and_policy, thread_native_id,
        };
        if let Err(e) = set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        ) {
            tracing::debug!(error = ?e, "cannot lower this thread's scheduling priority");
        }
    }
}

/// Whether the calling thread runs at `SCHED_IDLE`, for tests.
#[cfg(test)]
pub(crate) fn this_thread_is_idle() -> bool {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};
        matches!(
            thread_priority::unix::thread_schedule_policy(),
            Ok(ThreadSchedulePolicy::Normal(
                NormalThreadSchedulePolicy::Idle
            ))
        )
    }
    #[cfg(not(target_os = "linux"))]
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_runs_on_an_idle_thread_and_its_result_comes_back() {
        let outside = std::thread::current().id();
        let (inside, idle, borrowed) = run_idle("test-idle", || {
            (std::thread::current().id(), this_thread_is_idle(), outside)
        });
        assert_ne!(inside, outside, "ran on a thread of its own");
        assert_eq!(borrowed, outside);
        if cfg!(target_os = "linux") {
            assert!(idle, "SCHED_IDLE needs no privilege on Linux");
        }
        assert!(!this_thread_is_idle(), "the caller keeps its priority");
    }

    #[test]
    fn a_panic_in_the_work_reaches_the_caller() {
        let caught = std::panic::catch_unwind(|| run_idle("test-idle", || panic!("boom")));
        assert!(caught.is_err());
    }
}
