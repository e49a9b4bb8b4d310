//! Wall-clock access and the few timestamp formats the signature schemes use.
//!
//! Only UTC appears on the wire, so a civil-date conversion is all that is needed; pulling in a
//! calendar crate for it would add parsing leniency we do not want in a verifier.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub type UnixSeconds = i64;

/// The source of "now" for the decision. Tests and replays of captured requests use [`FixedClock`].
pub trait Clock: Send + Sync {
    fn now(&self) -> UnixSeconds;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixSeconds {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct FixedClock(AtomicI64);

impl FixedClock {
    pub fn new(now: UnixSeconds) -> Self {
        FixedClock(AtomicI64::new(now))
    }
    pub fn set(&self, now: UnixSeconds) {
        self.0.store(now, Ordering::Relaxed);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> UnixSeconds {
        self.0.load(Ordering::Relaxed)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Inverse of [`days_from_civil`].
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn digits(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Parses exactly `yyyy-MM-ddTHH:mm:ssZ` (the form every Alibaba SDK sends for `x-acs-date`
/// and `Timestamp`). Anything else — offsets, fractions, lower-case `z` — is refused rather
/// than guessed at, because a lenient parser is a second reading of a signed value.
pub fn parse_iso8601_utc(s: &str) -> Option<UnixSeconds> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || b[19] != b'Z' {
        return None;
    }
    civil_secs(
        &b[0..4],
        &b[5..7],
        &b[8..10],
        &b[11..13],
        &b[14..16],
        &b[17..19],
    )
}

/// Unix seconds of a UTC date and time given as ASCII digit fields, checked for range.
fn civil_secs(
    y: &[u8],
    mo: &[u8],
    d: &[u8],
    h: &[u8],
    mi: &[u8],
    se: &[u8],
) -> Option<UnixSeconds> {
    let y = i64::from(digits(y)?);
    let (mo, d, h, mi, se) = (
        digits(mo)?,
        digits(d)?,
        digits(h)?,
        digits(mi)?,
        digits(se)?,
    );
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 60
    {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86400 + i64::from(h * 3600 + mi * 60 + se))
}

/// Formats as `yyyy-MM-ddTHH:mm:ssZ`.
pub fn format_iso8601_utc(t: UnixSeconds) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(86400));
    let s = t.rem_euclid(86400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// Parses AWS's `X-Amz-Date` form, exactly `yyyyMMddTHHmmssZ`.
pub fn parse_amz_date(s: &str) -> Option<UnixSeconds> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    // Read in place: this runs on every SigV4 request.
    civil_secs(
        &b[0..4],
        &b[4..6],
        &b[6..8],
        &b[9..11],
        &b[11..13],
        &b[13..15],
    )
}

/// Parses an RFC 1123 HTTP date, exactly `Sun, 22 Nov 2026 14:48:00 GMT` (what the ROA v1 SDKs
/// send in `Date`).
pub fn parse_http_date(s: &str) -> Option<UnixSeconds> {
    let b = s.as_bytes();
    if b.len() != 29 || &b[3..5] != b", " || &b[25..] != b" GMT" || b[7] != b' ' || b[11] != b' ' {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let month = MONTHS.iter().position(|m| *m == &s[8..11])? + 1;
    let iso = format!("{}-{month:02}-{}T{}Z", &s[12..16], &s[5..7], &s[17..25]);
    let t = parse_iso8601_utc(&iso)?;
    // The weekday must agree with the date: 1970-01-01 was a Thursday (index 3).
    let weekday = (t.div_euclid(86400) + 3).rem_euclid(7) as usize;
    (DAYS[weekday] == &s[0..3]).then_some(t)
}

/// Formats as an RFC 1123 HTTP date.
pub fn format_http_date(t: UnixSeconds) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let (y, m, d) = civil_from_days(t.div_euclid(86400));
    let s = t.rem_euclid(86400);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[(t.div_euclid(86400) + 3).rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// Parses the durations used in `settings.toml`: an integer followed by `ms`, `s`, `m`, `h` or `d`.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_round_trip() {
        let t = parse_iso8601_utc("2026-11-22T14:47:22Z").unwrap();
        assert_eq!(t, 1_795_358_842);
        assert_eq!(format_iso8601_utc(t), "2026-11-22T14:47:22Z");
        assert_eq!(parse_iso8601_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_iso8601_utc("2024-02-29T00:00:00Z").map(|t| t % 86400),
            Some(0)
        );
    }

    #[test]
    fn iso8601_rejects_near_misses() {
        for bad in [
            "2026-11-22T14:47:22z",
            "2026-11-22 14:47:22Z",
            "2026-11-22T14:47:22.000Z",
            "2026-11-22T14:47:22+00:00",
            "2026-13-22T14:47:22Z",
            "2026-02-29T00:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-1a-22T14:47:22Z",
            "",
        ] {
            assert_eq!(parse_iso8601_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn amz_and_http_dates() {
        let t = parse_iso8601_utc("2026-11-22T14:48:00Z").unwrap();
        assert_eq!(parse_amz_date("20261122T144800Z"), Some(t));
        assert_eq!(parse_amz_date("2026-11-22T14:48:00Z"), None);
        for bad in [
            "20261322T144800Z",
            "20261131T144800Z",
            "20261122T244800Z",
            "2026112xT144800Z",
            "20261122T14480éZ",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
        assert_eq!(parse_http_date("Sun, 22 Nov 2026 14:48:00 GMT"), Some(t));
        assert_eq!(format_http_date(t), "Sun, 22 Nov 2026 14:48:00 GMT");
        // hyper's `date` field for the same instants (the lean HTTP/1.1 path writes this one).
        assert_eq!(
            format_http_date(784_111_777),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(format_http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            format_http_date(1_795_000_000),
            "Wed, 18 Nov 2026 11:06:40 GMT"
        );
        assert_eq!(
            parse_http_date("Mon, 22 Nov 2026 14:48:00 GMT"),
            None,
            "wrong weekday"
        );
        assert_eq!(parse_http_date("Sun, 22 Nov 2026 14:48:00 UTC"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m").unwrap().as_secs(), 900);
        assert_eq!(parse_duration("250ms").unwrap().as_millis(), 250);
        assert_eq!(parse_duration("2d").unwrap().as_secs(), 172800);
        assert!(parse_duration("15").is_none());
        assert!(parse_duration("m").is_none());
        assert!(parse_duration("1w").is_none());
    }
}
