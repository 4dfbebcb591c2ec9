//! The role checks load balancers and orchestrators script against, with Patroni's endpoint
//! names and meanings: a pure decision from the manager's [`StatusView`] and the query to a
//! verdict (200 or 503) and the reason, so every case is unit-tested without a server.
//!
//! | endpoint | 200 when |
//! | --- | --- |
//! | `/primary`, `/read-write` | this node holds the lease and its Postgres takes writes under it (`writable`), and is not fenced; in a multi-writer cluster: its location's lead master |
//! | `/leader` | this node holds the lease, writable or not yet (a promotion under way) |
//! | `/replica[?lag=N]` | Postgres is a standby streaming from its upstream, not fenced, not the lease holder being promoted; with `lag`, its lag is known and at most `N` |
//! | `/read-only[?lag=N]` | the `/primary` case, or a standby serving reads (streaming or not; `lag` bounds it as above); in a multi-writer cluster also any other node whose Postgres is up |
//!
//! A fenced node answers 503 to every check but `/leader`: fencing takes it out of service (a
//! fenced leader is already leaving, agents route nobody to it), so load balancers drain it
//! too. A primary that does not hold the lease in a streaming cluster (deposed, or not yet
//! demoted) is never routed, not even for reads: it may hold writes the new primary lacks.

use crate::http::StatusView;
use harp_core::records::PgState;

/// Which question the endpoint asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Primary,
    Leader,
    Replica,
    ReadOnly,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Primary => "primary",
            Check::Leader => "leader",
            Check::Replica => "replica",
            Check::ReadOnly => "read-only",
        }
    }

    fn takes_lag(self) -> bool {
        matches!(self, Check::Replica | Check::ReadOnly)
    }
}

/// The query string's parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// `lag=<bytes>`: the most replication lag a standby may have to pass.
    pub lag: Option<u64>,
}

impl Query {
    /// Unknown parameters are refused: a misspelt `lag` must not pass every standby.
    pub fn parse<'a>(
        check: Check,
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Query, String> {
        let mut q = Query::default();
        for (key, value) in params {
            match key {
                "lag" if check.takes_lag() => {
                    q.lag = Some(parse_bytes(value).map_err(|e| format!("lag: {e}"))?);
                }
                _ if check.takes_lag() => {
                    return Err(format!(
                        "unknown parameter `{key}`; /{} takes `lag`",
                        check.as_str()
                    ));
                }
                _ => {
                    return Err(format!(
                        "unknown parameter `{key}`; /{} takes none",
                        check.as_str()
                    ));
                }
            }
        }
        Ok(q)
    }
}

/// A byte count as Patroni and Postgres write it: `1048576`, `1024kB`, `16MB`, `1GB` (units of
/// 1024, case-insensitive, `B`/`kB`/`MB`/`GB`/`TB`, with or without a space).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let bad = || format!("`{text}` is not a byte count (e.g. 1048576, 1024kB, 16MB, 1GB)");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        "tb" => 1 << 40,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).ok_or_else(bad)
}

/// The answer: `ok` is 200, else 503; `why` says which rule decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub why: String,
}

fn yes(why: impl Into<String>) -> Verdict {
    Verdict {
        ok: true,
        why: why.into(),
    }
}

fn no(why: impl Into<String>) -> Verdict {
    Verdict {
        ok: false,
        why: why.into(),
    }
}

fn pg_str(pg: PgState) -> &'static str {
    match pg {
        PgState::Primary => "primary",
        PgState::Standby => "standby",
        PgState::Down => "down",
        PgState::Unknown => "not checked yet",
    }
}

pub fn decide(check: Check, v: &StatusView, q: &Query) -> Verdict {
    if v.fenced && check != Check::Leader {
        return no("fenced: out of service (harpctl unfence to bring it back)");
    }
    match check {
        Check::Primary => primary(v),
        Check::Leader => match v.token {
            Some(t) if v.writable => yes(format!("holds the lease (token {t}); writable")),
            Some(t) => yes(format!("holds the lease (token {t}); not writable yet")),
            None => no(not_holder(v)),
        },
        Check::Replica => replica(v, q),
        Check::ReadOnly => read_only(v, q),
    }
}

fn primary(v: &StatusView) -> Verdict {
    if v.writable {
        let token = v.token.map_or(String::new(), |t| format!(" (token {t})"));
        return yes(format!("writable primary holding the lease{token}"));
    }
    match v.token {
        Some(_) if v.postgres == PgState::Standby => {
            no("holds the lease; Postgres is still a standby being promoted")
        }
        Some(_) => no(format!(
            "holds the lease, but Postgres is {}",
            pg_str(v.postgres)
        )),
        None => no(not_holder(v)),
    }
}

fn not_holder(v: &StatusView) -> String {
    match (&v.leader, v.leader_token) {
        (Some(l), Some(t)) => format!("not the lease holder: {l} leads (token {t})"),
        (Some(l), None) => format!("not the lease holder: {l} leads"),
        (None, _) => "not the lease holder: the lease is vacant".to_owned(),
    }
}

/// A standby's reads within the asked lag bound, if one was asked.
fn lag_bound(v: &StatusView, q: &Query) -> Result<String, String> {
    match (q.lag, v.replica.lag) {
        (None, Some(l)) => Ok(format!("lag {l} bytes")),
        (None, None) => Ok("lag unknown".to_owned()),
        (Some(max), None) => Err(format!("replication lag unknown (bound {max} bytes)")),
        (Some(max), Some(l)) if l > max => Err(format!("lag {l} bytes, above the bound {max}")),
        (Some(max), Some(l)) => Ok(format!("lag {l} bytes, within {max}")),
    }
}

fn upstream(v: &StatusView) -> &str {
    v.replica
        .upstream
        .as_deref()
        .unwrap_or("an unknown upstream")
}

fn replica(v: &StatusView, q: &Query) -> Verdict {
    if v.postgres != PgState::Standby {
        return no(format!("Postgres is {}, not a standby", pg_str(v.postgres)));
    }
    if v.token.is_some() {
        return no("holds the lease: being promoted to primary");
    }
    if !v.replica.streaming {
        return no(format!("standby not streaming from {}", upstream(v)));
    }
    match lag_bound(v, q) {
        Ok(lag) => yes(format!("streaming standby of {}; {lag}", upstream(v))),
        Err(why) => no(why),
    }
}

fn read_only(v: &StatusView, q: &Query) -> Verdict {
    if v.writable {
        return primary(v);
    }
    match v.postgres {
        PgState::Standby => {
            let streaming = if v.replica.streaming {
                format!("streaming from {}", upstream(v))
            } else {
                "not streaming".to_owned()
            };
            match lag_bound(v, q) {
                Ok(lag) => yes(format!("standby serving reads ({streaming}); {lag}")),
                Err(why) => no(why),
            }
        }
        PgState::Primary if v.replication == "streaming" => {
            no("Postgres is a primary without the lease (deposed or not yet demoted): never routed")
        }
        PgState::Primary => yes("primary serving reads (not the lead master)"),
        pg @ (PgState::Down | PgState::Unknown) => no(format!("Postgres is {}", pg_str(pg))),
    }
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
