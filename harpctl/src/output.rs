//! Rendering: kubectl-style tables for people (uppercase headers, columns aligned with spaces,
//! no borders, `<none>` for unknown values), JSON and YAML of the view structs for scripts.

use std::fmt::Display;

use clap::ValueEnum;
use serde::Serialize;

use crate::view::{ClusterView, LeaderView, LocationView, NodeView, ProxyView, Role, pg_state_str};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// What a table shows for an unknown or absent value.
pub const NONE: &str = "<none>";
/// Spaces between columns (kubectl's tabwriter padding).
const GAP: usize = 3;

/// A table of rows under uppercase headers.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    /// Columns padded to their widest cell; no trailing spaces.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}", width = w + GAP));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A view that prints as a table row.
pub trait Tabular {
    const HEADERS: &'static [&'static str];
    fn cells(&self) -> Vec<String>;
    /// Columns after [`Self::HEADERS`] that a table shows only when a row has something to say
    /// in them (streaming mode's), so the tables of clusters without them stay as they were.
    const OPTIONAL: &'static [&'static str] = &[];
    /// One cell per [`Self::OPTIONAL`] header, and whether it calls for its column.
    fn optional_cells(&self) -> Vec<(String, bool)> {
        Vec::new()
    }
}

/// Many objects: a table, or a JSON/YAML list.
pub fn render_list<T: Tabular + Serialize>(items: &[T], format: Format) -> String {
    match format {
        Format::Table => {
            let optional: Vec<Vec<(String, bool)>> =
                items.iter().map(Tabular::optional_cells).collect();
            let shown: Vec<usize> = (0..T::OPTIONAL.len())
                .filter(|&i| optional.iter().any(|row| row[i].1))
                .collect();
            let mut headers = T::HEADERS.to_vec();
            headers.extend(shown.iter().map(|&i| T::OPTIONAL[i]));
            let mut t = Table::new(&headers);
            for (item, extra) in items.iter().zip(optional) {
                let mut cells = item.cells();
                cells.extend(shown.iter().map(|&i| extra[i].0.clone()));
                t.row(cells);
            }
            t.render()
        }
        _ => render_data(&items, format),
    }
}

/// One object: a one-row table, or a JSON/YAML object.
pub fn render_one<T: Tabular + Serialize>(item: &T, format: Format) -> String {
    match format {
        Format::Table => render_list(std::slice::from_ref(item), format),
        _ => render_data(item, format),
    }
}

/// JSON (pretty, newline-terminated) or YAML; a table format falls back to JSON.
pub fn render_data<T: Serialize + ?Sized>(value: &T, format: Format) -> String {
    match format {
        Format::Yaml => serde_yaml::to_string(value).expect("views serialize to YAML"),
        Format::Json | Format::Table => {
            let mut s = serde_json::to_string_pretty(value).expect("views serialize to JSON");
            s.push('\n');
            s
        }
    }
}

/// `get cluster`: the cluster line, then one row per location.
pub fn render_cluster(view: &ClusterView, format: Format) -> String {
    if format != Format::Table {
        return render_data(view, format);
    }
    let mut head = Table::new(&["CLUSTER", "MANAGED", "LOCATIONS"]);
    head.row(vec![
        view.name.clone(),
        view.managed.to_string(),
        view.locations.len().to_string(),
    ]);
    let mut out = head.render();
    if !view.locations.is_empty() {
        out.push('\n');
        out.push_str(&render_list(&view.locations, format));
    }
    let mut set = Table::new(&["SCOPE", "DIRECTIVE", "VALUE"]);
    let scoped = std::iter::once(("cluster".to_owned(), &view.directives)).chain(
        view.locations
            .iter()
            .map(|l| (format!("location {}", l.location), &l.directives)),
    );
    let mut any = false;
    for (scope, directives) in scoped {
        for (k, v) in directives {
            set.row(vec![scope.clone(), k.clone(), v.clone()]);
            any = true;
        }
    }
    if any {
        out.push('\n');
        out.push_str(&set.render());
    }
    out
}

fn opt<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| NONE.to_owned(), |v| v.to_string())
}

/// A WAL position as Postgres prints it: `16/B374D848`.
pub fn lsn(bytes: u64) -> String {
    format!("{:X}/{:X}", bytes >> 32, bytes & 0xFFFF_FFFF)
}

/// A byte count in Postgres' units, without spaces (table cells split on them): `512B`,
/// `64kB`, `16MB`, `2GB`; whole units, rounded down.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut unit = 0;
    let mut v = n;
    while v >= 10 * 1024 && unit + 1 < UNITS.len() {
        v /= 1024;
        unit += 1;
    }
    format!("{v}{}", UNITS[unit])
}

/// kubectl's short ages: `45s`, `7m12s`, `3h`, `2d4h`.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    match s {
        0..120 => format!("{s}s"),
        120..600 => format!("{m}m{}s", s % 60),
        600..10_800 => format!("{m}m"),
        10_800..28_800 => format!("{h}h{}m", m % 60),
        28_800..172_800 => format!("{h}h"),
        172_800..691_200 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

impl Tabular for NodeView {
    const HEADERS: &'static [&'static str] = &[
        "NAME", "LOCATION", "ROLE", "POSTGRES", "PRIORITY", "FENCED", "MANAGED", "WAL_LSN", "AGE",
    ];
    fn cells(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            opt(self.location.as_deref()),
            Role::as_str(self.role).to_owned(),
            opt(self.postgres.map(pg_state_str)),
            opt(self.priority),
            self.fenced.to_string(),
            self.managed.to_string(),
            opt(self.wal_lsn.map(lsn)),
            opt(self.age_ms.map(age)),
        ]
    }
    const OPTIONAL: &'static [&'static str] =
        &["TIMELINE", "UPSTREAM", "STREAMING", "LAG", "SYNC", "REASON"];
    fn optional_cells(&self) -> Vec<(String, bool)> {
        let r = &self.replication;
        let sync = (!r.sync_standbys.is_empty()).then(|| r.sync_standbys.join(","));
        vec![
            (opt(r.timeline), r.timeline.is_some()),
            (opt(r.upstream.as_deref()), r.upstream.is_some()),
            (opt(r.streaming), r.streaming.is_some()),
            (opt(r.lag.map(bytes)), r.lag.is_some()),
            (opt(sync.as_deref()), sync.is_some()),
            (opt(self.reason.as_deref()), self.reason.is_some()),
        ]
    }
}

/// A state cell for leaders: shown (as a column) only when one is being promoted.
fn leader_state(promoting: bool, leaving: bool) -> Vec<(String, bool)> {
    let state = match (promoting, leaving) {
        (true, _) => "promoting",
        (false, true) => "leaving",
        (false, false) => "routable",
    };
    vec![(state.to_owned(), promoting)]
}

impl Tabular for ProxyView {
    const HEADERS: &'static [&'static str] = &[
        "NAME", "LOCATION", "MODE", "LEADER", "TOKEN", "SESSIONS", "HELD", "DRAINING", "MANAGED",
        "AGE",
    ];
    fn cells(&self) -> Vec<String> {
        // During a switchover: the sessions the drain still waits for.
        let draining = opt(self.draining.map(|_| self.drain_left));
        vec![
            self.name.clone(),
            self.location.clone(),
            self.mode.clone(),
            opt(self.leader.as_deref()),
            opt(self.token),
            self.sessions.to_string(),
            self.held.to_string(),
            draining,
            self.managed.to_string(),
            age(self.age_ms),
        ]
    }
}

impl Tabular for LeaderView {
    const HEADERS: &'static [&'static str] = &["LOCATION", "NODE", "ADDRESS", "TOKEN"];
    fn cells(&self) -> Vec<String> {
        let address = match (&self.address, self.port) {
            (Some(a), Some(p)) => Some(format!("{a}:{p}")),
            _ => None,
        };
        vec![
            self.location.clone(),
            opt(self.node.as_deref()),
            opt(address),
            opt(self.token),
        ]
    }
    const OPTIONAL: &'static [&'static str] = &["STATE"];
    fn optional_cells(&self) -> Vec<(String, bool)> {
        leader_state(self.promoting, self.leaving)
    }
}

impl Tabular for LocationView {
    const HEADERS: &'static [&'static str] = &["LOCATION", "LEADER", "TOKEN", "NODES", "PROXIES"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.location.clone(),
            opt(self.leader.as_deref()),
            opt(self.token),
            self.nodes.to_string(),
            self.proxies.to_string(),
        ]
    }
    const OPTIONAL: &'static [&'static str] = &["STATE"];
    fn optional_cells(&self) -> Vec<(String, bool)> {
        leader_state(self.promoting, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let mut t = Table::new(&["NAME", "LOCATION"]);
        t.row(vec!["node-one".into(), "dca".into()]);
        t.row(vec!["n2".into(), NONE.into()]);
        assert_eq!(
            t.render(),
            "NAME       LOCATION\nnode-one   dca\nn2         <none>\n"
        );
    }

    #[test]
    fn ages_and_lsns_read_like_kubectl_and_postgres() {
        assert_eq!(age(999), "0s");
        assert_eq!(age(45_000), "45s");
        assert_eq!(age(432_000), "7m12s");
        assert_eq!(age(3_600_000), "60m");
        assert_eq!(age(4 * 3_600_000 + 60_000), "4h1m");
        assert_eq!(age(3 * 86_400_000), "3d0h");
        assert_eq!(age(30 * 86_400_000), "30d");
        assert_eq!(lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(lsn(0x0300_0148), "0/3000148");
        assert_eq!(bytes(0), "0B");
        assert_eq!(bytes(10_239), "10239B");
        assert_eq!(bytes(16 << 20), "16MB");
        assert_eq!(bytes(3 << 40), "3072GB");
        assert_eq!(bytes(u64::MAX), "16777215TB");
    }

    #[test]
    fn leader_rows_show_none_for_a_vacant_location() {
        let v = LeaderView {
            location: "dcb".into(),
            node: None,
            address: None,
            port: None,
            token: None,
            handover_to: None,
            promoting: false,
            leaving: false,
        };
        assert_eq!(
            render_one(&v, Format::Table),
            "LOCATION   NODE     ADDRESS   TOKEN\ndcb        <none>   <none>    <none>\n"
        );
        let json: serde_json::Value = serde_json::from_str(&render_one(&v, Format::Json)).unwrap();
        assert!(json["node"].is_null());
        let yaml = render_one(&v, Format::Yaml);
        assert!(yaml.contains("location: dcb\nnode: null\n"), "{yaml}");
    }
}
