//! Idle-key disabling: a key unused for more than `max_idle_days` is refused as inactive, the way
//! the cloud consoles disable idle AccessKeys.

use crate::error::Rejection;
use crate::rules::AccessKey;
use crate::time::UnixSeconds;

const DAY: i64 = 86_400;

/// Since when `key` has been idle: its last use, else its creation, but never before usage
/// tracking began (use before that is unknown, and refusing a key for it would be a guess).
pub fn idle_since(
    key: &AccessKey,
    last_used: Option<UnixSeconds>,
    tracking_since: UnixSeconds,
) -> UnixSeconds {
    match last_used {
        Some(t) => t,
        None => key.created_at.unwrap_or(tracking_since).max(tracking_since),
    }
}

/// Whole days idle at `now`.
pub fn idle_days(since: UnixSeconds, now: UnixSeconds) -> i64 {
    (now - since).max(0) / DAY
}

/// Refuses a key idle for more than `max_idle_days` (0 = never).
pub fn check(
    key: &AccessKey,
    last_used: Option<UnixSeconds>,
    tracking_since: UnixSeconds,
    max_idle_days: u32,
    now: UnixSeconds,
) -> Result<(), Rejection> {
    if max_idle_days == 0 {
        return Ok(());
    }
    let since = idle_since(key, last_used, tracking_since);
    if now - since > i64::from(max_idle_days) * DAY {
        return Err(Rejection::KeyIdle);
    }
    Ok(())
}
