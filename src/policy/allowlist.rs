//! A set of CIDRs answering "does this address fall in any of them" in time bounded by the address
//! width, not by the number of CIDRs.
//!
//! The structure is a multibit trie with a stride of 4 bits: each node has 16 children and a
//! 16-bit mask of slots where some prefix ends. A prefix whose length is not a multiple of 4 is
//! expanded over the slots it covers. A lookup is therefore at most 8 node visits for IPv4 and 32
//! for IPv6, each a couple of array reads.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr};

const STRIDE: u8 = 4;

#[derive(Clone, Copy, Default)]
struct Node {
    children: [u32; 16],
    ends: u16,
}

#[derive(Clone, Default)]
struct Trie {
    nodes: Vec<Node>,
    all: bool,
}

impl Trie {
    fn insert(&mut self, addr: u128, len: u8) {
        if self.all {
            return;
        }
        if len == 0 {
            self.all = true;
            self.nodes.clear();
            return;
        }
        if self.nodes.is_empty() {
            self.nodes.push(Node::default());
        }
        let mut node = 0usize;
        let mut depth = 0u8;
        loop {
            let nib = nibble(addr, depth);
            let remaining = len - depth;
            if remaining <= STRIDE {
                let span = 1u16 << (STRIDE - remaining);
                let base = nib & !(span - 1);
                for slot in base..base + span {
                    self.nodes[node].ends |= 1 << slot;
                }
                return;
            }
            if self.nodes[node].ends & (1 << nib) != 0 {
                // Already covered by a shorter prefix.
                return;
            }
            let child = self.nodes[node].children[usize::from(nib)];
            node = if child == 0 {
                let idx = self.nodes.len();
                self.nodes.push(Node::default());
                // Index 0 is the root, so 0 can mean "no child"; u32 keeps nodes small and
                // 4 billion nodes is far beyond any rule set's size.
                self.nodes[node].children[usize::from(nib)] = idx as u32;
                idx
            } else {
                child as usize
            };
            depth += STRIDE;
        }
    }

    #[inline]
    fn contains(&self, addr: u128, width: u8) -> bool {
        if self.all {
            return true;
        }
        let Some(mut node) = self.nodes.first() else {
            return false;
        };
        let mut depth = 0u8;
        while depth < width {
            let nib = nibble(addr, depth);
            if node.ends & (1 << nib) != 0 {
                return true;
            }
            match node.children[usize::from(nib)] {
                0 => return false,
                c => node = &self.nodes[c as usize],
            }
            depth += STRIDE;
        }
        false
    }

    fn is_empty(&self) -> bool {
        !self.all && self.nodes.is_empty()
    }
}

/// The 4-bit group at `depth` bits from the top of a left-aligned 128-bit address.
#[inline]
fn nibble(addr: u128, depth: u8) -> u16 {
    ((addr >> (124 - u32::from(depth))) & 0xf) as u16
}

/// A set of IPv4 and IPv6 networks.
#[derive(Clone, Default)]
pub struct IpSet {
    v4: Trie,
    v6: Trie,
    len: usize,
}

impl std::fmt::Debug for IpSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IpSet({} networks)", self.len)
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are the same host as `a.b.c.d`; comparing them as
/// IPv6 would let a dual-stack listener bypass an IPv4 allowlist.
#[inline]
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

impl IpSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, net: IpNet) {
        self.len += 1;
        match net {
            IpNet::V4(n) => self.v4.insert(v4_bits(n.network()), n.prefix_len()),
            IpNet::V6(n) => {
                let addr = n.network();
                if addr.to_ipv4_mapped().is_some() && n.prefix_len() >= 96 {
                    self.v4.insert(u128::from(addr) << 96, n.prefix_len() - 96);
                } else {
                    self.v6.insert(u128::from(addr), n.prefix_len());
                }
            }
        }
    }

    /// Number of networks inserted (duplicates and covered ones included).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match canonical_ip(ip) {
            IpAddr::V4(v4) => self.v4.contains(v4_bits(v4), 32),
            IpAddr::V6(v6) => self.v6.contains(u128::from(v6), 128),
        }
    }
}

impl FromIterator<IpNet> for IpSet {
    fn from_iter<T: IntoIterator<Item = IpNet>>(iter: T) -> Self {
        let mut set = IpSet::new();
        for net in iter {
            set.insert(net);
        }
        set
    }
}

#[inline]
fn v4_bits(a: Ipv4Addr) -> u128 {
    u128::from(u32::from(a)) << 96
}

/// Parses a CIDR, or a bare address as a host route (`/32`, `/128`). Host bits set beyond the
/// prefix are an error: `10.0.0.1/8` is almost always a typo for something narrower.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(match ip {
            IpAddr::V4(a) => IpNet::V4(ipnet::Ipv4Net::new_assert(a, 32)),
            IpAddr::V6(a) => IpNet::V6(ipnet::Ipv6Net::new_assert(a, 128)),
        });
    }
    let net: IpNet = s.parse().map_err(|_| {
        format!("`{s}` is not an IP network (expected e.g. 203.0.113.0/24 or 2001:db8::/32)")
    })?;
    if net.addr() != net.network() {
        return Err(format!(
            "`{s}` has host bits set; did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(cidrs: &[&str]) -> IpSet {
        cidrs.iter().map(|c| parse_cidr(c).unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v4_prefixes_of_every_length() {
        for len in 0..=32u8 {
            let base: u32 = 0xC633_6407; // 198.51.100.7
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            let net = format!("{}/{len}", Ipv4Addr::from(base & mask));
            let s = set(&[&net]);
            assert!(s.contains(IpAddr::V4(Ipv4Addr::from(base))), "{net}");
            if len > 0 {
                // Flip the last bit inside the prefix: must fall outside.
                let outside = base ^ (1 << (32 - len));
                assert!(!s.contains(IpAddr::V4(Ipv4Addr::from(outside))), "{net}");
            }
            if len < 32 {
                let inside = base ^ 1;
                assert!(s.contains(IpAddr::V4(Ipv4Addr::from(inside))), "{net}");
            }
        }
    }

    #[test]
    fn v6_and_mapped() {
        let s = set(&["2001:db8::/32", "203.0.113.0/24"]);
        assert!(s.contains(ip("2001:db8:1::5")));
        assert!(!s.contains(ip("2001:db9::1")));
        assert!(s.contains(ip("203.0.113.9")));
        assert!(s.contains(ip("::ffff:203.0.113.9")));
        assert!(!s.contains(ip("::ffff:203.0.114.9")));
        assert!(!s.contains(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)));
        let mapped = set(&["::ffff:10.1.0.0/112"]);
        assert!(mapped.contains(ip("10.1.2.3")));
        assert!(!mapped.contains(ip("10.2.0.1")));
    }

    #[test]
    fn overlapping_and_empty() {
        let s = set(&["10.0.0.0/8", "10.1.0.0/16", "10.1.2.3"]);
        assert!(s.contains(ip("10.200.0.1")));
        let s = set(&["10.1.2.3", "10.0.0.0/8"]);
        assert!(s.contains(ip("10.200.0.1")));
        assert!(IpSet::new().is_empty());
        assert!(!IpSet::new().contains(ip("1.2.3.4")));
        let all = set(&["0.0.0.0/0"]);
        assert!(all.contains(ip("8.8.8.8")));
        assert!(!all.contains(ip("::1")));
    }

    #[test]
    fn parse_errors_are_helpful() {
        assert!(parse_cidr("10.0.0.1/8").unwrap_err().contains("10.0.0.0/8"));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("banana").is_err());
        assert_eq!(parse_cidr("::1").unwrap().prefix_len(), 128);
    }

    #[test]
    fn agrees_with_a_linear_scan() {
        // Deterministic pseudo-random prefixes; every probe must agree with IpNet::contains.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut nets = Vec::new();
        for _ in 0..300 {
            let a = next() as u32;
            let len = (next() % 33) as u8;
            nets.push(IpNet::V4(
                ipnet::Ipv4Net::new(Ipv4Addr::from(a), len.max(8))
                    .unwrap()
                    .trunc(),
            ));
        }
        let s: IpSet = nets.iter().copied().collect();
        let mut hits = 0;
        for i in 0..20_000usize {
            // Half the probes land near a stored prefix so both answers are exercised.
            let raw = if i % 2 == 0 {
                let IpNet::V4(n) = nets[i % nets.len()] else {
                    unreachable!()
                };
                u32::from(n.network()) ^ ((next() as u32) >> (n.prefix_len().max(1) - 1))
            } else {
                next() as u32
            };
            let probe = IpAddr::V4(Ipv4Addr::from(raw));
            let want = nets.iter().any(|n| n.contains(&probe));
            assert_eq!(s.contains(probe), want, "{probe}");
            hits += usize::from(want);
        }
        assert!(
            hits > 1000 && hits < 19_000,
            "probe mix too one-sided: {hits}"
        );
    }
}
