//! The report's tables and plots on small synthetic results, in a temporary directory.

use serde_json::json;

use super::{plots, scale_table, tables};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("harp-report-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn datapath_ratios_pair_each_round_with_direct() {
    let d = json!({
        "rounds": 2, "secs": 1,
        "cases": [
            {"path": "direct", "workload": "select", "tps": 100.0, "ratio_to_direct": 1.0},
            {"path": "haproxy", "workload": "select", "tps": 70.0, "ratio_to_direct": 0.7,
             "proxy_cpu_s": 1.0, "proxy_cpu_us_per_tx": 20.0, "tps_runs": [60.0, 80.0]},
        ],
        "run_log": [
            {"round": 1, "workload": "select", "path": "direct", "tps": 100.0},
            {"round": 1, "workload": "select", "path": "haproxy", "tps": 60.0},
            {"round": 2, "workload": "select", "path": "direct", "tps": 100.0},
            {"round": 2, "workload": "select", "path": "haproxy", "tps": 80.0},
        ],
    });
    assert_eq!(
        tables::ratio_spread(&d, "haproxy", "select"),
        Some((0.7, 0.6, 0.8))
    );
    let md = tables::datapath(&d);
    assert!(md.contains("| haproxy | 0.70 [0.60–0.80] |"), "{md}");
    assert!(md.contains("70 tps ±14%"), "{md}");
    let dir = temp_dir("datapath");
    assert_eq!(plots::throughput(&d, &dir).unwrap(), "throughput.svg");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn datapath_shows_same_instant_pairs_and_the_userspace_head_to_head() {
    let d = json!({
        "rounds": 3, "secs": 4, "cases": [],
        "same_instant": [{"workload": "connect", "ratio": 0.991, "low": 0.95, "high": 1.04,
                          "target": 0.98, "met": true}],
        "head_to_head": [{"workload": "select", "peer": "pgbouncer", "ratio": 0.97, "wins": 1,
                          "rounds": 3, "target": 1.0, "met": false}],
    });
    let md = tables::datapath(&d);
    assert!(
        md.contains("| connect | 0.991 | 0.95–1.04 | ≥ 0.98: met |"),
        "{md}"
    );
    assert!(
        md.contains("| select | pgbouncer | 0.970 | 1/3 | ≥ 1: **missed** |"),
        "{md}"
    );
    let old = tables::datapath(&json!({"rounds": 3, "secs": 4, "cases": []}));
    assert!(
        !old.contains("same instant") && !old.contains("rounds won"),
        "{old}"
    );
}

#[test]
fn unavailability_and_scale_render_with_plots() {
    let u = json!({
        "cases": [
            {"system": "harp-kernel", "fault": "postgres_crash", "n": 3, "p50_ms": 40.0,
             "p95_ms": 50.0, "max_ms": 55.0, "samples_ms": [40.0]},
            {"system": "patroni-default", "fault": "postgres_crash", "n": 3, "p50_ms": 9000.0,
             "p95_ms": 12000.0, "max_ms": 13000.0, "samples_ms": [9000.0]},
        ],
        "ratios": [{"fault": "postgres_crash", "harp": "harp-kernel",
                    "patroni": "patroni-default", "ratio": 0.0044, "target": 0.1, "met": true}],
        "timelines": [
            {"system": "harp-kernel", "fault": "postgres_crash", "bucket_ms": 100,
             "fault_at_ms": 200.0, "acks": [10, 10, 0, 9, 10]},
            {"system": "patroni-tight", "fault": "postgres_crash", "bucket_ms": 100,
             "fault_at_ms": 100.0, "acks": [10, 0, 0, 0, 10]},
        ],
    });
    let md = tables::unavailability(&u);
    assert!(md.contains("| harp-kernel | 40 / 50 (3) |"), "{md}");
    assert!(md.contains("| 0.004 | ≤ 0.1 | met |"), "{md}");
    let dir = temp_dir("unavailability");
    let made: Vec<String> = plots::timelines(&u, &dir)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        made,
        [
            "failover-postgres_crash.svg",
            "failover-postgres_crash-tight.svg"
        ]
    );

    let step = |path: &str, n: u64, rss: u64| {
        json!({"path": path, "mode": "idle", "clients": n, "connected": n,
               "proxy_rss_kb": rss, "rss_per_conn_bytes": 1000.0, "proxy_cpu_pct": 0.1})
    };
    let s = json!({
        "steps": [step("agent-userspace", 1, 7000), step("agent-userspace", 100, 7400),
                  step("socat", 1, 900), step("socat", 100, 90000)],
        "per_conn_bytes": {"agent-userspace": 4000.0},
        "targets": {"userspace_per_idle_conn_bytes_max": 16384.0,
                    "kernel_per_idle_conn_bytes_max": 1024.0},
        "met": {"agent-userspace": true},
        "counts": [1, 100], "max_connected": 100,
    });
    let md = scale_table::scale(&s);
    assert!(md.contains("agent-userspace 4000 B;"), "{md}");
    assert!(md.contains("≤ 16384 B per idle connection: met"), "{md}");
    assert_eq!(plots::scale_rss(&s, &dir).unwrap(), "scale-rss.svg");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn missing_pieces_are_errors_not_panics() {
    let empty = json!({});
    let dir = temp_dir("empty");
    assert!(plots::throughput(&empty, &dir).is_err());
    assert!(plots::scale_rss(&empty, &dir).is_err());
    assert!(plots::timelines(&empty, &dir)[0].is_err());
    for md in [
        tables::datapath(&empty),
        tables::failover(&empty),
        tables::unavailability(&empty),
        scale_table::scale(&empty),
    ] {
        assert!(!md.is_empty());
    }
    let _ = std::fs::remove_dir_all(dir);
}
