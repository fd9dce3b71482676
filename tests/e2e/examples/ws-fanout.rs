//! The WebSocket fan-out bench of issue 13, run by `loadtests/ws-fanout.sh` (which starts
//! anvil and the gateway as release processes and gives their addresses).
//!
//! This process runs the edge node itself (on a runtime and thread of its own), so the instant
//! a block is published (the node's chain-state watch fires) and the instant each subscriber
//! receives it are read from one clock. It opens `--n` WebSocket connections to the gateway,
//! each with one `eth_subscribe ["newHeads"]`, reads the gateway's RSS before and after they
//! are set up, then mines `--blocks` blocks on anvil (`evm_mine`, `--interval-ms` apart) and
//! records, per block, the delay from publish to every subscriber's receipt. It prints one
//! `WFRESULT {json}` line; the script turns it into the table.
//!
//! The clients run here, on `--threads` tokio workers, on the same cores as the gateway: their
//! reading is part of every delay measured.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Handshakes in flight at once: under the gateway's per-address cap on HTTP connections
/// (`server.max_connections_per_ip`, 256), which holds until the upgrade.
const CONNECT_AT_ONCE: usize = 64;
/// Warm-up subscribers (and blocks) before the baseline memory reading.
const WARM_SUBS: usize = 16;
const WARM_BLOCKS: usize = 2;
/// How long after the last block the readers may take before they are stopped.
const DRAIN: Duration = Duration::from_secs(10);
/// Clock ticks per second of `/proc/PID/stat` times (`getconf CLK_TCK`, 100 on Linux).
const CLK_TCK: f64 = 100.0;

struct Args {
    ws: String,
    http: String,
    quic: String,
    fingerprint: String,
    token: String,
    anvil: String,
    gateway_pid: u32,
    n: usize,
    blocks: usize,
    interval: Duration,
    idle: Duration,
    threads: usize,
}

fn args() -> Args {
    let mut m: HashMap<String, String> = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let Some(k) = k.strip_prefix("--") else {
            usage(&format!("unexpected argument {k}"));
        };
        let v = it
            .next()
            .unwrap_or_else(|| usage(&format!("--{k} needs a value")));
        m.insert(k.to_string(), v);
    }
    let s = |k: &str| {
        m.get(k)
            .cloned()
            .unwrap_or_else(|| usage(&format!("--{k} missing")))
    };
    let num = |k: &str, d: u64| {
        m.get(k).map_or(d, |v| {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("--{k}: not a number")))
        })
    };
    let http = s("gateway");
    Args {
        ws: http.replacen("http://", "ws://", 1),
        http,
        quic: s("quic"),
        fingerprint: s("fingerprint"),
        token: s("token"),
        anvil: s("anvil"),
        gateway_pid: num("gateway-pid", 0) as u32,
        n: num("n", 10_000) as usize,
        blocks: num("blocks", 60) as usize,
        interval: Duration::from_millis(num("interval-ms", 1000)),
        idle: Duration::from_secs(num("idle-secs", 5)),
        threads: num("threads", 2) as usize,
    }
}

fn usage(why: &str) -> ! {
    eprintln!(
        "ws-fanout: {why}\n\
         usage: ws-fanout --gateway http://IP:PORT --quic IP:PORT --fingerprint FP --token T \
         --anvil URL --gateway-pid PID [--n 10000] [--blocks 60] [--interval-ms 1000] \
         [--idle-secs 5] [--threads 2]\n\
         (loadtests/ws-fanout.sh starts everything and runs it)"
    );
    std::process::exit(2)
}

fn main() {
    let a = args();
    raise_fd_limit(a.n as u64 + 512);

    // The node on a runtime of its own, one worker, as its own process would have: the
    // clients' work does not hold up what it sends.
    let node_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("edge-node")
        .enable_all()
        .build()
        .unwrap();
    let spec = e2e::NodeSpec::eu_west(&a.anvil);
    let cfg = e2e::node_config_for(&a.quic, &a.fingerprint, &spec, &a.token);
    let node = node_rt
        .block_on(edge_node::EdgeNode::start(
            cfg,
            proto::identity::Identity::generate().unwrap(),
        ))
        .expect("edge node starts");
    let chain = node.chains().next().expect("one chain").clone();

    // Publish instants, by head number: the first time the chain-state watch fires with it.
    let published: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    // How late the watcher woke after the node stamped the publish (ms resolution).
    let watch_lag_ms = Arc::new(AtomicUsize::new(0));
    {
        let (chain, published, lag) = (chain.clone(), published.clone(), watch_lag_ms.clone());
        node_rt.spawn(async move {
            let mut rx = chain.watch_state();
            while rx.changed().await.is_ok() {
                let at = Instant::now();
                let late = unix_ms().saturating_sub(chain.published_ms());
                lag.fetch_max(late as usize, Ordering::Relaxed);
                if let Some(h) = chain.head() {
                    published.lock().entry(h.number).or_insert(at);
                }
            }
        });
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads)
        .thread_name("clients")
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(run(&a, &chain, &published));
    let mut result = result.unwrap_or_else(|e| {
        eprintln!("ws-fanout: {e}");
        std::process::exit(1)
    });
    result["watcher_lag_max_ms"] = json!(watch_lag_ms.load(Ordering::Relaxed));
    println!("WFRESULT {result}");
    node_rt.block_on(node.shutdown());
}

async fn run(
    a: &Args,
    chain: &edge_node::Chain,
    published: &Mutex<HashMap<u64, Instant>>,
) -> Result<Value, String> {
    let http = e2e::Http::default();
    wait_ready(&http, &a.http).await?;

    // Warm-up: a few subscribers get a couple of blocks, then leave (the feed stops with them).
    let warm = connect_all(&a.ws, WARM_SUBS, WARM_BLOCKS).await;
    if warm.failed > 0 {
        return Err(format!("warm-up: {} connections failed", warm.failed));
    }
    mine(&http, &a.anvil, WARM_BLOCKS, a.interval).await?;
    warm.wait(Instant::now() + DRAIN).await;
    let warm_got = warm.finish().await;
    if warm_got.iter().any(|r| r.len() < WARM_BLOCKS) {
        return Err("warm-up: a subscriber missed a block".into());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let rss_before = rss_kib(a.gateway_pid);
    let sock_before = sockstat_mem_pages();
    let start_head = chain.head().map_or(0, |h| h.number);
    eprintln!(
        "ws-fanout: n={} gateway RSS before {} KiB; connecting",
        a.n, rss_before
    );
    let t0 = Instant::now();
    let clients = connect_all(&a.ws, a.n, a.blocks).await;
    let connect_secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "ws-fanout: {} subscribed ({} failed) in {connect_secs:.1} s; idle {} s",
        clients.handles.len(),
        clients.failed,
        a.idle.as_secs()
    );
    tokio::time::sleep(a.idle).await;
    let rss_idle = rss_kib(a.gateway_pid);
    let sock_idle = sockstat_mem_pages();
    let connected = clients.handles.len();
    let failed_connects = clients.failed;

    let gw_cpu0 = cpu_ticks(a.gateway_pid);
    let me_cpu0 = cpu_ticks(std::process::id());
    let t_mine = Instant::now();
    mine(&http, &a.anvil, a.blocks, a.interval).await?;
    clients.wait(Instant::now() + DRAIN).await;
    let mine_secs = t_mine.elapsed().as_secs_f64();
    let gw_cpu = cpu_ticks(a.gateway_pid).saturating_sub(gw_cpu0);
    let me_cpu = cpu_ticks(std::process::id()).saturating_sub(me_cpu0);
    let rss_after = rss_kib(a.gateway_pid);
    let got = clients.finish().await;

    // Per block: every subscriber's delay from publish to receipt.
    let published = published.lock().clone();
    let mut blocks: Vec<(u64, Instant)> = published
        .into_iter()
        .filter(|(n, _)| *n > start_head)
        .collect();
    blocks.sort();
    let mut per_block: HashMap<u64, Vec<f64>> = HashMap::new();
    let mut early = 0usize;
    for r in &got {
        for (n, at) in r {
            if let Some((_, p)) = blocks.iter().find(|(b, _)| b == n) {
                let d = at.checked_duration_since(*p).unwrap_or_else(|| {
                    early += 1;
                    Duration::ZERO
                });
                per_block.entry(*n).or_default().push(d.as_secs_f64() * 1e3);
            }
        }
    }
    let mut all = Vec::new();
    let (mut last, mut first, mut p99s) = (Vec::new(), Vec::new(), Vec::new());
    let mut missed = 0usize;
    let mut by_block = Vec::new();
    for (n, _) in &blocks {
        let mut d = per_block.remove(n).unwrap_or_default();
        missed += connected - d.len().min(connected);
        if d.is_empty() {
            continue;
        }
        d.sort_by(f64::total_cmp);
        last.push(*d.last().unwrap());
        first.push(d[0]);
        p99s.push(pct(&d, 0.99));
        by_block.push(json!({"number": n, "first_ms": r1(d[0]), "p50_ms": r1(pct(&d, 0.5)), "p99_ms": r1(pct(&d, 0.99)), "last_ms": r1(*d.last().unwrap())}));
        all.extend(d);
    }
    all.sort_by(f64::total_cmp);
    last.sort_by(f64::total_cmp);
    first.sort_by(f64::total_cmp);
    if all.is_empty() {
        return Err("no block reached any subscriber".into());
    }
    let nb = last.len();
    let ticks_ms = 1000.0 / CLK_TCK;
    let per_sub = |after: u64| (after as f64 - rss_before as f64) / connected.max(1) as f64;
    Ok(json!({
        "n": a.n,
        "connected": connected,
        "failed_connects": failed_connects,
        "connect_secs": r1(connect_secs),
        "blocks": nb,
        "blocks_mined": a.blocks,
        "missed": missed,
        "early": early,
        "p50_ms": r1(pct(&all, 0.5)),
        "p99_ms": r1(pct(&all, 0.99)),
        "max_ms": r1(*all.last().unwrap()),
        "last_p50_ms": r1(pct(&last, 0.5)),
        "last_p99_ms": r1(pct(&last, 0.99)),
        "last_max_ms": r1(*last.last().unwrap()),
        "first_p50_ms": r1(pct(&first, 0.5)),
        "rss_before_kib": rss_before,
        "rss_idle_kib": rss_idle,
        "rss_after_kib": rss_after,
        "kib_per_sub_idle": r1(per_sub(rss_idle)),
        "kib_per_sub_after": r1(per_sub(rss_after)),
        "sock_mem_kib_per_sub": r1((sock_idle.saturating_sub(sock_before)) as f64 * 4.0 / connected.max(1) as f64),
        "gateway_cpu_ms_per_block": r1(gw_cpu as f64 * ticks_ms / nb as f64),
        "clients_cpu_ms_per_block": r1(me_cpu as f64 * ticks_ms / nb as f64),
        "mine_secs": r1(mine_secs),
        "threads": a.threads,
        "by_block": by_block,
    }))
}

/// The subscribers' reader tasks, each returning (block number, receipt instant) per event.
struct Clients {
    handles: Vec<tokio::task::JoinHandle<Vec<(u64, Instant)>>>,
    failed: usize,
    /// One per reader: a shared stop signal would put every reader's wake-up on one lock.
    stops: Vec<oneshot::Sender<()>>,
    done: Arc<AtomicUsize>,
}

impl Clients {
    /// Waits until every reader has its blocks, or until `deadline`.
    async fn wait(&self, deadline: Instant) {
        let want = self.handles.len();
        while self.done.load(Ordering::Relaxed) < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the readers (they close their sockets) and collects what they read.
    async fn finish(self) -> Vec<Vec<(u64, Instant)>> {
        let want = self.handles.len();
        drop(self.stops);
        let mut out = Vec::with_capacity(want);
        for h in self.handles {
            out.push(h.await.unwrap_or_default());
        }
        out
    }
}

/// Opens `n` sockets, each subscribed to `newHeads`, and starts a reader on each that returns
/// after `blocks` events (or when stopped).
async fn connect_all(url: &str, n: usize, blocks: usize) -> Clients {
    let mut stops = Vec::with_capacity(n);
    let done = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::with_capacity(n);
    let mut failed = 0;
    let mut opened = futures::stream::iter(0..n)
        .map(|_| connect_one(url))
        .buffer_unordered(CONNECT_AT_ONCE);
    let mut first_error = None;
    while let Some(r) = opened.next().await {
        match r {
            Ok(ws) => {
                let (stop, stop_rx) = oneshot::channel();
                stops.push(stop);
                let done = done.clone();
                handles.push(tokio::spawn(read_events(ws, blocks, stop_rx, done)));
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        eprintln!("ws-fanout: {failed} connections failed, the first: {e}");
    }
    Clients {
        handles,
        failed,
        stops,
        done,
    }
}

/// One socket with its `newHeads` subscription set up (three attempts).
async fn connect_one(url: &str) -> Result<Ws, String> {
    let mut last = String::new();
    for attempt in 0..3u64 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
        }
        match tokio::time::timeout(Duration::from_secs(10), subscribe(url)).await {
            Ok(Ok(ws)) => return Ok(ws),
            Ok(Err(e)) => last = e,
            Err(_) => last = "timed out".into(),
        }
    }
    Err(last)
}

async fn subscribe(url: &str) -> Result<Ws, String> {
    // A small read buffer: the default (128 KiB) times 10,000 sockets is more than this
    // process needs to hold.
    let mut cfg = WebSocketConfig::default();
    cfg.read_buffer_size = 4096;
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(cfg), true)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let req = r#"{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}"#;
    ws.send(Message::Text(req.into()))
        .await
        .map_err(|e| format!("send: {e}"))?;
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m.map_err(|e| format!("read: {e}"))? {
            let v: Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
            if v["id"] == 1 {
                return match v["result"].as_str() {
                    Some(_) => Ok(ws),
                    None => Err(format!("eth_subscribe: {v}")),
                };
            }
        }
    }
    Err("closed before the subscription id".into())
}

/// Reads notifications, noting each one's block number and when it arrived.
async fn read_events(
    mut ws: Ws,
    blocks: usize,
    mut stop: oneshot::Receiver<()>,
    done: Arc<AtomicUsize>,
) -> Vec<(u64, Instant)> {
    let mut got = Vec::with_capacity(blocks + 2);
    loop {
        let m = tokio::select! {
            biased;
            m = ws.next() => m,
            _ = &mut stop => break,
        };
        let at = Instant::now();
        match m {
            Some(Ok(Message::Text(t))) => {
                if let Some(n) = block_number(&t) {
                    got.push((n, at));
                    if got.len() == blocks {
                        done.fetch_add(1, Ordering::Relaxed);
                        // Closing now would load the gateway while it still sends this block
                        // to the others: hold the socket until every reader is done.
                        let _ = (&mut stop).await;
                        break;
                    }
                }
            }
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    let _ = ws.close(None).await;
    got
}

/// The header's `"number"` in a `newHeads` notification, without parsing the whole message.
fn block_number(text: &str) -> Option<u64> {
    let i = text.find(r#""number":"0x"#)? + r#""number":"0x"#.len();
    let end = text[i..].find('"')? + i;
    u64::from_str_radix(&text[i..end], 16).ok()
}

async fn mine(
    http: &e2e::Http,
    anvil: &str,
    blocks: usize,
    interval: Duration,
) -> Result<(), String> {
    let start = tokio::time::Instant::now();
    for i in 0..blocks {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let r = http.rpc(anvil, "evm_mine", json!([])).await;
        if r.get("error").is_some() {
            return Err(format!("evm_mine: {r}"));
        }
    }
    // The last block's publish comes with the node's next poll.
    tokio::time::sleep(interval.min(Duration::from_secs(1))).await;
    Ok(())
}

async fn wait_ready(http: &e2e::Http, base: &str) -> Result<(), String> {
    let url = format!("{base}/readyz");
    for _ in 0..200 {
        let req = http::Request::get(&url).body(Default::default()).unwrap();
        if http.send(req).await.is_ok_and(|r| r.status == 200) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{url} did not say ready within 20 s"))
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `VmRSS` of a process, KiB (0 if unreadable).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12) // utime, stime (fields 14 and 15)
}

/// The kernel's TCP memory in pages (`/proc/net/sockstat`, `TCP: ... mem N`): both ends of
/// every loopback socket, this machine's whole.
fn sockstat_mem_pages() -> u64 {
    std::fs::read_to_string("/proc/net/sockstat")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("TCP:"))?;
            let mut w = l.split_whitespace();
            while let Some(k) = w.next() {
                if k == "mem" {
                    return w.next()?.parse().ok();
                }
            }
            None
        })
        .unwrap_or(0)
}

/// Raises this process's open-file limit to at least `n` (as far as the hard limit allows).
fn raise_fd_limit(n: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current.is_some_and(|cur| cur < n) {
        lim.current = Some(lim.maximum.map_or(n, |max| max.min(n)));
        let _ = setrlimit(Resource::Nofile, lim);
    }
    let cur = getrlimit(Resource::Nofile).current;
    if cur.is_some_and(|cur| cur < n) {
        eprintln!("ws-fanout: open-file limit {cur:?} is below the {n} this run needs");
        std::process::exit(1);
    }
}
