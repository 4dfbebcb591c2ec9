//! The manager's own etcd operations: the leader-lease txns and its status record.

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use harp_core::election::Holder;
use harp_core::records::{LeaderRecord, NodeStatus, OptimeRecord};
pub use harp_dcs::{Dcs, DcsError, Result};

/// What the create-if-absent txn found.
pub enum Acquire {
    Won { token: i64 },
    Held(Holder),
}

/// etcd's election campaign: create the key only if absent, else read who holds it.
pub async fn try_acquire(dcs: &Dcs, lease: i64, record: &LeaderRecord) -> Result<Acquire> {
    let key = dcs.keys.leader(&record.location);
    let txn = Txn::new()
        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key.as_str(),
            record.encode(),
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(key.as_str(), None)]);
    let mut c = dcs.client.clone();
    let resp = dcs.bounded(c.txn(txn)).await?;
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

/// Rewrites our leader record (a switchover mark) only if the key is still the one we hold; it
/// stays on our lease. `false`: the key changed meanwhile.
pub async fn mark_handover(
    dcs: &Dcs,
    lease: i64,
    token: i64,
    record: &LeaderRecord,
) -> Result<bool> {
    let key = dcs.keys.leader(&record.location);
    let txn = Txn::new()
        .when([Compare::create_revision(
            key.as_str(),
            CompareOp::Equal,
            token,
        )])
        .and_then([TxnOp::put(
            key.as_str(),
            record.encode(),
            Some(PutOptions::new().with_lease(lease)),
        )]);
    let mut c = dcs.client.clone();
    Ok(dcs.bounded(c.txn(txn)).await?.succeeded())
}

/// A switchover mark to write: our leader record under `token`, on `lease`.
pub struct Mark {
    pub lease: i64,
    pub token: i64,
    pub record: LeaderRecord,
}

/// Writes switchover marks one at a time, in the order asked (a withdrawal never lands before
/// the mark it withdraws), retrying a failed write until it lands or a newer one replaces it.
pub fn marker(dcs: Dcs) -> tokio::sync::mpsc::UnboundedSender<Mark> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Mark>();
    tokio::spawn(async move {
        while let Some(mut m) = rx.recv().await {
            let mut failures = 0u32;
            loop {
                while let Ok(newer) = rx.try_recv() {
                    m = newer;
                }
                match mark_handover(&dcs, m.lease, m.token, &m.record).await {
                    Ok(true) => break,
                    Ok(false) => {
                        tracing::info!("the leader key changed before the handover mark");
                        break;
                    }
                    Err(e) => {
                        if failures.is_multiple_of(10) {
                            tracing::warn!("cannot write the handover mark ({e}); retrying");
                        }
                        failures += 1;
                        let wait =
                            std::time::Duration::from_millis(100 * u64::from(failures.min(10)));
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
    });
    tx
}

/// Deletes the leader key only if it is still ours, writing our status in the same txn so
/// peers that see the key vanish already know why.
/// Streaming: `last`, the position our primary stopped at, is written in the same txn.
pub async fn release(
    dcs: &Dcs,
    location: &str,
    token: i64,
    status: StatusOp,
    last: Option<OptimeRecord>,
) -> Result<bool> {
    let key = dcs.keys.leader(location);
    let mut ops = Vec::new();
    if let Some(o) = last {
        ops.push(TxnOp::put(dcs.keys.optime(location), o.encode(), None));
    }
    match status {
        StatusOp::Put(st, lease) => ops.push(TxnOp::put(
            dcs.keys.node_status(&st.node),
            st.encode(),
            Some(PutOptions::new().with_lease(lease)),
        )),
        StatusOp::Delete(node) => ops.push(TxnOp::delete(dcs.keys.node_status(&node), None)),
        StatusOp::None => {}
    }
    ops.push(TxnOp::delete(key.as_str(), None));
    let txn = Txn::new()
        .when([Compare::create_revision(
            key.as_str(),
            CompareOp::Equal,
            token,
        )])
        .and_then(ops);
    let mut c = dcs.client.clone();
    Ok(dcs.bounded(c.txn(txn)).await?.succeeded())
}

/// What the release txn does with our status, in the same revision as the key's delete.
pub enum StatusOp {
    /// Why we release (e.g. postgres down), so peers rank without us at once.
    Put(Box<NodeStatus>, i64),
    /// We leave (shutdown): no longer a candidate at all.
    Delete(String),
    /// No session: nothing to write.
    None,
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

/// Writes `key` (on no lease: it must outlive us) only while we hold `leader/<scope>` under
/// `token`; `false` when we no longer do.
pub async fn put_if_leader(
    dcs: &Dcs,
    scope: &str,
    token: i64,
    key: &str,
    value: String,
) -> Result<bool> {
    let leader = dcs.keys.leader(scope);
    let txn = Txn::new()
        .when([Compare::create_revision(
            leader.as_str(),
            CompareOp::Equal,
            token,
        )])
        .and_then([TxnOp::put(key, value, None)]);
    let mut c = dcs.client.clone();
    Ok(dcs.bounded(c.txn(txn)).await?.succeeded())
}
