//! The peers of a location as their status records describe them, whether this node may lead,
//! and the ranking that decides who tries first when the leader lease is vacant.

use std::collections::BTreeMap;
use std::time::Instant;

use super::Election;
use crate::records::PgState;

/// What the election needs to know of a peer (from `nodes/<n>/status` and `fenced/<n>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub location: String,
    pub postgres: PgState,
    pub priority: i32,
    pub wal_lsn: Option<u64>,
}

/// This node as the ranking sees it.
pub struct Candidate<'a> {
    pub node: &'a str,
    pub location: &'a str,
    pub priority: i32,
    pub wal_lsn: Option<u64>,
    pub streaming: bool,
}

/// Every known node of the cluster except this one.
#[derive(Debug, Default, Clone)]
pub struct Peers {
    status: BTreeMap<String, Peer>,
    fenced: BTreeMap<String, ()>,
}

impl Peers {
    pub fn set_status(&mut self, node: &str, peer: Option<Peer>) {
        match peer {
            Some(p) => {
                self.status.insert(node.to_owned(), p);
            }
            None => {
                self.status.remove(node);
            }
        }
    }

    pub fn set_fenced(&mut self, node: &str, fenced: bool) {
        if fenced {
            self.fenced.insert(node.to_owned(), ());
        } else {
            self.fenced.remove(node);
        }
    }

    pub fn is_fenced(&self, node: &str) -> bool {
        self.fenced.contains_key(node)
    }

    /// `(node, priority, fenced)` of every peer with a status.
    pub fn summary(&self) -> Vec<(String, i32, bool)> {
        self.status
            .iter()
            .map(|(n, p)| (n.clone(), p.priority, self.is_fenced(n)))
            .collect()
    }

    /// Peers of `location` that look able to lead: writable Postgres (or, streaming, any
    /// running Postgres: standbys are promoted), not fenced, priority >= 0.
    fn contenders<'a>(
        &'a self,
        location: &'a str,
        streaming: bool,
    ) -> impl Iterator<Item = (&'a str, &'a Peer)> {
        self.status.iter().filter_map(move |(name, p)| {
            let up = match streaming {
                true => matches!(p.postgres, PgState::Primary | PgState::Standby),
                false => p.postgres == PgState::Primary,
            };
            let able = p.location == location && up && p.priority >= 0 && !self.is_fenced(name);
            able.then_some((name.as_str(), p))
        })
    }

    /// How many able peers outrank `me` (higher priority, then — streaming — the furthest
    /// WAL position, then the smaller name). Rank 0 tries at once; each rank below waits one
    /// step longer, so the best candidate wins without a race and a best candidate that cannot
    /// acquire costs only one step. `among`, when given, limits the contenders (the
    /// synchronous set).
    pub fn rank(&self, me: &Candidate<'_>, among: Option<&[String]>) -> usize {
        let key = |name: &'_ str, priority: i32, lsn: Option<u64>| {
            let lsn = if me.streaming { lsn.unwrap_or(0) } else { 0 };
            (priority, lsn, std::cmp::Reverse(name.to_owned()))
        };
        let mine = key(me.node, me.priority, me.wal_lsn);
        self.contenders(me.location, me.streaming)
            .filter(|(name, _)| among.is_none_or(|m| m.iter().any(|n| n == name)))
            .filter(|(name, p)| key(name, p.priority, p.wal_lsn) > mine)
            .count()
    }

    /// Why `target` cannot take over `location` in a switchover, or `Ok` if it can. `force`
    /// accepts a priority of -1; nothing makes a fenced or unhealthy node lead.
    pub fn check_target(
        &self,
        target: &str,
        location: &str,
        force: bool,
        streaming: bool,
    ) -> Result<(), String> {
        let Some(p) = self.status.get(target) else {
            return Err(format!("{target} has no status (is its manager running?)"));
        };
        if p.location != location {
            return Err(format!(
                "{target} is in location {}, not {location}",
                p.location
            ));
        }
        if self.is_fenced(target) {
            return Err(format!("{target} is fenced"));
        }
        // Streaming: the target is a standby we promote; multi-writer: a writable node.
        let wanted = match streaming {
            true => PgState::Standby,
            false => PgState::Primary,
        };
        if p.postgres != wanted {
            return Err(format!("{target}'s postgres is {:?}", p.postgres));
        }
        if p.priority < 0 && !force {
            return Err(format!(
                "{target} has priority {} (use --force)",
                p.priority
            ));
        }
        Ok(())
    }

    /// The furthest WAL position among the location's healthy nodes (including `mine`).
    pub fn max_lsn(&self, location: &str, mine: Option<u64>) -> Option<u64> {
        self.status
            .values()
            .filter(|p| p.location == location && p.postgres != PgState::Down)
            .filter_map(|p| p.wal_lsn)
            .chain(mine)
            .max()
    }
}

impl Election {
    /// Why this node may not lead whatever the operator says: priority, Postgres, lag.
    pub(super) fn unfit_reason(&self) -> Option<String> {
        let p = &self.params;
        if p.priority < 0 {
            return Some(format!("priority {} never leads", p.priority));
        }
        if p.streaming {
            return self.streaming_unfit();
        }
        match self.postgres {
            PgState::Primary => {}
            PgState::Standby => return Some("postgres is in recovery".into()),
            PgState::Down => return Some("postgres is down".into()),
            PgState::Unknown => return Some("postgres has not been checked yet".into()),
        }
        if p.maximum_lag >= 0 {
            let best = self.peers.max_lsn(&p.location, self.wal_lsn);
            let lag = best.unwrap_or(0).saturating_sub(self.wal_lsn.unwrap_or(0));
            if lag > p.maximum_lag as u64 {
                return Some(format!(
                    "{lag} bytes behind, beyond maximum_lag {}",
                    p.maximum_lag
                ));
            }
        }
        None
    }

    /// When this node will try the vacant lease, if it wants to.
    pub(super) fn candidate_at(&self) -> Option<Instant> {
        if self.is_leader() || self.acquiring || !self.session || self.holder.is_some() {
            return None;
        }
        if self.ineligible_reason().is_some() {
            return None;
        }
        let p = &self.params;
        // During a switchover only its target may take the lease, and at once.
        let rank = match &self.switchover {
            Some(s) if s.target != p.node => return None,
            Some(_) => 0,
            None => {
                let me = Candidate {
                    node: &p.node,
                    location: &p.location,
                    priority: p.priority,
                    wal_lsn: self.wal_lsn,
                    streaming: p.streaming,
                };
                // Synchronous mode: only the members may be promoted, so only they outrank.
                let among = match p.synchronous {
                    true => self.repl.sync.as_deref().filter(|m| !m.is_empty()),
                    false => None,
                };
                self.peers.rank(&me, among) as u32
            }
        };
        // Ranks count from when both are known: the vacancy and the peers (after settling).
        let at = self.vacant_since?.max(self.settle_until?) + p.candidate_step * rank;
        Some(self.retry_at.map_or(at, |r| r.max(at)))
    }
}
