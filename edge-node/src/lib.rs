//! Edge node: joins its gateways over QUIC and answers its JSON-RPC requests from a response
//! cache or from upstream full nodes, while tracking each chain's head for status reports.
//!
//! Entry point: [`EdgeNode::start`] (the binary is a thin wrapper around it).
//!
//! - [`config`]: TOML config, validated at load;
//! - [`link`]: the QUIC session with the gateway (join, status, request streams);
//! - [`service`]: answering one request (cache policy, coalescing, upstream calls);
//! - [`cache`]: the cache policy table, keys and the byte-bounded store;
//! - [`Chain`] (module `chain`, private): per-chain head tracking (polling, and following
//!   `ws(s)://` upstreams' `newHeads`), status and the pending-transaction feed
//!   ([`Chain::pending_transactions`]), reached through [`EdgeNode::chain`] and
//!   [`EdgeNode::chains`];
//! - [`blockref`]: block parameters and hex quantities;
//! - [`upstream`]: pooled HTTP(S) JSON-RPC clients;
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`.

pub mod admin;
pub mod blockref;
pub mod cache;
mod chain;
pub mod config;
pub mod header;
pub mod link;
pub mod logs;
pub mod metrics;
pub mod policy;
pub mod proof;
pub mod service;
pub mod subs;
pub mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use proto::identity::Identity;
use proto::msg::Status;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use crate::chain::{Chain, PendingUnavailable, Resolved, PENDING_CAPACITY};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::service::Service;
use crate::upstream::Upstreams;

/// State shared by the links, the admin listener and the chain trackers.
pub struct Shared {
    pub config: Config,
    pub node_id: String,
    pub service: Service,
    pub metrics: Arc<Metrics>,
    pub in_flight: Arc<Semaphore>,
    /// The gateways joined now, by link index: the name each gave in its welcome.
    pub joined: parking_lot::Mutex<std::collections::BTreeMap<usize, String>>,
}

impl Shared {
    pub fn status(&self) -> Status {
        let busy = self.config.max_in_flight - self.in_flight.available_permits();
        let mut s = link::status_of(&self.service, busy as u32);
        s.gateways = self.joined.lock().values().cloned().collect();
        s
    }
}

/// A running node. Dropping it does not stop it; call [`EdgeNode::shutdown`].
pub struct EdgeNode {
    pub node_id: String,
    pub admin_addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl EdgeNode {
    /// Builds the node and starts its tasks: chain trackers, the gateway link and (when
    /// configured) the admin listener.
    pub async fn start(config: Config, identity: Identity) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let service = Service::new(
            build_chains(&config, &metrics),
            cache::store_counting_evictions(
                config.cache.max_bytes,
                metrics.cache_evictions.clone(),
            ),
            metrics.clone(),
        );
        let node_id = identity.node_id();
        // Two entries pinning one key are one gateway under two addresses: its sessions would
        // replace each other there forever.
        let mut pinned = std::collections::HashSet::new();
        for g in &config.gateways {
            if !pinned.insert(g.fingerprint.as_str()) {
                anyhow::bail!(
                    "gateways: {} and another entry pin the same fingerprint {}; list each gateway once",
                    g.label(),
                    g.fingerprint
                );
            }
        }
        // One client config per gateway: each pins its own key.
        let pins = config
            .gateways
            .iter()
            .map(|g| {
                proto::tls::client_config(
                    &identity,
                    &g.fingerprint,
                    proto::tls::Transport::default(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        // One socket for every gateway; dual-stack when any address is IPv6.
        let bind: SocketAddr = if config.gateways.iter().any(|g| g.address.starts_with('[')) {
            "[::]:0".parse()?
        } else {
            "0.0.0.0:0".parse()?
        };
        let endpoint = quinn::Endpoint::client(bind).context("binding the QUIC client socket")?;

        let shared = Arc::new(Shared {
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            node_id: node_id.clone(),
            service,
            metrics,
            joined: Default::default(),
        });
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        spawn_chain_tasks(&mut tasks, &shared, &stop);
        let admin_addr = match shared.config.admin_listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding admin_listen {addr}"))?;
                let bound = listener.local_addr()?;
                tasks.spawn(admin::serve(listener, shared.clone(), stop.child_token()));
                Some(bound)
            }
            None => None,
        };
        let links = stop.child_token();
        let mut link_tasks = JoinSet::new();
        for (i, pin) in pins.into_iter().enumerate() {
            let link = link::Link {
                index: i,
                client: pin,
            };
            link_tasks.spawn(link::run(
                shared.clone(),
                link,
                endpoint.clone(),
                links.clone(),
            ));
        }
        // The socket closes once every link has said goodbye, and the close gets out.
        tasks.spawn(async move {
            while link_tasks.join_next().await.is_some() {}
            endpoint.close(0u32.into(), b"shutdown");
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        });
        tracing::info!(%node_id, region = %shared.config.region, "edge node started");
        Ok(Self {
            node_id,
            admin_addr,
            shared,
            stop,
            tasks,
        })
    }

    /// The served chain with this id.
    pub fn chain(&self, chain_id: u64) -> Option<&Arc<Chain>> {
        self.shared.service.chains.get(&chain_id)
    }

    /// Every served chain (in no particular order).
    pub fn chains(&self) -> impl Iterator<Item = &Arc<Chain>> + '_ {
        self.shared.service.chains.values()
    }

    /// Stops every task and waits (bounded) for them to finish.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
    }

    /// Stops at once without a goodbye to the gateway: the closest thing to a crash in-process.
    pub fn abort(mut self) {
        self.tasks.abort_all();
    }
}

/// One [`Chain`] per configured chain, each with its own upstreams and limits.
/// Per chain: its head tracker, its capability prober, and a follower for each upstream
/// configured as `ws(s)://`.
fn spawn_chain_tasks(tasks: &mut JoinSet<()>, shared: &Shared, stop: &CancellationToken) {
    for chain in shared.service.chains.values() {
        tasks.spawn(chain.clone().track(
            shared.metrics.clone(),
            shared.service.cache.clone(),
            stop.child_token(),
        ));
        tasks.spawn(
            chain
                .clone()
                .probe_capabilities(shared.metrics.clone(), stop.child_token()),
        );
        for (index, url) in chain.sockets() {
            tasks.spawn(chain.clone().follow(
                *index,
                url.clone(),
                shared.metrics.clone(),
                stop.child_token(),
            ));
        }
    }
}

fn build_chains(config: &Config, metrics: &Arc<Metrics>) -> HashMap<u64, Arc<Chain>> {
    let mut chains = HashMap::new();
    for c in &config.chains {
        metrics.init_chain(c.chain_id);
        let ups = Upstreams::new(&c.request_urls(), c.upstream_timeout, metrics.clone());
        let chain = Chain::new(c, ups);
        for (index, _) in chain.sockets() {
            metrics.init_socket(c.chain_id, chain.upstreams.label(*index));
        }
        chains.insert(c.chain_id, Arc::new(chain));
    }
    chains
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `logs_max_range` and `logs_chunk_blocks` hold for the chain they are configured on.
    #[test]
    fn each_chain_gets_its_own_log_limits() {
        let text = format!(
            "{}logs_max_range = 100\nlogs_chunk_blocks = 10\n\n[[chains]]\nchain_id = 2\n\
             upstreams = [\"http://127.0.0.1:8546\"]\nlogs_max_range = 5000\n",
            config::tests::GOOD
        );
        let cfg = Config::parse(&text, "t.toml").unwrap();
        let chains = build_chains(&cfg, &Arc::new(Metrics::new()));
        let limits = |id: u64| (chains[&id].logs.max_range, chains[&id].logs.chunk);
        assert_eq!(limits(31337), (100, 10));
        assert_eq!(limits(2), (5000, config::DEFAULT_LOGS_CHUNK_BLOCKS));
    }
}
