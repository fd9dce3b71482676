//! The admin listener's accept loop (HTTP/1.1, one task per connection, until stopped) and the
//! plain responses its routes give.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub type AdminResponse = Response<Full<Bytes>>;

/// Serves `route` on `listener` until `stop` fires.
pub async fn serve<S, F>(listener: TcpListener, state: Arc<S>, route: F, stop: CancellationToken)
where
    S: Send + Sync + 'static,
    F: Fn(&S, &Request<Incoming>) -> AdminResponse + Copy + Send + Sync + 'static,
{
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
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                std::future::ready(Ok::<_, Infallible>(route(&state, &req)))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// A body with a content type.
pub fn body(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> AdminResponse {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A plain-text body.
pub fn text(status: StatusCode, text: impl Into<Bytes>) -> AdminResponse {
    body(status, "text/plain", text)
}
