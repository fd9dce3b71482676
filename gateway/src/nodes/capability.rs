//! What a call needs of a node beyond serving its chain, and whether what a node announced
//! ([`proto::msg::Capabilities`]) covers it: state at an old block (an archive), a method
//! namespace (`trace_`, `debug_`, `txpool_`), an `eth_getLogs` range.
//!
//! Most calls need nothing ([`need`] answers `None` from the method name alone, or from a
//! block tag), and a request whose calls need nothing skips every check. A node that
//! announced nothing (an older version) is taken to answer anything.

use proto::msg::Capabilities;
use proto::rpc;
use serde::Deserialize;
use serde_json::value::RawValue;

/// The namespaces nodes probe and announce, as `Need::Namespace` indices.
pub const NAMESPACES: [&str; 3] = ["debug", "trace", "txpool"];

/// What one call needs of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The state at this block number.
    StateAt(u64),
    /// A namespace (index into [`NAMESPACES`]).
    Namespace(u8),
    /// `eth_getLogs` over this many blocks.
    LogRange {
        span: u64,
        /// The range's last block: past a node's head the node does not refuse the range
        /// but passes it to its upstream as asked.
        last: u64,
    },
}

/// The state-reading methods and the index of their block parameter.
const STATE_METHODS: &[(&str, usize)] = &[
    ("eth_getBalance", 1),
    ("eth_getCode", 1),
    ("eth_getTransactionCount", 1),
    ("eth_getStorageAt", 2),
    ("eth_call", 1),
    ("eth_estimateGas", 1),
    ("eth_createAccessList", 1),
    ("eth_getProof", 2),
];

/// Params ending in a block tag: the block parameter is last in every state method.
const TAG_ENDINGS: [&[u8]; 4] = [
    b"\"latest\"]",
    b"\"pending\"]",
    b"\"safe\"]",
    b"\"finalized\"]",
];

/// What `method(params)` needs; `None` for almost every call. Block tags (`latest`, `safe`,
/// ...) and hashes need nothing: the head's state is what every node holds, and a block
/// named by hash could be anywhere (the node's upstream answers or refuses it).
pub fn need(method: &str, params: &[u8]) -> Option<Need> {
    if let Some(&(_, at)) = STATE_METHODS.iter().find(|(m, _)| *m == method) {
        // The usual read ends with its block tag: no parse (about a thousand instructions).
        if at_moving_tag(params) {
            return None;
        }
        let raw = std::str::from_utf8(element(params, at)?).ok()?;
        return block_number(raw).map(Need::StateAt);
    }
    if method == "eth_getLogs" {
        return log_range(params).map(|(span, last)| Need::LogRange { span, last });
    }
    let (ns, _) = method.split_once('_')?;
    NAMESPACES
        .iter()
        .position(|n| *n == ns)
        .map(|i| Need::Namespace(i as u8))
}

/// Whether the params end with a moving block tag (`latest`, `pending`, `safe`, `finalized`),
/// where every state method has its block parameter: an answer that changes with the chain,
/// never final.
pub fn at_moving_tag(params: &[u8]) -> bool {
    let tail = params.trim_ascii_end();
    TAG_ENDINGS.iter().any(|t| tail.ends_with(t))
}

/// The `at`th element of a JSON array, as its text, without building the others (a serde
/// parse of the params cost about a thousand instructions per call). `params` is valid JSON
/// (the request parse checked it); anything but an array has no elements.
fn element(params: &[u8], at: usize) -> Option<&[u8]> {
    let body = params.trim_ascii().strip_prefix(b"[")?;
    let (mut depth, mut index, mut start) = (0usize, 0usize, 0usize);
    let mut in_string = false;
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if in_string {
            // To the string's next quote or escape in one search (an address or hash is 40-64
            // bytes of plain text).
            i += memchr::memchr2(b'"', b'\\', &body[i..])?;
            match body[i] {
                b'\\' => i += 1,
                _ => in_string = false,
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => depth += 1,
                b']' | b'}' if depth > 0 => depth -= 1,
                b',' | b']' if depth == 0 => {
                    if index == at {
                        let e = body[start..i].trim_ascii();
                        return (!e.is_empty()).then_some(e);
                    }
                    if b == b']' {
                        return None;
                    }
                    index += 1;
                    start = i + 1;
                }
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// A block parameter's number: a hex quantity, `earliest`, or EIP-1898 `{"blockNumber"}`.
fn block_number(raw: &str) -> Option<u64> {
    let s: &str = match raw.as_bytes().first()? {
        // Without escapes a JSON string's value is its text between the quotes.
        b'"' => match raw[1..].strip_suffix('"') {
            Some(s) if !s.contains('\\') => s,
            _ => serde_json::from_str(raw).ok()?,
        },
        b'{' => {
            // A block by hash as viem and ethers write it (compact, one key) names no number:
            // no parse (about 700 instructions). Any other spelling goes to the parse, which
            // agrees (tested).
            if raw
                .strip_prefix(r#"{"blockHash":""#)
                .and_then(|r| r.strip_suffix(r#""}"#))
                .is_some_and(|h| h.bytes().all(|b| b.is_ascii_alphanumeric()))
            {
                return None;
            }
            object_block_number(raw)?
        }
        _ => return None,
    };
    number(s)
}

/// An EIP-1898 object's `blockNumber`, parsed.
fn object_block_number(raw: &str) -> Option<&str> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ByNumber<'a> {
        #[serde(borrow)]
        block_number: Option<&'a str>,
    }
    serde_json::from_str::<ByNumber<'_>>(raw).ok()?.block_number
}

fn number(s: &str) -> Option<u64> {
    match s {
        "earliest" => Some(0),
        _ => u64::from_str_radix(s.strip_prefix("0x")?, 16).ok(),
    }
}

/// The blocks an `eth_getLogs` filter spans, when both ends are numbers.
fn log_range(params: &[u8]) -> Option<(u64, u64)> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Filter<'a> {
        #[serde(borrow)]
        from_block: Option<&'a RawValue>,
        #[serde(borrow)]
        to_block: Option<&'a RawValue>,
    }
    let [f]: [Filter<'_>; 1] = serde_json::from_slice(params).ok()?;
    let from = block_number(f.from_block?.get())?;
    let to = block_number(f.to_block?.get())?;
    (to >= from).then(|| (to - from + 1, to))
}

/// What a node announced it can answer for one chain, in the form checks read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub oldest_state: u64,
    /// Bit `i`: [`NAMESPACES`]`[i]` is served.
    namespaces: u8,
    pub logs_max_range: u64,
}

impl From<&Capabilities> for Held {
    fn from(c: &Capabilities) -> Self {
        let namespaces = NAMESPACES
            .iter()
            .enumerate()
            .filter(|(_, n)| c.namespaces.iter().any(|x| x == *n))
            .fold(0u8, |m, (i, _)| m | 1 << i);
        Self {
            oldest_state: c.oldest_state,
            namespaces,
            logs_max_range: c.logs_max_range,
        }
    }
}

impl Held {
    pub fn covers(&self, need: Need) -> bool {
        match need {
            Need::StateAt(n) => self.oldest_state <= n,
            Need::Namespace(i) => self.namespaces & (1 << i) != 0,
            Need::LogRange { span, .. } => span <= self.logs_max_range,
        }
    }
}

/// Does a node that announced `held` (`None`: nothing, an older node) answer `need`?
pub fn covers(held: Option<Held>, need: Need) -> bool {
    held.is_none_or(|h| h.covers(need))
}

/// The error for a call no candidate node can answer, naming why; `held` is what the
/// candidates announced (the best of it is named).
pub fn refusal(chain_id: u64, need: Need, held: &[Held]) -> bytes::Bytes {
    match need {
        Need::StateAt(n) => {
            let oldest = held.iter().map(|h| h.oldest_state).min();
            let oldest = oldest.map_or("none".into(), |o| o.to_string());
            rpc::error_object(
                rpc::NO_NODE,
                format!("no edge node for chain {chain_id} holds state at block {n} (oldest held: {oldest}; an archive node is needed)"),
            )
        }
        Need::Namespace(i) => rpc::error_object(
            rpc::NO_NODE,
            format!(
                "no edge node for chain {chain_id} serves {}_ methods",
                NAMESPACES[usize::from(i)]
            ),
        ),
        Need::LogRange { span, .. } => {
            let widest = held.iter().map(|h| h.logs_max_range).max().unwrap_or(0);
            rpc::error_object(
                rpc::LIMIT_EXCEEDED,
                format!("eth_getLogs block range too large: {span} blocks, the limit is {widest} (the widest any edge node for chain {chain_id} serves)"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "\"0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266\"";

    fn n(method: &str, params: &str) -> Option<Need> {
        need(method, params.as_bytes())
    }

    /// The element splitter agrees with serde on every element of arrays of every shape
    /// (nesting, strings holding brackets, commas and escapes, whitespace), and finds
    /// nothing past the end or in what is not an array.
    #[test]
    fn element_agrees_with_serde() {
        let arrays = [
            "[]",
            "[1]",
            " [ \"a\" , 2 ,{\"b\":[1,2]} , [3,[4]] ] ",
            r#"["x,y]", "q\"],[", {"k": "v}"}, null, true, -1.5e3]"#,
            r#"[{"blockNumber":"0x10"},"0x1",[]]"#,
            r#"["\\", "\\\"", {}]"#,
        ];
        for text in arrays {
            let parsed: Vec<&RawValue> = serde_json::from_str(text).unwrap();
            for (i, want) in parsed.iter().enumerate() {
                let got = element(text.as_bytes(), i).map(|e| std::str::from_utf8(e).unwrap());
                assert_eq!(got, Some(want.get()), "{text} element {i}");
            }
            assert_eq!(element(text.as_bytes(), parsed.len()), None, "{text}");
        }
        for not_array in ["{\"a\":[1]}", "\"[1]\"", "7", ""] {
            assert_eq!(element(not_array.as_bytes(), 0), None, "{not_array}");
        }
    }

    /// The compact by-hash object skips the parse; every other spelling takes it (a
    /// `blockNumber` key spelled with an escape included), and both agree with the parse.
    #[test]
    fn block_by_hash_objects_agree_with_the_parse() {
        let parsed = |raw: &str| object_block_number(raw).and_then(number);
        let hash = "0xd4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3";
        for raw in [
            format!(r#"{{"blockHash":"{hash}"}}"#),
            format!(r#"{{"blockHash":"{}"}}"#, hash.to_uppercase()),
            r#"{"blockHash":""}"#.to_string(),
            format!(r#"{{"blockHash": "{hash}"}}"#),
            format!(r#"{{"blockHash":"{hash}","requireCanonical":true}}"#),
            format!(r#"{{"blockHash":"{hash}","blockNumber":"0x5"}}"#),
            format!(r#"{{"blockHash":"{hash}","block\u004eumber":"0x7"}}"#),
            r#"{"blockHash":"0x","blockNumber":"0x9"}"#.to_string(),
        ] {
            assert_eq!(block_number(&raw), parsed(&raw), "{raw}");
        }
        assert_eq!(
            block_number(&format!(
                r#"{{"blockHash":"{hash}","block\u004eumber":"0x7"}}"#
            )),
            Some(7)
        );
    }

    #[test]
    fn state_reads_at_a_number_need_that_block() {
        assert_eq!(
            n("eth_getBalance", &format!("[{A},\"0x1f\"]")),
            Some(Need::StateAt(31))
        );
        assert_eq!(
            n("eth_getBalance", &format!("[{A},\"earliest\"]")),
            Some(Need::StateAt(0))
        );
        assert_eq!(
            n("eth_getStorageAt", &format!("[{A},\"0x0\",\"0x10\"]")),
            Some(Need::StateAt(16))
        );
        assert_eq!(
            n("eth_call", r#"[{"to":"0x00"},{"blockNumber":"0x5"}]"#),
            Some(Need::StateAt(5))
        );
        assert_eq!(
            n("eth_getProof", &format!("[{A},[],\"0xa\"]")),
            Some(Need::StateAt(10))
        );
    }

    #[test]
    fn tags_hashes_and_odd_params_need_nothing() {
        for p in [
            format!("[{A},\"latest\"]"),
            format!("[{A},\"safe\"]"),
            format!("[{A},\"pending\"]"),
            format!("[{A}]"),
            format!("[{A},{{\"blockHash\":\"0xab\"}}]"),
            format!("[{A},\"0xzz\"]"),
            format!("[{A},12]"),
            "{}".into(),
            String::new(),
        ] {
            assert_eq!(n("eth_getBalance", &p), None, "{p}");
        }
        assert_eq!(n("eth_blockNumber", ""), None);
        assert_eq!(n("eth_getBlockByNumber", "[\"0x1\",false]"), None);
        assert_eq!(n("web3_clientVersion", "[]"), None);
        assert_eq!(n("nonamespace", "[]"), None);
    }

    #[test]
    fn moving_tags_are_only_the_four_that_move() {
        for p in ["latest", "pending", "safe", "finalized"] {
            assert!(at_moving_tag(format!("[{A},\"{p}\"] \n").as_bytes()), "{p}");
        }
        for p in [
            format!("[{A},\"earliest\"]"),
            format!("[{A},\"0x1\"]"),
            format!("[{A},{{\"blockHash\":\"0xab\"}}]"),
            format!("[{A}]"),
            // A tag inside an object is not the block parameter.
            "[{\"to\":\"latest\"}]".into(),
            "[\"latest\",false]".into(),
        ] {
            assert!(!at_moving_tag(p.as_bytes()), "{p}");
        }
    }

    #[test]
    fn namespaces_and_log_ranges() {
        assert_eq!(n("trace_transaction", "[]"), Some(Need::Namespace(1)));
        assert_eq!(n("debug_traceCall", "[]"), Some(Need::Namespace(0)));
        assert_eq!(n("txpool_status", "[]"), Some(Need::Namespace(2)));
        assert_eq!(
            n("eth_getLogs", r#"[{"fromBlock":"0x10","toBlock":"0x1f"}]"#),
            Some(Need::LogRange {
                span: 16,
                last: 0x1f
            })
        );
        assert_eq!(
            n(
                "eth_getLogs",
                r#"[{"fromBlock":"earliest","toBlock":"0x9"}]"#
            ),
            Some(Need::LogRange { span: 10, last: 9 })
        );
        for open in [
            r#"[{"fromBlock":"0x10","toBlock":"latest"}]"#,
            r#"[{"fromBlock":"0x10"}]"#,
            r#"[{"blockHash":"0xab"}]"#,
            r#"[{"fromBlock":"0x10","toBlock":"0x1"}]"#,
        ] {
            assert_eq!(n("eth_getLogs", open), None, "{open}");
        }
    }

    #[test]
    fn announced_capabilities_cover_what_they_say() {
        let full = Held::from(&Capabilities {
            oldest_state: 100,
            namespaces: vec!["txpool".into(), "unknown".into()],
            logs_max_range: 1000,
        });
        assert!(full.covers(Need::StateAt(100)));
        assert!(!full.covers(Need::StateAt(99)));
        assert!(full.covers(Need::Namespace(2)));
        assert!(!full.covers(Need::Namespace(1)));
        let range = |span| Need::LogRange { span, last: 5000 };
        assert!(full.covers(range(1000)));
        assert!(!full.covers(range(1001)));
        let archive = Held::from(&Capabilities {
            oldest_state: 0,
            namespaces: NAMESPACES.iter().map(|s| s.to_string()).collect(),
            logs_max_range: 10,
        });
        assert!(archive.covers(Need::StateAt(0)) && archive.covers(Need::Namespace(1)));
        // A node that announced nothing (an older version) is taken to answer anything.
        assert!(covers(None, Need::StateAt(0)) && covers(None, Need::Namespace(1)));
    }

    #[test]
    fn refusals_name_the_reason() {
        let held = [Held {
            oldest_state: 120,
            namespaces: 0,
            logs_max_range: 500,
        }];
        let s = |b: bytes::Bytes| String::from_utf8(b.to_vec()).unwrap();
        let state = s(refusal(31337, Need::StateAt(5), &held));
        assert!(
            state.contains("-32002")
                && state.contains("block 5")
                && state.contains("oldest held: 120"),
            "{state}"
        );
        let trace = s(refusal(31337, Need::Namespace(1), &held));
        assert!(trace.contains("serves trace_ methods"), "{trace}");
        let logs = s(refusal(
            31337,
            Need::LogRange {
                span: 900,
                last: 900,
            },
            &held,
        ));
        assert!(
            logs.contains("-32005") && logs.contains("900 blocks") && logs.contains("500"),
            "{logs}"
        );
    }
}
