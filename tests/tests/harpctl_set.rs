//! `harpctl set node`: directives in etcd reach the managers — live ones at once, the others
//! after a restart (shown as pending until then) — and bad input writes nothing.

mod common;

use std::time::Duration;

use common::*;
use harp_tests::TestCluster;
use harp_tests::harpctl::harpctl;

#[test]
fn set_node_priority_applies_live_and_lease_after_a_restart() {
    let mut c = TestCluster::start("setnode", &[("n1", "dca", 100), ("n2", "dca", 100)]);
    let first = wait_leader_not(&c, "dca", None);
    // priority -1 never leads: the leader hands over at once.
    let (code, out, err) = harpctl(&c, &["set", "node", &first.node, "priority=-1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        format!("node {}: priority=-1 (applies now)", first.node)
    );
    let next = wait_leader_not(&c, "dca", Some(&first.node));
    assert_ne!(next.node, first.node);
    let name = first.node.clone();
    assert!(eventually(LONG, || c
        .node(&name)
        .mgr
        .status()
        .is_some_and(|s| s["ineligible"] == "priority -1 never leads")));
    // A restart-only directive is pending until the manager restarts, then applied.
    let (code, out, err) = harpctl(&c, &["set", "node", &next.node, "leader_lease_duration=9s"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("applies after its manager restarts"), "{out}");
    let pending = |c: &TestCluster| {
        let (_, out, _) = harpctl(c, &["get", "node", &next.node, "-o", "json"]);
        out
    };
    assert!(
        eventually(LONG, || pending(&c).contains("leader_lease_duration")),
        "{}",
        pending(&c)
    );
    c.node(&next.node).mgr.restart();
    // The restarted manager's status (not merely the old one gone) shows nothing pending.
    let restarted = |c: &TestCluster| {
        let out = pending(c);
        serde_json::from_str::<serde_json::Value>(&out)
            .is_ok_and(|v| v["name"] == next.node.as_str())
            && !out.contains("leader_lease_duration")
    };
    assert!(eventually(LONG, || restarted(&c)), "{}", pending(&c));
    let applied = |c: &mut TestCluster| {
        let log = c.node(&next.node).mgr.log_tail(100_000);
        log.contains("leader_lease_duration_ms\":9000")
    };
    assert!(
        eventually(LONG, || applied(&mut c)),
        "{}",
        c.node(&next.node).mgr.log_tail(30)
    );
}

#[test]
fn set_rejects_unknown_keys_and_bad_values_and_writes_nothing() {
    let c = TestCluster::start("setbad", &[("n1", "dca", 100)]);
    wait_leader_not(&c, "dca", None);
    let (code, _, err) = harpctl(&c, &["set", "node", "n1", "priority=5", "priorty=7"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unknown node directive `priorty`; valid keys: priority, maximum_lag"),
        "{err}"
    );
    let (code, _, err) = harpctl(&c, &["set", "node", "n1", "priority=high"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("priority=high: expected an integer >= -1"),
        "{err}"
    );
    let (code, _, err) = harpctl(&c, &["set", "node", "nope", "priority=5"]);
    assert_eq!(code, 4, "{err}");
    // Nothing was written: n1 kept its priority.
    std::thread::sleep(Duration::from_millis(300));
    let (_, out, _) = harpctl(&c, &["get", "node", "n1", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["priority"], 100, "{v}");
}

#[test]
fn apply_writes_a_bootstrap_file_idempotently() {
    let c = TestCluster::start("apply", &[("n1", "dca", 100), ("n2", "dca", 100)]);
    let first = wait_leader_not(&c, "dca", None);
    let file = c.dir().join("bootstrap.yml");
    let boot = format!(
        "cluster:\n  name: apply\nlocations:\n  - location: dca\nnodes:\n  \
         - node_name: {}\n    location: dca\n    priority: -1\n  \
         - node_name: n9\n    location: dca\n    priority: 50\n    maximum_lag: 1048576\n",
        first.node
    );
    std::fs::write(&file, &boot).unwrap();
    let path = file.to_string_lossy().into_owned();
    let (code, out, err) = harpctl(&c, &["apply", &path]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("changed   node {}", first.node)),
        "{out}"
    );
    // The applied priority -1 makes the leader hand over.
    let next = wait_leader_not(&c, "dca", Some(&first.node));
    assert_ne!(next.node, first.node);
    // Applying the same file again changes nothing.
    let (code, out, _) = harpctl(&c, &["apply", &path]);
    assert_eq!(code, 0);
    assert!(!out.contains("changed   "), "{out}");
    assert!(
        out.contains(&format!("unchanged node {}", first.node)),
        "{out}"
    );
    // Bad files: nothing written, a clear error.
    std::fs::write(&file, boot.replace("priority: 50", "priorty: 50")).unwrap();
    let (code, _, err) = harpctl(&c, &["apply", &path]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown node directive `priorty`"), "{err}");
    std::fs::write(&file, boot.replace("name: apply", "name: other")).unwrap();
    let (code, _, err) = harpctl(&c, &["apply", &path]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cluster.name is other but harpctl targets cluster apply"),
        "{err}"
    );
}

#[test]
fn set_proxy_changes_an_agents_limits_live() {
    use harp_tests::agent::{AgentProc, AgentSpec};
    use harp_tests::postgres::pg_bin_dir;
    use std::process::{Command, Stdio};
    let c = TestCluster::start("setproxy", &[("n1", "dca", 100)]);
    let mut a = AgentProc::start(
        c.dir(),
        AgentSpec::new("p1", "dca", c.name(), c.etcd.endpoints()),
    );
    assert!(a.wait_ready(LONG), "{}", a.log_tail(20));
    let status = |a: &AgentProc| -> serde_json::Value {
        serde_json::from_str(&a.http("/status").unwrap().1).unwrap()
    };
    let (code, out, err) = harpctl(&c, &["set", "proxy", "global", "pause_timeout=2s"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "proxy global: pause_timeout=2s (applies now)");
    let (code, _, err) = harpctl(&c, &["set", "proxy", "p1", "max_client_conn=1"]);
    assert_eq!(code, 0, "{err}");
    assert!(eventually(LONG, || {
        let s = status(&a);
        s["max_client_conn"] == 1 && s["pause_timeout_ms"] == 2000
    }));
    let dsn = a.dsn("postgres");
    let mut held = Command::new(pg_bin_dir().join("psql"))
        .args(["-X", "-d", &dsn, "-c", "SELECT pg_sleep(20)"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(LONG, || status(&a)["sessions"] == 1));
    let out = Command::new(pg_bin_dir().join("psql"))
        .args(["-X", "-d", &dsn, "-c", "SELECT 1"])
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    let _ = held.kill();
    let _ = held.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("max_client_conn (1) reached on proxy p1"),
        "{err}"
    );
    let (code, _, err) = harpctl(&c, &["set", "proxy", "p1", "listen_port=1"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown proxy directive `listen_port`"),
        "{err}"
    );
    let (code, _, _) = harpctl(&c, &["set", "proxy", "nope", "timeout=1s"]);
    assert_eq!(code, 4);
}

#[test]
fn set_location_and_cluster_layer_under_a_nodes_own_directives() {
    let c = TestCluster::start(
        "setscope",
        &[("n1", "dca", 100), ("n2", "dca", 100), ("n3", "dcb", 100)],
    );
    let first = wait_leader_not(&c, "dca", None);
    let dcb = wait_leader_not(&c, "dcb", None);
    // A location's priority -1: no node of dca may lead; dcb keeps its leader.
    let (code, out, err) = harpctl(&c, &["set", "location", "dca", "priority=-1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "location dca: priority=-1 (applies now)");
    assert!(
        eventually(LONG, || leader(&c, "dca").is_none()),
        "dca still has a leader"
    );
    // A node's own directive wins over its location's.
    let (code, _, err) = harpctl(&c, &["set", "node", &first.node, "priority=100"]);
    assert_eq!(code, 0, "{err}");
    let back = wait_leader_not(&c, "dca", None);
    assert_eq!(back.node, first.node);
    // The cluster's layer is under both; `get cluster` shows each scope's directives.
    let (code, _, err) = harpctl(&c, &["set", "cluster", "maximum_lag=1048576"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = harpctl(&c, &["get", "cluster", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["directives"]["maximum_lag"], "1048576", "{v}");
    let dca = v["locations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["location"] == "dca")
        .unwrap();
    assert_eq!(dca["directives"]["priority"], "-1", "{v}");
    let (_, table, _) = harpctl(&c, &["get", "cluster"]);
    assert!(table.contains("location dca"), "{table}");
    assert_eq!(leader(&c, "dcb").map(|l| l.0.node), Some(dcb.node));
    // Bad input: unknown location, bad key; nothing written.
    let (code, _, err) = harpctl(&c, &["set", "location", "nowhere", "priority=1"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("dca"), "{err}");
    let (code, _, err) = harpctl(&c, &["set", "cluster", "lag=1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("valid keys: priority"), "{err}");
}

#[test]
fn apply_writes_cluster_location_and_proxy_directives() {
    use harp_tests::agent::{AgentProc, AgentSpec};
    let c = TestCluster::start("applyall", &[("n1", "dca", 100), ("n2", "dca", 100)]);
    wait_leader_not(&c, "dca", None);
    let mut a = AgentProc::start(
        c.dir(),
        AgentSpec::new("p1", "dca", c.name(), c.etcd.endpoints()),
    );
    assert!(a.wait_ready(LONG), "{}", a.log_tail(20));
    let file = c.dir().join("bootstrap.yml");
    let boot = "cluster:\n  name: applyall\n  maximum_lag: 2097152\n\
                locations:\n  - location: dca\n    priority: 90\n\
                proxies:\n  pause_timeout: 3s\n  max_client_conn: 40\n  instances:\n    \
                - name: p1\n      max_client_conn: 7\n";
    std::fs::write(&file, boot).unwrap();
    let path = file.to_string_lossy().into_owned();
    let (code, out, err) = harpctl(&c, &["apply", &path]);
    assert_eq!(code, 0, "{err}");
    for what in [
        "changed   cluster",
        "changed   location dca",
        "changed   proxies (global)",
        "changed   proxy p1",
    ] {
        assert!(out.contains(what), "{what}: {out}");
    }
    // The agent merges its own over global over its file, live.
    assert!(
        eventually(LONG, || {
            let s: serde_json::Value = serde_json::from_str(&a.http("/status").unwrap().1).unwrap();
            s["max_client_conn"] == 7 && s["pause_timeout_ms"] == 3000
        }),
        "{}",
        a.http("/status").unwrap().1
    );
    // Managers apply the location's priority live.
    assert!(eventually(LONG, || {
        let (_, out, _) = harpctl(&c, &["get", "node", "n1", "-o", "json"]);
        serde_json::from_str::<serde_json::Value>(&out).is_ok_and(|v| v["priority"] == 90)
    }));
    let (code, out, _) = harpctl(&c, &["apply", &path]);
    assert_eq!(code, 0);
    assert!(!out.contains("changed   "), "{out}");
    assert!(out.contains("unchanged proxy p1"), "{out}");
    // A bad proxy key is refused before anything is written.
    std::fs::write(&file, boot.replace("max_client_conn: 7", "max_clients: 7")).unwrap();
    let (code, _, err) = harpctl(&c, &["apply", &path]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unknown proxy directive `max_clients`"),
        "{err}"
    );
}
