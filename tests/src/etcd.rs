//! A local multi-member etcd cluster on loopback ports, with tight raft timings.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::ports::free_port;
use crate::process::ChildGuard;
use crate::rt::block_on;
use crate::tls::TestPki;
use crate::workdir::WorkDir;

mod users;

pub use users::etcd_user;

/// How long a cluster (or a restarted member) may take to answer.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    proc: Option<ChildGuard>,
}

impl Member {
    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }
}

#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    token: String,
    initial_cluster: String,
    secure: Option<Secure>,
}

/// A cluster serving clients over TLS only, with client certificates required
/// (`--client-cert-auth`) and etcd's authentication on: the harness itself connects as
/// `root` with the client certificate `root`.
#[derive(Debug)]
pub struct Secure {
    pub pki: TestPki,
    pub root_password: String,
    /// `--auth-token-ttl` in seconds (etcd's default: 300).
    pub token_ttl: Option<u64>,
    auth_on: bool,
}

/// Connect options with short timeouts, for health probes and tests.
pub fn etcd_connect_options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(2))
}

impl EtcdCluster {
    /// Starts `members` members `m0..` with data dirs and logs under `dir/etcd/`, and waits
    /// until every member answers a linearizable get (panics with the logs otherwise).
    pub fn start(members: usize, dir: &WorkDir) -> EtcdCluster {
        Self::start_with(members, dir, None)
    }

    /// Like [`EtcdCluster::start`], serving TLS with client certificates (a fresh PKI in
    /// `dir/pki`) and with etcd's authentication enabled (user `root`).
    pub fn start_secure(members: usize, dir: &WorkDir, token_ttl: Option<u64>) -> EtcdCluster {
        let secure = Secure {
            pki: TestPki::create(&dir.join("pki")),
            root_password: "root-test-password".into(),
            token_ttl,
            auth_on: false,
        };
        let mut cluster = Self::start_with(members, dir, Some(secure));
        cluster.enable_auth();
        cluster
    }

    fn start_with(members: usize, dir: &WorkDir, secure: Option<Secure>) -> EtcdCluster {
        assert!(members > 0, "an etcd cluster needs at least one member");
        static N: AtomicUsize = AtomicUsize::new(0);
        let token = format!(
            "harp-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let base = dir.join("etcd");
        std::fs::create_dir_all(&base).expect("create etcd dir");
        let members: Vec<Member> = (0..members)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data_dir: base.join(format!("m{i}.data")),
                log: base.join(format!("m{i}.log")),
                proc: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            members,
            token,
            initial_cluster,
            secure,
        };
        for i in 0..cluster.members.len() {
            cluster.spawn_member(i, "new");
        }
        let eps = cluster.endpoints();
        if let Err(e) = wait_answers(&eps, cluster.connect_options(), HEALTHY_TIMEOUT) {
            panic!("etcd cluster never became healthy: {e}\n{}", cluster.logs());
        }
        for i in 0..cluster.members.len() {
            cluster.wait_member(i);
        }
        cluster
    }

    fn spawn_member(&mut self, i: usize, state: &str) {
        let m = &self.members[i];
        let scheme = if self.secure.is_some() {
            "https"
        } else {
            "http"
        };
        let client_url = format!("{scheme}://127.0.0.1:{}", m.client_port);
        let peer_url = format!("http://127.0.0.1:{}", m.peer_port);
        let mut cmd =
            Command::new(std::env::var("HARP_ETCD_BIN").unwrap_or_else(|_| "etcd".into()));
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
            .args(["--logger", "zap", "--log-outputs", "stderr"]);
        if let Some(sec) = &self.secure {
            let server = sec.pki.server();
            cmd.arg("--cert-file")
                .arg(&server.cert)
                .arg("--key-file")
                .arg(&server.key)
                .arg("--trusted-ca-file")
                .arg(sec.pki.ca())
                .arg("--client-cert-auth");
            if let Some(ttl) = sec.token_ttl {
                cmd.arg(format!("--auth-token-ttl={ttl}"));
            }
        }
        let guard = ChildGuard::spawn(cmd, &format!("etcd {}", m.name), &m.log);
        self.members[i].proc = Some(guard);
    }

    /// Waits until member `i` answers a linearizable get on its own endpoint.
    fn wait_member(&mut self, i: usize) {
        let ep = vec![self.members[i].endpoint()];
        if let Err(e) = wait_answers(&ep, self.connect_options(), HEALTHY_TIMEOUT) {
            panic!("etcd member m{i} never answered: {e}\n{}", self.logs());
        }
    }

    /// Client endpoints of all members (running or not), as `127.0.0.1:<port>`.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// Client endpoint of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].endpoint()
    }

    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Client endpoints of the members not stopped with `stop_member`.
    pub fn running_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.proc.is_some())
            .map(Member::endpoint)
            .collect()
    }

    /// A client over the members not stopped with `stop_member`, with short timeouts.
    /// etcd-client's balanced channel does not steer around a dead endpoint (requests routed
    /// to it fail), so get a new client after `stop_member`.
    pub async fn client(&self) -> Client {
        let eps = self.running_endpoints();
        assert!(!eps.is_empty(), "no etcd member is running");
        Client::connect(&eps, Some(self.connect_options()))
            .await
            .unwrap_or_else(|e| panic!("connect to etcd {eps:?}: {e}"))
    }

    /// A client over every member's endpoint, running or not.
    pub async fn client_all(&self) -> Client {
        Client::connect(self.endpoints(), Some(self.connect_options()))
            .await
            .unwrap_or_else(|e| panic!("connect to etcd {:?}: {e}", self.endpoints()))
    }

    /// Waits until a put+get through the running members succeeds (e.g. after `stop_member`
    /// killed the raft leader: a write in flight then hangs until its request timeout, so
    /// writers must retry); panics with the logs after 20 s.
    pub fn wait_writable(&self) {
        let opts = self.connect_options();
        if let Err(e) = wait_answers(&self.running_endpoints(), opts, HEALTHY_TIMEOUT) {
            panic!("etcd not writable: {e}\n{}", self.logs());
        }
    }

    /// `kill -9` member `i` and reap it.
    pub fn stop_member(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].proc.take() {
            p.kill9();
        }
    }

    /// Restarts member `i` with its old data dir and waits until it answers.
    pub fn start_member(&mut self, i: usize) {
        assert!(
            !self.member_running(i),
            "etcd member m{i} is already running"
        );
        self.members[i].proc = None;
        self.spawn_member(i, "existing");
        self.wait_member(i);
    }

    pub fn member_running(&mut self, i: usize) -> bool {
        self.members[i]
            .proc
            .as_mut()
            .is_some_and(ChildGuard::is_running)
    }

    /// PID of member `i` if it is running.
    pub fn member_pid(&mut self, i: usize) -> Option<u32> {
        let p = self.members[i].proc.as_mut()?;
        p.is_running().then(|| p.pid())
    }

    /// The TLS and authentication settings, when started with [`EtcdCluster::start_secure`].
    pub fn secure(&self) -> Option<&Secure> {
        self.secure.as_ref()
    }

    /// The harness's connect options: short timeouts, and for a secure cluster its CA, the
    /// client certificate `root` and, once enabled, the user `root`.
    pub fn connect_options(&self) -> ConnectOptions {
        let opts = etcd_connect_options();
        let Some(sec) = &self.secure else {
            return opts;
        };
        let root = sec.pki.client("root");
        let read = |p: &std::path::Path| std::fs::read(p).expect("read pki file");
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(read(&sec.pki.ca())))
            .identity(Identity::from_pem(read(&root.cert), read(&root.key)));
        let opts = opts.with_tls(tls);
        match sec.auth_on {
            true => opts
                .with_user("root", sec.root_password.clone())
                .with_auto_token_refresh(true),
            false => opts,
        }
    }

    /// Adds the user `root` (role `root`) and enables etcd's authentication.
    fn enable_auth(&mut self) {
        let opts = self.connect_options();
        let eps = self.endpoints();
        let password = self.secure.as_ref().expect("secure").root_password.clone();
        block_on(|| async move {
            let mut c = Client::connect(&eps, Some(opts)).await.expect("connect");
            c.user_add("root", password, None)
                .await
                .expect("user add root");
            c.user_grant_role("root", "root").await.expect("grant root");
            c.auth_enable().await.expect("auth enable");
        });
        if let Some(sec) = self.secure.as_mut() {
            sec.auth_on = true;
        }
        self.wait_writable();
    }

    /// Log tails of every member, for panic messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| crate::process::log_tail(&m.log, 30))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Retries a put+get through `endpoints` until it succeeds or `timeout` passes.
fn wait_answers(
    endpoints: &[String],
    opts: ConnectOptions,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    block_on(|| async move {
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            match probe(endpoints, opts.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("last error via {endpoints:?}: {last}"))
    })
}

async fn probe(endpoints: &[String], opts: ConnectOptions) -> Result<(), String> {
    let fut = async {
        let mut c = Client::connect(endpoints, Some(opts))
            .await
            .map_err(|e| e.to_string())?;
        c.put("/harp-tests/health", "ok", None)
            .await
            .map_err(|e| e.to_string())?;
        let r = c
            .get("/harp-tests/health", None)
            .await
            .map_err(|e| e.to_string())?;
        match r.kvs().first().map(|kv| kv.value()) {
            Some(b"ok") => Ok(()),
            other => Err(format!("health key read back as {other:?}")),
        }
    };
    tokio::time::timeout(Duration::from_secs(1), fut)
        .await
        .map_err(|_| "timed out after 1 s".to_string())?
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        // Each guard kills -9 and reaps on drop.
        for m in &mut self.members {
            drop(m.proc.take());
        }
    }
}
