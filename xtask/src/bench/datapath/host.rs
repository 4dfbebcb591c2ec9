//! What the bench reads from and asks of the host: programs on `PATH`, the open-files limit, and
//! a process's memory and CPU time from `/proc`.

use std::process::Command;

use anyhow::{Context, bail};
use nix::unistd::{SysconfVar, sysconf};

pub fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(prog).is_file()))
}

/// Makes sure this process (and the agent it spawns later, which inherits the limit) may open
/// `need` files: the idle sessions take one socket here and two in the agent. Raises the soft
/// limit to the hard one with `prlimit` if it is lower than `need`.
pub fn ensure_nofile(need: u64) -> anyhow::Result<()> {
    let read = || -> Option<(u64, u64)> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        let mut nums = line["Max open files".len()..].split_whitespace();
        let parse = |s: Option<&str>| match s? {
            "unlimited" => Some(u64::MAX),
            n => n.parse().ok(),
        };
        Some((parse(nums.next())?, parse(nums.next())?))
    };
    let (soft, hard) = read().context("read the open-files limit from /proc/self/limits")?;
    if soft >= need {
        return Ok(());
    }
    let hard_s = if hard == u64::MAX {
        "unlimited".to_string()
    } else {
        hard.to_string()
    };
    let _ = Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={hard_s}:{hard_s}"))
        .status();
    let (soft, _) = read().context("read the open-files limit")?;
    if soft < need {
        bail!(
            "the open-files limit is {soft} (hard {hard_s}); {need} are needed: raise it (ulimit -n)"
        );
    }
    println!("raised the open-files soft limit to {soft}");
    Ok(())
}

/// VmRSS of `pid`, in kB.
pub fn vm_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds `pid` has used: utime + stime of all its threads, plus cutime + cstime of its
/// children once reaped (socat forks one per connection), from `/proc/<pid>/stat`.
pub fn cpu_s(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let ticks = cpu_ticks(&stat).with_context(|| format!("parse {path}: {stat:?}"))?;
    Ok(ticks as f64 / clock_ticks_per_s()?)
}

/// utime + stime + cutime + cstime (fields 14–17) of a `/proc/<pid>/stat` line.
fn cpu_ticks(stat: &str) -> Option<u64> {
    // "<pid> (<comm>) <state> ..."; comm may contain spaces and parentheses. After it come
    // fields 3 (state) onward.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields
        .get(14 - 3..=17 - 3)?
        .iter()
        .map(|f| f.parse::<u64>().ok())
        .sum()
}

/// `sysconf(_SC_CLK_TCK)`: the unit of the times in `/proc/<pid>/stat`.
fn clock_ticks_per_s() -> anyhow::Result<f64> {
    match sysconf(SysconfVar::CLK_TCK).context("sysconf(_SC_CLK_TCK)")? {
        Some(t) if t > 0 => Ok(t as f64),
        other => bail!("sysconf(_SC_CLK_TCK) = {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_cpu_fields_of_proc_stat() {
        // Fields 14–17 are 11, 22, 3 and 4; comm has a space and a parenthesis.
        let stat = "4242 (soc at)) S 1 4242 4242 0 -1 4194560 500 0 0 0 11 22 3 4 20 0 1 0 \
                    100 1000 200 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(40));
        assert_eq!(cpu_ticks("4242 (x) S 1 2"), None);
    }

    #[test]
    fn reads_our_own_cpu_time() {
        let s = cpu_s(std::process::id()).unwrap();
        assert!(s >= 0.0);
    }
}
