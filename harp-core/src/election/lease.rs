//! What the manager may count on from its lease: the key it acquired on it, and a key of ours
//! it holds no longer, and what the facts demand of it (leave, step down, try). etcd cannot
//! expire the lease before its last renewal's send time + TTL; nothing else (not an acquire on
//! it) renews it.

use std::time::Instant;

use super::{Action, Election, Holder, Role};
use crate::records::PgState;

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

    /// Applies what the current facts demand: leave when we may not lead, try when we should.
    pub(super) fn enforce(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Role::Leader { token, deadline } = self.role {
            // Unmanaged: HARP changes nothing, but never claims a lease it may have lost.
            let reason = match self.managed {
                true => self.leave_due(token, now, out),
                false => None,
            };
            if let Some(reason) = reason {
                self.role = Role::Follower;
                self.releasing = Some(token);
                out.push(Action::Release { token, reason });
            } else if now >= deadline {
                self.role = Role::Follower;
                out.push(Action::StepDown {
                    token,
                    reason: "no etcd keep-alive acknowledged before the lease deadline".into(),
                });
                // If etcd acknowledges our lease again, the key is still ours: lead on under it
                // (see `lapsed`); if the lease expired, the key went with it.
                self.lapsed = Some(token);
            }
            return;
        }
        if !self.managed {
            return;
        }
        if let Some(token) = self.stale_key(now) {
            self.releasing = Some(token);
            out.push(Action::Release {
                token,
                reason: "the leader key names this node, which does not lead (stale key)".into(),
            });
            return;
        }
        if self.shutting_down {
            return;
        }
        if let Some(at) = self.candidate_at()
            && now >= at
        {
            self.acquiring = true;
            self.retry_at = None;
            self.repl.acquire_promoting =
                self.params.streaming && self.postgres == PgState::Standby;
            out.push(Action::TryAcquire);
        }
    }

    pub(super) fn observe(&mut self, holder: Option<Holder>, now: Instant, out: &mut Vec<Action>) {
        if self
            .lapsed
            .is_some_and(|t| holder.as_ref().is_none_or(|h| h.token != t))
        {
            self.lapsed = None;
        }
        if let Role::Leader { token, .. } = self.role
            && holder.as_ref().is_none_or(|h| h.token != token)
        {
            // Deleted, expired or replaced: etcd says we no longer lead.
            self.role = Role::Follower;
            out.push(Action::StepDown {
                token,
                reason: "the leader key is no longer ours".into(),
            });
        }
        if holder.is_some() {
            self.seen_leader = true;
            self.settle_until = self.settle_until.map(|s| s.min(now));
        }
        match (&self.holder, &holder) {
            (_, None) if self.vacant_since.is_none() || self.holder.is_some() => {
                self.vacant_since = Some(now);
            }
            (_, Some(_)) => self.vacant_since = None,
            _ => {}
        }
        self.holder = holder;
    }

    pub(super) fn back_off(&mut self, now: Instant) {
        self.retry_at = Some(now + self.retry_delay);
        self.retry_delay = (self.retry_delay * 2).min(self.params.retry_max);
    }
}
