//! `harpctl reinit NODE`: asks NODE's manager to rebuild its Postgres from the primary
//! (`intent/reinit/<node>` = [`ReinitIntent`]). The manager stops Postgres, copies the
//! primary's data directory with `pg_basebackup`, starts it as a standby and deletes the key.
//!
//! Refused without a `--force` to override: for the primary (its data is the cluster's), a
//! node with no status (no manager to act), a multi-writer cluster (no primary to copy from:
//! every node is one), and a group with no primary now. The request is not on a lease: a
//! manager that restarts meanwhile still finds it.

use harp_core::records::{RECORD_VERSION, ReinitIntent, unix_ms};
use serde::Serialize;

use crate::context::{Context, check_name};
use crate::error::CtlError;
use crate::output::{Format, render_data};
use crate::snapshot::Snapshot;

/// What `reinit` did, for `-o json|yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub node: String,
    /// The primary it will be copied from (the leader of its group now).
    pub primary: String,
    /// False when a request was already pending (nothing was written).
    pub changed: bool,
}

impl Report {
    fn render(&self, format: Format) -> String {
        if format != Format::Table {
            return render_data(self, format);
        }
        let (n, p) = (&self.node, &self.primary);
        let what = format!(
            "{n}'s manager stops its Postgres, replaces its data directory with a copy of \
             {p}'s (pg_basebackup) and starts it as a standby of {p}; `harpctl get node {n}` \
             shows the progress"
        );
        if self.changed {
            format!("reinit of {n} requested: {what}\n")
        } else {
            format!("reinit of {n} was already requested: {what}\n")
        }
    }
}

/// Who `node` would be copied from, or why it must not be rebuilt.
pub fn check(snap: &Snapshot, node: &str) -> Result<String, CtlError> {
    let Some(st) = snap.nodes.get(node) else {
        if snap.knows_node(node) {
            return Err(CtlError::Refused(format!(
                "refusing to reinit {node}: it publishes no status (is its harp-manager \
                 running?); its manager is what rebuilds it"
            )));
        }
        return Err(CtlError::not_found(
            "node",
            node,
            &snap.cluster,
            &snap.node_names(),
        ));
    };
    let Some(group) = st.group.as_deref() else {
        return Err(CtlError::Refused(format!(
            "refusing to reinit {node}: cluster {} is multi-writer; reinit rebuilds a standby \
             of a streaming cluster from its primary",
            snap.cluster
        )));
    };
    let Some(leader) = snap.leaders.get(group) else {
        return Err(CtlError::Refused(format!(
            "refusing to reinit {node}: {group} has no primary to copy from now; wait for one \
             (harpctl get leaders)"
        )));
    };
    if leader.record.node == node {
        return Err(CtlError::Refused(format!(
            "refusing to reinit {node}: it is the primary of {group} (token {}); its data is \
             the cluster's. Switch over first (harpctl promote <standby>), then reinit it",
            leader.token
        )));
    }
    Ok(leader.record.node.clone())
}

pub async fn run(ctx: &Context, node: &str) -> Result<String, CtlError> {
    check_name("node", node)?;
    let (cluster, conn) = super::connect(ctx).await?;
    let snap = super::read(&conn, &cluster).await?;
    let primary = check(&snap, node)?;
    let intent = ReinitIntent {
        version: RECORD_VERSION,
        node: node.to_owned(),
        requested_ms: unix_ms(),
    };
    let changed = conn
        .put_if_absent(&conn.keys().reinit_intent(node), intent.encode())
        .await?;
    let report = Report {
        node: node.to_owned(),
        primary,
        changed,
    };
    Ok(report.render(ctx.format()))
}

#[cfg(test)]
mod tests {
    use harp_core::keys::Keys;
    use harp_core::records::PgState;

    use super::*;
    use crate::snapshot::tests::{leader, status};

    fn streaming(extra: &[(String, String)]) -> Snapshot {
        let keys = Keys::new("prod");
        let mut kvs = vec![(keys.leader("prod"), leader("n1", "dca").encode(), 17)];
        for (n, pg) in [("n1", PgState::Primary), ("n2", PgState::Standby)] {
            let mut st = status(n, "dca", pg, 100);
            st.group = Some("prod".into());
            kvs.push((keys.node_status(n), st.encode(), 3));
        }
        kvs.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone(), 4)));
        let kvs: Vec<_> = kvs
            .iter()
            .map(|(k, v, r)| (k.clone(), v.as_bytes(), *r))
            .collect();
        Snapshot::from_kvs("prod", &keys, 20, kvs)
    }

    #[test]
    fn a_standby_is_copied_from_the_primary_and_the_primary_never() {
        let s = streaming(&[(Keys::new("prod").fenced("n3"), "{}".into())]);
        assert_eq!(check(&s, "n2").unwrap(), "n1");
        let err = check(&s, "n1").unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert!(
            err.to_string()
                .contains("it is the primary of prod (token 17)"),
            "{err}"
        );
        let err = check(&s, "n3").unwrap_err();
        assert!(err.to_string().contains("publishes no status"), "{err}");
        assert_eq!(check(&s, "n9").unwrap_err().exit_code(), 4);
        // No primary: nothing to copy from.
        let mut vacant = s.clone();
        vacant.leaders.clear();
        let err = check(&vacant, "n2").unwrap_err();
        assert!(
            err.to_string().contains("prod has no primary to copy from"),
            "{err}"
        );
    }

    #[test]
    fn a_multi_writer_cluster_has_nothing_to_reinit_from() {
        let keys = Keys::new("mw");
        let st = status("n2", "dca", PgState::Primary, 100).encode();
        let s = Snapshot::from_kvs(
            "mw",
            &keys,
            1,
            vec![(keys.node_status("n2"), st.as_bytes(), 1)],
        );
        let err = check(&s, "n2").unwrap_err();
        assert!(
            err.to_string().contains("cluster mw is multi-writer"),
            "{err}"
        );
    }

    #[test]
    fn the_report_says_what_will_happen() {
        let r = Report {
            node: "n2".into(),
            primary: "n1".into(),
            changed: true,
        };
        let text = r.render(Format::Table);
        assert!(
            text.starts_with(
                "reinit of n2 requested: n2's manager stops its Postgres, \
             replaces its data directory with a copy of n1's (pg_basebackup)"
            ),
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_str(&r.render(Format::Json)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"node": "n2", "primary": "n1", "changed": true})
        );
    }
}
