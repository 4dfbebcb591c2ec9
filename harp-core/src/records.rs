//! JSON records stored in etcd, readable across a rolling upgrade in both directions.
//!
//! The rule, for every record here and for the directives:
//! - A writer stamps `version` with the format it writes ([`RECORD_VERSION`]).
//! - A reader accepts any `version >= 1` whose JSON carries the fields it needs: a newer
//!   record adds fields (ignored by older readers: no record denies unknown fields) and never
//!   changes what an existing field means. Fields added after version 1 are optional
//!   (`#[serde(default)]`), so records of older writers still read.
//! - A change that older readers must not half-understand sets `min_reader_version` above the
//!   versions they read: such a reader rejects the record whole (and treats it as it treats
//!   any unreadable record) rather than act on part of it.
//! - Version 0, a missing version, or missing fields are rejected.
//!
//! Directive records (`config/...`) keep the unknown fields they read (`newer`), so an older
//! `harpctl set`, which rewrites a record whole, does not drop a newer HARP's directives.

use serde::{Deserialize, Serialize};

/// The record format this build writes, and the newest it reads whole.
pub const RECORD_VERSION: u32 = 2;

mod streaming;
pub use streaming::{OptimeRecord, ReinitIntent, ReplicaFacts, SyncRecord};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record is not valid JSON for {kind}: {source}")]
    Json {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{kind} record has version {found}, which no HARP writes")]
    Version { kind: &'static str, found: u32 },
    #[error(
        "{kind} record needs a reader of version {needs}; this HARP reads version \
         {RECORD_VERSION}: upgrade HARP"
    )]
    TooNew { kind: &'static str, needs: u32 },
}

/// Value of `leader/<location>`. The fencing token is the key's `create_revision`, which etcd
/// keeps with the key: readers take it from the key's metadata, so it can never disagree with
/// the lease that holds the key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    pub version: u32,
    /// Set (to 2) while `promoting`: a reader that does not know the flag would route writes
    /// to a standby, so it must refuse the record whole (and hold clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_reader_version: Option<u32>,
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
    /// Streaming mode: the holder's Postgres is still a standby being promoted. Proxies route
    /// nobody to it (they hold clients) until the leader rewrites the record without it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promoting: bool,
}

impl LeaderRecord {
    /// Whether proxies may send clients to this leader now.
    pub fn routable(&self) -> bool {
        !self.leaving && !self.promoting
    }

    /// Sets `promoting` and the reader version that understands it.
    pub fn set_promoting(&mut self, promoting: bool) {
        self.promoting = promoting;
        self.min_reader_version = promoting.then_some(2);
    }
}

/// Health of a node's Postgres as its manager last saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PgState {
    /// Accepts writes.
    Primary,
    /// In recovery (a physical standby): never leads.
    Standby,
    /// Not reachable or failing its check.
    Down,
    /// Not checked yet.
    #[default]
    Unknown,
}

/// Value of `nodes/<n>/status`, on the manager's lease (it vanishes when the manager dies).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Streaming mode: the leader key (replication group) the node competes for; absent in a
    /// multi-writer cluster, where it is `location`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Streaming mode: what Postgres and its replication look like from this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<streaming::ReplicaFacts>,
    /// Why the node is not serving as it should (e.g. a failed rewind), for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl NodeStatus {
    /// The leader key this node competes for.
    pub fn scope(&self) -> &str {
        self.group.as_deref().unwrap_or(&self.location)
    }
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
        decode("promote intent", bytes)
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
        decode("managed", bytes)
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
    /// How long this proxy trusts what etcd showed it (its `leader_lease_duration`), in ms:
    /// peers wait that long for it to fail closed. Absent (older agents): the reader's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl_ms: Option<u64>,
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

/// What every record carries, read before the record itself so that a record this build must
/// not read is refused as such, not as a missing field.
#[derive(Deserialize)]
struct Header {
    version: u32,
    #[serde(default)]
    min_reader_version: Option<u32>,
}

/// Decodes a versioned JSON record by the rule in the module doc.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    kind: &'static str,
    bytes: &[u8],
) -> Result<T, RecordError> {
    let json = |source| RecordError::Json { kind, source };
    let header: Header = serde_json::from_slice(bytes).map_err(json)?;
    if header.version == 0 {
        return Err(RecordError::Version { kind, found: 0 });
    }
    if let Some(needs) = header.min_reader_version.filter(|&v| v > RECORD_VERSION) {
        return Err(RecordError::TooNew { kind, needs });
    }
    serde_json::from_slice(bytes).map_err(json)
}

impl LeaderRecord {
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        decode("leader", bytes)
    }
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("leader record serializes")
    }
}

impl NodeStatus {
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        decode("node status", bytes)
    }
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("node status serializes")
    }
}

impl ProxyStatus {
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        decode("proxy status", bytes)
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
mod tests;
