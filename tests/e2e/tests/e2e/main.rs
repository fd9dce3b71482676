//! End-to-end tests: one test binary (one link step on a 2-core machine), one module per area.
//! The harness is this crate's library (`use e2e::*`). `configs` and `observability::dashboards`
//! only read files and start no stack.

mod capabilities;
mod chainstate;
mod compression;
mod configs;
mod connections;
mod consistency;
mod deploy;
mod fuzz;
mod gateways;
mod hedging;
mod join;
mod observability;
mod routing;
mod spine;
mod subscriptions;
mod tenants;
mod trust;
mod upstream_ws;
