//! Where webhooks may go: never to loopback, link-local (cloud metadata), private, shared,
//! multicast or unspecified addresses, unless the host is on the configured allow-list. The check
//! runs on the addresses a name resolves to, at connect time (a resolver that filters them), so
//! DNS rebinding cannot get around it; IP literals, which skip the resolver, are checked before
//! sending; redirects are never followed.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a destination was refused; found again in reqwest's error chain.
#[derive(Debug, Clone, thiserror::Error)]
#[error("refused: {0}")]
pub struct Refused(pub String);

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        // 100.64.0.0/10, carrier-grade NAT: internal networks in many clouds.
        || (a == 100 && (64..128).contains(&b))
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fc00::/7 unique local (fd00:ec2::254 is a metadata address), fe80::/10 link-local.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
}

/// True for an address no webhook may reach.
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

/// The policy: the allow-list of hosts (exact names or IP literals as written in URLs).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    allowed: Arc<HashSet<String>>,
}

impl Policy {
    pub fn new(allowed_hosts: impl IntoIterator<Item = String>) -> Self {
        Policy {
            allowed: Arc::new(
                allowed_hosts
                    .into_iter()
                    .map(|h| h.trim().trim_matches(['[', ']']).to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .collect(),
            ),
        }
    }

    fn allows(&self, host: &str) -> bool {
        self.allowed
            .contains(&host.trim_matches(['[', ']']).to_ascii_lowercase())
    }

    /// Check what can be checked before connecting: the scheme, and a host that is an IP literal
    /// (the resolver never sees those).
    pub fn check_url(&self, raw: &str) -> Result<url::Url, Refused> {
        let url = url::Url::parse(raw).map_err(|e| Refused(format!("invalid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused(format!("scheme {} is not http(s)", url.scheme())));
        }
        let host = url
            .host()
            .ok_or_else(|| Refused("URL has no host".into()))?;
        let literal = match host {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(_) => None,
        };
        if let Some(ip) = literal.filter(|ip| forbidden(*ip)) {
            if !self.allows(&host.to_string()) {
                return Err(Refused(format!("{ip} is not a public address")));
            }
        }
        Ok(url)
    }
}

impl Resolve for Policy {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let allowed = self.allows(&host);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (bad, good): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs
                .into_iter()
                .partition(|a| !allowed && forbidden(a.ip()));
            if good.is_empty() {
                let bad: Vec<String> = bad.iter().map(|a| a.ip().to_string()).collect();
                return Err(Box::new(Refused(format!(
                    "{host} resolves to {} (not a public address)",
                    bad.join(", ")
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(good.into_iter()) as Addrs)
        })
    }
}

/// The refusal in a reqwest error's source chain, if that is why it failed.
pub fn refusal(error: &reqwest::Error) -> Option<Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused.clone());
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_forbidden_and_public_ones_not() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
        ] {
            assert!(forbidden(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(!forbidden(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn literal_hosts_are_checked_and_the_allow_list_wins() {
        let strict = Policy::default();
        for url in [
            "http://127.0.0.1:9/x",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.7/",
            "ftp://example.org/",
        ] {
            assert!(strict.check_url(url).is_err(), "{url}");
        }
        assert!(strict.check_url("https://example.org/hook").is_ok());
        let open = Policy::new(["127.0.0.1".to_owned(), "[::1]".to_owned()]);
        assert!(open.check_url("http://127.0.0.1:9/x").is_ok());
        assert!(open.check_url("http://[::1]:9/x").is_ok());
        assert!(open.check_url("http://10.0.0.7/").is_err());
    }
}
