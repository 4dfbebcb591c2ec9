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
/// HARP's health port.
pub const DEFAULT_HTTP_PORT: u16 = 8080;
pub const DEFAULT_HTTP_HOST: &str = "0.0.0.0";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub cluster: ClusterConfig,
    pub dcs: DcsConfig,
    /// The location (data center) this unit serves; one lead master per location.
    pub location: String,
    /// Present when the file has a `manager:` section (required by harp-manager).
    pub manager: Option<ManagerConfig>,
    pub http: HttpConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub name: String,
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
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    pub enable: bool,
    pub host: String,
    pub port: u16,
}
