//! Whose word counts for a caller's address: the proxies an operator
//! trusts (`MAYFLY_TRUSTED_PROXIES`), and the address taken from
//! `X-Forwarded-For` through them.

use std::net::IpAddr;

/// An address block, such as `10.0.0.0/8`, `fd00::/8` or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: u128,
    bits: u32,
}

/// Addresses as 128-bit numbers, IPv4 as IPv4-mapped IPv6.
fn as_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let mask = if self.bits == 0 {
            0
        } else {
            u128::MAX << (128 - self.bits)
        };
        as_u128(ip) & mask == self.net & mask
    }
}

pub fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let (addr, bits) = match s.trim().split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (s.trim(), None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{s}` is not an IP address or CIDR block"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits: u32 = match bits {
        None => max,
        Some(b) => b
            .parse()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("`{s}` has an invalid prefix length"))?,
    };
    // IPv4 prefixes count within the mapped address's last 32 bits.
    let bits = if ip.is_ipv4() { bits + 96 } else { bits };
    Ok(Cidr { net: as_u128(ip), bits })
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the
/// rightmost X-Forwarded-For entry that is not itself a trusted proxy.
pub fn client_address<'a>(peer: IpAddr, forwarded: impl Iterator<Item = &'a str>, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded.flat_map(|h| h.split(',')).map(str::trim).collect();
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        // Walk back through our proxies; stop at the first hop they did not add
        // themselves, and at anything unreadable (it is not evidence).
        let Ok(ip) = hop.parse::<IpAddr>() else { break };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}
