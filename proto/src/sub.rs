//! Subscriptions (`eth_subscribe`) between a gateway and a node.
//!
//! The gateway opens one bidirectional stream per (chain, kind, filter) it fans out, writes one
//! [`Subscribe`] frame and keeps the stream open; the node answers [`SubEvent`] frames until
//! either side closes it. Events come from the node's own verified chain state, one per
//! canonical block in order: the payload of a `newHeads` event is the block's header, that of a
//! `logs` event the block's logs that match the filter (maybe none: the event still tells the
//! gateway how far the stream has come). A reorg shows as a block whose parent is not the last
//! block sent; the gateway, which keeps what it delivered, takes back what the new branch
//! replaces. To move a subscription to another node without a gap, the gateway sends the
//! blocks it delivered last ([`Subscribe::resume`]); the node continues after the highest of
//! them it holds on its canonical chain.
//!
//! JSON like the other control messages: events are per block, not per request, and the
//! payloads are raw JSON that is passed through untouched.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Resume lists longer than this are cut to their newest blocks.
pub const MAX_RESUME: usize = 128;

/// What a subscription follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SubKind {
    #[serde(rename = "newHeads")]
    NewHeads,
    #[serde(rename = "logs")]
    Logs,
    #[serde(rename = "newPendingTransactions")]
    NewPendingTransactions,
}

impl SubKind {
    /// The name `eth_subscribe` takes, also the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NewHeads => "newHeads",
            Self::Logs => "logs",
            Self::NewPendingTransactions => "newPendingTransactions",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "newHeads" => Some(Self::NewHeads),
            "logs" => Some(Self::Logs),
            "newPendingTransactions" => Some(Self::NewPendingTransactions),
            _ => None,
        }
    }
}

/// A `logs` filter in canonical form (the gateway makes it so, and keys its feeds by it):
/// lower-case `0x` hex, addresses sorted without repeats, each topic position `None` (any) or
/// a sorted list of alternatives. Trailing `None`s stay: as in geth, a log must have at least
/// as many topics as the filter has positions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogFilter {
    /// Any of these addresses; empty: any address.
    #[serde(default)]
    pub address: Vec<String>,
    #[serde(default)]
    pub topics: Vec<Option<Vec<String>>>,
}

impl LogFilter {
    /// Does a log with this (lower-case) address and these topics match?
    pub fn matches(&self, address: &str, topics: &[String]) -> bool {
        if !self.address.is_empty() && !self.address.iter().any(|a| a == address) {
            return false;
        }
        if self.topics.len() > topics.len() {
            return false;
        }
        self.topics.iter().enumerate().all(|(i, want)| match want {
            None => true,
            Some(any) => topics.get(i).is_some_and(|t| any.iter().any(|w| w == t)),
        })
    }
}

/// A block the gateway delivered, by number and hash (`0x` lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockId {
    pub number: u64,
    pub hash: String,
}

/// Gateway -> node: the first and only frame the gateway writes on a subscription stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscribe {
    pub chain_id: u64,
    pub kind: SubKind,
    /// For `logs` only.
    #[serde(default)]
    pub filter: Option<LogFilter>,
    /// The blocks delivered last, oldest first (at most [`MAX_RESUME`]); empty for a new
    /// subscription, which starts with the next block.
    #[serde(default)]
    pub resume: Vec<BlockId>,
}

/// Node -> gateway on a subscription stream.
#[derive(Debug, Serialize, Deserialize)]
// Externally tagged: an internally tagged enum buffers its fields, which `RawValue` refuses.
#[serde(rename_all = "snake_case")]
pub enum SubEvent {
    /// The subscription is set up; events follow.
    Ready,
    /// The node cannot serve it (the reason says why); it finishes the stream.
    Refused { reason: String },
    /// A canonical block.
    Block {
        number: u64,
        hash: String,
        parent_hash: String,
        /// When the node published this block (Unix ms): the gateway measures the delay to
        /// its clients from it.
        published_ms: u64,
        /// `newHeads`: the header object; `logs`: the array of the block's matching logs.
        payload: Box<RawValue>,
    },
    /// `newPendingTransactions`: hashes as the upstream sent them.
    Pending { hashes: Vec<String> },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameType;
    use crate::msg::{decode_json, encode_json};

    #[test]
    fn subscribe_and_events_round_trip() {
        let s = Subscribe {
            chain_id: 1,
            kind: SubKind::Logs,
            filter: Some(LogFilter {
                address: vec!["0xab".into()],
                topics: vec![None, Some(vec!["0x01".into()])],
            }),
            resume: vec![BlockId {
                number: 7,
                hash: "0x07".into(),
            }],
        };
        let f = encode_json(FrameType::Subscribe, &s);
        let back: Subscribe = decode_json("Subscribe", &f[5..]).unwrap();
        assert_eq!(back, s);
        let e = SubEvent::Block {
            number: 8,
            hash: "0x08".into(),
            parent_hash: "0x07".into(),
            published_ms: 1,
            payload: RawValue::from_string("[{\"a\":1}]".into()).unwrap(),
        };
        let f = encode_json(FrameType::SubEvent, &e);
        match decode_json::<SubEvent>("SubEvent", &f[5..]).unwrap() {
            SubEvent::Block { payload, .. } => assert_eq!(payload.get(), "[{\"a\":1}]"),
            other => panic!("{other:?}"),
        }
        let back: SubEvent = decode_json("SubEvent", br#""ready""#).unwrap();
        assert!(matches!(back, SubEvent::Ready));
    }

    #[test]
    fn filters_match_like_geth() {
        let f = LogFilter {
            address: vec!["0xaa".into(), "0xbb".into()],
            topics: vec![None, Some(vec!["0x1".into(), "0x2".into()])],
        };
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(f.matches("0xaa", &t(&["0x9", "0x2"])));
        assert!(!f.matches("0xcc", &t(&["0x9", "0x2"])));
        assert!(!f.matches("0xaa", &t(&["0x9", "0x3"])));
        // A position the log does not have does not match, not even a wildcard (geth).
        assert!(!f.matches("0xaa", &t(&["0x9"])));
        let wild = LogFilter {
            address: vec![],
            topics: vec![Some(vec!["0x1".into()]), None],
        };
        assert!(!wild.matches("0xaa", &t(&["0x1"])));
        assert!(wild.matches("0xaa", &t(&["0x1", "0x7"])));
        assert!(LogFilter::default().matches("0xcc", &[]));
    }
}
