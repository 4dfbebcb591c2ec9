//! The lead-master election of one manager as a pure state machine.
//!
//! The I/O loop of harp-manager turns etcd replies, watch events, Postgres checks and timers
//! into [`Event`]s, calls [`Election::step`] and carries out the returned [`Action`]s. Nothing
//! here reads a clock: `now` comes in with every event, so tests drive it with a fake clock.
//!
//! Safety rests on two rules: the manager counts itself leader only while its local monotonic
//! deadline (last acknowledged keep-alive *send* time + TTL - margin) lies ahead — etcd cannot
//! expire the lease before that — and it gives the lease up the moment it may not lead.

mod candidates;
mod drain;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::{Duration, Instant};

pub use candidates::{Peer, Peers};
pub use drain::{Proxies, ProxyDrain, ProxyState};

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

/// A planned switchover of our location (`intent/promote/<location>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switchover {
    pub target: String,
    /// The leadership to replace; a leader with another token ignores the intent.
    pub from_token: i64,
    pub force: bool,
}

/// The leader as etcd shows it: the holder's node name and the key's `create_revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub node: String,
    pub token: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Result of a local Postgres check.
    Postgres {
        state: PgState,
        wal_lsn: Option<u64>,
    },
    /// The manager's etcd lease exists (granted, or found alive).
    SessionUp,
    /// The manager's lease is gone (expired or revoked); every key on it went with it.
    SessionLost,
    /// A keep-alive sent at `sent` was acknowledged with a live lease.
    KeepAliveOk {
        sent: Instant,
    },
    /// The current value of `leader/<location>`, from a get or a watch event.
    LeaderObserved(Option<Holder>),
    /// Our create-if-absent txn succeeded: we hold the key under `token`.
    Acquired {
        token: i64,
        sent: Instant,
    },
    /// Our txn found the key held by `holder`.
    AcquireLost {
        holder: Holder,
    },
    /// Our txn did not complete (etcd unreachable, timeout).
    AcquireFailed,
    /// The guarded delete completed (or found the key no longer ours).
    Released,
    ReleaseFailed,
    /// Another node's status changed (`None`: its key is gone).
    PeerStatus {
        node: String,
        peer: Option<Peer>,
    },
    /// `fenced/<node>` appeared or vanished.
    Fenced {
        node: String,
        fenced: bool,
    },
    /// The switchover intent of our location appeared, changed or vanished.
    Switchover(Option<Switchover>),
    /// Whether HARP may change this node's leadership (`harpctl manage|unmanage`).
    Managed(bool),
    /// Directives changed on reload (priority, lag limit, drain time).
    Reconfigure {
        priority: i32,
        maximum_lag: i64,
        server_transfer_timeout: Duration,
    },
    /// A proxy's status changed (`None`: its key is gone).
    ProxyDrain {
        proxy: String,
        state: Option<ProxyState>,
    },
    /// `unmanaged/proxies/<proxy>` vanished (`true`) or appeared.
    ProxyManaged {
        proxy: String,
        managed: bool,
    },
    /// A timer asked for by [`Election::next_wake`] fired.
    Tick,
    /// SIGTERM: hand the lease over and exit.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run the create-if-absent txn on the leader key with the session lease.
    TryAcquire,
    /// Delete the leader key guarded by `create_revision == token`.
    Release { token: i64, reason: String },
    /// Stop counting as leader without talking to etcd (it may be unreachable).
    StepDown { token: i64, reason: String },
    /// The node's status record changed: write it.
    PublishStatus,
    /// Shutdown may finish: revoke the lease and exit.
    Exit,
    /// Fenced with `stop_database_when_fenced`: stop the local Postgres.
    StopPostgres,
    /// Unfenced again: start the local Postgres that fencing stopped.
    StartPostgres,
    /// Rewrite our leader record (guarded by `token`) with `handover_to`: `Some` asks proxies to
    /// drain our sessions for a switchover to that node, `None` withdraws the request.
    MarkHandover {
        token: i64,
        handover_to: Option<String>,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::TryAcquire => write!(f, "try to acquire the leader lease"),
            Action::Release { token, reason } => {
                write!(f, "release the leader lease (token {token}): {reason}")
            }
            Action::StepDown { token, reason } => {
                write!(f, "step down as leader (token {token}): {reason}")
            }
            Action::PublishStatus => write!(f, "publish node status"),
            Action::Exit => write!(f, "exit"),
            Action::StopPostgres => write!(f, "stop postgres: the node is fenced"),
            Action::StartPostgres => write!(f, "start postgres: the node is no longer fenced"),
            Action::MarkHandover {
                token,
                handover_to: Some(to),
            } => write!(
                f,
                "switchover to {to}: proxies close our sessions (token {token}) at transaction \
                 boundaries before we release"
            ),
            Action::MarkHandover {
                token,
                handover_to: None,
            } => write!(
                f,
                "switchover withdrawn: proxies route to us again (token {token})"
            ),
        }
    }
}

/// Where this manager stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Follower,
    /// Holds the lease; valid until `deadline`.
    Leader {
        token: i64,
        deadline: Instant,
    },
}

#[derive(Debug, Clone)]
pub struct Election {
    params: Params,
    role: Role,
    postgres: PgState,
    wal_lsn: Option<u64>,
    session: bool,
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
    /// The leadership we asked proxies to drain, and since when.
    handing_over: Option<(i64, Instant)>,
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
            handing_over: None,
            managed: true,
            settle_until: None,
            seen_leader: false,
            lapsed: None,
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

    pub fn is_fenced(&self) -> bool {
        self.peers.is_fenced(&self.params.node)
    }

    /// Why this node may not lead right now, or `None` if it may.
    pub fn ineligible_reason(&self) -> Option<String> {
        let p = &self.params;
        if self.shutting_down {
            return Some("the manager is shutting down".into());
        }
        if self.is_fenced() {
            return Some("the node is fenced".into());
        }
        if p.priority < 0 {
            return Some(format!("priority {} never leads", p.priority));
        }
        match self.postgres {
            PgState::Primary => {}
            PgState::Standby => return Some("postgres is in recovery".into()),
            PgState::Down => return Some("postgres is down".into()),
            PgState::Unknown => return Some("postgres has not been checked yet".into()),
        }
        if p.maximum_lag >= 0 {
            let best = self.peers.max_lsn(&p.location, self.wal_lsn);
            let lag = best.unwrap_or(0).saturating_sub(self.wal_lsn.unwrap_or(0));
            if lag > p.maximum_lag as u64 {
                return Some(format!(
                    "{lag} bytes behind, beyond maximum_lag {}",
                    p.maximum_lag
                ));
            }
        }
        None
    }

    /// The next moment the machine wants a [`Event::Tick`], if any.
    pub fn next_wake(&self) -> Option<Instant> {
        let deadline = match self.role {
            Role::Leader { deadline, .. } => Some(deadline),
            Role::Follower => None,
        };
        let drain_end = match self.role {
            Role::Leader { token, .. } => self
                .handing_over
                .filter(|(t, _)| *t == token)
                .map(|(_, since)| since + self.params.server_transfer_timeout),
            Role::Follower => None,
        };
        [deadline, self.retry_at, self.candidate_at(), drain_end]
            .into_iter()
            .flatten()
            .min()
    }

    /// When this node will try the vacant lease, if it wants to.
    fn candidate_at(&self) -> Option<Instant> {
        if self.is_leader() || self.acquiring || !self.session || self.holder.is_some() {
            return None;
        }
        if self.ineligible_reason().is_some() {
            return None;
        }
        let p = &self.params;
        // During a switchover only its target may take the lease, and at once.
        let rank = match &self.switchover {
            Some(s) if s.target != p.node => return None,
            Some(_) => 0,
            None => self.peers.rank(&p.node, &p.location, p.priority) as u32,
        };
        // Ranks count from when both are known: the vacancy and the peers (after settling).
        let at = self.vacant_since?.max(self.settle_until?) + p.candidate_step * rank;
        Some(self.retry_at.map_or(at, |r| r.max(at)))
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
                self.postgres = state;
                self.wal_lsn = wal_lsn;
            }
            Event::SessionUp => {
                self.session = true;
                let settle = match self.seen_leader {
                    true => now,
                    false => now + self.params.candidate_step,
                };
                self.settle_until.get_or_insert(settle);
            }
            Event::SessionLost => {
                self.session = false;
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
            Event::LeaderObserved(holder) => self.observe(holder, now, &mut out),
            Event::Acquired { token, sent } => {
                self.acquiring = false;
                self.retry_delay = self.params.retry_min;
                self.retry_at = None;
                self.holder = Some(Holder {
                    node: self.params.node.clone(),
                    token,
                });
                self.vacant_since = None;
                let deadline = sent + self.params.lease_ttl - self.params.safety_margin();
                self.role = Role::Leader { token, deadline };
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

    /// Applies what the current facts demand: leave when we may not lead, try when we should.
    fn enforce(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Role::Leader { token, deadline } = self.role {
            // Unmanaged: HARP changes nothing, but never claims a lease it may have lost.
            let reason = match self.managed {
                true => self
                    .ineligible_reason()
                    .or_else(|| self.handover_due(token, now, out)),
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
            out.push(Action::TryAcquire);
        }
    }

    /// The reason to hand over to a switchover's target, if the intent is for our leadership
    /// and the target can take over.
    fn handover(&self, token: i64) -> Option<String> {
        let s = self.switchover.as_ref()?;
        if s.from_token != token || s.target == self.params.node {
            return None;
        }
        self.peers
            .check_target(&s.target, &self.params.location, s.force)
            .ok()
            .map(|()| format!("switchover to {}", s.target))
    }

    /// The reason to release now for a switchover: the target can take over and the proxies
    /// have closed our sessions at transaction boundaries, or `server_transfer_timeout` ran
    /// out. The first time, asks the proxies to drain (our leader record names the target).
    fn handover_due(&mut self, token: i64, now: Instant, out: &mut Vec<Action>) -> Option<String> {
        let Some(reason) = self.handover(token) else {
            if self.handing_over.take().is_some_and(|(t, _)| t == token) {
                out.push(Action::MarkHandover {
                    token,
                    handover_to: None,
                });
            }
            return None;
        };
        let timeout = self.params.server_transfer_timeout;
        if timeout.is_zero() {
            return Some(reason);
        }
        let left = self.proxies.undrained(&self.params.location, token);
        if left.is_empty() {
            let drained = self.handing_over.take().is_some();
            return Some(match drained {
                true => format!("{reason}; the proxies closed our sessions"),
                false => format!("{reason}; no proxy carries our sessions"),
            });
        }
        let since = match self.handing_over {
            Some((t, since)) if t == token => since,
            _ => {
                self.handing_over = Some((token, now));
                let target = self.switchover.as_ref().map(|s| s.target.clone());
                out.push(Action::MarkHandover {
                    token,
                    handover_to: target,
                });
                now
            }
        };
        if now >= since + timeout {
            self.handing_over = None;
            return Some(format!(
                "{reason}; {} still had sessions in a transaction after server_transfer_timeout \
                 ({}), cut now",
                left.join(", "),
                humantime::format_duration(timeout)
            ));
        }
        None
    }

    /// Why the switchover target cannot take over, for logs and status.
    pub fn switchover_refusal(&self) -> Option<String> {
        let s = self.switchover.as_ref()?;
        let Role::Leader { token, .. } = self.role else {
            return None;
        };
        if s.from_token != token {
            return None;
        }
        self.peers
            .check_target(&s.target, &self.params.location, s.force)
            .err()
    }

    /// A leader key naming this node that this manager does not hold: left by a step-down
    /// whose delete failed (its lease may still be ours and alive) or by a crashed previous run.
    /// Nobody else may lead while it exists, so it is deleted — by its token, never blindly.
    fn stale_key(&self, now: Instant) -> Option<i64> {
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
    fn may_resume(&self, token: i64) -> bool {
        let ours = self
            .holder
            .as_ref()
            .is_some_and(|h| h.node == self.params.node && h.token == token);
        ours && self.managed
            && !self.shutting_down
            && self.ineligible_reason().is_none()
            && self.handover(token).is_none()
    }

    fn observe(&mut self, holder: Option<Holder>, now: Instant, out: &mut Vec<Action>) {
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

    fn back_off(&mut self, now: Instant) {
        self.retry_at = Some(now + self.retry_delay);
        self.retry_delay = (self.retry_delay * 2).min(self.params.retry_max);
    }
}
