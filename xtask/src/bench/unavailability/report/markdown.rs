//! `unavailability.md`: the cases, the ratios against the targets, the synchronous systems'
//! RPO, and plainly what every system ran on.

use harp_tests::cluster::STREAMING_SETTINGS;

use super::super::probe::BUCKET;
use super::{Report, Timings};

fn list<T: ToString>(v: &[T]) -> String {
    match v.is_empty() {
        true => "–".to_owned(),
        false => v.iter().map(T::to_string).collect::<Vec<_>>().join(" "),
    }
}

pub(super) fn markdown(r: &Report) -> String {
    let mut md = String::from(
        "| system | replication | fault | n | p50 ms | p95 ms (n ≥ 20 only) | max ms | client errors per run \
         | acknowledged writes lost per run |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for c in &r.cases {
        let sync = if c.synchronous {
            "synchronous"
        } else {
            "async"
        };
        md += &format!(
            "| {} | {sync} | {} | {} | {} | {} | {} | {} | {} |\n",
            c.system,
            c.fault,
            c.n,
            c.p50_ms,
            // Under 20 samples a "p95" is just the max or the one below: say the max only.
            if c.n >= 20 {
                c.p95_ms.to_string()
            } else {
                "–".into()
            },
            c.max_ms,
            list(&c.errors),
            list(&c.rpo_lost_writes)
        );
    }
    md += "\n| fault | HARP | Patroni + HAProxy | HARP ÷ Patroni (p50) | target | met |\n\
           | --- | --- | --- | --- | --- | --- |\n";
    for x in &r.ratios {
        let (target, met) = match (x.target, x.met) {
            (Some(t), Some(m)) => (format!("≤ {t}"), if m { "yes" } else { "**no**" }),
            _ => ("–".into(), "–"),
        };
        md += &format!(
            "| {} | {} | {} | {} | {target} | {met} |\n",
            x.fault, x.harp, x.patroni, x.ratio
        );
    }
    if !r.rpo.is_empty() {
        md += "\n| synchronous system | fault | runs | acknowledged writes lost | target | met |\n\
               | --- | --- | --- | --- | --- | --- |\n";
        for x in &r.rpo {
            md += &format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                x.system,
                x.fault,
                x.runs,
                x.lost,
                x.target,
                if x.met { "yes" } else { "**no**" }
            );
        }
    }
    for c in r.cases.iter().filter(|c| !c.failures.is_empty()) {
        md += &format!(
            "\n{} {}: {} run(s) could not be measured: {}\n",
            c.system,
            c.fault,
            c.failures.len(),
            c.failures
                .iter()
                .map(|f| f.lines().next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    for s in &r.skipped {
        md += &format!("\nSkipped {}: {}.\n", s.system, s.reason);
    }
    let sync: Vec<&str> = r
        .cases
        .iter()
        .filter(|c| c.synchronous)
        .map(|c| c.system.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let settings = STREAMING_SETTINGS
        .iter()
        .map(|(k, v)| format!("`{k}={v}`"))
        .collect::<Vec<_>>()
        .join(", ");
    md += &format!(
        "\n**Substrate.** Every system ran on a primary and 2 streaming standbys (physical \
         replication), {}. Postgres settings on every node of every system: {settings} \
         (plus `fsync=off`, `max_connections=100`). Synchronous runs: {}; every other system \
         replicated asynchronously. Acknowledged writes lost: the writer's acknowledged rows \
         (ids it chose) missing on the primary after the run, checked row by row.\n",
        r.substrate,
        match sync.is_empty() {
            true => "none".to_owned(),
            false => format!("{} (`cluster.synchronous_mode: on`)", sync.join(", ")),
        }
    );
    let t = |t: &Timings| {
        let start = t
            .primary_start_timeout
            .map_or(String::new(), |s| format!(", primary_start_timeout {s}"));
        format!(
            "ttl {}, loop_wait {}, retry_timeout {}{start}",
            t.ttl, t.loop_wait, t.retry_timeout
        )
    };
    md += &format!(
        "\nUnavailability: the {}. HARP: {}; tight: {}; sync: {}. Patroni 4.1 default: {}; \
         tight (the least it accepts): {}; failover: {}. HAProxy (mode tcp, `option httpchk \
         GET /primary`): `default-server {}`. Runs per case: {} (interleaved system by \
         system); timelines (acks per {} ms, median run) in the JSON.\n\n\
         Machine: {}. Commit {}{}, {} build, measured {}. Command: `{}`.\n",
        r.measure,
        r.settings.harp,
        r.settings.harp_tight,
        r.settings.harp_sync,
        t(&r.settings.patroni_default),
        t(&r.settings.patroni_tight),
        t(&r.settings.patroni_failover),
        r.settings.haproxy_checks,
        r.runs,
        BUCKET.as_millis(),
        r.machine,
        r.provenance.commit,
        if r.provenance.dirty {
            " (with local changes)"
        } else {
            ""
        },
        r.provenance.profile,
        r.provenance.measured_at,
        r.command
    );
    md
}
