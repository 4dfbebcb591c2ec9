//! `cargo xtask demo`: by default a streaming cluster (see `demo_streaming.rs`). With
//! `--replication multi_writer`: a local HARP cluster on loopback — 3 etcd members, 3
//! PostgreSQL 15 instances, 3 harp-managers over two locations, and a harp-agent with an
//! application writing through it — then a leader crash, the failover, and the gap the
//! application saw; a planned switchover an open transaction survives; a killed kernel-path
//! agent whose kernel programs stop on their own at its deadline; and a switchover a session
//! pooled by PgBouncer does not notice.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use harp_tests::agent::{AgentProc, AgentSpec, PinGuard};
use harp_tests::cgroup::ChildCgroup;
use harp_tests::rt::block_on;
use harp_tests::{LeaderWatch, TestCluster};

use crate::writer;

const NODES: [(&str, &str, i32); 3] = [
    ("node1", "dca", 100),
    ("node2", "dca", 90),
    ("node3", "dcb", 100),
];

/// The kind of cluster the demo runs (`cluster.replication`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoReplication {
    /// A primary and 2 physical standbys; a failover promotes one, a switchover hands over.
    #[value(name = "streaming")]
    Streaming,
    /// Independent writable nodes, one lead master per location.
    #[value(name = "multi_writer")]
    MultiWriter,
}

pub fn run(keep: bool, replication: DemoReplication) -> anyhow::Result<()> {
    match replication {
        DemoReplication::Streaming => crate::demo_streaming::run(keep),
        DemoReplication::MultiWriter => run_multi_writer(keep),
    }
}

/// Blocks until Ctrl-C or SIGTERM (`--keep`).
pub fn wait_for_signal(rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })?;
    Ok(())
}

fn run_multi_writer(keep: bool) -> anyhow::Result<()> {
    // The kernel path needs root and the kernel programs; without them the demo shows the
    // userspace proxy.
    let kernel = nix::unistd::geteuid().is_root() && crate::build_ebpf::run().is_ok();
    crate::test::cargo(&["build", "--workspace", "--bins"])?;
    println!(
        "== starting etcd x3, PostgreSQL 15 x3, harp-manager x3 (dca: node1 node2, dcb: node3)"
    );
    let t = Instant::now();
    let mut c = TestCluster::start("demo", &NODES);
    let leaders = |c: &TestCluster| -> anyhow::Result<()> {
        for loc in ["dca", "dcb"] {
            let l = block_on(|| c.wait_leader(loc, |l| l.is_some(), Duration::from_secs(20)))
                .with_context(|| format!("no leader in {loc}\n{}", c.manager_logs(20)))?;
            let (_, token) = block_on(|| c.leader(loc)).context("leader vanished")?;
            println!(
                "   {loc}: lead master {:<6} at {}:{}  (fencing token {token})",
                l.node, l.address, l.port
            );
        }
        Ok(())
    };
    leaders(&c)?;
    println!(
        "   cluster up and leaders elected in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    print_status(&mut c);

    println!(
        "\n== starting harp-agent app1 for dca and an application writing through it every 10 ms"
    );
    for n in ["node1", "node2"] {
        let pg = &c.node(n).pg;
        block_on(|| async {
            let client = pg.connect().await?;
            client
                .batch_execute(
                    "CREATE TABLE harp_demo (id bigserial PRIMARY KEY, \
                     server_port int NOT NULL, at timestamptz NOT NULL DEFAULT now())",
                )
                .await
        })?;
    }
    // Kernel steering only for a child cgroup of the demo's own, never the host.
    let cgroup = kernel.then(ChildCgroup::new);
    let _pins = kernel.then(|| PinGuard::new("demo", "app1"));
    let mut spec = AgentSpec::new("app1", "dca", "demo", c.etcd.endpoints());
    if let Some(cg) = &cgroup {
        spec = spec.ebpf(cg.path());
    }
    let mut agent = AgentProc::start(c.dir(), spec);
    if !agent.wait_ready(Duration::from_secs(20)) {
        bail!("the agent never became ready\n{}", agent.log_tail(30));
    }
    match &cgroup {
        Some(cg) => println!(
            "   agent steers connects to 127.0.0.1:{} from cgroup {} in the kernel (eBPF)",
            agent.listen_port(),
            cg.path().display()
        ),
        None => println!(
            "   agent proxies 127.0.0.1:{} to the lead master of dca (userspace; run as root \
             with the eBPF toolchain for the kernel path)",
            agent.listen_port()
        ),
    }
    let app = writer::App::through(&agent.dsn("postgres"), cgroup.as_ref())?;
    std::thread::sleep(Duration::from_secs(1));

    let (first, _) = block_on(|| c.leader("dca")).context("no dca leader")?;
    // The watch runs in the background on a runtime that lives as long as the demo.
    let rt = tokio::runtime::Runtime::new()?;
    let mut watch = rt.block_on(async { LeaderWatch::start(&c.client().await, "demo").await });
    println!(
        "\n== kill -9 the postmaster of {} (dca's lead master)",
        first.node
    );
    let t = Instant::now();
    let kill_ns = writer::mono_ns();
    c.node(&first.node).pg.kill9();
    let Some((new, at)) =
        rt.block_on(watch.next_leader_not("dca", &first.node, Duration::from_secs(30)))
    else {
        bail!("no new leader in dca\n{}", c.manager_logs(30));
    };
    let took = at.duration_since(t);
    let (_, token) = block_on(|| c.leader("dca")).context("leader vanished")?;
    println!(
        "   new lead master of dca: {} (fencing token {token}), {:.0} ms after the kill",
        new.node,
        took.as_secs_f64() * 1000.0
    );
    std::thread::sleep(Duration::from_secs(1));
    let acks: Vec<_> = app.acks().into_iter().collect();
    report_writes(&acks, &c, kill_ns, writer::mono_ns(), "kill");

    println!(
        "\n== restarting {}'s Postgres: it rejoins as a follower (no flap back)",
        first.node
    );
    c.node(&first.node).pg.start_again();
    let node = first.node.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if c.node(&node)
            .mgr
            .status()
            .is_some_and(|s| s["postgres"] == "primary")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    print_status(&mut c);
    leaders(&c)?;

    println!(
        "\n== harpctl promote {}: planned switchover back, while the application writes",
        first.node
    );
    // A transaction through the proxy, open when the switchover starts: it must commit.
    let open = rt.block_on(open_transaction(&agent.dsn("postgres")))?;
    let from = writer::mono_ns();
    let promote = std::process::Command::new(harp_tests::workspace_bin("harpctl"))
        .args(["-c", "demo", "--dcs", &c.etcd.endpoints().join(",")])
        .args(["promote", &first.node])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    let committed = rt.block_on(open.batch_execute(
        "INSERT INTO harp_demo (server_port) \
         VALUES (inet_server_port()); COMMIT",
    ));
    println!(
        "   a transaction open through the proxy when the switchover began, committed 500 ms \
         later: {}",
        match &committed {
            Ok(()) => "committed (the old leader waited for it)".to_owned(),
            Err(e) => format!("FAILED: {e}"),
        }
    );
    let out = promote.wait_with_output()?;
    print!("   harpctl: {}", String::from_utf8_lossy(&out.stdout));
    println!(
        "   (while a transaction is open the old leader keeps the lease and new requests wait, \
         so the application's gap below includes those 500 ms)"
    );
    if !out.status.success() {
        bail!(
            "harpctl promote failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    report_writes(&app.stop(), &c, from, writer::mono_ns(), "promote");
    match &cgroup {
        Some(cg) => crate::demo_authority::run(&mut c, &mut agent, cg, &rt)?,
        None => println!(
            "\n== (kernel path only, as root) a killed agent's kernel programs stop at its \
             deadline: skipped"
        ),
    }
    crate::demo_pool::run(&c, &rt)?;

    if keep {
        println!("\n== the cluster keeps running; Ctrl-C tears it down");
        println!(
            "   etcd: ETCDCTL_API=3 etcdctl --endpoints={} get --prefix /harp/demo/",
            c.etcd.endpoints().join(",")
        );
        println!(
            "   application endpoint (agent app1): psql \"{}\"  status http://127.0.0.1:{}/status",
            agent.dsn("postgres"),
            agent.http_port()
        );
        for n in &c.nodes {
            println!(
                "   {}: postgres {}  manager http://127.0.0.1:{}/status  log {}",
                n.name,
                n.pg.dsn(),
                n.mgr.http_port(),
                n.mgr.log_path().display()
            );
        }
        wait_for_signal(&rt)?;
    }
    println!("\n== tearing down");
    Ok(())
}

/// A session through the agent's proxy with a transaction open (one row written).
async fn open_transaction(dsn: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client
        .batch_execute("BEGIN; INSERT INTO harp_demo (server_port) VALUES (inet_server_port())")
        .await?;
    Ok(client)
}

fn print_status(c: &mut TestCluster) {
    println!(
        "   {:<6} {:<4} {:<9} {:<8} leader-seen",
        "node", "loc", "role", "postgres"
    );
    for n in &c.nodes {
        let s = n.mgr.status().unwrap_or_default();
        println!(
            "   {:<6} {:<4} {:<9} {:<8} {}",
            n.name,
            n.location,
            s["role"].as_str().unwrap_or("?"),
            s["postgres"].as_str().unwrap_or("?"),
            s["leader"].as_str().unwrap_or("-")
        );
    }
}

/// What the application saw between `from_ns` and `to_ns`: writes before and after `event`
/// and the longest pause.
fn report_writes(acks: &[writer::Ack], c: &TestCluster, from_ns: u64, to_ns: u64, event: &str) {
    let window_start = from_ns.saturating_sub(1_000_000_000);
    let acks: Vec<_> = acks
        .iter()
        .filter(|a| a.at_ns >= window_start && a.at_ns <= to_ns)
        .copied()
        .collect();
    let name_of = |port: i32| {
        c.nodes
            .iter()
            .find(|n| i32::from(n.pg.port()) == port)
            .map_or("?".to_owned(), |n| n.name.clone())
    };
    let before = acks.iter().filter(|a| a.at_ns < from_ns).count();
    let after = acks.len() - before;
    println!(
        "   application: {} writes acknowledged ({before} in the second before the {event}, \
         {after} after)",
        acks.len()
    );
    if let Some((gap, from, to)) = writer::longest_gap(&acks) {
        println!(
            "   longest gap between acknowledged writes: {:.0} ms ({} -> {})",
            gap.as_secs_f64() * 1000.0,
            name_of(from.server_port),
            name_of(to.server_port)
        );
    }
}
