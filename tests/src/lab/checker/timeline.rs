//! The human-readable report: summary, a timeline in ms since the start of the run, and every
//! violation with the writes that prove it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Accepted, GroupSpan, Verdict, Violation, rules};
use crate::lab::history::{History, Outcome, WriteRecord};

/// Ack gaps longer than this (per client) are shown: a client was stalled.
const GAP_MS: f64 = 200.0;

pub fn timeline(h: &History, v: &Verdict) -> String {
    let mut s = String::new();
    let status = if v.ok() { "OK" } else { "FAIL" };
    let _ = writeln!(
        s,
        "scenario {} (seed {}, lease {} ms, {:.1} s): {status}",
        h.scenario,
        h.seed,
        h.lease_ms,
        (h.ended_ms - h.started_ms) / 1000.0
    );
    let _ = writeln!(
        s,
        "split_brain={} lost={} stale={} (max {:.1} ms, tolerance {:.0} ms) corrupt={} duplicates={} \
         unconverged={} clock_anomalies={}",
        v.split_brain,
        v.lost_writes,
        v.stale_writes,
        v.max_stale_ms,
        v.stale_tolerance_ms,
        v.corrupt,
        v.duplicates,
        v.unconverged,
        v.clock_anomalies
    );
    let _ = writeln!(
        s,
        "writes: acked {}, failed {}, unknown {} ({} applied), accepted {}; max convergence {}",
        v.acked,
        v.failed,
        v.unknown,
        v.unknown_applied,
        v.accepted,
        match (v.max_converge_ms, v.unconverged) {
            (Some(ms), _) => format!("{ms:.1} ms"),
            (None, 0) => "not measured".to_owned(),
            (None, n) => format!("NEVER for {n} client(s)"),
        }
    );

    let _ = writeln!(s, "\ntimeline (ms since start):");
    let mut events = events(h, v);
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (at, line) in events {
        let _ = writeln!(s, "{:>10.1}  {line}", h.rel(at));
    }

    if !v.violations.is_empty() {
        let _ = writeln!(s, "\nviolations ({}):", v.violations.len());
        for (i, violation) in v.violations.iter().enumerate() {
            let _ = writeln!(s, "{:>3}. {}", i + 1, summary(h, violation));
            for line in details(h, violation) {
                let _ = writeln!(s, "       {line}");
            }
        }
    }
    s
}

fn events(h: &History, v: &Verdict) -> Vec<(f64, String)> {
    let mut ev = Vec::new();
    for f in &h.faults {
        let until = f
            .end_ms
            .map_or("end of run".to_owned(), |e| format!("{:.1}", h.rel(e)));
        ev.push((
            f.start_ms,
            format!("FAULT    start \"{}\" (until {until})", f.label),
        ));
        if let Some(end) = f.end_ms {
            ev.push((end, format!("FAULT    end   \"{}\"", f.label)));
        }
    }
    for o in &h.outages {
        let who = o.clients.join(", ");
        ev.push((
            o.start_ms,
            format!("OUTAGE   start \"{}\" ({who})", o.label),
        ));
        if let Some(end) = o.end_ms {
            ev.push((end, format!("OUTAGE   end   \"{}\" ({who})", o.label)));
        }
    }
    for c in &h.leaders {
        let who = match &c.node {
            Some(node) => format!("{node} (token {})", token(c.token)),
            None => "no leader".to_owned(),
        };
        ev.push((c.at_ms, format!("LEADER   {} -> {who}", c.location)));
    }
    for g in &v.groups {
        let what = group(g);
        ev.push((g.first_ms, format!("ACCEPT   first on {what}")));
        ev.push((
            g.last_ms,
            format!("ACCEPT   last  on {what}, {} writes", g.writes),
        ));
    }
    ev.extend(gaps(h));
    for c in &v.convergence {
        let line = match (c.max_ms, &c.slowest) {
            (Some(ms), Some(client)) => format!(
                "CONVERGE \"{}\": all clients acked within {ms:.1} ms (slowest {client})",
                c.label
            ),
            _ => format!(
                "CONVERGE \"{}\": NOT converged: {}",
                c.label,
                c.unconverged.join(", ")
            ),
        };
        ev.push((c.from_ms, line));
    }
    for violation in &v.violations {
        ev.push((
            rules::violation_ms(violation),
            format!("!! {}", summary(h, violation)),
        ));
    }
    ev
}

/// Per client, every stretch longer than [`GAP_MS`] without an ack, up to the end of the run.
fn gaps(h: &History) -> Vec<(f64, String)> {
    let mut acks: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for w in &h.writes {
        if let (Outcome::Ok, Some(ack)) = (&w.outcome, w.ack_ms) {
            acks.entry(&w.client).or_default().push(ack);
        }
    }
    let mut out = Vec::new();
    for (client, mut times) in acks {
        times.sort_by(f64::total_cmp);
        times.push(h.ended_ms);
        for pair in times.windows(2) {
            if pair[1] - pair[0] > GAP_MS {
                let line = format!(
                    "GAP      {client}: no ack for {:.1} ms (until {:.1})",
                    pair[1] - pair[0],
                    h.rel(pair[1])
                );
                out.push((pair[0], line));
            }
        }
    }
    out
}

fn summary(h: &History, v: &Violation) -> String {
    match v {
        Violation::SplitBrain {
            location,
            a,
            b,
            overlap_ms,
            writes_in_overlap,
            ..
        } => format!(
            "SPLIT-BRAIN in {location}: {} [{:.1}..{:.1}] and {} [{:.1}..{:.1}] overlap {overlap_ms:.1} ms, \
             {writes_in_overlap} writes inside",
            group(a),
            h.rel(a.first_ms),
            h.rel(a.last_ms),
            group(b),
            h.rel(b.first_ms),
            h.rel(b.last_ms)
        ),
        Violation::AcceptedWithoutLease { write, lag_ms } => {
            let lag = lag_ms.map_or("its node never led".to_owned(), |ms| {
                format!("{ms:.1} ms outside its node's tenures")
            });
            format!("ACCEPTED WITHOUT A LEASE: {}, {lag}", accepted(h, write))
        }
        Violation::Lost { write } => format!("LOST: {}, found on no node", record(h, write)),
        Violation::WrongNode { write, found_on } => {
            format!(
                "WRONG NODE: {}, found only on {}",
                record(h, write),
                found_on.join(", ")
            )
        }
        Violation::FailedButApplied { write, found_on } => {
            format!(
                "FAILED BUT APPLIED: {}, found on {}",
                record(h, write),
                found_on.join(", ")
            )
        }
        Violation::Duplicate {
            client, seq, nodes, ..
        } => {
            format!(
                "DUPLICATE: {client}#{seq} applied {} times, on {}",
                nodes.len(),
                nodes.join(", ")
            )
        }
        Violation::Unconverged { label, client, .. } => {
            format!("UNCONVERGED: {client} never acked a write sent after \"{label}\"")
        }
        Violation::ClockAnomaly { write } => {
            format!(
                "CLOCK ANOMALY: server time outside send..ack for {}",
                record(h, write)
            )
        }
    }
}

fn details(h: &History, v: &Violation) -> Vec<String> {
    match v {
        Violation::SplitBrain { writes, .. } => writes.iter().map(|w| accepted(h, w)).collect(),
        _ => Vec::new(),
    }
}

fn group(g: &GroupSpan) -> String {
    format!("{} ({}, token {})", g.node, g.location, token(g.token))
}

fn token(t: Option<i64>) -> String {
    t.map_or("?".to_owned(), |t| t.to_string())
}

fn accepted(h: &History, a: &Accepted) -> String {
    let how = match (a.acked, a.in_rows) {
        (true, true) => "acked, in table",
        (true, false) => "acked, NOT in table",
        (false, _) => "unacked, in table",
    };
    format!(
        "{}#{} on {} token {} at {:.1} ({how})",
        a.client,
        a.seq,
        a.node,
        token(a.token),
        h.rel(a.server_ms)
    )
}

fn record(h: &History, w: &WriteRecord) -> String {
    let rel = |t: Option<f64>| t.map_or("-".to_owned(), |t| format!("{:.1}", h.rel(t)));
    format!(
        "{}#{} ({}, {}) node {} sent {} server {} ack {}",
        w.client,
        w.seq,
        w.location,
        w.path,
        w.node.as_deref().unwrap_or("-"),
        rel(Some(w.send_ms)),
        rel(w.server_ms),
        rel(w.ack_ms)
    )
}
