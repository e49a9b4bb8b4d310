//! How rule loading, memory and the per-request decision grow with the rule set: 100 to 1M keys,
//! 10 to 1M CIDRs, through the library (`load_dir`, the snapshot, `decide`).
//!
//! `cargo bench --bench scaling -- sweep [--dir DIR] [--max-keys N] [--max-cidrs N]` prints a
//! markdown table. `write` then `reload` measure what serving takes: start-up (the store opened)
//! and reloads through the store, with one small file edited and with nothing changed. Each size is measured in a fresh child process (`one`), so one size's
//! allocations cannot inflate the next one's RSS; the parent writes the rule files, so the child
//! holds only what loading takes.

use std::error::Error;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::Instant;

use akgate::auth::RequestView;
use akgate::decision::decide;
use akgate::policy::NonceCache;
use akgate::rules::{LoadOptions, load_dir};
use clap::{Parser, Subcommand};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

mod support;

type BoxError = Box<dyn Error + Send + Sync>;

/// Requests are signed at this instant and decided as if it were now.
const DATE: &str = "2026-11-22T14:47:22Z";

#[derive(Parser)]
#[command(about = "akgate rule-set scaling figures (see benches/README.md)")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Passed by `cargo bench` to every bench target, after the command's own arguments (hence
    /// global); without a command this target does nothing.
    #[arg(long, hide = true, global = true)]
    bench: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Every size, each in a fresh process; a markdown table on stdout.
    Sweep {
        /// Where the generated rule sets go (emptied and reused per size).
        #[arg(long, default_value = "target/bench-scaling")]
        dir: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        max_keys: u64,
        #[arg(long, default_value_t = 1_000_000)]
        max_cidrs: u64,
    },
    /// Writes the generated rule set of one size to DIR (for `reload`, or by hand).
    Write {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        keys: u64,
        #[arg(long)]
        cidrs: u64,
    },
    /// From a directory `write` filled: opens the rules store as `serve` does (time, RSS), then
    /// reloads on another thread as the watcher does: once with `leaked.toml` edited (one more
    /// flag), once with nothing changed, then with the edit undone; then 10 times with a small
    /// `zz-bench-reload.toml` (one leaked key) rewritten, as `benches/e2e.sh` does while it
    /// measures latency (median and max), and once with it removed. One JSON line; run it in a
    /// fresh process per measurement.
    Reload {
        #[arg(long)]
        dir: PathBuf,
    },
    /// One size, from a rule directory already written; one JSON line.
    One {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        keys: u64,
    },
}

fn main() -> Result<(), BoxError> {
    let cli = Cli::parse();
    match cli.command {
        None => {
            // `cargo bench` with no filter passes `--bench` to every target; a million-key sweep
            // takes minutes, so it runs only when asked for.
            eprintln!(
                "scaling: nothing to do without a command; `cargo bench --bench scaling -- sweep` (see benches/README.md)"
            );
            Ok(())
        }
        Some(Command::Sweep {
            dir,
            max_keys,
            max_cidrs,
        }) => sweep(&dir, max_keys, max_cidrs),
        Some(Command::One { dir, keys }) => one(&dir, keys),
        Some(Command::Write { dir, keys, cidrs }) => {
            let info = support::write_rules(&dir, keys, cidrs, "http://127.0.0.1:9", None)?;
            eprintln!(
                "{keys} keys, {} CIDRs, {:.1} MB of rules in {}",
                info.cidrs,
                info.bytes as f64 / 1e6,
                dir.display()
            );
            Ok(())
        }
        Some(Command::Reload { dir }) => reload(&dir),
    }
}

fn sweep(dir: &Path, max_keys: u64, max_cidrs: u64) -> Result<(), BoxError> {
    let mut sizes: Vec<(u64, u64)> = Vec::new();
    for keys in [100, 1_000, 10_000, 100_000, 1_000_000] {
        if keys <= max_keys {
            sizes.push((keys, 10));
        }
    }
    for cidrs in [1_000, 10_000, 100_000, 1_000_000] {
        if cidrs <= max_cidrs {
            sizes.push((100, cidrs));
        }
    }
    if max_keys >= 100_000 && max_cidrs >= 100_000 {
        sizes.push((100_000, 100_000));
    }
    let exe = std::env::current_exe()?;
    println!(
        "| keys | CIDRs | rule files MB | load ms | reload ms | RSS after load MB | peak RSS MB | decide ns p50 | decide ns p99 |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (keys, cidrs) in sizes {
        let info = support::write_rules(dir, keys, cidrs, "http://127.0.0.1:9", None)?;
        let out = Process::new(&exe)
            .args(["one", "--keys", &keys.to_string(), "--dir"])
            .arg(dir)
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "{keys} keys, {cidrs} CIDRs: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let v: Value = serde_json::from_slice(&out.stdout)?;
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "| {keys} | {} | {:.1} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} | {:.0} |",
            info.cidrs,
            info.bytes as f64 / 1e6,
            f("load_ms"),
            f("reload_ms"),
            f("rss_after_load_mb"),
            f("peak_rss_mb"),
            f("decide_ns_p50"),
            f("decide_ns_p99"),
        );
    }
    Ok(())
}

fn reload(dir: &Path) -> Result<(), BoxError> {
    use akgate::rules::RulesStore;
    use akgate::rules::store::ReloadOutcome;
    let leaked = dir.join("leaked.toml");
    let original = std::fs::read_to_string(&leaked)?;
    let t0 = Instant::now();
    let store = std::sync::Arc::new(
        RulesStore::open(dir, LoadOptions::default()).map_err(|e| format!("{e}"))?,
    );
    let open_ms = t0.elapsed().as_secs_f64() * 1e3;
    let rss_open = rss_mb("VmRSS");
    let peak_open = rss_mb("VmHWM");
    // Each reload on a thread of its own, as the watcher's; then a pause as long as the reload
    // took, so that the store's pacing never adds a wait to the next one measured.
    let timed = |want: &str| -> Result<f64, BoxError> {
        let s = store.clone();
        let t = Instant::now();
        let outcome = std::thread::spawn(move || s.reload())
            .join()
            .map_err(|_| "reload panicked")?;
        let took = t.elapsed();
        let got = match outcome {
            ReloadOutcome::Applied { .. } => "applied",
            ReloadOutcome::Unchanged => "unchanged",
            ReloadOutcome::Failed(e) => return Err(format!("reload failed: {e}").into()),
        };
        if got != want {
            return Err(format!("reload {got}, expected {want}").into());
        }
        std::thread::sleep(took + std::time::Duration::from_millis(50));
        Ok(took.as_secs_f64() * 1e3)
    };
    std::fs::write(
        &leaked,
        format!(
            "{original}[[leaked_key]]\nid = \"{}\"\nreason = \"bench edit\"\n",
            support::key_id(1)
        ),
    )?;
    let edited_ms = timed("applied");
    let unchanged_ms = timed("unchanged");
    std::fs::write(&leaked, &original)?;
    let undone_ms = timed("applied");
    // As `loadgen reload` does during the e2e run: a different leaked key each time.
    let small = dir.join("zz-bench-reload.toml");
    let mut small_ms = Vec::new();
    for n in 0..10u64 {
        std::fs::write(
            &small,
            format!(
                "[[leaked_key]]\nid = \"{}\"\nreason = \"bench reload {n}\"\n",
                support::key_id(n * 7 + 3)
            ),
        )?;
        small_ms.push(timed("applied")?);
    }
    std::fs::remove_file(&small)?;
    let removed_ms = timed("applied");
    small_ms.sort_by(f64::total_cmp);
    let rss_end = rss_mb("VmRSS");
    let peak_end = rss_mb("VmHWM");
    let line = json!({
        "open_ms": open_ms,
        "rss_after_open_mb": rss_open,
        "peak_rss_after_open_mb": peak_open,
        "reload_one_file_ms": edited_ms?,
        "reload_unchanged_ms": unchanged_ms?,
        "reload_undo_ms": undone_ms?,
        "reload_small_file_ms_median": (small_ms[4] + small_ms[5]) / 2.0,
        "reload_small_file_ms_max": small_ms[9],
        "reload_small_file_removed_ms": removed_ms?,
        "rss_after_reloads_mb": rss_end,
        "peak_rss_mb": peak_end,
    });
    println!("{line}");
    Ok(())
}

fn rss_mb(field: &str) -> f64 {
    support::proc_status_kib("self", field).unwrap_or(0) as f64 / 1024.0
}

/// A signed request, owned, ready to be viewed.
struct Owned {
    host: String,
    headers: HeaderMap,
}

fn one(dir: &Path, keys: u64) -> Result<(), BoxError> {
    let opts = LoadOptions::default();
    let rss_before = rss_mb("VmRSS");
    let t0 = Instant::now();
    let snap = load_dir(dir, &opts).map_err(|e| format!("{e:?}"))?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let rss_after_load = rss_mb("VmRSS");

    // A reload builds the new snapshot while the old one still serves.
    let t1 = Instant::now();
    let again = load_dir(dir, &opts).map_err(|e| format!("{e:?}"))?;
    let reload_ms = t1.elapsed().as_secs_f64() * 1e3;
    // The peak so far: parsing, and two snapshots alive at once as during a reload.
    let peak_rss = rss_mb("VmHWM");
    drop(again);

    // Requests signed by keys spread over the whole set, each with its own nonce.
    const REQUESTS: u64 = 20_000;
    let requests: Vec<Owned> = (0..REQUESTS)
        .map(|n| {
            let key = support::mix(n ^ 0x5EED) % keys.max(1);
            let mut host = String::new();
            let mut headers = HeaderMap::new();
            for (name, value) in support::signed_headers(key, &format!("{n:032x}"), DATE) {
                if name == "host" {
                    host = value;
                } else if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
                    HeaderValue::from_str(&value),
                ) {
                    headers.append(n, v);
                }
            }
            Owned { host, headers }
        })
        .collect();
    let now = akgate::time::parse_iso8601_utc(DATE).ok_or("bad DATE")?;
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);

    // Several passes, each with an empty nonce cache (every nonce is then new, as in traffic).
    // Each decision is timed alone: a clock read costs ~20 ns against microseconds decided.
    let mut times = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3)?;
    for _ in 0..5 {
        let nonces = NonceCache::new();
        for r in &requests {
            let view = RequestView {
                method: support::METHOD,
                path: support::PATH,
                query: support::QUERY,
                host: Some(&r.host),
                headers: &r.headers,
                body: b"",
            };
            let start = Instant::now();
            let d = decide(&snap, &view, peer, now, &nonces);
            let took = start.elapsed();
            if let Err(e) = d.result {
                return Err(format!("a bench request was refused: {e:?}").into());
            }
            let _ = times.record(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1));
        }
    }
    let line = json!({
        "keys": keys,
        "load_ms": load_ms,
        "reload_ms": reload_ms,
        "rss_before_mb": rss_before,
        "rss_after_load_mb": rss_after_load,
        "peak_rss_mb": peak_rss,
        "decide_ns_p50": times.value_at_quantile(0.5),
        "decide_ns_p99": times.value_at_quantile(0.99),
    });
    println!("{line}");
    drop(snap);
    Ok(())
}
