//! The edge node's admin listener: `/metrics` (Prometheus text), `/healthz` (alive) and
//! `/readyz` (joined to the gateway with at least one healthy upstream).

use std::sync::Arc;

use daemon::admin::{body, text, AdminResponse};
use hyper::{Request, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Shared;

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    daemon::admin::serve(listener, shared, route, stop).await;
}

fn route<B>(shared: &Shared, req: &Request<B>) -> AdminResponse {
    match req.uri().path() {
        "/metrics" => {
            let m = &shared.metrics;
            m.cache_entries
                .set(shared.service.cache.entry_count() as i64);
            m.cache_bytes
                .set(shared.service.cache.weighted_size() as i64);
            body(StatusCode::OK, daemon::metrics::CONTENT_TYPE, m.render())
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            let joined = !shared.joined.lock().is_empty();
            let upstream_ok = shared.service.chains.values().any(|c| c.upstream_healthy());
            if joined && upstream_ok {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: joined={joined} upstream_healthy={upstream_ok}\n"),
                )
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}
