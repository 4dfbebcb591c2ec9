//! Leader tenures from the observer's record, and every accepted write tied to the tenure
//! (fencing token) of its node that covers its server time.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::lab::history::{History, Outcome};

/// One node's uninterrupted hold of its location's lease: `[start_ms, end_ms)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tenure {
    pub location: String,
    pub node: String,
    pub token: Option<i64>,
    pub start_ms: f64,
    /// `None`: still leader when the run ended.
    pub end_ms: Option<f64>,
}

impl Tenure {
    fn covers(&self, t: f64) -> bool {
        self.start_ms <= t && self.end_ms.is_none_or(|end| t < end)
    }

    /// How far `t` lies outside the tenure (0 inside).
    fn distance(&self, t: f64) -> f64 {
        if t < self.start_ms {
            self.start_ms - t
        } else {
            self.end_ms.map_or(0.0, |end| (t - end).max(0.0))
        }
    }
}

/// The tenures of every location, in time order per location.
pub fn tenures(h: &History) -> Vec<Tenure> {
    let mut by_location: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for change in &h.leaders {
        by_location
            .entry(&change.location)
            .or_default()
            .push(change);
    }
    let mut out = Vec::new();
    for (location, mut changes) in by_location {
        changes.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
        let mut current: Option<Tenure> = None;
        for change in changes {
            if let Some(cur) = &current
                && change.node.as_deref() == Some(cur.node.as_str())
                && change.token == cur.token
            {
                continue; // the observer saw the same lease again (e.g. a watch restart)
            }
            if let Some(mut done) = current.take() {
                done.end_ms = Some(change.at_ms);
                out.push(done);
            }
            current = change.node.as_ref().map(|node| Tenure {
                location: location.to_owned(),
                node: node.clone(),
                token: change.token,
                start_ms: change.at_ms,
                end_ms: None,
            });
        }
        out.extend(current);
    }
    out
}

/// A write some node accepted: acknowledged to its client, found in the node's table, or both.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accepted {
    pub client: String,
    pub seq: u64,
    pub node: String,
    pub location: String,
    pub server_ms: f64,
    /// The token of the node's tenure covering `server_ms`, else of its nearest tenure.
    pub token: Option<i64>,
    pub acked: bool,
    pub in_rows: bool,
    /// How far outside the node's tenures it was accepted: 0 inside one, `None` if the node
    /// never led.
    pub stale_ms: Option<f64>,
}

/// Every accepted write, sorted by server time. An `Unknown` write that landed is accepted
/// (it is in a table); an acked write missing from the tables still was (it is lost as well).
pub fn accepted(h: &History, tenures: &[Tenure]) -> Vec<Accepted> {
    let mut by_key: BTreeMap<(&str, &str, u64), Accepted> = BTreeMap::new();
    let mut client_location: BTreeMap<(&str, u64), &str> = BTreeMap::new();
    for w in &h.writes {
        client_location.insert((&w.client, w.seq), &w.location);
        let (Outcome::Ok, Some(node), Some(server_ms)) = (&w.outcome, &w.node, w.server_ms) else {
            continue;
        };
        by_key.insert(
            (node, &w.client, w.seq),
            new_accepted(&w.client, w.seq, node, &w.location, server_ms, true),
        );
    }
    for r in &h.rows {
        let fallback = client_location
            .get(&(r.client.as_str(), r.seq))
            .copied()
            .unwrap_or("?");
        by_key
            .entry((&r.node, &r.client, r.seq))
            .or_insert_with(|| {
                new_accepted(&r.client, r.seq, &r.node, fallback, r.server_ms, false)
            })
            .in_rows = true;
    }
    let mut out: Vec<Accepted> = by_key.into_values().collect();
    for a in &mut out {
        assign(a, tenures);
    }
    out.sort_by(|a, b| a.server_ms.total_cmp(&b.server_ms));
    out
}

fn new_accepted(client: &str, seq: u64, node: &str, loc: &str, at: f64, acked: bool) -> Accepted {
    Accepted {
        client: client.to_owned(),
        seq,
        node: node.to_owned(),
        location: loc.to_owned(),
        server_ms: at,
        token: None,
        acked,
        in_rows: false,
        stale_ms: None,
    }
}

fn assign(a: &mut Accepted, tenures: &[Tenure]) {
    let own = tenures.iter().filter(|t| t.node == a.node);
    let nearest = own
        .clone()
        .find(|t| t.covers(a.server_ms))
        .or_else(|| own.min_by(|x, y| x.distance(a.server_ms).total_cmp(&y.distance(a.server_ms))));
    if let Some(t) = nearest {
        // A node leads in its own location only; the client's location is a fallback.
        a.location = t.location.clone();
        a.token = t.token;
        a.stale_ms = Some(t.distance(a.server_ms));
    }
}
