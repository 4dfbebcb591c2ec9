//! `harpctl set node <N> key=value…`: writes `config/nodes/<N>` (the directives an operator
//! set, merged over the node's file by its manager). Every assignment is checked before
//! anything is written: one bad key or value and nothing changes.

use harp_core::directives::{NodeOverrides, ProxyOverrides, Takes};
use serde::Serialize;

use crate::cli::SetTarget;
use crate::context::{Context, check_name};
use crate::error::CtlError;
use crate::output::{Format, render_data};

#[derive(Serialize)]
struct Applied {
    node: String,
    /// Keys that apply at once, and keys that apply after the manager restarts.
    live: Vec<String>,
    after_restart: Vec<String>,
}

pub async fn run(ctx: &Context, target: SetTarget) -> Result<String, CtlError> {
    let (name, assignments) = match target {
        SetTarget::Node { name, assignments } => (name, assignments),
        SetTarget::Proxy { name, assignments } => return proxy(ctx, name, assignments).await,
    };
    check_name("node", &name)?;
    let (cluster, conn) = super::connect(ctx).await?;
    let snap = super::read(&conn, &cluster).await?;
    if !snap.knows_node(&name) {
        return Err(CtlError::not_found(
            "node",
            &name,
            &cluster,
            &snap.node_names(),
        ));
    }
    let key = conn.keys().node_config(&name);
    let mut overrides = match conn.get(&key).await? {
        Some(v) => NodeOverrides::decode(&v).map_err(|e| CtlError::Refused(e.to_string()))?,
        None => NodeOverrides::new(),
    };
    let mut applied = Applied {
        node: name.clone(),
        live: Vec::new(),
        after_restart: Vec::new(),
    };
    for a in &assignments {
        let takes = overrides
            .set(a)
            .map_err(|e| CtlError::Usage(format!("set node {name}: {e}")))?;
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
                out += &format!("node {name}: {} (applies now)\n", applied.live.join(" "));
            }
            if !applied.after_restart.is_empty() {
                out += &format!(
                    "node {name}: {} (applies after its manager restarts)\n",
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
        node: name.clone(),
        live: assignments.clone(),
        after_restart: Vec::new(),
    };
    Ok(match ctx.format() {
        Format::Table => format!("proxy {name}: {} (applies now)\n", assignments.join(" ")),
        f => render_data(&applied, f),
    })
}
