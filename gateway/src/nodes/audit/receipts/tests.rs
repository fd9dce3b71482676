//! Against a real block from anvil, with its transactions whole (a legacy transfer, an EIP-1559
//! deploy emitting a log, an EIP-2930 transfer), kept in `fixtures/`.

use super::*;

const BLOCK: &str = include_str!("../fixtures/block.json");
const RECEIPTS: &str = include_str!("../fixtures/receipts.json");

fn hash() -> B256 {
    let b: Value = serde_json::from_str(BLOCK).unwrap();
    b["hash"].as_str().unwrap().parse().unwrap()
}

fn receipts() -> Vec<Value> {
    serde_json::from_str(RECEIPTS).unwrap()
}

fn verified() -> Verified {
    verify_block(hash(), BLOCK.as_bytes(), RECEIPTS.as_bytes()).expect("the real block checks")
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

#[test]
fn honest_answers_are_consistent() {
    let b = verified();
    for r in receipts() {
        assert_eq!(
            check_answer(
                "eth_getTransactionReceipt",
                &bytes(&r),
                std::slice::from_ref(&b)
            ),
            Verdict::Consistent
        );
        assert_eq!(
            blocks_of("eth_getTransactionReceipt", &bytes(&r)),
            vec![hash()]
        );
    }
    let all = Value::Array(receipts());
    assert_eq!(
        check_answer(
            "eth_getBlockReceipts",
            &bytes(&all),
            std::slice::from_ref(&b)
        ),
        Verdict::Consistent
    );
    let logs: Vec<Value> = receipts()
        .iter()
        .flat_map(|r| r["logs"].as_array().cloned().unwrap())
        .collect();
    assert!(!logs.is_empty());
    let logs = Value::Array(logs);
    assert_eq!(blocks_of("eth_getLogs", &bytes(&logs)), vec![hash()]);
    assert_eq!(
        check_answer("eth_getLogs", &bytes(&logs), &[b]),
        Verdict::Consistent
    );
    assert!(blocks_of("eth_getTransactionReceipt", b"null").is_empty());
}

#[test]
fn a_changed_log_is_caught_with_or_without_the_block_receipts_changed_too() {
    let mut rs = receipts();
    let i = rs.iter().position(|r| !r["logs"][0].is_null()).unwrap();
    rs[i]["logs"][0]["data"] = Value::String(format!("0x{}", "11".repeat(32)));
    // The receipt alone changed: it is not what the block's receipts say.
    let b = verified();
    let v = check_answer(
        "eth_getTransactionReceipt",
        &bytes(&rs[i]),
        std::slice::from_ref(&b),
    );
    assert!(matches!(v, Verdict::Wrong(_)), "{v:?}");
    let log = Value::Array(vec![rs[i]["logs"][0].clone()]);
    assert!(matches!(
        check_answer("eth_getLogs", &bytes(&log), &[b]),
        Verdict::Wrong(_)
    ));
    // The block's receipts changed alike: they no longer build its receiptsRoot.
    let err = verify_block(hash(), BLOCK.as_bytes(), &bytes(&Value::Array(rs))).unwrap_err();
    assert!(
        matches!(&err, Verdict::Wrong(w) if w.contains("receiptsRoot")),
        "{err:?}"
    );
}

#[test]
fn a_forged_header_or_reordered_receipts_are_caught() {
    let mut block: Value = serde_json::from_str(BLOCK).unwrap();
    block["receiptsRoot"] = Value::String(format!("0x{}", "22".repeat(32)));
    let err = verify_block(hash(), &bytes(&block), RECEIPTS.as_bytes()).unwrap_err();
    assert!(
        matches!(&err, Verdict::Unknown(w) if w.contains("hashes to")),
        "{err:?}"
    );
    let mut rs = receipts();
    rs.swap(0, 1);
    assert!(matches!(
        verify_block(hash(), BLOCK.as_bytes(), &bytes(&Value::Array(rs))),
        Err(Verdict::Wrong(_))
    ));
    assert!(matches!(
        verify_block(hash(), b"{}", RECEIPTS.as_bytes()),
        Err(Verdict::Unknown(_))
    ));
}

#[test]
fn a_changed_transaction_does_not_build_the_transactions_root() {
    let mut block: Value = serde_json::from_str(BLOCK).unwrap();
    assert!(
        block["transactions"][0].is_object(),
        "the fixture has whole transactions"
    );
    block["transactions"][0]["value"] = Value::String("0x2".into());
    let err = verify_block(hash(), &bytes(&block), RECEIPTS.as_bytes()).unwrap_err();
    assert!(
        matches!(&err, Verdict::Wrong(w) if w.contains("transactionsRoot")),
        "{err:?}"
    );
    // A claimed hash that is not the transaction's.
    let mut block: Value = serde_json::from_str(BLOCK).unwrap();
    let other = block["transactions"][1]["hash"].clone();
    block["transactions"][0]["hash"] = other;
    assert!(matches!(
        verify_block(hash(), &bytes(&block), RECEIPTS.as_bytes()),
        Err(Verdict::Wrong(_))
    ));
}
