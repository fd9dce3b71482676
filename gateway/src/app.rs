//! Wiring: [`App`] holds the parts every listener and task was built from, and
//! [`Gateway::start`] builds them, binds the listeners and starts the tasks. Modules take the
//! parts they use, not `App`; only this file and the HTTP entries (`front::entry`,
//! `ops::admin`) see it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use proto::identity::Identity;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::answers::Tiers;
use crate::config::{ChainConfig, Config};
use crate::nodes::audit::Auditor;
use crate::nodes::dispatch::Dispatcher;
use crate::nodes::health::Checker;
use crate::nodes::link::Link;
use crate::nodes::registry::Registry;
use crate::nodes::router::Router;
use crate::nodes::tip::Marks;
use crate::nodes::vantage::Vantage;
use crate::ops::metrics::{ChainSeries, Metrics};
use crate::ops::status::Recent;
use crate::request::Path;
use crate::subs::Hub;
use crate::tenants::Tenancy;
use crate::{front, geo, nodes, ops};

/// Time open HTTP requests get to finish after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The parts of a running gateway.
pub struct App {
    pub config: Config,
    /// This gateway's key fingerprint, which nodes pin.
    pub gateway_id: String,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub geo: geo::Geo,
    pub trusted: geo::TrustedProxies,
    /// The gateway's cache tiers: final answers and tip answers.
    pub answers: Arc<Tiers>,
    /// Routing tables, rebuilt by the health checker.
    pub router: Arc<Router>,
    pub dispatcher: Arc<Dispatcher>,
    /// Audits of the nodes' answers, reputation and ejection.
    pub auditor: Arc<Auditor>,
    /// Recent failovers and departed nodes, for the status page.
    pub recent: Arc<Recent>,
    /// Per chain id, its hot-path metric series: a list, as chains are few and a request
    /// looks its chain up twice (a SipHash map cost ~500 instructions per request).
    pub series: Vec<(u64, ChainSeries)>,
    /// Per chain, the tip callers have been shown (monotonic reads).
    pub marks: Arc<Marks>,
    /// Tenants, keys and their limits.
    pub tenancy: Arc<Tenancy>,
    /// The other gateways' RTTs to the nodes (through Redis), for location checks.
    pub vantage: Arc<Vantage>,
    /// `x-gateway` on every answer: `server.name`.
    pub gateway_header: http::HeaderValue,
    /// Subscription feeds (`eth_subscribe` over WebSocket).
    pub subs: Arc<Hub>,
    /// One permit per open WebSocket (`websocket.max_connections`).
    pub ws_permits: Arc<tokio::sync::Semaphore>,
    /// Open WebSockets per client address (`websocket.max_connections_per_ip`).
    pub ws_addrs: Arc<parking_lot::Mutex<HashMap<std::net::IpAddr, usize>>>,
    /// Fired at shutdown: sockets close with 1001 and feeds stop.
    pub ws_stop: CancellationToken,
}

impl App {
    fn new(config: Config, gateway_id: String) -> anyhow::Result<Self> {
        let geo = open_geo(&config.geo)?;
        let trusted = config.geo.trusted();
        let mut metrics = Metrics::new();
        if config.tenants.redis_url.is_some() {
            metrics.add_redis();
        }
        let metrics = Arc::new(metrics);
        let tenancy = Arc::new(Tenancy::load(&config, metrics.clone())?);
        let series = config
            .chains
            .iter()
            .map(|c| (c.chain_id, metrics.chain_series(&c.name)))
            .collect();
        let registry = Arc::new(Registry::default());
        let recent = Arc::new(Recent::default());
        let router = Arc::new(Router::new(registry.clone(), &config));
        let ws_stop = CancellationToken::new();
        let answers = Arc::new(Tiers::new(
            config.cache.max_bytes,
            config.cache.tip_max_bytes,
            config.server.compress_min_bytes,
        ));
        let dispatcher = Arc::new(Dispatcher::new(metrics.clone(), recent.clone(), &config));
        let auditor = Arc::new(Auditor::new(
            &config,
            (registry.clone(), router.clone()),
            dispatcher.clone(),
            answers.clone(),
            metrics.clone(),
        ));
        Ok(Self {
            subs: Arc::new(Hub::new(
                &config,
                router.clone(),
                metrics.clone(),
                ws_stop.clone(),
            )),
            ws_permits: Arc::new(tokio::sync::Semaphore::new(
                config.websocket.max_connections,
            )),
            ws_addrs: Arc::default(),
            ws_stop,
            gateway_id,
            answers,
            router,
            dispatcher,
            auditor,
            registry,
            metrics,
            series,
            tenancy,
            vantage: Arc::new(Vantage::default()),
            gateway_header: http::HeaderValue::from_str(&config.server.name)
                .context("server.name as a header")?,
            marks: Arc::new(Marks::new(config.chains.iter().map(|c| c.chain_id))),
            geo,
            trusted,
            recent,
            config,
        })
    }

    /// Where a caller is (counted by result).
    pub fn locate(&self, ip: std::net::IpAddr) -> Option<Arc<geo::Location>> {
        let loc = self.geo.locate(ip);
        match (&loc, geo::is_public(ip)) {
            (Some(_), true) => &self.metrics.geo_found,
            (Some(_), false) => &self.metrics.geo_default,
            (None, _) => &self.metrics.geo_unknown,
        }
        .inc();
        loc
    }

    /// A configured chain's hot-path metric series.
    pub fn series(&self, chain_id: u64) -> &ChainSeries {
        self.series
            .iter()
            .find(|(id, _)| *id == chain_id)
            .map(|(_, s)| s)
            .expect("series exist for every configured chain")
    }

    /// The request path of one chain.
    pub fn path<'a>(&'a self, chain: &'a ChainConfig) -> Path<'a> {
        Path {
            chain,
            deny: &self.config.methods.deny,
            max_batch: self.config.server.max_batch,
            tiers: &self.answers,
            router: &self.router,
            dispatcher: &self.dispatcher,
            metrics: &self.metrics,
            series: self.series(chain.chain_id),
            marks: &self.marks,
            compress_min: self.config.server.compress_min_bytes,
            tenancy: &self.tenancy,
            auditor: &self.auditor,
        }
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
        let app = Arc::new(App::new(config, identity.fingerprint())?);
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let http_addr = http_listener.local_addr()?;
        let quic_addr = endpoint.local_addr()?;
        let admin_addr = admin_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;
        tasks.spawn(front::entry::serve(
            app.clone(),
            http_listener,
            stop.child_token(),
            SHUTDOWN_GRACE,
        ));
        if let Some(l) = admin_listener {
            tasks.spawn(ops::admin::serve(app.clone(), l, stop.child_token()));
        }
        let link = Link {
            registry: app.registry.clone(),
            metrics: app.metrics.clone(),
            recent: app.recent.clone(),
            gateway_id: app.gateway_id.clone(),
            gateway_name: app.config.server.name.clone(),
            quic: app.config.quic.clone(),
            marks: app.marks.clone(),
        };
        tasks.spawn(nodes::link::accept_loop(
            Arc::new(link),
            endpoint,
            stop.child_token(),
        ));
        let checker = Checker::new(
            app.registry.clone(),
            app.router.clone(),
            app.metrics.clone(),
            app.marks.clone(),
            app.vantage.clone(),
            &app.config,
        );
        tasks.spawn(checker.run(stop.child_token()));
        tasks.spawn(app.auditor.clone().run(stop.child_token()));
        if let Some(url) = &app.config.tenants.redis_url {
            let client = redis::Client::open(url.as_str()).context("tenants.redis_url")?;
            tasks.spawn(nodes::vantage::run(
                app.vantage.clone(),
                app.registry.clone(),
                client,
                app.config.tenants.redis_prefix.clone(),
                app.config.server.name.clone(),
                app.config.geo.gateway_location,
                stop.child_token(),
            ));
        }
        let shared = app.tenancy.shared.clone();
        tasks.spawn(shared.run(app.metrics.clone(), stop.child_token()));
        tasks.spawn(
            app.tenancy
                .clone()
                .watch(app.config.tenants.watch_interval, stop.child_token()),
        );
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
        self.app.ws_stop.cancel();
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
fn open_geo(cfg: &crate::config::GeoConfig) -> anyhow::Result<geo::Geo> {
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
