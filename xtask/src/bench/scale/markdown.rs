//! bench/results/scale.md: the steps' table, the memory per connection against the targets,
//! and how it was measured.

use super::report::Report;

pub fn render(r: &Report) -> String {
    let opt = |v: Option<f64>, d: usize| v.map_or(String::new(), |x| format!("{x:.d$}"));
    let mut md = String::from(
        "| path | mode | clients | open | Postgres backends | qps (offered) | p50 / p99 ms | \
         proxy CPU % | proxy µs/query | proxy RSS MB | RSS per conn B |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for s in &r.steps {
        let qps = match (s.qps, s.offered_qps) {
            (Some(q), Some(o)) => format!("{q:.0} ({o:.0})"),
            _ => String::new(),
        };
        let lat = match (s.latency_p50_ms, s.latency_p99_ms) {
            (Some(a), Some(b)) => format!("{a:.2} / {b:.2}"),
            _ => String::new(),
        };
        md += &format!(
            "| {} | {} | {} | {} | {} | {qps} | {lat} | {} | {} | {} | {} |\n",
            s.path,
            s.mode,
            s.clients,
            s.connected,
            s.postgres_backends.map_or(String::new(), |b| b.to_string()),
            opt(s.proxy_cpu_pct, 1),
            opt(s.proxy_us_per_query, 1),
            opt(s.proxy_rss_kb.map(|k| k as f64 / 1024.0), 1),
            opt(s.rss_per_conn_bytes, 0),
        );
    }
    md += "\nMemory per idle connection (RSS growth of the path's process / sessions, at its \
           largest count):";
    for (p, b) in &r.per_conn_bytes {
        let pss = r.per_conn_pss_bytes.get(p);
        let pss = pss.map_or(String::new(), |b| format!(" (PSS {b:.0} B)"));
        md += &format!(" {p} {b:.0} B{pss};");
    }
    md += &format!(
        "\ntargets: agent-userspace ≤ {} B{}, agent-kernel ≈ 0 (≤ {} B){}.\n",
        r.targets.userspace_per_idle_conn_bytes_max,
        met_text(r.met.get("agent-userspace")),
        r.targets.kernel_per_idle_conn_bytes_max,
        met_text(r.met.get("agent-kernel")),
    );
    for n in &r.notes {
        md += &format!("\nNOTE: {n}.\n");
    }
    for s in &r.skipped {
        md += &format!("\nSkipped {}: {}.\n", s.path, s.reason);
    }
    md += &format!(
        "\nMost sessions open at once: {} (asked: {}). Each step: grow to the count (each session \
         checked with one `SELECT 1`), {} s idle, then {} s active (every session runs `SELECT 1` \
         every {} ms, less often when that would offer over {} queries/s in all). Proxy CPU: \
         user + system time of the path's processes over the window (socat: with its \
         per-connection children), from a cgroup of their own; agent-kernel: harp-agent, which \
         is not on the data path. RSS per connection: VmRSS growth (socat: summed over its \
         children, which share most pages; PSS in brackets). pgbouncer runs in session \
         mode (one server connection per client, like-for-like). Postgres: max_connections {}, \
         shared_buffers {}. The clients run in one process on the same {}; growth stops when \
         MemAvailable would fall under {} MB. Command: `{}`.\n",
        r.max_connected,
        r.counts
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        r.secs,
        r.secs,
        r.interval_ms,
        r.max_qps,
        r.postgres_max_connections,
        r.postgres_shared_buffers,
        r.machine,
        r.min_available_mb,
        r.command
    );
    md
}

fn met_text(met: Option<&bool>) -> &'static str {
    match met {
        Some(true) => ": met",
        Some(false) => ": **missed**",
        None => ": not measured",
    }
}
