//! One Patroni node: its config, the Patroni process (run as `postgres`, like the Postgres it
//! starts) and the postmaster Patroni started, found by its `postmaster.pid`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use harp_tests::cluster::STREAMING_SETTINGS;
use harp_tests::postgres::{pg_bin_dir, postgres_user};
use harp_tests::process::reap_orphans;
use harp_tests::{ChildGuard, WorkDir, free_port};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Patroni's HA timings (seconds), set at bootstrap in the DCS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Timings {
    pub ttl: u32,
    pub loop_wait: u32,
    pub retry_timeout: u32,
    /// How long a crashed primary may take to start again in place before Patroni fails over;
    /// `None`: Patroni's default (300 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_start_timeout: Option<u32>,
}

/// Patroni 4.1's defaults.
pub const DEFAULT: Timings = Timings {
    ttl: 30,
    loop_wait: 10,
    retry_timeout: 10,
    primary_start_timeout: None,
};
/// The defaults, but a crashed primary fails over at once instead of restarting in place.
pub const FAILOVER: Timings = Timings {
    primary_start_timeout: Some(0),
    ..DEFAULT
};
/// The least its validator accepts (`ttl` ≥ 20, `loop_wait` ≥ 1, `retry_timeout` ≥ 3), which
/// also keeps its rule `loop_wait + 2 * retry_timeout <= ttl`.
pub const TIGHT: Timings = Timings {
    ttl: 20,
    loop_wait: 1,
    retry_timeout: 3,
    primary_start_timeout: None,
};
const _: () = assert!(TIGHT.loop_wait + 2 * TIGHT.retry_timeout <= TIGHT.ttl);
const _: () = assert!(DEFAULT.loop_wait + 2 * DEFAULT.retry_timeout <= DEFAULT.ttl);

pub struct Node {
    pub name: String,
    pub pg_port: u16,
    pub api_port: u16,
    data_dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    pub proc: Option<ChildGuard>,
}

impl Node {
    /// Writes the node's config under `dir/patroni-<name>/` (owned by `postgres`).
    pub fn new(
        dir: &WorkDir,
        name: &str,
        scope: &str,
        etcd: &[String],
        t: Timings,
    ) -> anyhow::Result<Node> {
        let home = dir.join(format!("patroni-{name}"));
        std::fs::create_dir_all(&home)?;
        let (uid, gid) = postgres_user();
        nix::unistd::chown(&home, Some(uid), Some(gid))?;
        let node = Node {
            name: name.into(),
            pg_port: free_port(),
            api_port: free_port(),
            data_dir: home.join("data"),
            config: home.join("patroni.yml"),
            log: dir.join(format!("patroni-{name}.log")),
            proc: None,
        };
        std::fs::write(&node.config, node.render(&home, scope, etcd, t))?;
        Ok(node)
    }

    fn render(&self, home: &Path, scope: &str, etcd: &[String], t: Timings) -> String {
        let start_timeout = t.primary_start_timeout.map_or(String::new(), |s| {
            format!("    primary_start_timeout: {s}\n")
        });
        // The same replication settings as every HARP node (see STREAMING_SETTINGS).
        let parameters: String = STREAMING_SETTINGS
            .iter()
            .map(|(k, v)| format!("        {k}: '{v}'\n"))
            .collect();
        format!(
            "scope: {scope}\nnamespace: /service/\nname: {name}\n\
             log:\n  level: INFO\n\
             restapi:\n  listen: 127.0.0.1:{api}\n  connect_address: 127.0.0.1:{api}\n\
             etcd3:\n  hosts: [{hosts}]\n\
             bootstrap:\n  dcs:\n    ttl: {ttl}\n    loop_wait: {lw}\n    retry_timeout: {rt}\n\
             {start_timeout}\
             \x20   postgresql:\n      use_pg_rewind: true\n      parameters:\n{parameters}\
             \x20 initdb: [{{encoding: UTF8}}, {{locale: C}}]\n\
             postgresql:\n  listen: 127.0.0.1:{pg}\n  connect_address: 127.0.0.1:{pg}\n  \
             data_dir: {data}\n  bin_dir: {bin}\n  pgpass: {home}/pgpass\n  \
             remove_data_directory_on_rewind_failure: true\n  \
             remove_data_directory_on_diverged_timelines: true\n  \
             authentication:\n    superuser: {{username: postgres}}\n    \
             replication: {{username: replicator}}\n    rewind: {{username: postgres}}\n  \
             parameters:\n    unix_socket_directories: {home}\n    fsync: 'off'\n    \
             max_connections: 100\n  \
             pg_hba:\n    - local all all trust\n    - host all all 127.0.0.1/32 trust\n    \
             - host replication all 127.0.0.1/32 trust\n",
            name = self.name,
            api = self.api_port,
            pg = self.pg_port,
            hosts = etcd.join(", "),
            ttl = t.ttl,
            lw = t.loop_wait,
            rt = t.retry_timeout,
            data = self.data_dir.display(),
            bin = pg_bin_dir().display(),
            home = home.display(),
        )
    }

    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Starts Patroni (as `postgres`, with the venv's `patroni`).
    pub fn spawn(&mut self, patroni: &Path) {
        let (uid, gid) = postgres_user();
        let home = self.config.parent().expect("config in a dir");
        let mut cmd = Command::new(patroni);
        cmd.arg(&self.config)
            .current_dir(home)
            .env("HOME", home)
            .uid(uid.as_raw())
            .gid(gid.as_raw());
        self.proc = Some(ChildGuard::spawn(
            cmd,
            &format!("patroni {}", self.name),
            &self.log,
        ));
    }

    /// Whether the Patroni we started has exited (not: was killed by us).
    pub fn exited(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| !p.is_running())
    }

    pub fn kill_patroni(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// The running postmaster of this node's data dir: the pid in `postmaster.pid`, if a live
    /// process has the data dir on its command line (not a stale file, not a reused pid).
    pub fn postmaster(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let dir = self.data_dir.to_string_lossy().into_owned();
        String::from_utf8_lossy(&cmdline)
            .contains(&dir)
            .then_some(pid)
    }

    /// `kill -9` the postmaster (its backends exit on their own; the reaper reaps them all).
    pub fn kill_postmaster(&self) -> bool {
        match self.postmaster() {
            Some(pid) => kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok(),
            None => false,
        }
    }

    pub fn log_tail(&self, n: usize) -> String {
        harp_tests::process::log_tail(&self.log, n)
    }
}

/// Reaps, every 20 ms, the `postgres` processes re-parented to this process: Patroni detaches
/// the postmaster it starts, and this process is a child subreaper (see harp_tests::process).
/// Left unreaped, a dead postmaster would stay a zombie that Patroni takes for running.
pub struct Reaper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reaper {
    pub fn start() -> Reaper {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                reap_orphans("postgres", Duration::ZERO);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Reaper {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patroni_gets_the_shared_replication_settings_and_its_start_timeout() {
        let node = Node {
            name: "p1".into(),
            pg_port: 5432,
            api_port: 8008,
            data_dir: "/d/data".into(),
            config: "/d/patroni.yml".into(),
            log: "/d/log".into(),
            proc: None,
        };
        let yml = node.render(Path::new("/d"), "s", &["127.0.0.1:2379".into()], FAILOVER);
        assert!(yml.contains("    primary_start_timeout: 0\n"), "{yml}");
        for (k, v) in STREAMING_SETTINGS {
            assert!(yml.contains(&format!("        {k}: '{v}'\n")), "{k}: {yml}");
        }
        let yml = node.render(Path::new("/d"), "s", &[], DEFAULT);
        assert!(!yml.contains("primary_start_timeout"), "{yml}");
        assert!(
            yml.contains("    retry_timeout: 10\n    postgresql:\n"),
            "{yml}"
        );
    }
}
