//! `cargo xtask bench unavailability`: the unavailability a client sees — the longest pause
//! between its acknowledged writes — when the primary fails or is switched over, and the
//! acknowledged writes the new primary does not have (RPO), for HARP and for Patroni +
//! HAProxy, side by side in one run on this machine.
//!
//! Every system runs on the same substrate: a primary and two streaming standbys with the same
//! Postgres settings (`harp_tests::cluster::STREAMING_SETTINGS`); HARP's cluster is cloned with
//! `pg_basebackup -R` and managed with `cluster.replication: streaming`, Patroni makes its own
//! replicas. Every system gets the same client: one small INSERT every 10 ms, reconnecting
//! after any error, through the system's entry point (a harp-agent, or HAProxy in front of
//! Patroni). Each run builds its cluster afresh and tears it down after, so runs are
//! independent; runs are interleaved system by system (round 1 of every system and fault,
//! then round 2, …), so a slow spell of the machine hits every system alike.

mod haproxy;
mod harp;
mod patroni;
mod patroni_node;
mod probe;
mod report;

use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;

use patroni_node::Timings;
use probe::RunResult;

/// The systems compared; `-tight` ones run at the tightest settings their tool accepts, `-sync`
/// ones with `cluster.synchronous_mode: on`.
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
    /// harp-userspace with `cluster.synchronous_mode: on`.
    HarpUserspaceSync,
    /// harp-kernel with `cluster.synchronous_mode: on`.
    HarpKernelSync,
    /// Patroni 4.1 defaults (ttl 30, loop_wait 10, retry_timeout 10) behind HAProxy.
    PatroniDefault,
    /// Patroni at its minimums (ttl 20, loop_wait 1, retry_timeout 3) behind HAProxy.
    PatroniTight,
    /// Patroni defaults with `primary_start_timeout: 0`: a crashed primary fails over at once
    /// instead of being restarted in place.
    PatroniFailover,
}

/// How a client reaches a HARP cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentKind {
    Userspace,
    Kernel,
    Pgbouncer,
}

/// What a system runs on, built afresh for every run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deploy {
    Harp {
        tight: bool,
        sync: bool,
        agent: AgentKind,
    },
    Patroni(Timings),
}

impl System {
    pub const ALL: &str = "harp-userspace,harp-kernel,harp-pgbouncer,harp-userspace-tight,\
                           harp-kernel-tight,harp-userspace-sync,harp-kernel-sync,\
                           patroni-default,patroni-tight,patroni-failover";

    pub fn name(self) -> &'static str {
        match self {
            System::HarpUserspace => "harp-userspace",
            System::HarpKernel => "harp-kernel",
            System::HarpPgbouncer => "harp-pgbouncer",
            System::HarpUserspaceTight => "harp-userspace-tight",
            System::HarpKernelTight => "harp-kernel-tight",
            System::HarpUserspaceSync => "harp-userspace-sync",
            System::HarpKernelSync => "harp-kernel-sync",
            System::PatroniDefault => "patroni-default",
            System::PatroniTight => "patroni-tight",
            System::PatroniFailover => "patroni-failover",
        }
    }

    pub fn deployment(self) -> Deploy {
        let harp = |tight, sync, agent| Deploy::Harp { tight, sync, agent };
        use AgentKind::{Kernel, Pgbouncer, Userspace};
        match self {
            System::HarpUserspace => harp(false, false, Userspace),
            System::HarpKernel => harp(false, false, Kernel),
            System::HarpPgbouncer => harp(false, false, Pgbouncer),
            System::HarpUserspaceTight => harp(true, false, Userspace),
            System::HarpKernelTight => harp(true, false, Kernel),
            System::HarpUserspaceSync => harp(false, true, Userspace),
            System::HarpKernelSync => harp(false, true, Kernel),
            System::PatroniDefault => Deploy::Patroni(patroni_node::DEFAULT),
            System::PatroniTight => Deploy::Patroni(patroni_node::TIGHT),
            System::PatroniFailover => Deploy::Patroni(patroni_node::FAILOVER),
        }
    }

    fn is_kernel(self) -> bool {
        matches!(
            self.deployment(),
            Deploy::Harp {
                agent: AgentKind::Kernel,
                ..
            }
        )
    }

    /// Whether its commits wait for a synchronous standby (it must then lose no write).
    pub fn is_sync(self) -> bool {
        matches!(self.deployment(), Deploy::Harp { sync: true, .. })
    }

    fn is_patroni(self) -> bool {
        matches!(self.deployment(), Deploy::Patroni(_))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Fault {
    /// kill -9 of the primary's postmaster only (Patroni restarts it in place unless
    /// `primary_start_timeout` is 0).
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

/// The writer's table (`xtask demo-writer` inserts into it), created on every primary.
const TABLE_SQL: &str = "CREATE TABLE IF NOT EXISTS harp_demo (id bigserial PRIMARY KEY, \
                         server_port int NOT NULL, at timestamptz NOT NULL DEFAULT now())";

/// Fails unless the Postgres at `dsn` runs with the replication settings every system shares.
fn check_settings(dsn: &str) -> anyhow::Result<()> {
    let got = harp_tests::rt::block_on(|| async {
        let (c, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        let mut got = Vec::new();
        for (k, _) in harp_tests::cluster::STREAMING_SETTINGS {
            let row = c.query_one("SELECT current_setting($1)", &[&k]).await?;
            got.push(row.get::<_, String>(0));
        }
        Ok::<_, tokio_postgres::Error>(got)
    })?;
    for ((k, want), got) in harp_tests::cluster::STREAMING_SETTINGS.iter().zip(got) {
        anyhow::ensure!(got == *want, "{dsn}: {k} is {got}, not {want}");
    }
    Ok(())
}

/// A running deployment: where its clients connect, how a fault is made.
trait Deployment {
    /// Waits until the primary and both standbys are up and streaming.
    fn wait_healthy(&mut self) -> anyhow::Result<()>;
    /// The writer process (`xtask demo-writer <dsn>`) of `system`, in its cgroup if steered.
    fn writer(&self, system: System) -> anyhow::Result<std::process::Command>;
    /// Makes `fault` on the current primary: `(CLOCK_MONOTONIC ns when it began, node hit)`.
    fn inject(&mut self, fault: Fault) -> anyhow::Result<(u64, String)>;
    /// A direct DSN of the current primary (the new leader after a fault), once there is one.
    fn primary_dsn(&mut self) -> anyhow::Result<String>;
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
    /// Runs that could not be measured, with why.
    pub failures: Vec<String>,
}

/// Unique, in the order given.
fn dedup<T: PartialEq + Copy>(v: Vec<T>) -> Vec<T> {
    let mut out = Vec::new();
    for x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

pub fn run(runs: usize, faults: Vec<Fault>, systems: Vec<System>) -> anyhow::Result<()> {
    anyhow::ensure!(runs > 0, "--runs must be at least 1");
    let faults = dedup(faults);
    let mut systems = dedup(systems);
    if systems.iter().any(|s| s.is_patroni()) {
        patroni::install()?;
    }
    let mut skipped = Vec::new();
    if let Some(reason) = harp::kernel_unavailable() {
        for s in systems.iter().filter(|s| s.is_kernel()) {
            println!("NOTE: skipping {}: {reason}", s.name());
            skipped.push((*s, reason.clone()));
        }
        systems.retain(|s| !s.is_kernel());
    }
    let mut cases: Vec<Case> = systems
        .iter()
        .flat_map(|&system| {
            faults.iter().map(move |&fault| Case {
                system,
                fault,
                runs: Vec::new(),
                failures: Vec::new(),
            })
        })
        .collect();
    for round in 1..=runs {
        for case in &mut cases {
            let (s, f) = (case.system.name(), case.fault.name());
            match one_run(case.system, case.fault).with_context(|| format!("{s} {f} run {round}")) {
                Ok(r) => {
                    println!(
                        "{s} {f} run {round}/{runs}: unavailable {:.1} ms, {} acknowledged \
                         writes lost (node {})",
                        ms(r.gap),
                        r.lost,
                        r.node
                    );
                    case.runs.push(r);
                }
                Err(e) => {
                    eprintln!("{s} {f} run {round}/{runs} FAILED: {e:?}");
                    case.failures.push(format!("run {round}: {e:#}"));
                }
            }
        }
    }
    let names = |v: Vec<&str>| v.join(",");
    let command = format!(
        "cargo xtask bench unavailability --runs {runs} --only {} --systems {}",
        names(faults.iter().map(|f| f.name()).collect()),
        names(systems.iter().map(|s| s.name()).collect())
    );
    report::write(runs, &cases, &skipped, command)
}

/// One run on a cluster built for it alone, torn down (dropped) after.
fn one_run(system: System, fault: Fault) -> anyhow::Result<RunResult> {
    let mut dep: Box<dyn Deployment> = match system.deployment() {
        Deploy::Harp { tight, sync, agent } => Box::new(harp::Harp::start(tight, sync, agent)?),
        Deploy::Patroni(timings) => Box::new(patroni::Patroni::start(timings)?),
    };
    probe::one(dep.as_mut(), system, fault)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_system_is_in_all_and_named_as_clap_parses_it() {
        let all: Vec<&str> = System::ALL.split(',').collect();
        assert_eq!(all.len(), System::value_variants().len());
        for s in System::value_variants() {
            assert!(all.contains(&s.name()), "{} not in ALL", s.name());
            assert_eq!(System::from_str(s.name(), false), Ok(*s));
        }
        assert!(System::HarpKernelSync.is_sync() && System::HarpKernelSync.is_kernel());
        assert!(!System::PatroniFailover.is_sync() && System::PatroniFailover.is_patroni());
        assert_eq!(dedup(vec![2, 1, 2, 3, 1]), [2, 1, 3]);
    }
}
