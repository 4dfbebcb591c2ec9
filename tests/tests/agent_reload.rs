//! SIGHUP to a running harp-agent: it keeps running and routing, names what changed in its
//! config file, applies the live settings at once (the rest at restart), and refuses a broken
//! file without stopping.

mod common;

use std::time::Duration;

use common::*;
use harp_tests::TestCluster;
use harp_tests::agent::{AgentProc, AgentSpec};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn sighup(a: &AgentProc) {
    kill(Pid::from_raw(a.pid() as i32), Signal::SIGHUP).expect("send SIGHUP");
}

/// Waits until the agent's log has `n` lines containing `what`.
fn logged(a: &AgentProc, what: &str, n: usize) -> bool {
    eventually(Duration::from_secs(5), || {
        let log = std::fs::read_to_string(a.log_path()).unwrap_or_default();
        log.matches(what).count() >= n
    })
}

#[test]
fn sighup_keeps_the_agent_running_and_names_what_changed() {
    let c = TestCluster::start("agenthup", &[("n1", "dca", 100)]);
    let leader = wait_leader_not(&c, "dca", None);
    let spec = AgentSpec::new("p1", "dca", c.name(), c.etcd.endpoints());
    let mut a = AgentProc::start(c.dir(), spec);
    assert!(a.wait_ready(LONG), "agent never ready\n{}", a.log_tail(30));
    let routes = |a: &AgentProc| {
        a.http("/status")
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
            .is_some_and(|s| s["leader"] == leader.node.as_str())
    };
    assert!(eventually(LONG, || routes(&a)));

    sighup(&a);
    assert!(logged(&a, "unchanged", 1), "{}", a.log_tail(20));
    let path = a.config_path().to_path_buf();
    let text = std::fs::read_to_string(&path).unwrap();
    let live = |a: &AgentProc| {
        a.http("/status")
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|s| s["max_client_conn"].as_u64())
    };
    let before = live(&a).expect("max_client_conn in /status");
    let wanted = before - 7;
    let changed = text.replace(
        &format!("max_client_conn: {before}"),
        &format!("max_client_conn: {wanted}"),
    );
    assert_ne!(
        changed, text,
        "the rendered config names max_client_conn: {before}"
    );
    std::fs::write(&path, changed).unwrap();
    sighup(&a);
    assert!(
        logged(&a, "reload (SIGHUP): proxy changed", 1),
        "{}",
        a.log_tail(20)
    );
    assert!(
        eventually(Duration::from_secs(5), || live(&a) == Some(wanted)),
        "the live setting was not applied\n{}",
        a.log_tail(20)
    );
    std::fs::write(&path, "cluster: [\n").unwrap();
    sighup(&a);
    assert!(
        logged(&a, "reload (SIGHUP) refused, the running config stays", 1),
        "{}",
        a.log_tail(20)
    );

    std::thread::sleep(Duration::from_millis(500));
    assert!(
        a.is_running(),
        "the agent died of SIGHUP\n{}",
        a.log_tail(20)
    );
    assert!(routes(&a), "the agent stopped routing\n{}", a.log_tail(20));
    assert_eq!(a.http("/health/is-ready").map(|r| r.0), Some(200));
}
