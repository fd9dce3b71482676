//! The slow-node bench of hedged reads, run by `loadtests/hedge.sh`: the e2e test's workload
//! (`e2e::SlowNodes`, `e2e::read_balances`) at a larger size. anvil behind two edge nodes, the
//! one nearer the caller behind an upstream that holds every `--every`th balance read for
//! `--slow-ms`; per run, a gateway with `[hedge] enabled = false`, then one with hedging on
//! (`--max-share`), each with both nodes fresh, measuring `--reads` reads of distinct accounts
//! (cache misses everywhere) from `--workers` sequential clients after `--warm-up` reads.
//! Prints one `HEDGERESULT {json}` line per (run, mode).
//!
//! Everything runs in this process but anvil: the gateway and nodes share its cores with the
//! clients, as in the e2e suite.

use std::collections::HashMap;
use std::time::Duration;

use e2e::{read_balances, SlowNodes};
use serde_json::json;

struct Args {
    runs: u64,
    reads: u64,
    warm_up: u64,
    workers: u64,
    every: usize,
    slow: Duration,
    max_share: f64,
}

fn args() -> Args {
    let mut m: HashMap<String, String> = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let k = k.trim_start_matches("--").to_string();
        let v = it.next().unwrap_or_else(|| panic!("--{k} needs a value"));
        m.insert(k, v);
    }
    let get = |k: &str, d: &str| m.get(k).cloned().unwrap_or_else(|| d.to_string());
    let num = |k: &str, d: &str| -> u64 {
        get(k, d)
            .parse()
            .unwrap_or_else(|_| panic!("--{k}: a number"))
    };
    Args {
        runs: num("runs", "3"),
        reads: num("reads", "2000"),
        warm_up: num("warm-up", "100"),
        workers: num("workers", "4"),
        every: num("every", "25") as usize,
        slow: Duration::from_millis(num("slow-ms", "300")),
        max_share: get("max-share", "0.1")
            .parse()
            .expect("--max-share: a number"),
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    let s = SlowNodes::start(a.every, a.slow).await;
    // Accounts never repeat across runs and modes, so every read misses every cache.
    let mut next_account = 0;
    for run in 1..=a.runs {
        for hedging in [false, true] {
            let table = if hedging {
                format!("[hedge]\nmax_share = {}\n", a.max_share)
            } else {
                "[hedge]\nenabled = false\n".to_string()
            };
            let (gw, nodes) = s.stack(&table).await;
            let url = format!("http://{}/", gw.http_addr);
            read_balances(&url, a.warm_up, next_account, a.workers).await;
            let counter = |o: &str| gw.app.metrics.hedge.outcomes.with_label_values(&[o]).get();
            let before = ["sent", "won", "lost", "budget_exhausted"].map(counter);
            let r = read_balances(&url, a.reads, next_account + a.warm_up, a.workers).await;
            next_account += a.warm_up + a.reads;
            let [sent, won, lost, exhausted] =
                ["sent", "won", "lost", "budget_exhausted"].map(counter);
            let ms = |q: f64| r.quantile(q).as_secs_f64() * 1e3;
            let line = json!({
                "run": run, "hedging": hedging, "reads": a.reads, "workers": a.workers,
                "every": a.every, "slow_ms": a.slow.as_millis() as u64, "max_share": a.max_share,
                "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p95_ms": ms(0.95), "p99_ms": ms(0.99),
                "p999_ms": ms(0.999), "max_ms": ms(1.0), "errors": r.errors,
                "hedges_sent": sent - before[0], "hedges_won": won - before[1],
                "hedges_lost": lost - before[2], "budget_exhausted": exhausted - before[3],
                "by_region": r.by_region,
            });
            println!("HEDGERESULT {line}");
            eprintln!(
                "run {run}, hedging {hedging}: p50 {:.1} ms, p99 {:.1} ms, hedges {} of {}",
                ms(0.5),
                ms(0.99),
                sent - before[0],
                a.reads
            );
            for n in nodes {
                n.shutdown().await;
            }
            gw.shutdown().await;
        }
    }
}
