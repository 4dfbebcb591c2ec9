//! `harpctl manage|unmanage cluster|node <N>|proxy <P>`. The cluster switch is the `managed`
//! key (a [`ManagedRecord`]); a node or proxy is unmanaged while its
//! `unmanaged/{nodes,proxies}/<name>` marker exists.

use harp_core::records::{ManagedRecord, RECORD_VERSION, unix_ms};

use super::fence::Change;
use crate::cli::ManageTarget;
use crate::context::{Context, check_name};
use crate::error::CtlError;

pub async fn run(ctx: &Context, target: ManageTarget, managed: bool) -> Result<String, CtlError> {
    match &target {
        ManageTarget::Node { name } => check_name("node", name)?,
        ManageTarget::Proxy { name } => check_name("proxy", name)?,
        ManageTarget::Cluster => {}
    }
    let (cluster, conn) = super::connect(ctx).await?;
    let snap = super::read(&conn, &cluster).await?;
    let keys = conn.keys().clone();
    let record = ManagedRecord {
        version: RECORD_VERSION,
        managed,
        updated_ms: unix_ms(),
    };
    let change = |kind, name: &str, changed| Change {
        kind,
        name: name.to_owned(),
        state: if managed { "managed" } else { "unmanaged" },
        changed,
    };
    let done = match target {
        ManageTarget::Cluster => {
            let changed = snap.cluster_managed != managed;
            if changed {
                conn.put(&keys.managed(), record.encode()).await?;
            }
            change("cluster", &cluster, changed)
        }
        ManageTarget::Node { name } => {
            if !snap.knows_node(&name) {
                let known = snap.node_names();
                return Err(CtlError::not_found("node", &name, &cluster, &known));
            }
            let key = keys.node_unmanaged(&name);
            let changed = marker(&conn, &key, managed, &record).await?;
            change("node", &name, changed)
        }
        ManageTarget::Proxy { name } => {
            if !snap.knows_proxy(&name) {
                let known = snap.proxy_names();
                return Err(CtlError::not_found("proxy", &name, &cluster, &known));
            }
            let key = keys.proxy_unmanaged(&name);
            let changed = marker(&conn, &key, managed, &record).await?;
            change("proxy", &name, changed)
        }
    };
    Ok(done.render(ctx.format()))
}

/// Deletes the unmanaged marker (manage) or creates it (unmanage); `true` if that changed it.
async fn marker(
    conn: &crate::conn::Conn,
    key: &str,
    managed: bool,
    record: &ManagedRecord,
) -> Result<bool, CtlError> {
    if managed {
        conn.delete(key).await
    } else {
        conn.put_if_absent(key, record.encode()).await
    }
}
