//! The etcd key schema. Every key of a cluster lives under `/harp/<cluster>/`, so one prefix
//! watch sees the whole cluster and one prefix delete removes it.

/// Builds the keys of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(cluster: &str) -> Self {
        Self {
            prefix: format!("/harp/{cluster}/"),
        }
    }

    /// `/harp/<cluster>/`: watch this to see every change of the cluster.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The lead master lease of a location; its `create_revision` is the fencing token.
    pub fn leader(&self, location: &str) -> String {
        format!("{}leader/{location}", self.prefix)
    }

    pub fn leader_prefix(&self) -> String {
        format!("{}leader/", self.prefix)
    }

    /// A node's status, written by its manager on the manager's lease.
    pub fn node_status(&self, node: &str) -> String {
        format!("{}nodes/{node}/status", self.prefix)
    }

    pub fn nodes_prefix(&self) -> String {
        format!("{}nodes/", self.prefix)
    }

    /// Present while the node is fenced: it never leads and releases if it does.
    pub fn fenced(&self, node: &str) -> String {
        format!("{}fenced/{node}", self.prefix)
    }

    pub fn fenced_prefix(&self) -> String {
        format!("{}fenced/", self.prefix)
    }

    /// Switchover request for a location (`harpctl promote`).
    pub fn promote_intent(&self, location: &str) -> String {
        format!("{}intent/promote/{location}", self.prefix)
    }

    pub fn proxy_status(&self, proxy: &str) -> String {
        format!("{}proxies/{proxy}/status", self.prefix)
    }

    /// Cluster-wide management switch (`harpctl manage|unmanage cluster`); absent = managed.
    pub fn managed(&self) -> String {
        format!("{}managed", self.prefix)
    }

    /// Directives an operator set for a node (`harpctl set node`), merged over its file.
    pub fn node_config(&self, node: &str) -> String {
        format!("{}config/nodes/{node}", self.prefix)
    }

    /// Node directives for every node of the cluster (`harpctl set cluster`), under the
    /// location's and the node's own.
    pub fn cluster_config(&self) -> String {
        format!("{}config/cluster", self.prefix)
    }

    /// Node directives for every node of a location (`harpctl set location`), under the node's.
    pub fn location_config(&self, location: &str) -> String {
        format!("{}config/locations/{location}", self.prefix)
    }

    /// Directives an operator set for a proxy (`harpctl set proxy`); `global` for all.
    pub fn proxy_config(&self, proxy: &str) -> String {
        format!("{}config/proxies/{proxy}", self.prefix)
    }

    /// Present while a node is unmanaged: its manager changes no leadership.
    pub fn node_unmanaged(&self, node: &str) -> String {
        format!("{}unmanaged/nodes/{node}", self.prefix)
    }

    /// Present while a proxy is unmanaged: its agent keeps its current route.
    pub fn proxy_unmanaged(&self, proxy: &str) -> String {
        format!("{}unmanaged/proxies/{proxy}", self.prefix)
    }

    /// Streaming mode: the primary's last WAL position (`OptimeRecord`), on no lease.
    pub fn optime(&self, group: &str) -> String {
        format!("{}optime/{group}", self.prefix)
    }

    /// Streaming mode: the synchronous standbys (`SyncRecord`), on no lease.
    pub fn sync(&self, group: &str) -> String {
        format!("{}sync/{group}", self.prefix)
    }

    /// `harpctl reinit <node>`: rebuild the node from the primary.
    pub fn reinit_intent(&self, node: &str) -> String {
        format!("{}intent/reinit/{node}", self.prefix)
    }

    pub fn promote_prefix(&self) -> String {
        format!("{}intent/promote/", self.prefix)
    }

    /// Classifies a key of this cluster, so a prefix watch can route each event.
    pub fn parse<'a>(&self, key: &'a str) -> Option<KeyKind<'a>> {
        let rest = key.strip_prefix(self.prefix.as_str())?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["leader", loc] => Some(KeyKind::Leader(loc)),
            ["nodes", node, "status"] => Some(KeyKind::NodeStatus(node)),
            ["fenced", node] => Some(KeyKind::Fenced(node)),
            ["intent", "promote", loc] => Some(KeyKind::PromoteIntent(loc)),
            ["intent", "reinit", node] => Some(KeyKind::ReinitIntent(node)),
            ["optime", group] => Some(KeyKind::Optime(group)),
            ["sync", group] => Some(KeyKind::Sync(group)),
            ["proxies", proxy, "status"] => Some(KeyKind::ProxyStatus(proxy)),
            ["managed"] => Some(KeyKind::Managed),
            ["unmanaged", "nodes", node] => Some(KeyKind::NodeUnmanaged(node)),
            ["config", "cluster"] => Some(KeyKind::ClusterConfig),
            ["config", "locations", loc] => Some(KeyKind::LocationConfig(loc)),
            ["config", "nodes", node] => Some(KeyKind::NodeConfig(node)),
            ["config", "proxies", proxy] => Some(KeyKind::ProxyConfig(proxy)),
            ["unmanaged", "proxies", proxy] => Some(KeyKind::ProxyUnmanaged(proxy)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind<'a> {
    Leader(&'a str),
    NodeStatus(&'a str),
    Fenced(&'a str),
    PromoteIntent(&'a str),
    ReinitIntent(&'a str),
    Optime(&'a str),
    Sync(&'a str),
    ProxyStatus(&'a str),
    Managed,
    NodeUnmanaged(&'a str),
    ClusterConfig,
    LocationConfig(&'a str),
    NodeConfig(&'a str),
    ProxyConfig(&'a str),
    ProxyUnmanaged(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_parse() {
        let k = Keys::new("prod");
        assert_eq!(k.leader("dca"), "/harp/prod/leader/dca");
        assert_eq!(k.parse(&k.leader("dca")), Some(KeyKind::Leader("dca")));
        assert_eq!(
            k.parse(&k.node_status("n1")),
            Some(KeyKind::NodeStatus("n1"))
        );
        assert_eq!(k.parse(&k.fenced("n1")), Some(KeyKind::Fenced("n1")));
        assert_eq!(
            k.parse(&k.promote_intent("dcb")),
            Some(KeyKind::PromoteIntent("dcb"))
        );
        assert_eq!(k.parse(&k.managed()), Some(KeyKind::Managed));
        assert_eq!(k.parse(&k.optime("c")), Some(KeyKind::Optime("c")));
        assert_eq!(k.parse(&k.sync("c")), Some(KeyKind::Sync("c")));
        assert_eq!(
            k.parse(&k.reinit_intent("n1")),
            Some(KeyKind::ReinitIntent("n1"))
        );
        assert_eq!(k.parse(&k.cluster_config()), Some(KeyKind::ClusterConfig));
        assert_eq!(
            k.parse(&k.location_config("dca")),
            Some(KeyKind::LocationConfig("dca"))
        );
        assert_eq!(
            k.parse(&k.node_unmanaged("n1")),
            Some(KeyKind::NodeUnmanaged("n1"))
        );
        assert_eq!(
            k.parse(&k.proxy_unmanaged("p1")),
            Some(KeyKind::ProxyUnmanaged("p1"))
        );
        assert_eq!(k.parse("/harp/other/leader/dca"), None);
        assert_eq!(k.parse("/harp/prod/leader/dca/extra"), None);
    }
}
