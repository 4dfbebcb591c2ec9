//! A whole test deployment: 3-member etcd, and per node one Postgres and one harp-manager —
//! independent writable nodes (multi-writer), or with [`TestClusterBuilder::streaming`] one
//! primary and physical standbys cloned from it (see `streaming.rs`).

mod streaming;

pub use streaming::{SETTINGS as STREAMING_SETTINGS, StreamingState};

use std::time::Duration;

use etcd_client::Client;
use harp_core::records::LeaderRecord;

use crate::agent::AgentSpec;
use crate::etcd::EtcdCluster;
use crate::leader;
use crate::manager::{ManagerProc, ManagerSpec};
use crate::postgres::PgInstance;
use crate::workdir::WorkDir;

/// One HARP node. Field order = drop order: the manager goes before its Postgres.
#[derive(Debug)]
pub struct Node {
    pub mgr: ManagerProc,
    pub pg: PgInstance,
    pub name: String,
    pub location: String,
}

#[derive(Debug)]
pub struct TestCluster {
    // Drop stops every manager, then every Postgres (see `Drop`); then etcd, then the dir.
    pub nodes: Vec<Node>,
    pub etcd: EtcdCluster,
    name: String,
    dir: WorkDir,
    /// YAML lines under `cluster:` of every manager and agent (empty: multi-writer).
    cluster_yaml: String,
}

/// Options for [`TestCluster`]; start with [`TestCluster::builder`].
#[derive(Debug, Clone)]
pub struct TestClusterBuilder {
    name: String,
    nodes: Vec<(String, String, i32)>,
    etcd_members: usize,
    lease_secs: u64,
    refresh_ms: u64,
    extra_yaml: String,
    http_yaml: String,
    pg_settings: Vec<(String, String)>,
    wait_managers: Option<Duration>,
    /// `Some(synchronous_mode)`: a streaming cluster.
    streaming: Option<String>,
    /// etcd with TLS, client certificates and users; each unit its own least-privilege user.
    secure_etcd: bool,
}

impl TestClusterBuilder {
    /// A streaming cluster (`cluster.replication: streaming`, `cluster.synchronous_mode:
    /// <synchronous_mode>`): the first node is the primary, every other one a standby made
    /// from it with `pg_basebackup -R`; see [`streaming::SETTINGS`] for the Postgres
    /// settings every node gets. The first node's manager leads before the others start.
    pub fn streaming(mut self, synchronous_mode: &str) -> Self {
        self.streaming = Some(synchronous_mode.into());
        self
    }

    /// Adds a node `(name, location, priority)`.
    pub fn node(mut self, name: &str, location: &str, priority: i32) -> Self {
        self.nodes.push((name.into(), location.into(), priority));
        self
    }

    /// etcd serving TLS only, with client certificates and users required; every manager and
    /// agent connects as its own user made by `scripts/etcd-harp-roles`.
    pub fn secure_etcd(mut self) -> Self {
        self.secure_etcd = true;
        self
    }

    /// etcd as this builder asks for.
    fn start_etcd(&self, dir: &WorkDir) -> EtcdCluster {
        match self.secure_etcd {
            true => EtcdCluster::start_secure(self.etcd_members, dir, None),
            false => EtcdCluster::start(self.etcd_members, dir),
        }
    }

    pub fn etcd_members(mut self, n: usize) -> Self {
        self.etcd_members = n;
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

    /// Extra YAML under `http:` for every manager (e.g. [`crate::TestPki::http_yaml`]).
    pub fn http_yaml(mut self, yaml: &str) -> Self {
        self.http_yaml = yaml.into();
        self
    }

    /// A Postgres setting for every node, on the postmaster's command line (see
    /// [`PgInstance::start_with`]); call it again for more.
    pub fn pg_setting(mut self, key: &str, value: &str) -> Self {
        self.pg_settings.push((key.into(), value.into()));
        self
    }

    /// How long `start` waits for each manager's HTTP port (default 20 s); `None`: no wait.
    pub fn wait_managers(mut self, timeout: Option<Duration>) -> Self {
        self.wait_managers = timeout;
        self
    }

    pub fn start(self) -> TestCluster {
        if self.streaming.is_some() {
            return streaming::start(self);
        }
        let dir = WorkDir::new();
        let etcd = self.start_etcd(&dir);
        let settings: Vec<(&str, &str)> = self
            .pg_settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut pgs = Vec::new();
        for (name, _, _) in &self.nodes {
            pgs.push(PgInstance::start_with(&dir, name, &settings));
        }
        let mut nodes = Vec::new();
        for ((name, location, priority), pg) in self.nodes.iter().zip(pgs) {
            let mut spec = ManagerSpec::new(
                name,
                location,
                *priority,
                &pg.dsn(),
                &self.name,
                etcd.endpoints(),
            );
            spec.lease_secs = self.lease_secs;
            spec.refresh_ms = self.refresh_ms;
            spec.extra_yaml = self.extra_yaml.clone();
            spec.http_yaml = self.http_yaml.clone();
            spec.dcs_yaml = etcd.unit_dcs_yaml(&self.name, &dir, "manager", name);
            let mgr = ManagerProc::start(&dir, spec);
            nodes.push(Node {
                mgr,
                pg,
                name: name.clone(),
                location: location.clone(),
            });
        }
        let mut cluster = TestCluster {
            nodes,
            etcd,
            name: self.name,
            dir,
            cluster_yaml: String::new(),
        };
        if let Some(timeout) = self.wait_managers {
            for n in &mut cluster.nodes {
                wait_http(n, timeout);
            }
        }
        cluster
    }
}

/// Panics if the manager of `n` does not serve HTTP within `timeout`.
fn wait_http(n: &mut Node, timeout: Duration) {
    if !n.mgr.wait_http(timeout) {
        panic!(
            "harp-manager {} did not serve HTTP on port {} within {timeout:?}\n{}",
            n.name,
            n.mgr.http_port(),
            n.mgr.log_tail(40)
        );
    }
}

impl TestCluster {
    pub fn builder(cluster_name: &str) -> TestClusterBuilder {
        TestClusterBuilder {
            name: cluster_name.into(),
            nodes: Vec::new(),
            etcd_members: 3,
            lease_secs: 6,
            refresh_ms: 2000,
            extra_yaml: String::new(),
            http_yaml: String::new(),
            pg_settings: Vec::new(),
            wait_managers: Some(Duration::from_secs(20)),
            streaming: None,
            secure_etcd: false,
        }
    }

    /// Nodes are `(name, location, priority)`; lease 6 s, refresh 2000 ms.
    pub fn start(cluster_name: &str, nodes: &[(&str, &str, i32)]) -> TestCluster {
        Self::start_with(cluster_name, nodes, 6, 2000)
    }

    pub fn start_with(
        cluster_name: &str,
        nodes: &[(&str, &str, i32)],
        lease_secs: u64,
        refresh_ms: u64,
    ) -> TestCluster {
        let mut b = Self::builder(cluster_name)
            .lease_secs(lease_secs)
            .refresh_ms(refresh_ms);
        for &(name, location, priority) in nodes {
            b = b.node(name, location, priority);
        }
        b.start()
    }

    /// The HARP cluster name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &WorkDir {
        &self.dir
    }

    /// Whether this is a streaming cluster (one primary, standbys following it).
    pub fn is_streaming(&self) -> bool {
        !self.cluster_yaml.is_empty()
    }

    /// The leader key's name for `location`: the location's in a multi-writer cluster, the
    /// cluster's own in a streaming one (`Config::scope`).
    pub fn scope<'a>(&'a self, location: &'a str) -> &'a str {
        match self.is_streaming() {
            true => &self.name,
            false => location,
        }
    }

    /// An agent of this cluster in `location`, with the cluster's replication settings.
    pub fn agent_spec(&self, name: &str, location: &str) -> AgentSpec {
        let mut spec = AgentSpec::new(name, location, &self.name, self.etcd.endpoints());
        spec.cluster_yaml = self.cluster_yaml.clone();
        spec.dcs_yaml = self
            .etcd
            .unit_dcs_yaml(&self.name, &self.dir, "agent", name);
        spec
    }

    /// Panics if there is no node `name`.
    pub fn node(&mut self, name: &str) -> &mut Node {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} in the test cluster (have {names:?})"))
    }

    pub async fn client(&self) -> Client {
        self.etcd.client().await
    }

    /// The leader of `location` and its fencing token.
    pub async fn leader(&self, location: &str) -> Option<(LeaderRecord, i64)> {
        leader::read_leader(&self.client().await, &self.name, location).await
    }

    /// See [`leader::wait_leader`].
    pub async fn wait_leader(
        &self,
        location: &str,
        pred: impl Fn(Option<&LeaderRecord>) -> bool,
        timeout: Duration,
    ) -> Option<LeaderRecord> {
        leader::wait_leader(&self.client().await, &self.name, location, pred, timeout).await
    }

    /// Log tails of every manager, for assertion messages.
    pub fn manager_logs(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| n.mgr.log_tail(lines))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.mgr.kill9();
        }
        for n in &mut self.nodes {
            n.pg.kill9();
        }
    }
}
