//! The scenarios. Each targets location `dca` (two nodes, so a failover is possible) unless it
//! says otherwise, marks its faults, and names the instants from which every client must be
//! writing again within the lease + 1 s.

use std::time::Duration;

use crate::lab::hosts::{APP_HOSTS, ETCD_HOSTS, Kind, PG_NODES};
use crate::lab::net::LabError;
use crate::rt::block_on;

use super::catalog_authority as authority;
use super::catalog_clock::clock_jump;
use super::{Ctx, Scenario};

const LOC: &str = "dca";
const SEC: Duration = Duration::from_secs(1);

pub static ALL: &[Scenario] = &[
    Scenario {
        name: "pg-crash",
        about: "kill -9 of the leader's postmaster",
        run: pg_crash,
    },
    Scenario {
        name: "leader-cut-off",
        about: "the leader's host loses its network (minority side)",
        run: leader_cut_off,
    },
    Scenario {
        name: "agent-cut-off",
        about: "an application host loses etcd but keeps Postgres: fail closed, then resume",
        run: agent_cut_off,
    },
    Scenario {
        name: "etcd-leader-loss",
        about: "kill -9 of the etcd raft leader",
        run: etcd_leader_loss,
    },
    Scenario {
        name: "etcd-majority-loss",
        about: "two of three etcd members killed, then restarted",
        run: etcd_majority_loss,
    },
    Scenario {
        name: "zombie-manager",
        about: "the leader's manager frozen (SIGSTOP) past the lease, then resumed",
        run: zombie_manager,
    },
    Scenario {
        name: "rolling-restart",
        about: "every manager restarted in turn",
        run: rolling_restart,
    },
    Scenario {
        name: "double-failure",
        about: "the leader's postmaster and an etcd member killed at once",
        run: double_failure,
    },
    Scenario {
        name: "flapping-link",
        about: "the leader's link goes down and up every second",
        run: flapping_link,
    },
    Scenario {
        name: "slow-network",
        about: "the leader's link at 1 Mbit/s with 5% loss",
        run: slow_network,
    },
    Scenario {
        name: "switchover",
        about: "harpctl promote of the other node under load",
        run: switchover,
    },
    Scenario {
        name: "agent-restart",
        about: "kill -9 of an agent, then a restart, under load",
        run: agent_restart,
    },
    Scenario {
        name: "kernel-agent-dead-across-failover",
        about: "kill -9 of the kernel-path agent a1, then of the leader's postmaster; a1 back \
                later. a1's clients can write only once a1 runs again: measured from its restart",
        run: authority::kernel_agent_dead_across_failover,
    },
    Scenario {
        name: "kernel-agent-dead-across-switchover",
        about: "kill -9 of the kernel-path agent a1, then harpctl promote of the other node; a1 \
                back later. a1's clients measured from its restart",
        run: authority::kernel_agent_dead_across_switchover,
    },
    Scenario {
        name: "agent-frozen-across-failover",
        about: "both agents SIGSTOPped under load (one past the lease, one for half of it; \
                userspace long first, then kernel), the leader's postmaster killed meanwhile. \
                A frozen agent's clients measured from its SIGCONT",
        run: authority::agent_frozen_across_failover,
    },
    Scenario {
        name: "agent-frozen-across-fence",
        about: "as agent-frozen-across-failover, with harpctl fence of the leader (its Postgres \
                stays up and writable) instead of a crash",
        run: authority::agent_frozen_across_fence,
    },
    Scenario {
        name: "asymmetric-partition",
        about: "the leader's manager cut from etcd (client and peer ports) while its Postgres \
                stays reachable from the application hosts; healed after two leases",
        run: authority::asymmetric_partition,
    },
    Scenario {
        name: "clock-jump",
        about: "wall clock (CLOCK_REALTIME only, via libfaketime) of dca's managers (every \
                manager when streaming) and both agents stepped +1 h / -1 h / back while they \
                run; monotonic clocks untouched",
        run: clock_jump,
    },
];

fn pg_crash(c: &mut Ctx) -> Result<(), LabError> {
    let leader = c.leader_of(LOC)?;
    c.pause(Duration::ZERO, 1000);
    let f = c.mark(format!("kill -9 postgres {leader}"));
    c.converge_from_now("postgres crash");
    c.lab.process(Kind::Postgres, &leader)?.kill9();
    c.pause(c.lease() + 2 * SEC, 1000);
    c.lab.restart(Kind::Postgres, &leader)?;
    c.end(f);
    Ok(())
}

fn leader_cut_off(c: &mut Ctx) -> Result<(), LabError> {
    let leader = c.leader_of(LOC)?;
    let f = c.mark(format!("cut off {leader}"));
    c.lab.net().cut_off(&leader)?;
    // From the cut in place: a write slipping through before it would hide the lease's wait.
    c.converge_from_now("leader host cut off");
    c.pause(c.lease() * 2, 2000);
    c.lab.net().heal()?;
    c.end(f);
    Ok(())
}

fn agent_cut_off(c: &mut Ctx) -> Result<(), LabError> {
    let app = c.rng.pick(&APP_HOSTS).0;
    let f = c.mark(format!("{app} cut off from etcd"));
    c.lab.net().partition(&[app], &ETCD_HOSTS)?;
    c.pause(c.lease() + 3 * SEC, 2000);
    c.lab.net().heal()?;
    c.end(f);
    c.converge_from_now("agent reconnected");
    Ok(())
}

fn etcd_leader_loss(c: &mut Ctx) -> Result<(), LabError> {
    let member = etcd_leader(c)?;
    let f = c.mark(format!("kill -9 etcd {member} (raft leader)"));
    c.converge_from_now("etcd leader lost");
    c.lab.process(Kind::Etcd, member)?.kill9();
    c.pause(5 * SEC, 2000);
    c.lab.restart(Kind::Etcd, member)?;
    c.end(f);
    Ok(())
}

fn etcd_majority_loss(c: &mut Ctx) -> Result<(), LabError> {
    let keep = *c.rng.pick(&ETCD_HOSTS);
    let f = c.mark(format!("kill -9 every etcd member but {keep}"));
    for m in ETCD_HOSTS.iter().filter(|&&m| m != keep) {
        c.lab.process(Kind::Etcd, m)?.kill9();
    }
    c.pause(c.lease() + 2 * SEC, 2000);
    for m in ETCD_HOSTS.iter().filter(|&&m| m != keep) {
        c.lab.restart(Kind::Etcd, m)?;
    }
    c.end(f);
    c.converge_from_now("etcd quorum back");
    Ok(())
}

fn zombie_manager(c: &mut Ctx) -> Result<(), LabError> {
    let leader = c.leader_of(LOC)?;
    let f = c.mark(format!("SIGSTOP manager {leader}"));
    c.converge_from_now("leader's manager frozen");
    c.lab.process(Kind::Manager, &leader)?.sigstop();
    c.pause(c.lease() + 3 * SEC, 2000);
    c.lab.process(Kind::Manager, &leader)?.sigcont();
    c.end(f);
    Ok(())
}

fn rolling_restart(c: &mut Ctx) -> Result<(), LabError> {
    for (node, _, _) in PG_NODES {
        let f = c.mark(format!("restart manager {node}"));
        c.converge_from_now(format!("manager {node} restarted"));
        c.lab.process(Kind::Manager, node)?.stop();
        c.lab.restart(Kind::Manager, node)?;
        c.end(f);
        c.pause(2 * SEC, 1000);
    }
    Ok(())
}

fn double_failure(c: &mut Ctx) -> Result<(), LabError> {
    let leader = c.leader_of(LOC)?;
    let member = *c.rng.pick(&ETCD_HOSTS);
    let f = c.mark(format!("kill -9 postgres {leader} + etcd {member}"));
    c.converge_from_now("two failures");
    c.lab.process(Kind::Postgres, &leader)?.kill9();
    c.lab.process(Kind::Etcd, member)?.kill9();
    c.pause(c.lease() + 2 * SEC, 1000);
    c.lab.restart(Kind::Etcd, member)?;
    c.lab.restart(Kind::Postgres, &leader)?;
    c.end(f);
    Ok(())
}

fn flapping_link(c: &mut Ctx) -> Result<(), LabError> {
    let leader = c.leader_of(LOC)?;
    let period = Duration::from_millis(c.rng.range(500, 1500));
    let f = c.mark(format!("flap {leader} every {period:?}"));
    c.lab.net().flap(&leader, period, 6)?.join()?;
    c.end(f);
    c.converge_from_now("link stable");
    Ok(())
}

fn slow_network(c: &mut Ctx) -> Result<(), LabError> {
    let leader = c.leader_of(LOC)?;
    let f = c.mark(format!("{leader} at 1 Mbit/s, 5% loss"));
    c.lab.net().slow(&leader, 1000, 5, None)?;
    c.pause(8 * SEC, 2000);
    c.lab.net().heal()?;
    c.end(f);
    c.converge_from_now("network normal");
    Ok(())
}

fn switchover(c: &mut Ctx) -> Result<(), LabError> {
    let leader = c.leader_of(LOC)?;
    let target = PG_NODES
        .iter()
        .find(|(n, l, _)| *l == LOC && *n != leader)
        .map(|(n, _, _)| *n)
        .expect("dca has two nodes");
    let f = c.mark(format!("harpctl promote {target}"));
    c.converge_from_now("switchover");
    let (ok, out) = c.harpctl(&["promote", target])?;
    c.end(f);
    if !ok {
        return Err(LabError::Unsupported(format!(
            "harpctl promote {target}: {out}"
        )));
    }
    c.pause(2 * SEC, 1000);
    Ok(())
}

fn agent_restart(c: &mut Ctx) -> Result<(), LabError> {
    let app = c.rng.pick(&APP_HOSTS).0;
    let f = c.mark(format!("kill -9 agent {app}, restart"));
    c.converge_from_now("agent restarted");
    c.lab.process(Kind::Agent, app)?.kill9();
    c.pause(SEC, 1000);
    c.lab.restart(Kind::Agent, app)?;
    c.end(f);
    Ok(())
}

/// The etcd member that is raft leader now, asked from the ctl host.
fn etcd_leader(c: &Ctx) -> Result<&'static str, LabError> {
    let endpoints = c.lab.etcd_endpoints();
    let opts = c.lab.etcd_options();
    let found = c.lab.on_ctl(|| {
        block_on(|| async {
            for (i, ep) in endpoints.iter().enumerate() {
                let opts = opts.clone();
                let Ok(mut client) = etcd_client::Client::connect([ep], Some(opts)).await else {
                    continue;
                };
                let Ok(st) = client.status().await else {
                    continue;
                };
                let me = st.header().map(|h| h.member_id());
                if me == Some(st.leader()) {
                    return Some(i);
                }
            }
            None
        })
    })?;
    found
        .map(|i| ETCD_HOSTS[i])
        .ok_or_else(|| LabError::Unsupported("no etcd member says it leads".into()))
}
