//! How the gateway reaches Redis (shared limits, shared RTTs): one way to open a connection,
//! with the connect and response times bounded, and the wall clock entries carry.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

/// Redis gets this long to connect and to answer before the caller counts it unreachable.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// A multiplexed connection, or `None` when Redis cannot be reached within [`REDIS_TIMEOUT`].
pub async fn open(client: &redis::Client) -> Option<MultiplexedConnection> {
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .ok()
}

/// Unix time in milliseconds: what entries other gateways read are stamped with.
pub use daemon::unix_ms;
