//! harp-agent's kernel path with the real binary (root): clients in a child cgroup this test
//! creates are steered by connect4 straight to the leader; the userspace proxy splices its
//! sessions with sockmap. Every test removes its cgroup and the agent's pins, even on failure.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use harp_tests::agent::{AgentProc, AgentSpec, PinGuard};
use harp_tests::cgroup::ChildCgroup;
use harp_tests::postgres::pg_bin_dir;
use harp_tests::{TestCluster, require_root};

struct Setup {
    // Drop order: agent, pins, cgroup, cluster.
    agent: AgentProc,
    _pins: PinGuard,
    cgroup: ChildCgroup,
    c: TestCluster,
}

fn setup(name: &str, nodes: &[&str]) -> Setup {
    // A backend busy in a query notices its client is gone only at its next I/O unless
    // Postgres checks the socket: what operators should set with HARP (see README).
    let mut b = TestCluster::builder(name).pg_setting("client_connection_check_interval", "100ms");
    for n in nodes {
        b = b.node(n, "dca", 100);
    }
    let c = b.start();
    let cgroup = ChildCgroup::new();
    let mut spec = AgentSpec::new("k1", "dca", c.name(), c.etcd.endpoints()).ebpf(cgroup.path());
    spec.extra_yaml = "splice: true".into();
    let pins = PinGuard::new(name, "k1");
    let mut agent = AgentProc::start(c.dir(), spec);
    assert!(
        agent.wait_ready(LONG),
        "agent not ready\n{}",
        agent.log_tail(30)
    );
    Setup {
        agent,
        _pins: pins,
        cgroup,
        c,
    }
}

fn status(a: &AgentProc) -> serde_json::Value {
    serde_json::from_str(&a.http("/status").expect("agent status").1).unwrap()
}

/// psql run inside (`Some(cgroup)`) or outside the test's cgroup.
fn psql(cg: Option<&ChildCgroup>, a: &AgentProc, sql: &str) -> Output {
    let psql = pg_bin_dir().join("psql");
    let mut cmd = match cg {
        Some(cg) => cg.command(&psql),
        None => Command::new(&psql),
    };
    cmd.args(["-X", "-At", "-d", &a.dsn("postgres"), "-c", sql])
        .env("LC_ALL", "C")
        .output()
        .expect("psql")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

#[test]
fn steered_clients_reach_the_leader_directly_and_outsiders_use_the_proxy() {
    if !require_root("agent_kernel::steered") {
        return;
    }
    let mut s = setup("ksteer", &["n1", "n2"]);
    assert_eq!(status(&s.agent)["mode"], "ebpf");
    let lead = wait_leader_not(&s.c, "dca", None);
    let leader_port = s.c.node(&lead.node).pg.port();
    // Inside the cgroup: Postgres sees the client's own socket (its port matches the client's),
    // the proxy relays nothing, and getpeername still names the service address.
    let sql = "SELECT inet_server_port() || ' ' || inet_client_port()";
    let script = format!(
        "import socket,subprocess\n\
         s=socket.create_connection(('127.0.0.1',{port}))\n\
         print(s.getpeername()[1])",
        port = s.agent.listen_port()
    );
    let peer = s
        .cgroup
        .command("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(
        out(&peer),
        s.agent.listen_port().to_string(),
        "getpeername shows the service port"
    );
    let inside = psql(Some(&s.cgroup), &s.agent, sql);
    assert!(
        inside.status.success(),
        "{}",
        String::from_utf8_lossy(&inside.stderr)
    );
    assert!(
        out(&inside).starts_with(&format!("{leader_port} ")),
        "{}",
        out(&inside)
    );
    let st = status(&s.agent);
    assert!(
        st["kernel"]["counters"]["steered"].as_u64().unwrap() >= 2,
        "{st}"
    );
    assert_eq!(
        st["sessions"], 0,
        "the userspace proxy saw a steered client: {st}"
    );
    // Outside the cgroup: not steered; the userspace proxy serves it (and splices it).
    let before = st["kernel"]["counters"]["steered"].as_u64().unwrap();
    let outside = psql(None, &s.agent, "SELECT inet_server_port()");
    assert_eq!(out(&outside), leader_port.to_string());
    let st = status(&s.agent);
    assert_eq!(
        st["kernel"]["counters"]["steered"].as_u64().unwrap(),
        before,
        "{st}"
    );
}

#[test]
fn a_failover_closes_steered_sessions_and_new_connects_go_to_the_new_leader() {
    if !require_root("agent_kernel::failover") {
        return;
    }
    let mut s = setup("kfail", &["n1", "n2"]);
    let old = wait_leader_not(&s.c, "dca", None);
    let mut session = s
        .cgroup
        .command(pg_bin_dir().join("psql"))
        .args([
            "-X",
            "-d",
            &s.agent.dsn("postgres"),
            "-c",
            "SELECT pg_sleep(60)",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let old_node = old.node.clone();
    assert!(
        eventually(LONG, || backends(&mut s.c, &old_node) == 1),
        "steered session never arrived"
    );
    set_fenced(&s.c, &old.node, true);
    let new = wait_leader_not(&s.c, "dca", Some(&old.node));
    let closed = eventually(Duration::from_secs(1), || {
        session.try_wait().unwrap().is_some()
    });
    let _ = session.kill();
    assert!(
        closed,
        "the steered session to the old leader was still open 1 s after the change"
    );
    assert!(eventually(Duration::from_secs(1), || backends(
        &mut s.c, &old_node
    ) == 0));
    let again = psql(Some(&s.cgroup), &s.agent, "SELECT inet_server_port()");
    assert_eq!(out(&again), s.c.node(&new.node).pg.port().to_string());
}

#[test]
fn without_a_leader_steered_connects_are_held_by_the_agent() {
    if !require_root("agent_kernel::held") {
        return;
    }
    let mut s = setup("khold", &["n1"]);
    s.c.node("n1").pg.kill9();
    assert!(eventually(LONG, || status(&s.agent)["leader"].is_null()));
    assert!(eventually(LONG, || status(&s.agent)["kernel"]["leaders"]
        .as_array()
        .is_some_and(Vec::is_empty)));
    let held = s
        .cgroup
        .command(pg_bin_dir().join("psql"))
        .args([
            "-X",
            "-At",
            "-d",
            &s.agent.dsn("postgres"),
            "-c",
            "SELECT 5",
        ])
        .env("PGCONNECT_TIMEOUT", "60")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        eventually(LONG, || status(&s.agent)["held"] == 1),
        "not held by the agent's listener"
    );
    s.c.node("n1").pg.start_again();
    let o = held.wait_with_output().unwrap();
    assert_eq!(out(&o), "5", "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn the_sockmap_path_moves_100_mb_intact() {
    if !require_root("agent_kernel::sockmap") {
        return;
    }
    let mut s = setup("ksplice", &["n1"]);
    let copy = "COPY (SELECT repeat(md5(i::text), 32) FROM generate_series(1, 100000) i) TO STDOUT";
    let digest = |dsn: &str| {
        let sh = format!(
            "{} -X -At -d '{dsn}' -c \"{copy}\" | tee >(wc -c >&2) | md5sum",
            pg_bin_dir().join("psql").display()
        );
        let o = Command::new("bash").args(["-c", &sh]).output().unwrap();
        (
            out(&o),
            String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        )
    };
    let direct = digest(&s.c.node("n1").pg.dsn());
    let before = status(&s.agent)["kernel"]["counters"]["spliced"]
        .as_u64()
        .unwrap();
    let proxied = digest(&s.agent.dsn("postgres"));
    assert_eq!(direct.1, "102500000", "the direct COPY size");
    assert_eq!(
        proxied, direct,
        "the spliced COPY differs from the direct one"
    );
    let spliced = status(&s.agent)["kernel"]["counters"]["spliced"]
        .as_u64()
        .unwrap()
        - before;
    assert!(
        spliced > 100,
        "bytes were not spliced in the kernel ({spliced} redirects)"
    );
}

#[test]
fn an_agent_restart_keeps_routing_and_uninstall_removes_everything() {
    if !require_root("agent_kernel::restart") {
        return;
    }
    let mut s = setup("krestart", &["n1"]);
    let port = s.c.node("n1").pg.port().to_string();
    let mut session = s
        .cgroup
        .command(pg_bin_dir().join("psql"))
        .args([
            "-X",
            "-d",
            &s.agent.dsn("postgres"),
            "-c",
            "SELECT pg_sleep(60)",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(LONG, || backends(&mut s.c, "n1") == 1));
    s.agent.kill9();
    // No agent at all: the pinned programs and map keep steering.
    assert_eq!(
        out(&psql(
            Some(&s.cgroup),
            &s.agent,
            "SELECT inet_server_port()"
        )),
        port
    );
    s.agent.restart();
    assert!(s.agent.wait_ready(LONG), "{}", s.agent.log_tail(30));
    assert_eq!(
        out(&psql(
            Some(&s.cgroup),
            &s.agent,
            "SELECT inet_server_port()"
        )),
        port
    );
    assert!(
        session.try_wait().unwrap().is_none(),
        "the restart cut a steered session"
    );
    let _ = session.kill();
    // --uninstall: no pins, nothing steered any more.
    s.agent.kill9();
    let un = Command::new(harp_tests::workspace_bin("harp-agent"))
        .arg("-f")
        .arg(s.agent.config_path())
        .arg("--uninstall")
        .output()
        .unwrap();
    assert!(
        un.status.success(),
        "{}",
        String::from_utf8_lossy(&un.stderr)
    );
    assert!(
        !PathBuf::from("/sys/fs/bpf/harp/krestart-k1").exists(),
        "pins left behind"
    );
    let after = psql(Some(&s.cgroup), &s.agent, "SELECT 1");
    assert!(!after.status.success(), "still steered after --uninstall");
}

fn backends(c: &mut TestCluster, node: &str) -> i64 {
    let pg = &c.node(node).pg;
    harp_tests::rt::block_on(|| async {
        let Ok(client) = pg.connect().await else {
            return -1;
        };
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'psql'",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0)
    })
}
