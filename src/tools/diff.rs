//! `akgate diff OLD_DIR NEW_DIR`: what a change to the rules would change, in effect rather
//! than text. Both directories are loaded with the loader `serve` uses (secrets not read); the
//! CIDR lists, which the compiled allowlists do not keep, are read from the raw files.

use clap::Args;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::policy::allowlist::parse_cidr;
use crate::rules::load::{CheckOptions, load_dir_with, rule_files};
use crate::rules::raw::RawFile;
use crate::rules::{AccessKey, KeyStatus, LoadOptions, RuleMode, ServiceRisk, Snapshot};

#[derive(Debug, Args)]
pub struct DiffArgs {
    pub old: PathBuf,
    pub new: PathBuf,
}

/// Allowlists by level name (`account 1001`, `user 1001/ci`, `key AK1`, `trusted_proxies`).
type Allowlists = BTreeMap<String, BTreeSet<IpNet>>;

fn allowlists(dir: &Path) -> Result<Allowlists, String> {
    let mut out = Allowlists::new();
    let files = rule_files(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let nets = |v: &[toml::Spanned<String>]| -> BTreeSet<IpNet> {
        v.iter()
            .filter_map(|c| parse_cidr(c.get_ref()).ok())
            .collect()
    };
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let raw: RawFile = toml::from_str(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        for a in &raw.account {
            let a = a.get_ref();
            out.insert(
                format!("account {}", a.id.get_ref().trim()),
                nets(&a.api_source_cidrs),
            );
        }
        for u in &raw.user {
            let u = u.get_ref();
            out.insert(
                format!(
                    "user {}/{}",
                    u.account.get_ref().trim(),
                    u.name.get_ref().trim()
                ),
                nets(&u.api_source_cidrs),
            );
        }
        for k in &raw.access_key {
            let k = k.get_ref();
            out.insert(
                format!("key {}", k.id.get_ref().trim()),
                nets(&k.api_source_cidrs),
            );
        }
        if let Some(s) = &raw.settings {
            out.insert(
                "trusted_proxies".into(),
                nets(s.get_ref().trusted_proxies.as_deref().unwrap_or_default()),
            );
        }
    }
    out.entry("trusted_proxies".into()).or_default();
    Ok(out)
}

fn load(dir: &Path) -> Result<Snapshot, String> {
    let opts = CheckOptions {
        skip_secrets: true,
        allow_empty: true,
    };
    load_dir_with(dir, &LoadOptions::default(), &opts).map_err(|e| {
        format!(
            "{} does not load (run `akgate check {}`):\n{e}",
            dir.display(),
            dir.display()
        )
    })
}

fn mode(m: RuleMode) -> &'static str {
    match m {
        RuleMode::Enforce => "enforce",
        RuleMode::Shadow => "shadow",
    }
}

fn list(nets: &BTreeSet<IpNet>) -> String {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Changes between two allowlists of one level. An empty list admits every address.
fn allowlist_changes(
    level: &str,
    old: &BTreeSet<IpNet>,
    new: &BTreeSet<IpNet>,
    out: &mut Vec<String>,
) {
    if old == new {
        return;
    }
    let trusted = level == "trusted_proxies";
    let added: BTreeSet<IpNet> = new.difference(old).copied().collect();
    let removed: BTreeSet<IpNet> = old.difference(new).copied().collect();
    if trusted {
        if !added.is_empty() {
            out.push(format!(
                "{level}: widened: +{} (X-Forwarded-For believed from these)",
                list(&added)
            ));
        }
        if !removed.is_empty() {
            out.push(format!("{level}: narrowed: -{}", list(&removed)));
        }
        return;
    }
    if old.is_empty() {
        out.push(format!(
            "{level} allowlist: narrowed: was open to every address, now only {}",
            list(new)
        ));
    } else if new.is_empty() {
        out.push(format!(
            "{level} allowlist: widened: removed (was {}), every address admitted",
            list(old)
        ));
    } else {
        if !added.is_empty() {
            out.push(format!("{level} allowlist: widened: +{}", list(&added)));
        }
        if !removed.is_empty() {
            out.push(format!("{level} allowlist: narrowed: -{}", list(&removed)));
        }
    }
}

fn key_changes(id: &str, old: &AccessKey, new: &AccessKey, out: &mut Vec<String>) {
    let at = format!("({})", new.origin);
    match (old.status, new.status) {
        (KeyStatus::Active, KeyStatus::Disabled) => out.push(format!("key {id}: disabled {at}")),
        (KeyStatus::Disabled, KeyStatus::Active) => out.push(format!("key {id}: enabled {at}")),
        _ => {}
    }
    match (&old.leaked, &new.leaked) {
        (None, Some(l)) => out.push(format!(
            "key {id}: flagged as leaked ({}{}) ({})",
            mode(l.mode),
            l.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default(),
            l.origin
        )),
        (Some(_), None) => out.push(format!("key {id}: no longer flagged as leaked")),
        (Some(a), Some(b)) if a.mode != b.mode => out.push(format!(
            "key {id}: leak flag {} → {} ({})",
            mode(a.mode),
            mode(b.mode),
            b.origin
        )),
        _ => {}
    }
    if old.account.id != new.account.id {
        out.push(format!(
            "key {id}: account {} → {} {at}",
            old.account.id, new.account.id
        ));
    }
    let user = |k: &AccessKey| k.user.as_ref().map_or("-".to_string(), |u| u.name.clone());
    if user(old) != user(new) {
        out.push(format!("key {id}: user {} → {} {at}", user(old), user(new)));
    }
    if old.allow_mode != new.allow_mode {
        out.push(format!(
            "key {id}: allowlist_mode {} → {} {at}",
            mode(old.allow_mode),
            mode(new.allow_mode)
        ));
    }
    if old.temporary.as_ref().map(|t| t.expires) != new.temporary.as_ref().map(|t| t.expires) {
        out.push(format!(
            "key {id}: temporary credential expiry changed {at}"
        ));
    }
}

fn risk_set(r: &ServiceRisk) -> BTreeSet<String> {
    let mut s: BTreeSet<String> = r.actions.iter().cloned().collect();
    s.extend(r.prefixes.iter().map(|p| format!("{p}*")));
    if r.all {
        s.insert("*".into());
    }
    s
}

fn settings_lines(s: &Snapshot) -> BTreeMap<&'static str, String> {
    let st = &s.settings;
    BTreeMap::from([
        ("clock_skew", format!("{:?}", st.clock_skew)),
        ("nonce_ttl", format!("{:?}", st.nonce_ttl)),
        ("max_idle_days", st.max_idle_days.to_string()),
        ("max_body_bytes", st.max_body_bytes.to_string()),
        ("upstream_timeout", format!("{:?}", st.upstream_timeout)),
        ("unsigned_body", format!("{:?}", st.unsigned_body)),
        ("auth_failure_limit", st.auth_failure_limit.to_string()),
        (
            "auth_failure_cooldown",
            format!("{:?}", st.auth_failure_cooldown),
        ),
    ])
}

fn route_key(r: &crate::rules::Route) -> String {
    let host = match &r.host {
        Some(crate::rules::HostMatch::Exact(h)) => h.clone(),
        Some(crate::rules::HostMatch::Suffix(s)) => format!("*{s}"),
        None => "*".into(),
    };
    format!("{host}{}", r.path_prefix.as_deref().unwrap_or(""))
}

/// Every effect of going from `old` to `new`, one line each.
pub fn changes(old_dir: &Path, new_dir: &Path) -> Result<Vec<String>, String> {
    let (old, new) = (load(old_dir)?, load(new_dir)?);
    let mut out = Vec::new();

    // Keys.
    let ids: BTreeSet<&str> = old.keys.keys().chain(new.keys.keys()).collect();
    for id in ids {
        match (old.keys.get(id), new.keys.get(id)) {
            (None, Some(k)) => {
                let status = match k.status {
                    KeyStatus::Active => "active",
                    KeyStatus::Disabled => "disabled",
                };
                out.push(format!(
                    "key {id}: added ({status}, account {}{}) ({})",
                    k.account.id,
                    k.user
                        .as_ref()
                        .map(|u| format!(", user {}", u.name))
                        .unwrap_or_default(),
                    k.origin
                ));
                if let Some(l) = &k.leaked {
                    out.push(format!(
                        "key {id}: flagged as leaked ({}) ({})",
                        mode(l.mode),
                        l.origin
                    ));
                }
            }
            (Some(_), None) => out.push(format!("key {id}: removed")),
            (Some(a), Some(b)) => key_changes(id, a, b, &mut out),
            (None, None) => {}
        }
    }

    // Allowlists, per level.
    let (old_lists, new_lists) = (allowlists(old_dir)?, allowlists(new_dir)?);
    let levels: BTreeSet<&String> = old_lists.keys().chain(new_lists.keys()).collect();
    for level in levels {
        match (old_lists.get(level), new_lists.get(level)) {
            (Some(a), Some(b)) => allowlist_changes(level, a, b, &mut out),
            (None, Some(b)) if !b.is_empty() => {
                out.push(format!("{level} (new) allowlist: {}", list(b)))
            }
            (Some(_), None) if !level.starts_with("key ") => out.push(format!("{level}: removed")),
            _ => {}
        }
    }

    // High-risk actions, per service.
    let names: BTreeSet<&String> = old.services.keys().chain(new.services.keys()).collect();
    for name in names {
        match (old.services.get(name), new.services.get(name)) {
            (None, Some(s)) => out.push(format!(
                "service {name}: added, high-risk actions: {}",
                risk_set(s).into_iter().collect::<Vec<_>>().join(", ")
            )),
            (Some(_), None) => out.push(format!(
                "service {name}: removed (its high-risk actions no longer apply)"
            )),
            (Some(a), Some(b)) => {
                let (sa, sb) = (risk_set(a), risk_set(b));
                for x in sb.difference(&sa) {
                    out.push(format!("service {name}: high-risk action added: {x}"));
                }
                for x in sa.difference(&sb) {
                    out.push(format!("service {name}: high-risk action removed: {x}"));
                }
                if a.mode != b.mode {
                    out.push(format!(
                        "service {name}: mode {} → {}",
                        mode(a.mode),
                        mode(b.mode)
                    ));
                }
            }
            (None, None) => {}
        }
    }

    // Routes, by host and path prefix.
    let describe = |r: &crate::rules::Route| {
        format!("service {} → {} ({:?})", r.service, r.upstream, r.family)
    };
    let old_routes: BTreeMap<String, &crate::rules::Route> =
        old.routes.iter().map(|r| (route_key(r), r)).collect();
    let new_routes: BTreeMap<String, &crate::rules::Route> =
        new.routes.iter().map(|r| (route_key(r), r)).collect();
    let keys: BTreeSet<&String> = old_routes.keys().chain(new_routes.keys()).collect();
    for k in keys {
        match (old_routes.get(k), new_routes.get(k)) {
            (None, Some(r)) => {
                out.push(format!("route {k}: added, {} ({})", describe(r), r.origin))
            }
            (Some(r), None) => out.push(format!("route {k}: removed (was {})", describe(r))),
            (Some(a), Some(b)) if describe(a) != describe(b) => out.push(format!(
                "route {k}: changed, {} → {} ({})",
                describe(a),
                describe(b),
                b.origin
            )),
            _ => {}
        }
    }
    let order = |s: &Snapshot| s.routes.iter().map(route_key).collect::<Vec<_>>();
    if old_routes.len() == new_routes.len() && order(&old) != order(&new) && {
        let (mut a, mut b) = (order(&old), order(&new));
        a.sort();
        b.sort();
        a == b
    } {
        out.push("routes: order changed (first match wins)".into());
    }

    // Settings.
    let (sa, sb) = (settings_lines(&old), settings_lines(&new));
    for (name, a) in &sa {
        let b = &sb[name];
        if a != b {
            out.push(format!("settings.{name}: {a} → {b}"));
        }
    }
    Ok(out)
}

pub fn run(args: &DiffArgs) -> ExitCode {
    match changes(&args.old, &args.new) {
        Ok(lines) => {
            let mut out = std::io::stdout().lock();
            for l in &lines {
                if writeln!(out, "{l}").is_err() {
                    return ExitCode::from(2);
                }
            }
            if lines.is_empty() {
                let _ = writeln!(out, "no change in effect");
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("akgate diff: {e}");
            ExitCode::from(2)
        }
    }
}
