//! Giving up the lead while our Postgres still takes writes: a planned switchover, or a fence.
//!
//! Releasing the key is not enough to stop writes reaching us: a proxy that has not seen the
//! release (frozen, cut off) still routes its clients here, and a new leader would take
//! writes beside us. So before releasing we mark our leader record and wait for the proxies
//! of our location to stop carrying our sessions (their statuses say so):
//!
//! - a switchover first asks them to *drain* (`handover_to`): new clients are held, sessions
//!   close at transaction boundaries, for up to `server_transfer_timeout`;
//! - then, or at once for a fence, asks them to *cut* (`leaving`): they treat us as gone.
//!
//! A proxy in contact with etcd does either within milliseconds. One that does not is waited
//! for up to one agent lease after the cut was asked: by then its status has expired, and it
//! has stopped trusting what it routes (it fails closed on its own). Agents do not publish
//! their lease length; they are taken to use the managers' `leader_lease_duration`.
//!
//! Reasons our Postgres cannot take writes for (down, in recovery) or a shutdown release at
//! once: there is nothing to protect, or no time.

use std::time::{Duration, Instant};

use super::{Action, Election};

/// A leadership we are giving up while proxies may still carry its sessions; exists once we
/// marked our leader record.
#[derive(Debug, Clone)]
pub(super) struct Leaving {
    token: i64,
    /// When we first asked the proxies to drain or cut.
    since: Instant,
    /// When we asked them to cut: we wait at most one agent lease from then.
    cut_since: Option<Instant>,
    /// What our leader record asks now: `handover_to`, `leaving`.
    mark: (Option<String>, bool),
}

impl Election {
    /// How long a proxy that does not answer our mark is waited for: one agent lease.
    fn agent_lease(&self) -> Duration {
        self.params.lease_ttl
    }

    /// The reason to release now, if any. Marks our record and waits while proxies may still
    /// reach us (see the module docs).
    pub(super) fn leave_due(
        &mut self,
        token: i64,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Option<String> {
        if self.shutting_down {
            return Some("the manager is shutting down".into());
        }
        if let Some(reason) = self.unfit_reason() {
            return Some(reason);
        }
        let target = self.handover(token);
        let reason = match (&target, self.is_fenced()) {
            (_, true) => "the node is fenced".to_owned(),
            (Some(t), false) => format!("switchover to {t}"),
            (None, false) => {
                self.withdraw(token, out);
                return None;
            }
        };
        let carrying: Vec<String> = self
            .proxies
            .carrying(&self.params.location, token)
            .into_iter()
            .map(str::to_owned)
            .collect();
        if carrying.is_empty() {
            let marked = self.leaving.take().is_some_and(|l| l.token == token);
            return Some(match marked {
                true => format!("{reason}; the proxies closed our sessions"),
                false => format!("{reason}; no proxy carries our sessions"),
            });
        }
        let agent_lease = self.agent_lease();
        let transfer = match self.is_fenced() {
            true => Duration::ZERO,
            false => self.params.server_transfer_timeout,
        };
        let l = match &mut self.leaving {
            Some(l) if l.token == token => l,
            slot => slot.insert(Leaving {
                token,
                since: now,
                cut_since: None,
                mark: (None, false),
            }),
        };
        let cut = l.cut_since.is_some() || now >= l.since + transfer;
        if cut && l.cut_since.is_none() {
            l.cut_since = Some(now);
        }
        let mark = (target, cut);
        if l.mark != mark {
            l.mark = mark.clone();
            out.push(Action::MarkLeader {
                token,
                handover_to: mark.0,
                leaving: mark.1,
            });
        }
        let cut_since = l.cut_since?;
        if now < cut_since + agent_lease {
            return None;
        }
        self.leaving = None;
        Some(format!(
            "{reason}; {} still carried our sessions one agent lease ({}) after we asked them \
             to cut: their statuses outlived the lease",
            carrying.join(", "),
            humantime::format_duration(agent_lease)
        ))
    }

    /// When the current phase of leaving ends: the drain's time is up, or the wait for proxies
    /// that do not answer.
    pub(super) fn leave_wake(&self, token: i64) -> Option<Instant> {
        let l = self.leaving.as_ref().filter(|l| l.token == token)?;
        Some(match l.cut_since {
            Some(cut) => cut + self.agent_lease(),
            None => l.since + self.params.server_transfer_timeout,
        })
    }

    /// Nothing asks us to leave any more: proxies may route to us again.
    fn withdraw(&mut self, token: i64, out: &mut Vec<Action>) {
        if self.leaving.take().is_some_and(|l| l.token == token) {
            out.push(Action::MarkLeader {
                token,
                handover_to: None,
                leaving: false,
            });
        }
    }

    /// The switchover's target, if the intent is for our leadership and the target can take
    /// over.
    pub(super) fn handover(&self, token: i64) -> Option<String> {
        let s = self.switchover.as_ref()?;
        if s.from_token != token || s.target == self.params.node {
            return None;
        }
        self.peers
            .check_target(
                &s.target,
                &self.params.location,
                s.force,
                self.params.streaming,
            )
            .ok()
            .map(|()| s.target.clone())
    }

    /// Why the switchover target cannot take over, for logs and status.
    pub fn switchover_refusal(&self) -> Option<String> {
        let s = self.switchover.as_ref()?;
        let super::Role::Leader { token, .. } = self.role else {
            return None;
        };
        if s.from_token != token {
            return None;
        }
        self.peers
            .check_target(
                &s.target,
                &self.params.location,
                s.force,
                self.params.streaming,
            )
            .err()
    }
}
