//! The bench's handle on one client process ([`super::client`]): commands on its stdin, JSON
//! answers on its stdout, every wait bounded. Dropping it closes stdin (the client ends its
//! sessions and exits) and kills the process if it has not exited soon after.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use harp_tests::cgroup::ChildCgroup;
use serde_json::Value;

pub struct ClientProc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl ClientProc {
    /// Starts `exe bench scale-client --port <port>`, inside `cgroup` if given (so that the
    /// kernel steers its connects).
    pub fn spawn(exe: &Path, port: u16, cgroup: Option<&ChildCgroup>) -> anyhow::Result<Self> {
        let mut cmd = match cgroup {
            Some(cg) => cg.command(exe),
            None => Command::new(exe),
        };
        cmd.args(["bench", "scale-client", "--port", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", exe.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("client stdout")?;
        let (tx, lines) = channel();
        // A thread reads the answers so that every wait for one can be bounded.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(ClientProc {
            child,
            stdin,
            lines,
        })
    }

    /// Sends `command` and waits up to `timeout` for its answer.
    pub fn ask(&mut self, command: &str, timeout: Duration) -> anyhow::Result<Value> {
        let stdin = self.stdin.as_mut().context("client stdin closed")?;
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("send {command:?} to the client"))?;
        let line = match self.lines.recv_timeout(timeout) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => {
                bail!("the client did not answer {command:?} within {timeout:?}")
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten();
                bail!("the client exited while answering {command:?} ({status:?})")
            }
        };
        serde_json::from_str(&line).with_context(|| format!("client answer {line:?}"))
    }
}

impl Drop for ClientProc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
