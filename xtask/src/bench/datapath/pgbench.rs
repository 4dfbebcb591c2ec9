//! The pgbench workloads (`select`, `connect`): running pgbench and reading its output.

use std::process::{Child, Stdio};

use anyhow::{Context, bail};
use harp_tests::cgroup::ChildCgroup;
use harp_tests::postgres::pg_bin_dir;

use super::client::{command, conn_args, output_text};
use super::workload::{Outcome, Workload};

/// The workload's pgbench options, without `-T`.
fn flags(w: Workload) -> &'static [&'static str] {
    match w {
        Workload::Select => &["-S", "-c", "8", "-j", "2"],
        Workload::Connect => &["-S", "-C", "-c", "4"],
        Workload::Bulk => unreachable!("bulk runs psql, not pgbench"),
    }
}

fn args(w: Workload, secs: u64) -> Vec<String> {
    let mut v: Vec<String> = flags(w).iter().map(|s| s.to_string()).collect();
    v.extend(["-T".into(), secs.to_string()]);
    v
}

/// The command line, for the report.
pub fn command_line(w: Workload, secs: u64) -> String {
    format!(
        "pgbench {} {}",
        args(w, secs).join(" "),
        conn_args("<port>").join(" ")
    )
}

/// `` `pgbench <flags>` ``, for the markdown's notes.
pub fn summary(w: Workload) -> String {
    format!("`pgbench {}`", flags(w).join(" "))
}

/// `pgbench -i -q -s <scale>` on `port`.
pub fn init(port: u16, scale: u32) -> anyhow::Result<()> {
    pgbench(
        &["-i".into(), "-q".into(), "-s".into(), scale.to_string()],
        port,
        None,
    )
    .context("pgbench -i")?;
    Ok(())
}

/// One run of `w` for `secs` seconds through `port`; pgbench runs inside `cgroup` if given.
pub fn run(
    port: u16,
    w: Workload,
    secs: u64,
    cgroup: Option<&ChildCgroup>,
) -> anyhow::Result<Outcome> {
    let text = pgbench(&args(w, secs), port, cgroup)?;
    parse(&text).with_context(|| format!("no tps in pgbench's output:\n{text}"))
}

/// The workload's flags with half its clients (and threads): for two pgbench sharing the machine
/// at the same time, together as many clients as one run alone.
fn half_args(w: Workload, secs: u64) -> Vec<String> {
    let mut v = args(w, secs);
    for (flag, full) in [("-c", 8u32), ("-j", 2)] {
        if let Some(i) = v.iter().position(|a| a == flag)
            && let Some(n) = v.get_mut(i + 1)
        {
            let half = n.parse::<u32>().unwrap_or(full).div_ceil(2);
            *n = half.to_string();
        }
    }
    v
}

/// [`half_args`]' command line, for the report.
pub fn half_command_line(w: Workload, secs: u64) -> String {
    format!(
        "pgbench {} {}",
        half_args(w, secs).join(" "),
        conn_args("<port>").join(" ")
    )
}

/// Two runs of `w` at the same instant, each with half the clients: `a` and `b` are (port,
/// cgroup the client runs in). Whatever the machine does meanwhile hits both alike.
pub fn run_side_by_side(
    w: Workload,
    secs: u64,
    a: (u16, Option<&ChildCgroup>),
    b: (u16, Option<&ChildCgroup>),
) -> anyhow::Result<(Outcome, Outcome)> {
    let args = half_args(w, secs);
    let first = spawn(&args, a.0, a.1)?;
    let second = spawn(&args, b.0, b.1);
    // Reap the first even when the second could not start.
    let first = finish(first);
    let (first, second) = (first?, finish(second?)?);
    let outcome =
        |text: String| parse(&text).with_context(|| format!("no tps in pgbench's output:\n{text}"));
    Ok((outcome(first)?, outcome(second)?))
}

fn spawn(args: &[String], port: u16, cgroup: Option<&ChildCgroup>) -> anyhow::Result<Child> {
    command(pg_bin_dir().join("pgbench"), cgroup)
        .args(args)
        .args(conn_args(port))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run pgbench")
}

/// Waits for a pgbench; its output, `Err` if it failed.
fn finish(child: Child) -> anyhow::Result<String> {
    let out = child.wait_with_output().context("wait for pgbench")?;
    let text = output_text(&out);
    if !out.status.success() {
        bail!("pgbench failed ({}):\n{text}", out.status);
    }
    Ok(text)
}

/// `pgbench <args> <conn_args(port)>` (inside `cgroup` if given); its output, `Err` if it fails.
fn pgbench(args: &[String], port: u16, cgroup: Option<&ChildCgroup>) -> anyhow::Result<String> {
    finish(spawn(args, port, cgroup)?)
}

/// tps from "tps = N (without initial connection time)" (or, for `-C`, "tps = N (including
/// reconnection times)"; older pgbench: "excluding connections establishing"), plus the average
/// latency, connection time and transaction count if printed.
fn parse(text: &str) -> Option<Outcome> {
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
    Some(Outcome {
        tps: first_word_after(tps_line, '=')?.parse().ok()?,
        latency_ms: find("latency average", '=').and_then(|v| v.parse().ok()),
        connection_ms: find("average connection time", '=').and_then(|v| v.parse().ok()),
        // "N" with -T, "N/M" with -t.
        transactions: find("number of transactions actually processed", ':')
            .and_then(|v| v.split('/').next()?.parse().ok()),
        bytes: None,
        mb_per_s: None,
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
    fn side_by_side_runs_halve_the_clients() {
        let a = |w| half_args(w, 4).join(" ");
        assert_eq!(a(Workload::Select), "-S -c 4 -j 1 -T 4");
        assert_eq!(a(Workload::Connect), "-S -C -c 2 -T 4");
    }

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
