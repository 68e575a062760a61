//! The egress guard: which addresses a tenant's fetch may connect to, and
//! the connector that asks it about every one.
//!
//! A fetch names a host; the manifest is asked about the name (in
//! [`super::fetch`]), and this guard about every address the name resolves
//! to, at connect time, in the connector itself: whatever resolves the name
//! (a DNS answer that changes between two lookups included), no socket is
//! opened to an address the guard refuses.
//!
//! Refused by default ([`REFUSED`]): this network, loopback, private,
//! link-local (169.254.169.254, the cloud metadata address, among them),
//! CGNAT, the documentation and benchmarking ranges, multicast, reserved
//! and broadcast; in IPv6 also unique-local, site-local, IPv4-mapped and
//! -compatible, NAT64, 6to4 and Teredo addresses (each of which can carry
//! a refused IPv4 address inside). The operator opens networks with
//! `serve --egress-allow-cidr`; an address is checked as it is, so an
//! opened IPv4 network does not open its IPv4-mapped spelling. The
//! master's own ports are refused whatever is opened.

use crate::mesophyll::message::EgressPolicy;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;

/// Networks refused unless the operator opens them, with the words a
/// refusal uses.
pub const REFUSED: &[(&str, &str)] = &[
    ("0.0.0.0/8", "\"this network\""),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata among them)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved and broadcast"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("64:ff9b::/96", "NAT64"),
    ("64:ff9b:1::/48", "local NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignments (Teredo among them)"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
];

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Egress is off for the fleet (`serve --no-egress`).
    #[error("egress is off on this fleet (serve --no-egress)")]
    Off,
    /// The address is in a network refused by default.
    #[error(
        "{addr} is a {what} address; an operator can open its network with serve --egress-allow-cidr"
    )]
    Network {
        /// The address.
        addr: IpAddr,
        /// What kind of address it is.
        what: &'static str,
    },
    /// The address is one of the master's ports.
    #[error("{0} is the master's own port")]
    Master(SocketAddr),
    /// The name resolved to nothing.
    #[error("{0} resolves to no address")]
    Unresolved(String),
}

/// The guard, as a master's policy made it.
#[derive(Debug, Clone)]
pub struct Guard {
    enabled: bool,
    open: Vec<IpNet>,
    refused: Vec<(IpNet, &'static str)>,
    master: Vec<SocketAddr>,
}

impl Guard {
    /// The guard `policy` describes. A network the policy spells wrongly is
    /// left closed, with a warning (the master checked its flags already).
    pub fn new(policy: &EgressPolicy) -> Guard {
        let open = policy
            .open_networks
            .iter()
            .filter_map(|n| match n.parse::<IpNet>() {
                Ok(net) => Some(net.trunc()),
                Err(e) => {
                    tracing::warn!(network = %n, "egress: an open network that is not one: {e}");
                    None
                }
            })
            .collect();
        let refused = REFUSED
            .iter()
            .map(|(net, what)| (net.parse().expect("REFUSED parses"), *what))
            .collect();
        Guard {
            enabled: policy.enabled,
            open,
            refused,
            master: policy.master_addrs.clone(),
        }
    }

    /// Whether a connection to `addr` may be opened.
    pub fn check(&self, addr: SocketAddr) -> Result<(), Refusal> {
        if !self.enabled {
            return Err(Refusal::Off);
        }
        if self.is_master(addr) {
            return Err(Refusal::Master(addr));
        }
        let ip = addr.ip();
        if self.open.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match self.refused.iter().find(|(net, _)| net.contains(&ip)) {
            Some((_, what)) => Err(Refusal::Network { addr: ip, what }),
            None => Ok(()),
        }
    }

    /// A master port on its bound address, or (for a master bound to
    /// loopback or to every address) on any loopback address of this host.
    fn is_master(&self, addr: SocketAddr) -> bool {
        self.master.iter().any(|m| {
            m.port() == addr.port()
                && (m.ip() == addr.ip()
                    || ((m.ip().is_loopback() || m.ip().is_unspecified())
                        && (addr.ip().is_loopback() || addr.ip().to_canonical().is_loopback())))
        })
    }

    /// Resolves `host` (a name, or an address in brackets or not) and
    /// connects to the first address the guard allows that answers.
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        let addrs = self.resolve(host, port).await?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(ConnectError::Io(last.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address")
        })))
    }

    /// The addresses of `host` the guard allows, in resolver order; the
    /// first refusal when it allows none.
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
        if !self.enabled {
            return Err(ConnectError::Refused(Refusal::Off));
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let found: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((bare, port))
                .await
                .map_err(ConnectError::Io)?
                .collect(),
        };
        let mut refusal = None;
        let allowed: Vec<SocketAddr> = found
            .into_iter()
            .filter(|a| match self.check(*a) {
                Ok(()) => true,
                Err(r) => {
                    refusal.get_or_insert(r);
                    false
                }
            })
            .collect();
        if allowed.is_empty() {
            return Err(ConnectError::Refused(
                refusal.unwrap_or_else(|| Refusal::Unresolved(host.to_owned())),
            ));
        }
        Ok(allowed)
    }
}

/// Why the connector opened no connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The guard refused every address.
    #[error("{0}")]
    Refused(Refusal),
    /// Resolving or connecting failed.
    #[error("{0}")]
    Io(std::io::Error),
    /// The URI had no host.
    #[error("no host in the URI")]
    NoHost,
}

/// The connector of the egress client: every connection it opens went
/// through [`Guard::connect`].
#[derive(Clone)]
pub struct GuardedConnector {
    guard: Arc<Guard>,
}

impl GuardedConnector {
    /// A connector that asks `guard`.
    pub fn new(guard: Arc<Guard>) -> Self {
        GuardedConnector { guard }
    }
}

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let guard = Arc::clone(&self.guard);
        Box::pin(async move {
            let host = uri.host().ok_or(ConnectError::NoHost)?;
            let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("https") => 443,
                _ => 80,
            });
            guard.connect(host, port).await.map(TokioIo::new)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(open: &[&str], master: &[&str]) -> Guard {
        Guard::new(&EgressPolicy {
            open_networks: open.iter().map(|s| s.to_string()).collect(),
            master_addrs: master.iter().map(|s| s.parse().unwrap()).collect(),
            ..EgressPolicy::default()
        })
    }

    fn refused(g: &Guard, addr: &str) -> bool {
        g.check(addr.parse().unwrap()).is_err()
    }

    #[test]
    fn the_addresses_that_reach_inside_are_refused_by_default() {
        let g = guard(&[], &[]);
        for addr in [
            "127.0.0.1:80",
            "127.9.9.9:80",
            "10.1.2.3:80",
            "172.31.0.1:80",
            "192.168.1.1:80",
            "169.254.169.254:80",
            "100.64.0.1:80",
            "0.0.0.0:80",
            "224.0.0.1:80",
            "255.255.255.255:80",
            "[::1]:80",
            "[::]:80",
            "[::ffff:127.0.0.1]:80",
            "[::ffff:8.8.8.8]:80",
            "[64:ff9b::7f00:1]:80",
            "[2002:7f00:1::]:80",
            "[2001:0:4136:e378:8000:63bf:3fff:fdd2]:80",
            "[fd00::1]:80",
            "[fe80::1]:80",
            "[ff02::1]:80",
        ] {
            assert!(refused(&g, addr), "{addr}");
        }
        for addr in ["8.8.8.8:443", "1.1.1.1:80", "[2606:4700::1111]:443"] {
            assert!(!refused(&g, addr), "{addr}");
        }
    }

    #[test]
    fn an_opened_network_opens_itself_alone_and_never_the_master() {
        let g = guard(&["127.0.0.1/32", "10.1.0.0/16"], &["0.0.0.0:9081"]);
        assert!(!refused(&g, "127.0.0.1:8080"));
        assert!(!refused(&g, "10.1.200.3:80"));
        assert!(refused(&g, "10.2.0.1:80"));
        assert!(refused(&g, "127.0.0.2:8080"));
        assert!(refused(&g, "[::ffff:127.0.0.1]:8080"));
        assert!(refused(&g, "127.0.0.1:9081"));
        assert!(refused(&g, "[::1]:9081"));
        let off = Guard::new(&EgressPolicy::off());
        assert_eq!(off.check("8.8.8.8:443".parse().unwrap()), Err(Refusal::Off));
    }

    #[tokio::test]
    async fn a_name_is_refused_when_every_address_it_resolves_to_is() {
        let g = guard(&[], &[]);
        let err = g.connect("localhost", 9).await.unwrap_err();
        assert!(
            matches!(err, ConnectError::Refused(Refusal::Network { .. })),
            "{err}"
        );
        let err = g.connect("[::ffff:169.254.169.254]", 80).await.unwrap_err();
        assert!(matches!(err, ConnectError::Refused(_)), "{err}");
    }
}
