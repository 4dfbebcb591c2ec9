//! One etcd connection for one command. Every endpoint is probed at once and the first
//! member that answers (with a quorum leader) serves the whole command, so a dead member
//! costs nothing and a dead cluster costs one request timeout.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnResponse};
use harp_core::config::DcsConfig;
use harp_core::keys::Keys;
use harp_core::lease::KeyLease;
use harp_dcs::{Dcs, DcsError};

use crate::error::{CtlError, etcd_message, no_answer};
use crate::snapshot::Snapshot;

pub struct Conn {
    pub dcs: Dcs,
    /// The member serving this command, for messages.
    pub endpoint: String,
}

impl Conn {
    /// Probes every endpoint (a count-only get of the cluster's prefix, bounded by the
    /// request timeout) and keeps the first that answers.
    pub async fn open(cfg: &DcsConfig, keys: &Keys) -> Result<Conn, CtlError> {
        let mut probes = harp_dcs::probe_each(cfg, keys);
        let (mut failures, mut refusals) = (Vec::new(), Vec::new());
        while let Some(joined) = probes.join_next().await {
            let Ok((endpoint, res)) = joined else {
                continue;
            };
            match res {
                Ok(dcs) => return Ok(Conn { dcs, endpoint }),
                Err(e @ (DcsError::Refused { .. } | DcsError::Setup(_))) => {
                    refusals.push(e.to_string())
                }
                Err(e) => failures.push(format!("{endpoint}: {}", describe(&e))),
            }
        }
        // A refusal is the configuration's fault, whatever the other members did.
        if !refusals.is_empty() {
            refusals.sort();
            return Err(CtlError::Rejected(refusals.join("; ")));
        }
        failures.sort();
        Err(CtlError::unreachable(
            &cfg.endpoints.join(","),
            failures.join("; "),
        ))
    }

    pub fn keys(&self) -> &Keys {
        &self.dcs.keys
    }

    pub fn timeout(&self) -> Duration {
        self.dcs.timeout
    }

    fn fail(&self, e: DcsError) -> CtlError {
        CtlError::from_dcs(&self.endpoint, e)
    }

    /// One prefix get of the cluster's keys.
    pub async fn snapshot(&self, cluster: &str) -> Result<Snapshot, CtlError> {
        let mut c = self.dcs.client.clone();
        let prefix = self.keys().prefix().to_owned();
        let resp = self
            .dcs
            .bounded(c.get(prefix, Some(GetOptions::new().with_prefix())))
            .await
            .map_err(|e| self.fail(e))?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let kvs = resp.kvs().iter().map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.value(),
                kv.create_revision(),
            )
        });
        Ok(Snapshot::from_kvs(cluster, self.keys(), revision, kvs))
    }

    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, CtlError> {
        let mut c = self.dcs.client.clone();
        self.dcs.bounded(c.txn(txn)).await.map_err(|e| self.fail(e))
    }

    /// Puts `value` at `key` unless the key exists; `true` if it was written.
    pub async fn put_if_absent(&self, key: &str, value: String) -> Result<bool, CtlError> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        Ok(self.txn(txn).await?.succeeded())
    }

    pub async fn put(&self, key: &str, value: String) -> Result<(), CtlError> {
        let mut c = self.dcs.client.clone();
        self.dcs
            .bounded(c.put(key, value, None))
            .await
            .map(drop)
            .map_err(|e| self.fail(e))
    }

    /// The value at `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CtlError> {
        let mut c = self.dcs.client.clone();
        let resp = self
            .dcs
            .bounded(c.get(key, None))
            .await
            .map_err(|e| self.fail(e))?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// Deletes `key`; `true` if it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, CtlError> {
        let mut c = self.dcs.client.clone();
        let resp = self
            .dcs
            .bounded(c.delete(key, None))
            .await
            .map_err(|e| self.fail(e))?;
        Ok(resp.deleted() > 0)
    }

    /// The lease `key` lives on, as etcd reports it; `None`: absent or expired.
    pub async fn key_lease(&self, key: &str) -> Result<Option<KeyLease>, CtlError> {
        self.dcs.key_lease(key).await.map_err(|e| self.fail(e))
    }

    pub async fn grant(&self, ttl: Duration) -> Result<i64, CtlError> {
        self.dcs.grant(ttl).await.map_err(|e| self.fail(e))
    }

    pub async fn revoke(&self, lease: i64) -> Result<(), CtlError> {
        self.dcs.revoke(lease).await.map_err(|e| self.fail(e))
    }
}

fn describe(e: &DcsError) -> String {
    match e {
        DcsError::Timeout(t) => no_answer(*t),
        DcsError::Etcd(e) => etcd_message(e),
        other => other.to_string(),
    }
}
