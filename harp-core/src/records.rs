//! JSON records stored in etcd. Each carries `version` so a newer HARP can read an older one's
//! records during a rolling upgrade; readers reject versions they do not know.

use serde::{Deserialize, Serialize};

/// The record format this build writes.
pub const RECORD_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record is not valid JSON for {kind}: {source}")]
    Json {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{kind} record has version {found}; this HARP reads version {RECORD_VERSION}: upgrade HARP"
    )]
    Version { kind: &'static str, found: u32 },
}

/// Value of `leader/<location>`. The fencing token is the key's `create_revision`, which etcd
/// keeps with the key: readers take it from the key's metadata, so it can never disagree with
/// the lease that holds the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    pub version: u32,
    pub node: String,
    pub location: String,
    /// Where clients reach the leader's Postgres.
    pub address: String,
    pub port: u16,
    /// Set by the leader when it hands over to this node at a planned switchover: proxies
    /// then hold new clients and close its sessions at transaction boundaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover_to: Option<String>,
    /// Set by a leader about to release while its Postgres still takes writes (fenced, or a
    /// switchover's drain over): proxies treat it as gone — they cut its sessions and route
    /// no new client to it — and it releases once their statuses show that.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leaving: bool,
}

/// Health of a node's Postgres as its manager last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PgState {
    /// Accepts writes.
    Primary,
    /// In recovery (a physical standby): never leads.
    Standby,
    /// Not reachable or failing its check.
    Down,
    /// Not checked yet.
    Unknown,
}

/// Value of `nodes/<n>/status`, on the manager's lease (it vanishes when the manager dies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub version: u32,
    pub node: String,
    pub location: String,
    pub postgres: PgState,
    pub priority: i32,
    /// WAL position (current for a primary, replayed for a standby), in bytes.
    pub wal_lsn: Option<u64>,
    /// Whether this manager holds its location's leader lease.
    pub leader: bool,
    pub address: String,
    pub port: u16,
    /// Directives set in etcd that apply only after the manager restarts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_restart: Vec<String>,
    /// Unix milliseconds of the write, for humans reading `harpctl get nodes`.
    pub updated_ms: u64,
}

/// Value of `intent/promote/<location>` (`harpctl promote`), on a lease of its own so an
/// abandoned request expires. While it lives, only `target` may acquire the location's lease,
/// and the leader holding `from_token` hands over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteIntent {
    pub version: u32,
    pub location: String,
    pub target: String,
    /// The leadership being replaced (its fencing token).
    pub from_token: i64,
    /// Skip the leader's eligibility checks of the target (health aside: a target that is down
    /// cannot acquire anyway).
    pub force: bool,
    pub requested_ms: u64,
}

impl PromoteIntent {
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        decode("promote intent", bytes, |r: &Self| r.version)
    }
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("promote intent serializes")
    }
}

/// Value of `managed` and of `unmanaged/{nodes,proxies}/<name>` markers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedRecord {
    pub version: u32,
    pub managed: bool,
    pub updated_ms: u64,
}

impl ManagedRecord {
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        decode("managed", bytes, |r: &Self| r.version)
    }
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("managed record serializes")
    }
}

/// Value of `proxies/<p>/status`, on the agent's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyStatus {
    pub version: u32,
    pub name: String,
    pub location: String,
    /// The leader new clients are routed to; `None` while clients are held.
    pub leader: Option<String>,
    pub token: Option<i64>,
    /// `userspace` or `ebpf`.
    pub mode: String,
    /// Client sessions relayed right now.
    pub sessions: u64,
    /// Clients held, waiting for a leader.
    pub held: u64,
    /// The leadership (token) whose sessions this proxy is draining for a switchover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining: Option<i64>,
    /// Of those, the sessions still open that the proxy can close at a transaction boundary.
    #[serde(default)]
    pub drain_left: u64,
    /// Whether HARP steers this proxy's route (`harpctl manage|unmanage`).
    #[serde(default = "yes")]
    pub managed: bool,
    /// `type: pgbouncer`: the leadership PgBouncer's server connections may still serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooled: Option<i64>,
    pub updated_ms: u64,
}

fn yes() -> bool {
    true
}

impl ProxyStatus {
    /// The leaderships under which this proxy may have sessions: the one it routes to, the
    /// one it drains and the one its PgBouncer serves.
    pub fn live_tokens(&self) -> impl Iterator<Item = i64> {
        self.token
            .into_iter()
            .chain(self.draining)
            .chain(self.pooled)
    }
}

/// Decodes a versioned JSON record, rejecting versions this build does not read.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    kind: &'static str,
    bytes: &[u8],
    version: impl Fn(&T) -> u32,
) -> Result<T, RecordError> {
    let rec: T =
        serde_json::from_slice(bytes).map_err(|source| RecordError::Json { kind, source })?;
    match version(&rec) {
        RECORD_VERSION => Ok(rec),
        found => Err(RecordError::Version { kind, found }),
    }
}

impl LeaderRecord {
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        decode("leader", bytes, |r: &Self| r.version)
    }
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("leader record serializes")
    }
}

impl NodeStatus {
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        decode("node status", bytes, |r: &Self| r.version)
    }
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("node status serializes")
    }
}

impl ProxyStatus {
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        decode("proxy status", bytes, |r: &Self| r.version)
    }
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("proxy status serializes")
    }
}

/// Milliseconds since the Unix epoch, for `updated_ms` fields.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_record_round_trips_and_rejects_unknown_versions() {
        let rec = LeaderRecord {
            version: RECORD_VERSION,
            node: "n1".into(),
            location: "dca".into(),
            address: "10.0.0.1".into(),
            port: 5432,
            handover_to: None,
            leaving: false,
        };
        assert_eq!(LeaderRecord::decode(rec.encode().as_bytes()).unwrap(), rec);
        let handing = LeaderRecord {
            handover_to: Some("n2".into()),
            ..rec.clone()
        };
        assert_eq!(
            LeaderRecord::decode(handing.encode().as_bytes()).unwrap(),
            handing
        );
        let leaving = LeaderRecord {
            leaving: true,
            ..rec.clone()
        };
        assert_eq!(
            LeaderRecord::decode(leaving.encode().as_bytes()).unwrap(),
            leaving
        );
        // Written by a HARP without the field: not leaving.
        assert!(!rec.encode().contains("leaving"));
        let future = rec.encode().replace("\"version\":1", "\"version\":9");
        let err = LeaderRecord::decode(future.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("version 9"), "{err}");
        assert!(LeaderRecord::decode(b"nonsense").is_err());
    }

    #[test]
    fn a_proxy_status_names_every_leadership_it_may_have_sessions_under() {
        // As an agent without the newer fields writes it: managed, nothing pooled.
        let old = r#"{"version":1,"name":"p1","location":"dca","leader":"n1","token":5,
            "mode":"userspace","sessions":2,"held":0,"updated_ms":1}"#;
        let s = ProxyStatus::decode(old.as_bytes()).unwrap();
        assert!(s.managed);
        assert_eq!(s.live_tokens().collect::<Vec<_>>(), vec![5]);
        let pooling = ProxyStatus {
            token: None,
            draining: Some(5),
            pooled: Some(4),
            ..s
        };
        let back = ProxyStatus::decode(pooling.encode().as_bytes()).unwrap();
        assert_eq!(back.live_tokens().collect::<Vec<_>>(), vec![5, 4]);
    }
}
