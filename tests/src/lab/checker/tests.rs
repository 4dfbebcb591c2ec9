//! Hand-built histories: each proves the checker sees (or rightly ignores) one kind of fault.

mod primary;
mod report;
mod safety;

use super::*;
use crate::lab::history::{FaultMark, LeaderChange, Row};

const T0: f64 = 1_700_000_000_000.0;

fn history() -> History {
    History {
        scenario: "test".into(),
        seed: 1,
        lease_ms: 6000,
        started_ms: T0,
        ended_ms: T0 + 3000.0,
        writes: vec![],
        leaders: vec![],
        faults: vec![],
        rows: vec![],
        converge_from: vec![],
        outages: vec![],
        replication: "multi_writer".into(),
        primaries: vec![],
    }
}

fn leader(h: &mut History, at: f64, node: Option<&str>, token: Option<i64>) {
    let node = node.map(str::to_owned);
    h.leaders.push(LeaderChange {
        at_ms: T0 + at,
        location: "east".into(),
        node,
        token,
    });
}

/// An acked write accepted by `node` at `at` (ms since start), with or without its row.
fn ok(h: &mut History, client: &str, seq: u64, node: &str, at: f64, in_rows: bool) {
    h.writes.push(WriteRecord {
        client: client.into(),
        location: "east".into(),
        path: "kernel".into(),
        seq,
        send_ms: T0 + at - 1.0,
        ack_ms: Some(T0 + at + 1.0),
        outcome: Outcome::Ok,
        node: Some(node.into()),
        server_ms: Some(T0 + at),
    });
    if in_rows {
        row(h, node, client, seq, at);
    }
}

fn row(h: &mut History, node: &str, client: &str, seq: u64, at: f64) {
    h.rows.push(Row {
        node: node.into(),
        client: client.into(),
        seq,
        server_ms: T0 + at,
        table: None,
    });
}

fn unanswered(h: &mut History, client: &str, seq: u64, at: f64, outcome: Outcome) {
    h.writes.push(WriteRecord {
        client: client.into(),
        location: "east".into(),
        path: "userspace".into(),
        seq,
        send_ms: T0 + at,
        ack_ms: None,
        outcome,
        node: None,
        server_ms: None,
    });
}

/// pg1 leads (token 10) until 1000, no leader until 1050, then pg2 (token 20).
fn failover() -> History {
    let mut h = history();
    leader(&mut h, 0.0, Some("pg1"), Some(10));
    leader(&mut h, 1000.0, None, None);
    leader(&mut h, 1050.0, Some("pg2"), Some(20));
    h.faults.push(FaultMark {
        start_ms: T0 + 990.0,
        end_ms: Some(T0 + 1500.0),
        label: "kill pg1".into(),
    });
    h
}

/// Two clients writing every 100 ms on `node` over `[from, to)`; seqs start at `seq`.
fn steady(h: &mut History, node: &str, from: f64, to: f64, seq: u64) {
    let mut at = from;
    let mut s = seq;
    while at < to {
        ok(h, "c1", s, node, at, true);
        ok(h, "c2", s, node, at + 50.0, true);
        at += 100.0;
        s += 1;
    }
}
