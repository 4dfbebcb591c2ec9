//! Physical replicas without HARP (a primary and its `pg_basebackup -R` standbys), and small
//! SQL helpers for streaming tests.

use std::time::{Duration, Instant};

use crate::cluster::STREAMING_SETTINGS;
use crate::postgres::PgInstance;
use crate::rt::block_on;
use crate::workdir::WorkDir;

/// One node: its Postgres and name.
#[derive(Debug)]
pub struct StreamingNode {
    pub pg: PgInstance,
    pub name: String,
}

/// Physical replicas without HARP: a primary and standbys made from it with
/// `pg_basebackup -R`, with the settings every streaming cluster runs with
/// ([`STREAMING_SETTINGS`]), for testing the manager's Postgres operations on their own. A
/// streaming cluster *with* managers is [`crate::TestCluster`]'s `streaming` builder.
#[derive(Debug)]
pub struct Replicas {
    /// The first node starts as the primary, the others as its standbys.
    pub nodes: Vec<StreamingNode>,
    dir: WorkDir,
}

impl Replicas {
    /// `nodes[0]` the primary, the rest its standbys; `settings` added to (or replacing)
    /// [`STREAMING_SETTINGS`].
    pub fn start(nodes: &[&str], settings: &[(&str, &str)]) -> Replicas {
        assert!(!nodes.is_empty(), "replicas need a primary");
        let dir = WorkDir::new();
        let mut all: Vec<(&str, &str)> = STREAMING_SETTINGS
            .iter()
            .filter(|(k, _)| !settings.iter().any(|(o, _)| o == k))
            .copied()
            .collect();
        all.extend_from_slice(settings);
        let primary = PgInstance::start_with(&dir, nodes[0], &all);
        let mut pgs = vec![];
        for name in &nodes[1..] {
            pgs.push(PgInstance::standby_of(&dir, name, &primary, &all));
        }
        pgs.insert(0, primary);
        let nodes = nodes
            .iter()
            .zip(pgs)
            .map(|(n, pg)| StreamingNode {
                pg,
                name: (*n).to_owned(),
            })
            .collect();
        Replicas { nodes, dir }
    }

    pub fn dir(&self) -> &WorkDir {
        &self.dir
    }

    /// Panics if there is no node `name`.
    pub fn node(&mut self, name: &str) -> &mut StreamingNode {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    pub fn pg(&self, name: &str) -> &PgInstance {
        &self
            .nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
            .pg
    }

    /// Log tails of every Postgres (also one the operations restarted), for assertion
    /// messages.
    pub fn logs(&self, lines: usize) -> String {
        let mut out = Vec::new();
        for n in &self.nodes {
            out.push(crate::process::log_tail(n.pg.log_path(), lines));
            let own = n.pg.data_dir().join("harp-postgres.log");
            if own.exists() {
                out.push(crate::process::log_tail(&own, lines));
            }
        }
        out.join("\n")
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
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
