//! What a cache entry costs, so that a `max_bytes` bound is a memory bound.

/// What an entry costs beyond its key and value bytes (moka's bookkeeping, the `Bytes`
/// handles, allocator rounding): measured as resident-memory growth per entry in the load
/// tests' soak run (~620 bytes per entry with ~150 bytes of key and value).
pub const ENTRY_OVERHEAD_BYTES: usize = 480;

/// The weight of an entry with `key` and `value` bytes (plus `extra` bytes of its own), for
/// moka's weigher.
pub fn weight(key: usize, value: usize, extra: usize) -> u32 {
    (key + value + extra + ENTRY_OVERHEAD_BYTES)
        .try_into()
        .unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_add_the_overhead_and_saturate() {
        assert_eq!(weight(10, 20, 8), 10 + 20 + 8 + ENTRY_OVERHEAD_BYTES as u32);
        assert_eq!(weight(usize::MAX / 2, usize::MAX / 4, 0), u32::MAX);
    }
}
