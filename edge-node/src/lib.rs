//! Edge node: joins a gateway over QUIC and answers its JSON-RPC requests from a response
//! cache or from upstream full nodes, while tracking each chain's head for status reports.
//!
//! Entry point: [`EdgeNode::start`] (the binary is a thin wrapper around it).
//!
//! - [`config`]: TOML config, validated at load;
//! - [`link`]: the QUIC session with the gateway (join, status, request streams);
//! - [`service`]: answering one request (cache policy, coalescing, upstream calls);
//! - [`cache`]: the cache policy table, keys and the byte-bounded store;
//! - [`chain`]: per-chain head tracking and status;
//! - [`upstream`]: pooled HTTP(S) JSON-RPC clients;
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`.

pub mod admin;
pub mod cache;
pub mod chain;
pub mod config;
pub mod header;
pub mod link;
pub mod logs;
pub mod metrics;
pub mod policy;
pub mod proof;
pub mod service;
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

use crate::chain::Chain;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::service::Service;
use crate::upstream::Upstreams;

/// State shared by the link, the admin listener and the chain trackers.
pub struct Shared {
    pub config: Config,
    pub node_id: String,
    pub service: Service,
    pub metrics: Arc<Metrics>,
    pub in_flight: Arc<Semaphore>,
}

impl Shared {
    pub fn status(&self) -> Status {
        let busy = self.config.max_in_flight - self.in_flight.available_permits();
        link::status_of(&self.service, busy as u32)
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
        let mut chains = HashMap::new();
        for c in &config.chains {
            metrics.init_chain(c.chain_id);
            let ups = Upstreams::new(
                &c.upstreams,
                Duration::from_millis(c.upstream_timeout_ms),
                metrics.clone(),
            );
            chains.insert(c.chain_id, Arc::new(Chain::new(c, ups)));
        }
        let service = Service {
            chains,
            cache: cache::store_counting_evictions(
                config.cache.max_bytes,
                metrics.cache_evictions.clone(),
            ),
            metrics: metrics.clone(),
            // One node serves every chain with the first chain's log limits' stricter values.
            logs: policy::LogLimits {
                max_range: config
                    .chains
                    .iter()
                    .map(|c| c.logs_max_range)
                    .min()
                    .unwrap_or(1),
                chunk: config
                    .chains
                    .iter()
                    .map(|c| c.logs_chunk_blocks)
                    .min()
                    .unwrap_or(1),
            },
        };
        let node_id = identity.node_id();
        let client_cfg = proto::tls::client_config(
            &identity,
            &config.gateway.fingerprint,
            proto::tls::Transport::default(),
        )?;
        let bind: SocketAddr = if config.gateway.address.starts_with('[') {
            "[::]:0".parse()?
        } else {
            "0.0.0.0:0".parse()?
        };
        let mut endpoint =
            quinn::Endpoint::client(bind).context("binding the QUIC client socket")?;
        endpoint.set_default_client_config(client_cfg);

        let shared = Arc::new(Shared {
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            node_id: node_id.clone(),
            service,
            metrics,
        });
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for chain in shared.service.chains.values() {
            tasks.spawn(chain.clone().track(
                shared.metrics.clone(),
                shared.service.cache.clone(),
                stop.child_token(),
            ));
        }
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
        tasks.spawn(link::run(shared.clone(), endpoint, stop.child_token()));
        tracing::info!(%node_id, region = %shared.config.region, "edge node started");
        Ok(Self {
            node_id,
            admin_addr,
            shared,
            stop,
            tasks,
        })
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
