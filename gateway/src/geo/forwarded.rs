//! Parsing of `X-Forwarded-For` entries and RFC 7239 `Forwarded` elements into [`Hop`]s.
//!
//! Parsing is lenient about what real proxies emit (ports on IPv4, bare IPv6 without brackets)
//! but never guesses: anything that is not clearly an address becomes [`Hop::Garbage`], and
//! the walk in `client_ip` stops there.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One proxy hop as written in a forwarding header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hop {
    /// The hop's address, port removed.
    Addr(IpAddr),
    /// A real hop whose address was withheld: `unknown`, an obfuscated `_name`, or a
    /// `Forwarded` element without `for=`.
    Hidden,
    /// Not parseable.
    Garbage,
}

/// Parses one comma-separated `X-Forwarded-For` entry; `None` for an empty entry, which is
/// skipped (it can only sit among client-written entries and names nobody).
pub(crate) fn parse_xff_entry(entry: &str) -> Option<Hop> {
    let entry = entry.trim_matches([' ', '\t']);
    if entry.is_empty() {
        return None;
    }
    Some(parse_node(entry))
}

/// Parses one `Forwarded` header line, appending its elements' `for=` hops in order.
pub(crate) fn parse_forwarded_line(line: &str, out: &mut Vec<Hop>) {
    for element in split_unquoted(line, b',') {
        if element.trim_matches([' ', '\t']).is_empty() {
            continue;
        }
        out.push(parse_element(element));
    }
}

/// One element: `;`-separated `name=value` pairs, of which we need `for`.
fn parse_element(element: &str) -> Hop {
    let mut node: Option<Cow<'_, str>> = None;
    for pair in split_unquoted(element, b';') {
        let pair = pair.trim_matches([' ', '\t']);
        if pair.is_empty() {
            continue;
        }
        let Some((name, value)) = pair.split_once('=') else {
            return Hop::Garbage;
        };
        if !name.trim_end().eq_ignore_ascii_case("for") {
            continue;
        }
        // RFC 7239 §4: a parameter must not occur twice in one element; two `for`s is a
        // forgery or a broken proxy, and either way we cannot tell which one to believe.
        if node.is_some() {
            return Hop::Garbage;
        }
        match unquote(value.trim_start()) {
            Some(v) => node = Some(v),
            None => return Hop::Garbage,
        }
    }
    match node {
        Some(node) => parse_node(&node),
        None => Hop::Hidden,
    }
}

/// A node identifier (RFC 7239 §6), also the shape of an `X-Forwarded-For` entry.
fn parse_node(node: &str) -> Hop {
    if node.eq_ignore_ascii_case("unknown") {
        return Hop::Hidden;
    }
    if let Some(name) = node.strip_prefix('_') {
        return if is_obfuscated(name) {
            Hop::Hidden
        } else {
            Hop::Garbage
        };
    }
    // Plain IPv4, or IPv6 written without brackets (common in X-Forwarded-For).
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Hop::Addr(ip);
    }
    // "[2001:db8::1]" or "[2001:db8::1]:443".
    if let Some(rest) = node.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Hop::Garbage;
        };
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        return match inside.parse::<Ipv6Addr>() {
            Ok(ip) if port_ok => Hop::Addr(IpAddr::V6(ip)),
            _ => Hop::Garbage,
        };
    }
    // "192.0.2.1:8080".
    if let Some((host, port)) = node.split_once(':') {
        if let (Ok(ip), true) = (host.parse::<Ipv4Addr>(), is_port(port)) {
            return Hop::Addr(IpAddr::V4(ip));
        }
    }
    Hop::Garbage
}

/// `node-port` of RFC 7239: a decimal port or an obfuscated `_name`.
fn is_port(port: &str) -> bool {
    match port.strip_prefix('_') {
        Some(name) => is_obfuscated(name),
        None => (1..=5).contains(&port.len()) && port.parse::<u16>().is_ok(),
    }
}

/// The part after `_` of `obfnode` / `obfport`: ALPHA / DIGIT / "." / "_" / "-".
fn is_obfuscated(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A token, or a quoted-string with its quotes and backslash escapes removed.
/// `None` when the quoting is broken.
fn unquote(value: &str) -> Option<Cow<'_, str>> {
    let Some(inner) = value.strip_prefix('"') else {
        // A bare token may not contain quotes or spaces.
        let value = value.trim_end_matches([' ', '\t']);
        let ok = !value.is_empty() && !value.contains(['"', ' ', '\t', '\\']);
        return ok.then_some(Cow::Borrowed(value));
    };
    let inner = inner.trim_end_matches([' ', '\t']).strip_suffix('"')?;
    if !inner.contains('\\') {
        // An unescaped quote inside means the string ended early: `"a"b"`.
        return (!inner.contains('"')).then_some(Cow::Borrowed(inner));
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(Cow::Owned(out))
}

/// Splits on `sep` outside double-quoted strings. An unterminated quote keeps the rest of the
/// input in the last piece, whose `unquote` then fails.
fn split_unquoted(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut pos = 0;
    let mut in_quotes = false;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        while pos < bytes.len() {
            let b = bytes[pos];
            pos += 1;
            match b {
                b'\\' if in_quotes => pos += 1,
                b'"' => in_quotes = !in_quotes,
                b if b == sep && !in_quotes => {
                    let piece = &s[start..pos - 1];
                    start = pos;
                    return Some(piece);
                }
                _ => {}
            }
        }
        done = true;
        // `pos` may overshoot by one after a trailing backslash.
        Some(&s[start.min(s.len())..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Hop {
        Hop::Addr(s.parse().unwrap())
    }

    fn forwarded(line: &str) -> Vec<Hop> {
        let mut out = Vec::new();
        parse_forwarded_line(line, &mut out);
        out
    }

    #[test]
    fn xff_entries() {
        let cases: &[(&str, Option<Hop>)] = &[
            ("203.0.113.7", Some(ip("203.0.113.7"))),
            ("  203.0.113.7\t", Some(ip("203.0.113.7"))),
            ("203.0.113.7:4711", Some(ip("203.0.113.7"))),
            ("2001:db8::1", Some(ip("2001:db8::1"))),
            ("[2001:db8::1]", Some(ip("2001:db8::1"))),
            ("[2001:db8::1]:443", Some(ip("2001:db8::1"))),
            ("::ffff:192.0.2.1", Some(ip("::ffff:192.0.2.1"))),
            ("unknown", Some(Hop::Hidden)),
            ("UNKNOWN", Some(Hop::Hidden)),
            ("_hidden-proxy", Some(Hop::Hidden)),
            ("", None),
            ("   ", None),
            ("_", Some(Hop::Garbage)),
            ("_bad name", Some(Hop::Garbage)),
            ("example.com", Some(Hop::Garbage)),
            ("203.0.113.7:99999", Some(Hop::Garbage)),
            ("203.0.113.7:", Some(Hop::Garbage)),
            ("203.0.113", Some(Hop::Garbage)),
            ("[2001:db8::1", Some(Hop::Garbage)),
            ("[2001:db8::1]443", Some(Hop::Garbage)),
            ("[192.0.2.1]", Some(Hop::Garbage)),
            ("fe80::1%eth0", Some(Hop::Garbage)),
            ("\"203.0.113.7\"", Some(Hop::Garbage)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_xff_entry(input), *want, "input {input:?}");
        }
    }

    #[test]
    fn forwarded_elements() {
        let cases: &[(&str, &[Hop])] = &[
            ("for=192.0.2.60", &[ip("192.0.2.60")]),
            ("For=192.0.2.60", &[ip("192.0.2.60")]),
            (
                "for=192.0.2.60;proto=http;by=203.0.113.43",
                &[ip("192.0.2.60")],
            ),
            ("proto=https;for=192.0.2.60", &[ip("192.0.2.60")]),
            ("for=\"192.0.2.60:8080\"", &[ip("192.0.2.60")]),
            ("for=\"[2001:db8:cafe::17]\"", &[ip("2001:db8:cafe::17")]),
            (
                "for=\"[2001:db8:cafe::17]:4711\"",
                &[ip("2001:db8:cafe::17")],
            ),
            (
                "for=\"[2001:db8:cafe::17]:_p1\"",
                &[ip("2001:db8:cafe::17")],
            ),
            (
                "for=192.0.2.43, for=198.51.100.17",
                &[ip("192.0.2.43"), ip("198.51.100.17")],
            ),
            (
                "for=192.0.2.43,for=\"[2001:db8::1]\" , for=unknown",
                &[ip("192.0.2.43"), ip("2001:db8::1"), Hop::Hidden],
            ),
            ("for=unknown", &[Hop::Hidden]),
            ("for=\"unknown\"", &[Hop::Hidden]),
            ("for=_hidden", &[Hop::Hidden]),
            ("for=\"_SEVKISEK\"", &[Hop::Hidden]),
            ("proto=https;by=10.0.0.1", &[Hop::Hidden]),
            ("for=\"19\\2.0.2.60\"", &[ip("192.0.2.60")]),
            ("for=192.0.2.60;for=198.51.100.1", &[Hop::Garbage]),
            ("for=\"192.0.2.60", &[Hop::Garbage]),
            (
                "for=\"a,b\", for=192.0.2.1",
                &[Hop::Garbage, ip("192.0.2.1")],
            ),
            ("for=\"a\"b\"", &[Hop::Garbage]),
            ("for", &[Hop::Garbage]),
            ("for=", &[Hop::Garbage]),
            ("for=[2001:db8::1]:x", &[Hop::Garbage]),
            ("for=example.com", &[Hop::Garbage]),
            ("for=1.2.3.4\\", &[Hop::Garbage]),
            (", ,for=192.0.2.1,", &[ip("192.0.2.1")]),
            ("", &[]),
        ];
        for (input, want) in cases {
            assert_eq!(forwarded(input), *want, "input {input:?}");
        }
    }

    #[test]
    fn split_keeps_quoted_separators() {
        let pieces: Vec<&str> = split_unquoted(r#"a="x,y",b,"c\"d,e",f"#, b',').collect();
        assert_eq!(pieces, [r#"a="x,y""#, "b", r#""c\"d,e""#, "f"]);
        let pieces: Vec<&str> = split_unquoted("a\\", b',').collect();
        assert_eq!(pieces, ["a\\"]);
        let pieces: Vec<&str> = split_unquoted("\"a\\", b',').collect();
        assert_eq!(pieces, ["\"a\\"]);
    }
}
