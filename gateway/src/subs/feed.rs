//! One feed's task: follow a node's subscription stream, move to the next node when it fails,
//! and fan each event out to the feed's subscribers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use proto::frame::{self, FrameType};
use proto::msg::{decode_json, encode_json};
use proto::sub::{BlockId, SubEvent, SubKind, Subscribe, MAX_RESUME};
use serde_json::value::RawValue;
use tokio::sync::mpsc::error::TrySendError;

use super::shards::Shard;
use super::{Feed, FeedKey, Hub, Out, State};
use crate::geo::Location;
use crate::nodes::registry::Node;
use crate::ops::metrics::Metrics;

/// How often the serving node's health is looked at (the status interval: health changes no faster).
const HEALTH_LOOK: Duration = Duration::from_millis(250);
/// Wait before ranking again when no node can serve.
const NO_NODE_WAIT: Duration = Duration::from_millis(250);
/// A node must say `Ready` within this.
const READY_WITHIN: Duration = Duration::from_secs(5);

/// A block this feed delivered, and (for `logs`) the logs it sent for it.
struct Delivered {
    number: u64,
    hash: String,
    logs: Vec<Arc<str>>,
}

/// Why the feed left a node.
enum Left {
    /// The feed has no subscribers, or the gateway stops.
    Stopped,
    /// Move on, for this reason (a `gateway_ws_feed_moves_total` label).
    Move(&'static str),
    /// The node cannot serve this kind at all (its reason).
    Refused(String),
}

pub(super) async fn run(hub: Arc<Hub>, key: FeedKey, feed: Arc<Feed>, anchor: Option<Location>) {
    let mut delivered: VecDeque<Delivered> = VecDeque::new();
    let mut last: Option<String> = None;
    // Nodes that refused this kind, with why.
    let mut refusals: Vec<(String, String)> = Vec::new();
    while !feed.stop.is_cancelled() {
        let ranked = hub
            .router
            .rank(key.chain_id, anchor.as_ref())
            .unwrap_or_default();
        // The node just left goes last: another one is asked first.
        let mut order: Vec<Arc<Node>> = ranked.clone();
        order.sort_by_key(|n| last.as_deref() == Some(n.id.as_str()));
        let next = order
            .into_iter()
            .find(|n| !refusals.iter().any(|(id, _)| id == &n.id));
        let Some(node) = next else {
            let never_ready = *feed.state.borrow() == State::Starting;
            if let Some((_, why)) = refusals
                .last()
                .filter(|_| !ranked.is_empty() && never_ready)
            {
                // Every node refused a new feed: the subscribe calls get the error.
                let why = format!("no edge node can serve {}: {why}", key.kind.as_str());
                feed.state.send_replace(State::Refused(why));
                return;
            }
            // No node now (or every node refused a feed that has subscribers: it may be a
            // passing state, such as an upstream socket being redialled): ask again soon.
            refusals.clear();
            tokio::select! {
                _ = feed.stop.cancelled() => break,
                _ = tokio::time::sleep(NO_NODE_WAIT) => continue,
            }
        };
        let started = tokio::time::Instant::now();
        let left = follow(&hub, &key, &feed, &node, &mut delivered).await;
        *feed.node.lock() = None;
        match left {
            Left::Stopped => break,
            Left::Move(reason) => {
                hub.metrics.ws.feed_moves.with_label_values(&[reason]).inc();
                tracing::info!(node = %node.id, chain_id = key.chain_id, kind = key.kind.as_str(), reason, "subscription feed moves to another node");
                last = Some(node.id.clone());
                refusals.clear();
                // A node failing at once again and again is not asked in a tight loop.
                if started.elapsed() < NO_NODE_WAIT {
                    tokio::select! {
                        _ = feed.stop.cancelled() => break,
                        _ = tokio::time::sleep(NO_NODE_WAIT) => {}
                    }
                }
            }
            Left::Refused(why) => {
                hub.metrics
                    .ws
                    .feed_moves
                    .with_label_values(&["refused"])
                    .inc();
                tracing::info!(node = %node.id, kind = key.kind.as_str(), reason = %why, "node refused a subscription");
                refusals.push((node.id.clone(), why));
            }
        }
    }
}

/// Follows one node until it fails or the feed stops.
async fn follow(
    hub: &Hub,
    key: &FeedKey,
    feed: &Feed,
    node: &Arc<Node>,
    delivered: &mut VecDeque<Delivered>,
) -> Left {
    let Ok((mut send, recv)) = node.conn.open_bi().await else {
        return Left::Move("node_gone");
    };
    let skip = delivered.len().saturating_sub(MAX_RESUME);
    let sub = Subscribe {
        chain_id: key.chain_id,
        kind: key.kind,
        filter: key.filter.clone(),
        resume: delivered
            .iter()
            .skip(skip)
            .map(|d| BlockId {
                number: d.number,
                hash: d.hash.clone(),
            })
            .collect(),
    };
    if send
        .write_all(&encode_json(FrameType::Subscribe, &sub))
        .await
        .is_err()
    {
        return Left::Move("node_gone");
    }
    let _ = send.finish();
    // Frames are read by a task of their own: a frame read is not cancel-safe.
    let (tx, mut events) = tokio::sync::mpsc::channel::<SubEvent>(64);
    let max = hub.max_frame;
    let reader = tokio::spawn(read_events(recv, max, tx));
    let _reader = tokio_util::task::AbortOnDropHandle::new(reader);
    let ready = tokio::time::timeout(READY_WITHIN, events.recv()).await;
    match ready {
        Ok(Some(SubEvent::Ready)) => {
            feed.state.send_replace(State::Ready);
            *feed.node.lock() = Some(node.id.clone());
        }
        Ok(Some(SubEvent::Refused { reason })) => return Left::Refused(reason),
        // Reset or ended before `Ready`: a busy node, a dropped connection, or an older node
        // that does not know subscription streams. Not a refusal: another try may succeed.
        _ => return Left::Move("stream_ended"),
    }
    let mut look = tokio::time::interval(HEALTH_LOOK);
    loop {
        tokio::select! {
            _ = feed.stop.cancelled() => return Left::Stopped,
            _ = node.gone.cancelled() => return Left::Move("node_gone"),
            _ = look.tick() => if !node.serves(key.chain_id, hub.status_deadline) {
                return Left::Move("node_unhealthy");
            },
            ev = events.recv() => match ev {
                Some(ev) => deliver(hub, key, feed, delivered, ev).await,
                None => return Left::Move("stream_ended"),
            },
        }
    }
}

async fn read_events(
    mut recv: quinn::RecvStream,
    max: usize,
    tx: tokio::sync::mpsc::Sender<SubEvent>,
) {
    loop {
        let ev = match frame::read_frame(&mut recv, max).await {
            Ok(Some(f)) if f.ty == FrameType::SubEvent => {
                match decode_json::<SubEvent>("SubEvent", &f.payload) {
                    Ok(ev) => ev,
                    Err(_) => return,
                }
            }
            _ => return,
        };
        if tx.send(ev).await.is_err() {
            return;
        }
    }
}

/// Takes one event from the node: duplicates dropped, reorgs unwound, then fanned out.
async fn deliver(
    hub: &Hub,
    key: &FeedKey,
    feed: &Feed,
    delivered: &mut VecDeque<Delivered>,
    ev: SubEvent,
) {
    match ev {
        SubEvent::Block {
            number,
            hash,
            published_ms,
            payload,
            ..
        } => {
            let results = take_block(delivered, key.kind, number, hash, &payload);
            fan_out(hub, key, feed, &results).await;
            if published_ms > 0 && !results.is_empty() {
                let delay = daemon::unix_ms().saturating_sub(published_ms);
                hub.metrics.ws.event_delay.observe(delay as f64 / 1000.0);
            }
        }
        SubEvent::Pending { hashes } => {
            let results: Vec<Arc<str>> = hashes
                .iter()
                .map(|h| Arc::from(serde_json::Value::from(h.as_str()).to_string()))
                .collect();
            fan_out(hub, key, feed, &results).await;
        }
        SubEvent::Ready | SubEvent::Refused { .. } => {}
    }
}

/// Takes a block into what was delivered; the results to send for it. A block already
/// delivered (same height and hash: a node resuming where the last one was) sends nothing;
/// one at a height already delivered replaces everything from there up (their logs are sent
/// again with `removed: true`, oldest first), then its own results.
fn take_block(
    delivered: &mut VecDeque<Delivered>,
    kind: SubKind,
    number: u64,
    hash: String,
    payload: &RawValue,
) -> Vec<Arc<str>> {
    if delivered
        .iter()
        .any(|d| d.number == number && d.hash == hash)
    {
        return Vec::new();
    }
    let mut replaced = Vec::new();
    while delivered.back().is_some_and(|d| d.number >= number) {
        replaced.push(delivered.pop_back().expect("checked"));
    }
    let mut results: Vec<Arc<str>> = replaced
        .iter()
        .rev()
        .flat_map(|gone| gone.logs.iter().map(|l| removed(l)))
        .collect();
    let logs = match kind {
        SubKind::Logs => split_logs(payload),
        _ => Vec::new(),
    };
    match kind {
        SubKind::Logs => results.extend(logs.iter().cloned()),
        _ => results.push(Arc::from(payload.get())),
    }
    if delivered.len() == 2 * MAX_RESUME {
        delivered.pop_front();
    }
    delivered.push_back(Delivered { number, hash, logs });
    results
}

/// Queues each result for every subscriber; a full queue marks its client slow. Shards go
/// out from tasks of their own, each with its own copy of the results (so the writers of one
/// shard do not share reference counts with another's), and all are done before the next
/// block: every subscriber gets the blocks in order.
async fn fan_out(hub: &Hub, key: &FeedKey, feed: &Feed, results: &[Arc<str>]) {
    if results.is_empty() {
        return;
    }
    let shards = feed.subs.lock().shards();
    let sent = match &shards[..] {
        [] => 0,
        [one] => send_shard(one, &results.iter().cloned().collect(), &hub.metrics),
        many => {
            let tasks: Vec<_> = many
                .iter()
                .map(|shard| {
                    let (shard, metrics) = (shard.clone(), hub.metrics.clone());
                    let local: Arc<[Arc<str>]> = results.iter().map(|r| Arc::from(&**r)).collect();
                    tokio::spawn(async move { send_shard(&shard, &local, &metrics) })
                })
                .collect();
            let mut sent = 0;
            for t in tasks {
                sent += t.await.unwrap_or(0);
            }
            sent
        }
    };
    hub.metrics
        .ws
        .events_sent
        .with_label_values(&[key.kind.as_str()])
        .inc_by(sent);
}

/// One shard's sends (one queue place per subscriber); how many notifications were queued.
fn send_shard(shard: &Shard, results: &Arc<[Arc<str>]>, metrics: &Metrics) -> u64 {
    let subs = shard.lock();
    let mut sent = 0u64;
    for s in subs.iter() {
        let event = Out::Event {
            sub: s.id.clone(),
            results: results.clone(),
        };
        match s.tx.try_send(event) {
            Ok(()) => sent += results.len() as u64,
            Err(TrySendError::Full(_)) => {
                if !s.slow.is_cancelled() {
                    s.slow.cancel();
                    metrics.ws.slow_consumers.inc();
                }
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }
    sent
}

/// The logs of a `logs` event, one JSON text each.
fn split_logs(payload: &RawValue) -> Vec<Arc<str>> {
    serde_json::from_str::<Vec<&RawValue>>(payload.get())
        .map(|v| v.into_iter().map(|l| Arc::from(l.get())).collect())
        .unwrap_or_default()
}

/// A delivered log again, with `removed: true`.
fn removed(log: &str) -> Arc<str> {
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(log) {
        Ok(mut m) => {
            m.insert("removed".into(), serde_json::Value::Bool(true));
            serde_json::Value::Object(m).to_string().into()
        }
        Err(_) => Arc::from(log),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs(v: &[&str]) -> Box<RawValue> {
        let items: Vec<String> = v
            .iter()
            .map(|d| format!(r#"{{"data":"{d}","removed":false}}"#))
            .collect();
        RawValue::from_string(format!("[{}]", items.join(","))).unwrap()
    }

    fn data(results: &[Arc<str>]) -> Vec<String> {
        results
            .iter()
            .map(|r| {
                let v: serde_json::Value = serde_json::from_str(r).unwrap();
                format!(
                    "{}{}",
                    v["data"].as_str().unwrap(),
                    if v["removed"] == true { "-" } else { "" }
                )
            })
            .collect()
    }

    #[test]
    fn blocks_once_in_order_and_reorgs_taken_back_oldest_first() {
        let mut d = VecDeque::new();
        let mut take = |n: u64, h: &str, l: &[&str]| {
            data(&take_block(&mut d, SubKind::Logs, n, h.into(), &logs(l)))
        };
        assert_eq!(take(1, "a1", &["x"]), ["x"]);
        assert_eq!(take(2, "a2", &["y", "z"]), ["y", "z"]);
        assert_eq!(take(3, "a3", &[]), Vec::<String>::new());
        // A node resuming sends what was delivered: nothing again.
        assert_eq!(take(2, "a2", &["y", "z"]), Vec::<String>::new());
        assert_eq!(take(3, "a3", &[]), Vec::<String>::new());
        // A reorg at height 2: 2 and 3 taken back (2's logs removed, in order), then the new 2.
        assert_eq!(take(2, "b2", &["w"]), ["y-", "z-", "w"]);
        assert_eq!(take(3, "b3", &["v"]), ["v"]);
        // newHeads: the header once per block.
        let mut h = VecDeque::new();
        let head = RawValue::from_string(r#"{"number":"0x1"}"#.into()).unwrap();
        assert_eq!(
            take_block(&mut h, SubKind::NewHeads, 1, "a1".into(), &head).len(),
            1
        );
        assert!(take_block(&mut h, SubKind::NewHeads, 1, "a1".into(), &head).is_empty());
    }

    #[test]
    fn a_removed_log_says_so() {
        let r = removed(r#"{"address":"0xaa","removed":false,"logIndex":"0x0"}"#);
        let v: serde_json::Value = serde_json::from_str(&r).unwrap();
        assert_eq!(v["removed"], true);
        assert_eq!(v["logIndex"], "0x0");
        let raw = RawValue::from_string(r#"[{"a":1},{"b":2}]"#.into()).unwrap();
        assert_eq!(split_logs(&raw).len(), 2);
    }
}
