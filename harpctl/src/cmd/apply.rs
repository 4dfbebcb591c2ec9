//! `harpctl apply <bootstrap.yml>`: HARP's bootstrap file — the cluster, its locations, its
//! nodes with their directives — written to etcd. Idempotent: it compares with what etcd
//! holds, writes only what differs and says what changed. Every value is checked before
//! anything is written.

use std::collections::BTreeMap;
use std::path::Path;

use harp_core::directives::NodeOverrides;
use harp_core::records::{ManagedRecord, RECORD_VERSION, unix_ms};
use serde::{Deserialize, Serialize};

use crate::context::{Context, check_name};
use crate::error::CtlError;
use crate::output::{Format, render_data};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bootstrap {
    cluster: ClusterSection,
    #[serde(default)]
    locations: Vec<LocationEntry>,
    #[serde(default)]
    nodes: Vec<NodeEntry>,
    /// Accepted for HARP compatibility; agents take their directives from their own file.
    #[serde(default)]
    proxies: Option<serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterSection {
    name: String,
    #[serde(default)]
    managed: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocationEntry {
    location: String,
}

/// A node and its directives; the keys are those of `harpctl set node`.
#[derive(Debug, Deserialize)]
struct NodeEntry {
    node_name: String,
    #[serde(default)]
    location: Option<String>,
    #[serde(flatten)]
    directives: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Debug, Serialize)]
struct Applied {
    cluster: String,
    changes: Vec<String>,
    unchanged: Vec<String>,
    warnings: Vec<String>,
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
    // Check everything first: one bad value and nothing is written.
    let mut wanted = Vec::new();
    for n in &boot.nodes {
        check_name("node", &n.node_name)?;
        let mut o = NodeOverrides::new();
        for (key, value) in &n.directives {
            let value = scalar(value).ok_or_else(|| {
                CtlError::Usage(format!(
                    "{}: nodes[{}].{key}: expected a number, text or boolean",
                    file.display(),
                    n.node_name
                ))
            })?;
            o.set(&format!("{key}={value}")).map_err(|e| {
                CtlError::Usage(format!("{}: node {}: {e}", file.display(), n.node_name))
            })?;
        }
        wanted.push((n, o));
    }
    for l in &boot.locations {
        check_name("location", &l.location)?;
    }
    let conn = super::connect_to(ctx, &cluster).await?;
    let keys = conn.keys().clone();
    let mut out = Applied {
        cluster: cluster.clone(),
        changes: Vec::new(),
        unchanged: Vec::new(),
        warnings: Vec::new(),
    };
    if boot.proxies.is_some() {
        out.warnings
            .push("proxies: ignored; harp-agent reads its directives from its config file".into());
    }
    for (n, o) in wanted {
        if let Some(loc) = &n.location
            && !boot.locations.iter().any(|l| &l.location == loc)
            && !boot.locations.is_empty()
        {
            out.warnings.push(format!(
                "node {}: location {loc} is not in locations",
                n.node_name
            ));
        }
        let key = keys.node_config(&n.node_name);
        let current = match conn.get(&key).await? {
            Some(v) => NodeOverrides::decode(&v).ok(),
            None => None,
        };
        if current.as_ref() == Some(&o) || (current.is_none() && o == NodeOverrides::new()) {
            out.unchanged.push(format!("node {}", n.node_name));
            continue;
        }
        conn.put(&key, o.encode()).await?;
        out.changes
            .push(format!("node {}: directives {}", n.node_name, o.encode()));
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
            conn.put(&keys.managed(), rec.encode()).await?;
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

fn scalar(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
