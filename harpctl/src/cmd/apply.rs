//! `harpctl apply <bootstrap.yml>`: HARP's bootstrap file — the cluster, its locations, its
//! nodes and its proxies, each with their directives — written to etcd. Idempotent: it compares
//! with what etcd holds, writes only what differs and says what changed. Every value is
//! checked before anything is written.

use std::collections::BTreeMap;
use std::path::Path;

use harp_core::directives::{DirectiveError, NodeOverrides, ProxyOverrides};
use harp_core::records::{ManagedRecord, RECORD_VERSION, unix_ms};
use serde::{Deserialize, Serialize};

use crate::context::{Context, check_name};
use crate::error::CtlError;
use crate::output::{Format, render_data};

type Directives = BTreeMap<String, serde_yaml::Value>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bootstrap {
    cluster: ClusterSection,
    #[serde(default)]
    locations: Vec<LocationEntry>,
    #[serde(default)]
    nodes: Vec<NodeEntry>,
    #[serde(default)]
    proxies: Option<ProxiesSection>,
}

/// The cluster's name, whether it is managed, and node directives for every node.
#[derive(Debug, Deserialize)]
struct ClusterSection {
    name: String,
    #[serde(default)]
    managed: Option<bool>,
    #[serde(flatten)]
    directives: Directives,
}

/// A location and node directives for its nodes.
#[derive(Debug, Deserialize)]
struct LocationEntry {
    location: String,
    #[serde(flatten)]
    directives: Directives,
}

/// A node and its directives; the keys are those of `harpctl set node`.
#[derive(Debug, Deserialize)]
struct NodeEntry {
    node_name: String,
    #[serde(default)]
    location: Option<String>,
    #[serde(flatten)]
    directives: Directives,
}

/// Directives for every proxy, and `instances` with each proxy's own.
#[derive(Debug, Deserialize)]
struct ProxiesSection {
    #[serde(default)]
    instances: Vec<ProxyEntry>,
    #[serde(flatten)]
    directives: Directives,
}

#[derive(Debug, Deserialize)]
struct ProxyEntry {
    name: String,
    /// Agents take their location from their config file; accepted for HARP's shape.
    #[serde(default)]
    location: Option<String>,
    #[serde(flatten)]
    directives: Directives,
}

#[derive(Debug, Serialize)]
struct Applied {
    cluster: String,
    changes: Vec<String>,
    unchanged: Vec<String>,
    warnings: Vec<String>,
}

/// One key the file wants: what it is, and the record it should hold.
struct Wanted {
    label: String,
    key: String,
    value: Record,
}

#[derive(PartialEq)]
enum Record {
    Node(NodeOverrides),
    Proxy(ProxyOverrides),
}

impl Record {
    fn encode(&self) -> String {
        match self {
            Record::Node(o) => o.encode(),
            Record::Proxy(o) => o.encode(),
        }
    }
    fn is_empty(&self) -> bool {
        match self {
            Record::Node(o) => *o == NodeOverrides::new(),
            Record::Proxy(o) => *o == ProxyOverrides::new(),
        }
    }
    /// What etcd holds, read as the same kind of record (unreadable counts as different).
    fn same_as(&self, bytes: &[u8]) -> bool {
        match self {
            Record::Node(o) => NodeOverrides::decode(bytes).is_ok_and(|c| &c == o),
            Record::Proxy(o) => ProxyOverrides::decode(bytes).is_ok_and(|c| &c == o),
        }
    }
}

pub async fn run(ctx: &Context, file: &Path) -> Result<String, CtlError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CtlError::Usage(format!("cannot read {}: {e}", file.display())))?;
    let boot: Bootstrap = serde_yaml::from_str(&text)
        .map_err(|e| CtlError::Usage(format!("{}: {e}", file.display())))?;
    let cluster = ctx.cluster().unwrap_or_else(|_| boot.cluster.name.clone());
    if boot.cluster.name != cluster {
        return Err(CtlError::Usage(format!(
            "{}: cluster.name is {} but harpctl targets cluster {cluster} (-c/--cluster)",
            file.display(),
            boot.cluster.name
        )));
    }
    let mut out = Applied {
        cluster: cluster.clone(),
        changes: Vec::new(),
        unchanged: Vec::new(),
        warnings: Vec::new(),
    };
    // Check everything first: one bad value and nothing is written.
    let at = |what: &str| format!("{}: {what}", file.display());
    let keys = harp_core::keys::Keys::new(&cluster);
    let mut wanted = Vec::new();
    if !boot.cluster.directives.is_empty() {
        let o = node_directives(&boot.cluster.directives, &at("cluster"))?;
        wanted.push(Wanted {
            label: "cluster".into(),
            key: keys.cluster_config(),
            value: Record::Node(o),
        });
    }
    for l in &boot.locations {
        check_name("location", &l.location)?;
        let o = node_directives(&l.directives, &at(&format!("location {}", l.location)))?;
        wanted.push(Wanted {
            label: format!("location {}", l.location),
            key: keys.location_config(&l.location),
            value: Record::Node(o),
        });
    }
    for n in &boot.nodes {
        check_name("node", &n.node_name)?;
        let o = node_directives(&n.directives, &at(&format!("node {}", n.node_name)))?;
        if let Some(loc) = &n.location
            && !boot.locations.is_empty()
            && !boot.locations.iter().any(|l| &l.location == loc)
        {
            out.warnings.push(format!(
                "node {}: location {loc} is not in locations",
                n.node_name
            ));
        }
        wanted.push(Wanted {
            label: format!("node {}", n.node_name),
            key: keys.node_config(&n.node_name),
            value: Record::Node(o),
        });
    }
    if let Some(p) = &boot.proxies {
        let o = proxy_directives(&p.directives, &at("proxies"))?;
        wanted.push(Wanted {
            label: "proxies (global)".into(),
            key: keys.proxy_config("global"),
            value: Record::Proxy(o),
        });
        for i in &p.instances {
            check_name("proxy", &i.name)?;
            if i.name == "global" {
                return Err(CtlError::Usage(at(
                    "proxies.instances: `global` names the keys for every proxy; \
                     put them directly under proxies:",
                )));
            }
            let o = proxy_directives(&i.directives, &at(&format!("proxy {}", i.name)))?;
            if i.location.is_some() {
                out.warnings.push(format!(
                    "proxy {}: location is taken from the agent's config file",
                    i.name
                ));
            }
            wanted.push(Wanted {
                label: format!("proxy {}", i.name),
                key: keys.proxy_config(&i.name),
                value: Record::Proxy(o),
            });
        }
    }
    let conn = super::connect_to(ctx, &cluster).await?;
    for w in wanted {
        let same = match conn.get(&w.key).await? {
            Some(v) => w.value.same_as(&v),
            None => w.value.is_empty(),
        };
        if same {
            out.unchanged.push(w.label);
            continue;
        }
        conn.put(&w.key, w.value.encode()).await?;
        out.changes
            .push(format!("{}: directives {}", w.label, w.value.encode()));
    }
    if let Some(managed) = boot.cluster.managed {
        let snap = super::read(&conn, &cluster).await?;
        if snap.cluster_managed == managed {
            out.unchanged.push("cluster managed".into());
        } else {
            let rec = ManagedRecord {
                version: RECORD_VERSION,
                managed,
                updated_ms: unix_ms(),
            };
            conn.put(&conn.keys().managed(), rec.encode()).await?;
            out.changes.push(format!("cluster managed: {managed}"));
        }
    }
    Ok(match ctx.format() {
        Format::Table => {
            let mut s = String::new();
            for c in &out.changes {
                s += &format!("changed   {c}\n");
            }
            for u in &out.unchanged {
                s += &format!("unchanged {u}\n");
            }
            for w in &out.warnings {
                s += &format!("warning   {w}\n");
            }
            s
        }
        f => render_data(&out, f),
    })
}

fn node_directives(d: &Directives, at: &str) -> Result<NodeOverrides, CtlError> {
    let mut o = NodeOverrides::new();
    assign(d, at, |a| o.set(a).map(|_| ()))?;
    Ok(o)
}

fn proxy_directives(d: &Directives, at: &str) -> Result<ProxyOverrides, CtlError> {
    let mut o = ProxyOverrides::new();
    assign(d, at, |a| o.set(a))?;
    Ok(o)
}

/// Feeds each `key: value` of a section to a directive setter as `key=value`.
fn assign(
    d: &Directives,
    at: &str,
    mut set: impl FnMut(&str) -> Result<(), DirectiveError>,
) -> Result<(), CtlError> {
    for (key, value) in d {
        let value = scalar(value).ok_or_else(|| {
            CtlError::Usage(format!("{at}: {key}: expected a number, text or boolean"))
        })?;
        set(&format!("{key}={value}")).map_err(|e| CtlError::Usage(format!("{at}: {e}")))?;
    }
    Ok(())
}

fn scalar(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
