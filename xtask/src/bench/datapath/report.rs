//! The report: per-run records, the per-case medians, and bench/results/datapath.{json,md}.

mod cases;
mod head_to_head;
mod markdown;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use harp_tests::postgres::pg_bin_dir;
use serde::Serialize;

use super::bulk::BYTES_PER_TRANSFER;
use super::client::output_text;
use super::idle::AgentRss;
use super::kernel::Counters;
use super::map_latency::MapLatency;
use super::same_instant::{self, PairCase, PairRun};
use super::workload::{Outcome, Workload};
use super::{MAX_CONNECTIONS, Measured, PathKind, SCALE, Setup, round_to};
pub(super) use cases::median;
use cases::{Case, cases};
use head_to_head::HeadToHead;

const RSS_TARGET_MB: f64 = 30.0;

#[derive(Serialize)]
pub struct Run {
    round: usize,
    workload: &'static str,
    path: &'static str,
    tps: f64,
    latency_ms_avg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_ms_avg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transactions: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mb_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy_cpu_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy_cpu_us_per_tx: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy_cpu_s_per_gb: Option<f64>,
    wall_s: f64,
    /// Kernel paths: how much the agent's kernel counters grew during the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel_counters: Option<Counters>,
}

impl Run {
    /// `cpu_s`: CPU seconds the path's process used during the run (`None` for `direct`).
    pub fn new(
        round: usize,
        w: Workload,
        p: PathKind,
        out: &Outcome,
        cpu_s: Option<f64>,
        wall: Duration,
    ) -> Run {
        let us_per_tx = cpu_s.zip(out.transactions.filter(|&n| n > 0));
        let s_per_gb = cpu_s.zip(out.bytes.filter(|&b| b > 0));
        Run {
            round,
            workload: w.name(),
            path: p.name(),
            tps: round_to(out.tps, w.tps_digits()),
            latency_ms_avg: out.latency_ms.map(|l| round_to(l, 3)),
            connection_ms_avg: out.connection_ms.map(|l| round_to(l, 3)),
            transactions: out.transactions,
            bytes: out.bytes,
            mb_per_s: out.mb_per_s.map(|m| round_to(m, 1)),
            proxy_cpu_s: cpu_s.map(|s| round_to(s, 2)),
            proxy_cpu_us_per_tx: us_per_tx.map(|(s, n)| round_to(s * 1e6 / n as f64, 1)),
            proxy_cpu_s_per_gb: s_per_gb.map(|(s, b)| round_to(s * 1e9 / b as f64, 3)),
            wall_s: round_to(wall.as_secs_f64(), 2),
            kernel_counters: None,
        }
    }

    pub fn with_kernel(self, kernel_counters: Option<Counters>) -> Run {
        Run {
            kernel_counters,
            ..self
        }
    }

    /// A line for the progress output.
    pub fn summary(&self) -> String {
        let opt = |v: Option<f64>, digits: usize| v.map_or("-".into(), |x| format!("{x:.digits$}"));
        let (w, p) = (self.workload, self.path);
        match self.mb_per_s {
            Some(mb) => format!(
                "{w:<8} {p:<16} MB/s {mb:>9.1}  transfers {:>5}  proxy cpu {:>6} s/GB",
                self.transactions.unwrap_or_default(),
                opt(self.proxy_cpu_s_per_gb, 3),
            ),
            None => format!(
                "{w:<8} {p:<16} tps {:>10.1}  latency {:>7} ms  proxy cpu {:>6} µs/tx",
                self.tps,
                opt(self.latency_ms_avg, 3),
                opt(self.proxy_cpu_us_per_tx, 1),
            ),
        }
    }
}

#[derive(Serialize)]
pub struct Skipped {
    pub path: &'static str,
    pub reason: String,
}

#[derive(Serialize)]
pub struct Report {
    bench: &'static str,
    cases: Vec<Case>,
    /// VmRSS of harp-agent with 1000 idle sessions through it; `null` if the agent was skipped.
    agent_rss_mb_1000_idle: Option<f64>,
    /// (RSS with the sessions − RSS before) / 1000.
    agent_rss_kb_per_idle_conn: Option<f64>,
    agent_rss_target_mb: f64,
    agent_rss_met: Option<bool>,
    agent_rss: Option<AgentRss>,
    /// etcd leader change → BPF map updated, in ms; `null` without the kernel paths.
    map_update_ms: Option<MapLatency>,
    /// The same with etcd over TLS, client certificates and users, in the same run.
    map_update_tls_ms: Option<MapLatency>,
    /// agent-kernel and direct run at the same instant, per pgbench workload.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    same_instant: Vec<PairCase>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    same_instant_runs: Vec<PairRun>,
    /// agent-userspace against each other proxy, round by round.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    head_to_head: Vec<HeadToHead>,
    /// Whether agent-userspace's select is at least every other proxy's (median of the rounds'
    /// ratios ≥ 1 against each); `null` without the proxies.
    userspace_select_vs_peers_met: Option<bool>,
    skipped: Vec<Skipped>,
    secs: u64,
    rounds: usize,
    scale: u32,
    /// The pgbench workloads' command lines.
    pgbench: BTreeMap<&'static str, String>,
    /// The command line of one bulk transfer, and the bytes it must bring.
    #[serde(skip_serializing_if = "Option::is_none")]
    bulk_command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bulk_bytes_per_transfer: Option<u64>,
    #[serde(skip)]
    workloads: Vec<Workload>,
    postgres_max_connections: u32,
    versions: BTreeMap<&'static str, String>,
    machine: String,
    #[serde(flatten)]
    provenance: crate::bench::Provenance,
    command: String,
    duration_s: f64,
    run_log: Vec<Run>,
}

pub fn build(
    setup: &Setup,
    measured: Measured,
    rss: Option<AgentRss>,
    map_update: Option<(MapLatency, MapLatency)>,
    skipped: Vec<Skipped>,
) -> Report {
    let (map_update_ms, map_update_tls_ms) = match map_update {
        Some((plain, tls)) => (Some(plain), Some(tls)),
        None => (None, None),
    };
    let rss_mb = rss.as_ref().map(|r| r.rss_mb_after);
    let kb_per_conn = rss.as_ref().map(|r| {
        round_to(
            (r.rss_mb_after - r.rss_mb_before) * 1024.0 / r.sessions as f64,
            2,
        )
    });
    let bulk = setup.workloads.contains(&Workload::Bulk);
    let run_log = measured.runs;
    let same_instant = same_instant::summarize(&measured.pairs, &setup.workloads, setup.secs);
    let mut cases = cases(&setup.paths, &setup.workloads, &run_log);
    for c in cases
        .iter_mut()
        .filter(|c| c.path == PathKind::AgentKernel.name())
    {
        if let Some(pair) = same_instant.iter().find(|p| p.workload == c.workload) {
            c.same_instant_ratio = Some(pair.ratio);
            c.met = c.target.map(|t| pair.ratio >= t);
        }
    }
    let head_to_head = head_to_head::build(&setup.paths, &setup.workloads, &run_log);
    Report {
        bench: "datapath",
        userspace_select_vs_peers_met: head_to_head::select_met(&head_to_head),
        head_to_head,
        same_instant,
        same_instant_runs: measured.pairs,
        cases,
        agent_rss_mb_1000_idle: rss_mb,
        agent_rss_kb_per_idle_conn: kb_per_conn,
        agent_rss_target_mb: RSS_TARGET_MB,
        agent_rss_met: rss_mb.map(|mb| mb <= RSS_TARGET_MB),
        agent_rss: rss,
        map_update_ms,
        map_update_tls_ms,
        skipped,
        secs: setup.secs,
        rounds: setup.rounds,
        scale: SCALE,
        pgbench: setup
            .workloads
            .iter()
            .filter(|w| w.is_pgbench())
            .map(|w| (w.name(), w.command_line(setup.secs)))
            .collect(),
        bulk_command: bulk.then(|| Workload::Bulk.command_line(setup.secs)),
        bulk_bytes_per_transfer: bulk.then_some(BYTES_PER_TRANSFER),
        workloads: setup.workloads.clone(),
        postgres_max_connections: MAX_CONNECTIONS,
        versions: versions(&setup.paths),
        machine: super::super::machine(),
        provenance: crate::bench::provenance(),
        command: setup.command.clone(),
        duration_s: round_to(setup.started.elapsed().as_secs_f64(), 1),
        run_log,
    }
}

/// The version line of Postgres and of each path's program, for the report.
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
    for &p in paths {
        let (arg, pick) = match p {
            PathKind::Haproxy => ("-v", "version"),
            PathKind::Pgbouncer => ("--version", "PgBouncer"),
            PathKind::Socat => ("-V", "socat version"),
            PathKind::Direct
            | PathKind::AgentUserspace
            | PathKind::AgentKernel
            | PathKind::AgentSockmap => continue,
        };
        let prog = p.program().expect("an external path has a program");
        v.insert(prog, first_line(Path::new(prog), arg, pick));
    }
    v
}

pub fn write(report: &Report) -> anyhow::Result<()> {
    let dir = super::super::results_dir()?;
    std::fs::write(
        dir.join("datapath.json"),
        serde_json::to_string_pretty(report)? + "\n",
    )?;
    let md = markdown::render(report);
    std::fs::write(dir.join("datapath.md"), &md)?;
    print!("\n{md}");
    Ok(())
}
