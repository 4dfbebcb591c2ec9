//! HAProxy in front of Patroni, as Patroni's documentation deploys it: mode tcp, every node a
//! server, the one whose REST API answers `GET /primary` with 200 is the one up, and sessions to
//! a server marked down are shut. The checks are faster than the documentation's example
//! (`inter 3s fall 3 rise 2`), for both Patroni systems: a down primary is out within about
//! 1.25 s and a new one in within 250 ms, so HAProxy adds as little as it sensibly can and the
//! comparison measures Patroni itself.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;
use harp_tests::http::port_open;
use harp_tests::{ChildGuard, WorkDir, free_port};

/// The `default-server` line: health checks every 1 s while up, every 250 ms while a state
/// change is being confirmed or the server is down; down after 2 failed checks, up after 1
/// good one; on down, every session through the server is closed (the client reconnects).
pub const CHECKS: &str = "inter 1s fastinter 250ms downinter 250ms fall 2 rise 1 \
                          on-marked-down shutdown-sessions";

pub struct Haproxy {
    guard: ChildGuard,
    port: u16,
}

/// A backend: `(name, Postgres port, Patroni REST API port)`.
pub type Backend = (String, u16, u16);

impl Haproxy {
    pub fn start(dir: &WorkDir, backends: &[Backend]) -> anyhow::Result<Haproxy> {
        let port = free_port();
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, config(port, backends))?;
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db").arg("-f").arg(&cfg);
        let mut guard = ChildGuard::spawn(cmd, "haproxy", &dir.join("haproxy.log"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !port_open(port) {
            if !guard.is_running() || Instant::now() > deadline {
                bail!("haproxy did not listen on {port}\n{}", guard.log_tail(20));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Haproxy { guard, port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log_tail(&self, n: usize) -> String {
        self.guard.log_tail(n)
    }
}

fn config(port: u16, backends: &[Backend]) -> String {
    let mut s = format!(
        "global\n  maxconn 1000\n\n\
         defaults\n  mode tcp\n  retries 2\n  timeout connect 1s\n  timeout client 1h\n  \
         timeout server 1h\n  timeout check 1s\n\n\
         listen primary\n  bind 127.0.0.1:{port}\n  option httpchk GET /primary\n  \
         http-check expect status 200\n  default-server {CHECKS}\n"
    );
    for (name, pg, api) in backends {
        s += &format!("  server {name} 127.0.0.1:{pg} check port {api}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server_per_node_checked_on_its_rest_api() {
        let cfg = config(5000, &[("p1".into(), 5432, 8008)]);
        assert!(cfg.contains("option httpchk GET /primary\n"));
        assert!(cfg.ends_with("  server p1 127.0.0.1:5432 check port 8008\n"));
    }
}
