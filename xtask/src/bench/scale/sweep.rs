//! One path's sweep: for each count, grow the client's sessions to it, measure a window idle,
//! then a window active.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use harp_tests::cgroup::ChildCgroup;
use serde_json::Value;

use super::clients::ClientProc;
use super::procs::{self, Tree};
use super::report::Step;
use super::{MIN_AVAILABLE_MB, Params};
use crate::bench::datapath::client::psql;
use crate::bench::datapath::peers::Peer;
use crate::bench::datapath::{PathKind, round_to};

/// Sessions opened per `grow` command: memory is checked between chunks.
const CHUNK: u32 = 250;
/// Bound on one chunk's opening.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause after growing, before the idle window (handshake buffers settle).
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Out {
    pub steps: Vec<Step>,
    pub notes: Vec<String>,
}

pub struct Sweep<'a> {
    pub path: PathKind,
    pub peer: &'a Peer,
    /// Holds the path's process (see [`procs::account_in`]).
    pub acct: &'a ChildCgroup,
    pub exe: &'a Path,
    pub pg_port: u16,
    pub postmaster: u32,
    pub params: &'a Params,
}

/// The path's process at one instant: its CPU seconds so far and its memory.
struct Sample {
    cpu_s: f64,
    tree: Tree,
}

impl Sweep<'_> {
    fn sample(&self) -> anyhow::Result<Option<Sample>> {
        let Some(pid) = self.peer.pid() else {
            return Ok(None);
        };
        Ok(Some(Sample {
            cpu_s: procs::cgroup_cpu_s(self.acct)?,
            tree: procs::tree(pid)?,
        }))
    }

    pub fn run(&self, out: &mut Out) -> anyhow::Result<()> {
        let pid = self.peer.pid();
        // The path's process before any client: the base of its memory per connection.
        let base = pid.map(procs::tree).transpose()?;
        let base_pss = pid.map(procs::tree_pss_kb);
        let mut client = ClientProc::spawn(self.exe, self.peer.port(), self.peer.cgroup())?;
        let mut open = 0;
        for &clients in &self.params.counts {
            let (connected, stop) = self.grow(&mut client, open, clients)?;
            std::thread::sleep(SETTLE);
            let mut idle = self.step("idle", clients, connected);
            let (t0, w0) = (self.sample()?, Instant::now());
            std::thread::sleep(Duration::from_secs(self.params.secs));
            let t1 = self.sample()?;
            self.fill(&mut idle, t0.as_ref(), t1.as_ref(), w0.elapsed(), None);
            if let (Some(b), Some(t)) = (&base, &t1) {
                idle.rss_per_conn_bytes = per_conn(t.tree.rss_kb, b.rss_kb, connected);
            }
            if let (Some(pid), Some(b)) = (pid, base_pss) {
                let pss = procs::tree_pss_kb(pid);
                idle.proxy_pss_kb = Some(pss);
                idle.pss_per_conn_bytes = per_conn(pss, b, connected);
            }
            idle.postgres_pss_mb = Some(round_to(
                procs::tree_pss_kb(self.postmaster) as f64 / 1024.0,
                1,
            ));
            idle.note = stop.clone();
            println!("{}", idle.summary());
            out.steps.push(idle);

            // Each client at the interval, unless the total would pass max_qps.
            let interval_ms = self
                .params
                .interval_ms
                .max((u64::from(connected) * 1000).div_ceil(u64::from(self.params.max_qps)));
            let mut act = self.step("active", clients, connected);
            let (t0, w0) = (self.sample()?, Instant::now());
            let ans = client.ask(
                &format!("active {} {interval_ms}", self.params.secs),
                Duration::from_secs(self.params.secs + 60),
            )?;
            let t1 = self.sample()?;
            self.fill(&mut act, t0.as_ref(), t1.as_ref(), w0.elapsed(), Some(&ans));
            act.interval_ms = Some(interval_ms);
            act.offered_qps = Some(round_to(connected as f64 * 1000.0 / interval_ms as f64, 1));
            println!("{}", act.summary());
            open = act.connected;
            let lost = open < connected;
            out.steps.push(act);
            if lost {
                let msg = format!(
                    "{} {clients}: sessions failed while active ({})",
                    self.path.name(),
                    ans["error"].as_str().unwrap_or("?")
                );
                println!("NOTE: {msg}; larger counts skipped for this path");
                out.notes.push(msg);
                break;
            }
            if let Some(s) = stop {
                println!("NOTE: {}: {s}; larger counts skipped", self.path.name());
                out.notes.push(format!("{}: {s}", self.path.name()));
                break;
            }
        }
        Ok(())
    }

    fn step(&self, mode: &'static str, clients: u32, connected: u32) -> Step {
        Step::new(self.path, mode, clients, connected)
    }

    /// Opens sessions from `open` up to `clients` in chunks; the count reached and why it
    /// stopped short.
    fn grow(
        &self,
        client: &mut ClientProc,
        open: u32,
        clients: u32,
    ) -> anyhow::Result<(u32, Option<String>)> {
        let before = self.peer.kernel_counters()?;
        let mut connected = open;
        let mut stop = None;
        let t0 = Instant::now();
        while connected < clients {
            let target = clients.min(connected + CHUNK);
            // A chunk costs well under the floor (a backend and a proxy's share are a few MB),
            // so checking between chunks keeps the host out of swap and the OOM killer.
            let avail = procs::mem_available_mb()?;
            if avail < MIN_AVAILABLE_MB {
                stop = Some(format!(
                    "stopped at {connected} sessions: MemAvailable {avail} MB, under the \
                     {MIN_AVAILABLE_MB} MB floor"
                ));
                break;
            }
            let ans = client.ask(&format!("grow {target}"), CHUNK_TIMEOUT)?;
            connected = count(&ans, "connected")?;
            if count(&ans, "failed")? > 0 {
                stop = Some(format!(
                    "stopped at {connected} sessions: {} failed to open: {}",
                    ans["failed"],
                    ans["error"].as_str().unwrap_or("?")
                ));
                break;
            }
        }
        println!(
            "{}: {connected} session(s) open ({:.1} s)",
            self.path.name(),
            t0.elapsed().as_secs_f64()
        );
        if let (Some(b), Some(a)) = (before, self.peer.kernel_counters()?)
            && self.path == PathKind::AgentKernel
        {
            // Every new session must have been steered, none relayed by the agent.
            if a.steered < b.steered + u64::from(connected - open) || a.sessions > 0 {
                bail!(
                    "agent-kernel: sessions not steered: kernel.counters.steered {} → {}, {} \
                     session(s) in the userspace proxy",
                    b.steered,
                    a.steered,
                    a.sessions
                );
            }
        }
        Ok((connected, stop))
    }

    /// Fills the CPU, RSS and Postgres columns of `s` from the window [t0, t1] and, if active,
    /// the client's answer.
    fn fill(
        &self,
        s: &mut Step,
        t0: Option<&Sample>,
        t1: Option<&Sample>,
        wall: Duration,
        ans: Option<&Value>,
    ) {
        let wall = wall.as_secs_f64();
        s.window_s = round_to(wall, 2);
        let cpu_s = t0.zip(t1).map(|(a, b)| (b.cpu_s - a.cpu_s).max(0.0));
        s.proxy_cpu_pct = cpu_s.map(|c| round_to(c / wall * 100.0, 2));
        s.proxy_rss_kb = t1.map(|t| t.tree.rss_kb);
        s.proxy_processes = t1.map(|t| t.tree.processes);
        s.postgres_backends = backends(self.pg_port).ok();
        s.mem_available_mb = procs::mem_available_mb().ok();
        if let Some(a) = ans {
            let queries = a["queries"].as_u64().unwrap_or(0);
            let secs = a["secs"].as_f64().unwrap_or(wall);
            s.connected = a["connected"].as_u64().unwrap_or(0) as u32;
            s.qps = Some(round_to(queries as f64 / secs.max(1e-9), 1));
            s.latency_p50_ms = a["p50_ms"].as_f64().map(|v| round_to(v, 3));
            s.latency_p99_ms = a["p99_ms"].as_f64().map(|v| round_to(v, 3));
            s.query_errors = a["errors"].as_u64();
            s.proxy_us_per_query = cpu_s
                .filter(|_| queries > 0)
                .map(|c| round_to(c * 1e6 / queries as f64, 1));
        }
    }
}

/// (RSS now − RSS before any client) / sessions, in bytes.
fn per_conn(rss_kb: u64, base_kb: u64, connected: u32) -> Option<f64> {
    (connected > 0).then(|| {
        round_to(
            (rss_kb as f64 - base_kb as f64) * 1024.0 / f64::from(connected),
            0,
        )
    })
}

fn count(ans: &Value, key: &str) -> anyhow::Result<u32> {
    ans[key]
        .as_u64()
        .map(|n| n as u32)
        .with_context(|| format!("client answer without {key}: {ans}"))
}

/// Client backends of Postgres other than the asking one (the manager's included).
pub fn backends(pg_port: u16) -> anyhow::Result<u64> {
    psql(
        pg_port,
        "SELECT count(*) FROM pg_stat_activity \
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )?
    .parse()
    .context("count backends")
}

/// Waits until Postgres is back to `idle` client backends (the last path's sessions ended).
pub fn wait_drained(pg_port: u16, idle: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // While thousands of backends exit, the postmaster may not answer within psql's
        // connect timeout: that is "not drained yet", not a failure, until the deadline.
        let n = match backends(pg_port) {
            Ok(n) => n,
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            Err(e) => return Err(e),
        };
        if n <= idle + 2 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("Postgres still has {n} client backends 60 s after the sessions ended");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_per_connection() {
        assert_eq!(per_conn(10_240, 6_144, 1000), Some(4194.0));
        assert_eq!(per_conn(6_000, 6_144, 1000), Some(-147.0));
        assert_eq!(per_conn(10_240, 6_144, 0), None);
    }
}
