//! The agent's routing decision as a pure state machine: which lead master new clients go to,
//! and when the sessions of an old one must be cut.
//!
//! The agent trusts what etcd showed it only while it is in contact: until the send time of
//! its last acknowledged keep-alive + TTL − margin. Past that it routes nowhere (clients are
//! held) and cuts what it routed: a partitioned agent fails closed rather than feed a leader
//! that may already have been replaced.
//!
//! Contact alone is not enough: the view must be current too. When a watch breaks, a
//! leader may give up its lease unseen (and another take it), so the agent keeps its route
//! only for a short grace while the view is read again, and never (re)establishes one from a
//! view that is not in sync — contact regained after an outage does not revive a stale leader.
//! Each watch is tracked on its own ([`Watch`]): the view is in sync only once every broken
//! one has been read again.
//!
//! A new leadership is routed only once no other proxy of the location still has sessions
//! under an older one (their statuses in etcd say so; statuses not read yet, whose watch
//! broke, or that cannot be read, count as older), and from a view in sync, or once every
//! proxy that could not say so has failed closed: one lease after this proxy first wanted to
//! route to it, the longest lease any proxy of the location says it trusts. Each proxy cuts
//! the old leader's sessions on its own, a few milliseconds apart; without this wait the new
//! leader could take writes from one proxy's clients while another's still reach the old.

mod agree;
mod watches;

use std::fmt;
use std::time::{Duration, Instant};

use crate::election::safety_margin;

pub use agree::{OLDER_THAN_ANY, PeerRoute};
pub use watches::Watch;

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

/// How long the data path may act on the current routing without hearing from the agent's
/// decision loop again. A relay checks it before every byte it sends a server and the kernel
/// entries carry it, so a frozen or dead agent routes nothing past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    /// Nothing may be routed (no etcd contact yet, or it was lost).
    Lapsed,
    /// Until the trust deadline: the last acknowledged keep-alive's send time + TTL − margin.
    Until(Instant),
    /// Unmanaged: the operator holds the route, HARP's deadlines do not apply.
    Unbounded,
}

impl Authority {
    /// Whether the routing may still be acted on at `now`.
    pub fn holds(self, now: Instant) -> bool {
        match self {
            Authority::Lapsed => false,
            Authority::Until(t) => now < t,
            Authority::Unbounded => true,
        }
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
    /// A watch broke (or was not read yet): its changes go unseen until it is synced again.
    WatchLost(Watch),
    /// A fresh read brought that watch's keys up to date (its changes were observed before
    /// this); the view is in sync once no watch is broken.
    WatchSynced(Watch),
    /// Whether HARP may change this agent's route (`harpctl manage|unmanage`); unmanaged, the
    /// current route stays as it is, whatever etcd shows.
    Managed(bool),
    /// The planned switchover of our location (`intent/promote/<location>`): the token of the
    /// leadership it replaces, or `None` when there is none.
    Switchover(Option<i64>),
    /// The other managed proxies of our location, from their statuses in etcd: the
    /// leaderships they may still have sessions under, and the lease each trusts; `None`
    /// while their statuses are not known to be current (not read yet, or their watch broke).
    Peers(Option<Vec<PeerRoute>>),
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
    /// New clients wait for the leadership `token` until other proxies have closed their
    /// sessions to an older one.
    AwaitPeers { token: i64 },
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
            RouteAction::AwaitPeers { token } => write!(
                f,
                "hold new clients until the other proxies have closed their sessions to the \
                 former leader, then route them under token {token}"
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
    /// Which watches are out of sync, since when.
    sync: watches::WatchSync,
    /// What [`RouteEvent::Peers`] last said.
    peers: Option<Vec<PeerRoute>>,
    /// The longest lease a peer said it trusts (zero: none said).
    peer_lease: Duration,
    /// `effective` is not routed yet: other proxies may still reach an older leader. Since
    /// when we have waited for them.
    awaiting_since: Option<Instant>,
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
            sync: watches::WatchSync::default(),
            peers: None,
            peer_lease: Duration::ZERO,
            awaiting_since: None,
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
        self.sync
            .since()
            .is_none_or(|since| now < since + self.grace())
    }

    /// The route new clients take now (`None`: they are held).
    pub fn route(&self) -> Option<&Route> {
        self.effective
            .as_ref()
            .filter(|_| !self.draining && self.awaiting_since.is_none())
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

    /// The data path's authority: the trust deadline while managed, unbounded while unmanaged
    /// (HARP then changes no route, whatever etcd shows).
    pub fn authority(&self) -> Authority {
        match (self.managed, self.trusted_until) {
            (false, _) => Authority::Unbounded,
            (true, Some(t)) => Authority::Until(t),
            (true, None) => Authority::Lapsed,
        }
    }

    /// When trust runs out, if it is what keeps a route up, or a wait for the other proxies
    /// ends.
    pub fn next_wake(&self) -> Option<Instant> {
        let await_end = self.awaiting_since.map(|s| s + self.wait_lease());
        if !self.managed {
            return await_end; // a wait still ends, frozen or not
        }
        self.effective.as_ref()?;
        let grace_end = self.sync.since().map(|s| s + self.grace());
        [self.trusted_until, grace_end, await_end]
            .into_iter()
            .flatten()
            .min()
    }

    /// Unmanaged, the route stays as it is, except that a wait for the other proxies still
    /// ends: a frozen agent would otherwise hold its clients until managed again.
    fn end_wait_frozen(&mut self, now: Instant) -> Vec<RouteAction> {
        let Some(e) = self
            .effective
            .clone()
            .filter(|_| self.awaiting_since.is_some())
        else {
            return Vec::new();
        };
        self.awaiting_since = self.awaits_peers(&e, now);
        match self.awaiting_since {
            Some(_) => Vec::new(),
            None => vec![RouteAction::Set(self.route().cloned())],
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
            RouteEvent::WatchLost(w) => self.sync.lost(w, now),
            RouteEvent::WatchSynced(w) => self.sync.synced(w),
            RouteEvent::Managed(m) => self.managed = m,
            RouteEvent::Switchover(from) => self.intent = from,
            RouteEvent::Peers(peers) => self.set_peers(peers),
            RouteEvent::Tick => {}
        }
        if !self.managed {
            return self.end_wait_frozen(now);
        }
        let want = match (self.in_contact(now), self.sync.since()) {
            (false, _) => None,
            (true, None) => self.observed.clone(),
            // Out of sync: keep what we route during the grace, start nothing new.
            (true, Some(_)) if self.view_current(now) => self.effective.clone(),
            (true, Some(_)) => None,
        };
        let drain = want.as_ref().is_some_and(|w| self.intent == Some(w.token));
        let awaiting = want.as_ref().and_then(|w| self.awaits_peers(w, now));
        if want == self.effective && drain == self.draining && awaiting == self.awaiting_since {
            return Vec::new();
        }
        let mut out = Vec::new();
        // A leadership still awaited was never routed: it has no sessions to cut.
        if let Some(old) = self
            .effective
            .as_ref()
            .filter(|_| self.awaiting_since.is_none())
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
        let route_before = self.route().cloned();
        self.effective = want;
        self.draining = drain;
        self.awaiting_since = awaiting;
        let route = self.route().cloned();
        if route != route_before || out.is_empty() {
            out.push(RouteAction::Set(route));
        }
        if let Some(token) = self.draining() {
            out.push(RouteAction::Drain { token });
        }
        if awaiting.is_some()
            && let Some(e) = &self.effective
        {
            out.push(RouteAction::AwaitPeers { token: e.token });
        }
        out
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_agree;
