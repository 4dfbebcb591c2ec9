//! Two agents of one location at a failover: a new leader is routed only once no other proxy
//! can still reach the old one, so the two leaders never both take writes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use harp_core::keys::Keys;
use harp_tests::TestCluster;
use harp_tests::agent::{AgentProc, AgentSpec};
use harp_tests::rt::block_on;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const TTL: &str = "leader_lease_duration: 3\nlease_refresh_interval: 500";

fn agent(c: &TestCluster, name: &str) -> AgentProc {
    let mut spec = AgentSpec::new(name, "dca", c.name(), c.etcd.endpoints());
    spec.extra_yaml = TTL.into();
    let mut a = AgentProc::start(c.dir(), spec);
    assert!(a.wait_ready(LONG), "{name} never ready\n{}", a.log_tail(30));
    a
}

fn routed_to(a: &AgentProc) -> Option<String> {
    let (_, body) = a.http("/status")?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["leader"].as_str().map(str::to_owned)
}

#[test]
fn a_new_leader_waits_for_a_frozen_peer_to_lose_its_hold() {
    let mut b = TestCluster::builder("peers");
    for n in ["n1", "n2"] {
        b = b.node(n, "dca", 100);
    }
    let mut c = b.start();
    let old = wait_leader_not(&c, "dca", None);
    let p1 = agent(&c, "p1");
    let mut p2 = agent(&c, "p2");
    let old_token = leader(&c, "dca").unwrap().1;
    assert!(eventually(LONG, || published_token(&c, "p2") == Some(Some(old_token))));

    // p2 freezes while it routes to the old leader: it can neither cut nor say it did.
    let p2_pid = Pid::from_raw(p2.pid() as i32);
    kill(p2_pid, Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // The old leader's Postgres dies, so it releases at once (a fenced one would wait for p2).
    c.node(&old.node).pg.kill9();
    let new = wait_leader_not(&c, "dca", Some(&old.node));
    let t_new = Instant::now();

    // p1 holds its clients as long as p2's record says it routes to the old leader.
    let mut routed_at = None;
    while t_new.elapsed() < Duration::from_secs(10) {
        let p1_route = routed_to(&p1);
        let p2_token = published_token(&c, "p2");
        if p1_route.as_deref() == Some(new.node.as_str()) {
            assert_ne!(
                p2_token,
                Some(Some(old_token)),
                "p1 routes to the new leader while p2 may still reach the old one\n{}",
                p1.log_tail(20)
            );
            routed_at = Some(t_new.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = kill(p2_pid, Signal::SIGCONT);
    let waited = routed_at
        .unwrap_or_else(|| panic!("p1 never routed to the new leader\n{}", p1.log_tail(30)));
    println!("p1 routed to the new leader {waited:?} after it appeared");
    // p2's lease outlived the freeze by up to 3 s: p1 really waited for it.
    assert!(
        waited > Duration::from_millis(800),
        "p1 waited only {waited:?}"
    );
    let log = std::fs::read_to_string(p1.log_path()).unwrap();
    assert!(
        log.contains("until the other proxies have closed their sessions"),
        "{}",
        p1.log_tail(20)
    );
    p2.kill9();
}

/// Writes `proxies/<proxy>/status` as another agent (or a newer HARP) would, with no lease.
fn put_status(c: &TestCluster, proxy: &str, value: String) {
    let key = Keys::new(c.name()).proxy_status(proxy);
    block_on(|| async {
        let mut client = c.client().await;
        client.put(key, value, None).await.unwrap();
    });
}

/// Fences the leader of `dca` and returns how long `p1` took to route to its successor.
fn failover_wait(c: &TestCluster, p1: &AgentProc) -> Duration {
    let old = wait_leader_not(c, "dca", None);
    set_fenced(c, &old.node, true);
    let new = wait_leader_not(c, "dca", Some(&old.node));
    let t_new = Instant::now();
    assert!(
        eventually(Duration::from_secs(20), || routed_to(p1).as_deref()
            == Some(new.node.as_str())),
        "p1 never routed to the new leader\n{}",
        p1.log_tail(30)
    );
    t_new.elapsed()
}

#[test]
fn a_peer_status_that_cannot_be_read_holds_a_new_leader_back_for_a_lease() {
    let c = TestCluster::builder("peers-unreadable")
        .node("n1", "dca", 100)
        .node("n2", "dca", 100)
        .start();
    wait_leader_not(&c, "dca", None);
    let p1 = agent(&c, "p1");
    // A newer agent's status that this build must not read: it may still route the old leader.
    put_status(
        &c,
        "px",
        r#"{"version":7,"min_reader_version":7,"name":"px","location":"dca"}"#.into(),
    );
    assert!(
        eventually(LONG, || std::fs::read_to_string(p1.log_path())
            .is_ok_and(|l| l.contains("the status of proxy px cannot be read"))),
        "{}",
        p1.log_tail(20)
    );
    let waited = failover_wait(&c, &p1);
    println!("p1 routed to the new leader {waited:?} after it appeared");
    // Counted as routing the old leader: held for the lease (3 s), not routed at once.
    assert!(waited > Duration::from_secs(2), "p1 waited only {waited:?}");
}

#[test]
fn a_peer_that_trusts_a_longer_lease_holds_a_new_leader_back_that_long() {
    let c = TestCluster::builder("peers-long-lease")
        .node("n1", "dca", 100)
        .node("n2", "dca", 100)
        .start();
    wait_leader_not(&c, "dca", None);
    let p1 = agent(&c, "p1");
    let old_token = leader(&c, "dca").unwrap().1;
    // A silent peer on the old leader that trusts etcd for 8 s, where p1 trusts it for 3 s.
    put_status(
        &c,
        "px",
        format!(
            r#"{{"version":1,"name":"px","location":"dca","leader":"n1","token":{old_token},
            "mode":"userspace","sessions":1,"held":0,"lease_ttl_ms":8000,"updated_ms":1}}"#
        ),
    );
    std::thread::sleep(Duration::from_millis(500));
    let waited = failover_wait(&c, &p1);
    println!("p1 routed to the new leader {waited:?} after it appeared");
    assert!(waited > Duration::from_secs(6), "p1 waited only {waited:?}");
}
