//! `cargo xtask bench failover`: how long from a fault on the leader to a new leader key in
//! etcd, seen by a watch (what every agent sees). Three faults, `runs` each.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use harp_tests::rt::block_on;
use harp_tests::{LeaderWatch, TestCluster};
use serde::{Deserialize, Serialize};

use super::stats::{Summary, summarize};

const LEASE_SECS: u64 = 6;

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// kill -9 of the leader's postmaster; the manager lives and releases.
    PostmasterKill,
    /// kill -9 of the leader's manager and postmaster: the lease must expire.
    NodeKill,
    /// SIGTERM to the leader's manager: it hands over.
    CleanStop,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::PostmasterKill => "postmaster_kill",
            Fault::NodeKill => "node_kill",
            Fault::CleanStop => "clean_stop",
        }
    }
    /// (p50 target, p95 target) in ms.
    fn targets(self) -> (Option<f64>, f64) {
        match self {
            Fault::PostmasterKill => (Some(300.0), 1000.0),
            Fault::NodeKill => (None, (LEASE_SECS * 1000 + 500) as f64),
            Fault::CleanStop => (None, 200.0),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Case {
    name: String,
    n: usize,
    p50_ms: f64,
    p95_ms: f64,
    max_ms: f64,
    target_p50_ms: Option<f64>,
    target_p95_ms: f64,
    met: bool,
    samples_ms: Vec<f64>,
}

#[derive(Serialize)]
struct Report {
    bench: &'static str,
    cases: Vec<Case>,
    machine: String,
    #[serde(flatten)]
    provenance: crate::bench::Provenance,
    lease_duration_ms: u64,
    lease_refresh_interval_ms: u64,
    nodes: usize,
    etcd_members: usize,
    command: String,
}

pub fn run(runs: usize, only: Option<&str>) -> anyhow::Result<()> {
    let mut c = TestCluster::start_with(
        "bench",
        &[("n1", "dca", 100), ("n2", "dca", 100), ("n3", "dca", 100)],
        LEASE_SECS,
        2000,
    );
    // The watch runs in the background on a runtime that lives as long as the bench.
    let rt = tokio::runtime::Runtime::new()?;
    let mut watch = rt.block_on(async { LeaderWatch::start(&c.client().await, "bench").await });
    let mut cases = Vec::new();
    let faults: Vec<Fault> = [Fault::PostmasterKill, Fault::NodeKill, Fault::CleanStop]
        .into_iter()
        .filter(|f| only.is_none_or(|o| o == f.name()))
        .collect();
    for fault in faults {
        let mut samples = Vec::new();
        for i in 0..runs {
            let took = one(&rt, &mut c, &mut watch, fault)?;
            println!(
                "{} run {}/{}: {:.1} ms",
                fault.name(),
                i + 1,
                runs,
                took.as_secs_f64() * 1e3
            );
            samples.push(took);
        }
        let (t50, t95) = fault.targets();
        cases.push(case(fault.name(), &samples, t50, t95));
    }
    if only.is_none_or(|o| o == "switchover") {
        let samples = super::switchover::measure(&mut c, runs)?;
        cases.push(case("switchover", &samples, None, 500.0));
    }
    let mut command = format!("cargo xtask bench failover --runs {runs}");
    if let Some(o) = only {
        let earlier;
        (cases, earlier) = with_earlier_cases(cases)?;
        command = match earlier {
            Some(e) => format!("{e}; {command} --only {o}"),
            None => format!("{command} --only {o}"),
        };
    }
    let report = Report {
        bench: "failover",
        cases,
        machine: super::machine(),
        provenance: crate::bench::provenance(),
        lease_duration_ms: LEASE_SECS * 1000,
        lease_refresh_interval_ms: 2000,
        nodes: 3,
        etcd_members: 3,
        command,
    };
    write(&report)
}

/// One case re-measured (`--only`): the other cases stay as the last run wrote them, in their
/// usual order; also the command that measured those.
fn with_earlier_cases(new: Vec<Case>) -> anyhow::Result<(Vec<Case>, Option<String>)> {
    let path = super::results_dir()?.join("failover.json");
    let (earlier, command): (Vec<Case>, _) = match std::fs::read(&path) {
        Ok(bytes) => {
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            let cases = serde_json::from_value(v["cases"].clone()).unwrap_or_default();
            // Only the first command: a chain of `--only` re-runs names the full run once.
            let cmd = v["command"]
                .as_str()
                .and_then(|c| c.split(';').next())
                .map(str::to_owned);
            (cases, cmd)
        }
        Err(_) => (Vec::new(), None),
    };
    let order = ["postmaster_kill", "node_kill", "clean_stop", "switchover"];
    let mut all: Vec<Case> = earlier
        .into_iter()
        .filter(|e| !new.iter().any(|n| n.name == e.name))
        .collect();
    all.extend(new);
    all.sort_by_key(|c| order.iter().position(|o| *o == c.name));
    Ok((all, command))
}

fn case(name: &str, samples: &[Duration], t50: Option<f64>, t95: f64) -> Case {
    let Summary {
        n,
        p50_ms,
        p95_ms,
        max_ms,
    } = summarize(samples);
    Case {
        name: name.to_owned(),
        n,
        p50_ms,
        p95_ms,
        max_ms,
        target_p50_ms: t50,
        target_p95_ms: t95,
        met: p95_ms <= t95 && t50.is_none_or(|t| p50_ms <= t),
        samples_ms: samples
            .iter()
            .map(|d| (d.as_secs_f64() * 1e4).round() / 10.0)
            .collect(),
    }
}

/// Injects `fault` on the current leader, returns fault → new leader seen, then heals.
fn one(
    rt: &tokio::runtime::Runtime,
    c: &mut TestCluster,
    watch: &mut LeaderWatch,
    fault: Fault,
) -> anyhow::Result<Duration> {
    let leader = block_on(|| c.wait_leader("dca", |l| l.is_some(), Duration::from_secs(30)))
        .context("no leader before the fault")?;
    let name = leader.node;
    let t0 = Instant::now();
    {
        let node = c.node(&name);
        match fault {
            Fault::PostmasterKill => node.pg.kill9(),
            Fault::NodeKill => {
                node.mgr.kill9();
                node.pg.kill9();
            }
            Fault::CleanStop => {
                node.mgr.sigterm();
            }
        }
    }
    let limit = Duration::from_secs(LEASE_SECS * 3);
    let Some((_, at)) = rt.block_on(watch.next_leader_not("dca", &name, limit)) else {
        bail!(
            "{}: no new leader within {limit:?}\n{}",
            fault.name(),
            c.manager_logs(30)
        );
    };
    let took = at.saturating_duration_since(t0);
    // Heal: the node returns as a healthy follower before the next run.
    let node = c.node(&name);
    match fault {
        Fault::PostmasterKill => node.pg.start_again(),
        Fault::NodeKill => {
            node.pg.start_again();
            node.mgr.restart();
        }
        Fault::CleanStop => {
            node.mgr.wait_exit(Duration::from_secs(10));
            node.mgr.restart();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node
        .mgr
        .status()
        .is_some_and(|s| s["postgres"] == "primary" && s["etcd_session"] == true)
    {
        if Instant::now() > deadline {
            bail!(
                "{name} did not come back healthy\n{}",
                node.mgr.log_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let its status reach the peers, so every run starts from the same state.
    std::thread::sleep(Duration::from_millis(300));
    Ok(took)
}

fn write(report: &Report) -> anyhow::Result<()> {
    let dir = super::results_dir()?;
    std::fs::write(
        dir.join("failover.json"),
        serde_json::to_string_pretty(report)? + "\n",
    )?;
    let mut md = String::from(
        "| case | n | p50 ms | p95 ms | max ms | target | met |\n| --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for c in &report.cases {
        let target = match c.target_p50_ms {
            Some(t50) => format!("p50 ≤ {t50}, p95 ≤ {}", c.target_p95_ms),
            None => format!("p95 ≤ {}", c.target_p95_ms),
        };
        md += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            c.name,
            c.n,
            c.p50_ms,
            c.p95_ms,
            c.max_ms,
            target,
            if c.met { "yes" } else { "**no**" }
        );
    }
    md += &format!(
        "\nMachine: {}. Lease {} ms, refresh {} ms, 3 nodes, 3 etcd members.\n",
        report.machine, report.lease_duration_ms, report.lease_refresh_interval_ms
    );
    std::fs::write(dir.join("failover.md"), &md)?;
    print!("\n{md}");
    Ok(())
}
