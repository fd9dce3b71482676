//! The external programs these tests drive (Debian packages installed by `scripts/deps.sh`):
//! promtool, prometheus, chromium, chromedriver. A missing one fails the test with a clear
//! message rather than skipping it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use e2e::Http;

/// `env` if set, else `name` on PATH, else fail naming the package that provides it.
pub fn find(env: &str, name: &str, package: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        assert!(p.exists(), "{env}={} does not exist", p.display());
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found on PATH: run scripts/deps.sh (Debian package {package}) or set {env}"
            )
        })
}

pub fn promtool() -> PathBuf {
    find("PROMTOOL_BIN", "promtool", "prometheus")
}

pub fn prometheus() -> PathBuf {
    find("PROMETHEUS_BIN", "prometheus", "prometheus")
}

pub fn chromium() -> PathBuf {
    find("CHROMIUM_BIN", "chromium", "chromium")
}

pub fn chromedriver() -> PathBuf {
    find("CHROMEDRIVER_BIN", "chromedriver", "chromium-driver")
}

/// Runs a program to completion with `stdin`, returning (success, stdout + stderr).
pub async fn run(program: &PathBuf, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    let mut sin = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        sin.write_all(input.as_bytes()).await.unwrap();
    }
    drop(sin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{} did not finish in 60 s", program.display()))
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub use e2e::free_port;

/// A child process killed (and reaped) when dropped or when `stop` is called.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(program: &PathBuf, args: &[String], log: PathBuf) -> Self {
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        Self { child, log }
    }

    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Polls `url` until it answers 200, or fails with the process log.
pub async fn wait_http_ok(http: &Http, url: &str, proc_: &mut Proc, what: &str) {
    for _ in 0..300 {
        if let Ok(Some(status)) = proc_.child.try_wait() {
            panic!("{what} exited ({status}):\n{}", proc_.log_tail());
        }
        let ok = tokio::time::timeout(Duration::from_secs(2), async {
            let req = http::Request::get(url)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            http.client.request(req).await
        })
        .await;
        if matches!(ok, Ok(Ok(ref r)) if r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} not ready at {url} in 30 s:\n{}", proc_.log_tail());
}
