//! A manager's node name is its identity in etcd: a second manager started under a running
//! node's name refuses to run and touches none of its keys, while a restart after `kill -9`
//! (the old run's status still on its unexpired lease) waits that lease out and runs.

mod common;

use std::time::{Duration, Instant};

use common::*;
use harp_core::keys::Keys;
use harp_core::records::NodeStatus;
use harp_tests::TestCluster;
use harp_tests::manager::ManagerProc;
use harp_tests::rt::block_on;
use harp_tests::workdir::WorkDir;

/// `nodes/<node>/status`: the record and the lease it lives on.
fn status_on_lease(c: &TestCluster, node: &str) -> Option<(NodeStatus, i64)> {
    let key = Keys::new(c.name()).node_status(node);
    block_on(|| async {
        let resp = c.client().await.get(key, None).await.expect("etcd get");
        let kv = resp.kvs().first()?;
        Some((
            NodeStatus::decode(kv.value()).expect("a status"),
            kv.lease(),
        ))
    })
}

#[test]
fn a_second_manager_with_a_running_nodes_name_refuses_and_touches_nothing() {
    let mut c = TestCluster::start("dupname", &[("n1", "dca", 100), ("n2", "dca", 100)]);
    let first = wait_leader_not(&c, "dca", None).node;
    let (_, token) = leader(&c, "dca").unwrap();
    assert!(eventually(LONG, || status_on_lease(&c, &first).is_some()));
    let (_, lease) = status_on_lease(&c, &first).unwrap();

    // The same name in another config file (its own HTTP port), as a copy-paste would do.
    let dir = WorkDir::new();
    let spec = c.node(&first).mgr.spec().clone();
    let t0 = Instant::now();
    let mut dup = ManagerProc::start(&dir, spec);
    let exit = dup.wait_exit(LONG);
    let log = dup.log_tail(20);
    assert_eq!(exit.and_then(|s| s.code()), Some(2), "{log}");
    println!("refused after {:?}", t0.elapsed());
    for part in [
        format!("another harp-manager runs as node {first}"),
        "every manager needs its own manager.name".to_owned(),
        format!("{}.yml", first),
    ] {
        assert!(log.contains(&part), "missing {part:?} in:\n{log}");
    }

    // The running manager leads on, under the same token, its status on its own lease.
    std::thread::sleep(Duration::from_secs(1));
    let (now, now_token) = leader(&c, "dca").expect("a leader");
    assert_eq!((now.node.as_str(), now_token), (first.as_str(), token));
    let (st, now_lease) = status_on_lease(&c, &first).expect("the first's status is gone");
    assert_eq!(
        (st.node.as_str(), st.leader, now_lease),
        (first.as_str(), true, lease)
    );
    assert_eq!(role(&mut c, &first).as_deref(), Some("leader"));
}

#[test]
fn a_manager_restarted_after_kill_9_waits_out_its_old_lease_and_runs() {
    let mut c = TestCluster::start("restart9", &[("n1", "dca", 100)]);
    wait_leader_not(&c, "dca", None);
    assert!(eventually(LONG, || status_on_lease(&c, "n1").is_some()));
    let (_, old_lease) = status_on_lease(&c, "n1").unwrap();

    c.node("n1").mgr.kill9();
    c.node("n1").mgr.restart();
    let node = c.node("n1");
    let back = eventually(Duration::from_secs(30), || {
        node.mgr
            .status()
            .is_some_and(|s| s["role"] == "leader" && s["etcd_session"] == true)
    });
    assert!(
        back,
        "the restarted manager never led\n{}",
        node.mgr.log_tail(30)
    );
    assert!(node.mgr.is_running());
    let log = node.mgr.log_tail(50);
    assert!(log.contains("maybe left by a previous run"), "{log}");
    let (st, lease) = status_on_lease(&c, "n1").expect("a status");
    assert!(
        st.leader && lease != old_lease,
        "status on the new run's lease"
    );
}
