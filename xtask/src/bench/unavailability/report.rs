//! `bench/results/unavailability.{json,md}`: per (system, fault) the unavailability's
//! percentiles and samples; HARP ÷ Patroni per fault against the targets; and for one
//! run per case (the median one) the writes acknowledged per 100 ms around the fault.

use serde::{Deserialize, Serialize};

use super::haproxy::CHECKS;
use super::patroni_node::{DEFAULT, TIGHT, Timings};
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
    settings: Settings,
    cases: Vec<CaseOut>,
    ratios: Vec<Ratio>,
    timelines: Vec<Timeline>,
    skipped: Vec<Skipped>,
}

#[derive(Serialize)]
struct Settings {
    harp: &'static str,
    harp_tight: &'static str,
    patroni_default: Timings,
    patroni_tight: Timings,
    haproxy_checks: &'static str,
}

#[derive(Serialize, Deserialize)]
struct CaseOut {
    system: String,
    fault: String,
    n: usize,
    p50_ms: f64,
    p95_ms: f64,
    max_ms: f64,
    samples_ms: Vec<f64>,
    /// Per run, the writer's failed requests and connects around the fault.
    #[serde(default)]
    errors: Vec<u32>,
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

#[derive(Serialize, Deserialize)]
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

const MEASURE: &str = "longest gap between two acknowledged writes (one INSERT every 10 ms, \
                       reconnecting after any error) from 1 s before the fault until writes \
                       have flowed for 3 s with no gap over 500 ms after it";

/// The comparisons the issue sets: HARP and Patroni at their defaults, and at their tightest.
const PAIRS: [(System, System); 5] = [
    (System::HarpUserspace, System::PatroniDefault),
    (System::HarpPgbouncer, System::PatroniDefault),
    (System::HarpKernel, System::PatroniDefault),
    (System::HarpUserspaceTight, System::PatroniTight),
    (System::HarpKernelTight, System::PatroniTight),
];

/// The target for HARP ÷ Patroni: crash ≤ 1/10; node loss ≤ 1/4 at the defaults and
/// ≤ 1/8 at the tightest settings; none for a switchover.
fn target(fault: Fault, patroni: System) -> Option<f64> {
    match (fault, patroni) {
        (Fault::PostgresCrash, _) => Some(0.1),
        (Fault::NodeLoss, System::PatroniTight) => Some(0.125),
        (Fault::NodeLoss, _) => Some(0.25),
        (Fault::Switchover, _) => None,
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

/// Writes the results; a `partial` run (some faults or systems only) keeps the other cases of
/// the last run, so the comparison stays whole.
pub fn write(
    runs: usize,
    cases: &[Case],
    skipped: &[(System, String)],
    mut command: String,
    partial: bool,
) -> anyhow::Result<()> {
    let dir = super::super::results_dir()?;
    let mut outs: Vec<CaseOut> = cases.iter().map(case_out).collect();
    let mut timelines: Vec<Timeline> = cases.iter().filter_map(timeline).collect();
    if partial && let Ok(bytes) = std::fs::read(dir.join("unavailability.json")) {
        let earlier: serde_json::Value = serde_json::from_slice(&bytes)?;
        let measured = |s: &str, f: &str| outs.iter().any(|c| c.system == s && c.fault == f);
        let keep_cases: Vec<CaseOut> =
            serde_json::from_value::<Vec<CaseOut>>(earlier["cases"].clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|c| !measured(&c.system, &c.fault))
                .collect();
        let keep_timelines: Vec<Timeline> =
            serde_json::from_value::<Vec<Timeline>>(earlier["timelines"].clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|t| !measured(&t.system, &t.fault))
                .collect();
        outs.extend(keep_cases);
        timelines.extend(keep_timelines);
        outs.sort_by_key(|c| order(&c.system, &c.fault));
        timelines.sort_by_key(|t| order(&t.system, &t.fault));
        // Every run since the last whole one, so each kept case has its command.
        if let Some(before) = earlier["command"].as_str() {
            command = format!("{before}; {command}");
        }
    }
    let p50 = |s: System, f: Fault| {
        outs.iter()
            .find(|c| c.system == s.name() && c.fault == f.name())
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
    let report = Report {
        bench: "unavailability",
        machine: super::super::machine(),
        provenance: crate::bench::provenance(),
        runs,
        command,
        measure: MEASURE,
        write_interval_ms: 10,
        settings: Settings {
            harp: "leader_lease_duration 6 s, lease_refresh_interval 2000 ms (defaults)",
            harp_tight: "leader_lease_duration 2 s, lease_refresh_interval 500 ms",
            patroni_default: DEFAULT,
            patroni_tight: TIGHT,
            haproxy_checks: CHECKS,
        },
        cases: outs,
        ratios,
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
    let md = markdown(&report);
    std::fs::write(dir.join("unavailability.md"), &md)?;
    print!("\n{md}");
    Ok(())
}

/// A case's place in the report: systems, then faults, in their declared order.
fn order(system: &str, fault: &str) -> (usize, usize) {
    let pos = |list: &str, x: &str| list.split(',').position(|n| n == x).unwrap_or(usize::MAX);
    (pos(System::ALL, system), pos(Fault::ALL, fault))
}

fn markdown(r: &Report) -> String {
    let mut md = String::from(
        "| system | fault | n | p50 ms | p95 ms | max ms | client errors per run |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for c in &r.cases {
        let errors = match c.errors.is_empty() {
            true => "–".to_owned(),
            false => c
                .errors
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" "),
        };
        md += &format!(
            "| {} | {} | {} | {} | {} | {} | {errors} |\n",
            c.system, c.fault, c.n, c.p50_ms, c.p95_ms, c.max_ms
        );
    }
    md += "\n| fault | HARP | Patroni + HAProxy | HARP ÷ Patroni (p50) | target | met |\n\
           | --- | --- | --- | --- | --- | --- |\n";
    for x in &r.ratios {
        let (target, met) = match (x.target, x.met) {
            (Some(t), Some(m)) => (format!("≤ {t}"), if m { "yes" } else { "**no**" }),
            _ => ("–".into(), "–"),
        };
        md += &format!(
            "| {} | {} | {} | {} | {target} | {met} |\n",
            x.fault, x.harp, x.patroni, x.ratio
        );
    }
    for s in &r.skipped {
        md += &format!("\nSkipped {}: {}.\n", s.system, s.reason);
    }
    let t = |t: &Timings| {
        format!(
            "ttl {}, loop_wait {}, retry_timeout {}",
            t.ttl, t.loop_wait, t.retry_timeout
        )
    };
    md += &format!(
        "\nUnavailability: the {}. HARP: {}; tight: {}. Patroni 4.1 default: {}; tight (the \
         least it accepts): {}. HAProxy (mode tcp, `option httpchk GET /primary`): \
         `default-server {}`. Runs per case: {}; timelines (acks per {} ms, median run) in \
         the JSON.\n\nMachine: {}. Command: `{}`.\n",
        r.measure,
        r.settings.harp,
        r.settings.harp_tight,
        t(&r.settings.patroni_default),
        t(&r.settings.patroni_tight),
        r.settings.haproxy_checks,
        r.runs,
        BUCKET.as_millis(),
        r.machine,
        r.command
    );
    md
}
