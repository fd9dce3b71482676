//! The policy table and plans, row by row, against a seeded chain.

use super::*;
use serde_json::json;

#[test]
fn every_rule_in_the_table_is_reachable_and_unlisted_methods_never_cache() {
    for (m, r) in RULES {
        assert_eq!(rule(m), *r);
    }
    for m in [
        "eth_sendRawTransaction",
        "eth_newFilter",
        "eth_getFilterChanges",
        "eth_subscribe",
        "txpool_content",
        "eth_estimateGas",
        "eth_gasPrice",
    ] {
        assert_eq!(rule(m), Rule::Never, "{m}");
    }
}

use crate::header::Header;
use alloy_primitives::B256;

/// A chain at head 20, finalized 10, with headers 0..=20 whose hashes are `h(n)`.
fn chain() -> Chain {
    let cfg: crate::config::ChainConfig =
        toml::from_str("chain_id = 1\nupstreams = [\"http://127.0.0.1:1\"]").unwrap();
    let ups = crate::upstream::Upstreams::new(
        &cfg.upstreams,
        std::time::Duration::from_secs(1),
        std::sync::Arc::new(crate::metrics::Metrics::new()),
    );
    let c = Chain::new(&cfg, ups);
    let headers = (0..=20)
        .map(|n| Header {
            number: n,
            hash: h(n),
            parent_hash: if n == 0 { B256::ZERO } else { h(n - 1) },
            state_root: B256::ZERO,
            timestamp: 1000 + n,
            no_logs: true,
            rpc: Bytes::new(),
        })
        .collect();
    c.seed(headers, 10, 1);
    c
}

fn h(n: u64) -> B256 {
    B256::with_last_byte(n as u8 + 1)
}

fn hs(n: u64) -> String {
    format!("{:#x}", h(n))
}

const LIMITS: LogLimits = LogLimits {
    max_range: 100,
    chunk: 10,
};

/// What a plan amounts to, for comparing rows.
#[derive(Debug, PartialEq)]
enum Kind {
    Local(String),
    Cache {
        method: String,
        params: Value,
        final_for_client: bool,
        only_if_final: bool,
    },
    Logs {
        from: u64,
        to: u64,
        cached: bool,
        final_for_client: bool,
    },
    Reject,
    Bypass,
}

fn kind(p: Plan) -> Kind {
    match p {
        Plan::Local(b) => Kind::Local(String::from_utf8(b.to_vec()).unwrap()),
        Plan::Cache(CachePlan {
            method,
            params,
            final_for_client,
            only_if_final,
            ..
        }) => Kind::Cache {
            method: method.to_string(),
            params: serde_json::from_slice(&params).unwrap(),
            final_for_client,
            only_if_final,
        },
        Plan::Logs {
            from,
            to,
            cache_key,
            final_for_client,
            ..
        } => Kind::Logs {
            from,
            to,
            cached: cache_key.is_some(),
            final_for_client,
        },
        Plan::Reject(_) => Kind::Reject,
        Plan::Bypass => Kind::Bypass,
    }
}

fn cache(method: &str, params: Value, final_for_client: bool) -> Kind {
    Kind::Cache {
        method: method.into(),
        params,
        final_for_client,
        only_if_final: false,
    }
}

/// One row per rule of the table (and per block-parameter form that matters).
#[test]
fn policy_rows() {
    let c = chain();
    let a = "0x00000000000000000000000000000000000000aa";
    let rows: Vec<(&str, Value, Kind)> = vec![
        // Static and local.
        (
            "net_version",
            json!([]),
            cache("net_version", json!([]), true),
        ),
        ("eth_chainId", json!([]), Kind::Local("\"0x1\"".into())),
        ("eth_blockNumber", json!([]), Kind::Local("\"0x14\"".into())),
        // StateAt: tags resolve; tip blocks are pinned by hash, final ones by number.
        (
            "eth_getBalance",
            json!([a, "latest"]),
            cache("eth_getBalance", json!([a, {"blockHash": hs(20)}]), false),
        ),
        // A missing or null block is the upstream's to judge (some default to latest, some refuse).
        ("eth_getBalance", json!([a]), Kind::Bypass),
        ("eth_getBalance", json!([a, null]), Kind::Bypass),
        // A 32-byte block parameter is a hash whatever its value, never block 0xff.
        (
            "eth_getBalance",
            json!([a, format!("0x{}ff", "0".repeat(62))]),
            cache(
                "eth_getBalance",
                json!([a, format!("0x{}ff", "0".repeat(62))]),
                false,
            ),
        ),
        // Spellings an upstream may refuse go to it as asked.
        (
            "eth_getBalance",
            json!([a.replace("0x", "0X"), "0x5"]),
            Kind::Bypass,
        ),
        ("eth_getBalance", json!([a, "0X5"]), Kind::Bypass),
        ("eth_getBalance", json!([a, "0x05"]), Kind::Bypass),
        ("eth_getBalance", json!([a, "Latest"]), Kind::Bypass),
        ("eth_getBalance", json!([a, 5]), Kind::Bypass),
        (
            "eth_getBalance",
            json!([a, {"blockHash": hs(4), "extra": 1}]),
            Kind::Bypass,
        ),
        (
            "eth_getBalance",
            json!([a, "latest", "latest"]),
            Kind::Bypass,
        ),
        (
            "eth_getBalance",
            json!([a, "0x5"]),
            cache("eth_getBalance", json!([a, "0x5"]), true),
        ),
        (
            "eth_getBalance",
            json!([a, "finalized"]),
            cache("eth_getBalance", json!([a, "0xa"]), false),
        ),
        (
            "eth_getBalance",
            json!([a, "0xf"]),
            cache("eth_getBalance", json!([a, {"blockHash": hs(15)}]), false),
        ),
        (
            "eth_getBalance",
            json!([a, {"blockNumber": "0x3"}]),
            cache("eth_getBalance", json!([a, "0x3"]), true),
        ),
        (
            "eth_getBalance",
            json!([a, {"blockHash": hs(4)}]),
            cache("eth_getBalance", json!([a, {"blockHash": hs(4)}]), true),
        ),
        (
            "eth_getBalance",
            json!([a, {"blockHash": hs(18)}]),
            cache("eth_getBalance", json!([a, {"blockHash": hs(18)}]), false),
        ),
        (
            "eth_getBalance",
            json!([a, {"blockHash": hs(200), "requireCanonical": true}]),
            Kind::Bypass,
        ),
        ("eth_getBalance", json!([a, "pending"]), Kind::Bypass),
        ("eth_getBalance", json!([a, "0x15"]), Kind::Bypass),
        (
            "eth_getStorageAt",
            json!([a, "0x0", "0x2"]),
            cache("eth_getStorageAt", json!([a, "0x0", "0x2"]), true),
        ),
        ("eth_getStorageAt", json!([a, 0, "0x2"]), Kind::Bypass),
        ("eth_getStorageAt", json!([a, "10", "0x2"]), Kind::Bypass),
        (
            "eth_call",
            json!([{"to": a}, "latest"]),
            cache("eth_call", json!([{"to": a}, {"blockHash": hs(20)}]), false),
        ),
        ("eth_call", json!([{"to": a}]), Kind::Bypass),
        (
            "eth_call",
            json!([{"to": a}, "latest", {"0x1": {}}]),
            Kind::Bypass,
        ),
        (
            "eth_getCode",
            json!([a, "earliest"]),
            cache("eth_getCode", json!([a, "0x0"]), true),
        ),
        (
            "eth_getTransactionCount",
            json!([a, "safe"]),
            cache("eth_getTransactionCount", json!([a, "0xa"]), false),
        ),
        (
            "eth_getProof",
            json!([a, [], "0x1"]),
            cache("eth_getProof", json!([a, [], "0x1"]), true),
        ),
        // ByNumber: tip blocks go to the by-hash twin.
        (
            "eth_getBlockByNumber",
            json!(["0x2", false]),
            cache("eth_getBlockByNumber", json!(["0x2", false]), true),
        ),
        (
            "eth_getBlockByNumber",
            json!(["latest", true]),
            cache("eth_getBlockByHash", json!([hs(20), true]), false),
        ),
        ("eth_getBlockByNumber", json!(["0x99", false]), Kind::Bypass),
        // By-number methods take no EIP-1898 object and no hash; their arity is exact.
        (
            "eth_getBlockByNumber",
            json!([{"blockHash": hs(3)}, false]),
            Kind::Bypass,
        ),
        ("eth_getBlockByNumber", json!([hs(3), false]), Kind::Bypass),
        ("eth_getBlockByNumber", json!(["0x2"]), Kind::Bypass),
        (
            "eth_getBlockByNumber",
            json!(["0x2", false, 1]),
            Kind::Bypass,
        ),
        (
            "eth_getBlockReceipts",
            json!([format!("0x{}", "0".repeat(64))]),
            cache(
                "eth_getBlockReceipts",
                json!([format!("0x{}", "0".repeat(64))]),
                false,
            ),
        ),
        (
            "eth_getBlockReceipts",
            json!([hs(2)]),
            cache("eth_getBlockReceipts", json!([hs(2)]), true),
        ),
        // No-argument methods with arguments: the upstream refuses them, so do we not answer.
        ("net_version", json!([1]), Kind::Bypass),
        ("eth_blockNumber", json!([1]), Kind::Bypass),
        ("eth_chainId", json!(["x"]), Kind::Bypass),
        (
            "eth_getBlockTransactionCountByNumber",
            json!(["0x13"]),
            cache("eth_getBlockTransactionCountByHash", json!([hs(19)]), false),
        ),
        (
            "eth_getTransactionByBlockNumberAndIndex",
            json!(["0x1", "0x0"]),
            cache(
                "eth_getTransactionByBlockNumberAndIndex",
                json!(["0x1", "0x0"]),
                true,
            ),
        ),
        (
            "eth_getBlockReceipts",
            json!(["latest"]),
            cache("eth_getBlockReceipts", json!([hs(20)]), false),
        ),
        // ByHash: immutable; final for the gateway only when known final.
        (
            "eth_getBlockByHash",
            json!([hs(3), false]),
            cache("eth_getBlockByHash", json!([hs(3), false]), true),
        ),
        (
            "eth_getBlockByHash",
            json!([hs(19), false]),
            cache("eth_getBlockByHash", json!([hs(19), false]), false),
        ),
        ("eth_getBlockByHash", json!(["0x12", false]), Kind::Bypass),
        // Transaction lookups: kept only once final (decided on the answer).
        (
            "eth_getTransactionReceipt",
            json!([hs(7)]),
            Kind::Cache {
                method: "eth_getTransactionReceipt".into(),
                params: json!([hs(7)]),
                final_for_client: false,
                only_if_final: true,
            },
        ),
        // Logs: numbers resolved, ranges capped, final ranges cached.
        (
            "eth_getLogs",
            json!([{"fromBlock": "0x1", "toBlock": "0x9"}]),
            Kind::Logs {
                from: 1,
                to: 9,
                cached: true,
                final_for_client: true,
            },
        ),
        (
            "eth_getLogs",
            json!([{"fromBlock": "0x1", "toBlock": "finalized"}]),
            Kind::Logs {
                from: 1,
                to: 10,
                cached: true,
                final_for_client: false,
            },
        ),
        (
            "eth_getLogs",
            json!([{"fromBlock": "0x5"}]),
            Kind::Logs {
                from: 5,
                to: 20,
                cached: false,
                final_for_client: false,
            },
        ),
        (
            "eth_getLogs",
            json!([{"fromBlock": "earliest", "toBlock": "latest"}]),
            Kind::Logs {
                from: 0,
                to: 20,
                cached: false,
                final_for_client: false,
            },
        ),
        (
            "eth_getLogs",
            json!([{"blockHash": hs(2)}]),
            cache("eth_getLogs", json!([{"blockHash": hs(2)}]), true),
        ),
        (
            "eth_getLogs",
            json!([{"fromBlock": "0x9", "toBlock": "0x1"}]),
            Kind::Bypass,
        ),
        (
            "eth_getLogs",
            json!([{"fromBlock": "0x1", "extra": 1}]),
            Kind::Bypass,
        ),
        (
            "eth_getLogs",
            json!([{"fromBlock": "Latest"}]),
            Kind::Bypass,
        ),
        (
            "eth_getLogs",
            json!([{"fromBlock": "0x1", "topics": [1]}]),
            Kind::Bypass,
        ),
        (
            "eth_getLogs",
            json!([{"fromBlock": "0x1"}, 1]),
            Kind::Bypass,
        ),
        (
            "eth_getLogs",
            json!([{"fromBlock": "0x0", "toBlock": "0x99"}]),
            Kind::Bypass,
        ),
        // Never cached.
        ("eth_sendRawTransaction", json!(["0x02"]), Kind::Bypass),
        ("eth_newFilter", json!([{}]), Kind::Bypass),
        ("eth_subscribe", json!(["newHeads"]), Kind::Bypass),
        ("txpool_content", json!([]), Kind::Bypass),
        ("eth_gasPrice", json!([]), Kind::Bypass),
    ];
    for (m, p, want) in rows {
        assert_eq!(
            kind(plan(&c, &c.view(), m, p.to_string().as_bytes(), LIMITS)),
            want,
            "{m} {p}"
        );
    }
    // A range wider than the cap is refused with a clear error.
    let wide = kind(plan(
        &c,
        &c.view(),
        "eth_getLogs",
        br#"[{"fromBlock": "0x0", "toBlock": "latest"}]"#,
        LogLimits {
            max_range: 5,
            chunk: 1,
        },
    ));
    assert_eq!(wide, Kind::Reject);
}

/// Tags pinned to a tip block fall back to its number; hashes the node cannot place are marked
/// (for negative answers and learning); odd spellings of the same question get their own keys.
#[test]
fn fallbacks_unknown_hashes_and_keys() {
    let c = chain();
    let v = c.view();
    let a = "0x00000000000000000000000000000000000000aa";
    let p = |m: &str, params: Value| plan(&c, &v, m, params.to_string().as_bytes(), LIMITS);
    let Plan::Cache(CachePlan {
        fallback,
        unknown_hash,
        ..
    }) = p("eth_getBalance", json!([a, "latest"]))
    else {
        panic!("cacheable")
    };
    assert_eq!(
        fallback.as_deref(),
        Some(format!(r#"["{a}","0x14"]"#).as_bytes())
    );
    assert_eq!(unknown_hash, None);
    let Plan::Cache(CachePlan {
        method, fallback, ..
    }) = p(
        "eth_getTransactionByBlockNumberAndIndex",
        json!(["latest", "0x0"]),
    )
    else {
        panic!("cacheable")
    };
    assert_eq!(method, "eth_getTransactionByBlockHashAndIndex");
    assert_eq!(fallback.as_deref(), Some(&br#"["0x14","0x0"]"#[..]));
    // Named blocks are never re-asked another way.
    let Plan::Cache(CachePlan { fallback, .. }) =
        p("eth_getBalance", json!([a, {"blockHash": hs(15)}]))
    else {
        panic!("cacheable")
    };
    assert_eq!(fallback, None);
    let stranger = format!("0x{}", "ee".repeat(32));
    for (m, params) in [
        ("eth_getBlockByHash", json!([stranger, false])),
        ("eth_getBalance", json!([a, {"blockHash": stranger}])),
        ("eth_getLogs", json!([{"blockHash": stranger}])),
    ] {
        let Plan::Cache(CachePlan {
            unknown_hash,
            final_for_client,
            ..
        }) = p(m, params)
        else {
            panic!("cacheable: {m}")
        };
        assert_eq!(unknown_hash, Some(stranger.parse().unwrap()), "{m}");
        assert!(!final_for_client, "{m}");
    }
    // The numbers are passed on exactly as written (no float round trip).
    let big = br#"[{"to":"0x00000000000000000000000000000000000000aa","value":340282366920938463463374607431768211455},"0x2"]"#;
    let Plan::Cache(CachePlan { params, .. }) = plan(&c, &v, "eth_call", big, LIMITS) else {
        panic!("cacheable")
    };
    assert_eq!(&params[..], &big[..]);
    // Hex case is one question: one key.
    let key_of = |p: Plan| match p {
        Plan::Cache(c) => c.key,
        other => panic!("{other:?}"),
    };
    let lower = key_of(p("eth_getBalance", json!([a, "0x5"])));
    let upper = key_of(p(
        "eth_getBalance",
        json!([a.to_uppercase().replace("0X", "0x"), "0x5"]),
    ));
    assert_eq!(lower, upper, "hex case is one question");
}

#[test]
fn chunks_cover_the_range_exactly() {
    assert_eq!(chunks(0, 9, 4), vec![(0, 3), (4, 7), (8, 9)]);
    assert_eq!(chunks(5, 5, 100), vec![(5, 5)]);
    let c = chunks(100, 10_099, 1000);
    assert_eq!(c.len(), 10);
    assert_eq!(c.first(), Some(&(100, 1099)));
    assert_eq!(c.last(), Some(&(9100, 10_099)));
}

#[test]
fn tx_finality_is_read_from_the_answer() {
    let r = br#"{"blockNumber":"0x10","hash":"0x1"}"#;
    assert!(tx_is_final(r, Some(16)));
    assert!(!tx_is_final(r, Some(15)));
    assert!(!tx_is_final(r, None));
    assert!(!tx_is_final(b"null", Some(100)));
}

#[test]
fn hand_written_hex_matches_the_formatter() {
    for n in [
        0,
        1,
        0xf,
        0x10,
        0xabc,
        u64::from(u32::MAX),
        1 << 63,
        u64::MAX,
    ] {
        assert_eq!(qty(n), format!("{n:#x}"));
        assert_eq!(quoted_qty(n), format!("\"{n:#x}\""));
    }
    for h in [B256::ZERO, B256::repeat_byte(0xa5), h(7)] {
        assert_eq!(quoted_hash(&h), format!("\"{h:#x}\""));
        assert_eq!(hash_object(&h), format!(r#"{{"blockHash":"{h:#x}"}}"#));
    }
}
