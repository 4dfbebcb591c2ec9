//! TLS and authentication on the etcd link, against a real etcd serving TLS only, requiring
//! client certificates (`--client-cert-auth`) and with its users and roles enabled: managers,
//! an agent and harpctl each with their own user made by `scripts/etcd-harp-roles`; every
//! wrong credential refused at once with its cause and exit status 2; an agent's user may not
//! write a leader key; a failover long after etcd's auth tokens expired.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use harp_tests::harpctl::harpctl_raw;
use harp_tests::rt::block_on;
use harp_tests::tls::CertFiles;
use harp_tests::{
    AgentProc, AgentSpec, EtcdCluster, ManagerProc, ManagerSpec, PgInstance, WorkDir, wait_leader,
};

const CLUSTER: &str = "sec";
const LONG: Duration = Duration::from_secs(20);

/// A harpctl config file with `dcs` lines `dcs`.
fn harpctl_config(etcd: &EtcdCluster, dir: &WorkDir, name: &str, dcs: &str) -> PathBuf {
    let endpoints = etcd.endpoints().join(", ");
    let dcs: String = dcs.lines().map(|l| format!("  {l}\n")).collect();
    let path = dir.join(format!("{name}.yml"));
    let text = format!(
        "cluster:\n  name: {CLUSTER}\ndcs:\n  driver: etcd\n  endpoints: [{endpoints}]\n{dcs}\
         location: dca\n"
    );
    std::fs::write(&path, text).expect("write harpctl config");
    path
}

/// An etcd client as `user`, with its client certificate.
async fn client_as(etcd: &EtcdCluster, user: &str, password: &str) -> Client {
    let pki = &etcd.secure().expect("secure").pki;
    let CertFiles { cert, key } = pki.client(user);
    let read = |p: &Path| std::fs::read(p).expect("read");
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read(&pki.ca())))
        .identity(Identity::from_pem(read(&cert), read(&key)));
    let opts = ConnectOptions::new()
        .with_tls(tls)
        .with_user(user, password)
        .with_connect_timeout(Duration::from_secs(2));
    Client::connect(etcd.endpoints(), Some(opts))
        .await
        .expect("connect as user")
}

/// The port of the Postgres that answers through the agent.
fn port_through(agent: &AgentProc) -> Result<i32, String> {
    let dsn = agent.dsn("postgres");
    block_on(|| async move {
        let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let row = client
            .query_one("SELECT current_setting('port')::int", &[])
            .await
            .map_err(|e| e.to_string())?;
        Ok(row.get::<_, i32>(0))
    })
}

/// Waits until `node` leads `dca` (read as the harness's root user).
fn leads(etcd: &EtcdCluster, node: &str) -> Option<harp_core::records::LeaderRecord> {
    block_on(|| async {
        let client = etcd.client().await;
        wait_leader(
            &client,
            CLUSTER,
            "dca",
            |l| l.is_some_and(|l| l.node == node),
            LONG,
        )
        .await
    })
}

struct Deployment {
    // Drop order: processes before Postgres, before etcd, before the directory.
    agent: AgentProc,
    managers: Vec<ManagerProc>,
    pgs: Vec<PgInstance>,
    etcd: EtcdCluster,
    passwords: PathBuf,
    dir: WorkDir,
}

/// One etcd member (TLS, client certificates, users), two nodes in `dca` and an agent, each
/// with its own user.
fn deploy(token_ttl: Option<u64>) -> Deployment {
    let dir = WorkDir::new();
    let etcd = EtcdCluster::start_secure(1, &dir, token_ttl);
    let passwords = etcd.make_users(
        CLUSTER,
        &dir,
        &[
            "--manager",
            "n1",
            "--manager",
            "n2",
            "--agent",
            "p1",
            "--admin",
        ],
    );
    let mut pgs = Vec::new();
    let mut managers = Vec::new();
    for (name, priority) in [("n1", 100), ("n2", 50)] {
        let pg = PgInstance::start(&dir, name);
        let mut spec =
            ManagerSpec::new(name, "dca", priority, &pg.dsn(), CLUSTER, etcd.endpoints());
        spec.dcs_yaml = etcd.dcs_yaml(&passwords, &format!("harp-{CLUSTER}-manager-{name}"));
        managers.push(ManagerProc::start(&dir, spec));
        pgs.push(pg);
    }
    let mut spec = AgentSpec::new("p1", "dca", CLUSTER, etcd.endpoints());
    spec.dcs_yaml = etcd.dcs_yaml(&passwords, &format!("harp-{CLUSTER}-agent-p1"));
    let mut agent = AgentProc::start(&dir, spec);
    let leader = leads(&etcd, "n1");
    let logs = |agent: &AgentProc| {
        let m: Vec<String> = managers.iter().map(|m| m.log_tail(30)).collect();
        format!("{}\n{}", m.join("\n"), agent.log_tail(30))
    };
    assert!(
        leader.is_some(),
        "n1 did not lead over TLS\n{}",
        logs(&agent)
    );
    let ready = agent.wait_ready(LONG);
    assert!(ready, "the agent is not ready\n{}", logs(&agent));
    Deployment {
        agent,
        managers,
        pgs,
        etcd,
        passwords,
        dir,
    }
}

#[test]
fn managers_an_agent_and_harpctl_work_over_tls_each_as_its_own_user() {
    let d = deploy(None);
    assert_eq!(port_through(&d.agent), Ok(i32::from(d.pgs[0].port())));

    let admin = format!("harp-{CLUSTER}-admin");
    let cfg = harpctl_config(
        &d.etcd,
        &d.dir,
        "admin",
        &d.etcd.dcs_yaml(&d.passwords, &admin),
    );
    let cfg = cfg.display().to_string();
    let (code, out, err) = harpctl_raw(&["-f", &cfg, "get", "nodes"]);
    assert_eq!(code, 0, "harpctl get nodes: {err}");
    assert!(out.contains("n1") && out.contains("n2"), "{out}");
    let (code, out, err) = harpctl_raw(&["-f", &cfg, "promote", "n2"]);
    assert_eq!(code, 0, "harpctl promote n2: {out}{err}");
    let moved = leads(&d.etcd, "n2");
    assert!(moved.is_some(), "the switchover to n2 did not happen");
    let end = Instant::now() + LONG;
    while port_through(&d.agent) != Ok(i32::from(d.pgs[1].port())) {
        assert!(Instant::now() < end, "the agent does not route to n2");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_agents_user_may_not_write_a_leader_key_and_the_agent_routes_all_the_same() {
    let d = deploy(None);
    let user = format!("harp-{CLUSTER}-agent-p1");
    let password = std::fs::read_to_string(d.passwords.join(&user)).expect("password");
    let password = password.trim_end().to_owned();
    let leader_key = format!("/harp/{CLUSTER}/leader/dca");
    let (leader_write, own_write) = block_on(|| async {
        let mut c = client_as(&d.etcd, &user, &password).await;
        let leader = c.put(leader_key.as_str(), "{}", None).await;
        let own = c
            .put(format!("/harp/{CLUSTER}/proxies/p1/probe"), "x", None)
            .await;
        (leader.map(drop).map_err(|e| e.to_string()), own.map(drop))
    });
    let err = leader_write.expect_err("the agent's user wrote the leader key");
    assert!(err.contains("permission denied"), "{err}");
    assert!(
        own_write.is_ok(),
        "the agent's user cannot write its own status: {own_write:?}"
    );
    // The leader key is untouched and the agent routes to it.
    assert!(leads(&d.etcd, "n1").is_some(), "n1 no longer leads");
    assert_eq!(port_through(&d.agent), Ok(i32::from(d.pgs[0].port())));
}

#[test]
fn a_failover_long_after_the_auth_tokens_expired_still_moves_the_lead_and_the_route() {
    // Tokens live 2 s; nothing of HARP's may depend on a token obtained at start.
    let mut d = deploy(Some(2));
    std::thread::sleep(Duration::from_secs(7));
    d.pgs[0].kill9();
    let moved = leads(&d.etcd, "n2");
    let logs: Vec<String> = d.managers.iter().map(|m| m.log_tail(30)).collect();
    assert!(moved.is_some(), "no failover to n2\n{}", logs.join("\n"));
    let end = Instant::now() + LONG;
    while port_through(&d.agent) != Ok(i32::from(d.pgs[1].port())) {
        assert!(
            Instant::now() < end,
            "the agent does not route to n2\n{}",
            d.agent.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One wrong setting: the `dcs` lines, and what the error must say.
struct Case {
    what: &'static str,
    dcs: String,
    says: &'static str,
}

#[test]
fn every_wrong_credential_is_refused_at_once_with_its_cause_and_exit_status_2() {
    let dir = WorkDir::new();
    let etcd = EtcdCluster::start_secure(1, &dir, None);
    let passwords = etcd.make_users(CLUSTER, &dir, &["--admin"]);
    let pki = &etcd.secure().expect("secure").pki;
    let admin = format!("harp-{CLUSTER}-admin");
    let good = etcd.dcs_yaml(&passwords, &admin);
    let certs = |c: &CertFiles| {
        format!(
            "ssl_cert_file: {}\nssl_key_file: {}\n",
            c.cert.display(),
            c.key.display()
        )
    };
    let wrong_pw = dir.join("wrong-password");
    std::fs::write(&wrong_pw, "not-the-password\n").expect("write");
    let with_line = |key: &str, line: String| -> String {
        good.lines()
            .filter(|l| !l.starts_with(key))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            + &line
    };
    let cases = [
        Case {
            what: "a CA that did not sign etcd's certificate",
            dcs: with_line(
                "ssl_ca_file",
                format!("ssl_ca_file: {}\n", pki.other_ca().display()),
            ),
            says: "etcd's server certificate is not signed by the CA in dcs.ssl_ca_file",
        },
        Case {
            what: "a client certificate from another CA",
            dcs: with_line("ssl_cert_file", String::new())
                .lines()
                .filter(|l| !l.starts_with("ssl_key_file"))
                .map(|l| format!("{l}\n"))
                .collect::<String>()
                + &certs(&pki.stranger()),
            says: "etcd refused the client certificate",
        },
        Case {
            what: "an expired client certificate",
            dcs: with_line("ssl_cert_file", String::new())
                .lines()
                .filter(|l| !l.starts_with("ssl_key_file"))
                .map(|l| format!("{l}\n"))
                .collect::<String>()
                + &certs(&pki.expired()),
            says: "etcd refused the client certificate",
        },
        Case {
            what: "a wrong password",
            dcs: with_line(
                "password_file",
                format!("password_file: {}\n", wrong_pw.display()),
            ),
            says: "etcd refused the password for user harp-sec-admin",
        },
        Case {
            what: "plaintext to a TLS etcd",
            dcs: format!(
                "user: {admin}\npassword_file: {}\n",
                passwords.join(&admin).display()
            ),
            says: "the endpoint speaks TLS but HARP connected in plaintext",
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let cfg = harpctl_config(&etcd, &dir, &format!("case{i}"), &case.dcs);
        let cfg = cfg.display().to_string();
        let started = Instant::now();
        let (code, _, err) = harpctl_raw(&["-f", &cfg, "get", "nodes"]);
        let took = started.elapsed();
        assert_eq!(code, 2, "{}: harpctl exit {code}: {err}", case.what);
        assert!(err.contains(case.says), "{}: harpctl said {err}", case.what);
        assert!(
            err.contains(&etcd.endpoint(0)),
            "{}: no endpoint in {err}",
            case.what
        );
        assert!(
            took < Duration::from_secs(5),
            "{}: harpctl took {took:?}",
            case.what
        );

        // harp-manager and harp-agent stop at start with the same cause and status 2.
        let dsn = "host=127.0.0.1 port=1 user=postgres";
        let eps = etcd.endpoints();
        let mut spec = ManagerSpec::new(&format!("m{i}"), "dca", 100, dsn, CLUSTER, eps.clone());
        spec.dcs_yaml = case.dcs.clone();
        let mut mgr = ManagerProc::start(&dir, spec);
        let status = mgr.wait_exit(Duration::from_secs(5));
        let log = mgr.log_tail(20);
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(2),
            "{}: manager\n{log}",
            case.what
        );
        assert!(
            log.contains(case.says),
            "{}: the manager said\n{log}",
            case.what
        );
        let mut spec = AgentSpec::new(&format!("a{i}"), "dca", CLUSTER, eps);
        spec.dcs_yaml = case.dcs.clone();
        let mut agent = AgentProc::start(&dir, spec);
        let status = agent.wait_exit(Duration::from_secs(5));
        let log = agent.log_tail(20);
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(2),
            "{}: agent\n{log}",
            case.what
        );
        assert!(
            log.contains(case.says),
            "{}: the agent said\n{log}",
            case.what
        );
    }
}
