//! The manager when etcd degrades: a minority loss changes nothing; a majority loss makes the
//! leader step down by its own deadline, and nobody can claim until etcd has a quorum again.

mod common;

use std::time::{Duration, Instant};

use common::*;
use harp_tests::TestCluster;

#[test]
fn one_etcd_member_down_changes_nothing() {
    let mut c = TestCluster::start_with(
        "minority",
        &[("n1", "dca", 100), ("n2", "dca", 100)],
        3,
        1000,
    );
    let first = wait_leader_not(&c, "dca", None);
    let (_, token) = leader(&c, "dca").unwrap();
    // Stop each member in turn (one of them is etcd's own leader): the lease never lapses.
    for m in 0..3 {
        c.etcd.stop_member(m);
        std::thread::sleep(Duration::from_secs(4)); // longer than the 3 s lease
        assert_eq!(
            role(&mut c, &first.node).as_deref(),
            Some("leader"),
            "member {m} down\n{}",
            c.manager_logs(20)
        );
        c.etcd.start_member(m);
        c.etcd.wait_writable();
        let (now, t) = leader(&c, "dca").unwrap();
        assert_eq!(
            (now.node.as_str(), t),
            (first.node.as_str(), token),
            "member {m} down changed the lead"
        );
    }
}

#[test]
fn etcd_majority_down_leader_steps_down_by_its_deadline() {
    let mut c = TestCluster::start_with(
        "majority",
        &[("n1", "dca", 100), ("n2", "dca", 100)],
        3,
        1000,
    );
    let first = wait_leader_not(&c, "dca", None);
    let other = if first.node == "n1" { "n2" } else { "n1" };
    c.etcd.stop_member(1);
    c.etcd.stop_member(2);
    let t = Instant::now();
    let name = first.node.clone();
    let stepped = eventually(LONG, || role(&mut c, &name).as_deref() == Some("follower"));
    let took = t.elapsed();
    assert!(
        stepped,
        "the leader kept leading without etcd\n{}",
        c.manager_logs(20)
    );
    // The lease is 3 s: it must step down before etcd could have expired it and after a real
    // wait (not at the first failed keep-alive).
    assert!(
        took <= Duration::from_secs(3),
        "stepped down after {took:?}, later than the lease"
    );
    assert!(
        took >= Duration::from_millis(500),
        "stepped down after only {took:?}"
    );
    // Nobody claims while there is no quorum.
    for _ in 0..20 {
        assert_eq!(role(&mut c, other).as_deref(), Some("follower"));
        assert_eq!(role(&mut c, &first.node).as_deref(), Some("follower"));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Quorum back: exactly one leader again.
    c.etcd.start_member(1);
    c.etcd.start_member(2);
    c.etcd.wait_writable();
    // The key left from before the outage may still be there for a moment (its manager deletes
    // it as stale); wait until the key and a manager's own view agree.
    let mut back = None;
    let agreed = eventually(LONG, || {
        let Some((rec, _)) = leader(&c, "dca") else {
            return false;
        };
        let ok = role(&mut c, &rec.node).as_deref() == Some("leader");
        back = Some(rec.node);
        ok
    });
    assert!(
        agreed,
        "no agreed leader after the quorum came back\n{}",
        c.manager_logs(30)
    );
    let back = back.unwrap();
    let peer = if back == "n1" { "n2" } else { "n1" };
    assert_eq!(role(&mut c, peer).as_deref(), Some("follower"));
}
