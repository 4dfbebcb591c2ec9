//! `proxy.type: pgbouncer`: the agent runs a real PgBouncer on the proxy port and steers it.
//! Clients authenticate through PgBouncer's passthrough (`auth_user` + `auth_query`), reach the
//! lead master only, are cut from a failed one, and — pooled per transaction — ride through a
//! planned switchover without an error. Real etcd, Postgres, managers, agent and PgBouncer.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use harp_tests::agent::{AgentProc, AgentSpec};
use harp_tests::harpctl::{finish, harpctl, spawn_harpctl};
use harp_tests::{TestCluster, TestClusterBuilder};
use tokio_postgres::{Client, NoTls};

const PASSWORD: &str = "app-secret";

/// Whether PgBouncer can run here (installed); under CI it must be.
fn pgbouncer_installed(test: &str) -> bool {
    let found = harp_tests::pgbouncer_installed();
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: pgbouncer is not installed (.ci/run installs it)");
        }
        println!("SKIP: {test}: pgbouncer is not installed");
    }
    found
}

/// Two nodes, a login role `app` with a SCRAM password on each, and an agent running
/// PgBouncer in `pool_mode`.
async fn cluster(name: &str, pool_mode: &str) -> (TestCluster, AgentProc) {
    let b = TestCluster::builder(name)
        .node("n1", "dca", 100)
        .node("n2", "dca", 100)
        .extra_yaml("server_transfer_timeout: 20s");
    cluster_with(b, pool_mode, |_| {}).await
}

/// The cluster `b` makes, `app` on each node, and an agent running PgBouncer in `pool_mode`,
/// its spec changed by `tweak`.
async fn cluster_with(
    b: TestClusterBuilder,
    pool_mode: &str,
    tweak: impl FnOnce(&mut AgentSpec),
) -> (TestCluster, AgentProc) {
    let mut c = b.start();
    let nodes: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
    for node in &nodes {
        let pg = c.node(node).pg.connect().await.unwrap();
        pg.batch_execute(&format!(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE app LOGIN PASSWORD '{PASSWORD}';
             CREATE TABLE IF NOT EXISTS pooled (v int);
             GRANT ALL ON pooled TO app;"
        ))
        .await
        .unwrap();
    }
    // PgBouncer looks passwords up as `postgres` (trusted by the test clusters).
    let userlist = c.dir().join("userlist.txt");
    std::fs::write(&userlist, "\"postgres\" \"\"\n").unwrap();
    let mut spec = AgentSpec::new("p1", "dca", c.name(), c.etcd.endpoints());
    spec.extra_yaml = format!(
        "type: pgbouncer\npool_mode: {pool_mode}\nauth_type: scram-sha-256\n\
         auth_user: postgres\nauth_file: {}\n",
        userlist.display()
    );
    tweak(&mut spec);
    let mut a = AgentProc::start(c.dir(), spec);
    assert!(a.wait_ready(LONG), "{}", a.log_tail(30));
    (c, a)
}

fn dsn(a: &AgentProc, password: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user=app password={password} dbname=postgres",
        a.listen_port()
    )
}

async fn connect(dsn: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(dsn, NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// The Postgres port the session runs on. (Simple protocol: a statement prepared in one
/// transaction may not exist on the server a transaction pool gives the next.)
async fn server_port(client: &Client) -> Result<u16, tokio_postgres::Error> {
    let rows = client.simple_query("SELECT inet_server_port()").await?;
    Ok(rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0)?.parse().ok(),
            _ => None,
        })
        .expect("a port"))
}

/// Connects through PgBouncer until a session lands on `node`'s Postgres.
async fn until_on(c: &mut TestCluster, a: &AgentProc, node: &str) -> Client {
    let want = c.node(node).pg.port();
    let end = Instant::now() + LONG;
    loop {
        if let Ok(client) = connect(&dsn(a, PASSWORD)).await
            && let Ok(Ok(port)) =
                tokio::time::timeout(Duration::from_secs(2), server_port(&client)).await
            && port == want
        {
            return client;
        }
        assert!(
            Instant::now() < end,
            "no session reached {node}\n{}",
            a.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A writer's failed writes and the longest time between two acknowledged ones.
type Stats = Arc<Mutex<(u32, Duration)>>;

/// Inserts a row every 10 ms on one session until aborted.
async fn write_until_stopped(client: Client, stats: Stats) {
    let mut last = Instant::now();
    loop {
        match client.simple_query("INSERT INTO pooled VALUES (0)").await {
            Ok(_) => {
                let mut s = stats.lock().unwrap();
                s.1 = s.1.max(last.elapsed());
                last = Instant::now();
            }
            Err(_) => stats.lock().unwrap().0 += 1,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether the agent's status shows a drain (`draining`) or none within `timeout`.
async fn drains_within(a: &AgentProc, draining: bool, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while status(a)["draining"].is_i64() != draining {
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

fn status(a: &AgentProc) -> serde_json::Value {
    let (_, body) = a.http("/status").expect("agent status");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_serves_the_leader_and_cuts_its_sessions_at_a_change() {
    if !pgbouncer_installed("pgbouncer_serves_the_leader_and_cuts_its_sessions_at_a_change") {
        return;
    }
    // Clients may use TLS to PgBouncer (a self-signed certificate, `prefer`: both ways work).
    let tls = harp_tests::WorkDir::new();
    let (key, cert) = (tls.join("tls.key"), tls.join("tls.crt"));
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (scripts/setup installs it)");
    assert!(made.status.success(), "{made:?}");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let b = TestCluster::builder("pgbsession")
        .node("n1", "dca", 100)
        .node("n2", "dca", 100);
    let extra = format!(
        "client_tls_sslmode: prefer\nclient_tls_key_file: {}\nclient_tls_cert_file: {}\n",
        key.display(),
        cert.display()
    );
    let (mut c, a) = cluster_with(b, "session", |s| s.extra_yaml += &extra).await;
    let first = wait_leader_not(&c, "dca", None).node;
    let session = until_on(&mut c, &a, &first).await;
    assert_eq!(status(&a)["mode"], "pgbouncer", "{}", status(&a));
    // The agent tells the other agents which leadership its PgBouncer serves.
    let token = c.leader("dca").await.unwrap().1;
    assert_eq!(wait_pooled(&c, Some(token)).await, Some(token));
    let psql = std::process::Command::new(harp_tests::postgres::pg_bin_dir().join("psql"))
        .arg(format!("{} sslmode=require", dsn(&a, PASSWORD)))
        .args(["-XAt", "-c", "SELECT 1"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&psql.stdout);
    assert!(
        psql.status.success() && out.trim() == "1",
        "TLS through PgBouncer: {out}{}",
        String::from_utf8_lossy(&psql.stderr)
    );
    // Passthrough authentication checks the password against the leader's.
    let Err(err) = connect(&dsn(&a, "not-the-password")).await else {
        panic!("a wrong password was let in");
    };
    let db = err.as_db_error().unwrap_or_else(|| panic!("{err:?}"));
    assert!(db.message().contains("authentication failed"), "{db}");
    // pgbouncer.ini is written beside config.yml and points at the leader.
    let ini = std::fs::read_to_string(c.dir().join("pgbouncer.ini")).unwrap();
    let leader_port = c.node(&first).pg.port();
    assert!(ini.contains(&format!("port={leader_port}")), "{ini}");

    // `harpctl set proxy` reaches PgBouncer while it runs: one client is the limit now.
    let (code, out, err) = harpctl(&c, &["set", "proxy", "p1", "max_client_conn=1"]);
    assert_eq!(code, 0, "{out}{err}");
    let refused = {
        let end = Instant::now() + LONG;
        loop {
            match connect(&dsn(&a, PASSWORD)).await {
                Err(e) => break e,
                Ok(_) if Instant::now() > end => panic!("max_client_conn=1 never applied"),
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    };
    let db = refused
        .as_db_error()
        .unwrap_or_else(|| panic!("{refused:?}"));
    assert!(db.message().contains("max_client_conn"), "{db}");
    let (code, out, err) = harpctl(&c, &["set", "proxy", "p1", "max_client_conn=100"]);
    assert_eq!(code, 0, "{out}{err}");

    // The leader is fenced, its Postgres stays up: its session is cut all the same (it would
    // still work if only the route had moved), new ones reach the new leader only.
    set_fenced(&c, &first, true);
    let next = wait_leader_not(&c, "dca", Some(&first)).node;
    let fresh = until_on(&mut c, &a, &next).await;
    let token = c.leader("dca").await.unwrap().1;
    assert_eq!(wait_pooled(&c, Some(token)).await, Some(token));
    assert!(
        session.batch_execute("SELECT 1").await.is_err(),
        "a session to the failed leader went on"
    );
    fresh
        .batch_execute("INSERT INTO pooled VALUES (1)")
        .await
        .unwrap();
    let s = status(&a);
    assert_eq!(s["leader"], next.as_str(), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_pooled_clients_ride_through_a_switchover_without_an_error() {
    if !pgbouncer_installed("transaction_pooled_clients_ride_through_a_switchover_without_an_error")
    {
        return;
    }
    let (mut c, a) = cluster("pgbtx", "transaction").await;
    let first = wait_leader_not(&c, "dca", None).node;
    let target = if first == "n1" { "n2" } else { "n1" };
    let idle = until_on(&mut c, &a, &first).await;
    let stats = Stats::default();
    let session = connect(&dsn(&a, PASSWORD)).await.unwrap();
    let writer = tokio::spawn(write_until_stopped(session, stats.clone()));
    let busy = connect(&dsn(&a, PASSWORD)).await.unwrap();
    busy.batch_execute("BEGIN; INSERT INTO pooled VALUES (1)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await; // statuses reach every manager
    let started = Instant::now();
    let promote = spawn_harpctl(&c, &["promote", target, "--timeout", "50s", "-o", "json"]);

    // The drain waits for the open transaction: the leader does not let go.
    assert!(
        drains_within(&a, true, LONG).await,
        "the agent never drained\n{}",
        a.log_tail(30)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        leader(&c, "dca").unwrap().0.node,
        first,
        "the leader let go with a transaction open"
    );
    busy.batch_execute("INSERT INTO pooled VALUES (2); COMMIT")
        .await
        .expect("COMMIT during the drain");
    let next = wait_leader_not(&c, "dca", Some(&first));
    assert_eq!(next.node, target);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the handover waited for server_transfer_timeout instead of the commit"
    );
    let (code, out, err) = finish(promote);
    assert_eq!(code, 0, "{out}{err}");

    // A session writing all along saw no error, and no stall beyond the handover.
    let (errors, longest) = {
        tokio::time::sleep(Duration::from_millis(500)).await;
        writer.abort();
        let _ = writer.await;
        *stats.lock().unwrap()
    };
    assert_eq!(
        errors, 0,
        "the writing session failed during the switchover"
    );
    assert!(
        longest < Duration::from_secs(5),
        "the writing session stalled {longest:?}\n{}",
        a.log_tail(30)
    );

    // Both sessions go on, without reconnecting, on the new leader.
    for client in [&idle, &busy] {
        let port = tokio::time::timeout(LONG, server_port(client))
            .await
            .expect("a pooled session hung after the switchover")
            .expect("a pooled session failed after the switchover");
        assert_eq!(port, c.node(target).pg.port());
    }
    let pg = c.node(&first).pg.connect().await.unwrap();
    let committed: i64 = pg
        .query_one("SELECT count(*) FROM pooled WHERE v > 0", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(committed, 2, "the commit was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_switchover_resumes_pgbouncer_on_the_same_leader() {
    if !pgbouncer_installed("a_withdrawn_switchover_resumes_pgbouncer_on_the_same_leader") {
        return;
    }
    let (mut c, a) = cluster("pgbback", "transaction").await;
    let first = wait_leader_not(&c, "dca", None).node;
    let target = if first == "n1" { "n2" } else { "n1" };
    let (_, token) = c.leader("dca").await.unwrap();
    let idle = until_on(&mut c, &a, &first).await;
    let busy = connect(&dsn(&a, PASSWORD)).await.unwrap();
    busy.batch_execute("BEGIN; INSERT INTO pooled VALUES (1)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await; // statuses reach every manager
    intent(&c, target, token, false);
    assert!(
        drains_within(&a, true, LONG).await,
        "never drained\n{}",
        a.log_tail(30)
    );
    // The request goes away before the transaction ends: the leader stays.
    delete(
        &c,
        harp_core::keys::Keys::new(c.name()).promote_intent("dca"),
    );
    assert!(
        drains_within(&a, false, LONG).await,
        "still draining\n{}",
        a.log_tail(30)
    );
    busy.batch_execute("INSERT INTO pooled VALUES (2); COMMIT")
        .await
        .expect("the transaction failed after the switchover was withdrawn");
    // Every session goes on, on the same leader, and new clients get through.
    let port = c.node(&first).pg.port();
    for client in [&idle, &busy] {
        let on = tokio::time::timeout(LONG, server_port(client))
            .await
            .expect("a session stayed paused")
            .expect("a session failed");
        assert_eq!(on, port);
    }
    let fresh = tokio::time::timeout(LONG, connect(&dsn(&a, PASSWORD)))
        .await
        .expect("new clients are still held")
        .unwrap();
    assert_eq!(server_port(&fresh).await.unwrap(), port);
    assert_eq!(c.leader("dca").await.unwrap().1, token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_from_etcd_pgbouncer_fails_closed_then_resumes() {
    if !pgbouncer_installed("cut_off_from_etcd_pgbouncer_fails_closed_then_resumes") {
        return;
    }
    let b = TestCluster::builder("pgbclosed")
        .node("n1", "dca", 100)
        .lease_secs(3)
        .refresh_ms(1000);
    let (mut c, mut a) = cluster_with(b, "session", |s| {
        s.pause_timeout_ms = 1000;
        s.extra_yaml += "leader_lease_duration: 3\nlease_refresh_interval: 1000\n";
    })
    .await;
    let session = until_on(&mut c, &a, "n1").await;
    c.etcd.stop_member(1);
    c.etcd.stop_member(2);
    assert!(
        eventually(LONG, || a.http("/health/is-ready")
            == Some((500, "false".into()))),
        "still ready without etcd\n{}",
        a.log_tail(20)
    );
    // The session routed under a leader the agent can no longer vouch for is cut (its
    // Postgres is up and would answer), and a new client is held, then refused.
    let cut = tokio::time::timeout(LONG, async {
        while session.simple_query("SELECT 1").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        cut.is_ok(),
        "the session went on without etcd\n{}",
        a.log_tail(20)
    );
    let refused = match connect(&dsn(&a, PASSWORD)).await {
        Ok(client) => tokio::time::timeout(LONG, client.simple_query("SELECT 1"))
            .await
            .expect("a held client was never refused")
            .is_err(),
        Err(_) => true,
    };
    assert!(refused, "a new client was served without etcd");
    // Quorum back: routing resumes.
    c.etcd.start_member(1);
    c.etcd.start_member(2);
    assert!(a.wait_ready(LONG), "{}", a.log_tail(20));
    until_on(&mut c, &a, "n1").await;
}

/// The agent freezes (SIGSTOP) while PgBouncer pools sessions on the leader; the leader is
/// fenced and another node leads. PgBouncer runs on, but its guard stops it once the agent's
/// deadline has passed: a request sent then reaches no leader, least of all the fenced one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_agent_leaves_no_pgbouncer_serving_past_its_deadline() {
    if !pgbouncer_installed("a_frozen_agent_leaves_no_pgbouncer_serving_past_its_deadline") {
        return;
    }
    let b = TestCluster::builder("pgbfrozen")
        .node("n1", "dca", 100)
        .node("n2", "dca", 90)
        .lease_secs(3)
        .refresh_ms(500);
    let (mut c, a) = cluster_with(b, "session", |s| {
        s.extra_yaml += "leader_lease_duration: 3\nlease_refresh_interval: 500\n";
    })
    .await;
    let old = wait_leader_not(&c, "dca", None);
    let session = until_on(&mut c, &a, &old.node).await;
    let agent = nix::unistd::Pid::from_raw(a.pid() as i32);
    nix::sys::signal::kill(agent, nix::sys::signal::Signal::SIGSTOP).unwrap();
    set_fenced(&c, &old.node, true);
    let new = wait_leader_not(&c, "dca", Some(&old.node));
    // Past the frozen agent's trust deadline (3 s after its last keep-alive at most).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let late = tokio::time::timeout(
        Duration::from_secs(5),
        session.simple_query("INSERT INTO pooled VALUES (42)"),
    )
    .await;
    nix::sys::signal::kill(agent, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(
        !matches!(late, Ok(Ok(_))),
        "a pooled session wrote through a frozen agent past its deadline\n{}",
        a.log_tail(20)
    );
    for node in [&old.node, &new.node] {
        let pg = c.node(node).pg.connect().await.unwrap();
        let rows = pg.query("SELECT v FROM pooled", &[]).await.unwrap();
        assert!(rows.is_empty(), "{node} ran the late INSERT");
    }
    let log = std::fs::read_to_string(a.log_path()).unwrap();
    assert!(
        log.contains("did not renew its authority in time"),
        "{}",
        a.log_tail(20)
    );
}

#[test]
fn an_agent_without_pgbouncer_says_what_to_install_and_exits() {
    let dir = harp_tests::WorkDir::new();
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        "cluster:\n  name: c1\ndcs:\n  driver: etcd\n  endpoints: [127.0.0.1:9]\n\
         location: dca\nproxy:\n  name: p1\n  type: pgbouncer\n  auth_user: lookup\n  \
         pgbouncer_bin_dir: /nonexistent/bin\nhttp:\n  enable: false\n",
    )
    .unwrap();
    let out = std::process::Command::new(harp_tests::workspace_bin("harp-agent"))
        .arg("-f")
        .arg(&config)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("no pgbouncer binary was found in /nonexistent/bin")
            && text.contains("set proxy.pgbouncer_bin_dir"),
        "{text}"
    );
    assert!(
        !dir.join("pgbouncer.ini").exists(),
        "files written for nothing"
    );
}

/// Waits until p1's status in etcd says its PgBouncer serves `want`; what it says last.
async fn wait_pooled(c: &TestCluster, want: Option<i64>) -> Option<i64> {
    let key = harp_core::keys::Keys::new(c.name()).proxy_status("p1");
    let mut client = c.client().await;
    let end = Instant::now() + LONG;
    loop {
        let r = client.get(key.as_str(), None).await.unwrap();
        let pooled = r.kvs().first().and_then(|kv| {
            harp_core::records::ProxyStatus::decode(kv.value())
                .unwrap()
                .pooled
        });
        if pooled == want || Instant::now() > end {
            return pooled;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
