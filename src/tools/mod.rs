//! Offline tooling for the people who write the rules: `check`, `explain`, `sign`, `diff`.
//!
//! Each command is a thin layer over the library: `check` and `diff` load rules with the very
//! function `serve` uses ([`crate::rules::load`]), `explain` runs the very decision `serve` runs
//! ([`crate::decision::decide_traced`]).

pub mod check;
pub mod diff;
pub mod explain;
pub mod keys;
pub mod sign;

/// A URL or origin-form target split into its raw parts, as the wire carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `http` or `https` when the URL was absolute.
    pub scheme: Option<String>,
    /// The authority of an absolute URL.
    pub authority: Option<String>,
    /// Raw path, still percent-encoded; `/` when absent.
    pub path: String,
    /// Raw query without the `?`.
    pub query: String,
}

/// Splits `http://host:port/path?q` or `/path?q` without decoding anything.
pub fn parse_target(url: &str) -> Result<Target, String> {
    let url = url.split('#').next().unwrap_or_default();
    let (scheme, authority, rest) = match url.split_once("://") {
        Some((scheme, rest)) => {
            if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
                return Err(format!("`{url}`: only http:// and https:// URLs"));
            }
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let (authority, rest) = rest.split_at(end);
            if authority.is_empty() {
                return Err(format!("`{url}` has no host"));
            }
            (
                Some(scheme.to_ascii_lowercase()),
                Some(authority.to_string()),
                rest,
            )
        }
        None if url.starts_with('/') => (None, None, url),
        None => {
            return Err(format!(
                "`{url}` is neither an absolute URL (http://host/path) nor a path (/path)"
            ));
        }
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    Ok(Target {
        scheme,
        authority,
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
        query: query.into(),
    })
}

/// Parses `--header 'Name: value'`.
pub fn parse_header(h: &str) -> Result<(String, String), String> {
    let (name, value) = h
        .split_once(':')
        .ok_or_else(|| format!("header `{h}` is not `Name: value`"))?;
    let name = name.trim();
    if name.is_empty() || http::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!("`{name}` is not a header name"));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

/// Single-quotes a string for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("http://h:8080/a%20b?x=1&y").unwrap();
        assert_eq!(t.authority.as_deref(), Some("h:8080"));
        assert_eq!((t.path.as_str(), t.query.as_str()), ("/a%20b", "x=1&y"));
        let t = parse_target("http://h?x").unwrap();
        assert_eq!((t.path.as_str(), t.query.as_str()), ("/", "x"));
        let t = parse_target("/p").unwrap();
        assert_eq!((t.authority, t.query.as_str()), (None, ""));
        assert!(parse_target("ftp://h/").is_err());
        assert!(parse_target("h/p").is_err());
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
