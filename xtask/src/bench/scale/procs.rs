//! What the scale bench reads from `/proc` and cgroupfs: a path's CPU time and memory (socat
//! forks a process per connection, so its cost is its process tree's), Postgres' memory, and
//! the host's.

use anyhow::Context;
use harp_tests::cgroup::ChildCgroup;
use harp_tests::process::children_of;

use crate::bench::datapath::host;

/// A process and its direct children, at one instant.
pub struct Tree {
    /// Sum of VmRSS, in kB.
    pub rss_kb: u64,
    pub processes: usize,
}

/// `pid` and its live children now. `Err` if `pid` itself is gone.
pub fn tree(pid: u32) -> anyhow::Result<Tree> {
    let mut t = Tree {
        rss_kb: host::vm_rss_kb(pid).with_context(|| format!("VmRSS of {pid}"))?,
        processes: 1,
    };
    for child in children_of(pid) {
        // A child may exit between listing and reading.
        if let Some(rss) = host::vm_rss_kb(child) {
            t.rss_kb += rss;
            t.processes += 1;
        }
    }
    Ok(t)
}

/// Moves `pid` (all its threads; its later children follow) into `cg`, whose CPU time then is
/// the path's: `/proc/<pid>/stat` rounds each process's time down to clock ticks, which loses
/// all of it for a thousand socat children that each run for microseconds.
pub fn account_in(cg: &ChildCgroup, pid: u32) -> anyhow::Result<()> {
    let procs = cg.path().join("cgroup.procs");
    std::fs::write(&procs, pid.to_string())
        .with_context(|| format!("move {pid} into {}", procs.display()))
}

/// CPU seconds used by every process that has been in `cg` (`usage_usec` of its cpu.stat).
pub fn cgroup_cpu_s(cg: &ChildCgroup) -> anyhow::Result<f64> {
    let path = cg.path().join("cpu.stat");
    let stat =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let usec: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no usage_usec in {}", path.display()))?;
    Ok(usec as f64 / 1e6)
}

/// Proportional set size of `pid` and its children, in kB: Postgres' backends share its
/// shared memory, so their VmRSS would count it once per backend.
pub fn tree_pss_kb(pid: u32) -> u64 {
    std::iter::once(pid)
        .chain(children_of(pid))
        .filter_map(pss_kb)
        .sum()
}

fn pss_kb(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    kb_field(&rollup, "Pss:")
}

/// MemAvailable of the host, in MB.
pub fn mem_available_mb() -> anyhow::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("read /proc/meminfo")?;
    kb_field(&meminfo, "MemAvailable:")
        .map(|kb| kb / 1024)
        .context("no MemAvailable in /proc/meminfo")
}

/// The kB value of the line starting with `key` (`"Pss:      1234 kB"`).
fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kb_fields_and_our_own_tree() {
        let text = "Rss:   2048 kB\nPss:   1024 kB\n";
        assert_eq!(kb_field(text, "Pss:"), Some(1024));
        assert_eq!(kb_field(text, "Swap:"), None);
        let me = tree(std::process::id()).unwrap();
        assert!(me.rss_kb > 0 && me.processes >= 1);
        assert!(mem_available_mb().unwrap() > 0);
    }
}
