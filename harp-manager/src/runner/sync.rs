//! Synchronous mode on the primary: a task per leadership runs `harp_core::sync`'s machine —
//! it looks at Postgres and the `sync/<group>` record, carries out one action at a time
//! (`synchronous_standby_names`, or the record in a txn guarded by our token), and looks
//! again. The order of the changes, which is what keeps every acknowledged commit on a
//! standby the record names, is the machine's.

use std::sync::Arc;
use std::time::Duration;

use harp_core::config::SynchronousMode;
use harp_core::election::Role;
use harp_core::records::{PgState, RECORD_VERSION, SyncRecord};
use harp_core::sync::{self, Observation, SyncMachine};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Runner;
use crate::dcs::{Dcs, put_if_leader};
use crate::standby::Standby;

/// How often the machine looks again when it has nothing to do.
const LOOK_EVERY: Duration = Duration::from_millis(200);
/// How long a written record may take to come back through the watch.
const ECHO_WAIT: Duration = Duration::from_secs(2);

/// What the primary's status says of synchronous mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncHealth {
    /// `on` mode with commits waiting for nobody: what they acknowledge may be lost.
    pub degraded: bool,
    /// Commits wait for a standby that does not report sync: writes block.
    pub blocked: bool,
}

/// The running keeper of one leadership.
pub struct SyncKeeper {
    token: i64,
    task: JoinHandle<()>,
}

impl Drop for SyncKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Context {
    standby: Arc<Standby>,
    dcs: Dcs,
    scope: String,
    me: String,
    mode: SynchronousMode,
    token: i64,
    record: watch::Receiver<Option<SyncRecord>>,
    peers: watch::Receiver<Vec<(String, i32, bool)>>,
    health: watch::Sender<SyncHealth>,
}

impl Runner {
    /// Starts the keeper when we lead a writable primary in synchronous mode; stops it when
    /// we no longer do.
    pub(super) fn keep_sync(&mut self) {
        let mode = self.config.cluster.synchronous_mode;
        let token = match self.election.role() {
            Role::Leader { token, .. } => Some(token),
            Role::Follower => None,
        };
        let writable = self.election.postgres() == PgState::Primary
            && self
                .leader_record
                .borrow()
                .as_ref()
                .is_some_and(|r| r.node == self.me() && r.routable());
        let want = token.filter(|_| writable && mode != SynchronousMode::Off);
        self.sync_peers.send_if_modified(|p| {
            let now = self.election.peers().summary();
            (*p != now).then(|| *p = now).is_some()
        });
        // What the status says of synchronous mode changed: publish it.
        let health = *self.sync_health.borrow();
        if health != self.sync_seen {
            self.sync_seen = health;
            self.publish_status();
        }
        match (&self.sync_keeper, want) {
            (Some(k), Some(t)) if k.token == t => {}
            (None, None) => {}
            (_, None) => {
                self.sync_keeper = None;
                self.sync_health.send_replace(SyncHealth::default());
            }
            (_, Some(token)) => {
                let Some(standby) = self.standby.clone() else {
                    return;
                };
                let ctx = Context {
                    standby,
                    dcs: self.dcs.clone(),
                    scope: self.location().to_owned(),
                    me: self.me().to_owned(),
                    mode,
                    token,
                    record: self.sync_record.subscribe(),
                    peers: self.sync_peers.subscribe(),
                    health: self.sync_health.clone(),
                };
                tracing::info!(token, "synchronous mode: managing the synchronous standby");
                self.sync_keeper = Some(SyncKeeper {
                    token,
                    task: tokio::spawn(keep(ctx)),
                });
            }
        }
    }
}

async fn keep(mut ctx: Context) {
    let mut machine = SyncMachine::new(ctx.mode, &ctx.me, ctx.token);
    loop {
        let view = match ctx.standby.replication_view().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("synchronous mode: cannot read replication state: {e}");
                tokio::time::sleep(LOOK_EVERY * 5).await;
                continue;
            }
        };
        let peers = ctx.peers.borrow().clone();
        let standbys = view
            .standbys
            .into_iter()
            .map(|(name, streaming, flush_lsn)| {
                let (priority, fenced) = peers
                    .iter()
                    .find(|p| p.0 == name)
                    .map_or((0, false), |p| (p.1, p.2));
                sync::Standby {
                    name,
                    streaming,
                    flush_lsn,
                    priority,
                    fenced,
                }
            })
            .collect();
        let obs = Observation {
            standbys,
            ssn: view.ssn,
            reported_sync: view.sync,
            primary_lsn: view.lsn,
            record: ctx.record.borrow().clone(),
        };
        let action = machine.step(sync::Input::Observed(obs));
        ctx.health.send_if_modified(|h| {
            let now = SyncHealth {
                degraded: machine.degraded(),
                blocked: machine.blocked(),
            };
            (*h != now).then(|| *h = now).is_some()
        });
        let Some(action) = action else {
            tokio::time::sleep(LOOK_EVERY).await;
            continue;
        };
        tracing::info!("synchronous mode: {action}");
        if let Err(e) = carry_out(&mut ctx, &action).await {
            tracing::warn!("synchronous mode: {action} failed: {e}");
            machine.step(sync::Input::Failed);
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }
}

async fn carry_out(ctx: &mut Context, action: &sync::Action) -> Result<(), String> {
    match action {
        sync::Action::SetSsn(names) => {
            ctx.standby
                .set_sync_standbys(names)
                .await
                .map_err(|e| e.to_string())?;
            if let Err(e) = ctx.standby.nudge_standbys().await {
                tracing::debug!("cannot nudge the standbys: {e}");
            }
            Ok(())
        }
        sync::Action::WriteRecord(members) => {
            let record = SyncRecord {
                version: RECORD_VERSION,
                leader: ctx.me.clone(),
                token: ctx.token,
                members: members.clone(),
                strict: ctx.mode == SynchronousMode::Strict,
                updated_ms: harp_core::records::unix_ms(),
            };
            let key = ctx.dcs.keys.sync(&ctx.scope);
            match put_if_leader(&ctx.dcs, &ctx.scope, ctx.token, &key, record.encode()).await {
                Ok(true) => {}
                Ok(false) => return Err("we no longer hold the lease".into()),
                Err(e) => return Err(e.to_string()),
            }
            // The machine's next look must see the record it wrote.
            let echoed = ctx.record.wait_for(|r| r.as_ref() == Some(&record));
            match tokio::time::timeout(ECHO_WAIT, echoed).await {
                Ok(Ok(_)) => Ok(()),
                _ => Err("the written record did not come back through the watch".into()),
            }
        }
    }
}
