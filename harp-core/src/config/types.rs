//! The validated configuration that the binaries use. Parsing and validation live in
//! `load.rs`; every default is a `DEFAULT_*` constant with the reason for its value.

use std::path::PathBuf;
use std::time::Duration;

/// Where `-f/--config` points when it is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/harp/config.yml";
/// HARP's default: long enough to ride out a GC pause or a slow etcd write.
pub const DEFAULT_LEADER_LEASE_DURATION: Duration = Duration::from_secs(6);
/// HARP's default: three refreshes per lease, so one lost keep-alive does not cost leadership.
pub const DEFAULT_LEASE_REFRESH_INTERVAL: Duration = Duration::from_millis(2000);
/// A node that no other directive ranks leads at this priority.
pub const DEFAULT_PRIORITY: i32 = 100;
/// `-1` disables the lag check (HARP's default).
pub const DEFAULT_MAXIMUM_LAG: i64 = -1;
/// etcd answers within milliseconds on a LAN; a second means the member is gone.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);
/// The open connection reports a crash at once; the poll only refreshes recovery state and LSN.
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(1000);
/// A busy host can stall a healthy Postgres for a second or more; releasing the lease then would
/// cut every session for nothing. A crash is seen at once through the open connection instead.
pub const DEFAULT_HEALTH_CHECK_TIMEOUT: Duration = Duration::from_millis(5000);
/// How long a leader handing over waits for proxies to close its sessions at transaction
/// boundaries.
pub const DEFAULT_SERVER_TRANSFER_TIMEOUT: Duration = Duration::from_millis(5000);
/// HARP's health port.
pub const DEFAULT_HTTP_PORT: u16 = 8080;
pub const DEFAULT_HTTP_HOST: &str = "0.0.0.0";
/// A readiness probe must answer inside a Kubernetes probe's default 1 s timeout.
pub const DEFAULT_PROBES_TIMEOUT: Duration = Duration::from_millis(500);
/// Clients on every interface, as HARP's proxy does.
pub const DEFAULT_LISTEN_ADDRESS: &str = "0.0.0.0";
/// HARP's proxy port (PgBouncer's too, so clients' habits carry over).
pub const DEFAULT_LISTEN_PORT: u16 = 6432;
/// HARP's default; lowered at start when the open-files limit cannot hold it.
pub const DEFAULT_MAX_CLIENT_CONN: u32 = 100;
/// TCP keep-alive on client and server sockets: a dead peer is found in seconds, not hours.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(5);
/// Connecting to the leader on a LAN takes a millisecond; a second means it is not there.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longer than a lease expiry after a node loss (6 s), so held clients ride through it.
pub const DEFAULT_PAUSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Debian's `postgres` account owns the cluster on the hosts HARP targets.
pub const DEFAULT_PGBOUNCER_USER: &str = "postgres";
/// PgBouncer's own default.
pub const DEFAULT_POOL_SIZE: u32 = 20;
/// What Postgres 14+ stores passwords as.
pub const DEFAULT_AUTH_TYPE: &str = "scram-sha-256";
/// PgBouncer's own default lookup.
pub const DEFAULT_AUTH_QUERY: &str = "SELECT usename, passwd FROM pg_shadow WHERE usename=$1";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub cluster: ClusterConfig,
    pub dcs: DcsConfig,
    /// The location (data center) this unit serves; one lead master per location.
    pub location: String,
    /// Present when the file has a `manager:` section (required by harp-manager).
    pub manager: Option<ManagerConfig>,
    /// Present when the file has a `proxy:` section (required by harp-agent).
    pub proxy: Option<ProxyConfig>,
    pub http: HttpConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub name: String,
    /// `cluster.replication`: what kind of Postgres cluster HARP manages.
    pub replication: Replication,
    /// `cluster.synchronous_mode` (streaming only).
    pub synchronous_mode: SynchronousMode,
}

/// The kind of Postgres cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Replication {
    /// Every node is a writable primary (BDR-like): one lead master per location.
    #[default]
    MultiWriter,
    /// Physical streaming replication: one primary (the lease holder) for the whole cluster,
    /// every other node a standby of it.
    Streaming,
}

impl Replication {
    pub fn as_str(self) -> &'static str {
        match self {
            Replication::MultiWriter => "multi_writer",
            Replication::Streaming => "streaming",
        }
    }
}

/// Whether the primary's commits wait for a standby, which then alone may be promoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SynchronousMode {
    #[default]
    Off,
    /// Commits wait for one synchronous standby while one is healthy; with none, writes go on
    /// unprotected (and the status says so).
    On,
    /// Commits always wait for a synchronous standby: with none healthy, writes block.
    Strict,
}

impl SynchronousMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SynchronousMode::Off => "off",
            SynchronousMode::On => "on",
            SynchronousMode::Strict => "strict",
        }
    }
}

impl Config {
    /// The leader key this unit competes for or routes to: the location's in a multi-writer
    /// cluster; the whole cluster's in a streaming one (one primary for every location).
    pub fn scope(&self) -> &str {
        match self.cluster.replication {
            Replication::MultiWriter => &self.location,
            Replication::Streaming => &self.cluster.name,
        }
    }

    pub fn is_streaming(&self) -> bool {
        self.cluster.replication == Replication::Streaming
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DcsDriver {
    Etcd,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DcsConfig {
    pub driver: DcsDriver,
    /// `host:port` or `http://host:port`, at least one.
    pub endpoints: Vec<String>,
    pub request_timeout: Duration,
    /// `dcs.ssl` (or `https://` endpoints): TLS to etcd; `None`: plaintext.
    pub tls: Option<DcsTls>,
    /// `dcs.user`: the etcd user HARP authenticates as; `None`: no etcd authentication.
    pub auth: Option<DcsAuth>,
}

/// The environment variable that holds the etcd user's password when `dcs.password_file` is
/// not set.
pub const DCS_PASSWORD_ENV: &str = "HARP_DCS_PASSWORD";

/// TLS to etcd. Every file was readable when the config was loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DcsTls {
    /// `dcs.ssl_ca_file`: the CA that signed etcd's server certificates (PEM); `None`: the
    /// system's trusted CAs.
    pub ca_file: Option<PathBuf>,
    /// `dcs.ssl_cert_file` and `dcs.ssl_key_file`: the client certificate (PEM) and its key,
    /// for etcd's `--client-cert-auth`; always both or neither.
    pub client: Option<ClientCert>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// An etcd user and its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcsAuth {
    pub user: String,
    pub password: Password,
    /// Where the password came from, for messages (never the password itself).
    pub password_from: String,
}

/// A password: never shown by `Debug` (configs are logged and printed in test failures).
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// The password itself, for the one place that sends it (etcd's Authenticate).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ManagerConfig {
    pub name: String,
    pub node: NodeDirectives,
}

/// Per-node directives (HARP's names and defaults). `harpctl apply` may later override them.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDirectives {
    /// libpq connection string of the local Postgres; its host/port are what agents route to.
    pub dsn: String,
    /// Higher leads first; `-1` never leads.
    pub priority: i32,
    pub leader_lease_duration: Duration,
    pub lease_refresh_interval: Duration,
    /// Bytes of WAL behind the most advanced healthy peer beyond which the node does not try
    /// to lead; `-1` disables the check.
    pub maximum_lag: i64,
    pub db_data_dir: Option<PathBuf>,
    pub db_bin_dir: Option<PathBuf>,
    pub stop_database_when_fenced: bool,
    pub health_check_interval: Duration,
    /// A check (connect or query) unanswered this long calls Postgres down. A lost connection
    /// calls it down at once; a slow answer does not.
    pub health_check_timeout: Duration,
    /// At a planned switchover the leader keeps its lease up to this long while proxies close
    /// its sessions as each finishes its transaction; zero hands over at once.
    pub server_transfer_timeout: Duration,
}

/// The agent's directives (HARP's proxy names and defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub name: String,
    pub listen_address: String,
    pub listen_port: u16,
    pub max_client_conn: u32,
    pub keepalive: Duration,
    /// Bound on connecting to the leader.
    pub timeout: Duration,
    /// How long a client is held while there is no leader before it is refused.
    pub pause_timeout: Duration,
    /// TTL of the agent's etcd lease: it trusts what it saw for this long after last contact.
    pub leader_lease_duration: Duration,
    pub lease_refresh_interval: Duration,
    pub mode: ProxyMode,
    /// Splice the userspace proxy's sessions in the kernel (sockmap) when kernel steering is
    /// on. Off by default: on the kernels measured so far, redirected bytes take a workqueue
    /// hop and move slower than the proxy's own relay (see bench/results/datapath.md).
    pub splice: bool,
    /// cgroup v2 directory whose processes are steered in the kernel; `None`: the host's
    /// cgroup2 root.
    pub cgroup_path: Option<PathBuf>,
    /// `proxy.type: pgbouncer`: clients go through a PgBouncer the agent runs and steers.
    /// `None`: the agent's own proxy (`builtin`).
    pub pgbouncer: Option<PgBouncerConfig>,
}

/// How the agent runs PgBouncer (`proxy.type: pgbouncer`). The agent writes `pgbouncer.ini`
/// beside config.yml from these and the proxy's listen and limit directives.
#[derive(Debug, Clone, PartialEq)]
pub struct PgBouncerConfig {
    /// Where the `pgbouncer` binary is; `None`: `PATH`, then `/usr/sbin`.
    pub bin_dir: Option<PathBuf>,
    /// The OS user PgBouncer runs as when the agent runs as root (PgBouncer refuses root).
    pub user: String,
    pub pool_mode: PoolMode,
    pub default_pool_size: u32,
    /// How clients authenticate: `trust`, `password`, `md5` or `scram-sha-256`.
    pub auth_type: String,
    /// The role PgBouncer logs in as to look up other roles' passwords (`auth_query`).
    pub auth_user: Option<String>,
    pub auth_query: String,
    /// A PgBouncer `userlist.txt`; `None`: an empty one (every role comes from `auth_query`).
    pub auth_file: Option<PathBuf>,
    pub tls: PgBouncerTls,
}

/// PgBouncer's TLS settings, passed as they are; unset ones keep PgBouncer's defaults (no TLS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgBouncerTls {
    /// Clients to PgBouncer: `disable` … `verify-full`.
    pub client_sslmode: Option<String>,
    pub client_key_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    /// To verify client certificates.
    pub client_ca_file: Option<PathBuf>,
    /// PgBouncer to Postgres.
    pub server_sslmode: Option<String>,
    pub server_ca_file: Option<PathBuf>,
}

/// PgBouncer's pool modes: when a server connection goes back to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    Session,
    Transaction,
    Statement,
}

impl PoolMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

/// How the agent routes local clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Kernel steering when the programs load, else the userspace proxy (one log line says why).
    Auto,
    /// Kernel steering or refuse to start.
    Ebpf,
    /// The userspace proxy only.
    Userspace,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    pub enable: bool,
    pub host: String,
    pub port: u16,
    /// `http.probes.timeout`: how long `/health/is-ready` waits for the leader to accept.
    pub probes_timeout: Duration,
    /// `http.secure`: HTTPS with these files; `None` is plain HTTP.
    pub tls: Option<HttpTls>,
}

/// `http.cert_file`/`key_file` (PEM; the certificate file may carry its chain), and with
/// `http.client_ca_file` every client must present a certificate signed by that CA.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
}
