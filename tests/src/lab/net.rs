//! Hosts as network namespaces joined by one bridge.
//!
//! Each host is the namespace `hl-<lab>-<host>` with `lo` and `eth0` (198.18.0.<10+i>/24). The
//! switch is the namespace `hl-<lab>-sw`: bridge `br0` and one veth `v-<host>` per host — the
//! host's "cable", where faults cut, drop and shape (see `faults`). Nothing is configured in
//! the machine's own namespace. Setup first removes what a crashed run of the same lab left;
//! dropping the [`Net`] removes every namespace it made.

mod error;

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sched::{CloneFlags, setns};
use nix::unistd::{Gid, Uid};

pub use error::LabError;
pub(crate) use error::{ip, run};

/// Where `ip netns` keeps its namespaces.
const NETNS_DIR: &str = "/run/netns";
/// The bridge in the switch namespace.
pub const BRIDGE: &str = "br0";
/// The host side of each host's veth.
pub const HOST_IF: &str = "eth0";

/// One host of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    /// The network namespace: `hl-<lab>-<name>`.
    pub ns: String,
    pub ip: Ipv4Addr,
    /// The switch side of its veth (in the switch namespace): `v-<name>`.
    pub port: String,
}

impl Host {
    pub fn ns_path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.ns)
    }
}

/// How a command enters its host beyond the network namespace.
#[derive(Debug, Clone, Default)]
pub struct Enter {
    /// A cgroup v2 directory the child joins before it execs (e.g. a `ChildCgroup` that an
    /// ebpf-mode agent steers), so every socket it makes belongs to that cgroup.
    pub cgroup: Option<PathBuf>,
    /// Drop to this user (e.g. `postgres`) after entering the namespace (which needs root).
    pub user: Option<(Uid, Gid)>,
}

#[derive(Debug)]
pub struct Net {
    lab: String,
    switch: String,
    hosts: Vec<Host>,
}

/// `hl-<lab>-`: the prefix of every namespace of `lab`.
fn prefix(lab: &str) -> String {
    format!("hl-{lab}-")
}

impl Net {
    /// Builds the namespaces, bridge, veths and addresses of `hosts` (after removing leftovers
    /// of an earlier run of `lab`).
    pub fn setup(lab: &str, hosts: &[&str]) -> Result<Net, LabError> {
        error::require_root()?;
        error::check_name(lab)?;
        for (i, h) in hosts.iter().enumerate() {
            error::check_name(h)?;
            // `sw` names the switch; a name twice would be one namespace for two hosts.
            if *h == "sw" || hosts[..i].contains(h) {
                return Err(LabError::BadName(h.to_string()));
            }
        }
        if hosts.len() > 200 {
            return Err(LabError::TooManyHosts(hosts.len()));
        }
        Net::cleanup_stale(lab)?;
        let mut net = Net {
            lab: lab.to_string(),
            switch: format!("{}sw", prefix(lab)),
            hosts: Vec::new(),
        };
        // From here on, a failure drops `net`, which removes what was made so far.
        let sw = net.switch.clone();
        ip(&["netns", "add", &sw])?;
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;
        ip(&["-n", &sw, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", BRIDGE, "up"])?;
        for (i, name) in hosts.iter().enumerate() {
            let host = Host {
                name: name.to_string(),
                ns: format!("{}{name}", prefix(lab)),
                ip: Ipv4Addr::new(198, 18, 0, 10 + i as u8),
                port: format!("v-{name}"),
            };
            ip(&["netns", "add", &host.ns])?;
            net.hosts.push(host.clone());
            let (ns, port) = (host.ns.as_str(), host.port.as_str());
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &sw, "link", "add", port, "type", "veth", "peer", "name", HOST_IF, "netns",
                ns,
            ])?;
            ip(&["-n", &sw, "link", "set", port, "master", BRIDGE])?;
            ip(&["-n", &sw, "link", "set", port, "up"])?;
            let cidr = format!("{}/24", host.ip);
            ip(&["-n", ns, "addr", "add", &cidr, "dev", HOST_IF])?;
            ip(&["-n", ns, "link", "set", HOST_IF, "up"])?;
        }
        Ok(net)
    }

    /// Removes every namespace `hl-<lab>-*` (left by a run that crashed before its drop).
    pub fn cleanup_stale(lab: &str) -> Result<(), LabError> {
        error::require_root()?;
        error::check_name(lab)?;
        for ns in lab_namespaces(lab) {
            ip(&["netns", "del", &ns])?;
        }
        Ok(())
    }

    pub fn lab(&self) -> &str {
        &self.lab
    }

    /// The switch namespace (`hl-<lab>-sw`), holding the bridge and the hosts' cables.
    pub fn switch_ns(&self) -> &str {
        &self.switch
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn host(&self, name: &str) -> Result<&Host, LabError> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| LabError::UnknownHost(name.to_string()))
    }

    /// A command whose child runs `program` in `host`'s network namespace. It enters with
    /// `setns` before exec — unlike `ip netns exec`, which remounts /sys and so hides the
    /// cgroup and bpf filesystems.
    pub fn command(&self, host: &str, program: impl AsRef<OsStr>) -> Result<Command, LabError> {
        self.command_with(host, program, &Enter::default())
    }

    /// [`Net::command`] that also joins a cgroup and/or drops to a user (see [`Enter`]).
    pub fn command_with(
        &self,
        host: &str,
        program: impl AsRef<OsStr>,
        enter: &Enter,
    ) -> Result<Command, LabError> {
        ns_command(&self.host(host)?.ns_path(), program, enter)
    }

    /// Runs `f` on a fresh thread inside `host`'s network namespace and returns its result
    /// (threads and runtimes `f` starts inherit the namespace). Panics in `f` propagate.
    pub fn run_in<T: Send>(&self, host: &str, f: impl FnOnce() -> T + Send) -> Result<T, LabError> {
        let ns = self.open_ns(host)?;
        let what = format!("setns into {}", self.host(host)?.ns);
        std::thread::scope(|s| {
            s.spawn(move || {
                setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| LabError::io(what, e.into()))?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    fn open_ns(&self, host: &str) -> Result<OwnedFd, LabError> {
        let path = self.host(host)?.ns_path();
        File::open(&path)
            .map(OwnedFd::from)
            .map_err(|e| LabError::io(format!("open {}", path.display()), e))
    }

    /// Removes the namespaces (and with them the bridge, veths, rules and qdiscs). Processes
    /// still running in a namespace keep it alive until they exit: stop them first.
    pub fn teardown(&mut self) -> Result<(), LabError> {
        let mut first_err = None;
        for ns in lab_namespaces(&self.lab) {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                first_err.get_or_insert(e);
            }
        }
        self.hosts.clear();
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("lab {}: teardown: {e}", self.lab);
        }
    }
}

/// [`Net::command_with`] by namespace path: for handles that outlive a borrow of the [`Net`].
pub fn ns_command(
    ns_path: &Path,
    program: impl AsRef<OsStr>,
    enter: &Enter,
) -> Result<Command, LabError> {
    let ns = File::open(ns_path)
        .map(OwnedFd::from)
        .map_err(|e| LabError::io(format!("open {}", ns_path.display()), e))?;
    let procs: Option<OwnedFd> = match &enter.cgroup {
        Some(cg) => {
            let path = cg.join("cgroup.procs");
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| LabError::io(format!("open {}", path.display()), e))?;
            Some(file.into())
        }
        None => None,
    };
    let mut cmd = Command::new(program);
    set_enter_hook(&mut cmd, ns, procs, enter.user);
    Ok(cmd)
}

/// The names of the namespaces `hl-<lab>-*` that exist now.
pub fn lab_namespaces(lab: &str) -> Vec<String> {
    let prefix = prefix(lab);
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    names.sort();
    names
}

#[expect(
    unsafe_code,
    reason = "pre_exec runs between fork and exec: the hook only makes raw syscalls"
)]
fn set_enter_hook(
    cmd: &mut Command,
    ns: OwnedFd,
    procs: Option<OwnedFd>,
    user: Option<(Uid, Gid)>,
) {
    // SAFETY: the hook allocates nothing and takes no lock: it makes syscalls on fds opened
    // before the fork, which is what the child of a multi-threaded parent may do.
    unsafe {
        cmd.pre_exec(move || enter_child(&ns, procs.as_ref(), user));
    }
}

/// In the forked child: join the cgroup (by an fd opened before the fork), enter the netns,
/// then drop privileges — in that order, since the last two need root.
fn enter_child(
    ns: &OwnedFd,
    procs: Option<&OwnedFd>,
    user: Option<(Uid, Gid)>,
) -> std::io::Result<()> {
    if let Some(fd) = procs {
        // "0" names the writing process itself.
        nix::unistd::write(fd, b"0")?;
    }
    setns(ns, CloneFlags::CLONE_NEWNET)?;
    if let Some((uid, gid)) = user {
        nix::unistd::setgroups(&[gid])?;
        nix::unistd::setgid(gid)?;
        nix::unistd::setuid(uid)?;
    }
    Ok(())
}
