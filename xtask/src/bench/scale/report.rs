//! bench/results/scale.{json,md}.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::sweep::Out;
use super::{MIN_AVAILABLE_MB, Params};
use crate::bench::datapath::{PathKind, round_to};

/// The target: harp-agent's memory per idle session in userspace.
const USERSPACE_MAX: f64 = 16384.0;
/// "≈ 0" on the kernel path, as a number: the agent sees none of the sessions, so what it grows
/// by is noise (etcd traffic, allocator), far below a kernel socket's own cost.
const KERNEL_MAX: f64 = 1024.0;

/// One count of one path, idle or active.
#[derive(Serialize)]
pub struct Step {
    pub path: &'static str,
    pub mode: &'static str,
    /// Sessions asked for.
    pub clients: u32,
    /// Sessions open (and answering) during the window; active: still open at its end.
    pub connected: u32,
    /// Active: `SELECT 1` answered per second, over all sessions.
    pub qps: Option<f64>,
    /// Active: what the clients offered (sessions / interval).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offered_qps: Option<f64>,
    /// Active: each session's period between queries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_p99_ms: Option<f64>,
    /// Active: sessions that failed during the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_errors: Option<u64>,
    /// CPU seconds per second (× 100) the path's processes used in the window (cgroup cpu.stat,
    /// so socat's per-connection children count); `null` for direct.
    pub proxy_cpu_pct: Option<f64>,
    /// Active: the path's CPU time per query answered, in µs.
    pub proxy_us_per_query: Option<f64>,
    /// VmRSS of the path's process (socat: summed over its per-connection children) at the end
    /// of the window.
    pub proxy_rss_kb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_processes: Option<usize>,
    /// Idle: (`proxy_rss_kb` − its RSS before any client) / `connected`, in bytes.
    pub rss_per_conn_bytes: Option<f64>,
    /// Idle: proportional set size of the path's process(es), in kB: socat's children share
    /// their pages, which VmRSS counts once per child.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_pss_kb: Option<u64>,
    /// Idle: as `rss_per_conn_bytes`, from `proxy_pss_kb`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pss_per_conn_bytes: Option<f64>,
    /// Client backends in `pg_stat_activity` (the manager's included).
    pub postgres_backends: Option<u64>,
    /// Idle: Postgres' proportional set size (postmaster and every backend), in MB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres_pss_mb: Option<f64>,
    pub mem_available_mb: Option<u64>,
    pub window_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Step {
    pub fn new(path: PathKind, mode: &'static str, clients: u32, connected: u32) -> Step {
        Step {
            path: path.name(),
            mode,
            clients,
            connected,
            qps: None,
            offered_qps: None,
            interval_ms: None,
            latency_p50_ms: None,
            latency_p99_ms: None,
            query_errors: None,
            proxy_cpu_pct: None,
            proxy_us_per_query: None,
            proxy_rss_kb: None,
            proxy_processes: None,
            rss_per_conn_bytes: None,
            proxy_pss_kb: None,
            pss_per_conn_bytes: None,
            postgres_backends: None,
            postgres_pss_mb: None,
            mem_available_mb: None,
            window_s: 0.0,
            note: None,
        }
    }

    /// A line for the progress output.
    pub fn summary(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("-".into(), |x| format!("{x}"));
        format!(
            "{:<16} {:<6} {:>5}/{:<5} qps {:>8}  cpu {:>6} %  {:>7} µs/q  rss {:>8} kB  {:>8} B/conn  \
             backends {}",
            self.path,
            self.mode,
            self.connected,
            self.clients,
            opt(self.qps),
            opt(self.proxy_cpu_pct),
            opt(self.proxy_us_per_query),
            self.proxy_rss_kb.map_or("-".into(), |k| k.to_string()),
            opt(self.rss_per_conn_bytes),
            self.postgres_backends.map_or("-".into(), |b| b.to_string()),
        )
    }
}

#[derive(Serialize)]
pub struct Skipped {
    pub path: &'static str,
    pub reason: String,
}

impl Skipped {
    pub fn new(path: PathKind, reason: String) -> Skipped {
        Skipped {
            path: path.name(),
            reason,
        }
    }
}

#[derive(Serialize)]
pub(super) struct Targets {
    pub(super) userspace_per_idle_conn_bytes_max: f64,
    pub(super) kernel_per_idle_conn_bytes_max: f64,
}

#[derive(Serialize)]
pub struct Report {
    pub(super) bench: &'static str,
    pub(super) machine: String,
    #[serde(flatten)]
    pub(super) provenance: crate::bench::Provenance,
    pub(super) date: String,
    pub(super) command: String,
    pub(super) steps: Vec<Step>,
    /// Per path with a process: `rss_per_conn_bytes` at its largest idle count.
    pub(super) per_conn_bytes: BTreeMap<&'static str, f64>,
    /// The same from `pss_per_conn_bytes`, for paths with a process per connection (socat).
    pub(super) per_conn_pss_bytes: BTreeMap<&'static str, f64>,
    pub(super) targets: Targets,
    /// `agent-userspace` and `agent-kernel` against their targets.
    pub(super) met: BTreeMap<&'static str, bool>,
    /// The most sessions open at once on any path.
    pub(super) max_connected: u32,
    pub(super) counts: Vec<u32>,
    pub(super) secs: u64,
    pub(super) interval_ms: u64,
    pub(super) max_qps: u32,
    pub(super) pgbouncer_pool_mode: &'static str,
    pub(super) postgres_max_connections: u32,
    pub(super) postgres_shared_buffers: &'static str,
    pub(super) min_available_mb: u64,
    pub(super) notes: Vec<String>,
    pub(super) skipped: Vec<Skipped>,
    pub(super) duration_s: f64,
}

pub struct Inputs<'a> {
    pub params: &'a Params,
    pub command: String,
    pub out: Out,
    pub skipped: Vec<Skipped>,
    pub max_connections: u32,
    pub shared_buffers: &'static str,
    pub started: Instant,
}

pub fn build(i: Inputs) -> Report {
    let (mut per_conn, mut per_conn_pss) = (BTreeMap::new(), BTreeMap::new());
    for s in i.out.steps.iter().filter(|s| s.mode == "idle") {
        // Steps run in growing counts: the last idle step of a path is its largest.
        if let Some(b) = s.rss_per_conn_bytes {
            per_conn.insert(s.path, b);
        }
        // Only where a connection is a process (socat): for one process, PSS moves with
        // whatever else maps the same libraries at the time, and says nothing per connection.
        if let Some(b) = s.pss_per_conn_bytes.filter(|_| s.proxy_processes > Some(1)) {
            per_conn_pss.insert(s.path, b);
        }
    }
    let mut met = BTreeMap::new();
    for (path, max) in [
        ("agent-userspace", USERSPACE_MAX),
        ("agent-kernel", KERNEL_MAX),
    ] {
        if let Some(&b) = per_conn.get(path) {
            met.insert(path, b <= max);
        }
    }
    Report {
        bench: "scale",
        machine: crate::bench::machine(),
        provenance: crate::bench::provenance(),
        date: crate::bench::all::utc_now(),
        command: i.command,
        max_connected: i.out.steps.iter().map(|s| s.connected).max().unwrap_or(0),
        steps: i.out.steps,
        per_conn_bytes: per_conn,
        per_conn_pss_bytes: per_conn_pss,
        targets: Targets {
            userspace_per_idle_conn_bytes_max: USERSPACE_MAX,
            kernel_per_idle_conn_bytes_max: KERNEL_MAX,
        },
        met,
        counts: i.params.counts.clone(),
        secs: i.params.secs,
        interval_ms: i.params.interval_ms,
        max_qps: i.params.max_qps,
        pgbouncer_pool_mode: "session",
        postgres_max_connections: i.max_connections,
        postgres_shared_buffers: i.shared_buffers,
        min_available_mb: MIN_AVAILABLE_MB,
        notes: i.out.notes,
        skipped: i.skipped,
        duration_s: round_to(i.started.elapsed().as_secs_f64(), 1),
    }
}

pub fn write(report: &Report) -> anyhow::Result<()> {
    let dir = crate::bench::results_dir()?;
    std::fs::write(
        dir.join("scale.json"),
        serde_json::to_string_pretty(report)? + "\n",
    )?;
    let md = super::markdown::render(report);
    std::fs::write(dir.join("scale.md"), &md)?;
    print!("\n{md}");
    Ok(())
}
