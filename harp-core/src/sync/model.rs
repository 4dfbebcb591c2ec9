//! The machine against a model of Postgres synchronous replication and etcd, over random
//! sequences of commits, standbys streaming, disconnecting, reconnecting, being fenced or
//! reprioritised, and machine steps whose actions succeed, fail, or succeed but report failure.
//!
//! Postgres, as modelled: ssn `[s]` makes a commit wait until s — connected and caught up
//! (walsender `streaming`) — has flushed it; ssn `[]` acknowledges at once, and emptying ssn
//! releases every waiting commit; a standby reported sync is s while it is caught up.
//!
//! Checked after every event: every standby the record names holds every commit the primary
//! acknowledged (its flushed position is at least the highest acknowledged one). And once the
//! world calms down (standbys stream, steps succeed), the machine settles where the mode says.
//! `PROPTEST_CASES=10000 cargo test -p harp-core sync::model` searches longer.

use proptest::prelude::*;

use super::*;
use crate::records::RECORD_VERSION;

const ME: &str = "p";
const TOKEN: i64 = 2;
const NAMES: [&str; 4] = ["s0", "s1", "s2", "s3"];
/// WAL written by the previous primary, all of it on us.
const START: u64 = 100;

#[derive(Debug, Clone)]
struct Node {
    name: &'static str,
    connected: bool,
    /// Walsender `streaming`: caught up since it connected.
    caught_up: bool,
    flush: u64,
    priority: i32,
    fenced: bool,
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Done,
    /// Not carried out; the machine is told it failed.
    Lost,
    /// Carried out, but the machine is told it failed (a txn whose answer was lost).
    Unknown,
}

#[derive(Debug, Clone)]
enum Event {
    Commit,
    Stream(usize, u64),
    Connect(usize),
    Disconnect(usize),
    Fence(usize, bool),
    Priority(usize, i32),
    Step(Outcome),
}

#[derive(Debug)]
struct World {
    mode: SynchronousMode,
    lsn: u64,
    /// The highest commit this primary acknowledged, once it did.
    acked: Option<u64>,
    ssn: Vec<String>,
    record: Option<SyncRecord>,
    nodes: Vec<Node>,
    m: SyncMachine,
}

impl World {
    fn sync_node(&self) -> Option<&Node> {
        match self.ssn.as_slice() {
            [s] => self
                .nodes
                .iter()
                .find(|n| n.name == s && n.connected && n.caught_up),
            _ => None,
        }
    }

    /// Acknowledges what Postgres would: everything with ssn empty, else what the sync
    /// standby flushed.
    fn settle(&mut self) {
        let upto = if self.ssn.is_empty() {
            Some(self.lsn)
        } else {
            self.sync_node().map(|n| n.flush.min(self.lsn))
        };
        if let Some(u) = upto.filter(|&u| u > START) {
            self.acked = Some(self.acked.map_or(u, |a| a.max(u)));
        }
    }

    fn observation(&self) -> Observation {
        Observation {
            standbys: self
                .nodes
                .iter()
                .filter(|n| n.connected)
                .map(|n| Standby {
                    name: n.name.into(),
                    streaming: n.caught_up,
                    flush_lsn: Some(n.flush),
                    priority: n.priority,
                    fenced: n.fenced,
                })
                .collect(),
            ssn: self.ssn.clone(),
            reported_sync: self
                .sync_node()
                .map(|n| n.name.to_owned())
                .into_iter()
                .collect(),
            primary_lsn: self.lsn,
            record: self.record.clone(),
        }
    }

    fn apply(&mut self, a: &Action) {
        match a {
            Action::SetSsn(n) => {
                assert!(n.len() <= 1, "one synchronous standby at most: {n:?}");
                self.ssn = n.clone();
            }
            Action::WriteRecord(members) => {
                assert!(!members.iter().any(|m| m == ME), "{members:?}");
                self.record = Some(SyncRecord {
                    version: RECORD_VERSION,
                    leader: ME.into(),
                    token: TOKEN,
                    members: members.clone(),
                    strict: self.mode == SynchronousMode::Strict,
                    updated_ms: 0,
                });
            }
        }
    }

    fn event(&mut self, e: &Event) {
        match *e {
            Event::Commit => self.lsn += 1,
            Event::Stream(i, n) => {
                let lsn = self.lsn;
                let node = &mut self.nodes[i];
                if node.connected {
                    node.flush = (node.flush + n).min(lsn);
                    node.caught_up |= node.flush == lsn;
                }
            }
            Event::Connect(i) => self.nodes[i].connected = true,
            Event::Disconnect(i) => {
                self.nodes[i].connected = false;
                self.nodes[i].caught_up = false;
            }
            Event::Fence(i, f) => self.nodes[i].fenced = f,
            Event::Priority(i, p) => self.nodes[i].priority = p,
            Event::Step(outcome) => {
                let obs = self.observation();
                if let Some(a) = self.m.step(Input::Observed(obs)) {
                    if !matches!(outcome, Outcome::Lost) {
                        self.apply(&a);
                    }
                    if !matches!(outcome, Outcome::Done) {
                        self.m.step(Input::Failed);
                    }
                }
            }
        }
        self.settle();
        self.check(e);
    }

    /// The invariant: every standby the record names holds every acknowledged commit.
    fn check(&self, after: &Event) {
        let Some(acked) = self.acked else { return };
        for m in self.record.iter().flat_map(|r| &r.members) {
            if m == ME {
                continue;
            }
            let flush = self
                .nodes
                .iter()
                .find(|n| n.name == m)
                .map_or(0, |n| n.flush);
            assert!(
                flush >= acked,
                "after {after:?}: the record names {m}, flushed to {flush}, but commits up to \
                 {acked} were acknowledged; ssn {:?}, record {:?}",
                self.ssn,
                self.record
            );
        }
    }

    /// Everyone connected streams to the end, and steps succeed, until nothing is left to do.
    fn calm(&mut self) {
        for _ in 0..20 {
            for i in 0..self.nodes.len() {
                self.event(&Event::Stream(i, u64::MAX / 2));
            }
            let before = (self.ssn.clone(), self.record.clone());
            self.event(&Event::Step(Outcome::Done));
            if self.m.pending().is_none() && before == (self.ssn.clone(), self.record.clone()) {
                break;
            }
        }
        let healthy: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| n.connected && !n.fenced && n.priority >= 0)
            .map(|n| n.name)
            .collect();
        let members = self.record.as_ref().map(|r| r.members.clone());
        match (healthy.first(), self.mode) {
            (Some(_), _) => {
                let [s] = self.ssn.as_slice() else {
                    panic!("a healthy standby but ssn {:?}", self.ssn)
                };
                assert!(
                    healthy.contains(&s.as_str()),
                    "{s} unhealthy; ssn {:?}",
                    self.ssn
                );
                assert_eq!(members, Some(vec![s.clone()]), "recorded");
                assert_eq!(self.record.as_ref().unwrap().token, TOKEN);
            }
            (None, SynchronousMode::Strict) => assert_eq!(self.ssn.len(), 1, "writes wait"),
            (None, _) => {
                assert!(self.ssn.is_empty() && self.m.degraded());
                assert_eq!(members, Some(vec![]));
            }
        }
    }
}

fn event() -> impl Strategy<Value = Event> {
    let i = 0..NAMES.len();
    let outcome = prop_oneof![
        6 => Just(Outcome::Done),
        1 => Just(Outcome::Lost),
        1 => Just(Outcome::Unknown),
    ];
    prop_oneof![
        4 => Just(Event::Commit),
        4 => (i.clone(), 0u64..6).prop_map(|(i, n)| Event::Stream(i, n)),
        1 => i.clone().prop_map(Event::Connect),
        1 => i.clone().prop_map(Event::Disconnect),
        1 => (i.clone(), any::<bool>()).prop_map(|(i, f)| Event::Fence(i, f)),
        1 => (i, prop_oneof![Just(-1), Just(0), Just(100)]).prop_map(|(i, p)| Event::Priority(i, p)),
        6 => outcome.prop_map(Event::Step),
    ]
}

/// A fresh leadership: standbys in any state, the previous leader's record naming any of them
/// (a forced promotion) or us, and ssn as the new primary came up with.
fn world() -> impl Strategy<Value = World> {
    let node = (
        any::<bool>(),
        90u64..=START,
        any::<bool>(),
        prop_oneof![Just(-1), Just(100)],
    );
    (
        prop_oneof![Just(SynchronousMode::On), Just(SynchronousMode::Strict)],
        proptest::collection::vec(node, NAMES.len()),
        proptest::collection::vec(any::<bool>(), NAMES.len() + 1),
        0..NAMES.len() + 2,
    )
        .prop_map(|(mode, nodes, named, ssn)| {
            let nodes: Vec<Node> = nodes
                .into_iter()
                .zip(NAMES)
                .map(|((connected, flush, fenced, priority), name)| Node {
                    name,
                    connected,
                    caught_up: connected && flush == START,
                    flush,
                    priority,
                    fenced,
                })
                .collect();
            let members: Vec<String> = std::iter::once(ME)
                .chain(NAMES)
                .zip(named)
                .filter(|(_, n)| *n)
                .map(|(m, _)| m.to_owned())
                .collect();
            // Whatever is acknowledged before the first step must reach every standby the
            // previous record names (`pg_promote` after ssn = BLOCKED guarantees it).
            let others: Vec<&String> = members.iter().filter(|m| *m != ME).collect();
            let ssn = match ssn {
                i if (1..=NAMES.len()).contains(&i)
                    && others.iter().all(|m| **m == NAMES[i - 1]) =>
                {
                    vec![NAMES[i - 1].to_owned()]
                }
                i if i > NAMES.len() && others.is_empty() => vec![],
                _ => vec![BLOCKED.to_owned()],
            };
            World {
                mode,
                lsn: START,
                acked: None,
                ssn,
                record: Some(SyncRecord {
                    version: RECORD_VERSION,
                    leader: "old".into(),
                    token: 1,
                    members,
                    strict: false,
                    updated_ms: 0,
                }),
                nodes,
                m: SyncMachine::new(mode, ME, TOKEN),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_named_standby_holds_every_acknowledged_commit(
        mut w in world(),
        events in proptest::collection::vec(event(), 0..300),
    ) {
        for e in &events {
            w.event(e);
        }
        w.calm();
    }
}

#[test]
fn the_model_catches_a_machine_that_empties_ssn_before_the_record() {
    // The check itself: a record naming s0 while ssn is emptied and commits go on.
    let mut w = World {
        mode: SynchronousMode::On,
        lsn: START,
        acked: None,
        ssn: vec!["s0".into()],
        record: None,
        nodes: vec![Node {
            name: "s0",
            connected: true,
            caught_up: true,
            flush: START,
            priority: 100,
            fenced: false,
        }],
        m: SyncMachine::new(SynchronousMode::On, ME, TOKEN),
    };
    w.apply(&Action::WriteRecord(vec!["s0".into()]));
    w.apply(&Action::SetSsn(vec![]));
    let broke = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.event(&Event::Commit)));
    assert!(broke.is_err(), "the invariant check must fail");
}
