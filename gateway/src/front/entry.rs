//! The JSON-RPC HTTP entry: HTTP/1.1 and h2c, `POST /` for the default chain and
//! `POST /{chain}` by name or id (`POST /v1/{key}` and `POST /{chain}/{key}` with an API key in
//! the URL), bounded in connections (in all and per address, see [`super::conns`]), header,
//! idle and body time, and body size. The caller's key is checked (and its tenant's chains and
//! browser origins) before a body over 64 KiB is read (the lean HTTP/1.1 server, [`super::h1`],
//! reads smaller ones whole first, then calls the same code). Every response carries
//! `x-request-id` and the
//! CORS headers ([`super::cors`]). Once the body is read, the request path
//! ([`crate::request`]) takes over.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use proto::rpc;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::compress;
use super::conns::{Closed, Conns, Limits};
use super::cors::{self, Cors};
use super::h1::Lean;
use super::heads::{visible, Heads, Read};
use super::respond::{names, new_request_id, readyz, rpc_error, text, Resp};
use super::sniff::{Servers, Sniffed};
use crate::app::App;
use crate::config::ChainConfig;
use crate::request::Caller;
use crate::tenants::{Denied, Tenant};

static ACCEPT_FAILED_LOG: daemon::loglimit::LogLimit = daemon::loglimit::LogLimit::new(10, 60);

/// Serves until `stop` fires, then lets open requests finish for up to `grace`.
pub async fn serve(app: Arc<App>, listener: TcpListener, stop: CancellationToken, grace: Duration) {
    let server = &app.config.server;
    let conns = Conns::new(
        server.max_connections,
        server.max_connections_per_ip,
        stop.clone(),
    );
    let limits = Limits {
        header: server.header_timeout,
        idle: server.idle_timeout,
        shutdown_grace: grace,
    };
    let servers = Servers::new(super::h1::Limits {
        max_body: server.max_body_bytes,
        body_timeout: server.body_timeout,
    });
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    // Callers can cause it (a connection flood): limited.
                    if let Some(suppressed) = ACCEPT_FAILED_LOG.allow() {
                        tracing::warn!(error = %e, suppressed, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Trusted proxies carry many callers each: the per-address cap is not for them.
        let capped = !app.trusted.contains(peer.ip());
        let conn = match conns.admit(peer.ip(), capped) {
            Ok(conn) => conn,
            Err(refused) => {
                app.metrics
                    .rejected
                    .with_label_values(&[refused.reason()])
                    .inc();
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (app2, app3) = (app.clone(), app.clone());
        let activity = conn.activity();
        let svc = service_fn(move |req: Request<Incoming>| {
            let app = app2.clone();
            let in_flight = activity.start();
            // Boxed: the request's future is over 2 KiB, and hyper moves it into its slot and
            // polls it from there; a box moves one pointer instead of copying it each time.
            let fut = Box::pin(handle(app, req, peer));
            async move {
                let resp = fut.await;
                drop(in_flight);
                Ok::<_, Infallible>(resp)
            }
        });
        let fast = move |req: Request<Lean>| handle(app3.clone(), req, peer);
        let http = Sniffed::new(stream, svc, fast, conn.activity(), servers.clone());
        let metrics = app.metrics.clone();
        tokio::spawn(async move {
            metrics.http_connections.inc();
            let closed = conn.drive(http, limits).await;
            metrics.http_connections.dec();
            if let Some(why) = closed.filter(|c| *c != Closed::Shutdown) {
                metrics
                    .http_connections_closed
                    .with_label_values(&[why.label()])
                    .inc();
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, conns.all_closed())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; dropping remaining connections");
    }
}

/// A request body the entry serves: hyper's, or the lean HTTP/1.1 server's ([`super::h1`]),
/// whole already.
pub trait ReqBody:
    Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + Unpin
    + Sized
    + 'static
{
    /// The request as hyper's, which can be upgraded to a WebSocket; else given back.
    // Both variants are the request, moved: nothing to box.
    #[allow(clippy::result_large_err)]
    fn upgradable(req: Request<Self>) -> Result<Request<Incoming>, Request<Self>>;

    /// The headers the request path reads.
    fn heads(req: &Request<Self>) -> Heads<'_>;
}

impl ReqBody for Incoming {
    #[allow(clippy::result_large_err)] // as the trait's
    fn upgradable(req: Request<Self>) -> Result<Request<Incoming>, Request<Self>> {
        Ok(req)
    }

    fn heads(req: &Request<Self>) -> Heads<'_> {
        Heads::Map(req.headers())
    }
}

impl ReqBody for Lean {
    /// Never asked: upgrades go to hyper.
    #[allow(clippy::result_large_err)] // as the trait's
    fn upgradable(req: Request<Self>) -> Result<Request<Incoming>, Request<Self>> {
        Err(req)
    }

    fn heads(req: &Request<Self>) -> Heads<'_> {
        Heads::Few(&req.body().heads)
    }
}

// `handle` and `route` return async blocks rather than being `async fn`s: an `async fn` keeps
// its arguments twice in its future (the request's head is 264 bytes), and each request's
// future is copied when it is made.
#[allow(clippy::manual_async_fn)]
fn handle<B: ReqBody>(
    app: Arc<App>,
    req: Request<B>,
    peer: SocketAddr,
) -> impl Future<Output = Resp> {
    async move {
        let id_buf = new_request_id();
        let request_id = std::str::from_utf8(&id_buf).expect("hex digits");
        let origin = B::heads(&req).value(Read::Origin);
        let mut cors = Cors::Any;
        let mut resp = route(&app, req, peer, request_id, &mut cors).await;
        let h = resp.headers_mut();
        h.insert(
            names::X_REQUEST_ID,
            HeaderValue::from_str(request_id).expect("hex is a valid header"),
        );
        h.insert(names::X_GATEWAY, app.gateway_header.clone());
        cors::apply(h, origin, cors);
        resp
    }
}

#[allow(clippy::manual_async_fn)] // see `handle`
fn route<'a, B: ReqBody>(
    app: &'a Arc<App>,
    mut req: Request<B>,
    peer: SocketAddr,
    request_id: &'a str,
    cors: &'a mut Cors,
) -> impl Future<Output = Resp> + 'a {
    async move {
        // Owned only in its `Uri` (an `Arc`-backed `Bytes`): a clone instead of a copy per request.
        let uri = req.uri().clone();
        let path = uri.path();
        match (req.method(), path) {
            (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/readyz") => return readyz(app.unserved_chains()),
            _ => {}
        }
        let (chain, url_key) = match chain_for(app, path) {
            Ok(found) => found,
            Err(resp) => return reject(req.into_body(), *resp).await,
        };
        let tenants = app.tenancy.current_full();
        if req.method() == Method::OPTIONS {
            return cors::preflight(app, &tenants, url_key, B::heads(&req), cors);
        }
        // Who is calling comes first, so every later refusal carries the tenant's CORS answer.
        let tenant = match admit_key(app, &tenants, chain, url_key, B::heads(&req), cors) {
            Ok(t) => t,
            Err(resp) => return reject(req.into_body(), *resp).await,
        };
        if app.config.websocket.enabled && super::ws::wants_upgrade(&req) {
            match B::upgradable(req) {
                Ok(req) => {
                    let ip = peer.ip();
                    return super::ws::upgrade(app, req, ip, chain.chain_id, tenant, tenants);
                }
                Err(given_back) => req = given_back,
            }
        }
        if req.method() != Method::POST {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "JSON-RPC needs POST (or GET with Upgrade: websocket)\n",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
            return reject(req.into_body(), r).await;
        }
        if !is_json(B::heads(&req).get(Read::ContentType)) {
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
        let heads = B::heads(&req);
        let caller_ip = crate::geo::client_ip(peer.ip(), heads, &app.trusted);
        let caller = app.locate(caller_ip);
        let series = app.series(chain.chain_id);
        series.request_from(caller.as_deref().and_then(|c| c.country.as_deref()));
        let gzip_in = match content_encoding(app, heads) {
            Ok(gzip) => gzip,
            Err(resp) => return reject(req.into_body(), *resp).await,
        };
        let gzip_out = compress::accepts_gzip(heads);
        if req.extensions().get::<super::h1::LateBody>().is_some() {
            return slow_body(app);
        }
        let body = match read_body(app, req.into_body(), max, gzip_in).await {
            Ok(body) => body,
            Err(resp) => return resp,
        };
        let who = Caller {
            location: caller.as_deref(),
            addr: caller_ip,
            tenant: tenant.as_deref(),
            tenants: &tenants,
        };
        let resp = app
            .path(chain)
            .serve(&body, request_id, started, &who, gzip_out)
            .await;
        if body.first() == Some(&b'[') {
            &series.duration_batch
        } else {
            &series.duration_single
        }
        .observe(started.elapsed().as_secs_f64());
        resp
    }
}

/// Whether the body is gzip-encoded (`Content-Encoding: gzip`); other codings are refused
/// with 415 (the caller can send identity or gzip).
fn content_encoding(app: &App, h: Heads<'_>) -> Result<bool, Box<Resp>> {
    let Some(v) = h.get(Read::ContentEncoding) else {
        return Ok(false);
    };
    match visible(v).map(str::trim) {
        Some(c) if c.eq_ignore_ascii_case("gzip") || c.eq_ignore_ascii_case("x-gzip") => Ok(true),
        Some(c) if c.eq_ignore_ascii_case("identity") => Ok(false),
        _ => {
            app.metrics
                .rejected
                .with_label_values(&["content_encoding"])
                .inc();
            Err(Box::new(rpc_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                rpc::INVALID_REQUEST,
                "content-encoding must be gzip or identity",
            )))
        }
    }
}

/// The caller's tenant (`None`: keyless), once its key, chain and origin pass; else the 401 or
/// 403 answer. Sets how CORS headers go out for the tenant's origins.
fn admit_key(
    app: &App,
    tenants: &crate::tenants::Tenants,
    chain: &ChainConfig,
    url_key: Option<&str>,
    headers: Heads<'_>,
    cors: &mut Cors,
) -> Result<Option<Arc<Tenant>>, Box<Resp>> {
    let checked = app
        .tenancy
        .identify(tenants, url_key, headers)
        .and_then(|t| {
            let Some(t) = t else { return Ok(None) };
            if !t.chain_allowed(chain.chain_id) {
                return Err(Denied::Chain);
            }
            *cors = cors::for_tenant(&t, headers.get(Read::Origin))?;
            Ok(Some(t))
        });
    checked.map_err(|d| {
        app.metrics.rejected.with_label_values(&[d.reason()]).inc();
        if d == Denied::Origin {
            *cors = Cors::Deny;
        }
        let code = match d.status() {
            StatusCode::UNAUTHORIZED => rpc::UNAUTHORIZED,
            _ => rpc::FORBIDDEN,
        };
        Box::new(rpc_error(d.status(), code, d.message()))
    })
}

/// The chain a path names and the API key in it: `/` is the default chain, `/{name}` or
/// `/{chain_id}` a configured one; `/v1/{key}` and `/{chain}/{key}` add a key.
fn chain_for<'a, 'p>(
    app: &'a App,
    path: &'p str,
) -> Result<(&'a ChainConfig, Option<&'p str>), Box<Resp>> {
    let rest = path.trim_start_matches('/');
    let (name, key) = match rest.split_once('/') {
        Some((name, key)) if !key.is_empty() && !key.contains('/') => (name, Some(key)),
        Some(_) => return Err(Box::new(text(StatusCode::NOT_FOUND, "not found\n"))),
        None => (rest, None),
    };
    let chain = match (name, key) {
        ("", None) => Ok(app.config.default_chain()),
        ("v1", Some(_)) => Ok(app.config.default_chain()),
        ("" | "v1", _) => Err(Box::new(text(StatusCode::NOT_FOUND, "not found\n"))),
        (name, _) => app.config.chain(name).ok_or_else(|| {
            app.metrics
                .rejected
                .with_label_values(&["unknown_chain"])
                .inc();
            let known: Vec<_> = app.config.chains.iter().map(|c| c.name.as_str()).collect();
            Box::new(rpc_error(
                StatusCode::NOT_FOUND,
                rpc::UNKNOWN_CHAIN,
                &format!(
                    "unknown chain {name:?}; this gateway serves: {}",
                    known.join(", ")
                ),
            ))
        }),
    }?;
    Ok((chain, key))
}

/// Reads the body within the size limit and the body deadline (and, when `gzip`, inflates it
/// within the size limit too); else the refusal.
async fn read_body<B: ReqBody>(app: &App, body: B, max: usize, gzip: bool) -> Result<Bytes, Resp> {
    let body_timeout = app.config.server.body_timeout;
    let mut collect = std::pin::pin!(Limited::new(body, max).collect());
    // A small body usually arrives with the headers: read it without arming a timer.
    let first = std::future::poll_fn(|cx| Poll::Ready(collect.as_mut().poll(cx))).await;
    let collected = match first {
        Poll::Ready(r) => Ok(r),
        Poll::Pending => tokio::time::timeout(body_timeout, collect).await,
    };
    match collected {
        Ok(Ok(b)) if gzip => match compress::gunzip(&b.to_bytes(), max) {
            Ok(body) => Ok(body),
            Err(compress::Gunzip::TooLarge) => Err(too_large(app, max)),
            Err(compress::Gunzip::Invalid(e)) => {
                app.metrics.rejected.with_label_values(&["bad_gzip"]).inc();
                Err(rpc_error(
                    StatusCode::BAD_REQUEST,
                    rpc::PARSE_ERROR,
                    &format!("the gzip request body does not inflate: {e}"),
                ))
            }
        },
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large(app, max))
        }
        Ok(Err(_)) => {
            app.metrics
                .rejected
                .with_label_values(&["body_error"])
                .inc();
            Err(text(
                StatusCode::BAD_REQUEST,
                "could not read the request body\n",
            ))
        }
        Err(_) => Err(slow_body(app)),
    }
}

/// The answer to a body not received within `body_timeout_ms`.
fn slow_body(app: &App) -> Resp {
    app.metrics.rejected.with_label_values(&["slow_body"]).inc();
    rpc_error(
        StatusCode::REQUEST_TIMEOUT,
        rpc::INVALID_REQUEST,
        &format!(
            "request body not received within {} ms",
            app.config.server.body_timeout.as_millis()
        ),
    )
}

/// Answers a request refused before its body was read. A small body is read (and dropped)
/// first, so the client is not cut off mid-write and the connection can be reused; a large or
/// slow one is not waited for.
/// Boxed: refusals are rare, and inline each of `route`'s would take room in every request's
/// future.
fn reject<B: ReqBody>(body: B, resp: Resp) -> std::pin::Pin<Box<dyn Future<Output = Resp> + Send>> {
    Box::pin(async move {
        const DRAIN_MAX: usize = 64 * 1024;
        let drain = Limited::new(body, DRAIN_MAX).collect();
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
        resp
    })
}

fn is_json(ct: Option<&[u8]>) -> bool {
    // What clients send, compared whole before the general parse.
    if ct == Some(b"application/json") {
        return true;
    }
    let Some(ct) = ct.and_then(visible) else {
        return false;
    };
    let mime = ct.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("application/json")
        || mime.eq_ignore_ascii_case("application/json-rpc")
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
