//! The response cache: how keys are built and the byte-bounded moka store. What may be cached
//! is decided by [`crate::policy`].
//!
//! Invariant: a key names its block (a final number or a block hash), so an entry is the
//! answer for exactly that block; entries naming replaced blocks are evicted on reorg.

use bytes::Bytes;
use serde_json::Value;

/// Is an upstream answer fit to keep? `null` is not: the data may simply not have reached
/// this upstream yet. (Empty lists and `"0x"` about a resolved block are real answers.)
pub fn storable(result: &[u8]) -> bool {
    !matches!(result, b"null" | b"")
}

/// Cache key: chain, method and canonical params (object keys sorted, hex lower-cased), never
/// the JSON-RPC id, so equal questions share one entry whatever the caller's spelling.
pub fn key(chain_id: u64, method: &str, params: &Value) -> Bytes {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(chain_id.to_string().as_bytes());
    out.push(b'|');
    out.extend_from_slice(method.as_bytes());
    out.push(b'|');
    write_canonical(params, &mut out);
    Bytes::from(out)
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::String(s) if s.starts_with("0x") || s.starts_with("0X") => {
            out.push(b'"');
            out.extend(s.bytes().map(|b| b.to_ascii_lowercase()));
            out.push(b'"');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(x, out);
            }
            out.push(b']');
        }
        Value::Object(o) => {
            // serde_json's map is a BTreeMap here (no `preserve_order`): keys come sorted.
            out.push(b'{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(k.clone()).to_string().as_bytes());
                out.push(b':');
                write_canonical(x, out);
            }
            out.push(b'}');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

/// Byte-bounded store. Values are raw JSON `result` bytes.
pub type Store = moka::future::Cache<Bytes, Bytes>;

pub fn store(max_bytes: u64) -> Store {
    builder(max_bytes).build()
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
        .build()
}

/// The store's builder: an entry weighs its key, its value and the measured per-entry overhead
/// ([`daemon::weigh`]), so `max_bytes` bounds real memory.
fn builder(max_bytes: u64) -> moka::future::CacheBuilder<Bytes, Bytes, Store> {
    moka::future::Cache::builder()
        .max_capacity(max_bytes)
        .weigher(|k: &Bytes, v: &Bytes| daemon::weigh::weight(k.len(), v.len(), 0))
        // Reorg eviction removes every key naming a replaced block hash.
        .support_invalidation_closures()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const H: &str = "0x8a1b5e6b0b8e7d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a";

    #[test]
    fn keys_ignore_spelling_but_not_meaning() {
        let a = key(
            1,
            "eth_call",
            &json!([{"to": "0xABC", "data": "0x01"}, {"blockHash": H}]),
        );
        let b = key(
            1,
            "eth_call",
            &json!([{"data": "0x01", "to": "0xabc"}, {"blockHash": H}]),
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            key(
                2,
                "eth_call",
                &json!([{"to": "0xabc", "data": "0x01"}, {"blockHash": H}])
            )
        );
        assert_ne!(
            a,
            key(
                1,
                "eth_call",
                &json!([{"to": "0xabc", "data": "0x02"}, {"blockHash": H}])
            )
        );
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
