//! The command line: global flags and one subcommand per verb.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::EXIT_STATUS_HELP;
use crate::output::Format;

#[derive(Debug, Parser)]
#[command(
    name = "harpctl",
    version,
    about = "HARP's operator CLI: shows and changes a HARP cluster's state in etcd",
    after_help = EXIT_STATUS_HELP,
)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the cluster is and how to print; valid before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct Globals {
    /// HARP cluster name (default: `cluster.name` of the config file).
    #[arg(short = 'c', long, global = true, value_name = "NAME")]
    pub cluster: Option<String>,
    /// A HARP config.yml to take `cluster.name`, `dcs.*`, `location` and `manager.name` from
    /// (default: /etc/harp/config.yml, if it exists).
    #[arg(short = 'f', long = "config-file", global = true, value_name = "PATH")]
    pub config_file: Option<PathBuf>,
    /// etcd endpoints, overriding the config file's `dcs.endpoints`.
    #[arg(
        long,
        global = true,
        value_name = "HOST:PORT,...",
        value_delimiter = ','
    )]
    pub dcs: Option<Vec<String>>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Bound on every etcd request (default: the config file's `dcs.request_timeout` when
    /// the endpoints come from it, else 2s).
    #[arg(long, global = true, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub request_timeout: Option<Duration>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the cluster, its leaders, locations, nodes or proxies.
    #[command(subcommand)]
    Get(GetCommand),
    /// Fence a node: it never leads, and releases the lead if it holds it.
    Fence {
        /// Node to fence (default: the config file's `manager.name`).
        node: Option<String>,
    },
    /// Lift a node's fence.
    Unfence {
        /// Node to unfence (default: the config file's `manager.name`).
        node: Option<String>,
    },
    /// Let HARP manage the cluster, a node or a proxy again.
    #[command(subcommand)]
    Manage(ManageTarget),
    /// Stop HARP from changing the cluster's, a node's or a proxy's routing.
    #[command(subcommand)]
    Unmanage(ManageTarget),
    /// Planned switchover: make NODE its location's lead master (in a streaming cluster: the
    /// primary; NODE must be a healthy streaming standby).
    Promote(PromoteArgs),
    /// Streaming mode: rebuild NODE's data directory from the primary (pg_basebackup); its
    /// manager does it and removes the request when done. Never the primary itself.
    Reinit {
        /// The standby (or failed old primary) to rebuild.
        node: String,
    },
    /// Write a bootstrap file (cluster, locations, nodes and their directives) to etcd;
    /// idempotent, shows what changed.
    Apply { file: std::path::PathBuf },
    /// Set directives in etcd, merged over the units' config files.
    #[command(subcommand)]
    Set(SetTarget),
    /// Print harpctl's version.
    Version,
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
}

#[derive(Debug, Subcommand)]
pub enum GetCommand {
    /// The cluster: whether it is managed, and each location's leader and counts.
    Cluster,
    /// The lead master of LOCATION (of every location without it).
    Leader { location: Option<String> },
    /// One location (every location without it).
    Location { location: Option<String> },
    /// Every location: leader, fencing token, nodes and proxies.
    Locations,
    /// One node.
    Node { name: String },
    /// Every node.
    Nodes,
    /// One proxy.
    Proxy { name: String },
    /// Every proxy.
    Proxies,
}

#[derive(Debug, Subcommand)]
pub enum ManageTarget {
    /// The whole cluster.
    Cluster,
    /// One node's manager.
    Node { name: String },
    /// One proxy (harp-agent).
    Proxy { name: String },
}

#[derive(Debug, Subcommand)]
pub enum SetTarget {
    /// Node directives for every node of the cluster (a location's and a node's own win).
    Cluster {
        #[arg(required = true, value_name = "KEY=VALUE")]
        assignments: Vec<String>,
    },
    /// Node directives for every node of LOCATION (a node's own win).
    Location {
        location: String,
        #[arg(required = true, value_name = "KEY=VALUE")]
        assignments: Vec<String>,
    },
    /// A node's directives: `priority`, `maximum_lag` and `server_transfer_timeout` apply at
    /// once; `leader_lease_duration`, `lease_refresh_interval`, `health_check_interval` and
    /// `health_check_timeout` after its manager restarts.
    Node {
        name: String,
        /// `key=value` pairs, e.g. `priority=50 maximum_lag=1048576`.
        #[arg(required = true, value_name = "KEY=VALUE")]
        assignments: Vec<String>,
    },
    /// A proxy's directives, or every proxy's with `global` (a proxy's own win): all apply
    /// at once — `max_client_conn`, `pause_timeout`, `timeout`, `keepalive`.
    Proxy {
        /// A proxy name, or `global`.
        name: String,
        #[arg(required = true, value_name = "KEY=VALUE")]
        assignments: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The new lead master (default: the best candidate of the location).
    pub node: Option<String>,
    /// The location to switch over (default: the config file's `location`, or the only one).
    #[arg(short = 'l', long)]
    pub location: Option<String>,
    /// Skip harpctl's and the leader's eligibility checks of the target (priority -1,
    /// unmanaged, not primary) and the refusal while a proxy of the location is unmanaged; a
    /// fenced, down or frozen node still cannot lead.
    #[arg(long)]
    pub force: bool,
    /// How long to wait for the handover; the request expires after it.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}
