//! Whether the agent's view of etcd is in sync, per watch: each watch breaks and is read
//! again on its own, and the view is in sync only while every one the route stands on is.
//! When etcd loses its quorum every watch breaks; the first one read again must not vouch
//! for the others (the leader's may still be stale).

use std::collections::BTreeSet;
use std::time::Instant;

/// An etcd watch the route stands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Watch {
    /// `leader/<location>`: who leads, and whether it hands over.
    Leader,
    /// `managed`: whether HARP may change any route of the cluster.
    Managed,
    /// `unmanaged/proxies/<me>`: whether HARP may change this proxy's route.
    ProxyUnmanaged,
}

impl Watch {
    pub const ALL: [Watch; 3] = [Watch::Leader, Watch::Managed, Watch::ProxyUnmanaged];
}

/// The watches broken (or not read yet), and since when the view has been out of sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct WatchSync {
    broken: BTreeSet<Watch>,
    /// Counted from the first break while any is left: the grace does not restart when
    /// another watch breaks or one of several is read again.
    since: Option<Instant>,
}

impl WatchSync {
    pub(super) fn lost(&mut self, watch: Watch, now: Instant) {
        self.broken.insert(watch);
        self.since.get_or_insert(now);
    }

    pub(super) fn synced(&mut self, watch: Watch) {
        self.broken.remove(&watch);
        if self.broken.is_empty() {
            self.since = None;
        }
    }

    /// `None` while every watch is in sync; else since when one is not.
    pub(super) fn since(&self) -> Option<Instant> {
        self.since
    }
}
