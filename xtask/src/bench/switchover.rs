//! The `switchover` case of `cargo xtask bench failover`: `harpctl promote` under pgbench load
//! through a harp-agent, measured as the longest pause between acknowledged writes of a client
//! that writes every 10 ms through the same agent — the pause an application sees.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use harp_tests::agent::{AgentProc, AgentSpec};
use harp_tests::postgres::pg_bin_dir;
use harp_tests::rt::block_on;
use harp_tests::{TestCluster, workspace_bin};

use crate::writer::{self, App};

/// Promotes the next node `runs` times; returns each run's client-visible pause.
pub fn measure(c: &mut TestCluster, runs: usize) -> anyhow::Result<Vec<Duration>> {
    let names: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
    for n in &names {
        let pg = &c.node(n).pg;
        let dsn = pg.dsn();
        block_on(|| async {
            let client = pg.connect().await?;
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS harp_demo (id bigserial PRIMARY KEY, \
                     server_port int NOT NULL, at timestamptz NOT NULL DEFAULT now())",
                )
                .await
        })?;
        let init = Command::new(pg_bin_dir().join("pgbench"))
            .args(["-i", "-s", "1", "-q", &dsn])
            .output()?;
        if !init.status.success() {
            bail!(
                "pgbench -i on {n}: {}",
                String::from_utf8_lossy(&init.stderr)
            );
        }
    }
    let mut agent = AgentProc::start(
        c.dir(),
        AgentSpec::new("sw1", "dca", c.name(), c.etcd.endpoints()),
    );
    if !agent.wait_ready(Duration::from_secs(20)) {
        bail!("agent not ready\n{}", agent.log_tail(30));
    }
    let mut probe = Command::new(workspace_bin("xtask"));
    probe.args(["demo-writer", &agent.dsn("postgres")]);
    let app = App::spawn(probe)?;
    let mut pauses = Vec::new();
    for i in 0..runs {
        let leader = block_on(|| c.wait_leader("dca", |l| l.is_some(), Duration::from_secs(30)))
            .context("no leader")?;
        let target = names
            .iter()
            .find(|n| **n != leader.node)
            .context("no other node")?
            .clone();
        let mut load = pgbench(&agent)?;
        std::thread::sleep(Duration::from_millis(500));
        let from = writer::mono_ns();
        let out = harpctl(c, &["promote", &target, "-o", "json"])?;
        // Let the client reconnect and write on the new leader before measuring.
        std::thread::sleep(Duration::from_millis(500));
        let to = writer::mono_ns();
        let _ = load.kill();
        let _ = load.wait();
        let acks: Vec<_> = app
            .acks()
            .into_iter()
            .filter(|a| a.at_ns >= from - 200_000_000 && a.at_ns <= to)
            .collect();
        let Some((gap, _, _)) = writer::longest_gap(&acks) else {
            bail!(
                "the probe client acknowledged no writes around promote {}",
                i + 1
            );
        };
        println!(
            "switchover run {}/{runs}: {} -> {target}, client pause {:.1} ms (harpctl: {})",
            i + 1,
            leader.node,
            gap.as_secs_f64() * 1e3,
            out.trim()
        );
        pauses.push(gap);
    }
    app.stop();
    Ok(pauses)
}

/// Read-only load through the agent for the duration of one promote.
fn pgbench(agent: &AgentProc) -> anyhow::Result<Child> {
    Ok(Command::new(pg_bin_dir().join("pgbench"))
        .args([
            "-S",
            "-c",
            "4",
            "-j",
            "2",
            "-T",
            "30",
            &agent.dsn("postgres"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

fn harpctl(c: &TestCluster, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(workspace_bin("harpctl"))
        .args(["-c", c.name(), "--dcs", &c.etcd.endpoints().join(",")])
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "harpctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
