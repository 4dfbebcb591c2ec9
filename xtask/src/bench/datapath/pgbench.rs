//! The workloads, and running pgbench and reading its output.

use std::process::Command;

use anyhow::{Context, bail};
use harp_tests::postgres::pg_bin_dir;

use super::client::{conn_args, output_text};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `pgbench -S -c 8 -j 2`: select-only on 8 persistent connections.
    Select,
    /// `pgbench -S -C -c 4`: a new connection per transaction.
    Connect,
}

pub const WORKLOADS: [Workload; 2] = [Workload::Select, Workload::Connect];

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Select => "select",
            Workload::Connect => "connect",
        }
    }

    fn args(self, secs: u64) -> Vec<String> {
        let args: &[&str] = match self {
            Workload::Select => &["-S", "-c", "8", "-j", "2"],
            Workload::Connect => &["-S", "-C", "-c", "4"],
        };
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend(["-T".into(), secs.to_string()]);
        v
    }

    /// The command line, for the report.
    pub fn command_line(self, secs: u64) -> String {
        format!(
            "pgbench {} -h 127.0.0.1 -p <port> -U postgres postgres",
            self.args(secs).join(" ")
        )
    }

    /// The agent's target, as a minimum ratio of its tps to direct's.
    pub fn agent_target(self) -> f64 {
        match self {
            Workload::Select => 0.85,
            Workload::Connect => 0.95,
        }
    }
}

pub struct PgbenchOut {
    pub tps: f64,
    pub latency_ms: Option<f64>,
    pub connection_ms: Option<f64>,
    /// "number of transactions actually processed".
    pub transactions: Option<u64>,
}

/// `pgbench -i -q -s <scale>` on `port`.
pub fn init(port: u16, scale: u32) -> anyhow::Result<()> {
    pgbench(
        &["-i".into(), "-q".into(), "-s".into(), scale.to_string()],
        port,
    )
    .context("pgbench -i")?;
    Ok(())
}

/// One run of `w` for `secs` seconds through `port`.
pub fn run(port: u16, w: Workload, secs: u64) -> anyhow::Result<PgbenchOut> {
    let text = pgbench(&w.args(secs), port)?;
    parse(&text).with_context(|| format!("no tps in pgbench's output:\n{text}"))
}

/// `pgbench <args> <conn_args(port)>`; its output, `Err` if it fails.
fn pgbench(args: &[String], port: u16) -> anyhow::Result<String> {
    let out = Command::new(pg_bin_dir().join("pgbench"))
        .args(args)
        .args(conn_args(port))
        .output()
        .context("run pgbench")?;
    let text = output_text(&out);
    if !out.status.success() {
        bail!("pgbench failed ({}):\n{text}", out.status);
    }
    Ok(text)
}

/// tps from "tps = N (without initial connection time)" (or, for `-C`, "tps = N (including
/// reconnection times)"; older pgbench: "excluding connections establishing"), plus the average
/// latency, connection time and transaction count if printed.
fn parse(text: &str) -> Option<PgbenchOut> {
    let lines = || text.lines().map(str::trim);
    // The number after `sep` on the first line starting with `prefix`.
    let find = |prefix: &str, sep: char| {
        lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| first_word_after(l, sep))
    };
    let tps_lines: Vec<&str> = lines().filter(|l| l.starts_with("tps =")).collect();
    let preferred = [
        "without initial connection",
        "excluding",
        "including reconnection",
    ];
    let tps_line = preferred
        .iter()
        .find_map(|p| tps_lines.iter().find(|l| l.contains(p)))
        .or(tps_lines.first())?;
    Some(PgbenchOut {
        tps: first_word_after(tps_line, '=')?.parse().ok()?,
        latency_ms: find("latency average", '=').and_then(|v| v.parse().ok()),
        connection_ms: find("average connection time", '=').and_then(|v| v.parse().ok()),
        // "N" with -T, "N/M" with -t.
        transactions: find("number of transactions actually processed", ':')
            .and_then(|v| v.split('/').next()?.parse().ok()),
    })
}

/// The first whitespace-separated word after the first `sep` in `line`.
fn first_word_after(line: &str, sep: char) -> Option<&str> {
    line.split_once(sep)?.1.split_whitespace().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbench_15_output() {
        let select = "transaction type: <builtin: select only>\n\
                      number of transactions actually processed: 46870\n\
                      number of failed transactions: 0 (0.000%)\n\
                      latency average = 0.512 ms\n\
                      initial connection time = 3.201 ms\n\
                      tps = 15623.411218 (without initial connection time)\n";
        let out = parse(select).unwrap();
        assert_eq!((out.tps, out.latency_ms), (15623.411218, Some(0.512)));
        assert_eq!(out.transactions, Some(46870));
        let connect = "number of transactions actually processed: 30/40\n\
                       latency average = 4.100 ms\n\
                       average connection time = 2.050 ms\n\
                       tps = 975.3 (including reconnection times)\n";
        let out = parse(connect).unwrap();
        assert_eq!((out.tps, out.connection_ms), (975.3, Some(2.05)));
        assert_eq!(out.transactions, Some(30));
        let old = "tps = 10.0 (including connections establishing)\n\
                   tps = 12.0 (excluding connections establishing)\n";
        let out = parse(old).unwrap();
        assert_eq!((out.tps, out.transactions), (12.0, None));
        assert!(parse("no numbers").is_none());
    }
}
