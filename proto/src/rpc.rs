//! JSON-RPC error codes and error objects shared by the gateway and the edge nodes, so one
//! failure reads the same whichever side produced it.

use bytes::Bytes;
use serde_json::json;

/// Invalid JSON was received (JSON-RPC 2.0).
pub const PARSE_ERROR: i64 = -32700;
/// The JSON sent is not a valid request object (JSON-RPC 2.0).
pub const INVALID_REQUEST: i64 = -32600;
/// The method does not exist or is not available here (JSON-RPC 2.0).
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid method parameters (JSON-RPC 2.0).
pub const INVALID_PARAMS: i64 = -32602;
/// Internal error, including upstream timeouts and failures (JSON-RPC 2.0).
pub const INTERNAL_ERROR: i64 = -32603;
/// The chain named in the URL is not served by this gateway.
pub const UNKNOWN_CHAIN: i64 = -32001;
/// No healthy edge node can serve the request right now.
pub const NO_NODE: i64 = -32002;
/// A request limit (body size, batch length, a tenant's rate or quota) was exceeded.
pub const LIMIT_EXCEEDED: i64 = -32005;
/// No API key where one is required, or an unknown or revoked one (HTTP 401).
pub const UNAUTHORIZED: i64 = -32010;
/// The API key may not be used for this chain or from this browser origin (HTTP 403).
pub const FORBIDDEN: i64 = -32011;

/// Builds the raw JSON of an error object `{"code":..,"message":..}`.
pub fn error_object(code: i64, message: impl AsRef<str>) -> Bytes {
    Bytes::from(json!({ "code": code, "message": message.as_ref() }).to_string())
}
