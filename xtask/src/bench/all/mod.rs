//! `cargo xtask bench all`: every bench in one go on this machine — datapath, failover, scale,
//! unavailability — then bench/REPORT.md with its plots; `cargo xtask bench report` writes the
//! report alone from the JSON files already in bench/results/.
//!
//! Each bench runs as a child process of this executable (`bench <name> …`), exactly as its own
//! command would: one failing bench does not lose the others' results, and a bench this build
//! does not have is reported missing, not a build error.

mod plots;
mod report;
#[cfg(test)]
mod report_tests;
mod scale_table;
mod tables;

use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use clap::{Subcommand, ValueEnum};

use super::Bench;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Section {
    Datapath,
    Failover,
    Scale,
    Unavailability,
}

impl Section {
    pub const ALL: [Section; 4] = [
        Section::Datapath,
        Section::Failover,
        Section::Scale,
        Section::Unavailability,
    ];

    /// The order `bench all` measures in: the comparisons that take longest to redo first, so
    /// an interrupted run still leaves the newest of them.
    pub const RUN_ORDER: [Section; 4] = [
        Section::Unavailability,
        Section::Failover,
        Section::Scale,
        Section::Datapath,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Section::Datapath => "datapath",
            Section::Failover => "failover",
            Section::Scale => "scale",
            Section::Unavailability => "unavailability",
        }
    }

    /// Its results file in bench/results/.
    pub fn file(self) -> String {
        format!("{}.json", self.name())
    }
}

/// What `cargo xtask bench all` was asked to do.
pub struct Params {
    pub datapath_secs: u64,
    pub rounds: usize,
    pub failover_runs: usize,
    pub scale_counts: Vec<u32>,
    pub scale_secs: u64,
    pub unavailability_runs: Option<usize>,
    pub skip: Vec<Section>,
}

impl Params {
    /// The `bench …` arguments of `s`.
    fn args(&self, s: Section) -> Vec<String> {
        let mut a = vec!["bench".to_string(), s.name().to_string()];
        let mut opt = |k: &str, v: String| a.extend([format!("--{k}"), v]);
        match s {
            Section::Datapath => {
                opt("secs", self.datapath_secs.to_string());
                opt("rounds", self.rounds.to_string());
            }
            Section::Failover => opt("runs", self.failover_runs.to_string()),
            Section::Scale => {
                let counts: Vec<String> = self.scale_counts.iter().map(u32::to_string).collect();
                opt("counts", counts.join(","));
                opt("secs", self.scale_secs.to_string());
            }
            Section::Unavailability => {
                if let Some(r) = self.unavailability_runs {
                    opt("runs", r.to_string());
                }
            }
        }
        a
    }

    fn command(&self) -> String {
        let counts: Vec<String> = self.scale_counts.iter().map(u32::to_string).collect();
        let mut c = format!(
            "cargo xtask bench all --datapath-secs {} --rounds {} --failover-runs {} \
             --scale-counts {} --scale-secs {}",
            self.datapath_secs,
            self.rounds,
            self.failover_runs,
            counts.join(","),
            self.scale_secs
        );
        if let Some(r) = self.unavailability_runs {
            c += &format!(" --unavailability-runs {r}");
        }
        if !self.skip.is_empty() {
            let s: Vec<&str> = self.skip.iter().map(|s| s.name()).collect();
            c += &format!(" --skip {}", s.join(","));
        }
        c
    }
}

/// How one section of `bench all` went.
pub enum Status {
    Ran {
        secs: f64,
    },
    Failed {
        secs: f64,
        why: String,
    },
    Skipped,
    /// This build has no such bench.
    Missing,
}

pub struct Outcome {
    pub section: Section,
    pub command: String,
    pub status: Status,
}

/// One `bench all`, for the report's header.
pub struct AllRun {
    pub date: String,
    pub command: String,
    pub outcomes: Vec<Outcome>,
}

pub fn run_all(p: Params) -> anyhow::Result<()> {
    let date = utc_now();
    let mut outcomes = Vec::new();
    for s in Section::RUN_ORDER {
        let args = p.args(s);
        let command = format!("cargo xtask {}", args.join(" "));
        let status = if p.skip.contains(&s) {
            Status::Skipped
        } else if !<Bench as Subcommand>::has_subcommand(s.name()) {
            println!("NOTE: this build has no `bench {}`: skipped", s.name());
            Status::Missing
        } else {
            println!("\n=== {command}");
            let t0 = Instant::now();
            // /proc/self/exe: this very binary, even if cargo has replaced the file since.
            let res = Command::new("/proc/self/exe").args(&args).status();
            let secs = (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0;
            match res {
                Ok(st) if st.success() => Status::Ran { secs },
                Ok(st) => Status::Failed {
                    secs,
                    why: st.to_string(),
                },
                Err(e) => Status::Failed {
                    secs,
                    why: format!("cannot start: {e}"),
                },
            }
        };
        outcomes.push(Outcome {
            section: s,
            command,
            status,
        });
    }
    let run = AllRun {
        date,
        command: p.command(),
        outcomes,
    };
    report::write(Some(&run))?;
    let failed: Vec<&str> = run
        .outcomes
        .iter()
        .filter(|o| matches!(o.status, Status::Failed { .. }))
        .map(|o| o.section.name())
        .collect();
    if !failed.is_empty() {
        bail!(
            "failed: {} (the report says so; their earlier results, if any, were kept)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// `cargo xtask bench report`: the report from the results on disk, without measuring.
pub fn report_only() -> anyhow::Result<()> {
    report::write(None)
}

/// Now, as `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM UTC` (proleptic Gregorian, days to civil).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400 + 3_660), "2000-02-29 01:01 UTC");
        assert_eq!(utc(1_798_761_599), "2026-12-31 23:59 UTC");
    }

    #[test]
    fn every_section_runs_its_own_command() {
        let p = Params {
            datapath_secs: 10,
            rounds: 3,
            failover_runs: 20,
            scale_counts: vec![1, 100],
            scale_secs: 3,
            unavailability_runs: None,
            skip: vec![],
        };
        assert_eq!(
            p.args(Section::Scale).join(" "),
            "bench scale --counts 1,100 --secs 3"
        );
        assert_eq!(
            p.args(Section::Unavailability).join(" "),
            "bench unavailability"
        );
        for s in Section::ALL {
            if s != Section::Unavailability {
                assert!(
                    <Bench as Subcommand>::has_subcommand(s.name()),
                    "{}",
                    s.name()
                );
            }
        }
    }
}
