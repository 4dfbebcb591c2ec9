//! The lab's proofs over a recorded [`History`]: one write target per location (no split
//! brain, no write accepted without a lease), no acknowledged write missing from the current
//! primary, and how fast every client recovers. Every host shares one clock, so server, client and observer times compare
//! directly.
//!
//! **Split brain**: in one location, the accepted writes are grouped by `(node, token)` (the
//! token of the node's tenure covering the write, else of its nearest tenure); the
//! `[first, last]` server-time intervals of two groups must not intersect. Any intersection
//! means two write targets took writes interleaved in time (X at t1, Y at t2, X at t3) — the
//! histories diverged — so there is no tolerance on it.

mod rules;
mod tenure;
#[cfg(test)]
mod tests;
mod timeline;

use serde::Serialize;

use crate::lab::history::{History, Outcome, WriteRecord};

pub use tenure::{Accepted, Tenure, accepted, tenures};
pub use timeline::timeline;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckParams {
    /// A write accepted this far outside its node's tenures is "accepted without a lease".
    pub stale_tolerance_ms: f64,
    /// Slack for `send_ms <= server_ms <= ack_ms` (timestamps are rounded to µs or ms).
    pub clock_tolerance_ms: f64,
}

impl CheckParams {
    /// Stale tolerance: 1000 ms, at most half the lease. The observer learns of a lease change
    /// through its own etcd watch, a few ms after the agents on a healthy bridge and up to a
    /// few hundred ms under injected delay or loss; the tolerance must absorb that. But an
    /// agent that keeps routing to a node after its lease is gone does so for up to a lease
    /// period (its fail-closed deadline), which half a lease still catches.
    pub fn for_history(h: &History) -> Self {
        let half_lease = if h.lease_ms == 0 {
            f64::INFINITY
        } else {
            h.lease_ms as f64 / 2.0
        };
        CheckParams {
            stale_tolerance_ms: half_lease.min(1000.0),
            clock_tolerance_ms: 2.0,
        }
    }
}

/// The `[first, last]` acceptance interval of one `(node, token)` group in a location.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupSpan {
    pub location: String,
    pub node: String,
    pub token: Option<i64>,
    pub first_ms: f64,
    pub last_ms: f64,
    pub writes: usize,
}

/// Recovery from one `converge_from` moment: per client, the time from it to the ack of the
/// client's first write sent at or after it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Convergence {
    pub label: String,
    pub from_ms: f64,
    /// `None` if some client never acked again.
    pub max_ms: Option<f64>,
    pub slowest: Option<String>,
    pub unconverged: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    /// Two groups of one location accepted writes in intersecting intervals.
    SplitBrain {
        location: String,
        a: GroupSpan,
        b: GroupSpan,
        /// Length of the intersection (0: a single interleaved write).
        overlap_ms: f64,
        /// Writes of either group inside the intersection, plus each group's last write before
        /// and first write after it (at most 12).
        writes: Vec<Accepted>,
        writes_in_overlap: usize,
    },
    /// Accepted beyond the tolerance outside every tenure of its node (`lag_ms: None`: the
    /// node never led).
    AcceptedWithoutLease {
        write: Accepted,
        lag_ms: Option<f64>,
    },
    /// Acknowledged, but missing from every current primary's table.
    Lost { write: WriteRecord },
    /// Acknowledged by one node, found only on others.
    WrongNode {
        write: WriteRecord,
        found_on: Vec<String>,
    },
    /// Refused before it was sent, yet found in a table.
    FailedButApplied {
        write: WriteRecord,
        found_on: Vec<String>,
    },
    /// One `(client, seq)` applied more than once.
    Duplicate {
        client: String,
        seq: u64,
        nodes: Vec<String>,
        first_ms: f64,
    },
    /// A client never acked a write sent after `from_ms`.
    Unconverged {
        label: String,
        from_ms: f64,
        client: String,
    },
    /// Server time outside `[send_ms, ack_ms]`: the one-clock assumption broke, so every
    /// other proof is void.
    ClockAnomaly { write: WriteRecord },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub split_brain: usize,
    pub lost_writes: usize,
    /// Writes accepted without a lease (beyond `stale_tolerance_ms`, or on a node that never led).
    pub stale_writes: usize,
    /// The largest distance of any accepted write from its node's tenures, tolerated or not.
    pub max_stale_ms: f64,
    pub stale_tolerance_ms: f64,
    /// Max over `convergence`; `None` if there was nothing to measure or a client never
    /// recovered (then `unconverged > 0`).
    pub max_converge_ms: Option<f64>,
    pub unconverged: usize,
    /// Acked by one node but found on another, or refused yet applied.
    pub corrupt: usize,
    pub duplicates: usize,
    pub clock_anomalies: usize,
    pub acked: usize,
    pub failed: usize,
    pub unknown: usize,
    /// `Unknown` writes found in a table (counted as accepted).
    pub unknown_applied: usize,
    /// Distinct accepted writes (acked or found in a table).
    pub accepted: usize,
    pub tenures: Vec<Tenure>,
    pub groups: Vec<GroupSpan>,
    pub convergence: Vec<Convergence>,
    pub violations: Vec<Violation>,
}

impl Verdict {
    /// Every counted failure above is a violation, so no violation means every proof held.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

pub fn check(h: &History) -> Verdict {
    check_with(h, &CheckParams::for_history(h))
}

pub fn check_with(h: &History, p: &CheckParams) -> Verdict {
    let tenures = tenures(h);
    let accepted = accepted(h, &tenures);
    let mut violations = Vec::new();

    let groups = rules::split_brain(&accepted, &mut violations);
    let split_brain = violations.len();

    let mut max_stale_ms: f64 = 0.0;
    let mut stale_writes = 0;
    for a in &accepted {
        if let Some(lag) = a.stale_ms {
            max_stale_ms = max_stale_ms.max(lag);
        }
        if a.stale_ms.is_none_or(|lag| lag > p.stale_tolerance_ms) {
            stale_writes += 1;
            violations.push(Violation::AcceptedWithoutLease {
                write: a.clone(),
                lag_ms: a.stale_ms,
            });
        }
    }

    let tables = rules::tables(h, &mut violations);
    let convergence = rules::convergence(h, &mut violations);
    let clock_anomalies = rules::clock_anomalies(h, p.clock_tolerance_ms, &mut violations);

    let count = |f: fn(&Outcome) -> bool| h.writes.iter().filter(|w| f(&w.outcome)).count();
    let unconverged = convergence.iter().map(|c| c.unconverged.len()).sum();
    let max_converge_ms = if unconverged > 0 {
        None
    } else {
        convergence.iter().filter_map(|c| c.max_ms).reduce(f64::max)
    };
    violations.sort_by(|a, b| rules::violation_ms(a).total_cmp(&rules::violation_ms(b)));
    Verdict {
        split_brain,
        lost_writes: tables.lost,
        stale_writes,
        max_stale_ms,
        stale_tolerance_ms: p.stale_tolerance_ms,
        max_converge_ms,
        unconverged,
        corrupt: tables.corrupt,
        duplicates: tables.duplicates,
        clock_anomalies,
        acked: count(|o| matches!(o, Outcome::Ok)),
        failed: count(|o| matches!(o, Outcome::Failed { .. })),
        unknown: count(|o| matches!(o, Outcome::Unknown { .. })),
        unknown_applied: tables.unknown_applied,
        accepted: accepted.len(),
        tenures,
        groups,
        convergence,
        violations,
    }
}
