//! Idle-key disabling: a key unused for more than `max_idle_days` is refused as inactive, the way
//! the cloud consoles disable idle AccessKeys.

use crate::error::Rejection;
use crate::rules::AccessKey;
use crate::time::UnixSeconds;

const DAY: i64 = 86_400;

/// How far ahead listings warn that a key will go idle.
pub const SOON_DAYS: i64 = 14;

/// Since when `key` has been idle: its last use, else its creation, but never before usage
/// tracking began (use before that is unknown, and refusing a key for it would be a guess).
pub fn idle_since(
    key: &AccessKey,
    last_used: Option<UnixSeconds>,
    tracking_since: UnixSeconds,
) -> UnixSeconds {
    since(key.created_at, last_used, tracking_since)
}

fn since(
    created_at: Option<UnixSeconds>,
    last_used: Option<UnixSeconds>,
    tracking_since: UnixSeconds,
) -> UnixSeconds {
    match last_used {
        Some(t) => t,
        None => created_at.unwrap_or(tracking_since).max(tracking_since),
    }
}

/// Whole days idle at `now` (0 for a time in the future).
pub fn idle_days(since: UnixSeconds, now: UnixSeconds) -> i64 {
    now.saturating_sub(since).max(0) / DAY
}

/// Whether a key idle since `since` is refused at `now`: idle for strictly more than
/// `max_idle_days` whole days (exactly N days still passes). 0 = never.
fn over(since: UnixSeconds, max_idle_days: u32, now: UnixSeconds) -> bool {
    max_idle_days != 0 && now.saturating_sub(since) > i64::from(max_idle_days) * DAY
}

/// Refuses a key idle for more than `max_idle_days` (0 = never). `last_used` is asked only when
/// the limit is on: it is a lookup in the usage table on every request.
pub fn check(
    key: &AccessKey,
    last_used: impl FnOnce() -> Option<UnixSeconds>,
    tracking_since: UnixSeconds,
    max_idle_days: u32,
    now: UnixSeconds,
) -> Result<(), Rejection> {
    if max_idle_days == 0 {
        return Ok(());
    }
    match over(
        idle_since(key, last_used(), tracking_since),
        max_idle_days,
        now,
    ) {
        true => Err(Rejection::KeyIdle),
        false => Ok(()),
    }
}

/// A key's idleness, for listings (`GET /keys`, `akgate keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Idleness {
    /// Where idle time counts from.
    pub since: UnixSeconds,
    pub days: i64,
    /// Refused now ([`check`] fails).
    pub idle: bool,
    /// Not refused now, but will be within [`SOON_DAYS`] unless used.
    pub soon: bool,
}

pub fn assess(
    created_at: Option<UnixSeconds>,
    last_used: Option<UnixSeconds>,
    tracking_since: UnixSeconds,
    max_idle_days: u32,
    now: UnixSeconds,
) -> Idleness {
    let since = since(created_at, last_used, tracking_since);
    let idle = over(since, max_idle_days, now);
    Idleness {
        since,
        days: idle_days(since, now),
        idle,
        soon: !idle && over(since, max_idle_days, now.saturating_add(SOON_DAYS * DAY)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixSeconds = 1_795_358_842;

    fn key(created_at: Option<UnixSeconds>) -> AccessKey {
        let toml = "[[account]]\nid = \"1\"\n[[access_key]]\nid = \"AKIDLE\"\naccount = \"1\"\nsecret_env = \"X\"\nstatus = \"active\"\n[[service]]\nname = \"ecs\"\n[[route]]\nhost = \"h\"\nservice = \"ecs\"\nupstream = \"http://127.0.0.1:1\"\n";
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k.toml"), toml).unwrap();
        let opts = crate::rules::load::CheckOptions {
            skip_secrets: true,
            allow_empty: true,
        };
        let mut snap = crate::rules::load::load_dir_with(
            dir.path(),
            &crate::rules::LoadOptions::default(),
            &opts,
        )
        .unwrap();
        let mut k = snap.keys.remove("AKIDLE").unwrap();
        k.created_at = created_at;
        k
    }

    #[test]
    fn zero_is_off() {
        let k = key(Some(0));
        assert_eq!(check(&k, || Some(0), 0, 0, NOW), Ok(()));
        let a = assess(Some(0), Some(0), 0, 0, NOW);
        assert!(!a.idle && !a.soon);
        assert_eq!(a.days, NOW / DAY);
    }

    #[test]
    fn exactly_n_days_passes_one_second_more_is_refused() {
        let k = key(None);
        let last = NOW - 90 * DAY;
        assert_eq!(check(&k, || Some(last), 0, 90, NOW), Ok(()));
        assert_eq!(
            check(&k, || Some(last - 1), 0, 90, NOW),
            Err(Rejection::KeyIdle)
        );
        let a = assess(None, Some(last), 0, 90, NOW);
        assert_eq!((a.days, a.idle, a.soon), (90, false, true));
        let a = assess(None, Some(last - 1), 0, 90, NOW);
        assert_eq!((a.days, a.idle, a.soon), (90, true, false));
    }

    #[test]
    fn soon_means_within_fourteen_days() {
        let a = assess(None, Some(NOW - 76 * DAY - 1), 0, 90, NOW);
        assert!(a.soon, "idle on day 90 + 1 s, 14 days from now");
        let a = assess(None, Some(NOW - 76 * DAY), 0, 90, NOW);
        assert!(!a.soon && !a.idle);
    }

    #[test]
    fn never_used_counts_from_creation_but_not_before_tracking() {
        let created = NOW - 400 * DAY;
        let k = key(Some(created));
        // Tracking began long ago: the key is idle since its creation.
        assert_eq!(
            check(&k, || None, created - DAY, 365, NOW),
            Err(Rejection::KeyIdle)
        );
        // Tracking began 10 days ago: whether it was used before is unknown.
        assert_eq!(check(&k, || None, NOW - 10 * DAY, 365, NOW), Ok(()));
        assert_eq!(idle_since(&k, None, NOW - 10 * DAY), NOW - 10 * DAY);
        // No creation date: from when tracking began.
        let k = key(None);
        assert_eq!(idle_since(&k, None, NOW - 200 * DAY), NOW - 200 * DAY);
        assert_eq!(
            check(&k, || None, NOW - 200 * DAY, 180, NOW),
            Err(Rejection::KeyIdle)
        );
    }

    #[test]
    fn created_in_the_future_is_not_idle() {
        let k = key(Some(NOW + 30 * DAY));
        assert_eq!(check(&k, || None, 0, 90, NOW), Ok(()));
        let a = assess(Some(NOW + 30 * DAY), None, 0, 90, NOW);
        assert_eq!((a.days, a.idle, a.soon), (0, false, false));
    }

    #[test]
    fn a_use_counts_even_if_older_than_creation_or_tracking() {
        // The usage record is a fact; `since` only bounds what is unknown.
        let k = key(Some(NOW));
        assert_eq!(
            check(&k, || Some(NOW - 100 * DAY), NOW - 10 * DAY, 90, NOW),
            Err(Rejection::KeyIdle)
        );
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let a = assess(None, Some(i64::MIN), i64::MIN, 730, i64::MAX);
        assert!(a.idle);
        let a = assess(None, None, i64::MAX, 730, i64::MIN);
        assert_eq!((a.days, a.idle), (0, false));
    }
}
