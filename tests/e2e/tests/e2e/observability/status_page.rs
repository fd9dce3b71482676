//! The `/status` page in headless Chromium: nodes, map markers and failovers as they happen.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use e2e::*;

use super::{browser, traffic, ACCT0, LONDON};

/// An upstream that answers HTTP 502 for one method and passes everything else to anvil: the
/// node stays healthy (its probes pass) while that method fails over to another node.
async fn failing_upstream(upstream: &str, method: &'static str) -> String {
    struct Fail(&'static str);
    impl Intercept for Fail {
        fn before(&self, method: &str, _params: &Value) -> Option<(http::StatusCode, Bytes)> {
            (method == self.0).then(|| (http::StatusCode::BAD_GATEWAY, Bytes::new()))
        }
    }
    start_proxy(upstream, Arc::new(Fail(method))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_headless_chromium() {
    let anvil = Anvil::start(&["--block-time", "1"]).await;
    let gw = start_gateway_with(&geo_section("")).await;
    // eu-west's upstream fails eth_getTransactionCount, so London callers fail over from it.
    let flaky = failing_upstream(&anvil.url, "eth_getTransactionCount").await;
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Vec::new();
    for (r, up) in [
        (US_EAST, anvil.url.as_str()),
        (EU_WEST, flaky.as_str()),
        (AP_SOUTHEAST, anvil.url.as_str()),
    ] {
        procs.push((
            r.0,
            NodeProcess::spawn(&gw, &NodeSpec::at(r, up), dir.path()).await,
        ));
    }
    wait_serving_for(&gw, 3, 30).await;
    let ids: Vec<(String, String)> = gw
        .app
        .registry
        .snapshot()
        .iter()
        .map(|n| (n.id.clone(), n.region.clone()))
        .collect();
    let http = Http::default();
    let url = format!("http://{}/", gw.http_addr);
    traffic(&http, &url).await;
    for _ in 0..3 {
        // Served in the end (by the next node), after a failover away from eu-west.
        call_as(
            &http,
            &url,
            LONDON,
            "eth_getTransactionCount",
            json!([ACCT0, "latest"]),
        )
        .await
        .unwrap();
    }

    let page = format!("http://{}/status", gw.admin_addr.unwrap());
    let raw = http.get(&page).await;
    assert_eq!(raw.status, 200);
    assert!(raw
        .header("content-security-policy")
        .is_some_and(|c| c.contains("default-src 'none'")));

    let browser = browser::Browser::start(1440, 1010).await;
    browser.goto(&page).await;
    browser
        .wait_for(
            "return document.body.dataset.fetch === 'ok' && document.querySelectorAll('#nodes tbody tr[data-node-id]').length",
            20,
            "the page to render the nodes",
        )
        .await;
    let rows = browser
        .eval(
            "return [...document.querySelectorAll('#nodes tbody tr[data-node-id]')]
               .map(r => [r.dataset.nodeId, r.dataset.state, r.cells[1].textContent]);",
        )
        .await;
    let rows: Vec<(String, String, String)> = serde_json::from_value(rows).unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (id, region) in &ids {
        assert!(
            rows.iter()
                .any(|(i, st, r)| i == id && r == region && st == "healthy"),
            "{region} ({id}) not shown healthy: {rows:?}"
        );
        let marker = browser
            .eval(&format!(
                "return document.querySelector('#map g.marker[data-node-id=\"{id}\"]')?.dataset.state"
            ))
            .await;
        assert_eq!(marker, "healthy", "map marker for {region}");
    }
    let failovers = browser
        .eval("return [...document.querySelectorAll('#failovers li[data-reason]')].map(li => li.textContent)")
        .await;
    let failovers: Vec<String> = serde_json::from_value(failovers).unwrap();
    assert!(
        failovers
            .iter()
            .any(|f| f.contains("eu-west") && f.contains("node error")),
        "failovers shown: {failovers:?}"
    );

    // Kill eu-west (SIGKILL, no goodbye) with London traffic flowing: the page must show it down.
    let stop = Arc::new(AtomicBool::new(false));
    let bg = {
        let (http, url, stop) = (http.clone(), url.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = call_as(
                    &http,
                    &url,
                    LONDON,
                    "eth_getBalance",
                    json!([ACCT0, "latest"]),
                )
                .await;
            }
        })
    };
    let eu_id = ids.iter().find(|(_, r)| r == "eu-west").unwrap().0.clone();
    procs[1].1.kill().await;
    browser
        .wait_for(
            &format!(
                "const r = document.querySelector('#nodes tr[data-node-id=\"{eu_id}\"]');
                 const m = document.querySelector('#map g.marker[data-node-id=\"{eu_id}\"]');
                 return r && m && r.dataset.state === 'down' && m.dataset.state === 'down';"
            ),
            20,
            "the killed node to show as down",
        )
        .await;
    let live = browser
        .eval("return [...document.querySelectorAll('#nodes tbody tr[data-state=\"healthy\"]')].length")
        .await;
    assert_eq!(live, 2);
    stop.store(true, Ordering::Relaxed);
    let _ = bg.await;
    // Let one more refresh land so the screenshot shows the settled state.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let console = browser.console().await;
    let errors: Vec<_> = console
        .iter()
        .filter(|(level, _)| level == "SEVERE" || level == "WARNING")
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");

    // Beside the build (`CARGO_TARGET_DIR` when set), which a clean checkout may not have yet.
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("status-page.png");
    browser.screenshot(&shot).await;
    // Written past the test harness's capture so it shows in a normal `cargo test` run.
    let _ = writeln!(
        std::io::stderr(),
        "status page screenshot: {}",
        shot.display()
    );
    browser.quit().await;
    for (_, mut p) in procs {
        let _ = p.child.kill().await;
    }
    gw.shutdown().await;
}
