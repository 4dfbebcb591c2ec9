//! What the agent tells PgBouncer, decided from the route alone: a pure state machine that
//! tests drive step by step. PgBouncer's own commands do the work: `PAUSE` lets sessions
//! finish their transactions and holds new ones, `KILL` cuts sessions and holds new ones,
//! `RELOAD`/`RECONNECT` point it at another leader, `RESUME` lets clients go on.

use harp_core::routing::Routing;

/// Where PgBouncer sends its server connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub address: String,
    pub port: u16,
    /// The leadership: a re-elected leader at the same address is a new one.
    pub token: i64,
}

/// How PgBouncer treats clients right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Clients run queries on the target.
    Open,
    /// `PAUSE` sent for each database: sessions finish their transactions; no new ones
    /// start.
    Pausing,
    /// `PAUSE` done: no server connection is in use, clients wait.
    Paused,
    /// Sessions cut, clients wait.
    Killed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Hold new work and let open transactions finish (`PAUSE` each database, answered
    /// later).
    Pause,
    /// Point PgBouncer nowhere, cut every session now (`KILL` each database), hold new work
    /// (`PAUSE`).
    Kill,
    /// Rewrite pgbouncer.ini for this target, `RELOAD`, `RECONNECT`.
    Retarget(Target),
    /// `RESUME` everything held.
    Resume,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The leadership whose sessions PgBouncer holds (running, paused or draining).
    pub target: Option<Target>,
    /// Whether pgbouncer.ini points at `target` (else nowhere: at start, and after a failure).
    pub pointed: bool,
    pub hold: Hold,
}

impl Plan {
    /// PgBouncer as the agent starts it: no leader yet, paused.
    pub fn new() -> Self {
        Self {
            target: None,
            pointed: false,
            hold: Hold::Paused,
        }
    }

    /// After a step failed half-way: assume the worst (sessions on some server, PgBouncer
    /// pointed anywhere), so the next steps cut and re-point from scratch.
    pub fn unsure() -> Self {
        Self {
            target: None,
            pointed: false,
            hold: Hold::Open,
        }
    }

    /// The next step towards `routing`, if any. Call [`Plan::done`] once it is carried out,
    /// then ask again.
    pub fn next(&self, routing: &Routing) -> Option<Step> {
        let bound = matches!(self.hold, Hold::Open | Hold::Pausing);
        if routing.draining.is_some() {
            // A switchover: the leadership's sessions finish their transactions, new work waits.
            return (self.hold == Hold::Open).then_some(Step::Pause);
        }
        let Some(r) = &routing.route else {
            // No leader to vouch for: sessions still on a server are cut, new ones wait.
            return bound.then_some(Step::Kill);
        };
        let want = Target {
            address: r.address.clone(),
            port: r.port,
            token: r.token,
        };
        if self.target.as_ref() != Some(&want) {
            // Sessions of the old leadership never go on to run on the new one; sessions a
            // drain has paused hold no server and survive the change.
            return Some(match bound {
                true => Step::Kill,
                false => Step::Retarget(want),
            });
        }
        if !self.pointed {
            // Pointed nowhere (at start): point at the leader.
            return Some(Step::Retarget(want));
        }
        // The target is right and no drain is asked for: clients go on.
        (self.hold != Hold::Open).then_some(Step::Resume)
    }

    /// Records that `step` was carried out.
    pub fn done(&mut self, step: Step) {
        match step {
            Step::Pause => self.hold = Hold::Pausing,
            Step::Kill => {
                self.hold = Hold::Killed;
                self.target = None;
                self.pointed = false;
            }
            Step::Retarget(t) => {
                self.target = Some(t);
                self.pointed = true;
            }
            Step::Resume => self.hold = Hold::Open,
        }
    }

    /// PgBouncer answered a `PAUSE`: every server connection is back in the pool.
    pub fn paused(&mut self) {
        if self.hold == Hold::Pausing {
            self.hold = Hold::Paused;
        }
    }

    /// A server connection is in use after all (a database first used after the pause was
    /// confirmed): until it is paused too, a change must cut.
    pub fn busy(&mut self) {
        if self.hold == Hold::Paused {
            self.hold = Hold::Pausing;
        }
    }
}
