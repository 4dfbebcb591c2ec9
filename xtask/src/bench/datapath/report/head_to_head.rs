//! harp-agent's userspace proxy against each other proxy, round by round: in every round both
//! ran the same workload minutes apart at most, so their ratio is paired like the ratios to
//! direct are.

use serde::Serialize;

use super::{Run, median};
use crate::bench::datapath::{PathKind, Workload, round_to};

/// The proxies agent-userspace is compared with.
const PEERS: [PathKind; 3] = [PathKind::Haproxy, PathKind::Pgbouncer, PathKind::Socat];
/// agent-userspace's target against every peer on `select`: at least as fast.
const SELECT_TARGET: f64 = 1.0;

#[derive(Debug, Serialize)]
pub struct HeadToHead {
    pub path: &'static str,
    pub peer: &'static str,
    pub workload: &'static str,
    /// Median over rounds of agent-userspace's run ÷ the peer's run (tps; bulk: MB/s).
    pub ratio: f64,
    pub ratio_runs: Vec<f64>,
    /// Rounds in which agent-userspace was at least as fast.
    pub wins: usize,
    pub rounds: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub met: Option<bool>,
}

impl Run {
    /// What runs are compared by: MB/s for bulk, else tps.
    fn value(&self) -> f64 {
        self.mb_per_s.unwrap_or(self.tps)
    }
}

/// agent-userspace against each peer that ran, per workload.
pub fn build(paths: &[PathKind], workloads: &[Workload], runs: &[Run]) -> Vec<HeadToHead> {
    let ours = PathKind::AgentUserspace;
    if !paths.contains(&ours) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for &w in workloads {
        for peer in PEERS.into_iter().filter(|p| paths.contains(p)) {
            let of = |p: PathKind, round: usize| {
                runs.iter()
                    .find(|r| r.path == p.name() && r.workload == w.name() && r.round == round)
            };
            let ratios: Vec<f64> = runs
                .iter()
                .filter(|r| r.path == ours.name() && r.workload == w.name())
                .filter_map(|r| {
                    let theirs = of(peer, r.round)?.value();
                    (theirs > 0.0).then(|| round_to(r.value() / theirs, 3))
                })
                .collect();
            let Some(ratio) = median(&ratios) else {
                continue;
            };
            let ratio = round_to(ratio, 3);
            let target = (w == Workload::Select).then_some(SELECT_TARGET);
            out.push(HeadToHead {
                path: ours.name(),
                peer: peer.name(),
                workload: w.name(),
                ratio,
                wins: ratios.iter().filter(|&&r| r >= 1.0).count(),
                rounds: ratios.len(),
                ratio_runs: ratios,
                target,
                met: target.map(|t| ratio >= t),
            });
        }
    }
    out
}

/// Whether agent-userspace met its select target against every peer; `None` if none was run.
pub fn select_met(h: &[HeadToHead]) -> Option<bool> {
    let select: Vec<bool> = h
        .iter()
        .filter(|x| x.workload == Workload::Select.name())
        .filter_map(|x| x.met)
        .collect();
    (!select.is_empty()).then(|| select.iter().all(|&m| m))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bench::datapath::workload::Outcome;

    fn run(round: usize, w: Workload, p: PathKind, tps: f64) -> Run {
        let out = Outcome {
            tps,
            latency_ms: None,
            connection_ms: None,
            transactions: None,
            bytes: None,
            mb_per_s: None,
        };
        Run::new(round, w, p, &out, None, Duration::from_secs(1))
    }

    #[test]
    fn ratios_are_paired_by_round_and_judged_on_select_only() {
        use PathKind::*;
        let s = Workload::Select;
        let c = Workload::Connect;
        let runs = vec![
            run(1, s, AgentUserspace, 100.0),
            run(1, s, Pgbouncer, 110.0),
            run(1, s, Haproxy, 90.0),
            run(2, s, AgentUserspace, 200.0),
            run(2, s, Pgbouncer, 190.0),
            run(2, s, Haproxy, 180.0),
            run(3, s, AgentUserspace, 150.0),
            run(3, s, Pgbouncer, 140.0),
            run(3, s, Haproxy, 160.0),
            run(1, c, AgentUserspace, 10.0),
            run(1, c, Pgbouncer, 100.0),
        ];
        let paths = [Direct, AgentUserspace, Haproxy, Pgbouncer];
        let h = build(&paths, &[s, c], &runs);
        let find = |peer: PathKind, w: Workload| {
            h.iter()
                .find(|x| x.peer == peer.name() && x.workload == w.name())
                .unwrap()
        };
        let pgb = find(Pgbouncer, s);
        // Per round 0.909, 1.053, 1.071: two wins, median above 1 although round 1 lost.
        assert_eq!((pgb.ratio, pgb.wins, pgb.rounds), (1.053, 2, 3));
        assert_eq!(pgb.met, Some(true));
        let ha = find(Haproxy, s);
        assert_eq!((ha.ratio, ha.wins), (1.111, 2));
        let conn = find(Pgbouncer, c);
        assert_eq!((conn.ratio, conn.target, conn.met), (0.1, None, None));
        assert!(h.iter().all(|x| x.peer != Socat.name()));
        assert_eq!(select_met(&h), Some(true));
        let lost = build(&paths, &[s], &runs[..3]);
        assert_eq!(select_met(&lost), Some(false));
        assert!(build(&[Direct, Haproxy], &[s], &runs).is_empty());
    }
}
