//! bench/REPORT.md from the JSON files in bench/results/: what ran where and how, then one
//! section per bench with its tables and plots. A file that is missing or unreadable makes its
//! section say so and name the command that makes it; the rest is still written.

use std::path::Path;
use std::time::UNIX_EPOCH;

use serde_json::Value;

use super::{AllRun, Section, Status, plots, scale_table, tables, utc, utc_now};
use crate::bench::{machine, results_dir, workspace_root};

/// One results file as found on disk.
pub struct Loaded {
    pub section: Section,
    pub json: Option<Value>,
    /// Why `json` is `None`.
    pub problem: Option<String>,
    /// The file's modification time, as UTC text.
    pub written: Option<String>,
}

fn load(dir: &Path, s: Section) -> Loaded {
    let path = dir.join(s.file());
    let written = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| utc(d.as_secs()));
    let (json, problem) = match std::fs::read_to_string(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, Some("missing".into())),
        Err(e) => (None, Some(format!("unreadable: {e}"))),
        Ok(text) => match serde_json::from_str::<Value>(&text) {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(format!("not valid JSON: {e}"))),
        },
    };
    Loaded {
        section: s,
        json,
        problem,
        written,
    }
}

/// Writes bench/REPORT.md and bench/plots/*.svg; `run` is the `bench all` that just measured,
/// `None` when regenerating from the files alone.
pub fn write(run: Option<&AllRun>) -> anyhow::Result<()> {
    let results = results_dir()?;
    let bench_dir = workspace_root().join("bench");
    let plot_dir = bench_dir.join("plots");
    std::fs::create_dir_all(&plot_dir)?;
    let loaded: Vec<Loaded> = Section::ALL.iter().map(|&s| load(&results, s)).collect();
    let get = |s: Section| {
        loaded
            .iter()
            .find(|l| l.section == s)
            .and_then(|l| l.json.as_ref())
    };
    let mut missing: Vec<String> = Vec::new();

    let mut md = String::from("# HARP benchmark report\n\n");
    md += &header(run, &loaded);
    md += "\n## Data path: throughput relative to direct\n\n";
    match get(Section::Datapath) {
        Some(d) => {
            md += &tables::datapath(d);
            md += &plot_link(plots::throughput(d, &plot_dir), "throughput", &mut missing);
        }
        None => md += &absent(Section::Datapath, &loaded, &mut missing),
    }
    md += "\n## Failover and switchover (HARP: fault → new leader seen in etcd)\n\n\
           Substrate: a multi-writer cluster (3 independent Postgres nodes, no replication): \
           the time for the lease to move, not a promotion.\n\n";
    match get(Section::Failover) {
        Some(f) => md += &tables::failover(f),
        None => md += &absent(Section::Failover, &loaded, &mut missing),
    }
    md += "\n## Client-observed unavailability: HARP vs Patroni + HAProxy\n\n";
    match get(Section::Unavailability) {
        Some(u) => {
            md += &tables::unavailability(u);
            for made in plots::timelines(u, &plot_dir) {
                md += &plot_link(made, "failover timeline", &mut missing);
            }
        }
        None => md += &absent(Section::Unavailability, &loaded, &mut missing),
    }
    md += "\n## Scale: many concurrent clients\n\n";
    match get(Section::Scale) {
        Some(s) => {
            md += &scale_table::scale(s);
            md += &plot_link(
                plots::scale_rss(s, &plot_dir),
                "RSS vs clients",
                &mut missing,
            );
        }
        None => md += &absent(Section::Scale, &loaded, &mut missing),
    }
    md += "\n## Missing\n\n";
    if missing.is_empty() {
        md += "Nothing: every section has its results.\n";
    }
    for m in &missing {
        md += &format!("- {m}\n");
    }
    let out = bench_dir.join("REPORT.md");
    std::fs::write(&out, &md)?;
    println!("wrote {} and {}", out.display(), plot_dir.display());
    for m in &missing {
        println!("MISSING: {m}");
    }
    Ok(())
}

/// When, where, and with which commands.
fn header(run: Option<&AllRun>, loaded: &[Loaded]) -> String {
    let mut md = format!("Written {} on {}.\n\n", utc_now(), machine());
    match run {
        Some(r) => {
            md += &format!("Measured by `{}`, started {}:\n\n", r.command, r.date);
            for o in &r.outcomes {
                let how = match &o.status {
                    Status::Ran { secs } => format!("ran ({secs} s)"),
                    Status::Failed { secs, why } => format!("**failed** after {secs} s ({why})"),
                    Status::Skipped => "skipped (--skip): earlier results used".into(),
                    Status::Missing => "**not in this build**: earlier results, if any".into(),
                };
                md += &format!("- `{}`: {how}\n", o.command);
            }
        }
        None => {
            md += "Regenerated by `cargo xtask bench report` from the files below, without \
                   measuring; `cargo xtask bench all` measures everything again.\n";
        }
    }
    md += "\n| bench | results file | written | machine | command |\n| --- | --- | --- | --- | --- |\n";
    for l in loaded {
        let file = format!("bench/results/{}", l.section.file());
        match (&l.json, &l.problem) {
            (Some(v), _) => {
                md += &format!(
                    "| {} | `{file}` | {} | {} | `{}` |\n",
                    l.section.name(),
                    l.written.as_deref().unwrap_or("?"),
                    v["machine"].as_str().unwrap_or("?"),
                    v["command"].as_str().unwrap_or("?"),
                );
            }
            (None, p) => {
                md += &format!(
                    "| {} | `{file}` **{}** | | | `{}` makes it |\n",
                    l.section.name(),
                    p.as_deref().unwrap_or("missing"),
                    make(l.section)
                );
            }
        }
    }
    md
}

/// The command that makes `s`'s results.
fn make(s: Section) -> String {
    format!("cargo xtask bench {}", s.name())
}

/// The section text for a results file that is not there, recorded in `missing`.
fn absent(s: Section, loaded: &[Loaded], missing: &mut Vec<String>) -> String {
    let problem = loaded
        .iter()
        .find(|l| l.section == s)
        .and_then(|l| l.problem.clone())
        .unwrap_or_else(|| "missing".into());
    let line = format!(
        "bench/results/{} is {problem}: `{}` makes it.",
        s.file(),
        make(s)
    );
    missing.push(line.clone());
    format!("_{line}_\n")
}

/// A markdown image for a plot that was drawn, or the reason it was not (also in `missing`).
fn plot_link(made: anyhow::Result<String>, what: &str, missing: &mut Vec<String>) -> String {
    match made {
        Ok(file) => format!("\n![{what}](plots/{file})\n"),
        Err(e) => {
            let line = format!("plot {what}: {e:#}");
            missing.push(line.clone());
            format!("\n_{line}_\n")
        }
    }
}
