//! Streaming mode driven by a fake clock: promotion, eligibility, demotion, following.

use super::*;

fn streaming(node: &str, priority: i32) -> Params {
    Params {
        streaming: true,
        ..params(node, priority)
    }
}

fn standby(lsn: u64) -> Event {
    Event::Postgres {
        state: PgState::Standby,
        wal_lsn: Some(lsn),
    }
}

fn optime(node: &str, timeline: u32, lsn: u64) -> Event {
    Event::Optime(Some(Optime {
        node: node.into(),
        timeline: Some(timeline),
        lsn,
        shutdown: false,
    }))
}

/// A standby whose session is up and settled, seeing the lease vacant.
fn ready_standby(e: &mut Election, lsn: u64) -> (Instant, Vec<Action>) {
    let start = Instant::now();
    e.step(Event::SessionUp { sent: start }, start);
    let t0 = start + STEP;
    e.step(Event::KeepAliveOk { sent: t0 }, t0);
    e.step(Event::Replica { timeline: Some(1) }, t0);
    e.step(standby(lsn), t0);
    let out = e.step(Event::LeaderObserved(None), t0);
    (t0, out)
}

#[test]
fn a_standby_acquires_then_promotes_and_is_routable_only_once_writable() {
    let mut e = Election::new(streaming("n2", 100));
    e.step(optime("n1", 1, 100), Instant::now());
    let (t0, out) = ready_standby(&mut e, 100);
    assert_eq!(out, vec![Action::TryAcquire]);
    // The record it writes says promoting: proxies hold clients.
    assert!(e.acquires_promoting());
    let out = e.step(Event::Acquired { token: 7, sent: t0 }, t0);
    assert!(e.is_leader());
    assert!(out.contains(&Action::Promote { token: 7 }), "{out:?}");
    // Still recovering: asked once, not again.
    let out = e.step(standby(100), t0);
    assert!(!out.contains(&Action::Promote { token: 7 }), "{out:?}");
    // Postgres takes writes: the record becomes routable.
    let out = e.step(healthy(), t0);
    let routable = Action::MarkLeader {
        token: 7,
        handover_to: None,
        leaving: false,
    };
    assert!(out.contains(&routable), "{out:?}");
    assert!(e.step(healthy(), t0).is_empty());
}

#[test]
fn a_failed_promotion_gives_the_lease_up_and_says_why() {
    let mut e = Election::new(streaming("n2", 100));
    let (t0, _) = ready_standby(&mut e, 100);
    e.step(Event::Acquired { token: 7, sent: t0 }, t0);
    let out = e.step(
        Event::Promoted {
            token: 7,
            result: Err("timed out".into()),
        },
        t0,
    );
    assert!(has_release(&out, "promotion failed: timed out"), "{out:?}");
    assert!(!e.is_leader());
    assert!(e.replica_failure().unwrap().contains("timed out"));
}

#[test]
fn a_standby_beyond_maximum_lag_of_the_last_primary_position_never_tries() {
    let mut e = Election::new(Params {
        maximum_lag: 1000,
        ..streaming("n2", 100)
    });
    e.step(optime("n1", 1, 10_000), Instant::now());
    let (_, out) = ready_standby(&mut e, 5_000);
    assert!(!out.contains(&Action::TryAcquire), "{out:?}");
    let why = e.ineligible_reason().unwrap();
    assert!(why.contains("5000 bytes behind"), "{why}");
    // Caught up within the limit: it tries.
    let t = Instant::now() + STEP;
    let out = e.step(standby(9_500), t);
    assert!(out.contains(&Action::TryAcquire), "{out:?}");
}

#[test]
fn a_standby_that_cannot_tell_its_lag_does_not_try() {
    let mut e = Election::new(Params {
        maximum_lag: 1000,
        ..streaming("n2", 100)
    });
    e.step(optime("n1", 1, 10_000), Instant::now());
    ready_standby(&mut e, 0);
    let t = Instant::now() + STEP;
    let out = e.step(
        Event::Postgres {
            state: PgState::Standby,
            wal_lsn: None,
        },
        t,
    );
    assert!(!out.contains(&Action::TryAcquire), "{out:?}");
    assert!(e.ineligible_reason().unwrap().contains("cannot tell"));
}

#[test]
fn fenced_or_priority_minus_one_standbys_are_never_promoted() {
    let mut e = Election::new(streaming("n2", -1));
    let (_, out) = ready_standby(&mut e, 100);
    assert!(!out.contains(&Action::TryAcquire));
    let mut e = Election::new(streaming("n2", 100));
    e.step(
        Event::Fenced {
            node: "n2".into(),
            fenced: true,
        },
        Instant::now(),
    );
    let (_, out) = ready_standby(&mut e, 100);
    assert!(!out.contains(&Action::TryAcquire));
    assert_eq!(e.ineligible_reason().as_deref(), Some("the node is fenced"));
}

#[test]
fn in_synchronous_mode_only_a_member_of_the_set_is_promoted() {
    let sync = |node| Params {
        synchronous: true,
        ..streaming(node, 100)
    };
    let mut e = Election::new(sync("n3"));
    e.step(Event::SyncSet(Some(vec!["n2".into()])), Instant::now());
    let (_, out) = ready_standby(&mut e, 100);
    assert!(!out.contains(&Action::TryAcquire), "{out:?}");
    let why = e.ineligible_reason().unwrap();
    assert!(why.contains("not a synchronous standby"), "{why}");
    // The member tries, even when another standby is further ahead or ranks higher.
    let mut e = Election::new(sync("n2"));
    e.step(Event::SyncSet(Some(vec!["n2".into()])), Instant::now());
    e.step(
        PeerStatus("n3", peer(200, PgState::Standby, 500)),
        Instant::now(),
    );
    let (_, out) = ready_standby(&mut e, 100);
    assert_eq!(out, vec![Action::TryAcquire]);
    // An empty set (`on` mode ran unprotected): nobody may be promoted — writes stay
    // unavailable rather than lost.
    let mut e = Election::new(sync("n3"));
    e.step(Event::SyncSet(Some(vec![])), Instant::now());
    let (_, out) = ready_standby(&mut e, 100);
    assert!(!out.contains(&Action::TryAcquire), "{out:?}");
    assert!(e.ineligible_reason().unwrap().contains("empty"));
    // No record at all (never kept one): the asynchronous rules decide.
    let mut e = Election::new(sync("n3"));
    let (_, out) = ready_standby(&mut e, 100);
    assert_eq!(out, vec![Action::TryAcquire]);
}

#[test]
fn the_most_advanced_standby_goes_first_at_equal_priority() {
    let mut e = Election::new(streaming("n2", 100));
    e.step(
        PeerStatus("n3", peer(100, PgState::Standby, 900)),
        Instant::now(),
    );
    let (t0, out) = ready_standby(&mut e, 500);
    assert!(
        out.is_empty() || !out.contains(&Action::TryAcquire),
        "{out:?}"
    );
    // One step later (n3 did not take it), n2 tries.
    let out = e.step(Event::Tick, t0 + STEP);
    assert_eq!(out, vec![Action::TryAcquire]);
    // Priority beats position.
    let mut e = Election::new(streaming("n2", 200));
    e.step(
        PeerStatus("n3", peer(100, PgState::Standby, 900)),
        Instant::now(),
    );
    let (_, out) = ready_standby(&mut e, 500);
    assert_eq!(out, vec![Action::TryAcquire]);
}

#[test]
fn a_primary_without_the_lease_is_demoted_and_never_leads() {
    let mut e = Election::new(streaming("n1", 100));
    let t0 = Instant::now();
    e.step(Event::SessionUp { sent: t0 }, t0);
    e.step(Event::KeepAliveOk { sent: t0 }, t0);
    e.step(optime("n2", 2, 5_000), t0);
    e.step(Event::Replica { timeline: Some(1) }, t0);
    e.step(Event::LeaderObserved(holder("n2", 9)), t0);
    // The old primary comes back (restarted by hand): stop it, rewind, follow.
    let out = e.step(healthy(), t0);
    assert!(
        out.iter().any(|a| matches!(
            a,
            Action::Rejoin { stop_first: true, reason } if reason.contains("n2 holds the lease")
        )),
        "{out:?}"
    );
    // Asked once while it runs.
    assert!(
        !e.step(healthy(), t0)
            .iter()
            .any(|a| matches!(a, Action::Rejoin { .. }))
    );
    // Even with the lease vacant, a primary that was not the last one never tries.
    e.step(Event::LeaderObserved(None), t0);
    let out = e.step(Event::Tick, t0 + TTL);
    assert!(!out.contains(&Action::TryAcquire), "{out:?}");
    assert!(
        e.ineligible_reason()
            .unwrap()
            .contains("n2 was the last primary")
    );
}

#[test]
fn a_failed_rejoin_is_reported_and_retried_later_or_when_a_new_primary_appears() {
    let mut e = Election::new(streaming("n1", 100));
    let t0 = Instant::now();
    e.step(Event::LeaderObserved(holder("n2", 9)), t0);
    let down = Event::Postgres {
        state: PgState::Down,
        wal_lsn: None,
    };
    let out = e.step(down.clone(), t0);
    assert!(
        out.iter().any(|a| matches!(
            a,
            Action::Rejoin {
                stop_first: false,
                ..
            }
        )),
        "{out:?}"
    );
    e.step(
        Event::Rejoined(Err("rewind impossible: wal_log_hints is off".into())),
        t0,
    );
    assert!(e.replica_failure().unwrap().contains("wal_log_hints"));
    assert!(
        !e.step(down.clone(), t0)
            .iter()
            .any(|a| matches!(a, Action::Rejoin { .. }))
    );
    let later = e.next_wake().unwrap();
    assert!(later > t0);
    let out = e.step(Event::Tick, later);
    assert!(
        out.iter().any(|a| matches!(a, Action::Rejoin { .. })),
        "{out:?}"
    );
    e.step(Event::Rejoined(Err("no".into())), later);
    // A new primary: try at once.
    let out = e.step(Event::LeaderObserved(holder("n3", 11)), later);
    assert!(
        out.iter().any(|a| matches!(a, Action::Rejoin { .. })),
        "{out:?}"
    );
    e.step(Event::Rejoined(Ok(())), later);
    assert!(e.replica_failure().is_none());
    // Started, but not yet seen up by the check: no second rejoin (it would restart it).
    assert!(
        !e.step(down.clone(), later)
            .iter()
            .any(|a| matches!(a, Action::Rejoin { .. }))
    );
    // Seen up, then down again (a crash): rejoined at once.
    e.step(standby(100), later);
    let out = e.step(down, later);
    assert!(
        out.iter().any(|a| matches!(a, Action::Rejoin { .. })),
        "{out:?}"
    );
}

#[test]
fn standbys_follow_each_new_primary_once() {
    let mut e = Election::new(streaming("n3", 100));
    let t0 = Instant::now();
    e.step(standby(100), t0);
    let out = e.step(Event::LeaderObserved(holder("n1", 5)), t0);
    assert!(
        out.contains(&Action::Follow { node: "n1".into() }),
        "{out:?}"
    );
    assert!(
        !e.step(standby(100), t0)
            .iter()
            .any(|a| matches!(a, Action::Follow { .. }))
    );
    e.step(Event::LeaderObserved(None), t0);
    let out = e.step(Event::LeaderObserved(holder("n2", 9)), t0);
    assert!(
        out.contains(&Action::Follow { node: "n2".into() }),
        "{out:?}"
    );
}

#[test]
fn a_lone_primary_that_crashed_restarts_in_place_after_one_lease() {
    let mut e = Election::new(streaming("n1", 100));
    let t0 = Instant::now();
    e.step(optime("n1", 1, 100), t0);
    e.step(Event::LeaderObserved(None), t0);
    let down = Event::Postgres {
        state: PgState::Down,
        wal_lsn: None,
    };
    assert!(
        !e.step(down.clone(), t0)
            .iter()
            .any(|a| matches!(a, Action::Rejoin { .. }))
    );
    assert_eq!(e.next_wake(), Some(t0 + TTL));
    let out = e.step(Event::Tick, t0 + TTL);
    assert!(
        out.iter().any(|a| matches!(
            a,
            Action::Rejoin {
                stop_first: false,
                ..
            }
        )),
        "{out:?}"
    );
    // Another node's last primary: this one waits for it instead.
    let mut e = Election::new(streaming("n3", 100));
    e.step(optime("n1", 1, 100), t0);
    e.step(Event::LeaderObserved(None), t0);
    e.step(down, t0);
    assert!(
        !e.step(Event::Tick, t0 + TTL)
            .iter()
            .any(|a| matches!(a, Action::Rejoin { .. }))
    );
}

#[test]
fn a_switchover_target_must_be_a_standby_in_streaming_mode() {
    let mut e = Election::new(streaming("n1", 100));
    let t0 = leader(&mut e);
    e.step(PeerStatus("n2", peer(100, PgState::Primary, 1)), t0);
    e.step(
        Event::Switchover(Some(Switchover {
            target: "n2".into(),
            from_token: 7,
            force: false,
        })),
        t0,
    );
    assert!(e.switchover_refusal().unwrap().contains("Primary"));
    e.step(PeerStatus("n2", peer(100, PgState::Standby, 1)), t0);
    assert_eq!(e.switchover_refusal(), None);
}

#[test]
fn a_promoting_record_is_made_routable_even_if_postgres_was_promoted_by_hand() {
    let mut e = Election::new(streaming("n2", 100));
    let (t0, out) = ready_standby(&mut e, 100);
    assert_eq!(out, vec![Action::TryAcquire]);
    // Promoted by someone else between the acquire's send and its answer.
    e.step(healthy(), t0);
    let out = e.step(Event::Acquired { token: 7, sent: t0 }, t0);
    assert!(
        out.contains(&Action::MarkLeader {
            token: 7,
            handover_to: None,
            leaving: false
        }),
        "{out:?}"
    );
    // A second leadership promotes again.
    let mut e = Election::new(streaming("n2", 100));
    let (t0, _) = ready_standby(&mut e, 100);
    e.step(Event::Acquired { token: 7, sent: t0 }, t0);
    e.step(
        Event::Promoted {
            token: 7,
            result: Err("x".into()),
        },
        t0,
    );
    e.step(Event::Released, t0);
    e.step(Event::LeaderObserved(None), t0);
    let t1 = e.next_wake().unwrap();
    let out = e.step(Event::Tick, t1);
    assert_eq!(out, vec![Action::TryAcquire]);
    let out = e.step(Event::Acquired { token: 9, sent: t1 }, t1);
    assert!(out.contains(&Action::Promote { token: 9 }), "{out:?}");
}

#[test]
fn in_synchronous_mode_a_switchover_target_may_take_over_after_a_clean_stop() {
    let mut e = Election::new(Params {
        synchronous: true,
        ..streaming("n3", 100)
    });
    let t = Instant::now();
    e.step(Event::SyncSet(Some(vec!["n2".into()])), t);
    e.step(
        Event::Switchover(Some(Switchover {
            target: "n3".into(),
            from_token: 5,
            force: false,
        })),
        t,
    );
    let (t0, out) = ready_standby(&mut e, 100);
    assert!(
        !out.contains(&Action::TryAcquire),
        "not before the primary stopped cleanly"
    );
    let out = e.step(
        Event::Optime(Some(Optime {
            node: "n1".into(),
            timeline: Some(1),
            lsn: 100,
            shutdown: true,
        })),
        t0,
    );
    assert!(out.contains(&Action::TryAcquire), "{out:?}");
}
