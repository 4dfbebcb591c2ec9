//! What a leader giving up the lead while its Postgres still takes writes (a switchover, a
//! fence) waits for: every proxy of its location has stopped carrying its sessions.

use std::collections::{BTreeMap, BTreeSet};

/// The part of one proxy's status (`proxies/<p>/status`) that tells whether it still carries
/// sessions of a leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyDrain {
    pub location: String,
    /// The leadership new clients are routed under (`None`: held).
    pub token: Option<i64>,
    /// The leadership being drained, and how many of its sessions are still open.
    pub draining: Option<i64>,
    pub left: u64,
    /// The leadership its PgBouncer's server connections may still serve.
    pub pooled: Option<i64>,
}

/// A proxy's status, as far as a drain goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyState {
    Status(ProxyDrain),
    /// The key exists but cannot be read (garbage, or a newer format this build must not
    /// read): the proxy may still carry our sessions, so it never counts as drained. A
    /// switchover then waits `server_transfer_timeout` and cuts, as for a proxy that is slow.
    Unreadable,
}

/// The proxies as their statuses show them.
#[derive(Debug, Clone, Default)]
pub struct Proxies {
    status: BTreeMap<String, ProxyState>,
    /// `harpctl unmanage proxy`: such a proxy keeps its route whatever happens, so it never
    /// drains and is not waited for.
    unmanaged: BTreeSet<String>,
}

impl Proxies {
    pub fn set(&mut self, proxy: &str, state: Option<ProxyState>) {
        match state {
            Some(s) => self.status.insert(proxy.to_owned(), s),
            None => self.status.remove(proxy),
        };
    }

    pub fn set_managed(&mut self, proxy: &str, managed: bool) {
        match managed {
            true => self.unmanaged.remove(proxy),
            false => self.unmanaged.insert(proxy.to_owned()),
        };
    }

    /// The proxies of `location` that still carry sessions of leadership `token`: routing to
    /// it, draining it with sessions left, or pooling server connections to it. A proxy whose
    /// status vanished (its lease expired) carries nothing any more; one whose status cannot
    /// be read may carry anything, of any location.
    pub fn carrying(&self, location: &str, token: i64) -> Vec<&str> {
        self.status
            .iter()
            .filter(|(name, _)| !self.unmanaged.contains(*name))
            .filter(|(_, p)| match p {
                ProxyState::Status(p) => {
                    p.location == location
                        && (p.token == Some(token)
                            || (p.draining == Some(token) && p.left > 0)
                            || p.pooled == Some(token))
                }
                ProxyState::Unreadable => true,
            })
            .map(|(name, _)| name.as_str())
            .collect()
    }
}
