//! The networks a key may be used from (README, "Address allowlists").
//!
//! A key with an allowlist is refused, after its secret was verified, when the
//! client address is outside every entry or unknown. The matcher keeps each
//! entry as a masked integer, so a 64-entry list costs a few dozen
//! comparisons per request.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most entries one allowlist may hold.
pub const MAX_ALLOWED_CIDRS: usize = 64;

/// The networks a key may be used from: 1–64 CIDRs (IPv4 or IPv6; a bare
/// address means `/32` or `/128`), stored normalised — host bits zeroed,
/// duplicates dropped, order kept.
///
/// An IPv4-mapped IPv6 client address (`::ffff:a.b.c.d`) matches IPv4 entries.
///
/// ```
/// use tower_api_keys::AllowedNetworks;
///
/// let networks = AllowedNetworks::new(["10.1.2.3/8", "2001:db8::/32", "192.0.2.7"])?;
/// assert_eq!(
///     networks.iter().map(|net| net.to_string()).collect::<Vec<_>>(),
///     ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"],
/// );
/// assert!(networks.contains("10.200.0.1".parse()?));
/// assert!(networks.contains("::ffff:192.0.2.7".parse()?));
/// assert!(!networks.contains("192.0.2.8".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AllowedNetworks(Arc<NetworkSet>);

/// A list of networks and a matcher over it, shared by [`AllowedNetworks`]
/// and [`TrustedProxies`](crate::TrustedProxies).
#[derive(PartialEq, Eq, Hash)]
pub(crate) struct NetworkSet {
    /// The entries as given (normalised), for display and storage.
    nets: Box<[IpNet]>,
    /// IPv4 entries as (network, mask).
    v4: Box<[(u32, u32)]>,
    /// IPv6 entries as (network, mask).
    v6: Box<[(u128, u128)]>,
}

/// A list of networks that breaks the rules of [`AllowedNetworks::new`] or
/// [`TrustedProxies::new`](crate::TrustedProxies::new).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworksError {
    /// An empty list (`null` allows every address).
    #[error("must not be empty; null allows every address")]
    Empty,
    /// More than [`MAX_ALLOWED_CIDRS`] entries.
    #[error("must hold at most 64 entries")]
    TooMany,
    /// An entry that is not an IP address or CIDR (the entry is not echoed).
    #[error("entry {index} is not an IPv4 or IPv6 address or CIDR (e.g. 203.0.113.0/24)")]
    Invalid {
        /// Its position in the list, from 0.
        index: usize,
    },
    /// JSON that is neither an array of strings nor `null`
    /// ([`AllowedNetworks::from_json`]).
    #[error("must be an array of CIDR strings or null")]
    NotAList,
}

/// One entry: a CIDR or a bare address, host bits zeroed.
fn parse_entry(text: &str) -> Option<IpNet> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(net.trunc());
    }
    text.parse::<IpAddr>().ok().map(IpNet::from)
}

const fn mask_v4(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        _ => u32::MAX << (32 - prefix as u32),
    }
}

const fn mask_v6(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        _ => u128::MAX << (128 - prefix as u32),
    }
}

impl NetworkSet {
    /// Parses, normalises and deduplicates `entries` (order kept); at most
    /// `max` of them, and at least one.
    pub(crate) fn parse<I, S>(entries: I, max: usize) -> Result<Self, NetworksError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut nets: Vec<IpNet> = Vec::new();
        for (index, entry) in entries.into_iter().enumerate() {
            if index == max {
                return Err(NetworksError::TooMany);
            }
            let net = parse_entry(entry.as_ref()).ok_or(NetworksError::Invalid { index })?;
            if !nets.contains(&net) {
                nets.push(net);
            }
        }
        if nets.is_empty() {
            return Err(NetworksError::Empty);
        }
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in &nets {
            match net {
                IpNet::V4(net) => {
                    let mask = mask_v4(net.prefix_len());
                    v4.push((u32::from(net.network()) & mask, mask));
                }
                IpNet::V6(net) => {
                    let mask = mask_v6(net.prefix_len());
                    v6.push((u128::from(net.network()) & mask, mask));
                }
            }
        }
        Ok(Self {
            nets: nets.into(),
            v4: v4.into(),
            v6: v6.into(),
        })
    }

    /// Whether `address` is inside one of the entries; an IPv4-mapped IPv6
    /// address matches IPv4 entries too.
    pub(crate) fn contains(&self, address: IpAddr) -> bool {
        match address {
            IpAddr::V4(v4) => self.contains_v4(v4),
            IpAddr::V6(v6) => {
                v6.to_ipv4_mapped().is_some_and(|v4| self.contains_v4(v4)) || self.contains_v6(v6)
            }
        }
    }

    fn contains_v4(&self, address: Ipv4Addr) -> bool {
        let address = u32::from(address);
        self.v4
            .iter()
            .any(|&(network, mask)| address & mask == network)
    }

    fn contains_v6(&self, address: Ipv6Addr) -> bool {
        let address = u128::from(address);
        self.v6
            .iter()
            .any(|&(network, mask)| address & mask == network)
    }

    pub(crate) fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

impl AllowedNetworks {
    /// A validated, normalised allowlist: 1–64 entries.
    pub fn new<I, S>(entries: I) -> Result<Self, NetworksError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        NetworkSet::parse(entries, MAX_ALLOWED_CIDRS).map(|set| Self(Arc::new(set)))
    }

    /// Whether `address` is inside one of the entries.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.0.contains(address)
    }

    /// The entries, in their stored order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &IpNet> + '_ {
        self.0.nets().iter()
    }

    /// How many entries (1–64).
    pub fn len(&self) -> usize {
        self.0.nets().len()
    }

    /// Always `false`: an allowlist holds at least one entry.
    pub fn is_empty(&self) -> bool {
        self.0.nets().is_empty()
    }

    /// An allowlist from its JSON form, as a request body or an import line
    /// gives it: `null` (`None`: any address) or an array of strings, each
    /// checked as by [`AllowedNetworks::new`].
    pub fn from_json(value: &Value) -> Result<Option<Self>, NetworksError> {
        let Value::Array(items) = value else {
            return match value {
                Value::Null => Ok(None),
                _ => Err(NetworksError::NotAList),
            };
        };
        if items.len() > MAX_ALLOWED_CIDRS {
            return Err(NetworksError::TooMany);
        }
        let entries: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
        Self::new(entries.ok_or(NetworksError::NotAList)?).map(Some)
    }

    /// The entries as a JSON array, for storage.
    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "[]".to_owned())
    }

    /// Reads stored JSON; `None` for text that is not a valid allowlist. The
    /// caller fails closed: such a key is refused.
    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
    pub(crate) fn from_stored(json: &str) -> Option<Self> {
        serde_json::from_str::<Vec<String>>(json)
            .ok()
            .and_then(|entries| Self::new(entries).ok())
    }
}

impl fmt::Debug for AllowedNetworks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for AllowedNetworks {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(ToString::to_string))
    }
}

impl<'de> Deserialize<'de> for AllowedNetworks {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = Vec::<String>::deserialize(deserializer)?;
        Self::new(entries).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn texts(networks: &AllowedNetworks) -> Vec<String> {
        networks.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn entries_are_normalised_deduplicated_and_kept_in_order() {
        let networks = AllowedNetworks::new([
            "10.1.2.3/8",
            "::1",
            "10.9.9.9/8",
            "2001:db8::1/32",
            "0.0.0.0/0",
        ])
        .unwrap();
        assert_eq!(
            texts(&networks),
            ["10.0.0.0/8", "::1/128", "2001:db8::/32", "0.0.0.0/0"]
        );
    }

    #[test]
    fn bad_lists_are_refused_with_the_reason() {
        assert_eq!(
            AllowedNetworks::new(Vec::<String>::new()),
            Err(NetworksError::Empty)
        );
        let many: Vec<String> = (0..65).map(|i| format!("10.0.{i}.0/24")).collect();
        assert_eq!(AllowedNetworks::new(&many), Err(NetworksError::TooMany));
        assert!(AllowedNetworks::new(&many[..64]).is_ok());
        for bad in [
            "",
            " 10.0.0.1",
            "10.0.0.1 ",
            "10.0.0.0/33",
            "::/129",
            "fe80::1%eth0",
            "[::1]",
            "10.0.0.1:80",
            "example.com",
            "10.0.0",
            "10.0.0.0/-1",
        ] {
            assert_eq!(
                AllowedNetworks::new(["10.0.0.0/8", bad]),
                Err(NetworksError::Invalid { index: 1 }),
                "{bad:?}"
            );
        }
        assert_eq!(
            AllowedNetworks::from_json(&json!("10.0.0.0/8")),
            Err(NetworksError::NotAList)
        );
        assert_eq!(
            AllowedNetworks::from_json(&json!([10])),
            Err(NetworksError::NotAList)
        );
        assert_eq!(AllowedNetworks::from_json(&json!(null)), Ok(None));
        let huge: Vec<Value> = (0..100_000).map(|_| json!("10.0.0.0/8")).collect();
        assert_eq!(
            AllowedNetworks::from_json(&Value::Array(huge)),
            Err(NetworksError::TooMany)
        );
    }

    #[test]
    fn matching_follows_the_prefix_and_maps_ipv4_in_ipv6() {
        let networks =
            AllowedNetworks::new(["192.0.2.0/24", "2001:db8:1::/48", "198.51.100.9"]).unwrap();
        for inside in [
            "192.0.2.0",
            "192.0.2.255",
            "::ffff:192.0.2.1",
            "2001:db8:1::",
            "2001:db8:1:ffff:ffff:ffff:ffff:ffff",
            "198.51.100.9",
        ] {
            assert!(networks.contains(inside.parse().unwrap()), "{inside}");
        }
        for outside in [
            "192.0.3.0",
            "192.0.1.255",
            "2001:db8:2::",
            "198.51.100.10",
            "::192.0.2.1",
            "::1",
            "127.0.0.1",
        ] {
            assert!(!networks.contains(outside.parse().unwrap()), "{outside}");
        }
        let everything = AllowedNetworks::new(["0.0.0.0/0", "::/0"]).unwrap();
        assert!(everything.contains("203.0.113.1".parse().unwrap()));
        assert!(everything.contains("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn the_stored_form_reads_back_and_a_foreign_one_is_refused() {
        let networks = AllowedNetworks::new(["10.1.0.0/16", "::1"]).unwrap();
        let json = networks.to_json();
        assert_eq!(json, r#"["10.1.0.0/16","::1/128"]"#);
        assert_eq!(AllowedNetworks::from_stored(&json), Some(networks));
        for foreign in ["[]", "{}", "not json", r#"["nope"]"#, "null"] {
            assert_eq!(AllowedNetworks::from_stored(foreign), None, "{foreign}");
        }
    }
}
