//! The harness pieces of the kernel path: `ChildCgroup` (root only) and the kernel object that
//! `cargo xtask build-ebpf` leaves for harp-agent to embed. The kernel programs themselves are
//! tested by harp-agent's `kernel::tests` (they need its private API).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use harp_tests::cgroup::ChildCgroup;
use harp_tests::require_root;

#[test]
fn child_cgroup_runs_commands_inside_and_removes_them_on_drop() {
    if !require_root("kernel::child_cgroup_runs_commands_inside_and_removes_them_on_drop") {
        return;
    }
    let cgroup = ChildCgroup::new();
    let path = cgroup.path().to_path_buf();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("harp-test-{}-", std::process::id())),
        "{name}"
    );
    let mut child = cgroup
        .command("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep");
    let pid = child.id();
    // The shell joins the cgroup, then execs the program: same pid. Wait for both steps.
    let comm = || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cgroup.pids().contains(&pid) || comm().trim() != "sleep" {
        assert!(
            Instant::now() < deadline,
            "pid {pid} never ran sleep inside {name} (comm {:?})",
            comm()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let proc_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        proc_cgroup.lines().any(|l| l == format!("0::/{name}")),
        "{proc_cgroup}"
    );

    drop(cgroup);
    assert!(!path.exists(), "{} still exists", path.display());
    // Killed and reaped by the guard: the std handle finds no child left to wait for.
    assert!(child.wait().is_err(), "pid {pid} was not reaped");
    assert!(
        !PathBuf::from(format!("/proc/{pid}")).exists(),
        "pid {pid} lives on"
    );
}

#[test]
fn the_kernel_object_is_bpf_with_harps_programs_and_maps() {
    let object = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bpf/harp.bpf.o");
    let Ok(bytes) = std::fs::read(&object) else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{} missing: `cargo xtask test` builds it", object.display());
        }
        println!(
            "SKIP: no {} (run `cargo xtask build-ebpf`)",
            object.display()
        );
        return;
    };
    // ELF64, little endian, e_machine EM_BPF (247).
    assert_eq!(&bytes[..6], b"\x7fELF\x02\x01", "not a little-endian ELF64");
    assert_eq!(
        u16::from_le_bytes([bytes[18], bytes[19]]),
        247,
        "not EM_BPF"
    );
    let contains = |s: &str| bytes.windows(s.len()).any(|w| w == s.as_bytes());
    for name in [
        "cgroup/connect4",
        "cgroup/getpeername4",
        "sk_skb/stream_verdict",
        "harp_connect4",
        "harp_getpeername4",
        "harp_splice",
        // harp_common::*::NAME, which harp-agent opens them by.
        "HARP_LEADERS",
        "HARP_STEERED",
        "HARP_COUNTERS",
        "HARP_SOCKS",
    ] {
        assert!(contains(name), "{} lacks {name}", object.display());
    }
}
