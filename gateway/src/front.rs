//! The front door: the JSON-RPC HTTP listener and what it speaks.
//!
//! - [`entry`]: the listener, paths, content type and the body, then hands the body to the
//!   request path ([`crate::request`]);
//! - [`h1`]: the lean HTTP/1.1 server for plain `POST`s, and the hand-off to hyper for the rest;
//! - [`heads`]: the request headers the request path reads, from either server;
//! - [`conns`]: the open connections: their bounds (in all, per address), header and idle
//!   deadlines, shedding the idlest when full, graceful drain;
//! - [`jsonrpc`]: parsing bodies into calls and writing responses with the callers' ids;
//! - [`respond`]: response builders and request ids;
//! - [`compress`]: gzip for answers and request bodies, and kept answers deflated once;
//! - [`cors`]: CORS headers and preflight answers, per the caller's tenant;
//! - [`ws`]: JSON-RPC over WebSocket and its subscriptions.

pub mod compress;
pub mod conns;
pub mod cors;
pub mod entry;
pub mod h1;
pub mod heads;
pub mod jsonrpc;
pub mod respond;
pub mod sniff;
pub mod ws;
