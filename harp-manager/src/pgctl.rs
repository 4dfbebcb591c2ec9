//! Stopping and starting the local Postgres for `stop_database_when_fenced`. Both run as the
//! owner of the data directory (Postgres refuses root). Starting reuses the exact command line
//! Postgres recorded in `postmaster.opts`, so a node started with options on its command line
//! comes back the same.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use harp_core::election::Action;
use tokio::sync::mpsc;

/// Runs the stop and start requests (`Action::StopPostgres`, `Action::StartPostgres`) one at a
/// time, in the order they were asked: a start asked while a stop still runs must follow it, or
/// the stop would finish last and leave Postgres down.
pub fn serve(ctl: PgCtl) -> mpsc::UnboundedSender<Action> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Action>();
    tokio::spawn(async move {
        while let Some(action) = rx.recv().await {
            let r = match action {
                Action::StopPostgres => ctl.stop().await,
                _ => ctl.start().await,
            };
            match r {
                Ok(()) => tracing::info!("{action}: done"),
                Err(e) => tracing::error!("{action}: {e}"),
            }
        }
    });
    tx
}

pub struct PgCtl {
    pub bin_dir: PathBuf,
    pub data_dir: PathBuf,
}

impl PgCtl {
    fn owner(&self) -> Result<(u32, u32), String> {
        let m = std::fs::metadata(&self.data_dir)
            .map_err(|e| format!("cannot read {}: {e}", self.data_dir.display()))?;
        Ok((m.uid(), m.gid()))
    }

    /// `pg_ctl stop -m fast`: sessions end, the node stops taking writes.
    pub async fn stop(&self) -> Result<(), String> {
        let (uid, gid) = self.owner()?;
        let out = tokio::process::Command::new(self.bin_dir.join("pg_ctl"))
            .arg("stop")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "fast", "-w", "-t", "60"])
            .uid(uid)
            .gid(gid)
            .output()
            .await
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        match out.status.success() {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        }
    }

    /// Starts Postgres with the command line of its last start; the manager reaps it.
    pub async fn start(&self) -> Result<(), String> {
        let (uid, gid) = self.owner()?;
        let opts_path = self.data_dir.join("postmaster.opts");
        let opts = std::fs::read_to_string(&opts_path)
            .map_err(|e| format!("cannot read {}: {e}", opts_path.display()))?;
        let (program, args) =
            parse_opts(&opts).ok_or_else(|| format!("cannot parse {}", opts_path.display()))?;
        let log = log_file(&self.data_dir)?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start postgres: {e}"))?;
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Ok(())
    }
}

fn log_file(data_dir: &Path) -> Result<std::fs::File, String> {
    let path = data_dir.join("harp-postgres.log");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

/// `postmaster.opts`: the program path, then each argument in double quotes.
fn parse_opts(text: &str) -> Option<(String, Vec<String>)> {
    let text = text.trim();
    let (program, rest) = text.split_once(' ').unwrap_or((text, ""));
    let args = rest
        .split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, a)| a.to_owned())
        .collect();
    (!program.is_empty()).then(|| (program.to_owned(), args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postmaster_opts_parse_into_program_and_args() {
        let (p, a) = parse_opts(
            "/usr/lib/postgresql/15/bin/postgres \"-D\" \"/tmp/d x\" \"-c\" \"fsync=off\"\n",
        )
        .unwrap();
        assert_eq!(p, "/usr/lib/postgresql/15/bin/postgres");
        assert_eq!(a, vec!["-D", "/tmp/d x", "-c", "fsync=off"]);
        assert_eq!(parse_opts("").map(|x| x.0), None);
    }
}
