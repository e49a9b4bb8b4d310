//! `akgate check [DIR]`: validates a rules directory exactly as `serve` loads it (the same
//! function, [`load_dir_with`]), and prints every problem with a hint.

use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::rules::load::{CheckOptions, load_dir_with};
use crate::rules::{LoadOptions, Problem};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Rules directory: every *.toml file in it is one rule set.
    #[arg(default_value = "rules")]
    pub dir: PathBuf,
    /// Do not read the secrets, public keys and security tokens that keys name by `secret_env`,
    /// `secret_file`, `public_key_file`, `security_token_env` or `security_token_file` (still
    /// checking that each key names exactly one): for CI of a rules repository, which has no
    /// real secrets. The only difference from what `serve` validates.
    #[arg(long)]
    pub skip_secrets: bool,
    /// Accept a rule set with no [[access_key]] (which would refuse every request).
    #[arg(long)]
    pub allow_empty: bool,
}

/// A short hint on how to fix a problem, from its message.
pub fn hint(message: &str) -> Option<&'static str> {
    const HINTS: &[(&str, &str)] = &[
        (
            "unknown field",
            "check the spelling and that the field belongs to this table (README.md, \"For security teams\", lists every field)",
        ),
        (
            "is not an IP network",
            "write an address or a network as address/prefix, e.g. 203.0.113.7, 203.0.113.0/24, 2001:db8::/32",
        ),
        (
            "has host bits set",
            "the bits after the prefix length must be zero; use the network address",
        ),
        (
            "duplicate access key id",
            "a key id may appear once in the whole rule set (all files together); remove or merge the other entry",
        ),
        (
            "duplicate account id",
            "an account may be declared once in the whole rule set; merge the entries",
        ),
        (
            "duplicate user",
            "user names are unique within an account; merge the entries or rename one",
        ),
        (
            "refers to unknown account",
            "declare the [[account]] (in any file of the directory) or fix the id",
        ),
        (
            "refers to unknown user",
            "declare the [[user]] in the same account (in any file of the directory) or fix the name",
        ),
        (
            "more than two active access keys",
            "set status = \"disabled\" on the key being rotated out before adding a new one",
        ),
        (
            "route to unknown service",
            "add a [[service]] with this name (its actions may be empty) or fix the route's service",
        ),
        (
            "inline secret",
            "an inline secret lives in the rules repository's history: move it to secret_env or secret_file, and rotate it",
        ),
        (
            "no [[access_key]]",
            "pass --allow-empty if this rule set is meant to refuse every request",
        ),
        (
            "no [[route]]",
            "add a [[route]]: without one every request is refused with InvalidRoute",
        ),
        (
            "is not set",
            "set the variable where the gateway runs, or pass --skip-secrets to validate without secrets",
        ),
        (
            "cannot read secret file",
            "secret_file is relative to the rules directory; or pass --skip-secrets",
        ),
        (
            "needs exactly one of",
            "give exactly one source: secret_env (preferred), secret_file, or secret",
        ),
        (
            "is not in the key table",
            "the flag has no effect until a key with this id exists; check the id",
        ),
        (
            "is declared twice",
            "merge the actions of both entries into one [[service]]",
        ),
        (
            "appears in more than one rule file",
            "keep one [settings] table for the whole rule set",
        ),
        (
            "is not a duration",
            "write a number with a unit: 500ms, 30s, 15m, 1h",
        ),
        (
            "expected http://host:port",
            "an upstream is an origin: http://host:port",
        ),
    ];
    HINTS
        .iter()
        .find(|(needle, _)| message.contains(needle))
        .map(|(_, h)| *h)
}

fn position(p: &Problem) -> String {
    if p.line == 0 {
        p.file.clone()
    } else {
        format!("{}:{}:{}", p.file, p.line, p.col)
    }
}

fn print_problem(out: &mut impl Write, p: &Problem, warning: bool) -> std::io::Result<()> {
    let kind = if warning { "warning: " } else { "" };
    writeln!(out, "{}: {kind}{}", position(p), p.message)?;
    if let Some(h) = hint(&p.message) {
        writeln!(out, "    hint: {h}")?;
    }
    Ok(())
}

fn plural(n: usize, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

pub fn run(args: &CheckArgs) -> ExitCode {
    let opts = CheckOptions {
        skip_secrets: args.skip_secrets,
        allow_empty: args.allow_empty,
    };
    let dir = args.dir.display().to_string();
    let mut out = std::io::stdout().lock();
    let result = load_dir_with(&args.dir, &LoadOptions::default(), &opts);
    let written = match &result {
        Ok(snap) => (|| {
            for w in &snap.warnings {
                print_problem(&mut out, w, true)?;
            }
            let mut summary = format!(
                "{dir}: {}, {}, {}: ok",
                plural(snap.keys.len(), "key"),
                plural(snap.routes.len(), "route"),
                plural(snap.services.len(), "service"),
            );
            if !snap.warnings.is_empty() {
                summary.push_str(&format!(", {}", plural(snap.warnings.len(), "warning")));
            }
            writeln!(out, "{summary}")
        })(),
        Err(e) => (|| {
            for p in &e.problems {
                print_problem(&mut out, p, false)?;
            }
            writeln!(out, "{dir}: {}", plural(e.problems.len(), "error"))
        })(),
    };
    if written.is_err() {
        return ExitCode::from(2);
    }
    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_match_the_loader_messages() {
        assert!(hint("unknown field `colour`, expected one of `id`").is_some());
        assert!(hint("`10.0.0.0/33` is not an IP network (expected …)").is_some());
        assert!(hint("nothing to see").is_none());
    }
}
