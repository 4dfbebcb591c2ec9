//! One run: start the writer, let it write steadily, make the fault, wait until writes flow
//! steadily again, then check every acknowledged write on the current primary. The run's
//! unavailability is the longest gap between two acknowledged writes from 1 s before the fault
//! until writes have flowed for [`STEADY`] after it; its RPO the acknowledged writes the
//! primary does not have, row by row.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{Deployment, Fault, System};
use crate::writer::{App, mono_ns};

/// Writes must have flowed this long, with no gap over [`STEADY_GAP`], before a fault and
/// before a run counts as recovered.
const STEADY: Duration = Duration::from_secs(3);
/// A longer gap between acks means the system is not (yet) available.
const STEADY_GAP: Duration = Duration::from_millis(500);
/// How far before the fault the longest gap is looked for (the gap the fault opens starts at
/// the last ack before it, at most one write interval earlier).
const BEFORE: Duration = Duration::from_secs(1);
/// Bound on the writer warming up and on a system recovering (Patroni's node loss at its
/// defaults takes about 30 s).
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(180);
/// Timeline: from this long before the fault until this long after the end of the gap.
const TIMELINE_MARGIN: Duration = Duration::from_secs(2);
pub const BUCKET: Duration = Duration::from_millis(100);

pub struct RunResult {
    pub node: String,
    pub gap: Duration,
    /// Acks per [`BUCKET`] from [`TIMELINE_MARGIN`] before the fault to as long after the gap.
    pub timeline: Vec<u32>,
    /// Where the fault falls in `timeline`, and where the gap ends.
    pub fault_at: Duration,
    pub recovered_at: Duration,
    /// Requests and connects of the writer that failed in the measured window: what the
    /// application saw as errors.
    pub errors: u32,
    /// Acknowledged writes (over the whole run) missing on the primary after it.
    pub lost: u64,
}

/// Kills the writer if the run fails half way.
struct Writer(Option<App>);

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(app) = self.0.take() {
            app.stop();
        }
    }
}

pub fn one(dep: &mut dyn Deployment, system: System, fault: Fault) -> anyhow::Result<RunResult> {
    dep.wait_healthy()?;
    let steered_before = dep.steered(system)?;
    let mut writer = Writer(Some(App::spawn(dep.writer(system)?)?));
    let app = writer.0.as_ref().expect("writer running");
    wait_until(app, "the writer to write steadily", dep, |acks, now| {
        steady_since(acks, 0).is_some_and(|t| now - t >= STEADY.as_nanos() as u64)
    })?;
    let (fault_ns, node) = dep.inject(fault)?;
    let from = fault_ns - BEFORE.as_nanos() as u64;
    let mut end = 0;
    wait_until(
        app,
        "writes to flow again after the fault",
        dep,
        |acks, now| {
            let Some(t) = steady_since(acks, fault_ns) else {
                return false;
            };
            end = now;
            now - t >= STEADY.as_nanos() as u64
        },
    )?;
    let errors = app
        .errors()
        .into_iter()
        .filter(|&t| t >= from && t <= end)
        .count() as u32;
    let acked = writer.0.take().expect("writer running").stop();
    let acks: Vec<u64> = acked.iter().map(|a| a.at_ns).collect();
    if let (Some(before), Some(after)) = (steered_before, dep.steered(system)?)
        && after <= before
    {
        bail!("the kernel steered none of the writer's connects ({before} → {after})");
    }
    let dsn = dep.primary_dsn()?;
    let lost = harp_tests::rt::block_on(|| crate::writer::missing_rows(&dsn, &acked))
        .context("check the acknowledged writes on the primary")?
        .len() as u64;
    let Some((start, stop)) = longest_gap(&acks, from, end) else {
        bail!("no acknowledged writes around the fault");
    };
    let t0 = fault_ns - TIMELINE_MARGIN.as_nanos() as u64;
    let t1 = stop + TIMELINE_MARGIN.as_nanos() as u64;
    Ok(RunResult {
        node,
        gap: Duration::from_nanos(stop - start),
        timeline: timeline(&acks, t0, t1, BUCKET.as_nanos() as u64),
        fault_at: Duration::from_nanos(fault_ns - t0),
        recovered_at: Duration::from_nanos(stop - t0),
        errors,
        lost,
    })
}

/// Polls the writer's acks (and the clock, CLOCK_MONOTONIC ns) until `done` says so.
fn wait_until(
    app: &App,
    what: &str,
    dep: &dyn Deployment,
    mut done: impl FnMut(&[u64], u64) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    loop {
        let acks: Vec<u64> = app.acks().iter().map(|a| a.at_ns).collect();
        if done(&acks, mono_ns()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let last = acks.last().map(|&t| (mono_ns() - t) / 1_000_000);
            return Err(anyhow::anyhow!("{}", dep.logs())).context(format!(
                "waited {RECOVERY_TIMEOUT:?} for {what}; {} acks, the last {last:?} ms ago",
                acks.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first ack at or after `from` after which no gap exceeds [`STEADY_GAP`] — up to now:
/// `None` if none, or if the last ack is older than that.
fn steady_since(acks: &[u64], from: u64) -> Option<u64> {
    let gap = STEADY_GAP.as_nanos() as u64;
    let last = *acks.last()?;
    if last < from || mono_ns().saturating_sub(last) > gap {
        return None;
    }
    let mut since = last;
    for w in acks.windows(2).rev() {
        if w[0] < from || w[1] - w[0] > gap {
            break;
        }
        since = w[0];
    }
    Some(since)
}

/// The longest gap between consecutive acks within `[from, to]`: `(start, end)`.
fn longest_gap(acks: &[u64], from: u64, to: u64) -> Option<(u64, u64)> {
    let window: Vec<u64> = acks
        .iter()
        .copied()
        .filter(|&t| t >= from && t <= to)
        .collect();
    window
        .windows(2)
        .map(|w| (w[0], w[1]))
        .max_by_key(|(a, b)| b - a)
}

/// Acks per `bucket` ns from `t0` on, in whole buckets up to and including `t1`'s.
fn timeline(acks: &[u64], t0: u64, t1: u64, bucket: u64) -> Vec<u32> {
    let mut out = vec![0; (t1.saturating_sub(t0)).div_ceil(bucket) as usize];
    for &t in acks.iter().filter(|&&t| t >= t0) {
        if let Some(n) = out.get_mut(((t - t0) / bucket) as usize) {
            *n += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn gap_and_timeline() {
        let acks = [0, 10 * MS, 20 * MS, 900 * MS, 910 * MS, 1500 * MS];
        assert_eq!(longest_gap(&acks, 0, 1000 * MS), Some((20 * MS, 900 * MS)));
        assert_eq!(
            longest_gap(&acks, 900 * MS, 2000 * MS),
            Some((910 * MS, 1500 * MS))
        );
        assert_eq!(longest_gap(&acks, 0, 5 * MS), None);
        assert_eq!(
            timeline(&acks, 0, 1000 * MS, 100 * MS),
            [3, 0, 0, 0, 0, 0, 0, 0, 0, 2]
        );
    }

    #[test]
    fn steady_since_stops_at_a_long_gap_or_at_from() {
        let now = mono_ns();
        let acks = [
            now - 3000 * MS,
            now - 1000 * MS,
            now - 500 * MS,
            now - 10 * MS,
        ];
        assert_eq!(steady_since(&acks, 0), Some(now - 1000 * MS));
        assert_eq!(steady_since(&acks, now - 600 * MS), Some(now - 500 * MS));
        assert_eq!(steady_since(&acks[..2], 0), None);
    }
}
