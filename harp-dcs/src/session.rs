//! An etcd session: one lease (TTL = `leader_lease_duration`) carrying a unit's status and,
//! for a leading manager, the leader key. Keep-alives go out every
//! `lease_refresh_interval`; each acknowledgement reports the moment its request was *sent*,
//! because etcd cannot expire the lease earlier than that moment + TTL.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, timeout};

use crate::{Backoff, Dcs};

/// What the session reports to its owner's decision loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    /// A lease exists (newly granted); its grant was sent at `sent`, so etcd cannot expire it
    /// before `sent` + TTL.
    Up {
        lease: i64,
        sent: std::time::Instant,
    },
    /// The lease is gone; a new one is being requested.
    Lost,
    /// A keep-alive sent at `sent` was acknowledged with the lease alive.
    KeepAliveOk { sent: std::time::Instant },
}

pub struct SessionParams {
    pub ttl: Duration,
    pub refresh: Duration,
}

/// Runs forever: grant a lease, keep it alive until etcd says it is gone, grant a new one.
pub async fn run<I: From<SessionEvent>>(dcs: Dcs, p: SessionParams, tx: mpsc::Sender<I>) {
    let mut backoff = Backoff::default();
    loop {
        let sent = std::time::Instant::now();
        let lease = match dcs.grant(p.ttl).await {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!("cannot create the etcd lease: {e}; retrying");
                sleep(backoff.next_delay()).await;
                continue;
            }
        };
        backoff.reset();
        dcs.answered();
        tracing::info!(lease = format_args!("{lease:x}"), "etcd session started");
        if tx
            .send(SessionEvent::Up { lease, sent }.into())
            .await
            .is_err()
        {
            return;
        }
        keep_alive(&dcs, lease, &p, &tx).await;
        tracing::warn!(lease = format_args!("{lease:x}"), "etcd lease expired");
        if tx.send(SessionEvent::Lost.into()).await.is_err() {
            return;
        }
    }
}

/// Returns when etcd reports the lease gone (TTL 0). Transport errors only reopen the stream:
/// the local deadline in the election decides when silence costs leadership.
async fn keep_alive<I: From<SessionEvent>>(
    dcs: &Dcs,
    lease: i64,
    p: &SessionParams,
    tx: &mpsc::Sender<I>,
) {
    // After a failure, retry faster than the normal refresh to regain contact before the deadline.
    let retry = (p.refresh / 4).max(Duration::from_millis(50));
    loop {
        let mut c = dcs.client.clone();
        let (mut keeper, mut stream) = match timeout(dcs.timeout, c.lease_keep_alive(lease)).await {
            Ok(Ok(pair)) => pair,
            // The lease expired while etcd could not be reached: the owner needs a new one.
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(e))) if e.contains("not found") => {
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!("keep-alive stream: {e}");
                sleep(retry).await;
                continue;
            }
            Err(_) => {
                tracing::debug!("keep-alive stream: no answer within {:?}", dcs.timeout);
                sleep(retry).await;
                continue;
            }
        };
        tracing::debug!("keep-alive stream open");
        let mut in_flight: VecDeque<Instant> = VecDeque::new();
        let mut next = Instant::now();
        loop {
            let wait_reply = in_flight.front().map(|s| *s + dcs.timeout);
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {
                    let sent = Instant::now();
                    // The send itself can hang on a connection that silently died (a
                    // partition): bound it, or the session would wait forever.
                    if !matches!(timeout(dcs.timeout, keeper.keep_alive()).await, Ok(Ok(()))) {
                        tracing::warn!("could not send a keep-alive within {:?}", dcs.timeout);
                        next = Instant::now() + retry;
                        break;
                    }
                    in_flight.push_back(sent);
                    next = sent + p.refresh;
                }
                _ = sleep_until_opt(wait_reply) => {
                    tracing::warn!("etcd did not acknowledge a keep-alive within {:?}", dcs.timeout);
                    next = Instant::now() + retry;
                    break;
                }
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        let Some(sent) = in_flight.pop_front() else { continue };
                        if resp.ttl() <= 0 {
                            return;
                        }
                        dcs.answered();
                        let ok = SessionEvent::KeepAliveOk { sent: sent.into_std() }.into();
                        if tx.send(ok).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) | Err(_) => break,
                },
            }
        }
        sleep_until_opt(Some(next)).await;
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
