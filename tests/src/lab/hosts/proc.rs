//! `HostProc`: one process running on a lab host, which faults may kill, stop, resume and
//! start again with the same command line, config and data.
//!
//! A Postgres may also have been started by its manager (streaming mode: a rejoin, a rewind or
//! a restart in place starts it again with the command line the lab gave it): the postmaster
//! named by the data directory's `postmaster.pid` is then the process, whoever started it.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::lab::net::{Enter, LabError, ns_command};
use crate::postgres::postmaster_on;
use crate::process::{ChildGuard, reap_orphans, signal_and_wait};

/// What a process is, for lookups and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Etcd,
    Postgres,
    Manager,
    Agent,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Etcd => "etcd",
            Kind::Postgres => "postgres",
            Kind::Manager => "harp-manager",
            Kind::Agent => "harp-agent",
        })
    }
}

/// How to (re)start a process: everything `start_again` needs.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub enter: Enter,
}

#[derive(Debug)]
pub struct HostProc {
    kind: Kind,
    host: String,
    ns_path: PathBuf,
    recipe: Recipe,
    log: PathBuf,
    guard: ChildGuard,
    /// A Postgres' data directory: its `postmaster.pid` names a postmaster someone else
    /// (its manager) started.
    data_dir: Option<PathBuf>,
}

impl HostProc {
    /// Spawns `recipe` inside the namespace at `ns_path`; output appended to `log`.
    pub fn spawn(
        kind: Kind,
        host: &str,
        ns_path: &Path,
        recipe: Recipe,
        log: &Path,
    ) -> Result<HostProc, LabError> {
        let guard = spawn_recipe(kind, host, ns_path, &recipe, log)?;
        Ok(HostProc {
            kind,
            host: host.to_string(),
            ns_path: ns_path.to_path_buf(),
            recipe,
            log: log.to_path_buf(),
            guard,
            data_dir: None,
        })
    }

    /// A Postgres on `data_dir`: a postmaster started there by someone else counts as this
    /// process too (see the module docs).
    pub fn with_data_dir(mut self, data_dir: &Path) -> HostProc {
        self.data_dir = Some(data_dir.to_path_buf());
        self
    }

    /// The postmaster running on the data directory that this process' own start is not.
    fn foreign(&self) -> Option<i32> {
        let dir = self.data_dir.as_deref()?;
        postmaster_on(dir, self.guard.pid())
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// PID of the running process (a postmaster someone else started, if that one runs), else
    /// of the latest start (which has exited since).
    pub fn pid(&mut self) -> u32 {
        match (self.guard.is_running(), self.foreign()) {
            (false, Some(pid)) => pid as u32,
            _ => self.guard.pid(),
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.guard.is_running() || self.foreign().is_some()
    }

    /// SIGKILL and reap (a Postgres' orphaned backends too).
    pub fn kill9(&mut self) {
        self.guard.kill9();
        if let Some(pid) = self.foreign() {
            signal_and_wait(pid, Signal::SIGKILL, Duration::from_secs(10));
        }
        self.reap_postgres_orphans();
    }

    /// A hung, not dead, process. `false` if it had already exited.
    pub fn sigstop(&mut self) -> bool {
        self.signal(Signal::SIGSTOP)
    }

    pub fn sigcont(&mut self) -> bool {
        self.signal(Signal::SIGCONT)
    }

    fn signal(&mut self, sig: Signal) -> bool {
        if self.guard.signal(sig) {
            return true;
        }
        let Some(pid) = self.foreign() else {
            return false;
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).is_ok()
    }

    /// Clean stop (SIGINT — fast shutdown — for Postgres, SIGTERM otherwise), after SIGCONT in
    /// case it is stopped; `kill -9` if it has not exited within 15 s.
    pub fn stop(&mut self) {
        if self.guard.is_running() {
            self.guard.sigcont();
            let sig = match self.kind {
                Kind::Postgres => Signal::SIGINT,
                _ => Signal::SIGTERM,
            };
            self.guard.signal(sig);
            if self.guard.wait_exit(Duration::from_secs(15)).is_none() {
                self.guard.kill9();
            }
        }
        if let Some(pid) = self.foreign() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGCONT);
            if !signal_and_wait(pid, Signal::SIGINT, Duration::from_secs(15)) {
                signal_and_wait(pid, Signal::SIGKILL, Duration::from_secs(10));
            }
        }
        self.reap_postgres_orphans();
    }

    /// Starts it again with the same command line, config and data, after `kill9` or `stop`
    /// (an error if it still runs). Does not wait for it to be ready.
    pub fn start_again(&mut self) -> Result<(), LabError> {
        if self.is_running() {
            let pid = self.pid();
            return Err(LabError::Unsupported(format!(
                "{} on {} is still running (pid {pid}): kill9 or stop it first",
                self.kind, self.host,
            )));
        }
        self.reap_postgres_orphans();
        self.guard = spawn_recipe(
            self.kind,
            &self.host,
            &self.ns_path,
            &self.recipe,
            &self.log,
        )?;
        Ok(())
    }

    /// Sets `key` in the environment of the next starts (removes it with `None`); the running
    /// process keeps its own.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.recipe.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.recipe.env.push((key.to_owned(), v.to_owned()));
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.guard.log_tail(lines)
    }

    /// Backends of a killed postmaster are re-parented to the test (a subreaper): reap them so
    /// a restart on the same data dir is not blocked by their shared memory.
    fn reap_postgres_orphans(&mut self) {
        if self.kind == Kind::Postgres {
            reap_orphans("postgres", Duration::from_secs(5));
        }
    }
}

impl Drop for HostProc {
    fn drop(&mut self) {
        // The guard kills -9 and reaps on its own drop; then the backends.
        if self.guard.is_running() {
            self.guard.kill9();
        }
        // A postmaster its manager started is the lab's too.
        if let Some(pid) = self.foreign() {
            signal_and_wait(pid, Signal::SIGKILL, Duration::from_secs(10));
        }
        self.reap_postgres_orphans();
    }
}

fn spawn_recipe(
    kind: Kind,
    host: &str,
    ns_path: &Path,
    r: &Recipe,
    log: &Path,
) -> Result<ChildGuard, LabError> {
    let mut cmd = ns_command(ns_path, &r.program, &r.enter)?;
    cmd.args(&r.args).current_dir(&r.cwd);
    for (k, v) in &r.env {
        cmd.env(k, v);
    }
    Ok(ChildGuard::spawn(cmd, &format!("{kind} {host}"), log))
}
