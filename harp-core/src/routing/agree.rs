//! Agreement among the proxies of a location: a new leadership is routed only once no other
//! managed proxy may still have sessions under an older one, or once every such proxy has
//! failed closed — after the longest lease any of them trusts etcd for.

use std::time::{Duration, Instant};

use super::{Route, Router};
use crate::records::ProxyStatus;

/// A leadership older than every real one: etcd revisions, hence tokens, start at 1.
pub const OLDER_THAN_ANY: i64 = 0;

/// What another proxy of our location says about itself in `proxies/<p>/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRoute {
    /// The leaderships under which it may still have sessions.
    pub tokens: Vec<i64>,
    /// How long it trusts what etcd showed it; `None` (an older agent): as long as we do.
    pub lease_ttl: Option<Duration>,
}

impl PeerRoute {
    /// A peer whose status says what it routes, if it can hold a new leader back: managed,
    /// and of `location`.
    pub fn of(status: &ProxyStatus, location: &str) -> Option<PeerRoute> {
        (status.managed && status.location == location).then(|| PeerRoute {
            tokens: status.live_tokens().collect(),
            lease_ttl: status.lease_ttl_ms.map(Duration::from_millis),
        })
    }

    /// A peer whose status exists but cannot be read (garbage, or a newer format this build
    /// must not read): it may be routing the old leader, so it counts as doing so until its
    /// key goes. Its location cannot be read either: it holds every location back.
    pub fn unreadable() -> PeerRoute {
        PeerRoute {
            tokens: vec![OLDER_THAN_ANY],
            lease_ttl: None,
        }
    }
}

impl Router {
    /// How long a wait for the other proxies lasts at most: the longest lease among them and
    /// us. A peer that trusts etcd longer than we do has not failed closed by our TTL.
    pub(super) fn wait_lease(&self) -> Duration {
        self.ttl.max(self.peer_lease)
    }

    /// Takes the peers' statuses (`None`: not known to be current). Their longest lease is
    /// remembered while their watch is broken: a silent peer trusts etcd no shorter.
    pub(super) fn set_peers(&mut self, peers: Option<Vec<PeerRoute>>) {
        if let Some(p) = &peers {
            self.peer_lease = p
                .iter()
                .filter_map(|p| p.lease_ttl)
                .max()
                .unwrap_or_default();
        }
        self.peers = peers;
    }

    /// Since when new clients wait for `want`, if they must still: it was never routed, and
    /// another proxy may have sessions under an older leadership, since less than a lease.
    pub(super) fn awaits_peers(&self, want: &Route, now: Instant) -> Option<Instant> {
        // Once routed, a leadership is never held back again (a drain or a stale peer record).
        let passed = self.awaiting_since.is_none()
            && self
                .effective
                .as_ref()
                .is_some_and(|e| e.token == want.token);
        if passed {
            return None;
        }
        let since = match (&self.effective, self.awaiting_since) {
            (Some(e), Some(since)) if e.token == want.token => since,
            _ => now,
        };
        // Peers unknown count as older; and a view out of sync never starts a route.
        let older = self
            .peers
            .as_ref()
            .is_none_or(|p| p.iter().flat_map(|p| &p.tokens).any(|&t| t < want.token));
        let held = older || self.sync.since().is_some();
        (held && now < since + self.wait_lease()).then_some(since)
    }
}
