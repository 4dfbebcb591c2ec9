//! Streaming replication mode: one primary — the lease holder — for the whole cluster, every
//! other node a physical standby of it.
//!
//! What changes against a multi-writer cluster:
//! - A standby may lead: it acquires the vacant lease first, then promotes (`Promote`), and its
//!   leader record says `promoting` — proxies route nobody to it — until its Postgres takes
//!   writes, when the record is rewritten routable (invariant: only the lease holder is
//!   writable and routed).
//! - Who may be promoted: not fenced, priority >= 0, on the primary's timeline, within
//!   `maximum_lag` of the primary's last published position (`optime/<group>`), and in
//!   synchronous mode named in `sync/<group>` — both records outlive a dead primary.
//! - A primary that does not hold the lease never takes writes: its manager stops it, rewinds
//!   it against the primary and starts it as a standby (`Rejoin`). A primary that was not the
//!   last leader (the optime names another node) never leads again without that.
//! - Standbys follow the lease holder (`Follow`); a dead standby is started again as one.
//! - A lone primary that crashed while no standby could take over is restarted in place once
//!   the lease has stayed vacant for one TTL.

use std::time::{Duration, Instant};

use super::{Action, Election, Role};
use crate::records::PgState;

/// A failed rejoin is tried again after this long: a rewind that failed for want of WAL or
/// settings fails the same way until an operator acts, so retrying faster only fills the log.
const REJOIN_RETRY: Duration = Duration::from_secs(10);

/// The primary's last published WAL position (`optime/<group>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Optime {
    pub node: String,
    pub timeline: Option<u32>,
    pub lsn: u64,
    /// The primary stopped cleanly at `lsn` before it released (a switchover).
    pub shutdown: bool,
}

/// What the election tracks of streaming replication.
#[derive(Debug, Clone, Default)]
pub(super) struct Replica {
    pub timeline: Option<u32>,
    pub optime: Option<Optime>,
    /// Members of `sync/<group>` as last read; `None`: no record.
    pub sync: Option<Vec<String>>,
    /// Our next acquire writes a `promoting` record (Postgres is a standby).
    pub acquire_promoting: bool,
    /// The leadership whose record says `promoting`, and whether `Promote` was asked.
    pub promoting: Option<(i64, bool)>,
    /// The leader (node, token) our standby was last pointed at.
    pub followed: Option<(String, i64)>,
    /// A rejoin (stop, rewind, start as standby) or restart runs.
    pub busy: bool,
    /// Not before then: the next rejoin or restart attempt.
    pub retry_at: Option<Instant>,
    /// The last rejoin or promotion failure, for the status.
    pub failure: Option<String>,
}

impl Election {
    pub fn is_streaming(&self) -> bool {
        self.params.streaming
    }

    /// Whether the acquire about to run makes us a leader that must first promote.
    pub fn acquires_promoting(&self) -> bool {
        self.repl.acquire_promoting
    }

    /// Why the node's replication is not as it should be (a failed rewind or promotion).
    pub fn replica_failure(&self) -> Option<&str> {
        self.repl.failure.as_deref()
    }

    /// Our timeline (`None`: unknown).
    pub fn timeline(&self) -> Option<u32> {
        self.repl.timeline
    }

    pub fn optime(&self) -> Option<&Optime> {
        self.repl.optime.as_ref()
    }

    /// Why this node may not lead (streaming rules), with Postgres up and priority >= 0.
    pub(super) fn streaming_unfit(&self) -> Option<String> {
        let me = self.params.node.as_str();
        let optime = self.repl.optime.as_ref();
        let behind = |o: &super::streaming::Optime| match (o.timeline, self.repl.timeline) {
            (Some(theirs), Some(mine)) if mine < theirs => Some((mine, theirs)),
            _ => None,
        };
        match self.postgres {
            PgState::Primary if self.is_leader() => return None,
            PgState::Primary => {
                if let Some(o) = optime.filter(|o| o.node != me) {
                    return Some(format!(
                        "postgres is a primary, but {} was the last primary: this node must be \
                         rewound and follow it",
                        o.node
                    ));
                }
                if let Some((mine, theirs)) = optime.and_then(behind) {
                    return Some(format!(
                        "postgres is a primary on timeline {mine}, behind the cluster's {theirs}"
                    ));
                }
                return None;
            }
            PgState::Standby => {}
            PgState::Down => return Some("postgres is down".into()),
            PgState::Unknown => return Some("postgres has not been checked yet".into()),
        }
        if self.is_leader() {
            return None; // promoting
        }
        // Synchronous mode: only a standby the record names holds every acknowledged commit.
        // A record naming nobody (`on` mode ran unprotected) promotes nobody: writes stay
        // unavailable rather than lost. No record at all: nothing was ever promised.
        // A switchover's target needs no membership: the old primary stopped cleanly first,
        // and the target promotes only once it received that stop (see `Promote`), so it holds
        // every commit.
        let handed_over = optime.is_some_and(|o| o.shutdown)
            && self.switchover.as_ref().is_some_and(|s| s.target == me);
        if self.params.synchronous
            && !handed_over
            && let Some(members) = &self.repl.sync
            && !members.iter().any(|m| m == me)
        {
            return Some(match members.is_empty() {
                true => "not a synchronous standby (the synchronous set is empty: the primary \
                         ran unprotected): promoting it could lose acknowledged commits"
                    .into(),
                false => format!(
                    "not a synchronous standby (the synchronous set is {}): promoting it could \
                     lose acknowledged commits",
                    members.join(", ")
                ),
            });
        }
        if let Some((mine, theirs)) = optime.and_then(behind) {
            return Some(format!(
                "replays timeline {mine}, the primary wrote timeline {theirs}: it must follow first"
            ));
        }
        let max = self.params.maximum_lag;
        if max >= 0 {
            let reference = optime
                .map(|o| o.lsn)
                .or_else(|| self.peers.max_lsn(&self.params.location, self.wal_lsn));
            let Some(mine) = self.wal_lsn else {
                return Some("cannot tell how far behind the primary this standby is".into());
            };
            let lag = reference.unwrap_or(0).saturating_sub(mine);
            if lag > max as u64 {
                return Some(format!(
                    "{lag} bytes behind the primary, beyond maximum_lag {max}"
                ));
            }
        }
        None
    }

    /// What streaming mode asks of our Postgres now: promote, follow, rejoin or restart.
    pub(super) fn streaming_duties(&mut self, now: Instant, out: &mut Vec<Action>) {
        if !self.params.streaming || !self.managed {
            return;
        }
        let me = self.params.node.clone();
        let other = self.holder.as_ref().filter(|h| h.node != me).cloned();
        let due = !self.repl.busy && self.repl.retry_at.is_none_or(|r| now >= r);
        match (self.role, self.postgres) {
            (Role::Leader { token, .. }, PgState::Standby) => {
                if self.repl.promoting.is_none_or(|(t, _)| t != token) {
                    self.repl.promoting = Some((token, false));
                }
                if let Some((_, asked @ false)) = &mut self.repl.promoting {
                    *asked = true;
                    out.push(Action::Promote { token });
                }
            }
            (Role::Leader { token, .. }, PgState::Primary) => {
                if self.repl.promoting.take().is_some_and(|(t, _)| t == token) {
                    self.repl.failure = None;
                    out.push(Action::MarkLeader {
                        token,
                        handover_to: None,
                        leaving: false,
                    });
                }
            }
            (Role::Leader { .. }, _) => {}
            (Role::Follower, PgState::Primary) => {
                // Not the lease holder: it must not take writes. Stop it at once and bring
                // it back as a standby of the primary.
                let stale = self.streaming_unfit();
                // (A primary whose lease we gave up is stopped by the release itself.)
                if (other.is_some() || stale.is_some()) && due {
                    let reason = match (&other, stale) {
                        (Some(h), _) => format!("{} holds the lease", h.node),
                        (None, r) => r.unwrap_or_default(),
                    };
                    self.repl.busy = true;
                    out.push(Action::Rejoin {
                        stop_first: true,
                        reason,
                    });
                }
            }
            (Role::Follower, PgState::Standby) => {
                let want = other.map(|h| (h.node, h.token));
                if want.is_some() && want != self.repl.followed {
                    self.repl.followed = want.clone();
                    out.push(Action::Follow {
                        node: want.map(|w| w.0).unwrap_or_default(),
                    });
                }
            }
            (Role::Follower, PgState::Down) if due && !self.stopped_by_fence() => {
                self.repl.followed = None;
                if let Some(h) = other {
                    self.repl.busy = true;
                    out.push(Action::Rejoin {
                        stop_first: false,
                        reason: format!("postgres is down; {} is the primary", h.node),
                    });
                } else if self.restart_in_place_due(now) {
                    self.repl.busy = true;
                    self.repl.retry_at = Some(now + self.params.lease_ttl);
                    out.push(Action::Rejoin {
                        stop_first: false,
                        reason: "postgres is down and no other node took the lease".into(),
                    });
                }
            }
            (Role::Follower, _) => {}
        }
    }

    /// A dead Postgres of the last primary is started again where it is once nobody took the
    /// lease for one TTL: no standby could (none eligible), so waiting longer only prolongs
    /// the outage. Its manager then competes like any primary.
    fn restart_in_place_due(&self, now: Instant) -> bool {
        let last = self
            .repl
            .optime
            .as_ref()
            .is_none_or(|o| o.node == self.params.node);
        let vacant = self
            .vacant_since
            .is_some_and(|v| now >= v + self.params.lease_ttl);
        let may_lead = self.params.priority >= 0 && !self.is_fenced() && !self.shutting_down;
        last && vacant && may_lead && self.holder.is_none()
    }

    fn stopped_by_fence(&self) -> bool {
        self.params.stop_when_fenced && self.is_fenced()
    }

    /// When streaming mode wants a tick: a rejoin retry or a restart in place.
    pub(super) fn streaming_wake(&self) -> Option<Instant> {
        if !self.params.streaming || self.repl.busy {
            return None;
        }
        let restart = match (self.postgres, &self.holder) {
            (PgState::Down, None) => self.vacant_since.map(|v| v + self.params.lease_ttl),
            _ => None,
        };
        match (self.repl.retry_at, restart) {
            (Some(r), Some(s)) => Some(r.max(s)),
            (r, s) => r.or(s),
        }
    }

    /// Our acquire under `token` succeeded: if it wrote a `promoting` record, that record is
    /// rewritten routable once Postgres takes writes, however it came to.
    pub(super) fn acquired_streaming(&mut self, token: i64) {
        if self.is_leader() && std::mem::take(&mut self.repl.acquire_promoting) {
            self.repl.promoting = Some((token, false));
        }
    }

    /// A promotion we asked for ended. A failure gives the lease up: another standby may do
    /// better, and a leader that cannot take writes serves nobody.
    pub(super) fn promoted(
        &mut self,
        token: i64,
        result: Result<(), String>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Err(e) = result else { return };
        self.repl.failure = Some(format!("promotion failed: {e}"));
        if let Role::Leader { token: t, .. } = self.role
            && t == token
        {
            self.repl.promoting = None;
            self.role = Role::Follower;
            self.releasing = Some(token);
            self.back_off(now);
            out.push(Action::Release {
                token,
                reason: format!("promotion failed: {e}"),
            });
        }
    }

    /// A rejoin ended. Either way the next one waits: after a success for the check to see the
    /// started Postgres (a rejoin restarts it: asking again at once would restart it forever),
    /// after a failure to not fail in a loop. A change of Postgres state or of primary ends
    /// the wait.
    pub(super) fn rejoined(&mut self, result: Result<(), String>, now: Instant) {
        self.repl.busy = false;
        self.repl.retry_at = Some(now + REJOIN_RETRY);
        match result {
            Ok(()) => self.repl.failure = None,
            Err(e) => self.repl.failure = Some(e),
        }
    }
}
