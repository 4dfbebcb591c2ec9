//! Health endpoints for load balancers and orchestrators (HAProxy `option httpchk`,
//! Kubernetes probes), and a JSON view of the agent.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use harp_core::routing::Authority;
use serde_json::json;

use crate::proxy::Shared;

#[derive(Clone)]
struct Ctx {
    shared: Arc<Shared>,
    probe_timeout: Duration,
}

/// The routes, for [`harp_http::serve`].
pub fn router(shared: Arc<Shared>, probe_timeout: Duration) -> Router {
    Router::new()
        .route("/health/is-live", get(|| async { "true" }))
        .route("/health/is-ready", get(is_ready))
        .route("/status", get(status))
        .with_state(Ctx {
            shared,
            probe_timeout,
        })
}

/// Ready means a client connecting now would be routed: etcd is in contact (the route is only
/// set then), a leader is known, and it accepts a TCP connection within the probe timeout.
async fn is_ready(State(ctx): State<Ctx>) -> (StatusCode, &'static str) {
    let route = ctx.shared.route.borrow().route.clone();
    let ok = match route {
        None => false,
        Some(r) => {
            let connect = crate::proxy::connect(&r);
            matches!(
                tokio::time::timeout(ctx.probe_timeout, connect).await,
                Ok(Ok(_))
            )
        }
    };
    match ok {
        true => (StatusCode::OK, "true"),
        false => (StatusCode::INTERNAL_SERVER_ERROR, "false"),
    }
}

async fn status(State(ctx): State<Ctx>) -> axum::Json<serde_json::Value> {
    let s = &ctx.shared;
    let routing = s.route.borrow().clone();
    let route = routing.route;
    let kernel = s.kernel.as_ref().map(|k| {
        let k = k.lock().expect("kernel lock");
        let [
            steered,
            peername,
            spliced,
            splice_miss,
            expired,
            fenced,
            unrecorded,
            splice_held,
        ] = k.counters();
        let leaders: Vec<_> = k
            .leaders()
            .into_iter()
            .map(|(service, backend, token)| {
                json!({"service": service.to_string(), "backend": backend.to_string(), "token": token})
            })
            .collect();
        json!({
            "pin_dir": k.pin_dir().display().to_string(),
            "leaders": leaders,
            "counters": {
                "steered": steered,
                "getpeername": peername,
                "spliced": spliced,
                "splice_miss": splice_miss,
                "expired": expired,
                "fenced": fenced,
                "unrecorded": unrecorded,
                "splice_held": splice_held,
            },
        })
    });
    let live = s.live();
    axum::Json(json!({
        "max_client_conn": live.max_client_conn,
        "pause_timeout_ms": live.pause_timeout.as_millis() as u64,
        "timeout_ms": live.timeout.as_millis() as u64,
        "keepalive_ms": live.keepalive.as_millis() as u64,
        "kernel": kernel,
        "name": s.name,
        "location": s.location,
        "mode": s.mode(),
        "leader": route.as_ref().map(|r| r.node.clone()),
        "token": route.as_ref().map(|r| r.token),
        "address": route.as_ref().map(|r| format!("{}:{}", r.address, r.port)),
        "sessions": s.sessions.load(Ordering::Relaxed),
        "held": s.held.load(Ordering::Relaxed),
        "draining": routing.draining,
        "authority": match s.trust.get() {
            Authority::Lapsed => json!("lapsed"),
            Authority::Unbounded => json!("unbounded"),
            Authority::Until(t) => json!({
                "remaining_ms": t.saturating_duration_since(std::time::Instant::now()).as_millis() as u64
            }),
        },
    }))
}
