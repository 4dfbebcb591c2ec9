//! Agreement assumptions: per-watch sync, unreadable peers, and the peers' own leases.

use super::tests::{TTL, peers, route, router};
use super::*;
use crate::records::{ProxyStatus, RECORD_VERSION};

#[test]
fn one_watch_read_again_does_not_vouch_for_another_still_broken() {
    let mut r = router();
    let t0 = Instant::now();
    r.step(RouteEvent::Contact { sent: t0 }, t0);
    r.step(RouteEvent::LeaderObserved(route("n1", 5)), t0);
    // etcd loses its quorum: every watch breaks.
    r.step(RouteEvent::WatchLost(Watch::Leader), t0);
    let t1 = t0 + Duration::from_secs(1);
    r.step(RouteEvent::WatchLost(Watch::Managed), t1);
    // The other watch is read first: the leader's view is still stale.
    let t2 = t0 + Duration::from_millis(1500);
    r.step(RouteEvent::Contact { sent: t2 }, t2);
    assert!(
        r.step(RouteEvent::WatchSynced(Watch::Managed), t2)
            .is_empty()
    );
    // The grace still counts from the first break.
    let grace_end = t0 + TTL / 3;
    assert_eq!(r.next_wake(), Some(grace_end));
    let out = r.step(RouteEvent::Tick, grace_end);
    assert!(
        matches!(out[0], RouteAction::Cut { token: 5, reason } if reason.contains("watch lost")),
        "{out:?}"
    );
    assert_eq!(r.route(), None);
    // Contact goes on and the other watch stays in sync: still no route from the stale view.
    let t3 = grace_end + Duration::from_secs(1);
    assert!(r.step(RouteEvent::Contact { sent: t3 }, t3).is_empty());
    assert!(
        r.step(RouteEvent::WatchSynced(Watch::Managed), t3)
            .is_empty()
    );
    assert_eq!(r.route(), None);
    // The leader's watch is read again: it shows a new leader, routed now.
    r.step(RouteEvent::LeaderObserved(route("n2", 9)), t3);
    let out = r.step(RouteEvent::WatchSynced(Watch::Leader), t3);
    assert_eq!(out, vec![RouteAction::Set(route("n2", 9))]);
}

#[test]
fn watches_not_read_yet_start_no_route() {
    let mut r = router();
    let t0 = Instant::now();
    for w in Watch::ALL {
        r.step(RouteEvent::WatchLost(w), t0);
    }
    r.step(RouteEvent::Contact { sent: t0 }, t0);
    r.step(RouteEvent::LeaderObserved(route("n1", 5)), t0);
    r.step(RouteEvent::WatchSynced(Watch::Leader), t0);
    r.step(RouteEvent::WatchSynced(Watch::Managed), t0);
    assert_eq!(r.route(), None, "unmanaged/proxies/<me> not read yet");
    let out = r.step(RouteEvent::WatchSynced(Watch::ProxyUnmanaged), t0);
    assert_eq!(out, vec![RouteAction::Set(route("n1", 5))]);
}

fn status(location: &str, token: i64, managed: bool, lease_ttl_ms: Option<u64>) -> ProxyStatus {
    ProxyStatus {
        version: RECORD_VERSION,
        name: "p2".into(),
        location: location.into(),
        leader: Some("n1".into()),
        token: Some(token),
        mode: "userspace".into(),
        sessions: 1,
        held: 0,
        draining: None,
        drain_left: 0,
        managed,
        pooled: None,
        lease_ttl_ms,
        updated_ms: 1,
    }
}

#[test]
fn a_peer_status_counts_only_for_a_managed_proxy_of_our_location() {
    let p = PeerRoute::of(&status("dca", 5, true, Some(10_000)), "dca").unwrap();
    assert_eq!(p.tokens, vec![5]);
    assert_eq!(p.lease_ttl, Some(Duration::from_secs(10)));
    assert_eq!(PeerRoute::of(&status("dcb", 5, true, None), "dca"), None);
    assert_eq!(PeerRoute::of(&status("dca", 5, false, None), "dca"), None);
}

#[test]
fn an_unreadable_peer_status_holds_a_new_leader_back_until_its_key_goes() {
    let mut r = router();
    let t0 = Instant::now();
    r.step(RouteEvent::Contact { sent: t0 }, t0);
    r.step(RouteEvent::LeaderObserved(route("n1", 5)), t0);
    r.step(RouteEvent::Peers(Some(vec![PeerRoute::unreadable()])), t0);
    let out = r.step(RouteEvent::LeaderObserved(route("n2", 9)), t0);
    assert_eq!(out.last(), Some(&RouteAction::AwaitPeers { token: 9 }));
    assert_eq!(r.route(), None, "it may be a newer agent still on n1");
    // Its key is deleted (its lease ended): nobody is left on the old leader.
    let out = r.step(RouteEvent::Peers(Some(peers(&[]))), t0);
    assert_eq!(out, vec![RouteAction::Set(route("n2", 9))]);
}

#[test]
fn a_peer_that_trusts_etcd_longer_holds_a_new_leader_back_for_its_lease() {
    let long = Duration::from_secs(10);
    let mut r = router();
    let t0 = Instant::now();
    let silent = PeerRoute {
        tokens: vec![5],
        lease_ttl: Some(long),
    };
    r.step(RouteEvent::Peers(Some(vec![silent])), t0);
    r.step(RouteEvent::LeaderObserved(route("n2", 9)), t0);
    r.step(RouteEvent::Contact { sent: t0 }, t0);
    assert_eq!(r.route(), None);
    // Past our own lease the peer may still trust etcd (and route n1): still held.
    let t1 = t0 + TTL;
    r.step(RouteEvent::Contact { sent: t1 }, t1);
    assert!(r.step(RouteEvent::Tick, t1).is_empty());
    assert_eq!(r.route(), None);
    assert_eq!(r.next_wake(), Some(t0 + long));
    let t2 = t0 + long;
    r.step(RouteEvent::Contact { sent: t2 }, t2);
    assert_eq!(r.route(), Some(&route("n2", 9).unwrap()));
}

#[test]
fn a_peer_that_trusts_etcd_shorter_still_waits_our_own_lease() {
    let mut r = router();
    let t0 = Instant::now();
    let short = PeerRoute {
        tokens: vec![5],
        lease_ttl: Some(Duration::from_secs(2)),
    };
    r.step(RouteEvent::Peers(Some(vec![short])), t0);
    r.step(RouteEvent::LeaderObserved(route("n2", 9)), t0);
    r.step(RouteEvent::Contact { sent: t0 }, t0);
    let t1 = t0 + Duration::from_secs(3);
    r.step(RouteEvent::Contact { sent: t1 }, t1);
    assert_eq!(r.route(), None);
    assert_eq!(r.next_wake(), Some(t0 + TTL));
}
