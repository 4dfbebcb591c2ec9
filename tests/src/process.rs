//! `ChildGuard`: a child process whose output goes to a log file and which is killed and reaped
//! on drop. Signals only ever go to the guard's own, not yet reaped, child.
//!
//! The first spawn makes this process a child subreaper, so that processes orphaned by a child
//! we killed (e.g. Postgres backends after `kill -9` of their postmaster) are re-parented to us
//! instead of to PID 1, which on some machines never reaps them; [`reap_orphans`] reaps them.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// PIDs of guarded children not yet reaped: [`reap_orphans`] never touches these.
static LIVE: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

fn live() -> MutexGuard<'static, BTreeSet<u32>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            eprintln!("harp-tests: cannot become child subreaper: {e}");
        }
    });
}

#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    name: String,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin from /dev/null and stdout+stderr appended to `log`.
    pub fn spawn(mut cmd: Command, name: &str, log: &Path) -> ChildGuard {
        become_subreaper();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open log {}: {e}", log.display()));
        let _ = writeln!(file, "==== harp-tests: starting {name}: {cmd:?}");
        let err = file.try_clone().expect("clone log file handle");
        cmd.stdin(Stdio::null()).stdout(file).stderr(err);
        let mut live = live();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({:?}): {e}", cmd.get_program()));
        live.insert(child.id());
        drop(live);
        ChildGuard {
            child,
            name: name.to_string(),
            log: log.to_path_buf(),
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the log, for panic messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    fn try_reap(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            match self.child.try_wait() {
                Ok(Some(st)) => {
                    self.status = Some(st);
                    live().remove(&self.child.id());
                }
                Ok(None) => {}
                Err(e) => panic!("try_wait {} (pid {}): {e}", self.name, self.pid()),
            }
        }
        self.status
    }

    /// Whether the child has not exited (a stopped child counts as running).
    pub fn is_running(&mut self) -> bool {
        self.try_reap().is_none()
    }

    /// The exit status if the child has exited and been reaped.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.try_reap()
    }

    /// Sends `sig` to the child if it has not been reaped yet (so its pid cannot be reused).
    /// Returns whether the signal was sent.
    pub fn signal(&mut self, sig: Signal) -> bool {
        if self.try_reap().is_some() {
            return false;
        }
        let pid = Pid::from_raw(self.pid() as i32);
        kill(pid, sig).is_ok()
    }

    /// SIGKILL and reap. Returns at once if the child is already gone.
    pub fn kill9(&mut self) {
        self.signal(Signal::SIGKILL);
        if self.wait_exit(Duration::from_secs(10)).is_none() {
            // Only a process stuck in the kernel survives SIGKILL; do not panic (drop paths).
            eprintln!(
                "{} (pid {}) survived SIGKILL for 10 s",
                self.name,
                self.pid()
            );
        }
    }

    pub fn sigterm(&mut self) -> bool {
        self.signal(Signal::SIGTERM)
    }

    pub fn sigint(&mut self) -> bool {
        self.signal(Signal::SIGINT)
    }

    pub fn sighup(&mut self) -> bool {
        self.signal(Signal::SIGHUP)
    }

    pub fn sigstop(&mut self) -> bool {
        self.signal(Signal::SIGSTOP)
    }

    pub fn sigcont(&mut self) -> bool {
        self.signal(Signal::SIGCONT)
    }

    /// Waits up to `timeout` for the child to exit; `None` if it is still running.
    /// Stops the process if it runs: SIGTERM (after SIGCONT, in case it is stopped), then
    /// `kill -9` if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if self.is_running() {
            self.sigcont();
            self.sigterm();
            if self.wait_exit(grace).is_none() {
                self.kill9();
            }
        }
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_reap() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            live().remove(&self.child.id());
        }
    }
}

/// The last `lines` lines of a log file (or a note that it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            format!(
                "--- {} (last {} lines) ---\n{}",
                path.display(),
                all.len() - start,
                all[start..].join("\n")
            )
        }
        Err(e) => format!("--- {}: cannot read: {e}", path.display()),
    }
}

/// `(pid, ppid, comm)` of every process, read from /proc.
pub(crate) fn processes() -> Vec<(u32, u32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "<pid> (<comm>) <state> <ppid> ..."; comm may contain spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        out.push((pid, ppid, comm));
    }
    out
}

/// PIDs of the children of `parent` (from /proc).
pub fn children_of(parent: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|&(_, ppid, _)| ppid == parent)
        .map(|(pid, _, _)| pid)
        .collect()
}

/// Reaps orphans named `comm` that were re-parented to this process (see the module docs),
/// waiting up to `timeout` for the still-running ones to exit. Never touches a guarded child.
/// Returns how many such orphans are still running.
pub fn reap_orphans(comm: &str, timeout: Duration) -> usize {
    let me = std::process::id();
    let deadline = Instant::now() + timeout;
    loop {
        let mut running = 0;
        {
            let live = live();
            for (pid, ppid, c) in processes() {
                if ppid != me || c != comm || live.contains(&pid) {
                    continue;
                }
                // Reaps it if it has exited; counts it if not.
                let res = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
                if let Ok(WaitStatus::StillAlive) = res {
                    running += 1;
                }
            }
        }
        if running == 0 || Instant::now() >= deadline {
            return running;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `sig` to a postgres process no guard owns (a postmaster someone else started) and
/// waits up to `timeout` until it is gone, reaping it if it is our child; whether it went.
pub(crate) fn signal_and_wait(pid: i32, sig: Signal, timeout: Duration) -> bool {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    let deadline = Instant::now() + timeout;
    loop {
        reap_orphans("postgres", Duration::ZERO);
        if !process_alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` exists and is not a zombie.
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}
