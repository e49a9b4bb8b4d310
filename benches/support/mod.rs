//! What the load generator (`loadgen.rs`) and the scaling bench (`scaling.rs`) share: the
//! generated rule set and the signed request every scenario sends.
//!
//! Key `i` is `LTAIBENCH` + ten digits and its secret is derived from `i`, so the generator can
//! sign for any of a million keys without reading the rules back. Every secret here is a clearly
//! fake benchmark value.

// Each bench target uses part of this module; what one of them leaves unused is not dead.
#![allow(dead_code)]

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use akgate::auth::acs3;

/// The `Host` every scenario sends and signs; the akgate route matches it.
pub const HOST: &str = "ecs.bench.example";
pub const METHOD: &str = "POST";
pub const PATH: &str = "/";
/// Two parameters, so the canonical query is sorted and encoded as for a real SDK call.
pub const QUERY: &str = "RegionId=cn-hangzhou&PageSize=10";
pub const ACTION: &str = "DescribeInstances";
pub const VERSION: &str = "2014-05-26";
/// The bench account; its allowlist holds `127.0.0.0/8` and the generated CIDRs.
pub const ACCOUNT: &str = "1000000001";

pub fn key_id(i: u64) -> String {
    format!("LTAIBENCH{i:010}")
}

pub fn secret(i: u64) -> String {
    format!("fake-bench-secret-{i:010}")
}

/// splitmix64: a cheap, well-spread map from a counter to a key index or a CIDR.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The headers of one signed request (ACS3-HMAC-SHA256, every header signed as the Python SDK
/// does), `host` included, in the order they are sent.
pub fn signed_headers(key: u64, nonce: &str, date: &str) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = [
        ("host", HOST),
        ("accept", "application/json"),
        ("x-acs-action", ACTION),
        ("x-acs-version", VERSION),
        ("x-acs-date", date),
        ("x-acs-signature-nonce", nonce),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    acs3::sign(
        METHOD,
        PATH,
        QUERY,
        &mut headers,
        b"",
        &key_id(key),
        secret(key).as_bytes(),
    );
    headers
}

/// What [`write_rules`] wrote.
pub struct RulesInfo {
    pub bytes: u64,
    pub cidrs: u64,
}

/// Writes a rule set with `keys` keys and `cidrs` CIDRs (127.0.0.0/8 among them, so requests from
/// the loopback pass) to `dir`, routing `HOST` to `upstream`. One key in a hundred is flagged as
/// leaked, so the leaked-key step looks a key up in a populated list. Secrets are inline: no other
/// source scales to a million keys (the environment is too small; a million secret files is not a
/// deployment). `lua_secrets`, when given, receives `id secret` lines for the nginx+Lua check.
pub fn write_rules(
    dir: &Path,
    keys: u64,
    cidrs: u64,
    upstream: &str,
    lua_secrets: Option<&Path>,
) -> io::Result<RulesInfo> {
    fs::create_dir_all(dir)?;
    // A rule set that was here before (another size) must not leave files behind.
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            fs::remove_file(path)?;
        }
    }
    let mut bytes = 0u64;

    let mut account = format!(
        "[[account]]\nid = \"{ACCOUNT}\"\nname = \"bench\"\napi_source_cidrs = [\n  \"127.0.0.0/8\",\n"
    );
    let nets = cidr_list(cidrs.saturating_sub(1));
    for net in &nets {
        let _ = writeln!(account, "  \"{net}\",");
    }
    account.push_str("]\n");
    bytes += account.len() as u64;
    fs::write(dir.join("accounts.toml"), account)?;

    let mut out = BufWriter::new(fs::File::create(dir.join("keys.toml"))?);
    let mut lua = match lua_secrets {
        Some(p) => Some(BufWriter::new(fs::File::create(p)?)),
        None => None,
    };
    for i in 0..keys {
        let entry = format!(
            "[[access_key]]\nid = \"{}\"\naccount = \"{ACCOUNT}\"\nsecret = \"{}\"\nstatus = \"active\"\n",
            key_id(i),
            secret(i)
        );
        bytes += entry.len() as u64;
        out.write_all(entry.as_bytes())?;
        if let Some(l) = lua.as_mut() {
            writeln!(l, "{} {}", key_id(i), secret(i))?;
        }
    }
    out.flush()?;
    if let Some(mut l) = lua {
        l.flush()?;
    }

    let mut leaked = String::new();
    for i in (0..keys).step_by(100) {
        let _ = writeln!(
            leaked,
            "[[leaked_key]]\nid = \"{}\"\nreason = \"bench\"",
            key_id(i)
        );
    }
    bytes += leaked.len() as u64;
    fs::write(dir.join("leaked.toml"), leaked)?;

    let routes = format!(
        "[[service]]\nname = \"ecs\"\nactions = [\"DeleteInstance\", \"DeleteInstances\", \"ModifyInstanceAttribute\", \"Create*\"]\n\n\
         [[route]]\nhost = \"{HOST}\"\nservice = \"ecs\"\nupstream = \"{upstream}\"\n"
    );
    bytes += routes.len() as u64;
    fs::write(dir.join("routes.toml"), routes)?;
    // The nonce cache must hold every nonce of a run: the default cap is 8M entries.
    let settings = "[settings]\nclock_skew = \"15m\"\nnonce_ttl = \"15m\"\n";
    bytes += settings.len() as u64;
    fs::write(dir.join("settings.toml"), settings)?;
    Ok(RulesInfo {
        bytes,
        cidrs: nets.len() as u64 + 1,
    })
}

/// `n` distinct networks outside the loopback: nine in ten IPv4 (/16 to /32), one in ten IPv6
/// /48 to /64 under 2001:db8::/32, host bits clear as the loader requires.
fn cidr_list(n: u64) -> Vec<String> {
    let mut seen = HashSet::with_capacity(n as usize);
    let mut out = Vec::with_capacity(n as usize);
    let mut i = 0u64;
    while (out.len() as u64) < n {
        let r = mix(i ^ 0xC1D2);
        i += 1;
        let net = if r % 10 == 9 {
            let len = 48 + (r >> 8) % 17;
            let h1 = (r >> 16) as u16;
            let mut h2 = (r >> 32) as u16;
            if len < 64 {
                h2 &= !(u16::MAX >> (len - 48));
            }
            format!("2001:db8:{h1:x}:{h2:x}::/{len}")
        } else {
            let len = 16 + (r >> 8) % 17;
            let addr = (r >> 32) as u32;
            if addr >> 24 == 127 {
                continue;
            }
            let mask = if len == 32 {
                u32::MAX
            } else {
                !(u32::MAX >> len)
            };
            let a = std::net::Ipv4Addr::from(addr & mask);
            format!("{a}/{len}")
        };
        if seen.insert(net.clone()) {
            out.push(net);
        }
    }
    out
}

/// A field of `/proc/self/status` (or another process's) in KiB, e.g. `VmRSS`.
pub fn proc_status_kib(pid: &str, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
