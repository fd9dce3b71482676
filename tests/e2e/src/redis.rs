//! Real Redis servers (Debian's `redis-server`) on free loopback ports, with nothing saved to
//! disk; killed on drop.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// `REDIS_SERVER_BIN`, else `redis-server` on PATH (`scripts/deps.sh` installs it).
pub fn redis_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("REDIS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
        .expect("redis-server not found: run scripts/deps.sh (Debian package redis-server)")
}

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Redis {
    pub port: u16,
    pub url: String,
    child: Option<Child>,
}

impl Redis {
    pub async fn start() -> Self {
        Self::start_on(free_port()).await
    }

    /// On a given port (to bring a killed one back where the gateways look for it).
    pub async fn start_on(port: u16) -> Self {
        let child = Command::new(redis_bin())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning redis-server");
        let r = Self {
            port,
            url: format!("redis://127.0.0.1:{port}/"),
            child: Some(child),
        };
        for _ in 0..100 {
            if r.ping().await {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not answer PING on port {port} within 5 s");
    }

    /// Whether it answers `PING`.
    pub async fn ping(&self) -> bool {
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").await.is_ok()
            && tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut buf))
                .await
                .is_ok_and(|r| r.is_ok())
            && &buf == b"+PONG\r\n"
    }

    /// SIGKILL, as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }
}
