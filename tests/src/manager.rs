//! Running `harp-manager` with a generated YAML config.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::bins::workspace_bin;
use crate::http::{http_get, port_open};
use crate::ports::free_port;
use crate::process::ChildGuard;
use crate::workdir::WorkDir;

/// What goes into one manager's config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerSpec {
    pub name: String,
    pub location: String,
    pub priority: i32,
    /// libpq DSN of the node's Postgres.
    pub dsn: String,
    pub cluster: String,
    /// etcd client endpoints, `127.0.0.1:<port>`.
    pub endpoints: Vec<String>,
    /// `manager.leader_lease_duration` (seconds); default 6.
    pub lease_secs: u64,
    /// `manager.lease_refresh_interval` (milliseconds); default 2000.
    pub refresh_ms: u64,
    /// Extra YAML lines placed under `manager:` (indented for you), e.g. `"fence: true"`.
    pub extra_yaml: String,
    /// Extra YAML lines placed under `cluster:` (indented for you), e.g.
    /// `"replication: streaming"`.
    pub cluster_yaml: String,
    /// `manager.db_data_dir` and `manager.db_bin_dir` (streaming mode needs both).
    pub db_data_dir: Option<PathBuf>,
    pub db_bin_dir: Option<PathBuf>,
    /// Extra YAML lines placed under `http:` (indented for you), e.g. `"secure: true"`.
    pub http_yaml: String,
    /// Extra YAML lines placed under `dcs:` (indented for you), e.g. the TLS and user keys.
    pub dcs_yaml: String,
}

impl ManagerSpec {
    pub fn new(
        name: &str,
        location: &str,
        priority: i32,
        dsn: &str,
        cluster: &str,
        endpoints: Vec<String>,
    ) -> Self {
        ManagerSpec {
            name: name.into(),
            location: location.into(),
            priority,
            dsn: dsn.into(),
            cluster: cluster.into(),
            endpoints,
            lease_secs: 6,
            refresh_ms: 2000,
            extra_yaml: String::new(),
            cluster_yaml: String::new(),
            http_yaml: String::new(),
            dcs_yaml: String::new(),
            db_data_dir: None,
            db_bin_dir: None,
        }
    }

    /// The YAML config, with the HTTP API on `http_port`.
    pub fn render(&self, http_port: u16) -> String {
        let endpoints = self
            .endpoints
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut extra = indent(&self.extra_yaml);
        for (key, dir) in [
            ("db_data_dir", &self.db_data_dir),
            ("db_bin_dir", &self.db_bin_dir),
        ] {
            if let Some(dir) = dir {
                extra.push_str(&format!("  {key}: \"{}\"\n", dir.display()));
            }
        }
        let dcs_extra = crate::manager::indent(&self.dcs_yaml);
        let cluster_extra = indent(&self.cluster_yaml);
        let http_extra = indent(&self.http_yaml);
        format!(
            "cluster:\n  name: {cluster}\n{cluster_extra}\
             dcs:\n  driver: etcd\n  endpoints: [{endpoints}]\n  request_timeout: 500ms\n{dcs_extra}\
             location: {location}\n\
             manager:\n  name: {name}\n  dsn: \"{dsn}\"\n  priority: {priority}\n  \
             leader_lease_duration: {lease}\n  lease_refresh_interval: {refresh}\n{extra}\
             http:\n  enable: true\n  host: 127.0.0.1\n  port: {http_port}\n{http_extra}",
            cluster = self.cluster,
            location = self.location,
            name = self.name,
            dsn = self.dsn,
            priority = self.priority,
            lease = self.lease_secs,
            refresh = self.refresh_ms,
        )
    }
}

#[derive(Debug)]
pub struct ManagerProc {
    spec: ManagerSpec,
    http_port: u16,
    config_path: PathBuf,
    log_path: PathBuf,
    proc: ChildGuard,
}

impl ManagerProc {
    /// Writes `<dir>/<name>.yml` and spawns `harp-manager -f <file>` (log: `<dir>/<name>.log`).
    /// Does not wait for it: see [`ManagerProc::wait_http`].
    pub fn start(dir: &WorkDir, spec: ManagerSpec) -> ManagerProc {
        let config_path = dir.join(format!("{}.yml", spec.name));
        let log_path = dir.join(format!("{}.log", spec.name));
        let http_port = free_port();
        write_config(&config_path, &spec.render(http_port));
        let proc = spawn(&spec.name, &config_path, &log_path);
        ManagerProc {
            spec,
            http_port,
            config_path,
            log_path,
            proc,
        }
    }

    pub fn spec(&self) -> &ManagerSpec {
        &self.spec
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.proc.log_tail(lines)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Rewrites the config file from `spec` (same HTTP port); takes effect on `sighup` or
    /// `restart`.
    pub fn rewrite_config(&mut self, spec: ManagerSpec) {
        write_config(&self.config_path, &spec.render(self.http_port));
        self.spec = spec;
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    pub fn sigterm(&mut self) -> bool {
        self.proc.sigterm()
    }

    pub fn sighup(&mut self) -> bool {
        self.proc.sighup()
    }

    pub fn sigstop(&mut self) -> bool {
        self.proc.sigstop()
    }

    pub fn sigcont(&mut self) -> bool {
        self.proc.sigcont()
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.wait_exit(timeout)
    }

    /// Stops the manager if it runs (SIGTERM, `kill -9` after 10 s) and starts it again with
    /// the same config file.
    pub fn restart(&mut self) {
        self.proc.stop(Duration::from_secs(10));
        self.proc = spawn(&self.spec.name, &self.config_path, &self.log_path);
    }

    /// `GET /status` parsed as JSON; `None` if unreachable or not JSON.
    pub fn status(&self) -> Option<serde_json::Value> {
        let (_, body) = http_get(self.http_port, "/status", Duration::from_secs(1))?;
        serde_json::from_str(&body).ok()
    }

    /// Waits until the HTTP port accepts connections; `false` on timeout or if the manager
    /// exited.
    pub fn wait_http(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if port_open(self.http_port) {
                return true;
            }
            if !self.proc.is_running() || Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn write_config(path: &Path, yaml: &str) {
    std::fs::write(path, yaml).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn spawn(name: &str, config: &Path, log: &Path) -> ChildGuard {
    let mut cmd = Command::new(workspace_bin("harp-manager"));
    cmd.arg("-f")
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    ChildGuard::spawn(cmd, &format!("harp-manager {name}"), log)
}

/// `yaml` indented by two spaces, one line each: the body of a section.
pub(crate) fn indent(yaml: &str) -> String {
    yaml.lines().map(|l| format!("  {l}\n")).collect()
}
