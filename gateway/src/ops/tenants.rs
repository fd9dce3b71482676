//! The tenant admin API on the admin listener, behind `Authorization: Bearer
//! <server.admin_token>` (no token configured: 403):
//!
//! - `GET /admin/tenants`: every tenant with its limits and live usage, the keyless settings,
//!   and whether limits are shared through Redis right now;
//! - `POST /admin/tenants/reload`: reloads the tenants file (200 with the count, or 422 with
//!   why; the previous set stays in use);
//! - `POST /admin/nodes/{id}/readmit`: ends a node's ejection (`crate::nodes::audit`) before
//!   its time (200, or 404 when the node is not ejected).

use std::sync::atomic::Ordering::Relaxed;

use daemon::admin::{body, AdminResponse};
use http::{header, Method, Request, StatusCode};
use serde_json::json;

use crate::app::App;

pub fn route(app: &App, req: &Request<hyper::body::Incoming>) -> AdminResponse {
    let Some(token) = &app.config.server.admin_token else {
        return reply(
            StatusCode::FORBIDDEN,
            json!({"error": "no server.admin_token is configured"}),
        );
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        });
    if !given.is_some_and(|g| token.matches(g)) {
        let mut r = reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": "Authorization: Bearer <server.admin_token> required"}),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/admin/tenants") => reply(StatusCode::OK, listing(app)),
        (&Method::POST, "/admin/tenants/reload") => match app.tenancy.reload_logged("admin API") {
            Ok(n) => reply(StatusCode::OK, json!({"reloaded": true, "tenants": n})),
            Err(e) => reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"reloaded": false, "error": e.to_string()}),
            ),
        },
        (&Method::POST, p) if readmit_id(p).is_some() => {
            let id = readmit_id(p).unwrap_or_default();
            match app.auditor.readmit(id) {
                true => reply(StatusCode::OK, json!({"readmitted": id})),
                false => reply(
                    StatusCode::NOT_FOUND,
                    json!({"error": format!("node {id:?} is not ejected")}),
                ),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, json!({"error": "not found"})),
    }
}

/// The node id of `/admin/nodes/{id}/readmit`.
fn readmit_id(path: &str) -> Option<&str> {
    let id = path
        .strip_prefix("/admin/nodes/")?
        .strip_suffix("/readmit")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// The tenants in use with their limits and usage.
fn listing(app: &App) -> serde_json::Value {
    let tenants = app.tenancy.current();
    let shared = &app.tenancy.shared;
    let list: Vec<_> = tenants
        .list
        .iter()
        .map(|t| {
            let b = &t.budget;
            json!({
                "name": t.name,
                "keys": t.keys,
                "chains": t.chains,
                "origins": t.origins,
                "limits": {
                    "requests_per_second": b.requests.rate(),
                    "compute_units_per_second": b.compute_units.rate(),
                    "daily_quota": b.daily.quota(),
                    "max_batch": t.max_batch,
                },
                "usage": {
                    "calls_per_second": f64::from_bits(b.recent_rate.load(Relaxed)),
                    "calls_total": b.admitted.load(Relaxed),
                    "compute_units_total": b.admitted_cu.load(Relaxed),
                    "limited_total": b.refused.load(Relaxed),
                    "daily_used": b.daily.used(),
                    // Tokens this gateway holds now (null: that limit is off).
                    "requests_tokens_here": (b.requests.rate() > 0).then(|| b.requests.available()),
                    "compute_units_tokens_here": (b.compute_units.rate() > 0)
                        .then(|| b.compute_units.available()),
                },
            })
        })
        .collect();
    json!({
        "tenants": list,
        "keyless": {
            "serve": tenants.keyless_serve,
            "requests_per_second_per_address": tenants.keyless_rps,
        },
        "shared": {
            "redis": shared.configured(),
            "up": shared.up(),
            "gateways": shared.peers(),
            "sync_lag_seconds": shared.configured().then(|| shared.lag().as_secs_f64()),
        },
    })
}

fn reply(status: StatusCode, v: serde_json::Value) -> AdminResponse {
    let mut r = body(status, "application/json", v.to_string());
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::readmit_id;

    #[test]
    fn readmit_paths_name_one_node() {
        assert_eq!(readmit_id("/admin/nodes/ab12/readmit"), Some("ab12"));
        assert_eq!(readmit_id("/admin/nodes/readmit"), None);
        assert_eq!(readmit_id("/admin/nodes//readmit"), None);
        assert_eq!(readmit_id("/admin/nodes/a/b/readmit"), None);
        assert_eq!(readmit_id("/admin/nodes/ab12"), None);
    }
}
