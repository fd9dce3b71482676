//! The request headers the request path reads, from either HTTP path: hyper's whole header
//! map, or the lean HTTP/1.1 path's [`Few`]: spans of the request's own bytes, found while the
//! head is parsed. No map is built, hashed, probed or dropped for them (callgrind: a
//! gateway-tier hit went from 22.9k to 21.2k instructions).
//!
//! A header the request path starts to read must become a [`Read`]: a test in [`super::h1`]
//! fails on a look-up in the request path's files that bypasses [`Heads`].

use bytes::Bytes;
use http::header::ValueIter;
use http::{header, HeaderMap, HeaderName, HeaderValue};

/// A request header the request path reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Read {
    #[default]
    ContentType,
    ContentEncoding,
    AcceptEncoding,
    Origin,
    Authorization,
    XApiKey,
    XForwardedFor,
    Forwarded,
}

impl Read {
    pub const ALL: [Read; 8] = [
        Read::ContentType,
        Read::ContentEncoding,
        Read::AcceptEncoding,
        Read::Origin,
        Read::Authorization,
        Read::XApiKey,
        Read::XForwardedFor,
        Read::Forwarded,
    ];

    pub fn name(self) -> HeaderName {
        match self {
            Read::ContentType => header::CONTENT_TYPE,
            Read::ContentEncoding => header::CONTENT_ENCODING,
            Read::AcceptEncoding => header::ACCEPT_ENCODING,
            Read::Origin => header::ORIGIN,
            Read::Authorization => header::AUTHORIZATION,
            Read::XApiKey => super::respond::names::X_API_KEY,
            Read::XForwardedFor => crate::geo::X_FORWARDED_FOR,
            Read::Forwarded => header::FORWARDED,
        }
    }

    /// The header `name` (any case) names, if the request path reads it.
    pub fn from_name(name: &[u8]) -> Option<Read> {
        // By length first: one compare, at most two, per header, each against a literal (so
        // unrolled: callgrind counts a table of names twice the cost).
        let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        let r = match name.len() {
            6 if is("origin") => Read::Origin,
            9 if is("forwarded") => Read::Forwarded,
            9 if is("x-api-key") => Read::XApiKey,
            12 if is("content-type") => Read::ContentType,
            13 if is("authorization") => Read::Authorization,
            15 if is("accept-encoding") => Read::AcceptEncoding,
            15 if is("x-forwarded-for") => Read::XForwardedFor,
            16 if is("content-encoding") => Read::ContentEncoding,
            _ => return None,
        };
        Some(r)
    }
}

/// The most read headers the lean path keeps (each of them once, and room for repeated
/// forwarding headers); a request with more goes to hyper.
pub const FEW_MAX: usize = 16;

/// Where a part of the head is: offset and length (a head is under 64 KiB).
pub type Span = (u16, u16);

/// The read headers of a request the lean path parsed: their values as spans of `raw`, in
/// order (a header sent twice is here twice).
#[derive(Debug, Clone, Default)]
pub struct Few {
    raw: Bytes,
    n: u8,
    at: [(Option<Read>, Span); FEW_MAX],
}

impl Few {
    /// `at`: the read headers and their values' spans in `raw`, at most [`FEW_MAX`].
    pub(crate) fn new(raw: Bytes, at: &[(Read, Span)]) -> Few {
        debug_assert!(at.len() <= FEW_MAX);
        debug_assert!(at
            .iter()
            .all(|&(_, (o, l))| usize::from(o) + usize::from(l) <= raw.len()));
        let mut few = Few {
            raw,
            n: at.len().min(FEW_MAX) as u8,
            at: Default::default(),
        };
        for (slot, &(r, span)) in few.at.iter_mut().zip(at) {
            *slot = (Some(r), span);
        }
        few
    }

    fn value(&self, span: Span) -> &[u8] {
        &self.raw[range(span)]
    }
}

/// The bytes `span` covers.
pub(crate) fn range((at, len): Span) -> std::ops::Range<usize> {
    usize::from(at)..usize::from(at) + usize::from(len)
}

/// The request's headers as the request path reads them.
#[derive(Debug, Clone, Copy)]
pub enum Heads<'a> {
    Map(&'a HeaderMap),
    Few(&'a Few),
}

impl<'a> From<&'a HeaderMap> for Heads<'a> {
    fn from(m: &'a HeaderMap) -> Self {
        Heads::Map(m)
    }
}

impl<'a> Heads<'a> {
    /// The first value of `h`, as sent.
    pub fn get(self, h: Read) -> Option<&'a [u8]> {
        self.get_all(h).next()
    }

    /// The first value of `h` as text, when it is visible ASCII (as `HeaderValue::to_str`).
    pub fn get_str(self, h: Read) -> Option<&'a str> {
        self.get(h).and_then(visible)
    }

    /// Every value of `h`, in the order sent.
    pub fn get_all(self, h: Read) -> Values<'a> {
        match self {
            Heads::Map(m) => Values::Map(m.get_all(h.name()).into_iter()),
            Heads::Few(f) => Values::Few {
                few: f,
                h,
                front: 0,
                back: usize::from(f.n),
            },
        }
    }

    /// The first value of `h` as a header value (no copy: a share of the request's bytes).
    pub fn value(self, h: Read) -> Option<HeaderValue> {
        match self {
            Heads::Map(m) => m.get(h.name()).cloned(),
            Heads::Few(f) => {
                let &(_, span) = f.at[..usize::from(f.n)]
                    .iter()
                    .find(|(r, _)| *r == Some(h))?;
                HeaderValue::from_maybe_shared(f.raw.slice(range(span))).ok()
            }
        }
    }

    pub fn contains(self, h: Read) -> bool {
        self.get(h).is_some()
    }
}

/// `v` as text when every byte is visible ASCII or a tab (what `HeaderValue::to_str` accepts).
pub fn visible(v: &[u8]) -> Option<&str> {
    if v.iter().all(|&b| b == b'\t' || (32..127).contains(&b)) {
        std::str::from_utf8(v).ok()
    } else {
        None
    }
}

/// The values of one header: see [`Heads::get_all`].
pub enum Values<'a> {
    Map(ValueIter<'a, HeaderValue>),
    /// The slots from `front` to `back` are still to be looked at.
    Few {
        few: &'a Few,
        h: Read,
        front: usize,
        back: usize,
    },
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Values::Map(it) => it.next().map(HeaderValue::as_bytes),
            Values::Few {
                few,
                h,
                front,
                back,
            } => {
                while *front < *back {
                    let (r, span) = few.at[*front];
                    *front += 1;
                    if r == Some(*h) {
                        return Some(few.value(span));
                    }
                }
                None
            }
        }
    }
}

/// Forwarding hops are walked from the right ([`crate::geo::client_ip`]).
impl DoubleEndedIterator for Values<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Values::Map(it) => it.next_back().map(HeaderValue::as_bytes),
            Values::Few {
                few,
                h,
                front,
                back,
            } => {
                while *back > *front {
                    *back -= 1;
                    let (r, span) = few.at[*back];
                    if r == Some(*h) {
                        return Some(few.value(span));
                    }
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn from_name_knows_every_read_header_in_any_case() {
        for r in Read::ALL {
            let name = r.name();
            assert_eq!(Read::from_name(name.as_str().as_bytes()), Some(r));
            assert_eq!(
                Read::from_name(name.as_str().to_ascii_uppercase().as_bytes()),
                Some(r)
            );
        }
        assert_eq!(Read::from_name(b"host"), None);
        assert_eq!(Read::from_name(b"content-length"), None);
        assert_eq!(Read::from_name(b"x-api-kez"), None);
    }

    #[test]
    fn few_and_map_give_the_same_values() {
        let raw = Bytes::from_static(b"application/json|1.2.3.4|5.6.7.8|\x80bad");
        let few = Few::new(
            raw,
            &[
                (Read::ContentType, (0, 16)),
                (Read::XForwardedFor, (17, 7)),
                (Read::XForwardedFor, (25, 7)),
                (Read::Origin, (33, 4)),
            ],
        );
        let mut map = HeaderMap::new();
        map.append(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        map.append(
            crate::geo::X_FORWARDED_FOR,
            HeaderValue::from_static("1.2.3.4"),
        );
        map.append(
            crate::geo::X_FORWARDED_FOR,
            HeaderValue::from_static("5.6.7.8"),
        );
        map.append(header::ORIGIN, HeaderValue::from_bytes(b"\x80bad").unwrap());
        for heads in [Heads::Few(&few), Heads::Map(&map)] {
            assert_eq!(heads.get(Read::ContentType), Some(&b"application/json"[..]));
            assert_eq!(heads.get_str(Read::XForwardedFor), Some("1.2.3.4"));
            let all: Vec<_> = heads.get_all(Read::XForwardedFor).collect();
            assert_eq!(all, [&b"1.2.3.4"[..], b"5.6.7.8"]);
            let back: Vec<_> = heads.get_all(Read::XForwardedFor).rev().collect();
            assert_eq!(back, [&b"5.6.7.8"[..], b"1.2.3.4"]);
            assert_eq!(heads.get(Read::Origin), Some(&b"\x80bad"[..]));
            assert_eq!(heads.get_str(Read::Origin), None, "not visible ASCII");
            assert!(!heads.contains(Read::Forwarded));
            assert_eq!(heads.value(Read::XForwardedFor).unwrap(), "1.2.3.4");
            assert_eq!(heads.value(Read::Origin).unwrap().as_bytes(), b"\x80bad");
            assert!(heads.value(Read::Forwarded).is_none());
            assert_eq!(heads.get_all(Read::AcceptEncoding).count(), 0);
        }
    }
}
