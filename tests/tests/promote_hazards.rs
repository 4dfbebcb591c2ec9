//! `harpctl promote` against operator hazards, with real etcd, managers and an agent: an
//! unmanaged proxy that would keep the old route, and a target whose manager is frozen.

mod common;

use std::time::{Duration, Instant};

use common::*;
use harp_core::keys::Keys;
use harp_tests::TestCluster;
use harp_tests::agent::{AgentProc, AgentSpec};
use harp_tests::harpctl::{etcd_value, finish, harpctl, harpctl_ok, spawn_harpctl, try_json_of};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// Waits until `n` managers publish `postgres: primary` and the leader has seen them.
fn wait_statuses(c: &TestCluster, n: usize) {
    let published = eventually(LONG, || {
        try_json_of(c, &["get", "nodes"]).is_some_and(|v| {
            let nodes = v.as_array().expect("a list");
            nodes.len() == n && nodes.iter().all(|s| s["postgres"] == "primary")
        })
    });
    assert!(
        published,
        "statuses never published\n{}",
        c.manager_logs(20)
    );
    std::thread::sleep(Duration::from_secs(1));
}

/// Resumes a SIGSTOPped process when the test ends, also when it panics.
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGCONT);
    }
}

#[test]
fn promote_refuses_while_a_proxy_of_the_location_is_unmanaged() {
    let c = TestCluster::start("hz-proxy", &[("n1", "dca", 100), ("n2", "dca", 100)]);
    let spec = AgentSpec::new("p1", "dca", c.name(), c.etcd.endpoints());
    let mut p1 = AgentProc::start(c.dir(), spec);
    assert!(
        p1.wait_ready(LONG),
        "agent never ready\n{}",
        p1.log_tail(30)
    );
    let first = wait_leader_not(&c, "dca", None).node;
    let (_, token) = leader(&c, "dca").unwrap();
    let other = if first == "n1" { "n2" } else { "n1" };
    wait_statuses(&c, 2);
    harpctl_ok(&c, &["unmanage", "proxy", "p1"]);
    let intent_key = Keys::new(c.name()).promote_intent("dca");

    let (code, _, err) = harpctl(&c, &words(&format!("promote {other} --timeout 20s")));
    assert_eq!(code, 1, "{err}");
    for part in [
        "proxy p1 is unmanaged".to_owned(),
        format!("p1 routes to {first}"),
        format!("keep sending clients to the old lead master while {other} leads"),
        "`harpctl manage proxy p1`".to_owned(),
        "--force".to_owned(),
    ] {
        assert!(err.contains(&part), "missing {part:?} in: {err}");
    }
    assert!(
        etcd_value(&c, &intent_key).is_none(),
        "a refusal writes nothing"
    );
    assert_eq!(leader(&c, "dca").unwrap().1, token, "the leader changed");

    // The fix the message names lets the switchover through.
    harpctl_ok(&c, &["manage", "proxy", "p1"]);
    let out = harpctl_ok(&c, &words(&format!("promote {other} --timeout 20s")));
    assert!(
        out.contains(&format!("switchover to {other} complete")),
        "{out}"
    );

    // --force overrides the check: the operator takes the unmanaged route on knowingly.
    harpctl_ok(&c, &["unmanage", "proxy", "p1"]);
    std::thread::sleep(Duration::from_secs(1));
    let out = harpctl_ok(
        &c,
        &words(&format!("promote {first} --force --timeout 20s")),
    );
    assert!(
        out.contains(&format!("switchover to {first} complete")),
        "{out}"
    );
}

#[test]
fn a_switchover_to_a_frozen_target_is_refused_or_withdrawn() {
    // A 10 s lease renewed every second: a manager frozen for 7.5 s has 1-2 s of it left,
    // below the third harpctl accepts, and still publishes its status.
    let mut c = TestCluster::start_with(
        "hz-frozen",
        &[("n1", "dca", 100), ("n2", "dca", 100)],
        10,
        1000,
    );
    let first = wait_leader_not(&c, "dca", None).node;
    let other = if first == "n1" { "n2" } else { "n1" };
    wait_statuses(&c, 2);
    let intent_key = Keys::new(c.name()).promote_intent("dca");
    let pid = c.node(other).mgr.pid();
    let _resume = Resume(pid);

    // Frozen long enough: refused before anything is written.
    assert!(c.node(other).mgr.sigstop());
    std::thread::sleep(Duration::from_millis(7500));
    let (code, _, err) = harpctl(&c, &words(&format!("promote {other} --timeout 30s")));
    assert_eq!(code, 1, "{err}");
    let want =
        format!("refusing to promote {other}: its harp-manager has not renewed its etcd lease");
    assert!(err.contains(&want), "{err}");
    assert!(
        etcd_value(&c, &intent_key).is_none(),
        "a refusal writes nothing"
    );
    assert!(c.node(other).mgr.sigcont());
    std::thread::sleep(Duration::from_secs(2));

    // Frozen just now (its lease looks fresh): the leader hands over, the target never takes
    // the lease, and harpctl withdraws the request one lease TTL later.
    let (_, token) = leader(&c, "dca").unwrap();
    assert!(c.node(other).mgr.sigstop());
    let t0 = Instant::now();
    let child = spawn_harpctl(&c, &words(&format!("promote {other} --timeout 30s")));
    let (code, _, err) = finish(child);
    let took = t0.elapsed();
    assert_eq!(code, 1, "{err}\n{}", c.manager_logs(20));
    for part in [
        format!(
            "switchover of dca to {other} failed: {other} did not take the lead within 10s after {first} released it"
        ),
        "the request was withdrawn".to_owned(),
    ] {
        assert!(err.contains(&part), "missing {part:?} in: {err}");
    }
    assert!(
        took < Duration::from_secs(16),
        "withdrawn after {took:?}, not within the bound"
    );
    assert!(
        etcd_value(&c, &intent_key).is_none(),
        "the request is withdrawn"
    );
    // Any healthy node takes over at once: here the old leader, under a new token.
    let back = wait_leader_not(&c, "dca", Some(other));
    let (_, new_token) = leader(&c, "dca").unwrap();
    let led_again = t0.elapsed();
    assert_eq!(back.node, first);
    assert_ne!(
        new_token, token,
        "the old leader released: a new leadership"
    );
    assert!(
        led_again < Duration::from_secs(20),
        "leaderless for {led_again:?} of the 30 s timeout"
    );
}
