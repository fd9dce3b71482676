//! Block parameters as clients write them (`"latest"`, `"0x10"`, ...) and the hex quantity
//! parsing they share with the chain tracker and the proof checks.

/// A block parameter as a client wrote it.
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
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "latest" => Self::Latest,
            "safe" => Self::Safe,
            "finalized" => Self::Finalized,
            "earliest" => Self::Earliest,
            "pending" => Self::Pending,
            n => Self::Number(parse_hex(n)?),
        })
    }
}

/// Parses a JSON quantity string such as `"0x7a69"`.
pub fn parse_quantity(raw: &[u8]) -> Option<u64> {
    let s: String = serde_json::from_slice(raw).ok()?;
    parse_hex(&s)
}

pub fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quantities_and_block_refs() {
        assert_eq!(parse_quantity(b"\"0x7a69\""), Some(31337));
        assert_eq!(parse_quantity(b"\"7a69\""), None);
        assert_eq!(BlockRef::parse("0x10"), Some(BlockRef::Number(16)));
        assert_eq!(BlockRef::parse("latest"), Some(BlockRef::Latest));
        assert_eq!(BlockRef::parse("bogus"), None);
    }
}
