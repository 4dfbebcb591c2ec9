//! `cargo xtask bench …`: measurements written as JSON + a markdown table to bench/results/.

mod datapath;
mod failover;
mod stats;
mod switchover;

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum Bench {
    /// Kill → new leader visible in etcd: postmaster kill, node kill, clean stop; and
    /// `harpctl promote` under load: the pause a client writing through an agent sees.
    Failover {
        /// Runs per case.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Only this case (postmaster_kill, node_kill, clean_stop, switchover).
        #[arg(long)]
        only: Option<String>,
    },
    /// pgbench and bulk COPY through several paths to one Postgres (direct, harp-agent in
    /// userspace, steered by connect4 and spliced by sockmap, haproxy, pgbouncer, socat),
    /// interleaved; plus harp-agent's RSS with 1000 idle sessions and, with the kernel paths,
    /// the etcd → BPF map update latency.
    Datapath {
        /// Seconds per pgbench run.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Rounds; each runs every workload through every path once.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Paths to measure, comma-separated.
        #[arg(long, value_enum, value_delimiter = ',', default_value = datapath::PathKind::ALL)]
        paths: Vec<datapath::PathKind>,
        /// Workloads to run, comma-separated.
        #[arg(long, value_enum, value_delimiter = ',', default_value = datapath::Workload::ALL)]
        workloads: Vec<datapath::Workload>,
    },
}

pub fn run(bench: Bench) -> anyhow::Result<()> {
    // Measure release builds: what users run.
    crate::test::cargo(&["build", "--release", "--workspace", "--bins"])?;
    harp_tests::bins::set_bin_dir(workspace_root().join("target/release"));
    match bench {
        Bench::Failover { runs, only } => failover::run(runs, only.as_deref()),
        Bench::Datapath {
            secs,
            rounds,
            paths,
            workloads,
        } => datapath::run(secs, rounds, paths, workloads),
    }
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub fn results_dir() -> anyhow::Result<PathBuf> {
    let dir = workspace_root().join("bench/results");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A line describing the machine, for the report.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cpus} cpus ({model}), linux {}", kernel.trim())
}
