//! A planned switchover through the agent's proxy fails no transaction a client started: a
//! session is parked once it is idle between transactions (a new request then ends it, not
//! run, with FATAL 57P01), busy ones finish their transaction first, and the old leader keeps
//! its lease until all are parked — or until `server_transfer_timeout`, when what is left is
//! cut.
//! Real etcd, Postgres, managers and agent.

mod common;

use std::time::{Duration, Instant};

use common::*;
use harp_tests::TestCluster;
use harp_tests::agent::{AgentProc, AgentSpec};
use harp_tests::harpctl::{finish, spawn_harpctl};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

/// A session through the agent.
async fn via(dsn: String) -> Client {
    watched(dsn).await.0
}

/// A session through the agent, and how its connection ended.
async fn watched(dsn: String) -> (Client, JoinHandle<Result<(), tokio_postgres::Error>>) {
    let (client, conn) = tokio_postgres::connect(&dsn, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect through the agent: {e}"));
    (client, tokio::spawn(conn))
}

/// Whether the agent's status shows a drain under way.
fn draining(a: &AgentProc) -> bool {
    let body = a.http("/status").map(|(_, b)| b).unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|s| s["draining"].is_i64())
}

async fn until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// A two-node cluster whose managers wait `transfer` for proxies to drain, an agent in front.
fn cluster(name: &str, transfer: &str) -> (TestCluster, AgentProc) {
    cluster_with(name, transfer, |_| {})
}

fn cluster_with(
    name: &str,
    transfer: &str,
    tweak: impl FnOnce(&mut AgentSpec),
) -> (TestCluster, AgentProc) {
    let c = TestCluster::builder(name)
        .node("n1", "dca", 100)
        .node("n2", "dca", 100)
        .extra_yaml(&format!("server_transfer_timeout: {transfer}"))
        .start();
    let mut spec = AgentSpec::new("p1", "dca", c.name(), c.etcd.endpoints());
    tweak(&mut spec);
    let mut a = AgentProc::start(c.dir(), spec);
    assert!(a.wait_ready(LONG), "{}", a.log_tail(20));
    (c, a)
}

/// Opens a transaction through the agent that has written one row.
async fn open_transaction(dsn: &str) -> Client {
    let busy = via(dsn.to_owned()).await;
    busy.batch_execute("CREATE TABLE IF NOT EXISTS drained (v int)")
        .await
        .unwrap();
    busy.batch_execute("BEGIN").await.unwrap();
    busy.execute("INSERT INTO drained VALUES (1)", &[])
        .await
        .unwrap();
    busy
}

/// The leader of dca, its fencing token, and the other node (the switchover's target).
async fn leadership(c: &TestCluster) -> (String, i64, &'static str) {
    let first = wait_leader_not(c, "dca", None).node;
    let (_, token) = c.leader("dca").await.unwrap();
    let target = if first == "n1" { "n2" } else { "n1" };
    (first, token, target)
}

async fn rows_on(c: &mut TestCluster, node: &str) -> i64 {
    let pg = c.node(node).pg.connect().await.unwrap();
    pg.query_one("SELECT count(*) FROM drained", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_lets_open_transactions_commit_and_refuses_new_requests_of_idle_ones() {
    let (mut c, a) = cluster("drain", "60s");
    let (first, token, target) = leadership(&c).await;
    let busy = open_transaction(&a.dsn("postgres")).await;
    let idle = via(a.dsn("postgres")).await;
    idle.batch_execute("SELECT 1").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await; // statuses reach every manager
    let started = Instant::now();
    let promote = spawn_harpctl(&c, &["promote", target, "--timeout", "50s", "-o", "json"]);

    assert!(
        until(LONG, || draining(&a)).await,
        "the agent never drained\n{}",
        a.log_tail(20)
    );
    // The idle session is parked: its next request is not run, and it is told why, as
    // Postgres tells a terminated session (FATAL 57P01).
    let refused = idle
        .batch_execute("INSERT INTO drained VALUES (100)")
        .await
        .expect_err("a parked session relayed a new request");
    let db = refused.as_db_error().unwrap_or_else(|| panic!("{refused}"));
    assert_eq!(db.code().code(), "57P01", "{db}");
    assert!(db.message().contains("planned switchover"), "{db}");
    assert!(db.message().contains("not run"), "{db}");
    assert!(!busy.is_closed(), "the session in a transaction was cut");
    let (rec, now) = c.leader("dca").await.unwrap();
    assert_eq!(now, token, "the leader let go with a transaction open");
    assert_eq!(rec.handover_to.as_deref(), Some(target));
    // A new client is held, not sent to the leader being replaced.
    let held = tokio::spawn(via(a.dsn("postgres")));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!held.is_finished(), "a new client reached the old leader");

    // The transaction goes on and commits; then its session closes and the lead moves.
    busy.execute("INSERT INTO drained VALUES (2)", &[])
        .await
        .unwrap();
    busy.batch_execute("COMMIT")
        .await
        .expect("COMMIT during the drain");
    let next = wait_leader_not(&c, "dca", Some(&first));
    assert_eq!(next.node, target);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the handover waited for server_transfer_timeout instead of the commit"
    );
    assert!(until(LONG, || busy.is_closed()).await);
    assert_eq!(rows_on(&mut c, &first).await, 2, "the commit was lost");
    // The held client got through, to the new leader.
    let client = tokio::time::timeout(LONG, held)
        .await
        .expect("the held client was never routed")
        .unwrap();
    let port: i32 = client
        .query_one("SELECT inet_server_port()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(port as u16, c.node(target).pg.port());
    // harpctl reports the drain: it lasted at least while the transaction stayed open.
    let (code, out, err) = finish(promote);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let drain = report["drain_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("{report}"));
    // (harpctl sees the mark when its watch starts, a little after the leader wrote it)
    assert!(
        drain >= 500,
        "drain_ms {drain} is shorter than the transaction kept open 1 s: {report}\n{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_still_open_at_server_transfer_timeout_is_cut() {
    let (mut c, a) = cluster("draincut", "1500ms");
    let (first, token, target) = leadership(&c).await;
    let busy = open_transaction(&a.dsn("postgres")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    intent(&c, target, token, false);
    let next = wait_leader_not(&c, "dca", Some(&first));
    let waited = started.elapsed();
    assert_eq!(next.node, target);
    assert!(
        waited >= Duration::from_millis(1400),
        "the leader handed over after {waited:?}, before server_transfer_timeout"
    );
    assert!(until(LONG, || busy.is_closed()).await, "{}", a.log_tail(20));
    assert!(busy.batch_execute("COMMIT").await.is_err());
    assert_eq!(rows_on(&mut c, &first).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_tells_idle_sessions_why_and_in_flight_ones_nothing() {
    let (c, a) = cluster("cutwhy", "5s");
    let first = wait_leader_not(&c, "dca", None).node;
    let (idle, idle_conn) = watched(a.dsn("postgres")).await;
    idle.batch_execute("SELECT 1").await.unwrap();
    let running = via(a.dsn("postgres")).await;
    let query = tokio::spawn(async move { running.batch_execute("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Fenced, the leader lets go at once: no switchover, no drain.
    set_fenced(&c, &first, true);
    let ended = tokio::time::timeout(LONG, idle_conn)
        .await
        .expect("the idle session outlived the leader change")
        .unwrap()
        .expect_err("closed without a word");
    let db = ended.as_db_error().unwrap_or_else(|| panic!("{ended}"));
    assert_eq!(db.code().code(), "57P01", "{db}");
    assert!(db.message().contains("lead master of dca changed"), "{db}");
    // Whether the running query finished on the old leader is unknown: no error claims it.
    let cut = tokio::time::timeout(LONG, query)
        .await
        .expect("the running query outlived the leader change")
        .unwrap()
        .expect_err("the query survived the cut");
    assert!(cut.as_db_error().is_none(), "told it failed: {cut}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_held_past_pause_timeout_during_a_drain_is_told_so() {
    let (c, a) = cluster_with("drainpause", "60s", |s| s.pause_timeout_ms = 500);
    let (_, token, target) = leadership(&c).await;
    let busy = open_transaction(&a.dsn("postgres")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    intent(&c, target, token, false);
    let dsn = a.dsn("postgres");
    assert!(
        until(LONG, || draining(&a)).await,
        "the agent never drained\n{}",
        a.log_tail(20)
    );
    let refused = tokio_postgres::connect(&dsn, NoTls)
        .await
        .err()
        .expect("a client got through during the drain");
    let db = refused.as_db_error().unwrap_or_else(|| panic!("{refused}"));
    assert_eq!(db.code().code(), "57P03", "{db}");
    assert!(db.message().contains("still handing over"), "{db}");
    busy.batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_switchover_leaves_sessions_open_and_routes_to_the_same_leader() {
    let (c, a) = cluster("drainback", "60s");
    let (_, token, target) = leadership(&c).await;
    let busy = open_transaction(&a.dsn("postgres")).await;
    let idle = via(a.dsn("postgres")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    intent(&c, target, token, false);
    assert!(
        until(LONG, || leader_mark(&c).is_some() && draining(&a)).await,
        "the leader never marked its record"
    );
    // The request goes away (harpctl gave up): the leader stays, its mark is withdrawn.
    delete(
        &c,
        harp_core::keys::Keys::new(c.name()).promote_intent("dca"),
    );
    assert!(
        until(LONG, || leader_mark(&c).is_none()).await,
        "the mark stayed"
    );
    busy.batch_execute("COMMIT").await.unwrap();
    // No longer draining: the session lives on past its transaction, new clients get through.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !busy.is_closed(),
        "a session was closed after the switchover was withdrawn"
    );
    busy.batch_execute("SELECT 1").await.unwrap();
    idle.batch_execute("SELECT 1")
        .await
        .expect("a session parked during the withdrawn switchover");
    let fresh = tokio::time::timeout(LONG, via(a.dsn("postgres")))
        .await
        .expect("new clients are still held");
    fresh.batch_execute("SELECT 1").await.unwrap();
    assert_eq!(c.leader("dca").await.unwrap().1, token);
}

/// The leader record's switchover mark, read from etcd.
fn leader_mark(c: &TestCluster) -> Option<String> {
    leader(c, "dca").and_then(|(r, _)| r.handover_to)
}
