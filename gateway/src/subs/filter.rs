//! `eth_subscribe` params: the kind, and for `logs` the filter in canonical form
//! ([`LogFilter`]), so clients asking the same thing in other spellings share one feed.

use proto::sub::{LogFilter, SubKind};
use serde_json::Value;

/// Addresses and per-position topic alternatives one filter may list.
pub const MAX_ALTERNATIVES: usize = 1000;

/// Parses `eth_subscribe` params (raw JSON; empty when absent).
pub fn parse(params: &[u8]) -> Result<(SubKind, Option<LogFilter>), String> {
    let v: Vec<Value> = serde_json::from_slice(params)
        .map_err(|_| "eth_subscribe params must be an array: [kind, filter?]".to_string())?;
    let kind = match v.first() {
        Some(Value::String(k)) => SubKind::parse(k).ok_or_else(|| {
            format!("unknown subscription {k:?}; this gateway serves newHeads, logs and newPendingTransactions")
        })?,
        _ => return Err("eth_subscribe needs the subscription kind as its first param".into()),
    };
    match (kind, &v[1..]) {
        (SubKind::Logs, []) => Ok((kind, Some(LogFilter::default()))),
        (SubKind::Logs, [f]) => Ok((kind, Some(log_filter(f)?))),
        (_, []) => Ok((kind, None)),
        _ => Err(format!(
            "too many params for {}: the gateway takes {}",
            kind.as_str(),
            match kind {
                SubKind::Logs => "[\"logs\", {address, topics}]",
                _ => "no options",
            }
        )),
    }
}

fn log_filter(f: &Value) -> Result<LogFilter, String> {
    let Value::Object(o) = f else {
        return Err("the logs filter must be an object {address, topics}".into());
    };
    for key in o.keys() {
        match key.as_str() {
            "address" | "topics" => {}
            "fromBlock" | "toBlock" | "blockHash" => {
                return Err(format!(
                    "{key} is not taken by a logs subscription: it sends the logs of each new block (use eth_getLogs for past blocks)"
                ))
            }
            other => return Err(format!("unknown logs filter key {other:?}")),
        }
    }
    let mut address = match o.get("address") {
        None | Some(Value::Null) => Vec::new(),
        Some(a) => one_or_many(a, 20, "address")?.unwrap_or_default(),
    };
    address.sort();
    address.dedup();
    let topics = match o.get("topics") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ts)) if ts.len() <= 4 => ts
            .iter()
            .map(|t| {
                one_or_many(t, 32, "topic").map(|alts| {
                    alts.map(|mut a| {
                        a.sort();
                        a.dedup();
                        a
                    })
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err("topics must be an array of at most 4 positions".into()),
    };
    Ok(LogFilter { address, topics })
}

/// `null` (any), one hex value, or a list of alternatives; lower-cased.
fn one_or_many(v: &Value, bytes: usize, what: &str) -> Result<Option<Vec<String>>, String> {
    let one = |s: &Value| match s.as_str() {
        Some(h) if is_hex(h, bytes) => Ok(h.to_ascii_lowercase()),
        _ => Err(format!(
            "each {what} must be 0x and {} hex digits",
            2 * bytes
        )),
    };
    match v {
        Value::Null => Ok(None),
        Value::Array(list) if list.is_empty() => Ok(None),
        Value::Array(list) if list.len() > MAX_ALTERNATIVES => Err(format!(
            "at most {MAX_ALTERNATIVES} alternatives per {what}"
        )),
        Value::Array(list) => list.iter().map(one).collect::<Result<_, _>>().map(Some),
        s => Ok(Some(vec![one(s)?])),
    }
}

fn is_hex(s: &str, bytes: usize) -> bool {
    s.len() == 2 + 2 * bytes && s.starts_with("0x") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0x00000000000000000000000000000000000000aa";
    const T: &str = "0x00000000000000000000000000000000000000000000000000000000000000ff";

    #[test]
    fn spellings_of_one_filter_share_a_key() {
        let a = parse(
            format!(
                r#"["logs",{{"address":"{}","topics":["{T}"]}}]"#,
                A.to_uppercase().replace("0X", "0x")
            )
            .as_bytes(),
        )
        .unwrap();
        let b =
            parse(format!(r#"["logs",{{"address":["{A}","{A}"],"topics":[["{T}"]]}}]"#).as_bytes())
                .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.1.unwrap().address, vec![A.to_string()]);
        // A trailing wildcard asks for a second topic: another filter (geth).
        let two =
            parse(format!(r#"["logs",{{"address":"{A}","topics":["{T}",null]}}]"#).as_bytes())
                .unwrap();
        assert_ne!(two, b);
        assert_eq!(
            parse(br#"["newHeads"]"#).unwrap(),
            (SubKind::NewHeads, None)
        );
        assert_eq!(
            parse(br#"["logs"]"#).unwrap(),
            (SubKind::Logs, Some(LogFilter::default()))
        );
    }

    #[test]
    fn bad_params_say_what_is_wrong() {
        for (params, says) in [
            (r#"["newBlocks"]"#, "unknown subscription"),
            (r#"{}"#, "must be an array"),
            (r#"[]"#, "kind as its first param"),
            (r#"["newHeads", true]"#, "too many params"),
            (r#"["logs", {"fromBlock":"0x1"}]"#, "fromBlock is not taken"),
            (r#"["logs", {"address":"0x12"}]"#, "each address must be"),
            (
                r#"["logs", {"topics":[null,null,null,null,null]}]"#,
                "at most 4",
            ),
            (r#"["logs", {"colour":"red"}]"#, "unknown logs filter key"),
        ] {
            let e = parse(params.as_bytes()).unwrap_err();
            assert!(e.contains(says), "{params}: {e}");
        }
    }
}
