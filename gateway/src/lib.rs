//! Gateway: one JSON-RPC URL in front of edge nodes joined over QUIC.
//!
//! Entry point: [`Gateway::start`] (the binary is a thin wrapper around it).
//!
//! - [`config`]: TOML config, validated at load;
//! - [`http`]: the JSON-RPC HTTP listener (limits, routing by chain, response assembly);
//! - [`jsonrpc`]: request parsing/validation and response writing (ids stay here);
//! - [`router`]: which healthy nodes may serve a request, best first;
//! - [`dispatch`]: one QUIC stream per attempt, failover within the deadline;
//! - [`link`]: accepting nodes (join checks) and reading their status;
//! - [`registry`]: joined nodes and their state;
//! - [`geo`]: caller address and location;
//! - [`admin`], [`metrics`]: the admin listener and Prometheus metrics;
//! - [`status`]: the live status page (`/status`, `/status.json`) and its recent-event rings.

pub mod admin;
pub mod answers;
pub mod config;
pub mod dispatch;
pub mod geo;
pub mod health;
pub mod http;
pub mod jsonrpc;
pub mod link;
pub mod metrics;
pub mod registry;
pub mod router;
pub mod sendraw;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use proto::identity::Identity;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// Time open HTTP requests get to finish after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// State shared by every listener and task.
pub struct App {
    pub config: Config,
    /// This gateway's key fingerprint, which nodes pin.
    pub gateway_id: String,
    pub registry: Registry,
    pub metrics: Metrics,
    pub geo: geo::Geo,
    pub trusted: geo::TrustedProxies,
    /// The gateway tier of the cache (final answers only).
    pub answers: answers::FinalAnswers,
    /// Answers tied to a node's announced chain state (`[cache] tip_max_bytes`).
    pub tips: answers::StateAnswers,
    /// Per chain, the routing table the health checker rebuilt last.
    pub routes: parking_lot::RwLock<
        std::collections::HashMap<u64, Arc<router::Table<Arc<registry::Node>>>>,
    >,
    /// Recent failovers and departed nodes, for the status page.
    pub recent: status::Recent,
    /// Per chain id, its hot-path metric series.
    pub series: std::collections::HashMap<u64, metrics::ChainSeries>,
}

impl App {
    /// Where a caller is (counted by result).
    pub fn locate(&self, ip: std::net::IpAddr) -> Option<geo::Location> {
        let loc = self.geo.locate(ip);
        let result = match (&loc, geo::is_public(ip)) {
            (Some(_), true) => "found",
            (Some(_), false) => "default",
            (None, _) => "unknown",
        };
        match result {
            "found" => &self.metrics.geo_found,
            "default" => &self.metrics.geo_default,
            _ => &self.metrics.geo_unknown,
        }
        .inc();
        loc
    }

    /// A configured chain's hot-path metric series.
    pub fn series(&self, chain_id: u64) -> &metrics::ChainSeries {
        self.series
            .get(&chain_id)
            .expect("series exist for every configured chain")
    }

    /// Names of configured chains with no healthy node right now.
    pub fn unserved_chains(&self) -> Vec<String> {
        let deadline = self.config.quic.status_deadline;
        self.config
            .chains
            .iter()
            .filter(|c| self.registry.candidates(c.chain_id, deadline).is_empty())
            .map(|c| c.name.clone())
            .collect()
    }
}

/// A running gateway.
pub struct Gateway {
    pub http_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub quic_addr: SocketAddr,
    pub fingerprint: String,
    pub app: Arc<App>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Gateway {
    /// Binds every listener and starts serving.
    pub async fn start(config: Config, identity: Identity) -> anyhow::Result<Self> {
        let http_listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding server.listen {}", config.server.listen))?;
        let admin_listener = match config.server.admin_listen {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .with_context(|| format!("binding server.admin_listen {a}"))?,
            ),
            None => None,
        };
        let server_cfg = proto::tls::server_config(&identity, proto::tls::Transport::default())?;
        let endpoint = quinn::Endpoint::server(server_cfg, config.quic.listen)
            .with_context(|| format!("binding quic.listen {}", config.quic.listen))?;

        let geo = open_geo(&config.geo)?;
        let trusted = config.geo.trusted();
        let answers = answers::FinalAnswers::new(config.cache.max_bytes);
        let tips = answers::StateAnswers::new(config.cache.tip_max_bytes);
        let metrics = Metrics::new();
        let series = config
            .chains
            .iter()
            .map(|c| (c.chain_id, metrics.chain_series(&c.name)))
            .collect();
        let app = Arc::new(App {
            gateway_id: identity.fingerprint(),
            config,
            registry: Registry::default(),
            metrics,
            series,
            geo,
            trusted,
            answers,
            tips,
            routes: Default::default(),
            recent: status::Recent::default(),
        });
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let http_addr = http_listener.local_addr()?;
        let quic_addr = endpoint.local_addr()?;
        let admin_addr = admin_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;
        tasks.spawn(http::serve(
            app.clone(),
            http_listener,
            stop.child_token(),
            SHUTDOWN_GRACE,
        ));
        if let Some(l) = admin_listener {
            tasks.spawn(admin::serve(app.clone(), l, stop.child_token()));
        }
        tasks.spawn(link::accept_loop(app.clone(), endpoint, stop.child_token()));
        tasks.spawn(health::run(app.clone(), stop.child_token()));
        if !app.config.geo.databases.is_empty() {
            let watcher = app.geo.spawn_watcher(app.config.geo.reload_interval);
            let stop_watch = stop.child_token();
            tasks.spawn(async move {
                stop_watch.cancelled().await;
                watcher.shutdown().await;
            });
        }
        tracing::info!(%http_addr, %quic_addr, fingerprint = %identity.fingerprint(), "gateway started");
        Ok(Self {
            http_addr,
            admin_addr,
            quic_addr,
            fingerprint: identity.fingerprint(),
            app,
            stop,
            tasks,
        })
    }

    /// Stops accepting, drains open requests (bounded by [`SHUTDOWN_GRACE`]) and closes nodes.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), drain)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
    }
}

/// Opens the configured geo databases (or none: every caller gets the default location).
fn open_geo(cfg: &config::GeoConfig) -> anyhow::Result<geo::Geo> {
    let options = geo::GeoOptions {
        cache_capacity: cfg.cache_entries,
        default_location: cfg.default_location.as_ref().map(|d| geo::Location {
            lat: d.lat,
            lon: d.lon,
            continent: d
                .country
                .as_deref()
                .and_then(geo::continent_of)
                .map(str::to_string),
            country: d.country.clone(),
        }),
    };
    if cfg.databases.is_empty() {
        return Ok(geo::Geo::without_database(options));
    }
    geo::Geo::open_many(&cfg.databases, options).context("geo.databases")
}

/// Logs to stderr; `RUST_LOG` sets the level (default `info`), `LOG_FORMAT=json` switches to
/// JSON lines.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if std::env::var("LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
