//! The gateway <-> edge-node wire protocol, defined once.
//!
//! Everything both sides must agree on lives here and nowhere else:
//! - [`frame`]: length-prefixed frames with a type byte and a hard size bound;
//! - [`msg`]: the messages carried in those frames (join handshake, status reports,
//!   RPC requests and responses) and their encodings;
//! - [`identity`]: persistent key pairs, node ids derived from public keys, pinned fingerprints;
//! - [`tls`]: the mutual-TLS / QUIC configuration for both ends;
//! - [`sub`]: subscription streams (`eth_subscribe` fanned out from a node's chain state);
//! - [`rpc`]: JSON-RPC error codes and error objects shared by the gateway and edge nodes.
//!
//! Versioning: the protocol version is carried in the QUIC ALPN (`meridian/4`), so a peer
//! speaking another version fails the handshake instead of misreading frames, and again in
//! the `Hello` message for a clear log line.

pub mod frame;
pub mod identity;
pub mod msg;
pub mod rpc;
pub mod sub;
pub mod tls;

/// Version of the framing and message layout below. Bump on any incompatible change.
/// 2: `Head` frames, and chain-state versions on RPC responses.
/// 3: `min_head` on RPC requests (monotonic reads across nodes).
/// 4: one shared request stream per connection (tagged requests and answers, `Busy`).
pub const PROTOCOL_VERSION: u16 = 4;

/// ALPN identifier negotiated on every gateway <-> node QUIC connection.
pub const ALPN: &[u8] = b"meridian/4";

/// Default upper bound for one frame; both sides enforce their configured bound.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 32 * 1024 * 1024;
