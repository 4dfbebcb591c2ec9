//! A fenced leader's Postgres still takes writes, so it keeps its lease while an agent may
//! still route clients to it: a frozen agent holds it back until that agent's status lease
//! expires; agents in contact cut at once, so without a frozen one the fence fails over
//! promptly. Real etcd, Postgres, managers and agents.

mod common;

use std::time::{Duration, Instant};

use common::*;
use etcd_client::{Txn, TxnOp, TxnOpResponse};
use harp_core::keys::Keys;
use harp_core::records::LeaderRecord;
use harp_tests::TestCluster;
use harp_tests::agent::{AgentProc, AgentSpec};
use harp_tests::rt::block_on;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The agents' lease: shorter than the managers' (6 s), so the wait ends with the frozen
/// agent's status, well before the managers' bound.
const AGENT_LEASE: &str = "leader_lease_duration: 3\nlease_refresh_interval: 500";

fn cluster(name: &str) -> TestCluster {
    TestCluster::builder(name)
        .node("n1", "dca", 100)
        .node("n2", "dca", 100)
        .start()
}

fn agent(c: &TestCluster, name: &str) -> AgentProc {
    let mut spec = AgentSpec::new(name, "dca", c.name(), c.etcd.endpoints());
    spec.extra_yaml = AGENT_LEASE.into();
    let mut a = AgentProc::start(c.dir(), spec);
    assert!(a.wait_ready(LONG), "{name} never ready\n{}", a.log_tail(30));
    a
}

/// One consistent read (a single etcd revision): the leader of dca (node, token) and whether
/// `proxy`'s status exists.
fn snapshot(c: &TestCluster, proxy: &str) -> (Option<(String, i64)>, bool) {
    let keys = Keys::new(c.name());
    let (leader_key, status_key) = (keys.leader("dca"), keys.proxy_status(proxy));
    block_on(|| async {
        let txn = Txn::new().and_then([TxnOp::get(leader_key, None), TxnOp::get(status_key, None)]);
        let r = c.client().await.txn(txn).await.unwrap();
        let mut found = r.op_responses().into_iter().map(|op| match op {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| {
                let node = LeaderRecord::decode(kv.value()).map(|l| l.node);
                (node.unwrap_or_default(), kv.create_revision())
            }),
            _ => None,
        });
        let leader = found.next().flatten();
        (leader, found.next().flatten().is_some())
    })
}

/// Both agents route to the first leader; returns its node and token.
fn routed(c: &TestCluster) -> (String, i64) {
    let old = wait_leader_not(c, "dca", None);
    let token = leader(c, "dca").unwrap().1;
    for p in ["p1", "p2"] {
        assert!(
            eventually(LONG, || published_token(c, p) == Some(Some(token))),
            "{p} never routed to the leader"
        );
    }
    (old.node, token)
}

#[test]
fn a_fenced_leader_keeps_its_lease_while_a_frozen_agent_routes_to_it() {
    let c = cluster("fencefrozen");
    let p1 = agent(&c, "p1");
    let mut p2 = agent(&c, "p2");
    let (old, token) = routed(&c);

    // p2 freezes while it routes to the leader: it can neither cut nor say it did.
    let p2_pid = Pid::from_raw(p2.pid() as i32);
    kill(p2_pid, Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    set_fenced(&c, &old, true);
    let fenced_at = Instant::now();

    // The leader asks the agents to cut: p1 does, and routes nobody to it any more.
    assert!(
        eventually(LONG, || published_token(&c, "p1") == Some(None)),
        "p1 kept routing to the fenced leader\n{}",
        p1.log_tail(20)
    );
    let (rec, _) = leader(&c, "dca").expect("the fenced leader released with p2 routing to it");
    assert_eq!(
        rec.node, old,
        "the fenced leader released with p2 routing to it"
    );
    assert!(
        rec.leaving,
        "the fenced leader's record does not say it is leaving"
    );

    // Until p2's status expires with its lease, the fenced node keeps the lease.
    let mut status_gone = None;
    let new = loop {
        let (now, p2_status) = snapshot(&c, "p2");
        if !p2_status {
            status_gone.get_or_insert_with(|| fenced_at.elapsed());
        }
        match now {
            Some((node, t)) if node == old && t == token => {}
            now => {
                assert!(
                    !p2_status,
                    "{now:?} while frozen p2 still routes to the fenced {old}\n{}",
                    c.manager_logs(20)
                );
                if let Some((node, _)) = now {
                    break node;
                }
            }
        }
        assert!(
            fenced_at.elapsed() < LONG,
            "no new leader after the fence\n{}",
            c.manager_logs(30)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let handed_over = fenced_at.elapsed();
    let _ = kill(p2_pid, Signal::SIGCONT);
    assert_ne!(new, old);
    let gone = status_gone.expect("p2's status never expired");
    println!("p2's status expired {gone:?} after the fence; new leader seen after {handed_over:?}");
    // p2's lease (3 s) outlived the fence by 2-2.5 s: the leader really waited for it, and
    // released as soon as it expired, not at its own bound (one 6 s lease).
    assert!(
        gone > Duration::from_secs(1),
        "p2's status went after {gone:?}"
    );
    assert!(
        handed_over.saturating_sub(gone) < Duration::from_secs(2),
        "the leader waited {handed_over:?}, though p2's status went after {gone:?}"
    );
    p2.kill9();
}

#[test]
fn a_fence_with_every_agent_in_contact_fails_over_promptly() {
    let c = cluster("fenceprompt");
    let _p1 = agent(&c, "p1");
    let _p2 = agent(&c, "p2");
    let (old, _) = routed(&c);
    set_fenced(&c, &old, true);
    let fenced_at = Instant::now();
    let new = wait_leader_not(&c, "dca", Some(&old));
    let took = fenced_at.elapsed();
    println!("new leader {} {took:?} after the fence", new.node);
    assert!(
        took < Duration::from_secs(2),
        "the fence took {took:?} to fail over with every agent in contact\n{}",
        c.manager_logs(20)
    );
}
