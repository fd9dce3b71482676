//! CORS in a real browser: pages served from two loopback origins (they differ by port) call
//! the gateway with a tenant's key from headless Chromium. The page on the tenant's listed
//! origin gets its answers and reads `x-cache` from JavaScript (so `Expose-Headers` works);
//! the page on the other origin is blocked by the browser itself. The preflight and the
//! non-browser caller are checked with the plain client.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

use e2e::*;

use super::browser::Browser;

const KEY: &str = "browser-key";
const CHAIN_ID_CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#;
/// Every wait in the browser: long, since a loaded machine may be slow, and never asserted on.
const WAIT_SECS: u64 = 60;

/// The page both origins serve: `call(name, url, headers)` POSTs eth_chainId with JSON (not a
/// "simple" request, so the browser sends a preflight first) and leaves what it saw, or the
/// error `fetch` rejected with, in `window.results[name]`. The empty icon keeps the browser
/// from asking for `/favicon.ico`.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>cors page</title>
<script>
window.results = {};
function call(name, url, headers) {
  const body = JSON.stringify({jsonrpc: '2.0', id: 1, method: 'eth_chainId', params: []});
  fetch(url, {method: 'POST', headers: Object.assign({'content-type': 'application/json'}, headers), body})
    .then(async r => ({
      fetched: true,
      status: r.status,
      xCache: r.headers.get('x-cache'),
      xRequestId: r.headers.get('x-request-id'),
      body: await r.json(),
    }))
    .catch(e => ({fetched: false, error: e.name, message: String(e.message)}))
    .then(r => { window.results[name] = r; });
}
</script></head><body><p>a page on another origin</p></body></html>"#;

/// Serves [`PAGE`] on a free loopback port until the test's runtime ends; returns its origin.
async fn serve_page() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|_req: http::Request<hyper::body::Incoming>| async {
                    let r = http::Response::builder()
                        .header("content-type", "text/html; charset=utf-8")
                        .header("cache-control", "no-store")
                        .body(Full::new(Bytes::from_static(PAGE.as_bytes())))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

fn request(
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// Calls `call(name, url, headers)` in the page and waits for what `fetch` gave.
async fn browser_call(browser: &Browser, name: &str, url: &str, headers: Value) -> Value {
    let url = Value::from(url);
    let name_js = Value::from(name);
    browser
        .eval(&format!("call({name_js}, {url}, {headers}); return true;"))
        .await;
    browser
        .wait_for(
            &format!("return window.results[{name_js}] || null;"),
            WAIT_SECS,
            &format!("the page's fetch `{name}` to settle"),
        )
        .await
}

fn origin_refusals(gw: &gateway::Gateway) -> u64 {
    gw.app
        .metrics
        .rejected
        .with_label_values(&["origin_not_allowed"])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_origins_in_headless_chromium() {
    let anvil = Anvil::start(&[]).await;
    let allowed = serve_page().await;
    let other = serve_page().await;
    assert_ne!(allowed, other);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenants.toml");
    std::fs::write(
        &file,
        format!(
            "[[tenants]]\nname = \"web\"\nkey_sha256 = [\"{}\"]\norigins = [\"{allowed}\"]\n",
            gateway::tenants::hash_key_hex(KEY)
        ),
    )
    .unwrap();
    let gw = start_gateway_with(&format!(
        "[tenants]\nfile = {:?}\n",
        file.display().to_string()
    ))
    .await;
    let node = start_node(&gw, &NodeSpec::eu_west(&anvil.url)).await;
    wait_serving_for(&gw, 1, 30).await;
    let base = format!("http://{}", gw.http_addr);
    let keyed = format!("{base}/v1/{KEY}");
    let http = Http::default();
    let send = |req| {
        let http = http.clone();
        async move { http.send(req).await.expect("the gateway answers") }
    };

    // --- The preflight, as the browser will send it ---
    let preflight = |origin: &str| {
        request(
            http::Method::OPTIONS,
            &keyed,
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type"),
            ],
            "",
        )
    };
    let r = send(preflight(&allowed)).await;
    assert_eq!(r.status, 204, "preflight from the allowed origin");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(allowed.as_str())
    );
    let methods = r.header("access-control-allow-methods").unwrap_or("");
    assert!(methods.contains("POST"), "allow-methods: {methods:?}");
    let allow_headers = r
        .header("access-control-allow-headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    for h in ["content-type", "x-api-key", "authorization"] {
        assert!(
            allow_headers.contains(h),
            "allow-headers: {allow_headers:?}"
        );
    }
    let refused_before = origin_refusals(&gw);
    let r = send(preflight(&other)).await;
    assert_eq!(
        r.status, 403,
        "preflight from an origin the tenant does not list"
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert!(origin_refusals(&gw) > refused_before);

    // --- Non-browser callers ---
    // No Origin: the allow-list never filters it.
    let r = send(request(
        http::Method::POST,
        &keyed,
        &[("content-type", "application/json")],
        CHAIN_ID_CALL,
    ))
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["result"], "0x7a69");
    // The allowed origin: echoed, with the headers a page may read.
    let r = send(request(
        http::Method::POST,
        &keyed,
        &[("content-type", "application/json"), ("origin", &allowed)],
        CHAIN_ID_CALL,
    ))
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["result"], "0x7a69");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(allowed.as_str())
    );
    let expose = r
        .header("access-control-expose-headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(expose.contains("x-cache"), "expose-headers: {expose:?}");
    assert!(r.header("x-cache").is_some(), "no x-cache on the answer");
    // Another origin (the key in a header, as a page would send it): refused, no CORS headers.
    let r = send(request(
        http::Method::POST,
        &format!("{base}/"),
        &[
            ("content-type", "application/json"),
            ("origin", &other),
            ("x-api-key", KEY),
        ],
        CHAIN_ID_CALL,
    ))
    .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.header("access-control-allow-origin"), None);

    // --- The browser ---
    let browser = Browser::start(800, 600).await;
    browser.goto(&format!("{allowed}/")).await;
    browser
        .wait_for(
            "return document.readyState === 'complete' && typeof call === 'function';",
            WAIT_SECS,
            "the allowed page to load",
        )
        .await;
    let key_header = serde_json::json!({ "x-api-key": KEY });
    let bearer = serde_json::json!({ "authorization": format!("Bearer {KEY}") });
    let root = format!("{base}/");
    let cases = [
        ("url-key", keyed.as_str(), serde_json::json!({})),
        ("url-key-again", keyed.as_str(), serde_json::json!({})),
        ("header-key", root.as_str(), key_header.clone()),
        ("header-key-again", root.as_str(), key_header.clone()),
        ("bearer-key", root.as_str(), bearer),
    ];
    let mut seen = Vec::new();
    for (name, url, headers) in &cases {
        let r = browser_call(&browser, name, url, headers.clone()).await;
        assert_eq!(r["fetched"], true, "{name} from {allowed}: {r}");
        assert_eq!(r["status"], 200, "{name} from {allowed}: {r}");
        assert_eq!(r["body"]["result"], "0x7a69", "{name} from {allowed}: {r}");
        let x_cache = r["xCache"].as_str().unwrap_or_else(|| {
            panic!("{name}: the page could not read x-cache (Expose-Headers?): {r}")
        });
        assert!(
            ["HIT", "MISS", "BYPASS"].contains(&x_cache),
            "{name}: x-cache {x_cache:?}"
        );
        if name.ends_with("-again") {
            assert_eq!(x_cache, "HIT", "{name}: a repeat is a cache hit: {r}");
        }
        assert!(r["xRequestId"].is_string(), "{name}: x-request-id: {r}");
        seen.push(format!("{name}: x-cache {x_cache}"));
    }
    eprintln!("from the allowed origin: {seen:?}");
    let console = browser.console().await;
    let errors: Vec<_> = console
        .iter()
        .filter(|(level, m)| (level == "SEVERE" || level == "WARNING") && m.contains(&base))
        .collect();
    assert!(
        errors.is_empty(),
        "console errors about the gateway on the allowed page: {errors:?}"
    );

    browser.goto(&format!("{other}/")).await;
    browser
        .wait_for(
            "return document.readyState === 'complete' && typeof call === 'function';",
            WAIT_SECS,
            "the other page to load",
        )
        .await;
    // The key in the URL: the preflight itself is refused.
    let before = origin_refusals(&gw);
    let r = browser_call(&browser, "url-key", &keyed, serde_json::json!({})).await;
    assert_eq!(r["fetched"], false, "not blocked from {other}: {r}");
    assert_eq!(r["error"], "TypeError", "{r}");
    assert!(
        origin_refusals(&gw) > before,
        "the gateway did not refuse the preflight"
    );
    // The key in a header: the preflight (no key to judge by) passes, the POST is refused
    // without CORS headers, and the browser keeps even the 403 from the page.
    let before = origin_refusals(&gw);
    let r = browser_call(&browser, "header-key", &root, key_header).await;
    assert_eq!(r["fetched"], false, "not blocked from {other}: {r}");
    assert_eq!(r["error"], "TypeError", "{r}");
    assert!(
        origin_refusals(&gw) > before,
        "the gateway did not refuse the POST"
    );
    // The browser says why: CORS (at the preflight for the key in the URL, at the answer for
    // the key in a header), not a failed connection; the allowed page reached the same gateway.
    let blocked = |console: &[(String, String)]| {
        [
            (&keyed, "preflight"),
            (&root, "Access-Control-Allow-Origin"),
        ]
        .iter()
        .all(|(url, why)| {
            let at = format!(
                "Access to fetch at '{url}' from origin '{other}' has been blocked by CORS policy"
            );
            console
                .iter()
                .any(|(_, m)| m.contains(&at) && m.contains(why))
        })
    };
    let mut console = Vec::new();
    for _ in 0..WAIT_SECS * 4 {
        console.extend(browser.console().await);
        if blocked(&console) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        blocked(&console),
        "the console does not report both CORS blocks: {console:?}"
    );

    browser.quit().await;
    node.shutdown().await;
    gw.shutdown().await;
    drop(anvil);
}
