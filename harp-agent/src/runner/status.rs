//! `proxies/<name>/status`: what this proxy tells the others and the leader — the
//! leaderships it may have sessions under, its drain, and the lease it trusts.

use std::sync::atomic::Ordering;

use harp_core::records::{ProxyStatus, RECORD_VERSION, unix_ms};

use super::Runner;
use crate::proxy::Shared;

impl Runner {
    /// Writes `proxies/<name>/status` when something changed (or when `force`d).
    pub(super) fn publish_status(&mut self, force: bool) {
        let Some(lease) = self.lease else { return };
        let s = &self.shared;
        let route = self.router.route();
        // Before our first decision a kernel entry adopted from an earlier run still steers
        // clients (and its sockets live): say so, so that peers wait for us and a leader
        // handing over does not count us drained.
        let adopted = match (&self.steering, self.adopt_grace) {
            (Some(st), Some(_)) => st.adopted_token().and_then(|t| i64::try_from(t).ok()),
            _ => None,
        };
        let status = ProxyStatus {
            version: RECORD_VERSION,
            name: s.name.clone(),
            location: s.location.clone(),
            leader: route.map(|r| r.node.clone()),
            token: route.map(|r| r.token).or(adopted),
            mode: s.mode().into(),
            sessions: s.sessions.load(Ordering::Relaxed),
            held: s.held.load(Ordering::Relaxed),
            draining: self.router.draining(),
            drain_left: match self.router.draining() {
                Some(_) => drain_left(s),
                None => 0,
            },
            managed: self.managed(),
            pooled: *s.pooled.borrow(),
            lease_ttl_ms: Some(self.lease_ttl.as_millis() as u64),
            updated_ms: 0,
        };
        if !force && self.last_status.as_ref() == Some(&status) {
            return;
        }
        self.last_status = Some(status.clone());
        let stamped = ProxyStatus {
            updated_ms: unix_ms(),
            ..status
        };
        let key = self.dcs.keys.proxy_status(&s.name);
        self.publish
            .send_replace(Some((key, stamped.encode(), lease)));
    }
}

/// Sessions a drain still waits for: followed, and still in a transaction or a request.
fn drain_left(s: &Shared) -> u64 {
    s.drain.waiting.load(Ordering::Relaxed)
}
