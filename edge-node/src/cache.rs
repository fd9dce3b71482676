//! The response cache: how keys are built and the byte-bounded moka store. What may be cached
//! is decided by [`crate::policy`].
//!
//! Invariant: a key names its block (a final number or a block hash), so an entry is the
//! answer for exactly that block; entries naming replaced blocks are evicted on reorg.

use bytes::Bytes;

/// Is an upstream answer fit to keep? `null` is not: the data may simply not have reached
/// this upstream yet. (Empty lists and `"0x"` about a resolved block are real answers.)
pub fn storable(result: &[u8]) -> bool {
    !matches!(result, b"null" | b"")
}

/// Cache key: chain, method and the params as raw JSON, minified, with the hex digits of
/// `0x`-prefixed hex strings lower-cased; never the JSON-RPC id. Only spellings the upstream
/// reads alike share a key (hex case, whitespace): an address written `0X..`, an escaped
/// string or reordered object keys get keys of their own, so one caller's odd spelling can
/// never be answered with (or wait on) another caller's answer.
pub fn key(chain_id: u64, method: &str, params: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(24 + method.len() + params.len());
    out.extend_from_slice(daemon::text::decimal(chain_id, &mut [0; 20]).as_bytes());
    out.push(b'|');
    out.extend_from_slice(method.as_bytes());
    out.push(b'|');
    write_canonical(params, &mut out);
    Bytes::from(out)
}

/// Copies JSON text without insignificant whitespace, lower-casing `"0x<hex digits>"` strings.
///
/// Finds quotes and escapes with `memchr` and copies whole runs rather than byte by byte: the
/// key is built for every cacheable call, hit or miss, over params mostly made of long hex
/// strings.
fn write_canonical(json: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < json.len() {
        // Structure up to the next string.
        let run_end = memchr::memchr(b'"', &json[i..]).map_or(json.len(), |p| i + p);
        let run = &json[i..run_end];
        if run.iter().any(u8::is_ascii_whitespace) {
            out.extend(run.iter().filter(|b| !b.is_ascii_whitespace()));
        } else {
            out.extend_from_slice(run);
        }
        if run_end == json.len() {
            break;
        }
        // A string: find its end (skipping escaped characters).
        let start = run_end;
        i = start + 1;
        loop {
            // Past the end when the last byte escapes nothing.
            let rest = json.get(i..).unwrap_or_default();
            match memchr::memchr2(b'"', b'\\', rest) {
                Some(p) if rest[p] == b'\\' => i += p + 2,
                Some(p) => {
                    i += p;
                    break;
                }
                None => {
                    i = json.len();
                    break;
                }
            }
        }
        let end = (i + 1).min(json.len());
        let s = &json[start..end];
        // A lone `"` as the last byte is no string at all (the gateway sends valid JSON, but a
        // key must never panic).
        let inner = s.get(1..s.len().saturating_sub(1)).unwrap_or_default();
        let at = out.len();
        out.extend_from_slice(s);
        if inner.len() > 2 && inner.starts_with(b"0x") {
            // An unterminated string's last byte counts as its closing quote in `inner` and is
            // lower-cased with the rest (as the byte-by-byte reference does).
            let unterminated = s.last() != Some(&b'"');
            if hex_with_upper(&inner[2..]).is_some_and(|upper| upper || unterminated) {
                // After the opening quote and `0x`.
                out[at + 3..].make_ascii_lowercase();
            }
        }
        i = end;
    }
}

/// Whether `d` is all hex digits (`None` if not), and whether any of them is upper case.
/// Without an early exit, so the loop vectorises: the digits are mostly an address or a hash
/// (callgrind: the byte-at-a-time check and lower-casing were ~60 % of a key's cost).
fn hex_with_upper(d: &[u8]) -> Option<bool> {
    let (mut bad, mut upper) = (false, false);
    for &b in d {
        let up = b.wrapping_sub(b'A') < 6;
        let ok = b.wrapping_sub(b'0') < 10 || b.wrapping_sub(b'a') < 6 || up;
        bad |= !ok;
        upper |= up;
    }
    (!bad).then_some(upper)
}

/// Byte-bounded store. Values are raw JSON `result` bytes.
pub type Store = moka::future::Cache<Bytes, Bytes, daemon::KeyHasher>;

pub fn store(max_bytes: u64) -> Store {
    builder(max_bytes).build_with_hasher(daemon::KeyHasher::default())
}

/// As [`store`], counting entries that leave by eviction (not by replacement or removal) into
/// `evictions{cause}` (`size` or `expired`).
pub fn store_counting_evictions(max_bytes: u64, evictions: prometheus::IntCounterVec) -> Store {
    builder(max_bytes)
        .eviction_listener(move |_k, _v, cause| {
            let label = match cause {
                moka::notification::RemovalCause::Size => "size",
                moka::notification::RemovalCause::Expired => "expired",
                _ => return,
            };
            evictions.with_label_values(&[label]).inc();
        })
        .build_with_hasher(daemon::KeyHasher::default())
}

/// The store's builder: an entry weighs its key, its value and the measured per-entry overhead
/// ([`daemon::weigh`]), so `max_bytes` bounds real memory.
fn builder(
    max_bytes: u64,
) -> moka::future::CacheBuilder<Bytes, Bytes, moka::future::Cache<Bytes, Bytes>> {
    moka::future::Cache::builder()
        .max_capacity(max_bytes)
        .weigher(|k: &Bytes, v: &Bytes| daemon::weigh::weight(k.len(), v.len(), 0))
        // Reorg eviction removes every key naming a replaced block hash.
        .support_invalidation_closures()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0x8a1b5e6b0b8e7d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a";

    fn k(chain: u64, params: &str) -> Bytes {
        key(chain, "eth_call", params.as_bytes())
    }

    #[test]
    fn keys_merge_only_what_the_upstream_reads_alike() {
        let a = k(
            1,
            &format!(r#"[{{"to":"0xABC","data":"0x01"}},{{"blockHash":"{H}"}}]"#),
        );
        // Whitespace and hex case: the same question.
        let b = k(
            1,
            &format!(
                "[ {{\"to\": \"0xabc\",\n \"data\": \"0x01\"}}, {{\"blockHash\": \"{}\"}}]",
                H.to_uppercase().replace("0X", "0x")
            ),
        );
        assert_eq!(a, b);
        // Another chain, other data: other questions.
        assert_ne!(
            a,
            k(
                2,
                &format!(r#"[{{"to":"0xABC","data":"0x01"}},{{"blockHash":"{H}"}}]"#)
            )
        );
        assert_ne!(
            a,
            k(
                1,
                &format!(r#"[{{"to":"0xABC","data":"0x02"}},{{"blockHash":"{H}"}}]"#)
            )
        );
        // Spellings an upstream may read differently never share a key: a `0X` prefix, an
        // escaped character, key order, a string that merely looks like hex.
        for odd in [
            format!(r#"[{{"to":"0XABC","data":"0x01"}},{{"blockHash":"{H}"}}]"#),
            format!(r#"[{{"to":"\u0030xabc","data":"0x01"}},{{"blockHash":"{H}"}}]"#),
            format!(r#"[{{"data":"0x01","to":"0xABC"}},{{"blockHash":"{H}"}}]"#),
            format!(r#"[{{"to":"0xABC","data":"0x01"}},{{"blockHash":"{H} "}}]"#),
        ] {
            assert_ne!(a, k(1, &odd), "{odd}");
        }
        // Escaped quotes do not end a string early.
        assert_eq!(k(1, r#"["a\" b"]"#), k(1, r#"[ "a\" b" ]"#));
        assert_ne!(k(1, r#"["a\" b"]"#), k(1, r#"["a\"b"]"#));
    }

    /// The canonicaliser as first written, byte by byte (less its panic on a lone trailing
    /// quote): the reference for the one above.
    fn reference(json: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < json.len() {
            let b = json[i];
            if b != b'"' {
                if !b.is_ascii_whitespace() {
                    out.push(b);
                }
                i += 1;
                continue;
            }
            let start = i;
            i += 1;
            while i < json.len() && json[i] != b'"' {
                i += if json[i] == b'\\' { 2 } else { 1 };
            }
            let end = (i + 1).min(json.len());
            let s = &json[start..end];
            let inner = s.get(1..s.len().saturating_sub(1)).unwrap_or_default();
            if inner.len() > 2
                && inner.starts_with(b"0x")
                && inner[2..].iter().all(u8::is_ascii_hexdigit)
            {
                out.extend(s.iter().map(u8::to_ascii_lowercase));
            } else {
                out.extend_from_slice(s);
            }
            i = end;
        }
        out
    }

    #[test]
    fn keys_match_the_byte_by_byte_reference_on_any_input() {
        // Inputs from an alphabet dense in the cases that matter: quotes, escapes (also as
        // the last byte), whitespace, hex prefixes in both cases, digits and letters.
        const ALPHABET: &[u8] = b"[]{},:\"\\ \n\t0xXaFfg19";
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Unterminated hex strings (their last byte stands for the closing quote) first.
        let fixed = [
            &br#"["0x1F"#[..],
            br#""0xAB"#,
            br#""0x1Z"#,
            br#""0xab"#,
            b"\"0x1",
            b"\"0X1F",
        ];
        let random = std::iter::repeat_with(|| {
            let len = (next() % 48) as usize;
            (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect::<Vec<u8>>()
        });
        for json in fixed
            .map(<[u8]>::to_vec)
            .into_iter()
            .chain(random.take(20_000))
        {
            let mut out = Vec::new();
            write_canonical(&json, &mut out);
            assert_eq!(
                out,
                reference(&json),
                "{:?}",
                String::from_utf8_lossy(&json)
            );
        }
        for chain in [0, 1, 9, 10, 31337, u64::MAX] {
            let k = key(chain, "m", b"[]");
            assert_eq!(&k[..], format!("{chain}|m|[]").as_bytes());
        }
    }

    #[test]
    fn null_answers_are_not_stored() {
        assert!(!storable(b"null"));
        assert!(storable(b"[]"));
        assert!(storable(b"\"0x1\""));
    }

    #[tokio::test]
    async fn evictions_by_size_are_counted() {
        let c =
            prometheus::IntCounterVec::new(prometheus::Opts::new("e", "e"), &["cause"]).unwrap();
        let s = store_counting_evictions(10_000, c.clone());
        for i in 0..1000u32 {
            s.insert(Bytes::from(i.to_string()), Bytes::from(vec![b'x'; 100]))
                .await;
        }
        s.run_pending_tasks().await;
        let evicted = c.with_label_values(&["size"]).get();
        // 1000 entries of ~170 weighted bytes into 10 kB: most must have gone, and each counted.
        assert!(evicted > 500, "evictions counted: {evicted}");
        assert_eq!(evicted + s.entry_count(), 1000);
    }

    #[tokio::test]
    async fn store_bound_holds() {
        let s = store(10_000);
        for i in 0..1000u32 {
            s.insert(Bytes::from(i.to_string()), Bytes::from(vec![b'x'; 100]))
                .await;
        }
        s.run_pending_tasks().await;
        assert!(s.weighted_size() <= 10_000, "{}", s.weighted_size());
        assert!(s.entry_count() > 0);
    }
}
