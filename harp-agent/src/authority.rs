//! The agent's authority to route, shared lock-free with every relay: the decision loop
//! publishes its trust deadline, relays check it synchronously before every byte they send a
//! server. The clock is monotonic and runs while the process is stopped, so an agent resumed
//! after a freeze longer than its trust sees it gone before any task of its runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use harp_core::routing::{Authority, Routing};
use tokio::sync::watch;

/// Encodes [`Authority`] in one atomic: 0 lapsed, `u64::MAX` unbounded, else nanoseconds
/// since `base` (+1, so a deadline at `base` is not "lapsed").
pub struct Trust {
    base: Instant,
    until: AtomicU64,
}

const LAPSED: u64 = 0;
const UNBOUNDED: u64 = u64::MAX;

impl Default for Trust {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            until: AtomicU64::new(LAPSED),
        }
    }
}

impl Trust {
    pub fn set(&self, a: Authority) {
        let v = match a {
            Authority::Lapsed => LAPSED,
            Authority::Unbounded => UNBOUNDED,
            Authority::Until(t) => match t.checked_duration_since(self.base) {
                Some(d) => u64::try_from(d.as_nanos()).map_or(UNBOUNDED - 1, |n| n + 1),
                None => LAPSED,
            },
        };
        self.until.store(v, Ordering::Release);
    }

    pub fn get(&self) -> Authority {
        match self.until.load(Ordering::Acquire) {
            LAPSED => Authority::Lapsed,
            UNBOUNDED => Authority::Unbounded,
            n => Authority::Until(self.base + std::time::Duration::from_nanos(n - 1)),
        }
    }

    /// Whether the agent may still act on its routing now.
    pub fn holds(&self) -> bool {
        self.get().holds(Instant::now())
    }
}

/// Whether a session made under `token` may send its server another byte now: its leadership
/// is still the live one and the agent's authority holds. Checked right before each write,
/// so neither a cut the decision loop has not delivered yet nor a lapsed deadline can lose a
/// race with a relay.
pub fn may_send(routing: &watch::Receiver<Routing>, trust: &Trust, token: i64) -> bool {
    routing.borrow().live == Some(token) && trust.holds()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn round_trips_and_lapses_with_the_clock() {
        let t = Trust::default();
        assert_eq!(t.get(), Authority::Lapsed);
        assert!(!t.holds());
        let at = Instant::now() + Duration::from_millis(50);
        t.set(Authority::Until(at));
        assert_eq!(t.get(), Authority::Until(at));
        assert!(t.holds());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!t.holds(), "a deadline passed is no authority");
        t.set(Authority::Unbounded);
        assert!(t.holds());
        t.set(Authority::Until(t.base));
        assert!(!t.holds());
    }

    #[test]
    fn a_session_may_send_only_under_the_live_leadership() {
        let t = Trust::default();
        t.set(Authority::Until(Instant::now() + Duration::from_secs(5)));
        let (tx, rx) = watch::channel(Routing {
            route: None,
            live: Some(7),
            draining: Some(7),
        });
        assert!(may_send(&rx, &t, 7), "a draining leadership still sends");
        assert!(!may_send(&rx, &t, 6));
        tx.send_modify(|r| r.live = Some(8));
        assert!(!may_send(&rx, &t, 7), "replaced: not one more byte");
        t.set(Authority::Lapsed);
        assert!(!may_send(&rx, &t, 8));
    }
}
