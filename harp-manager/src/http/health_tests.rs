use harp_core::records::ReplicaFacts;

use super::*;

fn view() -> StatusView {
    StatusView {
        name: "n1".into(),
        location: "dca".into(),
        role: "follower",
        token: None,
        postgres: PgState::Standby,
        leader: Some("n2".into()),
        leader_token: Some(7),
        fenced: false,
        managed: true,
        ineligible: None,
        switchover_refusal: None,
        etcd_session: true,
        replication: "streaming",
        writable: false,
        replica: ReplicaFacts {
            timeline: Some(2),
            upstream: Some("10.0.0.2:5432".into()),
            streaming: true,
            lag: Some(100),
            ..Default::default()
        },
        reason: None,
    }
}

fn leader_view() -> StatusView {
    StatusView {
        role: "leader",
        token: Some(9),
        postgres: PgState::Primary,
        leader: Some("n1".into()),
        leader_token: Some(9),
        writable: true,
        replica: ReplicaFacts {
            timeline: Some(2),
            ..Default::default()
        },
        ..view()
    }
}

fn lag(n: u64) -> Query {
    Query { lag: Some(n) }
}

fn why(check: Check, v: &StatusView, q: &Query) -> (bool, String) {
    let d = decide(check, v, q);
    (d.ok, d.why)
}

#[test]
fn the_writable_lease_holder_is_primary_and_nothing_else_is() {
    let q = Query::default();
    assert_eq!(
        why(Check::Primary, &leader_view(), &q),
        (true, "writable primary holding the lease (token 9)".into())
    );
    assert_eq!(
        why(Check::Primary, &view(), &q),
        (false, "not the lease holder: n2 leads (token 7)".into())
    );
    let vacant = StatusView {
        leader: None,
        leader_token: None,
        ..view()
    };
    assert_eq!(
        why(Check::Primary, &vacant, &q),
        (false, "not the lease holder: the lease is vacant".into())
    );
    // Streaming mode: the lease is held, the standby not promoted yet.
    let promoting = StatusView {
        postgres: PgState::Standby,
        writable: false,
        ..leader_view()
    };
    assert_eq!(
        why(Check::Primary, &promoting, &q),
        (
            false,
            "holds the lease; Postgres is still a standby being promoted".into()
        )
    );
    assert_eq!(
        why(Check::Leader, &promoting, &q),
        (true, "holds the lease (token 9); not writable yet".into())
    );
    let down = StatusView {
        postgres: PgState::Down,
        writable: false,
        ..leader_view()
    };
    assert_eq!(
        why(Check::Primary, &down, &q),
        (false, "holds the lease, but Postgres is down".into())
    );
    // A fenced leader is leaving: no load balancer should send it writes.
    let fenced = StatusView {
        fenced: true,
        ..leader_view()
    };
    assert!(!decide(Check::Primary, &fenced, &q).ok);
    assert!(decide(Check::Leader, &fenced, &q).ok);
    // Multi-writer: the lead master of the location.
    let mw = StatusView {
        replication: "multi_writer",
        ..leader_view()
    };
    assert!(decide(Check::Primary, &mw, &q).ok);
}

#[test]
fn a_replica_streams_is_not_fenced_and_keeps_within_the_asked_lag() {
    let q = Query::default();
    assert_eq!(
        why(Check::Replica, &view(), &q),
        (
            true,
            "streaming standby of 10.0.0.2:5432; lag 100 bytes".into()
        )
    );
    assert_eq!(
        why(Check::Replica, &view(), &lag(100)),
        (
            true,
            "streaming standby of 10.0.0.2:5432; lag 100 bytes, within 100".into()
        )
    );
    assert_eq!(
        why(Check::Replica, &view(), &lag(99)),
        (false, "lag 100 bytes, above the bound 99".into())
    );
    let unknown = StatusView {
        replica: ReplicaFacts {
            lag: None,
            ..view().replica
        },
        ..view()
    };
    assert!(decide(Check::Replica, &unknown, &q).ok);
    assert_eq!(
        why(Check::Replica, &unknown, &lag(1 << 30)),
        (
            false,
            "replication lag unknown (bound 1073741824 bytes)".into()
        )
    );
    let stalled = StatusView {
        replica: ReplicaFacts {
            streaming: false,
            ..view().replica
        },
        ..view()
    };
    assert_eq!(
        why(Check::Replica, &stalled, &q),
        (false, "standby not streaming from 10.0.0.2:5432".into())
    );
    assert_eq!(
        why(Check::Replica, &leader_view(), &q),
        (false, "Postgres is primary, not a standby".into())
    );
    let promoting = StatusView {
        token: Some(9),
        ..view()
    };
    assert_eq!(
        why(Check::Replica, &promoting, &q),
        (false, "holds the lease: being promoted to primary".into())
    );
    let fenced = StatusView {
        fenced: true,
        ..view()
    };
    assert_eq!(
        why(Check::Replica, &fenced, &q),
        (
            false,
            "fenced: out of service (harpctl unfence to bring it back)".into()
        )
    );
}

#[test]
fn read_only_is_the_primary_or_a_standby_serving_reads() {
    let q = Query::default();
    assert!(
        decide(Check::ReadOnly, &leader_view(), &lag(0)).ok,
        "no lag bound on the primary"
    );
    let stalled = StatusView {
        replica: ReplicaFacts {
            streaming: false,
            ..view().replica
        },
        ..view()
    };
    assert_eq!(
        why(Check::ReadOnly, &stalled, &q),
        (
            true,
            "standby serving reads (not streaming); lag 100 bytes".into()
        )
    );
    assert!(!decide(Check::ReadOnly, &stalled, &lag(10)).ok);
    let deposed = StatusView {
        postgres: PgState::Primary,
        ..view()
    };
    assert_eq!(
        why(Check::ReadOnly, &deposed, &q),
        (
            false,
            "Postgres is a primary without the lease (deposed or not yet demoted): never routed"
                .into()
        )
    );
    let mw_follower = StatusView {
        replication: "multi_writer",
        ..deposed.clone()
    };
    assert_eq!(
        why(Check::ReadOnly, &mw_follower, &q),
        (true, "primary serving reads (not the lead master)".into())
    );
    let down = StatusView {
        postgres: PgState::Down,
        ..view()
    };
    assert_eq!(
        why(Check::ReadOnly, &down, &q),
        (false, "Postgres is down".into())
    );
}

/// Every combination of the inputs the checks read, against the rules in the module doc.
#[test]
fn every_combination_follows_the_table() {
    let pgs = [
        PgState::Primary,
        PgState::Standby,
        PgState::Down,
        PgState::Unknown,
    ];
    let mut n = 0;
    for pg in pgs {
        for token in [None, Some(9)] {
            for writable in [false, true] {
                if writable && (token.is_none() || pg != PgState::Primary) {
                    continue; // the runner never reports it
                }
                for fenced in [false, true] {
                    for replication in ["streaming", "multi_writer"] {
                        for streaming in [false, true] {
                            for known_lag in [None, Some(10), Some(100)] {
                                for bound in [None, Some(50)] {
                                    let v = StatusView {
                                        postgres: pg,
                                        token,
                                        role: if token.is_some() {
                                            "leader"
                                        } else {
                                            "follower"
                                        },
                                        writable,
                                        fenced,
                                        replication,
                                        replica: ReplicaFacts {
                                            streaming,
                                            lag: known_lag,
                                            ..view().replica
                                        },
                                        ..view()
                                    };
                                    check_rules(&v, &Query { lag: bound });
                                    n += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    // (pg, token, writable): 4 × 2 without writable, + the writable primary lease holder.
    assert_eq!(n, (4 * 2 + 1) * 2 * 2 * 2 * 3 * 2);
}

fn check_rules(v: &StatusView, q: &Query) {
    let ok = |c| decide(c, v, q).ok;
    let lag_ok = q
        .lag
        .is_none_or(|max| v.replica.lag.is_some_and(|l| l <= max));
    let ctx = format!("{v:?} {q:?}");
    assert_eq!(
        ok(Check::Primary),
        v.writable && !v.fenced,
        "primary: {ctx}"
    );
    assert_eq!(ok(Check::Leader), v.token.is_some(), "leader: {ctx}");
    let replica = !v.fenced
        && v.postgres == PgState::Standby
        && v.token.is_none()
        && v.replica.streaming
        && lag_ok;
    assert_eq!(ok(Check::Replica), replica, "replica: {ctx}");
    let read_only = !v.fenced
        && (v.writable
            || (v.postgres == PgState::Standby && lag_ok)
            || (v.postgres == PgState::Primary && v.replication == "multi_writer"));
    assert_eq!(ok(Check::ReadOnly), read_only, "read-only: {ctx}");
    // A load balancer never sees one node in both pools, nor a lease-less primary in streaming.
    assert!(!(ok(Check::Primary) && ok(Check::Replica)), "{ctx}");
    if v.replication == "streaming" && ok(Check::ReadOnly) {
        assert!(
            ok(Check::Primary) || v.postgres == PgState::Standby,
            "{ctx}"
        );
    }
    assert!(!decide(Check::ReadOnly, v, q).why.is_empty());
}

#[test]
fn lag_takes_bytes_and_postgres_units() {
    assert_eq!(parse_bytes("1048576"), Ok(1_048_576));
    assert_eq!(parse_bytes("1024kB"), Ok(1_048_576));
    assert_eq!(parse_bytes("16MB"), Ok(16 << 20));
    assert_eq!(parse_bytes("16 mb"), Ok(16 << 20));
    assert_eq!(parse_bytes("1GB"), Ok(1 << 30));
    assert_eq!(parse_bytes("2TB"), Ok(2 << 40));
    assert_eq!(parse_bytes("0"), Ok(0));
    for bad in [
        "",
        "MB",
        "-1",
        "1.5GB",
        "16XB",
        "99999999999999999999",
        "20000000TB",
    ] {
        let err = parse_bytes(bad).unwrap_err();
        assert!(err.contains("is not a byte count"), "{bad}: {err}");
    }
}

#[test]
fn queries_name_only_what_the_endpoint_takes() {
    assert_eq!(
        Query::parse(Check::Replica, [("lag", "16MB")]),
        Ok(lag(16 << 20))
    );
    assert_eq!(Query::parse(Check::Primary, []), Ok(Query::default()));
    assert_eq!(
        Query::parse(Check::Replica, [("lga", "1")]).unwrap_err(),
        "unknown parameter `lga`; /replica takes `lag`"
    );
    assert_eq!(
        Query::parse(Check::Primary, [("lag", "1")]).unwrap_err(),
        "unknown parameter `lag`; /primary takes none"
    );
    assert_eq!(
        Query::parse(Check::ReadOnly, [("lag", "x")]).unwrap_err(),
        "lag: `x` is not a byte count (e.g. 1048576, 1024kB, 16MB, 1GB)"
    );
}
