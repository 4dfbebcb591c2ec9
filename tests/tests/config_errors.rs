//! Bad config files: harp-manager names the file, line and key, and exits with status 2.

use std::process::Command;

use harp_tests::{WorkDir, workspace_bin};

const GOOD: &str = "\
cluster:
  name: c1
dcs:
  driver: etcd
  endpoints: [127.0.0.1:2379]
location: dca
manager:
  name: n1
  dsn: host=127.0.0.1 port=5432 user=postgres
http:
  enable: false
";

fn run_with(dir: &WorkDir, name: &str, text: &str) -> (i32, String) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    run_path(&path)
}

fn run_path(path: &std::path::Path) -> (i32, String) {
    let out = Command::new(workspace_bin("harp-manager"))
        .arg("-f")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_files_exit_2_with_the_exact_error() {
    let dir = WorkDir::new();
    let cases: &[(&str, String, &str)] = &[
        (
            "typo.yml",
            GOOD.replace("  dsn:", "  priorty: 5\n  dsn:"),
            "typo.yml:9: manager.priorty: unknown key",
        ),
        (
            "type.yml",
            GOOD.replace("  dsn:", "  priority: high\n  dsn:"),
            "type.yml:9: manager.priority: expected an integer >= -1, got \"high\"",
        ),
        (
            "missing.yml",
            GOOD.replace("  dsn: host=127.0.0.1 port=5432 user=postgres\n", ""),
            "missing.yml:7: manager.dsn: ",
        ),
        (
            "driver.yml",
            GOOD.replace("driver: etcd", "driver: consul"),
            "driver.yml:4: dcs.driver: unsupported driver `consul`; HARP supports `etcd`",
        ),
        (
            "lease.yml",
            GOOD.replace(
                "  dsn:",
                "  leader_lease_duration: 2\n  lease_refresh_interval: 3s\n  dsn:",
            ),
            "lease.yml:10: manager.lease_refresh_interval: ",
        ),
        (
            "nomanager.yml",
            GOOD.replace(
                "manager:\n  name: n1\n  dsn: host=127.0.0.1 port=5432 user=postgres\n",
                "",
            ),
            "manager: missing section; harp-manager needs at least `manager.name` and `manager.dsn`",
        ),
        (
            "socket.yml",
            GOOD.replace("host=127.0.0.1", "host=/var/run/postgresql"),
            "manager.dsn: needs `host=` with an address clients can reach",
        ),
    ];
    for (file, text, want) in cases {
        let (code, stderr) = run_with(&dir, file, text);
        assert_eq!(code, 2, "{file}: exit code; stderr: {stderr}");
        assert!(
            stderr.contains(want),
            "{file}: expected `{want}` in:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{file}: {stderr}");
    }
}

#[test]
fn all_problems_of_a_file_are_reported_at_once() {
    let dir = WorkDir::new();
    let text = GOOD
        .replace("driver: etcd", "driver: zk")
        .replace("  dsn:", "  priority: -7\n  dsn:");
    let (code, stderr) = run_with(&dir, "two.yml", &text);
    assert_eq!(code, 2);
    assert!(stderr.contains("two.yml:4: dcs.driver"), "{stderr}");
    assert!(stderr.contains("two.yml:9: manager.priority"), "{stderr}");
}

#[test]
fn a_missing_file_names_the_path_and_the_flag() {
    let (code, stderr) = run_path(std::path::Path::new("/nonexistent/harp.yml"));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("/nonexistent/harp.yml") && stderr.contains("-f/--config"),
        "{stderr}"
    );
}
