//! Tenants' metrics: per tenant (a configured name, or `keyless`; label values never come
//! from callers) calls and compute units admitted and calls refused over a limit; the tenants
//! file's reloads; and, for a gateway that shares through Redis, whether Redis answers.

use daemon::metrics::Families;
use prometheus::{IntCounterVec, IntGauge, Registry};

pub struct TenantFamilies {
    pub calls: IntCounterVec,
    pub compute_units: IntCounterVec,
    pub limited: IntCounterVec,
    pub reloads: IntCounterVec,
    pub configured: IntGauge,
}

impl TenantFamilies {
    pub fn new(f: &Families<'_>) -> Self {
        let reloads = f.counter_vec(
            "tenants_reloads_total",
            "Tenants file loads by result (ok; error: the previous set stays in use).",
            &["result"],
        );
        // Both results exist from the start, for rates and alerts.
        for r in ["ok", "error"] {
            reloads.with_label_values(&[r]);
        }
        Self {
            calls: f.counter_vec(
                "tenant_calls_total",
                "Calls admitted, by tenant (a configured tenant name, or keyless).",
                &["tenant"],
            ),
            compute_units: f.counter_vec(
                "tenant_compute_units_total",
                "Compute units of the calls admitted, by tenant (configured tenants only).",
                &["tenant"],
            ),
            limited: f.counter_vec(
                "tenant_limited_total",
                "Calls refused over a limit, by tenant and limit (requests_per_second, compute_units_per_second, daily_quota, max_batch, address_requests_per_second).",
                &["tenant", "limit"],
            ),
            reloads,
            configured: f.gauge("tenants", "Tenants in the tenants file in use."),
        }
    }
}

/// Whether the gateway shares through Redis right now.
pub struct RedisGauges {
    pub up: IntGauge,
    pub sync_lag: prometheus::Gauge,
}

impl RedisGauges {
    pub fn new(registry: &Registry) -> Self {
        let lag = prometheus::Gauge::new(
            "redis_sync_lag_seconds",
            "Seconds since limits were last reconciled with Redis.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(lag.clone()))
            .expect("registered once");
        Self {
            up: Families(registry).gauge(
                "redis_up",
                "1 while Redis answers (tenant limits shared), 0 while each gateway enforces its local share.",
            ),
            sync_lag: lag,
        }
    }
}
