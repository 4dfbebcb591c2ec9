//! The manager's etcd session: one lease (TTL = `leader_lease_duration`) carrying the node
//! status and, while leading, the leader key. Keep-alives go out every
//! `lease_refresh_interval`; each acknowledgement reports the moment its request was *sent*,
//! because etcd cannot expire the lease earlier than that moment + TTL.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, timeout};

use crate::dcs::Dcs;
use crate::runner::Input;

pub struct SessionParams {
    pub ttl: Duration,
    pub refresh: Duration,
}

/// Runs forever: grant a lease, keep it alive until etcd says it is gone, grant a new one.
pub async fn run(dcs: Dcs, p: SessionParams, tx: mpsc::Sender<Input>) {
    let mut backoff = Backoff::new();
    loop {
        let lease = match dcs.grant(p.ttl).await {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!("cannot create the etcd lease: {e}; retrying");
                sleep(backoff.next()).await;
                continue;
            }
        };
        backoff.reset();
        tracing::info!(lease = format_args!("{lease:x}"), "etcd session started");
        if tx.send(Input::SessionUp(lease)).await.is_err() {
            return;
        }
        keep_alive(&dcs, lease, &p, &tx).await;
        tracing::warn!(lease = format_args!("{lease:x}"), "etcd lease expired");
        if tx.send(Input::SessionLost).await.is_err() {
            return;
        }
    }
}

/// Returns when etcd reports the lease gone (TTL 0). Transport errors only reopen the stream:
/// the local deadline in the election decides when silence costs leadership.
async fn keep_alive(dcs: &Dcs, lease: i64, p: &SessionParams, tx: &mpsc::Sender<Input>) {
    // After a failure, retry faster than the normal refresh to regain contact before the deadline.
    let retry = (p.refresh / 4).max(Duration::from_millis(50));
    loop {
        let mut c = dcs.client.clone();
        let (mut keeper, mut stream) = match timeout(dcs.timeout, c.lease_keep_alive(lease)).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                tracing::debug!("keep-alive stream: {e}");
                sleep(retry).await;
                continue;
            }
            Err(_) => {
                sleep(retry).await;
                continue;
            }
        };
        let mut in_flight: VecDeque<Instant> = VecDeque::new();
        let mut next = Instant::now();
        loop {
            let wait_reply = in_flight.front().map(|s| *s + dcs.timeout);
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {
                    let sent = Instant::now();
                    if keeper.keep_alive().await.is_err() {
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
                        let ok = Input::KeepAliveOk { sent: sent.into_std() };
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

/// Exponential backoff for etcd retries: 100 ms doubling to 2 s.
pub struct Backoff(Duration);

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(2);

    pub fn new() -> Self {
        Self(Self::MIN)
    }
    pub fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        d
    }
    pub fn reset(&mut self) {
        self.0 = Self::MIN;
    }
}
