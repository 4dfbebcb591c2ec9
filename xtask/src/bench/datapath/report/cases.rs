//! The per-case summary of the runs: medians over rounds, ratios to direct, targets.

use serde::Serialize;

use super::super::workload::Workload;
use super::super::{PathKind, round_to};
use super::Run;

#[derive(Serialize)]
pub(super) struct Case {
    pub(super) path: &'static str,
    pub(super) workload: &'static str,
    /// Median over rounds of transactions per second (bulk: transfers per second).
    pub(super) tps: f64,
    /// Bulk: median over rounds of the MB (10⁶ bytes) per second the client received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) mb_per_s: Option<f64>,
    /// Median over rounds of this path's run ÷ direct's run of the same round (tps; bulk: MB/s);
    /// `null` if direct was not measured.
    pub(super) ratio_to_direct: Option<f64>,
    /// The median run ÷ direct's median run (what `ratio_to_direct` was before it paired rounds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ratio_of_medians: Option<f64>,
    /// agent-kernel: the median ratio of the same-instant pairs (`same_instant`), on which its
    /// target is judged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) same_instant_ratio: Option<f64>,
    /// Median of pgbench's "latency average" (bulk: wall time per transfer).
    pub(super) latency_ms_avg: Option<f64>,
    /// Median of pgbench's "average connection time" (printed for `-C`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) connection_ms_avg: Option<f64>,
    /// Median over rounds of the CPU seconds the path's process (harp-agent, haproxy, pgbouncer,
    /// socat) used during a run; absent for `direct`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) proxy_cpu_s: Option<f64>,
    /// Median over rounds of `proxy_cpu_s` per transaction (bulk: per transfer), in µs; absent
    /// for `direct`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) proxy_cpu_us_per_tx: Option<f64>,
    /// Bulk: median over rounds of `proxy_cpu_s` per GB (10⁹ bytes) moved; absent for `direct`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) proxy_cpu_s_per_gb: Option<f64>,
    pub(super) runs: usize,
    pub(super) tps_runs: Vec<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) mb_per_s_runs: Vec<f64>,
    pub(super) latency_ms_runs: Vec<f64>,
    /// Spread over rounds of what `ratio_to_direct` compares (tps; bulk: MB/s): (max − min) /
    /// median, in %.
    pub(super) spread_pct: Option<f64>,
    /// Per round, the ratio to direct's run of the same round (the rounds interleave paths).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) ratio_runs: Vec<f64>,
    /// Minimum ratio to direct (agent rows with a target only): of `same_instant_ratio` where
    /// measured, else of `ratio_to_direct`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) target: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) met: Option<bool>,
}

/// One run of a workload through a path, in the order they ran.
pub(crate) fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    })
}

/// (max − min) / median of `v`, in %; `None` if empty or the median is 0.
fn spread_pct(v: &[f64]) -> Option<f64> {
    let m = median(v).filter(|m| *m > 0.0)?;
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    Some(round_to((hi - lo) / m * 100.0, 1))
}

pub(super) fn cases(paths: &[PathKind], workloads: &[Workload], runs: &[Run]) -> Vec<Case> {
    let mut cases = Vec::new();
    for &w in workloads {
        let of = |p: PathKind| -> Vec<&Run> {
            runs.iter()
                .filter(|r| r.workload == w.name() && r.path == p.name())
                .collect()
        };
        // What `ratio_to_direct` compares: tps, or MB/s for bulk.
        let compared = |rs: &[&Run]| -> Option<f64> {
            let v: Vec<f64> = if w.is_pgbench() {
                rs.iter().map(|r| r.tps).collect()
            } else {
                rs.iter().filter_map(|r| r.mb_per_s).collect()
            };
            median(&v)
        };
        let direct_runs = of(PathKind::Direct);
        let direct = compared(&direct_runs);
        for &p in paths {
            let rs = of(p);
            if rs.is_empty() {
                continue;
            }
            let median_of = |f: fn(&Run) -> Option<f64>| {
                median(&rs.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
            };
            let tps_runs: Vec<f64> = rs.iter().map(|r| r.tps).collect();
            let mb_per_s_runs: Vec<f64> = rs.iter().filter_map(|r| r.mb_per_s).collect();
            let latency_ms_runs: Vec<f64> = rs.iter().filter_map(|r| r.latency_ms_avg).collect();
            let ratio_of_medians = direct
                .zip(compared(&rs))
                .filter(|(d, _)| *d > 0.0)
                .map(|(d, v)| round_to(v / d, 3));
            let target = p.target(w);
            let value = |r: &Run| {
                if w.is_pgbench() {
                    Some(r.tps)
                } else {
                    r.mb_per_s
                }
            };
            let values: Vec<f64> = rs.iter().filter_map(|r| value(r)).collect();
            let ratio_runs: Vec<f64> = rs
                .iter()
                .filter_map(|r| {
                    let d = direct_runs.iter().find(|d| d.round == r.round)?;
                    let (v, d) = (value(r)?, value(d)?);
                    (d > 0.0).then(|| round_to(v / d, 3))
                })
                .collect();
            // Paired by round: a round's drift hits both runs of the ratio.
            let ratio = median(&ratio_runs)
                .map(|r| round_to(r, 3))
                .or(ratio_of_medians);
            cases.push(Case {
                path: p.name(),
                workload: w.name(),
                tps: round_to(median(&tps_runs).unwrap_or(0.0), w.tps_digits()),
                mb_per_s: median(&mb_per_s_runs).map(|m| round_to(m, 1)),
                ratio_to_direct: ratio,
                ratio_of_medians,
                same_instant_ratio: None,
                latency_ms_avg: median(&latency_ms_runs).map(|l| round_to(l, 3)),
                connection_ms_avg: median_of(|r| r.connection_ms_avg).map(|l| round_to(l, 3)),
                proxy_cpu_s: median_of(|r| r.proxy_cpu_s).map(|s| round_to(s, 2)),
                proxy_cpu_us_per_tx: median_of(|r| r.proxy_cpu_us_per_tx).map(|u| round_to(u, 1)),
                proxy_cpu_s_per_gb: median_of(|r| r.proxy_cpu_s_per_gb).map(|s| round_to(s, 3)),
                runs: rs.len(),
                tps_runs,
                mb_per_s_runs,
                latency_ms_runs,
                spread_pct: spread_pct(&values),
                ratio_runs,
                target,
                met: target.and_then(|t| ratio.map(|r| r >= t)),
            });
        }
    }
    cases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn spread_is_range_over_median() {
        assert_eq!(spread_pct(&[90.0, 100.0, 110.0]), Some(20.0));
        assert_eq!(spread_pct(&[5.0]), Some(0.0));
        assert_eq!(spread_pct(&[]), None);
    }
}
