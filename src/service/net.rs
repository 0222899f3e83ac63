//! Outgoing requests to addresses a client chose (push gateways, URL previews): the server
//! must not become a way into the network it runs in (SSRF).
//!
//! Every address is checked after DNS resolution, by the HTTP client's own resolver at
//! connection time ([`CheckedResolver`]), so a name cannot resolve to a public address for a
//! check and to a private one for the connection; URLs naming an IP literal are checked with
//! [`check_url`] before the request, as no resolver sees them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether the server refuses to connect to `ip` for a client: every address that is not a
/// public unicast one (loopback only when `allow_loopback`, for tests).
pub fn is_refused(ip: IpAddr, allow_loopback: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4, allow_loopback),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return refused_v4(v4, allow_loopback);
            }
            if v6.is_loopback() {
                return !allow_loopback;
            }
            let first = v6.segments()[0];
            v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (first & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
                || first == 0x2001 && v6.segments()[1] == 0x0db8 // documentation
                || first == 0x0064 && v6.segments()[1] == 0xff9b // NAT64 64:ff9b::/96
                || v6.segments()[..6] == [0; 6] // IPv4-compatible ::a.b.c.d
        }
    }
}

fn refused_v4(ip: Ipv4Addr, allow_loopback: bool) -> bool {
    if ip.is_loopback() {
        return !allow_loopback;
    }
    let [a, b, ..] = ip.octets();
    ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

/// Why an address may not be used.
#[derive(Debug)]
pub enum AddressError {
    /// The name did not resolve.
    Unresolvable(String),
    /// It resolves only to refused addresses.
    Refused(String),
}

impl std::fmt::Display for AddressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddressError::Unresolvable(m) | AddressError::Refused(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for AddressError {}

/// The addresses of `host` the server may connect to; an error when there are none.
pub async fn allowed_addresses(
    host: &str,
    allow_loopback: bool,
) -> Result<Vec<SocketAddr>, AddressError> {
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| AddressError::Unresolvable(format!("cannot resolve {host}: {e}")))?
        .collect();
    let allowed: Vec<SocketAddr> = resolved
        .iter()
        .copied()
        .filter(|a| !is_refused(a.ip(), allow_loopback))
        .collect();
    if allowed.is_empty() {
        return Err(AddressError::Refused(format!(
            "{host} resolves to no address the server connects to"
        )));
    }
    Ok(allowed)
}

/// Checks a URL's host: an IP literal directly, a name by resolving it.
pub async fn check_url(url: &reqwest::Url, allow_loopback: bool) -> Result<(), AddressError> {
    let host = url
        .host_str()
        .ok_or_else(|| AddressError::Refused("the URL has no host".into()))?;
    // URL parsing writes every IPv4 form (`0x7f.1`, `2130706433`) as dotted decimal and IPv6
    // in brackets.
    match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(ip) if is_refused(ip, allow_loopback) => Err(AddressError::Refused(format!(
            "{ip} is not an address the server connects to"
        ))),
        Ok(_) => Ok(()),
        Err(_) => allowed_addresses(host, allow_loopback).await.map(|_| ()),
    }
}

/// A resolver for HTTP clients that drops every refused address.
pub struct CheckedResolver {
    pub allow_loopback: bool,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_loopback = self.allow_loopback;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = allowed_addresses(&host, allow_loopback).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Reads a response body of at most `cap` bytes as JSON: None when it is larger, fails or is
/// not JSON, so a misbehaving peer cannot make the server buffer without bound.
pub async fn json_body(mut res: reqwest::Response, cap: usize) -> Option<serde_json::Value> {
    if res.content_length().is_some_and(|n| n > cap as u64) {
        return None;
    }
    let mut buf = Vec::new();
    while let Some(chunk) = res.chunk().await.ok()? {
        if buf.len() + chunk.len() > cap {
            return None;
        }
        buf.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&buf).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
        ] {
            assert!(is_refused(ip.parse().unwrap(), false), "{ip}");
        }
        for ip in [
            "93.184.215.14",
            "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
            "1.1.1.1",
        ] {
            assert!(!is_refused(ip.parse().unwrap(), false), "{ip}");
        }
        assert!(!is_refused("127.0.0.1".parse().unwrap(), true));
        assert!(!is_refused("::1".parse().unwrap(), true));
        assert!(is_refused("10.0.0.1".parse().unwrap(), true));
    }
}
