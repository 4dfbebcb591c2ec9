//! `cargo xtask demo` (the default, `--replication streaming`): a streaming cluster on
//! loopback — 3 etcd members, a PostgreSQL 15 primary and 2 standbys cloned from it with
//! `pg_basebackup -R`, a harp-manager beside each (`cluster.replication: streaming`,
//! `synchronous_mode: on`) and a harp-agent an application writes through. Then the primary's
//! postmaster is killed: a standby is promoted, every acknowledged row is checked on it, and
//! the old primary's manager rewinds it back as a standby of the new one; then a switchover
//! (`harpctl promote`) back, again with every acknowledged row checked.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use harp_tests::agent::{AgentProc, PinGuard};
use harp_tests::cgroup::ChildCgroup;
use harp_tests::harpctl::harpctl;
use harp_tests::rt::block_on;
use harp_tests::{LeaderWatch, TestCluster};

use crate::writer::{self, Ack};

const CLUSTER: &str = "demo";
const NODES: [(&str, &str, i32); 3] = [
    ("node1", "dca", 100),
    ("node2", "dca", 90),
    ("node3", "dcb", 80),
];
/// Bound on a failover, a rewind, a switchover.
const WAIT: Duration = Duration::from_secs(60);

pub fn run(keep: bool) -> anyhow::Result<()> {
    let kernel = nix::unistd::geteuid().is_root() && crate::build_ebpf::run().is_ok();
    crate::test::cargo(&["build", "--workspace", "--bins"])?;
    println!(
        "== starting etcd x3 (TLS only, client certificates and users required); PostgreSQL 15: \
         node1 primary, node2 and node3 standbys made with pg_basebackup -R; harp-manager x3 \
         (cluster.replication: streaming, synchronous_mode: on), each connecting to etcd as its \
         own least-privilege user (scripts/etcd-harp-roles)"
    );
    let t = Instant::now();
    let mut b = TestCluster::builder(CLUSTER)
        .streaming("on")
        .secure_etcd()
        .wait_managers(Some(WAIT));
    for (n, loc, prio) in NODES {
        b = b.node(n, loc, prio);
    }
    let mut c = b.start();
    let st = c
        .wait_streaming(WAIT)
        .map_err(|e| anyhow::anyhow!("{e}\n{}", c.manager_logs(30)))?;
    println!(
        "   {} is the primary of the whole cluster (one lease, leader/{CLUSTER}); {} stream \
         from it; synchronous standby: {} — up in {:.1} s",
        st.primary,
        st.streaming.join(" and "),
        st.sync_standbys.join(", "),
        t.elapsed().as_secs_f64()
    );
    print_status(&c);
    let primary_dsn = c.node(&st.primary).pg.dsn();
    block_on(|| async {
        let (client, conn) = tokio_postgres::connect(&primary_dsn, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        client
            .batch_execute(
                "CREATE TABLE harp_demo (id bigserial PRIMARY KEY, \
                 server_port int NOT NULL, at timestamptz NOT NULL DEFAULT now())",
            )
            .await
    })?;

    println!("\n== starting harp-agent app1 and an application writing through it every 10 ms");
    let cgroup = kernel.then(ChildCgroup::new);
    let _pins = kernel.then(|| PinGuard::new(CLUSTER, "app1"));
    let mut spec = c.agent_spec("app1", "dca");
    if let Some(cg) = &cgroup {
        spec = spec.ebpf(cg.path());
    }
    let mut agent = AgentProc::start(c.dir(), spec);
    if !agent.wait_ready(WAIT) {
        bail!("the agent never became ready\n{}", agent.log_tail(30));
    }
    match &cgroup {
        Some(cg) => println!(
            "   agent steers connects to 127.0.0.1:{} from cgroup {} in the kernel (eBPF)",
            agent.listen_port(),
            cg.path().display()
        ),
        None => println!(
            "   agent proxies 127.0.0.1:{} to the primary (userspace; run as root with the eBPF \
             toolchain for the kernel path)",
            agent.listen_port()
        ),
    }
    let app = writer::App::through(&agent.dsn("postgres"), cgroup.as_ref())?;
    std::thread::sleep(Duration::from_secs(2));

    let first = st.primary.clone();
    let rt = tokio::runtime::Runtime::new()?;
    let mut watch = rt.block_on(async { LeaderWatch::start(&c.client().await, CLUSTER).await });
    println!("\n== kill -9 the postmaster of {first} (the primary)");
    let t = Instant::now();
    let kill_ns = writer::mono_ns();
    anyhow::ensure!(
        c.node(&first).pg.kill9_current(),
        "{first} runs no postmaster"
    );
    let promoted = rt.block_on(watch.wait_for(
        CLUSTER,
        |ev| {
            ev.leader
                .as_ref()
                .is_some_and(|l| l.node != first && l.routable())
        },
        WAIT,
    ));
    let Some(ev) = promoted else {
        bail!("no standby was promoted\n{}", c.manager_logs(30));
    };
    let new = ev.leader.expect("a leader").node;
    println!(
        "   {new} promoted and routed (fencing token {}), {:.0} ms after the kill",
        ev.fencing_token,
        ev.at.duration_since(t).as_secs_f64() * 1000.0
    );
    std::thread::sleep(Duration::from_secs(1));
    report_writes(&app.acks(), &c, kill_ns, "kill");
    check_rows(&mut c, &new, &app.acks())?;

    println!("\n== {first} comes back: its manager rewinds it (pg_rewind) into a standby of {new}");
    bring_back(&mut c, &first)?;
    let st = c
        .wait_streaming(WAIT)
        .map_err(|e| anyhow::anyhow!("{e}\n{}", c.manager_logs(30)))?;
    println!(
        "   {} stream from {} again ({first} rewound onto {new}'s timeline)",
        st.streaming.join(" and "),
        st.primary
    );
    print_status(&c);

    println!("\n== harpctl promote {first}: planned switchover back, while the application writes");
    let from = writer::mono_ns();
    let (code, out, err) = harpctl(&c, &["promote", &first]);
    if code != 0 {
        bail!("harpctl promote {first}: {out}{err}");
    }
    print!("   harpctl: {out}");
    let st = c
        .wait_streaming(WAIT)
        .map_err(|e| anyhow::anyhow!("{e}\n{}", c.manager_logs(30)))?;
    anyhow::ensure!(st.primary == first, "{} leads, not {first}", st.primary);
    std::thread::sleep(Duration::from_secs(1));
    let acks = app.stop();
    report_writes(&acks, &c, from, "switchover");
    check_rows(&mut c, &first, &acks)?;
    println!(
        "   {} stream from {first}; the old primary stopped cleanly before {first} was promoted, \
         so it needed no rewind",
        st.streaming.join(" and ")
    );
    print_status(&c);

    if keep {
        println!("\n== the cluster keeps running; Ctrl-C tears it down");
        println!(
            "   application endpoint (agent app1): psql \"{}\"",
            agent.dsn("postgres")
        );
        for n in &c.nodes {
            println!(
                "   {}: postgres {}  manager http://127.0.0.1:{}/status",
                n.name,
                n.pg.dsn(),
                n.mgr.http_port()
            );
        }
        crate::demo::wait_for_signal(&rt)?;
    }
    println!("\n== tearing down");
    Ok(())
}

/// The crashed primary's Postgres starts again: by its manager, or — if the manager leaves
/// that to the service manager — by us, as systemd would. Either way its manager must then
/// stop it, rewind it and start it as a standby.
fn bring_back(c: &mut TestCluster, node: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if c.node(node).pg.running_pid().is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("   (its manager did not start Postgres: starting it as systemd would)");
    c.node(node).pg.start_again();
    Ok(())
}

/// Every acknowledged row, checked by id on `primary` directly (not through the agent).
fn check_rows(c: &mut TestCluster, primary: &str, acks: &[Ack]) -> anyhow::Result<()> {
    let dsn = c.node(primary).pg.dsn();
    let missing = block_on(|| writer::missing_rows(&dsn, acks))
        .with_context(|| format!("read the rows on {primary}"))?;
    if missing.is_empty() {
        println!(
            "   every one of the {} acknowledged rows is on {primary} (checked row by row)",
            acks.len()
        );
        return Ok(());
    }
    bail!(
        "{} of {} acknowledged rows are missing on {primary}: ids {:?}",
        missing.len(),
        acks.len(),
        &missing[..missing.len().min(20)]
    )
}

fn print_status(c: &TestCluster) {
    println!(
        "   {:<6} {:<4} {:<8} {:<8} {:<9} {:<16} {:<9} timeline",
        "node", "loc", "role", "postgres", "writable", "upstream", "streaming"
    );
    for n in &c.nodes {
        let s = n.mgr.status().unwrap_or_default();
        let r = &s["replica"];
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "-".into(),
            v => v.to_string(),
        };
        println!(
            "   {:<6} {:<4} {:<8} {:<8} {:<9} {:<16} {:<9} {}",
            n.name,
            n.location,
            text(&s["role"]),
            text(&s["postgres"]),
            text(&s["writable"]),
            text(&r["upstream"]),
            text(&r["streaming"]),
            text(&r["timeline"])
        );
    }
}

/// What the application saw from 1 s before `from_ns` on: the writes and the longest pause.
fn report_writes(acks: &[Ack], c: &TestCluster, from_ns: u64, event: &str) {
    let window: Vec<Ack> = acks
        .iter()
        .filter(|a| a.at_ns >= from_ns.saturating_sub(1_000_000_000))
        .copied()
        .collect();
    let before = window.iter().filter(|a| a.at_ns < from_ns).count();
    println!(
        "   application: {} writes acknowledged ({before} in the second before the {event}, {} \
         after)",
        window.len(),
        window.len() - before
    );
    let name_of = |port: i32| {
        c.nodes
            .iter()
            .find(|n| i32::from(n.pg.port()) == port)
            .map_or("?".to_owned(), |n| n.name.clone())
    };
    if let Some((gap, from, to)) = writer::longest_gap(&window) {
        println!(
            "   longest gap between acknowledged writes: {:.0} ms ({} -> {})",
            gap.as_secs_f64() * 1000.0,
            name_of(from.server_port),
            name_of(to.server_port)
        );
    }
}
