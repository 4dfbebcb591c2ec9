//! A cluster's state as one prefix get of `/harp/<cluster>/` saw it, decoded.

use std::collections::{BTreeMap, BTreeSet};

use harp_core::directives::NodeOverrides;
use harp_core::keys::{KeyKind, Keys};
use harp_core::records::{LeaderRecord, ManagedRecord, NodeStatus, PromoteIntent, ProxyStatus};

/// A leader key: its record and fencing token (the key's `create_revision`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub record: LeaderRecord,
    pub token: i64,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub cluster: String,
    /// The etcd revision of the read: watch from `revision + 1` to miss nothing after it.
    pub revision: i64,
    /// By location.
    pub leaders: BTreeMap<String, Leader>,
    /// By node name.
    pub nodes: BTreeMap<String, NodeStatus>,
    pub fenced: BTreeSet<String>,
    /// By proxy name.
    pub proxies: BTreeMap<String, ProxyStatus>,
    /// `managed` key; absent (or unreadable) means managed.
    pub cluster_managed: bool,
    pub node_unmanaged: BTreeSet<String>,
    pub proxy_unmanaged: BTreeSet<String>,
    /// Pending switchovers (`harpctl promote` in progress) by location.
    pub intents: BTreeMap<String, PromoteIntent>,
    /// Node directives set for the whole cluster and per location (`harpctl set`).
    pub cluster_config: Option<NodeOverrides>,
    pub location_config: BTreeMap<String, NodeOverrides>,
    /// Records that could not be decoded (printed on stderr, never fatal).
    pub warnings: Vec<String>,
}

impl Snapshot {
    /// Decodes `(key, value, create_revision)` triples of the cluster's prefix.
    pub fn from_kvs<'a>(
        cluster: &str,
        keys: &Keys,
        revision: i64,
        kvs: impl IntoIterator<Item = (String, &'a [u8], i64)>,
    ) -> Snapshot {
        let mut s = Snapshot {
            cluster: cluster.into(),
            revision,
            cluster_managed: true,
            ..Snapshot::default()
        };
        for (key, value, create_revision) in kvs {
            let Some(kind) = keys.parse(&key) else {
                continue;
            };
            let bad = |e: &dyn std::fmt::Display| format!("ignoring {key}: {e}");
            match kind {
                KeyKind::Leader(loc) => match LeaderRecord::decode(value) {
                    Ok(record) => {
                        let token = create_revision;
                        s.leaders.insert(loc.into(), Leader { record, token });
                    }
                    Err(e) => s.warnings.push(bad(&e)),
                },
                KeyKind::NodeStatus(node) => match NodeStatus::decode(value) {
                    Ok(st) => {
                        s.nodes.insert(node.into(), st);
                    }
                    Err(e) => s.warnings.push(bad(&e)),
                },
                KeyKind::Fenced(node) => {
                    s.fenced.insert(node.into());
                }
                KeyKind::ProxyStatus(proxy) => match ProxyStatus::decode(value) {
                    Ok(st) => {
                        s.proxies.insert(proxy.into(), st);
                    }
                    Err(e) => s.warnings.push(bad(&e)),
                },
                KeyKind::PromoteIntent(loc) => match PromoteIntent::decode(value) {
                    Ok(i) => {
                        s.intents.insert(loc.into(), i);
                    }
                    Err(e) => s.warnings.push(bad(&e)),
                },
                KeyKind::Managed => match ManagedRecord::decode(value) {
                    Ok(r) => s.cluster_managed = r.managed,
                    // The managers read an unreadable switch as "managed"; say so.
                    Err(e) => s.warnings.push(bad(&format!("{e}; counted as managed"))),
                },
                KeyKind::ClusterConfig => match NodeOverrides::decode(value) {
                    Ok(o) => s.cluster_config = Some(o),
                    Err(e) => s.warnings.push(bad(&e)),
                },
                KeyKind::LocationConfig(loc) => match NodeOverrides::decode(value) {
                    Ok(o) => {
                        s.location_config.insert(loc.into(), o);
                    }
                    Err(e) => s.warnings.push(bad(&e)),
                },
                // Directives: the managers report what they apply in their status.
                KeyKind::NodeConfig(_) | KeyKind::ProxyConfig(_) => {}
                // Streaming mode's records: read by `harpctl get` through the node statuses.
                KeyKind::Optime(_) | KeyKind::Sync(_) | KeyKind::ReinitIntent(_) => {}
                KeyKind::NodeUnmanaged(node) => {
                    s.node_unmanaged.insert(node.into());
                }
                KeyKind::ProxyUnmanaged(proxy) => {
                    s.proxy_unmanaged.insert(proxy.into());
                }
            }
        }
        s
    }

    /// Every location a leader, node, proxy or intent names. In a streaming cluster the
    /// leader and intent keys name the replication group, not a location.
    pub fn locations(&self) -> BTreeSet<String> {
        let mut locs = BTreeSet::new();
        if !self.is_streaming() {
            locs.extend(self.leaders.keys().cloned());
            locs.extend(self.intents.keys().cloned());
        }
        locs.extend(self.nodes.values().map(|n| n.location.clone()));
        locs.extend(self.proxies.values().map(|p| p.location.clone()));
        locs.extend(self.location_config.keys().cloned());
        locs
    }

    /// Whether a node publishes a replication group: the cluster runs in streaming mode.
    pub fn is_streaming(&self) -> bool {
        self.nodes.values().any(|n| n.group.is_some())
    }

    /// The names of the leader keys nodes compete for (`NodeStatus::scope`): the locations of
    /// a multi-writer cluster, the replication group(s) of a streaming one.
    pub fn scopes(&self) -> BTreeSet<String> {
        if !self.is_streaming() {
            return self.locations();
        }
        let mut scopes: BTreeSet<String> = self.leaders.keys().cloned().collect();
        scopes.extend(self.nodes.values().map(|n| n.scope().to_owned()));
        scopes.extend(self.intents.keys().cloned());
        scopes
    }

    /// The scope whose leader serves `location`'s clients: the location itself, or in a
    /// streaming cluster the group of its nodes.
    pub fn scope_of_location(&self, location: &str) -> String {
        self.nodes
            .values()
            .find(|n| n.location == location && n.group.is_some())
            .map_or_else(|| location.to_owned(), |n| n.scope().to_owned())
    }

    /// The proxies that route to `scope`'s leader: every proxy when `scope` is a streaming
    /// group (one primary serves every location), else the location's own.
    pub fn proxies_of<'a>(
        &'a self,
        scope: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a ProxyStatus)> + 'a {
        let group = self
            .nodes
            .values()
            .any(|n| n.group.as_deref() == Some(scope));
        self.proxies
            .iter()
            .filter(move |(_, p)| group || p.location == scope)
    }

    /// Every node a status, fence, unmanaged marker or leader key names.
    pub fn node_names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.nodes.keys().cloned().collect();
        names.extend(self.fenced.iter().cloned());
        names.extend(self.node_unmanaged.iter().cloned());
        names.extend(self.leaders.values().map(|l| l.record.node.clone()));
        names
    }

    pub fn proxy_names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.proxies.keys().cloned().collect();
        names.extend(self.proxy_unmanaged.iter().cloned());
        names
    }

    pub fn knows_node(&self, node: &str) -> bool {
        self.node_names().contains(node)
    }

    pub fn knows_proxy(&self, proxy: &str) -> bool {
        self.proxy_names().contains(proxy)
    }

    /// The location whose leader key names `node`, if any.
    pub fn leading(&self, node: &str) -> Option<(&str, &Leader)> {
        self.leaders
            .iter()
            .find(|(_, l)| l.record.node == node)
            .map(|(loc, l)| (loc.as_str(), l))
    }

    /// Whether HARP may change this node's leadership: the cluster and the node are managed.
    pub fn node_managed(&self, node: &str) -> bool {
        self.cluster_managed && !self.node_unmanaged.contains(node)
    }

    pub fn proxy_managed(&self, proxy: &str) -> bool {
        self.cluster_managed && !self.proxy_unmanaged.contains(proxy)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use harp_core::records::{PgState, RECORD_VERSION};

    pub fn status(node: &str, loc: &str, pg: PgState, priority: i32) -> NodeStatus {
        NodeStatus {
            version: RECORD_VERSION,
            node: node.into(),
            location: loc.into(),
            postgres: pg,
            priority,
            wal_lsn: Some(0x1_0000_0028),
            leader: false,
            address: "127.0.0.1".into(),
            port: 5432,
            pending_restart: Vec::new(),
            updated_ms: 1_000,
            ..Default::default()
        }
    }

    pub fn leader(node: &str, loc: &str) -> LeaderRecord {
        LeaderRecord {
            version: RECORD_VERSION,
            node: node.into(),
            location: loc.into(),
            address: "127.0.0.1".into(),
            port: 5432,
            handover_to: None,
            leaving: false,
            ..Default::default()
        }
    }

    #[test]
    fn decodes_every_kind_of_key_and_keeps_going_past_bad_records() {
        let keys = Keys::new("c");
        let st = status("n1", "dca", PgState::Primary, 100).encode();
        let ld = leader("n1", "dca").encode();
        let kvs = vec![
            (keys.leader("dca"), ld.as_bytes(), 42),
            (keys.node_status("n1"), st.as_bytes(), 7),
            (keys.node_status("n2"), b"garbage".as_slice(), 8),
            (keys.fenced("n3"), b"{}".as_slice(), 9),
            (keys.node_unmanaged("n1"), b"{}".as_slice(), 10),
            (
                keys.managed(),
                br#"{"version":1,"managed":false,"updated_ms":0}"#,
                11,
            ),
            ("/harp/c/something/else".to_owned(), b"x".as_slice(), 12),
        ];
        let s = Snapshot::from_kvs("c", &keys, 99, kvs);
        assert_eq!(s.revision, 99);
        assert_eq!(s.leaders["dca"].token, 42);
        assert_eq!(s.leading("n1").map(|(l, _)| l), Some("dca"));
        assert!(!s.cluster_managed);
        assert!(!s.node_managed("n3"));
        assert_eq!(s.node_names().into_iter().collect::<Vec<_>>(), ["n1", "n3"]);
        assert!(s.knows_node("n3") && !s.knows_node("n2"));
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(
            s.warnings[0].contains("nodes/n2/status"),
            "{:?}",
            s.warnings
        );
        assert_eq!(s.locations().into_iter().collect::<Vec<_>>(), ["dca"]);
    }
}
