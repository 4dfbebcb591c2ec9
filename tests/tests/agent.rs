//! harp-agent's userspace proxy against real etcd, Postgres, managers and clients (psql,
//! pgbench): routing, cut-over at a failover, holding while there is no leader, Postgres-
//! protocol refusals, fail-closed without etcd, health endpoints, hostile clients.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use harp_tests::agent::{AgentProc, AgentSpec};
use harp_tests::postgres::pg_bin_dir;
use harp_tests::rt::block_on;
use harp_tests::{TestCluster, TestClusterBuilder};

fn cluster(name: &str, nodes: &[&str]) -> TestClusterBuilder {
    let mut b = TestCluster::builder(name);
    for n in nodes {
        b = b.node(n, "dca", 100);
    }
    b
}

fn agent(c: &TestCluster, tweak: impl FnOnce(&mut AgentSpec)) -> AgentProc {
    let mut spec = AgentSpec::new("p1", "dca", c.name(), c.etcd.endpoints());
    tweak(&mut spec);
    AgentProc::start(c.dir(), spec)
}

fn ready(a: &mut AgentProc) {
    assert!(a.wait_ready(LONG), "agent never ready\n{}", a.log_tail(30));
}

/// Runs psql through the agent with `sql`; stdout trimmed.
fn psql(a: &AgentProc, sql: &str) -> Output {
    Command::new(pg_bin_dir().join("psql"))
        .args(["-X", "-At", "-d", &a.dsn("postgres"), "-c", sql])
        .env("PGCONNECT_TIMEOUT", "30")
        .env("LC_ALL", "C")
        .output()
        .expect("run psql")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_owned()
}

/// Client backends of `application_name` on a node's Postgres.
fn backends(c: &mut TestCluster, node: &str, app: &str) -> i64 {
    let pg = &c.node(node).pg;
    block_on(|| async {
        let Ok(client) = pg.connect().await else {
            return -1;
        };
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0)
    })
}

#[test]
fn routes_clients_to_the_leader() {
    let mut c = cluster("route", &["n1", "n2"]).start();
    let mut a = agent(&c, |_| {});
    ready(&mut a);
    let lead = wait_leader_not(&c, "dca", None);
    let out = psql(&a, "SELECT inet_server_port()");
    assert!(out.status.success(), "psql failed: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), c.node(&lead.node).pg.port().to_string());
    let status: serde_json::Value = serde_json::from_str(&a.http("/status").unwrap().1).unwrap();
    assert_eq!(status["leader"], lead.node.as_str(), "{status}");
    // The agent publishes what it routes to in etcd.
    let keys = harp_core::keys::Keys::new(c.name());
    let rec = block_on(|| async {
        let mut client = c.client().await;
        let r = client.get(keys.proxy_status("p1"), None).await.unwrap();
        r.kvs().first().map(|kv| kv.value().to_vec())
    });
    let rec = harp_core::records::ProxyStatus::decode(&rec.expect("proxy status in etcd")).unwrap();
    assert_eq!(rec.leader.as_deref(), Some(lead.node.as_str()));
}

#[test]
fn a_leader_change_cuts_old_sessions_within_a_second() {
    let mut c = cluster("cutover", &["n1", "n2"]).start();
    let mut a = agent(&c, |_| {});
    ready(&mut a);
    let old = wait_leader_not(&c, "dca", None);
    for n in ["n1", "n2"] {
        let init = Command::new(pg_bin_dir().join("pgbench"))
            .args(["-i", "-s", "1", "-q", &c.node(n).pg.dsn()])
            .output()
            .unwrap();
        assert!(init.status.success(), "pgbench -i: {}", text(&init.stderr));
    }
    let mut bench = Command::new(pg_bin_dir().join("pgbench"))
        .args(["-S", "-c", "4", "-j", "2", "-T", "30", &a.dsn("postgres")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(LONG, || backends(&mut c, &old.node, "pgbench") == 4),
        "pgbench never reached the leader through the agent"
    );
    // Fence the leader: its Postgres stays up, so only the agent can end those sessions.
    set_fenced(&c, &old.node, true);
    let new = wait_leader_not(&c, "dca", Some(&old.node));
    let t = Instant::now();
    let gone = eventually(Duration::from_secs(1), || {
        backends(&mut c, &old.node, "pgbench") == 0
    });
    let _ = bench.kill();
    let _ = bench.wait();
    assert!(
        gone,
        "sessions to the old leader still open 1 s after the change"
    );
    println!(
        "old-leader sessions gone {:?} after the new leader was visible",
        t.elapsed()
    );
    let out = psql(&a, "SELECT inet_server_port()");
    assert_eq!(
        text(&out.stdout),
        c.node(&new.node).pg.port().to_string(),
        "new sessions go to the new leader"
    );
}

#[test]
fn clients_are_held_while_there_is_no_leader_then_proceed() {
    let mut c = cluster("hold", &["n1"]).start();
    let mut a = agent(&c, |s| s.pause_timeout_ms = 30_000);
    ready(&mut a);
    c.node("n1").pg.kill9();
    assert!(eventually(LONG, || a
        .http("/health/is-ready")
        .is_some_and(|r| r.0 == 500)));
    let dsn = a.dsn("postgres");
    let mut held = Command::new(pg_bin_dir().join("psql"))
        .args(["-X", "-At", "-d", &dsn, "-c", "SELECT 42"])
        .env("PGCONNECT_TIMEOUT", "60")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        held.try_wait().unwrap().is_none(),
        "the client was not held"
    );
    let status: serde_json::Value = serde_json::from_str(&a.http("/status").unwrap().1).unwrap();
    assert_eq!(status["held"], 1, "{status}");
    c.node("n1").pg.start_again();
    let out = held.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "held client failed: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "42");
}

#[test]
fn pause_timeout_ends_with_a_postgres_error() {
    let mut c = cluster("pause", &["n1"]).start();
    let mut a = agent(&c, |s| s.pause_timeout_ms = 1000);
    ready(&mut a);
    c.node("n1").pg.kill9();
    assert!(eventually(LONG, || a
        .http("/health/is-ready")
        .is_some_and(|r| r.0 == 500)));
    let t = Instant::now();
    let out = psql(&a, "SELECT 1");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("FATAL:  no lead master for location dca within pause_timeout (1s)"),
        "{err}"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "refused before the pause timeout"
    );
}

#[test]
fn max_client_conn_refuses_with_53300_text() {
    let c = cluster("maxconn", &["n1"]).start();
    let mut a = agent(&c, |s| s.max_client_conn = 2);
    ready(&mut a);
    let dsn = a.dsn("postgres");
    let keep: Vec<_> = (0..2)
        .map(|_| {
            Command::new(pg_bin_dir().join("psql"))
                .args(["-X", "-d", &dsn, "-c", "SELECT pg_sleep(20)"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    assert!(eventually(LONG, || {
        let s: serde_json::Value = serde_json::from_str(&a.http("/status").unwrap().1).unwrap();
        s["sessions"] == 2
    }));
    let out = psql(&a, "SELECT 1");
    for mut k in keep {
        let _ = k.kill();
        let _ = k.wait();
    }
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("too many clients: max_client_conn (2) reached on proxy p1"),
        "{err}"
    );
    assert!(
        err.contains("HINT:  retry later, or raise proxy.max_client_conn"),
        "{err}"
    );
}

#[test]
fn without_etcd_the_agent_fails_closed_after_the_ttl() {
    let mut c = cluster("failclosed", &["n1"])
        .lease_secs(3)
        .refresh_ms(1000)
        .start();
    let mut a = agent(&c, |s| {
        s.pause_timeout_ms = 1000;
        s.extra_yaml = "leader_lease_duration: 3\nlease_refresh_interval: 1000".into();
    });
    ready(&mut a);
    let dsn = a.dsn("postgres");
    let mut session = Command::new(pg_bin_dir().join("psql"))
        .args(["-X", "-d", &dsn, "-c", "SELECT pg_sleep(30)"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(LONG, || backends(&mut c, "n1", "psql") == 1));
    c.etcd.stop_member(1);
    c.etcd.stop_member(2);
    let t = Instant::now();
    assert!(
        eventually(LONG, || a.http("/health/is-ready")
            == Some((500, "false".into()))),
        "still ready without etcd\n{}",
        a.log_tail(20)
    );
    let took = t.elapsed();
    assert!(
        took <= Duration::from_secs(4),
        "failed closed only after {took:?}"
    );
    // The session routed under the now-untrusted leader is cut; new clients are refused.
    assert!(
        eventually(Duration::from_secs(2), || session
            .try_wait()
            .unwrap()
            .is_some()),
        "old session kept"
    );
    let out = psql(&a, "SELECT 1");
    assert!(!out.status.success(), "routed without etcd");
    // Quorum back: routing resumes.
    c.etcd.start_member(1);
    c.etcd.start_member(2);
    ready(&mut a);
    let out = psql(&a, "SELECT 1");
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn health_endpoints_answer_exact_codes_and_bodies() {
    let mut c = cluster("health", &["n1"]).start();
    let mut a = agent(&c, |_| {});
    ready(&mut a);
    assert_eq!(a.http("/health/is-live"), Some((200, "true".into())));
    assert_eq!(a.http("/health/is-ready"), Some((200, "true".into())));
    assert_eq!(a.http("/nope").map(|r| r.0), Some(404));
    c.node("n1").pg.kill9();
    assert!(eventually(LONG, || a.http("/health/is-ready")
        == Some((500, "false".into()))));
    assert_eq!(a.http("/health/is-live"), Some((200, "true".into())));
}

#[test]
fn garbage_and_slow_clients_never_block_others() {
    let c = cluster("hostile", &["n1"]).start();
    let mut a = agent(&c, |_| {});
    ready(&mut a);
    let port = a.listen_port();
    // Silent clients: connected, never send a byte.
    let silent: Vec<TcpStream> = (0..30)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // Garbage on the proxy port: relayed to Postgres, which rejects it; the agent lives on.
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0xffu8; 64][..],
        &[0, 0, 0, 8, 0, 0, 0, 0][..],
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(junk).unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    // Garbage and half requests on the health port.
    let http = a.http_port();
    for junk in [
        &b"BLAH\r\n\r\n"[..],
        &b"GET /health/is-live HTTP/1.1\r\n"[..],
        &[0u8; 100][..],
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", http)).unwrap();
        let _ = s.write_all(junk);
    }
    let t = Instant::now();
    let out = psql(&a, "SELECT 7");
    assert_eq!(text(&out.stdout), "7", "{}", text(&out.stderr));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "a normal client waited {:?}",
        t.elapsed()
    );
    assert_eq!(a.http("/health/is-live"), Some((200, "true".into())));
    assert!(a.is_running());
    drop(silent);
}

#[test]
fn max_client_conn_is_lowered_to_fit_the_open_files_limit() {
    let c = TestCluster::builder("nofile").start(); // etcd only: no leader, clients are held
    let mut spec = AgentSpec::new("p1", "dca", c.name(), c.etcd.endpoints());
    let (listen, http) = (harp_tests::free_port(), harp_tests::free_port());
    spec.max_client_conn = 1000;
    let cfg = c.dir().join("p1.yml");
    std::fs::write(&cfg, spec.render(listen, http)).unwrap();
    let log = c.dir().join("p1.log");
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=200:200", "--"])
        .arg(harp_tests::workspace_bin("harp-agent"))
        .arg("-f")
        .arg(&cfg)
        .env("NO_COLOR", "1");
    let agent = harp_tests::ChildGuard::spawn(cmd, "harp-agent p1", &log);
    assert!(
        eventually(LONG, || harp_tests::http::port_open(listen)),
        "agent did not listen"
    );
    let lowered =
        "max_client_conn 1000 needs more than the open-files limit (200) allows; lowered to 68";
    assert!(
        agent.log_tail(50).contains(lowered),
        "{}",
        agent.log_tail(50)
    );
    // The lowered limit is the one enforced: 68 held clients fill it, the next is refused.
    let held: Vec<TcpStream> = (0..68)
        .map(|_| TcpStream::connect(("127.0.0.1", listen)).unwrap())
        .collect();
    assert!(eventually(LONG, || {
        harp_tests::http_get(http, "/status", Duration::from_secs(1))
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
            .is_some_and(|s| s["held"] == 68)
    }));
    let out = Command::new(pg_bin_dir().join("psql"))
        .args([
            "-X",
            "-d",
            &format!("host=127.0.0.1 port={listen} user=postgres"),
            "-c",
            "SELECT 1",
        ])
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("max_client_conn (68) reached"),
        "{}",
        text(&out.stderr)
    );
    drop(held);
}

/// etcd (default settings) closes a connection that pings too often ("too_many_pings"), which
/// breaks every watch on it; neither the agent's nor the managers' watches may be cut so.
#[test]
fn etcd_keeps_the_watches_open() {
    let c = cluster("pings", &["n1"]).start();
    let mut a = agent(&c, |_| {});
    ready(&mut a);
    // etcd strikes a connection after 3 pings closer than 5 s apart.
    std::thread::sleep(Duration::from_secs(15));
    let broken = "etcd watch interrupted";
    let agent_log = std::fs::read_to_string(a.log_path()).unwrap();
    assert!(!agent_log.contains(broken), "{}", a.log_tail(20));
    let mgr_log = std::fs::read_to_string(c.nodes[0].mgr.log_path()).unwrap();
    assert!(!mgr_log.contains(broken), "{}", c.manager_logs(20));
}
