//! harp-agent in mode ebpf, for the kernel paths and the map latency: its programs attach to a
//! child cgroup the bench creates (never the host's root cgroup). `agent-kernel` runs its clients
//! inside that cgroup (connect4 steers them straight to Postgres), `agent-sockmap` outside (the
//! userspace proxy accepts, the kernel splices the pair). The agent's pins are removed when it
//! goes, also when the bench fails.

use std::cell::RefCell;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use harp_tests::agent::PinGuard;
use harp_tests::cgroup::ChildCgroup;
use harp_tests::{AgentProc, TestCluster};
use serde::Serialize;
use serde_json::Value;

use super::client::{output_text, psql_command};
use super::peers::{AgentStart, Limits, start_agent};

/// What the agent logs when its binary has no kernel programs embedded.
const NOT_BUILT: &str = "built without its kernel programs";
/// How long the steering check's session lasts, so the agent's `/status` can be read meanwhile.
const CHECK_SQL: &str = "SELECT pg_sleep(0.5)";

/// From the agent's `/status`: the kernel's event counters and the userspace proxy's sessions.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Counters {
    /// Connects connect4 steered.
    pub(crate) steered: u64,
    /// Socket buffers the verdict program redirected to the partner socket.
    spliced: u64,
    /// Socket buffers it found no partner for (passed to userspace).
    splice_miss: u64,
    #[serde(skip)]
    pub(crate) sessions: u64,
}

/// An ebpf-mode harp-agent with its pins and cgroup. Field order = drop order: the agent, then
/// its pins (detaching the programs), then the cgroup (killing whatever still runs in it).
pub struct KernelAgent {
    agent: RefCell<AgentProc>,
    pins: PinGuard,
    cgroup: ChildCgroup,
}

/// `Ok(Err(reason))`: the kernel paths are skipped; but `CI=true` must not skip them.
fn skip(reason: String) -> anyhow::Result<Result<KernelAgent, String>> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        bail!("kernel steering is unavailable and CI=true forbids skipping it: {reason}");
    }
    Ok(Err(reason))
}

impl KernelAgent {
    /// Starts proxy `name` for `location` in mode ebpf on a new child cgroup, up as
    /// [`AgentStart::routing`] says. `Ok(Err(reason))`: kernel steering is unavailable here (not
    /// root, or a harp-agent built without its kernel programs) and the caller skips.
    pub fn start(
        cluster: &TestCluster,
        name: &str,
        location: &str,
        routing: bool,
    ) -> anyhow::Result<Result<KernelAgent, String>> {
        if !nix::unistd::geteuid().is_root() {
            return skip("kernel steering needs root".into());
        }
        let pins = PinGuard::new(cluster.name(), name);
        if pins.path().exists() {
            let path = pins.path().display().to_string();
            // Not this run's (an earlier bench that was killed?): leave it to whoever owns it.
            std::mem::forget(pins);
            bail!("{path} exists already: remove it (rm -r {path}) if no harp-agent uses it");
        }
        let cgroup = ChildCgroup::new();
        let how = AgentStart {
            name,
            location,
            ebpf: Some(&cgroup),
            routing,
            max_client_conn: Limits::DATAPATH.agent_max_client_conn,
        };
        let agent = match start_agent(cluster, &how) {
            Ok(a) => a,
            Err(e) if format!("{e:#}").contains(NOT_BUILT) => {
                return skip(format!(
                    "harp-agent was {NOT_BUILT} (cargo xtask build-ebpf)"
                ));
            }
            Err(e) => return Err(e),
        };
        let k = KernelAgent {
            agent: RefCell::new(agent),
            pins,
            cgroup,
        };
        let mode = k.status()?["mode"].clone();
        if mode != "ebpf" {
            return skip(format!("harp-agent {name} runs in mode {mode}, not ebpf"));
        }
        Ok(Ok(k))
    }

    pub fn listen_port(&self) -> u16 {
        self.agent.borrow().listen_port()
    }

    pub fn pid(&self) -> u32 {
        self.agent.borrow().pid()
    }

    pub fn cgroup(&self) -> &ChildCgroup {
        &self.cgroup
    }

    /// Where the agent pinned its maps and links.
    pub fn pin_dir(&self) -> &Path {
        self.pins.path()
    }

    pub fn log_tail(&self, n: usize) -> String {
        self.agent.borrow().log_tail(n)
    }

    /// The exit status once the agent has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.agent.borrow_mut().wait_exit(Duration::ZERO)
    }

    fn status(&self) -> anyhow::Result<Value> {
        let (code, body) = self
            .agent
            .borrow()
            .http("/status")
            .with_context(|| format!("GET /status: no answer\n{}", self.log_tail(30)))?;
        if code != 200 {
            bail!("GET /status: {code} {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("GET /status: {body}"))
    }

    pub fn counters(&self) -> anyhow::Result<Counters> {
        let st = self.status()?;
        let n = |v: &Value, what: &str| {
            v.as_u64()
                .with_context(|| format!("/status has no {what}: {st}"))
        };
        let c = &st["kernel"]["counters"];
        Ok(Counters {
            steered: n(&c["steered"], "kernel.counters.steered")?,
            spliced: n(&c["spliced"], "kernel.counters.spliced")?,
            splice_miss: n(&c["splice_miss"], "kernel.counters.splice_miss")?,
            sessions: n(&st["sessions"], "sessions")?,
        })
    }

    /// Checks once, before measuring, that a client in the cgroup is steered: `steered` grows
    /// and the userspace proxy holds no session while it runs. `Err` with the agent's log.
    pub fn verify_steering(&self) -> anyhow::Result<()> {
        // Sessions of the readiness checks (from outside the cgroup) may still be closing.
        let drained = Instant::now() + Duration::from_secs(10);
        let before = loop {
            let c = self.counters()?;
            if c.sessions == 0 {
                break c;
            }
            if Instant::now() > drained {
                bail!(
                    "the userspace proxy still holds {} session(s) 10 s after its last client\n{}",
                    c.sessions,
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut psql = psql_command(self.listen_port(), CHECK_SQL, Some(&self.cgroup))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run psql in the cgroup")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut sessions = 0;
        while psql.try_wait()?.is_none() && Instant::now() < deadline {
            sessions = sessions.max(self.counters()?.sessions);
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = psql.kill();
        let out = psql.wait_with_output()?;
        let after = self.counters()?;
        let log = || self.log_tail(30);
        if !out.status.success() {
            bail!(
                "a steered psql failed ({}): {}\n{}",
                out.status,
                output_text(&out).trim(),
                log()
            );
        }
        if after.steered <= before.steered || sessions > 0 {
            bail!(
                "a client in {} was not steered: kernel.counters.steered {} → {}, {sessions} \
                 session(s) in the userspace proxy meanwhile\n{}",
                self.cgroup.path().display(),
                before.steered,
                after.steered,
                log()
            );
        }
        println!(
            "steering checked: a client in {} went straight to Postgres",
            self.cgroup.path().display()
        );
        Ok(())
    }

    /// Fails unless a run since `before` went the kernel way: connects steered (`steered`), or
    /// bytes spliced by the userspace proxy's sockmap. The counters' growth during the run.
    pub fn check_run(&self, before: Counters, steered: bool) -> anyhow::Result<Counters> {
        let after = self.counters()?;
        let (what, b, a) = if steered {
            ("steered", before.steered, after.steered)
        } else {
            ("spliced", before.spliced, after.spliced)
        };
        if a <= b {
            bail!(
                "kernel.counters.{what} did not grow during the run ({b} → {a})\n{}",
                self.log_tail(30)
            );
        }
        Ok(Counters {
            steered: after.steered - before.steered,
            spliced: after.spliced - before.spliced,
            splice_miss: after.splice_miss - before.splice_miss,
            sessions: after.sessions,
        })
    }
}
