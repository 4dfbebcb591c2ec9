//! Leaving while our Postgres still takes writes: a switchover drains the proxies first; a
//! fenced leader, or a switchover past its drain, keeps the lease while a proxy may still
//! route clients to it — at most one agent lease.

use super::*;

fn fence(fenced: bool) -> Event {
    Event::Fenced {
        node: "n1".into(),
        fenced,
    }
}

fn gone(proxy: &str) -> Event {
    Event::ProxyDrain {
        proxy: proxy.into(),
        state: None,
    }
}

/// Keeps our own lease renewed every second up to `until`, so only the wait for the proxies
/// decides; returns what the steps asked for.
fn keep_alive(e: &mut Election, from: Instant, until: Instant) -> Vec<Action> {
    let mut out = Vec::new();
    let mut t = from;
    while t < until {
        out.extend(e.step(Event::KeepAliveOk { sent: t }, t));
        t += Duration::from_secs(1);
    }
    out
}

#[test]
fn a_fenced_leader_keeps_its_lease_until_no_proxy_routes_to_it() {
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    e.step(drain_state("p1", Some(7), None, 0), t0);
    e.step(drain_state("p2", Some(7), None, 0), t0);
    let out = e.step(fence(true), t0);
    assert!(out.contains(&mark(None, true)), "{out:?}");
    assert!(!has_release(&out, ""), "released while proxies route to us");
    assert!(e.is_leader());
    // p1 saw the mark and cut; p2 still routes (frozen): the lease stays.
    let t1 = t0 + Duration::from_millis(10);
    assert!(!has_release(
        &e.step(drain_state("p1", None, None, 0), t1),
        ""
    ));
    let t2 = t0 + Duration::from_secs(3);
    assert!(!has_release(&keep_alive(&mut e, t1, t2), ""));
    // p2's status expires with its lease: nobody can reach us any more.
    let out = e.step(gone("p2"), t2);
    assert!(
        has_release(&out, "the node is fenced; the proxies closed our sessions"),
        "{out:?}"
    );
    assert!(!e.is_leader());
}

#[test]
fn a_fenced_leader_waits_for_a_silent_proxy_at_most_one_agent_lease() {
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    e.step(drain_state("p2", Some(7), None, 0), t0);
    e.step(fence(true), t0);
    let end = t0 + TTL;
    assert!(!has_release(&keep_alive(&mut e, t0, end), ""));
    assert_eq!(e.next_wake(), Some(end));
    let almost = end - Duration::from_millis(1);
    assert!(!has_release(&e.step(Event::Tick, almost), ""));
    let out = e.step(Event::Tick, end);
    assert!(
        has_release(&out, "p2 still carried our sessions one agent lease"),
        "{out:?}"
    );
}

#[test]
fn a_fenced_leader_no_proxy_routes_to_releases_at_once() {
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    // Elsewhere, routing to another leadership, drained, or unmanaged: none reaches us.
    e.step(proxy_at("p-nyc", "nyc", Some(7), None, 0), t0);
    e.step(drain_state("p1", Some(6), None, 0), t0);
    e.step(drain_state("p2", None, Some(7), 0), t0);
    e.step(drain_state("p3", Some(7), None, 0), t0);
    e.step(
        Event::ProxyManaged {
            proxy: "p3".into(),
            managed: false,
        },
        t0,
    );
    let out = e.step(fence(true), t0);
    assert!(
        has_release(&out, "the node is fenced; no proxy carries our sessions"),
        "{out:?}"
    );
    assert!(!out.iter().any(|a| matches!(a, Action::MarkLeader { .. })));
}

#[test]
fn sessions_draining_or_pooled_hold_a_fenced_leader_too() {
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    e.step(drain_state("p1", None, Some(7), 2), t0);
    let pooled = ProxyDrain {
        location: "dca".into(),
        token: None,
        draining: None,
        left: 0,
        pooled: Some(7),
    };
    e.step(
        Event::ProxyDrain {
            proxy: "p2".into(),
            state: Some(ProxyState::Status(pooled.clone())),
        },
        t0,
    );
    assert!(!has_release(&e.step(fence(true), t0), ""));
    assert!(!has_release(
        &e.step(drain_state("p1", None, None, 0), t0),
        ""
    ));
    let cleared = ProxyDrain {
        pooled: None,
        ..pooled
    };
    let out = e.step(
        Event::ProxyDrain {
            proxy: "p2".into(),
            state: Some(ProxyState::Status(cleared)),
        },
        t0,
    );
    assert!(has_release(&out, "fenced"), "{out:?}");
}

#[test]
fn unfenced_while_waiting_the_leader_leads_on_and_proxies_route_to_it_again() {
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    e.step(drain_state("p1", Some(7), None, 0), t0);
    e.step(fence(true), t0);
    let out = e.step(fence(false), t0);
    assert!(out.contains(&mark(None, false)), "{out:?}");
    assert!(e.is_leader());
    assert_eq!(e.next_wake(), Some(t0 + TTL - safety_margin(TTL)));
}

#[test]
fn an_unmanaged_leader_waits_for_nothing_and_releases_nothing() {
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    e.step(drain_state("p1", Some(7), None, 0), t0);
    e.step(fence(true), t0);
    e.step(Event::Managed(false), t0);
    let end = t0 + TTL;
    assert!(!has_release(&keep_alive(&mut e, t0, end), ""));
    assert!(!has_release(&e.step(Event::Tick, end), ""));
    assert!(e.is_leader());
    // The only wake left is our own lease deadline, not a wait long over.
    assert!(
        e.next_wake().is_some_and(|w| w > end),
        "{:?}",
        e.next_wake()
    );
    // Managed again, the wait resumes where it was: one agent lease is long over.
    let out = e.step(Event::Managed(true), end);
    assert!(
        has_release(&out, "p1 still carried our sessions"),
        "{out:?}"
    );
}

#[test]
fn postgres_failing_while_fenced_releases_at_once() {
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    e.step(drain_state("p1", Some(7), None, 0), t0);
    e.step(fence(true), t0);
    let down = Event::Postgres {
        state: PgState::Down,
        wal_lsn: None,
    };
    let out = e.step(down, t0 + Duration::from_millis(50));
    assert!(has_release(&out, "postgres is down"), "{out:?}");
}

#[test]
fn a_switchover_past_its_drain_waits_for_a_proxy_still_routing_up_to_one_agent_lease() {
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    e.step(PeerStatus("n2", peer(100, PgState::Primary, 1)), t0);
    // p1 drains a long transaction; p2 never reacts to our mark (frozen).
    e.step(drain_state("p1", None, Some(7), 1), t0);
    e.step(drain_state("p2", Some(7), None, 0), t0);
    assert_eq!(
        e.step(switchover("n2", 7), t0),
        vec![mark(Some("n2"), false)]
    );
    let cut = t0 + DRAIN;
    let out = keep_alive(&mut e, t0, cut);
    assert!(!has_release(&out, ""));
    assert_eq!(e.step(Event::Tick, cut), vec![mark(Some("n2"), true)]);
    // p1 cuts what is left at once; p2 still routes to us.
    let t1 = cut + Duration::from_millis(10);
    assert!(!has_release(
        &e.step(drain_state("p1", None, None, 0), t1),
        ""
    ));
    let end = cut + TTL;
    assert!(!has_release(&keep_alive(&mut e, t1, end), ""));
    let almost = end - Duration::from_millis(1);
    assert!(!has_release(&e.step(Event::Tick, almost), ""));
    let out = e.step(Event::Tick, end);
    assert!(
        has_release(&out, "switchover to n2; p2 still carried our sessions"),
        "{out:?}"
    );
}

#[test]
fn a_switchover_waits_for_the_proxies_to_drain_our_sessions() {
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    e.step(PeerStatus("n2", peer(100, PgState::Primary, 1)), t0);
    e.step(drain_state("p1", Some(7), None, 0), t0);
    // A proxy elsewhere, or routing to someone else, carries nothing of ours.
    e.step(proxy_at("p-nyc", "nyc", Some(7), None, 0), t0);
    e.step(drain_state("p2", None, None, 0), t0);
    let out = e.step(switchover("n2", 7), t0);
    assert_eq!(
        out,
        vec![mark(Some("n2"), false)],
        "ask the proxies to drain first"
    );
    assert!(e.is_leader());
    assert_eq!(e.next_wake().map(|w| w - t0), Some(DRAIN));
    let t1 = t0 + Duration::from_millis(10);
    let out = e.step(drain_state("p1", None, Some(7), 2), t1);
    assert!(
        !has_release(&out, ""),
        "two sessions still in a transaction"
    );
    let out = e.step(drain_state("p1", None, Some(7), 0), t1);
    assert!(
        has_release(&out, "the proxies closed our sessions"),
        "{out:?}"
    );
    assert!(!out.contains(&mark(Some("n2"), false)), "asked once");
}

#[test]
fn a_switchover_cuts_what_is_left_at_server_transfer_timeout() {
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    e.step(PeerStatus("n2", peer(100, PgState::Primary, 1)), t0);
    e.step(drain_state("p1", None, Some(7), 1), t0);
    e.step(switchover("n2", 7), t0);
    let almost = t0 + DRAIN - Duration::from_millis(1);
    assert!(!has_release(&e.step(Event::Tick, almost), ""));
    // Time is up: the proxies are told to cut what is left, and we release once they did.
    let out = e.step(Event::Tick, t0 + DRAIN);
    assert_eq!(out, vec![mark(Some("n2"), true)]);
    assert!(e.is_leader());
    let cut = t0 + DRAIN + Duration::from_millis(20);
    let out = e.step(drain_state("p1", None, None, 0), cut);
    assert!(
        has_release(&out, "the proxies closed our sessions"),
        "{out:?}"
    );
    // A proxy whose status vanished (its lease expired) is not waited for.
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    e.step(PeerStatus("n2", peer(100, PgState::Primary, 1)), t0);
    e.step(drain_state("p1", Some(7), None, 0), t0);
    e.step(switchover("n2", 7), t0);
    let out = e.step(
        Event::ProxyDrain {
            proxy: "p1".into(),
            state: None,
        },
        t0,
    );
    assert!(has_release(&out, "switchover to n2"), "{out:?}");
    // An unmanaged proxy keeps its route whatever happens: nothing to wait for.
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    e.step(PeerStatus("n2", peer(100, PgState::Primary, 1)), t0);
    e.step(drain_state("p1", Some(7), None, 0), t0);
    e.step(
        Event::ProxyManaged {
            proxy: "p1".into(),
            managed: false,
        },
        t0,
    );
    let out = e.step(switchover("n2", 7), t0);
    assert!(
        has_release(&out, "no proxy carries our sessions"),
        "{out:?}"
    );
}

#[test]
fn a_withdrawn_switchover_lets_the_proxies_route_to_us_again() {
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    e.step(PeerStatus("n2", peer(100, PgState::Primary, 1)), t0);
    e.step(drain_state("p1", Some(7), None, 0), t0);
    e.step(switchover("n2", 7), t0);
    let out = e.step(Event::Switchover(None), t0);
    assert_eq!(out, vec![mark(None, false)]);
    assert!(e.is_leader());
    assert_eq!(e.next_wake(), Some(t0 + TTL - safety_margin(TTL)));
}

#[test]
fn with_no_transfer_time_the_proxies_cut_at_once_instead_of_draining() {
    let mut e = Election::new(Params {
        server_transfer_timeout: Duration::ZERO,
        ..params("n1", 100)
    });
    let t0 = leader(&mut e);
    e.step(PeerStatus("n2", peer(100, PgState::Primary, 1)), t0);
    e.step(drain_state("p1", Some(7), None, 0), t0);
    let out = e.step(switchover("n2", 7), t0);
    assert_eq!(out, vec![mark(Some("n2"), true)], "cut, never drain");
    let t1 = t0 + Duration::from_millis(5);
    let out = e.step(drain_state("p1", None, None, 0), t1);
    assert!(
        has_release(&out, "switchover to n2; the proxies closed our sessions"),
        "{out:?}"
    );
    // Nobody routes to us: nothing to ask, the lease goes at once.
    let mut e = Election::new(Params {
        server_transfer_timeout: Duration::ZERO,
        ..params("n1", 100)
    });
    let t0 = leader(&mut e);
    e.step(PeerStatus("n2", peer(100, PgState::Primary, 1)), t0);
    let out = e.step(switchover("n2", 7), t0);
    assert!(
        has_release(&out, "switchover to n2; no proxy carries our sessions"),
        "{out:?}"
    );
}

#[test]
fn a_proxy_status_that_cannot_be_read_never_counts_as_drained() {
    let mut e = Election::new(params("n1", 100));
    let t0 = leader(&mut e);
    e.step(PeerStatus("n2", peer(100, PgState::Primary, 1)), t0);
    let unreadable = |state| Event::ProxyDrain {
        proxy: "p-new".into(),
        state,
    };
    e.step(unreadable(Some(ProxyState::Unreadable)), t0);
    let out = e.step(switchover("n2", 7), t0);
    assert_eq!(
        out,
        vec![mark(Some("n2"), false)],
        "it may carry our sessions"
    );
    let almost = t0 + DRAIN - Duration::from_millis(1);
    assert!(!has_release(&e.step(Event::Tick, almost), ""));
    // Past the drain it is still waited for, as a proxy that may route to us.
    let out = e.step(Event::Tick, t0 + DRAIN);
    assert_eq!(out, vec![mark(Some("n2"), true)]);
    assert!(e.is_leader());
    // Its key gone (the lease ended): nothing left to wait for.
    let out = e.step(unreadable(None), t0 + DRAIN);
    assert!(has_release(&out, ""), "{out:?}");
}
