//! `cargo xtask bench scale`: many concurrent clients through each path (the datapath bench's
//! paths and setup) to one Postgres, idle and active, counted up step by step (1, 100, 1000,
//! 5000 by default). Per step: the sessions actually open, throughput and latency when active,
//! and the path's process: CPU (user + system time over the window, from a cgroup holding it)
//! and RSS (VmRSS), and its memory per connection as the count grows. On the kernel path no process is
//! on the data path: the agent's numbers are reported anyway (flat is the point).
//!
//! The clients are one process ([`client`]) holding every session on one tokio thread; on the
//! kernel path it runs in the steered cgroup. The counts grow in chunks, and growth stops (and
//! says so in the results) when a session fails to open or the host's MemAvailable would fall
//! under [`MIN_AVAILABLE_MB`]: never a faked count.

mod client;
mod clients;
mod markdown;
mod procs;
mod report;
mod sweep;

use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use harp_tests::TestCluster;
use harp_tests::cgroup::ChildCgroup;
use harp_tests::process::reap_orphans;

use super::datapath::client::psql;
use super::datapath::kernel::KernelAgent;
use super::datapath::peers::{self, Limits};
use super::datapath::{KERNEL_PROXY, LOCATION, NODE, PathKind, host, wait_primary};
pub use client::main as client_main;
use report::Skipped;

pub const DEFAULT_PATHS: &str = "direct,agent-userspace,agent-kernel,haproxy,pgbouncer,socat";
pub const DEFAULT_COUNTS: &str = "1,100,1000,5000";
/// Growth stops before the host's MemAvailable would fall below this.
const MIN_AVAILABLE_MB: u64 = 4096;
/// Postgres connection slots beyond the clients: the manager, psql, the readiness checks.
const PG_HEADROOM: u32 = 50;
/// Small: thousands of backends, each with its own memory, are the point here.
const SHARED_BUFFERS: &str = "32MB";

/// What one `cargo xtask bench scale` was asked to do.
pub struct Params {
    pub counts: Vec<u32>,
    pub secs: u64,
    pub paths: Vec<PathKind>,
    /// Each active client runs `SELECT 1` this often …
    pub interval_ms: u64,
    /// … unless that would offer more than this many queries per second in all: then less often.
    pub max_qps: u32,
}

impl Params {
    fn command(&self) -> String {
        let join = |v: Vec<String>| v.join(",");
        format!(
            "cargo xtask bench scale --counts {} --secs {} --paths {} --interval-ms {} --max-qps {}",
            join(self.counts.iter().map(u32::to_string).collect()),
            self.secs,
            join(self.paths.iter().map(|p| p.name().to_string()).collect()),
            self.interval_ms,
            self.max_qps
        )
    }
}

pub fn run(mut p: Params) -> anyhow::Result<()> {
    let started = Instant::now();
    p.counts.sort_unstable();
    p.counts.dedup();
    p.paths.dedup();
    let command = p.command();
    let max = *p.counts.last().context("--counts is empty")?;
    if p.counts[0] == 0 || p.secs == 0 || p.interval_ms == 0 || p.max_qps == 0 {
        bail!("--counts, --secs, --interval-ms and --max-qps must be at least 1");
    }
    if !harp_tests::require_root("bench scale") {
        bail!("the scale bench runs Postgres and pgbouncer as `postgres`: run it as root");
    }
    // The client holds one socket per session, a proxy two.
    host::ensure_nofile(2 * u64::from(max) + 1000)?;

    let max_connections = max + PG_HEADROOM;
    println!(
        "starting etcd, Postgres (max_connections={max_connections}, shared_buffers=\
         {SHARED_BUFFERS}) and harp-manager; MemAvailable {} MB",
        procs::mem_available_mb()?
    );
    let mut cluster = TestCluster::builder("scale")
        .etcd_members(1)
        .node(NODE, LOCATION, 100)
        .pg_setting("max_connections", &max_connections.to_string())
        .pg_setting("shared_buffers", SHARED_BUFFERS)
        .start();
    let pg_port = cluster.node(NODE).pg.port();
    let postmaster = cluster.node(NODE).pg.postmaster_pid();
    let shown = psql(pg_port, "SHOW max_connections")?;
    if shown != max_connections.to_string() {
        bail!("Postgres runs with max_connections={shown}, wanted {max_connections}");
    }
    wait_primary(&mut cluster)?;
    let exe = client_exe(&cluster)?;
    let idle_backends = sweep::backends(pg_port)?;

    let mut out = sweep::Out::default();
    let mut skipped = Vec::new();
    for &path in &p.paths {
        if let Some(prog) = path.program().filter(|prog| !host::on_path(prog)) {
            let reason = format!("`{prog}` is not installed (./scripts/setup)");
            println!("NOTE: skipping {}: {reason}", path.name());
            skipped.push(Skipped::new(path, reason));
            continue;
        }
        // Declared first, dropped last: by then the path's processes are gone.
        let acct = ChildCgroup::new();
        let kernel = match path.is_kernel() {
            false => None,
            true => match KernelAgent::start(&cluster, KERNEL_PROXY, LOCATION, true)? {
                Ok(k) => Some(Rc::new(k)),
                Err(reason) => {
                    println!("NOTE: skipping {}: {reason}", path.name());
                    skipped.push(Skipped::new(path, reason));
                    continue;
                }
            },
        };
        println!("starting path {}", path.name());
        let peer = peers::start(
            path,
            &cluster,
            pg_port,
            kernel.as_ref(),
            &Limits::for_clients(max),
        )
        .with_context(|| format!("start path {}", path.name()))?;
        if let Some(k) = kernel.as_ref().filter(|_| path == PathKind::AgentKernel) {
            k.verify_steering()
                .context("agent-kernel: steering check")?;
        }
        if let Some(pid) = peer.pid() {
            procs::account_in(&acct, pid)?;
        }
        let how = sweep::Sweep {
            path,
            peer: &peer,
            acct: &acct,
            exe: &exe,
            pg_port,
            postmaster,
            params: &p,
        };
        let res = how.run(&mut out);
        drop(peer);
        drop(kernel);
        reap_orphans("socat", Duration::from_secs(5));
        res.with_context(|| format!("path {}", path.name()))?;
        sweep::wait_drained(pg_port, idle_backends)?;
    }
    let report = report::build(report::Inputs {
        params: &p,
        command,
        out,
        skipped,
        max_connections,
        shared_buffers: SHARED_BUFFERS,
        started,
    });
    report::write(&report)
}

/// A copy of this executable in the work dir, run as the client process: cargo may replace
/// target/debug/xtask while the bench runs (others build), and `/proc/self/exe` stays readable.
fn client_exe(cluster: &TestCluster) -> anyhow::Result<PathBuf> {
    let exe = cluster.dir().join("xtask-scale-client");
    std::fs::copy("/proc/self/exe", &exe).context("copy /proc/self/exe")?;
    Ok(exe)
}
