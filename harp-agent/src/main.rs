//! harp-agent: routes Postgres clients to the lead master of its location, holds them while
//! there is none, cuts sessions to a replaced leader, and fails closed without etcd.

mod authority;
mod destroy;
mod health;
mod kernel;
mod limits;
mod pgbouncer;
mod proxy;
mod refuse;
mod relay;
mod runner;
mod steering;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use harp_core::config::{self, Config, ConfigError, ConfigIssue, DEFAULT_CONFIG_PATH, ProxyConfig};
use harp_core::directives::ProxyLive;
use harp_core::keys::Keys;
use harp_core::routing::{Routing, Watch};
use runner::Mirror;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};

#[derive(Parser)]
#[command(
    version,
    about = "HARP agent: routes Postgres clients to their location's lead master"
)]
struct Args {
    /// Path to config.yml.
    #[arg(short = 'f', long = "config", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Remove this proxy's kernel programs, maps and links (pinned under /sys/fs/bpf/harp/)
    /// and exit. Kernel steering stops; clients reach the userspace listener, if one runs.
    #[arg(long)]
    uninstall: bool,
    /// Internal: run as the guard of the PgBouncer process with this PID.
    #[arg(long, hide = true, value_name = "PID")]
    pgbouncer_guard: Option<i32>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    if let Some(pid) = args.pgbouncer_guard {
        return pgbouncer::guard::run(pid);
    }
    let (config, proxy) = match load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.uninstall {
        let pins = steering::pin_dir(&config.cluster.name, &proxy.name);
        return match kernel::Kernel::uninstall(&pins) {
            Ok(()) => {
                println!(
                    "removed HARP's kernel programs and maps ({})",
                    pins.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    // One thread: relaying is cheap per byte, and cross-thread wake-ups would cost more than
    // they give on the small hosts an agent shares with its clients.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let config_dir = match args.config.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let path = args.config.clone();
    match rt.block_on(run(config, proxy, config_dir, path)) {
        Ok(()) => ExitCode::SUCCESS,
        // A config error: etcd refused these credentials, or HARP refused etcd's.
        Err(e)
            if e.downcast_ref::<harp_dcs::DcsError>()
                .is_some_and(harp_dcs::DcsError::is_refusal) =>
        {
            eprintln!("{e}");
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &std::path::Path) -> Result<(Config, ProxyConfig), ConfigError> {
    let config = config::load_file(path)?;
    let Some(proxy) = config.proxy.clone() else {
        return Err(ConfigError::Invalid {
            file: path.display().to_string(),
            issues: vec![ConfigIssue {
                line: None,
                key: "proxy".into(),
                message: "missing section; harp-agent needs at least `proxy.name`".into(),
            }],
        });
    };
    Ok((config, proxy))
}

async fn run(
    config: Config,
    mut proxy: ProxyConfig,
    config_dir: PathBuf,
    path: PathBuf,
) -> anyhow::Result<()> {
    // First: SIGHUP's default action ends the process, and logrotate or an operator may send
    // it at any time.
    let signals = Signals::new()?;
    proxy.max_client_conn = limits::fit_max_client_conn(proxy.max_client_conn);
    if proxy.pgbouncer.is_some() && proxy.mode == config::ProxyMode::Auto {
        // Steering connects past PgBouncer would bypass its pools.
        tracing::info!("proxy.type is pgbouncer: kernel steering stays off");
        proxy.mode = config::ProxyMode::Userspace;
    }
    // Found before anything starts: a missing PgBouncer is a setup error, said at once.
    let pgbouncer_bin = proxy
        .pgbouncer
        .as_ref()
        .map(pgbouncer::binary)
        .transpose()?;
    let steering = steering::Steering::start(&proxy, &config.cluster.name)
        .map_err(|e| anyhow::anyhow!("proxy.mode is ebpf but kernel steering failed: {e}"))?;
    let keys = Keys::new(&config.cluster.name);
    let dcs = harp_dcs::connect_at_start(&config.dcs, keys).await?;
    let listener = match &proxy.pgbouncer {
        None => Some(proxy::bind(&proxy).await?),
        Some(_) => None,
    };
    let health_listener = match config.http.enable {
        true => Some(harp_http::bind(&config.http).await?),
        false => None,
    };
    tracing::info!(
        proxy = %proxy.name,
        location = %config.location,
        routes_for = %config.scope(),
        cluster = %config.cluster.name,
        mode = if steering.is_some() { "ebpf" } else { "userspace" },
        r#type = if proxy.pgbouncer.is_some() { "pgbouncer" } else { "builtin" },
        "harp-agent starting"
    );
    let (route_tx, route_rx) = watch::channel(Routing::default());
    let route_rx_for_pgbouncer = route_rx.clone();
    let kernel = steering.as_ref().map(|s| (s.kernel(), s.service()));
    // Streaming mode: the cluster's one primary, whatever our location.
    let shared = Arc::new(proxy::Shared::new(&proxy, config.scope(), route_rx, kernel));
    if let Some(l) = health_listener {
        let (shared, timeout) = (shared.clone(), config.http.probes_timeout);
        let app = health::router(shared, timeout);
        tokio::spawn(harp_http::serve(l, app, harp_http::Limits::default()));
    }
    if let Some(l) = listener {
        tokio::spawn(proxy::accept_loop(l, shared.clone()));
    }
    let pgbouncer = match (&proxy.pgbouncer, &pgbouncer_bin) {
        (Some(pgb), Some(bin)) => {
            let live = shared.live();
            let p = pgbouncer::PgBouncer::start(bin, &config_dir, &proxy, pgb, live).await?;
            Some(tokio::spawn(p.run(route_rx_for_pgbouncer, shared.clone())))
        }
        _ => None,
    };

    let (tx, rx) = mpsc::channel(256);
    let session = harp_dcs::SessionParams {
        ttl: proxy.leader_lease_duration,
        refresh: proxy.lease_refresh_interval,
    };
    tokio::spawn(harp_dcs::session::run(dcs.clone(), session, tx.clone()));
    // Only the keys the agent acts on: its location's leader and the management switches.
    // Each mirror is tagged: one read again says nothing of another still broken.
    for (prefix, mirror) in [
        (
            dcs.keys.leader(config.scope()),
            Mirror::Route(Watch::Leader),
        ),
        (dcs.keys.managed(), Mirror::Route(Watch::Managed)),
        (
            dcs.keys.proxy_unmanaged(&proxy.name),
            Mirror::Route(Watch::ProxyUnmanaged),
        ),
        (
            format!("{}config/proxies/", dcs.keys.prefix()),
            Mirror::Config,
        ),
    ] {
        let tag = move |ev| runner::Input::Mirror(mirror, ev);
        tokio::spawn(harp_dcs::mirror::run_tagged(
            dcs.clone(),
            prefix,
            tx.clone(),
            tag,
        ));
    }
    // The other proxies' statuses: a new leader is routed once they left the old one.
    let proxies = format!("{}proxies/", dcs.keys.prefix());
    let peers =
        harp_dcs::mirror::run_tagged(dcs.clone(), proxies, tx.clone(), runner::Input::Peers);
    tokio::spawn(peers);
    let (publish, publish_rx) = watch::channel(None);
    tokio::spawn(harp_dcs::publisher(dcs.clone(), publish_rx));
    tokio::spawn(forward_signals(signals, tx, path, config.clone()));
    let channels = runner::Channels {
        rx,
        route_tx,
        publish,
    };
    let runner = runner::Runner::new(dcs, &config, &proxy, shared, steering, channels).run();
    match pgbouncer {
        None => runner.await,
        // PgBouncer gone means clients cannot be routed: stop, so a supervisor restarts both.
        Some(pgb) => tokio::select! {
            r = runner => r,
            r = pgb => r?,
        },
    }
}

struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// SIGTERM/SIGINT stop the agent; SIGHUP re-reads the config file (see [`reload`]).
async fn forward_signals(
    mut s: Signals,
    tx: mpsc::Sender<runner::Input>,
    path: PathBuf,
    running: Config,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            _ = s.term.recv() => break,
            _ = s.int.recv() => break,
            _ = s.hup.recv() => if let Some(live) = reload(&path, &running) {
                tx.send(runner::Input::Reload(live)).await?;
            },
        }
    }
    tx.send(runner::Input::Shutdown).await?;
    Ok(())
}

/// SIGHUP: the file is checked and what changed is named. The live settings
/// (`max_client_conn`, `pause_timeout`, `timeout`, `keepalive`) are returned, to apply now
/// (under `harpctl set proxy` directives, which still win); the rest applies at the next
/// restart. A broken file changes nothing.
fn reload(path: &std::path::Path, running: &Config) -> Option<ProxyLive> {
    let (new, mut proxy) = match load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("reload (SIGHUP) refused, the running config stays:\n{e}");
            return None;
        }
    };
    proxy.max_client_conn = limits::fit_max_client_conn(proxy.max_client_conn);
    let changed = changed_sections(running, &new);
    if changed.is_empty() {
        tracing::info!("reload (SIGHUP): {} unchanged", path.display());
    } else {
        tracing::warn!(
            "reload (SIGHUP): {} changed in {}; live settings (max_client_conn, pause_timeout, \
             timeout, keepalive) apply now, the rest at the agent's next restart",
            changed.join(", "),
            path.display()
        );
    }
    Some(ProxyLive::of(&proxy))
}

/// The config sections that differ between `old` and `new`.
fn changed_sections(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.cluster != new.cluster {
        out.push("cluster");
    }
    if old.dcs != new.dcs {
        out.push("dcs");
    }
    if old.location != new.location {
        out.push("location");
    }
    if old.http != new.http {
        out.push("http");
    }
    if old.proxy != new.proxy {
        out.push("proxy");
    }
    out
}
