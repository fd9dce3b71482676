//! CORS: which browser pages may read the gateway's answers. A tenant's `origins` decide the
//! headers only: a request from a page whose origin the tenant does not allow is refused (403,
//! without `Access-Control-Allow-Origin`, so the browser blocks it too), and a caller that
//! sends no `Origin` (every non-browser client) is never filtered by it.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::heads::{visible, Heads, Read};
use super::respond::Resp;
use crate::app::App;
use crate::tenants::{Denied, Tenant, Tenants};

/// The headers a page's code may read besides the basic ones.
const EXPOSE: &str =
    "x-cache, x-cache-tier, x-edge-node, x-edge-region, x-gateway, x-request-id, retry-after";
/// What a page may send: the body's type and coding, and the two key headers.
const ALLOW_HEADERS: &str = "content-type, content-encoding, x-api-key, authorization";

/// How a response answers the caller's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cors {
    /// Any origin (no tenant, or a tenant without an origin list).
    Any,
    /// The caller's origin, which the tenant's list allows.
    Echo,
    /// No CORS headers: the browser keeps the answer from the page.
    Deny,
}

/// The CORS answer for `tenant` and the request's `Origin` (an origin it does not allow is
/// refused).
pub fn for_tenant(tenant: &Tenant, origin: Option<&[u8]>) -> Result<Cors, Denied> {
    match (&tenant.origins, origin.map(visible)) {
        (None, _) | (_, None) => Ok(Cors::Any),
        (Some(_), Some(Some(o))) if tenant.origin_allowed(o) => Ok(Cors::Echo),
        (Some(_), _) => Err(Denied::Origin),
    }
}

/// Adds the CORS headers to a response. Without an `Origin` (not a browser), only the
/// wildcard, as before tenants existed.
pub fn apply(h: &mut HeaderMap, origin: Option<HeaderValue>, cors: Cors) {
    let allow = match (cors, origin) {
        (Cors::Deny, _) => return,
        (Cors::Any, None) => {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            return;
        }
        (Cors::Echo, Some(o)) => {
            h.append(header::VARY, HeaderValue::from_static("origin"));
            o
        }
        (_, _) => HeaderValue::from_static("*"),
    };
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE),
    );
}

/// The answer to a preflight (`OPTIONS`): POST with JSON and a key header may follow, from
/// any origin unless the URL's key names a tenant that does not allow the page's origin (then
/// 403 without CORS headers). A key sent in a header is checked on the request itself, since
/// browsers do not send it with the preflight.
pub fn preflight<'a>(
    app: &App,
    tenants: &Tenants,
    url_key: Option<&str>,
    headers: impl Into<Heads<'a>>,
    cors: &mut Cors,
) -> Resp {
    let headers = headers.into();
    let tenant = url_key.and_then(|k| {
        app.tenancy
            .identify(tenants, Some(k), &HeaderMap::new())
            .ok()
            .flatten()
    });
    *cors = match tenant {
        Some(t) => for_tenant(&t, headers.get(Read::Origin)).unwrap_or(Cors::Deny),
        None => Cors::Any,
    };
    let mut r = Response::new(Full::new(Bytes::new()));
    if *cors == Cors::Deny {
        app.metrics
            .rejected
            .with_label_values(&[Denied::Origin.reason()])
            .inc();
        *r.status_mut() = StatusCode::FORBIDDEN;
        return r;
    }
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    r
}
