//! Starting each path's process with its config: harp-agent (userspace or ebpf mode), haproxy,
//! pgbouncer, socat; and what the bench asks of a running one (port, liveness, log, CPU time).

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use harp_tests::cgroup::ChildCgroup;
use harp_tests::postgres::postgres_user;
use harp_tests::process::children_of;
use harp_tests::{AgentProc, ChildGuard, TestCluster, WorkDir, free_port};

use super::client::psql;
use super::kernel::{Counters, KernelAgent};
use super::{LOCATION, PathKind, READY_TIMEOUT, host};

/// How many client sessions each path's process admits at once.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub agent_max_client_conn: u32,
    pub haproxy_maxconn: u32,
    pub pgbouncer_max_client_conn: u32,
    /// pgbouncer's `default_pool_size`: in session mode, one server connection per active client.
    pub pgbouncer_pool_size: u32,
}

impl Limits {
    /// The datapath bench's: the idle sessions plus headroom.
    pub const DATAPATH: Limits = Limits {
        agent_max_client_conn: 1100,
        haproxy_maxconn: 4096,
        pgbouncer_max_client_conn: 2000,
        pgbouncer_pool_size: 50,
    };

    /// Room for `clients` sessions at once, each holding its own server connection (never
    /// below the datapath bench's limits).
    pub fn for_clients(clients: u32) -> Limits {
        let d = Limits::DATAPATH;
        let n = clients + 100;
        Limits {
            agent_max_client_conn: d.agent_max_client_conn.max(n),
            haproxy_maxconn: d.haproxy_maxconn.max(n),
            pgbouncer_max_client_conn: d.pgbouncer_max_client_conn.max(n),
            pgbouncer_pool_size: d.pgbouncer_pool_size.max(n),
        }
    }
}

/// What a path's clients connect to, and the process serving it (none for `direct`).
pub enum Peer {
    Direct(u16),
    Child {
        port: u16,
        guard: ChildGuard,
    },
    Agent(Box<AgentProc>),
    /// The ebpf-mode agent shared by `agent-kernel` (`steered`: the client runs in its cgroup)
    /// and `agent-sockmap` (the client runs outside; the userspace proxy splices).
    Kernel {
        agent: Rc<KernelAgent>,
        steered: bool,
    },
}

/// Starts `path`'s process in the cluster's work dir, proxying to Postgres on `pg_port`, and
/// waits until a session through it answers `SELECT 1`. The kernel paths use `kernel`.
pub fn start(
    path: PathKind,
    cluster: &TestCluster,
    pg_port: u16,
    kernel: Option<&Rc<KernelAgent>>,
    limits: &Limits,
) -> anyhow::Result<Peer> {
    let dir = cluster.dir();
    let mut peer = match path {
        PathKind::Direct => return Ok(Peer::Direct(pg_port)),
        PathKind::AgentUserspace => {
            let mut how = AgentStart::userspace("agent-dca", LOCATION);
            how.max_client_conn = limits.agent_max_client_conn;
            Peer::Agent(Box::new(start_agent(cluster, &how)?))
        }
        PathKind::AgentKernel | PathKind::AgentSockmap => Peer::Kernel {
            agent: kernel
                .context("the kernel paths need the ebpf agent")?
                .clone(),
            steered: path == PathKind::AgentKernel,
        },
        PathKind::Haproxy | PathKind::Pgbouncer | PathKind::Socat => {
            let prog = path.program().expect("an external path has a program");
            let port = free_port();
            let cmd = command(path, dir, port, pg_port, limits)?;
            let guard = ChildGuard::spawn(cmd, prog, &dir.join(format!("{prog}.log")));
            Peer::Child { port, guard }
        }
    };
    peer.wait_accepts(READY_TIMEOUT)
        .with_context(|| format!("{} did not come up", path.name()))?;
    Ok(peer)
}

/// The command line (and config file) of an external path listening on `port`.
fn command(
    path: PathKind,
    dir: &WorkDir,
    port: u16,
    pg_port: u16,
    limits: &Limits,
) -> anyhow::Result<Command> {
    let mut cmd;
    match path {
        PathKind::Haproxy => {
            let cfg = dir.join("haproxy.cfg");
            std::fs::write(
                &cfg,
                format!(
                    "global\n  maxconn {maxconn}\n\n\
                     defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  \
                     timeout server 1h\n\n\
                     listen postgres\n  bind 127.0.0.1:{port}\n  server pg 127.0.0.1:{pg_port}\n",
                    maxconn = limits.haproxy_maxconn,
                ),
            )?;
            cmd = Command::new("haproxy");
            cmd.arg("-db").arg("-f").arg(&cfg);
        }
        // pgbouncer refuses to run as root: it runs as `postgres`, logging to stderr (our log
        // file), with no unix socket and no pid file, so it writes nothing outside the work dir.
        PathKind::Pgbouncer => {
            let cfg = dir.join("pgbouncer.ini");
            std::fs::write(
                &cfg,
                format!(
                    "[databases]\n* = host=127.0.0.1 port={pg_port} user=postgres\n\n\
                     [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
                     unix_socket_dir =\nauth_type = any\npool_mode = session\n\
                     max_client_conn = {max_client}\ndefault_pool_size = {pool}\n\
                     ignore_startup_parameters = extra_float_digits\n\
                     log_connections = 0\nlog_disconnections = 0\nlogfile =\npidfile =\n",
                    max_client = limits.pgbouncer_max_client_conn,
                    pool = limits.pgbouncer_pool_size,
                ),
            )?;
            let (uid, gid) = postgres_user();
            cmd = Command::new("pgbouncer");
            cmd.arg(&cfg)
                .current_dir(dir.path())
                .uid(uid.as_raw())
                .gid(gid.as_raw());
        }
        PathKind::Socat => {
            cmd = Command::new("socat");
            cmd.arg(format!("TCP-LISTEN:{port},fork,reuseaddr,bind=127.0.0.1"))
                .arg(format!("TCP:127.0.0.1:{pg_port}"));
        }
        PathKind::Direct
        | PathKind::AgentUserspace
        | PathKind::AgentKernel
        | PathKind::AgentSockmap => unreachable!("{} runs no external program", path.name()),
    }
    Ok(cmd)
}

/// Which harp-agent to start, and what it must answer before it counts as up.
pub struct AgentStart<'a> {
    pub name: &'a str,
    pub location: &'a str,
    /// Mode ebpf, steering the processes of this child cgroup (never the host's root).
    pub ebpf: Option<&'a ChildCgroup>,
    /// `GET /health/is-ready` (a leader is routed and accepts TCP); else only `/health/is-live`,
    /// for an agent whose leaders are fake addresses nothing may connect to.
    pub routing: bool,
    pub max_client_conn: u32,
}

impl<'a> AgentStart<'a> {
    pub fn userspace(name: &'a str, location: &'a str) -> Self {
        AgentStart {
            name,
            location,
            ebpf: None,
            routing: true,
            max_client_conn: Limits::DATAPATH.agent_max_client_conn,
        }
    }
}

/// Starts harp-agent and waits until it is up (see [`AgentStart::routing`]); `Err` (with its
/// log) if it is not: a broken agent fails the bench rather than being skipped.
pub fn start_agent(cluster: &TestCluster, how: &AgentStart) -> anyhow::Result<AgentProc> {
    // The cluster's own agent spec: with a secure etcd, the agent's user and certificate.
    let mut spec = cluster.agent_spec(how.name, how.location);
    if let Some(cg) = how.ebpf {
        // Splicing too: the agent-sockmap path measures it (it is off by default).
        spec = spec.ebpf(cg.path());
        spec.extra_yaml = "splice: true".into();
    }
    spec.max_client_conn = how.max_client_conn;
    let mut agent = AgentProc::start(cluster.dir(), spec);
    let (up, probe) = if how.routing {
        (agent.wait_ready(READY_TIMEOUT), "/health/is-ready")
    } else {
        (wait_live(&mut agent), "/health/is-live")
    };
    if !up {
        let state = if agent.is_running() {
            format!("not up (GET {probe}) within {READY_TIMEOUT:?}")
        } else {
            "exited before it was up".to_string()
        };
        bail!("harp-agent {} {state}\n{}", how.name, agent.log_tail(30));
    }
    Ok(agent)
}

/// Polls `GET /health/is-live` until it answers 200; `false` on timeout or if the agent exited.
fn wait_live(agent: &mut AgentProc) -> bool {
    let deadline = Instant::now() + READY_TIMEOUT;
    while agent.is_running() && Instant::now() < deadline {
        if agent.http("/health/is-live").is_some_and(|(c, _)| c == 200) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Peer {
    pub fn port(&self) -> u16 {
        match self {
            Peer::Direct(port) | Peer::Child { port, .. } => *port,
            Peer::Agent(a) => a.listen_port(),
            Peer::Kernel { agent, .. } => agent.listen_port(),
        }
    }

    /// The cgroup the path's clients run in: the kernel steers their connects.
    pub fn cgroup(&self) -> Option<&ChildCgroup> {
        match self {
            Peer::Kernel {
                agent,
                steered: true,
            } => Some(agent.cgroup()),
            _ => None,
        }
    }

    /// The ebpf agent's counters now (kernel paths only).
    pub fn kernel_counters(&self) -> anyhow::Result<Option<Counters>> {
        match self {
            Peer::Kernel { agent, .. } => agent.counters().map(Some),
            _ => Ok(None),
        }
    }

    /// Fails unless a run since `before` went the path's kernel way (kernel paths only); the
    /// counters' growth.
    pub fn check_kernel_run(&self, before: Option<Counters>) -> anyhow::Result<Option<Counters>> {
        match (self, before) {
            (Peer::Kernel { agent, steered }, Some(b)) => agent.check_run(b, *steered).map(Some),
            _ => Ok(None),
        }
    }

    pub fn agent(&self) -> Option<&AgentProc> {
        match self {
            Peer::Agent(a) => Some(a),
            _ => None,
        }
    }

    fn name(&self) -> &str {
        match self {
            Peer::Direct(_) => "postgres",
            Peer::Child { guard, .. } => guard.name(),
            Peer::Agent(_) | Peer::Kernel { .. } => "harp-agent",
        }
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        match self {
            Peer::Direct(_) => None,
            Peer::Child { guard, .. } => Some(guard.pid()),
            Peer::Agent(a) => Some(a.pid()),
            Peer::Kernel { agent, .. } => Some(agent.pid()),
        }
    }

    /// The exit status once the process has exited (never for `direct`).
    fn exit_status(&mut self) -> Option<ExitStatus> {
        match self {
            Peer::Direct(_) => None,
            Peer::Child { guard, .. } => guard.exit_status(),
            Peer::Agent(a) => a.wait_exit(Duration::ZERO),
            Peer::Kernel { agent, .. } => agent.exit_status(),
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    pub fn log_tail(&self, n: usize) -> String {
        match self {
            Peer::Direct(_) => String::new(),
            Peer::Child { guard, .. } => guard.log_tail(n),
            Peer::Agent(a) => a.log_tail(n),
            Peer::Kernel { agent, .. } => agent.log_tail(n),
        }
    }

    /// CPU seconds the path's process has used so far (`None` for `direct`). First waits (up to
    /// 2 s) until it has reaped its children, so that socat's per-connection children count.
    pub fn cpu_s(&self) -> anyhow::Result<Option<f64>> {
        let Some(pid) = self.pid() else {
            return Ok(None);
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while !children_of(pid).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        host::cpu_s(pid)
            .map(Some)
            .with_context(|| format!("CPU time of {}", self.name()))
    }

    /// Waits until a Postgres session through the peer answers `SELECT 1`; `Err` if its process
    /// exits or `timeout` passes.
    fn wait_accepts(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let res = psql(self.port(), "SELECT 1");
            if res.is_ok() {
                return Ok(());
            }
            if let Some(st) = self.exit_status() {
                bail!("{} exited ({st})\n{}", self.name(), self.log_tail(30));
            }
            if Instant::now() > deadline {
                bail!(
                    "{} accepts no Postgres session on port {} after {timeout:?}: {:#}\n{}",
                    self.name(),
                    self.port(),
                    res.unwrap_err(),
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
