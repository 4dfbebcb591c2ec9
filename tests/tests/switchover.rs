//! Planned switchover and management switches against real managers and agents, driven by
//! the etcd records harpctl writes (harpctl's own tests drive the CLI).

mod common;

use std::time::{Duration, Instant};

use common::*;
use harp_core::keys::Keys;
use harp_core::records::{ManagedRecord, RECORD_VERSION, unix_ms};
use harp_tests::TestCluster;
use harp_tests::agent::{AgentProc, AgentSpec};
use harp_tests::rt::block_on;

fn managed(managed: bool) -> String {
    ManagedRecord {
        version: RECORD_VERSION,
        managed,
        updated_ms: unix_ms(),
    }
    .encode()
}

#[test]
fn a_switchover_moves_the_lead_to_its_target_only() {
    let mut c = TestCluster::start(
        "switch",
        &[("n1", "dca", 100), ("n2", "dca", 100), ("n3", "dca", 300)],
    );
    let first = wait_leader_not(&c, "dca", None);
    let (_, token) = leader(&c, "dca").unwrap();
    // The target is the lowest-priority node that is not the leader: n3 (priority 300) would
    // win a normal election, so only the intent can explain n-target winning.
    let target = ["n1", "n2"].into_iter().find(|n| *n != first.node).unwrap();
    std::thread::sleep(Duration::from_secs(1)); // statuses reach every manager
    let t = Instant::now();
    intent(&c, target, token, false);
    let next = wait_leader_not(&c, "dca", Some(&first.node));
    assert_eq!(
        next.node, target,
        "the lease went to {} instead of the target",
        next.node
    );
    println!("switchover took {:?}", t.elapsed());
    assert!(eventually(LONG, || role(&mut c, target).as_deref() == Some("leader")));
    // The old leader does not take it back while the intent lives.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(leader(&c, "dca").unwrap().0.node, target);
    delete(&c, Keys::new(c.name()).promote_intent("dca"));
}

#[test]
fn a_switchover_to_an_unhealthy_target_is_refused_by_the_leader() {
    let mut c = TestCluster::start("refuse", &[("n1", "dca", 100), ("n2", "dca", 100)]);
    let first = wait_leader_not(&c, "dca", None);
    let (_, token) = leader(&c, "dca").unwrap();
    let other = if first.node == "n1" { "n2" } else { "n1" };
    c.node(other).pg.kill9();
    let o = other.to_owned();
    assert!(eventually(LONG, || c
        .node(&o)
        .mgr
        .status()
        .is_some_and(|s| s["postgres"] == "down")));
    std::thread::sleep(Duration::from_millis(500));
    intent(&c, other, token, true);
    let name = first.node.clone();
    assert!(
        eventually(LONG, || c.node(&name).mgr.status().is_some_and(|s| {
            s["switchover_refusal"]
                .as_str()
                .is_some_and(|r| r.contains("postgres is Down"))
        })),
        "{}",
        c.manager_logs(20)
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        leader(&c, "dca").unwrap().1,
        token,
        "the leader gave up its lease to a dead node"
    );
}

#[test]
fn unmanaged_cluster_keeps_its_leader_and_agents_keep_their_route() {
    let mut c = TestCluster::start("unmanaged", &[("n1", "dca", 100), ("n2", "dca", 100)]);
    let mut a = AgentProc::start(
        c.dir(),
        AgentSpec::new("p1", "dca", c.name(), c.etcd.endpoints()),
    );
    assert!(a.wait_ready(LONG));
    let first = wait_leader_not(&c, "dca", None);
    let (_, token) = leader(&c, "dca").unwrap();
    put(&c, Keys::new(c.name()).managed(), managed(false));
    let name = first.node.clone();
    assert!(eventually(LONG, || c
        .node(&name)
        .mgr
        .status()
        .is_some_and(|s| s["managed"] == false)));
    c.node(&first.node).pg.kill9();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        leader(&c, "dca").unwrap().1,
        token,
        "an unmanaged cluster changed its leader"
    );
    // The agent keeps routing where it did even if the key changes (deleted by hand here).
    delete(&c, Keys::new(c.name()).leader("dca"));
    std::thread::sleep(Duration::from_millis(500));
    let status: serde_json::Value = serde_json::from_str(&a.http("/status").unwrap().1).unwrap();
    assert_eq!(
        status["leader"],
        first.node.as_str(),
        "unmanaged agent changed its route: {status}"
    );
    // Managed again: the healthy node takes over and the agent follows.
    put(&c, Keys::new(c.name()).managed(), managed(true));
    let next = wait_leader_not(&c, "dca", Some(&first.node));
    assert!(eventually(LONG, || {
        let s: serde_json::Value = serde_json::from_str(&a.http("/status").unwrap().1).unwrap();
        s["leader"] == next.node.as_str()
    }));
}

#[test]
fn stop_database_when_fenced_stops_postgres_and_unfence_starts_it() {
    let mut c = TestCluster::start("fencestop", &[("n1", "dca", 100), ("n2", "dca", 100)]);
    let first = wait_leader_not(&c, "dca", None);
    let other = if first.node == "n1" { "n2" } else { "n1" };
    // Give the follower the directive (its data dir is its own) and restart its manager.
    let node = c.node(other);
    let mut spec = node.mgr.spec().clone();
    spec.extra_yaml = format!(
        "stop_database_when_fenced: true\ndb_data_dir: {}\ndb_bin_dir: {}",
        node.pg.data_dir().display(),
        harp_tests::postgres::pg_bin_dir().display()
    );
    node.mgr.rewrite_config(spec);
    node.mgr.restart();
    let name = other.to_owned();
    assert!(eventually(LONG, || c
        .node(&name)
        .mgr
        .status()
        .is_some_and(|s| s["postgres"] == "primary")));
    let keys = Keys::new(c.name());
    put(&c, keys.fenced(other), "{}".into());
    let pg_up = |c: &mut TestCluster, n: &str| {
        let pg = &c.node(n).pg;
        block_on(|| async { pg.connect().await.is_ok() })
    };
    assert!(
        eventually(LONG, || !pg_up(&mut c, &name)),
        "fenced node's Postgres still runs\n{}",
        c.manager_logs(20)
    );
    delete(&c, keys.fenced(other));
    assert!(
        eventually(LONG, || pg_up(&mut c, &name)),
        "unfenced node's Postgres did not start\n{}",
        c.manager_logs(20)
    );
    assert!(eventually(LONG, || c
        .node(&name)
        .mgr
        .status()
        .is_some_and(|s| s["postgres"] == "primary")));
    // The leader was never disturbed.
    assert_eq!(leader(&c, "dca").unwrap().0.node, first.node);
}
