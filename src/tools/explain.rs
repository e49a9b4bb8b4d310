//! `akgate explain`: runs the full decision on one request offline — the very function `serve`
//! runs ([`decide_traced`]) — and prints each step with the rule file and line behind it.

use clap::Args;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::auth::RequestView;
use crate::decision::{StepVerdict, decide_traced};
use crate::policy::NonceCache;
use crate::rules::{LoadOptions, load_dir};
use crate::time::{Clock, SystemClock, UnixSeconds, parse_iso8601_utc};

use super::{parse_header, parse_target};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Rules directory, loaded exactly as `serve` loads it (secrets included: the signature is
    /// verified).
    #[arg(long, env = "AKGATE_RULES", default_value = "rules")]
    pub rules: PathBuf,
    /// The TCP peer address the request came from.
    #[arg(long)]
    pub ip: IpAddr,
    /// A raw HTTP/1.1 request (request line, headers, blank line, body); `-` for stdin.
    #[arg(long, conflicts_with_all = ["method", "url", "header", "body_file"])]
    pub request: Option<PathBuf>,
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// `http://host:port/path?query` (its authority is the Host unless a Host header is given)
    /// or `/path?query`.
    #[arg(long, required_unless_present = "request")]
    pub url: Option<String>,
    /// `Name: value`; repeat for more.
    #[arg(long = "header", short = 'H')]
    pub header: Vec<String>,
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// Evaluate at this time (yyyy-MM-ddTHH:mm:ssZ) instead of now: for captured requests.
    #[arg(long)]
    pub now: Option<String>,
}

/// A request as `explain` judges it.
#[derive(Debug, Default)]
pub struct OwnedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub host: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl OwnedRequest {
    fn from_parts(
        method: &str,
        url: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<Self, String> {
        let t = parse_target(url)?;
        let host = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("host"))
            .map(|(_, v)| v.clone())
            .or(t.authority);
        Ok(OwnedRequest {
            method: method.to_string(),
            path: t.path,
            query: t.query,
            host,
            headers: headers
                .into_iter()
                .filter(|(n, _)| !n.eq_ignore_ascii_case("host"))
                .collect(),
            body,
        })
    }
}

/// Parses raw HTTP/1.1 request text; lines may end in `\n` or `\r\n`.
pub fn parse_raw_request(raw: &[u8]) -> Result<OwnedRequest, String> {
    let (head, body) = match find(raw, b"\r\n\r\n") {
        Some(i) => (&raw[..i], &raw[i + 4..]),
        None => match find(raw, b"\n\n") {
            Some(i) => (&raw[..i], &raw[i + 2..]),
            None => (raw, &[][..]),
        },
    };
    let head = std::str::from_utf8(head).map_err(|_| "the request head is not UTF-8")?;
    let mut lines = head.lines().map(|l| l.trim_end_matches('\r'));
    let request_line = lines
        .by_ref()
        .find(|l| !l.trim().is_empty())
        .ok_or("empty request")?;
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(format!(
            "`{request_line}` is not a request line (METHOD target HTTP/1.1)"
        ));
    };
    let mut headers = Vec::new();
    for line in lines {
        headers.push(parse_header(line)?);
    }
    let mut body = body.to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        && len <= body.len()
    {
        body.truncate(len);
    }
    OwnedRequest::from_parts(method, target, headers, body)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn build_request(args: &ExplainArgs) -> Result<OwnedRequest, String> {
    if let Some(path) = &args.request {
        let raw = if path.as_os_str() == "-" {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)
                .map_err(|e| format!("cannot read stdin: {e}"))?;
            v
        } else {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
        };
        return parse_raw_request(&raw);
    }
    let url = args.url.as_deref().ok_or("--url or --request is needed")?;
    let headers = args
        .header
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let body = match &args.body_file {
        Some(p) => std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
        None => Vec::new(),
    };
    OwnedRequest::from_parts(&args.method.to_ascii_uppercase(), url, headers, body)
}

fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (n, v) in headers {
        let name = HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("`{n}` is not a header name"))?;
        let value =
            HeaderValue::from_str(v).map_err(|_| format!("the value of `{n}` is not valid"))?;
        map.append(name, value);
    }
    Ok(map)
}

fn mark(v: StepVerdict) -> &'static str {
    match v {
        StepVerdict::Pass => "✓",
        StepVerdict::Refuse => "✗",
        StepVerdict::WouldRefuse => "~",
        StepVerdict::Skip => "-",
    }
}

pub fn run(args: &ExplainArgs) -> ExitCode {
    match explain(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("akgate explain: {e}");
            ExitCode::from(2)
        }
    }
}

/// Prints the explanation; `Ok(true)` when the request is allowed.
fn explain(args: &ExplainArgs) -> Result<bool, String> {
    let now: UnixSeconds = match &args.now {
        Some(s) => parse_iso8601_utc(s)
            .ok_or_else(|| format!("--now `{s}` is not yyyy-MM-ddTHH:mm:ssZ"))?,
        None => SystemClock.now(),
    };
    let req = build_request(args)?;
    let snap = load_dir(&args.rules, &LoadOptions::default()).map_err(|e| {
        format!(
            "the rules in {} do not load (run `akgate check`):\n{e}",
            args.rules.display()
        )
    })?;
    let headers = header_map(&req.headers)?;
    let view = RequestView {
        method: &req.method,
        path: &req.path,
        query: &req.query,
        host: req.host.as_deref(),
        headers: &headers,
        body: &req.body,
    };
    let mut steps = Vec::new();
    // No usage is known here, so idle days count from now: `explain` never guesses a key idle.
    let state = crate::state::State::in_memory(NonceCache::new(), now);
    let d = decide_traced(&snap, &view, args.ip, now, &state, &mut steps);

    let mut out = std::io::stdout().lock();
    let w = |e: std::io::Error| e.to_string();
    writeln!(
        out,
        "request: {} {}{}{} host {}",
        req.method,
        req.path,
        if req.query.is_empty() { "" } else { "?" },
        req.query,
        req.host.as_deref().unwrap_or("-")
    )
    .map_err(w)?;
    for s in &steps {
        let mut lines = s.detail.lines();
        let first = lines.next().unwrap_or_default();
        let rule = s
            .rule
            .as_ref()
            .map(|r| format!("  ({r})"))
            .unwrap_or_default();
        writeln!(out, "{} {}: {first}{rule}", mark(s.verdict), s.name).map_err(w)?;
        for l in lines {
            writeln!(out, "      {l}").map_err(w)?;
        }
    }
    for wd in &d.would_deny {
        let rule = wd.rule.map(|r| format!("  ({r})")).unwrap_or_default();
        writeln!(
            out,
            "would_deny: {} (HTTP {}) {}{rule}",
            wd.rejection.code(),
            wd.rejection.status().as_u16(),
            wd.rejection
        )
        .map_err(w)?;
    }
    match &d.result {
        Ok(()) => {
            writeln!(out, "decision: allowed").map_err(w)?;
            Ok(true)
        }
        Err(rej) => {
            let rule = d
                .deciding_rule
                .map(|r| format!("  ({r})"))
                .unwrap_or_default();
            writeln!(
                out,
                "decision: denied {} (HTTP {}) {}{rule}",
                rej.code(),
                rej.status().as_u16(),
                rej.message()
            )
            .map_err(w)?;
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_requests_with_either_line_ending() {
        for sep in ["\n", "\r\n"] {
            let raw = ["POST /a?b=1 HTTP/1.1", "Host: h:1", "X-A: 1", "", "body"].join(sep);
            let r = parse_raw_request(raw.as_bytes()).unwrap();
            assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/a"));
            assert_eq!(r.query, "b=1");
            assert_eq!(r.host.as_deref(), Some("h:1"));
            assert_eq!(r.headers, vec![("X-A".to_string(), "1".to_string())]);
            assert_eq!(r.body, b"body");
        }
        let r = parse_raw_request(b"GET http://x:2/p HTTP/1.1\n\n").unwrap();
        assert_eq!(r.host.as_deref(), Some("x:2"));
    }
}
