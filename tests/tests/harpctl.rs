//! harpctl against real etcd, Postgres, managers and an agent: every `get`, fence/unfence,
//! manage/unmanage, promote (refusals, the request it writes, a switchover), and its exit
//! statuses for bad input and an unreachable etcd.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use harp_core::keys::Keys;
use harp_core::records::{ManagedRecord, PromoteIntent};
use harp_tests::TestCluster;
use harp_tests::agent::{AgentProc, AgentSpec};
use harp_tests::harpctl::{
    assert_fields, etcd_value, finish, harpctl_fails, harpctl_ok, harpctl_raw, json_of,
    parse_table, spawn_harpctl, table_row, try_json_of, yaml_of,
};
use serde_json::{Value, json};

// The helpers below take the command line as one string, split on whitespace.
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// Exit 0 expected; stdout.
fn ok(c: &TestCluster, line: &str) -> String {
    harpctl_ok(c, &words(line))
}

/// Exit `code` expected; stderr.
fn fails(c: &TestCluster, line: &str, code: i32) -> String {
    harpctl_fails(c, &words(line), code)
}

fn get_json(c: &TestCluster, line: &str) -> Value {
    json_of(c, &words(line))
}

/// Without `-c`/`--dcs`: `(code, stdout, stderr)`.
fn raw(line: &str) -> (i32, String, String) {
    harpctl_raw(&words(line))
}

/// Waits until every node's manager has published `postgres: primary`.
fn wait_statuses(c: &TestCluster, n: usize) {
    let published = eventually(LONG, || {
        try_json_of(c, &["get", "nodes"]).is_some_and(|v| {
            let nodes = v.as_array().expect("a list");
            nodes.len() == n && nodes.iter().all(|s| s["postgres"] == "primary")
        })
    });
    let logs = c.manager_logs(20);
    assert!(published, "node statuses never published\n{logs}");
}

fn agent(c: &TestCluster) -> AgentProc {
    let spec = AgentSpec::new("p1", "dca", c.name(), c.etcd.endpoints());
    let mut a = AgentProc::start(c.dir(), spec);
    assert!(a.wait_ready(LONG), "agent never ready\n{}", a.log_tail(30));
    a
}

#[test]
fn usage_errors_exit_2_and_help_lists_the_exit_statuses() {
    let offline = "-c x --dcs 127.0.0.1:1";
    let (code, _, err) = raw(&format!("{offline} -o xml get nodes"));
    assert!(code == 2 && err.contains("xml"), "{code}: {err}");
    // A name that is not one key segment is refused before etcd is asked.
    let (code, _, err) = raw(&format!("{offline} get node a/b"));
    assert!(code == 2 && err.contains("bad node name"), "{code}: {err}");
    let (code, _, err) = raw("-f /nonexistent/harp.yml get nodes");
    assert!(
        code == 2 && err.contains("/nonexistent/harp.yml"),
        "{code}: {err}"
    );
    let (code, _, err) = raw("promote n1 --timeout soon");
    assert_eq!(code, 2, "{err}");
    if !Path::new("/etc/harp/config.yml").exists() {
        let (code, _, err) = raw("--dcs 127.0.0.1:1 get nodes");
        assert!(code == 2 && err.contains("-c/--cluster"), "{code}: {err}");
        let (code, _, err) = raw("-c x get nodes");
        assert!(code == 2 && err.contains("--dcs"), "{code}: {err}");
    }
    let (code, out, _) = raw("--help");
    assert!(
        code == 0 && out.contains("Exit status") && out.contains("4  not found"),
        "{out}"
    );
    let (code, out, _) = raw("version");
    assert_eq!((code, out.trim()), (0, "harpctl 0.1.0"));
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = raw(&format!("completion {shell}"));
        assert!(code == 0 && out.contains("promote"), "{shell}: {err}{out}");
    }
}

#[test]
fn unreachable_etcd_exits_3_naming_the_endpoint() {
    let t = Instant::now();
    let (code, out, err) = raw("-c x --dcs 127.0.0.1:1 get nodes");
    assert_eq!(code, 3, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("127.0.0.1:1") && out.is_empty(), "{err}");
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // A member that accepts connections but never answers costs one request timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let ep = format!("127.0.0.1:{}", silent.local_addr().unwrap().port());
    let t = Instant::now();
    let (code, _, err) = raw(&format!("-c x --dcs {ep} --request-timeout 1s fence n1"));
    assert!(code == 3 && err.contains(&ep), "{code}: {err}");
    let took = t.elapsed();
    assert!(took < Duration::from_secs(4), "took {took:?}");
    // The endpoints of a config file.
    let dir = harp_tests::WorkDir::new();
    let file = dir.join("harp.yml");
    let yml = "cluster:\n  name: x\ndcs:\n  driver: etcd\n  endpoints: [\"127.0.0.1:1\"]\n\
               location: dca\n";
    std::fs::write(&file, yml).unwrap();
    let (code, _, err) = raw(&format!("-f {} get cluster", file.display()));
    assert!(code == 3 && err.contains("127.0.0.1:1"), "{code}: {err}");
}

#[test]
fn get_shows_the_cluster_its_leaders_nodes_and_proxies() {
    let nodes = [("n1", "dca", 100), ("n2", "dca", 50), ("b1", "dcb", 100)];
    let c = TestCluster::start("ctl-get", &nodes);
    let _p1 = agent(&c);
    let lead = wait_leader_not(&c, "dca", None);
    wait_leader_not(&c, "dcb", None);
    let (_, token) = leader(&c, "dca").unwrap();
    wait_statuses(&c, 3);
    let routed = eventually(LONG, || {
        try_json_of(&c, &["get", "proxy", "p1"]).is_some_and(|p| p["token"] == token)
    });
    assert!(routed, "the agent never published its route");
    let follower = if lead.node == "n1" { "n2" } else { "n1" };
    let (ln, t) = (lead.node.as_str(), token.to_string());

    // get cluster: the cluster line, then one row per location.
    let out = ok(&c, "get cluster");
    let (head, locs) = out.split_once("\n\n").expect("two tables");
    let (h, rows) = parse_table(head);
    assert_eq!(h, words("CLUSTER MANAGED LOCATIONS"));
    assert_eq!(rows, [words("ctl-get true 2")]);
    let (h, rows) = parse_table(locs);
    assert_eq!(h, words("LOCATION LEADER TOKEN NODES PROXIES"));
    assert_eq!(table_row(&rows, "dca"), ["dca", ln, &t, "2", "1"]);
    assert_eq!(table_row(&rows, "dcb")[..2], ["dcb", "b1"]);
    let v = get_json(&c, "get cluster");
    assert_fields(&v, json!({"name": "ctl-get", "managed": true}));
    let dca = json!({"location": "dca", "leader": ln, "token": token, "nodes": 2, "proxies": 1});
    assert_fields(&v["locations"][0], dca);
    assert_eq!(yaml_of(&c, &words("get cluster")), v);

    // get leader: every location, then one.
    let (h, rows) = parse_table(&ok(&c, "get leader"));
    assert_eq!(h, words("LOCATION NODE ADDRESS TOKEN"));
    let addr = format!("{}:{}", lead.address, lead.port);
    assert_eq!(table_row(&rows, "dca"), ["dca", ln, &addr, &t]);
    assert_eq!(table_row(&rows, "dcb")[1], "b1");
    let v = get_json(&c, "get leader dca");
    assert_fields(&v, json!({"node": ln, "token": token, "port": lead.port}));
    assert_eq!(yaml_of(&c, &words("get leader dca")), v);
    let err = fails(&c, "get leader dcx", 4);
    assert!(err.contains("location dcx not found"), "{err}");

    // get locations / location.
    let (h, rows) = parse_table(&ok(&c, "get locations"));
    assert_eq!(h, words("LOCATION LEADER TOKEN NODES PROXIES"));
    assert_eq!(rows.len(), 2);
    assert_eq!(table_row(&rows, "dcb")[3..], ["1", "0"]);
    let v = get_json(&c, "get location dcb");
    assert_fields(&v, json!({"leader": "b1", "nodes": 1, "proxies": 0}));
    assert_eq!(yaml_of(&c, &words("get location dcb")), v);

    // get nodes / node.
    let (h, rows) = parse_table(&ok(&c, "get nodes"));
    let want = words("NAME LOCATION ROLE POSTGRES PRIORITY FENCED MANAGED WAL_LSN AGE");
    assert_eq!(h, want);
    assert_eq!(rows.len(), 3);
    let r = table_row(&rows, ln);
    // Whoever won the start-up race leads (n2 may not have seen n1's status yet).
    let prio = if ln == "n1" { "100" } else { "50" };
    assert_eq!(
        r[1..7],
        words(&format!("dca leader primary {prio} false true"))
    );
    assert!(r[7].contains('/'), "WAL_LSN as Postgres prints it: {r:?}");
    assert_eq!(table_row(&rows, follower)[2], "follower");
    assert_eq!(table_row(&rows, "b1")[2], "leader");
    let all = get_json(&c, "get nodes");
    let n = all.as_array().unwrap().iter().find(|n| n["name"] == ln);
    let n = n.expect("the leader is listed");
    let want = json!({"role": "leader", "location": "dca", "fenced": false, "managed": true});
    assert_fields(n, want);
    assert!(n["wal_lsn"].is_u64() && n["age_ms"].is_u64(), "{n}");
    let mut as_json = get_json(&c, &format!("get node {follower}"));
    let mut as_yaml = yaml_of(&c, &["get", "node", follower]);
    for v in [&mut as_json, &mut as_yaml] {
        v.as_object_mut().unwrap().remove("age_ms"); // time passes between the two runs
    }
    assert_eq!(as_yaml, as_json);
    assert_eq!(as_json["priority"], if follower == "n1" { 100 } else { 50 });
    let err = fails(&c, "get node nope", 4);
    assert!(
        err.contains("node nope not found") && err.contains("n1"),
        "{err}"
    );

    // get proxies / proxy.
    let (h, rows) = parse_table(&ok(&c, "get proxies"));
    assert_eq!(
        h,
        words("NAME LOCATION MODE LEADER TOKEN SESSIONS HELD DRAINING MANAGED AGE")
    );
    let want = ["p1", "dca", "userspace", ln, &t, "0", "0", "<none>", "true"];
    assert_eq!(table_row(&rows, "p1")[..9], want);
    let v = get_json(&c, "get proxy p1");
    let want =
        json!({"mode": "userspace", "leader": ln, "sessions": 0, "held": 0, "managed": true});
    assert_fields(&v, want);
    let list = yaml_of(&c, &words("get proxies"));
    assert_eq!(list[0]["name"], "p1", "{list}");
    let err = fails(&c, "get proxy nope", 4);
    assert!(err.contains("proxy nope not found"), "{err}");
}

#[test]
fn fence_moves_the_lead_away_and_unfence_lifts_it() {
    let c = TestCluster::start("ctl-fence", &[("n1", "dca", 100), ("n2", "dca", 100)]);
    let first = wait_leader_not(&c, "dca", None).node;
    let other = if first == "n1" { "n2" } else { "n1" };
    let keys = Keys::new(c.name());
    wait_statuses(&c, 2);

    let out = ok(&c, &format!("fence {first}"));
    assert_eq!(out.trim(), format!("node {first} fenced"));
    let rec = etcd_value(&c, &keys.fenced(&first)).expect("fenced key");
    let rec: Value = serde_json::from_slice(&rec).expect("the fence record is JSON");
    let version = harp_core::records::RECORD_VERSION;
    assert!(
        rec["version"] == version && rec["fenced_ms"].is_u64(),
        "{rec}"
    );
    // The fenced leader releases; harpctl sees the other node lead.
    let moved = eventually(LONG, || {
        try_json_of(&c, &["get", "leader", "dca"]).is_some_and(|l| l["node"] == other)
    });
    assert!(
        moved,
        "the lead never left the fenced node\n{}",
        c.manager_logs(20)
    );
    let (_, rows) = parse_table(&ok(&c, "get nodes"));
    let r = table_row(&rows, &first);
    assert_eq!(
        (r[2].as_str(), r[5].as_str()),
        ("follower", "true"),
        "ROLE, FENCED: {r:?}"
    );
    assert_eq!(table_row(&rows, other)[2], "leader");
    let again = ok(&c, &format!("fence {first}"));
    assert_eq!(again.trim(), format!("node {first} was already fenced"));

    // Without a node: the config file's manager.name.
    let mgr = &c.nodes.iter().find(|n| n.name == first).unwrap().mgr;
    let v = get_json(&c, &format!("-f {} unfence", mgr.config_path().display()));
    assert_fields(
        &v,
        json!({"name": first, "state": "unfenced", "changed": true}),
    );
    assert!(etcd_value(&c, &keys.fenced(&first)).is_none());
    let again = ok(&c, &format!("unfence {first}"));
    assert_eq!(again.trim(), format!("node {first} was already unfenced"));

    let err = fails(&c, "fence nope", 4);
    assert!(err.contains("node nope not found"), "{err}");
    let written = etcd_value(&c, &keys.fenced("nope"));
    assert!(written.is_none(), "nothing written for a typo");
}

#[test]
fn manage_and_unmanage_write_the_switches() {
    let c = TestCluster::start("ctl-manage", &[("n1", "dca", 100)]);
    let _p1 = agent(&c);
    wait_leader_not(&c, "dca", None);
    wait_statuses(&c, 1);
    let published = eventually(LONG, || try_json_of(&c, &["get", "proxy", "p1"]).is_some());
    assert!(published, "the agent never published its status");
    let keys = Keys::new(c.name());
    let managed = |key: &str| etcd_value(&c, key).map(|v| ManagedRecord::decode(&v).unwrap());
    let managed = |key: &str| managed(key).map(|r| r.managed);

    assert_eq!(
        ok(&c, "unmanage cluster").trim(),
        "cluster ctl-manage unmanaged"
    );
    assert_eq!(managed(&keys.managed()), Some(false));
    let (_, rows) = parse_table(&ok(&c, "get cluster"));
    assert_eq!(rows[0], words("ctl-manage false 1"));
    assert_eq!(get_json(&c, "get node n1")["managed"], false);
    assert_eq!(
        ok(&c, "manage cluster").trim(),
        "cluster ctl-manage managed"
    );
    assert_eq!(managed(&keys.managed()), Some(true));
    assert_eq!(get_json(&c, "get cluster")["managed"], true);

    assert_eq!(ok(&c, "unmanage node n1").trim(), "node n1 unmanaged");
    assert_eq!(managed(&keys.node_unmanaged("n1")), Some(false));
    let (_, rows) = parse_table(&ok(&c, "get nodes"));
    assert_eq!(table_row(&rows, "n1")[6], "false", "MANAGED: {rows:?}");
    let again = ok(&c, "unmanage node n1");
    assert_eq!(again.trim(), "node n1 was already unmanaged");
    assert_eq!(ok(&c, "manage node n1").trim(), "node n1 managed");
    assert_eq!(managed(&keys.node_unmanaged("n1")), None);

    assert_eq!(ok(&c, "unmanage proxy p1").trim(), "proxy p1 unmanaged");
    assert_eq!(managed(&keys.proxy_unmanaged("p1")), Some(false));
    assert_eq!(get_json(&c, "get proxy p1")["managed"], false);
    assert_eq!(ok(&c, "manage proxy p1").trim(), "proxy p1 managed");
    assert_eq!(managed(&keys.proxy_unmanaged("p1")), None);

    let typos = [
        ("node", keys.node_unmanaged("nope")),
        ("proxy", keys.proxy_unmanaged("nope")),
    ];
    for (kind, key) in typos {
        let err = fails(&c, &format!("unmanage {kind} nope"), 4);
        assert!(err.contains(&format!("{kind} nope not found")), "{err}");
        assert!(etcd_value(&c, &key).is_none(), "nothing written for a typo");
    }
}

#[test]
fn promote_refuses_ineligible_targets_and_writes_the_intent() {
    let nodes = [("n1", "dca", 100), ("n2", "dca", 100), ("n3", "dca", -1)];
    let c = TestCluster::start("ctl-promote", &nodes);
    let first = wait_leader_not(&c, "dca", None).node;
    let (_, token) = leader(&c, "dca").unwrap();
    let other = if first == "n1" { "n2" } else { "n1" };
    wait_statuses(&c, 3);
    let intent_key = Keys::new(c.name()).promote_intent("dca");

    let err = fails(&c, "promote nope", 4);
    assert!(err.contains("node nope not found"), "{err}");
    let out = ok(&c, &format!("promote {first}"));
    assert!(out.contains("already the lead master"), "{out}");
    let err = fails(&c, "promote n3", 1);
    assert!(err.contains("priority is -1"), "{err}");
    ok(&c, &format!("fence {other}"));
    let err = fails(&c, &format!("promote {other}"), 1);
    assert!(err.contains("fenced"), "{err}");
    assert!(
        etcd_value(&c, &intent_key).is_none(),
        "a refusal writes nothing"
    );
    // A multi-writer cluster has no primary to rebuild a node from.
    let err = fails(&c, &format!("reinit {other}"), 1);
    assert!(err.contains("is multi-writer"), "{err}");
    let reinit_key = Keys::new(c.name()).reinit_intent(other);
    assert!(
        etcd_value(&c, &reinit_key).is_none(),
        "a refusal writes nothing"
    );
    let err = fails(&c, "reinit nope", 4);
    assert!(err.contains("node nope not found"), "{err}");

    // --force writes the request; no leader hands over to a fenced node, so it times out and
    // the request is withdrawn.
    let child = spawn_harpctl(&c, &words(&format!("promote {other} --force --timeout 3s")));
    let mut seen = None;
    let deadline = Instant::now() + Duration::from_secs(3);
    while seen.is_none() && Instant::now() < deadline {
        seen = etcd_value(&c, &intent_key);
        std::thread::sleep(Duration::from_millis(10));
    }
    let (code, _, err) = finish(child);
    let intent = PromoteIntent::decode(&seen.expect("the intent was written")).unwrap();
    assert_eq!(
        (intent.location.as_str(), intent.target.as_str()),
        ("dca", other)
    );
    assert_eq!((intent.from_token, intent.force), (token, true));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("did not hand over within 3s"), "{err}");
    assert!(err.contains(&format!("log on {first}")), "{err}");
    assert!(
        etcd_value(&c, &intent_key).is_none(),
        "the request is withdrawn"
    );
    assert_eq!(
        leader(&c, "dca").unwrap().1,
        token,
        "the leadership is unchanged"
    );
}

#[test]
fn promote_switches_over_to_the_target() {
    let c = TestCluster::start("ctl-switch", &[("n1", "dca", 100), ("n2", "dca", 100)]);
    let first = wait_leader_not(&c, "dca", None).node;
    let (_, token) = leader(&c, "dca").unwrap();
    let other = if first == "n1" { "n2" } else { "n1" };
    wait_statuses(&c, 2);
    // The leader checks the target against the statuses it has seen: let them arrive.
    std::thread::sleep(Duration::from_secs(1));

    let v = get_json(&c, &format!("promote {other} --timeout 20s"));
    println!("promote report: {v}");
    assert_fields(
        &v,
        json!({"target": other, "old_leader": first, "old_token": token}),
    );
    let new_token = v["new_token"].as_i64().expect("new_token");
    assert!(new_token > token, "{v}");
    assert!(v["pause_ms"].is_u64() && v["total_ms"].is_u64(), "{v}");
    let (now, now_token) = leader(&c, "dca").unwrap();
    assert_eq!((now.node.as_str(), now_token), (other, new_token));
    let intent_key = Keys::new(c.name()).promote_intent("dca");
    assert!(
        etcd_value(&c, &intent_key).is_none(),
        "the request is withdrawn"
    );

    // Without a node: the best candidate of the only location, i.e. back to the first.
    std::thread::sleep(Duration::from_secs(1));
    let out = ok(&c, "promote --timeout 20s");
    let want = format!("switchover to {first} complete: new lead master {first} (token ");
    assert!(
        out.starts_with(&want) && out.contains("clients paused"),
        "{out}"
    );
}
