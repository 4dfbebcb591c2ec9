//! Loads `config.yml` into [`Config`]: HARP's keys, units and defaults, checked strictly. Every
//! problem found (syntax, unknown key, wrong type, missing value, bad value) is reported at
//! once, each with the file, line and dotted key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::convert::{
    Unit, boolean, dcs_driver, duration, duration_or_zero, endpoint, identifier, integer,
    ip_address, non_empty_text, path, proxy_mode, replication, synchronous_mode,
};
use super::raw;
use super::reader::{Reader, Section};
use super::types::*;
use dcs::{REFUSED_KEYS, read_dcs};
#[cfg(test)]
use http::DEFAULT_HTTP_ENABLE;
use http::read_http;
use proxy::read_proxy;

const ROOT_KEYS: &[&str] = &["cluster", "dcs", "location", "manager", "proxy", "http"];
const CLUSTER_KEYS: &[&str] = &["name", "replication", "synchronous_mode"];
const MANAGER_KEYS: &[&str] = &[
    "name",
    "dsn",
    "priority",
    "leader_lease_duration",
    "lease_refresh_interval",
    "maximum_lag",
    "db_data_dir",
    "db_bin_dir",
    "stop_database_when_fenced",
    "health_check_interval",
    "health_check_timeout",
    "server_transfer_timeout",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source} (pass the right file with -f/--config)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// One line per issue: `<file>:<line>: <key>: <message>`.
    #[error("{}", render_issues(.file, .issues))]
    Invalid {
        file: String,
        /// Sorted by line; issues without a line come last.
        issues: Vec<ConfigIssue>,
    },
}

impl ConfigError {
    /// The problems found in the file; empty when the file could not be read.
    pub fn issues(&self) -> &[ConfigIssue] {
        match self {
            Self::Read { .. } => &[],
            Self::Invalid { issues, .. } => issues,
        }
    }
}

/// One problem in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Full dotted key such as `manager.priority` (`dcs.endpoints[1]` for a list item); empty
    /// for problems of the whole file (YAML syntax, empty file).
    pub key: String,
    pub message: String,
}

fn render_issues(file: &str, issues: &[ConfigIssue]) -> String {
    let lines: Vec<String> = issues
        .iter()
        .map(|issue| {
            let line = issue.line.map(|l| format!(":{l}")).unwrap_or_default();
            let key = if issue.key.is_empty() {
                String::new()
            } else {
                format!("{}: ", issue.key)
            };
            format!("{file}{line}: {key}{}", issue.message)
        })
        .collect();
    lines.join("\n")
}

/// Reads and checks the config file at `path`.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_str(&text, &path.display().to_string())
}

/// Parses and checks config text; `file_name` names the file in messages. The etcd user's
/// password may come from the environment ([`DCS_PASSWORD_ENV`]).
pub fn parse_str(text: &str, file_name: &str) -> Result<Config, ConfigError> {
    let env_password = std::env::var(DCS_PASSWORD_ENV).ok();
    parse_with_env(text, file_name, env_password.as_deref())
}

/// [`parse_str`] with the environment's password given.
fn parse_with_env(
    text: &str,
    file_name: &str,
    env_password: Option<&str>,
) -> Result<Config, ConfigError> {
    let (config, mut issues) = match raw::parse(text) {
        Ok(doc) => {
            let mut reader = Reader::new(&doc).refusing(REFUSED_KEYS);
            let config = read_config(&mut reader, env_password);
            (config, reader.into_issues())
        }
        Err(e) => {
            let issue = ConfigIssue {
                line: Some(e.line),
                key: String::new(),
                message: format!("invalid YAML: {}", e.message),
            };
            (None, vec![issue])
        }
    };
    match config {
        Some(config) if issues.is_empty() => Ok(config),
        _ => {
            if issues.is_empty() {
                // Every failed read reports an issue; this only guards against an empty error.
                issues.push(ConfigIssue {
                    line: None,
                    key: String::new(),
                    message: "the configuration is incomplete".to_owned(),
                });
            }
            issues.sort_by_key(|issue| (issue.line.is_none(), issue.line));
            Err(ConfigError::Invalid {
                file: file_name.to_owned(),
                issues,
            })
        }
    }
}

fn read_config(r: &mut Reader<'_>, env_password: Option<&str>) -> Option<Config> {
    let root = r.root(ROOT_KEYS);
    let cluster = read_cluster(r, &root);
    let dcs = read_dcs(r, &root, env_password);
    let location = r.required(&root, "location", identifier);
    let manager = read_manager(r, &root);
    let proxy = read_proxy(r, &root);
    let http = read_http(r, &root);
    let cluster = cluster?;
    if cluster.replication == Replication::Streaming
        && let Some(Some(m)) = &manager
    {
        // Promoting, rewinding and restarting a standby need the data directory and the
        // Postgres programs; say so at start rather than at the first failover.
        let line = r.line_of(&root, "manager");
        for (key, missing) in [
            ("db_data_dir", m.node.db_data_dir.is_none()),
            ("db_bin_dir", m.node.db_bin_dir.is_none()),
        ] {
            if missing {
                r.push(
                    line,
                    format!("manager.{key}"),
                    "required with cluster.replication: streaming (the manager promotes, \
                     rewinds and restarts its Postgres)"
                        .to_owned(),
                );
            }
        }
    }
    Some(Config {
        cluster,
        dcs: dcs?,
        location: location?,
        manager: manager?,
        proxy: proxy?,
        http: http?,
    })
}

fn read_cluster<'d>(r: &mut Reader<'d>, root: &Section<'d>) -> Option<ClusterConfig> {
    let s = r.section(root, "cluster", CLUSTER_KEYS);
    let name = r.required(&s, "name", identifier);
    let mode = r.optional(&s, "replication", Replication::default(), replication);
    let sync = r.optional(
        &s,
        "synchronous_mode",
        SynchronousMode::Off,
        synchronous_mode,
    );
    if mode == Some(Replication::MultiWriter) && sync.is_some_and(|m| m != SynchronousMode::Off) {
        let line = r.line_of(&s, "synchronous_mode");
        r.push(
            line,
            "cluster.synchronous_mode".to_owned(),
            "applies only with cluster.replication: streaming (multi-writer nodes do not \
             stream to each other)"
                .to_owned(),
        );
        return None;
    }
    Some(ClusterConfig {
        name: name?,
        replication: mode?,
        synchronous_mode: sync?,
    })
}

/// `Some(None)` when the file has no `manager` section; `None` when the section is invalid.
fn read_manager<'d>(r: &mut Reader<'d>, root: &Section<'d>) -> Option<Option<ManagerConfig>> {
    let s = r.section(root, "manager", MANAGER_KEYS);
    if !s.is_present() {
        return Some(None);
    }
    let name = r.required(&s, "name", identifier);
    let dsn = r.required(&s, "dsn", non_empty_text);
    let priority = r.optional(
        &s,
        "priority",
        DEFAULT_PRIORITY,
        integer(-1, "an integer >= -1"),
    );
    let (leader_lease_duration, lease_refresh_interval) = read_lease(r, &s, "manager");
    let maximum_lag = r.optional(
        &s,
        "maximum_lag",
        DEFAULT_MAXIMUM_LAG,
        integer(-1, "an integer >= -1"),
    );
    let db_data_dir = r.optional(&s, "db_data_dir", None, path);
    let db_bin_dir = r.optional(&s, "db_bin_dir", None, path);
    let stop_database_when_fenced = r.optional(&s, "stop_database_when_fenced", false, boolean);
    let health_check_interval = r.optional(
        &s,
        "health_check_interval",
        DEFAULT_HEALTH_CHECK_INTERVAL,
        duration(Unit::Milliseconds, Duration::ZERO),
    );
    let health_check_timeout = r.optional(
        &s,
        "health_check_timeout",
        DEFAULT_HEALTH_CHECK_TIMEOUT,
        duration(Unit::Milliseconds, Duration::ZERO),
    );
    let server_transfer_timeout = r.optional(
        &s,
        "server_transfer_timeout",
        DEFAULT_SERVER_TRANSFER_TIMEOUT,
        duration_or_zero(Unit::Milliseconds),
    );
    Some(Some(ManagerConfig {
        name: name?,
        node: NodeDirectives {
            dsn: dsn?,
            priority: priority?,
            leader_lease_duration: leader_lease_duration?,
            lease_refresh_interval: lease_refresh_interval?,
            maximum_lag: maximum_lag?,
            db_data_dir: db_data_dir?,
            db_bin_dir: db_bin_dir?,
            stop_database_when_fenced: stop_database_when_fenced?,
            health_check_interval: health_check_interval?,
            health_check_timeout: health_check_timeout?,
            server_transfer_timeout: server_transfer_timeout?,
        },
    }))
}

/// `leader_lease_duration` and `lease_refresh_interval` of `section`: the refresh must be
/// shorter than the lease, or the lease would lapse between two keep-alives.
fn read_lease<'d>(
    r: &mut Reader<'d>,
    s: &Section<'d>,
    section: &str,
) -> (Option<Duration>, Option<Duration>) {
    let lease = r.optional(
        s,
        "leader_lease_duration",
        DEFAULT_LEADER_LEASE_DURATION,
        duration(Unit::Seconds, Duration::from_secs(1)),
    );
    let mut refresh = r.optional(
        s,
        "lease_refresh_interval",
        DEFAULT_LEASE_REFRESH_INTERVAL,
        duration(Unit::Milliseconds, Duration::ZERO),
    );
    if let (Some(l), Some(f)) = (lease, refresh)
        && f >= l
    {
        let refresh_line = r.line_of(s, "lease_refresh_interval");
        let line = refresh_line
            .or_else(|| r.line_of(s, "leader_lease_duration"))
            .or(s.line());
        let default = if refresh_line.is_none() {
            " (the default)"
        } else {
            ""
        };
        let message = format!(
            "expected a duration shorter than {section}.leader_lease_duration ({}), got {}{default}",
            humantime::format_duration(l),
            humantime::format_duration(f),
        );
        r.push(line, format!("{section}.lease_refresh_interval"), message);
        refresh = None;
    }
    (lease, refresh)
}

mod dcs;
mod http;
mod pgbouncer;
mod proxy;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_dcs;
