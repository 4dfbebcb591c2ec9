//! Operator hazards a switchover is refused for, and how long the target gets to take the
//! lease: pure decisions over what harpctl read.

use std::time::Duration;

use harp_core::config::DEFAULT_LEADER_LEASE_DURATION;
use harp_core::lease::KeyLease;

use crate::snapshot::Snapshot;

/// The proxies routing to `location`'s leader (a scope: every proxy of a streaming group)
/// that HARP does not steer (`unmanaged/proxies/<p>`, or their status says so), with the
/// leader each still routes to. Such a proxy keeps its route across a switchover. A proxy with
/// no status is not running and routes nobody.
pub fn unmanaged_proxies<'a>(
    snap: &'a Snapshot,
    location: &'a str,
) -> Vec<(&'a str, Option<&'a str>)> {
    snap.proxies_of(location)
        .filter(|(name, st)| snap.proxy_unmanaged.contains(*name) || !st.managed)
        .map(|(name, st)| (name.as_str(), st.leader.as_deref()))
        .collect()
}

/// Why the switchover of `location` to `target` would leave clients behind, if it would.
pub fn unmanaged_refusal(snap: &Snapshot, location: &str, target: &str) -> Option<String> {
    let list = unmanaged_proxies(snap, location);
    if list.is_empty() {
        return None;
    }
    let names: Vec<&str> = list.iter().map(|(n, _)| *n).collect();
    let routes: Vec<String> = list
        .iter()
        .map(|(n, to)| match to {
            Some(to) => format!("{n} routes to {to}"),
            None => format!("{n} holds its clients"),
        })
        .collect();
    let (noun, verb) = match names.len() {
        1 => ("proxy", "is"),
        _ => ("proxies", "are"),
    };
    let fix: Vec<String> = names
        .iter()
        .map(|n| format!("`harpctl manage proxy {n}`"))
        .collect();
    Some(format!(
        "refusing to switch {location} over to {target}: {noun} {} {verb} unmanaged and keep \
         {} route ({}), so {} would keep sending clients to the old lead master while {target} \
         leads; run {} first, or pass --force to switch over anyway",
        names.join(", "),
        if names.len() == 1 { "its" } else { "their" },
        routes.join("; "),
        if names.len() == 1 { "it" } else { "they" },
        fix.join(" and "),
    ))
}

/// Checks the lease of the target's status (its manager's etcd session) before the request:
/// a target whose manager stopped keeping it alive cannot take the lease. Returns how long the
/// target gets to take the lease once the old leader released it: its own lease TTL — as long
/// as a failover after a crash would leave the location without a leader, and ample for a
/// live manager, which acquires within milliseconds of the release.
pub fn target_lease(target: &str, lease: Option<KeyLease>) -> Result<Duration, String> {
    let Some(l) = lease else {
        return Err(format!(
            "refusing to promote {target}: it publishes no status (is its harp-manager running?)"
        ));
    };
    // Written by hand, without a lease: nothing to judge; the takeover bound still applies.
    if l.id == 0 {
        return Ok(DEFAULT_LEADER_LEASE_DURATION);
    }
    if l.stale() {
        return Err(format!(
            "refusing to promote {target}: its harp-manager has not renewed its etcd lease for \
             {} s of {} (frozen, cut off from etcd, or stopped?); it could not take the lead",
            l.granted_secs - l.remaining_secs,
            l.granted_secs
        ));
    }
    Ok(l.ttl())
}

#[cfg(test)]
mod tests {
    use harp_core::keys::Keys;
    use harp_core::records::{PgState, ProxyStatus, RECORD_VERSION};

    use super::*;
    use crate::snapshot::tests::status;

    fn proxy(name: &str, loc: &str, leader: &str, managed: bool) -> ProxyStatus {
        ProxyStatus {
            version: RECORD_VERSION,
            name: name.into(),
            location: loc.into(),
            leader: Some(leader.into()),
            token: Some(9),
            mode: "userspace".into(),
            sessions: 0,
            held: 0,
            draining: None,
            drain_left: 0,
            managed,
            pooled: None,
            lease_ttl_ms: None,
            updated_ms: 1,
        }
    }

    fn snap(extra: &[(String, String)]) -> Snapshot {
        let k = Keys::new("c");
        let mut kvs = vec![
            (
                k.node_status("a"),
                status("a", "dca", PgState::Primary, 1).encode(),
            ),
            (k.proxy_status("p1"), proxy("p1", "dca", "a", true).encode()),
            (
                k.proxy_status("p2"),
                proxy("p2", "dca", "a", false).encode(),
            ),
            (k.proxy_status("q"), proxy("q", "dcb", "x", false).encode()),
        ];
        kvs.extend(extra.iter().cloned());
        let kvs: Vec<_> = kvs
            .iter()
            .map(|(key, v)| (key.clone(), v.as_bytes(), 1))
            .collect();
        Snapshot::from_kvs("c", &k, 5, kvs)
    }

    #[test]
    fn an_unmanaged_proxy_of_the_location_blocks_the_switchover() {
        let s = snap(&[]);
        assert_eq!(unmanaged_proxies(&s, "dca"), [("p2", Some("a"))]);
        let why = unmanaged_refusal(&s, "dca", "b").unwrap();
        assert!(why.contains("proxy p2 is unmanaged"), "{why}");
        assert!(why.contains("p2 routes to a"), "{why}");
        assert!(why.contains("old lead master while b leads"), "{why}");
        assert!(why.contains("`harpctl manage proxy p2`"), "{why}");
        assert!(why.contains("--force"), "{why}");
        // Marked by `harpctl unmanage proxy p1` before its agent reported it: counted too.
        let unmanaged = [(Keys::new("c").proxy_unmanaged("p1"), "{}".to_owned())];
        let s = snap(&unmanaged);
        let why = unmanaged_refusal(&s, "dca", "b").unwrap();
        assert!(why.contains("proxies p1, p2 are unmanaged"), "{why}");
        assert!(why.contains("and `harpctl manage proxy p2`"), "{why}");
        // Another location's proxy does not matter.
        assert_eq!(unmanaged_refusal(&s, "dcc", "b"), None);
    }

    #[test]
    fn a_target_whose_lease_runs_down_is_refused_and_a_live_one_gets_its_ttl() {
        let l = |remaining| {
            Some(KeyLease {
                id: 7,
                granted_secs: 6,
                remaining_secs: remaining,
            })
        };
        assert_eq!(target_lease("b", l(5)), Ok(Duration::from_secs(6)));
        let err = target_lease("b", l(1)).unwrap_err();
        assert!(
            err.contains("b: its harp-manager has not renewed its etcd lease for 5 s of 6"),
            "{err}"
        );
        let err = target_lease("b", None).unwrap_err();
        assert!(err.contains("publishes no status"), "{err}");
        let hand_written = Some(KeyLease {
            id: 0,
            granted_secs: 0,
            remaining_secs: 0,
        });
        assert_eq!(
            target_lease("b", hand_written),
            Ok(DEFAULT_LEADER_LEASE_DURATION)
        );
    }
}
