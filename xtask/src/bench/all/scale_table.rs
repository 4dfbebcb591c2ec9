//! The report's scale table, from bench/results/scale.json.

use serde_json::Value;

use super::tables::{distinct, fmt, list, num, text};

pub fn scale(s: &Value) -> String {
    let steps = list(s, "steps");
    let mut md = String::from(
        "| path | clients | open | backends | idle RSS MB | idle B/conn | idle CPU % | \
         active qps (offered) | p99 ms | active CPU % | µs/query |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let find = |p: &str, n: &Value, mode: &str| {
        steps
            .iter()
            .find(|x| text(x, "path") == p && x["clients"] == *n && text(x, "mode") == mode)
    };
    for p in distinct(steps, "path") {
        let mut counts: Vec<&Value> = Vec::new();
        for x in steps.iter().filter(|x| text(x, "path") == p) {
            if !counts.contains(&&x["clients"]) {
                counts.push(&x["clients"]);
            }
        }
        for n in counts {
            let (i, a) = (find(p, n, "idle"), find(p, n, "active"));
            let g = |x: Option<&Value>, k: &str, d: usize| fmt(x.and_then(|x| num(x, k)), d);
            let qps = match a.and_then(|a| num(a, "qps").zip(num(a, "offered_qps"))) {
                Some((q, o)) => format!("{q:.0} ({o:.0})"),
                None => String::new(),
            };
            let rss = i.and_then(|i| num(i, "proxy_rss_kb")).map(|k| k / 1024.0);
            md += &format!(
                "| {p} | {n} | {} | {} | {} | {} | {} | {qps} | {} | {} | {} |\n",
                g(i, "connected", 0),
                g(i, "postgres_backends", 0),
                fmt(rss, 1),
                g(i, "rss_per_conn_bytes", 0),
                g(i, "proxy_cpu_pct", 1),
                g(a, "latency_p99_ms", 2),
                g(a, "proxy_cpu_pct", 1),
                g(a, "proxy_us_per_query", 1),
            );
        }
    }
    md += "\nMemory per idle connection (RSS growth of the path's process ÷ sessions, at its \
           largest count):";
    if let Some(m) = s["per_conn_bytes"].as_object() {
        for (p, b) in m {
            let pss = s["per_conn_pss_bytes"][p].as_f64();
            let pss = pss.map_or(String::new(), |v| format!(" (PSS {v:.0} B)"));
            md += &format!(" {p} {} B{pss};", fmt(b.as_f64(), 0));
        }
    }
    let t = &s["targets"];
    let m = &s["met"];
    let verdict = |k: &str| match m[k].as_bool() {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    };
    md += &format!(
        "\nTargets: agent-userspace ≤ {} B per idle connection: {}; agent-kernel ≈ 0 (≤ {} B): {}.\n\
         \nMost sessions open at once: {} (asked up to {}). pgbouncer in session mode; Postgres \
         max_connections {}, shared_buffers {}.\n",
        fmt(num(t, "userspace_per_idle_conn_bytes_max"), 0),
        verdict("agent-userspace"),
        fmt(num(t, "kernel_per_idle_conn_bytes_max"), 0),
        verdict("agent-kernel"),
        s["max_connected"],
        list(s, "counts")
            .iter()
            .filter_map(Value::as_u64)
            .max()
            .unwrap_or(0),
        s["postgres_max_connections"],
        text(s, "postgres_shared_buffers"),
    );
    for n in list(s, "notes") {
        md += &format!("\nNOTE: {}.\n", n.as_str().unwrap_or("?"));
    }
    for k in list(s, "skipped") {
        md += &format!("\nSkipped {}: {}.\n", text(k, "path"), text(k, "reason"));
    }
    md
}
