//! The gateway's admin listener: `/metrics` (Prometheus text), `/healthz`, `/readyz`, the
//! status page `/status` with its data `/status.json`, and the tenant API under `/admin/`
//! (behind `server.admin_token`, see [`super::tenants`]).

use std::sync::Arc;

use daemon::admin::{body, text, AdminResponse};
use http::{header, HeaderValue, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::front::respond::readyz;
use crate::ops::status;

pub async fn serve(app: Arc<App>, listener: TcpListener, stop: CancellationToken) {
    daemon::admin::serve(listener, app, route, stop).await;
}

fn route(app: &App, req: &http::Request<hyper::body::Incoming>) -> AdminResponse {
    let path = req.uri().path();
    if path.starts_with("/admin/") {
        return super::tenants::route(app, req);
    }
    match path {
        "/metrics" => body(StatusCode::OK, daemon::metrics::CONTENT_TYPE, scrape(app)),
        // Only the exact path: the page fetches `status.json` relative to itself.
        "/status" => {
            let mut r = body(
                StatusCode::OK,
                "text/html; charset=utf-8",
                status::PAGE.as_bytes(),
            );
            // Enforces "self-contained": the page may only talk to this listener.
            r.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                     connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'",
                ),
            );
            r
        }
        "/status.json" => {
            let websocket = status::WebSocketDoc {
                connections: app.metrics.ws.connections.get(),
                summary: app.subs.summary(),
            };
            let doc = status::build(&app.config, &app.registry, &app.recent, websocket);
            let json = serde_json::to_vec(&doc).expect("the status document serialises");
            let mut r = body(StatusCode::OK, "application/json", json);
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => readyz(app.unserved_chains()),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Brings the gauges read at scrape time up to date, then renders every metric.
fn scrape(app: &App) -> String {
    let m = &app.metrics;
    m.nodes_joined.set(app.registry.len() as i64);
    let deadline = app.config.quic.status_deadline;
    m.nodes.refresh(&app.registry, &app.config.chains, deadline);
    m.answers.refresh(&app.answers);
    m.geo_reloads.refresh(&app.geo.stats());
    m.render()
}
