//! The caller's address: the socket peer, or the first untrusted hop in the forwarding headers.
//!
//! Each proxy appends the address it received the request from, so a forwarding header reads
//! `client-written..., hop-added-by-proxy-1, hop-added-by-proxy-2` and only the entries that
//! trusted proxies appended can be believed. We therefore walk from the right, past trusted
//! hops, and stop at the first address that is not a trusted proxy: everything left of it may
//! have been written by the caller.
//!
//! Header precedence (see [`HeaderPolicy`]): by default `X-Forwarded-For` is read when present
//! and `Forwarded` only otherwise. Whichever header the trusted proxies do *not* write passes
//! through from the client untouched, so reading it lets the client choose its address; since
//! almost every proxy and load balancer appends `X-Forwarded-For` (nginx, HAProxy, Envoy, cloud
//! load balancers), preferring it is the safer guess. Deployments whose proxies write only
//! `Forwarded` should say so with [`HeaderPolicy::ForwardedOnly`] (`[geo] client_ip_header =
//! "forwarded"`).

use std::net::IpAddr;

use crate::front::heads::{visible, Heads, Read};
use http::header::HeaderName;
use ipnet::IpNet;

use super::forwarded::{parse_forwarded_line, parse_xff_entry, Hop};

/// `X-Forwarded-For` (not among `http`'s standard names).
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Hops examined at most. A longer chain of trusted proxies does not exist in practice; the cap
/// bounds the work an oversized header can cause. Hitting it counts as garbage.
const MAX_HOPS: usize = 32;

/// Which forwarding header carries the hops appended by the trusted proxies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HeaderPolicy {
    /// `X-Forwarded-For` if the request has one, else `Forwarded`.
    #[default]
    PreferXForwardedFor,
    /// `Forwarded` if the request has one, else `X-Forwarded-For`.
    PreferForwarded,
    /// Only `X-Forwarded-For`; `Forwarded` is ignored.
    XForwardedForOnly,
    /// Only `Forwarded`; `X-Forwarded-For` is ignored.
    ForwardedOnly,
}

impl HeaderPolicy {
    /// The names `[geo] client_ip_header` accepts, one per policy: the header the trusted
    /// proxies write, alone (the other is ignored) or preferred (the other read only when it
    /// is missing).
    pub const NAMES: &'static [(&'static str, HeaderPolicy)] = &[
        ("prefer-x-forwarded-for", HeaderPolicy::PreferXForwardedFor),
        ("prefer-forwarded", HeaderPolicy::PreferForwarded),
        ("x-forwarded-for", HeaderPolicy::XForwardedForOnly),
        ("forwarded", HeaderPolicy::ForwardedOnly),
    ];
}

/// A `client_ip_header` value that names no [`HeaderPolicy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderPolicyParseError {
    pub value: String,
}

impl std::fmt::Display for HeaderPolicyParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} is not one of ", self.value)?;
        let names: Vec<String> = HeaderPolicy::NAMES
            .iter()
            .map(|(name, _)| format!("{name:?}"))
            .collect();
        write!(f, "{} (the first is the default)", names.join(", "))
    }
}

impl std::error::Error for HeaderPolicyParseError {}

impl std::str::FromStr for HeaderPolicy {
    type Err = HeaderPolicyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, policy)| *policy)
            .ok_or_else(|| HeaderPolicyParseError {
                value: s.to_owned(),
            })
    }
}

/// The proxies whose forwarding headers we believe, and which header they write.
/// Empty (the default) trusts nobody: the caller is always the socket peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    policy: HeaderPolicy,
}

/// A trusted-proxy entry that is neither a CIDR nor an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trusted proxy {entry:?} is not a CIDR (10.0.0.0/8) or an address (10.0.0.1)")]
pub struct TrustedProxyParseError {
    pub entry: String,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self {
            nets,
            policy: HeaderPolicy::default(),
        }
    }

    /// Parses CIDRs or bare addresses (a bare address is a single-host network).
    pub fn parse<I, S>(entries: I) -> Result<Self, TrustedProxyParseError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nets = entries
            .into_iter()
            .map(|entry| {
                let entry = entry.as_ref().trim();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| TrustedProxyParseError {
                        entry: entry.to_owned(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self::new(nets))
    }

    pub fn with_policy(mut self, policy: HeaderPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn policy(&self) -> HeaderPolicy {
        self.policy
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` (IPv4-mapped IPv6 counts as IPv4) is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }
}

impl FromIterator<IpNet> for TrustedProxies {
    fn from_iter<T: IntoIterator<Item = IpNet>>(iter: T) -> Self {
        Self::new(iter.into_iter().collect())
    }
}

/// The caller's address. IPv4-mapped IPv6 addresses are returned as IPv4.
///
/// If `peer` is not a trusted proxy the headers are ignored. Otherwise the forwarding header
/// chosen by the policy is walked from the right (header lines in order, entries
/// comma-separated) and the first hop that is not a trusted proxy is the caller. If every hop
/// is trusted, the leftmost one is. A hop that is hidden (`unknown`, `_obfuscated`) or
/// unparseable ends the walk at the last trusted hop seen, never at anything further left.
pub fn client_ip<'a>(
    peer: IpAddr,
    headers: impl Into<Heads<'a>>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let headers = headers.into();
    // One look-up of X-Forwarded-For serves both the choice and the walk.
    let mut xff = headers.get_all(Read::XForwardedFor).peekable();
    let has_fwd = || headers.contains(Read::Forwarded);
    let use_forwarded = match trusted.policy {
        HeaderPolicy::PreferXForwardedFor => xff.peek().is_none() && has_fwd(),
        HeaderPolicy::PreferForwarded => has_fwd(),
        HeaderPolicy::XForwardedForOnly => false,
        HeaderPolicy::ForwardedOnly => true,
    };
    if use_forwarded {
        walk(peer, forwarded_hops(headers), trusted)
    } else {
        walk(peer, xff_hops(xff), trusted)
    }
}

/// The walk described on [`client_ip`], over hops given right to left.
fn walk(peer: IpAddr, hops: impl Iterator<Item = Hop>, trusted: &TrustedProxies) -> IpAddr {
    let mut last_trusted = peer;
    for (n, hop) in hops.enumerate() {
        if n == MAX_HOPS {
            return last_trusted;
        }
        match hop {
            Hop::Addr(ip) => {
                let ip = ip.to_canonical();
                if !trusted.contains(ip) {
                    return ip;
                }
                last_trusted = ip;
            }
            Hop::Hidden | Hop::Garbage => return last_trusted,
        }
    }
    last_trusted
}

/// `X-Forwarded-For` hops, right to left, without allocating.
fn xff_hops<'a>(
    lines: impl DoubleEndedIterator<Item = &'a [u8]> + 'a,
) -> impl Iterator<Item = Hop> + 'a {
    lines.rev().flat_map(|line| {
        // A line that is not visible ASCII is one garbage hop.
        let (text, garbage) = match visible(line) {
            Some(text) => (text, None),
            None => ("", Some(Hop::Garbage)),
        };
        garbage
            .into_iter()
            .chain(text.rsplit(',').filter_map(parse_xff_entry))
    })
}

/// `Forwarded` hops, right to left. Quoting makes a reverse scan awkward, so each line is
/// parsed forwards; a request has a handful of hops.
fn forwarded_hops(headers: Heads<'_>) -> impl Iterator<Item = Hop> {
    let mut hops = Vec::new();
    for line in headers.get_all(Read::Forwarded) {
        match visible(line) {
            Some(text) => parse_forwarded_line(text, &mut hops),
            None => hops.push(Hop::Garbage),
        }
    }
    hops.into_iter().rev()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    const PROXY: &str = "10.0.0.5";

    fn trusted() -> TrustedProxies {
        TrustedProxies::parse(["10.0.0.0/8", "192.168.1.1", "2001:db8:ffff::/48"]).unwrap()
    }

    fn headers(lines: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    /// (what it shows, peer, header lines, expected caller), with the default policy.
    type Case = (
        &'static str,
        &'static str,
        &'static [(&'static str, &'static [u8])],
        &'static str,
    );

    const CASES: &[Case] = &[
        (
            "no headers, untrusted peer",
            "203.0.113.9",
            &[],
            "203.0.113.9",
        ),
        ("no headers, trusted peer", PROXY, &[], PROXY),
        (
            "untrusted peer sending XFF is ignored",
            "203.0.113.9",
            &[("x-forwarded-for", b"8.8.8.8")],
            "203.0.113.9",
        ),
        (
            "untrusted peer sending Forwarded is ignored",
            "203.0.113.9",
            &[("forwarded", b"for=8.8.8.8")],
            "203.0.113.9",
        ),
        (
            "one proxy",
            PROXY,
            &[("x-forwarded-for", b"198.51.100.7")],
            "198.51.100.7",
        ),
        (
            "client-written leftmost entry is not believed",
            PROXY,
            &[("x-forwarded-for", b"1.1.1.1, 198.51.100.7")],
            "198.51.100.7",
        ),
        (
            "client writes a trusted address to pass as a proxy",
            PROXY,
            &[("x-forwarded-for", b"1.1.1.1, 10.9.9.9, 198.51.100.7")],
            "198.51.100.7",
        ),
        (
            "two trusted proxies",
            PROXY,
            &[(
                "x-forwarded-for",
                b"1.1.1.1, 198.51.100.7, 10.1.1.1, 192.168.1.1",
            )],
            "198.51.100.7",
        ),
        (
            "every hop trusted: leftmost is the caller",
            PROXY,
            &[("x-forwarded-for", b"10.3.3.3, 10.2.2.2, 192.168.1.1")],
            "10.3.3.3",
        ),
        (
            "multiple lines are one list, in order",
            PROXY,
            &[
                ("x-forwarded-for", b"1.1.1.1, 198.51.100.7"),
                ("x-forwarded-for", b"10.1.1.1"),
            ],
            "198.51.100.7",
        ),
        (
            "client's own line comes first and is not believed",
            PROXY,
            &[
                ("x-forwarded-for", b"8.8.8.8"),
                ("x-forwarded-for", b"198.51.100.7"),
            ],
            "198.51.100.7",
        ),
        (
            "IPv6 with brackets and port",
            PROXY,
            &[("x-forwarded-for", b"[2001:db8::7]:443")],
            "2001:db8::7",
        ),
        (
            "bare IPv6 and a trusted IPv6 proxy",
            PROXY,
            &[("x-forwarded-for", b"2001:db8::7, 2001:db8:ffff::1")],
            "2001:db8::7",
        ),
        (
            "IPv4 with port",
            PROXY,
            &[("x-forwarded-for", b"198.51.100.7:51234")],
            "198.51.100.7",
        ),
        (
            "IPv4-mapped peer is matched against IPv4 CIDRs",
            "::ffff:10.0.0.5",
            &[("x-forwarded-for", b"198.51.100.7")],
            "198.51.100.7",
        ),
        (
            "IPv4-mapped caller is returned as IPv4",
            PROXY,
            &[("x-forwarded-for", b"::ffff:198.51.100.7")],
            "198.51.100.7",
        ),
        (
            "garbage stops the walk at the last trusted hop",
            PROXY,
            &[("x-forwarded-for", b"8.8.8.8, not-an-ip, 10.1.1.1")],
            "10.1.1.1",
        ),
        (
            "garbage right of the peer: the peer",
            PROXY,
            &[("x-forwarded-for", b"8.8.8.8, <script>")],
            PROXY,
        ),
        (
            "unknown hop: last trusted",
            PROXY,
            &[("x-forwarded-for", b"8.8.8.8, unknown")],
            PROXY,
        ),
        (
            "non-ASCII line is garbage",
            PROXY,
            &[
                ("x-forwarded-for", b"8.8.8.8"),
                ("x-forwarded-for", b"\xff\xfe"),
            ],
            PROXY,
        ),
        (
            "empty entries are skipped",
            PROXY,
            &[("x-forwarded-for", b"198.51.100.7,, ,")],
            "198.51.100.7",
        ),
        (
            "empty header: the peer",
            PROXY,
            &[("x-forwarded-for", b"")],
            PROXY,
        ),
        (
            "Forwarded: RFC 7239 example chain",
            PROXY,
            &[(
                "forwarded",
                b"for=192.0.2.43, for=\"[2001:db8:cafe::17]:4711\";proto=https, for=10.1.1.1",
            )],
            "2001:db8:cafe::17",
        ),
        (
            "Forwarded: client-written leftmost element is not believed",
            PROXY,
            &[("forwarded", b"for=8.8.8.8, for=198.51.100.7;proto=https")],
            "198.51.100.7",
        ),
        (
            "Forwarded: multiple lines",
            PROXY,
            &[
                ("forwarded", b"for=8.8.8.8"),
                ("forwarded", b"for=\"198.51.100.7:1234\""),
                ("forwarded", b"for=10.1.1.1;by=10.0.0.5"),
            ],
            "198.51.100.7",
        ),
        (
            "Forwarded: for=unknown stops at last trusted",
            PROXY,
            &[("forwarded", b"for=8.8.8.8, for=unknown, for=10.1.1.1")],
            "10.1.1.1",
        ),
        (
            "Forwarded: obfuscated identifier stops at last trusted",
            PROXY,
            &[("forwarded", b"for=8.8.8.8, for=_gazonk")],
            PROXY,
        ),
        (
            "Forwarded: element without for= stops at last trusted",
            PROXY,
            &[("forwarded", b"for=8.8.8.8, proto=https")],
            PROXY,
        ),
        (
            "Forwarded: duplicate for= is garbage",
            PROXY,
            &[("forwarded", b"for=198.51.100.7;for=8.8.8.8")],
            PROXY,
        ),
        (
            "Forwarded: unterminated quote swallowing the proxy's element",
            PROXY,
            &[("forwarded", b"for=\"8.8.8.8, for=198.51.100.7")],
            PROXY,
        ),
        (
            "Forwarded: quoted comma does not split an element",
            PROXY,
            &[("forwarded", b"for=\"8.8.8.8,1.1.1.1\", for=198.51.100.7")],
            "198.51.100.7",
        ),
        (
            "Forwarded: all trusted, leftmost",
            PROXY,
            &[("forwarded", b"for=10.3.3.3, for=\"[2001:db8:ffff::9]\"")],
            "10.3.3.3",
        ),
        (
            "both headers: X-Forwarded-For wins by default",
            PROXY,
            &[
                ("forwarded", b"for=8.8.8.8"),
                ("x-forwarded-for", b"198.51.100.7"),
            ],
            "198.51.100.7",
        ),
        (
            "only Forwarded present: it is used",
            PROXY,
            &[("forwarded", b"for=198.51.100.7")],
            "198.51.100.7",
        ),
    ];

    /// The same lines as the lean HTTP/1.1 path hands them on (`Few`), when it serves them.
    fn lean(lines: &[(&str, &[u8])]) -> Option<crate::front::h1::Lean> {
        let mut raw = b"POST / HTTP/1.1\r\n".to_vec();
        for (name, value) in lines {
            raw.extend_from_slice(name.as_bytes());
            raw.extend_from_slice(b": ");
            raw.extend_from_slice(value);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"content-length: 0\r\n\r\n");
        crate::front::h1::request(&bytes::Bytes::from(raw), 0).map(http::Request::into_body)
    }

    #[test]
    fn table() {
        let trusted = trusted();
        let mut lean_cases = 0;
        for (what, peer, lines, want) in CASES {
            let want = want.parse::<IpAddr>().unwrap();
            let peer = peer.parse().unwrap();
            assert_eq!(client_ip(peer, &headers(lines), &trusted), want, "{what}");
            // Lines httparse refuses (bytes a header value cannot hold) go to hyper: its map.
            if let Some(req) = lean(lines) {
                let got = client_ip(peer, Heads::Few(&req.heads), &trusted);
                assert_eq!(got, want, "{what}, from the lean path");
                lean_cases += 1;
            }
        }
        assert!(
            lean_cases > CASES.len() / 2,
            "{lean_cases} cases on the lean path"
        );
    }

    #[test]
    fn policies_when_both_headers_present() {
        let both = headers(&[
            ("forwarded", b"for=198.51.100.1"),
            ("x-forwarded-for", b"198.51.100.2"),
        ]);
        let peer: IpAddr = PROXY.parse().unwrap();
        let cases = [
            (HeaderPolicy::PreferXForwardedFor, "198.51.100.2"),
            (HeaderPolicy::PreferForwarded, "198.51.100.1"),
            (HeaderPolicy::XForwardedForOnly, "198.51.100.2"),
            (HeaderPolicy::ForwardedOnly, "198.51.100.1"),
        ];
        for (policy, want) in cases {
            let trusted = trusted().with_policy(policy);
            let got = client_ip(peer, &both, &trusted);
            assert_eq!(got, want.parse::<IpAddr>().unwrap(), "{policy:?}");
        }
    }

    #[test]
    fn only_policies_ignore_the_other_header() {
        // A proxy that writes only Forwarded, and a client that adds its own X-Forwarded-For:
        // with ForwardedOnly the forgery is ignored even though the proxy wrote nothing there.
        let peer: IpAddr = PROXY.parse().unwrap();
        let forged_xff = headers(&[
            ("x-forwarded-for", b"8.8.8.8"),
            ("forwarded", b"for=198.51.100.7"),
        ]);
        let fwd_only = trusted().with_policy(HeaderPolicy::ForwardedOnly);
        assert_eq!(
            client_ip(peer, &forged_xff, &fwd_only),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let forged_fwd = headers(&[("forwarded", b"for=8.8.8.8")]);
        let xff_only = trusted().with_policy(HeaderPolicy::XForwardedForOnly);
        assert_eq!(client_ip(peer, &forged_fwd, &xff_only), peer);
    }

    #[test]
    fn every_policy_has_a_config_name_that_parses_back() {
        for (name, policy) in HeaderPolicy::NAMES {
            assert_eq!(name.parse::<HeaderPolicy>(), Ok(*policy));
        }
        assert_eq!(HeaderPolicy::NAMES[0].1, HeaderPolicy::default());
        let err = "X-Forwarded-For".parse::<HeaderPolicy>().unwrap_err();
        for (name, _) in HeaderPolicy::NAMES {
            assert!(err.to_string().contains(name), "{name} missing from: {err}");
        }
    }

    #[test]
    fn empty_trust_list_always_returns_peer() {
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let h = headers(&[("x-forwarded-for", b"8.8.8.8")]);
        assert_eq!(client_ip(peer, &h, &TrustedProxies::default()), peer);
    }

    #[test]
    fn long_trusted_chain_is_capped() {
        let chain = vec!["10.1.1.1"; MAX_HOPS + 5].join(", ");
        let h = headers(&[("x-forwarded-for", format!("8.8.8.8, {chain}").as_bytes())]);
        let got = client_ip(PROXY.parse().unwrap(), &h, &trusted());
        assert_eq!(got, "10.1.1.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn parse_trusted_entries() {
        let t = TrustedProxies::parse([" 10.0.0.0/8 ", "192.168.1.1", "fd00::/8", "10.1.2.3/8"])
            .unwrap();
        assert!(t.contains("10.200.0.1".parse().unwrap()));
        assert!(t.contains("192.168.1.1".parse().unwrap()));
        assert!(!t.contains("192.168.1.2".parse().unwrap()));
        assert!(t.contains("fd12::1".parse().unwrap()));
        assert!(t.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert_eq!(
            t.nets()[3].to_string(),
            "10.0.0.0/8",
            "host bits are cleared"
        );
        let err = TrustedProxies::parse(["10.0.0.0/8", "proxy.local"]).unwrap_err();
        assert_eq!(err.entry, "proxy.local");
        assert!(err.to_string().contains("proxy.local"));
    }
}
