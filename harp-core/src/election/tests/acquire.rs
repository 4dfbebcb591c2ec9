//! The deadline after an acquire: the acquire txn puts the key on our lease but does not renew
//! it, so leadership lasts only as long as the lease's last renewal allows.

use super::*;

fn margin() -> Duration {
    safety_margin(TTL)
}

/// A healthy node whose lease was granted by a request sent at `granted`, settled and seeing
/// the lease vacant at `at`.
fn candidate(e: &mut Election, granted: Instant, at: Instant) {
    e.step(Event::SessionUp { sent: granted }, granted);
    e.step(healthy(), granted);
    assert_eq!(
        e.step(Event::LeaderObserved(None), at),
        vec![Action::TryAcquire]
    );
}

#[test]
fn a_partition_right_after_an_acquire_ends_leadership_by_the_last_keep_alive_s_deadline() {
    let mut e = Election::new(params("n1", 100));
    let start = Instant::now();
    let keep_alive = start + Duration::from_secs(1);
    e.step(Event::SessionUp { sent: start }, start);
    e.step(Event::KeepAliveOk { sent: keep_alive }, keep_alive);
    e.step(healthy(), keep_alive);
    // The vacancy is seen, and the acquire sent, a while after the last acknowledged
    // keep-alive; then the network goes: no keep-alive is acknowledged after it.
    let sent = keep_alive + Duration::from_millis(1500);
    assert_eq!(
        e.step(Event::LeaderObserved(None), sent),
        vec![Action::TryAcquire]
    );
    let replied = sent + Duration::from_millis(5);
    e.step(Event::Acquired { token: 7, sent }, replied);
    let lease_end = keep_alive + TTL - margin();
    assert!(lease_end < sent + TTL - margin());
    assert_eq!(
        e.role(),
        Role::Leader {
            token: 7,
            deadline: lease_end
        }
    );
    assert_eq!(e.next_wake(), Some(lease_end));
    let just_before = lease_end - Duration::from_millis(1);
    assert!(e.step(Event::Tick, just_before).is_empty());
    assert!(e.is_leader());
    let out = e.step(Event::Tick, lease_end);
    assert!(
        !e.is_leader(),
        "still leader past the lease's earliest expiry"
    );
    assert!(
        matches!(&out[0], Action::StepDown { token: 7, reason } if reason.contains("deadline")),
        "{out:?}"
    );
}

#[test]
fn without_a_keep_alive_the_deadline_counts_from_the_grant() {
    let mut e = Election::new(params("n1", 100));
    let granted = Instant::now();
    let at = granted + STEP;
    candidate(&mut e, granted, at);
    e.step(Event::Acquired { token: 7, sent: at }, at);
    assert_eq!(
        e.role(),
        Role::Leader {
            token: 7,
            deadline: granted + TTL - margin()
        }
    );
    // A keep-alive acknowledged after the acquire extends it as usual.
    let later = at + Duration::from_secs(2);
    e.step(Event::KeepAliveOk { sent: later }, later);
    assert_eq!(e.next_wake(), Some(later + TTL - margin()));
}

#[test]
fn an_acquire_that_succeeds_after_the_lease_deadline_does_not_lead() {
    let mut e = Election::new(params("n1", 100));
    let granted = Instant::now();
    let at = granted + STEP;
    candidate(&mut e, granted, at);
    // etcd answers the txn only after the lease could have expired.
    let late = granted + TTL - margin();
    let out = e.step(Event::Acquired { token: 7, sent: at }, late);
    assert!(!e.is_leader(), "{out:?}");
    assert!(
        matches!(&out[..], [Action::StepDown { token: 7, reason }] if reason.contains("acquired after")),
        "{out:?}"
    );
    assert_eq!(e.holder(), holder("n1", 7).as_ref());
    // etcd then acknowledges the lease: the key on it is provably ours, so we lead under it.
    let back = late + Duration::from_millis(300);
    e.step(Event::KeepAliveOk { sent: back }, back);
    assert_eq!(
        e.role(),
        Role::Leader {
            token: 7,
            deadline: back + TTL - margin()
        }
    );
}

#[test]
fn an_acquire_sent_on_a_lease_since_lost_does_not_lead() {
    let mut e = Election::new(params("n1", 100));
    let granted = Instant::now();
    let at = granted + STEP;
    candidate(&mut e, granted, at);
    let regranted = at + Duration::from_millis(100);
    e.step(Event::SessionLost, regranted);
    e.step(Event::SessionUp { sent: regranted }, regranted);
    // The txn's reply arrives after the new lease: the key went with the old one.
    let out = e.step(Event::Acquired { token: 7, sent: at }, regranted);
    assert!(!e.is_leader(), "{out:?}");
    assert!(!out.iter().any(|a| matches!(a, Action::Release { .. })));
}
