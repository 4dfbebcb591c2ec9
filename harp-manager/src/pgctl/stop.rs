//! Stopping the postmaster: signalled directly and watched every 10 ms (`pg_ctl stop -w`
//! looks only every 100 ms, which a switchover would wait out).

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{DEFAULT_FAST_STOP, IMMEDIATE_STOP, PgCtl, PgCtlError, STOP_POLL};

impl PgCtl {
    /// Fast shutdown, bounded by [`DEFAULT_FAST_STOP`]; see [`PgCtl::stop_within`].
    pub async fn stop(&self) -> Result<(), PgCtlError> {
        self.stop_within(DEFAULT_FAST_STOP).await
    }

    /// Stops Postgres if it runs: fast (sessions end, no new writes), then immediate if it
    /// has not stopped within `fast` (a long shutdown checkpoint must not keep a deposed
    /// primary up). Ok if it was not running. Signals the postmaster itself and watches its
    /// pid file every 10 ms: `pg_ctl stop -w` looks only every 100 ms, which a switchover
    /// would wait out.
    pub async fn stop_within(&self, fast: Duration) -> Result<(), PgCtlError> {
        let Some(pid) = self.postmaster().await? else {
            return Ok(());
        };
        if self.signal_and_wait(pid, Signal::SIGINT, fast).await? {
            return Ok(());
        }
        tracing::warn!(
            "postgres did not stop in fast mode within {fast:?}: stopping it in immediate mode"
        );
        if self
            .signal_and_wait(pid, Signal::SIGQUIT, IMMEDIATE_STOP)
            .await?
        {
            return Ok(());
        }
        Err(PgCtlError::Stop {
            stderr: format!("postmaster {pid} still runs {IMMEDIATE_STOP:?} after SIGQUIT"),
        })
    }

    /// Sends `sig` to the postmaster `pid`; true once it has exited (within `bound`).
    async fn signal_and_wait(
        &self,
        pid: Pid,
        sig: Signal,
        bound: Duration,
    ) -> Result<bool, PgCtlError> {
        match kill(pid, sig) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => {
                return Err(PgCtlError::Stop {
                    stderr: format!("cannot signal the postmaster {pid} ({sig}): {e}"),
                });
            }
        }
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            if self.postmaster().await? != Some(pid) {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(STOP_POLL).await;
        }
    }

    /// The postmaster running on this data directory: `postmaster.pid` names a live process
    /// of the data directory's owner (a stale file may name a reused pid of someone else).
    /// The postmaster removes the file as it exits, so a zombie not yet reaped counts as gone.
    /// A file without a pid (a postmaster writing it) is read again for up to a second.
    pub(super) async fn postmaster(&self) -> Result<Option<Pid>, PgCtlError> {
        let mut tries = 0;
        let pid = loop {
            let text = match std::fs::read_to_string(self.data_dir.join("postmaster.pid")) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(source) => {
                    return Err(PgCtlError::DataDir {
                        path: self.data_dir.clone(),
                        source,
                    });
                }
            };
            match text
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<i32>().ok())
            {
                Some(pid) => break pid,
                None if tries < 100 => tries += 1,
                None => return Ok(None),
            }
            tokio::time::sleep(STOP_POLL).await;
        };
        let (uid, _) = self.owner()?;
        let ours = std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid);
        Ok(ours.then(|| Pid::from_raw(pid)))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[tokio::test]
    async fn stop_signals_the_postmaster_named_in_its_pid_file_and_ignores_a_stale_one() {
        let dir = tempdir("stop");
        let ctl = PgCtl::new("/nonexistent".into(), dir.clone());
        assert!(!ctl.is_running().await.unwrap(), "no pid file: not running");
        // No process has this pid (above the kernel's pid_max).
        std::fs::write(dir.join("postmaster.pid"), "4194305\n/d\n").unwrap();
        assert!(!ctl.is_running().await.unwrap(), "a stale pid file");
        ctl.stop_within(Duration::from_secs(5)).await.unwrap();
        // A stand-in postmaster of the directory's owner, reaped as soon as it exits. It sets
        // SIGINT and SIGQUIT back to their default, as Postgres sets its own handlers: a
        // test run in the background inherits them ignored.
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import signal, time\n\
                 signal.signal(signal.SIGINT, signal.SIG_DFL)\n\
                 signal.signal(signal.SIGQUIT, signal.SIG_DFL)\n\
                 print('ready', flush=True)\n\
                 time.sleep(60)",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Signalled only once its handlers are set.
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut ready,
        )
        .unwrap();
        assert_eq!(ready.trim(), "ready");
        let pid = child.id();
        let reaper = std::thread::spawn(move || child.wait().unwrap());
        std::fs::write(dir.join("postmaster.pid"), format!("{pid}\n/d\n")).unwrap();
        assert!(ctl.is_running().await.unwrap());
        ctl.stop_within(Duration::from_secs(5)).await.unwrap();
        let status = reaper.join().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(Signal::SIGINT as i32),
            "fast shutdown"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("harp-pgctl-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
