//! The agent's routing decision as a pure state machine: which lead master new clients go to,
//! and when the sessions of an old one must be cut.
//!
//! The agent trusts what etcd showed it only while it is in contact: until the send time of
//! its last acknowledged keep-alive + TTL − margin. Past that it routes nowhere (clients are
//! held) and cuts what it routed: a partitioned agent fails closed rather than feed a leader
//! that may already have been replaced.
//!
//! Contact alone is not enough: the view must be current too. When the watch breaks, a
//! leader may give up its lease unseen (and another take it), so the agent keeps its route
//! only for a short grace while the view is read again, and never (re)establishes one from a
//! view that is not in sync — contact regained after an outage does not revive a stale leader.

use std::fmt;
use std::time::{Duration, Instant};

use crate::election::safety_margin;

/// Where clients go: the leader of the agent's location and the token it leads under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub node: String,
    pub address: String,
    pub port: u16,
    /// The leader key's `create_revision`: changes with every new leadership.
    pub token: i64,
}

/// What the data path follows: where new clients go and which sessions live on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    /// New clients go here; `None`: they are held.
    pub route: Option<Route>,
    /// The leadership whose sessions live on: the route's, or the one being drained.
    pub live: Option<i64>,
    /// The leadership being drained: its sessions close at their next transaction boundary.
    pub draining: Option<i64>,
}

impl Routing {
    /// Whether a session made under `token` must close now.
    pub fn cuts(&self, token: i64) -> bool {
        self.live != Some(token)
    }

    /// Whether a session made under `token` closes at its next transaction boundary.
    pub fn drains(&self, token: i64) -> bool {
        self.draining == Some(token)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteEvent {
    /// The leader key of our location, from a read or a watch event.
    LeaderObserved(Option<Route>),
    /// etcd acknowledged a keep-alive sent at `sent`: it had a quorum then.
    Contact {
        sent: Instant,
    },
    /// Our lease expired: whatever we saw may be stale.
    SessionLost,
    /// The watch broke: changes from now on go unseen until [`RouteEvent::WatchSynced`].
    WatchLost,
    /// A fresh read brought the view up to date (its changes were observed before this).
    WatchSynced,
    /// Whether HARP may change this agent's route (`harpctl manage|unmanage`); unmanaged, the
    /// current route stays as it is, whatever etcd shows.
    Managed(bool),
    /// The planned switchover of our location (`intent/promote/<location>`): the token of the
    /// leadership it replaces, or `None` when there is none.
    Switchover(Option<i64>),
    Tick,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// Route new clients here; `None`: hold them until a leader appears.
    Set(Option<Route>),
    /// Close every session routed under `token` now.
    Cut { token: i64, reason: &'static str },
    /// A switchover replaces the leadership `token`: hold new clients and close its sessions
    /// as each reaches a transaction boundary; the leader waits for that before it hands over.
    Drain { token: i64 },
}

impl fmt::Display for RouteAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteAction::Set(Some(r)) => write!(
                f,
                "route clients to {} at {}:{} (token {})",
                r.node, r.address, r.port, r.token
            ),
            RouteAction::Set(None) => write!(f, "hold new clients: no leader to route to"),
            RouteAction::Cut { token, reason } => {
                write!(f, "close the sessions routed under token {token}: {reason}")
            }
            RouteAction::Drain { token } => write!(
                f,
                "switchover: hold new clients, close the sessions under token {token} \
                 at their next transaction boundary"
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Router {
    ttl: Duration,
    observed: Option<Route>,
    trusted_until: Option<Instant>,
    /// The leadership whose sessions live.
    effective: Option<Route>,
    /// A switchover replaces `effective`: new clients are held while its sessions drain.
    draining: bool,
    /// The token a live switchover intent of our location replaces.
    intent: Option<i64>,
    managed: bool,
    /// `None` while the view is in sync; else when the watch broke.
    unsynced_since: Option<Instant>,
}

impl Router {
    pub fn new(lease_ttl: Duration) -> Self {
        Self {
            ttl: lease_ttl,
            observed: None,
            trusted_until: None,
            effective: None,
            draining: false,
            intent: None,
            managed: true,
            unsynced_since: None,
        }
    }

    /// How long a route may outlive a broken watch while the view is read again: a third of
    /// the lease (2 s of the default 6 s) — a re-read takes milliseconds when etcd has a
    /// quorum, and without one the contact deadline cuts anyway.
    fn grace(&self) -> Duration {
        self.ttl / 3
    }

    /// Whether the current route may stand on the view we have.
    fn view_current(&self, now: Instant) -> bool {
        self.unsynced_since
            .is_none_or(|since| now < since + self.grace())
    }

    /// The route new clients take now (`None`: they are held).
    pub fn route(&self) -> Option<&Route> {
        self.effective.as_ref().filter(|_| !self.draining)
    }

    /// The leadership whose sessions may live on: the route, or the one being drained.
    pub fn live(&self) -> Option<&Route> {
        self.effective.as_ref()
    }

    /// The whole decision, for the data path.
    pub fn routing(&self) -> Routing {
        Routing {
            route: self.route().cloned(),
            live: self.live().map(|r| r.token),
            draining: self.draining(),
        }
    }

    /// The token whose sessions are being drained for a switchover.
    pub fn draining(&self) -> Option<i64> {
        self.effective
            .as_ref()
            .filter(|_| self.draining)
            .map(|r| r.token)
    }

    /// The leader as last seen in etcd, trusted or not.
    pub fn observed(&self) -> Option<&Route> {
        self.observed.as_ref()
    }

    /// Whether etcd contact is recent enough to trust what it showed.
    pub fn in_contact(&self, now: Instant) -> bool {
        self.trusted_until.is_some_and(|t| now < t)
    }

    /// When trust runs out, if it is what keeps a route up.
    pub fn next_wake(&self) -> Option<Instant> {
        if !self.managed || self.effective.is_none() {
            return None;
        }
        let grace_end = self.unsynced_since.map(|s| s + self.grace());
        match (self.trusted_until, grace_end) {
            (Some(t), Some(g)) => Some(t.min(g)),
            (t, g) => t.or(g),
        }
    }

    pub fn is_managed(&self) -> bool {
        self.managed
    }

    pub fn step(&mut self, event: RouteEvent, now: Instant) -> Vec<RouteAction> {
        match event {
            RouteEvent::LeaderObserved(route) => self.observed = route,
            RouteEvent::Contact { sent } => {
                let until = sent + self.ttl - safety_margin(self.ttl);
                self.trusted_until = Some(self.trusted_until.map_or(until, |t| t.max(until)));
            }
            RouteEvent::SessionLost => self.trusted_until = None,
            RouteEvent::WatchLost => {
                self.unsynced_since.get_or_insert(now);
            }
            RouteEvent::WatchSynced => self.unsynced_since = None,
            RouteEvent::Managed(m) => self.managed = m,
            RouteEvent::Switchover(from) => self.intent = from,
            RouteEvent::Tick => {}
        }
        if !self.managed {
            return Vec::new();
        }
        let want = match (self.in_contact(now), self.unsynced_since) {
            (false, _) => None,
            (true, None) => self.observed.clone(),
            // Out of sync: keep what we route during the grace, start nothing new.
            (true, Some(_)) if self.view_current(now) => self.effective.clone(),
            (true, Some(_)) => None,
        };
        let drain = want.as_ref().is_some_and(|w| self.intent == Some(w.token));
        if want == self.effective && drain == self.draining {
            return Vec::new();
        }
        let mut out = Vec::new();
        if let Some(old) = &self.effective
            && want.as_ref().is_none_or(|w| w.token != old.token)
        {
            let reason = match (&want, self.in_contact(now)) {
                (_, false) => "etcd unreachable past the lease deadline (fail closed)",
                (None, true) if !self.view_current(now) => {
                    "etcd watch lost past its grace (fail closed)"
                }
                (None, true) => "the leader gave up its lease",
                (Some(_), true) => "a new leader took over",
            };
            out.push(RouteAction::Cut {
                token: old.token,
                reason,
            });
        }
        self.effective = want;
        self.draining = drain;
        out.push(RouteAction::Set(self.route().cloned()));
        if let Some(token) = self.draining() {
            out.push(RouteAction::Drain { token });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(6);

    fn route(node: &str, token: i64) -> Option<Route> {
        Some(Route {
            node: node.into(),
            address: "10.0.0.1".into(),
            port: 5432,
            token,
        })
    }

    #[test]
    fn routes_only_once_etcd_contact_is_proven() {
        let mut r = Router::new(TTL);
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
        let mut r = Router::new(TTL);
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
        let mut r = Router::new(TTL);
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
        let mut r = Router::new(TTL);
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
        let mut r = Router::new(TTL);
        let t0 = Instant::now();
        r.step(RouteEvent::Contact { sent: t0 }, t0);
        r.step(RouteEvent::LeaderObserved(route("n1", 5)), t0);
        let out = r.step(RouteEvent::SessionLost, t0);
        assert!(matches!(out[0], RouteAction::Cut { token: 5, .. }));
        assert_eq!(r.route(), None);
    }

    #[test]
    fn unmanaged_keeps_the_current_route_until_managed_again() {
        let mut r = Router::new(TTL);
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
        let mut r = Router::new(TTL);
        let t0 = Instant::now();
        r.step(RouteEvent::Contact { sent: t0 }, t0);
        r.step(RouteEvent::LeaderObserved(route("n1", 5)), t0);
        assert!(
            r.step(RouteEvent::WatchLost, t0).is_empty(),
            "kept in grace"
        );
        let grace_end = t0 + TTL / 3;
        assert_eq!(r.next_wake(), Some(grace_end));
        // Re-read in time: nothing happens to clients.
        let mut quick = r.clone();
        assert!(
            quick
                .step(RouteEvent::WatchSynced, t0 + Duration::from_millis(150))
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
        assert!(r.step(RouteEvent::WatchSynced, later).is_empty());
        let out = r.step(RouteEvent::LeaderObserved(route("n2", 9)), later);
        assert_eq!(out, vec![RouteAction::Set(route("n2", 9))]);
    }

    #[test]
    fn after_an_outage_a_stale_view_is_not_routed_until_read_again() {
        let mut r = Router::new(TTL);
        let t0 = Instant::now();
        r.step(RouteEvent::Contact { sent: t0 }, t0);
        r.step(RouteEvent::LeaderObserved(route("n1", 5)), t0);
        r.step(RouteEvent::WatchLost, t0);
        let deadline = t0 + TTL / 3;
        r.step(RouteEvent::Tick, deadline);
        assert_eq!(r.route(), None);
        // etcd is back: keep-alives answer before the watch is read again.
        let back = t0 + Duration::from_secs(10);
        assert!(r.step(RouteEvent::Contact { sent: back }, back).is_empty());
        assert_eq!(r.route(), None, "n1 may have lost its lease meanwhile");
        r.step(RouteEvent::LeaderObserved(route("n1", 5)), back);
        let out = r.step(RouteEvent::WatchSynced, back);
        assert_eq!(out, vec![RouteAction::Set(route("n1", 5))]);
    }

    #[test]
    fn an_old_acknowledgement_never_shortens_trust() {
        let mut r = Router::new(TTL);
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(2);
        r.step(RouteEvent::Contact { sent: t1 }, t1);
        r.step(RouteEvent::Contact { sent: t0 }, t1);
        r.step(RouteEvent::LeaderObserved(route("n1", 5)), t1);
        assert_eq!(r.next_wake(), Some(t1 + TTL - safety_margin(TTL)));
    }

    #[test]
    fn a_switchover_drains_the_old_leader_then_routes_to_the_new_one() {
        let mut r = Router::new(TTL);
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
        let mut r = Router::new(TTL);
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
        let mut r = Router::new(TTL);
        let t0 = Instant::now();
        r.step(RouteEvent::Contact { sent: t0 }, t0);
        r.step(RouteEvent::LeaderObserved(route("n1", 5)), t0);
        r.step(RouteEvent::Switchover(Some(5)), t0);
        let out = r.step(RouteEvent::SessionLost, t0);
        assert!(matches!(out[0], RouteAction::Cut { token: 5, .. }));
        assert_eq!(r.live(), None);
    }
}
