//! The end-to-end test harness: real anvil processes, intercepting proxies in front of them
//! (counting, lagging, lying and slow upstreams), real Redis servers, and gateways and edge nodes on
//! `127.0.0.1:0`, in process or as real processes. The tests themselves are this crate's one test target
//! (`tests/e2e/`: one binary, one link step).

mod anvil;
mod client;
mod config;
mod hedging;
mod redis;
mod stack;
mod upstream;
mod wan;
mod ws;

use std::path::PathBuf;

pub use anvil::*;
pub use client::*;
pub use config::*;
pub use hedging::*;
pub use redis::*;
pub use stack::*;
pub use upstream::*;
pub use wan::*;
pub use ws::*;

/// The join token every test gateway accepts.
pub const TOKEN: &str = "test-join-token";
/// The test chain: anvil's default chain id.
pub const CHAIN_ID: u64 = 31337;

/// The repository root (this crate is `tests/e2e/`): fixtures, configs, dashboards and the
/// installed test dependencies are found from here.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}
