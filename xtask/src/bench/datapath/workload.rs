//! The workloads run through every path, and what one run of a workload measured.

use clap::ValueEnum;
use harp_tests::cgroup::ChildCgroup;

use super::{bulk, pgbench};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// `pgbench -S -c 8 -j 2`: select-only on 8 persistent connections.
    Select,
    /// `pgbench -S -C -c 4`: a new connection per transaction.
    Connect,
    /// `psql` streaming a ~100 MB `COPY … TO STDOUT`, back to back: MB/s.
    Bulk,
}

impl Workload {
    pub const ALL: &str = "select,connect,bulk";

    pub fn name(self) -> &'static str {
        match self {
            Workload::Select => "select",
            Workload::Connect => "connect",
            Workload::Bulk => "bulk",
        }
    }

    /// Whether the workload runs pgbench (and so needs `pgbench -i`'s tables).
    pub fn is_pgbench(self) -> bool {
        self != Workload::Bulk
    }

    /// Decimals kept of `tps` (bulk: a few transfers per second).
    pub fn tps_digits(self) -> i32 {
        if self.is_pgbench() { 1 } else { 3 }
    }

    /// The full command line, for the report.
    pub fn command_line(self, secs: u64) -> String {
        match self {
            Workload::Bulk => bulk::command_line(),
            _ => pgbench::command_line(self, secs),
        }
    }

    /// A short description, for the markdown's notes.
    pub fn summary(self) -> String {
        match self {
            Workload::Bulk => bulk::summary(),
            _ => pgbench::summary(self),
        }
    }

    /// agent-userspace's target, as a minimum ratio to direct (of tps); none for bulk.
    pub fn agent_target(self) -> Option<f64> {
        match self {
            Workload::Select => Some(0.85),
            Workload::Connect => Some(0.95),
            Workload::Bulk => None,
        }
    }

    /// One run of the workload for about `secs` seconds through `127.0.0.1:<port>`, its client
    /// inside `cgroup` if given.
    pub fn run(
        self,
        port: u16,
        secs: u64,
        cgroup: Option<&ChildCgroup>,
    ) -> anyhow::Result<Outcome> {
        match self {
            Workload::Bulk => bulk::run(port, secs, cgroup),
            _ => pgbench::run(port, self, secs, cgroup),
        }
    }
}

/// What one run measured.
pub struct Outcome {
    /// Transactions per second (bulk: transfers per second).
    pub tps: f64,
    /// pgbench's "latency average" (bulk: wall time per transfer).
    pub latency_ms: Option<f64>,
    /// pgbench's "average connection time" (printed for `-C`).
    pub connection_ms: Option<f64>,
    /// Transactions done (bulk: transfers).
    pub transactions: Option<u64>,
    /// Bulk only: the bytes the client received, all checked.
    pub bytes: Option<u64>,
    /// Bulk only: `bytes` / wall time, in MB (10⁶ bytes) per second.
    pub mb_per_s: Option<f64>,
}
