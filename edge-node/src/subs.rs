//! Subscription streams ([`proto::sub`]): the node's side of `eth_subscribe`.
//!
//! Events come from the node's own verified chain state, never from an upstream socket: on
//! every publish the stream sends the canonical blocks after what it sent last
//! ([`crate::chain::Chain::blocks_after`]), so a reorg shows as a block whose parent is not
//! the last one sent, and a subscription moved here from another node continues after the
//! blocks the gateway says it delivered. A `logs` stream sends each block's matching logs,
//! fetched once per block for every filter ([`BlockLogs`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::B256;
use proto::frame::FrameType;
use proto::msg::encode_json;
use proto::sub::{LogFilter, SubEvent, SubKind, Subscribe, MAX_RESUME};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::chain::{unix_ms, Chain};
use crate::header::Header;
use crate::upstream::Answer;
use crate::Shared;

/// Blocks sent per wake-up at most (a long catch-up goes on at the next publish).
const MAX_BATCH: usize = 256;
/// Recent blocks whose logs are kept for the other filters.
const LOGS_KEPT: u64 = 64;
/// Attempts at a block's logs before the stream gives up (the gateway moves it on).
const LOG_ATTEMPTS: u32 = 3;

/// Why a subscription stream ended other than by the gateway closing it.
#[derive(Debug, thiserror::Error)]
pub enum SubError {
    #[error("write failed: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("logs of block {0:#x}: {1}")]
    Logs(B256, String),
}

/// One log of a block: what filters look at, and the log as the upstream sent it.
#[derive(Debug)]
pub struct Log {
    address: String,
    topics: Vec<String>,
    raw: Box<RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogFields {
    address: String,
    #[serde(default)]
    topics: Vec<String>,
    block_hash: Option<B256>,
}

/// Each recent block's logs (`eth_getLogs` by block hash), fetched once for every filter and
/// every gateway; concurrent askers wait on the one fetch.
pub struct BlockLogs {
    cache: moka::future::Cache<B256, Arc<Vec<Log>>>,
}

impl Default for BlockLogs {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockLogs {
    pub fn new() -> Self {
        Self {
            cache: moka::future::Cache::new(LOGS_KEPT),
        }
    }

    async fn get(&self, chain: &Chain, block: &Header) -> Result<Arc<Vec<Log>>, Arc<String>> {
        self.cache
            .try_get_with(block.hash, fetch_logs(chain, block.hash, block.no_logs))
            .await
    }
}

/// `no_logs`: the verified header's bloom says the block has none. An upstream answering none
/// for a block whose bloom says otherwise (one that has not seen the block yet) is asked again,
/// so an empty answer is never kept for every filter.
async fn fetch_logs(chain: &Chain, block: B256, no_logs: bool) -> Result<Arc<Vec<Log>>, String> {
    let params = format!("[{{\"blockHash\":\"{block:#x}\"}}]");
    let mut last = String::new();
    for attempt in 0..LOG_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        let answer = chain
            .upstreams
            .call("eth_getLogs", params.as_bytes(), Duration::from_secs(5))
            .await;
        match answer {
            Ok(Answer::Result(body)) => match parse_logs(&body, block) {
                Ok(logs) if logs.is_empty() && !no_logs => {
                    last = "no logs, though the block's bloom says it has some".into();
                }
                other => return other.map(Arc::new),
            },
            Ok(Answer::Error(e)) => last = String::from_utf8_lossy(&e).into_owned(),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// The logs of `block`, each checked to be of that block (an upstream answering about
/// another block would send wrong events).
fn parse_logs(body: &[u8], block: B256) -> Result<Vec<Log>, String> {
    let raws: Vec<Box<RawValue>> =
        serde_json::from_slice(body).map_err(|e| format!("not a list of logs: {e}"))?;
    raws.into_iter()
        .map(|raw| {
            let f: LogFields =
                serde_json::from_str(raw.get()).map_err(|e| format!("not a log: {e}"))?;
            if f.block_hash.is_some_and(|h| h != block) {
                return Err(format!("a log of another block ({:?})", f.block_hash));
            }
            Ok(Log {
                address: f.address.to_ascii_lowercase(),
                topics: f.topics.iter().map(|t| t.to_ascii_lowercase()).collect(),
                raw,
            })
        })
        .collect()
}

/// The JSON array of the logs that match `filter`.
fn matching(logs: &[Log], filter: &LogFilter) -> Box<RawValue> {
    let mut out = String::from("[");
    for log in logs
        .iter()
        .filter(|l| filter.matches(&l.address, &l.topics))
    {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(log.raw.get());
    }
    out.push(']');
    RawValue::from_string(out).expect("a list of JSON values is JSON")
}

/// Serves one subscription stream until the gateway closes it, the node stops, or a block's
/// logs cannot be had (the gateway then resumes elsewhere).
pub async fn serve(shared: &Shared, mut send: quinn::SendStream, sub: Subscribe) {
    let kind = sub.kind;
    let refuse = |reason: String| SubEvent::Refused { reason };
    let chain = match shared.service.chains.get(&sub.chain_id) {
        Some(c) => c.clone(),
        None => {
            let why = format!("chain {} is not served by this node", sub.chain_id);
            let _ = send.write_all(&event(&refuse(why))).await;
            let _ = send.finish();
            return;
        }
    };
    let gauge = shared
        .metrics
        .sockets
        .subscriptions
        .with_label_values(&[kind.as_str()]);
    gauge.inc();
    let res = match kind {
        SubKind::NewPendingTransactions => match chain.pending_transactions() {
            Ok(rx) => pending(shared, &mut send, rx).await,
            Err(why) => send
                .write_all(&event(&refuse(why.to_string())))
                .await
                .map_err(SubError::from),
        },
        SubKind::NewHeads | SubKind::Logs => follow(shared, &chain, &mut send, sub).await,
    };
    gauge.dec();
    match res {
        Ok(()) => {
            let _ = send.finish();
        }
        Err(SubError::Write(_)) => {} // The gateway closed it.
        Err(e) => {
            tracing::warn!(chain_id = chain.chain_id, kind = kind.as_str(), error = %e, "subscription stream ended");
            let _ = send.reset(2u32.into());
        }
    }
}

/// Hashes of transactions entering the upstream's pool, as they come (a few per event when
/// they come fast). Ends when the upstream subscription does: the gateway asks again.
async fn pending(
    shared: &Shared,
    send: &mut quinn::SendStream,
    mut rx: tokio::sync::broadcast::Receiver<String>,
) -> Result<(), SubError> {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    send.write_all(&event(&SubEvent::Ready)).await?;
    let events = shared
        .metrics
        .sockets
        .subscription_events
        .with_label_values(&[SubKind::NewPendingTransactions.as_str()]);
    loop {
        let first = tokio::select! {
            r = rx.recv() => r,
            _ = send.stopped() => return Ok(()),
        };
        let mut hashes = match first {
            Ok(h) => vec![h],
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return Ok(()),
        };
        while hashes.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(h) => hashes.push(h),
                Err(TryRecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
        send.write_all(&event(&SubEvent::Pending { hashes }))
            .await?;
        events.inc();
    }
}

/// Sends each new canonical block (its header, or its matching logs) after what was sent.
async fn follow(
    shared: &Shared,
    chain: &Chain,
    send: &mut quinn::SendStream,
    sub: Subscribe,
) -> Result<(), SubError> {
    let filter = sub.filter.unwrap_or_default();
    let mut sent: VecDeque<(u64, B256)> = sub
        .resume
        .iter()
        .filter_map(|b| Some((b.number, b.hash.parse().ok()?)))
        .collect();
    let mut state = chain.watch_state();
    state.borrow_and_update();
    if sent.is_empty() {
        // A new subscription starts with the next block.
        if let Some(h) = chain.head() {
            sent.push_back((h.number, h.hash));
        }
    }
    send.write_all(&event(&SubEvent::Ready)).await?;
    let events = shared
        .metrics
        .sockets
        .subscription_events
        .with_label_values(&[sub.kind.as_str()]);
    loop {
        let next = chain.blocks_after(sent.make_contiguous(), MAX_BATCH);
        let head = chain.head().map(|h| h.hash);
        for h in next {
            let payload = match sub.kind {
                SubKind::Logs => {
                    let logs = chain
                        .block_logs
                        .get(chain, &h)
                        .await
                        .map_err(|e| SubError::Logs(h.hash, e.to_string()))?;
                    matching(&logs, &filter)
                }
                _ => RawValue::from_string(String::from_utf8_lossy(&h.rpc).into_owned())
                    .expect("the header form is JSON"),
            };
            send.write_all(&event(&block_event(&h, head, chain, payload)))
                .await?;
            events.inc();
            note_sent(&mut sent, h.number, h.hash);
        }
        if sent.is_empty() {
            if let Some(h) = chain.head() {
                sent.push_back((h.number, h.hash));
            }
        }
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return Ok(()) },
            _ = send.stopped() => return Ok(()),
        }
    }
}

/// Records a block as sent. A block at a height already sent replaces everything from there
/// up (a reorg), so what was sent stays one chain: after a reorg back to a branch sent
/// earlier, the blocks of the branch in between are not taken for canonical ones.
fn note_sent(sent: &mut VecDeque<(u64, B256)>, number: u64, hash: B256) {
    while sent.back().is_some_and(|(n, _)| *n >= number) {
        sent.pop_back();
    }
    if sent.len() == MAX_RESUME {
        sent.pop_front();
    }
    sent.push_back((number, hash));
}

fn block_event(h: &Header, head: Option<B256>, chain: &Chain, payload: Box<RawValue>) -> SubEvent {
    // The head was published just now; an older block (a catch-up) is stamped when sent.
    let published_ms = match head == Some(h.hash) {
        true => chain.published_ms(),
        false => unix_ms(),
    };
    SubEvent::Block {
        number: h.number,
        hash: format!("{:#x}", h.hash),
        parent_hash: format!("{:#x}", h.parent_hash),
        published_ms,
        payload,
    }
}

fn event(e: &SubEvent) -> bytes::Bytes {
    encode_json(FrameType::SubEvent, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reorg to branch b and back to a: the follower gets a's blocks again, then the next.
    #[test]
    fn a_reorg_there_and_back_resends_the_branch() {
        use crate::chain::state::fixtures::{chain, hash, segment};
        use crate::chain::state::Tag;
        let mut c = chain(10, 2);
        let mut sent: VecDeque<(u64, B256)> = (8..=10).map(|n| (n, hash(n, 0))).collect();
        let mut follow = |c: &crate::chain::state::ChainState| {
            let next = c.blocks_after(sent.make_contiguous(), MAX_BATCH);
            let got: Vec<(u64, B256)> = next.iter().map(|x| (x.number, x.hash)).collect();
            for (n, h) in &got {
                note_sent(&mut sent, *n, *h);
            }
            got
        };
        c.apply(segment(9, 10, 1, 0), Tag::At(2), Tag::Failed)
            .unwrap();
        assert_eq!(follow(&c), vec![(9, hash(9, 1)), (10, hash(10, 1))]);
        c.apply(segment(9, 11, 0, 0), Tag::At(2), Tag::Failed)
            .unwrap();
        assert_eq!(
            follow(&c),
            vec![(9, hash(9, 0)), (10, hash(10, 0)), (11, hash(11, 0))]
        );
    }

    #[test]
    fn logs_are_checked_to_be_of_the_block_and_filtered() {
        let block = B256::repeat_byte(1);
        let other = B256::repeat_byte(2);
        let log = |addr: &str, t0: &str, bh: B256| {
            format!(
                r#"{{"address":"{addr}","topics":["{t0}"],"blockHash":"{bh:#x}","removed":false}}"#
            )
        };
        let body = format!(
            "[{},{}]",
            log("0xAA", "0x01", block),
            log("0xbb", "0x02", block)
        );
        let logs = parse_logs(body.as_bytes(), block).unwrap();
        let f = LogFilter {
            address: vec!["0xaa".into()],
            topics: vec![],
        };
        let m = matching(&logs, &f);
        let v: Vec<serde_json::Value> = serde_json::from_str(m.get()).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[0]["address"], "0xAA",
            "passed through as the upstream sent it"
        );
        assert_eq!(
            matching(&logs, &LogFilter::default())
                .get()
                .matches("address")
                .count(),
            2
        );
        let wrong = format!("[{}]", log("0xaa", "0x01", other));
        assert!(parse_logs(wrong.as_bytes(), block).is_err());
        assert!(parse_logs(b"{}", block).is_err());
    }
}
