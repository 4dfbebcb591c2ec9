//! The shipped systemd units (`dist/systemd/`) as systemd reads them, and the agent's kernel
//! path with only the capabilities its unit grants: it steers a client of its cgroup straight
//! to the leader and, at a failover, cuts the old leader's sessions.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use harp_tests::agent::{AgentProc, AgentSpec, PinGuard};
use harp_tests::cgroup::ChildCgroup;
use harp_tests::postgres::pg_bin_dir;
use harp_tests::streaming::query_text;
use harp_tests::{TestCluster, require_root, workspace_bin};

fn unit(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dist/systemd")
        .join(name)
}

/// The value of `key=` in the unit, split on blanks.
fn unit_list(name: &str, key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(unit(name)).unwrap();
    let prefix = format!("{key}=");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("{name} has no {key}="));
    line[prefix.len()..]
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_shipped_units_pass_systemd_analyze_verify_without_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bin) in [
        ("harp-agent.service", "harp-agent"),
        ("harp-manager.service", "harp-manager"),
    ] {
        // verify checks that ExecStart exists: point it at the binaries just built.
        let text = std::fs::read_to_string(unit(name)).unwrap();
        let built = workspace_bin(bin);
        let local = text.replace(
            &format!("/usr/local/bin/{bin}"),
            &built.display().to_string(),
        );
        assert_ne!(local, text, "{name} starts /usr/local/bin/{bin}");
        let path = dir.path().join(name);
        std::fs::write(&path, local).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze (./scripts/setup installs it)");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{name}: {said}"
        );
    }
    assert_eq!(
        unit_list("harp-manager.service", "CapabilityBoundingSet"),
        Vec::<String>::new(),
        "the manager needs no capability"
    );
}

/// The agent's unit grants these and nothing else (bounding set = ambient set).
fn agent_caps() -> Vec<String> {
    let caps = unit_list("harp-agent.service", "CapabilityBoundingSet");
    assert_eq!(
        caps,
        unit_list("harp-agent.service", "AmbientCapabilities"),
        "bounding and ambient sets differ"
    );
    caps
}

/// CapEff of a running process.
fn effective_caps(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    u64::from_str_radix(hex, 16).unwrap()
}

fn cap_bit(name: &str) -> u64 {
    let n = match name {
        "CAP_NET_ADMIN" => 12,
        "CAP_SYS_ADMIN" => 21,
        "CAP_SYS_RESOURCE" => 24,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        other => panic!("add {other}'s number to cap_bit"),
    };
    1 << n
}

#[test]
fn the_agent_with_only_its_units_capabilities_steers_and_cuts_in_the_kernel() {
    if !require_root("least_privilege::agent_caps") {
        return;
    }
    let caps = agent_caps();
    let list: Vec<String> = caps
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let mut c = TestCluster::builder("kcaps")
        .pg_setting("client_connection_check_interval", "100ms")
        .node("n1", "dca", 100)
        .node("n2", "dca", 90)
        .start();
    let cgroup = ChildCgroup::new();
    let mut spec = AgentSpec::new("k1", "dca", c.name(), c.etcd.endpoints()).ebpf(cgroup.path());
    // As root, a program's capabilities after exec are its bounding set: exactly the unit's.
    spec.wrapper = vec![
        "setpriv".into(),
        format!("--bounding-set=-all,{}", list.join(",")),
        "--inh-caps=-all".into(),
        "--no-new-privs".into(),
        "--".into(),
    ];
    // One capability fewer (CAP_PERFMON) and the verifier refuses the programs: the agent
    // stops, saying which capability is missing.
    let mut short = spec.clone();
    short.name = "k0".into();
    short.wrapper[1] = format!(
        "--bounding-set=-all,{}",
        list.iter()
            .filter(|c| *c != "+perfmon")
            .cloned()
            .collect::<Vec<_>>()
            .join(",")
    );
    assert_ne!(
        short.wrapper, spec.wrapper,
        "the unit no longer grants CAP_PERFMON"
    );
    let _short_pins = PinGuard::new("kcaps", "k0");
    let mut refused = AgentProc::start(c.dir(), short);
    let exit = refused.wait_exit(LONG);
    assert!(
        exit.is_some_and(|e| !e.success()),
        "{}",
        refused.log_tail(5)
    );
    assert!(
        refused.log_tail(200).contains("lacks CAP_PERFMON"),
        "{}",
        refused.log_tail(5)
    );

    let _pins = PinGuard::new("kcaps", "k1");
    let mut agent = AgentProc::start(c.dir(), spec);
    assert!(
        agent.wait_ready(LONG),
        "agent not ready\n{}",
        agent.log_tail(30)
    );
    let want: u64 = caps.iter().map(|c| cap_bit(c)).sum();
    assert_eq!(
        effective_caps(agent.pid()),
        want,
        "the agent runs with more than its unit's"
    );
    let status: serde_json::Value =
        serde_json::from_str(&agent.http("/status").expect("status").1).unwrap();
    assert_eq!(status["mode"], "ebpf", "{}", agent.log_tail(30));

    let old = wait_leader_not(&c, "dca", None);
    let psql = |sql: &str| {
        let o = cgroup
            .command(pg_bin_dir().join("psql"))
            .args(["-X", "-At", "-d", &agent.dsn("postgres"), "-c", sql])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    let old_port = c.node(&old.node).pg.port().to_string();
    assert_eq!(psql("SELECT inet_server_port()"), old_port);
    let status: serde_json::Value =
        serde_json::from_str(&agent.http("/status").unwrap().1).unwrap();
    assert_eq!(
        status["sessions"], 0,
        "the proxy relayed a cgroup client: {status}"
    );

    // A steered session to the old leader is cut at a failover (SOCK_DESTROY).
    let mut session = cgroup
        .command(pg_bin_dir().join("psql"))
        .args([
            "-X",
            "-d",
            &agent.dsn("postgres"),
            "-c",
            "SELECT pg_sleep(60)",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let old_dsn = c.node(&old.node).pg.dsn();
    let sleeping =
        "SELECT count(*)::text FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'";
    assert!(
        eventually(LONG, || query_text(&old_dsn, sleeping).as_deref()
            == Some("1")),
        "the steered session never reached the leader"
    );
    set_fenced(&c, &old.node, true);
    let new = wait_leader_not(&c, "dca", Some(&old.node));
    let closed = eventually(Duration::from_secs(2), || {
        session.try_wait().unwrap().is_some()
    });
    let _ = session.kill();
    assert!(
        closed,
        "the old leader's session outlived the failover\n{}",
        agent.log_tail(30)
    );
    let new_port = c.node(&new.node).pg.port().to_string();
    assert_eq!(psql("SELECT inet_server_port()"), new_port);
    assert!(
        !agent.log_tail(200).contains("EPERM"),
        "{}",
        agent.log_tail(60)
    );
}
