//! `cargo xtask bench datapath`: pgbench through several paths to the same Postgres, side by side
//! in one run: `direct`, `agent-userspace` (harp-agent), `haproxy` (mode tcp), `pgbouncer`
//! (session pooling) and `socat`. Runs are interleaved (round → workload → path) so machine drift
//! hits every path alike; each case reports the median over rounds and its ratio to `direct`.
//! With the agent running, also its RSS while 1000 idle client sessions go through it.
//!
//! The Postgres is the single node of a `TestCluster` (etcd + harp-manager), so the agent has a
//! real lead master to route to, and every path reaches that same server.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::ValueEnum;
use harp_core::pgwire::PROTOCOL_3_0;
use harp_tests::postgres::{pg_bin_dir, postgres_user};
use harp_tests::process::reap_orphans;
use harp_tests::rt::block_on;
use harp_tests::{AgentProc, AgentSpec, ChildGuard, PgInstance, TestCluster, WorkDir, free_port};
use serde::Serialize;

/// `pgbench -i -s SCALE`.
const SCALE: u32 = 10;
/// Postgres's `max_connections`: the idle sessions, pgbench and the manager must fit.
const MAX_CONNECTIONS: u32 = 1200;
/// Idle client sessions held open through the agent for the RSS measurement.
const IDLE_SESSIONS: usize = 1000;
/// The agent's `max_client_conn` (the idle sessions plus headroom).
const AGENT_MAX_CLIENT_CONN: u32 = 1100;
const RSS_TARGET_MB: f64 = 30.0;
/// `application_name` of the idle sessions, to count them in `pg_stat_activity`.
const IDLE_APP: &str = "harp-bench-idle";
const LOCATION: &str = "dca";
const NODE: &str = "n1";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PathKind {
    /// pgbench → Postgres.
    Direct,
    /// pgbench → harp-agent → Postgres.
    AgentUserspace,
    /// pgbench → haproxy (mode tcp) → Postgres.
    Haproxy,
    /// pgbench → pgbouncer (pool_mode = session) → Postgres.
    Pgbouncer,
    /// pgbench → socat (fork per connection) → Postgres.
    Socat,
}

impl PathKind {
    pub const ALL: &str = "direct,agent-userspace,haproxy,pgbouncer,socat";

    fn name(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::AgentUserspace => "agent-userspace",
            PathKind::Haproxy => "haproxy",
            PathKind::Pgbouncer => "pgbouncer",
            PathKind::Socat => "socat",
        }
    }

    /// The external program this path needs, if any.
    fn program(self) -> Option<&'static str> {
        match self {
            PathKind::Direct | PathKind::AgentUserspace => None,
            PathKind::Haproxy => Some("haproxy"),
            PathKind::Pgbouncer => Some("pgbouncer"),
            PathKind::Socat => Some("socat"),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// `pgbench -S -c 8 -j 2`: select-only on 8 persistent connections.
    Select,
    /// `pgbench -S -C -c 4`: a new connection per transaction.
    Connect,
}

const WORKLOADS: [Workload; 2] = [Workload::Select, Workload::Connect];

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Select => "select",
            Workload::Connect => "connect",
        }
    }

    fn args(self, secs: u64) -> Vec<String> {
        let args: &[&str] = match self {
            Workload::Select => &["-S", "-c", "8", "-j", "2"],
            Workload::Connect => &["-S", "-C", "-c", "4"],
        };
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend(["-T".into(), secs.to_string()]);
        v
    }

    /// The agent's target, as a minimum ratio of its tps to direct's.
    fn agent_target(self) -> f64 {
        match self {
            Workload::Select => 0.85,
            Workload::Connect => 0.95,
        }
    }
}

#[derive(Serialize)]
struct Case {
    path: &'static str,
    workload: &'static str,
    /// Median over rounds.
    tps: f64,
    /// `tps` / direct's `tps` for the same workload; `null` if direct was not measured.
    ratio_to_direct: Option<f64>,
    /// Median of pgbench's "latency average".
    latency_ms_avg: Option<f64>,
    /// Median of pgbench's "average connection time" (printed for `-C`).
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_ms_avg: Option<f64>,
    runs: usize,
    tps_runs: Vec<f64>,
    latency_ms_runs: Vec<f64>,
    /// Minimum `ratio_to_direct` (agent rows only).
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    met: Option<bool>,
}

/// One pgbench run, in the order they ran.
#[derive(Serialize)]
struct Run {
    round: usize,
    workload: &'static str,
    path: &'static str,
    tps: f64,
    latency_ms_avg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_ms_avg: Option<f64>,
    wall_s: f64,
}

#[derive(Serialize)]
struct Skipped {
    path: &'static str,
    reason: String,
}

#[derive(Serialize, Default)]
struct AgentRss {
    rss_mb_before: f64,
    rss_mb_after: f64,
    sessions: usize,
    /// Client sessions of the test seen in `pg_stat_activity` while held open.
    sessions_seen_by_postgres: u64,
    open_s: f64,
}

#[derive(Serialize)]
struct Report {
    bench: &'static str,
    cases: Vec<Case>,
    /// VmRSS of harp-agent with 1000 idle sessions through it; `null` if the agent was skipped.
    agent_rss_mb_1000_idle: Option<f64>,
    /// (RSS with the sessions − RSS before) / 1000.
    agent_rss_kb_per_idle_conn: Option<f64>,
    agent_rss_target_mb: f64,
    agent_rss_met: Option<bool>,
    agent_rss: Option<AgentRss>,
    skipped: Vec<Skipped>,
    secs: u64,
    rounds: usize,
    scale: u32,
    pgbench: BTreeMap<&'static str, String>,
    postgres_max_connections: u32,
    versions: BTreeMap<&'static str, String>,
    machine: String,
    command: String,
    duration_s: f64,
    run_log: Vec<Run>,
}

pub fn run(secs: u64, rounds: usize, paths: Vec<PathKind>) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut paths_in_order = Vec::new();
    for p in paths {
        if !paths_in_order.contains(&p) {
            paths_in_order.push(p);
        }
    }
    let command = format!(
        "cargo xtask bench datapath --secs {secs} --rounds {rounds} --paths {}",
        paths_in_order
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(",")
    );
    if rounds == 0 || secs == 0 {
        bail!("--secs and --rounds must be at least 1");
    }
    if !harp_tests::require_root("bench datapath") {
        bail!("the datapath bench runs Postgres and pgbouncer as `postgres`: run it as root");
    }
    for p in &paths_in_order {
        if let Some(prog) = p.program()
            && !on_path(prog)
        {
            bail!(
                "path {}: `{prog}` is not installed (run ./scripts/setup, or leave it out of --paths)",
                p.name()
            );
        }
    }
    ensure_nofile(4 * IDLE_SESSIONS as u64)?;

    let mut skipped = Vec::new();
    let mut paths = paths_in_order.clone();
    let want_agent = paths.contains(&PathKind::AgentUserspace);
    let agent_bin = harp_tests::bins::bin_dir().join("harp-agent");
    if want_agent && !agent_bin.is_file() {
        let reason = format!("binary {} not built", agent_bin.display());
        println!("NOTE: skipping agent-userspace: {reason}");
        skipped.push(Skipped {
            path: PathKind::AgentUserspace.name(),
            reason,
        });
        paths.retain(|p| *p != PathKind::AgentUserspace);
    }

    // Drop order is the reverse of declaration: peers, then our postmaster, then the cluster.
    println!("starting etcd, Postgres and harp-manager ({NODE}, location {LOCATION})");
    let mut cluster = TestCluster::builder("datapath")
        .etcd_members(1)
        .node(NODE, LOCATION, 100)
        .start();
    let pg_port = cluster.node(NODE).pg.port();
    let _postmaster = restart_postgres(&mut cluster)?;
    wait_primary(&mut cluster)?;

    println!("pgbench -i -s {SCALE} (direct)");
    let init = Command::new(pg_bin_dir().join("pgbench"))
        .args(["-i", "-q", "-s", &SCALE.to_string()])
        .args(conn_args(pg_port))
        .output()
        .context("run pgbench -i")?;
    if !init.status.success() {
        bail!(
            "pgbench -i failed ({}):\n{}",
            init.status,
            output_text(&init)
        );
    }

    let mut peers: Vec<(PathKind, Peer)> = Vec::new();
    for &p in &paths {
        println!("starting path {}", p.name());
        match start_peer(p, &cluster, pg_port) {
            Ok(peer) => peers.push((p, peer)),
            Err(e) if p == PathKind::AgentUserspace => {
                let reason = format!("{e:#}");
                println!("NOTE: skipping agent-userspace: {reason}");
                skipped.push(Skipped {
                    path: p.name(),
                    reason: reason.lines().next().unwrap_or_default().to_string(),
                });
            }
            Err(e) => return Err(e.context(format!("start path {}", p.name()))),
        }
    }

    let mut run_log = Vec::new();
    for round in 1..=rounds {
        for w in WORKLOADS {
            for (p, peer) in &mut peers {
                let t0 = Instant::now();
                let out = pgbench(peer.port(), w, secs)
                    .with_context(|| format!("{} {} round {round}", p.name(), w.name()))?;
                if !peer.is_running() {
                    bail!(
                        "path {} exited during the run\n{}",
                        p.name(),
                        peer.log_tail(30)
                    );
                }
                println!(
                    "round {round}/{rounds} {:<8} {:<16} tps {:>10.1}  latency {:>7} ms",
                    w.name(),
                    p.name(),
                    out.tps,
                    out.latency_ms.map_or("-".into(), |l| format!("{l:.3}")),
                );
                run_log.push(Run {
                    round,
                    workload: w.name(),
                    path: p.name(),
                    tps: round_to(out.tps, 1),
                    latency_ms_avg: out.latency_ms.map(|l| round_to(l, 3)),
                    connection_ms_avg: out.connection_ms.map(|l| round_to(l, 3)),
                    wall_s: round_to(t0.elapsed().as_secs_f64(), 2),
                });
            }
        }
    }

    let mut rss = None;
    if let Some((_, Peer::Agent(agent))) = peers
        .iter_mut()
        .find(|(p, _)| *p == PathKind::AgentUserspace)
    {
        println!("opening {IDLE_SESSIONS} idle sessions through harp-agent");
        let r = idle_rss(agent.pid(), agent.listen_port(), pg_port)
            .with_context(|| format!("harp-agent RSS\n{}", agent.log_tail(20)))?;
        rss = Some(r);
    }
    drop(peers);
    reap_orphans("socat", Duration::from_secs(2));

    let cases = cases(&paths_in_order, &run_log);
    let (rss_mb, kb_per_conn) = match &rss {
        Some(r) => (
            Some(r.rss_mb_after),
            Some(round_to(
                (r.rss_mb_after - r.rss_mb_before) * 1024.0 / r.sessions as f64,
                2,
            )),
        ),
        None => (None, None),
    };
    let report = Report {
        bench: "datapath",
        cases,
        agent_rss_mb_1000_idle: rss_mb,
        agent_rss_kb_per_idle_conn: kb_per_conn,
        agent_rss_target_mb: RSS_TARGET_MB,
        agent_rss_met: rss_mb.map(|mb| mb <= RSS_TARGET_MB),
        agent_rss: rss,
        skipped,
        secs,
        rounds,
        scale: SCALE,
        pgbench: WORKLOADS
            .iter()
            .map(|w| {
                (
                    w.name(),
                    format!(
                        "pgbench {} -h 127.0.0.1 -p <port> -U postgres postgres",
                        w.args(secs).join(" ")
                    ),
                )
            })
            .collect(),
        postgres_max_connections: MAX_CONNECTIONS,
        versions: versions(&paths_in_order),
        machine: super::machine(),
        command,
        duration_s: round_to(started.elapsed().as_secs_f64(), 1),
        run_log,
    };
    write(&report)
}

fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(prog).is_file()))
}

/// Makes sure this process (and the agent it spawns later, which inherits the limit) may open
/// `need` files: the idle sessions take one socket here and two in the agent. Raises the soft
/// limit to the hard one with `prlimit` if it is lower than `need`.
fn ensure_nofile(need: u64) -> anyhow::Result<()> {
    let read = || -> Option<(u64, u64)> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        let mut nums = line["Max open files".len()..].split_whitespace();
        let parse = |s: Option<&str>| match s? {
            "unlimited" => Some(u64::MAX),
            n => n.parse().ok(),
        };
        Some((parse(nums.next())?, parse(nums.next())?))
    };
    let (soft, hard) = read().context("read the open-files limit from /proc/self/limits")?;
    if soft >= need {
        return Ok(());
    }
    let hard_s = if hard == u64::MAX {
        "unlimited".to_string()
    } else {
        hard.to_string()
    };
    let _ = Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={hard_s}:{hard_s}"))
        .status();
    let (soft, _) = read().context("read the open-files limit")?;
    if soft < need {
        bail!(
            "the open-files limit is {soft} (hard {hard_s}); {need} are needed: raise it (ulimit -n)"
        );
    }
    println!("raised the open-files soft limit to {soft}");
    Ok(())
}

/// The harness starts Postgres with `max_connections=100` on its command line, which beats
/// `ALTER SYSTEM`, and `PgInstance` takes no extra settings: stop it and start a postmaster of our
/// own on the same data dir, port and socket dir, with [`MAX_CONNECTIONS`].
fn restart_postgres(cluster: &mut TestCluster) -> anyhow::Result<ChildGuard> {
    let workdir = cluster.dir().path().to_path_buf();
    let pg: &mut PgInstance = &mut cluster.node(NODE).pg;
    pg.stop();
    let (uid, gid) = postgres_user();
    let mut cmd = Command::new(pg_bin_dir().join("postgres"));
    cmd.arg("-D")
        .arg(pg.data_dir())
        .arg("-p")
        .arg(pg.port().to_string())
        .arg("-k")
        .arg(pg.socket_dir())
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
        .arg("-c")
        .arg(format!("max_connections={MAX_CONNECTIONS}"))
        .current_dir(&workdir)
        .uid(uid.as_raw())
        .gid(gid.as_raw());
    let mut guard = ChildGuard::spawn(cmd, &format!("postgres {NODE} (bench)"), pg.log_path());
    let port = pg.port();
    wait_accepts(port, READY_TIMEOUT, &mut guard)?;
    let max = psql(port, "SHOW max_connections")?;
    if max != MAX_CONNECTIONS.to_string() {
        bail!("Postgres runs with max_connections={max}, wanted {MAX_CONNECTIONS}");
    }
    Ok(guard)
}

/// Waits until the node's manager reports its Postgres as primary and it is the location's
/// leader in etcd.
fn wait_primary(cluster: &mut TestCluster) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let primary = cluster
            .node(NODE)
            .mgr
            .status()
            .is_some_and(|s| s["postgres"] == "primary");
        let leader = block_on(|| cluster.leader(LOCATION)).is_some_and(|(l, _)| l.node == NODE);
        if primary && leader {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{NODE} is not the primary and leader of {LOCATION} after {READY_TIMEOUT:?}\n{}",
                cluster.manager_logs(30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a path's clients connect to, and the process serving it (none for `direct`).
enum Peer {
    Direct(u16),
    Child { port: u16, guard: ChildGuard },
    Agent(Box<AgentProc>),
}

impl Peer {
    fn port(&self) -> u16 {
        match self {
            Peer::Direct(port) | Peer::Child { port, .. } => *port,
            Peer::Agent(a) => a.listen_port(),
        }
    }

    fn is_running(&mut self) -> bool {
        match self {
            Peer::Direct(_) => true,
            Peer::Child { guard, .. } => guard.is_running(),
            Peer::Agent(a) => a.is_running(),
        }
    }

    fn log_tail(&self, n: usize) -> String {
        match self {
            Peer::Direct(_) => String::new(),
            Peer::Child { guard, .. } => guard.log_tail(n),
            Peer::Agent(a) => a.log_tail(n),
        }
    }
}

fn start_peer(path: PathKind, cluster: &TestCluster, pg_port: u16) -> anyhow::Result<Peer> {
    let dir = cluster.dir();
    let port = free_port();
    let mut guard = match path {
        PathKind::Direct => return Ok(Peer::Direct(pg_port)),
        PathKind::AgentUserspace => return start_agent(cluster),
        PathKind::Haproxy => {
            let cfg = dir.join("haproxy.cfg");
            std::fs::write(
                &cfg,
                format!(
                    "global\n  maxconn 4096\n\n\
                     defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  \
                     timeout server 1h\n\n\
                     listen postgres\n  bind 127.0.0.1:{port}\n  server pg 127.0.0.1:{pg_port}\n"
                ),
            )?;
            let mut cmd = Command::new("haproxy");
            cmd.arg("-db").arg("-f").arg(&cfg);
            ChildGuard::spawn(cmd, "haproxy", &dir.join("haproxy.log"))
        }
        PathKind::Pgbouncer => start_pgbouncer(dir, port, pg_port)?,
        PathKind::Socat => {
            let mut cmd = Command::new("socat");
            cmd.arg(format!("TCP-LISTEN:{port},fork,reuseaddr,bind=127.0.0.1"))
                .arg(format!("TCP:127.0.0.1:{pg_port}"));
            ChildGuard::spawn(cmd, "socat", &dir.join("socat.log"))
        }
    };
    wait_accepts(port, READY_TIMEOUT, &mut guard)
        .with_context(|| format!("{} did not come up", path.name()))?;
    Ok(Peer::Child { port, guard })
}

/// pgbouncer refuses to run as root: it runs as `postgres`, logging to stderr (our log file),
/// with no unix socket and no pid file, so it writes nothing outside the work dir.
fn start_pgbouncer(dir: &WorkDir, port: u16, pg_port: u16) -> anyhow::Result<ChildGuard> {
    let cfg = dir.join("pgbouncer.ini");
    std::fs::write(
        &cfg,
        format!(
            "[databases]\n* = host=127.0.0.1 port={pg_port} user=postgres\n\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = any\npool_mode = session\nmax_client_conn = 2000\n\
             default_pool_size = 50\nignore_startup_parameters = extra_float_digits\n\
             log_connections = 0\nlog_disconnections = 0\nlogfile =\npidfile =\n"
        ),
    )?;
    let (uid, gid) = postgres_user();
    let mut cmd = Command::new("pgbouncer");
    cmd.arg(&cfg)
        .current_dir(dir.path())
        .uid(uid.as_raw())
        .gid(gid.as_raw());
    Ok(ChildGuard::spawn(
        cmd,
        "pgbouncer",
        &dir.join("pgbouncer.log"),
    ))
}

fn start_agent(cluster: &TestCluster) -> anyhow::Result<Peer> {
    let mut spec = AgentSpec::new(
        "agent-dca",
        LOCATION,
        cluster.name(),
        cluster.etcd.endpoints(),
    );
    spec.max_client_conn = AGENT_MAX_CLIENT_CONN;
    let mut agent = AgentProc::start(cluster.dir(), spec);
    if !agent.wait_ready(READY_TIMEOUT) {
        let state = if agent.is_running() {
            format!("not ready (GET /health/is-ready) within {READY_TIMEOUT:?}")
        } else {
            "exited before it was ready".to_string()
        };
        bail!("harp-agent {state}\n{}", agent.log_tail(30));
    }
    let port = agent.listen_port();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match psql(port, "SELECT 1") {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => {
                bail!(
                    "harp-agent is ready but routes no connection: {e:#}\n{}",
                    agent.log_tail(30)
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    Ok(Peer::Agent(Box::new(agent)))
}

/// `-h 127.0.0.1 -p <port> -U postgres postgres`.
fn conn_args(port: u16) -> Vec<String> {
    [
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        "postgres",
        "postgres",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One `psql -c <sql>` on `127.0.0.1:<port>`; its unaligned output.
fn psql(port: u16, sql: &str) -> anyhow::Result<String> {
    let out = Command::new(pg_bin_dir().join("psql"))
        .args(["-X", "-A", "-t", "-q"])
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(["-d", "postgres", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "2")
        .output()
        .context("run psql")?;
    if !out.status.success() {
        bail!(
            "psql -c {sql:?} on port {port}: {}",
            output_text(&out).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Waits until a Postgres session through `port` answers `SELECT 1`; `Err` if `guard`'s process
/// exits or `timeout` passes.
fn wait_accepts(port: u16, timeout: Duration, guard: &mut ChildGuard) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let res = psql(port, "SELECT 1");
        if res.is_ok() {
            return Ok(());
        }
        if let Some(st) = guard.exit_status() {
            bail!("{} exited ({st})\n{}", guard.name(), guard.log_tail(30));
        }
        if Instant::now() > deadline {
            bail!(
                "{} accepts no Postgres session on port {port} after {timeout:?}: {:#}\n{}",
                guard.name(),
                res.unwrap_err(),
                guard.log_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct PgbenchOut {
    tps: f64,
    latency_ms: Option<f64>,
    connection_ms: Option<f64>,
}

fn pgbench(port: u16, w: Workload, secs: u64) -> anyhow::Result<PgbenchOut> {
    let out = Command::new(pg_bin_dir().join("pgbench"))
        .args(w.args(secs))
        .args(conn_args(port))
        .output()
        .context("run pgbench")?;
    let text = output_text(&out);
    if !out.status.success() {
        bail!("pgbench failed ({}):\n{text}", out.status);
    }
    parse_pgbench(&text).with_context(|| format!("no tps in pgbench's output:\n{text}"))
}

/// tps from "tps = N (without initial connection time)" (or, for `-C`, "tps = N (including
/// reconnection times)"; older pgbench: "excluding connections establishing"), plus the average
/// latency and connection time if printed.
fn parse_pgbench(text: &str) -> Option<PgbenchOut> {
    let value = |line: &str| -> Option<f64> {
        line.split('=')
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let tps_lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("tps ="))
        .collect();
    let preferred = [
        "without initial connection",
        "excluding",
        "including reconnection",
    ];
    let tps_line = preferred
        .iter()
        .find_map(|p| tps_lines.iter().find(|l| l.contains(p)))
        .or(tps_lines.first())?;
    let find = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(value)
    };
    Some(PgbenchOut {
        tps: value(tps_line)?,
        latency_ms: find("latency average"),
        connection_ms: find("average connection time"),
    })
}

/// Opens [`IDLE_SESSIONS`] sessions through the proxy on `port` (each up to ReadyForQuery),
/// reads the VmRSS of the proxy's process `pid` before and with them, closes them.
fn idle_rss(pid: u32, port: u16, pg_port: u16) -> anyhow::Result<AgentRss> {
    let before = vm_rss_kb(pid).context("read the agent's VmRSS")?;
    let t0 = Instant::now();
    let threads = 8;
    let opened: Vec<anyhow::Result<Vec<TcpStream>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let n = IDLE_SESSIONS / threads + usize::from(t < IDLE_SESSIONS % threads);
                    (0..n)
                        .map(|_| open_session(port))
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("session opener panicked"))
            .collect()
    });
    let open_s = t0.elapsed().as_secs_f64();
    let mut sessions = Vec::new();
    let mut error = None;
    for r in opened {
        match r {
            Ok(v) => sessions.extend(v),
            Err(e) => error = Some(e),
        }
    }
    if let Some(e) = error {
        close_sessions(sessions);
        return Err(e.context(format!("open {IDLE_SESSIONS} idle sessions")));
    }
    // Let the agent settle (buffers it allocated for the handshakes).
    std::thread::sleep(Duration::from_millis(500));
    let after = vm_rss_kb(pid).context("read the agent's VmRSS")?;
    let seen = psql(
        pg_port,
        &format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{IDLE_APP}'"),
    )?
    .parse()
    .unwrap_or(0);
    let n = sessions.len();
    close_sessions(sessions);
    println!(
        "VmRSS: {:.1} MB before, {:.1} MB with {n} idle sessions ({seen} seen by Postgres)",
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
    Ok(AgentRss {
        rss_mb_before: round_to(before as f64 / 1024.0, 2),
        rss_mb_after: round_to(after as f64 / 1024.0, 2),
        sessions: n,
        sessions_seen_by_postgres: seen,
        open_s: round_to(open_s, 2),
    })
}

/// A Postgres session over `127.0.0.1:<port>` (trust auth), returned once the server sent
/// ReadyForQuery.
fn open_session(port: u16) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
    for (k, v) in [
        ("user", "postgres"),
        ("database", "postgres"),
        ("application_name", IDLE_APP),
    ] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    s.write_all(&msg)?;
    loop {
        let mut head = [0u8; 5];
        s.read_exact(&mut head)
            .context("read from the session before ReadyForQuery")?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if !(4..=1 << 20).contains(&len) {
            bail!("bad message length {len} (type {:?})", head[0] as char);
        }
        let mut payload = vec![0u8; len - 4];
        s.read_exact(&mut payload)?;
        match head[0] {
            b'Z' => return Ok(s),
            b'E' => bail!("server refused the session: {}", error_message(&payload)),
            b'R' if payload.get(..4) != Some(&[0, 0, 0, 0]) => {
                bail!("the server asks for authentication (trust expected)")
            }
            _ => {}
        }
    }
}

/// The `M` (message) field of an ErrorResponse body.
fn error_message(payload: &[u8]) -> String {
    payload
        .split(|&b| b == 0)
        .find(|f| f.first() == Some(&b'M'))
        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
        .unwrap_or_else(|| String::from_utf8_lossy(payload).into_owned())
}

/// Sends Terminate on each session and closes it.
fn close_sessions(sessions: Vec<TcpStream>) {
    for mut s in sessions {
        let _ = s.write_all(&[b'X', 0, 0, 0, 4]);
    }
}

fn vm_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    })
}

fn round_to(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn cases(paths: &[PathKind], runs: &[Run]) -> Vec<Case> {
    let mut cases = Vec::new();
    for w in WORKLOADS {
        let of = |p: PathKind| -> Vec<&Run> {
            runs.iter()
                .filter(|r| r.workload == w.name() && r.path == p.name())
                .collect()
        };
        let direct = median(
            &of(PathKind::Direct)
                .iter()
                .map(|r| r.tps)
                .collect::<Vec<_>>(),
        );
        for &p in paths {
            let rs = of(p);
            if rs.is_empty() {
                continue;
            }
            let tps_runs: Vec<f64> = rs.iter().map(|r| r.tps).collect();
            let latency_ms_runs: Vec<f64> = rs.iter().filter_map(|r| r.latency_ms_avg).collect();
            let conn: Vec<f64> = rs.iter().filter_map(|r| r.connection_ms_avg).collect();
            let tps = median(&tps_runs).unwrap_or(0.0);
            let ratio = direct.filter(|d| *d > 0.0).map(|d| round_to(tps / d, 3));
            let target = (p == PathKind::AgentUserspace).then(|| w.agent_target());
            cases.push(Case {
                path: p.name(),
                workload: w.name(),
                tps: round_to(tps, 1),
                ratio_to_direct: ratio,
                latency_ms_avg: median(&latency_ms_runs).map(|l| round_to(l, 3)),
                connection_ms_avg: median(&conn).map(|l| round_to(l, 3)),
                runs: rs.len(),
                tps_runs,
                latency_ms_runs,
                target,
                met: target.and_then(|t| ratio.map(|r| r >= t)),
            });
        }
    }
    cases
}

/// First line of `<prog> <arg>`'s output, for the report.
fn versions(paths: &[PathKind]) -> BTreeMap<&'static str, String> {
    let first_line = |prog: &Path, arg: &str, pick: &str| -> String {
        Command::new(prog)
            .arg(arg)
            .output()
            .map(|o| {
                output_text(&o)
                    .lines()
                    .find(|l| l.contains(pick))
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            })
            .unwrap_or_default()
    };
    let mut v = BTreeMap::new();
    v.insert(
        "postgres",
        first_line(&pg_bin_dir().join("postgres"), "--version", "postgres"),
    );
    for p in paths {
        match p {
            PathKind::Haproxy => {
                v.insert("haproxy", first_line(Path::new("haproxy"), "-v", "version"));
            }
            PathKind::Pgbouncer => {
                v.insert(
                    "pgbouncer",
                    first_line(Path::new("pgbouncer"), "--version", "PgBouncer"),
                );
            }
            PathKind::Socat => {
                v.insert(
                    "socat",
                    first_line(Path::new("socat"), "-V", "socat version"),
                );
            }
            PathKind::Direct | PathKind::AgentUserspace => {}
        }
    }
    v
}

fn write(report: &Report) -> anyhow::Result<()> {
    let dir = super::results_dir()?;
    std::fs::write(
        dir.join("datapath.json"),
        serde_json::to_string_pretty(report)? + "\n",
    )?;
    let mut md = String::from("| path |");
    let mut rule = String::from("| --- |");
    for w in WORKLOADS {
        md += &format!(" {0} tps | {0} × direct |", w.name());
        rule += " ---: | ---: |";
    }
    md += &format!("\n{rule}\n");
    let mut seen = Vec::new();
    for c in &report.cases {
        if seen.contains(&c.path) {
            continue;
        }
        seen.push(c.path);
        md += &format!("| {} |", c.path);
        for w in WORKLOADS {
            match report
                .cases
                .iter()
                .find(|x| x.path == c.path && x.workload == w.name())
            {
                Some(x) => {
                    let ratio = x.ratio_to_direct.map_or("-".into(), |r| format!("{r:.2}"));
                    let target = match (x.target, x.met) {
                        (Some(t), Some(met)) => {
                            format!(" (≥ {t}: {})", if met { "yes" } else { "**no**" })
                        }
                        (Some(t), None) => format!(" (≥ {t})"),
                        _ => String::new(),
                    };
                    md += &format!(" {:.0} | {ratio}{target} |", x.tps);
                }
                None => md += " - | - |",
            }
        }
        md += "\n";
    }
    md += "\n";
    match (
        report.agent_rss_mb_1000_idle,
        report.agent_rss_kb_per_idle_conn,
    ) {
        (Some(mb), Some(kb)) => {
            md += &format!(
                "harp-agent RSS with {IDLE_SESSIONS} idle sessions: {mb:.1} MB (target ≤ {}: {}), \
                 {kb:.1} kB per idle connection.\n",
                report.agent_rss_target_mb,
                if mb <= report.agent_rss_target_mb {
                    "yes"
                } else {
                    "**no**"
                }
            );
        }
        _ => md += "harp-agent RSS: not measured (agent-userspace not run).\n",
    }
    for s in &report.skipped {
        md += &format!("\nSkipped {}: {}.\n", s.path, s.reason);
    }
    md += &format!(
        "\nMedian tps of {} interleaved round(s) of {} s per run; `select` = `pgbench -S -c 8 -j 2`, \
         `connect` = `pgbench -S -C -c 4`, scale {}. Machine: {}. Command: `{}`.\n",
        report.rounds, report.secs, report.scale, report.machine, report.command
    );
    std::fs::write(dir.join("datapath.md"), &md)?;
    print!("\n{md}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbench_15_output() {
        let select = "transaction type: <builtin: select only>\n\
                      latency average = 0.512 ms\n\
                      initial connection time = 3.201 ms\n\
                      tps = 15623.411218 (without initial connection time)\n";
        let out = parse_pgbench(select).unwrap();
        assert_eq!((out.tps, out.latency_ms), (15623.411218, Some(0.512)));
        let connect = "latency average = 4.100 ms\n\
                       average connection time = 2.050 ms\n\
                       tps = 975.3 (including reconnection times)\n";
        let out = parse_pgbench(connect).unwrap();
        assert_eq!((out.tps, out.connection_ms), (975.3, Some(2.05)));
        let old = "tps = 10.0 (including connections establishing)\n\
                   tps = 12.0 (excluding connections establishing)\n";
        assert_eq!(parse_pgbench(old).unwrap().tps, 12.0);
        assert!(parse_pgbench("no numbers").is_none());
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
