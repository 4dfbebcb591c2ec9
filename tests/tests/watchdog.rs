//! systemd's watchdog, as systemd drives it: `NOTIFY_SOCKET` names a datagram socket (the test
//! binds it) and `WATCHDOG_USEC` the interval. The agent and the manager say `READY=1`, then
//! `WATCHDOG=1` from their decision loops — and nothing once those loops stop, so systemd would
//! kill them within `WatchdogSec`.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use harp_tests::{AgentSpec, ChildGuard, ManagerSpec, TestCluster, free_port, workspace_bin};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// `WatchdogSec=600ms`: a keep-alive every 300 ms.
const WATCHDOG_USEC: &str = "600000";

struct Notify {
    sock: UnixDatagram,
}

impl Notify {
    fn bind(dir: &harp_tests::WorkDir) -> (Notify, std::path::PathBuf) {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        (Notify { sock }, path)
    }

    /// Waits up to `within` for `want`; whether it came.
    fn wait_for(&self, want: &str, within: Duration) -> bool {
        let end = Instant::now() + within;
        let mut buf = [0u8; 512];
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.sock.recv(&mut buf) {
                Ok(n) if String::from_utf8_lossy(&buf[..n]).trim() == want => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }

    /// Every message received within `within`.
    fn messages(&self, within: Duration) -> Vec<String> {
        let end = Instant::now() + within;
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.sock.recv(&mut buf) {
                Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).trim().to_owned()),
                Err(_) => break,
            }
        }
        out
    }
}

/// `harp` (the agent or the manager, already spawned with the socket) says READY=1, then keeps
/// the watchdog fed; frozen, it goes silent; resumed, it feeds it again.
fn feeds_the_watchdog_from_its_loop(notify: &Notify, pid: u32, what: &str) {
    assert!(
        notify.wait_for("READY=1", LONG),
        "{what} never said READY=1"
    );
    let kicks = notify.messages(Duration::from_secs(2));
    let n = kicks.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(n >= 4, "{what}: only {n} keep-alives in 2 s: {kicks:?}");
    let pid = Pid::from_raw(pid as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let frozen = notify.messages(Duration::from_secs(1));
    kill(pid, Signal::SIGCONT).unwrap();
    assert!(
        frozen.iter().all(|m| m != "WATCHDOG=1"),
        "{what} fed the watchdog while frozen: {frozen:?}"
    );
    let again = notify.messages(Duration::from_secs(2));
    assert!(
        again.iter().any(|m| m == "WATCHDOG=1"),
        "{what} never fed the watchdog again"
    );
}

fn with_notify(mut cmd: Command, path: &std::path::Path) -> Command {
    cmd.env("NOTIFY_SOCKET", path)
        .env("WATCHDOG_USEC", WATCHDOG_USEC)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    cmd
}

#[test]
fn the_agent_feeds_systemds_watchdog_from_its_decision_loop() {
    let c = TestCluster::builder("wdagent")
        .node("n1", "dca", 100)
        .start();
    let (notify, path) = Notify::bind(c.dir());
    let spec = AgentSpec::new("a1", "dca", c.name(), c.etcd.endpoints());
    let config = c.dir().join("a1.yml");
    std::fs::write(&config, spec.render(free_port(), free_port())).unwrap();
    let mut cmd = Command::new(workspace_bin("harp-agent"));
    cmd.arg("-f").arg(&config);
    let agent = ChildGuard::spawn(
        with_notify(cmd, &path),
        "harp-agent a1",
        &c.dir().join("a1.log"),
    );
    feeds_the_watchdog_from_its_loop(&notify, agent.pid(), "harp-agent");
}

#[test]
fn the_manager_feeds_systemds_watchdog_from_its_decision_loop() {
    let mut c = TestCluster::builder("wdmgr").node("n1", "dca", 100).start();
    let dsn = c.node("n1").pg.dsn();
    let (notify, path) = Notify::bind(c.dir());
    // A second node's manager, on n1's Postgres: it competes, publishes, decides.
    let spec = ManagerSpec::new("w2", "dcb", 100, &dsn, c.name(), c.etcd.endpoints());
    let config = c.dir().join("w2.yml");
    std::fs::write(&config, spec.render(free_port())).unwrap();
    let mut cmd = Command::new(workspace_bin("harp-manager"));
    cmd.arg("-f").arg(&config);
    let mgr = ChildGuard::spawn(
        with_notify(cmd, &path),
        "harp-manager w2",
        &c.dir().join("w2.log"),
    );
    feeds_the_watchdog_from_its_loop(&notify, mgr.pid(), "harp-manager");
}
