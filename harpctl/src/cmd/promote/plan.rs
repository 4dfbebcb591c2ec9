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

/// `location` is the scope switched over: the leader key's name (`NodeStatus::scope`), i.e. the
/// location in a multi-writer cluster and the replication group in a streaming one.
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
            let location = chosen_scope(snap, req.location)?;
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

/// The target's scope, from its status. In a multi-writer cluster it must be the asked
/// location; a streaming cluster's primary may move to any location, so none is checked.
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
        Some(asked) if st.group.is_none() && asked != st.location && !req.force => {
            Err(CtlError::Refused(format!(
                "refusing to promote {node}: it is in location {}, not {asked}",
                st.location
            )))
        }
        _ => Ok(st.scope().to_owned()),
    }
}

/// The asked location, else the only one; in a streaming cluster its group (the whole
/// cluster's primary, whatever location was asked).
fn chosen_scope(snap: &Snapshot, asked: Option<&str>) -> Result<String, CtlError> {
    if snap.is_streaming() {
        let scopes = snap.scopes();
        match asked {
            Some(a) if scopes.contains(a) => return Ok(a.to_owned()),
            Some(a) if snap.locations().contains(a) => return Ok(snap.scope_of_location(a)),
            _ => {}
        }
        let mut it = scopes.iter();
        if let (Some(only), None) = (it.next(), it.next()) {
            return Ok(only.clone());
        }
    }
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
    if st.group.is_some() {
        // Streaming: the target is a standby that follows the primary now, so it can catch
        // up with the old primary's last WAL before it takes over.
        if st.postgres != PgState::Standby {
            let pg = crate::view::pg_state_str(st.postgres);
            return Some(format!("its postgres is {pg}, not a standby"));
        }
        if !st.replica.as_ref().is_some_and(|r| r.streaming) {
            return Some("it is not streaming from the primary".into());
        }
        if let Some(why) = &st.reason {
            return Some(format!("it reports a problem: {why}"));
        }
    } else if st.postgres != PgState::Primary {
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

/// The best eligible node of `scope` other than its leader: highest priority, then name.
fn best_candidate(snap: &Snapshot, location: &str) -> Result<String, CtlError> {
    let leader = snap.leaders.get(location).map(|l| l.record.node.as_str());
    let mut reasons = Vec::new();
    let mut best: Option<(i32, &str)> = None;
    for (name, st) in snap.nodes.iter().filter(|(_, s)| s.scope() == location) {
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

    /// A streaming cluster `prod`: n1 the primary in dca, standbys n2 (dcb) and n3 (dca).
    fn streaming(extra: &[(String, String)]) -> Snapshot {
        use harp_core::records::ReplicaFacts;
        let keys = Keys::new("prod");
        let mut kvs = vec![(keys.leader("prod"), leader("n1", "dca").encode(), 9)];
        for (n, loc, pg, prio, streams) in [
            ("n1", "dca", PgState::Primary, 100, false),
            ("n2", "dcb", PgState::Standby, 200, true),
            ("n3", "dca", PgState::Standby, 100, true),
        ] {
            let mut st = status(n, loc, pg, prio);
            st.group = Some("prod".into());
            st.replica = Some(ReplicaFacts {
                streaming: streams,
                ..Default::default()
            });
            kvs.push((keys.node_status(n), st.encode(), 1));
        }
        kvs.extend(extra.iter().cloned().map(|(k, v)| (k, v, 2)));
        let kvs: Vec<_> = kvs
            .iter()
            .map(|(k, v, r)| (k.clone(), v.as_bytes(), *r))
            .collect();
        Snapshot::from_kvs("prod", &keys, 10, kvs)
    }

    #[test]
    fn a_streaming_switchover_goes_to_a_streaming_standby_of_the_group() {
        let s = streaming(&[]);
        let want = |target: &str| Plan::Switchover {
            location: "prod".into(),
            target: target.into(),
            from: Some(("n1".into(), 9)),
        };
        // Any location: one primary serves them all, whatever the config file's location.
        let dca = Request {
            location: Some("dca"),
            ..req(Some("n2"))
        };
        assert_eq!(plan(&s, &dca).unwrap(), want("n2"));
        assert_eq!(
            plan(&s, &req(None)).unwrap(),
            want("n2"),
            "the highest priority"
        );
        let from_dca = Request {
            location: Some("dca"),
            ..req(None)
        };
        assert_eq!(plan(&s, &from_dca).unwrap(), want("n2"));
        assert!(matches!(
            plan(&s, &req(Some("n1"))).unwrap(),
            Plan::AlreadyLeader { token: 9, .. }
        ));
        // A standby that does not stream, or reports a problem, is refused unless forced.
        let mut stalled = s.nodes["n3"].clone();
        stalled.replica = Some(Default::default());
        let mut broken = s.nodes["n2"].clone();
        broken.reason = Some("rewind failed: no wal_log_hints".into());
        let keys = Keys::new("prod");
        let s = streaming(&[
            (keys.node_status("n3"), stalled.encode()),
            (keys.node_status("n2"), broken.encode()),
        ]);
        let err = plan(&s, &req(Some("n3"))).unwrap_err();
        assert!(
            err.to_string().contains("not streaming from the primary"),
            "{err}"
        );
        let err = plan(&s, &req(Some("n2"))).unwrap_err();
        assert!(err.to_string().contains("problem: rewind failed"), "{err}");
        let forced = Request {
            force: true,
            ..req(Some("n3"))
        };
        assert_eq!(plan(&s, &forced).unwrap(), want("n3"));
        let err = plan(&s, &req(None)).unwrap_err();
        assert!(
            err.to_string().contains("no node of prod can take over"),
            "{err}"
        );
    }

    #[test]
    fn a_streaming_primary_is_not_a_target_and_every_proxy_counts() {
        let keys = Keys::new("prod");
        let mut deposed = streaming(&[]).nodes["n2"].clone();
        deposed.postgres = PgState::Primary;
        let s = streaming(&[(keys.node_status("n2"), deposed.encode())]);
        let err = plan(&s, &req(Some("n2"))).unwrap_err();
        assert!(err.to_string().contains("primary, not a standby"), "{err}");
        // An unmanaged proxy of another location still routes to the group's primary.
        let p = PROXY_P1.replace("\"dca\"", "\"dcz\"");
        let s = streaming(&[
            (keys.proxy_unmanaged("p1"), "{}".into()),
            (keys.proxy_status("p1"), p),
        ]);
        let err = plan(&s, &req(Some("n3"))).unwrap_err();
        assert!(err.to_string().contains("proxy p1 is unmanaged"), "{err}");
    }

    #[test]
    fn promoting_the_leader_is_a_no_op() {
        let p = plan(&snap(&[]), &req(Some("a"))).unwrap();
        assert!(matches!(p, Plan::AlreadyLeader { token: 9, .. }), "{p:?}");
    }
}
