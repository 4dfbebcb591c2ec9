//! HARP as deployed by the tests: 3 etcd members, 3 Postgres each with its harp-manager in one
//! location, and harp-agents: one userspace proxy, one in mode ebpf steering a child cgroup
//! (the writer of the kernel systems runs there), one running PgBouncer (transaction pooling).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use harp_tests::agent::PinGuard;
use harp_tests::cgroup::ChildCgroup;
use harp_tests::harpctl::harpctl;
use harp_tests::rt::block_on;
use harp_tests::{AgentProc, AgentSpec, TestCluster, workspace_bin};
use serde_json::Value;

use super::{Deployment, Fault, System};
use crate::writer::mono_ns;

const LOCATION: &str = "dca";
/// Lease and keep-alive period: the defaults, and the tightest we call sensible (the loader
/// accepts a lease down to 1 s; 2 s leaves a loaded 2-core machine room for keep-alives).
const DEFAULT: (u64, u64) = (6, 2000);
const TIGHT: (u64, u64) = (2, 500);
const READY: Duration = Duration::from_secs(30);

/// The ebpf-mode agent. Field order = drop order: the agent, its pins, then the cgroup.
struct Kernel {
    agent: AgentProc,
    _pins: PinGuard,
    cgroup: ChildCgroup,
}

/// Field order = drop order: agents before the cluster they route to.
pub struct Harp {
    user: AgentProc,
    kernel: Option<Kernel>,
    pgbouncer: Option<AgentProc>,
    cluster: TestCluster,
}

impl Harp {
    /// Starts the cluster and its agents; the kernel agent only if `kernel`. The reason is
    /// `Some` when kernel steering is unavailable here (the kernel systems are then skipped).
    pub fn start(
        tight: bool,
        kernel: bool,
        pgbouncer: bool,
    ) -> anyhow::Result<(Harp, Option<String>)> {
        let (lease, refresh) = if tight { TIGHT } else { DEFAULT };
        let name = if tight { "unavail-tight" } else { "unavail" };
        println!("== HARP: 3 nodes, lease {lease} s, refresh {refresh} ms");
        let mut b = TestCluster::builder(name)
            .lease_secs(lease)
            .refresh_ms(refresh);
        for n in ["n1", "n2", "n3"] {
            b = b.node(n, LOCATION, 100);
        }
        let cluster = b.start();
        for n in &cluster.nodes {
            block_on(|| async { n.pg.connect().await?.batch_execute(super::TABLE_SQL).await })
                .with_context(|| format!("create the writer's table on {}", n.name))?;
        }
        let eps = cluster.etcd.endpoints();
        let mut user = AgentProc::start(
            cluster.dir(),
            AgentSpec::new("unavail-user", LOCATION, name, eps.clone()),
        );
        if !user.wait_ready(READY) {
            bail!("harp-agent (userspace) not ready\n{}", user.log_tail(30));
        }
        let pgbouncer = match pgbouncer {
            false => None,
            true => Some(start_pgbouncer_agent(&cluster, name, eps.clone())?),
        };
        let (kernel, reason) = if !kernel {
            (None, None)
        } else if let Some(reason) = kernel_unavailable() {
            (None, Some(reason))
        } else {
            let pins = PinGuard::new(name, "unavail-kernel");
            if pins.path().exists() {
                let path = pins.path().display().to_string();
                // Not this run's (a bench that was killed?): leave it to whoever owns it.
                std::mem::forget(pins);
                bail!("{path} exists already: remove it if no harp-agent uses it");
            }
            let cgroup = ChildCgroup::new();
            let spec = AgentSpec::new("unavail-kernel", LOCATION, name, eps).ebpf(cgroup.path());
            let mut agent = AgentProc::start(cluster.dir(), spec);
            if !agent.wait_ready(READY) {
                bail!("harp-agent (ebpf) not ready\n{}", agent.log_tail(30));
            }
            let k = Kernel {
                agent,
                _pins: pins,
                cgroup,
            };
            let mode = status(&k.agent)?["mode"].clone();
            if mode != "ebpf" {
                bail!("harp-agent unavail-kernel runs in mode {mode}, not ebpf");
            }
            (Some(k), None)
        };
        let h = Harp {
            user,
            kernel,
            pgbouncer,
            cluster,
        };
        Ok((h, reason))
    }

    fn leader(&self) -> anyhow::Result<String> {
        let l = block_on(|| {
            self.cluster
                .wait_leader(LOCATION, |l| l.is_some(), Duration::from_secs(30))
        })
        .context("no leader")?;
        Ok(l.node)
    }
}

/// An agent running PgBouncer, pooling per transaction; the writer logs in as `postgres`,
/// which the test clusters trust.
fn start_pgbouncer_agent(
    cluster: &TestCluster,
    name: &str,
    eps: Vec<String>,
) -> anyhow::Result<AgentProc> {
    let userlist = cluster.dir().join("pgbouncer-users.txt");
    std::fs::write(&userlist, "\"postgres\" \"\"\n")?;
    let mut spec = AgentSpec::new("unavail-pgb", LOCATION, name, eps);
    spec.extra_yaml = format!(
        "type: pgbouncer\npool_mode: transaction\nauth_type: trust\nauth_file: {}\n",
        userlist.display()
    );
    let mut agent = AgentProc::start(cluster.dir(), spec);
    if !agent.wait_ready(READY) {
        bail!("harp-agent (pgbouncer) not ready\n{}", agent.log_tail(30));
    }
    Ok(agent)
}

/// Why kernel steering cannot run here, if it cannot.
fn kernel_unavailable() -> Option<String> {
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
        let deadline = Instant::now() + READY;
        for n in &self.cluster.nodes {
            while !n
                .mgr
                .status()
                .is_some_and(|s| s["postgres"] == "primary" && s["etcd_session"] == true)
            {
                if Instant::now() > deadline {
                    bail!("{} is not healthy\n{}", n.name, n.mgr.log_tail(30));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.leader()?;
        let agents = std::iter::once(&mut self.user)
            .chain(self.kernel.as_mut().map(|k| &mut k.agent))
            .chain(self.pgbouncer.as_mut());
        for a in agents {
            if !a.wait_ready(READY) {
                bail!("harp-agent {} not ready\n{}", a.name(), a.log_tail(30));
            }
        }
        // Let every status reach the peers, so every run starts from the same state.
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    fn writer(&self, system: System) -> anyhow::Result<Command> {
        let exe = workspace_bin("xtask");
        let (mut cmd, agent) = match (&self.kernel, system.is_kernel()) {
            (Some(k), true) => (k.cgroup.command(exe), &k.agent),
            (None, true) => bail!("{} needs the ebpf agent", system.name()),
            (_, false) if system == System::HarpPgbouncer => {
                let agent = self.pgbouncer.as_ref().context("no pgbouncer agent")?;
                (Command::new(exe), agent)
            }
            (_, false) => (Command::new(exe), &self.user),
        };
        cmd.args(["demo-writer", &agent.dsn("postgres")]);
        Ok(cmd)
    }

    fn inject(&mut self, fault: Fault) -> anyhow::Result<(u64, String)> {
        let leader = self.leader()?;
        if fault == Fault::Switchover {
            let target = self
                .cluster
                .nodes
                .iter()
                .map(|n| n.name.clone())
                .find(|n| *n != leader)
                .context("no other node")?;
            let at = mono_ns();
            let (code, _, err) = harpctl(&self.cluster, &["promote", &target]);
            anyhow::ensure!(code == 0, "harpctl promote {target}: {err}");
            return Ok((at, leader));
        }
        let node = self.cluster.node(&leader);
        let at = mono_ns();
        if fault == Fault::NodeLoss {
            node.mgr.kill9();
        }
        node.pg.kill9();
        Ok((at, leader))
    }

    fn heal(&mut self, fault: Fault, node: &str) -> anyhow::Result<()> {
        let n = self.cluster.node(node);
        match fault {
            Fault::PostgresCrash => n.pg.start_again(),
            Fault::NodeLoss => {
                n.pg.start_again();
                n.mgr.restart();
            }
            Fault::Switchover => {}
        }
        Ok(())
    }

    fn steered(&self, system: System) -> anyhow::Result<Option<u64>> {
        match (&self.kernel, system.is_kernel()) {
            (Some(k), true) => {
                let st = status(&k.agent)?;
                let n = st["kernel"]["counters"]["steered"].as_u64();
                n.map(Some)
                    .with_context(|| format!("no kernel.counters.steered in /status: {st}"))
            }
            _ => Ok(None),
        }
    }

    fn logs(&self) -> String {
        let mut s = self.cluster.manager_logs(20);
        s += "\n";
        s += &self.user.log_tail(20);
        if let Some(k) = &self.kernel {
            s += "\n";
            s += &k.agent.log_tail(20);
        }
        if let Some(a) = &self.pgbouncer {
            s += "\n";
            s += &a.log_tail(20);
        }
        s
    }
}
