//! The election driven by a fake clock: every rule of the protocol as a user would state it.

use super::*;

const TTL: Duration = Duration::from_secs(6);
const STEP: Duration = Duration::from_millis(500);
const DRAIN: Duration = Duration::from_secs(5);

fn params(node: &str, priority: i32) -> Params {
    Params {
        node: node.into(),
        location: "dca".into(),
        priority,
        lease_ttl: TTL,
        maximum_lag: -1,
        candidate_step: STEP,
        retry_min: Duration::from_millis(100),
        retry_max: Duration::from_secs(2),
        stop_when_fenced: false,
        server_transfer_timeout: DRAIN,
        streaming: false,
        synchronous: false,
    }
}

fn healthy() -> Event {
    Event::Postgres {
        state: PgState::Primary,
        wal_lsn: Some(100),
    }
}

fn peer(priority: i32, state: PgState, lsn: u64) -> Option<Peer> {
    Some(Peer {
        location: "dca".into(),
        postgres: state,
        priority,
        wal_lsn: Some(lsn),
    })
}

fn holder(node: &str, token: i64) -> Option<Holder> {
    Some(Holder {
        node: node.into(),
        token,
    })
}

/// A healthy node whose session started a settle period ago, whose lease etcd renewed just now,
/// and that sees the lease vacant; returns the clock.
fn ready(e: &mut Election) -> (Instant, Vec<Action>) {
    let start = Instant::now();
    e.step(Event::SessionUp { sent: start }, start);
    let t0 = start + STEP;
    e.step(Event::KeepAliveOk { sent: t0 }, t0);
    e.step(healthy(), t0);
    let out = e.step(Event::LeaderObserved(None), t0);
    (t0, out)
}

fn leader(e: &mut Election) -> Instant {
    let (t0, out) = ready(e);
    assert_eq!(out, vec![Action::TryAcquire]);
    let out = e.step(Event::Acquired { token: 7, sent: t0 }, t0);
    assert!(e.is_leader());
    assert_eq!(out, vec![Action::PublishStatus]);
    t0
}

fn has_release(out: &[Action], reason: &str) -> bool {
    out.iter()
        .any(|a| matches!(a, Action::Release { token: 7, reason: r } if r.contains(reason)))
}

#[test]
fn a_healthy_node_acquires_a_vacant_lease_at_once() {
    let mut e = Election::new(params("n1", 100));
    leader(&mut e);
    assert_eq!(e.holder(), holder("n1", 7).as_ref());
}

#[test]
fn nothing_is_tried_before_postgres_is_checked_or_the_key_is_seen() {
    let mut e = Election::new(params("n1", 100));
    let t0 = Instant::now();
    assert!(e.step(Event::SessionUp { sent: t0 }, t0).is_empty());
    assert!(e.step(Event::LeaderObserved(None), t0).is_empty());
    assert_eq!(e.next_wake(), None);
    let mut e = Election::new(params("n1", 100));
    e.step(Event::SessionUp { sent: t0 }, t0);
    assert_eq!(e.step(healthy(), t0), vec![Action::PublishStatus]);
}

#[test]
fn keep_alives_renew_and_silence_steps_down_by_the_local_deadline() {
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    let margin = e.params().safety_margin();
    assert_eq!(e.next_wake(), Some(t0 + TTL - margin));
    let t2 = t0 + Duration::from_secs(2);
    assert!(e.step(Event::KeepAliveOk { sent: t2 }, t2).is_empty());
    assert_eq!(e.next_wake(), Some(t2 + TTL - margin));
    // A stale acknowledgement never moves the deadline back.
    e.step(Event::KeepAliveOk { sent: t0 }, t2);
    assert_eq!(e.next_wake(), Some(t2 + TTL - margin));
    // etcd goes silent: still leader just before the deadline, not at it.
    assert!(
        e.step(Event::Tick, t2 + TTL - margin - Duration::from_millis(1))
            .is_empty()
    );
    let out = e.step(Event::Tick, t2 + TTL - margin);
    assert!(!e.is_leader());
    assert!(
        matches!(&out[0], Action::StepDown { token: 7, reason } if reason.contains("deadline"))
    );
    // The key stays: it is on our lease, which etcd may still hold (see the resume tests).
    assert!(!out.iter().any(|a| matches!(a, Action::Release { .. })));
}

#[test]
fn a_lease_that_outlived_the_deadline_is_led_on_under_the_same_token() {
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    e.step(Event::LeaderObserved(holder("n1", 7)), t0);
    let deadline = e.next_wake().unwrap();
    e.step(Event::Tick, deadline);
    assert!(!e.is_leader());
    // etcd lost its quorum and kept our lease (it extends leases across its elections): the
    // first acknowledged keep-alive proves the key is still ours.
    let back = deadline + Duration::from_secs(5);
    let out = e.step(Event::KeepAliveOk { sent: back }, back);
    assert!(e.is_leader(), "{out:?}");
    assert_eq!(
        e.role(),
        Role::Leader {
            token: 7,
            deadline: back + TTL - e.params().safety_margin()
        }
    );
    assert!(out.contains(&Action::PublishStatus));
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::Release { .. } | Action::TryAcquire))
    );
}

#[test]
fn a_lapsed_key_is_released_when_we_may_not_lead_and_forgotten_with_the_lease() {
    // Postgres went down meanwhile: the key is released as soon as etcd answers.
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    e.step(Event::LeaderObserved(holder("n1", 7)), t0);
    let deadline = e.next_wake().unwrap();
    e.step(Event::Tick, deadline);
    let out = e.step(
        Event::Postgres {
            state: PgState::Down,
            wal_lsn: None,
        },
        deadline,
    );
    assert!(has_release(&out, "stale key"), "{out:?}");
    // The lease expired instead: nothing to resume, the key went with it.
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    e.step(Event::LeaderObserved(holder("n1", 7)), t0);
    let deadline = e.next_wake().unwrap();
    e.step(Event::Tick, deadline);
    e.step(Event::SessionLost, deadline);
    e.step(Event::SessionUp { sent: deadline }, deadline);
    let later = deadline + Duration::from_secs(1);
    e.step(Event::KeepAliveOk { sent: later }, later);
    assert!(!e.is_leader());
}

#[test]
fn the_deadline_is_before_etcd_could_expire_the_lease() {
    let p = params("n1", 100);
    assert!(p.safety_margin() > Duration::ZERO);
    assert!(p.safety_margin() < TTL / 2);
}

#[test]
fn losing_the_key_to_another_holder_steps_down() {
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    let out = e.step(Event::LeaderObserved(holder("n2", 9)), t0);
    assert!(!e.is_leader());
    assert!(matches!(&out[0], Action::StepDown { token: 7, .. }));
    assert!(!out.contains(&Action::TryAcquire));
}

#[test]
fn our_own_key_seen_again_changes_nothing() {
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    assert!(
        e.step(Event::LeaderObserved(holder("n1", 7)), t0)
            .is_empty()
    );
    assert!(e.is_leader());
}

#[test]
fn postgres_down_releases_at_once_and_up_again_competes_again() {
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    let down = Event::Postgres {
        state: PgState::Down,
        wal_lsn: None,
    };
    let out = e.step(down, t0);
    assert!(!e.is_leader());
    assert!(has_release(&out, "postgres is down"), "{out:?}");
    assert!(out.contains(&Action::PublishStatus));
    e.step(Event::Released, t0);
    e.step(Event::LeaderObserved(holder("n2", 9)), t0);
    e.step(Event::LeaderObserved(None), t0);
    assert!(e.step(healthy(), t0).contains(&Action::TryAcquire));
}

#[test]
fn a_standby_never_leads() {
    let mut e = Election::new(params("n1", 100));
    let t0 = Instant::now();
    e.step(Event::SessionUp { sent: t0 }, t0);
    e.step(
        Event::Postgres {
            state: PgState::Standby,
            wal_lsn: Some(5),
        },
        t0,
    );
    assert!(
        !e.step(Event::LeaderObserved(None), t0)
            .contains(&Action::TryAcquire)
    );
    assert_eq!(
        e.ineligible_reason().as_deref(),
        Some("postgres is in recovery")
    );
}

#[test]
fn a_fenced_node_never_leads_and_releases_if_leading() {
    let mut e = Election::new(params("n1", 100));
    let t0 = Instant::now();
    e.step(
        Event::Fenced {
            node: "n1".into(),
            fenced: true,
        },
        t0,
    );
    e.step(healthy(), t0);
    e.step(Event::SessionUp { sent: t0 }, t0);
    assert!(e.step(Event::LeaderObserved(None), t0).is_empty());
    assert_eq!(e.next_wake(), None);

    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    let fence = Event::Fenced {
        node: "n1".into(),
        fenced: true,
    };
    assert!(has_release(&e.step(fence, t0), "fenced"));
    // A fence on another node is no reason to leave.
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    let other = Event::Fenced {
        node: "n2".into(),
        fenced: true,
    };
    assert!(e.step(other, t0).is_empty());
}

#[test]
fn priority_minus_one_never_leads() {
    let mut e = Election::new(params("n1", -1));
    let (_, out) = ready(&mut e);
    assert!(out.is_empty());
    assert_eq!(e.next_wake(), None);
}

#[test]
fn a_lower_priority_candidate_waits_for_the_better_one() {
    let mut e = Election::new(params("n2", 50));
    let start = Instant::now();
    e.step(Event::SessionUp { sent: start }, start);
    let t0 = start + STEP; // settled
    e.step(
        Event::PeerStatus {
            node: "n1".into(),
            peer: peer(100, PgState::Primary, 100),
        },
        t0,
    );
    let out = {
        e.step(healthy(), t0);
        e.step(Event::LeaderObserved(None), t0)
    };
    assert!(out.is_empty(), "rank 1 must wait: {out:?}");
    assert_eq!(e.next_wake(), Some(t0 + STEP));
    // The better node wins in time: nothing to do.
    assert!(
        e.step(Event::LeaderObserved(holder("n1", 3)), t0 + STEP / 2)
            .is_empty()
    );
    // It dies; it cannot take the lease: after one step we try.
    e.step(Event::LeaderObserved(None), t0 + STEP);
    assert!(e.step(Event::Tick, t0 + STEP + STEP / 2).is_empty());
    assert_eq!(e.step(Event::Tick, t0 + STEP * 2), vec![Action::TryAcquire]);
}

#[test]
fn unhealthy_fenced_or_other_location_peers_do_not_outrank() {
    let mut e = Election::new(params("n2", 50));
    let t0 = Instant::now();
    let peers = [
        ("n1", peer(100, PgState::Down, 100)),
        ("n3", peer(200, PgState::Primary, 100)),
        ("n4", peer(300, PgState::Standby, 100)),
        ("n5", peer(-1, PgState::Primary, 100)),
    ];
    for (node, p) in peers {
        e.step(PeerStatus(node, p), t0);
    }
    e.step(
        Event::Fenced {
            node: "n3".into(),
            fenced: true,
        },
        t0,
    );
    let mut other_dc = peer(900, PgState::Primary, 100);
    other_dc.as_mut().unwrap().location = "dcb".into();
    e.step(PeerStatus("n6", other_dc), t0);
    let (_, out) = ready(&mut e);
    assert_eq!(out, vec![Action::TryAcquire]);
}

#[allow(non_snake_case)]
fn PeerStatus(node: &str, peer: Option<Peer>) -> Event {
    Event::PeerStatus {
        node: node.into(),
        peer,
    }
}

#[test]
fn equal_priorities_break_ties_by_name() {
    let mut e = Election::new(params("n2", 100));
    e.step(
        PeerStatus("n1", peer(100, PgState::Primary, 1)),
        Instant::now(),
    );
    assert!(ready(&mut e).1.is_empty());
    let mut e = Election::new(params("n1", 100));
    e.step(
        PeerStatus("n2", peer(100, PgState::Primary, 1)),
        Instant::now(),
    );
    assert_eq!(ready(&mut e).1, vec![Action::TryAcquire]);
}

#[test]
fn etcd_timeouts_back_off_exponentially_up_to_the_cap() {
    let mut e = Election::new(params("n1", 100));
    let (mut now, _) = ready(&mut e);
    let mut delays = Vec::new();
    for _ in 0..7 {
        assert!(e.step(Event::AcquireFailed, now).is_empty());
        let at = e.next_wake().unwrap();
        delays.push((at - now).as_millis());
        assert!(
            e.step(Event::Tick, at - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(e.step(Event::Tick, at), vec![Action::TryAcquire]);
        now = at;
    }
    assert_eq!(delays, vec![100, 200, 400, 800, 1600, 2000, 2000]);
    e.step(
        Event::AcquireLost {
            holder: holder("n2", 4).unwrap(),
        },
        now,
    );
    assert_eq!(e.holder(), holder("n2", 4).as_ref());
    assert_eq!(e.next_wake(), None);
}

#[test]
fn losing_the_race_follows_the_winner() {
    let mut e = Election::new(params("n1", 100));
    let (t0, _) = ready(&mut e);
    let out = e.step(
        Event::AcquireLost {
            holder: holder("n2", 4).unwrap(),
        },
        t0,
    );
    assert!(out.is_empty());
    assert!(!e.is_leader());
}

#[test]
fn postgres_failing_during_the_acquire_releases_right_after_it() {
    let mut e = Election::new(params("n1", 100));
    let (t0, _) = ready(&mut e);
    e.step(
        Event::Postgres {
            state: PgState::Down,
            wal_lsn: None,
        },
        t0,
    );
    let out = e.step(Event::Acquired { token: 7, sent: t0 }, t0);
    assert!(has_release(&out, "postgres is down"), "{out:?}");
    assert!(!e.is_leader());
}

#[test]
fn lease_lost_in_etcd_steps_down() {
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    let out = e.step(Event::SessionLost, t0);
    assert!(matches!(&out[0], Action::StepDown { reason, .. } if reason.contains("expired")));
    assert!(!e.is_leader());
    // No new attempt until a new session exists.
    assert!(e.step(Event::LeaderObserved(None), t0).is_empty());
    assert_eq!(
        e.step(Event::SessionUp { sent: t0 }, t0),
        vec![Action::TryAcquire]
    );
}

#[test]
fn a_node_too_far_behind_does_not_try() {
    let mut p = params("n1", 100);
    p.maximum_lag = 500;
    let mut e = Election::new(p);
    e.step(
        PeerStatus("n2", peer(10, PgState::Standby, 1000)),
        Instant::now(),
    );
    let (t0, out) = ready(&mut e); // we are at 100: 900 bytes behind
    assert!(out.is_empty());
    assert!(e.ineligible_reason().unwrap().contains("maximum_lag 500"));
    // Caught up: it tries.
    let out = e.step(
        Event::Postgres {
            state: PgState::Primary,
            wal_lsn: Some(800),
        },
        t0,
    );
    assert!(out.contains(&Action::TryAcquire), "{out:?}");
}

#[test]
fn shutdown_hands_over_before_exit() {
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    let out = e.step(Event::Shutdown, t0);
    assert!(has_release(&out, "shutting down"));
    assert!(!out.contains(&Action::Exit));
    assert!(e.step(Event::Released, t0).contains(&Action::Exit));

    let mut e = Election::new(params("n1", 100));
    let (t0, _) = ready(&mut e);
    e.step(
        Event::AcquireLost {
            holder: holder("n2", 4).unwrap(),
        },
        t0,
    );
    assert!(e.step(Event::Shutdown, t0).contains(&Action::Exit));
    // Even a failed release lets the manager exit: the lease revoke follows.
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    e.step(Event::Shutdown, t0);
    assert!(e.step(Event::ReleaseFailed, t0).contains(&Action::Exit));
}

#[test]
fn actions_read_well_in_logs() {
    let a = Action::Release {
        token: 42,
        reason: "postgres is down".into(),
    };
    assert_eq!(
        a.to_string(),
        "release the leader lease (token 42): postgres is down"
    );
    assert_eq!(
        Action::TryAcquire.to_string(),
        "try to acquire the leader lease"
    );
}

#[test]
fn a_failed_release_is_retried_once_etcd_answers() {
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    let deadline = e.next_wake().unwrap();
    e.step(Event::Tick, deadline);
    // Fenced meanwhile: the key must go, but etcd is unreachable: the delete fails; it is
    // retried after the backoff.
    let out = e.step(
        Event::Fenced {
            node: "n1".into(),
            fenced: true,
        },
        deadline,
    );
    assert!(has_release(&out, "stale key"), "{out:?}");
    assert!(e.step(Event::ReleaseFailed, deadline).is_empty());
    let retry = e.next_wake().unwrap();
    assert_eq!(retry - deadline, Duration::from_millis(100));
    assert!(has_release(&e.step(Event::Tick, retry), "stale key"));
    // Deleted: the key is vacant again; unfenced, the node competes afresh.
    assert!(e.step(Event::Released, retry).is_empty(), "fenced: no try");
    assert_eq!(e.holder(), None);
    let out = e.step(
        Event::Fenced {
            node: "n1".into(),
            fenced: false,
        },
        retry,
    );
    assert!(out.contains(&Action::TryAcquire), "{out:?}");
    let _ = t0;
}

#[test]
fn a_key_left_by_an_earlier_run_of_this_node_is_deleted_by_its_token() {
    let mut e = Election::new(params("n1", 100));
    let t0 = Instant::now();
    e.step(healthy(), t0);
    e.step(Event::SessionUp { sent: t0 }, t0);
    let out = e.step(Event::LeaderObserved(holder("n1", 3)), t0);
    assert_eq!(
        out,
        vec![Action::Release {
            token: 3,
            reason: "the leader key names this node, which does not lead (stale key)".into()
        }]
    );
    // While our own acquire is in flight, our new key seen by the watch is not stale.
    let mut e = Election::new(params("n1", 100));
    let (t0, _) = ready(&mut e);
    assert!(
        e.step(Event::LeaderObserved(holder("n1", 8)), t0)
            .is_empty()
    );
    e.step(Event::Acquired { token: 8, sent: t0 }, t0);
    assert!(e.is_leader());
}

fn switchover(target: &str, from_token: i64) -> Event {
    Event::Switchover(Some(Switchover {
        target: target.into(),
        from_token,
        force: false,
    }))
}

#[test]
fn a_switchover_hands_over_to_a_healthy_target_only() {
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    // The target is not known yet: the leader keeps the lease.
    assert!(e.step(switchover("n2", 7), t0).is_empty());
    assert!(e.switchover_refusal().unwrap().contains("no status"));
    e.step(PeerStatus("n2", peer(100, PgState::Down, 1)), t0);
    assert!(e.is_leader(), "a down target must not get the lease");
    let out = e.step(PeerStatus("n2", peer(100, PgState::Primary, 1)), t0);
    assert!(has_release(&out, "switchover to n2"), "{out:?}");
    // An intent for an older leadership is ignored.
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    e.step(PeerStatus("n2", peer(100, PgState::Primary, 1)), t0);
    assert!(e.step(switchover("n2", 3), t0).is_empty());
    assert!(e.is_leader());
}

#[test]
fn while_a_switchover_lives_only_its_target_may_acquire() {
    let mut e = Election::new(params("n1", 200));
    e.step(switchover("n3", 7), Instant::now());
    let (t0, out) = ready(&mut e);
    assert!(out.is_empty(), "n1 is not the target");
    assert_eq!(e.next_wake(), None);
    // The intent expires: normal election resumes.
    assert_eq!(
        e.step(Event::Switchover(None), t0),
        vec![Action::TryAcquire]
    );
    // The target tries at once even if a better-ranked peer exists.
    let mut e = Election::new(params("n3", 10));
    e.step(
        PeerStatus("n1", peer(200, PgState::Primary, 1)),
        Instant::now(),
    );
    e.step(switchover("n3", 7), Instant::now());
    assert_eq!(ready(&mut e).1, vec![Action::TryAcquire]);
}

#[test]
fn unmanaged_nodes_change_no_leadership() {
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    e.step(Event::Managed(false), t0);
    let down = Event::Postgres {
        state: PgState::Down,
        wal_lsn: None,
    };
    let out = e.step(down, t0);
    assert!(
        e.is_leader(),
        "unmanaged: postgres down does not release: {out:?}"
    );
    // But the local deadline still holds: a lease we cannot renew is not ours.
    let deadline = e.next_wake().unwrap();
    assert!(matches!(
        e.step(Event::Tick, deadline)[0],
        Action::StepDown { .. }
    ));
    // A follower does not take a vacant lease while unmanaged; managed again, it does.
    let mut e = Election::new(params("n1", 100));
    e.step(Event::Managed(false), Instant::now());
    let (t0, out) = ready(&mut e);
    assert!(out.is_empty());
    assert_eq!(e.step(Event::Managed(true), t0), vec![Action::TryAcquire]);
}

#[test]
fn a_fresh_manager_settles_before_competing_so_priority_decides_the_first_election() {
    let mut e = Election::new(params("n2", 50));
    let t0 = Instant::now();
    e.step(healthy(), t0);
    e.step(Event::SessionUp { sent: t0 }, t0);
    assert!(e.step(Event::LeaderObserved(None), t0).is_empty());
    assert_eq!(e.next_wake(), Some(t0 + STEP));
    // The better node's status arrives while we settle: we now wait our rank on top.
    e.step(
        PeerStatus("n1", peer(100, PgState::Primary, 1)),
        t0 + STEP / 2,
    );
    assert!(e.step(Event::Tick, t0 + STEP).is_empty());
    assert_eq!(e.next_wake(), Some(t0 + STEP * 2));
}

#[test]
fn a_manager_joining_a_running_cluster_does_not_settle() {
    let mut e = Election::new(params("n1", 100));
    let t0 = Instant::now();
    e.step(healthy(), t0);
    e.step(Event::LeaderObserved(holder("n2", 4)), t0);
    e.step(Event::SessionUp { sent: t0 }, t0);
    // The leader goes: we are the best candidate and try at once.
    assert_eq!(
        e.step(Event::LeaderObserved(None), t0),
        vec![Action::TryAcquire]
    );
}

#[test]
fn stop_database_when_fenced_stops_then_starts_postgres() {
    let mut p = params("n1", 100);
    p.stop_when_fenced = true;
    let mut e = Election::new(p);
    let t0 = leader(&mut e);
    let fence = |fenced| Event::Fenced {
        node: "n1".into(),
        fenced,
    };
    let out = e.step(fence(true), t0);
    assert!(has_release(&out, "fenced"), "{out:?}");
    assert!(out.contains(&Action::StopPostgres), "{out:?}");
    assert!(e.step(fence(true), t0).is_empty(), "no second stop");
    assert!(e.step(fence(false), t0).contains(&Action::StartPostgres));
    // A fence of another node concerns only that node.
    let other = Event::Fenced {
        node: "n2".into(),
        fenced: true,
    };
    assert!(!e.step(other, t0).contains(&Action::StopPostgres));
}

/// Proxy `name` of `location` routes under `token` and drains `draining` with `left` sessions.
fn proxy_at(
    name: &str,
    location: &str,
    token: Option<i64>,
    draining: Option<i64>,
    left: u64,
) -> Event {
    let location = location.into();
    let state = ProxyDrain {
        location,
        token,
        draining,
        left,
        pooled: None,
    };
    Event::ProxyDrain {
        proxy: name.into(),
        state: Some(ProxyState::Status(state)),
    }
}

fn drain_state(name: &str, token: Option<i64>, draining: Option<i64>, left: u64) -> Event {
    proxy_at(name, "dca", token, draining, left)
}

/// Our leader record rewritten: drain for a switchover to `to`, or cut when `leaving`.
fn mark(to: Option<&str>, leaving: bool) -> Action {
    Action::MarkLeader {
        token: 7,
        handover_to: to.map(str::to_owned),
        leaving,
    }
}

mod acquire;
mod leave;
mod streaming;
