//! `cargo xtask lab …`: the multi-host lab (network namespaces on this machine; needs root).
//! `run <scenario> --seed N` runs one scenario, `all` every scenario for several seeds and
//! writes bench/results/lab.json (`lab-streaming.json` with `--replication streaming`); reports
//! go to bench/lab/ (timeline + SVG; `streaming-` before a streaming run's) and target/lab/
//! (full histories).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use harp_core::config::{Replication, SynchronousMode};
use harp_tests::lab::hosts::{Lab, LabSpec};
use harp_tests::lab::net::Net;
use harp_tests::lab::scenario::{self, ALL, run::RunResult};
use serde::Serialize;

use crate::bench::{machine, results_dir, workspace_root};

const LAB: &str = "xlab";

#[derive(Subcommand)]
pub enum LabCmd {
    /// The scenarios and what each does.
    List,
    /// One scenario.
    Run {
        name: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[command(flatten)]
        opts: LabOpts,
    },
    /// Every scenario for seeds 1..=SEEDS; writes bench/results/lab.json (streaming:
    /// lab-streaming.json).
    All {
        #[arg(long, default_value_t = 5)]
        seeds: u64,
        /// Only these scenarios, comma-separated.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        #[command(flatten)]
        opts: LabOpts,
    },
    /// Removes what a crashed lab run left behind (namespaces).
    Clean,
}

/// How the lab's cluster runs.
#[derive(clap::Args, Clone, Copy)]
pub struct LabOpts {
    /// Leader lease (seconds) of the lab's managers.
    #[arg(long, default_value_t = 6)]
    lease: u64,
    /// `cluster.replication` of the lab's nodes: multi_writer or streaming.
    #[arg(long, value_parser = parse_replication, default_value = "multi_writer")]
    replication: Replication,
    /// `cluster.synchronous_mode` of a streaming lab: off, on or strict.
    #[arg(long, value_parser = parse_synchronous, default_value = "on")]
    synchronous: SynchronousMode,
    /// Plaintext etcd with no users (the default is TLS with client certificates and etcd
    /// users, as harp-host.sh renders with HARP_PKI_DIR).
    #[arg(long)]
    etcd_plaintext: bool,
}

fn parse_synchronous(s: &str) -> Result<SynchronousMode, String> {
    match s {
        "off" => Ok(SynchronousMode::Off),
        "on" => Ok(SynchronousMode::On),
        "strict" => Ok(SynchronousMode::Strict),
        _ => Err(format!("{s}: expected off, on or strict")),
    }
}

fn parse_replication(s: &str) -> Result<Replication, String> {
    match s {
        "multi_writer" => Ok(Replication::MultiWriter),
        "streaming" => Ok(Replication::Streaming),
        _ => Err(format!("{s}: expected multi_writer or streaming")),
    }
}

#[derive(Serialize)]
struct ScenarioResult {
    name: String,
    seed: u64,
    ok: bool,
    split_brain: usize,
    lost_writes: usize,
    stale_writes: usize,
    max_stale_ms: f64,
    max_converge_ms: Option<f64>,
    acked: usize,
    failed: usize,
    unknown: usize,
    error: Option<String>,
    report: Option<String>,
}

#[derive(Serialize)]
struct LabReport {
    bench: &'static str,
    runs: usize,
    split_brain: usize,
    lost_writes: usize,
    max_converge_ms: Option<f64>,
    target_converge_ms: f64,
    met: bool,
    lease_ms: u64,
    /// etcd over TLS with client certificates and a least-privilege user per unit.
    etcd_tls: bool,
    /// `multi_writer` or `streaming`.
    replication: &'static str,
    /// `cluster.synchronous_mode` of the nodes: `off`, `on` or `strict` (`off` when
    /// multi-writer).
    synchronous_mode: &'static str,
    scenarios: Vec<ScenarioResult>,
    machine: String,
    #[serde(flatten)]
    provenance: crate::bench::Provenance,
    duration_s: f64,
}

pub fn run(cmd: LabCmd) -> anyhow::Result<()> {
    match cmd {
        LabCmd::List => {
            for s in ALL {
                println!("{:<20} {}", s.name, s.about);
            }
            Ok(())
        }
        LabCmd::Clean => {
            Net::cleanup_stale(LAB)?;
            clean_kernel_leftovers()?;
            println!("lab {LAB}: nothing left behind");
            Ok(())
        }
        LabCmd::Run { name, seed, opts } => {
            let replication = opts.replication;
            let sc = scenario::find(&name)?;
            let (mut lab, out) = start(opts)?;
            let r = scenario::run::run(&mut lab, sc, seed, &out)
                .with_context(|| format!("scenario {name} seed {seed}"))?;
            let row = summarize(&r, None, replication);
            publish(&r, replication)?;
            print_row(&row);
            println!("report: {}", r.report_dir.display());
            if !row.ok {
                bail!("scenario {name} seed {seed}: violations (see the timeline)");
            }
            Ok(())
        }
        LabCmd::All { seeds, only, opts } => all(seeds, &only, opts),
    }
}

/// The kernel agent's pins of this lab, and empty test cgroups whose creator is gone.
fn clean_kernel_leftovers() -> anyhow::Result<()> {
    let pins = std::path::Path::new("/sys/fs/bpf/harp");
    if let Ok(dir) = std::fs::read_dir(pins) {
        for e in dir.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("hl-{LAB}-"))
            {
                std::fs::remove_dir_all(e.path())?;
            }
        }
    }
    let root = harp_tests::cgroup::cgroup2_root();
    for e in std::fs::read_dir(&root)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("harp-test-")
            .and_then(|r| r.split('-').next())
        else {
            continue;
        };
        let empty = std::fs::read_to_string(e.path().join("cgroup.procs"))
            .is_ok_and(|p| p.trim().is_empty());
        if empty && !std::path::Path::new("/proc").join(pid).exists() {
            // rmdir of an empty cgroup also detaches what was attached to it.
            let _ = std::fs::remove_dir(e.path());
        }
    }
    Ok(())
}

fn start(opts: LabOpts) -> anyhow::Result<(Lab, PathBuf)> {
    let LabOpts {
        lease,
        replication,
        synchronous,
        etcd_plaintext,
    } = opts;
    // A release build, what users run (as the benchmarks measure).
    crate::test::cargo(&["build", "--release", "--workspace", "--bins"])?;
    harp_tests::bins::set_bin_dir(workspace_root().join("target/release"));
    let mut spec = LabSpec::new(LAB);
    spec.lease_secs = lease;
    spec.refresh_ms = (lease * 1000 / 3).max(500);
    spec.replication = replication;
    spec.synchronous_mode = synchronous;
    spec.etcd_tls = !etcd_plaintext;
    let sync = match replication {
        Replication::Streaming => format!(", synchronous_mode {}", synchronous.as_str()),
        Replication::MultiWriter => String::new(),
    };
    let etcd = if etcd_plaintext {
        "plaintext"
    } else {
        "TLS + users"
    };
    println!(
        "lab: starting 3 etcd ({etcd}), 3 Postgres + managers ({}{sync}), 2 agents in network \
         namespaces…",
        replication.as_str()
    );
    let lab = Lab::start(spec).context("start the lab (needs root, nft, ip)")?;
    let out = workspace_root().join("target/lab");
    Ok((lab, out))
}

fn all(seeds: u64, only: &[String], opts: LabOpts) -> anyhow::Result<()> {
    let (lease, replication) = (opts.lease, opts.replication);
    let chosen: Vec<_> = ALL
        .iter()
        .filter(|s| only.is_empty() || only.iter().any(|o| o == s.name))
        .collect();
    if chosen.is_empty() {
        bail!("--only matches no scenario; see `cargo xtask lab list`");
    }
    let began = std::time::Instant::now();
    let (mut lab, out) = start(opts)?;
    let sync_mode = lab.spec().effective_synchronous_mode().as_str();
    let mut rows = Vec::new();
    for seed in 1..=seeds {
        for sc in &chosen {
            println!("lab: {} seed {seed} …", sc.name);
            let row = match scenario::run::run(&mut lab, sc, seed, &out) {
                Ok(r) => {
                    publish(&r, replication)?;
                    summarize(&r, None, replication)
                }
                Err(e) => {
                    // A lab that could not be restored is rebuilt for the next run.
                    let err = format!("{e}");
                    drop(lab);
                    lab = start(opts)?.0;
                    failed_row(sc.name, seed, err)
                }
            };
            print_row(&row);
            rows.push(row);
        }
    }
    let max_converge_ms = rows
        .iter()
        .filter_map(|r| r.max_converge_ms)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let target = (lease * 1000 + 1000) as f64;
    let report = LabReport {
        bench: "lab",
        runs: rows.len(),
        split_brain: rows.iter().map(|r| r.split_brain).sum(),
        lost_writes: rows.iter().map(|r| r.lost_writes).sum(),
        max_converge_ms,
        target_converge_ms: target,
        met: rows.iter().all(|r| r.ok && r.error.is_none())
            && max_converge_ms.is_some_and(|m| m <= target),
        lease_ms: lease * 1000,
        etcd_tls: !opts.etcd_plaintext,
        replication: replication.as_str(),
        synchronous_mode: sync_mode,
        scenarios: rows,
        machine: machine(),
        provenance: crate::bench::provenance(),
        duration_s: (began.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    };
    let path = results_dir()?.join(format!("{}.json", stem("lab", replication)));
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!(
        "lab: {} runs, split brain {}, lost writes {}, max converge {:?} ms (target {target}) → {}",
        report.runs,
        report.split_brain,
        report.lost_writes,
        report.max_converge_ms,
        path.display()
    );
    if !report.met {
        bail!("lab: target missed (see {} and bench/lab/)", path.display());
    }
    Ok(())
}

/// Copies a run's timeline and plot to bench/lab/ (small, committed).
/// `name`, or `streaming-name` / `name-streaming` for a streaming lab: its results never
/// overwrite the multi-writer ones.
fn stem(name: &str, replication: Replication) -> String {
    match (replication, name) {
        (Replication::MultiWriter, _) => name.to_owned(),
        (Replication::Streaming, "lab") => "lab-streaming".to_owned(),
        (Replication::Streaming, _) => format!("streaming-{name}"),
    }
}

fn publish(r: &RunResult, replication: Replication) -> anyhow::Result<()> {
    let dir = workspace_root().join("bench/lab");
    std::fs::create_dir_all(&dir)?;
    let stem = stem(&format!("{}-seed-{}", r.scenario, r.seed), replication);
    copy(
        &r.report_dir.join("timeline.txt"),
        &dir.join(format!("{stem}.txt")),
    )?;
    copy(
        &r.report_dir.join("writes.svg"),
        &dir.join(format!("{stem}.svg")),
    )
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("copy {} → {}", from.display(), to.display()))?;
    Ok(())
}

fn summarize(r: &RunResult, error: Option<String>, replication: Replication) -> ScenarioResult {
    let v = &r.verdict;
    ScenarioResult {
        name: r.scenario.to_owned(),
        seed: r.seed,
        ok: v.ok() && error.is_none(),
        split_brain: v.split_brain,
        lost_writes: v.lost_writes,
        stale_writes: v.stale_writes,
        max_stale_ms: v.max_stale_ms,
        max_converge_ms: v.max_converge_ms,
        acked: v.acked,
        failed: v.failed,
        unknown: v.unknown,
        error,
        report: Some(format!(
            "bench/lab/{}.txt",
            stem(&format!("{}-seed-{}", r.scenario, r.seed), replication)
        )),
    }
}

fn failed_row(name: &str, seed: u64, error: String) -> ScenarioResult {
    ScenarioResult {
        name: name.to_owned(),
        seed,
        ok: false,
        split_brain: 0,
        lost_writes: 0,
        stale_writes: 0,
        max_stale_ms: 0.0,
        max_converge_ms: None,
        acked: 0,
        failed: 0,
        unknown: 0,
        error: Some(error),
        report: None,
    }
}

fn print_row(r: &ScenarioResult) {
    println!(
        "  {:<20} seed {:<2} {} split_brain={} lost={} stale={} (max {:.0} ms) converge={} ms acked={} failed={} unknown={}{}",
        r.name,
        r.seed,
        if r.ok { "OK  " } else { "FAIL" },
        r.split_brain,
        r.lost_writes,
        r.stale_writes,
        r.max_stale_ms,
        r.max_converge_ms
            .map_or("-".to_owned(), |m| format!("{m:.0}")),
        r.acked,
        r.failed,
        r.unknown,
        r.error
            .as_deref()
            .map_or(String::new(), |e| format!(" error: {e}")),
    );
}
