//! No route outlives its authority. An agent frozen (SIGSTOP) or killed while it routes to a
//! leader that is then replaced must not let one more request reach that leader: the
//! userspace relay checks the leadership and its trust deadline before every write, and the
//! kernel entries carry the deadline themselves (a dead agent cannot cut anything).
//!
//! Every node is an independent, writable Postgres (multi-writer), so a request that reaches
//! the old leader runs there: each test counts the rows on it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use harp_tests::TestCluster;
use harp_tests::agent::{AgentProc, AgentSpec, PinGuard};
use harp_tests::cgroup::ChildCgroup;
use harp_tests::postgres::pg_bin_dir;
use harp_tests::require_root;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Agents trust etcd for at most 3 s − margin after their last acknowledged keep-alive.
const TTL: &str = "leader_lease_duration: 3\nlease_refresh_interval: 500";
/// Longer than any agent's trust: a process resumed after it must find its authority gone.
const LONG_FREEZE: Duration = Duration::from_secs(5);
const SESSIONS: usize = 10;

/// An interactive psql whose statements go one per line; its output comes through a channel.
struct Psql {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Psql {
    fn open(mut cmd: Command, dsn: &str) -> Psql {
        let mut child = cmd
            .args(["-X", "-At", "-d", dsn])
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn psql");
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Psql {
            child,
            stdin,
            lines,
        }
    }

    fn send(&mut self, sql: &str) {
        let _ = writeln!(self.stdin, "{sql}");
    }

    /// The port of the server this session is connected to.
    fn server_port(&mut self) -> u16 {
        self.send("SELECT inet_server_port();");
        let line = self
            .lines
            .recv_timeout(LONG)
            .expect("psql answered nothing");
        line.parse()
            .unwrap_or_else(|_| panic!("psql said {line:?}"))
    }
}

impl Drop for Psql {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sql(c: &mut TestCluster, node: &str, query: &str) -> Vec<String> {
    let pg = &c.node(node).pg;
    harp_tests::rt::block_on(|| async {
        let client = pg.connect().await.expect("connect to a node directly");
        client
            .simple_query(query)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .collect()
    })
}

fn cluster(name: &str) -> TestCluster {
    let mut c = TestCluster::builder(name)
        .lease_secs(3)
        .refresh_ms(500)
        .node("n1", "dca", 100)
        .node("n2", "dca", 90)
        .start();
    for n in ["n1", "n2"] {
        sql(&mut c, n, "CREATE TABLE queued (session int)");
    }
    c
}

/// Opens [`SESSIONS`] sessions through `agent`, all on `leader`, as `cmd` makes psql.
fn sessions(
    c: &mut TestCluster,
    leader: &str,
    mut cmd: impl FnMut() -> Command,
    dsn: &str,
) -> Vec<Psql> {
    let port = c.node(leader).pg.port();
    (0..SESSIONS)
        .map(|_| {
            let mut s = Psql::open(cmd(), dsn);
            assert_eq!(s.server_port(), port, "a session did not reach the leader");
            s
        })
        .collect()
}

/// Queues one INSERT per session (each names its session) while the agent cannot relay.
fn queue_inserts(sessions: &mut [Psql]) {
    for (i, s) in sessions.iter_mut().enumerate() {
        s.send(&format!("INSERT INTO queued VALUES ({i});"));
    }
}

fn rows(c: &mut TestCluster, node: &str) -> Vec<String> {
    sql(c, node, "SELECT session FROM queued ORDER BY session")
}

/// `SELECT 1` from 8 pgbench clients through `agent`, for 20 s at most.
fn load(c: &TestCluster, agent: &AgentProc) -> Load {
    let script = c.dir().path().join("select1.sql");
    std::fs::write(&script, "SELECT 1;\n").unwrap();
    let child = Command::new(pg_bin_dir().join("pgbench"))
        .args(["-n", "-c", "8", "-j", "2", "-T", "20", "-f"])
        .arg(&script)
        .args(["-d", &agent.dsn("postgres")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pgbench");
    std::thread::sleep(Duration::from_millis(500));
    Load(child)
}

struct Load(Child);

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn freeze(a: &AgentProc) -> Pid {
    let pid = Pid::from_raw(a.pid() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    pid
}

#[test]
fn a_frozen_userspace_agent_relays_no_queued_request_to_a_fenced_leader() {
    let c = cluster("frzuser");
    let mut spec = AgentSpec::new("p1", "dca", c.name(), c.etcd.endpoints());
    spec.extra_yaml = TTL.into();
    frozen_proxy_across_a_fence(c, spec, Queue::BeforeTheFence);
}

/// The proxy's sessions spliced in the kernel: the verdict program moves client bytes only
/// while their leadership stands, so a frozen agent's spliced sessions deliver nothing either.
#[test]
fn a_frozen_agent_splices_no_queued_request_to_a_fenced_leader() {
    if !require_root("authority::a_frozen_agent_splices_nothing") {
        return;
    }
    let c = cluster("frzsplice");
    let cgroup = ChildCgroup::new();
    let _pins = PinGuard::new(c.name(), "p1");
    let mut spec = AgentSpec::new("p1", "dca", c.name(), c.etcd.endpoints()).ebpf(cgroup.path());
    spec.extra_yaml = format!("{TTL}\nsplice: true");
    // Before the fence the kernel moves the bytes at once, to the leader of the moment: the
    // requests that matter are those sent once the frozen agent's deadline has passed.
    frozen_proxy_across_a_fence(c, spec, Queue::PastTheDeadline);
}

/// When the clients send their INSERTs while the agent is frozen.
#[derive(PartialEq)]
enum Queue {
    BeforeTheFence,
    PastTheDeadline,
}

/// Sessions through the agent's proxy (from outside any steered cgroup) on the leader; the
/// agent freezes, an INSERT is queued in each (`when`), the leader is fenced and another
/// leads; the agent resumes past its deadline. None of the INSERTs runs anywhere.
fn frozen_proxy_across_a_fence(mut c: TestCluster, spec: AgentSpec, when: Queue) {
    let old = wait_leader_not(&c, "dca", None);
    let mut agent = AgentProc::start(c.dir(), spec);
    assert!(agent.wait_ready(LONG), "{}", agent.log_tail(30));
    let dsn = agent.dsn("postgres");
    let psql = || Command::new(pg_bin_dir().join("psql"));
    let mut open = sessions(&mut c, &old.node, psql, &dsn);
    // A busy agent: on resume, many relay tasks are ready before its decision loop runs.
    let _load = load(&c, &agent);

    let pid = freeze(&agent);
    if when == Queue::BeforeTheFence {
        queue_inserts(&mut open);
    }
    set_fenced(&c, &old.node, true);
    let new = wait_leader_not(&c, "dca", Some(&old.node));
    std::thread::sleep(LONG_FREEZE);
    if when == Queue::PastTheDeadline {
        queue_inserts(&mut open);
        std::thread::sleep(Duration::from_secs(1));
    }
    kill(pid, Signal::SIGCONT).unwrap();
    // The resumed relays run before the decision loop: only their own check stops them.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        rows(&mut c, &old.node),
        Vec::<String>::new(),
        "requests queued in the frozen agent ran on the fenced leader\n{}",
        agent.log_tail(20)
    );
    assert_eq!(rows(&mut c, &new.node), Vec::<String>::new());
    // The agent lives on and routes the new leader.
    assert!(eventually(LONG, || {
        let mut s = Psql::open(psql(), &dsn);
        s.server_port() == c.node(&new.node).pg.port()
    }));
}

struct KernelSetup {
    agent: AgentProc,
    _pins: PinGuard,
    cgroup: ChildCgroup,
    c: TestCluster,
}

fn kernel_setup(name: &str) -> KernelSetup {
    let c = cluster(name);
    let cgroup = ChildCgroup::new();
    let mut spec = AgentSpec::new("k1", "dca", c.name(), c.etcd.endpoints()).ebpf(cgroup.path());
    spec.extra_yaml = TTL.into();
    let pins = PinGuard::new(name, "k1");
    let mut agent = AgentProc::start(c.dir(), spec);
    assert!(agent.wait_ready(LONG), "{}", agent.log_tail(30));
    KernelSetup {
        agent,
        _pins: pins,
        cgroup,
        c,
    }
}

/// The kernel-path agent stops (killed or frozen) while its cgroup's clients are steered to
/// the leader; the leader is fenced and another node leads. Past the agent's deadline no
/// process of the cgroup reaches the old leader: its steered sessions deliver nothing more,
/// and a new connect is not steered there.
fn kernel_agent_stopped_across_a_failover(name: &str, how: Signal) {
    let mut s = kernel_setup(name);
    let old = wait_leader_not(&s.c, "dca", None);
    let dsn = s.agent.dsn("postgres");
    let cgroup = &s.cgroup;
    let psql = || cgroup.command(pg_bin_dir().join("psql"));
    let mut open = sessions(&mut s.c, &old.node, psql, &dsn);
    let pid = Pid::from_raw(s.agent.pid() as i32);
    kill(pid, how).unwrap();
    set_fenced(&s.c, &old.node, true);
    let new = wait_leader_not(&s.c, "dca", Some(&old.node));
    // The deadline is at most one lease after the agent's last keep-alive.
    std::thread::sleep(Duration::from_secs(3));
    queue_inserts(&mut open);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        rows(&mut s.c, &old.node),
        Vec::<String>::new(),
        "steered sessions wrote to the fenced leader after their agent's deadline"
    );
    let fresh = cgroup
        .command(pg_bin_dir().join("psql"))
        .args(["-X", "-At", "-d", &dsn, "-c", "SELECT inet_server_port()"])
        .env("PGCONNECT_TIMEOUT", "2")
        .output()
        .expect("psql");
    let port = String::from_utf8_lossy(&fresh.stdout).trim().to_owned();
    assert_ne!(
        port,
        s.c.node(&old.node).pg.port().to_string(),
        "a new connect from the cgroup reached the fenced leader"
    );
    if how == Signal::SIGSTOP {
        kill(pid, Signal::SIGCONT).unwrap();
        // Resumed, the agent routes the new leader again.
        let new_port = s.c.node(&new.node).pg.port().to_string();
        assert!(eventually(LONG, || {
            let o = cgroup
                .command(pg_bin_dir().join("psql"))
                .args(["-X", "-At", "-d", &dsn, "-c", "SELECT inet_server_port()"])
                .output()
                .expect("psql");
            String::from_utf8_lossy(&o.stdout).trim() == new_port
        }));
    } else {
        assert!(!fresh.status.success(), "no agent: the connect is refused");
    }
    drop(open);
}

#[test]
fn a_dead_kernel_agent_lets_nothing_reach_a_replaced_leader() {
    if !require_root("authority::a_dead_kernel_agent") {
        return;
    }
    kernel_agent_stopped_across_a_failover("kdead", Signal::SIGKILL);
}

#[test]
fn a_frozen_kernel_agent_lets_nothing_reach_a_replaced_leader() {
    if !require_root("authority::a_frozen_kernel_agent") {
        return;
    }
    kernel_agent_stopped_across_a_failover("kfrozen", Signal::SIGSTOP);
}
