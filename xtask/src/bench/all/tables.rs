//! The report's tables, read from the benches' JSON as loosely as possible: a field an older
//! file lacks leaves its cell empty instead of failing the report.

use serde_json::Value;

/// `v[key]` as a number.
pub(super) fn num(v: &Value, key: &str) -> Option<f64> {
    v[key].as_f64()
}

pub(super) fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("?")
}

pub(super) fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key].as_array().map_or(&[], Vec::as_slice)
}

pub(super) fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or(String::new(), |x| format!("{x:.digits$}"))
}

fn met(v: &Value) -> &'static str {
    match v["met"].as_bool() {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "",
    }
}

/// Items' `key` values in first-seen order.
pub(super) fn distinct<'a>(items: &'a [Value], key: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    for i in items {
        let k = text(i, key);
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

/// What a datapath run is compared by: MB/s for bulk, else tps.
fn run_value(r: &Value) -> Option<f64> {
    num(r, "mb_per_s").or_else(|| num(r, "tps"))
}

/// A datapath case's ratio to direct: (median, min, max) over rounds, each round's run divided
/// by direct's run of the same round (the rounds interleave the paths).
pub fn ratio_spread(d: &Value, path: &str, workload: &str) -> Option<(f64, f64, f64)> {
    let case = list(d, "cases")
        .iter()
        .find(|c| text(c, "path") == path && text(c, "workload") == workload)?;
    let median = num(case, "ratio_to_direct")?;
    let runs = list(d, "run_log");
    let of = |p: &str, round: u64| {
        runs.iter().find(|r| {
            text(r, "path") == p && text(r, "workload") == workload && r["round"] == round
        })
    };
    let ratios: Vec<f64> = runs
        .iter()
        .filter(|r| text(r, "path") == path && text(r, "workload") == workload)
        .filter_map(|r| {
            let direct = run_value(of("direct", r["round"].as_u64()?)?)?;
            (direct > 0.0).then_some(run_value(r)? / direct)
        })
        .collect();
    let lo = ratios.iter().copied().fold(median, f64::min);
    let hi = ratios.iter().copied().fold(median, f64::max);
    Some((median, lo, hi))
}

/// (max − min) / median of a case's values over rounds, in %.
fn spread_pct(case: &Value) -> Option<f64> {
    if let Some(s) = num(case, "spread_pct") {
        return Some(s);
    }
    // Older files: from the runs, around the case's own median.
    let (key, m) = match num(case, "mb_per_s") {
        Some(mb) => ("mb_per_s_runs", mb),
        None => ("tps_runs", num(case, "tps")?),
    };
    let v: Vec<f64> = list(case, key).iter().filter_map(Value::as_f64).collect();
    let lo = v.iter().copied().reduce(f64::min)?;
    let hi = v.iter().copied().reduce(f64::max)?;
    (m > 0.0).then(|| (hi - lo) / m * 100.0)
}

pub fn datapath(d: &Value) -> String {
    let cases = list(d, "cases");
    let workloads = distinct(cases, "workload");
    let paths = distinct(cases, "path");
    let mut md = format!(
        "Median over {} interleaved round(s) of {} s (each round's run ÷ direct's run of that \
         round; each round rotates the order of the paths); in brackets the lowest and highest \
         round.\n\n| path |",
        d["rounds"], d["secs"]
    );
    let mut rule = String::from("| --- |");
    for w in &workloads {
        md += &format!(" {w} × direct |");
        rule += " ---: |";
    }
    md += &format!("\n{rule}\n");
    for p in &paths {
        md += &format!("| {p} |");
        for w in &workloads {
            let case = cases
                .iter()
                .find(|c| text(c, "path") == *p && text(c, "workload") == *w);
            let cell = match (ratio_spread(d, p, w), case) {
                (Some((m, lo, hi)), Some(c)) => {
                    // A target judged on the same-instant pairs says so.
                    let judged = num(c, "same_instant_ratio")
                        .map_or(String::new(), |r| format!("same instant {r:.2}, "));
                    let target = num(c, "target")
                        .map_or(String::new(), |t| format!(" ({judged}≥ {t}: {})", met(c)));
                    format!("{m:.2} [{lo:.2}–{hi:.2}]{target}")
                }
                _ => String::new(),
            };
            md += &format!(" {cell} |");
        }
        md += "\n";
    }
    md += &same_instant(d);
    md += &head_to_head(d);
    md += "\nAbsolute medians (± half the range over rounds) and the path's CPU:\n\n| path |";
    let mut rule = String::from("| --- |");
    for w in &workloads {
        md += &format!(" {w} | {w} proxy CPU |");
        rule += " ---: | ---: |";
    }
    md += &format!("\n{rule}\n");
    for p in &paths {
        md += &format!("| {p} |");
        for w in &workloads {
            let Some(c) = cases
                .iter()
                .find(|c| text(c, "path") == *p && text(c, "workload") == *w)
            else {
                md += " | |";
                continue;
            };
            let (value, unit, cpu) = match num(c, "mb_per_s") {
                Some(mb) => (mb, "MB/s", fmt(num(c, "proxy_cpu_s_per_gb"), 2) + " s/GB"),
                None => (
                    num(c, "tps").unwrap_or(0.0),
                    "tps",
                    fmt(num(c, "proxy_cpu_us_per_tx"), 1) + " µs/tx",
                ),
            };
            let spread = spread_pct(c).map_or(String::new(), |s| format!(" ±{:.0}%", s / 2.0));
            let cpu = if c["proxy_cpu_s"].is_null() {
                String::new()
            } else {
                cpu
            };
            md += &format!(" {value:.0} {unit}{spread} | {cpu} |");
        }
        md += "\n";
    }
    if let Some(mb) = num(d, "agent_rss_mb_1000_idle") {
        md += &format!(
            "\nharp-agent RSS with 1000 idle sessions: {mb} MB ({} kB per session; target ≤ {} MB).\n",
            fmt(num(d, "agent_rss_kb_per_idle_conn"), 1),
            fmt(num(d, "agent_rss_target_mb"), 0),
        );
    }
    for (key, link) in [
        ("map_update_ms", "plaintext etcd"),
        ("map_update_tls_ms", "etcd over TLS + users"),
    ] {
        let m = &d[key];
        if m.is_object() {
            md += &format!(
                "\netcd leader change → BPF map entry, {link}: p50 {} ms, p99 {} ms (target p99 ≤ \
                 {} ms: {}); etcd's own put p99 {} ms.\n",
                fmt(num(m, "p50"), 3),
                fmt(num(m, "p99"), 3),
                fmt(num(m, "target_p99"), 0),
                met(m),
                fmt(num(m, "put_p99"), 3),
            );
        }
    }
    md
}

/// `target` and `met` of a JSON object as "≥ t: met".
fn judged(v: &Value) -> String {
    num(v, "target").map_or(String::new(), |t| format!("≥ {t}: {}", met(v)))
}

/// The kernel path and direct measured at the same instant (absent in older files).
fn same_instant(d: &Value) -> String {
    let pairs = list(d, "same_instant");
    if pairs.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "\nThe kernel path's only cost is one map lookup per connect(), far below how much this \
         machine's speed swings between runs, so agent-kernel and direct also ran at the same \
         instant: two pgbench at once, half the clients each, one steered and one not. Its \
         target is judged on these pairs:\n\n\
         | workload | agent-kernel ÷ direct, same instant | lowest–highest round | target |\n\
         | --- | ---: | ---: | --- |\n",
    );
    for p in pairs {
        md += &format!(
            "| {} | {} | {}–{} | {} |\n",
            text(p, "workload"),
            fmt(num(p, "ratio"), 3),
            fmt(num(p, "low"), 2),
            fmt(num(p, "high"), 2),
            judged(p)
        );
    }
    md
}

/// harp-agent's userspace proxy against each other proxy, round by round (absent in older
/// files).
fn head_to_head(d: &Value) -> String {
    let rows = list(d, "head_to_head");
    if rows.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "\nHARP userspace against each proxy: median over rounds of agent-userspace's run ÷ the \
         proxy's run of the same round, and the rounds it was at least as fast:\n\n\
         | workload | proxy | agent-userspace ÷ proxy | rounds won | target |\n\
         | --- | --- | ---: | ---: | --- |\n",
    );
    for h in rows {
        md += &format!(
            "| {} | {} | {} | {}/{} | {} |\n",
            text(h, "workload"),
            text(h, "peer"),
            fmt(num(h, "ratio"), 3),
            h["wins"],
            h["rounds"],
            judged(h)
        );
    }
    md
}

pub fn failover(f: &Value) -> String {
    let mut md = String::from(
        "| case | etcd link | n | p50 ms | p95 ms | max ms | target | met |\n| --- | --- | ---: | ---: | ---: | ---: | --- | --- |\n",
    );
    for c in list(f, "cases") {
        let target = match (num(c, "target_p50_ms"), num(c, "target_p95_ms")) {
            (Some(a), Some(b)) => format!("p50 ≤ {a}, p95 ≤ {b}"),
            (None, Some(b)) => format!("p95 ≤ {b}"),
            _ => String::new(),
        };
        let link = match c["etcd_tls"].as_bool() {
            Some(true) => "TLS + users",
            _ => "plaintext",
        };
        md += &format!(
            "| {} | {link} | {} | {} | {} | {} | {target} | {} |\n",
            text(c, "name"),
            c["n"],
            fmt(num(c, "p50_ms"), 1),
            fmt(num(c, "p95_ms"), 1),
            fmt(num(c, "max_ms"), 1),
            met(c)
        );
    }
    md += &format!(
        "\nLease {} ms, refresh {} ms, {} nodes, {} etcd members. `switchover` is the pause a \
         client writing through harp-agent sees at `harpctl promote`.\n",
        f["lease_duration_ms"], f["lease_refresh_interval_ms"], f["nodes"], f["etcd_members"]
    );
    md
}

pub fn unavailability(u: &Value) -> String {
    let cases = list(u, "cases");
    let faults = distinct(cases, "fault");
    let mut md = format!(
        "Unavailability = {}. Cells: p50 / p95 ms (runs, and the writer's failed requests \
         and connects and the acknowledged writes lost over all runs where measured).\n\n\
         | system |",
        u["measure"]
            .as_str()
            .unwrap_or("the longest gap between acknowledged writes")
    );
    let mut rule = String::from("| --- |");
    for f in &faults {
        md += &format!(" {f} |");
        rule += " ---: |";
    }
    md += &format!("\n{rule}\n");
    for s in distinct(cases, "system") {
        md += &format!("| {s} |");
        for f in &faults {
            let cell = cases
                .iter()
                .find(|c| text(c, "system") == s && text(c, "fault") == *f)
                .map_or(String::new(), |c| {
                    // Client errors, where measured: a run with none failed no request.
                    let errors = c["errors"].as_array().filter(|e| !e.is_empty()).map_or(
                        String::new(),
                        |e| {
                            let total: u64 = e.iter().filter_map(Value::as_u64).sum();
                            format!(", {total} errors")
                        },
                    );
                    // Acknowledged writes the new primary lacked, where measured.
                    let lost = c["rpo_lost_writes"].as_array().map_or(String::new(), |l| {
                        let total: u64 = l.iter().filter_map(Value::as_u64).sum();
                        format!(", {total} writes lost")
                    });
                    format!(
                        "{} / {} ({}{errors}{lost})",
                        fmt(num(c, "p50_ms"), 0),
                        fmt(num(c, "p95_ms"), 0),
                        c["n"]
                    )
                });
            md += &format!(" {cell} |");
        }
        md += "\n";
    }
    md += "\nHARP ÷ Patroni (p50), against the issue's targets:\n\n\
           | fault | HARP | Patroni | ratio | target | met |\n| --- | --- | --- | ---: | ---: | --- |\n";
    for r in list(u, "ratios") {
        md += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            text(r, "fault"),
            text(r, "harp"),
            text(r, "patroni"),
            fmt(num(r, "ratio"), 3),
            num(r, "target").map_or("none".into(), |t| format!("≤ {t}")),
            met(r)
        );
    }
    for s in list(u, "skipped") {
        md += &format!("\nSkipped {}: {}.\n", text(s, "system"), text(s, "reason"));
    }
    if let Some(sub) = u["substrate"].as_str() {
        md += &format!("\nSubstrate: {sub}.\n");
    }
    md
}
