//! PgBouncer's guard: a small process of its own (this binary, `--pgbouncer-guard <pid>`) that
//! stops PgBouncer once the agent's authority has lapsed while PgBouncer may still serve a
//! leadership. PgBouncer runs on while the agent is frozen or hung, and the agent's own fail
//! closed needs the agent to run; the guard does not.
//!
//! The agent feeds it, one line at a time, the `CLOCK_BOOTTIME` nanosecond by which PgBouncer
//! must have stopped serving (`never` while it serves no leadership or the proxy is unmanaged).
//! The agent renews that deadline at every acknowledged keep-alive; a frozen agent does not, and
//! the guard SIGKILLs PgBouncer when it passes. The deadline is the agent's trust deadline plus
//! half the safety margin: a live agent cuts PgBouncer's sessions by then, and other agents route
//! a new leader only once this agent's status lease expires, a full margin after it.

use std::io::BufRead;
use std::process::{ExitCode, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use harp_core::election::safety_margin;
use harp_core::routing::Authority;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};

use super::process::die_with_parent;
use crate::steering::boot_ns;

/// The guard's half of the pipe.
pub struct Guard {
    _child: Child,
    stdin: ChildStdin,
    sent: Option<u64>,
    /// The last deadline PgBouncer serves under: kept while the authority is lapsed, so a
    /// live agent has its half margin to cut.
    last_until: Option<u64>,
    margin: Duration,
}

impl Guard {
    /// Starts the guard of the PgBouncer process `pid`.
    pub fn start(pid: u32, lease_ttl: Duration) -> anyhow::Result<Guard> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.arg("--pgbouncer-guard")
            .arg(pid.to_string())
            .stdin(Stdio::piped())
            .env_remove("NOTIFY_SOCKET")
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        Ok(Guard {
            _child: child,
            stdin,
            sent: None,
            last_until: None,
            margin: safety_margin(lease_ttl) / 2,
        })
    }

    /// Tells the guard what PgBouncer may do now: with `serving`, act until `authority` lapses
    /// (plus half the margin); without, nothing to guard.
    pub async fn feed(&mut self, authority: Authority, serving: bool) -> std::io::Result<()> {
        if let Authority::Until(t) = authority {
            self.last_until = Some(boot_ns(t + self.margin));
        }
        let deadline = match (serving, authority) {
            (false, _) | (true, Authority::Unbounded) => u64::MAX,
            (true, _) => self.last_until.unwrap_or(0),
        };
        if self.sent == Some(deadline) {
            return Ok(());
        }
        self.sent = Some(deadline);
        let line = match deadline {
            u64::MAX => "never\n".to_owned(),
            ns => format!("{ns}\n"),
        };
        self.stdin.write_all(line.as_bytes()).await?;
        self.stdin.flush().await
    }
}

/// The guard process: reads deadlines from stdin, SIGKILLs `pid` when the latest one passes.
/// Ends quietly when the agent closes the pipe (it exited; PgBouncer ends with it).
pub fn run(pid: i32) -> ExitCode {
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut deadline = u64::MAX;
    loop {
        let wait = match deadline {
            u64::MAX => Duration::from_secs(3600),
            ns => Duration::from_nanos(ns.saturating_sub(now_ns())),
        };
        match rx.recv_timeout(wait) {
            Ok(line) if line == "never" => deadline = u64::MAX,
            Ok(line) => match line.parse() {
                Ok(ns) => deadline = ns,
                Err(_) => tracing::error!("PgBouncer guard: ignoring {line:?}"),
            },
            Err(mpsc::RecvTimeoutError::Timeout) if deadline != u64::MAX => {
                if now_ns() < deadline {
                    continue;
                }
                tracing::error!(
                    pgbouncer = pid,
                    "the agent did not renew its authority in time (frozen or hung): stopping \
                     PgBouncer so no client reaches a leader it may no longer serve"
                );
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                return ExitCode::SUCCESS;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return ExitCode::SUCCESS,
        }
    }
}

fn now_ns() -> u64 {
    boot_ns(std::time::Instant::now())
}
