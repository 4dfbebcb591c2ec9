use super::*;
use crate::records::RECORD_VERSION;

const TOKEN: i64 = 20;

fn sb(name: &str, flush: u64) -> Standby {
    Standby {
        name: name.into(),
        streaming: true,
        flush_lsn: Some(flush),
        priority: 100,
        fenced: false,
    }
}

fn record(token: i64, members: &[&str]) -> Option<SyncRecord> {
    Some(SyncRecord {
        version: RECORD_VERSION,
        leader: if token == TOKEN { "p" } else { "old" }.into(),
        token,
        members: members.iter().map(|m| m.to_string()).collect(),
        strict: false,
        updated_ms: 0,
    })
}

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

/// A world the tests edit between steps.
#[derive(Clone)]
struct W {
    standbys: Vec<Standby>,
    ssn: Vec<String>,
    sync: Vec<String>,
    lsn: u64,
    record: Option<SyncRecord>,
}

impl W {
    fn new(standbys: Vec<Standby>, ssn: &[&str], record: Option<SyncRecord>) -> Self {
        W {
            standbys,
            ssn: names(ssn),
            sync: Vec::new(),
            lsn: 1000,
            record,
        }
    }

    fn obs(&self) -> Input {
        Input::Observed(Observation {
            standbys: self.standbys.clone(),
            ssn: self.ssn.clone(),
            reported_sync: self.sync.clone(),
            primary_lsn: self.lsn,
            record: self.record.clone(),
        })
    }

    /// Carries out `a` as the wiring would, Postgres reporting the named standby sync at once.
    fn apply(&mut self, a: &Action) {
        match a {
            Action::SetSsn(n) => {
                self.ssn = n.clone();
                self.sync = n.iter().filter(|s| *s != BLOCKED).cloned().collect();
            }
            Action::WriteRecord(m) => {
                self.record = record(TOKEN, &m.iter().map(String::as_str).collect::<Vec<_>>());
            }
        }
    }

    fn standby(&mut self, name: &str) -> &mut Standby {
        self.standbys.iter_mut().find(|s| s.name == name).unwrap()
    }
}

/// Steps and applies until the machine has nothing to do; returns the actions in order.
fn run(m: &mut SyncMachine, w: &mut W) -> Vec<String> {
    let mut done = Vec::new();
    for _ in 0..10 {
        match m.step(w.obs()) {
            Some(a) => {
                done.push(a.to_string());
                w.apply(&a);
            }
            None => return done,
        }
    }
    panic!("no fixpoint: {done:?}");
}

fn on() -> SyncMachine {
    SyncMachine::new(SynchronousMode::On, "p", TOKEN)
}

fn strict() -> SyncMachine {
    SyncMachine::new(SynchronousMode::Strict, "p", TOKEN)
}

#[test]
fn adding_waits_for_postgres_to_report_sync_and_the_standby_to_catch_up() {
    let mut m = on();
    let mut w = W::new(vec![sb("s1", 900)], &[BLOCKED], record(7, &["p"]));
    assert_eq!(m.step(w.obs()), Some(Action::SetSsn(names(&["s1"]))));
    // Not applied yet: nothing more.
    assert_eq!(m.step(w.obs()), None);
    w.ssn = names(&["s1"]);
    assert_eq!(m.step(w.obs()), None, "not reported sync yet");
    w.sync = names(&["s1"]);
    assert_eq!(
        m.step(w.obs()),
        None,
        "sync, but has not flushed what came before"
    );
    w.lsn = 1200; // later commits waited for s1; those up to 1000 must be on it
    w.standby("s1").flush_lsn = Some(1000);
    assert_eq!(m.step(w.obs()), Some(Action::WriteRecord(names(&["s1"]))));
    assert_eq!(m.step(w.obs()), None, "waits for the write to show");
    w.record = record(TOKEN, &["s1"]);
    assert_eq!(m.step(w.obs()), None);
    assert!(!m.degraded() && !m.blocked());
}

#[test]
fn removing_writes_the_record_first_then_switches() {
    let mut m = on();
    let mut s2 = sb("s2", 1000);
    s2.priority = 50;
    let mut w = W::new(vec![sb("s1", 1000), s2], &[BLOCKED], None);
    assert_eq!(
        run(&mut m, &mut w),
        [
            "synchronous_standby_names = 'FIRST 1 (s1)'",
            "sync record members = [s1]"
        ]
    );
    // s1 stops streaming: commits wait for it; it leaves the record before ssn moves on.
    w.standby("s1").streaming = false;
    w.sync.clear();
    assert_eq!(
        run(&mut m, &mut w),
        [
            "sync record members = []",
            "synchronous_standby_names = 'FIRST 1 (s2)'",
            "sync record members = [s2]"
        ]
    );
    // s1 back: the current standby stays.
    w.standby("s1").streaming = true;
    assert_eq!(run(&mut m, &mut w), Vec::<String>::new());
}

#[test]
fn on_mode_without_a_healthy_standby_records_the_empty_set_before_emptying_ssn() {
    let mut m = on();
    let mut w = W::new(vec![sb("s1", 1000)], &[BLOCKED], None);
    run(&mut m, &mut w);
    w.standby("s1").fenced = true;
    assert_eq!(
        run(&mut m, &mut w),
        ["sync record members = []", "synchronous_standby_names = ''"]
    );
    assert!(m.degraded());
    assert!(
        m.summary()
            .unwrap()
            .starts_with("synchronous mode degraded")
    );
    // A healthy standby again: protected again.
    w.standby("s1").fenced = false;
    assert_eq!(
        run(&mut m, &mut w),
        [
            "synchronous_standby_names = 'FIRST 1 (s1)'",
            "sync record members = [s1]"
        ]
    );
    assert!(!m.degraded() && m.summary().is_none());
}

#[test]
fn a_fresh_on_leader_with_no_standby_records_the_empty_set_at_once() {
    let mut m = on();
    let mut w = W::new(vec![], &[BLOCKED], record(7, &["p"]));
    assert_eq!(
        run(&mut m, &mut w),
        ["sync record members = []", "synchronous_standby_names = ''"]
    );
    assert!(m.degraded());
}

#[test]
fn strict_mode_keeps_the_last_standby_and_the_record_and_blocks() {
    let mut m = strict();
    let mut w = W::new(vec![sb("s1", 1000)], &[], None);
    run(&mut m, &mut w);
    assert_eq!(w.record, record(TOKEN, &["s1"]));
    w.standby("s1").streaming = false;
    w.sync.clear();
    assert_eq!(run(&mut m, &mut w), Vec::<String>::new());
    assert_eq!(
        (w.ssn.clone(), w.record.clone()),
        (names(&["s1"]), record(TOKEN, &["s1"]))
    );
    assert!(m.blocked() && !m.degraded());
    assert_eq!(
        m.summary().as_deref(),
        Some("synchronous mode: writes wait for s1, which does not report sync")
    );
    let rec = m.record(&names(&["s1"]), 5);
    assert_eq!(
        (rec.leader.as_str(), rec.token, rec.strict),
        ("p", TOKEN, true)
    );
    // A fresh strict leader with no standby at all blocks commits rather than empty ssn.
    let mut m = strict();
    let mut w = W::new(vec![], &[], record(7, &["p"]));
    assert_eq!(
        run(&mut m, &mut w),
        ["synchronous_standby_names = 'FIRST 1 (harp_no_standby)'"]
    );
    assert_eq!(
        w.record,
        record(7, &["p"]),
        "a record naming only us is left"
    );
}

#[test]
fn a_previous_leaders_record_naming_others_is_cleared_first() {
    // A forced promotion: the old record names s3, which our commits do not wait for.
    let mut m = strict();
    let mut w = W::new(
        vec![sb("s3", 800), sb("s1", 1000)],
        &[BLOCKED],
        record(7, &["s3"]),
    );
    assert_eq!(m.step(w.obs()), Some(Action::WriteRecord(vec![])));
    // Even if Postgres reports s3 sync: it is not confirmed under our ssn.
    let mut m = on();
    w.ssn = names(&["s3"]);
    w.sync = names(&["s3"]);
    assert_eq!(m.step(w.obs()), Some(Action::WriteRecord(vec![])));
}

#[test]
fn unhealthy_standbys_are_never_picked_and_the_best_one_is() {
    let mut m = on();
    let mut low = sb("a", 1000);
    low.priority = 50;
    let mut never = sb("b", 1000);
    never.priority = -1;
    let mut fenced = sb("c", 1000);
    fenced.fenced = true;
    let mut stalled = sb("d", 1000);
    stalled.streaming = false;
    let w = W::new(
        vec![
            low,
            never,
            fenced,
            stalled,
            sb("f", 900),
            sb("e", 990),
            sb("g", 990),
            sb("p", 5000),
        ],
        &[BLOCKED],
        None,
    );
    assert_eq!(
        m.step(w.obs()),
        Some(Action::SetSsn(names(&["e"]))),
        "priority, LSN, name"
    );
    let mut m = on();
    let w = W::new(vec![sb("p", 1)], &[BLOCKED], None);
    assert_eq!(
        m.step(w.obs()),
        Some(Action::WriteRecord(vec![])),
        "never ourselves"
    );
}

#[test]
fn a_failed_action_is_decided_again_at_the_next_observation() {
    let mut m = on();
    let w = W::new(vec![sb("s1", 1000)], &[BLOCKED], None);
    let first = m.step(w.obs());
    assert_eq!(m.step(w.obs()), None);
    assert_eq!(m.pending(), first.as_ref());
    assert_eq!(m.step(Input::Failed), None);
    assert_eq!(m.step(w.obs()), first);
}

#[test]
fn leaving_synchronous_mode_empties_the_record_then_ssn() {
    let mut m = on();
    let mut w = W::new(vec![sb("s1", 1000)], &[BLOCKED], None);
    run(&mut m, &mut w);
    let mut off = SyncMachine::new(SynchronousMode::Off, "p", TOKEN);
    w.record = record(TOKEN, &["s1"]);
    assert_eq!(
        run(&mut off, &mut w),
        ["sync record members = []", "synchronous_standby_names = ''"]
    );
    assert!(
        !off.degraded(),
        "off is not degraded on: it promised nothing"
    );
}

#[test]
fn only_a_named_standby_may_be_promoted() {
    assert_eq!(eligible_for_promotion(None, "s1"), Ok(()));
    let rec = record(7, &["s1"]);
    assert_eq!(eligible_for_promotion(rec.as_ref(), "s1"), Ok(()));
    assert_eq!(
        eligible_for_promotion(rec.as_ref(), "s2").unwrap_err(),
        "synchronous mode: only s1 may be promoted (sync record of old, token 7); s2 may lack \
         acknowledged commits"
    );
    // The leader the record names is a former primary: as a standby now, it is not named.
    assert!(eligible_for_promotion(rec.as_ref(), "old").is_err());
    let mut empty = record(7, &[]).unwrap();
    empty.strict = true;
    assert_eq!(
        eligible_for_promotion(Some(&empty), "s1").unwrap_err(),
        "strict synchronous mode: the sync record of old (token 7) names no standby, so s1 may \
         lack acknowledged commits; not promoted automatically"
    );
}
