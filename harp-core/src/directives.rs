//! Node directives set in etcd with `harpctl set node <n> key=value…` (`config/nodes/<n>`),
//! merged over the node's config file. `priority`, `maximum_lag` and `server_transfer_timeout`
//! apply live; the others need a restart of the manager, which reports them as pending until
//! then.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::NodeDirectives;
use crate::records::RECORD_VERSION;

/// When a directive takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takes {
    Live,
    Restart,
}

/// The directives `harpctl set node` accepts, and when each applies.
pub const NODE_KEYS: &[(&str, Takes)] = &[
    ("priority", Takes::Live),
    ("maximum_lag", Takes::Live),
    ("leader_lease_duration", Takes::Restart),
    ("lease_refresh_interval", Takes::Restart),
    ("health_check_interval", Takes::Restart),
    ("health_check_timeout", Takes::Restart),
    ("server_transfer_timeout", Takes::Live),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectiveError {
    #[error("unknown node directive `{key}`; valid keys: {}", valid_keys())]
    UnknownKey { key: String },
    #[error("{key}={value}: {why}")]
    BadValue {
        key: String,
        value: String,
        why: &'static str,
    },
    #[error("unknown proxy directive `{key}`; valid keys: {}", PROXY_KEYS.join(", "))]
    UnknownProxyKey { key: String },
    #[error("expected key=value, got `{0}`")]
    NotAnAssignment(String),
}

fn valid_keys() -> String {
    NODE_KEYS
        .iter()
        .map(|(k, _)| *k)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Value of `config/nodes/<n>`: only the directives an operator set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeOverrides {
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_lag: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_lease_duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_refresh_interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_transfer_timeout_ms: Option<u64>,
    /// Directives of a newer HARP: ignored here, kept when `harpctl set` rewrites the record.
    #[serde(flatten)]
    pub newer: BTreeMap<String, serde_json::Value>,
}

impl NodeOverrides {
    pub fn new() -> Self {
        Self {
            version: RECORD_VERSION,
            ..Self::default()
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, crate::records::RecordError> {
        crate::records::decode("node directives", bytes)
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("node directives serialize")
    }

    /// Sets one directive from `key=value` text, as `harpctl set` receives it. Durations take
    /// a unit (`"6s"`, `"250ms"`) or a number in HARP's unit for the key (seconds for
    /// `leader_lease_duration`, milliseconds otherwise).
    pub fn set(&mut self, assignment: &str) -> Result<Takes, DirectiveError> {
        let (key, value) = assignment
            .split_once('=')
            .ok_or_else(|| DirectiveError::NotAnAssignment(assignment.to_owned()))?;
        let (key, value) = (key.trim(), value.trim());
        let bad = |why| DirectiveError::BadValue {
            key: key.to_owned(),
            value: value.to_owned(),
            why,
        };
        let takes = NODE_KEYS
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, t)| *t)
            .ok_or_else(|| DirectiveError::UnknownKey {
                key: key.to_owned(),
            })?;
        match key {
            "priority" => {
                let v: i32 = value
                    .parse()
                    .map_err(|_| bad("expected an integer >= -1"))?;
                if v < -1 {
                    return Err(bad("expected an integer >= -1"));
                }
                self.priority = Some(v);
            }
            "maximum_lag" => {
                let v: i64 = value
                    .parse()
                    .map_err(|_| bad("expected bytes, an integer >= -1"))?;
                if v < -1 {
                    return Err(bad("expected bytes, an integer >= -1"));
                }
                self.maximum_lag = Some(v);
            }
            "leader_lease_duration" => {
                let d = duration(value, Duration::from_secs(1)).ok_or(bad(
                    "expected a duration of at least 1s, such as 6s or 6 (seconds)",
                ))?;
                self.leader_lease_duration_ms = Some(d.as_millis() as u64);
            }
            "lease_refresh_interval" | "health_check_interval" | "health_check_timeout" => {
                let d = duration(value, Duration::from_millis(1))
                    .ok_or(bad("expected a duration such as 2s or 2000 (milliseconds)"))?;
                let ms = Some(d.as_millis() as u64);
                match key {
                    "lease_refresh_interval" => self.lease_refresh_interval_ms = ms,
                    "health_check_interval" => self.health_check_interval_ms = ms,
                    _ => self.health_check_timeout_ms = ms,
                }
            }
            "server_transfer_timeout" => {
                let d = duration(value, Duration::ZERO).ok_or(bad(
                    "expected a duration such as 5s or 5000 (milliseconds); 0 hands over at once",
                ))?;
                self.server_transfer_timeout_ms = Some(d.as_millis() as u64);
            }
            _ => unreachable!("every key of NODE_KEYS is handled"),
        }
        Ok(takes)
    }

    /// These directives over `under` (a node's over its location's over the cluster's):
    /// a key set here wins, a key unset here keeps `under`'s value.
    pub fn over(&self, under: &NodeOverrides) -> NodeOverrides {
        NodeOverrides {
            version: RECORD_VERSION,
            priority: self.priority.or(under.priority),
            maximum_lag: self.maximum_lag.or(under.maximum_lag),
            leader_lease_duration_ms: self
                .leader_lease_duration_ms
                .or(under.leader_lease_duration_ms),
            lease_refresh_interval_ms: self
                .lease_refresh_interval_ms
                .or(under.lease_refresh_interval_ms),
            health_check_interval_ms: self
                .health_check_interval_ms
                .or(under.health_check_interval_ms),
            health_check_timeout_ms: self
                .health_check_timeout_ms
                .or(under.health_check_timeout_ms),
            server_transfer_timeout_ms: self
                .server_transfer_timeout_ms
                .or(under.server_transfer_timeout_ms),
            newer: BTreeMap::new(),
        }
    }

    /// The directives set, as `harpctl set` takes them (`leader_lease_duration` → `6s`).
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let ms = |v: u64| humantime::format_duration(Duration::from_millis(v)).to_string();
        let mut out = Vec::new();
        if let Some(v) = self.priority {
            out.push(("priority", v.to_string()));
        }
        if let Some(v) = self.maximum_lag {
            out.push(("maximum_lag", v.to_string()));
        }
        if let Some(v) = self.leader_lease_duration_ms {
            out.push(("leader_lease_duration", ms(v)));
        }
        if let Some(v) = self.lease_refresh_interval_ms {
            out.push(("lease_refresh_interval", ms(v)));
        }
        if let Some(v) = self.health_check_interval_ms {
            out.push(("health_check_interval", ms(v)));
        }
        if let Some(v) = self.health_check_timeout_ms {
            out.push(("health_check_timeout", ms(v)));
        }
        if let Some(v) = self.server_transfer_timeout_ms {
            out.push(("server_transfer_timeout", ms(v)));
        }
        out
    }

    /// `file` with these directives over it, and the restart-only keys whose value differs
    /// from `running` (what the manager started with).
    pub fn merge(
        &self,
        file: &NodeDirectives,
        running: &NodeDirectives,
    ) -> (NodeDirectives, Vec<&'static str>) {
        let mut d = file.clone();
        if let Some(v) = self.priority {
            d.priority = v;
        }
        if let Some(v) = self.maximum_lag {
            d.maximum_lag = v;
        }
        if let Some(ms) = self.leader_lease_duration_ms {
            d.leader_lease_duration = Duration::from_millis(ms);
        }
        if let Some(ms) = self.lease_refresh_interval_ms {
            d.lease_refresh_interval = Duration::from_millis(ms);
        }
        if let Some(ms) = self.health_check_interval_ms {
            d.health_check_interval = Duration::from_millis(ms);
        }
        if let Some(ms) = self.health_check_timeout_ms {
            d.health_check_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = self.server_transfer_timeout_ms {
            d.server_transfer_timeout = Duration::from_millis(ms);
        }
        let mut pending = Vec::new();
        if d.leader_lease_duration != running.leader_lease_duration {
            pending.push("leader_lease_duration");
        }
        if d.lease_refresh_interval != running.lease_refresh_interval {
            pending.push("lease_refresh_interval");
        }
        if d.health_check_interval != running.health_check_interval {
            pending.push("health_check_interval");
        }
        if d.health_check_timeout != running.health_check_timeout {
            pending.push("health_check_timeout");
        }
        (d, pending)
    }
}

/// Node directives from etcd: the cluster's (`config/cluster`), the location's
/// (`config/locations/<l>`) and the node's own (`config/nodes/<n>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeLayers {
    pub cluster: NodeOverrides,
    pub location: NodeOverrides,
    pub node: NodeOverrides,
}

impl NodeLayers {
    /// The node's over the location's over the cluster's.
    pub fn effective(&self) -> NodeOverrides {
        self.node.over(&self.location.over(&self.cluster))
    }
}

/// A bare number is in the key's unit; text takes a humantime unit.
fn duration(value: &str, min: Duration) -> Option<Duration> {
    let d = match value.parse::<u64>() {
        Ok(n) if min >= Duration::from_secs(1) => Duration::from_secs(n),
        Ok(n) => Duration::from_millis(n),
        Err(_) => humantime::parse_duration(value).ok()?,
    };
    (d >= min).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directives() -> NodeDirectives {
        crate::config::parse_str(
            "cluster: {name: c}\ndcs: {driver: etcd, endpoints: [e:1]}\nlocation: dca\n\
             manager: {name: n1, dsn: host=h}\n",
            "config.yml",
        )
        .unwrap()
        .manager
        .unwrap()
        .node
    }

    #[test]
    fn set_validates_and_says_when_it_applies() {
        let mut o = NodeOverrides::new();
        assert_eq!(o.set("priority=50"), Ok(Takes::Live));
        assert_eq!(o.set("lease_refresh_interval = 1s"), Ok(Takes::Restart));
        assert_eq!(o.set("leader_lease_duration=10"), Ok(Takes::Restart));
        assert_eq!(o.leader_lease_duration_ms, Some(10_000));
        assert_eq!(o.set("health_check_timeout=3s"), Ok(Takes::Restart));
        assert_eq!(o.health_check_timeout_ms, Some(3000));
        assert!(o.set("health_check_timeout=0").is_err());
        assert_eq!(o.set("server_transfer_timeout=2s"), Ok(Takes::Live));
        assert_eq!(o.server_transfer_timeout_ms, Some(2000));
        assert_eq!(o.set("server_transfer_timeout=0"), Ok(Takes::Live));
        assert_eq!(o.server_transfer_timeout_ms, Some(0));
        let e = o.set("priorty=5").unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown node directive `priorty`; valid keys: priority, maximum_lag, \
             leader_lease_duration, lease_refresh_interval, health_check_interval, health_check_timeout, \
             server_transfer_timeout"
        );
        assert_eq!(
            o.set("priority=-2").unwrap_err().to_string(),
            "priority=-2: expected an integer >= -1"
        );
        assert!(o.set("priority").is_err());
        assert!(o.set("leader_lease_duration=0").is_err());
        assert_eq!(NodeOverrides::decode(o.encode().as_bytes()).unwrap(), o);
    }

    #[test]
    fn a_nodes_directives_win_over_its_locations_over_the_clusters() {
        let mut cluster = NodeOverrides::new();
        cluster.set("priority=10").unwrap();
        cluster.set("maximum_lag=100").unwrap();
        cluster.set("leader_lease_duration=9").unwrap();
        let mut location = NodeOverrides::new();
        location.set("maximum_lag=200").unwrap();
        let mut node = NodeOverrides::new();
        node.set("priority=70").unwrap();
        let eff = node.over(&location.over(&cluster));
        assert_eq!(eff.priority, Some(70));
        assert_eq!(eff.maximum_lag, Some(200));
        assert_eq!(eff.leader_lease_duration_ms, Some(9000));
        assert_eq!(eff.health_check_interval_ms, None);
        assert_eq!(
            eff.entries(),
            vec![
                ("priority", "70".to_owned()),
                ("maximum_lag", "200".to_owned()),
                ("leader_lease_duration", "9s".to_owned()),
            ]
        );
    }

    #[test]
    fn merge_applies_over_the_file_and_names_what_waits_for_a_restart() {
        let file = directives();
        let mut o = NodeOverrides::new();
        o.set("priority=7").unwrap();
        o.set("leader_lease_duration=9s").unwrap();
        let (d, pending) = o.merge(&file, &file);
        assert_eq!(d.priority, 7);
        assert_eq!(d.leader_lease_duration, Duration::from_secs(9));
        assert_eq!(pending, vec!["leader_lease_duration"]);
        // After a restart with those values nothing is pending.
        assert!(o.merge(&file, &d).1.is_empty());
    }
}

/// The directives `harpctl set proxy <p|global>` accepts; all apply live.
pub const PROXY_KEYS: &[&str] = &["max_client_conn", "pause_timeout", "timeout", "keepalive"];

/// Value of `config/proxies/<p>` or `config/proxies/global`: only what an operator set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyOverrides {
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_client_conn: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_ms: Option<u64>,
    /// Directives of a newer HARP: ignored here, kept when `harpctl set` rewrites the record.
    #[serde(flatten)]
    pub newer: BTreeMap<String, serde_json::Value>,
}

/// The live settings of an agent after merging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyLive {
    pub max_client_conn: u32,
    pub pause_timeout: Duration,
    pub timeout: Duration,
    pub keepalive: Duration,
}

impl ProxyLive {
    /// The live settings as a config file gives them (before any directive in etcd).
    pub fn of(p: &crate::config::ProxyConfig) -> Self {
        ProxyLive {
            max_client_conn: p.max_client_conn,
            pause_timeout: p.pause_timeout,
            timeout: p.timeout,
            keepalive: p.keepalive,
        }
    }
}

impl ProxyOverrides {
    pub fn new() -> Self {
        Self {
            version: RECORD_VERSION,
            ..Self::default()
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, crate::records::RecordError> {
        crate::records::decode("proxy directives", bytes)
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("proxy directives serialize")
    }

    /// Sets one directive from `key=value` text. Durations take a unit or milliseconds.
    pub fn set(&mut self, assignment: &str) -> Result<(), DirectiveError> {
        let (key, value) = assignment
            .split_once('=')
            .ok_or_else(|| DirectiveError::NotAnAssignment(assignment.to_owned()))?;
        let (key, value) = (key.trim(), value.trim());
        let bad = |why| DirectiveError::BadValue {
            key: key.to_owned(),
            value: value.to_owned(),
            why,
        };
        let ms = |v: &str| duration(v, Duration::from_millis(1)).map(|d| d.as_millis() as u64);
        match key {
            "max_client_conn" => {
                let n: u32 = value
                    .parse()
                    .map_err(|_| bad("expected a whole number >= 1"))?;
                if n == 0 {
                    return Err(bad("expected a whole number >= 1"));
                }
                self.max_client_conn = Some(n);
            }
            "pause_timeout" => {
                self.pause_timeout_ms =
                    Some(ms(value).ok_or(bad("expected a duration such as 10s"))?)
            }
            "timeout" => {
                self.timeout_ms = Some(ms(value).ok_or(bad("expected a duration such as 1s"))?)
            }
            "keepalive" => {
                self.keepalive_ms = Some(ms(value).ok_or(bad("expected a duration such as 5s"))?)
            }
            _ => {
                return Err(DirectiveError::UnknownProxyKey {
                    key: key.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// `base` with these directives over it.
    pub fn merge(&self, base: ProxyLive) -> ProxyLive {
        ProxyLive {
            max_client_conn: self.max_client_conn.unwrap_or(base.max_client_conn),
            pause_timeout: self
                .pause_timeout_ms
                .map_or(base.pause_timeout, Duration::from_millis),
            timeout: self.timeout_ms.map_or(base.timeout, Duration::from_millis),
            keepalive: self
                .keepalive_ms
                .map_or(base.keepalive, Duration::from_millis),
        }
    }
}

#[cfg(test)]
mod proxy_tests {
    use super::*;

    #[test]
    fn proxy_directives_validate_and_merge_global_then_own() {
        let base = ProxyLive {
            max_client_conn: 100,
            pause_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            keepalive: Duration::from_secs(5),
        };
        let mut global = ProxyOverrides::new();
        global.set("pause_timeout=30s").unwrap();
        global.set("max_client_conn=500").unwrap();
        let mut own = ProxyOverrides::new();
        own.set("max_client_conn=50").unwrap();
        let live = own.merge(global.merge(base));
        assert_eq!(live.max_client_conn, 50);
        assert_eq!(live.pause_timeout, Duration::from_secs(30));
        assert_eq!(
            own.set("listen_port=1").unwrap_err().to_string(),
            "unknown proxy directive `listen_port`; valid keys: max_client_conn, pause_timeout, \
             timeout, keepalive"
        );
        assert!(own.set("max_client_conn=0").is_err());
        assert_eq!(
            ProxyOverrides::decode(own.encode().as_bytes()).unwrap(),
            own
        );
    }
}
