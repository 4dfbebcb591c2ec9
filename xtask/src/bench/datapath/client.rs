//! Postgres client helpers shared by the paths and workloads: connection arguments, `psql`, and
//! running a client inside the kernel path's cgroup.

use std::ffi::OsStr;
use std::process::{Command, Output};

use anyhow::{Context, bail};
use harp_tests::cgroup::ChildCgroup;
use harp_tests::postgres::pg_bin_dir;

/// psql's options: no psqlrc, unaligned tuples only, no status lines.
const PSQL_OPTS: [&str; 4] = ["-X", "-A", "-t", "-q"];

/// `-h 127.0.0.1 -p <port> -U postgres postgres` (options, then the database name). `port` is a
/// number, or a placeholder such as `"<port>"` for command lines shown in the report.
pub fn conn_args(port: impl ToString) -> Vec<String> {
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

/// `program`, run inside `cgroup` (so that the kernel steers its connects) if given.
pub fn command(program: impl AsRef<OsStr>, cgroup: Option<&ChildCgroup>) -> Command {
    match cgroup {
        Some(cg) => cg.command(program),
        None => Command::new(program),
    }
}

/// `psql -c <sql>` on `127.0.0.1:<port>` (inside `cgroup` if given), not yet started.
pub fn psql_command(port: u16, sql: &str, cgroup: Option<&ChildCgroup>) -> Command {
    let mut cmd = command(pg_bin_dir().join("psql"), cgroup);
    cmd.args(PSQL_OPTS)
        .arg("-c")
        .arg(sql)
        .args(conn_args(port))
        .env("PGCONNECT_TIMEOUT", "2");
    cmd
}

/// [`psql_command`]'s command line, for the report.
pub fn psql_command_line(sql: &str) -> String {
    format!(
        "psql {} -c \"{sql}\" {}",
        PSQL_OPTS.join(" "),
        conn_args("<port>").join(" ")
    )
}

/// One `psql -c <sql>` on `127.0.0.1:<port>`; its unaligned output.
pub fn psql(port: u16, sql: &str) -> anyhow::Result<String> {
    let out = psql_command(port, sql, None).output().context("run psql")?;
    if !out.status.success() {
        bail!(
            "psql -c {sql:?} on port {port}: {}",
            output_text(&out).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
