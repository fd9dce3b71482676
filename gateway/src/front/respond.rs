//! Response builders shared by the front door and the request path, and request ids.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::jsonrpc;

pub type Resp = Response<Full<Bytes>>;

/// The gateway's own headers, made once: a `&str` name is parsed on every insert.
pub mod names {
    use http::HeaderName;
    pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
    pub const X_CACHE_TIER: HeaderName = HeaderName::from_static("x-cache-tier");
    pub const X_EDGE_NODE: HeaderName = HeaderName::from_static("x-edge-node");
    pub const X_EDGE_REGION: HeaderName = HeaderName::from_static("x-edge-region");
    pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
    pub const X_GATEWAY: HeaderName = HeaderName::from_static("x-gateway");
}

/// A JSON body.
pub fn json(status: StatusCode, body: Bytes) -> Resp {
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

/// A JSON-RPC error response (id `null`) with an HTTP status.
pub fn rpc_error(status: StatusCode, code: i64, message: &str) -> Resp {
    json(status, jsonrpc::error_response(code, message))
}

/// A plain-text body.
pub fn text(status: StatusCode, body: &str) -> Resp {
    daemon::admin::text(status, Bytes::copy_from_slice(body.as_bytes()))
}

/// `/readyz`: ready while every configured chain has a healthy node.
pub fn readyz(unserved: Vec<String>) -> Resp {
    if unserved.is_empty() {
        text(StatusCode::OK, "ready\n")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("no healthy node for: {}\n", unserved.join(", ")),
        )
    }
}

/// 16 lowercase hex digits, on the stack: `format!` and a `String` cost several times more per
/// request.
pub fn new_request_id() -> [u8; 16] {
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
