//! `cargo xtask bench …`: measurements written as JSON + a markdown table to bench/results/.

mod all;
mod datapath;
mod failover;
mod scale;
mod stats;
mod switchover;
mod unavailability;

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
        #[arg(long, default_value_t = 5)]
        secs: u64,
        /// Rounds; each runs every workload through every path once. Many short rounds beat a
        /// few long ones: this machine's speed swings between runs, not within one.
        #[arg(long, default_value_t = 9)]
        rounds: usize,
        /// Paths to measure, comma-separated.
        #[arg(long, value_enum, value_delimiter = ',', default_value = datapath::PathKind::ALL)]
        paths: Vec<datapath::PathKind>,
        /// Workloads to run, comma-separated.
        #[arg(long, value_enum, value_delimiter = ',', default_value = datapath::Workload::ALL)]
        workloads: Vec<datapath::Workload>,
    },
    /// The pause a client writing every 10 ms sees at a Postgres crash, a whole node lost and
    /// a switchover, and the acknowledged writes the new primary lacks: HARP in streaming mode
    /// (userspace proxy, kernel steering; default, tight lease, synchronous) against Patroni
    /// 4.1 + HAProxy (defaults, tightest accepted, primary_start_timeout 0), every system on a
    /// primary + 2 streaming standbys built afresh per run, interleaved system by system.
    Unavailability {
        /// Runs per (system, fault).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Faults to make, comma-separated.
        #[arg(long, value_enum, value_delimiter = ',', default_value = unavailability::Fault::ALL)]
        only: Vec<unavailability::Fault>,
        /// Systems to measure, comma-separated.
        #[arg(long, value_enum, value_delimiter = ',', default_value = unavailability::System::ALL)]
        systems: Vec<unavailability::System>,
    },
    /// 1 to 5000 concurrent clients through each path, idle and active: sessions open, qps, the
    /// path's CPU and RSS, and its memory per connection.
    Scale {
        /// Client counts, comma-separated, grown in this order.
        #[arg(long, value_delimiter = ',', default_value = scale::DEFAULT_COUNTS)]
        counts: Vec<u32>,
        /// Seconds per window (each count: one idle, one active).
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Paths to measure, comma-separated.
        #[arg(long, value_enum, value_delimiter = ',', default_value = scale::DEFAULT_PATHS)]
        paths: Vec<datapath::PathKind>,
        /// Active: each client runs `SELECT 1` this often (ms) …
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        /// … but all clients together offer at most this many queries per second.
        #[arg(long, default_value_t = 5000)]
        max_qps: u32,
    },
    /// Every bench in one go (datapath, failover, scale, unavailability), then bench/REPORT.md
    /// with plots in bench/plots/.
    All {
        #[arg(long, default_value_t = 5)]
        datapath_secs: u64,
        /// Datapath rounds (median and spread over them).
        #[arg(long, default_value_t = 9)]
        rounds: usize,
        #[arg(long, default_value_t = 20)]
        failover_runs: usize,
        #[arg(long, value_delimiter = ',', default_value = scale::DEFAULT_COUNTS)]
        scale_counts: Vec<u32>,
        #[arg(long, default_value_t = 10)]
        scale_secs: u64,
        /// Runs per case of the unavailability bench (default: its own).
        #[arg(long)]
        unavailability_runs: Option<usize>,
        /// Benches to leave out (their existing results go into the report), comma-separated.
        #[arg(long, value_enum, value_delimiter = ',')]
        skip: Vec<all::Section>,
    },
    /// bench/REPORT.md and its plots from the results already in bench/results/, measuring
    /// nothing.
    Report,
    /// The scale bench's client process (started by `bench scale`).
    #[command(hide = true)]
    ScaleClient {
        #[arg(long)]
        port: u16,
    },
}

pub fn run(bench: Bench) -> anyhow::Result<()> {
    // These measure nothing: no release build.
    match bench {
        Bench::ScaleClient { port } => return scale::client_main(port),
        Bench::Report => return all::report_only(),
        _ => {}
    }
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
        Bench::Unavailability {
            runs,
            only,
            systems,
        } => unavailability::run(runs, only, systems),
        Bench::Scale {
            counts,
            secs,
            paths,
            interval_ms,
            max_qps,
        } => scale::run(scale::Params {
            counts,
            secs,
            paths,
            interval_ms,
            max_qps,
        }),
        Bench::All {
            datapath_secs,
            rounds,
            failover_runs,
            scale_counts,
            scale_secs,
            unavailability_runs,
            skip,
        } => all::run_all(all::Params {
            datapath_secs,
            rounds,
            failover_runs,
            scale_counts,
            scale_secs,
            unavailability_runs,
            skip,
        }),
        // Handled above.
        Bench::Report | Bench::ScaleClient { .. } => Ok(()),
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
/// What a result file was measured on: the commit (and whether the tree had changes), the
/// build profile of the binaries measured, and when.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Provenance {
    pub commit: String,
    pub dirty: bool,
    pub profile: String,
    pub measured_at: String,
}

/// The provenance of a measurement made now with release binaries (benchmarks and the lab
/// build nothing else).
pub fn provenance() -> Provenance {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(workspace_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    Provenance {
        commit: git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into()),
        dirty: git(&["status", "--porcelain", "--untracked-files=no"])
            .is_some_and(|s| !s.is_empty()),
        profile: "release".into(),
        measured_at: crate::bench::all::utc_now(),
    }
}

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
