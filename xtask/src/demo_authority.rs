//! The demo's act on authority: the kernel-path agent is killed (kill -9) while its application
//! writes, and dca's lead master is fenced. Nothing of the agent runs, yet the kernel stops
//! steering at the agent's deadline: the application's writes fail rather than reach the fenced
//! node once another node leads. The agent restarted, writes resume on the new lead master.

use std::time::Duration;

use anyhow::{Context, bail};
use harp_tests::agent::AgentProc;
use harp_tests::cgroup::ChildCgroup;
use harp_tests::harpctl::harpctl;
use harp_tests::rt::block_on;
use harp_tests::{LeaderWatch, TestCluster};

use crate::writer;

pub fn run(
    c: &mut TestCluster,
    agent: &mut AgentProc,
    cgroup: &ChildCgroup,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let (old, _) = block_on(|| c.leader("dca")).context("no dca leader")?;
    println!(
        "\n== kill -9 harp-agent app1 (kernel path), then harpctl fence {} (dca's lead master), \
         while the application in app1's cgroup writes",
        old.node
    );
    let exe = harp_tests::workspace_bin("xtask");
    let mut cmd = cgroup.command(&exe);
    cmd.args(["demo-writer", &agent.dsn("postgres")]);
    let app = writer::App::spawn(cmd)?;
    std::thread::sleep(Duration::from_secs(1));
    let mut watch = rt.block_on(async { LeaderWatch::start(&c.client().await, "demo").await });
    agent.kill9();
    let killed_ns = writer::mono_ns();
    let (code, _, err) = harpctl(c, &["fence", &old.node]);
    if code != 0 {
        bail!("harpctl fence failed: {err}");
    }
    let Some((new, _)) =
        rt.block_on(watch.next_leader_not("dca", &old.node, Duration::from_secs(30)))
    else {
        bail!("no new leader in dca\n{}", c.manager_logs(30));
    };
    let took_over_ns = writer::mono_ns();
    println!(
        "   {} released once app1's status lease expired ({:.1} s after the kill): nothing \
         could tell app1's kernel programs to stop; {} leads",
        old.node,
        (took_over_ns - killed_ns) as f64 / 1e9,
        new.node
    );
    std::thread::sleep(Duration::from_secs(2));
    let old_port = i32::from(c.node(&old.node).pg.port());
    let acks = app.acks();
    let last_ok = acks.iter().map(|a| a.at_ns).max().unwrap_or(killed_ns);
    let late = acks
        .iter()
        .filter(|a| a.server_port == old_port && a.at_ns >= took_over_ns)
        .count();
    println!(
        "   the kernel steered app1's clients for {:.1} s more, until app1's deadline; then its \
         entry expired and the egress check held the session's bytes back: writes stalled \
         ({} failed), none reached a node",
        last_ok.saturating_sub(killed_ns) as f64 / 1e9,
        app.errors().len()
    );
    println!(
        "   writes acknowledged by the fenced {} after {} took over: {late}",
        old.node, new.node
    );
    if late > 0 {
        bail!("{late} writes reached the fenced lead master after the change");
    }
    println!("\n== restarting harp-agent app1: it routes the new lead master");
    let restarted_ns = writer::mono_ns();
    agent.restart();
    if !agent.wait_ready(Duration::from_secs(20)) {
        bail!("app1 never became ready again\n{}", agent.log_tail(30));
    }
    std::thread::sleep(Duration::from_secs(1));
    let new_port = i32::from(c.node(&new.node).pg.port());
    let resumed = app
        .stop()
        .into_iter()
        .filter(|a| a.at_ns >= restarted_ns && a.server_port == new_port)
        .count();
    println!(
        "   {resumed} writes acknowledged by {} in the second after app1 came back",
        new.node
    );
    let (code, _, err) = harpctl(c, &["unfence", &old.node]);
    if code != 0 {
        bail!("harpctl unfence failed: {err}");
    }
    Ok(())
}
