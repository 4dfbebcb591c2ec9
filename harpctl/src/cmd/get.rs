//! `harpctl get cluster|leader|location(s)|node(s)|proxy|proxies`: one read of the cluster's
//! prefix, rendered.

use harp_core::records::unix_ms;

use crate::cli::GetCommand;
use crate::context::{Context, check_name};
use crate::error::CtlError;
use crate::output::{render_cluster, render_list, render_one};
use crate::snapshot::Snapshot;

pub async fn run(ctx: &Context, what: GetCommand) -> Result<String, CtlError> {
    // Names are checked before etcd is asked, so a typo is a usage error even offline.
    match &what {
        GetCommand::Leader { location: Some(l) } | GetCommand::Location { location: Some(l) } => {
            check_name("location", l)?;
        }
        GetCommand::Node { name } => check_name("node", name)?,
        GetCommand::Proxy { name } => check_name("proxy", name)?,
        _ => {}
    }
    let (cluster, conn) = super::connect(ctx).await?;
    let snap = super::read(&conn, &cluster).await?;
    render(&snap, what, ctx.format(), unix_ms())
}

/// Renders `what` from `snap` (pure, so tests need no etcd).
pub fn render(
    snap: &Snapshot,
    what: GetCommand,
    format: crate::output::Format,
    now_ms: u64,
) -> Result<String, CtlError> {
    Ok(match what {
        GetCommand::Cluster => render_cluster(&snap.cluster_view(), format),
        GetCommand::Leader { location: None } => render_list(&snap.leader_views(), format),
        GetCommand::Leader {
            location: Some(loc),
        } => {
            // A streaming cluster's leader key is its group's; a location names it too.
            let scope = if snap.scopes().contains(&loc) {
                loc
            } else {
                known_location(snap, &loc)?;
                snap.scope_of_location(&loc)
            };
            render_one(&snap.leader_view(&scope), format)
        }
        GetCommand::Location { location: None } | GetCommand::Locations => {
            render_list(&snap.location_views(), format)
        }
        GetCommand::Location {
            location: Some(loc),
        } => {
            known_location(snap, &loc)?;
            render_one(&snap.location_view(&loc), format)
        }
        GetCommand::Nodes => render_list(&snap.node_views(now_ms), format),
        GetCommand::Node { name } => {
            if !snap.knows_node(&name) {
                return Err(CtlError::not_found(
                    "node",
                    &name,
                    &snap.cluster,
                    &snap.node_names(),
                ));
            }
            render_one(&snap.node_view(&name, now_ms), format)
        }
        GetCommand::Proxies => render_list(&snap.proxy_views(now_ms), format),
        GetCommand::Proxy { name } => match snap.proxy_view(&name, now_ms) {
            Some(v) => render_one(&v, format),
            None if snap.knows_proxy(&name) => {
                return Err(CtlError::Refused(format!(
                    "proxy {name} publishes no status (is its harp-agent running?); it is \
                     only marked unmanaged"
                )));
            }
            None => {
                return Err(CtlError::not_found(
                    "proxy",
                    &name,
                    &snap.cluster,
                    snap.proxies.keys(),
                ));
            }
        },
    })
}

fn known_location(snap: &Snapshot, loc: &str) -> Result<(), CtlError> {
    let locs = snap.locations();
    if locs.contains(loc) {
        Ok(())
    } else {
        Err(CtlError::not_found("location", loc, &snap.cluster, &locs))
    }
}

#[cfg(test)]
mod tests {
    use harp_core::keys::Keys;
    use harp_core::records::PgState;

    use super::*;
    use crate::output::Format;
    use crate::snapshot::tests::{leader, status};

    fn snap() -> Snapshot {
        let keys = Keys::new("prod");
        let (s1, s2) = (
            status("n1", "dca", PgState::Primary, 100).encode(),
            status("n2", "dca", PgState::Standby, 50).encode(),
        );
        let ld = leader("n1", "dca").encode();
        let kvs = vec![
            (keys.leader("dca"), ld.as_bytes(), 17),
            (keys.node_status("n1"), s1.as_bytes(), 3),
            (keys.node_status("n2"), s2.as_bytes(), 4),
            (keys.fenced("n2"), b"{}".as_slice(), 5),
        ];
        Snapshot::from_kvs("prod", &keys, 20, kvs)
    }

    #[test]
    fn nodes_table_marks_the_leader_and_the_fence() {
        let out = render(&snap(), GetCommand::Nodes, Format::Table, 61_000).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "NAME   LOCATION   ROLE       POSTGRES   PRIORITY   FENCED   MANAGED   WAL_LSN   AGE",
                "n1     dca        leader     primary    100        false    true      1/28      60s",
                "n2     dca        follower   standby    50         true     true      1/28      60s",
            ]
        );
    }

    #[test]
    fn unknown_names_are_not_found() {
        let s = snap();
        let err = render(&s, GetCommand::Node { name: "n7".into() }, Format::Table, 0).unwrap_err();
        assert_eq!(err.exit_code(), 4);
        assert_eq!(
            err.to_string(),
            "node n7 not found in cluster prod (known: n1, n2)"
        );
        let loc = GetCommand::Leader {
            location: Some("dcx".into()),
        };
        assert_eq!(render(&s, loc, Format::Json, 0).unwrap_err().exit_code(), 4);
    }

    /// A streaming cluster `prod`: n1 the primary (being promoted), n2 a streaming standby,
    /// n3 a failed old primary.
    fn streaming() -> Snapshot {
        use harp_core::records::ReplicaFacts;
        let keys = Keys::new("prod");
        let mut n1 = status("n1", "dca", PgState::Primary, 100);
        n1.replica = Some(ReplicaFacts {
            timeline: Some(3),
            sync_standbys: vec!["n2".into()],
            ..Default::default()
        });
        let mut n2 = status("n2", "dcb", PgState::Standby, 100);
        n2.replica = Some(ReplicaFacts {
            timeline: Some(3),
            receive_lsn: Some(0x1_0000_0030),
            upstream: Some("10.0.0.1:5432".into()),
            streaming: true,
            lag: Some(16 << 20),
            sync_standbys: vec![],
        });
        let mut n3 = status("n3", "dca", PgState::Down, 100);
        n3.reason = Some("rewind failed: could not find common ancestor".into());
        let sts: Vec<(String, String)> = [n1, n2, n3]
            .into_iter()
            .map(|mut st| {
                st.group = Some("prod".into());
                (keys.node_status(&st.node), st.encode())
            })
            .collect();
        let mut ld = leader("n1", "dca");
        ld.set_promoting(true);
        let ld = ld.encode();
        let mut kvs = vec![(keys.leader("prod"), ld.as_bytes(), 17)];
        kvs.extend(sts.iter().map(|(k, v)| (k.clone(), v.as_bytes(), 3)));
        Snapshot::from_kvs("prod", &keys, 20, kvs)
    }

    #[test]
    fn streaming_nodes_show_their_replication_and_why_one_is_down() {
        let out = render(&streaming(), GetCommand::Nodes, Format::Table, 61_000).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "NAME   LOCATION   ROLE       POSTGRES   PRIORITY   FENCED   MANAGED   WAL_LSN   AGE   \
                 TIMELINE   UPSTREAM        STREAMING   LAG      SYNC     REASON",
                "n1     dca        leader     primary    100        false    true      1/28      60s   \
                 3          <none>          <none>      <none>   n2       <none>",
                "n2     dcb        follower   standby    100        false    true      1/28      60s   \
                 3          10.0.0.1:5432   true        16MB     <none>   <none>",
                "n3     dca        follower   down       100        false    true      1/28      60s   \
                 <none>     <none>          <none>      <none>   <none>   rewind failed: could not \
                 find common ancestor",
            ]
        );
        let v: serde_json::Value = serde_json::from_str(
            &render(&streaming(), GetCommand::Nodes, Format::Json, 0).unwrap(),
        )
        .unwrap();
        let n2 = &v[1];
        assert_eq!(
            (
                &n2["group"],
                &n2["upstream"],
                &n2["streaming"],
                &n2["lag"],
                &n2["timeline"]
            ),
            (
                &"prod".into(),
                &"10.0.0.1:5432".into(),
                &true.into(),
                &(16u64 << 20).into(),
                &3.into()
            )
        );
        assert_eq!(v[0]["sync_standbys"], serde_json::json!(["n2"]));
        assert_eq!(v[0]["promoting"], true);
        assert!(
            v[0]["streaming"].is_null(),
            "a primary does not stream: {}",
            v[0]
        );
        assert_eq!(
            v[2]["reason"],
            "rewind failed: could not find common ancestor"
        );
    }

    #[test]
    fn a_promoting_leader_shows_as_promoting() {
        let s = streaming();
        let out = render(&s, GetCommand::Leader { location: None }, Format::Table, 0).unwrap();
        assert_eq!(
            out,
            "LOCATION   NODE   ADDRESS          TOKEN   STATE\n\
             prod       n1     127.0.0.1:5432   17      promoting\n"
        );
        // A location names its group's leader.
        let dcb = GetCommand::Leader {
            location: Some("dcb".into()),
        };
        let v: serde_json::Value =
            serde_json::from_str(&render(&s, dcb, Format::Json, 0).unwrap()).unwrap();
        assert_eq!((&v["location"], &v["node"]), (&"prod".into(), &"n1".into()));
        assert_eq!(v["promoting"], true);
        let out = render(&s, GetCommand::Cluster, Format::Table, 0).unwrap();
        assert_eq!(
            out,
            "CLUSTER   MANAGED   LOCATIONS\nprod      true      2\n\n\
             LOCATION   LEADER   TOKEN   NODES   PROXIES   STATE\n\
             dca        n1       17      2       0         promoting\n\
             dcb        n1       17      1       0         promoting\n"
        );
    }

    #[test]
    fn cluster_lists_locations_with_leader_and_counts() {
        let out = render(&snap(), GetCommand::Cluster, Format::Table, 0).unwrap();
        assert_eq!(
            out,
            "CLUSTER   MANAGED   LOCATIONS\nprod      true      1\n\n\
             LOCATION   LEADER   TOKEN   NODES   PROXIES\ndca        n1       17      2       0\n"
        );
    }
}
