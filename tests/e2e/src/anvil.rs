//! Real anvil processes on free loopback ports.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::repo_root;

/// The anvil binary: `ANVIL_BIN`, else the one `scripts/deps.sh` installs.
pub fn anvil_bin() -> PathBuf {
    let p = std::env::var_os("ANVIL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            repo_root().join(".deps/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
        });
    assert!(
        p.exists(),
        "anvil not found at {}: run scripts/deps.sh (or set ANVIL_BIN)",
        p.display()
    );
    p
}

/// A real anvil on a free loopback port, killed on drop.
pub struct Anvil {
    pub url: String,
    child: Child,
}

impl Anvil {
    pub async fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(anvil_bin())
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning anvil");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(l) = lines.next_line().await.unwrap() {
                if let Some(a) = l.strip_prefix("Listening on ") {
                    return a.trim().to_string();
                }
            }
            panic!("anvil exited before listening");
        })
        .await
        .expect("anvil did not start in 20 s");
        // Keep draining stdout so anvil never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            url: format!("http://{addr}"),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("anvil is running")
    }

    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}
