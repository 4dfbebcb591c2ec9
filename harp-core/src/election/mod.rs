//! The lead-master election of one manager as a pure state machine.
//!
//! The I/O loop of harp-manager turns etcd replies, watch events, Postgres checks and timers
//! into [`Event`]s, calls [`Election::step`] and carries out the returned [`Action`]s. Nothing
//! here reads a clock: `now` comes in with every event, so tests drive it with a fake clock.
//!
//! Safety rests on two rules: the manager counts itself leader only while its local monotonic
//! deadline (last renewal of its lease — the *send* time of the grant or of the last
//! acknowledged keep-alive — + TTL - margin) lies ahead — etcd cannot expire the lease before
//! that — and it gives the lease up the moment it may not lead, except that while its Postgres
//! still takes writes it first makes sure no proxy still routes to it (see `leave`).

mod candidates;
mod drain;
mod lease;
mod leave;
mod streaming;
#[cfg(test)]
mod tests;
mod types;

use std::time::{Duration, Instant};

pub use candidates::{Candidate, Peer, Peers};
pub use drain::{Proxies, ProxyDrain, ProxyState};
use leave::Leaving;
pub use streaming::Optime;
use streaming::Replica;
pub use types::{Action, Event, Holder, Role, Switchover};

use crate::records::PgState;

/// Knobs of the election, from the node directives.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub node: String,
    pub location: String,
    pub priority: i32,
    pub lease_ttl: Duration,
    pub maximum_lag: i64,
    /// How long each rank below the best candidate waits before trying a vacant lease.
    pub candidate_step: Duration,
    /// First retry delay after a failed etcd request; doubles up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// `stop_database_when_fenced`: stop Postgres when fenced, start it when unfenced.
    pub stop_when_fenced: bool,
    /// At a switchover, how long to keep the lease while proxies drain our sessions.
    pub server_transfer_timeout: Duration,
    /// `cluster.replication: streaming`: one primary for the cluster (see `streaming`).
    pub streaming: bool,
    /// `cluster.synchronous_mode` on or strict: only a synchronous standby may be promoted.
    pub synchronous: bool,
}

impl Params {
    pub fn safety_margin(&self) -> Duration {
        safety_margin(self.lease_ttl)
    }
}

/// Margin kept between a local deadline and the earliest moment etcd may expire a lease of
/// `ttl`: covers clock-rate drift and scheduling delay, small next to the TTL.
pub fn safety_margin(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

#[derive(Debug, Clone)]
pub struct Election {
    params: Params,
    role: Role,
    postgres: PgState,
    wal_lsn: Option<u64>,
    session: bool,
    /// When the current lease was granted and last renewed (send times of the grant and of the
    /// latest acknowledged keep-alive): etcd cannot expire it before `renewed` + TTL.
    granted: Option<Instant>,
    renewed: Option<Instant>,
    peers: Peers,
    /// The key as last observed; `None` with `vacant_since` when nobody holds it.
    holder: Option<Holder>,
    vacant_since: Option<Instant>,
    acquiring: bool,
    releasing: Option<i64>,
    retry_at: Option<Instant>,
    retry_delay: Duration,
    shutting_down: bool,
    switchover: Option<Switchover>,
    /// The proxies' drain state, for a switchover.
    proxies: Proxies,
    /// The leadership we are giving up while proxies may still carry its sessions.
    leaving: Option<Leaving>,
    managed: bool,
    /// Until then a freshly started manager does not compete: peers that started with it get
    /// time to publish their status, so priority decides the first election too. Seeing a
    /// leader proves the cluster was already running (statuses published): no settling then.
    settle_until: Option<Instant>,
    seen_leader: bool,
    /// The token we stepped down from at the lease deadline while our key (on our still
    /// current lease) may live on: if etcd then acknowledges a keep-alive of that lease, the
    /// key is provably still ours and nobody else led meanwhile, so we lead on under it rather
    /// than delete it — a delete would hand the lead to another node while agents that have
    /// not yet seen the delete still route to ours.
    lapsed: Option<i64>,
    /// Streaming mode's state (see `streaming`).
    repl: Replica,
}

impl Election {
    pub fn new(params: Params) -> Self {
        let retry_delay = params.retry_min;
        Self {
            params,
            role: Role::Follower,
            postgres: PgState::Unknown,
            wal_lsn: None,
            session: false,
            granted: None,
            renewed: None,
            peers: Peers::default(),
            holder: None,
            vacant_since: None,
            acquiring: false,
            releasing: None,
            retry_at: None,
            retry_delay,
            shutting_down: false,
            switchover: None,
            proxies: Proxies::default(),
            leaving: None,
            managed: true,
            settle_until: None,
            seen_leader: false,
            lapsed: None,
            repl: Replica::default(),
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }
    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader { .. })
    }
    pub fn params(&self) -> &Params {
        &self.params
    }
    pub fn postgres(&self) -> PgState {
        self.postgres
    }
    pub fn wal_lsn(&self) -> Option<u64> {
        self.wal_lsn
    }
    /// The leader as last observed in etcd.
    pub fn holder(&self) -> Option<&Holder> {
        self.holder.as_ref()
    }
    /// SIGTERM received: the manager hands over and leaves.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    pub fn is_managed(&self) -> bool {
        self.managed
    }

    /// The other nodes as their statuses describe them.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    pub fn is_fenced(&self) -> bool {
        self.peers.is_fenced(&self.params.node)
    }

    /// Why this node may not lead right now, or `None` if it may.
    pub fn ineligible_reason(&self) -> Option<String> {
        if self.shutting_down {
            return Some("the manager is shutting down".into());
        }
        if self.is_fenced() {
            return Some("the node is fenced".into());
        }
        self.unfit_reason()
    }

    /// The next moment the machine wants a [`Event::Tick`], if any.
    pub fn next_wake(&self) -> Option<Instant> {
        let deadline = match self.role {
            Role::Leader { deadline, .. } => Some(deadline),
            Role::Follower => None,
        };
        // Unmanaged, nothing ends a wait: asking to be woken for it would spin.
        let leave_end = match self.role {
            Role::Leader { token, .. } if self.managed => self.leave_wake(token),
            _ => None,
        };
        let streaming = self.streaming_wake();
        [
            deadline,
            self.retry_at,
            self.candidate_at(),
            leave_end,
            streaming,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn step(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let was_eligible = self.ineligible_reason().is_none();
        let was_fenced = self.is_fenced();
        let before = (self.postgres, self.is_leader());
        match event {
            Event::Postgres { state, wal_lsn } => {
                // Peers rank and check lag by our WAL position, so a move is worth a write.
                if wal_lsn != self.wal_lsn {
                    out.push(Action::PublishStatus);
                }
                if state != self.postgres {
                    // New facts: a rejoin waiting out an earlier one may run.
                    self.repl.retry_at = None;
                }
                self.postgres = state;
                self.wal_lsn = wal_lsn;
            }
            Event::SessionUp { sent } => {
                self.session = true;
                self.granted = Some(sent);
                self.renewed = Some(sent);
                let settle = match self.seen_leader {
                    true => now,
                    false => now + self.params.candidate_step,
                };
                self.settle_until.get_or_insert(settle);
            }
            Event::SessionLost => {
                self.session = false;
                self.granted = None;
                self.renewed = None;
                self.acquiring = false;
                self.lapsed = None;
                if let Role::Leader { token, .. } = self.role {
                    self.role = Role::Follower;
                    out.push(Action::StepDown {
                        token,
                        reason: "the etcd lease expired".into(),
                    });
                }
            }
            Event::KeepAliveOk { sent } => {
                self.renewed = self.renewed.max(Some(sent));
                let renewed = sent + self.params.lease_ttl - self.params.safety_margin();
                if let Role::Leader { token, deadline } = self.role {
                    self.role = Role::Leader {
                        token,
                        deadline: deadline.max(renewed),
                    };
                } else if let Some(token) = self.lapsed.take()
                    && self.may_resume(token)
                    && now < renewed
                {
                    self.role = Role::Leader {
                        token,
                        deadline: renewed,
                    };
                }
            }
            Event::LeaderObserved(holder) => {
                if holder != self.holder {
                    // A new primary: a rejoin that waited for one may run at once.
                    self.repl.retry_at = None;
                }
                self.observe(holder, now, &mut out)
            }
            Event::Replica { timeline } => self.repl.timeline = timeline,
            Event::Optime(o) => self.repl.optime = o,
            Event::SyncSet(members) => self.repl.sync = members,
            Event::Promoted { token, result } => self.promoted(token, result, now, &mut out),
            Event::Rejoined(result) => {
                self.rejoined(result, now);
                // Its outcome (or failure's reason) is for operators to see.
                out.push(Action::PublishStatus);
            }
            Event::Acquired { token, sent } => {
                self.acquired(token, sent, now, &mut out);
                self.acquired_streaming(token);
            }
            Event::AcquireLost { holder } => {
                self.acquiring = false;
                self.retry_delay = self.params.retry_min;
                self.observe(Some(holder), now, &mut out);
            }
            Event::AcquireFailed => {
                self.acquiring = false;
                self.back_off(now);
            }
            Event::Released => {
                // The delete event may trail the reply: do not release the same key twice.
                if let (Some(t), Some(h)) = (self.releasing.take(), &self.holder)
                    && h.token == t
                {
                    self.holder = None;
                    self.vacant_since = Some(now);
                }
            }
            Event::ReleaseFailed => {
                // We already stopped counting as leader; retry the delete after a backoff.
                self.releasing = None;
                self.back_off(now);
            }
            Event::PeerStatus { node, peer } => self.peers.set_status(&node, peer),
            Event::Fenced { node, fenced } => self.peers.set_fenced(&node, fenced),
            Event::Reconfigure {
                priority,
                maximum_lag,
                server_transfer_timeout,
            } => {
                self.params.priority = priority;
                self.params.maximum_lag = maximum_lag;
                self.params.server_transfer_timeout = server_transfer_timeout;
                out.push(Action::PublishStatus);
            }
            Event::Switchover(s) => self.switchover = s,
            Event::ProxyDrain { proxy, state } => self.proxies.set(&proxy, state),
            Event::ProxyManaged { proxy, managed } => self.proxies.set_managed(&proxy, managed),
            Event::Managed(m) => self.managed = m,
            Event::Tick => {}
            Event::Shutdown => self.shutting_down = true,
        }
        self.enforce(now, &mut out);
        self.streaming_duties(now, &mut out);
        if self.params.stop_when_fenced && self.managed && self.is_fenced() != was_fenced {
            out.push(match self.is_fenced() {
                true => Action::StopPostgres,
                false => Action::StartPostgres,
            });
        }
        if self.shutting_down && !self.is_leader() && self.releasing.is_none() {
            out.push(Action::Exit);
        }
        let eligible = self.ineligible_reason().is_none();
        let changed = before != (self.postgres, self.is_leader()) || was_eligible != eligible;
        if changed && !out.contains(&Action::PublishStatus) {
            out.push(Action::PublishStatus);
        }
        out
    }
}
