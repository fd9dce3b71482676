//! `eth_getLogs` over a resolved block range: large ranges are split into chunks asked in
//! parallel and joined back in block order.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use crate::chain::Chain;
use crate::policy::chunks;
use crate::upstream::{Answer, UpstreamError};

/// Chunks asked at once, so one huge range cannot flood an upstream.
const PARALLEL: usize = 8;

pub async fn fetch(
    chain: &Chain,
    filter: &Value,
    from: u64,
    to: u64,
    chunk: u64,
    budget: Duration,
) -> Result<Answer, UpstreamError> {
    let parts = chunks(from, to, chunk);
    if parts.len() == 1 {
        let params = Value::Array(vec![filter.clone()]).to_string();
        return chain
            .upstreams
            .call("eth_getLogs", params.as_bytes(), budget)
            .await;
    }
    let mut answers = Vec::with_capacity(parts.len());
    for group in parts.chunks(PARALLEL) {
        let calls = group.iter().map(|&(lo, hi)| {
            let mut f = filter.clone();
            f["fromBlock"] = Value::String(format!("{lo:#x}"));
            f["toBlock"] = Value::String(format!("{hi:#x}"));
            let params = Value::Array(vec![f]).to_string();
            async move {
                chain
                    .upstreams
                    .call("eth_getLogs", params.as_bytes(), budget)
                    .await
            }
        });
        answers.extend(futures::future::join_all(calls).await);
    }
    let mut joined = Vec::with_capacity(2 + answers.len() * 64);
    joined.push(b'[');
    let mut first = true;
    for a in answers {
        match a? {
            Answer::Result(r) => {
                let inner = strip_brackets(&r).ok_or_else(|| {
                    UpstreamError::BadResponse("eth_getLogs result is not an array".into())
                })?;
                if !inner.is_empty() {
                    if !first {
                        joined.push(b',');
                    }
                    joined.extend_from_slice(inner);
                    first = false;
                }
            }
            err @ Answer::Error(_) => return Ok(err),
        }
    }
    joined.push(b']');
    Ok(Answer::Result(Bytes::from(joined)))
}

/// The bytes between a JSON array's brackets, trimmed.
fn strip_brackets(r: &[u8]) -> Option<&[u8]> {
    let t = r.trim_ascii();
    let inner = t.strip_prefix(b"[")?.strip_suffix(b"]")?;
    Some(inner.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_are_unwrapped() {
        assert_eq!(strip_brackets(b" [ ] "), Some(&b""[..]));
        assert_eq!(
            strip_brackets(b"[{\"a\":1},{\"b\":2}]"),
            Some(&b"{\"a\":1},{\"b\":2}"[..])
        );
        assert_eq!(strip_brackets(b"null"), None);
    }
}
