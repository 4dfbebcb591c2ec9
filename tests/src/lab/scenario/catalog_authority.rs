//! Scenarios on the authority of the data path (SAFETY.md I18): an agent dead or frozen while
//! the leadership changes, and a leader whose manager alone loses etcd. A dead or frozen
//! agent's clients cannot write until it runs again, by design: they are in an outage from the
//! fault and measured from the agent's restart or resume; every other client from the fault.
//! What must hold throughout: no write of theirs reaches the replaced leader.

use std::time::{Duration, Instant};

use crate::lab::hosts::{APP_HOSTS, AgentMode, ETCD_HOSTS, ETCD_PORT, Kind, PG_NODES};
use crate::lab::net::LabError;

use super::Ctx;

pub(super) const LOC: &str = "dca";
const SEC: Duration = Duration::from_secs(1);
/// etcd's peer port (the client port is [`ETCD_PORT`]).
const ETCD_PEER_PORT: u16 = 2380;

/// The app host whose agent runs in `mode`.
pub(super) fn app(mode: AgentMode) -> &'static str {
    APP_HOSTS
        .iter()
        .find(|a| a.2 == mode)
        .map(|a| a.0)
        .expect("the lab has an agent of each mode")
}

/// The other node of `LOC` than `node`.
pub(super) fn other_node(node: &str) -> &'static str {
    PG_NODES
        .iter()
        .find(|(n, l, _)| *l == LOC && *n != node)
        .map(|(n, _, _)| *n)
        .expect("dca has two nodes")
}

fn sleep_until(t: Instant) {
    std::thread::sleep(t.saturating_duration_since(Instant::now()));
}

pub(super) fn kernel_agent_dead_across_failover(c: &mut Ctx) -> Result<(), LabError> {
    agent_dead_across(c, Change::Crash)
}

pub(super) fn kernel_agent_dead_across_switchover(c: &mut Ctx) -> Result<(), LabError> {
    agent_dead_across(c, Change::Switchover)
}

/// How the leadership of `LOC` changes.
#[derive(Clone, Copy, PartialEq)]
enum Change {
    /// kill -9 of the leader's postmaster (started again later).
    Crash,
    /// `harpctl fence` of the leader (unfenced later); its Postgres stays up and writable.
    Fence,
    /// `harpctl promote` of the other node.
    Switchover,
}

impl Change {
    /// Makes `leader` lose the lead; returns the fault's index.
    fn start(self, c: &mut Ctx, leader: &str) -> Result<usize, LabError> {
        let f = match self {
            Change::Crash => c.mark(format!("kill -9 postgres {leader}")),
            Change::Fence => c.mark(format!("harpctl fence {leader}")),
            Change::Switchover => c.mark(format!("harpctl promote {}", other_node(leader))),
        };
        c.converge_from_now(match self {
            Change::Crash => "postgres crash",
            Change::Fence => "leader fenced",
            Change::Switchover => "switchover",
        });
        match self {
            Change::Crash => c.lab.process(Kind::Postgres, leader)?.kill9(),
            Change::Fence => harpctl(c, &["fence", leader])?,
            Change::Switchover => harpctl(c, &["promote", other_node(leader)])?,
        }
        Ok(f)
    }

    /// Undoes what `start` left (the crashed Postgres, the fence).
    fn undo(self, c: &mut Ctx, leader: &str, f: usize) -> Result<(), LabError> {
        match self {
            Change::Crash => c.lab.restart(Kind::Postgres, leader)?,
            Change::Fence => harpctl(c, &["unfence", leader])?,
            Change::Switchover => {}
        }
        c.end(f);
        Ok(())
    }
}

fn harpctl(c: &Ctx, args: &[&str]) -> Result<(), LabError> {
    let (ok, out) = c.harpctl(args)?;
    if ok {
        Ok(())
    } else {
        Err(LabError::Unsupported(format!("harpctl {args:?}: {out}")))
    }
}

/// kill -9 of the kernel-path agent, then `change` 1 s to lease + 1 s later (before or after
/// its etcd session and its entries' deadline lapse), then the agent started again.
fn agent_dead_across(c: &mut Ctx, change: Change) -> Result<(), LabError> {
    let a = app(AgentMode::Kernel);
    let leader = c.leader_of(LOC)?;
    let f = c.mark(format!("kill -9 agent {a} (kernel path), restart later"));
    let o = c.outage(a, format!("agent {a} dead"));
    c.lab.process(Kind::Agent, a)?.kill9();
    let lease_ms = c.lease().as_millis() as u64;
    c.pause(SEC, lease_ms);
    let g = change.start(c, &leader)?;
    c.pause(c.lease() + 2 * SEC, 1000);
    change.undo(c, &leader, g)?;
    c.pause(SEC, 1000);
    c.lab.process(Kind::Agent, a)?.start_again()?;
    c.outage_end(o);
    c.lab.wait_ready(Kind::Agent, a)?;
    c.end(f);
    c.pause(2 * SEC, 1000);
    Ok(())
}

pub(super) fn agent_frozen_across_failover(c: &mut Ctx) -> Result<(), LabError> {
    agent_frozen_across(c, Change::Crash)
}

pub(super) fn agent_frozen_across_fence(c: &mut Ctx) -> Result<(), LabError> {
    agent_frozen_across(c, Change::Fence)
}

/// Two rounds, each freezing both agents while their writers send: one agent past the lease,
/// the other for half of it; the leader loses the lead during the freeze. Round one freezes
/// the userspace agent long and the kernel agent short, round two the other way round.
fn agent_frozen_across(c: &mut Ctx, change: Change) -> Result<(), LabError> {
    let r = frozen_rounds(c, change);
    if r.is_err() && change == Change::Fence {
        // restore() heals and restarts, but a fence is etcd state: lift it here.
        for (n, _, _) in PG_NODES {
            let _ = c.harpctl(&["unfence", n]);
        }
    }
    r
}

fn frozen_rounds(c: &mut Ctx, change: Change) -> Result<(), LabError> {
    let (user, kernel) = (app(AgentMode::Userspace), app(AgentMode::Kernel));
    for (long, short) in [(user, kernel), (kernel, user)] {
        let leader = c.leader_of(LOC)?;
        let f = c.mark(format!(
            "SIGSTOP agents {long} (past the lease) and {short} (half the lease)"
        ));
        let ol = c.outage(long, format!("agent {long} frozen"));
        let os = c.outage(short, format!("agent {short} frozen"));
        let t0 = Instant::now();
        for a in [long, short] {
            c.lab.process(Kind::Agent, a)?.sigstop();
        }
        // Requests queue up in the frozen agents (and on the kernel path, go on directly).
        c.pause(Duration::from_millis(500), 500);
        let g = change.start(c, &leader)?;
        sleep_until(t0 + c.lease() / 2);
        c.lab.process(Kind::Agent, short)?.sigcont();
        c.outage_end(os);
        let jitter = Duration::from_millis(c.rng.range(0, 1001));
        sleep_until(t0 + c.lease() + 2 * SEC + jitter);
        c.lab.process(Kind::Agent, long)?.sigcont();
        c.outage_end(ol);
        c.end(f);
        c.pause(2 * SEC, 1000);
        change.undo(c, &leader, g)?;
        c.pause(2 * SEC, 1000);
    }
    Ok(())
}

/// The leader's manager loses etcd (its host's etcd client and peer traffic dropped on its
/// cable) while its Postgres stays reachable from every application host.
pub(super) fn asymmetric_partition(c: &mut Ctx) -> Result<(), LabError> {
    let leader = c.leader_of(LOC)?;
    let f = c.mark(format!("{leader} cut from etcd (Postgres reachable)"));
    c.converge_from_now("leader's manager cut from etcd");
    c.lab
        .net()
        .cut_ports(&leader, &ETCD_HOSTS, &[ETCD_PORT, ETCD_PEER_PORT])?;
    c.pause(c.lease() * 2, 2000);
    c.lab.net().heal()?;
    c.end(f);
    c.converge_from_now("healed");
    c.pause(2 * SEC, 1000);
    Ok(())
}
