//! Streaming replication mode end to end: real Postgres 15 streaming replication (a primary
//! and two standbys made with `pg_basebackup -R`), real etcd, real managers and an agent the
//! application writes through. Faults: kill -9 of the primary's postmaster, of its manager
//! too (node loss), fences, priority -1, lag, a planned switchover, and an old primary that
//! cannot be rewound.

use std::time::{Duration, Instant};

use harp_tests::agent::AgentProc;
use harp_tests::harpctl::harpctl;
use harp_tests::rt::block_on;
use harp_tests::streaming::{query_text, wait_for_value};
use harp_tests::writer::Writer;
use harp_tests::{TestCluster, TestClusterBuilder};

const WAIT: Duration = Duration::from_secs(60);

/// n1 (the primary, priority 100) and n2 (90) in dca, n3 (80) in dcb; 2 s leases.
fn builder(name: &str, sync: &str) -> TestClusterBuilder {
    TestCluster::builder(name)
        .etcd_members(1)
        .node("n1", "dca", 100)
        .node("n2", "dca", 90)
        .node("n3", "dcb", 80)
        .lease_secs(2)
        .refresh_ms(500)
        .streaming(sync)
        .wait_managers(Some(WAIT))
}

fn up(c: &TestCluster) -> harp_tests::cluster::StreamingState {
    c.wait_streaming(WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", c.manager_logs(40)))
}

/// An agent in dcb (another location than the primary: in streaming mode every location
/// routes to the one primary) and a writer inserting through it every 10 ms.
fn app(c: &TestCluster) -> (AgentProc, Writer) {
    let mut agent = AgentProc::start(c.dir(), c.agent_spec("app", "dcb"));
    assert!(agent.wait_ready(WAIT), "{}", agent.log_tail(30));
    let writer = Writer::start(&agent.dsn("postgres"), "acks", Duration::from_millis(10));
    assert!(writer.wait_acked(50, WAIT), "no writes through the agent");
    (agent, writer)
}

/// The leader other than `not`, once routable.
fn new_primary(c: &TestCluster, not: &str) -> String {
    let scope = c.name().to_owned();
    block_on(|| {
        c.wait_leader(
            &scope,
            |l| l.is_some_and(|l| l.node != not && l.routable()),
            WAIT,
        )
    })
    .unwrap_or_else(|| panic!("no primary other than {not}\n{}", c.manager_logs(40)))
    .node
}

fn dsn(c: &mut TestCluster, node: &str) -> String {
    c.node(node).pg.dsn()
}

/// Every acknowledged row is on `node`, and more rows were acknowledged after `before`.
fn all_acked_rows_on(c: &mut TestCluster, writer: &mut Writer, node: &str, before: usize) {
    assert!(
        writer.wait_acked(before + 50, WAIT),
        "writes did not resume through the agent\n{}",
        c.manager_logs(30)
    );
    writer.stop();
    let missing = writer.missing_on(&dsn(c, node));
    assert!(
        missing.is_empty(),
        "{} acknowledged rows missing on the new primary {node}: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

fn status(c: &mut TestCluster, node: &str) -> serde_json::Value {
    c.node(node).mgr.status().unwrap_or_default()
}

#[test]
fn a_primary_crash_promotes_the_best_standby_and_the_old_primary_rejoins_as_its_standby() {
    let mut c = builder("s-crash", "off").start();
    assert_eq!(up(&c).primary, "n1");
    let (_agent, mut writer) = app(&c);
    c.node("n1").pg.kill9();
    let t0 = Instant::now();
    // n2 outranks n3; it is promoted and routed to.
    assert_eq!(new_primary(&c, "n1"), "n2");
    let before = writer.acked().len();
    assert!(
        writer.wait_acked(before + 20, WAIT),
        "no writes after the failover"
    );
    eprintln!("writes resumed {:?} after the kill", t0.elapsed());
    // The old primary's manager rewinds it and starts it as a standby of n2; n3 follows n2.
    let st = up(&c);
    assert_eq!(
        (st.primary.as_str(), st.streaming),
        ("n2", vec!["n1".into(), "n3".into()])
    );
    let n1 = status(&mut c, "n1");
    assert_eq!(n1["postgres"], "standby", "{n1}");
    assert_eq!(n1["writable"], false);
    // Rows written on n2 reach n1 (as a standby), and n2's timeline is the new one.
    let last = *writer.acked().last().unwrap();
    let seen = wait_for_value(
        &dsn(&mut c, "n1"),
        &format!("SELECT count(*) FROM acks WHERE id = {last}"),
        "1",
        WAIT,
    );
    assert_eq!(seen.as_deref(), Some("1"), "n1 does not replay n2's writes");
    assert!(status(&mut c, "n2")["replica"]["timeline"].as_u64() >= Some(2));
    // The old primary was never routed again: it only ever acknowledged as a standby.
    writer.stop();
}

#[test]
fn node_loss_promotes_a_standby_once_the_lease_expires() {
    let mut c = builder("s-node", "off").start();
    assert_eq!(up(&c).primary, "n1");
    let (_agent, mut writer) = app(&c);
    let before = writer.acked().len();
    c.node("n1").mgr.kill9();
    c.node("n1").pg.kill9();
    let t0 = Instant::now();
    assert_eq!(new_primary(&c, "n1"), "n2");
    // Not before the 2 s lease of the dead manager could expire.
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    assert!(writer.wait_acked(before + 50, WAIT));
    writer.stop();
}

#[test]
fn fenced_lagging_and_priority_minus_one_standbys_are_never_promoted() {
    let mut c = TestCluster::builder("s-inelig")
        .etcd_members(1)
        .node("n1", "dca", 100)
        .node("n2", "dca", 90)
        .node("n3", "dcb", -1)
        .lease_secs(2)
        .refresh_ms(500)
        .streaming("off")
        .wait_managers(Some(WAIT))
        .start();
    assert_eq!(up(&c).primary, "n1");
    let (code, _, err) = harpctl(&c, &["fence", "n2"]);
    assert_eq!(code, 0, "{err}");
    c.node("n1").pg.kill9();
    // Nobody may be promoted: the lease stays vacant, the standbys stay standbys and say why.
    std::thread::sleep(Duration::from_secs(2));
    let scope = c.name().to_owned();
    let leader = block_on(|| c.leader(&scope));
    assert!(
        leader.as_ref().is_none_or(|(l, _)| l.node == "n1"),
        "{leader:?}"
    );
    for (n, why) in [("n2", "fenced"), ("n3", "priority -1")] {
        let s = status(&mut c, n);
        assert_eq!(s["postgres"], "standby", "{s}");
        assert!(s["ineligible"].as_str().unwrap_or("").contains(why), "{s}");
    }
    // No standby could take over: after one lease the old primary restarts in place and leads.
    let back = block_on(|| {
        c.wait_leader(
            &scope,
            |l| l.is_some_and(|l| l.node == "n1" && l.routable()),
            WAIT,
        )
    });
    assert!(
        back.is_some(),
        "n1 did not come back\n{}",
        c.manager_logs(40)
    );
    // A standby beyond maximum_lag is not promoted either: n2 (unfenced) stops replaying.
    harpctl(&c, &["unfence", "n2"]);
    let n2 = dsn(&mut c, "n2");
    harp_tests::streaming::execute(&n2, "SELECT pg_wal_replay_pause()");
    let n1 = dsn(&mut c, "n1");
    harp_tests::streaming::execute(
        &n1,
        "CREATE TABLE big AS SELECT g FROM generate_series(1, 200000) g",
    );
    let (code, _, err) = harpctl(&c, &["set", "node", "n2", "maximum_lag=1000"]);
    assert_eq!(code, 0, "{err}");
    let deadline = Instant::now() + WAIT;
    while !status(&mut c, "n2")["ineligible"]
        .as_str()
        .unwrap_or("")
        .contains("maximum_lag")
    {
        assert!(Instant::now() < deadline, "{}", status(&mut c, "n2"));
        std::thread::sleep(Duration::from_millis(200));
    }
    c.node("n1").pg.kill9();
    std::thread::sleep(Duration::from_secs(2));
    let leader = block_on(|| c.leader(&scope));
    assert!(
        leader.as_ref().is_none_or(|(l, _)| l.node == "n1"),
        "a lagging standby was promoted: {leader:?}"
    );
    assert_eq!(
        query_text(&n2, "SELECT pg_is_in_recovery()").as_deref(),
        Some("t")
    );
}

#[test]
fn a_switchover_under_load_loses_nothing_and_the_old_primary_follows_without_rewind() {
    let mut c = builder("s-switch", "off").start();
    assert_eq!(up(&c).primary, "n1");
    let (_agent, mut writer) = app(&c);
    let before = writer.acked().len();
    let (code, out, err) = harpctl(&c, &["promote", "n3"]);
    assert_eq!(code, 0, "{out}{err}\n{}", c.manager_logs(40));
    assert_eq!(new_primary(&c, "n1"), "n3");
    all_acked_rows_on(&mut c, &mut writer, "n3", before);
    let st = up(&c);
    assert_eq!(st.primary, "n3");
    assert_eq!(st.streaming, ["n1", "n2"]);
}

#[test]
fn synchronous_mode_loses_no_acknowledged_row_and_never_promotes_a_non_synchronous_standby() {
    let mut c = builder("s-sync", "on").start();
    let st = up(&c);
    assert_eq!(st.primary, "n1");
    // Whichever standby streamed first became synchronous (a healthy one is kept).
    let [first] = st.sync_standbys.as_slice() else {
        panic!("one synchronous standby expected: {st:?}")
    };
    let first = first.clone();
    let (_agent, mut writer) = app(&c);
    let before = writer.acked().len();
    c.node("n1").pg.kill9();
    assert_eq!(new_primary(&c, "n1"), first, "only the synchronous standby");
    all_acked_rows_on(&mut c, &mut writer, &first, before);
    // The new primary names a synchronous standby again.
    let st = up(&c);
    assert_eq!(st.primary, first);
    let sync = st.sync_standbys[0].clone();
    let other = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != sync && *n != first)
        .expect("three nodes");
    // The primary and its synchronous standby are lost together: the other standby is not
    // promoted (it may lack acknowledged commits), and says why.
    // (Both whole nodes: a primary whose manager lives would restart in place after a lease.)
    for n in [sync.as_str(), first.as_str()] {
        c.node(n).mgr.kill9();
        c.node(n).pg.kill9();
    }
    std::thread::sleep(Duration::from_secs(5));
    let scope = c.name().to_owned();
    let leader = block_on(|| c.leader(&scope));
    assert!(
        leader.as_ref().is_none_or(|(l, _)| l.node == first),
        "a non-synchronous standby was promoted: {leader:?}"
    );
    let s = status(&mut c, other);
    assert!(
        s["ineligible"]
            .as_str()
            .unwrap_or("")
            .contains("synchronous"),
        "{s}"
    );
}

#[test]
fn strict_synchronous_mode_blocks_writes_without_a_synchronous_standby() {
    let mut c = builder("s-strict", "strict").start();
    assert_eq!(up(&c).primary, "n1");
    let n1 = dsn(&mut c, "n1");
    harp_tests::streaming::execute(&n1, "CREATE TABLE strict_t (v int)");
    for n in ["n2", "n3"] {
        c.node(n).mgr.kill9();
        c.node(n).pg.kill9();
    }
    std::thread::sleep(Duration::from_secs(2));
    // The commit waits: it is not acknowledged within 3 s.
    let r = block_on(|| async {
        let (client, conn) = tokio_postgres::connect(&n1, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        let insert = client.execute("INSERT INTO strict_t VALUES (1)", &[]);
        Ok::<_, tokio_postgres::Error>(tokio::time::timeout(Duration::from_secs(3), insert).await)
    });
    assert!(
        matches!(r, Ok(Err(_))),
        "a commit was acknowledged with no synchronous standby: {r:?}"
    );
    let s = status(&mut c, "n1");
    assert!(s["reason"].as_str().unwrap_or("").contains("wait"), "{s}");
}

#[test]
fn an_old_primary_that_cannot_be_rewound_says_why_and_reinit_repairs_it() {
    let mut c = builder("s-reinit", "off")
        .pg_setting("wal_log_hints", "off")
        .start();
    assert_eq!(up(&c).primary, "n1");
    let n1 = dsn(&mut c, "n1");
    harp_tests::streaming::execute(&n1, "CREATE TABLE r (v int); INSERT INTO r VALUES (1)");
    c.node("n1").pg.kill9();
    assert_eq!(new_primary(&c, "n1"), "n2");
    // Its manager tries to rewind it and cannot: it stays down, and says why.
    let deadline = Instant::now() + WAIT;
    let reason = loop {
        let r = status(&mut c, "n1")["reason"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if r.contains("wal_log_hints") {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "no reason given: {}",
            status(&mut c, "n1")
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(reason.contains("harpctl reinit"), "{reason}");
    let (_, nodes, _) = harpctl(&c, &["get", "nodes"]);
    assert!(nodes.contains("wal_log_hints"), "{nodes}");
    let (code, out, err) = harpctl(&c, &["reinit", "n1"]);
    assert_eq!(code, 0, "{out}{err}");
    let st = up(&c);
    assert_eq!(st.primary, "n2");
    assert!(st.streaming.contains(&"n1".to_owned()));
}
