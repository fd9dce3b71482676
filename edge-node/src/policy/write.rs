//! JSON text for the params the policy rebuilds on every tip read (the block pinned by hash,
//! and by number for the fallback), written by hand: through `format!` it took a third of
//! planning one.

use alloy_primitives::{hex, B256};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `0x` and `n` in lower-case hex without leading zeros, as JSON-RPC writes quantities.
fn push_qty(out: &mut String, n: u64) {
    out.push_str("0x");
    let digits = ((64 - n.leading_zeros() as usize).div_ceil(4)).max(1);
    for i in (0..digits).rev() {
        out.push(char::from(HEX[(n >> (4 * i)) as usize & 0xf]));
    }
}

pub(super) fn qty(n: u64) -> String {
    let mut out = String::with_capacity(18);
    push_qty(&mut out, n);
    out
}

/// A quantity as a JSON string.
pub(super) fn quoted_qty(n: u64) -> String {
    let mut out = String::with_capacity(20);
    out.push('"');
    push_qty(&mut out, n);
    out.push('"');
    out
}

/// `0x` and the 64 lower-case hex digits of `h`.
fn push_hash(out: &mut String, h: &B256) {
    let mut digits = [0u8; 64];
    hex::encode_to_slice(h, &mut digits).expect("64 digits for 32 bytes");
    out.push_str("0x");
    out.push_str(std::str::from_utf8(&digits).expect("hex digits are ASCII"));
}

/// A block hash as a JSON string.
pub(super) fn quoted_hash(h: &B256) -> String {
    let mut out = String::with_capacity(68);
    out.push('"');
    push_hash(&mut out, h);
    out.push('"');
    out
}

/// `{"blockHash":"0x…"}` (EIP-1898).
pub(super) fn hash_object(h: &B256) -> String {
    let mut out = String::with_capacity(81);
    out.push_str(r#"{"blockHash":""#);
    push_hash(&mut out, h);
    out.push_str(r#""}"#);
    out
}
