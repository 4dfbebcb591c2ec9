//! Streaming mode in the decision loop: the records it reads (`optime`, `sync`, reinit
//! requests), the Postgres operations the election asks for (promote, follow, rejoin), and
//! the order a primary gives up its lease in — Postgres stopped first, so the deposed
//! primary takes no write once another node may be promoted.

use std::sync::Arc;
use std::time::Duration;

use harp_core::config::SynchronousMode;
use harp_core::election::{Action, Event, Optime};
use harp_core::keys::KeyKind;
use harp_core::records::{LeaderRecord, OptimeRecord, PgState, RECORD_VERSION, ReinitIntent};
use harp_dcs::KeyChange;
use tokio::sync::watch;

use super::{Input, Runner};
use crate::standby::Standby;

/// How long a rejoin waits for a promoting primary to take writes before it gives up (and
/// the election retries it).
const PRIMARY_WAIT: Duration = Duration::from_secs(30);
/// How long a switchover's target waits to receive the old primary's last WAL record.
const FINAL_WAL_WAIT: Duration = Duration::from_secs(10);

impl Runner {
    /// Streaming records of our group; `true` when `kind` was one of them.
    pub(super) fn apply_streaming(
        &mut self,
        kind: KeyKind<'_>,
        ch: &KeyChange,
        out: &mut std::collections::VecDeque<Event>,
    ) -> bool {
        let scope = self.location().to_owned();
        match kind {
            KeyKind::Optime(g) if g == scope => {
                self.optime = ch.value.as_ref().and_then(|(v, _)| {
                    OptimeRecord::decode(v)
                        .inspect_err(|e| tracing::warn!("ignoring {}: {e}", ch.key))
                        .ok()
                });
                out.push_back(Event::Optime(self.optime.as_ref().map(|o| Optime {
                    node: o.node.clone(),
                    timeline: o.timeline,
                    lsn: o.lsn,
                    shutdown: o.shutdown,
                })));
            }
            KeyKind::Sync(g) if g == scope => {
                let record = ch.value.as_ref().and_then(|(v, _)| {
                    harp_core::records::SyncRecord::decode(v)
                        .inspect_err(|e| tracing::warn!("ignoring {}: {e}", ch.key))
                        .ok()
                });
                out.push_back(Event::SyncSet(record.as_ref().map(|r| r.members.clone())));
                self.sync_record.send_replace(record);
            }
            KeyKind::ReinitIntent(node) if node == self.me() => {
                if let Some((v, _)) = &ch.value
                    && ReinitIntent::decode(v).is_ok()
                {
                    self.reinit();
                }
            }
            KeyKind::Optime(_) | KeyKind::Sync(_) | KeyKind::ReinitIntent(_) => {}
            _ => return false,
        }
        true
    }

    fn standby(&self) -> Option<Arc<Standby>> {
        let s = self.standby.clone();
        if s.is_none() {
            tracing::error!("streaming mode needs manager.db_data_dir and manager.db_bin_dir");
        }
        s
    }

    /// Carries out `Promote`, `Follow` and `Rejoin`.
    pub(super) fn streaming_action(&mut self, action: Action) {
        let Some(standby) = self.standby() else {
            return;
        };
        let tx = self.tx.clone();
        match action {
            Action::Promote { token } => {
                // A switchover: the old primary stopped cleanly at `lsn`; promoting before
                // we received it would lose what it committed last.
                let final_lsn = self
                    .optime
                    .as_ref()
                    .filter(|o| o.shutdown && o.node != self.me())
                    .map(|o| o.lsn);
                // Synchronous mode: the new primary must acknowledge nothing before its keeper
                // chose a synchronous standby, so commits start out waiting for none.
                let block = self.config.cluster.synchronous_mode != SynchronousMode::Off;
                tokio::spawn(async move {
                    let _turn = standby.ctl.turn().await;
                    if block
                        && let Err(e) = standby
                            .set_sync_standbys(&[harp_core::sync::BLOCKED.to_owned()])
                            .await
                    {
                        tracing::warn!("cannot make commits wait before promoting: {e}");
                    }
                    if let Some(lsn) = final_lsn
                        && let Err(e) = standby.wait_received(lsn, FINAL_WAL_WAIT).await
                    {
                        // Synchronous mode lets a switchover's target in only because it
                        // holds the old primary's last commit: without it, it must not lead.
                        if block {
                            let result = Err(format!("the old primary's last WAL: {e}"));
                            let _ = tx.send(Input::Promoted { token, result }).await;
                            return;
                        }
                        tracing::warn!("promoting without the old primary's last record: {e}");
                    }
                    let result = standby.promote().await.map_err(|e| e.to_string());
                    let _ = tx.send(Input::Promoted { token, result }).await;
                });
            }
            Action::Follow { .. } => {
                let Some(r) = self.leader_record.borrow().clone() else {
                    return;
                };
                tokio::spawn(async move {
                    let _turn = standby.ctl.turn().await;
                    match standby.follow(&r.address, r.port).await {
                        Ok(true) => tracing::info!("now streaming from {}", r.node),
                        Ok(false) => {}
                        Err(e) => tracing::error!("cannot follow {}: {e}", r.node),
                    }
                });
            }
            Action::Rejoin { stop_first, .. } => {
                let has_leader = self.election.holder().is_some();
                let primary = self.leader_record.subscribe();
                tokio::spawn(async move {
                    let _turn = standby.ctl.turn().await;
                    let result = rejoin(&standby, stop_first, has_leader, primary).await;
                    if let Err(e) = &result {
                        tracing::error!("{e}");
                    }
                    let _ = tx.send(Input::Rejoined(result)).await;
                });
            }
            _ => {}
        }
    }

    /// `harpctl reinit`: rebuild our data directory from the primary, then drop the request.
    fn reinit(&mut self) {
        if self.election.is_leader() {
            tracing::error!("refusing to reinit: this node is the primary");
            return;
        }
        let Some(standby) = self.standby() else {
            return;
        };
        let Some(r) = self.leader_record.borrow().clone().filter(|r| r.routable()) else {
            tracing::error!("cannot reinit: no primary to copy from");
            return;
        };
        let (tx, dcs, key) = (
            self.tx.clone(),
            self.dcs.clone(),
            self.dcs.keys.reinit_intent(self.me()),
        );
        tokio::spawn(async move {
            let _turn = standby.ctl.turn().await;
            tracing::info!("reinit: rebuilding from {} with pg_basebackup", r.node);
            let result = standby.reinit(&r.address, r.port).await;
            let result = result.map_err(|e| format!("reinit failed: {e}"));
            match &result {
                Ok(()) => tracing::info!("reinit done: streaming from {}", r.node),
                Err(e) => tracing::error!("{e}"),
            }
            let mut c = dcs.client.clone();
            if let Err(e) = dcs.bounded(c.delete(key, None)).await {
                tracing::warn!("cannot remove the reinit request: {e}");
            }
            let _ = tx.send(Input::Rejoined(result)).await;
        });
    }

    /// Stops a primary whose lease we give up or may have lost. Returns the position it
    /// stopped at when the stop was clean (a switchover's target waits for it).
    pub(super) fn stop_deposed(&self) -> Option<tokio::task::JoinHandle<Option<OptimeRecord>>> {
        if !self.election.is_streaming() || self.election.postgres() != PgState::Primary {
            return None;
        }
        let standby = self.standby()?;
        let (node, token) = (self.me().to_owned(), self.optime_token());
        Some(tokio::spawn(async move {
            if let Err(e) = standby.stop().await {
                tracing::error!("cannot stop the deposed primary: {e}");
                return None;
            }
            tracing::info!("stopped postgres: this node no longer holds the lease");
            let cd = standby.controldata().await.ok()?;
            (cd.state == "shut down").then(|| OptimeRecord {
                version: RECORD_VERSION,
                node,
                token,
                timeline: Some(cd.timeline),
                lsn: cd.checkpoint_lsn,
                shutdown: true,
                updated_ms: harp_core::records::unix_ms(),
            })
        }))
    }

    fn optime_token(&self) -> i64 {
        match self.election.role() {
            harp_core::election::Role::Leader { token, .. } => token,
            _ => self.election.holder().map_or(0, |h| h.token),
        }
    }

    /// The primary's position, for `optime/<group>`: written while we lead and take writes.
    pub(super) fn publish_optime(&self) {
        let harp_core::election::Role::Leader { token, .. } = self.election.role() else {
            return;
        };
        let (Some(lsn), PgState::Primary) = (self.election.wal_lsn(), self.election.postgres())
        else {
            return;
        };
        if !self.election.is_streaming() {
            return;
        }
        let record = OptimeRecord {
            version: RECORD_VERSION,
            node: self.me().to_owned(),
            token,
            timeline: self.election.timeline(),
            lsn,
            shutdown: false,
            updated_ms: harp_core::records::unix_ms(),
        };
        let (dcs, scope) = (self.dcs.clone(), self.location().to_owned());
        tokio::spawn(async move {
            let key = dcs.keys.optime(&scope);
            if let Err(e) =
                crate::dcs::put_if_leader(&dcs, &scope, token, &key, record.encode()).await
            {
                tracing::debug!("cannot publish the primary's position: {e}");
            }
        });
    }

    /// Why the node does not serve as it should: a failed rewind or promotion, or synchronous
    /// mode unable to protect commits.
    pub(super) fn reason(&self) -> Option<String> {
        if let Some(f) = self.election.replica_failure() {
            return Some(f.to_owned());
        }
        let h = *self.sync_health.borrow();
        if h.degraded {
            return Some(
                "synchronous mode degraded: no healthy standby, commits wait for none (what \
                 they acknowledge may be lost with this primary)"
                    .into(),
            );
        }
        h.blocked
            .then(|| "writes wait: no synchronous standby acknowledges commits".into())
    }

    /// Bytes our standby replayed behind the primary's last published position.
    pub(super) fn lag(&self) -> Option<u64> {
        let o = self.optime.as_ref()?;
        match self.election.postgres() {
            PgState::Standby => Some(o.lsn.saturating_sub(self.election.wal_lsn()?)),
            _ => None,
        }
    }
}

/// Stop if asked; then follow the primary (rewinding what diverged), or with no primary start
/// Postgres where it is (a standby, or the last primary restarting in place).
async fn rejoin(
    standby: &Standby,
    stop_first: bool,
    has_leader: bool,
    mut primary: watch::Receiver<Option<LeaderRecord>>,
) -> Result<(), String> {
    if stop_first {
        standby
            .stop()
            .await
            .map_err(|e| format!("cannot stop postgres: {e}"))?;
        tracing::info!("stopped postgres: a primary without the lease takes no writes");
    }
    if !has_leader {
        if stop_first {
            return Err("stopped postgres; waiting for a primary to follow".into());
        }
        return standby
            .ctl
            .start()
            .await
            .map_err(|e| format!("cannot start postgres: {e}"));
    }
    let wait = primary.wait_for(|r| r.as_ref().is_some_and(LeaderRecord::routable));
    let r = match tokio::time::timeout(PRIMARY_WAIT, wait).await {
        Ok(Ok(r)) => r.clone().expect("routable"),
        _ => return Err("the primary did not take writes in time; will try again".into()),
    };
    let done = standby
        .rejoin(&r.address, r.port)
        .await
        .map_err(|e| format!("cannot rejoin as a standby of {}: {e}", r.node))?;
    tracing::info!("rejoined as a standby of {}: {done:?}", r.node);
    Ok(())
}
