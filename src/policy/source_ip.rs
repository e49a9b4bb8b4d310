//! Which address a request comes from.
//!
//! The TCP peer is the truth unless the peer is a trusted proxy; only then is `X-Forwarded-For`
//! read, from the right, skipping further trusted proxies. Each proxy appends what it saw, so the
//! rightmost address not ours is the first one nobody we trust could have forged.

use http::HeaderMap;
use std::net::{IpAddr, SocketAddr};

use super::allowlist::{IpSet, canonical_ip};

/// Where the source address was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceIp {
    /// The TCP peer itself.
    Peer(IpAddr),
    /// Read from `X-Forwarded-For`, `hops` trusted proxies away from the peer.
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

/// Parses one `X-Forwarded-For` element: an address, optionally with a port (`1.2.3.4:5`,
/// `[2001:db8::1]:5`). Zone ids and obfuscated identifiers are not addresses.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
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

pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &IpSet) -> SourceIp {
    let peer = canonical_ip(peer);
    if trusted.is_empty() || !trusted.contains(peer) {
        return SourceIp::Peer(peer);
    }
    let mut hops = 0;
    let mut last_trusted = peer;
    // Later header lines were appended later, so walk lines in reverse and each line from its end.
    for line in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(line) = line.to_str() else {
            return SourceIp::Unknown;
        };
        for hop in line.rsplit(',') {
            if hop.trim().is_empty() {
                continue;
            }
            let Some(ip) = parse_hop(hop) else {
                return SourceIp::Unknown;
            };
            hops += 1;
            if !trusted.contains(ip) {
                return SourceIp::Forwarded { ip, hops };
            }
            last_trusted = ip;
        }
    }
    // Every hop was one of ours: the request originated at our own proxy.
    if hops == 0 {
        SourceIp::Peer(peer)
    } else {
        SourceIp::Forwarded {
            ip: last_trusted,
            hops,
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
}
