//! Health endpoints for load balancers and orchestrators, and a JSON view of the manager.

pub mod health;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use harp_core::records::PgState;
use serde::Serialize;
use tokio::sync::watch;

use self::health::{Check, Query};

/// What `GET /status` shows: the manager's view of itself and of the lease.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    pub name: String,
    pub location: String,
    /// `leader` or `follower`.
    pub role: &'static str,
    /// Our fencing token while leading.
    pub token: Option<i64>,
    pub postgres: PgState,
    /// The leader of our location as last seen in etcd.
    pub leader: Option<String>,
    pub leader_token: Option<i64>,
    pub fenced: bool,
    pub managed: bool,
    /// Why this node would not lead now, if it would not.
    pub ineligible: Option<String>,
    /// Why a requested switchover away from this leader does not happen, if it does not.
    pub switchover_refusal: Option<String>,
    pub etcd_session: bool,
    /// `multi_writer` or `streaming`.
    pub replication: &'static str,
    /// Leading, and Postgres takes writes under our lease (promotion done): what `/primary`
    /// reports.
    pub writable: bool,
    /// Streaming mode: replication as the last check saw it (timeline, upstream, lag, …).
    pub replica: harp_core::records::ReplicaFacts,
    /// Why the node is not serving as it should (e.g. a failed rewind).
    pub reason: Option<String>,
}

/// The routes; `GET` routes answer `HEAD` too (headers only).
pub fn router(view: watch::Receiver<StatusView>) -> Router {
    let check = |c: Check| {
        get(
            move |State(v): State<watch::Receiver<StatusView>>,
                  axum::extract::Query(q): axum::extract::Query<Vec<(String, String)>>| async move {
                let view = v.borrow().clone();
                answer(c, &view, &q)
            },
        )
    };
    Router::new()
        // Live means the process serves requests; if it cannot, nothing answers at all.
        .route("/health/is-live", get(|| async { "true" }))
        .route("/status", get(status))
        .route("/primary", check(Check::Primary))
        .route("/read-write", check(Check::Primary))
        .route("/leader", check(Check::Leader))
        .route("/replica", check(Check::Replica))
        .route("/read-only", check(Check::ReadOnly))
        .with_state(view)
}

/// What a check endpoint sends: 200 or 503 (400 for a bad query), and a JSON body with the
/// verdict and the status view.
pub fn answer(check: Check, view: &StatusView, params: &[(String, String)]) -> Response {
    let query = match Query::parse(check, params.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
        Ok(q) => q,
        Err(why) => {
            let body = serde_json::json!({ "check": check.as_str(), "ok": false, "why": why });
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    let verdict = health::decide(check, view, &query);
    let code = if verdict.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = CheckBody {
        check: check.as_str(),
        ok: verdict.ok,
        why: &verdict.why,
        status: view,
    };
    (code, axum::Json(body)).into_response()
}

/// A check's body: the verdict, then every field of `/status`.
#[derive(Serialize)]
struct CheckBody<'a> {
    check: &'static str,
    ok: bool,
    why: &'a str,
    #[serde(flatten)]
    status: &'a StatusView,
}

async fn status(State(view): State<watch::Receiver<StatusView>>) -> axum::Json<StatusView> {
    axum::Json(view.borrow().clone())
}
