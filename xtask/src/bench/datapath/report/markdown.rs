//! bench/results/datapath.md: one row per path, three columns per workload, then notes.

use super::super::idle::IDLE_SESSIONS;
use super::{Case, Report};
use crate::bench::datapath::Workload;

/// The table, the agent's RSS, skipped paths and how it was measured.
pub(super) fn render(report: &Report) -> String {
    let mut md = String::from("| path |");
    let mut rule = String::from("| --- |");
    for &w in &report.workloads {
        let (value, cpu) = units(w);
        md += &format!(
            " {0} {value} | {0} × direct | {0} proxy CPU {cpu} |",
            w.name()
        );
        rule += " ---: | ---: | ---: |";
    }
    md += &format!("\n{rule}\n");
    let mut seen = Vec::new();
    for c in &report.cases {
        if seen.contains(&c.path) {
            continue;
        }
        seen.push(c.path);
        md += &format!("| {} |", c.path);
        for &w in &report.workloads {
            match report
                .cases
                .iter()
                .find(|x| x.path == c.path && x.workload == w.name())
            {
                Some(x) => md += &cells(w, x),
                None => md += " - | - | |",
            }
        }
        md += "\n";
    }
    md += "\n";
    md += &same_instant(report);
    md += &head_to_head(report);
    match (
        report.agent_rss_mb_1000_idle,
        report.agent_rss_kb_per_idle_conn,
    ) {
        (Some(mb), Some(kb)) => {
            md += &format!(
                "harp-agent RSS with {IDLE_SESSIONS} idle sessions: {mb:.1} MB (target ≤ {}: {}), \
                 {kb:.1} kB per idle connection.\n",
                report.agent_rss_target_mb,
                if mb <= report.agent_rss_target_mb {
                    "yes"
                } else {
                    "**no**"
                }
            );
        }
        _ => md += "harp-agent RSS: not measured (agent-userspace not run).\n",
    }
    for m in [&report.map_update_ms, &report.map_update_tls_ms]
        .into_iter()
        .flatten()
    {
        md += &format!("\n{}", m.line());
    }
    for s in &report.skipped {
        md += &format!("\nSkipped {}: {}.\n", s.path, s.reason);
    }
    md += &notes(report);
    md
}

/// agent-kernel and direct at the same instant.
fn same_instant(report: &Report) -> String {
    if report.same_instant.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "agent-kernel and direct at the same instant (two pgbench at once, half the clients \
         each; median [lowest–highest] of the rounds' agent-kernel ÷ direct):\n\n\
         | workload | agent-kernel ÷ direct | target |\n| --- | ---: | --- |\n",
    );
    for p in &report.same_instant {
        let target = judged(p.target, p.met);
        md += &format!(
            "| {} | {:.3} [{:.2}–{:.2}] | {target} |\n",
            p.workload, p.ratio, p.low, p.high
        );
    }
    md + "\n"
}

/// agent-userspace against each other proxy.
fn head_to_head(report: &Report) -> String {
    if report.head_to_head.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "agent-userspace ÷ each proxy, round by round (median, rounds it was at least as fast):\n\n\
         | workload | peer | agent-userspace ÷ peer | rounds won | target |\n\
         | --- | --- | ---: | ---: | --- |\n",
    );
    for h in &report.head_to_head {
        let target = judged(h.target, h.met);
        md += &format!(
            "| {} | {} | {:.3} | {}/{} | {target} |\n",
            h.workload, h.peer, h.ratio, h.wins, h.rounds
        );
    }
    md + "\n"
}

/// "≥ target: yes/**no**" ("≥ target" before it is judged); empty without a target.
fn judged(target: Option<f64>, met: Option<bool>) -> String {
    match (target, met) {
        (Some(t), Some(m)) => format!("≥ {t}: {}", if m { "yes" } else { "**no**" }),
        (Some(t), None) => format!("≥ {t}"),
        (None, _) => String::new(),
    }
}

/// The units of a workload's value and proxy CPU columns.
fn units(w: Workload) -> (&'static str, &'static str) {
    if w.is_pgbench() {
        ("tps", "µs/tx")
    } else {
        ("MB/s", "s/GB")
    }
}

/// A case's three cells: its value, its ratio to direct (with the target), its proxy CPU.
fn cells(w: Workload, x: &Case) -> String {
    let ratio = x.ratio_to_direct.map_or("-".into(), |r| format!("{r:.2}"));
    // A target judged on the same-instant pairs says so.
    let same_instant = x
        .same_instant_ratio
        .map_or(String::new(), |r| format!("same instant {r:.2}, "));
    let target = match x.target {
        Some(_) => format!(" ({same_instant}{})", judged(x.target, x.met)),
        None => String::new(),
    };
    let (value, cpu) = if w.is_pgbench() {
        (x.tps, x.proxy_cpu_us_per_tx.map(|u| format!("{u:.1}")))
    } else {
        (
            x.mb_per_s.unwrap_or_default(),
            x.proxy_cpu_s_per_gb.map(|s| format!("{s:.2}")),
        )
    };
    let cpu = cpu.map_or(String::new(), |c| {
        format!("{c} ({:.2} s)", x.proxy_cpu_s.unwrap_or_default())
    });
    let spread = x
        .spread_pct
        .map_or(String::new(), |s| format!(" ±{:.0}%", s / 2.0));
    format!(" {value:.0}{spread} | {ratio}{target} | {cpu} |")
}

/// How the table was measured.
fn notes(report: &Report) -> String {
    let workloads: Vec<String> = report
        .workloads
        .iter()
        .map(|w| format!("`{}` = {}", w.name(), w.summary()))
        .collect();
    let scale = if report.workloads.iter().any(|w| w.is_pgbench()) {
        format!(", pgbench scale {}", report.scale)
    } else {
        String::new()
    };
    let kernel = if report.cases.iter().any(|c| c.path == "agent-kernel") {
        " agent-kernel: the client runs in a child cgroup (started by `sh`, which joins it and \
         execs the client) and connects to harp-agent's address; connect4 sends it to Postgres."
    } else {
        ""
    };
    format!(
        "\nMedian tps (bulk: MB/s) of {} interleaved round(s) of {} s per run (± half the range \
         over rounds; each round runs the paths in an order rotated by one); × direct: median \
         over rounds of the path's run ÷ direct's run of that round; {}{scale}. \
         Proxy CPU: user + system time of the path's process (with its reaped children) during a \
         run, per transaction (bulk: per GB) and in total.{kernel} Machine: {}. Command: `{}`. \
         Measured {} on commit {}{} ({} build).\n",
        report.rounds,
        report.secs,
        workloads.join(", "),
        report.machine,
        report.command,
        report.provenance.measured_at,
        report.provenance.commit,
        if report.provenance.dirty {
            " with local changes"
        } else {
            ""
        },
        report.provenance.profile,
    )
}
