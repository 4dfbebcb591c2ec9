//! HARP's integration-test harness: real etcd clusters, real Postgres instances and real
//! `harp-manager` processes on loopback, each cleaned up by its guard's `Drop`.

pub mod agent;
pub mod bins;
pub mod cgroup;
pub mod cluster;
pub mod etcd;
pub mod harpctl;
pub mod http;
pub mod lab;
pub mod leader;
pub mod manager;
pub mod pg_template;
pub mod pki;
pub mod ports;
pub mod postgres;
pub mod privileged;
pub mod process;
pub mod rt;
pub mod streaming;
pub mod tls;
pub mod workdir;
pub mod writer;

pub use agent::{AgentProc, AgentSpec};
pub use bins::{pgbouncer_installed, workspace_bin};
pub use cluster::{Node, TestCluster, TestClusterBuilder};
pub use etcd::EtcdCluster;
pub use http::http_get;
pub use leader::{
    LeaderEvent, LeaderWatch, read_leader, try_read_leader, wait_leader, wait_no_leader,
};
pub use manager::{ManagerProc, ManagerSpec};
pub use ports::free_port;
pub use postgres::PgInstance;
pub use privileged::require_root;
pub use process::ChildGuard;
pub use streaming::{Replicas, StreamingNode};
pub use tls::{CertFiles, TestPki};
pub use workdir::WorkDir;
pub use writer::Writer;
