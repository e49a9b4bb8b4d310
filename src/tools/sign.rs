//! `akgate sign`: prints a signed request as a curl command (or as raw HTTP/1.1 text for
//! `explain --request`), with a fresh nonce and the current time. The secret is read from the
//! environment variable named by `--secret-env` and never printed.

use clap::{Args, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::auth::encoding::{percent_decode, percent_encode};
use crate::auth::{acs3, rpc1, sigv4};
use crate::policy::mfa::{
    self,
    totp::{self, TotpSeed},
};
use crate::time::{Clock, SystemClock, UnixSeconds, format_iso8601_utc, parse_iso8601_utc};

use super::{Target, parse_header, parse_target, shell_quote};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SignScheme {
    /// Alibaba Cloud V3, ACS3-HMAC-SHA256.
    Acs3,
    /// Alibaba Cloud RPC v1 (HMAC-SHA1), parameters in the query.
    Rpc,
    /// Alibaba Cloud ROA v1 (HMAC-SHA1, `Authorization: acs …`), with Content-MD5 for a body.
    Roa,
    /// AWS Signature Version 4 in the Authorization header.
    Sigv4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A curl command line.
    Curl,
    /// Raw HTTP/1.1 request text, as `akgate explain --request` reads it.
    Http,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    #[arg(long)]
    pub key_id: String,
    /// The environment variable holding the secret (never printed).
    #[arg(long)]
    pub secret_env: String,
    #[arg(long, value_enum, default_value = "acs3")]
    pub scheme: SignScheme,
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Absolute URL, `http://host:port/path?query`.
    #[arg(long)]
    pub url: String,
    /// `Name: value`; repeat for more. Every header given is signed (acs3, sigv4).
    #[arg(long = "header", short = 'H')]
    pub header: Vec<String>,
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// The API action (acs3: x-acs-action; rpc: Action). Required for acs3 and rpc.
    #[arg(long)]
    pub action: Option<String>,
    /// The API version (acs3: x-acs-version; rpc: Version).
    #[arg(long, default_value = "2014-05-26")]
    pub version: String,
    /// SigV4 region (required for sigv4).
    #[arg(long)]
    pub region: Option<String>,
    /// SigV4 service, the signing name (required for sigv4).
    #[arg(long)]
    pub service: Option<String>,
    #[arg(long, value_enum, default_value = "curl")]
    pub format: OutputFormat,
    /// Sign as of this time (yyyy-MM-ddTHH:mm:ssZ) instead of now.
    #[arg(long)]
    pub now: Option<String>,
    /// A second-factor code for a critical operation, sent where the scheme signs it: the
    /// X-Akgate-MFA-Code header (acs3, sigv4), x-acs-akgate-mfa-code (roa), the AkgateMfaCode
    /// parameter (rpc).
    #[arg(long, conflicts_with = "mfa_secret_env")]
    pub mfa_code: Option<String>,
    /// The environment variable holding the key's base32 TOTP seed: sends the code of the
    /// signing time, as --mfa-code would (for testing; the seed is never printed).
    #[arg(long)]
    pub mfa_secret_env: Option<String>,
}

/// A signed request, ready to print.
#[derive(Debug)]
pub struct Signed {
    pub method: String,
    pub target: Target,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub fn run(args: &SignArgs) -> ExitCode {
    match sign(args) {
        Ok(s) => {
            let text = match args.format {
                OutputFormat::Curl => curl(&s, args.body_file.as_ref()),
                OutputFormat::Http => http_text(&s),
            };
            let mut out = std::io::stdout().lock();
            if out.write_all(text.as_bytes()).is_err() {
                return ExitCode::from(2);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("akgate sign: {e}");
            ExitCode::from(2)
        }
    }
}

fn amz_date(t: UnixSeconds) -> String {
    // 2026-01-15T08:00:00Z → 20260115T080000Z
    format_iso8601_utc(t).replace(['-', ':'], "")
}

/// Builds and signs the request.
pub fn sign(args: &SignArgs) -> Result<Signed, String> {
    // Wiped when signing is done (the process environment keeps its own copy).
    let secret = zeroize::Zeroizing::new(
        std::env::var(&args.secret_env)
            .map_err(|_| format!("environment variable `{}` is not set", args.secret_env))?,
    );
    let now = match &args.now {
        Some(s) => parse_iso8601_utc(s)
            .ok_or_else(|| format!("--now `{s}` is not yyyy-MM-ddTHH:mm:ssZ"))?,
        None => SystemClock.now(),
    };
    let mut target = parse_target(&args.url)?;
    let mut headers = args
        .header
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let host = match headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("host")) {
        Some((_, h)) => h.clone(),
        None => target
            .authority
            .clone()
            .ok_or("--url must be absolute (http://host:port/path) or a Host header given")?,
    };
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case("host"));
    let body = match &args.body_file {
        Some(p) => std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
        None => Vec::new(),
    };
    // curl would add its own, unsigned, form content type to a body.
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        headers.push(("content-type".into(), "application/octet-stream".into()));
    }
    let method = args.method.to_ascii_uppercase();
    let nonce = crate::demo::fresh_nonce();
    let mfa_code = mfa_code(args, now)?;
    if let Some(code) = &mfa_code {
        match args.scheme {
            SignScheme::Acs3 | SignScheme::Sigv4 => {
                headers.push((mfa::CODE_HEADER.as_str().into(), code.clone()));
            }
            SignScheme::Roa => headers.push((mfa::ACS_CODE_HEADER.as_str().into(), code.clone())),
            // Added with the other parameters below.
            SignScheme::Rpc => {}
        }
    }
    match args.scheme {
        SignScheme::Acs3 => {
            let action = args.action.as_deref().ok_or("acs3 needs --action")?;
            let mut all = vec![("host".to_string(), host)];
            all.extend(headers);
            all.extend([
                ("x-acs-action".to_string(), action.to_string()),
                ("x-acs-version".to_string(), args.version.clone()),
                ("x-acs-date".to_string(), format_iso8601_utc(now)),
                ("x-acs-signature-nonce".to_string(), nonce),
            ]);
            acs3::sign(
                &method,
                &target.path,
                &target.query,
                &mut all,
                &body,
                &args.key_id,
                secret.as_bytes(),
            );
            headers = all;
        }
        SignScheme::Rpc => {
            let action = args.action.as_deref().ok_or("rpc needs --action")?;
            if target.path != "/" {
                return Err("RPC v1 signs no path: the URL's path must be `/`".into());
            }
            let mut params: Vec<(String, String)> = crate::auth::encoding::raw_pairs(&target.query)
                .map(|(k, v)| {
                    let d =
                        |b: &[u8]| String::from_utf8_lossy(&percent_decode(b, true)).into_owned();
                    (d(k), d(v))
                })
                .collect();
            let timestamp = format_iso8601_utc(now);
            for (k, v) in [
                ("Action", action),
                ("Version", args.version.as_str()),
                ("Format", "JSON"),
                ("AccessKeyId", args.key_id.as_str()),
                ("SignatureMethod", "HMAC-SHA1"),
                ("SignatureVersion", "1.0"),
                ("SignatureNonce", nonce.as_str()),
                ("Timestamp", timestamp.as_str()),
            ]
            .into_iter()
            .chain(mfa_code.as_deref().map(|code| (mfa::CODE_PARAMETER, code)))
            {
                params.retain(|(pk, _)| pk != k);
                params.push((k.to_string(), v.to_string()));
            }
            let borrowed: Vec<(&str, &str)> = params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let signature = rpc1::sign(&method, &borrowed, &secret);
            params.push(("Signature".into(), signature));
            target.query = params
                .iter()
                .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
                .collect::<Vec<_>>()
                .join("&");
            headers.insert(0, ("host".into(), host));
        }
        SignScheme::Roa => {
            let action = args.action.as_deref().ok_or("roa needs --action")?;
            let mut all = vec![("host".to_string(), host)];
            all.extend(headers);
            all.extend([
                ("x-acs-action".to_string(), action.to_string()),
                ("x-acs-version".to_string(), args.version.clone()),
                ("date".to_string(), crate::time::format_http_date(now)),
                ("x-acs-signature-nonce".to_string(), nonce),
                (
                    "x-acs-signature-method".to_string(),
                    "HMAC-SHA1".to_string(),
                ),
                ("x-acs-signature-version".to_string(), "1.0".to_string()),
            ]);
            crate::auth::roa1::sign(
                &method,
                &target.path,
                &target.query,
                &mut all,
                &body,
                &args.key_id,
                secret.as_bytes(),
            );
            headers = all;
        }
        SignScheme::Sigv4 => {
            let region = args.region.as_deref().ok_or("sigv4 needs --region")?;
            let service = args.service.as_deref().ok_or("sigv4 needs --service")?;
            let mut all = vec![("host".to_string(), host)];
            all.extend(headers);
            sigv4::sign_headers(
                &method,
                &target.path,
                &target.query,
                &mut all,
                &body,
                &args.key_id,
                secret.as_bytes(),
                region,
                service,
                &amz_date(now),
            );
            headers = all;
        }
    }
    Ok(Signed {
        method,
        target,
        headers,
        body,
    })
}

/// The second-factor code to send, from `--mfa-code` or computed from `--mfa-secret-env`.
fn mfa_code(args: &SignArgs, now: UnixSeconds) -> Result<Option<String>, String> {
    if let Some(code) = &args.mfa_code {
        return Ok(Some(code.trim().to_string()));
    }
    let Some(var) = &args.mfa_secret_env else {
        return Ok(None);
    };
    let text = zeroize::Zeroizing::new(
        std::env::var(var).map_err(|_| format!("environment variable `{var}` is not set"))?,
    );
    let seed = TotpSeed::from_base32(&text).map_err(|e| format!("`{var}`: {e}"))?;
    Ok(Some(seed.code_at(now, totp::DIGITS)))
}

fn request_target(s: &Signed) -> String {
    if s.target.query.is_empty() {
        s.target.path.clone()
    } else {
        format!("{}?{}", s.target.path, s.target.query)
    }
}

fn host_of(s: &Signed) -> &str {
    s.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map_or("", |(_, v)| v.as_str())
}

/// A curl command sending exactly the signed request (`--path-as-is`, so that curl does not
/// rewrite a signed path).
pub fn curl(s: &Signed, body_file: Option<&PathBuf>) -> String {
    let scheme = s.target.scheme.as_deref().unwrap_or("http");
    let authority = s.target.authority.as_deref().unwrap_or(host_of(s));
    let url = format!("{scheme}://{authority}{}", request_target(s));
    let mut cmd = format!(
        "curl -sS --path-as-is -X {} {}",
        s.method,
        shell_quote(&url)
    );
    for (k, v) in &s.headers {
        if k.eq_ignore_ascii_case("host") && v == authority {
            continue;
        }
        cmd.push_str(&format!(" \\\n  -H {}", shell_quote(&format!("{k}: {v}"))));
    }
    if let Some(p) = body_file {
        cmd.push_str(&format!(
            " \\\n  --data-binary {}",
            shell_quote(&format!("@{}", p.display()))
        ));
    }
    cmd.push('\n');
    cmd
}

/// Raw HTTP/1.1 request text.
pub fn http_text(s: &Signed) -> String {
    let mut text = format!("{} {} HTTP/1.1\r\n", s.method, request_target(s));
    for (k, v) in &s.headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    if !s.body.is_empty() {
        text.push_str(&format!("content-length: {}\r\n", s.body.len()));
    }
    text.push_str("\r\n");
    text.push_str(&String::from_utf8_lossy(&s.body));
    text
}
