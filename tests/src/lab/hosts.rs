//! The lab's processes on their hosts, configured by `vagrant/provision/harp-host.sh`.
//!
//! Topology (one bridge, 198.18.0.10.. in host order):
//!
//! | host | runs |
//! | --- | --- |
//! | e1 e2 e3 | etcd members (client :2379, peer :2380) |
//! | n1 n2 (dca), n3 (dcb) | Postgres on :5432 (`cluster_name` = node) + harp-manager (:8080) |
//! | a1 (dca) | harp-agent in kernel mode (steers the lab's child cgroup) on :6432, HTTP :8081 |
//! | a2 (dcb) | harp-agent in userspace mode on :6432, HTTP :8081 |
//! | ctl | nothing: the controller/observer's vantage point on the bridge |
//!
//! Dropping the [`Lab`] kills every process, removes the agent's pins and the cgroup, the
//! namespaces and the work dir (kept with `HARP_KEEP=1`), even when a test panics.

mod observe;
mod probe;
mod proc;
mod provision;
mod roles;
mod streaming;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub use crate::etcd::etcd_user;
pub use probe::{etcd_answers, http_get, pg_query_one, tcp_open, wait_until};
pub use proc::{HostProc, Kind, Recipe};
pub use provision::{configure, read_env_file, script_path};

use harp_core::config::{Replication, SynchronousMode};

use crate::agent::PinGuard;
use crate::cgroup::ChildCgroup;
use crate::lab::net::{Enter, LabError, Net};
use crate::workdir::WorkDir;
use roles::AgentPlan;

pub const ETCD_HOSTS: [&str; 3] = ["e1", "e2", "e3"];
/// `(node, location, priority)`: n1 leads dca unless it cannot.
pub const PG_NODES: [(&str, &str, i32); 3] =
    [("n1", "dca", 100), ("n2", "dca", 90), ("n3", "dcb", 100)];
pub const APP_HOSTS: [(&str, &str, AgentMode); 2] = [
    ("a1", "dca", AgentMode::Kernel),
    // Both in dca, the location with two nodes, so both paths live through failovers.
    ("a2", "dca", AgentMode::Userspace),
];
pub const CTL: &str = "ctl";
pub const LOCATIONS: [&str; 2] = ["dca", "dcb"];

pub const ETCD_PORT: u16 = 2379;
pub const PG_PORT: u16 = 5432;
pub const MANAGER_HTTP_PORT: u16 = 8080;
pub const AGENT_PORT: u16 = 6432;
pub const AGENT_HTTP_PORT: u16 = 8081;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentMode {
    /// `proxy.mode: ebpf`: clients in the lab's cgroup are steered by connect4.
    Kernel,
    Userspace,
}

/// Tunables of a lab; [`LabSpec::new`] gives real deployments' lease with quick etcd raft.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// `[a-z0-9]{1,12}`: namespaces are `hl-<name>-<host>`, the HARP cluster `hl-<name>`.
    pub name: String,
    pub lease_secs: u64,
    pub refresh_ms: u64,
    pub pause_timeout_ms: u64,
    pub etcd_heartbeat_ms: u64,
    pub etcd_election_ms: u64,
    /// Bound on each readiness wait at start and restart.
    pub ready_timeout: Duration,
    /// `cluster.replication` of the lab's nodes. Streaming: n1 the primary, n2 and n3
    /// standbys made from it with pg_basebackup over the lab network, one leader key for the
    /// whole cluster.
    pub replication: Replication,
    /// `cluster.synchronous_mode` of a streaming lab (ignored, and reported `off`, in a
    /// multi-writer one).
    pub synchronous_mode: SynchronousMode,
    /// etcd over TLS only (client and peer links), client certificates required, and etcd
    /// users on: each manager and agent its own least-privilege user, harpctl the admin, the
    /// lab's own observers root by certificate. Off: plaintext etcd with no users.
    pub etcd_tls: bool,
}

impl LabSpec {
    pub fn new(name: &str) -> LabSpec {
        LabSpec {
            name: name.to_string(),
            lease_secs: 6,
            refresh_ms: 2000,
            pause_timeout_ms: 10_000,
            etcd_heartbeat_ms: 100,
            etcd_election_ms: 1000,
            ready_timeout: Duration::from_secs(30),
            replication: Replication::MultiWriter,
            synchronous_mode: SynchronousMode::On,
            etcd_tls: true,
        }
    }

    /// The `synchronous_mode` the lab's nodes run with (`off` when multi-writer).
    pub fn effective_synchronous_mode(&self) -> SynchronousMode {
        match self.replication {
            Replication::MultiWriter => SynchronousMode::Off,
            Replication::Streaming => self.synchronous_mode,
        }
    }

    /// The HARP cluster name (also names the kernel agent's pins).
    pub fn cluster(&self) -> String {
        format!("hl-{}", self.name)
    }

    /// The leader keys the lab's nodes compete for: each location's in a multi-writer
    /// cluster, the cluster's own in a streaming one.
    pub fn scopes(&self) -> Vec<String> {
        match self.replication {
            Replication::MultiWriter => LOCATIONS.iter().map(|l| l.to_string()).collect(),
            Replication::Streaming => vec![self.cluster()],
        }
    }

    /// Every host, in address order.
    pub fn hosts() -> Vec<&'static str> {
        let mut h: Vec<&str> = ETCD_HOSTS.to_vec();
        h.extend(PG_NODES.iter().map(|n| n.0));
        h.extend(APP_HOSTS.iter().map(|a| a.0));
        h.push(CTL);
        h
    }
}

#[derive(Debug)]
pub struct Lab {
    // Field order is drop order: clients' routes first, the network and files last.
    agents: Vec<HostProc>,
    _pins: Vec<PinGuard>,
    managers: Vec<HostProc>,
    postgres: Vec<HostProc>,
    etcd: Vec<HostProc>,
    cgroup: ChildCgroup,
    net: Net,
    spec: LabSpec,
    /// harpctl's config on the `ctl` host (`harp-host.sh ctl configure`).
    harpctl_config: std::path::PathBuf,
    /// [`Lab::etcd_options`], read once: probes ask for them every 100 ms.
    etcd_root: etcd_client::ConnectOptions,
    dir: WorkDir,
}

impl Lab {
    /// Builds the network, starts every process and waits until each answers (etcd members,
    /// Postgres, managers' HTTP, agents ready — which needs a leader in their location).
    ///
    /// Streaming: n1's Postgres is the primary, n2's and n3's standbys cloned from it with
    /// `pg_basebackup -R` on their hosts; n1's manager starts and takes the lease before the
    /// others start (as in a real bootstrap), and the lab is up once every standby streams.
    pub fn start(spec: LabSpec) -> Result<Lab, LabError> {
        let streaming = spec.replication == Replication::Streaming;
        let primary = PG_NODES[0].0;
        let net = Net::setup(&spec.name, &LabSpec::hosts())?;
        let dir = WorkDir::new();
        let cgroup = ChildCgroup::new();
        let mut lab = Lab {
            agents: Vec::new(),
            _pins: Vec::new(),
            managers: Vec::new(),
            postgres: Vec::new(),
            etcd: Vec::new(),
            cgroup,
            net,
            spec,
            harpctl_config: Default::default(),
            etcd_root: crate::etcd::etcd_connect_options(),
            dir,
        };
        if lab.spec.etcd_tls {
            roles::make_lab_pki(&lab.net, &lab.spec, lab.dir.path())?;
            lab.etcd_root = lab.etcd_options_as("root");
        }
        lab.harpctl_config = roles::configure_ctl(&lab.net, &lab.spec, lab.dir.path(), CTL)?;
        for h in ETCD_HOSTS {
            let p = roles::start_etcd(&lab.net, &lab.spec, lab.dir.path(), h)?;
            lab.etcd.push(p);
        }
        for h in ETCD_HOSTS {
            lab.wait_ready(Kind::Etcd, h)?;
        }
        if lab.spec.etcd_tls {
            roles::make_etcd_users(&lab.net, &lab.spec, lab.dir.path())?;
        }
        let mut manager_recipes = Vec::new();
        for node in PG_NODES {
            let standby_of = (streaming && node.0 != primary).then_some(primary);
            let (pg, mgr) =
                roles::start_postgres(&lab.net, &lab.spec, lab.dir.path(), node, standby_of)?;
            lab.postgres.push(pg);
            if streaming {
                // The standbys are cloned from a running primary.
                lab.wait_ready(Kind::Postgres, node.0)?;
            }
            manager_recipes.push((node.0, mgr));
        }
        for (h, recipe) in manager_recipes {
            lab.wait_ready(Kind::Postgres, h)?;
            let m = roles::start_manager(&lab.net, h, lab.dir.path(), recipe)?;
            lab.managers.push(m);
            if streaming && h == primary {
                lab.wait_ready(Kind::Manager, h)?;
                let scope = lab.spec.cluster();
                wait_until(
                    &format!("{h} leading {scope}"),
                    lab.spec.ready_timeout,
                    || match lab.leader(&scope) {
                        Ok(Some((l, _))) if l.node == h && l.routable() => Ok(()),
                        other => Err(format!("leader: {other:?}")),
                    },
                )?;
            }
        }
        for (h, _, _) in PG_NODES {
            lab.wait_ready(Kind::Manager, h)?;
        }
        for (h, location, mode) in APP_HOSTS {
            if mode == AgentMode::Kernel {
                // Pins left by a crashed run of this lab would be adopted: start clean.
                let pins = PinGuard::new(&lab.spec.cluster(), h);
                let _ = std::fs::remove_dir_all(pins.path());
                lab._pins.push(pins);
            }
            let plan = AgentPlan {
                host: h,
                location,
                mode,
                cgroup: lab.cgroup.path(),
            };
            let a = roles::start_agent(&lab.net, &lab.spec, lab.dir.path(), &plan)?;
            lab.agents.push(a);
        }
        for (h, _, _) in APP_HOSTS {
            lab.wait_ready(Kind::Agent, h)?;
        }
        if streaming {
            lab.wait_streaming(lab.spec.ready_timeout)?;
        }
        Ok(lab)
    }

    pub fn net(&self) -> &Net {
        &self.net
    }

    pub fn spec(&self) -> &LabSpec {
        &self.spec
    }

    pub fn cluster(&self) -> String {
        self.spec.cluster()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The cgroup whose processes the kernel agent (a1) steers.
    pub fn cgroup(&self) -> &ChildCgroup {
        &self.cgroup
    }

    /// The process of `kind` on `host`.
    pub fn process(&mut self, kind: Kind, host: &str) -> Result<&mut HostProc, LabError> {
        let list = match kind {
            Kind::Etcd => &mut self.etcd,
            Kind::Postgres => &mut self.postgres,
            Kind::Manager => &mut self.managers,
            Kind::Agent => &mut self.agents,
        };
        list.iter_mut()
            .find(|p| p.host() == host)
            .ok_or_else(|| LabError::UnknownHost(format!("{host} (no {kind} there)")))
    }

    /// Every process, for faults that pick one.
    pub fn processes(&mut self) -> impl Iterator<Item = &mut HostProc> {
        self.etcd
            .iter_mut()
            .chain(&mut self.postgres)
            .chain(&mut self.managers)
            .chain(&mut self.agents)
    }

    /// `ip:2379` of every member.
    pub fn etcd_endpoints(&self) -> Vec<String> {
        ETCD_HOSTS
            .iter()
            .filter_map(|h| self.net.host(h).ok())
            .map(|h| format!("{}:{ETCD_PORT}", h.ip))
            .collect()
    }

    /// The lab's own etcd client options (observers, probes): short timeouts, and with
    /// [`LabSpec::etcd_tls`] the lab's CA and root's client certificate (etcd takes its common
    /// name as the user).
    pub fn etcd_options(&self) -> etcd_client::ConnectOptions {
        self.etcd_root.clone()
    }

    /// [`Lab::etcd_options`] as etcd user `user` (see [`etcd_user`]): its client certificate,
    /// and for any user but root its password.
    pub fn etcd_options_as(&self, user: &str) -> etcd_client::ConnectOptions {
        let opts = crate::etcd::etcd_connect_options();
        if !self.spec.etcd_tls {
            return opts;
        }
        let pki = roles::pki_dir(self.dir.path());
        let read = |f: &str| std::fs::read(pki.join(f)).unwrap_or_default();
        let tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read("ca.pem")))
            .identity(etcd_client::Identity::from_pem(
                read(&format!("{user}.pem")),
                read(&format!("{user}.key")),
            ));
        let opts = opts.with_tls(tls);
        match user {
            "root" => opts,
            _ => {
                let password =
                    String::from_utf8(read(&format!("passwords/{user}"))).unwrap_or_default();
                opts.with_user(user, password.trim())
            }
        }
    }

    /// `harpctl.yml` of the `ctl` host: the cluster, etcd and (with TLS) the admin user.
    pub fn harpctl_config(&self) -> &Path {
        &self.harpctl_config
    }

    /// libpq DSN of the agent on app host `app` (what clients use).
    pub fn agent_dsn(&self, app: &str) -> Result<String, LabError> {
        let ip = self.net.host(app)?.ip;
        Ok(format!(
            "host={ip} port={AGENT_PORT} user=postgres dbname=postgres connect_timeout=5"
        ))
    }

    /// libpq DSN of node `node`'s Postgres (direct, bypassing HARP).
    pub fn node_dsn(&self, node: &str) -> Result<String, LabError> {
        let ip = self.net.host(node)?.ip;
        Ok(format!(
            "host={ip} port={PG_PORT} user=postgres dbname=postgres connect_timeout=5"
        ))
    }

    /// A client command on app host `app`: in its namespace, and for the kernel agent's host
    /// also in the steered cgroup (else its connects would go through the proxy).
    pub fn client_command(
        &self,
        app: &str,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Result<Command, LabError> {
        let kernel = APP_HOSTS
            .iter()
            .any(|&(h, _, m)| h == app && m == AgentMode::Kernel);
        let enter = Enter {
            cgroup: kernel.then(|| self.cgroup.path().to_path_buf()),
            user: None,
        };
        self.net.command_with(app, program, &enter)
    }

    /// Runs `f` on the `ctl` host (see [`Net::run_in`]).
    pub fn on_ctl<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, LabError> {
        self.net.run_in(CTL, f)
    }
}
