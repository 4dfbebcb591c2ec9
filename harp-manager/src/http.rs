//! Health endpoints for load balancers and orchestrators, and a JSON view of the manager.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use harp_core::config::HttpConfig;
use harp_core::records::PgState;
use serde::Serialize;
use tokio::sync::watch;

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
    let app = Router::new()
        // Live means the process serves requests; if it cannot, nothing answers at all.
        .route("/health/is-live", get(|| async { "true" }))
        .route("/status", get(status))
        .with_state(view);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn status(State(view): State<watch::Receiver<StatusView>>) -> axum::Json<StatusView> {
    axum::Json(view.borrow().clone())
}
