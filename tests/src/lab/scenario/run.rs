//! One scenario run: bring the lab back to health, clear the register, start the observer and
//! the writers, inject the scenario's faults, heal, let it settle, then read every node's
//! table and check the history. Writes `history.json`, `timeline.txt`, `writes.svg` and
//! `verdict.json` into the run's directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bins::workspace_bin;
use crate::lab::checker::{Verdict, check, timeline};
use crate::lab::history::{FaultMark, History, Outage, Row};
use harp_core::config::Replication;

use crate::lab::hosts::{APP_HOSTS, CTL, Kind, Lab, PG_NODES};
use crate::lab::net::LabError;
use crate::lab::plot::write_svg;
use crate::lab::workload::{REGISTER_DDL, read_records, unix_ms};
use crate::process::ChildGuard;
use crate::rt::block_on;

use super::observer::Observer;
use super::rng::Rng;
use super::{Ctx, Scenario};

/// Writers per application host.
const WRITERS_PER_APP: usize = 2;
/// Pause between one writer's writes: with a write taking 1–3 ms, each agent's two writers land
/// a write every few ms, so an overlap of two write targets of 5 ms shows (about 500 writes/s
/// in all).
const WRITE_EVERY_MS: u64 = 5;
const WARMUP: Duration = Duration::from_secs(2);

/// What a run found, and where its report is.
#[derive(Debug)]
pub struct RunResult {
    pub scenario: &'static str,
    pub seed: u64,
    pub verdict: Verdict,
    pub report_dir: PathBuf,
}

pub fn run(lab: &mut Lab, sc: &Scenario, seed: u64, out: &Path) -> Result<RunResult, LabError> {
    let dir = out.join(sc.name).join(format!("seed-{seed}"));
    std::fs::create_dir_all(&dir).map_err(|e| LabError::io(format!("mkdir {dir:?}"), e))?;
    restore(lab)?;
    reset_register(lab)?;
    let ctl = lab.net().host(CTL)?.ns_path();
    let observer = Observer::start(ctl, lab.etcd_endpoints(), lab.etcd_options(), lab.cluster());
    let started_ms = unix_ms();
    let mut writers = start_writers(lab, &dir)?;
    std::thread::sleep(WARMUP);
    let mut ctx = Ctx {
        lab,
        rng: Rng::new(seed),
        faults: Vec::new(),
        converge_from: Vec::new(),
        outages: Vec::new(),
    };
    let outcome = (sc.run)(&mut ctx);
    let Ctx {
        faults,
        converge_from,
        outages,
        ..
    } = ctx;
    // Whatever the scenario left behind (or a failed step) is undone before the settle.
    restore(lab)?;
    outcome?;
    let settle = Duration::from_millis(lab.spec().lease_secs * 1000 + 3000);
    std::thread::sleep(settle);
    for (_, w) in &mut writers {
        w.sigterm();
    }
    for (_, w) in &mut writers {
        w.wait_exit(Duration::from_secs(10));
    }
    let leaders = observer.finish();
    let ended_ms = unix_ms();
    let mut writes = Vec::new();
    for (file, _) in &writers {
        writes.extend(read_records(file).map_err(|e| LabError::io(format!("{file:?}"), e))?);
    }
    let history = History {
        scenario: sc.name.to_owned(),
        seed,
        lease_ms: lab.spec().lease_secs * 1000,
        started_ms,
        ended_ms,
        writes,
        leaders,
        faults,
        rows: read_rows(lab)?,
        converge_from,
        outages,
        replication: lab.spec().replication.as_str().to_owned(),
        primaries: primaries(lab)?,
    };
    let verdict = check(&history);
    let io = |what: &str, e: std::io::Error| LabError::io(format!("{what} in {dir:?}"), e);
    history
        .save(&dir.join("history.json"))
        .map_err(|e| LabError::Unsupported(e.to_string()))?;
    std::fs::write(dir.join("timeline.txt"), timeline(&history, &verdict))
        .map_err(|e| io("timeline.txt", e))?;
    let json = serde_json::to_string_pretty(&verdict).expect("verdict serializes");
    std::fs::write(dir.join("verdict.json"), json).map_err(|e| io("verdict.json", e))?;
    write_svg(&history, &dir.join("writes.svg"))
        .map_err(|e| LabError::Unsupported(format!("plot: {e}")))?;
    Ok(RunResult {
        scenario: sc.name,
        seed,
        verdict,
        report_dir: dir,
    })
}

/// Heals the network, resumes stopped processes, restarts dead ones and waits until every
/// location has a leader and every agent is ready.
pub fn restore(lab: &mut Lab) -> Result<(), LabError> {
    lab.net().heal()?;
    let mut dead = Vec::new();
    for p in lab.processes() {
        if p.is_running() {
            p.sigcont();
        } else {
            dead.push((p.kind(), p.host().to_owned()));
        }
    }
    // Order matters: etcd before managers, Postgres before its manager — but a streaming
    // node's manager before its Postgres, which that manager starts again (after a rewind).
    let streaming = lab.spec().replication == Replication::Streaming;
    dead.sort_by_key(|(k, _)| match k {
        Kind::Etcd => 0,
        Kind::Postgres if streaming => 2,
        Kind::Postgres => 1,
        Kind::Manager if streaming => 1,
        Kind::Manager => 2,
        Kind::Agent => 3,
    });
    for (kind, host) in dead {
        lab.restart(kind, &host)?;
    }
    let wait = Duration::from_secs(lab.spec().lease_secs * 3 + 10);
    for scope in lab.spec().scopes() {
        lab.wait_leader(&scope, wait)?;
    }
    if streaming {
        // Whoever leads now (a failover or a switchover may have moved the primary), with the
        // old primary rewound into a standby that streams again.
        lab.wait_streaming(wait + Duration::from_secs(30))?;
    }
    for (h, _, _) in APP_HOSTS {
        lab.wait_ready(Kind::Agent, h)?;
    }
    wait_sessions(lab, wait)
}

/// Waits until every manager and agent publishes its status — on its own etcd lease, so
/// each has a live session again (a unit that lost its lease must get a new one).
fn wait_sessions(lab: &Lab, timeout: Duration) -> Result<(), LabError> {
    let keys = harp_core::keys::Keys::new(&lab.cluster());
    let mut want: Vec<String> = PG_NODES.iter().map(|n| keys.node_status(n.0)).collect();
    want.extend(APP_HOSTS.iter().map(|a| keys.proxy_status(a.0)));
    let eps = lab.etcd_endpoints();
    let opts = lab.etcd_options();
    let end = Instant::now() + timeout;
    loop {
        let missing: Vec<String> = lab.on_ctl(|| {
            block_on(|| async {
                let opts = opts.clone();
                let Ok(mut c) = etcd_client::Client::connect(&eps, Some(opts)).await else {
                    return want.clone();
                };
                let mut missing = Vec::new();
                for k in &want {
                    let found = c
                        .get(k.as_str(), None)
                        .await
                        .is_ok_and(|r| !r.kvs().is_empty());
                    if !found {
                        missing.push(k.clone());
                    }
                }
                missing
            })
        })?;
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= end {
            return Err(LabError::Unsupported(format!(
                "no status (no etcd session) within {timeout:?}: {}",
                missing.join(", ")
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Creates the register (if need be) and empties it: on every node of a multi-writer cluster,
/// on the primary of a streaming one (its standbys replay it; they take no writes).
fn reset_register(lab: &Lab) -> Result<(), LabError> {
    for node in primaries(lab)? {
        let dsn = lab.node_dsn(&node)?;
        lab.on_ctl(|| {
            block_on(|| async {
                let (c, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                c.batch_execute(&format!("{REGISTER_DDL}; TRUNCATE register"))
                    .await
            })
        })?
        .map_err(|e| LabError::Unsupported(format!("prepare register on {node}: {e}")))?;
    }
    Ok(())
}

fn start_writers(lab: &Lab, dir: &Path) -> Result<Vec<(PathBuf, ChildGuard)>, LabError> {
    let bin = workspace_bin("harp-lab-writer");
    let mut out = Vec::new();
    for (app, location, mode) in APP_HOSTS {
        let path = match mode {
            crate::lab::hosts::AgentMode::Kernel => "kernel",
            crate::lab::hosts::AgentMode::Userspace => "userspace",
        };
        for client in clients_of(app) {
            let file = dir.join(format!("{client}.jsonl"));
            let _ = std::fs::remove_file(&file);
            let mut cmd = lab.client_command(app, &bin)?;
            cmd.args(["--client", &client, "--location", location, "--path", path])
                .args(["--dsn", &lab.agent_dsn(app)?])
                .args(["--every-ms", &WRITE_EVERY_MS.to_string()])
                .arg("--out")
                .arg(&file);
            let log = dir.join(format!("{client}.log"));
            out.push((file, ChildGuard::spawn(cmd, &client, &log)));
        }
    }
    Ok(out)
}

/// The writers' names on app host `app`.
fn clients_of(app: &str) -> Vec<String> {
    (0..WRITERS_PER_APP)
        .map(|i| format!("{app}-w{i}"))
        .collect()
}

/// Every row of every node's register (restore has started every Postgres again).
fn read_rows(lab: &Lab) -> Result<Vec<Row>, LabError> {
    let mut rows = Vec::new();
    for (node, _, _) in PG_NODES {
        let dsn = lab.node_dsn(node)?;
        let found = lab
            .on_ctl(|| {
                block_on(|| async {
                    let (c, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await?;
                    tokio::spawn(conn);
                    c.query("SELECT node, client, seq, server_ms FROM register", &[])
                        .await
                })
            })?
            .map_err(|e| LabError::Unsupported(format!("read register on {node}: {e}")))?;
        rows.extend(found.iter().map(|r| Row {
            node: r.get(0),
            client: r.get(1),
            seq: r.get::<_, i64>(2) as u64,
            server_ms: r.get(3),
            table: Some(node.to_owned()),
        }));
    }
    Ok(rows)
}

/// The nodes whose tables must hold every acknowledged write (see [`History::primaries`]):
/// the leader of a streaming cluster when the rows are read; every node of a multi-writer one.
fn primaries(lab: &Lab) -> Result<Vec<String>, LabError> {
    match lab.spec().replication {
        Replication::MultiWriter => Ok(PG_NODES.iter().map(|n| n.0.to_owned()).collect()),
        Replication::Streaming => {
            let scope = lab.cluster();
            let wait = Duration::from_secs(lab.spec().lease_secs * 3 + 10);
            Ok(vec![lab.wait_leader(&scope, wait)?.node])
        }
    }
}

impl Ctx<'_> {
    /// Marks a fault as starting now; returns its index for [`Ctx::end`].
    pub fn mark(&mut self, label: impl Into<String>) -> usize {
        self.faults.push(FaultMark {
            start_ms: unix_ms(),
            end_ms: None,
            label: label.into(),
        });
        self.faults.len() - 1
    }

    pub fn end(&mut self, fault: usize) {
        self.faults[fault].end_ms = Some(unix_ms());
    }

    /// From now on, `app`'s clients cannot write by design (its agent is dead or frozen): they
    /// are measured from [`Ctx::outage_end`], not from moments in between. Returns its index.
    pub fn outage(&mut self, app: &str, label: impl Into<String>) -> usize {
        self.outages.push(Outage {
            label: label.into(),
            clients: clients_of(app),
            start_ms: unix_ms(),
            end_ms: None,
        });
        self.outages.len() - 1
    }

    /// `app`'s agent runs again: its clients must be writing again soon after now.
    pub fn outage_end(&mut self, outage: usize) {
        self.outages[outage].end_ms = Some(unix_ms());
    }

    /// Every client must be writing again soon after now.
    pub fn converge_from_now(&mut self, label: impl Into<String>) {
        self.converge_from.push((label.into(), unix_ms()));
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lab.spec().lease_secs)
    }

    /// The leader of `location` now (waits for one).
    /// In a streaming cluster every location's writes go to the cluster's one primary.
    pub fn leader_of(&self, location: &str) -> Result<String, LabError> {
        let t = Duration::from_secs(self.lab.spec().lease_secs * 3 + 10);
        let scope = match self.lab.spec().replication {
            Replication::MultiWriter => location.to_owned(),
            Replication::Streaming => self.lab.cluster(),
        };
        Ok(self.lab.wait_leader(&scope, t)?.node)
    }

    /// Sleeps `base` plus up to `jitter_ms` chosen by the seed.
    pub fn pause(&mut self, base: Duration, jitter_ms: u64) {
        std::thread::sleep(base + Duration::from_millis(self.rng.range(0, jitter_ms + 1)));
    }

    /// Runs `harpctl <args>` from the ctl host against the lab's etcd.
    pub fn harpctl(&self, args: &[&str]) -> Result<(bool, String), LabError> {
        let mut cmd = self.lab.net().command(CTL, workspace_bin("harpctl"))?;
        cmd.arg("-f").arg(self.lab.harpctl_config()).args(args);
        let out = cmd
            .output()
            .map_err(|e| LabError::io(format!("harpctl {args:?}"), e))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    }

    /// Waits until `f` holds or `timeout` passes.
    pub fn wait_for(&self, timeout: Duration, mut f: impl FnMut(&Lab) -> bool) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if f(self.lab) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}
