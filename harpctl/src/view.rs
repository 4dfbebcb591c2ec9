//! What `get` prints: one serde struct per kind of object, built from a [`Snapshot`]. Field
//! names are the JSON/YAML contract for scripts: snake_case, stable, `null` when unknown.

use std::collections::BTreeMap;

use harp_core::records::{PgState, ReplicaFacts};
use serde::Serialize;

use crate::snapshot::Snapshot;

/// A node's part in its location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// `leader/<location>` names it.
    Leader,
    /// Publishes its status, does not lead.
    Follower,
    /// No status key (its manager is not running) and no leader key.
    Offline,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Offline => "offline",
        }
    }
}

pub fn pg_state_str(s: PgState) -> &'static str {
    match s {
        PgState::Primary => "primary",
        PgState::Standby => "standby",
        PgState::Down => "down",
        PgState::Unknown => "unknown",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeView {
    pub name: String,
    pub location: Option<String>,
    pub role: Role,
    pub postgres: Option<PgState>,
    pub priority: Option<i32>,
    pub fenced: bool,
    /// The cluster and the node are managed.
    pub managed: bool,
    /// WAL position in bytes.
    pub wal_lsn: Option<u64>,
    pub address: Option<String>,
    pub port: Option<u16>,
    /// Directives set in etcd that wait for the manager's restart.
    pub pending_restart: Vec<String>,
    /// When its manager last wrote its status (Unix ms), and how long ago.
    pub updated_ms: Option<u64>,
    pub age_ms: Option<u64>,
    /// Streaming mode: the replication group (leader key) it belongs to.
    pub group: Option<String>,
    /// Streaming mode: what its Postgres reports about replication; `null` otherwise.
    #[serde(flatten)]
    pub replication: ReplicationView,
    /// Its leader record says it is still being promoted (clients held).
    pub promoting: bool,
    /// Why the node does not serve as it should (e.g. `rewind failed: …`).
    pub reason: Option<String>,
}

/// A node's replication facts, flattened into its view (`null` where not reported).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReplicationView {
    pub timeline: Option<u32>,
    /// Standby: WAL received (bytes).
    pub receive_lsn: Option<u64>,
    /// Standby: the `host:port` it streams from.
    pub upstream: Option<String>,
    /// Standby: whether its WAL receiver streams now.
    pub streaming: Option<bool>,
    /// Standby: bytes replayed behind the primary's last published position.
    pub lag: Option<u64>,
    /// Primary: the standbys its commits wait for.
    pub sync_standbys: Vec<String>,
}

impl ReplicationView {
    fn of(facts: Option<&ReplicaFacts>, pg: Option<PgState>) -> Self {
        let Some(f) = facts else {
            return Self::default();
        };
        let standby = pg == Some(PgState::Standby);
        ReplicationView {
            timeline: f.timeline,
            receive_lsn: f.receive_lsn,
            upstream: f.upstream.clone(),
            streaming: standby.then_some(f.streaming),
            lag: f.lag,
            sync_standbys: f.sync_standbys.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProxyView {
    pub name: String,
    pub location: String,
    pub mode: String,
    /// The leader new clients are routed to; `null` while clients are held.
    pub leader: Option<String>,
    pub token: Option<i64>,
    pub sessions: u64,
    pub held: u64,
    /// During a switchover: the leadership whose sessions it closes between transactions, and
    /// how many are left.
    pub draining: Option<i64>,
    pub drain_left: u64,
    pub managed: bool,
    pub updated_ms: u64,
    pub age_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaderView {
    pub location: String,
    /// `null` while the location has no lead master.
    pub node: Option<String>,
    pub address: Option<String>,
    pub port: Option<u16>,
    /// The fencing token: the leader key's `create_revision`.
    pub token: Option<i64>,
    /// During a planned switchover: the node the leader is handing over to.
    pub handover_to: Option<String>,
    /// Streaming mode: the holder is still being promoted; proxies hold clients meanwhile.
    pub promoting: bool,
    /// The leader is about to release; proxies route nobody to it.
    pub leaving: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocationView {
    pub location: String,
    pub leader: Option<String>,
    pub token: Option<i64>,
    pub nodes: usize,
    pub proxies: usize,
    /// Target of a switchover in progress.
    pub switchover_to: Option<String>,
    /// Its leader is still being promoted (streaming mode).
    pub promoting: bool,
    /// Node directives set for this location (`harpctl set location`).
    pub directives: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterView {
    pub name: String,
    pub managed: bool,
    /// Node directives set for every node (`harpctl set cluster`).
    pub directives: BTreeMap<String, String>,
    pub locations: Vec<LocationView>,
}

impl Snapshot {
    pub fn node_view(&self, name: &str, now_ms: u64) -> NodeView {
        let st = self.nodes.get(name);
        let leading = self.leading(name);
        let role = match (leading, st) {
            (Some(_), _) => Role::Leader,
            (None, Some(_)) => Role::Follower,
            (None, None) => Role::Offline,
        };
        NodeView {
            name: name.into(),
            location: st
                .map(|s| s.location.clone())
                .or_else(|| leading.map(|(loc, _)| loc.to_owned())),
            role,
            postgres: st.map(|s| s.postgres),
            priority: st.map(|s| s.priority),
            fenced: self.fenced.contains(name),
            managed: self.node_managed(name),
            wal_lsn: st.and_then(|s| s.wal_lsn),
            address: st.map(|s| s.address.clone()),
            port: st.map(|s| s.port),
            pending_restart: st.map(|s| s.pending_restart.clone()).unwrap_or_default(),
            updated_ms: st.map(|s| s.updated_ms),
            age_ms: st.map(|s| now_ms.saturating_sub(s.updated_ms)),
            group: st.and_then(|s| s.group.clone()),
            replication: ReplicationView::of(
                st.and_then(|s| s.replica.as_ref()),
                st.map(|s| s.postgres),
            ),
            promoting: leading.is_some_and(|(_, l)| l.record.promoting),
            reason: st.and_then(|s| s.reason.clone()),
        }
    }

    pub fn node_views(&self, now_ms: u64) -> Vec<NodeView> {
        self.node_names()
            .iter()
            .map(|n| self.node_view(n, now_ms))
            .collect()
    }

    /// `None` for a proxy with an unmanaged marker but no status (its agent is not running).
    pub fn proxy_view(&self, name: &str, now_ms: u64) -> Option<ProxyView> {
        let p = self.proxies.get(name)?;
        Some(ProxyView {
            name: name.into(),
            location: p.location.clone(),
            mode: p.mode.clone(),
            leader: p.leader.clone(),
            token: p.token,
            sessions: p.sessions,
            held: p.held,
            draining: p.draining,
            drain_left: p.drain_left,
            managed: self.proxy_managed(name),
            updated_ms: p.updated_ms,
            age_ms: now_ms.saturating_sub(p.updated_ms),
        })
    }

    pub fn proxy_views(&self, now_ms: u64) -> Vec<ProxyView> {
        self.proxies
            .keys()
            .filter_map(|p| self.proxy_view(p, now_ms))
            .collect()
    }

    pub fn leader_view(&self, location: &str) -> LeaderView {
        let l = self.leaders.get(location);
        LeaderView {
            location: location.into(),
            node: l.map(|l| l.record.node.clone()),
            address: l.map(|l| l.record.address.clone()),
            port: l.map(|l| l.record.port),
            token: l.map(|l| l.token),
            handover_to: l.and_then(|l| l.record.handover_to.clone()),
            promoting: l.is_some_and(|l| l.record.promoting),
            leaving: l.is_some_and(|l| l.record.leaving),
        }
    }

    pub fn leader_views(&self) -> Vec<LeaderView> {
        self.scopes().iter().map(|l| self.leader_view(l)).collect()
    }

    pub fn location_view(&self, location: &str) -> LocationView {
        let scope = self.scope_of_location(location);
        let l = self.leaders.get(&scope);
        LocationView {
            location: location.into(),
            leader: l.map(|l| l.record.node.clone()),
            token: l.map(|l| l.token),
            nodes: self
                .nodes
                .values()
                .filter(|n| n.location == location)
                .count(),
            proxies: self
                .proxies
                .values()
                .filter(|p| p.location == location)
                .count(),
            switchover_to: self.intents.get(&scope).map(|i| i.target.clone()),
            promoting: l.is_some_and(|l| l.record.promoting),
            directives: entries(self.location_config.get(location)),
        }
    }

    pub fn location_views(&self) -> Vec<LocationView> {
        self.locations()
            .iter()
            .map(|l| self.location_view(l))
            .collect()
    }

    pub fn cluster_view(&self) -> ClusterView {
        ClusterView {
            name: self.cluster.clone(),
            managed: self.cluster_managed,
            directives: entries(self.cluster_config.as_ref()),
            locations: self.location_views(),
        }
    }
}

fn entries(o: Option<&harp_core::directives::NodeOverrides>) -> BTreeMap<String, String> {
    o.map(|o| o.entries())
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

#[cfg(test)]
mod tests {
    use harp_core::keys::Keys;

    use super::*;
    use crate::snapshot::tests::{leader, status};

    #[test]
    fn role_comes_from_the_leader_key_not_the_status_flag() {
        let keys = Keys::new("c");
        let mut n2 = status("n2", "dca", PgState::Primary, 100);
        n2.leader = true; // stale flag: the key says n1
        let (s1, s2) = (
            status("n1", "dca", PgState::Primary, 100).encode(),
            n2.encode(),
        );
        let ld = leader("n1", "dca").encode();
        let kvs = vec![
            (keys.leader("dca"), ld.as_bytes(), 5),
            (keys.node_status("n1"), s1.as_bytes(), 6),
            (keys.node_status("n2"), s2.as_bytes(), 7),
            (keys.fenced("n9"), b"{}".as_slice(), 8),
        ];
        let s = Snapshot::from_kvs("c", &keys, 10, kvs);
        let views = s.node_views(3_500);
        let roles: Vec<_> = views.iter().map(|v| (v.name.as_str(), v.role)).collect();
        assert_eq!(
            roles,
            [
                ("n1", Role::Leader),
                ("n2", Role::Follower),
                ("n9", Role::Offline)
            ]
        );
        assert_eq!(views[0].age_ms, Some(2_500));
        assert!(views[2].fenced && views[2].location.is_none());
        let loc = s.location_view("dca");
        assert_eq!(
            (loc.leader.as_deref(), loc.token, loc.nodes),
            (Some("n1"), Some(5), 2)
        );
        let json = serde_json::to_value(&views[1]).unwrap();
        assert_eq!(json["postgres"], "primary");
        assert_eq!(json["role"], "follower");
    }
}
