//! Patroni 4.1 (`scripts/setup-patroni`) on 3 nodes with real streaming replication — Patroni
//! bootstraps it: initdb on the first, pg_basebackup for the others, with the Postgres settings
//! HARP's nodes get — on the tests' etcd (its etcd3 client speaks etcd 3.4's v3 JSON gateway),
//! with HAProxy in front.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use harp_tests::process::reap_orphans;
use harp_tests::rt::block_on;
use harp_tests::{EtcdCluster, WorkDir, http_get, workspace_bin};
use serde_json::Value;

use super::haproxy::Haproxy;
use super::patroni_node::{Node, Reaper, Timings};
use super::{Deployment, Fault, System};
use crate::writer::mono_ns;

const SCOPE: &str = "unavail";
/// Bound on a bootstrap, a failover and a healing (a rejoin may need pg_rewind or a new
/// basebackup).
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(180);

/// The venv `scripts/setup-patroni` installs into.
pub fn venv() -> PathBuf {
    std::env::var_os("HARP_PATRONI_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::super::workspace_root().join("target/patroni-venv"))
}

/// Runs `scripts/setup-patroni` (idempotent: installs only what is missing).
pub fn install() -> anyhow::Result<()> {
    let script = super::super::workspace_root().join("scripts/setup-patroni");
    let st = Command::new(&script)
        .env("HARP_PATRONI_VENV", venv())
        .status()
        .with_context(|| format!("run {}", script.display()))?;
    anyhow::ensure!(st.success(), "{} failed ({st})", script.display());
    Ok(())
}

/// Drop (see `Drop`) kills Patroni and Postgres; then the fields go in this order.
pub struct Patroni {
    nodes: Vec<Node>,
    haproxy: Haproxy,
    _etcd: EtcdCluster,
    timings: Timings,
    _reaper: Reaper,
    _dir: WorkDir,
}

impl Patroni {
    pub fn start(timings: Timings) -> anyhow::Result<Patroni> {
        let dir = WorkDir::new();
        let reaper = Reaper::start();
        let etcd = EtcdCluster::start(3, &dir);
        let mut nodes = Vec::new();
        for n in ["p1", "p2", "p3"] {
            nodes.push(Node::new(&dir, n, SCOPE, &etcd.endpoints(), timings)?);
        }
        let backends: Vec<_> = nodes
            .iter()
            .map(|n| (n.name.clone(), n.pg_port, n.api_port))
            .collect();
        let haproxy = Haproxy::start(&dir, &backends)?;
        let mut p = Patroni {
            nodes,
            haproxy,
            _etcd: etcd,
            timings,
            _reaper: reaper,
            _dir: dir,
        };
        // The first node bootstraps alone, so it is the one that runs initdb; the others clone it.
        let bin = venv().join("bin/patroni");
        p.nodes[0].spawn(&bin);
        p.wait(|p| p.members().is_some_and(|m| m.len() == 1 && healthy(&m)))?;
        let port = p.nodes[0].pg_port;
        block_on(|| async move {
            let dsn = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
            let (c, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            c.batch_execute(super::TABLE_SQL).await
        })
        .context("create the writer's table")?;
        for n in &mut p.nodes[1..] {
            n.spawn(&bin);
        }
        p.wait_healthy()?;
        p.check_timings()?;
        super::check_settings(&format!(
            "host=127.0.0.1 port={port} user=postgres dbname=postgres"
        ))?;
        Ok(p)
    }

    /// The cluster's members as the first answering REST API reports them.
    fn members(&self) -> Option<Vec<Value>> {
        self.nodes.iter().find_map(|n| {
            let (code, body) = http_get(n.api_port, "/cluster", Duration::from_secs(1))?;
            let v: Value = serde_json::from_str(&body).ok()?;
            (code == 200).then(|| v["members"].as_array().cloned())?
        })
    }

    fn leader(&self) -> anyhow::Result<String> {
        let m = self.members().context("no Patroni REST API answers")?;
        m.iter()
            .find(|m| m["role"] == "leader")
            .and_then(|m| m["name"].as_str().map(str::to_owned))
            .with_context(|| format!("no leader among {m:?}"))
    }

    fn node(&mut self, name: &str) -> anyhow::Result<&mut Node> {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .with_context(|| format!("no node {name}"))
    }

    /// Polls `ok` until it holds; `Err` with the logs if a Patroni exits or on timeout.
    fn wait(&mut self, ok: impl Fn(&Patroni) -> bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        while !ok(self) {
            if let Some(n) = self.nodes.iter_mut().find_map(|n| n.exited().then_some(n)) {
                bail!("patroni {} exited\n{}", n.name, n.log_tail(40));
            }
            if Instant::now() > deadline {
                bail!(
                    "Patroni not healthy after {HEALTHY_TIMEOUT:?}: {:?}\n{}",
                    self.members(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// The DCS holds the timings as set, not adjusted by Patroni: it accepted them.
    fn check_timings(&self) -> anyhow::Result<()> {
        let (_, body) = http_get(self.nodes[0].api_port, "/config", Duration::from_secs(1))
            .context("GET /config")?;
        let v: Value = serde_json::from_str(&body)?;
        let t = self.timings;
        let mut want = vec![
            ("ttl", t.ttl),
            ("loop_wait", t.loop_wait),
            ("retry_timeout", t.retry_timeout),
        ];
        want.extend(
            t.primary_start_timeout
                .map(|s| ("primary_start_timeout", s)),
        );
        for (k, want) in want {
            anyhow::ensure!(
                v[k].as_u64() == Some(want.into()),
                "Patroni runs with {k} {} instead of {want}",
                v[k]
            );
        }
        Ok(())
    }
}

/// One leader running and every other member a replica streaming from it.
fn healthy(members: &[Value]) -> bool {
    let leaders = members
        .iter()
        .filter(|m| m["role"] == "leader" && m["state"] == "running")
        .count();
    leaders == 1
        && members
            .iter()
            .all(|m| m["role"] == "leader" || m["state"] == "streaming")
}

impl Deployment for Patroni {
    fn wait_healthy(&mut self) -> anyhow::Result<()> {
        self.wait(|p| p.members().is_some_and(|m| m.len() == 3 && healthy(&m)))
    }

    fn writer(&self, _system: System) -> anyhow::Result<Command> {
        let mut cmd = Command::new(workspace_bin("xtask"));
        let dsn = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.haproxy.port()
        );
        cmd.args(["demo-writer", &dsn]);
        Ok(cmd)
    }

    fn inject(&mut self, fault: Fault) -> anyhow::Result<(u64, String)> {
        let leader = self.leader()?;
        if fault == Fault::Switchover {
            let members = self.members().context("no member list")?;
            let target = members
                .iter()
                .find(|m| m["role"] != "leader" && m["state"] == "streaming")
                .and_then(|m| m["name"].as_str())
                .context("no streaming replica")?
                .to_owned();
            let ctl = venv().join("bin/patronictl");
            let config = self.node(&leader)?.config().to_path_buf();
            let at = mono_ns();
            let out = Command::new(ctl)
                .arg("-c")
                .arg(config)
                .args(["switchover", "--leader", &leader, "--candidate", &target])
                .arg("--force")
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "patronictl switchover: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return Ok((at, leader));
        }
        let node = self.node(&leader)?;
        anyhow::ensure!(node.postmaster().is_some(), "{leader} runs no postmaster");
        let at = mono_ns();
        if fault == Fault::NodeLoss {
            node.kill_patroni();
        }
        anyhow::ensure!(node.kill_postmaster(), "kill the postmaster of {leader}");
        Ok((at, leader))
    }

    fn primary_dsn(&mut self) -> anyhow::Result<String> {
        self.wait(|p| {
            p.members().is_some_and(|m| {
                m.iter()
                    .any(|m| m["role"] == "leader" && m["state"] == "running")
            })
        })?;
        let leader = self.leader()?;
        let port = self.node(&leader)?.pg_port;
        Ok(format!(
            "host=127.0.0.1 port={port} user=postgres dbname=postgres"
        ))
    }

    fn steered(&self, _system: System) -> anyhow::Result<Option<u64>> {
        Ok(None)
    }

    fn logs(&self) -> String {
        let mut s: Vec<String> = self.nodes.iter().map(|n| n.log_tail(20)).collect();
        s.push(self.haproxy.log_tail(20));
        s.join("\n")
    }
}

impl Drop for Patroni {
    fn drop(&mut self) {
        // Patroni first, so that none restarts the Postgres killed next.
        for n in &mut self.nodes {
            n.kill_patroni();
        }
        for n in &self.nodes {
            n.kill_postmaster();
        }
        reap_orphans("postgres", Duration::from_secs(10));
    }
}
