//! What operators see: the admin listener, Prometheus metrics and the status page.
//!
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`, `/status`, `/status.json`;
//! - [`metrics`]: the Prometheus registry and the hot-path series; `metrics::nodes` rebuilds
//!   the per-node gauges from the registry at each scrape;
//! - [`status`]: the status page and its document; bounded rings of recent failovers and
//!   departed nodes;
//! - [`tenants`]: `/admin/tenants` (live usage) and `/admin/tenants/reload`, behind the admin
//!   token.

pub mod admin;
pub mod metrics;
pub mod status;
pub mod tenants;
