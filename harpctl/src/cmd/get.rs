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
            known_location(snap, &loc)?;
            render_one(&snap.leader_view(&loc), format)
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
