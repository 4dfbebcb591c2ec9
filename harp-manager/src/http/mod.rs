//! Health endpoints for load balancers and orchestrators, and a JSON view of the manager.

pub mod health;

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use harp_core::config::HttpConfig;
use harp_core::records::PgState;
use serde::Serialize;
use tokio::sync::watch;

use self::health::{Check, Query};

/// How long a client may take to send a request's headers before its connection is closed:
/// a slow or silent client must not hold a connection (and its task) forever. Health checkers
/// send a few hundred bytes at once.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Binds at start, so a taken port is an error before the manager joins the cluster.
pub async fn bind(cfg: &HttpConfig) -> anyhow::Result<tokio::net::TcpListener> {
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on http {addr}: {e} (set http.port, or http.enable: false)")
    })?;
    tracing::info!("health endpoints on http://{addr}");
    Ok(listener)
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    view: watch::Receiver<StatusView>,
) -> anyhow::Result<()> {
    serve_with(listener, view, HEADER_READ_TIMEOUT).await
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

/// [`serve`] with the header-read bound given (tests shorten it). axum's own `serve` sets no
/// timer on hyper's connections, so it could not bound the header read; this loop does.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    view: watch::Receiver<StatusView>,
    header_read_timeout: Duration,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let app = router(view);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            // Out of file descriptors and the like: the next accept may work.
            Err(e) => {
                tracing::warn!("http accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("http connection: {e}");
            }
        });
    }
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
