//! One call's state on the request path: its entry, its key, and its answer once a phase has
//! decided it.

use std::sync::Arc;

use bytes::Bytes;
use proto::msg::{CacheStatus, Call};

use crate::front::compress::Deflated;
use crate::front::jsonrpc::Entry;
use crate::nodes::registry::Node;

/// One element of a request (a call, a notification, or an invalid element).
pub struct Slot {
    pub entry: Entry,
    /// The call's key in the final tier: built by the gateway-tier phase and used again to keep
    /// the node's answer.
    pub key: Option<Bytes>,
    /// Set by the phase that decided the call; later phases skip it.
    pub answer: Option<Answer>,
    /// The answer deflated once, when it came from the final tier large enough to keep so.
    pub deflated: Option<Deflated>,
    /// The node whose answer this is, when a node answered it (audits and ejection use it).
    pub from: Option<Arc<Node>>,
}

/// How a call was answered.
pub struct Answer {
    pub cache: CacheStatus,
    /// The JSON result, or the JSON-RPC error object.
    pub result: Result<Bytes, Bytes>,
    pub tier: Tier,
}

/// Who answered a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The gateway itself, without a cache: an invalid or refused call, or no node to ask.
    Local,
    /// One of the gateway's cache tiers.
    Gateway,
    /// An edge node, with what the gateway may keep of its answer.
    Node {
        /// The node flagged the answer final.
        final_answer: bool,
        /// The node session and chain-state version the answer holds for, if tied to one.
        tied: Option<(u64, u64)>,
    },
}

impl Slot {
    pub fn new(entry: Entry) -> Self {
        Self {
            entry,
            key: None,
            answer: None,
            deflated: None,
            from: None,
        }
    }

    /// Not answered yet.
    pub fn open(&self) -> bool {
        self.answer.is_none()
    }

    /// The method and params of a call (`None` for an invalid element).
    pub fn call(&self) -> Option<(&str, &Bytes)> {
        match &self.entry {
            Entry::Call { method, params, .. } => Some((method, params)),
            Entry::Invalid { .. } => None,
        }
    }

    /// The call as it goes to a node (without its id).
    pub fn to_call(&self) -> Option<Call> {
        self.call().map(|(method, params)| Call {
            method: method.to_string(),
            params: params.clone(),
        })
    }

    pub fn decide(&mut self, cache: CacheStatus, result: Result<Bytes, Bytes>, tier: Tier) {
        self.answer = Some(Answer {
            cache,
            result,
            tier,
        });
    }
}
