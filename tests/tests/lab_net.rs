//! The multi-host lab's infrastructure (root): hosts as network namespaces on a bridge, faults
//! made in the lab's switch, and the whole topology — etcd, Postgres + managers, a kernel and a
//! userspace agent — routing each location's clients to its leader across the bridge.

use std::net::{SocketAddr, TcpListener};
use std::process::Output;
use std::time::{Duration, Instant};

use harp_core::keys::Keys;
use harp_tests::etcd::etcd_connect_options;
use harp_tests::lab::hosts::{
    AGENT_HTTP_PORT, Kind, Lab, LabSpec, MANAGER_HTTP_PORT, PG_NODES, PG_PORT, etcd_answers,
    etcd_user, http_get, tcp_open,
};
use harp_tests::lab::net::{LabError, Net, lab_namespaces};
use harp_tests::postgres::pg_bin_dir;
use harp_tests::require_root;
use harp_tests::rt::block_on;

const PROBE: Duration = Duration::from_millis(700);

/// Whether `from` can open a TCP connection to `to` now.
fn reach(net: &Net, from: &str, to: SocketAddr) -> bool {
    net.run_in(from, || tcp_open(to, PROBE)).unwrap()
}

/// Whether `from` can open a TCP connection to `to` within `timeout` (a link that just came
/// back may lose the first SYN while the bridge port and neighbour entries settle).
fn reach_within(net: &Net, from: &str, to: SocketAddr, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if reach(net, from, to) {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
    }
}

#[test]
fn namespaces_faults_and_teardown() {
    if !require_root("lab_net::namespaces_faults_and_teardown") {
        return;
    }
    // A run that crashed leaves its namespaces: the next setup removes them.
    std::mem::forget(Net::setup("lnf", &["h1", "h2", "h3"]).unwrap());
    assert_eq!(lab_namespaces("lnf").len(), 4);
    let net = Net::setup("lnf", &["h1", "h2", "h3"]).unwrap();
    assert_eq!(
        lab_namespaces("lnf").len(),
        4,
        "{:?}",
        lab_namespaces("lnf")
    );

    let h2 = net.host("h2").unwrap().ip;
    // A socket keeps the namespace it was made in: this listener serves h2 from our thread.
    let listener = net
        .run_in("h2", || TcpListener::bind((h2, 7000)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || for _ in listener.incoming() {});
    let svc = SocketAddr::from((h2, 7000));
    assert!(reach(&net, "h1", svc) && reach(&net, "h3", svc));

    // A child entered with setns sees its host's address and still the cgroup and bpf mounts.
    let out = net
        .command("h1", "sh")
        .unwrap()
        .args([
            "-c",
            "ip -4 -o addr show dev eth0; ls -d /sys/fs/cgroup /sys/fs/bpf",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("198.18.0.10/24"),
        "{text}"
    );

    net.partition(&["h1"], &["h2"]).unwrap();
    assert!(!reach(&net, "h1", svc), "partition let h1 reach h2");
    assert!(reach(&net, "h3", svc), "partition cut h3 too");
    net.heal().unwrap();
    assert!(reach(&net, "h1", svc), "heal did not restore h1 -> h2");

    net.cut_off("h2").unwrap();
    assert!(!reach(&net, "h1", svc) && !reach(&net, "h3", svc));
    net.heal().unwrap();
    assert!(reach(&net, "h3", svc));

    net.link_down("h2").unwrap();
    assert!(!reach(&net, "h1", svc), "link down still carried traffic");
    net.link_up("h2").unwrap();
    assert!(reach_within(&net, "h1", svc, Duration::from_secs(10)));

    net.slow("h1", 2000, 1, None).unwrap();
    assert!(reach(&net, "h1", svc), "a slow link is still a link");
    match net.slow("h1", 2000, 0, Some(Duration::from_millis(20))) {
        Ok(()) => assert!(net.netem_available()),
        Err(LabError::Unsupported(msg)) => {
            assert!(!net.netem_available());
            println!("as expected on this kernel: {msg}");
        }
        Err(e) => panic!("slow with a delay: {e}"),
    }
    net.heal().unwrap();

    let started = Instant::now();
    net.flap("h2", Duration::from_millis(150), 2)
        .unwrap()
        .join()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(550));
    assert!(
        reach_within(&net, "h1", svc, Duration::from_secs(10)),
        "the link is up after flapping"
    );

    drop(net);
    assert!(
        lab_namespaces("lnf").is_empty(),
        "{:?}",
        lab_namespaces("lnf")
    );
}

fn psql(lab: &Lab, app: &str, sql: &str) -> Output {
    let dsn = lab.agent_dsn(app).unwrap();
    lab.client_command(app, pg_bin_dir().join("psql"))
        .unwrap()
        .args(["-X", "-At", "-d", &dsn, "-c", sql])
        .env("LC_ALL", "C")
        .output()
        .expect("run psql")
}

/// The node a client on `app` reaches through its agent (`cluster_name` of its Postgres).
fn routed_to(lab: &Lab, app: &str) -> String {
    let out = psql(lab, app, "SELECT current_setting('cluster_name')");
    assert!(
        out.status.success(),
        "psql on {app}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn status(lab: &Lab, host: &str, port: u16) -> serde_json::Value {
    let addr = SocketAddr::from((lab.net().host(host).unwrap().ip, port));
    let (_, body) = lab
        .on_ctl(|| http_get(addr, "/status", Duration::from_secs(2)))
        .unwrap()
        .unwrap_or_else(|| panic!("no /status from {addr}"));
    serde_json::from_str(&body).unwrap()
}

#[test]
fn lab_routes_each_location_to_its_leader() {
    if !require_root("lab_net::lab_routes_each_location_to_its_leader") {
        return;
    }
    let t0 = Instant::now();
    let mut spec = LabSpec::new("lnt");
    spec.lease_secs = 4;
    spec.refresh_ms = 1000;
    let mut lab = Lab::start(spec).unwrap_or_else(|e| panic!("lab did not start: {e}"));
    println!("lab up in {:?}", t0.elapsed());
    let wait = Duration::from_secs(30);

    // One leader per location: the etcd key, and exactly one manager saying so.
    let dca = lab.wait_leader("dca", wait).unwrap();
    let dcb = lab.wait_leader("dcb", wait).unwrap();
    assert_eq!(dca.node, "n1", "priority 100 beats 90");
    assert_eq!(dcb.node, "n3");
    for loc in ["dca", "dcb"] {
        let leaders: Vec<&str> = PG_NODES
            .iter()
            .filter(|n| n.1 == loc)
            .filter(|n| status(&lab, n.0, MANAGER_HTTP_PORT)["role"] == "leader")
            .map(|n| n.0)
            .collect();
        assert_eq!(leaders.len(), 1, "leaders of {loc}: {leaders:?}");
    }

    // etcd speaks TLS only, and each unit is its own least-privilege user.
    let eps = lab.etcd_endpoints();
    let plain = lab
        .on_ctl(|| block_on(|| etcd_answers(&eps, etcd_connect_options())))
        .unwrap();
    assert!(plain.is_err(), "a plaintext client reached etcd");
    let agent = lab.etcd_options_as(&etcd_user(&lab.cluster(), "agent", "a2"));
    let key = Keys::new(&lab.cluster()).leader("dca");
    let put = lab
        .on_ctl(|| {
            block_on(|| async {
                let mut c = etcd_client::Client::connect(&eps, Some(agent)).await?;
                c.put(key, "n3", None).await
            })
        })
        .unwrap();
    let err = put
        .expect_err("an agent's etcd user wrote a leader key")
        .to_string();
    assert!(err.contains("permission denied"), "{err}");

    // a1 steers in the kernel: the client goes straight to n1; a2 proxies to n1.
    assert_eq!(routed_to(&lab, "a1"), "n1");
    assert_eq!(routed_to(&lab, "a2"), "n1");
    let a1 = status(&lab, "a1", AGENT_HTTP_PORT);
    assert_eq!(a1["mode"], "ebpf", "{a1}");
    assert!(
        a1["kernel"]["counters"]["steered"].as_u64() >= Some(1),
        "{a1}"
    );
    assert_eq!(
        a1["sessions"], 0,
        "a steered client went through the proxy: {a1}"
    );
    assert_eq!(status(&lab, "a2", AGENT_HTTP_PORT)["mode"], "userspace");

    // A partition blocks exactly the traffic between its sides; heal restores it.
    let n3_pg = SocketAddr::from((lab.net().host("n3").unwrap().ip, PG_PORT));
    let e1 = SocketAddr::from((lab.net().host("e1").unwrap().ip, 2379));
    lab.net().partition(&["a2"], &["n3"]).unwrap();
    assert!(
        !reach(lab.net(), "a2", n3_pg),
        "a2 reached n3 across a partition"
    );
    assert!(reach(lab.net(), "a2", e1) && reach(lab.net(), "ctl", n3_pg));
    lab.net().heal().unwrap();
    assert!(reach(lab.net(), "a2", n3_pg));

    // n1 cut off for longer than its lease: dca fails over to n2 and a1 follows.
    let cut = Instant::now();
    lab.net().cut_off("n1").unwrap();
    let deadline = Instant::now() + wait;
    loop {
        let now = lab.leader("dca").ok().flatten().map(|(l, _)| l.node);
        if now.as_deref() == Some("n2") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failover to n2 (leader {now:?})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("dca failed over to n2 in {:?}", cut.elapsed());
    let deadline = Instant::now() + wait;
    for app in ["a1", "a2"] {
        while routed_to(&lab, app) != "n2" {
            assert!(Instant::now() < deadline, "{app} still not routed to n2");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    lab.net().heal().unwrap();

    // Any process can be killed and started again with its config and data.
    let agent = lab.process(Kind::Agent, "a2").unwrap();
    let old = agent.pid();
    agent.kill9();
    lab.restart(Kind::Agent, "a2").unwrap();
    assert_ne!(lab.process(Kind::Agent, "a2").unwrap().pid(), old);
    assert_eq!(routed_to(&lab, "a2"), "n2");
    let pg = lab.process(Kind::Postgres, "n3").unwrap();
    assert!(pg.sigstop() && pg.sigcont());

    let pins = format!("/sys/fs/bpf/harp/{}-a1", lab.cluster());
    let cgroup = lab.cgroup().path().to_path_buf();
    drop(lab);
    assert!(
        lab_namespaces("lnt").is_empty(),
        "{:?}",
        lab_namespaces("lnt")
    );
    assert!(!std::path::Path::new(&pins).exists(), "pins left at {pins}");
    assert!(!cgroup.exists(), "cgroup left at {}", cgroup.display());
    println!("lab test took {:?}", t0.elapsed());
}
