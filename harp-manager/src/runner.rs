//! The decision loop: turns inputs from the tasks (etcd session, watch, Postgres checker,
//! signals) into election events, and carries out the election's actions. Every etcd request
//! runs in its own task, so a slow etcd never delays reacting to a Postgres failure.

mod act;
mod keys;
mod streaming;
mod sync;
mod view;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use harp_core::config::{self, Config, NodeDirectives};
use harp_core::directives::{NodeLayers, NodeOverrides};
use harp_core::election::{Action, Election, Event, Holder};
use harp_core::records::{LeaderRecord, PgState, ReplicaFacts};
use tokio::sync::{mpsc, watch};

use crate::dcs::{self, Acquire, Dcs, DcsError};
use crate::http::StatusView;
use harp_dcs::{MirrorEvent, SessionEvent};

pub enum Input {
    Postgres {
        state: PgState,
        wal_lsn: Option<u64>,
        /// Streaming mode's facts (timeline, upstream, synchronous standbys).
        facts: ReplicaFacts,
        reason: Option<String>,
    },
    Session(SessionEvent),
    Mirror(MirrorEvent),
    AcquireDone(Result<Acquire, DcsError>, Instant),
    ReleaseDone(Result<bool, DcsError>),
    /// Streaming mode: a promotion ended.
    Promoted {
        token: i64,
        result: Result<(), String>,
    },
    /// Streaming mode: a rejoin, restart or reinit ended.
    Rejoined(Result<(), String>),
    Shutdown,
    /// The shutdown took too long: leave without further etcd work.
    ForceExit,
    Reload,
}

pub struct Runner {
    pub config_path: PathBuf,
    pub config: Config,
    pub dcs: Dcs,
    pub election: Election,
    /// Where clients reach our Postgres (from the dsn).
    pub address: String,
    pub port: u16,
    pub lease: Option<i64>,
    /// The leader of our location as the watch shows it.
    pub leader: Option<Holder>,
    /// Stops and starts the local Postgres (`stop_database_when_fenced`).
    pub pgctl: Option<mpsc::UnboundedSender<Action>>,
    /// The node directives of the config file as last read (SIGHUP), and those set in etcd.
    pub file_node: NodeDirectives,
    pub layers: NodeLayers,
    /// Directives that differ from what the manager runs with and wait for a restart.
    pub pending_restart: Vec<&'static str>,
    /// `managed` (cluster) and `unmanaged/nodes/<me>` as last seen.
    pub cluster_managed: bool,
    pub node_unmanaged: bool,
    pub tx: mpsc::Sender<Input>,
    pub rx: mpsc::Receiver<Input>,
    pub publish: watch::Sender<Option<(String, String, i64)>>,
    pub view: watch::Sender<StatusView>,
    /// Switchover marks, written in order by [`dcs::marker`].
    pub marks: mpsc::UnboundedSender<dcs::Mark>,
    /// What the last check saw of replication (streaming mode).
    pub facts: ReplicaFacts,
    /// Streaming mode: our Postgres's operations (promote, follow, rewind, …).
    pub standby: Option<Arc<crate::standby::Standby>>,
    /// Streaming mode: `optime/<group>` as last read.
    pub optime: Option<harp_core::records::OptimeRecord>,
    /// The leader record as last read (where the primary is, whether it takes writes).
    pub leader_record: watch::Sender<Option<LeaderRecord>>,
    /// Synchronous mode: `sync/<group>` as last read, the peers' priority and fence for the
    /// keeper, its health, and the keeper itself while we lead.
    pub sync_record: watch::Sender<Option<harp_core::records::SyncRecord>>,
    pub sync_peers: watch::Sender<Vec<(String, i32, bool)>>,
    pub sync_health: watch::Sender<sync::SyncHealth>,
    pub sync_keeper: Option<sync::SyncKeeper>,
    /// The synchronous-mode health last published in our status.
    pub sync_seen: sync::SyncHealth,
}

impl Runner {
    pub(super) fn me(&self) -> &str {
        &self.election.params().node
    }

    pub(super) fn location(&self) -> &str {
        &self.election.params().location
    }

    pub async fn run(mut self) -> anyhow::Result<()> {
        let mut events = VecDeque::new();
        let mut watchdog = harp_dcs::watchdog::Watchdog::from_env();
        watchdog.ready();
        loop {
            let wake = self.election.next_wake();
            let input = tokio::select! {
                i = self.rx.recv() => i,
                _ = sleep_until(wake) => None,
                // Sent from this loop: systemd kills a manager whose decisions hang.
                _ = watchdog.due() => {
                    watchdog.kick();
                    continue;
                }
            };
            match input {
                Some(Input::ForceExit) => {
                    tracing::warn!("shutdown did not finish in time; exiting");
                    return Ok(());
                }
                Some(i) => self.translate(i, &mut events),
                None => events.push_back(Event::Tick),
            }
            while let Some(ev) = events.pop_front() {
                let actions = self.election.step(ev, Instant::now());
                for a in actions {
                    if self.execute(a).await {
                        return Ok(());
                    }
                }
            }
            self.keep_sync();
            self.refresh_view();
        }
    }

    fn translate(&mut self, input: Input, out: &mut VecDeque<Event>) {
        match input {
            Input::Postgres {
                state,
                wal_lsn,
                facts,
                reason,
            } => {
                self.facts = facts;
                if state != self.election.postgres() {
                    match &reason {
                        Some(r) => tracing::warn!("postgres is {state:?}: {r}"),
                        None => tracing::info!("postgres is {state:?}"),
                    }
                }
                out.push_back(Event::Replica {
                    timeline: self.facts.timeline,
                });
                out.push_back(Event::Postgres { state, wal_lsn });
            }
            Input::Session(SessionEvent::Up { lease, sent }) => {
                self.lease = Some(lease);
                out.push_back(Event::SessionUp { sent });
                self.publish_status();
            }
            Input::Session(SessionEvent::Lost) => {
                self.lease = None;
                out.push_back(Event::SessionLost);
            }
            Input::Session(SessionEvent::KeepAliveOk { sent }) => {
                out.push_back(Event::KeepAliveOk { sent })
            }
            Input::Mirror(MirrorEvent::Synced(changes)) => {
                self.apply_changes(changes, out);
                out.push_back(Event::LeaderObserved(self.leader.clone()));
            }
            Input::Mirror(MirrorEvent::Changed(changes)) => self.apply_changes(changes, out),
            // Acquiring is a compare-and-swap in etcd: a stale view costs no safety here.
            Input::Mirror(MirrorEvent::Interrupted) => {}
            Input::AcquireDone(r, sent) => out.push_back(match r {
                Ok(Acquire::Won { token }) => {
                    tracing::info!(token, "acquired the leader lease of {}", self.location());
                    Event::Acquired { token, sent }
                }
                Ok(Acquire::Held(holder)) => Event::AcquireLost { holder },
                Err(e) => {
                    tracing::warn!("acquire failed: {e}");
                    Event::AcquireFailed
                }
            }),
            Input::ReleaseDone(r) => out.push_back(match r {
                Ok(true) => {
                    tracing::info!("released the leader lease");
                    Event::Released
                }
                Ok(false) => Event::Released, // no longer ours: nothing to release
                Err(e) => {
                    tracing::warn!("release failed ({e}); the lease will expire on its own");
                    Event::ReleaseFailed
                }
            }),
            Input::Shutdown => {
                tracing::info!("shutting down");
                let tx = self.tx.clone();
                // Streaming: the release waits for our primary to stop first.
                let stop = self.standby.as_ref().map(|s| s.timeouts.fast_stop * 2);
                let limit = self.dcs.timeout * 2 + stop.unwrap_or_default();
                tokio::spawn(async move {
                    tokio::time::sleep(limit).await;
                    let _ = tx.send(Input::ForceExit).await;
                });
                out.push_back(Event::Shutdown);
            }
            Input::ForceExit => {}
            Input::Reload => self.reload(out),
            Input::Promoted { token, result } => {
                match &result {
                    Ok(()) => {
                        tracing::info!(token, "postgres promoted");
                        // The promotion checked it takes writes: do not wait for the next
                        // check to route to it.
                        out.push_back(Event::Postgres {
                            state: PgState::Primary,
                            wal_lsn: self.election.wal_lsn(),
                        });
                    }
                    Err(e) => tracing::error!(token, "{e}"),
                }
                out.push_back(Event::Promoted { token, result })
            }
            Input::Rejoined(result) => out.push_back(Event::Rejoined(result)),
        }
    }

    /// SIGHUP: apply what can change live; name what needs a restart.
    fn reload(&mut self, out: &mut VecDeque<Event>) {
        let new = match config::load_file(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("reload refused, keeping the running config:\n{e}");
                return;
            }
        };
        let (Some(old_m), Some(new_m)) = (&self.config.manager, &new.manager) else {
            tracing::error!("reload refused: the new config has no manager section");
            return;
        };
        let mut restart = Vec::new();
        if new.cluster != self.config.cluster {
            restart.push("cluster");
        }
        if new.dcs != self.config.dcs {
            restart.push("dcs");
        }
        if new.location != self.config.location {
            restart.push("location");
        }
        if new.http != self.config.http {
            restart.push("http");
        }
        if new_m.name != old_m.name {
            restart.push("manager.name");
        }
        if new_m.node.dsn != old_m.node.dsn {
            restart.push("manager.dsn");
        }
        if !restart.is_empty() {
            tracing::warn!(
                "reload: {} changed; these apply after a restart",
                restart.join(", ")
            );
        }
        self.file_node = new_m.node.clone();
        self.apply_directives(out);
    }

    /// Merges the etcd directives over the file's: live ones reach the election at once,
    /// the others are reported as pending a restart.
    fn apply_directives(&mut self, out: &mut VecDeque<Event>) {
        let running = &self.config.manager.as_ref().expect("manager section").node;
        let (eff, pending) = self.layers.effective().merge(&self.file_node, running);
        let p = self.election.params();
        let live = (eff.priority, eff.maximum_lag, eff.server_transfer_timeout);
        if live != (p.priority, p.maximum_lag, p.server_transfer_timeout) {
            tracing::info!(
                priority = eff.priority,
                maximum_lag = eff.maximum_lag,
                server_transfer_timeout = ?eff.server_transfer_timeout,
                "directives applied"
            );
            out.push_back(Event::Reconfigure {
                priority: eff.priority,
                maximum_lag: eff.maximum_lag,
                server_transfer_timeout: eff.server_transfer_timeout,
            });
        }
        if pending != self.pending_restart {
            if !pending.is_empty() {
                tracing::warn!("{} changed; applies after a restart", pending.join(", "));
            }
            self.pending_restart = pending;
            self.publish_status();
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl From<SessionEvent> for Input {
    fn from(e: SessionEvent) -> Self {
        Input::Session(e)
    }
}

impl From<MirrorEvent> for Input {
    fn from(e: MirrorEvent) -> Self {
        Input::Mirror(e)
    }
}

/// A directives record from etcd; absent or unreadable (logged) counts as none set.
pub fn directives(value: Option<Vec<u8>>) -> NodeOverrides {
    match value.map(|v| NodeOverrides::decode(&v)) {
        None => NodeOverrides::new(),
        Some(Ok(o)) => o,
        Some(Err(e)) => {
            tracing::error!("ignoring node directives in etcd: {e}");
            NodeOverrides::new()
        }
    }
}
