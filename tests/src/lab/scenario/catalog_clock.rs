//! `clock-jump`: the wall clock of managers and agents stepped by ±1 h while they run.
//!
//! The namespaces share the machine's clock, which the lab must not change. Instead the managers
//! of `dca` (all three in a streaming lab) and both agents are restarted under libfaketime (`faketime` package), preloaded
//! with `FAKETIME_DONT_FAKE_MONOTONIC=1`: it shifts `CLOCK_REALTIME` (`SystemTime`, `time()`,
//! `gettimeofday`) only, and leaves `CLOCK_MONOTONIC` and `CLOCK_BOOTTIME` alone. The offset is
//! read from a file every second (`FAKETIME_TIMESTAMP_FILE`, `FAKETIME_CACHE_DURATION=1`), so
//! writing the file steps a running process's wall clock, within a second. HARP's leases,
//! trust deadlines and kernel entry deadlines count on the monotonic and boot-time clocks:
//! the point checked is that a step of the wall clock changes nothing. etcd, Postgres, the
//! writers and the observer keep the real clock, so the checker's one-clock proofs hold.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harp_core::config::Replication;

use crate::lab::hosts::{APP_HOSTS, Kind, PG_NODES};
use crate::lab::net::LabError;
use crate::lab::workload::unix_ms;
use crate::rt::block_on;

use super::Ctx;
use super::catalog_authority::{LOC, other_node};

/// Where Debian's `faketime` package puts the library for threaded programs.
const LIBS: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
];
const HOUR: i32 = 3600;

/// What is preloaded, and how it is told the offset. A streaming node's manager starts its
/// Postgres itself (and runs pg_rewind): those inherit the preload, but keep the real clock.
fn env(lib: &str, file: &Path) -> [(&'static str, String); 5] {
    [
        ("LD_PRELOAD", lib.to_owned()),
        ("FAKETIME_TIMESTAMP_FILE", file.display().to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
        ("FAKETIME_CACHE_DURATION", "1".to_owned()),
        (
            "FAKETIME_SKIP_CMDS",
            "postgres,pg_rewind,pg_basebackup,pg_controldata,pg_ctl".to_owned(),
        ),
    ]
}

fn offset_file(c: &Ctx, host: &str) -> PathBuf {
    c.lab.dir().join(host).join("faketime")
}

fn set_offset(c: &Ctx, host: &str, secs: i32) -> Result<(), LabError> {
    let file = offset_file(c, host);
    std::fs::write(&file, format!("{secs:+}\n")).map_err(|e| LabError::io(format!("{file:?}"), e))
}

/// The processes whose clock jumps: both managers of `LOC` (every manager of a streaming
/// cluster, whose one leader may be in any location) and both agents.
fn targets(c: &Ctx) -> Vec<(Kind, &'static str)> {
    let streaming = c.lab.spec().replication == Replication::Streaming;
    let mut t: Vec<(Kind, &str)> = PG_NODES
        .iter()
        .filter(|n| streaming || n.1 == LOC)
        .map(|n| (Kind::Manager, n.0))
        .collect();
    t.extend(APP_HOSTS.iter().map(|a| (Kind::Agent, a.0)));
    t
}

pub(super) fn clock_jump(c: &mut Ctx) -> Result<(), LabError> {
    let lib = LIBS
        .iter()
        .find(|l| Path::new(l).is_file())
        .ok_or_else(|| {
            LabError::Unsupported(
                "libfaketime is not installed (scripts/setup installs faketime)".into(),
            )
        })?;
    check_faketime(c, lib)?;
    let r = jumps(c, lib);
    // Back to the real clock whatever happened (restore() restarts with the recipe as it is).
    let back = restart_all(c, None);
    r.and(back)
}

/// `date +%s` under the same preload and a +1 h file must be an hour ahead: the library works.
fn check_faketime(c: &Ctx, lib: &str) -> Result<(), LabError> {
    let file = c.lab.dir().join("faketime-check");
    std::fs::write(&file, "+1h\n").map_err(|e| LabError::io(format!("{file:?}"), e))?;
    let date = |fake: bool| -> Result<i64, LabError> {
        let mut cmd = std::process::Command::new("date");
        cmd.arg("+%s");
        if fake {
            cmd.envs(env(lib, &file));
        }
        let out = cmd.output().map_err(|e| LabError::io("date", e))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|e| LabError::Unsupported(format!("date +%s: {e}")))
    };
    let (real, fake) = (date(false)?, date(true)?);
    if (fake - real - i64::from(HOUR)).abs() > 5 {
        return Err(LabError::Unsupported(format!(
            "libfaketime {lib} does not shift the clock (real {real}, faked {fake})"
        )));
    }
    Ok(())
}

/// Restarts every target, under libfaketime at offset 0 with `Some(lib)`, without it with
/// `None`; each restart is a marked fault, measured like `rolling-restart` and `agent-restart`.
fn restart_all(c: &mut Ctx, lib: Option<&str>) -> Result<(), LabError> {
    let leader = c.leader_of(LOC)?;
    // The leader's manager last: one handover, to a manager already restarted.
    let mut order = targets(c);
    order.sort_by_key(|(k, h)| (*k == Kind::Manager && *h == leader, *k == Kind::Agent));
    for (kind, host) in order {
        let file = offset_file(c, host);
        set_offset(c, host, 0)?;
        let how = if lib.is_some() { "under" } else { "without" };
        let f = c.mark(format!("restart {kind} {host} {how} libfaketime"));
        c.converge_from_now(format!("{kind} {host} restarted"));
        let p = c.lab.process(kind, host)?;
        for (k, v) in env(lib.unwrap_or_default(), &file) {
            p.set_env(k, lib.map(|_| v.as_str()));
        }
        p.stop();
        c.lab.restart(kind, host)?;
        c.end(f);
        let pid = c.lab.process(kind, host)?.pid();
        if lib.is_some() != preloaded(pid) {
            return Err(LabError::Unsupported(format!(
                "{kind} {host} (pid {pid}): libfaketime mapped: {}, wanted {}",
                preloaded(pid),
                lib.is_some()
            )));
        }
        c.pause(Duration::from_secs(2), 1000);
    }
    Ok(())
}

fn jumps(c: &mut Ctx, lib: &str) -> Result<(), LabError> {
    restart_all(c, Some(lib))?;
    let leader = c.leader_of(LOC)?;
    let other = other_node(&leader);
    let agents: Vec<&str> = APP_HOSTS.iter().map(|a| a.0).collect();
    for sign in [1, -1, 0] {
        // The leader's manager and the second agent one way, the others the other way.
        let moves = [
            (leader.as_str(), sign),
            (other, -sign),
            (agents[0], -sign),
            (agents[1], sign),
        ];
        let what: Vec<String> = moves.iter().map(|(h, s)| format!("{h} {:+}h", s)).collect();
        let f = c.mark(format!("wall clock stepped: {}", what.join(", ")));
        c.converge_from_now("wall clocks stepped");
        for (h, s) in moves {
            set_offset(c, h, s * HOUR)?;
        }
        // Proof that the running leader's manager took the step: the wall time it writes into
        // its status (at every move of its WAL, so often under load) is `sign` hours off.
        let shown = stepped_status(c, &leader, sign)?;
        // Two leases: renewals, keep-alives and trust deadlines all run on the stepped clock.
        c.pause(c.lease() * 2, 1000);
        c.end(f);
        if !shown {
            return Err(LabError::Unsupported(format!(
                "the status of manager {leader} never showed its wall clock {sign:+} h off"
            )));
        }
    }
    Ok(())
}

/// Whether libfaketime is mapped into process `pid`.
fn preloaded(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains("libfaketime"))
}

/// Waits (up to a lease) until `node`'s status carries an `updated_ms` within 10 minutes of
/// `hours` off the real clock.
fn stepped_status(c: &Ctx, node: &str, hours: i32) -> Result<bool, LabError> {
    let key = harp_core::keys::Keys::new(&c.lab.cluster()).node_status(node);
    let eps = c.lab.etcd_endpoints();
    let opts = c.lab.etcd_options();
    let want = f64::from(hours * HOUR) * 1000.0;
    let end = Instant::now() + c.lease();
    while Instant::now() < end {
        let updated = c.lab.on_ctl(|| {
            block_on(|| async {
                let opts = opts.clone();
                let mut client = etcd_client::Client::connect(&eps, Some(opts)).await.ok()?;
                let r = client.get(key.as_str(), None).await.ok()?;
                let v: serde_json::Value = serde_json::from_slice(r.kvs().first()?.value()).ok()?;
                v.get("updated_ms")?.as_f64()
            })
        })?;
        if updated.is_some_and(|u| (u - unix_ms() - want).abs() < 600_000.0) {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(false)
}
