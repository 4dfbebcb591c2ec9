//! Throw-away Postgres instances: copies of the process's `initdb` template, each on its own
//! port, run as the `postgres` user with the postmaster as our direct child.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::pg_template::{chown_postgres, run};
pub use crate::pg_template::{pg_bin_dir, postgres_user, template_data_dir};
use crate::ports::free_port;
use crate::process::{ChildGuard, log_tail, reap_orphans, signal_and_wait};
use crate::rt::block_on;
use crate::workdir::WorkDir;

const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct PgInstance {
    name: String,
    port: u16,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    /// Extra `-c key=value` settings, kept for [`PgInstance::start_again`].
    settings: Vec<(String, String)>,
    proc: ChildGuard,
}

impl PgInstance {
    /// Copies the template into `dir/pg-<name>`, starts a postmaster on a free port and waits
    /// until it accepts a connection.
    pub fn start(dir: &WorkDir, name: &str) -> PgInstance {
        Self::start_with(dir, name, &[])
    }

    /// [`PgInstance::start`] with extra settings, passed as `-c key=value` on the postmaster's
    /// command line (where they beat `postgresql.conf` and `ALTER SYSTEM`); a setting the harness
    /// sets itself (`listen_addresses`, `fsync`, `max_connections`) is replaced. Kept for
    /// [`PgInstance::start_again`].
    pub fn start_with(dir: &WorkDir, name: &str, settings: &[(&str, &str)]) -> PgInstance {
        let data_dir = dir.join(format!("pg-{name}"));
        run(
            Command::new("cp")
                .arg("-a")
                .arg(template_data_dir())
                .arg(&data_dir),
            "copy the initdb template",
        );
        chown_postgres(&data_dir);
        Self::launch(dir, name, settings)
    }

    /// A standby of `primary`: `pg_basebackup -R -X stream` from it into `dir/pg-<name>` (so
    /// it streams with `application_name=<name>`, the name `synchronous_standby_names` uses),
    /// started with `settings` like [`PgInstance::start_with`] and waited for until it accepts
    /// connections (hot standby).
    pub fn standby_of(
        dir: &WorkDir,
        name: &str,
        primary: &PgInstance,
        settings: &[(&str, &str)],
    ) -> PgInstance {
        let data_dir = dir.join(format!("pg-{name}"));
        std::fs::create_dir_all(&data_dir).expect("create standby data dir");
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
            .expect("chmod 0700 standby data dir");
        chown_postgres(&data_dir);
        let (uid, gid) = postgres_user();
        run(
            Command::new(pg_bin_dir().join("pg_basebackup"))
                .arg("-D")
                .arg(&data_dir)
                .args(["-R", "-X", "stream", "-c", "fast", "-w", "-d"])
                .arg(format!(
                    "host=127.0.0.1 port={} user=postgres application_name={name}",
                    primary.port()
                ))
                .current_dir(dir.path())
                .uid(uid.as_raw())
                .gid(gid.as_raw()),
            &format!("pg_basebackup of standby {name}"),
        );
        Self::launch(dir, name, settings)
    }

    /// Starts a postmaster on the prepared `dir/pg-<name>` on a free port and waits until it
    /// accepts a connection.
    fn launch(dir: &WorkDir, name: &str, settings: &[(&str, &str)]) -> PgInstance {
        let data_dir = dir.join(format!("pg-{name}"));
        let socket_dir = dir.join(format!("pg-{name}.sock"));
        let log = dir.join(format!("pg-{name}.log"));
        std::fs::create_dir_all(&socket_dir).expect("create socket dir");
        chown_postgres(&socket_dir);
        let port = free_port();
        let settings: Vec<(String, String)> = settings
            .iter()
            .map(|&(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let proc = spawn_postmaster(
            &data_dir,
            &socket_dir,
            port,
            &log,
            name,
            dir.path(),
            &settings,
        );
        let mut pg = PgInstance {
            name: name.to_string(),
            port,
            data_dir,
            socket_dir,
            log,
            settings,
            proc,
        };
        if let Err(e) = pg.wait_ready(Instant::now() + READY_TIMEOUT) {
            panic!(
                "postgres {name} did not start: {e}\n{}",
                log_tail(&pg.log, 40)
            );
        }
        pg
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host=127.0.0.1 port=<port> user=postgres dbname=postgres`
    pub fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// PID of the latest postmaster (which may have exited since).
    pub fn postmaster_pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Whether a postmaster runs on the data directory: the one this instance started, or
    /// one started by someone else (a manager, or `harp_manager` operations in the test).
    pub fn is_running(&mut self) -> bool {
        self.proc.is_running() || self.foreign_postmaster().is_some()
    }

    /// PID of the postmaster running on the data directory now, whoever started it.
    pub fn running_pid(&mut self) -> Option<u32> {
        match self.proc.is_running() {
            true => Some(self.proc.pid()),
            false => self.foreign_postmaster().map(|p| p as u32),
        }
    }

    /// `kill -9` the postmaster (also one someone else started) and reap it; its backends
    /// notice and exit on their own.
    pub fn kill9(&mut self) {
        self.proc.kill9();
        if let Some(pid) = self.foreign_postmaster() {
            signal_and_wait(pid, Signal::SIGKILL, Duration::from_secs(10));
        }
    }

    /// [`PgInstance::kill9`]; `false` if no postmaster ran.
    pub fn kill9_current(&mut self) -> bool {
        let running = self.is_running();
        self.kill9();
        running
    }

    /// The pid in `postmaster.pid` if a running postgres process has this data directory on
    /// its command line and it is not the one this instance started.
    pub fn foreign_postmaster(&self) -> Option<i32> {
        postmaster_on(self.data_dir(), self.proc.pid())
    }

    /// SIGSTOP / SIGCONT the postmaster (a hung, not dead, Postgres).
    pub fn sigstop(&mut self) -> bool {
        self.proc.sigstop()
    }

    pub fn sigcont(&mut self) -> bool {
        self.proc.sigcont()
    }

    /// Fast shutdown (SIGINT) and wait; `kill -9` if it takes over 30 s. Also stops a
    /// postmaster someone else started on the data directory.
    pub fn stop(&mut self) {
        self.proc.sigcont();
        self.proc.sigint();
        if self.proc.wait_exit(Duration::from_secs(30)).is_none() {
            eprintln!(
                "postgres {} ignored fast shutdown for 30 s: kill -9",
                self.name
            );
            self.proc.kill9();
        }
        if let Some(pid) = self.foreign_postmaster()
            && !signal_and_wait(pid, Signal::SIGINT, Duration::from_secs(30))
        {
            eprintln!(
                "postgres {} (pid {pid}) ignored fast shutdown: kill -9",
                self.name
            );
            signal_and_wait(pid, Signal::SIGKILL, Duration::from_secs(10));
        }
        reap_orphans("postgres", Duration::from_secs(5));
    }

    /// Waits until Postgres accepts connections, whoever started it; `false` after `timeout`.
    pub fn wait_accepting(&self, timeout: Duration) -> bool {
        let dsn = format!("{} connect_timeout=1", self.dsn());
        let deadline = Instant::now() + timeout;
        block_on(|| async move {
            loop {
                if try_select1(&dsn).await.is_ok() {
                    return true;
                }
                if Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }

    /// Starts Postgres again on the same port and data dir after `kill9` or `stop`, retrying
    /// while leftovers of the old postmaster (exiting backends) still block it.
    pub fn start_again(&mut self) {
        assert!(
            !self.is_running(),
            "postgres {} is still running",
            self.name
        );
        reap_orphans("postgres", Duration::from_secs(5));
        let deadline = Instant::now() + READY_TIMEOUT;
        let workdir = self
            .data_dir
            .parent()
            .expect("data dir has a parent")
            .to_path_buf();
        loop {
            self.proc = spawn_postmaster(
                &self.data_dir,
                &self.socket_dir,
                self.port,
                &self.log,
                &self.name,
                &workdir,
                &self.settings,
            );
            match self.wait_ready(deadline) {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => panic!(
                    "postgres {} did not start again: {e}\n{}",
                    self.name,
                    log_tail(&self.log, 40)
                ),
                Err(_) => {
                    self.proc.kill9();
                    reap_orphans("postgres", Duration::from_secs(1));
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    /// Connects with tokio-postgres, driving the connection on a spawned task.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = tokio_postgres::connect(&self.dsn(), tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Waits until `SELECT 1` succeeds; `Err` once the postmaster exits or `deadline` passes.
    fn wait_ready(&mut self, deadline: Instant) -> Result<(), String> {
        let dsn = format!("{} connect_timeout=1", self.dsn());
        let proc = &mut self.proc;
        block_on(|| async move {
            loop {
                if let Some(st) = proc.exit_status() {
                    return Err(format!("postmaster exited with {st}"));
                }
                match try_select1(&dsn).await {
                    Ok(()) => return Ok(()),
                    Err(e) if Instant::now() >= deadline => {
                        return Err(format!("not ready in time; last error: {e}"));
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    }
}

async fn try_select1(dsn: &str) -> Result<(), String> {
    let (client, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    let task = tokio::spawn(conn);
    let res = client
        .simple_query("SELECT 1")
        .await
        .map_err(|e| e.to_string());
    drop(client);
    let _ = task.await;
    res.map(|_| ())
}

/// The harness's own settings; [`PgInstance::start_with`]'s replace them by key.
const BASE_SETTINGS: [(&str, &str); 3] = [
    ("listen_addresses", "127.0.0.1"),
    ("fsync", "off"),
    ("max_connections", "100"),
];

/// `-c key=value` for each of [`BASE_SETTINGS`] not in `extra`, then for each of `extra`.
fn setting_args(extra: &[(String, String)]) -> Vec<String> {
    let base = BASE_SETTINGS
        .iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .map(|&(k, v)| (k, v));
    let extra = extra.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    base.chain(extra)
        .flat_map(|(k, v)| ["-c".to_string(), format!("{k}={v}")])
        .collect()
}

fn spawn_postmaster(
    data: &Path,
    sock: &Path,
    port: u16,
    log: &Path,
    name: &str,
    cwd: &Path,
    settings: &[(String, String)],
) -> ChildGuard {
    let (uid, gid) = postgres_user();
    let mut cmd = Command::new(pg_bin_dir().join("postgres"));
    cmd.arg("-D")
        .arg(data)
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(sock)
        .args(setting_args(settings))
        .current_dir(cwd)
        .uid(uid.as_raw())
        .gid(gid.as_raw());
    ChildGuard::spawn(cmd, &format!("postgres {name}"), log)
}

/// The pid in `data_dir`'s `postmaster.pid` if a running (not zombie) process has `data_dir`
/// on its command line and it is not `except` (the postmaster the caller started itself).
pub(crate) fn postmaster_on(data_dir: &Path, except: u32) -> Option<i32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    if pid as u32 == except {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let dir = data_dir.to_string_lossy().into_owned();
    String::from_utf8_lossy(&cmdline)
        .contains(&dir)
        .then_some(pid)
}

impl Drop for PgInstance {
    fn drop(&mut self) {
        if self.proc.is_running() {
            self.proc.signal(Signal::SIGKILL);
            let _ = self.proc.wait_exit(Duration::from_secs(10));
        }
        // A postmaster someone else started on this data directory (a manager restarting a
        // fenced node's Postgres): it is ours too; its pid is in postmaster.pid.
        if let Some(pid) = self.foreign_postmaster() {
            signal_and_wait(pid, Signal::SIGKILL, Duration::from_secs(10));
        }
        reap_orphans("postgres", Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests;
