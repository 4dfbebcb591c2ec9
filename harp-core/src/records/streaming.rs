//! Records of streaming-replication mode. `optime/<group>` and `sync/<group>` are written by
//! the primary in a txn guarded by its token and live on no lease: they must outlive a dead
//! primary, as they decide which standby may replace it.

use serde::{Deserialize, Serialize};

use super::decode;

/// What a node's Postgres reports about replication (in its `nodes/<n>/status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaFacts {
    /// The timeline Postgres writes (primary) or replays (standby).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    /// Standby: WAL received and flushed (bytes); replayed is the status's `wal_lsn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_lsn: Option<u64>,
    /// Standby: `host:port` its `primary_conninfo` points at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Standby: whether its WAL receiver is streaming now.
    #[serde(default)]
    pub streaming: bool,
    /// Standby: bytes replayed behind the primary's last published position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    /// Primary: the standbys its commits wait for now (`synchronous` in `pg_stat_replication`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_standbys: Vec<String>,
}

/// Value of `optime/<group>`: the primary's last published WAL position. A standby more than
/// `maximum_lag` behind it may not be promoted; a primary on an older timeline never leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptimeRecord {
    pub version: u32,
    pub node: String,
    pub token: i64,
    pub timeline: Option<u32>,
    pub lsn: u64,
    /// The primary stopped cleanly at `lsn` (its shutdown checkpoint) before it released the
    /// lease: a switchover's target promotes only once it received that record.
    #[serde(default)]
    pub shutdown: bool,
    pub updated_ms: u64,
}

/// Value of `sync/<group>`: the standbys every acknowledged commit has reached (at least one of
/// them). Written by the primary under its token; only a member may be promoted. Members are
/// added only after Postgres reports them synchronous and removed before Postgres stops
/// waiting for them, so the record never names less than what commits waited for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRecord {
    pub version: u32,
    /// The primary that wrote it, and its token.
    pub leader: String,
    pub token: i64,
    pub members: Vec<String>,
    /// Strict mode: commits wait even with no healthy member.
    #[serde(default)]
    pub strict: bool,
    pub updated_ms: u64,
}

/// Value of `intent/reinit/<node>` (`harpctl reinit`): rebuild the node's data directory from
/// the primary with `pg_basebackup`. Deleted by the node's manager once done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReinitIntent {
    pub version: u32,
    pub node: String,
    pub requested_ms: u64,
}

macro_rules! codec {
    ($t:ty, $kind:literal) => {
        impl $t {
            pub fn decode(bytes: &[u8]) -> Result<Self, super::RecordError> {
                decode($kind, bytes)
            }
            pub fn encode(&self) -> String {
                serde_json::to_string(self).expect(concat!($kind, " serializes"))
            }
        }
    };
}

codec!(OptimeRecord, "optime");
codec!(SyncRecord, "sync");
codec!(ReinitIntent, "reinit intent");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_records_round_trip() {
        let sync = SyncRecord {
            version: 2,
            leader: "n1".into(),
            token: 7,
            members: vec!["n2".into()],
            strict: true,
            updated_ms: 1,
        };
        assert_eq!(SyncRecord::decode(sync.encode().as_bytes()).unwrap(), sync);
        let op = OptimeRecord {
            version: 2,
            node: "n1".into(),
            token: 7,
            timeline: Some(3),
            lsn: 99,
            shutdown: false,
            updated_ms: 1,
        };
        assert_eq!(OptimeRecord::decode(op.encode().as_bytes()).unwrap(), op);
        assert!(SyncRecord::decode(b"{\"version\":2}").is_err());
    }
}
