//! The decision loop: turns inputs from the tasks (etcd session, watch, Postgres checker,
//! signals) into election events, and carries out the election's actions. Every etcd request
//! runs in its own task, so a slow etcd never delays reacting to a Postgres failure.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use harp_core::config::{self, Config, NodeDirectives};
use harp_core::directives::{NodeLayers, NodeOverrides};
use harp_core::election::{
    Action, Election, Event, Holder, Peer, ProxyDrain, ProxyState, Role, Switchover,
};
use harp_core::keys::KeyKind;
use harp_core::records::{
    LeaderRecord, ManagedRecord, NodeStatus, PgState, PromoteIntent, ProxyStatus, RECORD_VERSION,
    ReplicaFacts,
};
use tokio::sync::{mpsc, watch};

use crate::dcs::{self, Acquire, Dcs, DcsError, StatusOp, holder};
use crate::http::StatusView;
use harp_dcs::{KeyChange, MirrorEvent, SessionEvent};

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
}

impl Runner {
    fn me(&self) -> &str {
        &self.election.params().node
    }

    fn location(&self) -> &str {
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
                let limit = self.dcs.timeout * 2;
                tokio::spawn(async move {
                    tokio::time::sleep(limit).await;
                    let _ = tx.send(Input::ForceExit).await;
                });
                out.push_back(Event::Shutdown);
            }
            Input::ForceExit => {}
            Input::Reload => self.reload(out),
        }
    }

    fn apply_changes(&mut self, changes: Vec<KeyChange>, out: &mut VecDeque<Event>) {
        for ch in changes {
            let keys = self.dcs.keys.clone();
            match keys.parse(&ch.key) {
                Some(KeyKind::Leader(loc)) if loc == self.location() => {
                    self.leader = ch.value.as_ref().map(|(v, rev)| holder(v, *rev));
                    out.push_back(Event::LeaderObserved(self.leader.clone()));
                }
                Some(KeyKind::NodeStatus(node)) if node != self.me() => {
                    let peer = ch.value.and_then(|(v, _)| match NodeStatus::decode(&v) {
                        Ok(s) => Some(Peer {
                            location: s.location,
                            postgres: s.postgres,
                            priority: s.priority,
                            wal_lsn: s.wal_lsn,
                        }),
                        Err(e) => {
                            tracing::warn!("ignoring the status of {node}: {e}");
                            None
                        }
                    });
                    out.push_back(Event::PeerStatus {
                        node: node.to_owned(),
                        peer,
                    });
                }
                Some(KeyKind::ProxyStatus(proxy)) => {
                    let state = ch.value.map(|(v, _)| match ProxyStatus::decode(&v) {
                        Ok(s) => ProxyState::Status(ProxyDrain {
                            location: s.location,
                            token: s.token,
                            draining: s.draining,
                            left: s.drain_left,
                            pooled: s.pooled,
                        }),
                        Err(e) => {
                            // It may carry our sessions: never counted as drained.
                            tracing::warn!("cannot read the status of proxy {proxy}: {e}");
                            ProxyState::Unreadable
                        }
                    });
                    out.push_back(Event::ProxyDrain {
                        proxy: proxy.to_owned(),
                        state,
                    });
                }
                Some(KeyKind::Fenced(node)) => out.push_back(Event::Fenced {
                    node: node.to_owned(),
                    fenced: ch.value.is_some(),
                }),
                Some(KeyKind::PromoteIntent(loc)) if loc == self.location() => {
                    let intent = ch.value.and_then(|(v, _)| match PromoteIntent::decode(&v) {
                        Ok(i) => Some(Switchover {
                            target: i.target,
                            from_token: i.from_token,
                            force: i.force,
                        }),
                        Err(e) => {
                            tracing::warn!("ignoring the switchover request: {e}");
                            None
                        }
                    });
                    if let Some(i) = &intent {
                        tracing::info!(target = %i.target, from_token = i.from_token, "switchover requested");
                    }
                    out.push_back(Event::Switchover(intent));
                }
                Some(KeyKind::Managed) => {
                    // Absent or unreadable: managed (HARP's default).
                    self.cluster_managed = ch
                        .value
                        .and_then(|(v, _)| ManagedRecord::decode(&v).ok())
                        .is_none_or(|r| r.managed);
                    out.push_back(Event::Managed(self.managed()));
                }
                Some(KeyKind::ClusterConfig) => {
                    self.layers.cluster = directives(ch.value.map(|(v, _)| v));
                    self.apply_directives(out);
                }
                Some(KeyKind::LocationConfig(loc)) if loc == self.location() => {
                    self.layers.location = directives(ch.value.map(|(v, _)| v));
                    self.apply_directives(out);
                }
                Some(KeyKind::NodeConfig(node)) if node == self.me() => {
                    self.layers.node = directives(ch.value.map(|(v, _)| v));
                    self.apply_directives(out);
                }
                Some(KeyKind::ProxyUnmanaged(proxy)) => out.push_back(Event::ProxyManaged {
                    proxy: proxy.to_owned(),
                    managed: ch.value.is_none(),
                }),
                Some(KeyKind::NodeUnmanaged(node)) if node == self.me() => {
                    self.node_unmanaged = ch.value.is_some();
                    out.push_back(Event::Managed(self.managed()));
                }
                _ => {}
            }
        }
    }

    fn managed(&self) -> bool {
        self.cluster_managed && !self.node_unmanaged
    }

    /// Carries out one action; returns true when the manager should exit.
    async fn execute(&mut self, action: Action) -> bool {
        match &action {
            Action::PublishStatus => {}
            Action::Release { .. } | Action::StepDown { .. } => tracing::warn!("{action}"),
            _ => tracing::info!("{action}"),
        }
        match action {
            Action::TryAcquire => {
                let Some(lease) = self.lease else {
                    let _ = self.tx.try_send(Input::AcquireDone(
                        Err(DcsError::Timeout(Duration::ZERO)),
                        Instant::now(),
                    ));
                    return false;
                };
                let record = self.leader_record();
                let (dcs, tx) = (self.dcs.clone(), self.tx.clone());
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let r = dcs::try_acquire(&dcs, lease, &record).await;
                    let _ = tx.send(Input::AcquireDone(r, sent)).await;
                });
            }
            Action::Release { token, .. } => {
                let status = match self.lease {
                    _ if self.election.is_shutting_down() => StatusOp::Delete(self.me().to_owned()),
                    Some(l) => StatusOp::Put(Box::new(self.status()), l),
                    None => StatusOp::None,
                };
                let (dcs, tx, loc) = (
                    self.dcs.clone(),
                    self.tx.clone(),
                    self.location().to_owned(),
                );
                tokio::spawn(async move {
                    let r = dcs::release(&dcs, &loc, token, status).await;
                    let _ = tx.send(Input::ReleaseDone(r)).await;
                });
            }
            Action::StepDown { .. } => {}
            // Streaming mode's Postgres operations (wired in a later change).
            Action::Promote { .. } | Action::Follow { .. } | Action::Rejoin { .. } => {}
            Action::MarkLeader {
                token,
                handover_to,
                leaving,
            } => {
                // Without a session the key is gone with our lease: nothing to mark.
                if let Some(lease) = self.lease {
                    let record = LeaderRecord {
                        handover_to,
                        leaving,
                        ..self.leader_record()
                    };
                    let _ = self.marks.send(dcs::Mark {
                        lease,
                        token,
                        record,
                    });
                }
            }
            Action::StopPostgres | Action::StartPostgres => {
                let Some(ctl) = &self.pgctl else {
                    tracing::error!("cannot {action}: manager.db_bin_dir/db_data_dir not set");
                    return false;
                };
                let _ = ctl.send(action);
            }
            Action::PublishStatus => self.publish_status(),
            Action::Exit => {
                if let Some(lease) = self.lease.take()
                    && let Err(e) = self.dcs.revoke(lease).await
                {
                    tracing::warn!("could not revoke the etcd lease ({e}); it will expire");
                }
                tracing::info!("stopped");
                return true;
            }
        }
        false
    }

    /// Our `leader/<location>` value.
    fn leader_record(&self) -> LeaderRecord {
        LeaderRecord {
            version: RECORD_VERSION,
            node: self.me().to_owned(),
            location: self.location().to_owned(),
            address: self.address.clone(),
            port: self.port,
            handover_to: None,
            leaving: false,
            ..Default::default()
        }
    }

    fn status(&self) -> NodeStatus {
        let e = &self.election;
        NodeStatus {
            version: RECORD_VERSION,
            node: self.me().to_owned(),
            location: self.location().to_owned(),
            postgres: e.postgres(),
            priority: e.params().priority,
            wal_lsn: e.wal_lsn(),
            leader: e.is_leader(),
            address: self.address.clone(),
            port: self.port,
            pending_restart: self
                .pending_restart
                .iter()
                .map(|k| (*k).to_owned())
                .collect(),
            updated_ms: harp_core::records::unix_ms(),
            ..Default::default()
        }
    }

    fn publish_status(&self) {
        // Leaving: the release txn deleted our status; writing it again would make peers
        // count us as a candidate until the lease is revoked.
        if self.election.is_shutting_down() {
            return;
        }
        if let Some(lease) = self.lease {
            let st = self.status();
            let key = self.dcs.keys.node_status(&st.node);
            self.publish.send_replace(Some((key, st.encode(), lease)));
        }
    }

    fn refresh_view(&self) {
        let e = &self.election;
        let (role, token) = match e.role() {
            Role::Leader { token, .. } => ("leader", Some(token)),
            Role::Follower => ("follower", None),
        };
        self.view.send_replace(StatusView {
            name: self.me().to_owned(),
            location: self.location().to_owned(),
            role,
            token,
            postgres: e.postgres(),
            leader: e.holder().map(|h| h.node.clone()),
            leader_token: e.holder().map(|h| h.token),
            fenced: e.is_fenced(),
            managed: e.is_managed(),
            ineligible: e.ineligible_reason(),
            switchover_refusal: e.switchover_refusal(),
            etcd_session: self.lease.is_some(),
            replication: self.config.cluster.replication.as_str(),
            writable: token.is_some() && e.postgres() == PgState::Primary,
            replica: self.facts.clone(),
            reason: None,
        });
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
