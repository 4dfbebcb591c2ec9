//! The manager's etcd operations, each bounded by `dcs.request_timeout`. The client is cheap
//! to clone, so each operation runs in its own task and never stalls the decision loop.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, PutOptions, Txn, TxnOp};
use harp_core::config::DcsConfig;
use harp_core::election::Holder;
use harp_core::keys::Keys;
use harp_core::records::{LeaderRecord, NodeStatus};

#[derive(Debug, thiserror::Error)]
pub enum DcsError {
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
}

pub type Result<T> = std::result::Result<T, DcsError>;

/// What the create-if-absent txn found.
pub enum Acquire {
    Won { token: i64 },
    Held(Holder),
}

#[derive(Clone)]
pub struct Dcs {
    pub client: Client,
    pub keys: Keys,
    pub timeout: Duration,
}

/// Connects lazily: etcd may be down at start, and every request retries on its own.
pub async fn connect(cfg: &DcsConfig, keys: Keys) -> anyhow::Result<Dcs> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(cfg.request_timeout)
        .with_keep_alive(Duration::from_secs(1), cfg.request_timeout)
        // A member cut off from the quorum must not serve stale reads or silent watches.
        .with_require_leader(true);
    let client = Client::connect(&cfg.endpoints, Some(opts)).await?;
    Ok(Dcs {
        client,
        keys,
        timeout: cfg.request_timeout,
    })
}

impl Dcs {
    async fn bounded<T>(
        &self,
        fut: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(DcsError::Timeout(self.timeout)),
        }
    }

    pub async fn grant(&self, ttl: Duration) -> Result<i64> {
        let mut c = self.client.clone();
        let secs = ttl.as_secs().max(1) as i64;
        Ok(self.bounded(c.lease_grant(secs, None)).await?.id())
    }

    pub async fn revoke(&self, lease: i64) -> Result<()> {
        let mut c = self.client.clone();
        self.bounded(c.lease_revoke(lease)).await.map(|_| ())
    }

    /// etcd's election campaign: create the key only if absent, else read who holds it.
    pub async fn try_acquire(&self, lease: i64, record: &LeaderRecord) -> Result<Acquire> {
        let key = self.keys.leader(&record.location);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                record.encode(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let mut c = self.client.clone();
        let resp = self.bounded(c.txn(txn)).await?;
        if resp.succeeded() {
            // The put happened at the txn's revision, which is the key's create_revision.
            let token = resp.header().map_or(0, |h| h.revision());
            return Ok(Acquire::Won { token });
        }
        let holder = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                etcd_client::TxnOpResponse::Get(g) => g
                    .kvs()
                    .first()
                    .map(|kv| holder(kv.value(), kv.create_revision())),
                _ => None,
            })
            .unwrap_or(Holder {
                node: "(vanished)".into(),
                token: 0,
            });
        Ok(Acquire::Held(holder))
    }

    /// Deletes the leader key only if it is still ours, writing our status in the same txn so
    /// peers that see the key vanish already know why.
    pub async fn release(
        &self,
        location: &str,
        token: i64,
        status: Option<(&NodeStatus, i64)>,
    ) -> Result<bool> {
        let key = self.keys.leader(location);
        let mut ops = Vec::new();
        if let Some((st, lease)) = status {
            ops.push(TxnOp::put(
                self.keys.node_status(&st.node),
                st.encode(),
                Some(PutOptions::new().with_lease(lease)),
            ));
        }
        ops.push(TxnOp::delete(key.as_str(), None));
        let txn = Txn::new()
            .when([Compare::create_revision(
                key.as_str(),
                CompareOp::Equal,
                token,
            )])
            .and_then(ops);
        let mut c = self.client.clone();
        Ok(self.bounded(c.txn(txn)).await?.succeeded())
    }

    pub async fn put_status(&self, status: &NodeStatus, lease: i64) -> Result<()> {
        let mut c = self.client.clone();
        let put = c.put(
            self.keys.node_status(&status.node),
            status.encode(),
            Some(PutOptions::new().with_lease(lease)),
        );
        self.bounded(put).await.map(|_| ())
    }
}

/// The leader as a key-value shows it; a record we cannot read still means "held".
pub fn holder(value: &[u8], create_revision: i64) -> Holder {
    let node = LeaderRecord::decode(value)
        .map(|r| r.node)
        .unwrap_or_else(|e| format!("(unreadable: {e})"));
    Holder {
        node,
        token: create_revision,
    }
}
