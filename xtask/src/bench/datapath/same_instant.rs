//! The kernel path against direct at the same instant: two pgbench at once, one inside the
//! steered cgroup, one outside, each with half the clients. The kernel path costs one map lookup
//! per connect(), far below how much this machine's speed swings from one run to the next, so
//! back-to-back runs cannot resolve it; two runs at once see the same machine.

use anyhow::{Context, bail};
use serde::Serialize;

use super::peers::Peer;
use super::report::median;
use super::{PathKind, pgbench, round_to};
use crate::bench::datapath::Workload;

/// One same-instant pair.
#[derive(Debug, Serialize)]
pub struct PairRun {
    pub round: usize,
    pub workload: &'static str,
    pub direct_tps: f64,
    pub kernel_tps: f64,
    /// `kernel_tps / direct_tps`.
    pub ratio: f64,
    /// Connects connect4 steered during the pair (the kernel side really went the kernel way).
    pub steered: u64,
}

/// The pairs of one workload, summed up.
#[derive(Debug, Serialize)]
pub struct PairCase {
    pub workload: &'static str,
    /// Median over rounds of `kernel_tps / direct_tps`.
    pub ratio: f64,
    pub ratio_runs: Vec<f64>,
    pub low: f64,
    pub high: f64,
    pub rounds: usize,
    /// The command line of each of the two pgbench.
    pub command: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub met: Option<bool>,
}

/// Runs `w` through `direct` and `kernel` (the steered agent-kernel path) at once.
pub fn run(
    round: usize,
    w: Workload,
    secs: u64,
    direct: &Peer,
    kernel: &Peer,
) -> anyhow::Result<PairRun> {
    let Some(cgroup) = kernel.cgroup() else {
        bail!("the kernel side of a same-instant pair must be the steered agent-kernel path");
    };
    let before = kernel.kernel_counters()?;
    let (d, k) = pgbench::run_side_by_side(
        w,
        secs,
        (direct.port(), None),
        (kernel.port(), Some(cgroup)),
    )
    .with_context(|| format!("same-instant pair, {} round {round}", w.name()))?;
    let grown = kernel.check_kernel_run(before)?;
    if d.tps <= 0.0 {
        bail!(
            "direct made no transactions beside agent-kernel ({} round {round})",
            w.name()
        );
    }
    Ok(PairRun {
        round,
        workload: w.name(),
        direct_tps: round_to(d.tps, 1),
        kernel_tps: round_to(k.tps, 1),
        ratio: round_to(k.tps / d.tps, 3),
        steered: grown.map_or(0, |c| c.steered),
    })
}

/// One line for the progress output.
pub fn summary(p: &PairRun) -> String {
    format!(
        "{:<8} same instant: direct {:.1} tps, agent-kernel {:.1} tps → {:.3}",
        p.workload, p.direct_tps, p.kernel_tps, p.ratio
    )
}

/// Per workload, in `workloads`' order: the median pair ratio and its range.
pub fn summarize(runs: &[PairRun], workloads: &[Workload], secs: u64) -> Vec<PairCase> {
    workloads
        .iter()
        .filter_map(|&w| {
            let ratios: Vec<f64> = runs
                .iter()
                .filter(|r| r.workload == w.name())
                .map(|r| r.ratio)
                .collect();
            let ratio = round_to(median(&ratios)?, 3);
            let target = PathKind::AgentKernel.target(w);
            Some(PairCase {
                workload: w.name(),
                ratio,
                low: ratios.iter().copied().fold(f64::MAX, f64::min),
                high: ratios.iter().copied().fold(f64::MIN, f64::max),
                rounds: ratios.len(),
                ratio_runs: ratios,
                command: pgbench::half_command_line(w, secs),
                target,
                met: target.map(|t| ratio >= t),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(round: usize, w: Workload, ratio: f64) -> PairRun {
        PairRun {
            round,
            workload: w.name(),
            direct_tps: 100.0,
            kernel_tps: 100.0 * ratio,
            ratio,
            steered: 1,
        }
    }

    #[test]
    fn summary_takes_the_median_pair_per_workload_against_the_target() {
        let runs = [
            pair(1, Workload::Connect, 0.90),
            pair(1, Workload::Select, 1.01),
            pair(2, Workload::Connect, 1.00),
            pair(2, Workload::Select, 0.97),
            pair(3, Workload::Connect, 1.10),
            pair(3, Workload::Select, 0.95),
        ];
        let s = summarize(&runs, &[Workload::Select, Workload::Connect], 4);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].workload, s[0].ratio, s[0].met),
            ("select", 0.97, Some(false))
        );
        assert_eq!((s[0].low, s[0].high, s[0].rounds), (0.95, 1.01, 3));
        assert_eq!(
            (s[1].workload, s[1].ratio, s[1].met),
            ("connect", 1.0, Some(true))
        );
        assert!(s[1].command.contains("-C -c 2"));
        assert!(summarize(&runs, &[Workload::Bulk], 4).is_empty());
    }
}
