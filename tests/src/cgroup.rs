//! `ChildCgroup`: a cgroup v2 directory of its own for a test, so eBPF programs attached to it
//! see only the processes the test puts there (never the whole host). Dropping it kills those
//! processes and removes the cgroup, which also detaches whatever was still attached to it.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// The cgroup v2 hierarchy of a hybrid-layout host (as this project's machines have).
pub const CGROUP2_HYBRID: &str = "/sys/fs/cgroup/unified";

/// The cgroup v2 root: `/sys/fs/cgroup/unified` on hybrid hosts, else `/sys/fs/cgroup`
/// (a pure cgroup v2 host).
pub fn cgroup2_root() -> PathBuf {
    let hybrid = Path::new(CGROUP2_HYBRID);
    if hybrid.join("cgroup.procs").exists() {
        hybrid.to_path_buf()
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

#[derive(Debug)]
pub struct ChildCgroup {
    path: PathBuf,
}

impl ChildCgroup {
    /// Creates `harp-test-<pid>-<n>` under [`cgroup2_root`] (needs root).
    #[expect(
        clippy::new_without_default,
        reason = "creating a cgroup is a side effect, not a default value"
    )]
    pub fn new() -> ChildCgroup {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = cgroup2_root().join(format!("harp-test-{}-{n}", std::process::id()));
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("create cgroup {}: {e}", path.display()));
        ChildCgroup { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A command that runs `program` inside this cgroup: a shell writes its own pid to
    /// `cgroup.procs`, then execs the program (same pid), so every socket the program creates
    /// belongs to the cgroup. Add arguments with `.arg(..)` as usual.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let procs = self.path.join("cgroup.procs");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"echo $$ > "$HARP_CGROUP_PROCS" && exec "$0" "$@""#)
            .arg(program)
            .env("HARP_CGROUP_PROCS", procs);
        cmd
    }

    /// The pids in the cgroup now.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for ChildCgroup {
    fn drop(&mut self) {
        let me = std::process::id();
        let mut children = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Only this guard's commands ever join the cgroup: every pid listed is ours.
            for pid in self.pids() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                if crate::process::children_of(me).contains(&pid) {
                    children.insert(pid);
                }
            }
            // Reap our own children among them, so no zombie outlives the test.
            children.retain(|&pid| {
                matches!(
                    waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)),
                    Ok(WaitStatus::StillAlive)
                )
            });
            let removed = match std::fs::remove_dir(&self.path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            };
            if removed.is_ok() && children.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                if let Err(e) = removed {
                    eprintln!("cannot remove cgroup {}: {e}", self.path.display());
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
