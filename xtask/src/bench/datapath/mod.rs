//! `cargo xtask bench datapath`: workloads through several paths to the same Postgres, side by
//! side in one run: `direct`, `agent-userspace` (harp-agent), `agent-kernel` (a client in a child
//! cgroup steered by harp-agent's connect4 straight to Postgres), `agent-sockmap` (harp-agent in
//! mode ebpf splicing the pair in the kernel), `haproxy` (mode tcp), `pgbouncer` (session
//! pooling) and `socat`. The workloads are pgbench's `select` and `connect` (tps) and
//! `bulk`, large `COPY … TO STDOUT` results streamed by psql (MB/s). Runs are interleaved (round →
//! workload → path) so machine drift hits every path alike; each case reports the median over
//! rounds, its ratio to `direct` and the CPU time the path's process spent per transaction (bulk:
//! per transfer and per GB). With the agent running, also its RSS while 1000 idle client sessions
//! go through it; with the kernel paths, the latency from an etcd leader change to the BPF map.
//!
//! The Postgres is the single node of a `TestCluster` (etcd + harp-manager), so the agent has a
//! real lead master to route to, and every path reaches that same server.

mod bulk;
pub(crate) mod client;
pub(crate) mod host;
mod idle;
pub(crate) mod kernel;
mod map_latency;
pub(crate) mod peers;
mod pgbench;
mod report;
mod same_instant;
mod workload;

use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::ValueEnum;
use harp_tests::TestCluster;
use harp_tests::process::reap_orphans;
use harp_tests::rt::block_on;

use client::psql;
use kernel::KernelAgent;
use peers::Peer;
use report::{Run, Skipped};
pub use workload::Workload;

/// `pgbench -i -s SCALE`.
const SCALE: u32 = 10;
/// Postgres's `max_connections`: the idle sessions, the clients and the manager must fit.
const MAX_CONNECTIONS: u32 = 1200;
pub(crate) const LOCATION: &str = "dca";
pub(crate) const NODE: &str = "n1";
/// The ebpf-mode agent's proxy name (its pins: /sys/fs/bpf/harp/datapath-agent-kernel).
pub(crate) const KERNEL_PROXY: &str = "agent-kernel";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PathKind {
    /// client → Postgres.
    Direct,
    /// client → harp-agent → Postgres.
    AgentUserspace,
    /// client in a child cgroup → Postgres: harp-agent's connect4 steers the connect.
    AgentKernel,
    /// client → harp-agent (mode ebpf) → Postgres, the pair spliced in the kernel (sockmap).
    AgentSockmap,
    /// client → haproxy (mode tcp) → Postgres.
    Haproxy,
    /// client → pgbouncer (pool_mode = session) → Postgres.
    Pgbouncer,
    /// client → socat (fork per connection) → Postgres.
    Socat,
}

impl PathKind {
    pub const ALL: &str =
        "direct,agent-userspace,agent-kernel,agent-sockmap,haproxy,pgbouncer,socat";

    pub(crate) fn name(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::AgentUserspace => "agent-userspace",
            PathKind::AgentKernel => "agent-kernel",
            PathKind::AgentSockmap => "agent-sockmap",
            PathKind::Haproxy => "haproxy",
            PathKind::Pgbouncer => "pgbouncer",
            PathKind::Socat => "socat",
        }
    }

    /// The external program this path needs, if any.
    pub(crate) fn program(self) -> Option<&'static str> {
        match self {
            PathKind::Direct
            | PathKind::AgentUserspace
            | PathKind::AgentKernel
            | PathKind::AgentSockmap => None,
            PathKind::Haproxy => Some("haproxy"),
            PathKind::Pgbouncer => Some("pgbouncer"),
            PathKind::Socat => Some("socat"),
        }
    }

    /// Whether the path needs harp-agent in mode ebpf.
    pub(crate) fn is_kernel(self) -> bool {
        matches!(self, PathKind::AgentKernel | PathKind::AgentSockmap)
    }

    /// The path's target on `w`, as a minimum ratio to direct (of tps; bulk: of MB/s).
    fn target(self, w: Workload) -> Option<f64> {
        match (self, w) {
            (PathKind::AgentUserspace, _) => w.agent_target(),
            (PathKind::AgentKernel, Workload::Select | Workload::Connect) => Some(0.98),
            (PathKind::AgentSockmap, Workload::Bulk) => Some(0.95),
            _ => None,
        }
    }
}

/// What one `cargo xtask bench datapath` was asked to do.
struct Setup {
    secs: u64,
    rounds: usize,
    /// As asked, without duplicates (skipped ones included).
    paths: Vec<PathKind>,
    /// As asked, without duplicates.
    workloads: Vec<Workload>,
    command: String,
    started: Instant,
}

pub fn run(
    secs: u64,
    rounds: usize,
    paths: Vec<PathKind>,
    workloads: Vec<Workload>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let paths_in_order = dedup(paths);
    let workloads = dedup(workloads);
    let command = format!(
        "cargo xtask bench datapath --secs {secs} --rounds {rounds} --paths {} --workloads {}",
        names(&paths_in_order, PathKind::name),
        names(&workloads, Workload::name),
    );
    if rounds == 0 || secs == 0 {
        bail!("--secs and --rounds must be at least 1");
    }
    if !harp_tests::require_root("bench datapath") {
        bail!("the datapath bench runs Postgres and pgbouncer as `postgres`: run it as root");
    }
    for p in &paths_in_order {
        if let Some(prog) = p.program()
            && !host::on_path(prog)
        {
            bail!(
                "path {}: `{prog}` is not installed (run ./scripts/setup, or leave it out of --paths)",
                p.name()
            );
        }
    }
    host::ensure_nofile(4 * idle::IDLE_SESSIONS as u64)?;

    let mut skipped = Vec::new();
    let mut paths = paths_in_order.clone();
    let agent_bin = harp_tests::bins::bin_dir().join("harp-agent");
    if paths.contains(&PathKind::AgentUserspace) && !agent_bin.is_file() {
        // Only a missing binary is a skip: an agent that does not come up fails the bench.
        let reason = format!("binary {} not built", agent_bin.display());
        println!("NOTE: skipping agent-userspace: {reason}");
        skipped.push(Skipped {
            path: PathKind::AgentUserspace.name(),
            reason,
        });
        paths.retain(|p| *p != PathKind::AgentUserspace);
    }

    // Drop order is the reverse of declaration: the peers go before the cluster.
    println!(
        "starting etcd, Postgres (max_connections={MAX_CONNECTIONS}) and harp-manager \
         ({NODE}, location {LOCATION})"
    );
    let mut cluster = TestCluster::builder("datapath")
        .etcd_members(1)
        .node(NODE, LOCATION, 100)
        .pg_setting("max_connections", &MAX_CONNECTIONS.to_string())
        .start();
    let pg_port = cluster.node(NODE).pg.port();
    let max = psql(pg_port, "SHOW max_connections")?;
    if max != MAX_CONNECTIONS.to_string() {
        bail!("Postgres runs with max_connections={max}, wanted {MAX_CONNECTIONS}");
    }
    wait_primary(&mut cluster)?;

    // One ebpf agent for both kernel paths; dropped (pins and cgroup removed) before the cluster.
    let mut kernel = None;
    if paths.iter().any(|p| p.is_kernel()) {
        println!("starting harp-agent {KERNEL_PROXY} in mode ebpf on a child cgroup");
        match KernelAgent::start(&cluster, KERNEL_PROXY, LOCATION, true)? {
            Ok(k) => kernel = Some(Rc::new(k)),
            Err(reason) => {
                for p in paths.iter().filter(|p| p.is_kernel()) {
                    println!("NOTE: skipping {}: {reason}", p.name());
                    skipped.push(Skipped {
                        path: p.name(),
                        reason: reason.clone(),
                    });
                }
                println!("NOTE: skipping the map update latency: {reason}");
                skipped.push(Skipped {
                    path: "map-update",
                    reason,
                });
                paths.retain(|p| !p.is_kernel());
            }
        }
    }

    if workloads.iter().any(|w| w.is_pgbench()) {
        println!("pgbench -i -s {SCALE} (direct)");
        pgbench::init(pg_port, SCALE)?;
    }

    let mut peers: Vec<(PathKind, Peer)> = Vec::new();
    for &p in &paths {
        println!("starting path {}", p.name());
        let peer = peers::start(
            p,
            &cluster,
            pg_port,
            kernel.as_ref(),
            &peers::Limits::DATAPATH,
        )
        .with_context(|| format!("start path {}", p.name()))?;
        peers.push((p, peer));
    }
    if let Some(k) = kernel
        .as_ref()
        .filter(|_| paths.contains(&PathKind::AgentKernel))
    {
        k.verify_steering()
            .context("agent-kernel: steering check")?;
    }

    let measured = measure(&mut peers, &workloads, secs, rounds)?;

    let mut rss = None;
    if let Some(agent) = peers.iter().find_map(|(_, peer)| peer.agent()) {
        println!(
            "opening {} idle sessions through harp-agent",
            idle::IDLE_SESSIONS
        );
        let r = idle::agent_rss(agent.pid(), agent.listen_port(), pg_port)
            .with_context(|| format!("harp-agent RSS\n{}", agent.log_tail(20)))?;
        rss = Some(r);
    }
    drop(peers);
    reap_orphans("socat", Duration::from_secs(2));
    // The kernel paths' agent (its last handle) goes first: the latency agent runs alone.
    let kernel_ran = kernel.is_some();
    drop(kernel);
    let map_update = match kernel_ran {
        true => Some(map_latency::run_plain_and_tls(&cluster)?),
        false => None,
    };

    let setup = Setup {
        secs,
        rounds,
        paths: paths_in_order,
        workloads,
        command,
        started,
    };
    report::write(&report::build(&setup, measured, rss, map_update, skipped))
}

/// Waits until the node's manager reports its Postgres as primary and it is the location's
/// leader in etcd.
pub(crate) fn wait_primary(cluster: &mut TestCluster) -> anyhow::Result<()> {
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

/// What [`measure`] ran: the runs in the order they ran, and the same-instant pairs.
struct Measured {
    runs: Vec<Run>,
    pairs: Vec<same_instant::PairRun>,
}

/// Every round runs every workload through every path once, the paths in an order rotated by
/// one each round (no path always runs first, or right after another); with `direct` and
/// `agent-kernel` both present, each pgbench workload then runs once more through the two at the
/// same instant.
fn measure(
    peers: &mut [(PathKind, Peer)],
    workloads: &[Workload],
    secs: u64,
    rounds: usize,
) -> anyhow::Result<Measured> {
    let mut run_log = Vec::new();
    let mut pairs = Vec::new();
    for round in 1..=rounds {
        for &w in workloads {
            for i in rotation(peers.len(), round) {
                let (p, peer) = &mut peers[i];
                let what = || format!("{} {} round {round}", p.name(), w.name());
                let counters = peer.kernel_counters().with_context(what)?;
                let cpu_before = peer.cpu_s().with_context(what)?;
                let t0 = Instant::now();
                let out = w.run(peer.port(), secs, peer.cgroup()).with_context(what)?;
                let wall = t0.elapsed();
                if !peer.is_running() {
                    bail!(
                        "path {} exited during the run\n{}",
                        p.name(),
                        peer.log_tail(30)
                    );
                }
                let cpu_after = peer.cpu_s().with_context(what)?;
                let cpu_s = cpu_before.zip(cpu_after).map(|(b, a)| a - b);
                let kernel = peer.check_kernel_run(counters).with_context(what)?;
                let run = Run::new(round, w, *p, &out, cpu_s, wall).with_kernel(kernel);
                println!("round {round}/{rounds} {}", run.summary());
                run_log.push(run);
            }
            let peer_of = |k: PathKind| peers.iter().find(|(p, _)| *p == k).map(|(_, x)| x);
            if let (true, Some(direct), Some(kernel)) = (
                w.is_pgbench(),
                peer_of(PathKind::Direct),
                peer_of(PathKind::AgentKernel),
            ) {
                let pair = same_instant::run(round, w, secs, direct, kernel)?;
                println!("round {round}/{rounds} {}", same_instant::summary(&pair));
                pairs.push(pair);
            }
        }
    }
    Ok(Measured {
        runs: run_log,
        pairs,
    })
}

/// The order of `n` paths in round `round` (from 1): 0..n rotated left by `round - 1`.
fn rotation(n: usize, round: usize) -> Vec<usize> {
    (0..n).map(|i| (i + round - 1) % n.max(1)).collect()
}

/// `items` in their first order, without duplicates.
fn dedup<T: PartialEq>(items: Vec<T>) -> Vec<T> {
    let mut out = Vec::new();
    for x in items {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// `items`' names, comma-separated (as the command line takes them).
fn names<T: Copy>(items: &[T], name: fn(T) -> &'static str) -> String {
    items.iter().map(|&x| name(x)).collect::<Vec<_>>().join(",")
}

/// Rounds `x` to `digits` decimals, for the report.
pub(crate) fn round_to(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_round_starts_one_path_later() {
        assert_eq!(rotation(3, 1), [0, 1, 2]);
        assert_eq!(rotation(3, 2), [1, 2, 0]);
        assert_eq!(rotation(3, 4), [0, 1, 2]);
        assert_eq!(rotation(1, 5), [0]);
    }

    #[test]
    fn every_path_parses_and_the_agent_paths_have_their_targets() {
        for name in PathKind::ALL.split(',') {
            let p = PathKind::from_str(name, false).unwrap();
            assert_eq!(p.name(), name);
        }
        assert_eq!(PathKind::AgentKernel.target(Workload::Select), Some(0.98));
        assert_eq!(PathKind::AgentKernel.target(Workload::Connect), Some(0.98));
        assert_eq!(PathKind::AgentKernel.target(Workload::Bulk), None);
        assert_eq!(PathKind::AgentSockmap.target(Workload::Bulk), Some(0.95));
        assert_eq!(PathKind::AgentSockmap.target(Workload::Select), None);
        assert_eq!(
            PathKind::AgentUserspace.target(Workload::Select),
            Some(0.85)
        );
        assert_eq!(PathKind::Haproxy.target(Workload::Select), None);
    }
}
