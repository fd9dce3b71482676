//! A tiny WebDriver client: chromedriver drives headless Debian Chromium, so the status page
//! runs its real JavaScript. Only what the tests need: open a page, run a script, read the
//! browser console, take a screenshot.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::tools::{self, Proc};
use e2e::Http;

pub struct Browser {
    driver: Option<Proc>,
    base: String,
    session: String,
    http: Http,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start(width: u32, height: u32) -> Self {
        let chromium = tools::chromium();
        let driver_bin = tools::chromedriver();
        let profile = tempfile::tempdir().unwrap();
        let port = tools::free_port();
        let mut driver = Proc::spawn(
            &driver_bin,
            &[format!("--port={port}"), "--allowed-ips=127.0.0.1".into()],
            profile.path().join("chromedriver.log"),
        );
        let http = Http::default();
        let base = format!("http://127.0.0.1:{port}");
        tools::wait_http_ok(
            &http,
            &format!("{base}/status"),
            &mut driver,
            "chromedriver",
        )
        .await;
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--force-color-profile=srgb",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            format!(
                "--user-data-dir={}",
                profile.path().join("chromium").display()
            ),
            format!("--window-size={width},{height}"),
        ])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let url = format!("{base}/session");
        let v = match post(&http, &url, &caps).await {
            Ok(v) => v,
            Err(e) => panic!(
                "chromedriver could not start Chromium: {e}\n{}",
                driver.log_tail()
            ),
        };
        let session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {v}"))
            .to_string();
        Self {
            driver: Some(driver),
            base,
            session,
            http,
            _profile: profile,
        }
    }

    fn url(&self, rest: &str) -> String {
        format!("{}/session/{}/{rest}", self.base, self.session)
    }

    pub async fn goto(&self, page: &str) {
        post(&self.http, &self.url("url"), &json!({ "url": page }))
            .await
            .unwrap_or_else(|e| panic!("navigating to {page}: {e}"));
    }

    /// Runs `body` (a function body; `return` gives the value) in the page.
    pub async fn eval(&self, body: &str) -> Value {
        post(
            &self.http,
            &self.url("execute/sync"),
            &json!({"script": body, "args": []}),
        )
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}\n{body}"))
    }

    /// Polls `body` until it returns a truthy value, or fails with `what` and the last value.
    pub async fn wait_for(&self, body: &str, secs: u64, what: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..secs * 4 {
            last = self.eval(body).await;
            if !(last.is_null() || last == false || last == 0 || last == "") {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("timed out after {secs} s waiting for {what}; last value {last}");
    }

    /// Browser console entries since the last call (chromedriver's log endpoint drains).
    pub async fn console(&self) -> Vec<(String, String)> {
        let v = post(&self.http, &self.url("se/log"), &json!({"type": "browser"}))
            .await
            .expect("reading the browser log");
        v.as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["level"].as_str().unwrap_or("").to_string(),
                    e["message"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    pub async fn screenshot(&self, to: &Path) {
        let r = self.http.get(&self.url("screenshot")).await;
        let v: Value = r.json();
        let b64 = v["value"].as_str().expect("screenshot data");
        let png = base64_decode(b64);
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        std::fs::write(to, png).unwrap();
    }

    pub async fn quit(mut self) {
        let _ = self
            .http
            .request(
                http::Method::DELETE,
                &format!("{}/session/{}", self.base, self.session),
                None,
                bytes::Bytes::new(),
            )
            .await;
        self.session.clear();
        if let Some(d) = self.driver.take() {
            d.stop().await;
        }
    }

    /// Ends the session without the async runtime (from `Drop`, e.g. after a failed assert):
    /// killing chromedriver alone would leave its Chromium running.
    fn end_session_blocking(&self) {
        use std::io::{Read, Write};
        let Some(hostport) = self.base.strip_prefix("http://") else {
            return;
        };
        let Ok(mut s) = std::net::TcpStream::connect(hostport) else {
            return;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let req = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.session
        );
        if s.write_all(req.as_bytes()).is_ok() {
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
    }
}

async fn post(http: &Http, url: &str, body: &Value) -> Result<Value, String> {
    let r = tokio::time::timeout(Duration::from_secs(60), http.post(url, body.to_string()))
        .await
        .map_err(|_| format!("no answer from {url} in 60 s"))?;
    let v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&r.body)))?;
    if !r.status.is_success() {
        return Err(format!("HTTP {}: {}", r.status, v["value"]));
    }
    Ok(v["value"].clone())
}

/// Standard base64 (the screenshot); a few lines rather than a dependency.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_round_trip() {
    assert_eq!(base64_decode("TWFu"), b"Man");
    assert_eq!(base64_decode("TWE="), b"Ma");
    assert_eq!(base64_decode("TQ=="), b"M");
    assert_eq!(base64_decode("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            self.end_session_blocking();
        }
        // Proc is kill_on_drop: chromedriver goes with it.
        self.driver.take();
    }
}
