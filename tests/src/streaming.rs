//! A streaming-replication deployment: etcd (optional), one primary, physical standbys made
//! with `pg_basebackup -R` from it, and (optionally) one `harp-manager` per node with
//! `cluster.replication: streaming`.

use std::time::{Duration, Instant};

use crate::etcd::EtcdCluster;
use crate::manager::{ManagerProc, ManagerSpec};
use crate::postgres::{PgInstance, pg_bin_dir};
use crate::rt::block_on;
use crate::workdir::WorkDir;

/// What streaming needs of every node, on the postmaster's command line. `wal_log_hints` makes
/// a diverged old primary rewindable; `wal_keep_size` keeps the WAL a standby that fell behind
/// (or a rewind) needs without slots; a short `wal_retrieve_retry_interval` lets a re-pointed
/// standby reconnect at once. Settings HARP changes at run time (`primary_conninfo`,
/// `synchronous_standby_names`) must never be here: the command line beats `ALTER SYSTEM`.
pub const STREAMING_SETTINGS: [(&str, &str); 7] = [
    ("wal_level", "replica"),
    ("wal_log_hints", "on"),
    ("hot_standby", "on"),
    ("max_wal_senders", "10"),
    ("max_replication_slots", "10"),
    ("wal_keep_size", "512MB"),
    ("wal_retrieve_retry_interval", "500ms"),
];

/// One node: its manager (if any) goes before its Postgres on drop.
#[derive(Debug)]
pub struct StreamingNode {
    pub mgr: Option<ManagerProc>,
    pub pg: PgInstance,
    pub name: String,
}

#[derive(Debug)]
pub struct StreamingCluster {
    /// The first node starts as the primary, the others as its standbys.
    pub nodes: Vec<StreamingNode>,
    pub etcd: Option<EtcdCluster>,
    name: String,
    dir: WorkDir,
}

/// Options for [`StreamingCluster`]; start with [`StreamingCluster::builder`].
#[derive(Debug, Clone)]
pub struct StreamingClusterBuilder {
    name: String,
    location: String,
    /// `(name, priority)`; the first is the primary.
    nodes: Vec<(String, i32)>,
    etcd_members: usize,
    managers: bool,
    synchronous_mode: Option<String>,
    lease_secs: u64,
    refresh_ms: u64,
    extra_yaml: String,
    pg_settings: Vec<(String, String)>,
    wait_managers: Duration,
}

impl StreamingClusterBuilder {
    /// Adds a node with priority 100; the first node added is the primary.
    pub fn node(self, name: &str) -> Self {
        self.node_priority(name, 100)
    }

    pub fn node_priority(mut self, name: &str, priority: i32) -> Self {
        self.nodes.push((name.into(), priority));
        self
    }

    /// Members of the etcd cluster (default 1); 0 starts none (and no managers).
    pub fn etcd_members(mut self, n: usize) -> Self {
        self.etcd_members = n;
        self
    }

    /// Whether to start a `harp-manager` per node (default true).
    pub fn managers(mut self, on: bool) -> Self {
        self.managers = on;
        self
    }

    /// `cluster.synchronous_mode` (`on`, `strict`); unset leaves the default (off).
    pub fn synchronous_mode(mut self, mode: &str) -> Self {
        self.synchronous_mode = Some(mode.into());
        self
    }

    pub fn lease_secs(mut self, secs: u64) -> Self {
        self.lease_secs = secs;
        self
    }

    pub fn refresh_ms(mut self, ms: u64) -> Self {
        self.refresh_ms = ms;
        self
    }

    /// Extra YAML under `manager:` for every node.
    pub fn extra_yaml(mut self, yaml: &str) -> Self {
        self.extra_yaml = yaml.into();
        self
    }

    /// A Postgres setting for every node, besides (or replacing) [`STREAMING_SETTINGS`].
    pub fn pg_setting(mut self, key: &str, value: &str) -> Self {
        self.pg_settings.push((key.into(), value.into()));
        self
    }

    pub fn start(self) -> StreamingCluster {
        assert!(!self.nodes.is_empty(), "a streaming cluster needs a node");
        let dir = WorkDir::new();
        let etcd = (self.etcd_members > 0).then(|| EtcdCluster::start(self.etcd_members, &dir));
        let mut settings: Vec<(&str, &str)> = STREAMING_SETTINGS
            .iter()
            .filter(|(k, _)| !self.pg_settings.iter().any(|(o, _)| o == k))
            .copied()
            .collect();
        settings.extend(
            self.pg_settings
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let primary = PgInstance::start_with(&dir, &self.nodes[0].0, &settings);
        let mut pgs = Vec::new();
        for (name, _) in &self.nodes[1..] {
            pgs.push(PgInstance::standby_of(&dir, name, &primary, &settings));
        }
        pgs.insert(0, primary);
        let mut nodes = Vec::new();
        for ((name, priority), pg) in self.nodes.iter().zip(pgs) {
            let mgr = match (&etcd, self.managers) {
                (Some(etcd), true) => {
                    let spec =
                        self.spec(name, *priority, &pg.dsn(), pg.data_dir(), etcd.endpoints());
                    Some(ManagerProc::start(&dir, spec))
                }
                _ => None,
            };
            nodes.push(StreamingNode {
                mgr,
                pg,
                name: name.clone(),
            });
        }
        for n in &mut nodes {
            if let Some(mgr) = &mut n.mgr
                && !mgr.wait_http(self.wait_managers)
            {
                panic!(
                    "harp-manager {} did not serve HTTP within {:?}\n{}",
                    n.name,
                    self.wait_managers,
                    mgr.log_tail(40)
                );
            }
        }
        StreamingCluster {
            nodes,
            etcd,
            name: self.name,
            dir,
        }
    }

    /// The config of node `name`'s manager.
    fn spec(
        &self,
        name: &str,
        priority: i32,
        dsn: &str,
        data_dir: &std::path::Path,
        endpoints: Vec<String>,
    ) -> ManagerSpec {
        let mut spec = ManagerSpec::new(name, &self.location, priority, dsn, &self.name, endpoints);
        spec.lease_secs = self.lease_secs;
        spec.refresh_ms = self.refresh_ms;
        spec.extra_yaml = self.extra_yaml.clone();
        spec.cluster_yaml = "replication: streaming\n".into();
        if let Some(mode) = &self.synchronous_mode {
            spec.cluster_yaml
                .push_str(&format!("synchronous_mode: {mode}\n"));
        }
        spec.db_data_dir = Some(data_dir.to_path_buf());
        spec.db_bin_dir = Some(pg_bin_dir());
        spec
    }
}

impl StreamingCluster {
    pub fn builder(cluster_name: &str) -> StreamingClusterBuilder {
        StreamingClusterBuilder {
            name: cluster_name.into(),
            location: "dc1".into(),
            nodes: Vec::new(),
            etcd_members: 1,
            managers: true,
            synchronous_mode: None,
            lease_secs: 6,
            refresh_ms: 2000,
            extra_yaml: String::new(),
            pg_settings: Vec::new(),
            wait_managers: Duration::from_secs(20),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &WorkDir {
        &self.dir
    }

    /// Panics if there is no node `name`.
    pub fn node(&mut self, name: &str) -> &mut StreamingNode {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} in the cluster (have {names:?})"))
    }

    pub fn pg(&self, name: &str) -> &PgInstance {
        &self
            .nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
            .pg
    }

    /// Log tails of every manager and Postgres, for assertion messages.
    pub fn logs(&self, lines: usize) -> String {
        let mut out = Vec::new();
        for n in &self.nodes {
            if let Some(m) = &n.mgr {
                out.push(m.log_tail(lines));
            }
            out.push(crate::process::log_tail(n.pg.log_path(), lines));
            let own = n.pg.data_dir().join("harp-postgres.log");
            if own.exists() {
                out.push(crate::process::log_tail(&own, lines));
            }
        }
        out.join("\n")
    }
}

impl Drop for StreamingCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(m) = &mut n.mgr {
                m.kill9();
            }
        }
        for n in &mut self.nodes {
            n.pg.kill9();
        }
    }
}

/// Runs `sql` (a query returning one row of one text column, or none) on `dsn`; `None` if it
/// fails or returns no row.
pub fn query_text(dsn: &str, sql: &str) -> Option<String> {
    let (dsn, sql) = (format!("{dsn} connect_timeout=2"), sql.to_owned());
    block_on(|| async move {
        let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
            .await
            .ok()?;
        tokio::spawn(conn);
        let rows = client.simple_query(&sql).await.ok()?;
        rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
    })
}

/// Runs statements on `dsn`; panics with the error.
pub fn execute(dsn: &str, sql: &str) {
    let full = format!("{dsn} connect_timeout=2");
    let r: Result<(), String> = block_on(|| async {
        let (client, conn) = tokio_postgres::connect(&full, tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        client.batch_execute(sql).await.map_err(|e| e.to_string())
    });
    if let Err(e) = r {
        panic!("{sql} on {dsn}: {e}");
    }
}

/// Polls `query_text(dsn, sql)` until it returns `want` or `timeout` passes; the last answer.
pub fn wait_for_value(dsn: &str, sql: &str, want: &str, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = query_text(dsn, sql);
        if got.as_deref() == Some(want) || Instant::now() >= deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streaming_manager_config_loads() {
        let b = StreamingCluster::builder("c1").synchronous_mode("strict");
        let dir = std::path::Path::new("/data/pg");
        let spec = b.spec(
            "n1",
            100,
            "host=127.0.0.1 port=5432",
            dir,
            vec!["127.0.0.1:2379".into()],
        );
        let yaml = spec.render(8080);
        let config =
            harp_core::config::parse_str(&yaml, "n1.yml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert!(config.is_streaming());
        assert_eq!(config.scope(), "c1");
        assert_eq!(
            config.cluster.synchronous_mode,
            harp_core::config::SynchronousMode::Strict
        );
        let m = config.manager.unwrap();
        assert_eq!(m.node.db_data_dir.as_deref(), Some(dir));
        assert_eq!(m.node.db_bin_dir, Some(pg_bin_dir()));
    }
}
