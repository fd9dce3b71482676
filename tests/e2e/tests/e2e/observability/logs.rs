//! What the logs carry: both binaries as real processes, JSON logs with the request id, and no
//! request bodies or caller addresses.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use e2e::*;

use super::LONDON;

/// Waits for a JSON log line whose message is `message` in the file at `path`.
async fn wait_log_line(path: &std::path::Path, message: &str) -> Value {
    for _ in 0..200 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                if v["fields"]["message"] == message {
                    return v;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "no {message:?} line in {}:\n{}",
        path.display(),
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_the_request_id_but_no_bodies_or_caller_addresses() {
    // Both binaries as real processes at their default log level, in JSON; the node's link
    // module at debug so its per-request line shows the span it runs in.
    const MARKER: &str = "0x00000000000000000000000000000000005ec2e7";
    let anvil = Anvil::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let (v4, v6) = dbip_paths();
    let gw_cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &gw_cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
[quic]
listen = "127.0.0.1:0"
key_file = "gateway.key"
join_tokens = ["{TOKEN}"]
[geo]
databases = [{v4:?}, {v6:?}]
trusted_proxies = ["127.0.0.0/8"]
[[chains]]
name = "anvil"
chain_id = {CHAIN_ID}
"#
        ),
    )
    .unwrap();
    let bin_dir = edge_node_bin().parent().unwrap().to_path_buf();
    let gw_log = dir.path().join("gateway.log");
    let mut gw = tokio::process::Command::new(bin_dir.join("gateway"))
        .arg("--config")
        .arg(&gw_cfg)
        .env_remove("RUST_LOG")
        .env("LOG_FORMAT", "json")
        .stderr(std::fs::File::create(&gw_log).unwrap())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning the gateway binary");
    let started = wait_log_line(&gw_log, "gateway started").await;
    let http_addr = started["fields"]["http_addr"].as_str().unwrap().to_string();
    let quic_addr = started["fields"]["quic_addr"].as_str().unwrap().to_string();
    let fingerprint = started["fields"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();

    let node_cfg = dir.path().join("node.toml");
    std::fs::write(
        &node_cfg,
        format!(
            r#"
key_file = "node.key"
region = "eu-west"
latitude = 50.11
longitude = 8.68
[[gateways]]
address = "{quic_addr}"
fingerprint = "{fingerprint}"
token = "{TOKEN}"
[[chains]]
chain_id = {CHAIN_ID}
upstreams = ["{}"]
head_poll_ms = 200
"#,
            anvil.url
        ),
    )
    .unwrap();
    let node_log = dir.path().join("node.log");
    let mut node = tokio::process::Command::new(edge_node_bin())
        .arg("--config")
        .arg(&node_cfg)
        .env("RUST_LOG", "info,edge_node::link=debug")
        .env("LOG_FORMAT", "json")
        .stderr(std::fs::File::create(&node_log).unwrap())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning the edge-node binary");
    let http = Http::default();
    let url = format!("http://{http_addr}/");
    let mut ready = false;
    for _ in 0..200 {
        if http.get(&format!("{url}readyz")).await.status == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ready,
        "node did not become ready:\n{}",
        std::fs::read_to_string(&node_log).unwrap_or_default()
    );

    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "eth_getBalance", "params": [MARKER, "latest"]})
        .to_string();
    let req = http::Request::post(&url)
        .header("content-type", "application/json")
        .header("x-forwarded-for", LONDON)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = http.client.request(req).await.unwrap();
    let rid = resp
        .headers()
        .get("x-request-id")
        .expect("x-request-id")
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await;

    // The node logged the request inside a span carrying the gateway's request id.
    let answered = wait_log_line(&node_log, "request answered").await;
    assert_eq!(answered["span"]["name"], "request", "{answered}");
    assert_eq!(answered["span"]["id"], rid.as_str(), "{answered}");
    println!("edge node log line for request {rid}: {answered}");

    let _ = gw.kill().await;
    let _ = node.kill().await;
    for (who, path) in [("gateway", &gw_log), ("edge node", &node_log)] {
        let text = std::fs::read_to_string(path).unwrap().to_ascii_lowercase();
        assert!(!text.is_empty(), "{who} logged nothing");
        assert!(
            !text.contains(&MARKER[2..]),
            "{who} logged request params:\n{text}"
        );
        assert!(
            !text.contains(LONDON),
            "{who} logged the caller's address:\n{text}"
        );
    }
}
