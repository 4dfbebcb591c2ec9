//! harp-manager against real etcd and real Postgres: one lead master per location, and every
//! way of losing it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use harp_tests::TestCluster;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[test]
fn one_leader_per_location() {
    let mut c = TestCluster::start(
        "two-dc",
        &[("a1", "dca", 100), ("a2", "dca", 100), ("b1", "dcb", 100)],
    );
    let a = wait_leader_not(&c, "dca", None);
    let b = wait_leader_not(&c, "dcb", None);
    assert!(["a1", "a2"].contains(&a.node.as_str()), "{a:?}");
    assert_eq!(b.node, "b1");
    assert_eq!(b.location, "dcb");
    assert_eq!(
        b.port,
        c.node("b1").pg.port(),
        "the record routes to b1's Postgres"
    );
    // Exactly one manager of dca believes it leads, and it is the one etcd names.
    assert!(eventually(LONG, || role(&mut c, &a.node).as_deref() == Some("leader")));
    let other = if a.node == "a1" { "a2" } else { "a1" };
    assert_eq!(role(&mut c, other).as_deref(), Some("follower"));
    let status = c.node(other).mgr.status().unwrap();
    assert_eq!(
        status["leader"],
        a.node.as_str(),
        "followers see the leader: {status}"
    );
    // The leadership is stable while everything is healthy.
    let (_, token) = leader(&c, "dca").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        leader(&c, "dca").unwrap().1,
        token,
        "the fencing token must not change"
    );
}

#[test]
fn postmaster_kill_moves_the_lead_within_a_second() {
    let mut c = TestCluster::start(
        "pgkill",
        &[("n1", "dca", 100), ("n2", "dca", 100), ("n3", "dca", 100)],
    );
    let first = wait_leader_not(&c, "dca", None);
    let (_, old_token) = leader(&c, "dca").unwrap();
    let t = Instant::now();
    c.node(&first.node).pg.kill9();
    let next = wait_leader_not(&c, "dca", Some(&first.node));
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "failover took {took:?}\n{}",
        c.manager_logs(20)
    );
    let (_, token) = leader(&c, "dca").unwrap();
    assert!(token > old_token, "a new lease has a newer fencing token");
    assert!(eventually(LONG, || role(&mut c, &next.node).as_deref()
        == Some("leader")));
    let old = c.node(&first.node).mgr.status().unwrap();
    assert_eq!(old["role"], "follower", "{old}");
    assert_eq!(old["postgres"], "down", "{old}");
    // Postgres back: the old leader rejoins as a follower; the lead does not flap back.
    c.node(&first.node).pg.start_again();
    let name = first.node.clone();
    assert!(eventually(LONG, || c
        .node(&name)
        .mgr
        .status()
        .is_some_and(|s| s["postgres"] == "primary")));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(leader(&c, "dca").unwrap().0.node, next.node);
}

#[test]
fn manager_kill_hands_over_only_after_the_lease_expires() {
    let mut c = TestCluster::start_with(
        "mgrkill",
        &[("n1", "dca", 100), ("n2", "dca", 100)],
        3,
        1000,
    );
    let first = wait_leader_not(&c, "dca", None);
    let t = Instant::now();
    c.node(&first.node).mgr.kill9();
    c.node(&first.node).pg.kill9();
    let next = wait_leader_not(&c, "dca", Some(&first.node));
    let took = t.elapsed();
    // The key lives until etcd expires the dead manager's lease: TTL after its last keep-alive.
    assert!(
        took >= Duration::from_millis(1500),
        "took over too early ({took:?}): the lease was still alive"
    );
    assert!(
        took < Duration::from_secs(10),
        "takeover took {took:?}\n{}",
        c.manager_logs(20)
    );
    assert_ne!(next.node, first.node);
}

#[test]
fn sigterm_hands_over_at_once() {
    let mut c = TestCluster::start("sigterm", &[("n1", "dca", 100), ("n2", "dca", 100)]);
    let first = wait_leader_not(&c, "dca", None);
    let t = Instant::now();
    assert!(c.node(&first.node).mgr.sigterm());
    let next = wait_leader_not(&c, "dca", Some(&first.node));
    let took = t.elapsed();
    // Far below the 6 s lease: the key was released, not left to expire.
    assert!(
        took < Duration::from_secs(2),
        "handover took {took:?}\n{}",
        c.manager_logs(20)
    );
    let status = c.node(&first.node).mgr.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "manager exit: {status:?}"
    );
    assert_ne!(next.node, first.node);
}

#[test]
fn fenced_node_never_leads_and_unfence_restores_it() {
    let mut c = TestCluster::start("fence", &[("n1", "dca", 100), ("n2", "dca", 100)]);
    let first = wait_leader_not(&c, "dca", None);
    let other = if first.node == "n1" { "n2" } else { "n1" };
    set_fenced(&c, &first.node, true);
    let next = wait_leader_not(&c, "dca", Some(&first.node));
    assert_eq!(next.node, other, "fencing the leader makes it release");
    let name = first.node.clone();
    assert!(eventually(LONG, || c
        .node(&name)
        .mgr
        .status()
        .is_some_and(|s| s["fenced"] == true)));
    // The only other node fails: the fenced node still must not lead.
    c.node(other).pg.kill9();
    assert!(
        block_on_no_leader(&c, Duration::from_secs(3)),
        "a fenced node took the lead"
    );
    assert_eq!(role(&mut c, &first.node).as_deref(), Some("follower"));
    set_fenced(&c, &first.node, false);
    let back = wait_leader_not(&c, "dca", Some(other));
    assert_eq!(back.node, first.node);
}

#[test]
fn priority_minus_one_never_leads_and_priority_orders_candidates() {
    let mut c = TestCluster::start(
        "prio",
        &[
            ("low", "dca", 10),
            ("high", "dca", 200),
            ("mid", "dca", 100),
            ("never", "dca", -1),
        ],
    );
    let first = wait_leader_not(&c, "dca", None);
    assert_ne!(first.node, "never");
    // Let every status reach every manager, then fail leaders one by one: the best remaining
    // candidate must take over each time.
    std::thread::sleep(Duration::from_secs(2));
    let mut alive = vec!["high", "mid", "low"];
    let mut current = first.node.clone();
    while alive.len() > 1 {
        alive.retain(|n| *n != current);
        c.node(&current).pg.kill9();
        let next = wait_leader_not(&c, "dca", Some(&current));
        assert_eq!(
            next.node, alive[0],
            "after {current} failed the best candidate is {}",
            alive[0]
        );
        current = next.node;
    }
    c.node(&current).pg.kill9();
    assert!(
        block_on_no_leader(&c, Duration::from_secs(3)),
        "priority -1 took the lead"
    );
    let s = c.node("never").mgr.status().unwrap();
    assert_eq!(s["ineligible"], "priority -1 never leads", "{s}");
}

#[test]
fn sighup_applies_a_new_priority() {
    let mut c = TestCluster::start("reload", &[("n1", "dca", 100), ("n2", "dca", 100)]);
    let first = wait_leader_not(&c, "dca", None);
    let node = c.node(&first.node);
    let mut spec = node.mgr.spec().clone();
    spec.priority = -1;
    node.mgr.rewrite_config(spec);
    assert!(node.mgr.sighup());
    let next = wait_leader_not(&c, "dca", Some(&first.node));
    assert_ne!(next.node, first.node);
    assert!(
        c.node(&first.node).mgr.is_running(),
        "reload must not stop the manager"
    );
}

#[test]
fn health_is_live_answers_true() {
    let mut c = TestCluster::start("live", &[("n1", "dca", 100)]);
    let port = c.node("n1").mgr.http_port();
    let got = harp_tests::http_get(port, "/health/is-live", Duration::from_secs(2));
    assert_eq!(got, Some((200, "true".to_owned())));
    let got = harp_tests::http_get(port, "/nope", Duration::from_secs(2)).map(|r| r.0);
    assert_eq!(got, Some(404));
}

/// True if dca's leader key goes away (within 10 s) and then stays away for `window`.
/// The backend serving harp-manager's health check (its query is the only one that reads
/// `pg_is_in_recovery()` and the WAL position).
fn check_backend(c: &mut TestCluster, node: &str) -> Pid {
    let pg = &c.node(node).pg;
    let pid = harp_tests::rt::block_on(|| async {
        let client = pg.connect().await.expect("connect to Postgres");
        let row = client
            .query_opt(
                "SELECT pid FROM pg_stat_activity \
                 WHERE query LIKE 'SELECT pg_is_in_recovery()%' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .expect("read pg_stat_activity");
        row.map(|r| r.get::<_, i32>(0))
    });
    Pid::from_raw(pid.expect("harp-manager's health-check session is open"))
}

/// SIGCONTs a stopped backend when dropped, also when the test fails.
struct Resume(Pid);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

fn manager_log(c: &mut TestCluster, node: &str) -> String {
    std::fs::read_to_string(c.node(node).mgr.log_path()).unwrap_or_default()
}

#[test]
fn a_slow_postgres_keeps_the_lease_and_a_hung_one_loses_it() {
    let mut c = TestCluster::builder("slowpg")
        .node("n1", "dca", 100)
        .extra_yaml("health_check_interval: 200\nhealth_check_timeout: 3000")
        .start();
    wait_leader_not(&c, "dca", None);
    let (_, token) = leader(&c, "dca").unwrap();
    let backend = check_backend(&mut c, "n1");
    let resume = Resume(backend);

    // 1.5 s without an answer (a busy host): slow, not down — the lease stays.
    kill(backend, Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    kill(backend, Signal::SIGCONT).unwrap();
    assert!(
        eventually(LONG, || manager_log(&mut c, "n1")
            .contains("postgres answered the health check after")),
        "{}",
        c.manager_logs(20)
    );
    let log = manager_log(&mut c, "n1");
    assert!(log.contains("postgres is slow"), "{log}");
    assert!(!log.contains("release the leader lease"), "{log}");
    assert_eq!(leader(&c, "dca").map(|(_, t)| t), Some(token), "{log}");
    assert_eq!(role(&mut c, "n1").as_deref(), Some("leader"));

    // Past health_check_timeout (3 s) without an answer: down, the lease is released.
    kill(backend, Signal::SIGSTOP).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || leader(&c, "dca").is_none()),
        "a hung Postgres must lose the lease\n{}",
        c.manager_logs(20)
    );
    assert!(
        manager_log(&mut c, "n1").contains("no answer to the health check within 3s"),
        "{}",
        c.manager_logs(20)
    );
    drop(resume);
    // Answering again, it leads again under a new fencing token.
    assert!(
        eventually(LONG, || leader(&c, "dca").is_some_and(|(_, t)| t > token)),
        "{}",
        c.manager_logs(20)
    );
}

#[test]
fn a_hung_postmaster_loses_the_lease_though_its_backends_still_answer() {
    let mut c = TestCluster::builder("hungpm")
        .node("n1", "dca", 100)
        .extra_yaml("health_check_interval: 200\nhealth_check_timeout: 2000")
        .start();
    wait_leader_not(&c, "dca", None);
    let (_, token) = leader(&c, "dca").unwrap();
    // The manager's open connection keeps answering; only a new connection finds the hang.
    // (The cluster's drop SIGCONTs the postmaster before stopping it, also on failure.)
    assert!(c.node("n1").pg.sigstop());
    assert!(
        eventually(Duration::from_secs(15), || leader(&c, "dca").is_none()),
        "a hung postmaster must lose the lease\n{}",
        c.manager_logs(20)
    );
    assert!(
        manager_log(&mut c, "n1").contains("a new connection got no answer within 2s"),
        "{}",
        c.manager_logs(20)
    );
    assert!(c.node("n1").pg.sigcont());
    assert!(
        eventually(LONG, || leader(&c, "dca").is_some_and(|(_, t)| t > token)),
        "{}",
        c.manager_logs(20)
    );
}

fn block_on_no_leader(c: &TestCluster, window: Duration) -> bool {
    if !eventually(Duration::from_secs(10), || leader(c, "dca").is_none()) {
        return false;
    }
    let end = Instant::now() + window;
    while Instant::now() < end {
        if leader(c, "dca").is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}
