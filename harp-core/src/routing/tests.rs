use super::*;

pub(super) const TTL: Duration = Duration::from_secs(6);

/// A router that knows there is no other proxy (the peers' statuses have been read).
pub(super) fn router() -> Router {
    let mut r = Router::new(TTL);
    r.step(RouteEvent::Peers(Some(peers(&[]))), Instant::now());
    r
}

/// One peer per token, each trusting etcd as long as we do.
pub(super) fn peers(tokens: &[i64]) -> Vec<PeerRoute> {
    tokens
        .iter()
        .map(|&t| PeerRoute {
            tokens: vec![t],
            lease_ttl: None,
        })
        .collect()
}

pub(super) fn route(node: &str, token: i64) -> Option<Route> {
    Some(Route {
        node: node.into(),
        address: "10.0.0.1".into(),
        port: 5432,
        token,
    })
}

#[test]
fn routes_only_once_etcd_contact_is_proven() {
    let mut r = router();
    let t0 = Instant::now();
    assert!(
        r.step(RouteEvent::LeaderObserved(route("n1", 5)), t0)
            .is_empty()
    );
    assert_eq!(r.route(), None, "no contact yet: hold");
    let out = r.step(RouteEvent::Contact { sent: t0 }, t0);
    assert_eq!(out, vec![RouteAction::Set(route("n1", 5))]);
    assert_eq!(r.route().unwrap().node, "n1");
}

#[test]
fn a_new_leader_cuts_the_old_sessions_first() {
    let mut r = router();
    let t0 = Instant::now();
    r.step(RouteEvent::Contact { sent: t0 }, t0);
    r.step(RouteEvent::LeaderObserved(route("n1", 5)), t0);
    let out = r.step(RouteEvent::LeaderObserved(route("n2", 9)), t0);
    assert_eq!(
        out,
        vec![
            RouteAction::Cut {
                token: 5,
                reason: "a new leader took over"
            },
            RouteAction::Set(route("n2", 9)),
        ]
    );
    // The same leader seen again changes nothing.
    assert!(
        r.step(RouteEvent::LeaderObserved(route("n2", 9)), t0)
            .is_empty()
    );
}

#[test]
fn no_leader_holds_clients_and_cuts_the_old_sessions() {
    let mut r = router();
    let t0 = Instant::now();
    r.step(RouteEvent::Contact { sent: t0 }, t0);
    r.step(RouteEvent::LeaderObserved(route("n1", 5)), t0);
    let out = r.step(RouteEvent::LeaderObserved(None), t0);
    assert_eq!(
        out[0],
        RouteAction::Cut {
            token: 5,
            reason: "the leader gave up its lease"
        }
    );
    assert_eq!(out[1], RouteAction::Set(None));
    assert_eq!(
        out[1].to_string(),
        "hold new clients: no leader to route to"
    );
}

#[test]
fn silence_from_etcd_fails_closed_at_the_deadline_and_contact_restores() {
    let mut r = router();
    let t0 = Instant::now();
    r.step(RouteEvent::Contact { sent: t0 }, t0);
    r.step(RouteEvent::LeaderObserved(route("n1", 5)), t0);
    let deadline = t0 + TTL - safety_margin(TTL);
    assert_eq!(r.next_wake(), Some(deadline));
    assert!(
        r.step(RouteEvent::Tick, deadline - Duration::from_millis(1))
            .is_empty()
    );
    let out = r.step(RouteEvent::Tick, deadline);
    assert!(
        matches!(out[0], RouteAction::Cut { token: 5, reason } if reason.contains("fail closed"))
    );
    assert_eq!(r.route(), None);
    assert_eq!(r.next_wake(), None);
    let later = deadline + Duration::from_secs(1);
    let out = r.step(RouteEvent::Contact { sent: later }, later);
    assert_eq!(out, vec![RouteAction::Set(route("n1", 5))]);
}

#[test]
fn a_lost_session_fails_closed_at_once() {
    let mut r = router();
    let t0 = Instant::now();
    r.step(RouteEvent::Contact { sent: t0 }, t0);
    r.step(RouteEvent::LeaderObserved(route("n1", 5)), t0);
    let out = r.step(RouteEvent::SessionLost, t0);
    assert!(matches!(out[0], RouteAction::Cut { token: 5, .. }));
    assert_eq!(r.route(), None);
}

#[test]
fn unmanaged_keeps_the_current_route_until_managed_again() {
    let mut r = router();
    let t0 = Instant::now();
    r.step(RouteEvent::Contact { sent: t0 }, t0);
    r.step(RouteEvent::LeaderObserved(route("n1", 5)), t0);
    r.step(RouteEvent::Managed(false), t0);
    assert!(
        r.step(RouteEvent::LeaderObserved(route("n2", 9)), t0)
            .is_empty()
    );
    assert_eq!(r.route().unwrap().node, "n1");
    assert_eq!(
        r.next_wake(),
        None,
        "unmanaged: no fail-closed timer either"
    );
    let out = r.step(RouteEvent::Managed(true), t0);
    assert_eq!(out[1], RouteAction::Set(route("n2", 9)));
}

#[test]
fn a_broken_watch_keeps_the_route_for_a_grace_and_contact_alone_never_revives_it() {
    let mut r = router();
    let t0 = Instant::now();
    r.step(RouteEvent::Contact { sent: t0 }, t0);
    r.step(RouteEvent::LeaderObserved(route("n1", 5)), t0);
    assert!(
        r.step(RouteEvent::WatchLost(Watch::Leader), t0).is_empty(),
        "kept in grace"
    );
    let grace_end = t0 + TTL / 3;
    assert_eq!(r.next_wake(), Some(grace_end));
    // Re-read in time: nothing happens to clients.
    let mut quick = r.clone();
    assert!(
        quick
            .step(
                RouteEvent::WatchSynced(Watch::Leader),
                t0 + Duration::from_millis(150)
            )
            .is_empty()
    );
    assert_eq!(quick.route().unwrap().node, "n1");
    // No re-read within the grace: fail closed even though etcd still answers keep-alives.
    let out = r.step(RouteEvent::Contact { sent: grace_end }, grace_end);
    assert!(
        matches!(out[0], RouteAction::Cut { token: 5, reason } if reason.contains("watch lost")),
        "{out:?}"
    );
    assert_eq!(r.route(), None);
    // Contact goes on, the view is still stale: no route.
    let later = grace_end + Duration::from_secs(1);
    assert!(
        r.step(RouteEvent::Contact { sent: later }, later)
            .is_empty()
    );
    // The re-read shows the leader gave up: still nothing; then the new one: routed.
    r.step(RouteEvent::LeaderObserved(None), later);
    assert!(
        r.step(RouteEvent::WatchSynced(Watch::Leader), later)
            .is_empty()
    );
    let out = r.step(RouteEvent::LeaderObserved(route("n2", 9)), later);
    assert_eq!(out, vec![RouteAction::Set(route("n2", 9))]);
}

#[test]
fn after_an_outage_a_stale_view_is_not_routed_until_read_again() {
    let mut r = router();
    let t0 = Instant::now();
    r.step(RouteEvent::Contact { sent: t0 }, t0);
    r.step(RouteEvent::LeaderObserved(route("n1", 5)), t0);
    r.step(RouteEvent::WatchLost(Watch::Leader), t0);
    let deadline = t0 + TTL / 3;
    r.step(RouteEvent::Tick, deadline);
    assert_eq!(r.route(), None);
    // etcd is back: keep-alives answer before the watch is read again.
    let back = t0 + Duration::from_secs(10);
    assert!(r.step(RouteEvent::Contact { sent: back }, back).is_empty());
    assert_eq!(r.route(), None, "n1 may have lost its lease meanwhile");
    r.step(RouteEvent::LeaderObserved(route("n1", 5)), back);
    let out = r.step(RouteEvent::WatchSynced(Watch::Leader), back);
    assert_eq!(out, vec![RouteAction::Set(route("n1", 5))]);
}

#[test]
fn an_old_acknowledgement_never_shortens_trust() {
    let mut r = router();
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(2);
    r.step(RouteEvent::Contact { sent: t1 }, t1);
    r.step(RouteEvent::Contact { sent: t0 }, t1);
    r.step(RouteEvent::LeaderObserved(route("n1", 5)), t1);
    assert_eq!(r.next_wake(), Some(t1 + TTL - safety_margin(TTL)));
}

#[test]
fn a_switchover_drains_the_old_leader_then_routes_to_the_new_one() {
    let mut r = router();
    let t0 = Instant::now();
    r.step(RouteEvent::Contact { sent: t0 }, t0);
    r.step(RouteEvent::LeaderObserved(route("n1", 5)), t0);
    // An intent for another leadership is not ours to drain.
    assert!(r.step(RouteEvent::Switchover(Some(4)), t0).is_empty());
    let out = r.step(RouteEvent::Switchover(Some(5)), t0);
    assert_eq!(
        out,
        vec![RouteAction::Set(None), RouteAction::Drain { token: 5 }]
    );
    assert_eq!(r.route(), None, "new clients are held");
    assert_eq!(r.live().map(|l| l.token), Some(5), "sessions live on");
    assert_eq!(r.draining(), Some(5));
    // The old leader hands over: the rest is cut and the new leader routed.
    let out = r.step(RouteEvent::LeaderObserved(None), t0);
    assert_eq!(
        out[0].clone(),
        RouteAction::Cut {
            token: 5,
            reason: "the leader gave up its lease"
        }
    );
    assert_eq!(r.draining(), None);
    let out = r.step(RouteEvent::LeaderObserved(route("n2", 9)), t0);
    assert_eq!(out, vec![RouteAction::Set(route("n2", 9))]);
}

#[test]
fn a_withdrawn_switchover_routes_to_the_same_leader_again() {
    let mut r = router();
    let t0 = Instant::now();
    r.step(RouteEvent::Contact { sent: t0 }, t0);
    r.step(RouteEvent::LeaderObserved(route("n1", 5)), t0);
    r.step(RouteEvent::Switchover(Some(5)), t0);
    let out = r.step(RouteEvent::Switchover(None), t0);
    assert_eq!(out, vec![RouteAction::Set(route("n1", 5))], "no cut");
    assert_eq!(r.draining(), None);
}

#[test]
fn losing_etcd_during_a_drain_cuts_at_once() {
    let mut r = router();
    let t0 = Instant::now();
    r.step(RouteEvent::Contact { sent: t0 }, t0);
    r.step(RouteEvent::LeaderObserved(route("n1", 5)), t0);
    r.step(RouteEvent::Switchover(Some(5)), t0);
    let out = r.step(RouteEvent::SessionLost, t0);
    assert!(matches!(out[0], RouteAction::Cut { token: 5, .. }));
    assert_eq!(r.live(), None);
}

#[test]
fn a_new_leader_waits_until_the_other_proxies_left_the_old_one() {
    let mut r = router();
    let t0 = Instant::now();
    r.step(RouteEvent::Contact { sent: t0 }, t0);
    r.step(RouteEvent::Peers(Some(peers(&[5]))), t0);
    r.step(RouteEvent::LeaderObserved(route("n1", 5)), t0);
    assert_eq!(
        r.route().map(|r| r.token),
        Some(5),
        "peers on the same leader"
    );
    let out = r.step(RouteEvent::LeaderObserved(route("n2", 9)), t0);
    assert_eq!(
        out,
        vec![
            RouteAction::Cut {
                token: 5,
                reason: "a new leader took over"
            },
            RouteAction::Set(None),
            RouteAction::AwaitPeers { token: 9 },
        ]
    );
    assert!(r.routing().cuts(5), "our own old sessions are cut at once");
    assert_eq!(r.next_wake(), Some(t0 + TTL - safety_margin(TTL)));
    // A peer still on the old leader holds us; one held or on the new leader does not.
    let t1 = t0 + Duration::from_millis(3);
    assert!(
        r.step(RouteEvent::Peers(Some(peers(&[5, 9]))), t1)
            .is_empty()
    );
    let out = r.step(RouteEvent::Peers(Some(peers(&[9]))), t1);
    assert_eq!(out, vec![RouteAction::Set(route("n2", 9))]);
    // Routed once, a stale older record never holds it back again.
    assert!(r.step(RouteEvent::Peers(Some(peers(&[5]))), t1).is_empty());
    assert_eq!(r.route().map(|r| r.token), Some(9));
}

#[test]
fn a_silent_peer_holds_a_new_leader_back_for_one_lease_at_most() {
    let mut r = router();
    let t0 = Instant::now();
    r.step(RouteEvent::Peers(Some(peers(&[5]))), t0);
    r.step(RouteEvent::LeaderObserved(route("n2", 9)), t0);
    let out = r.step(RouteEvent::Contact { sent: t0 }, t0);
    assert_eq!(
        out,
        vec![RouteAction::Set(None), RouteAction::AwaitPeers { token: 9 }],
        "a first route waits too"
    );
    assert_eq!(r.route(), None);
    // Contact goes on; the peer never answers: by one lease it has failed closed.
    let t1 = t0 + TTL - Duration::from_millis(1);
    r.step(RouteEvent::Contact { sent: t1 }, t1);
    assert_eq!(r.route(), None);
    assert_eq!(r.next_wake(), Some(t0 + TTL));
    let out = r.step(RouteEvent::Tick, t0 + TTL);
    assert_eq!(out, vec![RouteAction::Set(route("n2", 9))]);
}

#[test]
fn peers_on_the_same_or_a_newer_leadership_never_hold_clients() {
    let mut r = router();
    let t0 = Instant::now();
    r.step(RouteEvent::Contact { sent: t0 }, t0);
    r.step(RouteEvent::Peers(Some(peers(&[9, 12]))), t0);
    let out = r.step(RouteEvent::LeaderObserved(route("n2", 9)), t0);
    assert_eq!(out, vec![RouteAction::Set(route("n2", 9))]);
}

#[test]
fn a_switchover_routes_the_new_leader_once_every_proxy_closed_the_old_sessions() {
    let mut r = router();
    let t0 = Instant::now();
    r.step(RouteEvent::Contact { sent: t0 }, t0);
    r.step(RouteEvent::LeaderObserved(route("n1", 5)), t0);
    r.step(RouteEvent::Switchover(Some(5)), t0);
    // Another proxy is still draining the old leader when the new one appears.
    r.step(RouteEvent::Peers(Some(peers(&[5]))), t0);
    let out = r.step(RouteEvent::LeaderObserved(route("n2", 9)), t0);
    assert!(matches!(out[0], RouteAction::Cut { token: 5, .. }));
    assert_eq!(out.last(), Some(&RouteAction::AwaitPeers { token: 9 }));
    assert_eq!(r.route(), None);
    let out = r.step(RouteEvent::Peers(Some(peers(&[]))), t0);
    assert_eq!(out, vec![RouteAction::Set(route("n2", 9))]);
    // A withdrawn drain of a routed leader does not wait for anyone.
    r.step(RouteEvent::Switchover(Some(9)), t0);
    r.step(RouteEvent::Peers(Some(peers(&[5]))), t0);
    let out = r.step(RouteEvent::Switchover(None), t0);
    assert_eq!(out, vec![RouteAction::Set(route("n2", 9))]);
}

#[test]
fn peers_not_read_yet_hold_a_first_route_until_they_are() {
    let mut r = Router::new(TTL);
    let t0 = Instant::now();
    r.step(RouteEvent::Contact { sent: t0 }, t0);
    let out = r.step(RouteEvent::LeaderObserved(route("n1", 5)), t0);
    assert_eq!(
        out,
        vec![RouteAction::Set(None), RouteAction::AwaitPeers { token: 5 }]
    );
    assert_eq!(
        r.route(),
        None,
        "another proxy may still route an older leader"
    );
    let out = r.step(RouteEvent::Peers(Some(peers(&[5]))), t0);
    assert_eq!(out, vec![RouteAction::Set(route("n1", 5))]);
    // Their watch breaks: what is routed stays, a new leader waits again.
    r.step(RouteEvent::Peers(None), t0);
    assert_eq!(r.route().map(|r| r.token), Some(5));
    let out = r.step(RouteEvent::LeaderObserved(route("n2", 9)), t0);
    assert_eq!(out.last(), Some(&RouteAction::AwaitPeers { token: 9 }));
}

#[test]
fn a_view_out_of_sync_never_ends_a_wait() {
    let mut r = router();
    let t0 = Instant::now();
    r.step(RouteEvent::Contact { sent: t0 }, t0);
    r.step(RouteEvent::Peers(Some(peers(&[5]))), t0);
    r.step(RouteEvent::LeaderObserved(route("n2", 9)), t0);
    assert_eq!(r.route(), None);
    r.step(RouteEvent::WatchLost(Watch::Leader), t0);
    // The peer left the old leader, but our own view of the leader may be stale.
    let out = r.step(RouteEvent::Peers(Some(peers(&[]))), t0);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(r.route(), None);
    // Back in sync: the wait ends.
    let out = r.step(RouteEvent::WatchSynced(Watch::Leader), t0);
    assert_eq!(out, vec![RouteAction::Set(route("n2", 9))]);
}

#[test]
fn an_agent_unmanaged_while_it_waits_still_routes_once_the_wait_ends() {
    let mut r = router();
    let t0 = Instant::now();
    r.step(RouteEvent::Contact { sent: t0 }, t0);
    r.step(RouteEvent::Peers(Some(peers(&[5]))), t0);
    r.step(RouteEvent::LeaderObserved(route("n2", 9)), t0);
    assert!(r.step(RouteEvent::Managed(false), t0).is_empty());
    assert_eq!(r.next_wake(), Some(t0 + TTL), "the wait's end is still due");
    let out = r.step(RouteEvent::Tick, t0 + TTL);
    assert_eq!(out, vec![RouteAction::Set(route("n2", 9))]);
    // Frozen otherwise: a later leader change is not followed.
    assert!(
        r.step(RouteEvent::LeaderObserved(route("n3", 12)), t0 + TTL)
            .is_empty()
    );
    assert_eq!(r.route().map(|r| r.token), Some(9));
}

#[test]
fn a_newer_leader_during_a_wait_starts_a_wait_of_its_own() {
    let mut r = router();
    let t0 = Instant::now();
    r.step(RouteEvent::Contact { sent: t0 }, t0);
    r.step(RouteEvent::Peers(Some(peers(&[5]))), t0);
    r.step(RouteEvent::LeaderObserved(route("n2", 9)), t0);
    let t1 = t0 + Duration::from_secs(2);
    r.step(RouteEvent::Contact { sent: t1 }, t1);
    let out = r.step(RouteEvent::LeaderObserved(route("n3", 12)), t1);
    assert_eq!(
        out,
        vec![
            RouteAction::Set(None),
            RouteAction::AwaitPeers { token: 12 }
        ],
        "9 was never routed: nothing to cut"
    );
    assert_eq!(r.next_wake(), Some(t1 + TTL - safety_margin(TTL)));
    // The first wait would have ended here; this one counts from the newer leader.
    assert!(r.step(RouteEvent::Tick, t0 + TTL).is_empty());
    assert_eq!(r.route(), None);
}

#[test]
fn the_data_path_authority_ends_with_trust_and_is_unbounded_only_while_unmanaged() {
    let mut r = router();
    let t0 = Instant::now();
    assert_eq!(r.authority(), Authority::Lapsed, "no contact yet");
    assert!(!r.authority().holds(t0));
    r.step(RouteEvent::Contact { sent: t0 }, t0);
    r.step(RouteEvent::LeaderObserved(route("n1", 5)), t0);
    let deadline = t0 + TTL - safety_margin(TTL);
    assert_eq!(r.authority(), Authority::Until(deadline));
    assert!(r.authority().holds(deadline - Duration::from_millis(1)));
    // A process resumed after a freeze reads the same authority: it has lapsed at once.
    assert!(!r.authority().holds(deadline));
    let later = t0 + Duration::from_secs(2);
    r.step(RouteEvent::Contact { sent: later }, later);
    assert_eq!(
        r.authority(),
        Authority::Until(later + TTL - safety_margin(TTL)),
        "each acknowledged keep-alive extends it"
    );
    r.step(RouteEvent::Managed(false), later);
    assert_eq!(r.authority(), Authority::Unbounded);
    r.step(RouteEvent::Managed(true), later);
    r.step(RouteEvent::SessionLost, later);
    assert_eq!(r.authority(), Authority::Lapsed);
}
