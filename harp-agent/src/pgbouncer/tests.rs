use std::path::Path;
use std::time::Duration;

use harp_core::config::{PgBouncerConfig, PgBouncerTls, PoolMode, ProxyConfig, ProxyMode};
use harp_core::directives::ProxyLive;
use harp_core::routing::{Route, Routing};

use super::ini::{self, Paths, Settings};
use super::plan::{Hold, Plan, Step, Target};

fn route(address: &str, token: i64) -> Routing {
    Routing {
        route: Some(Route {
            node: format!("node-{address}"),
            address: address.into(),
            port: 5432,
            token,
        }),
        live: Some(token),
        draining: None,
    }
}

/// The leadership `token` hands over: new clients wait, its sessions finish.
fn draining(token: i64) -> Routing {
    Routing {
        route: None,
        live: Some(token),
        draining: Some(token),
    }
}

fn target(address: &str, token: i64) -> Target {
    Target {
        address: address.into(),
        port: 5432,
        token,
    }
}

/// Carries out every step the plan asks for; the steps taken.
fn converge(plan: &mut Plan, routing: &Routing) -> Vec<Step> {
    let mut steps = vec![];
    while let Some(step) = plan.next(routing) {
        assert!(steps.len() < 5, "no end to {steps:?}");
        steps.push(step.clone());
        plan.done(step);
    }
    steps
}

#[test]
fn starts_paused_and_opens_on_the_first_leader() {
    let mut plan = Plan::new();
    assert_eq!(converge(&mut plan, &Routing::default()), vec![]);
    assert_eq!(plan.hold, Hold::Paused);
    assert_eq!(
        converge(&mut plan, &route("a", 1)),
        vec![Step::Retarget(target("a", 1)), Step::Resume]
    );
    assert_eq!(plan.hold, Hold::Open);
    assert_eq!(converge(&mut plan, &route("a", 1)), vec![]);
}

#[test]
fn a_failover_cuts_sessions_then_points_at_the_new_leader() {
    let mut plan = Plan::new();
    converge(&mut plan, &route("a", 1));
    // The leader key goes: sessions are cut, new clients wait.
    assert_eq!(converge(&mut plan, &Routing::default()), vec![Step::Kill]);
    assert_eq!(plan.hold, Hold::Killed);
    assert_eq!(
        converge(&mut plan, &route("b", 2)),
        vec![Step::Retarget(target("b", 2)), Step::Resume]
    );
    // Straight from one leader to another: cut first.
    assert_eq!(
        converge(&mut plan, &route("c", 3)),
        vec![Step::Kill, Step::Retarget(target("c", 3)), Step::Resume]
    );
    // The same host re-elected is a new leadership: its old sessions are cut too.
    assert_eq!(
        converge(&mut plan, &route("c", 4)),
        vec![Step::Kill, Step::Retarget(target("c", 4)), Step::Resume]
    );
}

#[test]
fn a_switchover_pauses_and_sessions_survive_once_paused() {
    let mut plan = Plan::new();
    converge(&mut plan, &route("a", 1));
    assert_eq!(converge(&mut plan, &draining(1)), vec![Step::Pause]);
    assert_eq!(plan.hold, Hold::Pausing);
    plan.paused();
    assert_eq!(plan.hold, Hold::Paused);
    // The handover: nothing holds a server, so nothing is cut.
    assert_eq!(converge(&mut plan, &Routing::default()), vec![]);
    assert_eq!(
        converge(&mut plan, &route("b", 2)),
        vec![Step::Retarget(target("b", 2)), Step::Resume]
    );
}

#[test]
fn a_drain_not_finished_at_the_handover_is_cut() {
    let mut plan = Plan::new();
    converge(&mut plan, &route("a", 1));
    converge(&mut plan, &draining(1));
    assert_eq!(
        converge(&mut plan, &route("b", 2)),
        vec![Step::Kill, Step::Retarget(target("b", 2)), Step::Resume]
    );
    // A late answer to the PAUSE changes nothing.
    plan.paused();
    assert_eq!(plan.hold, Hold::Open);
}

#[test]
fn a_withdrawn_switchover_resumes_without_a_cut() {
    for confirmed in [false, true] {
        let mut plan = Plan::new();
        converge(&mut plan, &route("a", 1));
        converge(&mut plan, &draining(1));
        if confirmed {
            plan.paused();
        }
        assert_eq!(converge(&mut plan, &route("a", 1)), vec![Step::Resume]);
        assert_eq!(plan.target, Some(target("a", 1)));
    }
}

#[test]
fn a_server_busy_after_the_pause_makes_the_handover_cut() {
    let mut plan = Plan::new();
    converge(&mut plan, &route("a", 1));
    converge(&mut plan, &draining(1));
    plan.paused();
    plan.busy();
    assert_eq!(plan.hold, Hold::Pausing);
    assert_eq!(
        converge(&mut plan, &route("b", 2)),
        vec![Step::Kill, Step::Retarget(target("b", 2)), Step::Resume]
    );
    // Only a confirmed pause goes back to waiting.
    plan.busy();
    assert_eq!(plan.hold, Hold::Open);
}

#[test]
fn after_a_failed_step_everything_is_cut_and_pointed_again() {
    let mut plan = Plan::unsure();
    assert_eq!(
        converge(&mut plan, &route("a", 1)),
        vec![Step::Kill, Step::Retarget(target("a", 1)), Step::Resume]
    );
    let mut plan = Plan::unsure();
    assert_eq!(converge(&mut plan, &Routing::default()), vec![Step::Kill]);
    let mut plan = Plan::unsure();
    assert_eq!(converge(&mut plan, &draining(1)), vec![Step::Pause]);
}

fn proxy() -> ProxyConfig {
    ProxyConfig {
        name: "p1".into(),
        listen_address: "0.0.0.0".into(),
        listen_port: 6432,
        max_client_conn: 300,
        keepalive: Duration::from_secs(5),
        timeout: Duration::from_millis(1500),
        pause_timeout: Duration::from_millis(0),
        leader_lease_duration: Duration::from_secs(6),
        lease_refresh_interval: Duration::from_secs(2),
        mode: ProxyMode::Userspace,
        splice: false,
        cgroup_path: None,
        pgbouncer: None,
    }
}

fn pgb() -> PgBouncerConfig {
    PgBouncerConfig {
        bin_dir: None,
        user: "postgres".into(),
        pool_mode: PoolMode::Transaction,
        default_pool_size: 7,
        auth_type: "scram-sha-256".into(),
        auth_user: Some("lookup".into()),
        auth_query: "SELECT usename, passwd FROM pg_shadow WHERE usename=$1".into(),
        auth_file: None,
        tls: Default::default(),
    }
}

/// `key = value` lines of one section.
fn section(ini: &str, name: &str) -> Vec<(String, String)> {
    ini.lines()
        .skip_while(|l| *l != format!("[{name}]"))
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn value(ini: &str, key: &str) -> Option<String> {
    section(ini, "pgbouncer")
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

#[test]
fn ini_carries_the_directives_and_the_target() {
    let (proxy, pgb) = (proxy(), pgb());
    let paths = Paths::new(Path::new("/etc/harp"), "/tmp/harp-sock".into());
    let live = ProxyLive {
        max_client_conn: 250,
        pause_timeout: Duration::ZERO,
        timeout: Duration::from_millis(1500),
        keepalive: Duration::from_secs(5),
    };
    let s = Settings {
        proxy: &proxy,
        pgb: &pgb,
        live,
        paths: &paths,
    };
    let text = ini::render(&s, Some(&target("198.18.0.2", 9)));
    assert_eq!(
        section(&text, "databases"),
        vec![("*".into(), "host=198.18.0.2 port=5432".into())]
    );
    let want = [
        ("listen_addr", "0.0.0.0"),
        ("listen_port", "6432"),
        ("unix_socket_dir", "/tmp/harp-sock"),
        ("pool_mode", "transaction"),
        ("default_pool_size", "7"),
        // The live value, not the file's.
        ("max_client_conn", "250"),
        ("auth_type", "hba"),
        ("auth_hba_file", "/etc/harp/pgbouncer_hba.conf"),
        ("auth_file", "/etc/harp/pgbouncer_userlist.txt"),
        ("auth_user", "lookup"),
        ("admin_users", "pgbouncer"),
        // Seconds, rounded up, never 0 (which PgBouncer reads as "no limit").
        ("server_connect_timeout", "2"),
        // A failed login holds a pool back this long (PgBouncer's 15 s would outlast a
        // failover).
        ("server_login_retry", "1"),
        ("query_wait_timeout", "1"),
    ];
    for (k, v) in want {
        assert_eq!(value(&text, k).as_deref(), Some(v), "{k} in\n{text}");
    }
    // TLS only when asked for.
    assert_eq!(value(&text, "client_tls_sslmode"), None);
    let tls = PgBouncerConfig {
        tls: PgBouncerTls {
            client_sslmode: Some("require".into()),
            client_key_file: Some("/etc/harp/tls.key".into()),
            client_cert_file: Some("/etc/harp/tls.crt".into()),
            server_sslmode: Some("verify-full".into()),
            ..Default::default()
        },
        ..pgb.clone()
    };
    let with_tls = ini::render(&Settings { pgb: &tls, ..s }, None);
    for (k, v) in [
        ("client_tls_sslmode", "require"),
        ("client_tls_key_file", "/etc/harp/tls.key"),
        ("client_tls_cert_file", "/etc/harp/tls.crt"),
        ("server_tls_sslmode", "verify-full"),
    ] {
        assert_eq!(
            value(&with_tls, k).as_deref(),
            Some(v),
            "{k} in\n{with_tls}"
        );
    }
    assert_eq!(value(&with_tls, "client_tls_ca_file"), None);
    // No leader: nowhere a server connection could reach.
    let none = ini::render(&s, None);
    assert!(
        section(&none, "databases")[0]
            .1
            .starts_with("host=/nonexistent/")
    );
    // An auth_file given is used as it is.
    let given = PgBouncerConfig {
        auth_file: Some("/etc/pgbouncer/userlist.txt".into()),
        auth_user: None,
        ..pgb.clone()
    };
    let s = Settings { pgb: &given, ..s };
    let text = ini::render(&s, None);
    assert_eq!(value(&text, "auth_user"), None);
    assert_eq!(
        value(&text, "auth_file").as_deref(),
        Some("/etc/pgbouncer/userlist.txt")
    );
}

#[test]
fn hba_keeps_the_admin_console_on_the_private_socket() {
    let hba = ini::render_hba(&pgb());
    let rules: Vec<Vec<&str>> = hba
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    // First match wins: the console over the socket, then the admin role refused anywhere else.
    assert_eq!(rules[0], ["local", "pgbouncer", "pgbouncer", "trust"]);
    for r in &rules[1..] {
        if r.contains(&"pgbouncer") {
            assert_eq!(r.last(), Some(&"reject"), "{r:?}");
        } else {
            assert_eq!(r.last(), Some(&"scram-sha-256"), "{r:?}");
        }
    }
    assert!(rules.iter().any(|r| r[..3] == ["host", "all", "all"]));
}

#[test]
fn pgbouncer_is_stopped_before_other_agents_stop_waiting_for_it() {
    // Other agents wait at most one lease: a short lease shortens the bound with it.
    assert_eq!(
        super::fail_closed_after(Duration::from_secs(1)),
        Duration::from_millis(500)
    );
    assert_eq!(
        super::fail_closed_after(Duration::from_secs(6)),
        Duration::from_secs(3)
    );
}
