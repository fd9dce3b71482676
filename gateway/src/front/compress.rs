//! Compression. Answers of at least `server.compress_min_bytes` go out gzip-encoded to
//! callers that accept it; gzip-encoded request bodies are read within the same body limit
//! (the decompressed size counts, so a decompression bomb is refused before it grows).
//!
//! Final answers the gateway keeps are deflated once, when kept ([`Deflated`]); a response
//! made of one is assembled around those bytes, never compressed again. This works because a
//! gzip member is one deflate stream, and a deflate stream is a sequence of blocks: the
//! caller's id and the JSON-RPC envelope go in stored (uncompressed) blocks before and after
//! the kept result's blocks (which end on a byte boundary, flushed with a sync flush), and the
//! trailer's CRC-32 is combined from the three parts' CRCs.

use std::io::{Read, Write};

use super::heads::{self, visible, Heads};
use bytes::Bytes;
use flate2::write::{DeflateEncoder, GzEncoder};
use flate2::Compression;

/// Per-request compression: the fastest level (the answer is compressed for one caller).
const PER_REQUEST: Compression = Compression::fast();
/// Kept answers are compressed once and sent many times: a better ratio is worth it.
const KEPT: Compression = Compression::new(6);

/// Does the caller accept gzip (`Accept-Encoding: gzip` or `x-gzip` with q > 0, or `*` with
/// q > 0 when gzip is not listed)?
pub fn accepts_gzip<'a>(headers: impl Into<Heads<'a>>) -> bool {
    let (mut gzip, mut star) = (None, None);
    let items = headers
        .into()
        .get_all(heads::Read::AcceptEncoding)
        .filter_map(visible)
        .flat_map(|v| v.split(','));
    for item in items {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let wanted = !parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(gzip.unwrap_or(true) && wanted);
        } else if coding == "*" {
            star = Some(wanted);
        }
    }
    // A listed coding is decided by its own entry; `*` speaks only for the unlisted (RFC 9110).
    gzip.or(star).unwrap_or(false)
}

/// `body` gzip-encoded.
pub fn gzip(body: &[u8]) -> Bytes {
    let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 4 + 64), PER_REQUEST);
    enc.write_all(body).expect("writing to a Vec cannot fail");
    Bytes::from(enc.finish().expect("writing to a Vec cannot fail"))
}

/// A kept answer, deflated once: raw deflate blocks ending on a byte boundary (not final),
/// with the CRC-32 and length of what they hold.
#[derive(Debug, Clone)]
pub struct Deflated {
    blocks: Bytes,
    crc: crc32fast::Hasher,
    len: usize,
}

impl Deflated {
    pub fn new(data: &[u8]) -> Self {
        let mut enc = DeflateEncoder::new(Vec::with_capacity(data.len() / 4 + 64), KEPT);
        enc.write_all(data).expect("writing to a Vec cannot fail");
        // A sync flush: every byte out, ending on a byte boundary, the stream left open.
        enc.flush().expect("writing to a Vec cannot fail");
        let blocks = Bytes::from(std::mem::take(enc.get_mut()));
        let mut crc = crc32fast::Hasher::new();
        crc.update(data);
        Self {
            blocks,
            crc,
            len: data.len(),
        }
    }

    /// Bytes held (for the cache's weight).
    pub fn size(&self) -> usize {
        self.blocks.len()
    }

    /// A gzip member holding `prefix`, this answer, then `suffix`: no compression work.
    pub fn gzip_around(&self, prefix: &[u8], suffix: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(self.blocks.len() + prefix.len() + suffix.len() + 40);
        // ID1 ID2, deflate, no flags, no mtime, no extra flags, OS unknown.
        out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
        stored_blocks(&mut out, prefix, false);
        out.extend_from_slice(&self.blocks);
        stored_blocks(&mut out, suffix, true);
        let mut crc = crc32fast::Hasher::new();
        crc.update(prefix);
        crc.combine(&self.crc);
        let mut tail = crc32fast::Hasher::new();
        tail.update(suffix);
        crc.combine(&tail);
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        let total = prefix.len() + self.len + suffix.len();
        out.extend_from_slice(&(total as u32).to_le_bytes()); // ISIZE is the size mod 2^32
        Bytes::from(out)
    }
}

/// Stored deflate blocks holding `data` (at least one, so an empty final part still ends the
/// stream); the stream is on a byte boundary before each. The last is final when `last`.
fn stored_blocks(out: &mut Vec<u8>, data: &[u8], last: bool) {
    let mut rest = data;
    loop {
        let (chunk, tail) = rest.split_at(rest.len().min(usize::from(u16::MAX)));
        out.push(u8::from(last && tail.is_empty())); // BFINAL, BTYPE 00 (stored), padding
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
        rest = tail;
        if rest.is_empty() {
            return;
        }
    }
}

/// Why a gzip request body was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Gunzip {
    /// It inflates past the body limit.
    TooLarge,
    /// It is not gzip.
    Invalid(String),
}

/// Inflates a gzip request body, never holding more than `max` bytes of it.
pub fn gunzip(body: &[u8], max: usize) -> Result<Bytes, Gunzip> {
    let mut out = Vec::with_capacity((body.len() * 4).min(max));
    let mut dec = flate2::read::MultiGzDecoder::new(body).take(max as u64 + 1);
    dec.read_to_end(&mut out)
        .map_err(|e| Gunzip::Invalid(e.to_string()))?;
    if out.len() > max {
        return Err(Gunzip::TooLarge);
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{header, HeaderMap, HeaderValue};

    fn inflate(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn accept_encoding_is_negotiated() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(accepts_gzip(&h("gzip")));
        assert!(accepts_gzip(&h("br, gzip;q=0.5")));
        assert!(accepts_gzip(&h("GZIP")));
        assert!(accepts_gzip(&h("*")));
        assert!(!accepts_gzip(&h("gzip;q=0")));
        assert!(!accepts_gzip(&h("gzip;q=0, *")));
        assert!(accepts_gzip(&h("br, *;q=0.1")));
        assert!(!accepts_gzip(&h("br, identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn gzip_round_trips() {
        let body = br#"{"jsonrpc":"2.0","id":1,"result":"0x1"}"#.repeat(100);
        assert_eq!(inflate(&gzip(&body)), body);
    }

    /// The assembled member inflates to exactly prefix + answer + suffix, whatever the sizes
    /// (empty parts, a part over one stored block's 65,535 bytes, an answer that does not
    /// compress).
    #[test]
    fn kept_answers_are_wrapped_without_compressing_again() {
        let answer = br#"{"number":"0x1","transactions":["0xab"]}"#.repeat(3000);
        let noise: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let big_id = vec![b'7'; 70_000];
        for data in [&answer[..], &noise[..], b""] {
            let d = Deflated::new(data);
            for (prefix, suffix) in [
                (&br#"{"jsonrpc":"2.0","id":"x","result":"#[..], &b"}"[..]),
                (b"", b""),
                (&big_id[..], b"}"),
            ] {
                let gz = d.gzip_around(prefix, suffix);
                let want = [prefix, data, suffix].concat();
                assert_eq!(inflate(&gz), want);
            }
        }
        assert!(Deflated::new(&answer).size() < answer.len() / 10);
    }

    #[test]
    fn request_bodies_inflate_within_the_limit() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}"#;
        assert_eq!(&gunzip(&gzip(body), 1024).unwrap()[..], &body[..]);
        // A bomb: 10 MB of zeros in a few kB, against a 1 MB limit.
        let mut enc = GzEncoder::new(Vec::new(), Compression::best());
        enc.write_all(&vec![0u8; 10 << 20]).unwrap();
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 20_000, "{}", bomb.len());
        assert_eq!(gunzip(&bomb, 1 << 20), Err(Gunzip::TooLarge));
        assert!(matches!(gunzip(b"not gzip", 1024), Err(Gunzip::Invalid(_))));
    }
}
