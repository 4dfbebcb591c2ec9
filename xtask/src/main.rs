//! Developer and user tasks: `cargo xtask build-ebpf | test | demo | lab | bench …`.

mod bench;
mod build_ebpf;
mod demo;
mod demo_authority;
mod demo_pool;
mod demo_streaming;
mod fuzz;
mod lab;
mod test;
mod writer;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "HARP tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Builds the kernel programs (harp-ebpf, pinned nightly + bpf-linker) into
    /// target/bpf/harp.bpf.o, which harp-agent builds then embed.
    BuildEbpf,
    /// Lints and the whole test suite (real etcd and Postgres), as CI runs it.
    Test {
        /// Skip fmt and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The fuzz targets (cargo-fuzz, pinned nightly), each for a bounded time from its seeds;
    /// a crash is kept under fuzz/regressions/ and fails the run.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Only these targets (wire, config, records); all by default.
        targets: Vec<String>,
    },
    /// A local cluster and its failover and switchover: by default a streaming cluster (3
    /// etcd, a primary and 2 standbys, 3 managers); `--replication multi_writer` for 3
    /// independent nodes over 2 locations (with the kernel-agent and PgBouncer acts).
    Demo {
        /// Leave the cluster running (Ctrl-C tears it down).
        #[arg(long)]
        keep: bool,
        /// The kind of cluster: `streaming` or `multi_writer`.
        #[arg(long, value_enum, default_value = "streaming")]
        replication: demo::DemoReplication,
    },
    /// The demo's application process (started by `demo`).
    #[command(hide = true)]
    DemoWriter { dsn: String },
    /// The multi-host lab: scenarios of faults under load, checked for split brain and lost
    /// writes (root; network namespaces on this machine).
    Lab {
        #[command(subcommand)]
        cmd: lab::LabCmd,
    },
    /// Benchmarks; results go to bench/results/.
    Bench {
        #[command(subcommand)]
        bench: bench::Bench,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::BuildEbpf => build_ebpf::run(),
        Task::Test { no_lint, args } => test::run(no_lint, &args),
        Task::Fuzz { seconds, targets } => fuzz::run(seconds, &targets),
        Task::Demo { keep, replication } => demo::run(keep, replication),
        Task::DemoWriter { dsn } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(writer::write_forever(
                dsn,
                std::time::Duration::from_millis(10),
            ));
            Ok(())
        }
        Task::Bench { bench } => bench::run(bench),
        Task::Lab { cmd } => lab::run(cmd),
    }
}
