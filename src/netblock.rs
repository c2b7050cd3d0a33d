//! IP address blocks (`10.0.0.0/8`, `::1/128`, single addresses): who may fetch from the file
//! proxy, which peers of the API are trusted proxies.

use std::net::IpAddr;

/// An entry that is neither an IP address nor `IP/prefix`.
#[derive(Debug, thiserror::Error)]
#[error("bad address {0:?} (want an IP or IP/prefix)")]
pub struct BadBlock(pub String);

/// A list of IP addresses and CIDR blocks (IPv4-mapped IPv6 clients match
/// IPv4 entries).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList(Vec<(IpAddr, u8)>);

impl AllowList {
    /// Parses entries like `127.0.0.1`, `10.0.0.0/8`, `::1/128`.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, BadBlock> {
        let mut out = Vec::new();
        for raw in entries {
            let raw = raw.as_ref().trim();
            let bad = || BadBlock(raw.to_string());
            let (ip, prefix) = match raw.split_once('/') {
                Some((ip, p)) => (ip, Some(p.parse::<u8>().map_err(|_| bad())?)),
                None => (raw, None),
            };
            let ip: IpAddr = ip.parse().map_err(|_| bad())?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = prefix.unwrap_or(max);
            if prefix > max {
                return Err(bad());
            }
            out.push((ip, prefix));
        }
        Ok(Self(out))
    }

    /// Whether `addr` is in one of the blocks.
    pub fn allows(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
            v4 => v4,
        };
        self.0.iter().any(|&(net, prefix)| match (net, addr) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list() {
        let a = AllowList::parse(&["127.0.0.1", "10.1.0.0/16", "fd00::/8"]).unwrap();
        let ok = |s: &str| a.allows(s.parse().unwrap());
        assert!(ok("127.0.0.1"));
        assert!(!ok("127.0.0.2"));
        assert!(ok("10.1.200.3"));
        assert!(!ok("10.2.0.1"));
        assert!(ok("fd12::1"));
        assert!(!ok("fe80::1"));
        assert!(ok("::ffff:127.0.0.1"));
        assert!(
            AllowList::parse(&["0.0.0.0/0"])
                .unwrap()
                .allows("8.8.8.8".parse().unwrap())
        );
        assert!(AllowList::parse(&["10.0.0.0/33"]).is_err());
        assert!(AllowList::parse(&["nope"]).is_err());
        assert!(!AllowList::default().allows("127.0.0.1".parse().unwrap()));
    }
}
