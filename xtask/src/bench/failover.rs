//! `cargo xtask bench failover`: how long from a fault on the leader to a new leader key in
//! etcd, seen by a watch (what every agent sees). Three faults, `runs` each, on two clusters
//! alike but for their etcd link — plaintext, and TLS with client certificates and a
//! least-privilege user per manager — run by run in turn, so that the cost of security is a
//! ratio measured in one run.

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

/// TLS + users may cost the postmaster_kill p50 at most this factor of plaintext's.
const TLS_P50_RATIO_TARGET: f64 = 1.2;

#[derive(Serialize, Deserialize)]
struct Case {
    name: String,
    /// The managers' etcd link: TLS with client certificates and etcd users (`true`), or
    /// plaintext. Results from before this field were plaintext.
    #[serde(default)]
    etcd_tls: bool,
    /// For a TLS case: its p50 ÷ the plaintext p50 of the same fault in the same run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p50_vs_plaintext: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_p50_vs_plaintext: Option<f64>,
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

fn cluster(name: &str, secure: bool) -> TestCluster {
    let mut b = TestCluster::builder(name)
        .lease_secs(LEASE_SECS)
        .refresh_ms(2000);
    for n in ["n1", "n2", "n3"] {
        b = b.node(n, "dca", 100);
    }
    if secure {
        b = b.secure_etcd();
    }
    b.start()
}

pub fn run(runs: usize, only: Option<&str>) -> anyhow::Result<()> {
    let mut c = cluster("bench", false);
    let mut secure = cluster("benchtls", true);
    // The watches run in the background on a runtime that lives as long as the bench.
    let rt = tokio::runtime::Runtime::new()?;
    let mut watch = rt.block_on(async { LeaderWatch::start(&c.client().await, "bench").await });
    let mut secure_watch =
        rt.block_on(async { LeaderWatch::start(&secure.client().await, "benchtls").await });
    let mut cases = Vec::new();
    let faults: Vec<Fault> = [Fault::PostmasterKill, Fault::NodeKill, Fault::CleanStop]
        .into_iter()
        .filter(|f| only.is_none_or(|o| o == f.name()))
        .collect();
    for fault in faults {
        let (mut plain, mut tls) = (Vec::new(), Vec::new());
        for i in 0..runs {
            // In turn, each first every other run: the machine's drift falls on both.
            for tls_now in [i % 2 == 1, i % 2 == 0] {
                let (cl, w, samples) = match tls_now {
                    true => (&mut secure, &mut secure_watch, &mut tls),
                    false => (&mut c, &mut watch, &mut plain),
                };
                let took = one(&rt, cl, w, fault)?;
                println!(
                    "{} ({}) run {}/{}: {:.1} ms",
                    fault.name(),
                    if tls_now { "etcd TLS" } else { "plaintext" },
                    i + 1,
                    runs,
                    took.as_secs_f64() * 1e3
                );
                samples.push(took);
            }
        }
        let (t50, t95) = fault.targets();
        let plain = case(fault.name(), &plain, t50, t95);
        let mut tls = case(fault.name(), &tls, t50, t95);
        tls.etcd_tls = true;
        let ratio = tls.p50_ms / plain.p50_ms.max(f64::MIN_POSITIVE);
        tls.p50_vs_plaintext = Some((ratio * 1000.0).round() / 1000.0);
        if fault == Fault::PostmasterKill {
            tls.target_p50_vs_plaintext = Some(TLS_P50_RATIO_TARGET);
            tls.met &= ratio <= TLS_P50_RATIO_TARGET;
        }
        cases.push(plain);
        cases.push(tls);
    }
    drop(secure_watch);
    drop(secure);
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
    all.sort_by_key(|c| (order.iter().position(|o| *o == c.name), c.etcd_tls));
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
        etcd_tls: false,
        p50_vs_plaintext: None,
        target_p50_vs_plaintext: None,
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
        "| case | etcd link | n | p50 ms | p95 ms | max ms | p50 ÷ plaintext | target | met |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for c in &report.cases {
        let mut target = match c.target_p50_ms {
            Some(t50) => format!("p50 ≤ {t50}, p95 ≤ {}", c.target_p95_ms),
            None => format!("p95 ≤ {}", c.target_p95_ms),
        };
        if let Some(r) = c.target_p50_vs_plaintext {
            target += &format!(", p50 ≤ {r} × plaintext");
        }
        md += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            c.name,
            if c.etcd_tls {
                "TLS + users"
            } else {
                "plaintext"
            },
            c.n,
            c.p50_ms,
            c.p95_ms,
            c.max_ms,
            c.p50_vs_plaintext.map_or("—".to_owned(), |r| r.to_string()),
            target,
            if c.met { "yes" } else { "**no**" }
        );
    }
    md += &format!(
        "\nMachine: {}. Lease {} ms, refresh {} ms, 3 nodes, 3 etcd members; multi-writer \
         clusters (independent nodes). Plaintext and TLS clusters measured run by run in turn; \
         TLS: etcd with `--client-cert-auth` and authentication, each manager its own user.\n",
        report.machine, report.lease_duration_ms, report.lease_refresh_interval_ms
    );
    std::fs::write(dir.join("failover.md"), &md)?;
    print!("\n{md}");
    Ok(())
}
