//! The edge node's admin listener: `/metrics` (Prometheus text), `/healthz` (alive) and
//! `/readyz` (joined to the gateway with at least one healthy upstream).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Shared;

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&shared, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn route<B>(shared: &Shared, req: &Request<B>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => {
            let m = &shared.metrics;
            m.cache_entries
                .set(shared.service.cache.entry_count() as i64);
            m.cache_bytes
                .set(shared.service.cache.weighted_size() as i64);
            text(StatusCode::OK, "text/plain; version=0.0.4", m.render())
        }
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let joined = shared.metrics.gateway_connected.get() == 1;
            let upstream_ok = shared.service.chains.values().any(|c| c.upstream_healthy());
            if joined && upstream_ok {
                text(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: joined={joined} upstream_healthy={upstream_ok}\n"),
                )
            }
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn text(status: StatusCode, ct: &'static str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, ct)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}
