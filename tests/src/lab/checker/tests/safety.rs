//! One write target per location, and every acknowledged write kept.

use super::*;

#[test]
fn clean_failover_has_no_violation() {
    let mut h = failover();
    steady(&mut h, "pg1", 0.0, 900.0, 1);
    ok(&mut h, "c1", 100, "pg1", 1003.0, true); // 3 ms after the observed end: watch lag
    unanswered(
        &mut h,
        "c2",
        100,
        1010.0,
        Outcome::Failed {
            error: "pause timeout".into(),
        },
    );
    steady(&mut h, "pg2", 1060.0, 2000.0, 200);
    let v = check(&h);
    assert!(v.ok(), "{:#?}", v.violations);
    assert_eq!((v.split_brain, v.lost_writes, v.stale_writes), (0, 0, 0));
    assert_eq!(v.max_stale_ms, 3.0);
    assert_eq!(v.failed, 1);
    assert_eq!(v.acked, v.accepted);
    let groups: Vec<_> = v
        .groups
        .iter()
        .map(|g| (g.node.as_str(), g.token))
        .collect();
    assert_eq!(groups, [("pg1", Some(10)), ("pg2", Some(20))]);
}

#[test]
fn overlapping_acceptance_by_two_nodes_is_split_brain() {
    let mut h = failover();
    steady(&mut h, "pg1", 0.0, 900.0, 1);
    ok(&mut h, "c1", 100, "pg1", 1080.0, true); // an agent still routes to pg1 ...
    ok(&mut h, "c2", 200, "pg2", 1100.0, true); // ... while another routes to pg2
    ok(&mut h, "c1", 101, "pg1", 1120.0, true);
    ok(&mut h, "c2", 201, "pg2", 1200.0, true);
    let v = check(&h);
    assert_eq!(v.split_brain, 1, "{:#?}", v.violations);
    assert!(!v.ok());
    let Some(Violation::SplitBrain {
        location,
        a,
        b,
        overlap_ms,
        writes,
        writes_in_overlap,
    }) = v
        .violations
        .iter()
        .find(|x| matches!(x, Violation::SplitBrain { .. }))
    else {
        panic!("no split brain in {:#?}", v.violations);
    };
    assert_eq!(location, "east");
    assert_eq!(
        (a.node.as_str(), a.token, b.node.as_str(), b.token),
        ("pg1", Some(10), "pg2", Some(20))
    );
    assert_eq!(*overlap_ms, 20.0); // pg2's first (1100) to pg1's last (1120)
    assert_eq!(*writes_in_overlap, 2);
    let evidence: Vec<_> = writes
        .iter()
        .map(|w| (w.client.as_str(), w.seq, w.node.as_str()))
        .collect();
    // pg1 before, pg2 inside, pg1 inside, pg2 after: the interleaving itself.
    assert_eq!(
        evidence,
        [
            ("c1", 100, "pg1"),
            ("c2", 200, "pg2"),
            ("c1", 101, "pg1"),
            ("c2", 201, "pg2")
        ]
    );
    // Within the stale tolerance: the split brain, not the lag, is the finding.
    assert_eq!(v.stale_writes, 0);
    assert_eq!(v.max_stale_ms, 120.0);
}

#[test]
fn a_node_that_never_led_interleaving_with_the_leader_is_split_brain_and_leaseless() {
    let mut h = history();
    leader(&mut h, 0.0, Some("pg1"), Some(10));
    ok(&mut h, "c1", 1, "pg1", 100.0, true);
    ok(&mut h, "c2", 1, "pg3", 200.0, true);
    ok(&mut h, "c1", 2, "pg1", 300.0, true);
    let v = check(&h);
    assert_eq!(
        (v.split_brain, v.stale_writes),
        (1, 1),
        "{:#?}",
        v.violations
    );
    assert!(v.violations.iter().any(|x| matches!(x,
        Violation::AcceptedWithoutLease { write, lag_ms: None } if write.node == "pg3")));
    let Some(Violation::SplitBrain { writes, .. }) = v.violations.first() else {
        panic!()
    };
    let order: Vec<_> = writes.iter().map(|w| w.node.as_str()).collect();
    assert_eq!(order, ["pg1", "pg3", "pg1"]);
}

#[test]
fn acked_write_missing_from_the_tables_is_lost() {
    let mut h = failover();
    steady(&mut h, "pg1", 0.0, 500.0, 1);
    ok(&mut h, "c1", 50, "pg1", 600.0, false);
    ok(&mut h, "c2", 50, "pg1", 650.0, false);
    row(&mut h, "pg2", "c2", 50, 650.0); // acked by pg1, found on pg2
    let v = check(&h);
    assert_eq!((v.lost_writes, v.corrupt), (1, 1), "{:#?}", v.violations);
    assert!(v.violations.iter().any(
        |x| matches!(x, Violation::Lost { write } if write.client == "c1" && write.seq == 50)
    ));
    assert!(v.violations.iter().any(|x| matches!(x,
        Violation::WrongNode { write, found_on } if write.client == "c2" && found_on == &["pg2"])));
}

#[test]
fn a_write_applied_twice_or_failed_yet_applied_is_reported() {
    let mut h = failover();
    ok(&mut h, "c1", 1, "pg1", 100.0, true);
    row(&mut h, "pg2", "c1", 1, 1100.0);
    unanswered(
        &mut h,
        "c2",
        1,
        200.0,
        Outcome::Failed {
            error: "connection refused".into(),
        },
    );
    row(&mut h, "pg1", "c2", 1, 201.0);
    let v = check(&h);
    assert_eq!((v.duplicates, v.corrupt), (1, 1), "{:#?}", v.violations);
    assert!(v.violations.iter().any(|x| matches!(x,
        Violation::Duplicate { client, seq: 1, nodes, .. } if client == "c1" && nodes == &["pg1", "pg2"])));
}

#[test]
fn a_write_long_after_the_tenure_ended_is_accepted_without_a_lease() {
    let mut h = failover();
    steady(&mut h, "pg1", 0.0, 900.0, 1);
    ok(&mut h, "c1", 100, "pg1", 2500.0, true); // 1500 ms after pg1's tenure ended
    let v = check(&h);
    assert_eq!(v.stale_tolerance_ms, 1000.0);
    assert_eq!(
        (v.stale_writes, v.max_stale_ms, v.split_brain),
        (1, 1500.0, 0)
    );
    assert!(v.violations.iter().any(|x| matches!(x,
        Violation::AcceptedWithoutLease { write, lag_ms: Some(lag) } if write.seq == 100 && *lag == 1500.0)));
    // A looser tolerance still reports the lag, but no violation.
    let loose = CheckParams {
        stale_tolerance_ms: 2000.0,
        ..CheckParams::for_history(&h)
    };
    let v = check_with(&h, &loose);
    assert_eq!((v.stale_writes, v.max_stale_ms), (0, 1500.0));
    assert!(v.ok());
    // A short lease tightens the default: half of it.
    h.lease_ms = 1000;
    assert_eq!(check(&h).stale_tolerance_ms, 500.0);
}

#[test]
fn unknown_write_that_landed_counts_as_accepted() {
    let mut h = failover();
    steady(&mut h, "pg1", 0.0, 900.0, 1);
    unanswered(
        &mut h,
        "c3",
        1,
        500.0,
        Outcome::Unknown {
            error: "reset".into(),
        },
    );
    row(&mut h, "pg2", "c3", 1, 510.0); // landed on pg2 while pg1 led
    unanswered(
        &mut h,
        "c3",
        2,
        600.0,
        Outcome::Unknown {
            error: "reset".into(),
        },
    ); // did not land
    let v = check(&h);
    assert_eq!((v.unknown, v.unknown_applied), (2, 1));
    assert_eq!(v.accepted, v.acked + 1);
    assert_eq!(v.split_brain, 1, "{:#?}", v.violations);
    let Some(Violation::SplitBrain { writes, .. }) = v.violations.first() else {
        panic!()
    };
    assert!(
        writes
            .iter()
            .any(|w| w.client == "c3" && !w.acked && w.in_rows && w.token == Some(20))
    );
}

#[test]
fn tenures_merge_repeated_observations_and_split_on_a_new_token() {
    let mut h = history();
    leader(&mut h, 0.0, Some("pg1"), Some(10));
    leader(&mut h, 5.0, Some("pg1"), Some(10)); // watch restart: same lease
    leader(&mut h, 900.0, Some("pg1"), Some(30)); // re-acquired: a new lease
    leader(&mut h, 1000.0, Some("pg2"), Some(40));
    let t: Vec<_> = tenures(&h)
        .iter()
        .map(|t| {
            (
                t.node.clone(),
                t.token,
                t.start_ms - T0,
                t.end_ms.map(|e| e - T0),
            )
        })
        .collect();
    assert_eq!(
        t,
        [
            ("pg1".to_owned(), Some(10), 0.0, Some(900.0)),
            ("pg1".to_owned(), Some(30), 900.0, Some(1000.0)),
            ("pg2".to_owned(), Some(40), 1000.0, None),
        ]
    );
}
