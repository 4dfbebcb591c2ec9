//! Whether a key's owner is alive, judged by the etcd lease the key lives on: a running unit
//! keeps its lease alive every `lease_refresh_interval`, so the lease's remaining TTL stays near
//! its granted TTL; a crashed or frozen one lets it run down to expiry. etcd's own clock
//! measures it, so no two hosts' clocks are compared.

use std::time::{Duration, Instant};

/// A key's lease as etcd reports it (`LeaseTimeToLive`, whole seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLease {
    pub id: i64,
    pub granted_secs: i64,
    pub remaining_secs: i64,
}

impl KeyLease {
    /// The lease has run down below a third of its TTL: with HARP's default of three
    /// refreshes per lease, its owner missed two keep-alives in a row and is frozen, cut off
    /// or dead (a live one is back near the full TTL within one refresh).
    pub fn stale(&self) -> bool {
        self.remaining_secs * 3 < self.granted_secs
    }

    /// The lease's TTL, at least a second.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.granted_secs.max(1) as u64)
    }
}

/// Slack past a lease's remaining TTL before its key still being there proves a keep-alive:
/// etcd reports whole seconds, rounded down, and expires leases on its own tick.
const EXPIRY_SLACK: Duration = Duration::from_millis(1500);

/// What a starting manager may do with its node name, see [`NameClaim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// No live lease holds the name's status: start.
    Free,
    /// A lease holds it that may be a previous run's, killed before it could clean up: look
    /// again shortly; it must expire by `until` if nobody keeps it alive.
    Wait { lease: i64, until: Instant },
    /// Another process keeps the status alive: it runs under the same name.
    Taken { lease: i64, why: &'static str },
}

/// Decides whether `nodes/<name>/status` belongs to another live manager, from repeated
/// looks at the lease it lives on. A restart after `kill -9` finds the old run's status on a
/// lease nobody refreshes: its remaining TTL only falls and the key vanishes within it, so the
/// new run waits for that (at most one lease). A second live manager with the name refreshes
/// the lease (its remaining TTL rises), moves the key to a lease of its own, or keeps it past
/// its expiry: the name is taken.
#[derive(Debug, Clone, Default)]
pub struct NameClaim {
    /// The lease first seen, the lowest remaining TTL seen on it, and when it must be gone.
    seen: Option<(i64, i64, Instant)>,
}

impl NameClaim {
    /// One look at the status key: `None` when it is absent or its lease expired (a key
    /// without a lease, written by hand, has no owner either).
    pub fn observe(&mut self, lease: Option<KeyLease>, now: Instant) -> Claim {
        let Some(l) = lease.filter(|l| l.id != 0 && l.remaining_secs >= 0) else {
            return Claim::Free;
        };
        let Some((id, lowest, until)) = self.seen else {
            let until = now + Duration::from_secs(l.remaining_secs as u64) + EXPIRY_SLACK;
            self.seen = Some((l.id, l.remaining_secs, until));
            return Claim::Wait { lease: l.id, until };
        };
        let taken = |why| Claim::Taken { lease: l.id, why };
        if l.id != id {
            return taken("the status was written again on another lease");
        }
        if l.remaining_secs > lowest {
            return taken("its lease is being kept alive");
        }
        if now >= until {
            return taken("its lease outlived its TTL");
        }
        self.seen = Some((id, l.remaining_secs, until));
        Claim::Wait { lease: id, until }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(id: i64, granted: i64, remaining: i64) -> Option<KeyLease> {
        Some(KeyLease {
            id,
            granted_secs: granted,
            remaining_secs: remaining,
        })
    }

    #[test]
    fn a_lease_below_a_third_of_its_ttl_is_stale() {
        let l = |r| lease(1, 6, r).unwrap();
        // Default 6 s lease, 2 s refresh: a live owner reads 3..=6 s left.
        assert!(!l(6).stale() && !l(3).stale());
        assert!(l(1).stale() && l(0).stale());
        assert_eq!(l(4).ttl(), Duration::from_secs(6));
    }

    #[test]
    fn no_status_or_an_expired_lease_leaves_the_name_free() {
        let now = Instant::now();
        assert_eq!(NameClaim::default().observe(None, now), Claim::Free);
        assert_eq!(
            NameClaim::default().observe(lease(7, 6, -1), now),
            Claim::Free
        );
        assert_eq!(
            NameClaim::default().observe(lease(0, 0, 0), now),
            Claim::Free
        );
    }

    #[test]
    fn a_killed_runs_status_is_waited_out_until_it_expires() {
        let t0 = Instant::now();
        let mut c = NameClaim::default();
        let s = Duration::from_secs(1);
        let until = t0 + 4 * s + EXPIRY_SLACK;
        assert_eq!(
            c.observe(lease(7, 6, 4), t0),
            Claim::Wait { lease: 7, until }
        );
        assert_eq!(
            c.observe(lease(7, 6, 3), t0 + s),
            Claim::Wait { lease: 7, until }
        );
        assert_eq!(
            c.observe(lease(7, 6, 3), t0 + s),
            Claim::Wait { lease: 7, until }
        );
        assert_eq!(c.observe(None, t0 + 4 * s), Claim::Free);
    }

    #[test]
    fn a_live_manager_with_the_name_is_told_apart() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        // Its keep-alive lifts the remaining TTL.
        let mut c = NameClaim::default();
        c.observe(lease(7, 6, 4), t0);
        let got = c.observe(lease(7, 6, 5), t0 + s);
        assert!(matches!(got, Claim::Taken { lease: 7, why } if why.contains("kept alive")));
        // It wrote its status on a lease of its own.
        let mut c = NameClaim::default();
        c.observe(lease(7, 6, 4), t0);
        assert!(matches!(
            c.observe(lease(8, 6, 6), t0 + s),
            Claim::Taken { lease: 8, .. }
        ));
        // The key is still there past the lease's expiry.
        let mut c = NameClaim::default();
        c.observe(lease(7, 6, 2), t0);
        let got = c.observe(lease(7, 6, 0), t0 + 4 * s);
        assert!(matches!(got, Claim::Taken { why, .. } if why.contains("outlived")));
    }
}
