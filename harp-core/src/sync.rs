//! Synchronous mode: the primary's pure decision machine for `synchronous_standby_names` (ssn)
//! and the etcd record `sync/<group>` ([`SyncRecord`]), and the promotion rule that reads it.
//!
//! # The invariant
//!
//! **At every moment, every standby the record names holds every commit the primary has
//! acknowledged.** Only a named standby may be promoted ([`eligible_for_promotion`]), so no
//! promotion loses an acknowledged commit. The record is written under the leader's token (a
//! txn on `leader/<group>`'s `create_revision`), so once the lease is vacant it is final.
//!
//! How the machine keeps it, with `FIRST 1 (s)` naming **one** standby at most — with two,
//! Postgres would switch to the second on its own when the first disconnects, and the first,
//! still named, would miss what the second acknowledged:
//! - **Add** s: set ssn to `[s]`; once Postgres reports s `sync`, note the primary's WAL
//!   position L (every commit acknowledged so far lies at or below L, every later one waits for
//!   s); once s has flushed L, s holds them all: write the record with s.
//! - While ssn stays `[s]`, nothing is acknowledged that s lacks (if s disconnects, commits
//!   wait), so s stays valid, sync-reported or not.
//! - **Remove** s (to switch, or to stop waiting): write the record without s first, then change
//!   ssn. Emptying ssn releases every waiting commit at once, so the record must be empty first.
//! - **Fresh leadership**: a record of the previous leader may name standbys our commits do not
//!   wait for; they are removed before anything else (a record naming only ourselves is harmless:
//!   we are the primary). Otherwise the first write waits for a confirmed standby (or, in `on`
//!   mode with none healthy, records the empty set). The new primary must come up with commits
//!   blocked (ssn = [`BLOCKED`] before `pg_promote`), so nothing is acknowledged before the
//!   machine's first decision.
//!
//! Liveness, not safety: a healthy current standby is kept; otherwise the best healthy one
//! (priority, then flushed position, then name) is picked. With none healthy, `on` mode records
//! the empty set, then empties ssn: writes go on **unprotected** ([`SyncMachine::degraded`]); no
//! standby may then be promoted automatically (none is named), so a failed primary leaves the
//! cluster without one until it returns or an operator forces a promotion, which may lose what
//! it acknowledged alone. `strict` mode keeps ssn on its last standby (or [`BLOCKED`]): writes
//! wait instead.

use std::collections::BTreeSet;

use crate::config::SynchronousMode;
use crate::records::SyncRecord;

/// A name no standby has: `FIRST 1 ("harp_no_standby")` makes every commit wait. Set before
/// promotion in synchronous mode, and kept in strict mode while no standby is healthy.
pub const BLOCKED: &str = "harp_no_standby";

/// A standby as the primary sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standby {
    /// Its `application_name` in `pg_stat_replication` (the node name).
    pub name: String,
    /// `pg_stat_replication.state = 'streaming'` on the primary (caught up, a sync candidate).
    pub streaming: bool,
    /// `pg_stat_replication.flush_lsn` on the primary: WAL it has flushed, in bytes. The
    /// primary's own view, not the standby's status: a status may predate the timeline.
    pub flush_lsn: Option<u64>,
    pub priority: i32,
    pub fenced: bool,
}

impl Standby {
    fn healthy(&self, me: &str) -> bool {
        self.streaming
            && !self.fenced
            && self.priority >= 0
            && self.name != me
            && self.name != BLOCKED
    }
}

/// One look at the world, taken after the previous action completed or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Every standby connected to (or known to) the primary.
    pub standbys: Vec<Standby>,
    /// `synchronous_standby_names` in effect now, as the names of `FIRST 1 (...)`.
    pub ssn: Vec<String>,
    /// `pg_stat_replication` rows with `sync_state = 'sync'` (`ReplicaFacts::sync_standbys`).
    pub reported_sync: Vec<String>,
    /// `pg_current_wal_lsn()`, read no earlier than `reported_sync`.
    pub primary_lsn: u64,
    /// `sync/<group>` as last read, at least as new as our last write (`None`: absent).
    pub record: Option<SyncRecord>,
}

/// What to do next; the machine waits for a later observation to show it done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Set `synchronous_standby_names = 'FIRST 1 (<names>)'` (`''` when empty) and reload.
    SetSsn(Vec<String>),
    /// Write `sync/<group>` = `{leader: me, token, members, strict}` in a txn guarded by our
    /// token.
    WriteRecord(Vec<String>),
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::SetSsn(n) if n.is_empty() => write!(f, "synchronous_standby_names = ''"),
            Action::SetSsn(n) => write!(
                f,
                "synchronous_standby_names = 'FIRST 1 ({})'",
                n.join(", ")
            ),
            Action::WriteRecord(m) => write!(f, "sync record members = [{}]", m.join(", ")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Observed(Observation),
    /// The last action was not carried out (or its outcome is unknown): decide again at the
    /// next observation.
    Failed,
}

/// The machine of one leadership (one token); a new leadership starts a new one.
#[derive(Debug, Clone)]
pub struct SyncMachine {
    mode: SynchronousMode,
    me: String,
    token: i64,
    /// The standby ssn names and the primary's position when Postgres first reported it sync.
    since: Option<(String, u64)>,
    /// The standby that holds every acknowledged commit while ssn stays `[it]`.
    confirmed: Option<String>,
    pending: Option<Action>,
    last: Option<Observation>,
}

impl SyncMachine {
    pub fn new(mode: SynchronousMode, me: &str, token: i64) -> Self {
        Self {
            mode,
            me: me.to_owned(),
            token,
            since: None,
            confirmed: None,
            pending: None,
            last: None,
        }
    }

    pub fn token(&self) -> i64 {
        self.token
    }

    /// `on` mode with commits waiting for nobody: what they acknowledge may be lost with the
    /// primary (and no standby is promoted automatically meanwhile).
    pub fn degraded(&self) -> bool {
        self.mode == SynchronousMode::On && self.last.as_ref().is_some_and(|o| o.ssn.is_empty())
    }

    /// Commits wait for a standby that is not reporting sync: writes block until it does.
    pub fn blocked(&self) -> bool {
        self.last.as_ref().is_some_and(|o| {
            !o.ssn.is_empty() && !o.ssn.iter().any(|s| o.reported_sync.contains(s))
        })
    }

    /// What the status should say while writes are unprotected or blocked.
    pub fn summary(&self) -> Option<String> {
        let o = self.last.as_ref()?;
        if self.degraded() {
            return Some(
                "synchronous mode degraded: no healthy standby, commits wait for none (a failed \
                 primary is not replaced automatically)"
                    .into(),
            );
        }
        match o.ssn.as_slice() {
            [s] if self.blocked() && s == BLOCKED => {
                Some("synchronous mode: no healthy standby; writes wait for one".into())
            }
            [s] if self.blocked() => Some(format!(
                "synchronous mode: writes wait for {s}, which does not report sync"
            )),
            _ => None,
        }
    }

    /// The record [`Action::WriteRecord`] asks for, to write guarded by our token.
    pub fn record(&self, members: &[String], now_ms: u64) -> SyncRecord {
        SyncRecord {
            version: crate::records::RECORD_VERSION,
            leader: self.me.clone(),
            token: self.token,
            members: members.to_vec(),
            strict: self.mode == SynchronousMode::Strict,
            updated_ms: now_ms,
        }
    }

    /// The action awaiting confirmation, if any.
    pub fn pending(&self) -> Option<&Action> {
        self.pending.as_ref()
    }

    pub fn step(&mut self, input: Input) -> Option<Action> {
        let obs = match input {
            Input::Failed => {
                self.pending = None;
                return None;
            }
            Input::Observed(o) => o,
        };
        self.track(&obs);
        let done = match &self.pending {
            None => true,
            Some(Action::SetSsn(n)) => obs.ssn == *n,
            Some(Action::WriteRecord(m)) => self.ours(&obs) && set(m) == self.members(&obs),
        };
        let next = done.then(|| self.decide(&obs)).flatten();
        if done {
            self.pending = next.clone();
        }
        self.last = Some(obs);
        next
    }

    /// Notes when the standby ssn names is first reported sync, and once it has flushed what
    /// was acknowledged before that, that it is confirmed.
    fn track(&mut self, obs: &Observation) {
        let single = match obs.ssn.as_slice() {
            [s] if s != BLOCKED => Some(s),
            _ => None,
        };
        if self.confirmed.as_ref() != single {
            self.confirmed = None;
        }
        if self.since.as_ref().map(|(s, _)| s) != single {
            self.since = None;
        }
        let Some(s) = single else { return };
        if self.confirmed.is_some() {
            return;
        }
        if self.since.is_none() && obs.reported_sync.contains(s) {
            self.since = Some((s.clone(), obs.primary_lsn));
        }
        let flushed = obs
            .standbys
            .iter()
            .find(|st| &st.name == s)
            .and_then(|st| st.flush_lsn);
        if let (Some((_, since)), Some(f)) = (&self.since, flushed)
            && obs.reported_sync.contains(s)
            && f >= *since
        {
            self.confirmed = Some(s.clone());
        }
    }

    fn ours(&self, obs: &Observation) -> bool {
        obs.record.as_ref().is_some_and(|r| r.token == self.token)
    }

    /// The record's members other than ourselves.
    fn members(&self, obs: &Observation) -> BTreeSet<String> {
        obs.record
            .iter()
            .flat_map(|r| r.members.iter())
            .filter(|m| **m != self.me)
            .cloned()
            .collect()
    }

    /// What ssn should be: the current standby while healthy, else the best healthy one, else
    /// (strict) the current one or [`BLOCKED`], (on) nobody. `off` (leaving synchronous mode):
    /// nobody, the record emptied first like `on`'s.
    fn desired(&self, obs: &Observation) -> Vec<String> {
        let healthy = |name: &str| {
            obs.standbys
                .iter()
                .any(|s| s.name == name && s.healthy(&self.me))
        };
        if self.mode == SynchronousMode::Off {
            return Vec::new();
        }
        if let [cur] = obs.ssn.as_slice()
            && healthy(cur)
        {
            return obs.ssn.clone();
        }
        let best = obs
            .standbys
            .iter()
            .filter(|s| s.healthy(&self.me))
            .max_by(|a, b| {
                (a.priority, a.flush_lsn, std::cmp::Reverse(&a.name)).cmp(&(
                    b.priority,
                    b.flush_lsn,
                    std::cmp::Reverse(&b.name),
                ))
            });
        match (best, self.mode) {
            (Some(b), _) => vec![b.name.clone()],
            (None, SynchronousMode::Strict) if obs.ssn.len() == 1 => obs.ssn.clone(),
            (None, SynchronousMode::Strict) => vec![BLOCKED.to_owned()],
            (None, _) => Vec::new(),
        }
    }

    fn decide(&self, obs: &Observation) -> Option<Action> {
        let members = self.members(obs);
        let valid: BTreeSet<String> = self.confirmed.iter().cloned().collect();
        let write = |m: BTreeSet<String>| Some(Action::WriteRecord(m.into_iter().collect()));
        // The record names only a standby that holds every acknowledged commit.
        if !members.is_subset(&valid) {
            return write(&members & &valid);
        }
        let want = self.desired(obs);
        let empty_recorded = self.ours(obs) && members.is_empty();
        if want != obs.ssn {
            // Before Postgres stops waiting for a standby, the record stops naming it; before
            // it stops waiting at all, the record says so.
            let keep: BTreeSet<String> = members
                .iter()
                .filter(|m| want.contains(m))
                .cloned()
                .collect();
            if keep != members {
                return write(keep);
            }
            if want.is_empty() && !empty_recorded {
                return write(BTreeSet::new());
            }
            return Some(Action::SetSsn(want));
        }
        if let Some(c) = &self.confirmed
            && (!self.ours(obs) || !members.contains(c))
        {
            return write(&members | &valid);
        }
        if want.is_empty() && !empty_recorded {
            return write(BTreeSet::new());
        }
        None
    }
}

fn set(v: &[String]) -> BTreeSet<String> {
    v.iter().cloned().collect()
}

/// In synchronous mode, whether `me`, a standby, may be promoted: only if the record, read
/// after the lease fell vacant (it cannot change then: writes need the holder's token), names
/// it. `Ok` says only that this rule allows it; `maximum_lag` and the other rules still apply.
///
/// - A record naming `me`: it holds every acknowledged commit.
/// - A record naming others or nobody (`on` mode ran degraded, or a switch of standby was under
///   way): refused — `me` may lack acknowledged commits; writes stay unavailable rather than
///   lost (the old primary, if it returns, or an operator's forced promotion restores them).
///   Being the record's `leader` does not help a standby: a former primary that now follows
///   another may lack what that one acknowledged.
/// - No record: the cluster never kept one (synchronous mode just turned on, before the
///   primary's first write), so nothing was promised and the asynchronous rules decide, as
///   Patroni does with an empty sync key. Deleting `sync/<group>` by hand lifts the guarantee.
pub fn eligible_for_promotion(record: Option<&SyncRecord>, me: &str) -> Result<(), String> {
    let Some(r) = record else {
        return Ok(());
    };
    if r.members.iter().any(|m| m == me) {
        return Ok(());
    }
    let mode = if r.strict { "strict " } else { "" };
    Err(match r.members.as_slice() {
        [] => format!(
            "{mode}synchronous mode: the sync record of {} (token {}) names no standby, so \
             {me} may lack acknowledged commits; not promoted automatically",
            r.leader, r.token
        ),
        m => format!(
            "{mode}synchronous mode: only {} may be promoted (sync record of {}, token {}); {me} \
             may lack acknowledged commits",
            m.join(", "),
            r.leader,
            r.token
        ),
    })
}

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;
