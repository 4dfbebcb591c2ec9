//! Postgres client helpers shared by the paths: connection arguments and one-shot `psql`.

use std::process::{Command, Output};

use anyhow::{Context, bail};
use harp_tests::postgres::pg_bin_dir;

/// `-h 127.0.0.1 -p <port> -U postgres postgres` (options, then the database name).
pub fn conn_args(port: u16) -> Vec<String> {
    let port = port.to_string();
    ["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "postgres"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// A finished command's stdout and stderr, for error messages and parsing.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One `psql -c <sql>` on `127.0.0.1:<port>`; its unaligned output.
pub fn psql(port: u16, sql: &str) -> anyhow::Result<String> {
    let out = Command::new(pg_bin_dir().join("psql"))
        .args(["-X", "-A", "-t", "-q", "-c", sql])
        .args(conn_args(port))
        .env("PGCONNECT_TIMEOUT", "2")
        .output()
        .context("run psql")?;
    if !out.status.success() {
        bail!(
            "psql -c {sql:?} on port {port}: {}",
            output_text(&out).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
