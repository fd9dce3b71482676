//! Block parameters as clients write them (`"latest"`, `"0x10"`, a block hash, an EIP-1898
//! object) and the hex quantity parsing they share with the chain tracker and the proof checks.
//!
//! Parsing here is strict on purpose: only spellings that every upstream reads the same way are
//! recognised (lower-case tags, quantities without leading zeros, `0x`-prefixed hashes of
//! exactly 32 bytes, objects with known keys each at most once). Anything else is left to the
//! upstream, which answers it (or refuses it) itself; the node never guesses.

use serde::Deserialize;
use serde_json::value::RawValue;

/// A block tag or number as a client wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockRef {
    Latest,
    Safe,
    Finalized,
    Earliest,
    Pending,
    Number(u64),
}

impl BlockRef {
    /// A tag (lower case, as the JSON-RPC spec spells it) or a quantity.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "latest" => Self::Latest,
            "safe" => Self::Safe,
            "finalized" => Self::Finalized,
            "earliest" => Self::Earliest,
            "pending" => Self::Pending,
            n => Self::Number(quantity(n)?),
        })
    }
}

/// A block parameter, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockParam {
    Ref(BlockRef),
    /// A block named by hash (lower-cased), as a string or an EIP-1898 object.
    Hash {
        hash: String,
        require_canonical: bool,
        /// Written as an EIP-1898 object (`{"blockHash": ..}`), not a bare string.
        object: bool,
    },
}

/// What may name a block, per method: the by-number methods take a tag or number only; state
/// reads (EIP-1898) and `eth_getBlockReceipts` also take a hash or an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    TagOrNumber,
    Any,
}

/// The EIP-1898 object: known keys only, each once (serde refuses duplicates and, with
/// `deny_unknown_fields`, strangers), strings without escapes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Eip1898<'a> {
    #[serde(rename = "blockHash", borrow, default)]
    block_hash: Option<&'a str>,
    #[serde(rename = "blockNumber", borrow, default)]
    block_number: Option<&'a str>,
    #[serde(rename = "requireCanonical", default)]
    require_canonical: Option<bool>,
}

/// Parses one block parameter; `None` for anything not spelled the one way every upstream
/// reads alike (`null`, a missing parameter, capitalised tags, leading zeros, `0X`, ...).
pub fn block_param(raw: &RawValue, accepts: Accepts) -> Option<BlockParam> {
    if let Some(s) = plain_str(raw) {
        if is_hash(s) {
            return (accepts == Accepts::Any).then(|| BlockParam::Hash {
                hash: s.to_ascii_lowercase(),
                require_canonical: false,
                object: false,
            });
        }
        return BlockRef::parse(s).map(BlockParam::Ref);
    }
    if accepts != Accepts::Any || !raw.get().starts_with('{') {
        return None;
    }
    // What clients send (viem, ethers, web3.py write it compact): no parse, which costs a few
    // thousand instructions. Any other spelling goes to the parse, which agrees (tested).
    if let Some(h) = raw
        .get()
        .strip_prefix(r#"{"blockHash":""#)
        .and_then(|r| r.strip_suffix(r#""}"#))
        .filter(|h| is_hash(h))
    {
        return Some(BlockParam::Hash {
            hash: h.to_ascii_lowercase(),
            require_canonical: false,
            object: true,
        });
    }
    parsed_object(raw)
}

/// An EIP-1898 object, parsed.
fn parsed_object(raw: &RawValue) -> Option<BlockParam> {
    let o: Eip1898<'_> = serde_json::from_str(raw.get()).ok()?;
    match (o.block_hash, o.block_number, o.require_canonical) {
        (Some(h), None, rc) if is_hash(h) => Some(BlockParam::Hash {
            hash: h.to_ascii_lowercase(),
            require_canonical: rc.unwrap_or(false),
            object: true,
        }),
        (None, Some(n), None) => BlockRef::parse(n).map(BlockParam::Ref),
        _ => None,
    }
}

/// The content of a JSON string with no escapes (`None` for anything else).
pub fn plain_str(raw: &RawValue) -> Option<&str> {
    let s = raw.get();
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

/// A `0x`-prefixed hex string of exactly `bytes` bytes.
pub fn is_data(s: &str, bytes: usize) -> bool {
    s.len() == 2 + 2 * bytes && s.starts_with("0x") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// A 32-byte hash (whatever its value: a hash with leading zeros is still a hash).
pub fn is_hash(s: &str) -> bool {
    is_data(s, 32)
}

/// A quantity as the spec writes it: `0x`, then 1 to 16 hex digits without leading zeros.
pub fn quantity(s: &str) -> Option<u64> {
    let digits = s.strip_prefix("0x")?;
    if digits.is_empty() || digits.len() > 16 || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// Parses a JSON quantity string such as `"0x7a69"` (lenient: for upstream answers).
pub fn parse_quantity(raw: &[u8]) -> Option<u64> {
    let s: String = serde_json::from_slice(raw).ok()?;
    parse_hex(&s)
}

/// Lenient hex parsing, for what upstreams answer (never for what clients ask).
pub fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn parses_quantities_and_block_refs() {
        assert_eq!(parse_quantity(b"\"0x7a69\""), Some(31337));
        assert_eq!(parse_quantity(b"\"7a69\""), None);
        assert_eq!(BlockRef::parse("0x10"), Some(BlockRef::Number(16)));
        assert_eq!(BlockRef::parse("0xA"), Some(BlockRef::Number(10)));
        assert_eq!(BlockRef::parse("latest"), Some(BlockRef::Latest));
        for odd in [
            "bogus",
            "Latest",
            "0X1",
            "0x01",
            "0x",
            "1",
            "0x10000000000000000",
        ] {
            assert_eq!(BlockRef::parse(odd), None, "{odd}");
        }
    }

    /// The compact object read without a parse means what the parse says, for objects near
    /// and far from it.
    #[test]
    fn compact_hash_objects_agree_with_the_parse() {
        let h = format!("0x{}", "aB".repeat(32));
        let objects = [
            format!(r#"{{"blockHash":"{h}"}}"#),
            format!(r#"{{"blockHash":"{}"}}"#, h.to_ascii_lowercase()),
            format!(r#"{{"blockHash":"{}"}}"#, h.replace("0x", "0X")),
            format!(r#"{{"blockHash":"{}"}}"#, &h[..65]),
            format!(r#"{{"blockHash":"{h}0"}}"#),
            format!(r#"{{"blockHash":"{h}","blockHash":"{h}"}}"#),
            format!(r#"{{"blockHash":"{h}","requireCanonical":false}}"#),
            format!(r#"{{"blockHash":"\u0030x{}"}}"#, &h[2..]),
            format!(r#"{{"blockHash":"{h}" }}"#),
            format!(r#"{{"blockHash":"{h}","x":"y"}}"#),
            r#"{"blockHash":"0x12"}"#.to_string(),
            r#"{"blockHash":""}"#.to_string(),
        ];
        for text in objects {
            let raw = raw(&text);
            assert_eq!(
                block_param(&raw, Accepts::Any),
                parsed_object(&raw),
                "{text}"
            );
        }
    }

    /// Every spelling a block parameter can take, and what it means (`None`: the upstream
    /// decides).
    #[test]
    fn block_parameter_table() {
        let zero_hash = format!("0x{}", "0".repeat(64));
        let five_hash = format!("0x{}5", "0".repeat(63));
        let mixed = format!("0x{}", "aB".repeat(32));
        let hash = |h: &str, rc: bool, object: bool| {
            Some(BlockParam::Hash {
                hash: h.to_ascii_lowercase(),
                require_canonical: rc,
                object,
            })
        };
        let rows: Vec<(String, Accepts, Option<BlockParam>)> = vec![
            (
                r#""latest""#.into(),
                Accepts::Any,
                Some(BlockParam::Ref(BlockRef::Latest)),
            ),
            (
                r#""0x4""#.into(),
                Accepts::TagOrNumber,
                Some(BlockParam::Ref(BlockRef::Number(4))),
            ),
            // A 32-byte value is a hash, whatever its value.
            (
                format!(r#""{zero_hash}""#),
                Accepts::Any,
                hash(&zero_hash, false, false),
            ),
            (
                format!(r#""{five_hash}""#),
                Accepts::Any,
                hash(&five_hash, false, false),
            ),
            (format!(r#""{five_hash}""#), Accepts::TagOrNumber, None),
            (
                format!(r#""{mixed}""#),
                Accepts::Any,
                hash(&mixed, false, false),
            ),
            (
                format!(r#"{{"blockHash":"{mixed}"}}"#),
                Accepts::Any,
                hash(&mixed, false, true),
            ),
            (
                format!(r#"{{"blockHash":"{mixed}","requireCanonical":true}}"#),
                Accepts::Any,
                hash(&mixed, true, true),
            ),
            // Spaced as well as compact, and a compact object whose value is not a hash.
            (
                format!(r#"{{ "blockHash" : "{mixed}" }}"#),
                Accepts::Any,
                hash(&mixed, false, true),
            ),
            (
                format!(r#"{{"blockHash":"{mixed}"}}"#).replace("0x", "0X"),
                Accepts::Any,
                None,
            ),
            (
                r#"{"blockNumber":"0x3"}"#.into(),
                Accepts::Any,
                Some(BlockParam::Ref(BlockRef::Number(3))),
            ),
            // Objects where a by-number method wants a tag, unknown or repeated keys, both
            // hash and number, requireCanonical with a number: left to the upstream.
            (
                format!(r#"{{"blockHash":"{mixed}"}}"#),
                Accepts::TagOrNumber,
                None,
            ),
            (
                format!(r#"{{"blockHash":"{mixed}","extra":1}}"#),
                Accepts::Any,
                None,
            ),
            (
                r#"{"blockNumber":"0x1","blockNumber":"0x2"}"#.into(),
                Accepts::Any,
                None,
            ),
            (
                format!(r#"{{"blockHash":"{mixed}","blockNumber":"0x1"}}"#),
                Accepts::Any,
                None,
            ),
            (
                r#"{"blockNumber":"0x1","requireCanonical":true}"#.into(),
                Accepts::Any,
                None,
            ),
            (r#"{"blockHash":"0x12"}"#.into(), Accepts::Any, None),
            (r#""\u006catest""#.into(), Accepts::Any, None),
            ("null".into(), Accepts::Any, None),
            ("1".into(), Accepts::Any, None),
            (r#""0X1""#.into(), Accepts::Any, None),
            (r#""0x01""#.into(), Accepts::Any, None),
            (r#""Latest""#.into(), Accepts::Any, None),
            (format!(r#""0X{}""#, "0".repeat(64)), Accepts::Any, None),
        ];
        for (text, accepts, want) in rows {
            assert_eq!(
                block_param(&raw(&text), accepts),
                want,
                "{text} {accepts:?}"
            );
        }
    }
}
