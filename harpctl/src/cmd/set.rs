//! `harpctl set cluster | location <L> | node <N> | proxy <P|global> key=value…`: writes
//! `config/cluster`, `config/locations/<L>`, `config/nodes/<N>` or `config/proxies/<P>`.
//! Managers merge node directives node over location over cluster over their file. Every
//! assignment is checked before anything is written: one bad key or value and nothing changes.

use harp_core::directives::{NodeOverrides, ProxyOverrides, Takes};
use serde::Serialize;

use crate::cli::SetTarget;
use crate::context::{Context, check_name};
use crate::error::CtlError;
use crate::output::{Format, render_data};

#[derive(Serialize)]
struct Applied {
    /// What was set: `cluster`, `location`, `node` or `proxy`.
    scope: &'static str,
    /// Its name (the cluster's for `cluster`); `node` is kept for scripts written before
    /// `scope` existed.
    name: String,
    node: String,
    /// Keys that apply at once, and keys that apply after the managers restart.
    live: Vec<String>,
    after_restart: Vec<String>,
}

pub async fn run(ctx: &Context, target: SetTarget) -> Result<String, CtlError> {
    let (cluster, conn) = match &target {
        SetTarget::Proxy { .. } => (String::new(), None),
        _ => {
            let (cluster, conn) = super::connect(ctx).await?;
            (cluster, Some(conn))
        }
    };
    let (kind, name, key, assignments) = match target {
        SetTarget::Proxy { name, assignments } => return proxy(ctx, name, assignments).await,
        SetTarget::Cluster { assignments } => {
            let conn = conn.as_ref().expect("connected");
            let key = conn.keys().cluster_config();
            ("cluster", cluster.clone(), key, assignments)
        }
        SetTarget::Location {
            location,
            assignments,
        } => {
            check_name("location", &location)?;
            let conn = conn.as_ref().expect("connected");
            let snap = super::read(conn, &cluster).await?;
            if !snap.locations().contains(&location) {
                return Err(CtlError::not_found(
                    "location",
                    &location,
                    &cluster,
                    &snap.locations(),
                ));
            }
            let key = conn.keys().location_config(&location);
            ("location", location, key, assignments)
        }
        SetTarget::Node { name, assignments } => {
            check_name("node", &name)?;
            let conn = conn.as_ref().expect("connected");
            let snap = super::read(conn, &cluster).await?;
            if !snap.knows_node(&name) {
                return Err(CtlError::not_found(
                    "node",
                    &name,
                    &cluster,
                    &snap.node_names(),
                ));
            }
            let key = conn.keys().node_config(&name);
            ("node", name, key, assignments)
        }
    };
    let conn = conn.expect("connected");
    let scope = match kind {
        "cluster" => "cluster".to_owned(),
        _ => format!("{kind} {name}"),
    };
    let mut overrides = match conn.get(&key).await? {
        Some(v) => NodeOverrides::decode(&v).map_err(|e| CtlError::Refused(e.to_string()))?,
        None => NodeOverrides::new(),
    };
    let mut applied = Applied {
        scope: kind,
        name: name.clone(),
        node: name.clone(),
        live: Vec::new(),
        after_restart: Vec::new(),
    };
    for a in &assignments {
        let takes = overrides
            .set(a)
            .map_err(|e| CtlError::Usage(format!("set {scope}: {e}")))?;
        match takes {
            Takes::Live => applied.live.push(a.clone()),
            Takes::Restart => applied.after_restart.push(a.clone()),
        }
    }
    conn.put(&key, overrides.encode()).await?;
    Ok(match ctx.format() {
        Format::Table => {
            let mut out = String::new();
            if !applied.live.is_empty() {
                out += &format!("{scope}: {} (applies now)\n", applied.live.join(" "));
            }
            if !applied.after_restart.is_empty() {
                let whose = if kind == "node" {
                    "its manager restarts"
                } else {
                    "each manager restarts"
                };
                out += &format!(
                    "{scope}: {} (applies after {whose})\n",
                    applied.after_restart.join(" ")
                );
            }
            out
        }
        f => render_data(&applied, f),
    })
}

/// `set proxy <p|global>`: writes `config/proxies/<p>`; agents apply it at once.
async fn proxy(ctx: &Context, name: String, assignments: Vec<String>) -> Result<String, CtlError> {
    check_name("proxy", &name)?;
    let (cluster, conn) = super::connect(ctx).await?;
    if name != "global" {
        let snap = super::read(&conn, &cluster).await?;
        if !snap.knows_proxy(&name) {
            return Err(CtlError::not_found(
                "proxy",
                &name,
                &cluster,
                &snap.proxy_names(),
            ));
        }
    }
    let key = conn.keys().proxy_config(&name);
    let mut overrides = match conn.get(&key).await? {
        Some(v) => ProxyOverrides::decode(&v).map_err(|e| CtlError::Refused(e.to_string()))?,
        None => ProxyOverrides::new(),
    };
    for a in &assignments {
        overrides
            .set(a)
            .map_err(|e| CtlError::Usage(format!("set proxy {name}: {e}")))?;
    }
    conn.put(&key, overrides.encode()).await?;
    let applied = Applied {
        scope: "proxy",
        name: name.clone(),
        node: name.clone(),
        live: assignments.clone(),
        after_restart: Vec::new(),
    };
    Ok(match ctx.format() {
        Format::Table => format!("proxy {name}: {} (applies now)\n", assignments.join(" ")),
        f => render_data(&applied, f),
    })
}
