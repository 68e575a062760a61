//! `allowed_hosts` in `plugin.toml`: the origins a plugin's `http.fetch`
//! may reach, and the parsing of the URLs it is handed.
//!
//! ```toml
//! allowed_hosts = [
//!   "https://api.example.com",        # port 443 only
//!   "https://*.example.org:8443",     # any subdomain, never example.org itself
//!   "http://10.1.2.3:8080",           # an address (the guard still applies)
//! ]
//! ```
//!
//! A pattern is a scheme (`http` or `https`), a host and an optional port;
//! without a port it allows the scheme's default port alone (as Spin's
//! `allowed_outbound_hosts`). `*.` may open the host and matches one or
//! more labels in front of the rest. There is no pattern for "anywhere":
//! a plugin names what it talks to. Whatever the manifest allows, the
//! worker's egress guard still checks every address a name resolves to.
//!
//! [`Target::parse`] reads the URL a script asks for, the way a browser
//! would read its host: lower-cased, and a host whose last label is a
//! number (`2130706433`, `0x7f.1`, `0177.0.0.1`) read as the IPv4 address
//! it spells, so that no spelling of an address passes for a name.
//!
//! Failure modes: [`HostPatternError`] for a pattern (an upload error),
//! [`TargetError`] for a URL (the script's `bad_request`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    fn parse(s: &str) -> Option<Scheme> {
        match s.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }

    /// 80 or 443.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A host as a URL names it: a (lower-case) name or an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name, resolved at connect time.
    Name(String),
    /// An address literal (or a number that spells one).
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// One entry of `allowed_hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    scheme: Scheme,
    /// `Some` for `*.rest`: any name ending in `.rest`.
    subdomains_of: Option<String>,
    /// The exact host when `subdomains_of` is `None`.
    host: Host,
    port: u16,
    /// As written, for error messages that quote the manifest.
    text: String,
}

/// Why an `allowed_hosts` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("allowed_hosts entry {entry:?}: {reason}")]
pub struct HostPatternError {
    entry: String,
    reason: String,
}

/// Why a URL given to `http.fetch` cannot be fetched at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TargetError(String);

/// The longest URL `http.fetch` takes (as browsers and most servers).
pub const MAX_URL_BYTES: usize = 8192;

/// Where a URL points: what the manifest and the guard are asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its scheme.
    pub scheme: Scheme,
    /// Its host, canonical.
    pub host: Host,
    /// Its port, the scheme's default when the URL has none.
    pub port: u16,
    /// Path and query, `/` when empty.
    pub path_and_query: String,
}

impl Target {
    /// Reads `url`: `http(s)://host[:port][/path][?query]`, no user info,
    /// no fragment sent (it is dropped, as clients do).
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let bad = |why: &str| TargetError(format!("{why}: {:?}", cut(url)));
        if url.len() > MAX_URL_BYTES {
            return Err(TargetError(format!(
                "a URL of {} bytes (at most {MAX_URL_BYTES})",
                url.len()
            )));
        }
        if url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(bad("a URL cannot hold spaces or control characters"));
        }
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("not an absolute URL"))?;
        let scheme = Scheme::parse(scheme).ok_or_else(|| bad("only http and https URLs"))?;
        let rest = rest.split('#').next().unwrap_or_default();
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err(bad("a URL cannot carry credentials (use a header)"));
        }
        if authority.contains('\\') {
            return Err(bad("a backslash in the host"));
        }
        let (host, port) = split_port(authority).map_err(|why| bad(&why))?;
        let host = parse_host(host).map_err(|why| bad(&why))?;
        let path_and_query = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        Ok(Target {
            scheme,
            host,
            port: port.unwrap_or(scheme.default_port()),
            path_and_query,
        })
    }

    /// `scheme://host:port`, what origins are compared by.
    pub fn origin(&self) -> String {
        format!("{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }

    /// The URL again, canonical.
    pub fn url(&self) -> String {
        format!("{}{}", self.origin(), self.path_and_query)
    }

    /// The manifest line that would allow this target (for the error of a
    /// denied call).
    pub fn pattern(&self) -> String {
        if self.port == self.scheme.default_port() {
            format!("{}://{}", self.scheme.as_str(), self.host)
        } else {
            self.origin()
        }
    }
}

fn cut(s: &str) -> &str {
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `host[:port]` or `[v6][:port]`.
fn split_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']').ok_or("an unclosed [ in the host")?;
        let after = &rest[end + 1..];
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("junk after ]")?),
        };
        (&authority[..end + 2], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 5 => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or("a port of 1 to 65535")?,
        ),
        Some(_) => return Err("a port of 1 to 65535".into()),
    };
    Ok((host, port))
}

/// A URL's host, canonical: bracketed IPv6, a number-spelled IPv4, or a
/// lower-case DNS name of letters, digits, `-`, `_` and dots.
fn parse_host(host: &str) -> Result<Host, String> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or("an unclosed [ in the host")?;
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| Host::Ip(IpAddr::V6(ip)))
            .map_err(|_| "not an IPv6 address in [ ]".into());
    }
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if host.is_empty() || host.len() > 253 {
        return Err("a host of 1 to 253 characters".into());
    }
    let labels: Vec<&str> = host.split('.').collect();
    if labels.last().is_some_and(|l| looks_numeric(l)) {
        return numeric_ipv4(&labels)
            .map(|ip| Host::Ip(IpAddr::V4(ip)))
            .ok_or_else(|| "a host that ends in a number must be an IPv4 address".into());
    }
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(
                "a host name of labels made of letters, digits, - and _ (IDNs in their xn-- form)"
                    .into(),
            );
        }
    }
    Ok(Host::Name(host))
}

/// What the URL standard reads as an IPv4 number: decimal, `0x` hex or
/// `0` octal.
fn looks_numeric(label: &str) -> bool {
    let l = label.as_bytes();
    !l.is_empty()
        && (l.iter().all(u8::is_ascii_digit)
            || ((label.starts_with("0x") || label.starts_with("0X"))
                && l[2..].iter().all(u8::is_ascii_hexdigit)))
}

fn ipv4_part(label: &str) -> Option<u64> {
    let (digits, radix) = if let Some(h) = label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"))
    {
        (h, 16)
    } else if label.len() > 1 && label.starts_with('0') {
        (&label[1..], 8)
    } else {
        (label, 10)
    };
    if digits.is_empty() {
        return Some(0);
    }
    if digits.len() > 12 {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// The URL standard's IPv4 parser: one to four parts, the last filling
/// the bytes the others leave.
fn numeric_ipv4(labels: &[&str]) -> Option<Ipv4Addr> {
    if labels.is_empty() || labels.len() > 4 {
        return None;
    }
    let parts: Vec<u64> = labels.iter().map(|l| ipv4_part(l)).collect::<Option<_>>()?;
    let (last, first) = parts.split_last()?;
    if first.iter().any(|p| *p > 255) || *last >= 256u64.pow(5 - parts.len() as u32) {
        return None;
    }
    let mut n = *last;
    for (i, p) in first.iter().enumerate() {
        n += p << (8 * (3 - i));
    }
    Some(Ipv4Addr::from(u32::try_from(n).ok()?))
}

impl AllowedHost {
    /// Whether `target` is within this entry.
    pub fn allows(&self, target: &Target) -> bool {
        if self.scheme != target.scheme || self.port != target.port {
            return false;
        }
        match (&self.subdomains_of, &target.host) {
            (Some(rest), Host::Name(name)) => name
                .strip_suffix(rest.as_str())
                .is_some_and(|front| !front.is_empty()),
            (Some(_), Host::Ip(_)) => false,
            (None, host) => *host == self.host,
        }
    }

    /// The entry as the manifest wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for AllowedHost {
    type Err = HostPatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| HostPatternError {
            entry: cut(s).to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| err("write scheme://host[:port]"))?;
        let scheme = Scheme::parse(scheme).ok_or_else(|| err("the scheme is http or https"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@', '\\']) || rest.is_empty() {
            return Err(err(
                "only scheme://host[:port], no path, query or credentials",
            ));
        }
        let (host, port) = split_port(rest).map_err(|why| err(&why))?;
        let (subdomains_of, host) = match host.strip_prefix("*.") {
            Some(rest) => {
                let Ok(Host::Name(name)) = parse_host(rest) else {
                    return Err(err("*. must be followed by a domain name"));
                };
                if !name.contains('.') {
                    return Err(err("*. must be followed by a domain of two labels or more"));
                }
                (Some(format!(".{name}")), Host::Name(name))
            }
            None if host.contains('*') => {
                return Err(err("* only as the first label, *.domain"));
            }
            None => (None, parse_host(host).map_err(|why| err(&why))?),
        };
        Ok(AllowedHost {
            scheme,
            subdomains_of,
            host,
            port: port.unwrap_or(scheme.default_port()),
            text: s.to_owned(),
        })
    }
}

impl Serialize for AllowedHost {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for AllowedHost {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(pattern: &str, url: &str) -> bool {
        let p: AllowedHost = pattern.parse().unwrap();
        p.allows(&Target::parse(url).unwrap())
    }

    #[test]
    fn a_pattern_allows_its_scheme_host_and_port_alone() {
        assert!(allows(
            "https://api.example.com",
            "https://api.example.com/x?y=1"
        ));
        assert!(allows(
            "https://api.example.com",
            "https://API.Example.com.:443/"
        ));
        assert!(!allows(
            "https://api.example.com",
            "http://api.example.com/"
        ));
        assert!(!allows(
            "https://api.example.com",
            "https://api.example.com:8443/"
        ));
        assert!(!allows(
            "https://api.example.com",
            "https://api.example.com.evil.io/"
        ));
        assert!(!allows(
            "https://api.example.com",
            "https://xapi.example.com/"
        ));
        assert!(allows("http://127.0.0.1:8080", "http://127.0.0.1:8080/"));
        assert!(allows("http://[::1]:8080", "http://[0:0::1]:8080/"));
    }

    #[test]
    fn a_wildcard_matches_subdomains_never_the_bare_domain() {
        let p = "https://*.example.org:8443";
        assert!(allows(p, "https://a.example.org:8443/"));
        assert!(allows(p, "https://a.b.example.org:8443/"));
        assert!(!allows(p, "https://example.org:8443/"));
        assert!(!allows(p, "https://badexample.org:8443/"));
        assert!(!allows(p, "https://a.example.org/"));
        for bad in [
            "*://x.io",
            "https://*",
            "https://*.com",
            "https://a.*.com",
            "https://x.io/path",
            "https://u@x.io",
            "ftp://x.io",
            "x.io",
            "https://x.io:0",
            "https://x.io:70000",
        ] {
            assert!(bad.parse::<AllowedHost>().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_spelling_of_an_address_is_read_as_the_address() {
        let loopback = Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        for url in [
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://0x7f.1/",
            "http://127.0.0.1./",
        ] {
            assert_eq!(Target::parse(url).unwrap().host, loopback, "{url}");
        }
        let mapped = Target::parse("http://[::ffff:127.0.0.1]/").unwrap();
        assert_eq!(mapped.host, Host::Ip("::ffff:127.0.0.1".parse().unwrap()));
        for bad in [
            "http://1.2.3.4.5/",
            "http://256.1.1.1/",
            "http://4294967296/",
            "http://user:pw@x.io/",
            "http://x.io\\@y.io/",
            "http://x io/",
            "http://x.io:99999/",
            "file:///etc/passwd",
            "gopher://x.io/",
            "http:///x",
            "http://[::1/",
            "http://ex%61mple.com/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_target_says_the_line_that_would_allow_it() {
        let t = Target::parse("https://Api.Example.com/v1?q=1#frag").unwrap();
        assert_eq!(t.pattern(), "https://api.example.com");
        assert_eq!(t.url(), "https://api.example.com:443/v1?q=1");
        let t = Target::parse("http://x.io:8080?q").unwrap();
        assert_eq!(t.pattern(), "http://x.io:8080");
        assert_eq!(t.path_and_query, "/?q");
    }
}
