//! `cargo xtask bench unavailability`: the unavailability a client sees — the longest pause
//! between its acknowledged writes — when the primary fails or is switched over, for HARP and
//! for Patroni + HAProxy, side by side in one run on this machine.
//!
//! Every system gets the same client: one small INSERT every 10 ms, reconnecting after any
//! error, through the system's entry point (a harp-agent, or HAProxy in front of Patroni). Each
//! fault hits the current primary; the system is healed (killed node restarted, Patroni's
//! replicas streaming again) before the next run. See `report.rs` for what is written.

mod haproxy;
mod harp;
mod patroni;
mod patroni_node;
mod probe;
mod report;

use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;

use probe::RunResult;

/// The systems compared; `-tight` ones run at the tightest settings their tool accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum System {
    /// The client writes through harp-agent's userspace proxy (lease 6 s, refresh 2 s).
    HarpUserspace,
    /// The client runs in a child cgroup; harp-agent's connect4 steers it (lease 6 s).
    HarpKernel,
    /// The client writes through harp-agent with `type: pgbouncer`, pooling per transaction.
    HarpPgbouncer,
    /// harp-userspace with lease 2 s, refresh 500 ms.
    HarpUserspaceTight,
    /// harp-kernel with lease 2 s, refresh 500 ms.
    HarpKernelTight,
    /// Patroni 4.1 defaults (ttl 30, loop_wait 10, retry_timeout 10) behind HAProxy.
    PatroniDefault,
    /// Patroni at its minimums (ttl 20, loop_wait 1, retry_timeout 3) behind HAProxy.
    PatroniTight,
}

impl System {
    pub const ALL: &str = "harp-userspace,harp-kernel,harp-pgbouncer,harp-userspace-tight,\
                           harp-kernel-tight,patroni-default,patroni-tight";

    pub fn name(self) -> &'static str {
        match self {
            System::HarpUserspace => "harp-userspace",
            System::HarpKernel => "harp-kernel",
            System::HarpPgbouncer => "harp-pgbouncer",
            System::HarpUserspaceTight => "harp-userspace-tight",
            System::HarpKernelTight => "harp-kernel-tight",
            System::PatroniDefault => "patroni-default",
            System::PatroniTight => "patroni-tight",
        }
    }

    /// The deployment the system runs on: systems sharing one are measured on the same cluster.
    fn deployment(self) -> Deploy {
        match self {
            System::HarpUserspace | System::HarpKernel | System::HarpPgbouncer => {
                Deploy::Harp { tight: false }
            }
            System::HarpUserspaceTight | System::HarpKernelTight => Deploy::Harp { tight: true },
            System::PatroniDefault => Deploy::Patroni { tight: false },
            System::PatroniTight => Deploy::Patroni { tight: true },
        }
    }

    fn is_kernel(self) -> bool {
        matches!(self, System::HarpKernel | System::HarpKernelTight)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Fault {
    /// kill -9 of the primary's postmaster only (Patroni restarts it in place).
    #[value(name = "postgres_crash")]
    PostgresCrash,
    /// kill -9 of the primary's postmaster and of its harp-manager / Patroni.
    #[value(name = "node_loss")]
    NodeLoss,
    /// Planned: `harpctl promote` / `patronictl switchover --force`.
    #[value(name = "switchover")]
    Switchover,
}

impl Fault {
    pub const ALL: &str = "postgres_crash,node_loss,switchover";

    pub fn name(self) -> &'static str {
        match self {
            Fault::PostgresCrash => "postgres_crash",
            Fault::NodeLoss => "node_loss",
            Fault::Switchover => "switchover",
        }
    }
}

/// The writer's table (`xtask demo-writer` inserts into it), created on every system.
const TABLE_SQL: &str = "CREATE TABLE IF NOT EXISTS harp_demo (id bigserial PRIMARY KEY, \
                         server_port int NOT NULL, at timestamptz NOT NULL DEFAULT now())";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deploy {
    Harp { tight: bool },
    Patroni { tight: bool },
}

/// A running deployment: where its clients connect, how a fault is made and healed.
trait Deployment {
    /// Waits until every node is up and healthy, the way the run before found it.
    fn wait_healthy(&mut self) -> anyhow::Result<()>;
    /// The writer process (`xtask demo-writer <dsn>`) of `system`, in its cgroup if steered.
    fn writer(&self, system: System) -> anyhow::Result<std::process::Command>;
    /// Makes `fault` on the current primary: `(CLOCK_MONOTONIC ns when it began, node hit)`.
    fn inject(&mut self, fault: Fault) -> anyhow::Result<(u64, String)>;
    /// Brings `node` back after `fault` (a no-op where the system heals itself).
    fn heal(&mut self, fault: Fault, node: &str) -> anyhow::Result<()>;
    /// The kernel's count of steered connects, for the kernel systems.
    fn steered(&self, system: System) -> anyhow::Result<Option<u64>>;
    /// Logs for an error message.
    fn logs(&self) -> String;
}

/// One (system, fault) pair's runs.
pub struct Case {
    pub system: System,
    pub fault: Fault,
    pub runs: Vec<RunResult>,
}

pub fn run(runs: usize, faults: Vec<Fault>, systems: Vec<System>) -> anyhow::Result<()> {
    anyhow::ensure!(runs > 0, "--runs must be at least 1");
    let mut faults_u: Vec<Fault> = Vec::new();
    for f in faults {
        if !faults_u.contains(&f) {
            faults_u.push(f);
        }
    }
    if systems
        .iter()
        .any(|s| matches!(s.deployment(), Deploy::Patroni { .. }))
    {
        patroni::install()?;
    }
    let mut cases = Vec::new();
    let mut skipped = Vec::new();
    let deploys = [
        Deploy::Harp { tight: false },
        Deploy::Harp { tight: true },
        Deploy::Patroni { tight: false },
        Deploy::Patroni { tight: true },
    ];
    for d in deploys {
        let mine: Vec<System> = System::value_variants()
            .iter()
            .copied()
            .filter(|s| s.deployment() == d && systems.contains(s))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let (mut dep, unavailable): (Box<dyn Deployment>, _) = match d {
            Deploy::Harp { tight } => {
                let kernel = mine.iter().any(|s| s.is_kernel());
                let pgbouncer = mine.contains(&System::HarpPgbouncer);
                let (h, reason) = harp::Harp::start(tight, kernel, pgbouncer)?;
                (Box::new(h), reason)
            }
            Deploy::Patroni { tight } => (Box::new(patroni::Patroni::start(tight)?), None),
        };
        for system in mine {
            if let (true, Some(reason)) = (system.is_kernel(), &unavailable) {
                println!("NOTE: skipping {}: {reason}", system.name());
                skipped.push((system, reason.clone()));
                continue;
            }
            for &fault in &faults_u {
                let mut results = Vec::new();
                for i in 0..runs {
                    let r = probe::one(dep.as_mut(), system, fault).with_context(|| {
                        format!("{} {} run {}", system.name(), fault.name(), i + 1)
                    })?;
                    println!(
                        "{} {} run {}/{runs}: unavailable {:.1} ms (node {})",
                        system.name(),
                        fault.name(),
                        i + 1,
                        ms(r.gap),
                        r.node
                    );
                    results.push(r);
                }
                cases.push(Case {
                    system,
                    fault,
                    runs: results,
                });
            }
        }
    }
    let command = format!(
        "cargo xtask bench unavailability --runs {runs} --only {} --systems {}",
        faults_u
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(","),
        systems
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(",")
    );
    let partial = faults_u.len() < Fault::value_variants().len()
        || System::value_variants()
            .iter()
            .any(|s| !systems.contains(s));
    report::write(runs, &cases, &skipped, command, partial)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}
