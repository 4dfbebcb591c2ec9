//! harp-manager as a library: the binary is a thin `main` over [`run`], so tests and tools
//! can drive the pieces (the Postgres operations of streaming mode among them) directly.

pub mod claim;
pub mod dcs;
pub mod http;
pub mod pgconn;
pub mod pgctl;
pub mod postgres;
pub mod runner;
pub mod standby;

use std::path::PathBuf;

use anyhow::Context;
use harp_core::config::{self, Config, ConfigError, ConfigIssue};
use harp_core::election::{Election, Params};
use harp_core::keys::Keys;
use harp_core::records::PgState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch as tokio_watch};

/// Loads the file and checks what only the manager needs: a manager section and a dsn whose
/// host and port clients can be routed to.
pub fn load(path: &std::path::Path) -> Result<(Config, String, u16), ConfigError> {
    let config = config::load_file(path)?;
    let file = path.display().to_string();
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        file: file.clone(),
        issues: vec![ConfigIssue {
            line: None,
            key: key.into(),
            message,
        }],
    };
    let Some(m) = &config.manager else {
        return Err(invalid(
            "manager",
            "missing section; harp-manager needs at least `manager.name` and `manager.dsn`".into(),
        ));
    };
    let pg = pgconn::PgTarget::parse(&m.node.dsn)
        .map_err(|e| invalid("manager.dsn", format!("not a valid connection string: {e}")))?;
    let pg = pg.config();
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => {
            return Err(invalid(
                "manager.dsn",
                "needs `host=` with an address clients can reach (not a unix socket)".into(),
            ));
        }
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    if m.node.stop_database_when_fenced
        && (m.node.db_data_dir.is_none() || m.node.db_bin_dir.is_none())
    {
        return Err(invalid(
            "manager.stop_database_when_fenced",
            "needs manager.db_data_dir and manager.db_bin_dir to stop and start Postgres".into(),
        ));
    }
    Ok((config, host, port))
}

pub async fn run(
    path: PathBuf,
    (mut config, address, port): (Config, String, u16),
) -> anyhow::Result<()> {
    let file_node = config.manager.clone().context("manager section")?.node;
    let keys = Keys::new(&config.cluster.name);
    let dcs = harp_dcs::connect_at_start(&config.dcs, keys).await?;
    let name = config
        .manager
        .as_ref()
        .context("manager section")?
        .name
        .clone();
    claim::claim_name(&dcs, &name, &path.display().to_string()).await?;
    // Directives set in etcd apply from the start; the runner reports later changes to those
    // that only a restart can apply.
    let layers = startup_directives(&dcs, &config).await;
    if let Some(m) = config.manager.as_mut() {
        m.node = layers.effective().merge(&file_node, &file_node).0;
    }
    let m = config.manager.clone().context("manager section")?;
    let params = Params {
        node: m.name.clone(),
        // Streaming: one lease for the whole cluster, whatever the node's location.
        location: config.scope().to_owned(),
        priority: m.node.priority,
        lease_ttl: m.node.leader_lease_duration,
        maximum_lag: m.node.maximum_lag,
        candidate_step: std::time::Duration::from_millis(500),
        retry_min: std::time::Duration::from_millis(100),
        retry_max: std::time::Duration::from_secs(2),
        stop_when_fenced: m.node.stop_database_when_fenced,
        server_transfer_timeout: m.node.server_transfer_timeout,
        streaming: config.is_streaming(),
        synchronous: config.cluster.synchronous_mode != config::SynchronousMode::Off,
    };
    tracing::info!(
        node = %m.name,
        location = %config.location,
        cluster = %config.cluster.name,
        "harp-manager starting; routing address {address}:{port}"
    );
    let (tx, rx) = mpsc::channel(256);
    let (publish, publish_rx) = tokio_watch::channel(None);
    let election = Election::new(params);
    let (view, view_rx) = tokio_watch::channel(http::StatusView {
        name: m.name.clone(),
        location: config.location.clone(),
        role: "follower",
        token: None,
        postgres: PgState::Unknown,
        leader: None,
        leader_token: None,
        fenced: false,
        managed: true,
        ineligible: election.ineligible_reason(),
        switchover_refusal: None,
        etcd_session: false,
        replication: config.cluster.replication.as_str(),
        writable: false,
        replica: Default::default(),
        reason: None,
    });
    if config.http.enable {
        let listener = harp_http::bind(&config.http).await?;
        let app = http::router(view_rx);
        tokio::spawn(harp_http::serve(
            listener,
            app,
            harp_http::Limits::default(),
        ));
    }
    let session = harp_dcs::SessionParams {
        ttl: m.node.leader_lease_duration,
        refresh: m.node.lease_refresh_interval,
    };
    tokio::spawn(harp_dcs::session::run(dcs.clone(), session, tx.clone()));
    let prefix = dcs.keys.prefix().to_owned();
    tokio::spawn(harp_dcs::mirror::run(dcs.clone(), prefix, tx.clone()));
    let target = pgconn::PgTarget::parse(&m.node.dsn).context("manager.dsn")?;
    tokio::spawn(postgres::run(
        target,
        m.node.health_check_interval,
        m.node.health_check_timeout,
        tx.clone(),
    ));
    tokio::spawn(harp_dcs::publisher(dcs.clone(), publish_rx));
    tokio::spawn(forward_signals(tx.clone()));
    let marks = dcs::marker(dcs.clone());
    // One PgCtl (its clones share the turn lock) for the fence stops and starts and for the
    // streaming operations.
    let ctl = match (&m.node.db_bin_dir, &m.node.db_data_dir) {
        (Some(bin_dir), Some(data_dir)) => {
            Some(pgctl::PgCtl::new(bin_dir.clone(), data_dir.clone()))
        }
        _ => None,
    };
    let standby = match &ctl {
        Some(ctl) if config.is_streaming() => Some(std::sync::Arc::new(
            standby::Standby::new(ctl.clone(), &m.node.dsn, &m.name).context("manager.dsn")?,
        )),
        _ => None,
    };
    runner::Runner {
        config_path: path,
        config,
        dcs,
        election,
        address,
        port,
        lease: None,
        leader: None,
        pgctl: ctl.map(pgctl::serve),
        file_node,
        layers,
        pending_restart: Vec::new(),
        cluster_managed: true,
        node_unmanaged: false,
        tx,
        rx,
        publish,
        view,
        marks,
        facts: Default::default(),
        standby,
        optime: None,
        leader_record: tokio_watch::channel(None).0,
        sync_record: tokio_watch::channel(None).0,
        sync_peers: tokio_watch::channel(Vec::new()).0,
        sync_health: tokio_watch::channel(Default::default()).0,
        sync_keeper: None,
        sync_seen: Default::default(),
    }
    .run()
    .await
}

async fn forward_signals(tx: mpsc::Sender<runner::Input>) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        let input = tokio::select! {
            _ = term.recv() => runner::Input::Shutdown,
            _ = int.recv() => runner::Input::Shutdown,
            _ = hup.recv() => runner::Input::Reload,
        };
        tx.send(input).await?;
    }
}

/// The cluster's, location's and node's directives if etcd answers now; else none (the watch
/// delivers them later).
async fn startup_directives(
    dcs: &harp_dcs::Dcs,
    config: &Config,
) -> harp_core::directives::NodeLayers {
    use harp_core::directives::NodeLayers;
    let Some(m) = &config.manager else {
        return NodeLayers::default();
    };
    let keys = [
        dcs.keys.cluster_config(),
        dcs.keys.location_config(&config.location),
        dcs.keys.node_config(&m.name),
    ];
    let mut found = Vec::new();
    for key in keys {
        let mut c = dcs.client.clone();
        match dcs.bounded(c.get(key, None)).await {
            Ok(resp) => found.push(runner::directives(
                resp.kvs().first().map(|kv| kv.value().to_vec()),
            )),
            Err(e) => {
                tracing::warn!(
                    "etcd not reachable at start ({e}); using the config file's directives"
                );
                return NodeLayers::default();
            }
        }
    }
    let [cluster, location, node] = <[_; 3]>::try_from(found).expect("three keys read");
    let layers = NodeLayers {
        cluster,
        location,
        node,
    };
    let eff = layers.effective();
    if !eff.entries().is_empty() {
        tracing::info!("node directives from etcd: {}", eff.encode());
    }
    layers
}
