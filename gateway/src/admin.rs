//! The gateway's admin listener: `/metrics` (Prometheus text), `/healthz`, `/readyz`, and the
//! status page `/status` with its data `/status.json`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::App;

pub async fn serve(app: Arc<App>, listener: TcpListener, stop: CancellationToken) {
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
        let app = app.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(route(&app, req.uri().path())) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn route(app: &App, path: &str) -> Response<Full<Bytes>> {
    match path {
        "/metrics" => {
            app.metrics.nodes_joined.set(app.registry.len() as i64);
            app.metrics.nodes.refresh(app);
            app.metrics.geo_reloads.refresh(&app.geo.stats());
            let (entries, bytes) = app.answers.usage();
            app.metrics.answer_cache_entries.set(entries as i64);
            app.metrics.answer_cache_bytes.set(bytes as i64);
            let (entries, bytes) = app.tips.usage();
            app.metrics.tip_cache_entries.set(entries as i64);
            app.metrics.tip_cache_bytes.set(bytes as i64);
            let mut r = Response::new(Full::new(Bytes::from(app.metrics.render())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        // Only the exact path: the page fetches `status.json` relative to itself.
        "/status" => {
            let mut r = Response::new(Full::new(Bytes::from_static(
                crate::status::PAGE.as_bytes(),
            )));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            // Enforces "self-contained": the page may only talk to this listener.
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                     connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'",
                ),
            );
            r
        }
        "/status.json" => {
            let body = serde_json::to_vec(&crate::status::build(app))
                .expect("the status document serialises");
            let mut r = Response::new(Full::new(Bytes::from(body)));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let missing = app.unserved_chains();
            if missing.is_empty() {
                text(StatusCode::OK, "ready\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("no healthy node for: {}\n", missing.join(", ")),
                )
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}
