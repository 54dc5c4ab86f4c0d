//! Who the client is: the connection's peer address, or, behind a trusted
//! proxy, the address that proxy forwarded (README, "Running behind a proxy").
//!
//! `X-Forwarded-For` is read only when the host names its proxies
//! ([`TrustedProxies`]) and the peer is one of them; the client is then the
//! rightmost address in it that is not a trusted proxy. Anything that does
//! not parse makes the address unknown, and a key with an allowlist is refused
//! from an unknown address: a hostile header can never widen access.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
    sync::Arc,
};

use http::{Extensions, HeaderMap};

use super::networks::{NetworkSet, NetworksError};

/// Most `X-Forwarded-For` entries read from the right before the address is
/// taken as unknown: far more proxy hops than any deployment has.
const MAX_FORWARDED_HOPS: usize = 32;

/// Most trusted-proxy entries.
const MAX_TRUSTED_PROXIES: usize = 1_024;

/// The connection's peer address, for servers that are not axum: insert it
/// into each request's extensions (axum's `ConnectInfo<SocketAddr>` and a
/// plain [`SocketAddr`] extension are read as well).
///
/// ```
/// use std::net::SocketAddr;
/// use tower_api_keys::PeerAddr;
///
/// let mut request = http::Request::new(());
/// let remote: SocketAddr = "192.0.2.10:50123".parse()?;
/// request.extensions_mut().insert(PeerAddr::from(remote));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub IpAddr);

impl From<SocketAddr> for PeerAddr {
    fn from(address: SocketAddr) -> Self {
        Self(address.ip())
    }
}

impl From<IpAddr> for PeerAddr {
    fn from(address: IpAddr) -> Self {
        Self(address)
    }
}

/// The proxies and load balancers in front of the host, whose
/// `X-Forwarded-For` is believed (builder setting
/// [`ValidatorBuilder::with_trusted_proxies`](crate::ValidatorBuilder::with_trusted_proxies)).
/// Without them the header is never read.
///
/// ```
/// use tower_api_keys::TrustedProxies;
///
/// let proxies: TrustedProxies = "10.0.0.0/8, 127.0.0.1".parse()?;
/// assert_eq!(proxies.len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TrustedProxies(Arc<NetworkSet>);

impl TrustedProxies {
    /// The proxies' networks: CIDRs or bare addresses, at least one.
    pub fn new<I, S>(entries: I) -> Result<Self, NetworksError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        NetworkSet::parse(entries, MAX_TRUSTED_PROXIES).map(|set| Self(Arc::new(set)))
    }

    /// Whether `address` is one of the proxies.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.0.contains(address)
    }

    /// How many networks.
    pub fn len(&self) -> usize {
        self.0.nets().len()
    }

    /// Always `false`: at least one network is named.
    pub fn is_empty(&self) -> bool {
        self.0.nets().is_empty()
    }
}

/// A comma-separated list, as the example server's `TRUSTED_PROXIES` gives it;
/// whitespace around entries is ignored.
impl FromStr for TrustedProxies {
    type Err = NetworksError;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        Self::new(list.split(',').map(str::trim))
    }
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.nets()).finish()
    }
}

/// The peer address a server put in the request's extensions, IPv4-mapped
/// IPv6 read as IPv4.
fn peer_address(extensions: &Extensions) -> Option<IpAddr> {
    if let Some(PeerAddr(address)) = extensions.get::<PeerAddr>() {
        return Some(address.to_canonical());
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(address)) =
        extensions.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(address.ip().to_canonical());
    }
    extensions
        .get::<SocketAddr>()
        .map(|address| address.ip().to_canonical())
}

/// One `X-Forwarded-For` entry: an address, or an address with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`). Zone ids, names, `unknown` and
/// anything else do not parse.
fn forwarded_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim_matches([' ', '\t']);
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|address| address.ip()))
        .ok()
        .map(|address| address.to_canonical())
}

/// The client address of a request (see the module documentation); `None`
/// when it is unknown.
pub(crate) fn client_address(
    extensions: &Extensions,
    headers: &HeaderMap,
    trusted: Option<&TrustedProxies>,
) -> Option<IpAddr> {
    let peer = peer_address(extensions)?;
    let Some(trusted) = trusted.filter(|trusted| trusted.contains(peer)) else {
        return Some(peer);
    };
    let mut hops = 0;
    let mut nearest_proxy = peer;
    // Several header lines are one list, in order; read from the right.
    for line in headers
        .get_all(crate::headers::X_FORWARDED_FOR)
        .iter()
        .rev()
    {
        let line = line.to_str().ok()?;
        for entry in line.rsplit(',') {
            hops += 1;
            if hops > MAX_FORWARDED_HOPS {
                return None;
            }
            let address = forwarded_entry(entry)?;
            if !trusted.contains(address) {
                return Some(address);
            }
            nearest_proxy = address;
        }
    }
    // Every hop is a trusted proxy: the one furthest from the host.
    Some(nearest_proxy)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn request(peer: &str, forwarded: &[&str]) -> (Extensions, HeaderMap) {
        let mut extensions = Extensions::new();
        extensions.insert(PeerAddr(peer.parse().unwrap()));
        let mut headers = HeaderMap::new();
        for line in forwarded {
            headers.append("x-forwarded-for", HeaderValue::from_str(line).unwrap());
        }
        (extensions, headers)
    }

    fn client(peer: &str, forwarded: &[&str], trusted: Option<&str>) -> Option<String> {
        let (extensions, headers) = request(peer, forwarded);
        let trusted = trusted.map(|list| list.parse::<TrustedProxies>().unwrap());
        client_address(&extensions, &headers, trusted.as_ref()).map(|a| a.to_string())
    }

    #[test]
    fn without_trusted_proxies_the_header_is_never_read() {
        assert_eq!(
            client("192.0.2.1", &["203.0.113.9"], None).as_deref(),
            Some("192.0.2.1")
        );
        assert_eq!(
            client("192.0.2.1", &["203.0.113.9"], Some("10.0.0.0/8")).as_deref(),
            Some("192.0.2.1")
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_rightmost_untrusted_entry_is_the_client() {
        let trusted = Some("10.0.0.0/8");
        // A spoofed entry on the left is passed over.
        assert_eq!(
            client("10.0.0.2", &["1.1.1.1, 203.0.113.9, 10.0.0.7"], trusted).as_deref(),
            Some("203.0.113.9")
        );
        // Several lines are one list, in order.
        assert_eq!(
            client("10.0.0.2", &["1.1.1.1", "203.0.113.9", "10.0.0.7"], trusted).as_deref(),
            Some("203.0.113.9")
        );
        // No header: the proxy itself is the client.
        assert_eq!(
            client("10.0.0.2", &[], trusted).as_deref(),
            Some("10.0.0.2")
        );
        // Every entry a proxy: the furthest one.
        assert_eq!(
            client("10.0.0.2", &["10.9.9.9, 10.0.0.7"], trusted).as_deref(),
            Some("10.9.9.9")
        );
        // Ports and brackets are dropped, IPv4-mapped IPv6 is IPv4.
        assert_eq!(
            client("10.0.0.2", &["[2001:db8::1]:443"], trusted).as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(
            client("::ffff:10.0.0.2", &["::ffff:192.0.2.5"], trusted).as_deref(),
            Some("192.0.2.5")
        );
    }

    #[test]
    fn the_forwarded_header_is_not_read() {
        let proxies: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let (extensions, mut headers) = request("10.0.0.2", &[]);
        headers.insert("forwarded", HeaderValue::from_static("for=203.0.113.9"));
        assert_eq!(
            client_address(&extensions, &headers, Some(&proxies)),
            Some("10.0.0.2".parse().unwrap())
        );
    }

    #[test]
    fn hostile_headers_make_the_address_unknown() {
        let trusted = Some("10.0.0.0/8");
        for hostile in [
            "fe80::1%eth0",
            "unknown",
            "203.0.113.9 203.0.113.8",
            "",
            "203.0.113.9,",
            "example.com",
            "[::1]",
        ] {
            assert_eq!(client("10.0.0.2", &[hostile], trusted), None, "{hostile:?}");
        }
        // Garbage beyond the first untrusted entry is never read.
        assert_eq!(
            client("10.0.0.2", &["garbage, 203.0.113.9"], trusted).as_deref(),
            Some("203.0.113.9")
        );
        let many = vec!["10.1.1.1"; 5_000].join(",");
        assert_eq!(client("10.0.0.2", &[&many], trusted), None);
        let spoofed = format!("{}, 203.0.113.9", vec!["1.2.3.4"; 5_000].join(","));
        assert_eq!(
            client("10.0.0.2", &[&spoofed], trusted).as_deref(),
            Some("203.0.113.9")
        );
        let mut extensions = Extensions::new();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_bytes(b"\xff").unwrap());
        extensions.insert(PeerAddr("10.0.0.2".parse().unwrap()));
        let proxies: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        assert_eq!(client_address(&extensions, &headers, Some(&proxies)), None);
    }

    #[test]
    fn the_peer_comes_from_any_of_the_known_extensions() {
        let headers = HeaderMap::new();
        let mut extensions = Extensions::new();
        assert_eq!(client_address(&extensions, &headers, None), None);
        extensions.insert("192.0.2.1:80".parse::<SocketAddr>().unwrap());
        assert_eq!(
            client_address(&extensions, &headers, None),
            Some("192.0.2.1".parse().unwrap())
        );
        #[cfg(feature = "axum")]
        {
            let mut extensions = Extensions::new();
            extensions.insert(axum::extract::ConnectInfo(
                "[::ffff:192.0.2.2]:80".parse::<SocketAddr>().unwrap(),
            ));
            assert_eq!(
                client_address(&extensions, &headers, None),
                Some("192.0.2.2".parse().unwrap())
            );
        }
    }

    #[test]
    fn trusted_proxies_parse_a_comma_separated_list() {
        assert!("".parse::<TrustedProxies>().is_err());
        assert!("10.0.0.0/8,".parse::<TrustedProxies>().is_err());
        assert_eq!(
            " 10.0.0.0/8 , ::1 "
                .parse::<TrustedProxies>()
                .unwrap()
                .len(),
            2
        );
    }
}
