//! What the election reads ([`Event`]) and asks for ([`Action`]), and the role it holds.

use std::fmt;
use std::time::{Duration, Instant};

use super::{Peer, ProxyState};
use crate::records::PgState;

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
    /// The manager's etcd lease was granted by a request sent at `sent`: etcd cannot expire
    /// it before `sent` + TTL.
    SessionUp {
        sent: Instant,
    },
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
    /// Streaming mode: the timeline our Postgres writes or replays.
    Replica {
        timeline: Option<u32>,
    },
    /// Streaming mode: `optime/<group>` changed (`None`: no record).
    Optime(Option<super::Optime>),
    /// Streaming mode: the members of `sync/<group>` (`None`: no record).
    SyncSet(Option<Vec<String>>),
    /// The promotion asked by [`Action::Promote`] ended.
    Promoted {
        token: i64,
        result: Result<(), String>,
    },
    /// The rejoin asked by [`Action::Rejoin`] ended.
    Rejoined(Result<(), String>),
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
    /// Rewrite our leader record (guarded by `token`): `handover_to` asks proxies to drain our
    /// sessions for a switchover to that node; `leaving` asks them to cut our sessions and
    /// route nobody to us, as we are about to release. Neither withdraws both requests.
    MarkLeader {
        token: i64,
        handover_to: Option<String>,
        leaving: bool,
    },
    /// Streaming mode: we hold the lease under `token` and our Postgres is a standby: promote
    /// it, then report [`Event::Promoted`].
    Promote { token: i64 },
    /// Streaming mode: point our standby at the lease holder `node`.
    Follow { node: String },
    /// Streaming mode: bring our Postgres back as a standby of the lease holder — stop it
    /// first if `stop_first` (a primary without the lease), rewind it if it was a primary —
    /// or, with no lease holder, start it where it is. Report [`Event::Rejoined`].
    Rejoin { stop_first: bool, reason: String },
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
            Action::MarkLeader {
                token,
                leaving: true,
                ..
            } => write!(
                f,
                "leaving: proxies cut our sessions (token {token}) and route nobody to us; we \
                 release once their statuses show it, or after one agent lease"
            ),
            Action::MarkLeader {
                token,
                handover_to: Some(to),
                ..
            } => write!(
                f,
                "switchover to {to}: proxies close our sessions (token {token}) at transaction \
                 boundaries before we release"
            ),
            Action::MarkLeader { token, .. } => {
                write!(f, "routable: proxies route to us (token {token})")
            }
            Action::Promote { token } => {
                write!(f, "promote postgres: we hold the lease (token {token})")
            }
            Action::Follow { node } => write!(f, "stream from the primary {node}"),
            Action::Rejoin {
                stop_first: true,
                reason,
            } => write!(
                f,
                "demote: stop postgres, rewind it and start it as a standby ({reason})"
            ),
            Action::Rejoin { reason, .. } => write!(f, "start postgres again ({reason})"),
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
