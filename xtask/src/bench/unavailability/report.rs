//! `bench/results/unavailability.{json,md}`: per (system, fault) the unavailability's
//! percentiles and samples and the acknowledged writes lost per run; HARP ÷ Patroni per fault
//! against the targets, and the synchronous systems against "no write lost"; and for
//! one run per case (the median one) the writes acknowledged per 100 ms around the fault.
//! Every file holds exactly one invocation's runs (no merging of earlier results).

mod markdown;

use harp_tests::cluster::STREAMING_SETTINGS;
use serde::Serialize;

use super::haproxy::CHECKS;
use super::patroni_node::{DEFAULT, FAILOVER, TIGHT, Timings};
use super::probe::{BUCKET, RunResult};
use super::{Case, Fault, System, ms};
use crate::bench::stats::{nearest_rank, summarize};

#[derive(Serialize)]
struct Report {
    bench: &'static str,
    machine: String,
    #[serde(flatten)]
    provenance: crate::bench::Provenance,
    runs: usize,
    command: String,
    measure: &'static str,
    write_interval_ms: u64,
    /// `streaming`: every system ran on a primary and two streaming standbys.
    replication: &'static str,
    substrate: &'static str,
    settings: Settings,
    cases: Vec<CaseOut>,
    ratios: Vec<Ratio>,
    /// The synchronous systems against "no acknowledged write lost in any run".
    rpo: Vec<RpoCheck>,
    timelines: Vec<Timeline>,
    skipped: Vec<Skipped>,
}

#[derive(Serialize)]
struct Settings {
    harp: &'static str,
    harp_tight: &'static str,
    harp_sync: &'static str,
    patroni_default: Timings,
    patroni_tight: Timings,
    patroni_failover: Timings,
    haproxy_checks: &'static str,
    /// Every node's replication settings, the same on every system.
    postgres: Vec<(&'static str, &'static str)>,
}

#[derive(Serialize)]
struct CaseOut {
    system: String,
    fault: String,
    n: usize,
    p50_ms: f64,
    p95_ms: f64,
    max_ms: f64,
    samples_ms: Vec<f64>,
    /// Per run, the writer's failed requests and connects around the fault.
    errors: Vec<u32>,
    replication: &'static str,
    /// Whether commits waited for a synchronous standby.
    synchronous: bool,
    /// Per run, the acknowledged writes missing on the primary after it.
    rpo_lost_writes: Vec<u64>,
    /// Runs that could not be measured, with why (they count in no statistic).
    failures: Vec<String>,
}

#[derive(Serialize)]
struct RpoCheck {
    system: &'static str,
    fault: &'static str,
    runs: usize,
    lost: u64,
    target: &'static str,
    met: bool,
}

#[derive(Serialize)]
struct Ratio {
    fault: &'static str,
    harp: &'static str,
    patroni: &'static str,
    /// HARP's p50 ÷ Patroni's p50.
    ratio: f64,
    target: Option<f64>,
    met: Option<bool>,
}

#[derive(Serialize)]
struct Timeline {
    system: String,
    fault: String,
    bucket_ms: u64,
    fault_at_ms: f64,
    recovered_at_ms: f64,
    unavailable_ms: f64,
    acks: Vec<u32>,
}

#[derive(Serialize)]
struct Skipped {
    system: &'static str,
    reason: String,
}

const SUBSTRATE: &str = "every system: a primary and 2 streaming standbys on this machine, with \
                         3 etcd members; HARP's standbys made with pg_basebackup -R, Patroni's by \
                         Patroni; every cluster built afresh for each run";

const MEASURE: &str = "longest gap between two acknowledged writes (one INSERT every 10 ms, \
                       reconnecting after any error) from 1 s before the fault until writes \
                       have flowed for 3 s with no gap over 500 ms after it";

/// The comparisons the issue sets: HARP and Patroni at their defaults (Patroni also failing
/// over a crash at once), and at their tightest.
const PAIRS: [(System, System); 11] = [
    (System::HarpUserspace, System::PatroniDefault),
    (System::HarpPgbouncer, System::PatroniDefault),
    (System::HarpKernel, System::PatroniDefault),
    (System::HarpUserspaceSync, System::PatroniDefault),
    (System::HarpKernelSync, System::PatroniDefault),
    (System::HarpUserspace, System::PatroniFailover),
    (System::HarpKernel, System::PatroniFailover),
    (System::HarpUserspaceSync, System::PatroniFailover),
    (System::HarpKernelSync, System::PatroniFailover),
    (System::HarpUserspaceTight, System::PatroniTight),
    (System::HarpKernelTight, System::PatroniTight),
];

/// The target for HARP ÷ Patroni: crash ≤ 1/10; node loss ≤ 1/4 at the defaults and
/// ≤ 1/8 at the tightest settings; switchover ≤ 1/10.
fn target(fault: Fault, patroni: System) -> Option<f64> {
    match (fault, patroni) {
        (Fault::PostgresCrash, _) => Some(0.1),
        (Fault::NodeLoss, System::PatroniTight) => Some(0.125),
        (Fault::NodeLoss, _) => Some(0.25),
        (Fault::Switchover, _) => Some(0.1),
    }
}

fn case_out(c: &Case) -> CaseOut {
    let samples: Vec<_> = c.runs.iter().map(|r| r.gap).collect();
    let s = summarize(&samples);
    CaseOut {
        system: c.system.name().into(),
        fault: c.fault.name().into(),
        n: s.n,
        p50_ms: s.p50_ms,
        p95_ms: s.p95_ms,
        max_ms: s.max_ms,
        samples_ms: samples.into_iter().map(ms).collect(),
        errors: c.runs.iter().map(|r| r.errors).collect(),
        replication: "streaming",
        synchronous: c.system.is_sync(),
        rpo_lost_writes: c.runs.iter().map(|r| r.lost).collect(),
        failures: c.failures.clone(),
    }
}

/// The timeline of the run whose unavailability is the median (nearest rank).
fn timeline(c: &Case) -> Option<Timeline> {
    let mut gaps: Vec<f64> = c.runs.iter().map(|r| ms(r.gap)).collect();
    gaps.sort_by(f64::total_cmp);
    let median = nearest_rank(&gaps, 0.5);
    let r: &RunResult = c.runs.iter().find(|r| ms(r.gap) == median)?;
    Some(Timeline {
        system: c.system.name().into(),
        fault: c.fault.name().into(),
        bucket_ms: BUCKET.as_millis() as u64,
        fault_at_ms: ms(r.fault_at),
        recovered_at_ms: ms(r.recovered_at),
        unavailable_ms: ms(r.gap),
        acks: r.timeline.clone(),
    })
}

/// Writes this invocation's results (and only them).
pub fn write(
    runs: usize,
    cases: &[Case],
    skipped: &[(System, String)],
    command: String,
) -> anyhow::Result<()> {
    let dir = super::super::results_dir()?;
    let outs: Vec<CaseOut> = cases.iter().map(case_out).collect();
    let timelines: Vec<Timeline> = cases.iter().filter_map(timeline).collect();
    let p50 = |s: System, f: Fault| {
        outs.iter()
            .find(|c| c.system == s.name() && c.fault == f.name() && c.n > 0)
            .map(|c| c.p50_ms)
    };
    let mut ratios = Vec::new();
    for fault in [Fault::PostgresCrash, Fault::NodeLoss, Fault::Switchover] {
        for (h, p) in PAIRS {
            let (Some(hv), Some(pv)) = (p50(h, fault), p50(p, fault)) else {
                continue;
            };
            let ratio = if pv > 0.0 { hv / pv } else { f64::INFINITY };
            let target = target(fault, p);
            ratios.push(Ratio {
                fault: fault.name(),
                harp: h.name(),
                patroni: p.name(),
                ratio: (ratio * 1e4).round() / 1e4,
                target,
                met: target.map(|t| ratio <= t),
            });
        }
    }
    let rpo = cases
        .iter()
        .filter(|c| c.system.is_sync())
        .map(|c| {
            let lost = c.runs.iter().map(|r| r.lost).sum();
            RpoCheck {
                system: c.system.name(),
                fault: c.fault.name(),
                runs: c.runs.len(),
                lost,
                target: "0 acknowledged writes lost in every run",
                met: lost == 0 && !c.runs.is_empty() && c.failures.is_empty(),
            }
        })
        .collect();
    let report = Report {
        bench: "unavailability",
        machine: super::super::machine(),
        provenance: crate::bench::provenance(),
        runs,
        command,
        measure: MEASURE,
        write_interval_ms: 10,
        replication: "streaming",
        substrate: SUBSTRATE,
        settings: Settings {
            harp: "leader_lease_duration 6 s, lease_refresh_interval 2000 ms (defaults)",
            harp_tight: "leader_lease_duration 2 s, lease_refresh_interval 500 ms",
            harp_sync: "the defaults with cluster.synchronous_mode: on",
            patroni_default: DEFAULT,
            patroni_tight: TIGHT,
            patroni_failover: FAILOVER,
            haproxy_checks: CHECKS,
            postgres: STREAMING_SETTINGS.to_vec(),
        },
        cases: outs,
        ratios,
        rpo,
        timelines,
        skipped: skipped
            .iter()
            .map(|(s, r)| Skipped {
                system: s.name(),
                reason: r.clone(),
            })
            .collect(),
    };
    std::fs::write(
        dir.join("unavailability.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    let md = markdown::markdown(&report);
    std::fs::write(dir.join("unavailability.md"), &md)?;
    print!("\n{md}");
    Ok(())
}
