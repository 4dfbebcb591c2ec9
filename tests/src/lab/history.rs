//! What one lab scenario run recorded: the clients' writes, the observed leader changes, the
//! fault marks, and the register rows the final read found on every node. All times are unix
//! milliseconds from the one clock every namespace shares (CLOCK_REALTIME), so client, server
//! and observer times compare directly. Saved as `history.json` next to the run's report.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One write a client attempted through its agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteRecord {
    pub client: String,
    pub location: String,
    /// `"kernel"` (connect steered by eBPF) or `"userspace"` (through the agent's proxy).
    pub path: String,
    pub seq: u64,
    pub send_ms: f64,
    pub ack_ms: Option<f64>,
    pub outcome: Outcome,
    /// The node that accepted it (`cluster_name`), known only when acknowledged.
    pub node: Option<String>,
    /// The server's `clock_timestamp()` at acceptance, known only when acknowledged.
    pub server_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// Definitely not applied: refused before the statement was sent (connect refused, pause
    /// timeout).
    Failed {
        error: String,
    },
    /// Sent, but no answer came: it may or may not have been applied.
    Unknown {
        error: String,
    },
}

/// A change of `leader/<location>` seen by the observer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderChange {
    pub at_ms: f64,
    pub location: String,
    /// `None`: the key is gone, no leader.
    pub node: Option<String>,
    /// The key's etcd `create_revision`: the fencing token.
    pub token: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultMark {
    pub start_ms: f64,
    /// `None`: the fault lasted until the end of the run.
    pub end_ms: Option<f64>,
    pub label: String,
}

/// A register row the final read found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The node that accepted it (its `node` column: the accepting server's `cluster_name`,
    /// which a physical standby replays unchanged).
    pub node: String,
    pub client: String,
    pub seq: u64,
    pub server_ms: f64,
    /// The node whose table the row was read from; `None` (older histories): `node`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

impl Row {
    /// The node whose table the row was read from.
    pub fn table(&self) -> &str {
        self.table.as_deref().unwrap_or(&self.node)
    }
}

/// Clients that by design cannot write for a while: their agent is dead or frozen, so they
/// recover only once it runs again. Recovery moments inside it do not measure them; its end
/// does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outage {
    pub label: String,
    pub clients: Vec<String>,
    pub start_ms: f64,
    /// `None`: it lasted until the end of the run.
    pub end_ms: Option<f64>,
}

impl Outage {
    /// Whether `client` was in this outage at `ms`.
    pub fn covers(&self, client: &str, ms: f64) -> bool {
        self.clients.iter().any(|c| c == client)
            && self.start_ms <= ms
            && self.end_ms.is_none_or(|end| ms < end)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub scenario: String,
    pub seed: u64,
    pub lease_ms: u64,
    pub started_ms: f64,
    pub ended_ms: f64,
    pub writes: Vec<WriteRecord>,
    pub leaders: Vec<LeaderChange>,
    pub faults: Vec<FaultMark>,
    pub rows: Vec<Row>,
    /// `(label, ms)`: the moments from which the clients' recovery is measured (e.g. a fault's
    /// end or a crash).
    pub converge_from: Vec<(String, f64)>,
    #[serde(default)]
    pub outages: Vec<Outage>,
    /// `multi_writer` or `streaming` (`cluster.replication` of the lab's nodes).
    #[serde(default = "multi_writer")]
    pub replication: String,
    /// The current primaries when the rows were read: the nodes whose tables must hold every
    /// acknowledged write. A streaming cluster's leader; in a multi-writer cluster every node
    /// (each is a primary of the writes it took). Empty (older histories): every table.
    #[serde(default)]
    pub primaries: Vec<String>,
}

fn multi_writer() -> String {
    "multi_writer".into()
}

impl History {
    pub fn save(&self, path: &Path) -> Result<(), HistoryError> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| HistoryError::json(path, e))?;
        std::fs::write(path, json).map_err(|e| HistoryError::io(path, e))
    }

    pub fn load(path: &Path) -> Result<History, HistoryError> {
        let bytes = std::fs::read(path).map_err(|e| HistoryError::io(path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| HistoryError::json(path, e))
    }

    /// Milliseconds since the start of the run: the unit of every report.
    pub fn rel(&self, ms: f64) -> f64 {
        ms - self.started_ms
    }
}

// Written by hand: harp-tests does not depend on thiserror.
#[derive(Debug)]
pub enum HistoryError {
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl HistoryError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        HistoryError::Io {
            path: path.to_owned(),
            source,
        }
    }
    fn json(path: &Path, source: serde_json::Error) -> Self {
        HistoryError::Json {
            path: path.to_owned(),
            source,
        }
    }
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::Io { path, .. } => write!(f, "history file {}", path.display()),
            HistoryError::Json { path, .. } => write!(f, "history JSON in {}", path.display()),
        }
    }
}

impl std::error::Error for HistoryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HistoryError::Io { source, .. } => Some(source),
            HistoryError::Json { source, .. } => Some(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> History {
        History {
            scenario: "partition".into(),
            seed: 7,
            lease_ms: 3000,
            started_ms: 1000.0,
            ended_ms: 5000.0,
            writes: vec![WriteRecord {
                client: "c1".into(),
                location: "east".into(),
                path: "kernel".into(),
                seq: 1,
                send_ms: 1100.0,
                ack_ms: None,
                outcome: Outcome::Unknown {
                    error: "reset".into(),
                },
                node: None,
                server_ms: None,
            }],
            leaders: vec![LeaderChange {
                at_ms: 1000.0,
                location: "east".into(),
                node: Some("pg1".into()),
                token: Some(42),
            }],
            faults: vec![FaultMark {
                start_ms: 2000.0,
                end_ms: None,
                label: "cut pg1".into(),
            }],
            rows: vec![],
            converge_from: vec![("heal".into(), 3000.0)],
            outages: vec![],
            replication: "streaming".into(),
            primaries: vec!["pg2".into()],
        }
    }

    #[test]
    fn save_then_load_round_trips_and_outcome_is_tagged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.json");
        let h = sample();
        h.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#""kind": "unknown""#), "{text}");
        assert_eq!(History::load(&path).unwrap(), h);
    }

    #[test]
    fn load_reports_missing_file_and_bad_json_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let err = History::load(&missing).unwrap_err();
        assert!(matches!(err, HistoryError::Io { .. }));
        assert!(err.to_string().contains("nope.json"));
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, b"{").unwrap();
        assert!(matches!(
            History::load(&bad).unwrap_err(),
            HistoryError::Json { .. }
        ));
    }
}
