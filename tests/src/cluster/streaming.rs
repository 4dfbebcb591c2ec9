//! A streaming [`TestCluster`]: the first node's Postgres is the primary, every other one a
//! physical standby made from it with `pg_basebackup -R`, and every manager runs with
//! `cluster.replication: streaming`, `manager.db_data_dir` and `manager.db_bin_dir`. The
//! primary's manager starts (and leads) first, as in a real bootstrap: no standby can find a
//! vacant lease before the primary holds it.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Node, TestCluster, TestClusterBuilder, wait_http};
use crate::manager::{ManagerProc, ManagerSpec};
use crate::postgres::{PgInstance, pg_bin_dir};
use crate::rt::block_on;
use crate::workdir::WorkDir;

/// Postgres settings of every node of a streaming cluster, and of every system the benchmarks
/// compare with it (Patroni's nodes get the same): what physical replication, `pg_rewind`
/// (`wal_log_hints`) and read-only standbys need, with WAL kept generously so a standby that
/// falls behind during a fault never needs a new base backup.
/// A short `wal_retrieve_retry_interval` lets a re-pointed standby reconnect at once.
/// Settings HARP changes at run time (`primary_conninfo`, `synchronous_standby_names`) must never
/// be here: the command line beats `ALTER SYSTEM`.
pub const SETTINGS: [(&str, &str); 7] = [
    ("wal_level", "replica"),
    ("wal_log_hints", "on"),
    ("hot_standby", "on"),
    ("wal_keep_size", "1GB"),
    ("max_wal_senders", "10"),
    ("max_replication_slots", "10"),
    ("wal_retrieve_retry_interval", "500ms"),
];

/// Bound on the bootstrap's waits (a leader for the primary, every manager's HTTP).
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn start(b: TestClusterBuilder) -> TestCluster {
    let sync = b.streaming.clone().expect("a streaming builder");
    assert!(
        !b.nodes.is_empty(),
        "a streaming cluster needs at least one node"
    );
    let dir = WorkDir::new();
    let etcd = b.start_etcd(&dir);
    let mut pgs = Vec::new();
    for (i, (name, _, _)) in b.nodes.iter().enumerate() {
        // `cluster_name` names the node in `pg_stat_replication` (a standby's walreceiver
        // uses it as its application_name), which `synchronous_standby_names` refers to.
        let mut settings: Vec<(&str, &str)> = SETTINGS.to_vec();
        settings.push(("cluster_name", name));
        settings.extend(b.pg_settings.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let pg = match i {
            0 => PgInstance::start_with(&dir, name, &settings),
            _ => PgInstance::standby_of(&dir, name, &pgs[0], &settings),
        };
        pgs.push(pg);
    }
    let cluster_yaml = format!("replication: streaming\nsynchronous_mode: {sync}\n");
    let mut cluster = TestCluster {
        nodes: Vec::new(),
        etcd,
        name: b.name.clone(),
        dir,
        cluster_yaml,
    };
    for ((name, location, priority), pg) in b.nodes.iter().zip(pgs) {
        let mut spec = ManagerSpec::new(
            name,
            location,
            *priority,
            &pg.dsn(),
            &b.name,
            cluster.etcd.endpoints(),
        );
        spec.lease_secs = b.lease_secs;
        spec.refresh_ms = b.refresh_ms;
        spec.cluster_yaml = cluster.cluster_yaml.clone();
        spec.extra_yaml = b.extra_yaml.clone();
        spec.db_data_dir = Some(pg.data_dir().to_path_buf());
        spec.dcs_yaml = cluster
            .etcd
            .unit_dcs_yaml(&b.name, &cluster.dir, "manager", name);
        spec.db_bin_dir = Some(pg_bin_dir());
        let first = cluster.nodes.is_empty();
        let mgr = ManagerProc::start(&cluster.dir, spec);
        cluster.nodes.push(Node {
            mgr,
            pg,
            name: name.clone(),
            location: location.clone(),
        });
        // `wait_managers(None)`: no wait at all, not even for the primary to lead.
        let Some(timeout) = b.wait_managers else {
            continue;
        };
        wait_http(cluster.nodes.last_mut().expect("pushed"), timeout);
        if first {
            let scope = cluster.name.clone();
            let led = block_on(|| {
                cluster.wait_leader(
                    &scope,
                    |l| l.is_some_and(|l| l.node == *name && l.routable()),
                    BOOT_TIMEOUT,
                )
            });
            assert!(
                led.is_some(),
                "the primary's manager {name} did not lead within {BOOT_TIMEOUT:?}\n{}",
                cluster.manager_logs(40)
            );
        }
    }
    cluster
}

/// What [`TestCluster::streaming_state`] found: the primary and how each standby follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamingState {
    /// The lease holder, routable and writable.
    pub primary: String,
    /// Standbys streaming from the primary, by name.
    pub streaming: Vec<String>,
    /// The standbys the primary's commits wait for (its status's `replica.sync_standbys`).
    pub sync_standbys: Vec<String>,
    /// Why the cluster is not whole yet, if it is not (a standby not streaming from the
    /// primary, a primary not writable, no leader).
    pub missing: Option<String>,
}

impl TestCluster {
    /// The `synchronous_mode` the cluster runs with (`off` for a multi-writer cluster).
    pub fn synchronous_mode(&self) -> &str {
        self.cluster_yaml
            .lines()
            .find_map(|l| l.strip_prefix("synchronous_mode: "))
            .unwrap_or("off")
    }

    /// One look at the streaming cluster: the leader (if it is routable and its manager says
    /// its Postgres is writable) and which standbys stream from it.
    pub fn streaming_state(&self) -> Result<StreamingState, String> {
        let scope = self.name.clone();
        let leader = block_on(|| self.leader(&scope))
            .map(|(l, _)| l)
            .ok_or("no leader")?;
        if !leader.routable() {
            return Err(format!("leader {} is not routable yet", leader.node));
        }
        let status = |n: &Node| n.mgr.status().unwrap_or(Value::Null);
        let primary = self
            .nodes
            .iter()
            .find(|n| n.name == leader.node)
            .ok_or_else(|| format!("leader {} is no node of this cluster", leader.node))?;
        let ps = status(primary);
        if ps["writable"] != true {
            return Err(format!("{} leads but is not writable: {ps}", leader.node));
        }
        let upstream = format!("127.0.0.1:{}", primary.pg.port());
        let mut st = StreamingState {
            primary: leader.node.clone(),
            streaming: Vec::new(),
            sync_standbys: strings(&ps["replica"]["sync_standbys"]),
            missing: None,
        };
        for n in self.nodes.iter().filter(|n| n.name != leader.node) {
            let s = status(n);
            let r = &s["replica"];
            if s["postgres"] == "standby" && r["streaming"] == true && r["upstream"] == *upstream {
                st.streaming.push(n.name.clone());
            } else if st.missing.is_none() {
                st.missing = Some(format!(
                    "{} does not stream from {upstream}: postgres {}, replica {r}, reason {}",
                    n.name, s["postgres"], s["reason"]
                ));
            }
        }
        if st.missing.is_none() && self.synchronous_mode() != "off" && st.sync_standbys.is_empty() {
            st.missing = Some(format!("{} has no synchronous standby yet", st.primary));
        }
        Ok(st)
    }

    /// Waits until one node leads, routable and writable, and every other node is a standby
    /// streaming from it (and, in synchronous mode, the primary names a synchronous
    /// standby). Returns the state; `Err` with the last finding on timeout.
    pub fn wait_streaming(&self, timeout: Duration) -> Result<StreamingState, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.streaming_state() {
                Ok(st) if st.missing.is_none() => return Ok(st),
                Ok(st) => st.missing.unwrap_or_default(),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!("not streaming after {timeout:?}: {last}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
