//! Running `harp-agent` (the proxy that routes clients to their location's lead master) with a
//! generated YAML config.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::bins::workspace_bin;
use crate::http::http_get;
use crate::ports::free_port;
use crate::process::ChildGuard;
use crate::workdir::WorkDir;

/// What goes into one agent's config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSpec {
    pub name: String,
    pub location: String,
    pub cluster: String,
    /// etcd client endpoints, `127.0.0.1:<port>`.
    pub endpoints: Vec<String>,
    /// `proxy.max_client_conn`; default 100.
    pub max_client_conn: u32,
    /// `proxy.pause_timeout` (milliseconds); default 10 000.
    pub pause_timeout_ms: u64,
    /// `proxy.mode`; `userspace` unless a test asks for kernel steering, which must then
    /// name a child cgroup it created in `cgroup_path` (never the host's root cgroup).
    pub mode: String,
    pub cgroup_path: Option<PathBuf>,
    /// Extra YAML lines placed under `proxy:` (indented for you), e.g. `"keepalive: 2"`.
    pub extra_yaml: String,
    /// `proxy.timeout`: how long a connect to the leader may take.
    pub connect_timeout_ms: u64,
    /// Extra YAML lines placed under `cluster:` (indented for you), e.g.
    /// `"replication: streaming"`.
    pub cluster_yaml: String,
    /// Extra YAML lines placed under `http:` (indented for you), e.g. `"secure: true"`.
    pub http_yaml: String,
    /// Extra YAML lines placed under `dcs:` (indented for you), e.g. the TLS and user keys.
    pub dcs_yaml: String,
    /// A command the agent runs under, e.g. `setpriv …` with fewer capabilities.
    pub wrapper: Vec<String>,
}

impl AgentSpec {
    pub fn new(name: &str, location: &str, cluster: &str, endpoints: Vec<String>) -> Self {
        AgentSpec {
            name: name.into(),
            location: location.into(),
            cluster: cluster.into(),
            endpoints,
            max_client_conn: 100,
            pause_timeout_ms: 10_000,
            mode: "userspace".into(),
            cgroup_path: None,
            extra_yaml: String::new(),
            connect_timeout_ms: 1000,
            cluster_yaml: String::new(),
            http_yaml: String::new(),
            dcs_yaml: String::new(),
            wrapper: Vec::new(),
        }
    }

    /// Kernel steering for the processes of `cgroup` (a child cgroup the test created).
    pub fn ebpf(mut self, cgroup: &Path) -> Self {
        self.mode = "ebpf".into();
        self.cgroup_path = Some(cgroup.to_path_buf());
        self
    }

    /// The YAML config: the proxy listens on `listen_port`, the HTTP API on `http_port`.
    pub fn render(&self, listen_port: u16, http_port: u16) -> String {
        let endpoints = self
            .endpoints
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(", ");
        assert!(
            self.mode == "userspace" || self.cgroup_path.is_some(),
            "kernel steering in tests needs a child cgroup (never the host's root cgroup)"
        );
        let mut extra = format!("  mode: {}\n", self.mode);
        if let Some(cg) = &self.cgroup_path {
            extra.push_str(&format!("  cgroup_path: {}\n", cg.display()));
        }
        for line in self.extra_yaml.lines() {
            extra.push_str("  ");
            extra.push_str(line);
            extra.push('\n');
        }
        let dcs_extra = crate::manager::indent(&self.dcs_yaml);
        let cluster_extra = crate::manager::indent(&self.cluster_yaml);
        let http_extra = crate::manager::indent(&self.http_yaml);
        format!(
            "cluster:\n  name: {cluster}\n{cluster_extra}\
             dcs:\n  driver: etcd\n  endpoints: [{endpoints}]\n  request_timeout: 500ms\n{dcs_extra}\
             location: {location}\n\
             proxy:\n  name: {name}\n  listen_address: 127.0.0.1\n  listen_port: {listen_port}\n  \
             max_client_conn: {max}\n  pause_timeout: {pause}ms\n  timeout: {connect}ms\n{extra}\
             http:\n  enable: true\n  host: 127.0.0.1\n  port: {http_port}\n{http_extra}",
            cluster = self.cluster,
            location = self.location,
            name = self.name,
            max = self.max_client_conn,
            pause = self.pause_timeout_ms,
            connect = self.connect_timeout_ms,
        )
    }
}

/// Removes an ebpf-mode agent's bpffs pins on drop: they outlive the agent by design (so a
/// restart keeps routing), so whoever started it in a test or bench must remove them.
#[derive(Debug)]
pub struct PinGuard(PathBuf);

impl PinGuard {
    /// Guards the pins of proxy `proxy` of cluster `cluster` (the agent's naming scheme).
    pub fn new(cluster: &str, proxy: &str) -> PinGuard {
        PinGuard(PathBuf::from(format!("/sys/fs/bpf/harp/{cluster}-{proxy}")))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        if let Some(parent) = self.0.parent() {
            let _ = std::fs::remove_dir(parent); // only if no other proxy's pins are there
        }
    }
}

#[derive(Debug)]
pub struct AgentProc {
    spec: AgentSpec,
    listen_port: u16,
    http_port: u16,
    config_path: PathBuf,
    log_path: PathBuf,
    proc: ChildGuard,
}

impl AgentProc {
    /// Writes `<dir>/<name>.yml` and spawns `harp-agent -f <file>` (log: `<dir>/<name>.log`).
    /// Does not wait for it: see [`AgentProc::wait_ready`].
    pub fn start(dir: &WorkDir, spec: AgentSpec) -> AgentProc {
        let config_path = dir.join(format!("{}.yml", spec.name));
        let log_path = dir.join(format!("{}.log", spec.name));
        let listen_port = free_port();
        let http_port = free_port();
        std::fs::write(&config_path, spec.render(listen_port, http_port))
            .unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
        let proc = spawn(&spec, &config_path, &log_path);
        AgentProc {
            spec,
            listen_port,
            http_port,
            config_path,
            log_path,
            proc,
        }
    }

    pub fn spec(&self) -> &AgentSpec {
        &self.spec
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The port clients connect to.
    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// `host=127.0.0.1 port=<listen_port> user=postgres dbname=<db>`
    pub fn dsn(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.listen_port
        )
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

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    pub fn sigterm(&mut self) -> bool {
        self.proc.sigterm()
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.wait_exit(timeout)
    }

    /// Stops the agent if it runs (SIGTERM, `kill -9` after 10 s) and starts it again with the
    /// same config file (same ports).
    pub fn restart(&mut self) {
        self.proc.stop(Duration::from_secs(10));
        self.proc = spawn(&self.spec, &self.config_path, &self.log_path);
    }

    /// `GET <path>` on the agent's HTTP API: `(status, body)`, `None` if unreachable.
    pub fn http(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.http_port, path, Duration::from_secs(1))
    }

    /// Polls `GET /health/is-ready` until it answers 200; `false` on timeout or if the agent
    /// exited.
    pub fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .http("/health/is-ready")
                .is_some_and(|(code, _)| code == 200)
            {
                return true;
            }
            if !self.proc.is_running() || Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn spawn(spec: &AgentSpec, config: &Path, log: &Path) -> ChildGuard {
    let bin = workspace_bin("harp-agent");
    let mut cmd = match spec.wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.arg("-f")
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    ChildGuard::spawn(cmd, &format!("harp-agent {}", spec.name), log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_proxy_section() {
        let mut spec = AgentSpec::new("a1", "dca", "c", vec!["127.0.0.1:2379".into()]);
        spec.max_client_conn = 1100;
        spec.extra_yaml = "foo: 1\nbar: 2".into();
        let yaml = spec.render(6432, 8080);
        assert_eq!(
            yaml,
            "cluster:\n  name: c\n\
             dcs:\n  driver: etcd\n  endpoints: [\"127.0.0.1:2379\"]\n  request_timeout: 500ms\n\
             location: dca\n\
             proxy:\n  name: a1\n  listen_address: 127.0.0.1\n  listen_port: 6432\n  \
             max_client_conn: 1100\n  pause_timeout: 10000ms\n  timeout: 1000ms\n  mode: userspace\n  foo: 1\n  bar: 2\n\
             http:\n  enable: true\n  host: 127.0.0.1\n  port: 8080\n"
        );
    }
}
