//! The JSON-RPC HTTP front door: HTTP/1.1 and h2c, `POST /` for the default chain and
//! `POST /{chain}` by name or id, bounded in connections, header time, body size and body time.
//! One span per request; every response carries `x-request-id`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use proto::msg::{CacheStatus, Call, Outcome};
use proto::rpc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::answers::{FinalAnswers, StateAnswers};
use crate::config::ChainConfig;
use crate::geo::Location;
use crate::jsonrpc::{self, Entry, Parsed};
use crate::metrics::method_label;
use crate::{dispatch, App};

type Resp = Response<Full<Bytes>>;

/// Serves until `stop` fires, then lets open requests finish for up to `grace`.
pub async fn serve(app: Arc<App>, listener: TcpListener, stop: CancellationToken, grace: Duration) {
    let conns = Arc::new(Semaphore::new(app.config.server.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(app.config.server.header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            app.metrics
                .rejected
                .with_label_values(&["connection_limit"])
                .inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app2 = app.clone();
        let svc = service_fn(move |req| {
            let app = app2.clone();
            async move { Ok::<_, Infallible>(handle(app, req, peer).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        let metrics_app = app.clone();
        tokio::spawn(async move {
            metrics_app.metrics.http_connections.inc();
            let _ = conn.await;
            metrics_app.metrics.http_connections.dec();
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; dropping remaining connections");
    }
}

async fn handle(app: Arc<App>, req: Request<Incoming>, peer: SocketAddr) -> Resp {
    let id_buf = new_request_id();
    let request_id = std::str::from_utf8(&id_buf).expect("hex digits");
    let mut resp = route(&app, req, peer, request_id).await;
    let h = resp.headers_mut();
    h.insert(
        "x-request-id",
        HeaderValue::from_str(request_id).expect("hex is a valid header"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

async fn route(app: &App, req: Request<Incoming>, peer: SocketAddr, request_id: &str) -> Resp {
    // Owned only in its `Uri` (an `Arc`-backed `Bytes`): a clone instead of a copy per request.
    let uri = req.uri().clone();
    let path = uri.path();
    match (req.method(), path) {
        (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => return readyz(app),
        (&Method::OPTIONS, _) => return preflight(),
        _ => {}
    }
    let chain = match path.trim_start_matches('/') {
        "" => app.config.default_chain(),
        name if !name.contains('/') => match app.config.chain(name) {
            Some(c) => c,
            None => {
                app.metrics
                    .rejected
                    .with_label_values(&["unknown_chain"])
                    .inc();
                let known: Vec<_> = app.config.chains.iter().map(|c| c.name.as_str()).collect();
                let resp = rpc_error(
                    StatusCode::NOT_FOUND,
                    rpc::UNKNOWN_CHAIN,
                    &format!(
                        "unknown chain {name:?}; this gateway serves: {}",
                        known.join(", ")
                    ),
                );
                return reject(req.into_body(), resp).await;
            }
        },
        _ => return text(StatusCode::NOT_FOUND, "not found\n"),
    };
    if req.method() != Method::POST {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "JSON-RPC needs POST\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
        return reject(req.into_body(), r).await;
    }
    if !is_json(req.headers().get(header::CONTENT_TYPE)) {
        app.metrics
            .rejected
            .with_label_values(&["content_type"])
            .inc();
        let resp = rpc_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            rpc::INVALID_REQUEST,
            "content-type must be application/json",
        );
        return reject(req.into_body(), resp).await;
    }
    let max = app.config.server.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return too_large(app, max);
    }
    let started = Instant::now();
    let caller_ip = crate::geo::client_ip(peer.ip(), req.headers(), &app.trusted);
    let caller = app.locate(caller_ip);
    app.series(chain.chain_id)
        .request_from(caller.as_ref().and_then(|c| c.country.as_deref()));
    let body_timeout = app.config.server.body_timeout;
    let collected =
        tokio::time::timeout(body_timeout, Limited::new(req.into_body(), max).collect()).await;
    let body = match collected {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return too_large(app, max);
        }
        Ok(Err(_)) => {
            app.metrics
                .rejected
                .with_label_values(&["body_error"])
                .inc();
            return text(StatusCode::BAD_REQUEST, "could not read the request body\n");
        }
        Err(_) => {
            app.metrics.rejected.with_label_values(&["slow_body"]).inc();
            return rpc_error(
                StatusCode::REQUEST_TIMEOUT,
                rpc::INVALID_REQUEST,
                &format!(
                    "request body not received within {} ms",
                    body_timeout.as_millis()
                ),
            );
        }
    };
    let resp = serve_rpc(app, chain, &body, request_id, started, caller.as_ref()).await;
    let series = app.series(chain.chain_id);
    if body.first() == Some(&b'[') {
        &series.duration_batch
    } else {
        &series.duration_single
    }
    .observe(started.elapsed().as_secs_f64());
    resp
}

async fn serve_rpc(
    app: &App,
    chain: &ChainConfig,
    body: &Bytes,
    request_id: &str,
    started: Instant,
    caller: Option<&Location>,
) -> Resp {
    let parsed = match jsonrpc::parse_bytes(body, app.config.server.max_batch) {
        Ok(p) => p,
        Err(e) => {
            let reason = match e {
                jsonrpc::BodyError::Parse(_) => "parse_error",
                jsonrpc::BodyError::BatchTooLarge { .. } => "batch_too_large",
                _ => "invalid_request",
            };
            app.metrics.rejected.with_label_values(&[reason]).inc();
            app.metrics
                .requests
                .with_label_values(&[&chain.name, reason])
                .inc();
            return json(StatusCode::OK, jsonrpc::body_error(&e));
        }
    };
    let (entries, is_batch) = match parsed {
        Parsed::Single(e) => (vec![e], false),
        Parsed::Batch(v) => (v, true),
    };
    answer(app, chain, entries, is_batch, request_id, started, caller).await
}

async fn answer(
    app: &App,
    chain: &ChainConfig,
    entries: Vec<Entry>,
    is_batch: bool,
    request_id: &str,
    started: Instant,
    caller: Option<&Location>,
) -> Resp {
    let series = app.series(chain.chain_id);
    // Decide each entry locally first: invalid and refused calls never leave the gateway.
    let mut answers: Vec<Option<(CacheStatus, Result<Bytes, Bytes>)>> = vec![None; entries.len()];
    let mut to_send: Vec<(usize, Call)> = Vec::new();
    let mut gateway_hits = 0usize;
    for (i, e) in entries.iter().enumerate() {
        match e {
            Entry::Invalid { error, .. } => {
                app.metrics
                    .rejected
                    .with_label_values(&["invalid_request"])
                    .inc();
                answers[i] = Some((CacheStatus::Bypass, Err(error.clone())));
            }
            Entry::Call { method, .. } if !method_allowed(app, chain, method) => {
                app.metrics
                    .rejected
                    .with_label_values(&["method_denied"])
                    .inc();
                answers[i] = Some((
                    CacheStatus::Bypass,
                    Err(rpc::error_object(
                        rpc::METHOD_NOT_FOUND,
                        format!("method {method} is not allowed on this gateway"),
                    )),
                ));
            }
            Entry::Call { method, params, .. } => {
                let key = FinalAnswers::key(chain.chain_id, method, params);
                if let Some(hit) = app.answers.get(&key) {
                    series.gateway_hit.inc();
                    series.gateway_hit_call(method);
                    answers[i] = Some((CacheStatus::Hit, Ok(hit)));
                    gateway_hits += 1;
                } else {
                    to_send.push((
                        i,
                        Call {
                            method: method.clone(),
                            params: params.clone(),
                        },
                    ))
                }
            }
        }
    }

    let mut node_hdr = None;
    let ranked = match to_send.is_empty() {
        true => None,
        false => Some(crate::router::rank(app, chain.chain_id, caller)),
    };
    // The tip part of the gateway tier: what the node routing picked said under the chain
    // state it still announces.
    if let (Some(Ok(ranked)), true) = (&ranked, app.tips.enabled()) {
        if let Some(node) = ranked.first() {
            let current = node.state_version(chain.chain_id);
            let before = gateway_hits;
            to_send.retain(|(i, call)| {
                let key =
                    StateAnswers::key(node.session, chain.chain_id, &call.method, &call.params);
                let Some(hit) = app.tips.get(&key, current) else {
                    return true;
                };
                series.gateway_hit.inc();
                series.gateway_hit_call(&call.method);
                answers[*i] = Some((CacheStatus::Hit, Ok(hit)));
                gateway_hits += 1;
                false
            });
            if gateway_hits > before {
                node_hdr = Some((node.id.clone(), node.region.clone()));
            }
        }
    }
    if !to_send.is_empty() {
        series.gateway_miss.inc_by(to_send.len() as u64);
        let deadline = started + app.config.server.request_timeout;
        let (idx, calls): (Vec<usize>, Vec<Call>) = to_send.into_iter().unzip();
        let methods: Vec<&'static str> = calls.iter().map(|c| method_label(&c.method)).collect();
        let d = match ranked.expect("ranked when there are calls to send") {
            Ok(ranked) => {
                // The request's span, once it needs a node: everything that can log happens
                // from here on (failovers, bad answers). Answers from the gateway's own tier
                // log nothing, and a span cost them about a tenth of their CPU. Made with every
                // field it will carry: recording one later costs a formatting pass each.
                let method = match (is_batch, calls.first()) {
                    (false, Some(c)) => c.method.as_str(),
                    _ => "batch",
                };
                let span =
                    tracing::info_span!("rpc", id = %request_id, chain = %chain.name, method);
                dispatch::dispatch(app, chain.chain_id, request_id, calls, ranked, deadline)
                    .instrument(span)
                    .await
            }
            Err(e) => {
                app.metrics.rejected.with_label_values(&[e.reason()]).inc();
                dispatch::unserved(&calls, &e.to_string())
            }
        };
        if let Some(n) = &d.node {
            node_hdr = Some((n.id.clone(), n.region.clone()));
        }
        for (((i, r), m), tied) in idx.into_iter().zip(d.results).zip(methods).zip(d.tied) {
            let (method, params) = match &entries[i] {
                Entry::Call { method, params, .. } => (method, params),
                Entry::Invalid { .. } => unreachable!("only calls are dispatched"),
            };
            // Kept answers are copied out of the response frame, which may be far larger
            // (a batch with a big answer): a slice would keep the whole frame alive.
            match (&r.outcome, r.final_answer, tied) {
                (Outcome::Result(b), true, _) => app.answers.insert(
                    FinalAnswers::key(chain.chain_id, method, params),
                    Bytes::copy_from_slice(b),
                ),
                // Only an answer the node's own cache already had: a question asked twice
                // under this state. One-off questions (most `latest` misses) would cost an
                // insert each and never be asked again.
                (Outcome::Result(b), false, Some((node, version)))
                    if r.cache == CacheStatus::Hit =>
                {
                    app.tips.insert(
                        StateAnswers::key(node.session, chain.chain_id, method, params),
                        version,
                        Bytes::copy_from_slice(b),
                    )
                }
                _ => {}
            }
            let (outcome, res) = match r.outcome {
                Outcome::Result(b) => ("result", Ok(b)),
                Outcome::Error(b) => ("rpc_error", Err(b)),
                Outcome::NodeError(b) => ("node_error", Err(b)),
            };
            app.metrics
                .calls
                .with_label_values(&[&chain.name, m, r.cache.as_str(), outcome])
                .inc();
            if d.node.is_some() {
                app.metrics.cache_result(&chain.name, "edge", r.cache);
            }
            answers[i] = Some((r.cache, res));
        }
    }

    let mut out = BytesMut::with_capacity(256);
    if is_batch {
        out.extend_from_slice(b"[");
    }
    let mut first = true;
    for (e, a) in entries.iter().zip(&answers) {
        let Some(id) = e.id() else { continue }; // notifications get no answer
        let (_, res) = a.as_ref().expect("every entry was answered");
        if !first {
            out.extend_from_slice(b",");
        }
        first = false;
        jsonrpc::write_response(
            &mut out,
            id,
            res.as_ref().map(|b| &b[..]).map_err(|b| &b[..]),
        );
    }
    if is_batch {
        out.extend_from_slice(b"]");
    }
    let ok = answers.iter().flatten().all(|(_, r)| r.is_ok());
    if ok {
        &series.requests_ok
    } else {
        &series.requests_error
    }
    .inc();
    // A request of notifications only gets an empty body.
    let body = if first { Bytes::new() } else { out.freeze() };
    let mut resp = json(StatusCode::OK, body);
    if !is_batch {
        let h = resp.headers_mut();
        if let Some((id, region)) = node_hdr {
            if let Ok(v) = HeaderValue::from_str(&id) {
                h.insert("x-edge-node", v);
            }
            if let Ok(v) = HeaderValue::from_str(&region) {
                h.insert("x-edge-region", v);
            }
        }
        if let Some(Some((cache, _))) = answers.first() {
            h.insert("x-cache", HeaderValue::from_static(cache.as_str()));
            // Which tier hit: the gateway's own (final answers) or an edge node's.
            if *cache == CacheStatus::Hit {
                let tier = if gateway_hits == 1 { "gateway" } else { "edge" };
                h.insert("x-cache-tier", HeaderValue::from_static(tier));
            }
        }
    }
    resp
}

/// The gateway-wide deny list, then the chain's own allow and deny lists.
fn method_allowed(app: &App, chain: &ChainConfig, method: &str) -> bool {
    !jsonrpc::denied(&app.config.methods.deny, method)
        && !jsonrpc::denied(&chain.methods_deny, method)
        && chain
            .methods_allow
            .as_ref()
            .is_none_or(|allow| jsonrpc::denied(allow, method))
}

/// Answers a request refused before its body was read. A small body is read (and dropped)
/// first, so the client is not cut off mid-write and the connection can be reused; a large or
/// slow one is not waited for.
async fn reject(body: Incoming, resp: Resp) -> Resp {
    const DRAIN_MAX: usize = 64 * 1024;
    let drain = Limited::new(body, DRAIN_MAX).collect();
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    resp
}

fn is_json(ct: Option<&HeaderValue>) -> bool {
    let Some(ct) = ct.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = ct.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("application/json")
        || mime.eq_ignore_ascii_case("application/json-rpc")
}

fn readyz(app: &App) -> Resp {
    let missing = app.unserved_chains();
    if missing.is_empty() {
        text(StatusCode::OK, "ready\n")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("no healthy node for: {}\n", missing.join(", ")),
        )
    }
}

fn too_large(app: &App, max: usize) -> Resp {
    app.metrics
        .rejected
        .with_label_values(&["body_too_large"])
        .inc();
    rpc_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        rpc::LIMIT_EXCEEDED,
        &format!("request body exceeds {max} bytes"),
    )
}

fn preflight() -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    r
}

fn json(status: StatusCode, body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    // Room for every header an answer gets (content type, request id, CORS, x-cache,
    // x-cache-tier, node, region) without growing the map per request.
    *r.headers_mut() = http::HeaderMap::with_capacity(8);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn rpc_error(status: StatusCode, code: i64, message: &str) -> Resp {
    json(status, jsonrpc::error_response(code, message))
}

fn text(status: StatusCode, body: &str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn new_request_id() -> [u8; 16] {
    // 16 lowercase hex digits, on the stack: `format!` and a `String` cost several times more
    // per request.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = rand::random::<u64>();
    std::array::from_fn(|i| HEX[(n >> (60 - 4 * i)) as usize & 0xf])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_16_hex_digits_and_differ() {
        let a = new_request_id();
        let b = new_request_id();
        assert!(a
            .iter()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        assert!(HeaderValue::from_bytes(&a).is_ok());
    }
}
