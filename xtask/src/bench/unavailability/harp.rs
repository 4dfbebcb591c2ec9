//! HARP in streaming mode, as the tests deploy it: 3 etcd members, a primary and two standbys
//! cloned from it (`pg_basebackup -R`), each with its harp-manager (`cluster.replication:
//! streaming`, `synchronous_mode: on` for the sync systems), and the one harp-agent the
//! measured system needs: a userspace proxy, one in mode ebpf steering a child cgroup (the
//! writer of the kernel systems runs there), or one running PgBouncer (transaction pooling).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use harp_tests::agent::PinGuard;
use harp_tests::cgroup::ChildCgroup;
use harp_tests::harpctl::harpctl;
use harp_tests::rt::block_on;
use harp_tests::{AgentProc, TestCluster, workspace_bin};
use serde_json::Value;

use super::{AgentKind, Deployment, Fault, System};
use crate::writer::mono_ns;

const LOCATION: &str = "dca";
/// Lease and keep-alive period: the defaults, and the tightest we call sensible (the loader
/// accepts a lease down to 1 s; 2 s leaves a loaded 2-core machine room for keep-alives).
pub const DEFAULT: (u64, u64) = (6, 2000);
pub const TIGHT: (u64, u64) = (2, 500);
const READY: Duration = Duration::from_secs(60);

/// The ebpf-mode agent. Field order = drop order: the agent, its pins, then the cgroup.
struct Kernel {
    agent: AgentProc,
    _pins: PinGuard,
    cgroup: ChildCgroup,
}

enum Agent {
    Proxy(AgentProc),
    Kernel(Kernel),
}

impl Agent {
    fn proc(&mut self) -> &mut AgentProc {
        match self {
            Agent::Proxy(a) => a,
            Agent::Kernel(k) => &mut k.agent,
        }
    }
}

/// Field order = drop order: the agent before the cluster it routes to.
pub struct Harp {
    agent: Agent,
    cluster: TestCluster,
    /// The primary when the run began.
    primary: String,
}

impl Harp {
    pub fn start(tight: bool, sync: bool, kind: AgentKind) -> anyhow::Result<Harp> {
        let (lease, refresh) = if tight { TIGHT } else { DEFAULT };
        let name = match (tight, sync) {
            (false, false) => "unavail",
            (true, false) => "unavail-tight",
            (_, true) => "unavail-sync",
        };
        let mut b = TestCluster::builder(name)
            .lease_secs(lease)
            .refresh_ms(refresh)
            .wait_managers(Some(READY))
            .streaming(if sync { "on" } else { "off" });
        for n in ["n1", "n2", "n3"] {
            b = b.node(n, LOCATION, 100);
        }
        let cluster = b.start();
        let st = cluster
            .wait_streaming(READY)
            .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.manager_logs(30)))?;
        let primary = cluster
            .nodes
            .iter()
            .find(|n| n.name == st.primary)
            .context("the primary is no node")?;
        block_on(|| async {
            primary
                .pg
                .connect()
                .await?
                .batch_execute(super::TABLE_SQL)
                .await
        })
        .context("create the writer's table on the primary")?;
        super::check_settings(&primary.pg.dsn())?;
        let agent = match kind {
            AgentKind::Userspace => {
                let spec = cluster.agent_spec("unavail-user", LOCATION);
                Agent::Proxy(AgentProc::start(cluster.dir(), spec))
            }
            AgentKind::Pgbouncer => Agent::Proxy(start_pgbouncer_agent(&cluster)?),
            AgentKind::Kernel => Agent::Kernel(start_kernel_agent(&cluster, name)?),
        };
        let mut h = Harp {
            agent,
            cluster,
            primary: st.primary,
        };
        let a = h.agent.proc();
        if !a.wait_ready(READY) {
            bail!("harp-agent {} not ready\n{}", a.name(), a.log_tail(30));
        }
        if let Agent::Kernel(k) = &h.agent {
            let mode = status(&k.agent)?["mode"].clone();
            anyhow::ensure!(mode == "ebpf", "harp-agent runs in mode {mode}, not ebpf");
        }
        Ok(h)
    }

    fn node(&mut self, name: &str) -> &mut harp_tests::Node {
        self.cluster.node(name)
    }
}

/// An agent running PgBouncer, pooling per transaction; the writer logs in as `postgres`,
/// which the test clusters trust.
fn start_pgbouncer_agent(cluster: &TestCluster) -> anyhow::Result<AgentProc> {
    let userlist = cluster.dir().join("pgbouncer-users.txt");
    std::fs::write(&userlist, "\"postgres\" \"\"\n")?;
    let mut spec = cluster.agent_spec("unavail-pgb", LOCATION);
    spec.extra_yaml = format!(
        "type: pgbouncer\npool_mode: transaction\nauth_type: trust\nauth_file: {}\n",
        userlist.display()
    );
    Ok(AgentProc::start(cluster.dir(), spec))
}

fn start_kernel_agent(cluster: &TestCluster, name: &str) -> anyhow::Result<Kernel> {
    let pins = PinGuard::new(name, "unavail-kernel");
    if pins.path().exists() {
        let path = pins.path().display().to_string();
        // Not this run's (a bench that was killed?): leave it to whoever owns it.
        std::mem::forget(pins);
        bail!("{path} exists already: remove it if no harp-agent uses it");
    }
    let cgroup = ChildCgroup::new();
    let spec = cluster
        .agent_spec("unavail-kernel", LOCATION)
        .ebpf(cgroup.path());
    Ok(Kernel {
        agent: AgentProc::start(cluster.dir(), spec),
        _pins: pins,
        cgroup,
    })
}

/// Why kernel steering cannot run here, if it cannot.
pub fn kernel_unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("kernel steering needs root".into());
    }
    let obj = super::super::workspace_root().join("target/bpf/harp.bpf.o");
    (!obj.exists()).then(|| format!("{} missing: cargo xtask build-ebpf", obj.display()))
}

fn status(agent: &AgentProc) -> anyhow::Result<Value> {
    let (code, body) = agent.http("/status").context("GET /status: no answer")?;
    anyhow::ensure!(code == 200, "GET /status: {code} {body}");
    Ok(serde_json::from_str(&body)?)
}

impl Deployment for Harp {
    fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let st = self
            .cluster
            .wait_streaming(READY)
            .map_err(|e| anyhow::anyhow!("{e}\n{}", self.logs()))?;
        self.primary = st.primary;
        let a = self.agent.proc();
        if !a.wait_ready(READY) {
            bail!("harp-agent {} not ready\n{}", a.name(), a.log_tail(30));
        }
        // Let every status reach the peers, so every run starts from the same state.
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    fn writer(&self, system: System) -> anyhow::Result<Command> {
        let exe = workspace_bin("xtask");
        let (mut cmd, agent) = match (&self.agent, system.is_kernel()) {
            (Agent::Kernel(k), true) => (k.cgroup.command(exe), &k.agent),
            (Agent::Proxy(a), false) => (Command::new(exe), a),
            _ => bail!("{} runs with another agent", system.name()),
        };
        cmd.args(["demo-writer", &agent.dsn("postgres")]);
        Ok(cmd)
    }

    fn inject(&mut self, fault: Fault) -> anyhow::Result<(u64, String)> {
        let leader = self.primary.clone();
        if fault == Fault::Switchover {
            // To a standby the primary's commits wait for, if it names one: the one that has
            // every acknowledged write.
            let st = self.cluster.streaming_state().map_err(anyhow::Error::msg)?;
            let target = st
                .sync_standbys
                .iter()
                .find(|s| st.streaming.contains(s))
                .or(st.streaming.first())
                .context("no streaming standby")?
                .clone();
            let at = mono_ns();
            let (code, _, err) = harpctl(&self.cluster, &["promote", &target]);
            anyhow::ensure!(code == 0, "harpctl promote {target}: {err}");
            return Ok((at, leader));
        }
        let node = self.node(&leader);
        let at = mono_ns();
        if fault == Fault::NodeLoss {
            node.mgr.kill9();
        }
        anyhow::ensure!(node.pg.kill9_current(), "{leader} runs no postmaster");
        Ok((at, leader))
    }

    fn primary_dsn(&mut self) -> anyhow::Result<String> {
        let deadline = Instant::now() + READY;
        loop {
            match self.cluster.streaming_state() {
                Ok(st) => {
                    let n = self.node(&st.primary);
                    return Ok(n.pg.dsn());
                }
                Err(e) if Instant::now() > deadline => {
                    bail!("no writable primary: {e}\n{}", self.logs())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn steered(&self, system: System) -> anyhow::Result<Option<u64>> {
        match (&self.agent, system.is_kernel()) {
            (Agent::Kernel(k), true) => {
                let st = status(&k.agent)?;
                let n = st["kernel"]["counters"]["steered"].as_u64();
                n.map(Some)
                    .with_context(|| format!("no kernel.counters.steered in /status: {st}"))
            }
            _ => Ok(None),
        }
    }

    fn logs(&self) -> String {
        let agent = match &self.agent {
            Agent::Proxy(a) => a,
            Agent::Kernel(k) => &k.agent,
        };
        format!("{}\n{}", self.cluster.manager_logs(20), agent.log_tail(20))
    }
}
