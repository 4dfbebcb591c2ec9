//! An acknowledged write counts as lost when the current primary lacks it, not only when no
//! node has it: in a streaming cluster a write the old primary took but never shipped is
//! lost, and a standby's copy of a row is no second application of it.

use super::*;

/// The final read of a streaming cluster: every row of `h.writes` accepted by `from` is in the
/// tables of `tables` (the copies a standby replayed keep the accepting node's name).
fn replicate(h: &mut History, tables: &[&str]) {
    let acked: Vec<WriteRecord> = h.writes.clone();
    for w in acked.iter().filter(|w| matches!(w.outcome, Outcome::Ok)) {
        for t in tables {
            h.rows.push(Row {
                node: w.node.clone().expect("acked"),
                client: w.client.clone(),
                seq: w.seq,
                server_ms: w.server_ms.expect("acked"),
                table: Some((*t).into()),
            });
        }
    }
}

/// pg1 primary until 1000, pg2 promoted at 1050; the writes before the kill were acked by
/// pg1, those after by pg2; `primaries`: pg2.
fn streaming_failover() -> History {
    let mut h = failover();
    h.replication = "streaming".into();
    h.primaries = vec!["pg2".into()];
    for (i, at) in [100.0, 200.0, 900.0].into_iter().enumerate() {
        ok(&mut h, "c1", i as u64 + 1, "pg1", at, false);
    }
    ok(&mut h, "c1", 10, "pg2", 1200.0, false);
    h
}

#[test]
fn replicated_rows_on_every_node_are_neither_lost_nor_duplicates() {
    let mut h = streaming_failover();
    replicate(&mut h, &["pg1", "pg2", "pg3"]);
    let v = check(&h);
    assert!(v.ok(), "{:#?}", v.violations);
    assert_eq!((v.lost_writes, v.duplicates, v.corrupt), (0, 0, 0));
    assert_eq!(v.acked, 4);
}

#[test]
fn a_write_only_the_old_primary_has_is_lost() {
    let mut h = streaming_failover();
    replicate(&mut h, &["pg2", "pg3"]);
    // The old primary acked seq 4 at 950 and crashed before shipping it: only its own table
    // (read before its rewind) has the row.
    ok(&mut h, "c1", 4, "pg1", 950.0, false);
    h.rows.push(Row {
        node: "pg1".into(),
        client: "c1".into(),
        seq: 4,
        server_ms: T0 + 950.0,
        table: Some("pg1".into()),
    });
    let v = check(&h);
    assert_eq!(v.lost_writes, 1, "{:#?}", v.violations);
    let lost: Vec<u64> = v
        .violations
        .iter()
        .filter_map(|x| match x {
            Violation::Lost { write } => Some(write.seq),
            _ => None,
        })
        .collect();
    assert_eq!(lost, [4]);
    assert_eq!(v.corrupt, 0);
}

#[test]
fn a_write_on_a_standby_but_not_on_the_primary_is_lost() {
    let mut h = streaming_failover();
    replicate(&mut h, &["pg3"]);
    let v = check(&h);
    assert_eq!(v.lost_writes, 4, "{:#?}", v.violations);
}

#[test]
fn multi_writer_nodes_are_each_the_primary_of_their_own_writes() {
    // Every node is a primary: a write pg1 took before the failover is kept in pg1's table
    // even though pg2 leads now; one in no primary's table is lost.
    let mut h = failover();
    h.primaries = vec!["pg1".into(), "pg2".into()];
    ok(&mut h, "c1", 1, "pg1", 100.0, true);
    ok(&mut h, "c1", 2, "pg2", 1200.0, true);
    ok(&mut h, "c1", 3, "pg2", 1300.0, false);
    let v = check(&h);
    assert_eq!(v.lost_writes, 1, "{:#?}", v.violations);
    assert_eq!(v.corrupt, 0);
    // The same write applied on two primaries is still a duplicate.
    row(&mut h, "pg2", "c1", 3, 1300.0);
    h.rows.push(Row {
        node: "pg2".into(),
        client: "c1".into(),
        seq: 3,
        server_ms: T0 + 1300.0,
        table: Some("pg1".into()),
    });
    let v = check(&h);
    assert_eq!((v.lost_writes, v.duplicates), (0, 1), "{:#?}", v.violations);
}
