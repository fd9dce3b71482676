//! End-to-end tests: one test binary (one link step on a 2-core machine), one module per area.

mod chainstate;
mod configs;
mod join;
mod observability;
mod routing;
mod spine;
