//! At start, before the manager writes or deletes anything: refuse to run under a node name
//! that another live manager uses. Two managers with one name would each take the other's
//! leader key for a stale one of their own and delete it (an unplanned failover), and the
//! second's exit would take the first's status with it.

use std::time::{Duration, Instant};

use harp_core::lease::{Claim, NameClaim};
use harp_dcs::{Backoff, Dcs};

/// How often the status key's lease is looked at while waiting.
const LOOK_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
#[error(
    "another harp-manager runs as node {node}: its status ({key}) is on etcd lease {lease:x} and \
     {why}; every manager needs its own manager.name: stop the other manager, or give this one a \
     unique manager.name in {config}"
)]
pub struct NameTaken {
    pub node: String,
    pub key: String,
    pub lease: i64,
    pub why: &'static str,
    pub config: String,
}

/// Returns once no live lease holds `nodes/<node>/status`; a previous run's status (killed
/// with `kill -9`) is waited out, at most its lease's remaining TTL. etcd unreachable: looks
/// again until it answers, since the manager can do nothing without it anyway.
pub async fn claim_name(dcs: &Dcs, node: &str, config: &str) -> Result<(), NameTaken> {
    let key = dcs.keys.node_status(node);
    let mut claim = NameClaim::default();
    let mut backoff = Backoff::default();
    let (mut warned, mut waiting) = (false, false);
    loop {
        let lease = match dcs.key_lease(&key).await {
            Ok(l) => l,
            Err(e) => {
                if !std::mem::replace(&mut warned, true) {
                    tracing::warn!("cannot check {key} in etcd ({e}); retrying");
                }
                dcs.pause(&mut backoff).await;
                continue;
            }
        };
        match claim.observe(lease, Instant::now()) {
            Claim::Free => return Ok(()),
            Claim::Wait { lease, until } => {
                if !std::mem::replace(&mut waiting, true) {
                    let left = until.saturating_duration_since(Instant::now());
                    tracing::info!(
                        "{key} is on etcd lease {lease:x}, maybe left by a previous run; \
                         waiting up to {} for it to expire",
                        humantime_ms(left)
                    );
                }
            }
            Claim::Taken { lease, why } => {
                return Err(NameTaken {
                    node: node.to_owned(),
                    key,
                    lease,
                    why,
                    config: config.to_owned(),
                });
            }
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

fn humantime_ms(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}
