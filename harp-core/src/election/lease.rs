//! What the manager may count on from its lease: the key it acquired on it, and a key of ours
//! it holds no longer. etcd cannot expire the lease before its last renewal's send time + TTL;
//! nothing else (not an acquire on it) renews it.

use std::time::Instant;

use super::{Action, Election, Holder, Role};

impl Election {
    /// Our create-if-absent txn put the key on our lease under `token`. The txn does not renew
    /// the lease: etcd may expire it (and the key) from its last renewal on, however recent the
    /// acquire, so that is what the deadline counts from.
    pub(super) fn acquired(
        &mut self,
        token: i64,
        sent: Instant,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        // A txn sent before the current lease was granted ran on a lease since lost: the key
        // went with it, as the watch shows.
        let Some(renewed) = self
            .renewed
            .filter(|_| self.granted.is_some_and(|g| g <= sent))
        else {
            return;
        };
        self.acquiring = false;
        self.retry_delay = self.params.retry_min;
        self.retry_at = None;
        self.holder = Some(Holder {
            node: self.params.node.clone(),
            token,
        });
        self.vacant_since = None;
        let deadline = renewed + self.params.lease_ttl - self.params.safety_margin();
        if now < deadline {
            self.role = Role::Leader { token, deadline };
            return;
        }
        // The lease may have expired before the key was even put: never count as leader on
        // it. If etcd acknowledges the lease again, the key is provably ours (see `lapsed`).
        self.lapsed = Some(token);
        out.push(Action::StepDown {
            token,
            reason: "acquired after the lease could have expired (no keep-alive acknowledged \
                     since the lease deadline)"
                .into(),
        });
    }

    /// A leader key naming this node that this manager does not hold: left by a step-down
    /// whose delete failed (its lease may still be ours and alive) or by a crashed previous run.
    /// Nobody else may lead while it exists, so it is deleted — by its token, never blindly.
    pub(super) fn stale_key(&self, now: Instant) -> Option<i64> {
        let h = self.holder.as_ref()?;
        if self.lapsed == Some(h.token) && self.may_resume(h.token) {
            return None;
        }
        let idle = !self.is_leader() && !self.acquiring && self.releasing.is_none();
        let due = self.retry_at.is_none_or(|r| now >= r);
        (idle && due && self.session && h.node == self.params.node).then_some(h.token)
    }

    /// Whether we may lead on under `token` once etcd confirms our lease: the key we saw is
    /// still that one, we may lead, and nothing asks us to hand over or stop.
    pub(super) fn may_resume(&self, token: i64) -> bool {
        let ours = self
            .holder
            .as_ref()
            .is_some_and(|h| h.node == self.params.node && h.token == token);
        ours && self.managed
            && !self.shutting_down
            && self.ineligible_reason().is_none()
            && self.handover(token).is_none()
    }
}
