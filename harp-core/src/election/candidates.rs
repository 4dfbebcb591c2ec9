//! The peers of a location as their status records describe them, and the ranking that decides
//! who tries first when the leader lease is vacant.

use std::collections::BTreeMap;

use crate::records::PgState;

/// What the election needs to know of a peer (from `nodes/<n>/status` and `fenced/<n>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub location: String,
    pub postgres: PgState,
    pub priority: i32,
    pub wal_lsn: Option<u64>,
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

    /// Peers of `location` that look able to lead: writable Postgres, not fenced, priority >= 0.
    fn contenders<'a>(&'a self, location: &'a str) -> impl Iterator<Item = (&'a str, &'a Peer)> {
        self.status.iter().filter_map(move |(name, p)| {
            let able = p.location == location
                && p.postgres == PgState::Primary
                && p.priority >= 0
                && !self.is_fenced(name);
            able.then_some((name.as_str(), p))
        })
    }

    /// How many able peers outrank `me` (higher priority, then the smaller name). Rank 0 tries
    /// at once; each rank below waits one step longer, so the best candidate wins without a race
    /// and a best candidate that cannot acquire costs only one step.
    pub fn rank(&self, me: &str, location: &str, priority: i32) -> usize {
        self.contenders(location)
            .filter(|(name, p)| {
                (p.priority, std::cmp::Reverse(*name)) > (priority, std::cmp::Reverse(me))
            })
            .count()
    }

    /// Why `target` cannot take over `location` in a switchover, or `Ok` if it can. `force`
    /// accepts a priority of -1; nothing makes a fenced or unhealthy node lead.
    pub fn check_target(&self, target: &str, location: &str, force: bool) -> Result<(), String> {
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
        if p.postgres != PgState::Primary {
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
