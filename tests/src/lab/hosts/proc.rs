//! `HostProc`: one process running on a lab host, which faults may kill, stop, resume and
//! start again with the same command line, config and data.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::lab::net::{Enter, LabError, ns_command};
use crate::process::{ChildGuard, reap_orphans};

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
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// PID of the latest start (which may have exited since).
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    pub fn is_running(&mut self) -> bool {
        self.guard.is_running()
    }

    /// SIGKILL and reap (a Postgres' orphaned backends too).
    pub fn kill9(&mut self) {
        self.guard.kill9();
        self.reap_postgres_orphans();
    }

    /// A hung, not dead, process. `false` if it had already exited.
    pub fn sigstop(&mut self) -> bool {
        self.guard.sigstop()
    }

    pub fn sigcont(&mut self) -> bool {
        self.guard.sigcont()
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
        self.reap_postgres_orphans();
    }

    /// Starts it again with the same command line, config and data, after `kill9` or `stop`
    /// (an error if it still runs). Does not wait for it to be ready.
    pub fn start_again(&mut self) -> Result<(), LabError> {
        if self.guard.is_running() {
            return Err(LabError::Unsupported(format!(
                "{} on {} is still running (pid {}): kill9 or stop it first",
                self.kind,
                self.host,
                self.pid()
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
