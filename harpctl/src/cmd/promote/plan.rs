//! Which node a switchover goes to, or why it cannot: pure decisions over a [`Snapshot`].

use harp_core::records::PgState;

use crate::error::CtlError;
use crate::snapshot::Snapshot;

/// What the operator asked for.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub node: Option<&'a str>,
    /// `--location`, else the config file's `location`.
    pub location: Option<&'a str>,
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The target already leads: nothing to do.
    AlreadyLeader {
        location: String,
        node: String,
        token: i64,
    },
    Switchover {
        location: String,
        target: String,
        /// The current leader and its fencing token, if the location has one.
        from: Option<(String, i64)>,
    },
}

pub fn plan(snap: &Snapshot, req: &Request) -> Result<Plan, CtlError> {
    let (location, target) = match req.node {
        Some(node) => (target_location(snap, node, req)?, node.to_owned()),
        None => {
            let location = chosen_location(snap, req.location)?;
            let target = best_candidate(snap, &location)?;
            (location, target)
        }
    };
    let leader = snap.leaders.get(&location);
    if let Some(l) = leader.filter(|l| l.record.node == target) {
        return Ok(Plan::AlreadyLeader {
            location,
            node: target,
            token: l.token,
        });
    }
    if let Some(i) = snap.intents.get(&location) {
        return Err(CtlError::Refused(format!(
            "a switchover of {location} to {} is already in progress; wait for it to finish \
             or expire",
            i.target
        )));
    }
    if !req.force
        && let Some(why) = ineligible(snap, &target)
    {
        return Err(CtlError::Refused(format!(
            "refusing to promote {target}: {why} (--force skips this check)"
        )));
    }
    if !req.force
        && let Some(why) = super::guards::unmanaged_refusal(snap, &location, &target)
    {
        return Err(CtlError::Refused(why));
    }
    Ok(Plan::Switchover {
        location,
        target,
        from: leader.map(|l| (l.record.node.clone(), l.token)),
    })
}

/// The target's location, from its status; it must match the asked location.
fn target_location(snap: &Snapshot, node: &str, req: &Request) -> Result<String, CtlError> {
    let Some(st) = snap.nodes.get(node) else {
        if snap.fenced.contains(node) || snap.node_unmanaged.contains(node) {
            return Err(CtlError::Refused(format!(
                "refusing to promote {node}: it publishes no status (is its harp-manager \
                 running?)"
            )));
        }
        return Err(CtlError::not_found(
            "node",
            node,
            &snap.cluster,
            &snap.node_names(),
        ));
    };
    match req.location {
        Some(asked) if asked != st.location && !req.force => Err(CtlError::Refused(format!(
            "refusing to promote {node}: it is in location {}, not {asked}",
            st.location
        ))),
        _ => Ok(st.location.clone()),
    }
}

/// The asked location, else the only one.
fn chosen_location(snap: &Snapshot, asked: Option<&str>) -> Result<String, CtlError> {
    let locs = snap.locations();
    if let Some(asked) = asked {
        if !locs.contains(asked) {
            return Err(CtlError::not_found("location", asked, &snap.cluster, &locs));
        }
        return Ok(asked.to_owned());
    }
    let mut it = locs.iter();
    match (it.next(), it.next()) {
        (Some(only), None) => Ok(only.clone()),
        (None, _) => Err(CtlError::Refused(format!(
            "cluster {} has no nodes to promote",
            snap.cluster
        ))),
        _ => Err(CtlError::Usage(format!(
            "cluster {} has several locations ({}): name the node or pass --location",
            snap.cluster,
            locs.iter().cloned().collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Why `node` should not lead, checked without `--force`.
pub fn ineligible(snap: &Snapshot, node: &str) -> Option<String> {
    let Some(st) = snap.nodes.get(node) else {
        return Some("it publishes no status (is its harp-manager running?)".into());
    };
    if st.postgres != PgState::Primary {
        let pg = crate::view::pg_state_str(st.postgres);
        return Some(format!("its postgres is {pg}, not primary"));
    }
    if snap.fenced.contains(node) {
        return Some("it is fenced (harpctl unfence it first)".into());
    }
    if !snap.cluster_managed {
        return Some("the cluster is unmanaged".into());
    }
    if snap.node_unmanaged.contains(node) {
        return Some("it is unmanaged".into());
    }
    if st.priority < 0 {
        return Some(format!(
            "its priority is {}, which never leads",
            st.priority
        ));
    }
    None
}

/// The best eligible node of `location` other than its leader: highest priority, then name.
fn best_candidate(snap: &Snapshot, location: &str) -> Result<String, CtlError> {
    let leader = snap.leaders.get(location).map(|l| l.record.node.as_str());
    let mut reasons = Vec::new();
    let mut best: Option<(i32, &str)> = None;
    for (name, st) in snap.nodes.iter().filter(|(_, s)| s.location == location) {
        if Some(name.as_str()) == leader {
            reasons.push(format!("{name} is the lead master"));
        } else if let Some(why) = ineligible(snap, name) {
            reasons.push(format!("{name}: {why}"));
        } else if best.is_none_or(|(p, _)| st.priority > p) {
            best = Some((st.priority, name));
        }
    }
    match best {
        Some((_, name)) => Ok(name.to_owned()),
        None => Err(CtlError::Refused(format!(
            "no node of {location} can take over: {}",
            if reasons.is_empty() {
                "it has no nodes".to_owned()
            } else {
                reasons.join("; ")
            }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use harp_core::keys::Keys;

    use super::*;
    use crate::snapshot::tests::{leader, status};

    fn snap(extra: &[(String, &[u8])]) -> Snapshot {
        let keys = Keys::new("c");
        let recs = [
            ("a", PgState::Primary, 100),
            ("b", PgState::Primary, 200),
            ("c", PgState::Primary, 200),
            ("d", PgState::Standby, 300),
            ("e", PgState::Primary, -1),
        ]
        .map(|(n, pg, p)| (keys.node_status(n), status(n, "dca", pg, p).encode()));
        let ld = leader("a", "dca").encode();
        let mut kvs: Vec<(String, &[u8], i64)> = vec![(keys.leader("dca"), ld.as_bytes(), 9)];
        kvs.extend(recs.iter().map(|(k, v)| (k.clone(), v.as_bytes(), 1)));
        kvs.extend(extra.iter().map(|(k, v)| (k.clone(), *v, 2)));
        Snapshot::from_kvs("c", &keys, 10, kvs)
    }

    fn req(node: Option<&str>) -> Request<'_> {
        Request {
            node,
            ..Request::default()
        }
    }

    #[test]
    fn picks_the_highest_priority_then_the_first_name() {
        let p = plan(&snap(&[]), &req(None)).unwrap();
        let want = Plan::Switchover {
            location: "dca".into(),
            target: "b".into(),
            from: Some(("a".into(), 9)),
        };
        assert_eq!(p, want);
        let fenced = [(Keys::new("c").fenced("b"), b"{}".as_slice())];
        match plan(&snap(&fenced), &req(None)).unwrap() {
            Plan::Switchover { target, .. } => assert_eq!(target, "c"),
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn refuses_ineligible_targets_unless_forced() {
        let s = snap(&[(Keys::new("c").fenced("b"), b"{}".as_slice())]);
        let cases = [
            ("b", "fenced"),
            ("d", "standby, not primary"),
            ("e", "priority is -1"),
        ];
        for (node, why) in cases {
            let err = plan(&s, &req(Some(node))).unwrap_err();
            assert_eq!(err.exit_code(), 1, "{node}");
            assert!(err.to_string().contains(why), "{node}: {err}");
            let forced = Request {
                force: true,
                ..req(Some(node))
            };
            assert!(plan(&s, &forced).is_ok(), "{node} forced");
        }
        assert_eq!(plan(&s, &req(Some("zz"))).unwrap_err().exit_code(), 4);
        let other_loc = Request {
            location: Some("dcb"),
            ..req(Some("c"))
        };
        let err = plan(&s, &other_loc).unwrap_err();
        assert!(err.to_string().contains("not dcb"), "{err}");
    }

    #[test]
    fn an_unmanaged_proxy_refuses_the_switchover_unless_forced() {
        let keys = Keys::new("c");
        let s = snap(&[
            (keys.proxy_unmanaged("p1"), b"{}".as_slice()),
            (keys.proxy_status("p1"), PROXY_P1.as_bytes()),
        ]);
        let err = plan(&s, &req(Some("b"))).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert!(err.to_string().contains("proxy p1 is unmanaged"), "{err}");
        let forced = Request {
            force: true,
            ..req(Some("b"))
        };
        assert!(plan(&s, &forced).is_ok());
        // Promoting the node that leads changes no route: nothing to refuse.
        assert!(plan(&s, &req(Some("a"))).is_ok());
    }

    const PROXY_P1: &str = r#"{"version":1,"name":"p1","location":"dca","leader":"a","token":9,
        "mode":"userspace","sessions":0,"held":0,"updated_ms":1}"#;

    #[test]
    fn promoting_the_leader_is_a_no_op() {
        let p = plan(&snap(&[]), &req(Some("a"))).unwrap();
        assert!(matches!(p, Plan::AlreadyLeader { token: 9, .. }), "{p:?}");
    }
}
