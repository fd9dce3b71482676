//! The front door: the JSON-RPC HTTP listener and what it speaks.
//!
//! - [`entry`]: connections (limits, timeouts, graceful drain), paths, content type and the
//!   body, then hands the body to the request path ([`crate::request`]);
//! - [`jsonrpc`]: parsing bodies into calls and writing responses with the callers' ids;
//! - [`respond`]: response builders and request ids.

pub mod entry;
pub mod jsonrpc;
pub mod respond;
