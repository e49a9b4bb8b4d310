//! Which address a request comes from.
//!
//! The TCP peer is the truth unless the peer is a trusted proxy; only then are `X-Forwarded-For`
//! and `Forwarded` (RFC 7239) read, from the right, skipping further trusted proxies. Each proxy
//! appends what it saw, so the rightmost address not ours is the first one nobody we trust could
//! have forged.
//!
//! When a trusted proxy sends both headers, they are believed only if they name the same source:
//! the gateway cannot tell which of the two its proxies maintain, and the other one may be
//! whatever the client wrote. Anything that is not an address — an obfuscated identifier
//! (`_hidden`), `unknown`, an IPv6 zone id (`fe80::1%eth0`, `%25`-encoded or numeric), a
//! `Forwarded` element without `for=` — makes the source unknown, which no allowlist admits.

use http::HeaderMap;
use std::net::{IpAddr, SocketAddr};

use super::allowlist::{IpSet, canonical_ip};

/// Where the source address was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceIp {
    /// The TCP peer itself.
    Peer(IpAddr),
    /// Read from `X-Forwarded-For` or `Forwarded`, `hops` trusted proxies away from the peer.
    Forwarded { ip: IpAddr, hops: usize },
    /// A trusted proxy forwarded a value that is not an address; no allowlist can admit it.
    Unknown,
}

impl SourceIp {
    pub fn ip(&self) -> Option<IpAddr> {
        match *self {
            SourceIp::Peer(ip) | SourceIp::Forwarded { ip, .. } => Some(ip),
            SourceIp::Unknown => None,
        }
    }
}

/// Parses one forwarded address: an address, optionally with a port (`1.2.3.4:5`,
/// `[2001:db8::1]:5`), or a bracketed IPv6 address. Zone ids are refused outright: std parses a
/// numeric one (`[fe80::1%2]:80`) and would drop it, leaving an address no proxy saw.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if s.contains('%') {
        return None;
    }
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            s.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|r| r.parse().ok())
        })
        .map(canonical_ip)
}

/// One hop of a chain, rightmost first; `None` for something that is not an address.
type Hop = Option<IpAddr>;

/// `X-Forwarded-For`, rightmost hop first. Later header lines were appended later, so lines are
/// walked in reverse and each line from its end.
fn xff_hops(headers: &HeaderMap) -> Vec<Hop> {
    let mut hops = Vec::new();
    for line in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        let Ok(line) = line.to_str() else {
            hops.push(None);
            return hops;
        };
        for hop in line.rsplit(',') {
            if !hop.trim().is_empty() {
                hops.push(parse_hop(hop));
            }
        }
    }
    hops
}

/// Splits on `sep` outside quoted strings (RFC 7230 `quoted-string`, with `\` escapes).
fn split_unquoted(s: &str, sep: u8) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in s.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if b == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// The `for=` value of one `Forwarded` element, as an address. An element without `for`, with
/// it twice, or with a malformed quoted string has no address.
fn forwarded_for(element: &str) -> Hop {
    let mut found = None;
    for pair in split_unquoted(element, b';') {
        let Some((name, value)) = pair.split_once('=') else {
            if pair.trim().is_empty() {
                continue;
            }
            return None;
        };
        if !name.trim().eq_ignore_ascii_case("for") {
            continue;
        }
        if found.is_some() {
            return None;
        }
        found = Some(value.trim());
    }
    let value = found?;
    let value = match value.strip_prefix('"') {
        Some(rest) => {
            let inner = rest.strip_suffix('"')?;
            // Addresses need no escapes; one would only hide what the value really is.
            if inner.contains(['\\', '"']) {
                return None;
            }
            inner
        }
        None => value,
    };
    parse_hop(value)
}

/// `Forwarded` (RFC 7239), rightmost element first.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Hop> {
    let mut hops = Vec::new();
    for line in headers.get_all(http::header::FORWARDED).iter().rev() {
        let Ok(line) = line.to_str() else {
            hops.push(None);
            return hops;
        };
        for element in split_unquoted(line, b',').into_iter().rev() {
            if !element.trim().is_empty() {
                hops.push(forwarded_for(element));
            }
        }
    }
    hops
}

/// The rightmost hop that is not a trusted proxy, or the leftmost one if all of them are.
fn walk(peer: IpAddr, hops: Vec<Hop>, trusted: &IpSet) -> SourceIp {
    let mut count = 0;
    let mut last_trusted = peer;
    for hop in hops {
        let Some(ip) = hop else {
            return SourceIp::Unknown;
        };
        count += 1;
        if !trusted.contains(ip) {
            return SourceIp::Forwarded { ip, hops: count };
        }
        last_trusted = ip;
    }
    if count == 0 {
        // Headers present but empty: nothing was forwarded.
        SourceIp::Peer(peer)
    } else {
        // Every hop was one of ours: the request originated at our own proxy.
        SourceIp::Forwarded {
            ip: last_trusted,
            hops: count,
        }
    }
}

/// A static name: looking a header up by `&str` parses and validates the name every time.
static X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &IpSet) -> SourceIp {
    let peer = canonical_ip(peer);
    if trusted.is_empty() || !trusted.contains(peer) {
        return SourceIp::Peer(peer);
    }
    let has_xff = headers.contains_key(&X_FORWARDED_FOR);
    let has_forwarded = headers.contains_key(http::header::FORWARDED);
    match (has_xff, has_forwarded) {
        (false, false) => SourceIp::Peer(peer),
        (true, false) => walk(peer, xff_hops(headers), trusted),
        (false, true) => walk(peer, forwarded_hops(headers), trusted),
        (true, true) => {
            let xff = walk(peer, xff_hops(headers), trusted);
            let forwarded = walk(peer, forwarded_hops(headers), trusted);
            match (xff.ip(), forwarded.ip()) {
                (Some(a), Some(b)) if a == b => xff,
                _ => SourceIp::Unknown,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::allowlist::parse_cidr;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn forwarded(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in lines {
            h.append("forwarded", v.parse().unwrap());
        }
        h
    }

    fn from_proxy(h: &HeaderMap) -> SourceIp {
        resolve("10.0.0.1".parse().unwrap(), h, &trusted())
    }

    fn at(ip: &str, hops: usize) -> SourceIp {
        SourceIp::Forwarded {
            ip: ip.parse().unwrap(),
            hops,
        }
    }

    fn trusted() -> IpSet {
        ["10.0.0.0/8", "fd00::/8"]
            .iter()
            .map(|c| parse_cidr(c).unwrap())
            .collect()
    }

    #[test]
    fn untrusted_peer_is_the_source_whatever_it_claims() {
        let s = resolve(
            "198.51.100.1".parse().unwrap(),
            &headers(&["203.0.113.7"]),
            &trusted(),
        );
        assert_eq!(s, SourceIp::Peer("198.51.100.1".parse().unwrap()));
    }

    #[test]
    fn trusted_peer_rightmost_untrusted_hop() {
        let h = headers(&["1.1.1.1, 203.0.113.7", "10.0.0.9"]);
        let s = resolve("10.0.0.1".parse().unwrap(), &h, &trusted());
        assert_eq!(
            s,
            SourceIp::Forwarded {
                ip: "203.0.113.7".parse().unwrap(),
                hops: 2
            }
        );
    }

    #[test]
    fn mapped_ports_and_garbage() {
        let peer: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let s = resolve(peer, &headers(&["[2001:db8::1]:443"]), &trusted());
        assert_eq!(s.ip(), Some("2001:db8::1".parse().unwrap()));
        let s = resolve(peer, &headers(&["::ffff:203.0.113.5"]), &trusted());
        assert_eq!(s.ip(), Some("203.0.113.5".parse().unwrap()));
        let s = resolve(peer, &headers(&["fe80::1%eth0"]), &trusted());
        assert_eq!(s, SourceIp::Unknown);
        let s = resolve(peer, &headers(&[]), &trusted());
        assert_eq!(s, SourceIp::Peer("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn numeric_zone_ids_are_not_addresses() {
        // std parses `[fe80::1%2]:80` as a socket address and would drop the zone.
        for v in [
            "[fe80::1%2]:80",
            "fe80::1%25eth0",
            "[fe80::1%25eth0]:80",
            "fe80::1%2",
        ] {
            assert_eq!(from_proxy(&headers(&[v])), SourceIp::Unknown, "{v}");
        }
    }

    #[test]
    fn forwarded_rightmost_untrusted_element() {
        let h = forwarded(&["for=192.0.2.60;proto=http;by=10.0.0.2, for=203.0.113.7"]);
        assert_eq!(from_proxy(&h), at("203.0.113.7", 1));
        let h = forwarded(&["for=203.0.113.7", "for=10.0.0.9;proto=https"]);
        assert_eq!(from_proxy(&h), at("203.0.113.7", 2));
        let h = forwarded(&["For=\"[2001:db8:cafe::17]:4711\""]);
        assert_eq!(from_proxy(&h), at("2001:db8:cafe::17", 1));
        let h = forwarded(&["for=\"192.0.2.43:47011\", for=10.0.0.3"]);
        assert_eq!(from_proxy(&h), at("192.0.2.43", 2));
        // A quoted comma does not split elements.
        let h = forwarded(&["for=203.0.113.7;ext=\"a,b\""]);
        assert_eq!(from_proxy(&h), at("203.0.113.7", 1));
        // Every element one of ours: the request started at our own proxy.
        let h = forwarded(&["for=10.0.0.5, for=10.0.0.6"]);
        assert_eq!(from_proxy(&h), at("10.0.0.5", 2));
        // An untrusted peer's Forwarded is not read.
        let s = resolve(
            "198.51.100.1".parse().unwrap(),
            &forwarded(&["for=203.0.113.7"]),
            &trusted(),
        );
        assert_eq!(s, SourceIp::Peer("198.51.100.1".parse().unwrap()));
    }

    #[test]
    fn forwarded_values_that_are_not_addresses() {
        for v in [
            "for=_hidden",
            "for=unknown",
            "for=\"[fe80::1%25eth0]\"",
            "for=\"[2001:db8::1\"",
            "for=\"203.0.113.7",
            "for=\"203.0.113.\\7\"",
            "proto=https",
            "for=203.0.113.7;for=198.51.100.1",
            "for=203.0.113.7;garbage",
            "for=203.0.113.7, by=10.0.0.2",
        ] {
            assert_eq!(from_proxy(&forwarded(&[v])), SourceIp::Unknown, "{v}");
        }
        // An unknown hop left of the first untrusted one is never reached.
        let h = forwarded(&["for=_hidden, for=203.0.113.7"]);
        assert_eq!(from_proxy(&h), at("203.0.113.7", 1));
    }

    #[test]
    fn both_headers_must_agree() {
        let mut h = headers(&["203.0.113.7"]);
        h.append("forwarded", "for=203.0.113.7".parse().unwrap());
        assert_eq!(from_proxy(&h), at("203.0.113.7", 1));
        let mut h = headers(&["203.0.113.7"]);
        h.append("forwarded", "for=198.51.100.1".parse().unwrap());
        assert_eq!(from_proxy(&h), SourceIp::Unknown);
        let mut h = headers(&["203.0.113.7"]);
        h.append("forwarded", "for=_hidden".parse().unwrap());
        assert_eq!(from_proxy(&h), SourceIp::Unknown);
    }
}
