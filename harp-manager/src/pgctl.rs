//! Stopping and starting the local Postgres (`stop_database_when_fenced`, and the streaming
//! operations in [`crate::standby`]). Every program runs as the owner of the data directory
//! (Postgres refuses root). Starting reuses the exact command line Postgres recorded in
//! `postmaster.opts`, so a node started with options on its command line comes back the same.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use harp_core::election::Action;

use tokio::sync::mpsc;

mod stop;

/// How long a fast shutdown may take before an immediate one (the fenced-node stop).
pub const DEFAULT_FAST_STOP: Duration = Duration::from_secs(60);
/// How long an immediate shutdown may take: it only signals the processes to quit.
pub(crate) const IMMEDIATE_STOP: Duration = Duration::from_secs(30);
/// How often a stop looks whether the postmaster has exited.
pub(crate) const STOP_POLL: Duration = Duration::from_millis(10);

/// Runs the stop and start requests (`Action::StopPostgres`, `Action::StartPostgres`) one at a
/// time, in the order they were asked: a start asked while a stop still runs must follow it, or
/// the stop would finish last and leave Postgres down.
pub fn serve(ctl: PgCtl) -> mpsc::UnboundedSender<Action> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Action>();
    tokio::spawn(async move {
        while let Some(action) = rx.recv().await {
            let _turn = ctl.turn().await;
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

#[derive(Debug, thiserror::Error)]
pub enum PgCtlError {
    #[error("cannot read the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot stop Postgres: {stderr}")]
    Stop { stderr: String },
    #[error(
        "{path}: {source}; Postgres must have been started once from this data directory \
         (its command line is taken from there)"
    )]
    Opts {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse {path}")]
    OptsParse { path: PathBuf },
    #[error("cannot open the Postgres log {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("crash recovery in single-user mode failed ({status}): {output}")]
    Recovery { status: String, output: String },
    #[error("crash recovery in single-user mode did not finish within {after:?}")]
    RecoveryTimeout { after: Duration },
    #[error("Postgres exited while starting ({status}); see its log {log}")]
    Exited { status: String, log: PathBuf },
    #[error(
        "Postgres did not accept connections within {after:?}; it is left running (a standby \
         may still be replaying WAL); see its log {log}"
    )]
    NotReady { after: Duration, log: PathBuf },
}

#[derive(Debug, Clone)]
pub struct PgCtl {
    pub bin_dir: PathBuf,
    pub data_dir: PathBuf,
    /// Held by every operation that stops, starts or changes the node's Postgres (clones share
    /// it), so that a fence stop and a rejoin's start cannot interleave and leave Postgres in
    /// the state the earlier one wanted.
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl PgCtl {
    pub fn new(bin_dir: PathBuf, data_dir: PathBuf) -> PgCtl {
        PgCtl {
            bin_dir,
            data_dir,
            turn: Arc::default(),
        }
    }

    /// Waits for this node's Postgres to be free of other operations; it stays ours until the
    /// guard drops. [`PgCtl::stop_within`] does not wait for it: a deposed primary's stop must
    /// cut in.
    pub async fn turn(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.turn.clone().lock_owned().await
    }

    /// uid and gid of the data directory's owner, whom every Postgres program runs as.
    pub fn owner(&self) -> Result<(u32, u32), PgCtlError> {
        let m = std::fs::metadata(&self.data_dir).map_err(|source| PgCtlError::DataDir {
            path: self.data_dir.clone(),
            source,
        })?;
        Ok((m.uid(), m.gid()))
    }

    /// `bin_dir/<program>` as the owner, in the data directory (a program run as another user
    /// from a directory it cannot read fails in odd ways), killed if the future is dropped.
    pub fn command(&self, program: &str) -> Result<tokio::process::Command, PgCtlError> {
        let (uid, gid) = self.owner()?;
        let mut cmd = tokio::process::Command::new(self.bin_dir.join(program));
        // The C locale: callers read these programs' messages.
        cmd.uid(uid)
            .gid(gid)
            .current_dir(&self.data_dir)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        Ok(cmd)
    }

    /// Where a Postgres this manager starts logs.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("harp-postgres.log")
    }

    /// Whether a postmaster runs on the data directory.
    pub async fn is_running(&self) -> Result<bool, PgCtlError> {
        Ok(self.postmaster().await?.is_some())
    }

    /// Starts Postgres with the command line of its last start; the manager reaps it.
    pub async fn start(&self) -> Result<(), PgCtlError> {
        let child = self.spawn()?;
        tokio::spawn(async move {
            let mut child = child;
            let _ = child.wait().await;
        });
        Ok(())
    }

    /// [`PgCtl::start`], then waits up to `timeout` until Postgres accepts connections
    /// (`postmaster.pid` says `ready` or `standby`); an error if it exits meanwhile.
    pub async fn start_and_wait(&self, timeout: Duration) -> Result<(), PgCtlError> {
        let mut child = self.spawn()?;
        let pid = child.id();
        let deadline = tokio::time::Instant::now() + timeout;
        let outcome = loop {
            if let Ok(Some(st)) = child.try_wait() {
                break Err(PgCtlError::Exited {
                    status: st.to_string(),
                    log: self.log_path(),
                });
            }
            if pid.is_some() && pid_file_status(&self.data_dir, pid) {
                break Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                break Err(PgCtlError::NotReady {
                    after: timeout,
                    log: self.log_path(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        outcome
    }

    /// Runs crash recovery on a data directory that was not shut down cleanly, in single-user
    /// mode with the command line of the last start. pg_rewind would run it too, but without
    /// that command line: settings given there (`-c wal_log_hints=on`) would be missing, and
    /// the control file it leaves would say the node cannot be rewound.
    pub async fn recover_single_user(&self, bound: Duration) -> Result<(), PgCtlError> {
        let (program, args) = self.command_line()?;
        let (uid, gid) = self.owner()?;
        let run = tokio::process::Command::new(&program)
            .arg("--single")
            .args(args)
            .arg("template1")
            .uid(uid)
            .gid(gid)
            .current_dir(&self.data_dir)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(bound, run)
            .await
            .map_err(|_| PgCtlError::RecoveryTimeout { after: bound })?
            .map_err(|source| PgCtlError::Spawn {
                program: program.into(),
                source,
            })?;
        if out.status.success() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&out.stderr);
        Err(PgCtlError::Recovery {
            status: out.status.to_string(),
            output: text.lines().rev().take(5).collect::<Vec<_>>().join("; "),
        })
    }

    /// The program and arguments of the last start (`postmaster.opts`); without that file (a
    /// data dir Postgres never ran from) `postgres -D <dir>`.
    fn command_line(&self) -> Result<(String, Vec<String>), PgCtlError> {
        let opts_path = self.data_dir.join("postmaster.opts");
        match std::fs::read_to_string(&opts_path) {
            Ok(opts) => parse_opts(&opts).ok_or(PgCtlError::OptsParse { path: opts_path }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((
                self.bin_dir.join("postgres").display().to_string(),
                vec!["-D".to_owned(), self.data_dir.display().to_string()],
            )),
            Err(source) => Err(PgCtlError::Opts {
                path: opts_path,
                source,
            }),
        }
    }

    /// The postmaster, as a child of this process.
    fn spawn(&self) -> Result<tokio::process::Child, PgCtlError> {
        let (program, args) = self.command_line()?;
        let log = self.open_log()?;
        let (uid, gid) = self.owner()?;
        let log_err = log.try_clone().map_err(|source| PgCtlError::Log {
            path: self.log_path(),
            source,
        })?;
        // Not killed on drop: Postgres outlives whatever task started it.
        tokio::process::Command::new(&program)
            .args(args)
            .uid(uid)
            .gid(gid)
            .current_dir(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| PgCtlError::Spawn {
                program: program.into(),
                source,
            })
    }

    fn open_log(&self) -> Result<std::fs::File, PgCtlError> {
        let path = self.log_path();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| PgCtlError::Log {
                path: path.clone(),
                source,
            })?;
        // Created as us (maybe root) inside the owner's directory: hand it to the owner.
        let (uid, gid) = self.owner()?;
        let _ = std::os::unix::fs::fchown(&file, Some(uid), Some(gid));
        Ok(file)
    }
}

/// Whether `postmaster.pid` belongs to `pid` and says the postmaster accepts connections
/// (line 8: `ready`, or `standby` for a standby without hot_standby).
fn pid_file_status(data_dir: &Path, pid: Option<u32>) -> bool {
    let Ok(text) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return false;
    };
    let lines: Vec<&str> = text.lines().collect();
    let owner = lines.first().and_then(|l| l.trim().parse::<u32>().ok());
    owner == pid && matches!(lines.get(7).map(|s| s.trim()), Some("ready" | "standby"))
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

    #[test]
    fn only_a_ready_pid_file_of_our_postmaster_counts() {
        let dir = std::env::temp_dir().join(format!("harp-pgctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |pid: u32, status: &str| {
            let text = format!("{pid}\n/d\n1\n5432\n/tmp\n127.0.0.1\n  1  2\n{status}\n");
            std::fs::write(dir.join("postmaster.pid"), text).unwrap();
        };
        file(42, "starting");
        assert!(!pid_file_status(&dir, Some(42)));
        file(42, "ready   ");
        assert!(pid_file_status(&dir, Some(42)));
        assert!(!pid_file_status(&dir, Some(43)));
        file(42, "standby ");
        assert!(pid_file_status(&dir, Some(42)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn clones_take_turns_on_the_same_postgres() {
        let a = PgCtl::new("/b".into(), "/d".into());
        let b = a.clone();
        let held = a.turn().await;
        let waited = tokio::time::timeout(Duration::from_millis(50), b.turn()).await;
        assert!(waited.is_err(), "a clone must wait for the holder");
        drop(held);
        let _turn = tokio::time::timeout(Duration::from_secs(1), b.turn())
            .await
            .expect("free once the holder is done");
    }
}
