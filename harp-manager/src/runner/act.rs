//! Carrying out the election's actions: every etcd request in a task of its own.

use std::time::{Duration, Instant};

use harp_core::election::Action;
use harp_core::records::{LeaderRecord, RECORD_VERSION};

use super::{Input, Runner};
use crate::dcs::{self, DcsError, StatusOp};

impl Runner {
    /// Carries out one action; returns true when the manager should exit.
    pub(super) async fn execute(&mut self, action: Action) -> bool {
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
                let mut record = self.own_record();
                // Streaming: a standby acquires first, then promotes; until then proxies
                // must route nobody to it.
                record.set_promoting(self.election.acquires_promoting());
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
                // Streaming: our Postgres stops before the lease goes, so no standby is
                // promoted while it still takes writes.
                let stopping = self.stop_deposed();
                tokio::spawn(async move {
                    let last = match stopping {
                        Some(task) => task.await.ok().flatten(),
                        None => None,
                    };
                    let r = dcs::release(&dcs, &loc, token, status, last).await;
                    let _ = tx.send(Input::ReleaseDone(r)).await;
                });
            }
            // Streaming: our lease may expire any moment: the primary stops now.
            Action::StepDown { .. } => drop(self.stop_deposed()),
            Action::Promote { .. } | Action::Follow { .. } | Action::Rejoin { .. } => {
                self.streaming_action(action)
            }
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
                        ..self.own_record()
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
    pub(super) fn own_record(&self) -> LeaderRecord {
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
}
