//! Turning a stopped (or stoppable) node into a standby of the primary: with a rewind when its
//! WAL went past the primary's fork point, or by a rebuild from a base backup.

use std::path::Path;

use super::datadir::{self, ControlData, Fork};
use super::{Standby, StandbyError, connect};
use crate::pgconn::PgTarget;

/// What [`Standby::rejoin`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejoined {
    /// Whether pg_rewind rewrote the data directory (false: it could follow as it was).
    pub rewound: bool,
}

/// The primary's timeline and its history, after a checkpoint that put the timeline into its
/// control file (pg_rewind reads it there; right after a promotion it is still the old one).
struct Source {
    timeline: u32,
    history: Vec<Fork>,
}

impl Standby {
    /// Makes this node a standby of the primary at `host:port`: stops Postgres if it runs
    /// (fast, then immediate), rewinds the data directory if its WAL diverged from the
    /// primary's (`pg_rewind`, which in Postgres 13+ first runs crash recovery on a node that
    /// was not shut down cleanly), keeps the node's own config files, writes `standby.signal`
    /// and `primary_conninfo`, and starts it. A node that cannot be rewound (neither
    /// `wal_log_hints` nor data checksums, or WAL the rewind needs is gone) stays stopped:
    /// [`StandbyError::RewindImpossible`], then [`Standby::reinit`].
    pub async fn rejoin(&self, host: &str, port: u16) -> Result<Rejoined, StandbyError> {
        let conninfo = self.primary_conninfo(host, port);
        self.stop().await?;
        let owner = self.ctl.owner()?;
        let dir = self.ctl.data_dir.clone();
        let mut cd = self.controldata().await?;
        if cd.state != "shut down" && cd.state != "shut down in recovery" {
            tracing::info!("the data directory was not shut down cleanly: crash recovery first");
            self.ctl.recover_single_user(self.timeouts.rewind).await?;
            cd = self.controldata().await?;
        }
        let source = self.source(host, port).await?;
        let was_standby = dir.join("standby.signal").exists();
        let rewound = if datadir::follows_without_rewind(&cd, source.timeline, &source.history) {
            false
        } else if !cd.rewindable() {
            // A standby that went past the fork point is refused by Postgres itself ("not a
            // child of this server's history") and shows as not streaming: nothing is lost.
            if !(was_standby && cd.state == "shut down in recovery") {
                return Err(StandbyError::RewindImpossible {
                    reason: format!(
                        "its WAL (timeline {}, {}) may have diverged from the primary's \
                         (timeline {}) and it has neither wal_log_hints = on nor data checksums",
                        cd.timeline, cd.state, source.timeline
                    ),
                });
            }
            false
        } else {
            let local = datadir::read_local_files(&dir);
            let rewound = self.pg_rewind(host, port).await?;
            datadir::restore_local_files(&dir, &local, owner)?;
            rewound
        };
        datadir::configure_standby(&dir, &conninfo.to_libpq(), owner)?;
        self.ctl.start_and_wait(self.timeouts.start).await?;
        tracing::info!(
            rewound,
            "rejoined as a standby of {host}:{port} ({conninfo})"
        );
        Ok(Rejoined { rewound })
    }

    /// Rebuilds this node from the primary at `host:port`: stops Postgres, moves the data
    /// directory's contents aside (beside it, as `<dir>.harp-old`), takes
    /// `pg_basebackup -X stream -c fast`, puts back the node's own config files, configures it
    /// as a standby and starts it; the old contents are removed once it runs. A failed backup
    /// puts the old contents back. Tablespaces are not handled (their directories would not
    /// be empty).
    pub async fn reinit(&self, host: &str, port: u16) -> Result<(), StandbyError> {
        let conninfo = self.primary_conninfo(host, port);
        self.stop().await?;
        let owner = self.ctl.owner()?;
        let dir = self.ctl.data_dir.clone();
        let aside = datadir::aside_dir(&dir);
        let local = if aside.exists() {
            // An earlier rebuild was interrupted: `aside` holds the original, `dir` a copy
            // that may be partial.
            tracing::warn!(
                "{} is left from an earlier rebuild: keeping it",
                aside.display()
            );
            datadir::clear_dir(&dir)?;
            datadir::read_local_files(&aside)
        } else {
            let local = datadir::read_local_files(&dir);
            if !datadir::move_contents(&dir, &aside)? {
                tracing::warn!(
                    "{} is on another file system: the old data directory was removed, not kept",
                    aside.display()
                );
            }
            local
        };
        if let Err(e) = self.pg_basebackup(host, port).await {
            datadir::clear_dir(&dir)?;
            datadir::move_contents(&aside, &dir)?;
            let _ = std::fs::remove_dir(&aside);
            return Err(e);
        }
        datadir::restore_local_files(&dir, &local, owner)?;
        datadir::configure_standby(&dir, &conninfo.to_libpq(), owner)?;
        self.ctl.start_and_wait(self.timeouts.start).await?;
        if let Err(e) = std::fs::remove_dir_all(&aside) {
            tracing::warn!(
                "cannot remove the old data directory {}: {e}",
                aside.display()
            );
        }
        tracing::info!("rebuilt from {host}:{port}; streaming as a standby ({conninfo})");
        Ok(())
    }

    /// `pg_controldata` of the stopped data directory.
    pub async fn controldata(&self) -> Result<ControlData, StandbyError> {
        let mut cmd = self.ctl.command("pg_controldata")?;
        cmd.arg("-D").arg(&self.ctl.data_dir);
        let out = self
            .program("pg_controldata", cmd, self.timeouts.query, "")
            .await?;
        let text = String::from_utf8_lossy(&out.stdout);
        ControlData::parse(&text).ok_or_else(|| StandbyError::Program {
            program: "pg_controldata",
            status: "unexpected output".into(),
            output: text.lines().take(5).collect::<Vec<_>>().join("; "),
            fix: "",
        })
    }

    /// The primary's timeline and history; checkpoints first if its control file still
    /// names an older timeline (it does right after a promotion, and pg_rewind would then
    /// wrongly see nothing to rewind).
    async fn source(&self, host: &str, port: u16) -> Result<Source, StandbyError> {
        let target = PgTarget::new(&self.primary_conninfo(host, port))?.with_dbname("postgres");
        let client = connect(&target, "the primary", self.timeouts.query).await?;
        let sql = |step: &'static str| {
            move |source| StandbyError::Sql {
                step,
                whom: "the primary",
                source,
            }
        };
        let bounded = |step: &'static str| StandbyError::Timeout {
            step,
            after: self.timeouts.query,
            fix: "the primary is overloaded or hung",
        };
        let q = "SELECT pg_is_in_recovery(), (SELECT timeline_id FROM pg_control_checkpoint()), \
                 CASE WHEN pg_is_in_recovery() THEN 0 ELSE \
                 ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END";
        let row = tokio::time::timeout(self.timeouts.query, client.query_one(q, &[]))
            .await
            .map_err(|_| bounded("reading the primary's timeline"))?
            .map_err(sql("reading the primary's timeline"))?;
        if row.get::<_, bool>(0) {
            return Err(StandbyError::SourceNotPrimary {
                at: format!("{host}:{port}"),
            });
        }
        let (checkpoint_tli, timeline): (i32, i32) = (row.get(1), row.get(2));
        if checkpoint_tli != timeline {
            tokio::time::timeout(self.timeouts.rewind, client.batch_execute("CHECKPOINT"))
                .await
                .map_err(|_| bounded("CHECKPOINT"))?
                .map_err(sql("CHECKPOINT"))?;
        }
        let mut history = Vec::new();
        if timeline > 1 {
            let q = "SELECT pg_read_file('pg_wal/' || lpad(upper(to_hex($1::int)), 8, '0') \
                     || '.history')";
            let text: String =
                tokio::time::timeout(self.timeouts.query, client.query_one(q, &[&timeline]))
                    .await
                    .map_err(|_| bounded("reading the primary's timeline history"))?
                    .map_err(sql("reading the primary's timeline history"))?
                    .get(0);
            history = datadir::parse_history(&text);
        }
        Ok(Source {
            timeline: timeline as u32,
            history,
        })
    }

    /// Runs pg_rewind from the primary; whether it rewrote anything.
    async fn pg_rewind(&self, host: &str, port: u16) -> Result<bool, StandbyError> {
        let mut source = self.own.for_server(host, port, "pg_rewind");
        source.set("dbname", "postgres");
        let (conninfo, password) = source.split_password();
        let mut cmd = self.ctl.command("pg_rewind")?;
        cmd.arg(format!("--target-pgdata={}", self.ctl.data_dir.display()))
            .arg(format!("--source-server={conninfo}"));
        if let Some(pw) = password {
            cmd.env("PGPASSWORD", pw);
        }
        tracing::info!("pg_rewind from {source}");
        let fix = "; the data directory may be unusable: rebuild it with `harpctl reinit <node>`";
        let out = match self
            .program("pg_rewind", cmd, self.timeouts.rewind, fix)
            .await
        {
            Ok(out) => out,
            Err(StandbyError::Program { output, .. }) if rewind_impossible(&output) => {
                return Err(StandbyError::RewindImpossible { reason: output });
            }
            Err(e) => return Err(e),
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(!text.contains("no rewind required"))
    }

    async fn pg_basebackup(&self, host: &str, port: u16) -> Result<(), StandbyError> {
        // Its own application_name: a walsender named like this node could count as a
        // synchronous standby while it only copies.
        let source = self.own.for_server(host, port, "pg_basebackup");
        let (conninfo, password) = source.split_password();
        let mut cmd = self.ctl.command("pg_basebackup")?;
        cmd.arg("-D")
            .arg(&self.ctl.data_dir)
            .args(["-X", "stream", "-c", "fast", "-w", "-d"])
            .arg(conninfo);
        if let Some(pw) = password {
            cmd.env("PGPASSWORD", pw);
        }
        tracing::info!("pg_basebackup from {source}");
        let fix = "; the old data directory was put back";
        self.program("pg_basebackup", cmd, self.timeouts.basebackup, fix)
            .await
            .map(|_| ())
    }

    /// Runs a program to completion within `bound` (killed otherwise).
    async fn program(
        &self,
        program: &'static str,
        mut cmd: tokio::process::Command,
        bound: std::time::Duration,
        fix: &'static str,
    ) -> Result<std::process::Output, StandbyError> {
        let out = tokio::time::timeout(bound, cmd.output())
            .await
            .map_err(|_| StandbyError::Timeout {
                step: program,
                after: bound,
                fix: "it was killed; see the Postgres log and retry",
            })?
            .map_err(|source| StandbyError::Io {
                action: "run",
                path: Path::new(program).to_path_buf(),
                source,
            })?;
        if out.status.success() {
            return Ok(out);
        }
        let output = error_lines(&String::from_utf8_lossy(&out.stderr));
        Err(StandbyError::Program {
            program,
            status: out.status.to_string(),
            output,
            fix,
        })
    }
}

/// pg_rewind's messages when the target cannot be rewound at all (as opposed to a failure
/// part-way): no hint bits logged, or the WAL back to the fork point is gone.
fn rewind_impossible(output: &str) -> bool {
    [
        "wal_log_hints",
        "data checksums",
        "could not find previous WAL record",
        "could not find common ancestor",
    ]
    .iter()
    .any(|m| output.contains(m))
        || (output.contains("could not open file") && output.contains("pg_wal"))
}

/// The lines of a program's output that say what went wrong (Postgres's own LOG lines, which
/// pg_rewind passes on, are noise there); the last lines if none says.
fn error_lines(output: &str) -> String {
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error") || l.contains("fatal") || l.contains("could not")
        })
        .collect();
    match errors.is_empty() {
        true => lines[lines.len().saturating_sub(3)..].join("; "),
        false => errors.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_rewind_failures_that_no_retry_fixes_are_told_apart() {
        let hints = "pg_rewind: error: target server needs to use either data checksums or \
                     \"wal_log_hints = on\"";
        assert!(rewind_impossible(hints));
        let wal = "pg_rewind: error: could not open file \"/d/pg_wal/000000010000000000000003\": \
                   No such file or directory";
        assert!(rewind_impossible(wal));
        assert!(!rewind_impossible(
            "pg_rewind: error: could not connect to server"
        ));
    }

    #[test]
    fn program_errors_keep_the_error_lines() {
        let out = "pg_rewind: executing postgres\n2026 LOG:  redo starts\n\
                   pg_rewind: error: target server needs wal_log_hints\n";
        assert_eq!(
            error_lines(out),
            "pg_rewind: error: target server needs wal_log_hints"
        );
        assert_eq!(error_lines("a\nb\nc\nd\n"), "b; c; d");
    }
}
