//! A bounded differential fuzz of parameters: many spellings of addresses, numbers, tags,
//! block hashes and EIP-1898 objects, extra and missing params, asked through the gateway and
//! of anvil directly. Requests are drawn with replacement from a fixed pool, so the caches
//! answer the repeats, in batches and from concurrent callers. Whatever anvil answers, the
//! gateway must answer the same: no answer where anvil errors, no error where it answers,
//! equal results otherwise. No block is mined while it runs, so moving tags hold still.

use std::time::{Duration, Instant};

use serde_json::Value;

use e2e::*;

/// xorshift64*: each run prints its seed; `FUZZ_SEED=<seed>` replays it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &'a [String]) -> &'a str {
        &xs[self.below(xs.len())]
    }
}

/// What the fuzz knows of the chain: real hashes, so by-hash questions hit something.
struct Chain {
    block_hashes: Vec<String>,
    tx_hashes: Vec<String>,
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

/// Spellings of an address: the ones an upstream reads alike, and ones it refuses.
fn addresses() -> Vec<String> {
    let a = "f39fd6e51aad88f6f4ce6ab8827279cfffb92266";
    let checksum = "f39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
    vec![
        quoted(&format!("0x{a}")),
        quoted(&format!("0x{checksum}")),
        quoted(&format!("0x{}", a.to_uppercase())),
        quoted(&format!("0X{a}")),
        quoted(a),
        quoted(&format!("0x{}", &a[2..])),
        quoted(&format!("0x{a}00")),
        quoted("0x0000000000000000000000000000000000000000"),
        quoted("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
        "null".into(),
        "1".into(),
    ]
}

/// Spellings of a block parameter for state reads (tags, numbers, hashes, EIP-1898 objects).
fn blocks(c: &Chain) -> Vec<String> {
    let h = &c.block_hashes;
    let zeros = |n: u8| format!("0x{}{:02x}", "00".repeat(31), n);
    let mut v: Vec<String> = [
        "latest",
        "earliest",
        "safe",
        "finalized",
        "Latest",
        "LATEST",
        "0x0",
        "0x1",
        "0x2",
        "0x3",
        "0x01",
        "0X1",
        "0x",
        "1",
        "0xfffffff",
        "0x10000000000000000",
    ]
    .iter()
    .map(|s| quoted(s))
    .collect();
    v.extend(["1", "null", "true", "[]", "{}"].map(String::from));
    v.push(quoted(&zeros(0)));
    v.push(quoted(&zeros(2)));
    v.push(quoted(&h[1]));
    v.push(quoted(&h[2].to_uppercase().replace("0X", "0x")));
    v.push(quoted(&h[2].replace("0x", "0X")));
    v.push(format!(r#"{{"blockHash":"{}"}}"#, h[1]));
    v.push(format!(
        r#"{{"blockHash":"{}","requireCanonical":true}}"#,
        h[2]
    ));
    v.push(format!(
        r#"{{"blockHash":"{}","requireCanonical":false}}"#,
        h[3]
    ));
    v.push(format!(r#"{{"blockHash":"{}","extra":1}}"#, h[1]));
    v.push(format!(
        r#"{{"blockHash":"{}","blockHash":"{}"}}"#,
        h[1], h[2]
    ));
    v.push(format!(r#"{{"blockHash":"{}","blockNumber":"0x1"}}"#, h[1]));
    v.push(format!(r#"{{"blockHash":"{}"}}"#, zeros(9)));
    v.push(r#"{"blockNumber":"0x1"}"#.into());
    v.push(r#"{"blockNumber":"latest"}"#.into());
    v.push(r#"{"blockNumber":"0x01"}"#.into());
    v.push(r#"{"blockNumber":1}"#.into());
    v.push(r#"{"blockNumber":"0x1","requireCanonical":true}"#.into());
    v
}

/// One request's params, raw, for a method drawn from those the policy treats specially.
fn params(r: &mut Rng, c: &Chain, addrs: &[String], blks: &[String]) -> (&'static str, String) {
    let quantities: Vec<String> = ["0x0", "0x1", "0x00", "0X0", "0", "0x20"]
        .iter()
        .map(|s| quoted(s))
        .collect();
    let bools: Vec<String> = ["true", "false", "\"false\"", "0", "null"]
        .map(String::from)
        .to_vec();
    let hashes: Vec<String> = c
        .block_hashes
        .iter()
        .chain(&c.tx_hashes)
        .map(|h| quoted(h))
        .chain([quoted(&format!("0x{}", "ab".repeat(32))), quoted("0x1234")])
        .collect();
    let tx_hashes: Vec<String> = c
        .tx_hashes
        .iter()
        .map(|h| quoted(h))
        .chain([
            quoted(&format!("0x{}", "cd".repeat(32))),
            quoted(&c.tx_hashes[0].replace("0x", "0X")),
        ])
        .collect();
    let (a, b) = (r.pick(addrs).to_string(), r.pick(blks).to_string());
    let big = "340282366920938463463374607431768211455";
    let (method, mut p): (&'static str, Vec<String>) = match r.below(14) {
        0 => ("eth_getBalance", vec![a, b]),
        1 => ("eth_getCode", vec![a, b]),
        2 => ("eth_getTransactionCount", vec![a, b]),
        3 => ("eth_getStorageAt", vec![a, r.pick(&quantities).into(), b]),
        4 => (
            "eth_call",
            vec![
                format!(
                    r#"{{"to":{a},"data":"0x","value":{}}}"#,
                    if r.below(2) == 0 { "\"0x0\"" } else { big }
                ),
                b,
            ],
        ),
        5 => ("eth_getBlockByNumber", vec![b, r.pick(&bools).into()]),
        6 => (
            "eth_getBlockByHash",
            vec![r.pick(&hashes).into(), r.pick(&bools).into()],
        ),
        7 => ("eth_getBlockTransactionCountByNumber", vec![b]),
        8 => (
            "eth_getTransactionByBlockNumberAndIndex",
            vec![b, r.pick(&quantities).into()],
        ),
        9 => ("eth_getBlockReceipts", vec![b]),
        10 => ("eth_getTransactionReceipt", vec![r.pick(&tx_hashes).into()]),
        11 => ("eth_getTransactionByHash", vec![r.pick(&tx_hashes).into()]),
        12 => {
            let range = match r.below(4) {
                0 => format!(r#"{{"fromBlock":"0x0","toBlock":{b}}}"#),
                1 => format!(r#"{{"fromBlock":{b}}}"#),
                2 => format!(
                    r#"{{"blockHash":"{}"}}"#,
                    c.block_hashes[r.below(c.block_hashes.len())]
                ),
                _ => r#"{"fromBlock":"0x0","toBlock":"latest","extra":1}"#.to_string(),
            };
            ("eth_getLogs", vec![range])
        }
        _ => (
            ["eth_blockNumber", "eth_chainId", "net_version"][r.below(3)],
            vec![],
        ),
    };
    // Extra and missing params now and then.
    match r.below(10) {
        0 => p.push("\"latest\"".into()),
        1 => {
            p.pop();
        }
        2 if p.is_empty() => p.push("1".into()),
        _ => {}
    }
    (method, format!("[{}]", p.join(",")))
}

fn body(id: usize, method: &str, params: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#)
}

/// `Ok(result)` or `Err(error code)`.
fn outcome(v: &Value) -> Result<Value, i64> {
    match (v.get("result"), v.get("error")) {
        (Some(r), None) => Ok(r.clone()),
        (_, Some(e)) => Err(e["code"].as_i64().unwrap_or(0)),
        _ => Err(i64::MIN),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_spellings_get_the_upstreams_answer() {
    let anvil = Anvil::start(&[]).await;
    let gw = start_gateway("").await;
    let _node = start_node(&gw, &NodeSpec::eu_west(&anvil.url)).await;
    let http = Http::default();
    // A few blocks with a transfer each, so blocks, receipts and logs exist.
    let mut tx_hashes = Vec::new();
    for i in 0..4 {
        let tx = http
            .rpc(
                &anvil.url,
                "eth_sendTransaction",
                serde_json::json!([{"from": "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
                    "to": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8", "value": format!("{:#x}", 1000 + i)}]),
            )
            .await;
        tx_hashes.push(tx["result"].as_str().unwrap().to_string());
        // Anvil may put quick transfers in one block: mine one more each time, so there are
        // always several blocks to ask about.
        http.rpc(&anvil.url, "evm_mine", serde_json::json!([]))
            .await;
    }
    let head = http
        .rpc(&anvil.url, "eth_blockNumber", serde_json::json!([]))
        .await;
    let head = u64::from_str_radix(
        head["result"].as_str().unwrap().trim_start_matches("0x"),
        16,
    )
    .unwrap();
    assert!(head >= 3, "the transfers were mined: head {head}");
    let mut block_hashes = Vec::new();
    for n in 0..=head {
        let b = http
            .rpc(
                &anvil.url,
                "eth_getBlockByNumber",
                serde_json::json!([format!("{n:#x}"), false]),
            )
            .await;
        block_hashes.push(b["result"]["hash"].as_str().unwrap().to_string());
    }
    wait_serving(&gw, 1).await;
    // The node has the head before the fuzz starts (else `latest` differs on purpose).
    let url = format!("http://{}/", gw.http_addr);
    for _ in 0..100 {
        let bn = http
            .rpc(&url, "eth_blockNumber", serde_json::json!([]))
            .await;
        if bn["result"] == format!("{head:#x}") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let chain = Chain {
        block_hashes,
        tx_hashes,
    };
    // FUZZ_SEED replays a run.
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
        | 1;
    println!("fuzz seed {seed}");
    let mut rng = Rng(seed);
    let (addrs, blks) = (addresses(), blocks(&chain));
    let pool: Vec<(&str, String)> = (0..400)
        .map(|_| params(&mut rng, &chain, &addrs, &blks))
        .collect();
    // Anvil's answer to each pooled request, asked directly and alone.
    let mut want = Vec::new();
    for (i, (m, p)) in pool.iter().enumerate() {
        want.push(outcome(&http.post(&anvil.url, body(i, m, p)).await.json()));
    }

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut asked = 0usize;
    let mut mismatches = Vec::new();
    while Instant::now() < deadline && asked < 20_000 {
        // Four concurrent callers, each one batch (or a single call) of pooled requests.
        let rounds: Vec<Vec<usize>> = (0..4)
            .map(|_| {
                (0..1 + rng.below(8))
                    .map(|_| rng.below(pool.len()))
                    .collect()
            })
            .collect();
        let replies = futures::future::join_all(rounds.iter().map(|idx| {
            let text = if idx.len() == 1 {
                body(idx[0], pool[idx[0]].0, &pool[idx[0]].1)
            } else {
                let parts: Vec<String> = idx
                    .iter()
                    .map(|&i| body(i, pool[i].0, &pool[i].1))
                    .collect();
                format!("[{}]", parts.join(","))
            };
            http.post(&url, text)
        }))
        .await;
        for (idx, reply) in rounds.iter().zip(replies) {
            let v = reply.json();
            let answers: Vec<Value> = match v {
                Value::Array(a) => a,
                one => vec![one],
            };
            assert_eq!(answers.len(), idx.len(), "one answer per call");
            for (&i, a) in idx.iter().zip(&answers) {
                asked += 1;
                let got = outcome(a);
                let agree = match (&got, &want[i]) {
                    (Ok(g), Ok(w)) => g == w,
                    (Err(_), Err(_)) => true,
                    _ => false,
                };
                if !agree {
                    let short = |o: &Result<Value, i64>| {
                        let s = format!("{o:?}");
                        s.chars().take(120).collect::<String>()
                    };
                    mismatches.push(format!(
                        "{} {} -> gateway {}, anvil {}",
                        pool[i].0,
                        pool[i].1,
                        short(&got),
                        short(&want[i])
                    ));
                }
            }
        }
    }
    mismatches.sort();
    mismatches.dedup();
    println!(
        "fuzz: {asked} calls, {} distinct requests, {} distinct mismatches",
        pool.len(),
        mismatches.len()
    );
    assert!(asked > 1000, "too few calls to mean anything: {asked}");
    assert!(
        mismatches.is_empty(),
        "seed {seed}: {} mismatches, e.g.:\n{}",
        mismatches.len(),
        mismatches
            .iter()
            .take(15)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
