//! `akgate keys`: every key of the rules with its last use and idleness, read from a gateway's
//! `--state DIR` (without its lock: the running gateway holds it). The same rows are served by
//! the admin listener's `GET /keys`.

use clap::Args;
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::policy::idle;
use crate::rules::load::{CheckOptions, load_dir_with};
use crate::rules::{AccessKey, KeyStatus, LoadOptions, Snapshot};
use crate::state::StateSpec;
use crate::state::usage::Usage;
use crate::time::{Clock, SystemClock, UnixSeconds, format_iso8601_utc};

#[derive(Debug, Args)]
pub struct KeysArgs {
    /// Rules directory. Secrets are not read: this runs where they are not available.
    #[arg(long, env = "AKGATE_RULES", default_value = "rules")]
    pub rules: PathBuf,
    /// The gateway's state directory (`serve --state DIR`), for each key's last use. Without it
    /// last use and idle days are unknown.
    #[arg(long, env = "AKGATE_STATE", value_parser = StateSpec::parse)]
    pub state: Option<StateSpec>,
    /// One JSON document (the shape of the admin `GET /keys`) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One key as listings show it. Never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRow {
    pub id: String,
    pub account: String,
    pub user: Option<String>,
    pub status: &'static str,
    pub leaked: bool,
    /// As written in the rules.
    pub created: Option<String>,
    pub last_used: Option<String>,
    pub last_source: Option<String>,
    pub last_service: Option<String>,
    pub last_action: Option<String>,
    pub requests: u64,
    /// Where idle days count from; `None` (with the next three) when usage is unknown.
    pub idle_since: Option<String>,
    pub idle_days: Option<i64>,
    /// Refused now as idle.
    pub idle: Option<bool>,
    /// Will be refused as idle within 14 days unless used.
    pub idle_soon: Option<bool>,
    pub max_idle_days: u32,
}

/// The row of `key`. `tracking_since` is `None` when usage is unknown (no state to read).
pub fn row(
    key: &AccessKey,
    usage: Option<&Usage>,
    tracking_since: Option<UnixSeconds>,
    max_idle_days: u32,
    now: UnixSeconds,
) -> KeyRow {
    let assessed = tracking_since.map(|since| {
        idle::assess(
            key.created_at,
            usage.map(|u| u.last_used),
            since,
            max_idle_days,
            now,
        )
    });
    let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let active = key.status == KeyStatus::Active;
    KeyRow {
        id: key.id.clone(),
        account: key.account.id.clone(),
        user: key.user.as_ref().map(|u| u.name.clone()),
        status: match key.status {
            KeyStatus::Active => "active",
            KeyStatus::Disabled => "disabled",
        },
        leaked: key.leaked.is_some(),
        created: key.created.clone(),
        last_used: usage.map(|u| format_iso8601_utc(u.last_used)),
        last_source: usage.and_then(|u| u.source).map(|ip| ip.to_string()),
        last_service: usage.and_then(|u| text(&u.service)),
        last_action: usage.and_then(|u| text(&u.action)),
        requests: usage.map_or(0, |u| u.requests),
        idle_since: assessed.map(|a| format_iso8601_utc(a.since)),
        idle_days: assessed.map(|a| a.days),
        // A disabled key is refused as disabled, whatever its idleness.
        idle: assessed.map(|a| a.idle && active),
        idle_soon: assessed.map(|a| a.soon && active),
        max_idle_days,
    }
}

/// Every key of `snap`, sorted by id.
pub fn rows(
    snap: &Snapshot,
    usage: impl Fn(&str) -> Option<Usage>,
    tracking_since: Option<UnixSeconds>,
    now: UnixSeconds,
) -> Vec<KeyRow> {
    let mut keys: Vec<&AccessKey> = snap.keys.values().collect();
    keys.sort_by(|a, b| a.id.cmp(&b.id));
    keys.into_iter()
        .map(|k| {
            row(
                k,
                usage(&k.id).as_ref(),
                tracking_since,
                snap.settings.max_idle_days,
                now,
            )
        })
        .collect()
}

/// The document of `GET /keys` and `akgate keys --json`.
pub fn document(
    rows: &[KeyRow],
    max_idle_days: u32,
    tracking_since: Option<UnixSeconds>,
) -> serde_json::Value {
    serde_json::json!({
        "max_idle_days": max_idle_days,
        "tracking_since": tracking_since.map(format_iso8601_utc),
        "keys": rows,
    })
}

fn mark(r: &KeyRow) -> &'static str {
    match (r.idle, r.idle_soon) {
        (Some(true), _) => "IDLE: refused",
        (_, Some(true)) => "idle within 14 days",
        _ => "",
    }
}

/// The table `akgate keys` prints.
pub fn table(rows: &[KeyRow]) -> String {
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                match &r.user {
                    Some(u) => format!("{}/{u}", r.account),
                    None => r.account.clone(),
                },
                r.status.to_string(),
                if r.leaked { "yes" } else { "no" }.to_string(),
                match (&r.last_used, r.idle_days) {
                    (Some(t), _) => t.clone(),
                    (None, Some(_)) => "never".into(),
                    (None, None) => "unknown".into(),
                },
                r.idle_days.map_or("-".into(), |d| d.to_string()),
                mark(r).to_string(),
            ]
        })
        .collect();
    let head = [
        "ID",
        "ACCOUNT/USER",
        "STATUS",
        "LEAKED",
        "LAST USED",
        "IDLE DAYS",
        "",
    ];
    let mut width = head.map(str::len);
    for c in &cells {
        for (w, cell) in width.iter_mut().zip(c) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(&format!("{cell:w$}"));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&head);
    for c in &cells {
        line(&c.each_ref().map(String::as_str));
    }
    out
}

/// What `--state DIR` holds: since when use is known, and each key's use.
type Recorded = (UnixSeconds, Vec<(String, Usage)>);

fn load(args: &KeysArgs) -> Result<(Snapshot, Option<Recorded>), String> {
    let opts = CheckOptions {
        skip_secrets: true,
        allow_empty: true,
    };
    let snap = load_dir_with(&args.rules, &LoadOptions::default(), &opts).map_err(|e| {
        format!(
            "{} does not load (run `akgate check {}`):\n{e}",
            args.rules.display(),
            args.rules.display()
        )
    })?;
    let usage = match &args.state {
        None | Some(StateSpec::Memory) => None,
        Some(StateSpec::Dir(dir)) => {
            Some(crate::state::persist::read(dir).map_err(|e| e.to_string())?)
        }
        Some(StateSpec::Redis { .. }) => {
            return Err(
                "a fleet's key usage lives in Redis: ask any instance (admin GET /keys)".into(),
            );
        }
    };
    Ok((snap, usage))
}

pub fn run(args: &KeysArgs) -> ExitCode {
    let (snap, usage) = match load(args) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("akgate keys: {e}");
            return ExitCode::FAILURE;
        }
    };
    let now = SystemClock.now();
    let since = usage.as_ref().map(|(since, _)| *since);
    let by_id: std::collections::HashMap<&str, &Usage> = usage
        .iter()
        .flat_map(|(_, entries)| entries.iter().map(|(id, u)| (id.as_str(), u)))
        .collect();
    let rows = rows(&snap, |id| by_id.get(id).map(|u| (*u).clone()), since, now);
    let max = snap.settings.max_idle_days;
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        writeln!(out, "{:#}", document(&rows, max, since))
    } else {
        let policy = match max {
            0 => "max_idle_days = 0: idle keys are not refused".to_string(),
            n => format!("max_idle_days = {n}: keys idle longer are refused"),
        };
        let tracked = match since {
            Some(t) => format!("usage tracked since {}", format_iso8601_utc(t)),
            None => "usage unknown (pass --state DIR)".to_string(),
        };
        write!(out, "{}", table(&rows)).and_then(|()| writeln!(out, "\n{policy}; {tracked}"))
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: &str, idle: Option<bool>, soon: Option<bool>, days: Option<i64>) -> KeyRow {
        KeyRow {
            id: id.into(),
            account: "100".into(),
            user: Some("alice".into()),
            status: "active",
            leaked: false,
            created: None,
            last_used: None,
            last_source: None,
            last_service: None,
            last_action: None,
            requests: 0,
            idle_since: None,
            idle_days: days,
            idle,
            idle_soon: soon,
            max_idle_days: 90,
        }
    }

    #[test]
    fn table_marks_idle_and_soon() {
        let t = table(&[
            r("AKA", Some(true), Some(false), Some(100)),
            r("AKB", Some(false), Some(true), Some(80)),
            r("AKC", Some(false), Some(false), Some(1)),
            r("AKD", None, None, None),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID "), "{t}");
        assert!(lines[1].ends_with("IDLE: refused"), "{t}");
        assert!(lines[2].ends_with("idle within 14 days"), "{t}");
        assert!(lines[3].ends_with(" 1"), "{t}");
        assert!(lines[3].contains(" never "), "{t}");
        assert!(lines[4].contains(" unknown "), "{t}");
    }
}
