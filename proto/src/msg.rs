//! Messages carried in frames.
//!
//! Control messages (join handshake and status) are rare and evolve, so they are JSON with
//! `deny_unknown_fields` off on purpose: a newer node may add fields. RPC requests and responses
//! sit on the hot path and carry JSON-RPC bodies that are already bytes, so they use a small
//! binary layout that never re-encodes those bodies.
//!
//! Connection life: the node opens one bidirectional *control* stream, sends `Hello`, and reads
//! `Welcome` or `Reject`. It then sends a `Status` frame on that stream at least every second,
//! and a `Head` frame for a chain as soon as its chain state changes (and once after joining).
//!
//! Requests share one long-lived bidirectional *request* stream per connection, which the
//! gateway opens after the join: it writes `TaggedRequest` frames (a tag it chooses, then an
//! `RpcRequest`), the node answers each with a `TaggedResponse` (the same tag, then an
//! `RpcResponse`) in whatever order the answers are ready, or with `Busy` when it is at its
//! in-flight limit. An answer larger than [`INLINE_MAX`] goes on a unidirectional stream of its
//! own (one `TaggedResponse`, then finish), so it cannot hold up the small answers behind it.
//! Sharing a stream lets many requests ride one packet and one wake-up each way; a stream per
//! request (versions 1 to 3) cost a stream's set-up, state and credit each time.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::frame::{self, FrameError, FrameType};

// === Control messages ===

/// First frame on the control stream, node -> gateway.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hello {
    pub protocol: u16,
    /// Shared secret proving the operator may join this gateway.
    pub token: String,
    /// Must equal the id derived from the public key the node presented in the TLS handshake.
    pub node_id: String,
    pub region: String,
    pub latitude: f64,
    pub longitude: f64,
    pub chains: Vec<u64>,
    #[serde(default)]
    pub version: String,
}

/// Gateway -> node: the join was accepted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Welcome {
    pub gateway_id: String,
    /// How often the gateway wants `Status` frames.
    pub status_interval_ms: u64,
    /// The gateway's name (`server.name`), which the node reports back in [`Status::gateways`].
    #[serde(default)]
    pub gateway_name: String,
}

/// Gateway -> node: the join was refused; the connection is closed after this frame.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reject {
    pub reason: String,
}

/// Node -> gateway, periodically on the control stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub chains: Vec<ChainStatus>,
    /// Requests the node is handling right now.
    pub in_flight: u32,
    /// The gateways the node is joined to right now, by name (it may serve several).
    #[serde(default)]
    pub gateways: Vec<String>,
}

/// Node -> gateway on the control stream, the moment a chain's state changes (new head, reorg,
/// rollback, finality): the gateway may keep serving an answer the node tied to a state version
/// (see [`RpcResponse::state_version`]) only while that version is the last one announced here.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Head {
    pub chain_id: u64,
    /// Starts at 1 and only grows for the life of the node process (a restarted node starts
    /// again: the gateway keeps versions per session).
    pub state_version: u64,
    pub head_number: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChainStatus {
    /// Chain id as reported by the upstream (`eth_chainId`), not as configured.
    pub chain_id: u64,
    pub head_number: u64,
    pub head_hash: String,
    /// Milliseconds since the head block's timestamp.
    pub head_age_ms: u64,
    pub finalized_number: Option<u64>,
    /// At least one upstream answered its last probe.
    pub upstream_healthy: bool,
    /// Upstream errors over requests in the last reporting window (0.0 ..= 1.0).
    pub error_rate: f64,
    /// What the node can answer for this chain; absent from an older node, which the gateway
    /// takes as "anything" (so peers one version apart still route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
}

/// What a node can answer for one chain, probed against its upstreams (the least capable of
/// them, since any may get a call) and kept current.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Capabilities {
    /// The oldest block whose state (balances, code, storage, `eth_call`) the upstreams hold;
    /// 0: all of it (an archive node). It follows the head between probes.
    pub oldest_state: u64,
    /// Method namespaces beyond `eth_`/`net_`/`web3_` the upstreams accept, among those the
    /// node probes (`debug`, `trace`, `txpool`), sorted.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// The widest `eth_getLogs` block range the node serves.
    pub logs_max_range: u64,
}

pub fn encode_json<T: Serialize>(ty: FrameType, msg: &T) -> Bytes {
    // Serialising these plain structs cannot fail.
    let body = serde_json::to_vec(msg).expect("control message serialises");
    frame::encode(ty, &body)
}

pub fn decode_json<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    payload: &[u8],
) -> Result<T, FrameError> {
    serde_json::from_slice(payload).map_err(|e| FrameError::Malformed(what, e.to_string()))
}

// === The request stream ===

/// The tag's size at the front of a tagged frame's payload.
pub const TAG_BYTES: usize = 8;

/// Tagged answers up to this size (framed) go on the request stream; larger ones on a stream
/// of their own.
pub const INLINE_MAX: usize = 64 * 1024;

/// The header of a tagged frame of type `ty` carrying `untagged` (a whole frame as
/// [`RpcRequest::encode`] or [`RpcResponse::encode`] give it): `untagged[5..]` follows it.
pub fn tagged_header(ty: FrameType, tag: u64, untagged: &[u8]) -> [u8; 5 + TAG_BYTES] {
    let body = untagged.len().saturating_sub(5);
    let mut h = [0u8; 5 + TAG_BYTES];
    h[..4].copy_from_slice(&((1 + TAG_BYTES + body) as u32).to_be_bytes());
    h[4] = ty as u8;
    h[5..].copy_from_slice(&tag.to_be_bytes());
    h
}

/// Appends `untagged` (see [`tagged_header`]) to `out` as a tagged frame.
pub fn put_tagged(out: &mut BytesMut, ty: FrameType, tag: u64, untagged: &[u8]) {
    out.put_slice(&tagged_header(ty, tag, untagged));
    out.put_slice(untagged.get(5..).unwrap_or_default());
}

/// A tagged frame's payload split into its tag and the message after it.
pub fn split_tag(mut payload: Bytes, what: &'static str) -> Result<(u64, Bytes), FrameError> {
    let tag = get_u64(&mut payload, what)?;
    Ok((tag, payload))
}

/// The `Busy` frame for `tag`.
pub fn busy(tag: u64) -> [u8; 5 + TAG_BYTES] {
    let mut h = [0u8; 5 + TAG_BYTES];
    h[..4].copy_from_slice(&((1 + TAG_BYTES) as u32).to_be_bytes());
    h[4] = FrameType::Busy as u8;
    h[5..].copy_from_slice(&tag.to_be_bytes());
    h
}

// === RPC messages ===

/// One JSON-RPC call without its `id` and `jsonrpc` members: the gateway keeps ids, so the
/// node (and its cache) never sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: String,
    /// Raw JSON of `params`, empty when the caller sent none.
    pub params: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RpcRequest {
    pub chain_id: u64,
    /// Request id for tracing, chosen by the gateway and logged on both sides.
    pub request_id: String,
    /// Time left for this request, so the node does not work past the caller's deadline.
    pub budget_ms: u32,
    /// The highest head a caller has been shown (0: no tag read, or none known): a node whose
    /// head is below it catches up before it resolves a tag, so no caller reads older state
    /// than it has seen.
    pub min_head: u64,
    pub calls: Vec<Call>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CacheStatus {
    Hit = 0,
    Miss = 1,
    Bypass = 2,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Bypass => "BYPASS",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Raw JSON of `result`.
    Result(Bytes),
    /// Raw JSON of the `error` object the upstream returned: final, the caller sees it.
    Error(Bytes),
    /// Raw JSON of an error object produced by the node itself (upstream unreachable, timed
    /// out): another node may succeed, so the gateway is free to retry elsewhere.
    NodeError(Bytes),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallResult {
    pub cache: CacheStatus,
    /// The answer concerns only final data (a finalized block named by number or hash, or a
    /// static fact): it will never change, so the gateway may keep it in its own cache.
    pub final_answer: bool,
    /// The answer holds for exactly the chain state the response names in `state_version`
    /// (a `latest` read, the head number): the gateway may repeat it until the node announces
    /// another state.
    pub at_state: bool,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RpcResponse {
    pub results: Vec<CallResult>,
    /// The node's chain-state version when it sent the response (the versions `Head` frames
    /// announce); every `at_state` answer was computed under it. `None` before the node has a
    /// chain state.
    pub state_version: Option<u64>,
}

const MAX_CALLS: usize = 100_000;

impl RpcRequest {
    pub fn encode(&self) -> Bytes {
        Self::encode_parts(
            self.chain_id,
            &self.request_id,
            self.budget_ms,
            self.min_head,
            self.calls.iter(),
        )
    }

    /// The frame of a request made of `calls`, without building the request (the gateway
    /// sends calls it already holds, often all of them). `calls` is walked twice: once to size
    /// the frame, once to write it.
    pub fn encode_parts<'c>(
        chain_id: u64,
        request_id: &str,
        budget_ms: u32,
        min_head: u64,
        calls: impl Iterator<Item = &'c Call> + Clone,
    ) -> Bytes {
        let (mut n, mut call_bytes) = (0usize, 0usize);
        for c in calls.clone() {
            n += 1;
            call_bytes += 6 + c.method.len() + c.params.len();
        }
        let size = 8 + 2 + request_id.len() + 4 + 8 + 4 + call_bytes;
        let mut b = BytesMut::with_capacity(5 + size);
        b.put_u32(1 + size as u32);
        b.put_u8(FrameType::RpcRequest as u8);
        b.put_u64(chain_id);
        put_str16(&mut b, request_id);
        b.put_u32(budget_ms);
        b.put_u64(min_head);
        b.put_u32(n as u32);
        for c in calls {
            put_str16(&mut b, &c.method);
            b.put_u32(c.params.len() as u32);
            b.put_slice(&c.params);
        }
        // Both walks must give the same calls: the length prefix was reckoned from the first.
        debug_assert_eq!(b.len(), 5 + size, "the calls changed between the two walks");
        b.freeze()
    }

    pub fn decode(mut p: Bytes) -> Result<Self, FrameError> {
        const W: &str = "RpcRequest";
        let chain_id = get_u64(&mut p, W)?;
        let request_id = get_str16(&mut p, W)?;
        let budget_ms = get_u32(&mut p, W)?;
        let min_head = get_u64(&mut p, W)?;
        let n = get_u32(&mut p, W)? as usize;
        if n > MAX_CALLS {
            return Err(FrameError::Malformed(W, format!("{n} calls")));
        }
        let mut calls = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let method = get_str16(&mut p, W)?;
            let len = get_u32(&mut p, W)? as usize;
            let params = take(&mut p, len, W)?;
            calls.push(Call { method, params });
        }
        if p.has_remaining() {
            return Err(FrameError::Malformed(W, "trailing bytes".into()));
        }
        Ok(Self {
            chain_id,
            request_id,
            budget_ms,
            min_head,
            calls,
        })
    }
}

impl RpcResponse {
    pub fn encode(&self) -> Bytes {
        let size = 4
            + self
                .results
                .iter()
                .map(|r| {
                    6 + match &r.outcome {
                        Outcome::Result(b) | Outcome::Error(b) | Outcome::NodeError(b) => b.len(),
                    }
                })
                .sum::<usize>()
            + 8;
        let mut b = BytesMut::with_capacity(5 + size);
        b.put_u32(1 + size as u32);
        b.put_u8(FrameType::RpcResponse as u8);
        b.put_u32(self.results.len() as u32);
        for r in &self.results {
            // High bits of the cache byte: the answer is final (0x80), tied to the state (0x40).
            b.put_u8(
                r.cache as u8
                    | if r.final_answer { 0x80 } else { 0 }
                    | if r.at_state { 0x40 } else { 0 },
            );
            let (kind, body) = match &r.outcome {
                Outcome::Result(body) => (0u8, body),
                Outcome::Error(body) => (1u8, body),
                Outcome::NodeError(body) => (2u8, body),
            };
            b.put_u8(kind);
            b.put_u32(body.len() as u32);
            b.put_slice(body);
        }
        // 0: no state version (versions start at 1).
        b.put_u64(self.state_version.unwrap_or(0));
        b.freeze()
    }

    pub fn decode(mut p: Bytes) -> Result<Self, FrameError> {
        const W: &str = "RpcResponse";
        let n = get_u32(&mut p, W)? as usize;
        if n > MAX_CALLS {
            return Err(FrameError::Malformed(W, format!("{n} results")));
        }
        let mut results = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let flags = get_u8(&mut p, W)?;
            let final_answer = flags & 0x80 != 0;
            let at_state = flags & 0x40 != 0;
            let cache = match flags & 0x3f {
                0 => CacheStatus::Hit,
                1 => CacheStatus::Miss,
                2 => CacheStatus::Bypass,
                x => return Err(FrameError::Malformed(W, format!("cache status {x}"))),
            };
            let kind = get_u8(&mut p, W)?;
            let len = get_u32(&mut p, W)? as usize;
            let body = take(&mut p, len, W)?;
            let outcome = match kind {
                0 => Outcome::Result(body),
                1 => Outcome::Error(body),
                2 => Outcome::NodeError(body),
                x => return Err(FrameError::Malformed(W, format!("outcome kind {x}"))),
            };
            results.push(CallResult {
                cache,
                outcome,
                final_answer,
                at_state,
            });
        }
        let state_version = Some(get_u64(&mut p, W)?).filter(|&v| v != 0);
        if p.has_remaining() {
            return Err(FrameError::Malformed(W, "trailing bytes".into()));
        }
        Ok(Self {
            results,
            state_version,
        })
    }
}

fn put_str16(b: &mut BytesMut, s: &str) {
    // Method names and request ids are short; truncate defensively rather than corrupt.
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    b.put_u16(s.len() as u16);
    b.put_slice(s);
}

fn need(p: &Bytes, n: usize, w: &'static str) -> Result<(), FrameError> {
    if p.remaining() < n {
        Err(FrameError::Malformed(w, "truncated".into()))
    } else {
        Ok(())
    }
}

fn get_u8(p: &mut Bytes, w: &'static str) -> Result<u8, FrameError> {
    need(p, 1, w)?;
    Ok(p.get_u8())
}

fn get_u32(p: &mut Bytes, w: &'static str) -> Result<u32, FrameError> {
    need(p, 4, w)?;
    Ok(p.get_u32())
}

fn get_u64(p: &mut Bytes, w: &'static str) -> Result<u64, FrameError> {
    need(p, 8, w)?;
    Ok(p.get_u64())
}

fn take(p: &mut Bytes, n: usize, w: &'static str) -> Result<Bytes, FrameError> {
    need(p, n, w)?;
    Ok(p.split_to(n))
}

fn get_str16(p: &mut Bytes, w: &'static str) -> Result<String, FrameError> {
    need(p, 2, w)?;
    let len = p.get_u16() as usize;
    let raw = take(p, len, w)?;
    String::from_utf8(raw.to_vec()).map_err(|_| FrameError::Malformed(w, "non-UTF-8 string".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::decode_one;

    fn req() -> RpcRequest {
        RpcRequest {
            chain_id: 31337,
            request_id: "r-1".into(),
            budget_ms: 5000,
            min_head: 7,
            calls: vec![
                Call {
                    method: "eth_chainId".into(),
                    params: Bytes::new(),
                },
                Call {
                    method: "eth_getBalance".into(),
                    params: Bytes::from_static(br#"["0xabc","latest"]"#),
                },
            ],
        }
    }

    #[test]
    fn request_round_trips() {
        let r = req();
        let f = decode_one(r.encode(), 1 << 20).unwrap();
        assert_eq!(f.ty, FrameType::RpcRequest);
        assert_eq!(RpcRequest::decode(f.payload).unwrap(), r);
    }

    #[test]
    fn a_request_of_picked_calls_is_the_request_of_those_calls() {
        let r = req();
        let picked = RpcRequest::encode_parts(31337, "r-1", 5000, 7, r.calls[1..].iter());
        let f = decode_one(picked, 1 << 20).unwrap();
        let got = RpcRequest::decode(f.payload).unwrap();
        assert_eq!(got.calls, &r.calls[1..]);
        assert_eq!(
            (got.chain_id, got.budget_ms, got.min_head),
            (31337, 5000, 7)
        );
    }

    #[test]
    fn response_round_trips() {
        let r = RpcResponse {
            results: vec![
                CallResult {
                    cache: CacheStatus::Hit,
                    outcome: Outcome::Result(Bytes::from_static(b"\"0x7a69\"")),
                    final_answer: true,
                    at_state: false,
                },
                CallResult {
                    cache: CacheStatus::Miss,
                    outcome: Outcome::Result(Bytes::from_static(b"\"0x10\"")),
                    final_answer: false,
                    at_state: true,
                },
                CallResult {
                    cache: CacheStatus::Bypass,
                    outcome: Outcome::Error(Bytes::from_static(
                        br#"{"code":3,"message":"execution reverted"}"#,
                    )),
                    final_answer: false,
                    at_state: false,
                },
            ],
            state_version: Some(7),
        };
        let f = decode_one(r.encode(), 1 << 20).unwrap();
        assert_eq!(RpcResponse::decode(f.payload.clone()).unwrap(), r);
        for cut in 0..f.payload.len() {
            assert!(
                RpcResponse::decode(f.payload.slice(..cut)).is_err(),
                "cut {cut}"
            );
        }
        let none = RpcResponse {
            results: vec![],
            state_version: None,
        };
        let f = decode_one(none.encode(), 1 << 20).unwrap();
        assert_eq!(RpcResponse::decode(f.payload).unwrap(), none);
    }

    #[test]
    fn truncated_payloads_are_errors_not_panics() {
        let full = decode_one(req().encode(), 1 << 20).unwrap().payload;
        for cut in 0..full.len() {
            assert!(RpcRequest::decode(full.slice(..cut)).is_err(), "cut {cut}");
        }
        let mut extra = BytesMut::from(&full[..]);
        extra.put_u8(0);
        assert!(RpcRequest::decode(extra.freeze()).is_err());
    }

    #[test]
    fn tagged_frames_carry_the_tag_and_the_untagged_message() {
        let r = req();
        let mut out = BytesMut::new();
        put_tagged(
            &mut out,
            FrameType::TaggedRequest,
            u64::MAX - 1,
            &r.encode(),
        );
        out.put_slice(&busy(9));
        let out = out.freeze();
        let first_len = 4 + u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
        let f = decode_one(out.slice(..first_len), 1 << 20).unwrap();
        assert_eq!(f.ty, FrameType::TaggedRequest);
        let (tag, body) = split_tag(f.payload, "TaggedRequest").unwrap();
        assert_eq!(tag, u64::MAX - 1);
        assert_eq!(RpcRequest::decode(body).unwrap(), r);
        let b = decode_one(out.slice(first_len..), 1 << 20).unwrap();
        assert_eq!(b.ty, FrameType::Busy);
        assert_eq!(split_tag(b.payload, "Busy").unwrap(), (9, Bytes::new()));
        assert!(split_tag(Bytes::from_static(&[0; 7]), "Busy").is_err());
    }

    #[test]
    fn control_messages_round_trip_as_json() {
        let h = Hello {
            protocol: 1,
            token: "t".into(),
            node_id: "n".into(),
            region: "eu-west".into(),
            latitude: 50.11,
            longitude: 8.68,
            chains: vec![1],
            version: "0.1.0".into(),
        };
        let f = decode_one(encode_json(FrameType::Hello, &h), 1024).unwrap();
        let back: Hello = decode_json("Hello", &f.expect(FrameType::Hello).unwrap()).unwrap();
        assert_eq!(back, h);
    }

    /// A status without capabilities (an older node) reads as `None`, and one with them
    /// round-trips; `None` is left out on the wire, so an older gateway sees what it knew.
    #[test]
    fn capabilities_are_optional_on_the_wire() {
        let old = br#"{"chain_id":1,"head_number":5,"head_hash":"0x","head_age_ms":0,
            "finalized_number":null,"upstream_healthy":true,"error_rate":0.0}"#;
        let c: ChainStatus = decode_json("ChainStatus", old).unwrap();
        assert_eq!(c.capabilities, None);
        assert!(!serde_json::to_string(&c).unwrap().contains("capabilities"));
        let with = ChainStatus {
            capabilities: Some(Capabilities {
                oldest_state: 120,
                namespaces: vec!["debug".into(), "txpool".into()],
                logs_max_range: 10_000,
            }),
            ..c
        };
        let back: ChainStatus =
            decode_json("ChainStatus", &serde_json::to_vec(&with).unwrap()).unwrap();
        assert_eq!(back, with);
    }
}
