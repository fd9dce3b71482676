//! Connection hygiene at the front door: silent connections cannot lock callers out, silent
//! and idle connections close at their deadlines (HTTP/1.1 and h2c), and one address cannot
//! hold more than `max_connections_per_ip`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use e2e::*;

async fn gateway(edit: impl FnOnce(&mut gateway::config::ServerConfig)) -> gateway::Gateway {
    let mut cfg = gateway_config("");
    edit(&mut cfg.server);
    gateway::Gateway::start(cfg, proto::identity::Identity::generate().unwrap())
        .await
        .unwrap()
}

/// Raises this process's open-file limit to at least `n` (as far as the hard limit allows).
fn raise_fd_limit(n: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current.is_some_and(|cur| cur < n) {
        lim.current = Some(lim.maximum.map_or(n, |max| max.min(n)));
        setrlimit(Resource::Nofile, lim).unwrap();
    }
    let cur = getrlimit(Resource::Nofile).current;
    assert!(
        cur.is_none_or(|cur| cur >= n),
        "this test needs {n} open files; the hard limit allows {cur:?}"
    );
}

/// Connects from `from` (any loopback address) to `to`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the peer closes (EOF or reset), for at most `within`; when, or `None` if still
/// open then.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Instant> {
    let mut buf = [0u8; 1024];
    let read_to_end = async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        Instant::now()
    };
    tokio::time::timeout(within, read_to_end).await.ok()
}

/// `GET /healthz` on an open HTTP/1.1 connection; returns when the answer is in.
async fn healthz(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"ok\n") {
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before answering: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
}

/// The median time of `n` JSON-RPC calls, each from a new client on a new connection (as a
/// caller locked out by a full listener would be).
async fn median_call(url: &str, n: usize) -> Duration {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = Http::default().rpc(url, "eth_chainId", json!([])).await;
        times.push(t.elapsed());
        assert_eq!(r["result"], "0x7a69", "{r}");
    }
    times.sort();
    times[n / 2]
}

fn closed_count(gw: &gateway::Gateway, reason: &str) -> u64 {
    gw.app
        .metrics
        .http_connections_closed
        .with_label_values(&[reason])
        .get()
}

/// The scenario scaled to run in seconds: twice `max_connections` silent connections
/// (10,050 against 10,000 in the report) once locked every other caller out. Now the listener
/// sheds the connection idle the longest to make room: callers are answered as fast as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_do_not_lock_callers_out() {
    const MAX: usize = 1_000;
    const SILENT: usize = 2 * MAX;
    raise_fd_limit((SILENT + MAX) as u64 + 1_000);
    let anvil = Anvil::start(&[]).await;
    let gw = gateway(|s| {
        s.max_connections = MAX;
        s.max_connections_per_ip = SILENT + 100;
    })
    .await;
    let _node = start_node(&gw, &NodeSpec::eu_west(&anvil.url)).await;
    wait_serving(&gw, 1).await;
    let url = format!("http://{}/", gw.http_addr);
    median_call(&url, 5).await; // warm: the answer is in the gateway's tier from here on
    let before = median_call(&url, 21).await;

    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(TcpStream::connect(gw.http_addr).await.unwrap());
    }
    // Every connection past the first MAX made room by shedding an older silent one.
    let deadline = Instant::now() + Duration::from_secs(10);
    while closed_count(&gw, "shed") < (SILENT - MAX) as u64 {
        assert!(
            Instant::now() < deadline,
            "shed {}",
            closed_count(&gw, "shed")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open = gw.app.metrics.http_connections.get();
    assert!(open <= MAX as i64, "{open} open, max {MAX}");

    let loaded = median_call(&url, 21).await;
    let refused = gw
        .app
        .metrics
        .rejected
        .with_label_values(&["connection_limit"])
        .get();
    assert_eq!(refused, 0, "nobody is refused while a connection is idle");
    // The oldest silent connections were the ones shed.
    assert!(closed_within(&mut silent[0], Duration::from_secs(5))
        .await
        .is_some());
    drop(silent);
    // The baseline on both sides of the silent crowd, so a machine that got busier meanwhile
    // does not fail the comparison.
    let after = median_call(&url, 21).await;
    let baseline = before.max(after);
    assert!(
        loaded <= baseline * 5,
        "median call {loaded:?} with {SILENT} silent connections, {before:?} before, {after:?} after"
    );
    anvil.kill().await;
}

/// A silent connection is dropped `header_timeout` after it was accepted; a connection that
/// was served is closed `idle_timeout` after its last answer, HTTP/1.1 and h2c alike; neither
/// before its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_connections_close_at_their_deadlines() {
    const HEADER: Duration = Duration::from_millis(300);
    const IDLE: Duration = Duration::from_millis(700);
    // Timers on a busy 2-core machine fire late, never early.
    const LATE: Duration = Duration::from_secs(3);
    // Each task returns what it watched, its deadline, a time no later than the gateway's
    // clock for it started, and when it closed.
    type Watched = (&'static str, Duration, Instant, Option<Instant>);
    let gw = gateway(|s| {
        s.header_timeout = HEADER;
        s.idle_timeout = IDLE;
    })
    .await;
    let addr = gw.http_addr;
    let mut watch = tokio::task::JoinSet::<Watched>::new();
    for _ in 0..50 {
        let opened = Instant::now();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        watch.spawn(async move {
            let closed = closed_within(&mut stream, HEADER + LATE).await;
            ("a silent connection", HEADER, opened, closed)
        });
    }
    watch.spawn(async move {
        let opened = Instant::now();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"POST / HTTP/1.1\r\nho").await.unwrap();
        let closed = closed_within(&mut stream, HEADER + LATE).await;
        ("a half-sent first request", HEADER, opened, closed)
    });
    for _ in 0..3 {
        watch.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            healthz(&mut stream).await;
            // A second request, past the header deadline (only the first must beat it).
            tokio::time::sleep(HEADER + Duration::from_millis(100)).await;
            let asked = Instant::now();
            healthz(&mut stream).await;
            let closed = closed_within(&mut stream, IDLE + LATE).await;
            ("an idle HTTP/1.1 connection", IDLE, asked, closed)
        });
    }
    watch.spawn(async move {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
            TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .unwrap();
        let conn = tokio::spawn(conn);
        let mut asked = Instant::now();
        for i in 0..2 {
            if i > 0 {
                tokio::time::sleep(HEADER + Duration::from_millis(100)).await;
            }
            send.ready().await.unwrap();
            asked = Instant::now();
            let req = http::Request::get(format!("http://{addr}/healthz"))
                .body(Empty::new())
                .unwrap();
            let body = send.send_request(req).await.unwrap().into_body();
            assert_eq!(body.collect().await.unwrap().to_bytes(), "ok\n");
        }
        // The gateway's GOAWAY ends the client's connection without an error.
        let ended = tokio::time::timeout(IDLE + LATE, conn).await;
        let closed = ended
            .map(|r| r.unwrap().unwrap())
            .ok()
            .map(|()| Instant::now());
        ("an idle h2c connection", IDLE, asked, closed)
    });

    while let Some(watched) = watch.join_next().await {
        let (what, deadline, from, closed) = watched.unwrap();
        let closed =
            closed.unwrap_or_else(|| panic!("{what} still open {LATE:?} past its deadline"));
        // Our clock starts before the gateway's can: before the connect for a new
        // connection, before the last request for an answered one. Reading the time after
        // the connect or the answer instead lets a busy machine's scheduling delay make a
        // deadline the gateway kept look early.
        let took = closed - from;
        assert!(
            took >= deadline && took <= deadline + LATE,
            "{what} closed after {took:?}, deadline {deadline:?}"
        );
    }
    // Counted once the connection's task has ended, just after the peer saw it close.
    for (reason, n) in [("header_timeout", 51), ("idle_timeout", 4)] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while closed_count(&gw, reason) != n {
            assert!(
                Instant::now() < deadline,
                "{reason}: {}",
                closed_count(&gw, reason)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// `max_connections_per_ip` refuses one more connection from an address at its cap; another
/// address (127.0.0.2 is loopback too) still connects, and a place freed is usable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_cap_refuses_one_address_and_not_another() {
    const CAP: usize = 5;
    let gw = gateway(|s| s.max_connections_per_ip = CAP).await;
    let mut held = Vec::new();
    for _ in 0..CAP {
        let mut stream = connect_from("127.0.0.1", gw.http_addr).await;
        healthz(&mut stream).await;
        held.push(stream);
    }
    let mut over = connect_from("127.0.0.1", gw.http_addr).await;
    // Refused at accept: closed without a word, even to a request.
    let _ = over
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: gw\r\n\r\n")
        .await;
    assert!(
        closed_within(&mut over, Duration::from_secs(5))
            .await
            .is_some(),
        "connection {} from one address was served",
        CAP + 1
    );
    let refused = gw
        .app
        .metrics
        .rejected
        .with_label_values(&["connection_per_ip_limit"]);
    // Counted before the connection is closed.
    assert_eq!(refused.get(), 1);

    let mut other = connect_from("127.0.0.2", gw.http_addr).await;
    healthz(&mut other).await;

    // Once one of the five closes, the address may connect again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = connect_from("127.0.0.1", gw.http_addr).await;
        let _ = again
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: gw\r\n\r\n")
            .await;
        let mut buf = [0u8; 16];
        if matches!(again.read(&mut buf).await, Ok(n) if n > 0) {
            assert!(buf.starts_with(b"HTTP/1.1 200"));
            break;
        }
        assert!(Instant::now() < deadline, "the freed place was not reused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
