//! Watching `leader/<location>` until the switchover target holds it, and timing the pause
//! clients saw (old key deleted → new key put, as harpctl's watch delivered them) and the drain
//! before it (the old leader's handover mark → its key's delete).

use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use harp_core::records::LeaderRecord;
use tokio::time::Instant;

use crate::conn::Conn;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandedOver {
    /// The new leader key's `create_revision`.
    pub token: i64,
    /// Old key's delete → new key's put; `None` if no delete was seen (no leader before).
    pub pause: Option<Duration>,
    /// The old leader's handover mark → its key's delete: proxies held new clients and let
    /// open transactions finish. `None` if the leader handed over without draining.
    pub drain: Option<Duration>,
    pub at: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotHandedOver {
    /// The deadline passed; `leader` is the last leader seen (`None`: vacant).
    Timeout { leader: Option<String> },
    /// The lease stayed vacant for `after` (the takeover bound) without the target taking it.
    NotTaken { after: Duration },
    /// Ctrl-C.
    Interrupted,
}

/// Tracks leader-key events against the switchover's target.
#[derive(Debug)]
struct Tracker<'a> {
    target: &'a str,
    from_token: i64,
    deleted_at: Option<Instant>,
    marked_at: Option<Instant>,
    leader: Option<String>,
    /// How long the target gets to take a vacant lease, and since when it is vacant.
    takeover: Duration,
    vacant_since: Option<Instant>,
}

impl Tracker<'_> {
    /// A put of `rec` created at `create_revision`, seen `now`; `Some` once the target leads
    /// under a new token.
    fn put(&mut self, rec: LeaderRecord, create_revision: i64, now: Instant) -> Option<HandedOver> {
        let fresh = create_revision != self.from_token;
        if !fresh && rec.handover_to.is_some() {
            self.marked_at.get_or_insert(now);
        }
        self.leader = Some(rec.node.clone());
        self.vacant_since = None;
        (fresh && rec.node == self.target).then(|| HandedOver {
            token: create_revision,
            pause: self.deleted_at.map(|d| now - d),
            drain: self.marked_at.zip(self.deleted_at).map(|(m, d)| d - m),
            at: now,
        })
    }

    /// When to stop waiting: at the deadline, or once the lease has been vacant for the
    /// takeover bound — the target is not coming, and while the request lives nobody else may
    /// lead.
    fn give_up_at(&self, deadline: Instant) -> Instant {
        self.vacant_since
            .map_or(deadline, |v| deadline.min(v + self.takeover))
    }

    fn gave_up(&self, deadline: Instant) -> NotHandedOver {
        match self.vacant_since {
            Some(v) if v + self.takeover < deadline => NotHandedOver::NotTaken {
                after: self.takeover,
            },
            _ => NotHandedOver::Timeout {
                leader: self.leader.clone(),
            },
        }
    }

    fn delete(&mut self, now: Instant) {
        self.deleted_at = Some(now);
        self.vacant_since = Some(now);
        self.leader = None;
    }
}

/// Watches `key` from `start_revision` (the revision after harpctl's read, so nothing since is
/// missed) until `target` holds it under a token other than `from_token`. A broken stream is
/// watched again from the next unseen revision. Gives up at `deadline`, or once the key has
/// been vacant for `takeover` (from the request if there was no leader).
#[expect(
    clippy::too_many_arguments,
    reason = "one call site, every argument named there"
)]
pub async fn wait(
    conn: &Conn,
    key: &str,
    target: &str,
    from: Option<&str>,
    from_token: i64,
    start_revision: i64,
    deadline: Instant,
    takeover: Duration,
) -> Result<HandedOver, NotHandedOver> {
    let mut t = Tracker {
        target,
        from_token,
        deleted_at: None,
        marked_at: None,
        leader: from.map(str::to_owned),
        takeover,
        vacant_since: from.is_none().then(Instant::now),
    };
    let mut next_rev = start_revision;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let mut client = conn.dcs.client.clone();
        let opts = WatchOptions::new().with_start_revision(next_rev);
        let stream = tokio::select! {
            s = tokio::time::timeout(conn.timeout(), client.watch(key, Some(opts))) => s,
            _ = tokio::time::sleep_until(t.give_up_at(deadline)) => return Err(t.gave_up(deadline)),
            _ = &mut ctrl_c => return Err(NotHandedOver::Interrupted),
        };
        let Ok(Ok(mut stream)) = stream else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                _ = tokio::time::sleep_until(t.give_up_at(deadline)) => return Err(t.gave_up(deadline)),
            }
        };
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = tokio::time::sleep_until(t.give_up_at(deadline)) => return Err(t.gave_up(deadline)),
                _ = &mut ctrl_c => return Err(NotHandedOver::Interrupted),
            };
            let now = Instant::now();
            let Ok(Some(resp)) = msg else { break };
            if resp.canceled() {
                // Compacted past our revision: resume from the oldest one etcd still has.
                next_rev = next_rev.max(resp.compact_revision());
                break;
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                next_rev = next_rev.max(kv.mod_revision() + 1);
                match ev.event_type() {
                    EventType::Delete => t.delete(now),
                    EventType::Put => {
                        let Ok(rec) = LeaderRecord::decode(kv.value()) else {
                            continue;
                        };
                        if let Some(done) = t.put(rec, kv.create_revision(), now) {
                            return Ok(done);
                        }
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = tokio::time::sleep_until(t.give_up_at(deadline)) => return Err(t.gave_up(deadline)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::tests::leader;

    /// A switchover to n2 replacing `from_token`, with `leader` leading when it started.
    fn tracker(from_token: i64, leader: Option<&str>) -> Tracker<'static> {
        Tracker {
            target: "n2",
            from_token,
            deleted_at: None,
            marked_at: None,
            leader: leader.map(str::to_owned),
            takeover: Duration::from_secs(6),
            vacant_since: None,
        }
    }

    #[test]
    fn the_pause_runs_from_the_old_keys_delete_to_the_targets_put() {
        let t0 = Instant::now();
        let mut t = tracker(10, Some("n1"));
        // The old leader refreshing its own key is not a handover.
        assert_eq!(t.put(leader("n1", "dca"), 10, t0), None);
        t.delete(t0 + Duration::from_millis(5));
        assert_eq!(t.leader, None);
        let done = t
            .put(leader("n2", "dca"), 14, t0 + Duration::from_millis(23))
            .unwrap();
        assert_eq!(done.token, 14);
        assert_eq!(done.pause, Some(Duration::from_millis(18)));
        assert_eq!(done.drain, None, "no handover mark was seen");
    }

    #[test]
    fn the_drain_runs_from_the_old_leaders_mark_to_its_delete() {
        let t0 = Instant::now();
        let mut t = tracker(10, Some("n1"));
        let mut marked = leader("n1", "dca");
        marked.handover_to = Some("n2".into());
        assert_eq!(t.put(marked, 10, t0), None);
        t.delete(t0 + Duration::from_millis(40));
        let done = t
            .put(leader("n2", "dca"), 14, t0 + Duration::from_millis(45))
            .unwrap();
        assert_eq!(done.drain, Some(Duration::from_millis(40)));
        assert_eq!(done.pause, Some(Duration::from_millis(5)));
    }

    #[test]
    fn a_target_that_does_not_take_the_vacant_lease_is_given_up_on() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let deadline = t0 + 30 * s;
        let mut t = tracker(10, Some("n1"));
        assert_eq!(t.give_up_at(deadline), deadline, "n1 still leads");
        t.delete(t0 + s);
        assert_eq!(t.give_up_at(deadline), t0 + 7 * s);
        assert_eq!(
            t.gave_up(deadline),
            NotHandedOver::NotTaken { after: 6 * s }
        );
        // Near the deadline the deadline wins, and says so.
        assert_eq!(t.give_up_at(t0 + 3 * s), t0 + 3 * s);
        assert!(matches!(
            t.gave_up(t0 + 3 * s),
            NotHandedOver::Timeout { leader: None }
        ));
    }

    #[test]
    fn another_node_taking_over_is_remembered_but_not_success() {
        let t0 = Instant::now();
        let mut t = tracker(0, None);
        assert_eq!(t.put(leader("n3", "dca"), 20, t0), None);
        assert_eq!(t.leader.as_deref(), Some("n3"));
        let done = t.put(leader("n2", "dca"), 21, t0).unwrap();
        assert_eq!(done.pause, None, "no delete was seen");
    }
}
