//! The individual proofs; each appends its violations.

use std::collections::{BTreeMap, BTreeSet};

use super::{Accepted, Convergence, GroupSpan, Violation};
use crate::lab::history::{History, Outcome, Row, WriteRecord};

/// Writes kept as evidence of one split brain: enough to show the interleaving.
pub(super) const EVIDENCE: usize = 12;

/// Groups accepted writes by `(location, node, token)` and reports every pair of groups of
/// one location whose acceptance intervals intersect. Returns the groups, by first write.
pub(super) fn split_brain(acc: &[Accepted], out: &mut Vec<Violation>) -> Vec<GroupSpan> {
    let mut groups: BTreeMap<(&str, &str, Option<i64>), Vec<&Accepted>> = BTreeMap::new();
    for a in acc {
        groups
            .entry((&a.location, &a.node, a.token))
            .or_default()
            .push(a);
    }
    // `acc` is sorted by server time, so each group's writes are too.
    let mut spans: Vec<(GroupSpan, Vec<&Accepted>)> = groups
        .into_iter()
        .map(|((location, node, token), writes)| {
            let span = GroupSpan {
                location: location.to_owned(),
                node: node.to_owned(),
                token,
                first_ms: writes[0].server_ms,
                last_ms: writes[writes.len() - 1].server_ms,
                writes: writes.len(),
            };
            (span, writes)
        })
        .collect();
    spans.sort_by(|(a, _), (b, _)| a.first_ms.total_cmp(&b.first_ms));
    for (i, (a, wa)) in spans.iter().enumerate() {
        for (b, wb) in &spans[i + 1..] {
            if a.location != b.location {
                continue;
            }
            let (start, end) = (a.first_ms.max(b.first_ms), a.last_ms.min(b.last_ms));
            if start > end {
                continue;
            }
            let mut evidence: Vec<Accepted> = Vec::new();
            let mut writes_in_overlap = 0;
            for ws in [wa, wb] {
                let within: Vec<&&Accepted> = ws
                    .iter()
                    .filter(|w| (start..=end).contains(&w.server_ms))
                    .collect();
                writes_in_overlap += within.len();
                evidence.extend(
                    ws.iter()
                        .rev()
                        .find(|w| w.server_ms < start)
                        .map(|w| (*w).clone()),
                );
                evidence.extend(within.into_iter().map(|w| (*w).clone()));
                evidence.extend(ws.iter().find(|w| w.server_ms > end).map(|w| (*w).clone()));
            }
            evidence.sort_by(|x, y| x.server_ms.total_cmp(&y.server_ms));
            evidence.truncate(EVIDENCE);
            out.push(Violation::SplitBrain {
                location: a.location.clone(),
                a: a.clone(),
                b: b.clone(),
                overlap_ms: end - start,
                writes: evidence,
                writes_in_overlap,
            });
        }
    }
    spans.into_iter().map(|(span, _)| span).collect()
}

pub(super) struct Tables {
    pub lost: usize,
    pub corrupt: usize,
    pub duplicates: usize,
    pub unknown_applied: usize,
}

/// Compares what the clients were told with what the final read found on the current
/// primaries ([`History::primaries`]; every table if none is named): an acknowledged write
/// missing from them is lost, wherever it was accepted — in a streaming cluster a write the
/// old primary took but never shipped is lost even while the old primary still has it. A
/// standby's copy of a row is not a second application of it.
pub(super) fn tables(h: &History, out: &mut Vec<Violation>) -> Tables {
    let primary = |r: &Row| h.primaries.is_empty() || h.primaries.iter().any(|p| p == r.table());
    let mut found: BTreeMap<(&str, u64), Vec<&Row>> = BTreeMap::new();
    for r in h.rows.iter().filter(|r| primary(r)) {
        found.entry((&r.client, r.seq)).or_default().push(r);
    }
    let mut t = Tables {
        lost: 0,
        corrupt: 0,
        duplicates: 0,
        unknown_applied: 0,
    };
    for ((client, seq), rows) in &found {
        if rows.len() > 1 {
            t.duplicates += 1;
            out.push(Violation::Duplicate {
                client: (*client).to_owned(),
                seq: *seq,
                nodes: rows.iter().map(|r| r.node.clone()).collect(),
                first_ms: rows
                    .iter()
                    .map(|r| r.server_ms)
                    .fold(f64::INFINITY, f64::min),
            });
        }
    }
    for w in &h.writes {
        let rows = found
            .get(&(w.client.as_str(), w.seq))
            .map_or(&[][..], Vec::as_slice);
        let found_on = || rows.iter().map(|r| r.node.clone()).collect::<Vec<_>>();
        match (&w.outcome, &w.node) {
            (Outcome::Ok, _) if rows.is_empty() => {
                t.lost += 1;
                out.push(Violation::Lost { write: w.clone() });
            }
            (Outcome::Ok, Some(node)) if !rows.iter().any(|r| &r.node == node) => {
                t.corrupt += 1;
                out.push(Violation::WrongNode {
                    write: w.clone(),
                    found_on: found_on(),
                });
            }
            (Outcome::Failed { .. }, _) if !rows.is_empty() => {
                t.corrupt += 1;
                out.push(Violation::FailedButApplied {
                    write: w.clone(),
                    found_on: found_on(),
                });
            }
            (Outcome::Unknown { .. }, _) if !rows.is_empty() => t.unknown_applied += 1,
            _ => {}
        }
    }
    t
}

/// Whose recovery a moment measures.
enum Scope<'a> {
    Everyone,
    /// Clients of a location that were still writing then.
    Location(&'a str),
    /// The clients of an outage, at its end.
    Clients(&'a [String]),
}

/// Per `converge_from` moment, each client's time to its first ack of a write sent after it.
/// Every end of a lead master's tenure is such a moment too, for the clients of its location:
/// a fault that lets clients write on until the lease runs out (a frozen manager) costs
/// them nothing until then, and from then on they must find the next leader within the
/// lease + 1 s like after any other fault. A client in an outage (its agent dead or frozen)
/// is measured from the outage's end instead of from the moments inside it.
pub(super) fn convergence(h: &History, out: &mut Vec<Violation>) -> Vec<Convergence> {
    let mut result = Vec::new();
    let mut moments: Vec<(String, f64, Scope)> = h
        .converge_from
        .iter()
        .map(|(l, t)| (l.clone(), *t, Scope::Everyone))
        .collect();
    for t in super::tenure::tenures(h) {
        if let Some(end) = t.end_ms {
            let label = format!("lead lost: {} token {:?}", t.node, t.token);
            moments.push((label, end, Scope::Location(h_location(h, &t.location))));
        }
    }
    for o in &h.outages {
        if let Some(end) = o.end_ms {
            let label = format!("{} ended", o.label);
            moments.push((label, end, Scope::Clients(&o.clients)));
        }
    }
    for (label, from_ms, scope) in &moments {
        let in_outage = |c: &str| h.outages.iter().any(|o| o.covers(c, *from_ms));
        let clients: BTreeSet<&str> = h
            .writes
            .iter()
            .filter(|w| match scope {
                Scope::Everyone => true,
                // After a tenure's end, only clients still writing then are expected to recover.
                Scope::Location(l) => w.location == *l && w.send_ms >= *from_ms,
                Scope::Clients(cs) => cs.contains(&w.client),
            })
            .map(|w| w.client.as_str())
            .filter(|c| !in_outage(c))
            .collect();
        if clients.is_empty() {
            continue;
        }
        let mut c = Convergence {
            label: label.clone(),
            from_ms: *from_ms,
            max_ms: None,
            slowest: None,
            unconverged: Vec::new(),
        };
        let mut max: Option<(f64, &str)> = None;
        for client in &clients {
            let first_ack = h
                .writes
                .iter()
                .filter(|w| w.client == *client && w.send_ms >= *from_ms)
                .filter(|w| matches!(w.outcome, Outcome::Ok))
                .filter_map(|w| w.ack_ms)
                .reduce(f64::min);
            match first_ack {
                Some(ack) if max.is_none_or(|(m, _)| ack - from_ms > m) => {
                    max = Some((ack - from_ms, client));
                }
                Some(_) => {}
                None => {
                    c.unconverged.push((*client).to_owned());
                    out.push(Violation::Unconverged {
                        label: label.clone(),
                        from_ms: *from_ms,
                        client: (*client).to_owned(),
                    });
                }
            }
        }
        if c.unconverged.is_empty() {
            c.max_ms = max.map(|(m, _)| m);
            c.slowest = max.map(|(_, client)| client.to_owned());
        }
        result.push(c);
    }
    result
}

/// `location` as a str borrowed from the history (tenures own their strings).
fn h_location<'a>(h: &'a History, location: &str) -> &'a str {
    h.writes
        .iter()
        .map(|w| w.location.as_str())
        .find(|l| *l == location)
        .unwrap_or("")
}

/// Acked writes whose server time lies outside `[send_ms, ack_ms]`.
pub(super) fn clock_anomalies(h: &History, tol: f64, out: &mut Vec<Violation>) -> usize {
    let mut n = 0;
    for w in &h.writes {
        if let (Outcome::Ok, Some(server), Some(ack)) = (&w.outcome, w.server_ms, w.ack_ms)
            && (server < w.send_ms - tol || server > ack + tol)
        {
            n += 1;
            out.push(Violation::ClockAnomaly { write: w.clone() });
        }
    }
    n
}

/// When a violation happened: where the timeline shows it.
pub(super) fn violation_ms(v: &Violation) -> f64 {
    match v {
        Violation::SplitBrain { a, b, .. } => a.first_ms.max(b.first_ms),
        Violation::AcceptedWithoutLease { write, .. } => write.server_ms,
        Violation::Lost { write }
        | Violation::WrongNode { write, .. }
        | Violation::FailedButApplied { write, .. }
        | Violation::ClockAnomaly { write } => write_ms(write),
        Violation::Duplicate { first_ms, .. } => *first_ms,
        Violation::Unconverged { from_ms, .. } => *from_ms,
    }
}

fn write_ms(w: &WriteRecord) -> f64 {
    w.server_ms.or(w.ack_ms).unwrap_or(w.send_ms)
}
