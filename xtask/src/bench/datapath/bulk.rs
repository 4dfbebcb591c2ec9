//! The `bulk` workload: one client streams large results through the path, back to back for about
//! `--secs` seconds. Each transfer is a `psql` running `COPY (…) TO STDOUT` of [`ROWS`] rows of
//! [`ROW_WIDTH`] bytes; the bench reads psql's stdout through a pipe and counts the bytes it gets,
//! and fails unless every transfer brings exactly [`BYTES_PER_TRANSFER`] and psql succeeds, so
//! that a broken path cannot look fast. Only the `read` sizes are summed: xtask runs unoptimized,
//! and even counting newlines byte by byte would make the client the bottleneck.

use std::io::{ErrorKind, Read};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use harp_tests::cgroup::ChildCgroup;

use super::client::{psql_command, psql_command_line};
use super::workload::Outcome;

/// Rows per transfer.
const ROWS: u64 = 100_000;
/// Bytes per row, before its newline.
const ROW_WIDTH: u64 = 1000;
/// What psql writes per transfer: each row and its newline.
pub const BYTES_PER_TRANSFER: u64 = ROWS * (ROW_WIDTH + 1);
/// The buffer psql's output is read into (a pipe holds 64 KiB by default).
const READ_BUF: usize = 1 << 16;

fn sql() -> String {
    format!("COPY (SELECT repeat('x', {ROW_WIDTH}) FROM generate_series(1, {ROWS})) TO STDOUT")
}

/// The command line of one transfer, for the report.
pub fn command_line() -> String {
    psql_command_line(&sql())
}

/// A short description, for the markdown's notes.
pub fn summary() -> String {
    format!(
        "`psql -c \"{}\"` back to back ({:.1} MB each, bytes counted), MB = 10⁶ bytes",
        sql(),
        BYTES_PER_TRANSFER as f64 / 1e6
    )
}

/// Transfers through `127.0.0.1:<port>` until `secs` seconds have passed (at least one); psql
/// runs inside `cgroup` if given.
pub fn run(port: u16, secs: u64, cgroup: Option<&ChildCgroup>) -> anyhow::Result<Outcome> {
    let sql = sql();
    let budget = Duration::from_secs(secs);
    let t0 = Instant::now();
    let (mut transfers, mut bytes) = (0u64, 0u64);
    while transfers == 0 || t0.elapsed() < budget {
        let n = transfers + 1;
        let b = transfer(port, &sql, cgroup).with_context(|| format!("bulk transfer {n}"))?;
        if b != BYTES_PER_TRANSFER {
            bail!("bulk transfer {n}: psql wrote {b} bytes, expected {BYTES_PER_TRANSFER}");
        }
        transfers += 1;
        bytes += b;
    }
    let wall = t0.elapsed().as_secs_f64();
    Ok(Outcome {
        tps: transfers as f64 / wall,
        latency_ms: Some(wall * 1e3 / transfers as f64),
        connection_ms: None,
        transactions: Some(transfers),
        bytes: Some(bytes),
        mb_per_s: Some(bytes as f64 / 1e6 / wall),
    })
}

/// One `psql -c <sql>`: the bytes it wrote to stdout; `Err` if it fails.
fn transfer(port: u16, sql: &str, cgroup: Option<&ChildCgroup>) -> anyhow::Result<u64> {
    let mut child = psql_command(port, sql, cgroup)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run psql")?;
    let counted = count(child.stdout.take().expect("psql's stdout is piped"));
    let out = child.wait_with_output().context("wait for psql")?;
    if !out.status.success() {
        bail!(
            "psql failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    counted.context("read psql's output")
}

/// Bytes read from `r` until EOF.
fn count(mut r: impl Read) -> std::io::Result<u64> {
    let mut buf = vec![0u8; READ_BUF];
    let mut bytes = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(bytes),
            Ok(n) => bytes += n as u64,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_bytes() {
        assert_eq!(count(&b"xxxxx\nxxx\n"[..]).unwrap(), 10);
        assert_eq!(count(&[][..]).unwrap(), 0);
        // More than one buffer's worth.
        assert_eq!(
            count(&vec![b'x'; 3 * READ_BUF + 7][..]).unwrap(),
            3 * READ_BUF as u64 + 7
        );
    }

    #[test]
    fn the_sql_and_the_expected_size_agree() {
        assert_eq!(BYTES_PER_TRANSFER, 100_100_000);
        assert!(command_line().contains(&sql()));
    }
}
