//! `cargo xtask fuzz`: each cargo-fuzz target (`fuzz/`) for a bounded time, starting from its
//! committed seeds. A crash is copied to `fuzz/regressions/<target>/`, which harp-core's
//! `fuzz_regressions` test replays on every `cargo test`, and fails the run.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::build_ebpf::{TOOLCHAIN_ENV, pinned_nightly, workspace_root};

pub const TARGETS: &[&str] = &["wire", "config", "records"];

const SETUP_HINT: &str = "run ./scripts/setup (installs cargo-fuzz) and ./scripts/setup-ebpf \
                          (the pinned nightly)";

pub fn run(seconds: u64, only: &[String]) -> anyhow::Result<()> {
    let fuzz = workspace_root().join("fuzz");
    let nightly = pinned_nightly(&fuzz)?;
    let ok = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        bail!("`cargo fuzz` is not installed: {SETUP_HINT}");
    }
    for target in TARGETS
        .iter()
        .filter(|t| only.is_empty() || only.iter().any(|o| o == *t))
    {
        run_one(&fuzz, &nightly, target, seconds)?;
    }
    Ok(())
}

fn run_one(fuzz: &Path, nightly: &str, target: &str, seconds: u64) -> anyhow::Result<()> {
    // New inputs go to a scratch corpus under target/, the seeds are only read.
    let scratch = fuzz.join("target/corpus").join(target);
    std::fs::create_dir_all(&scratch)?;
    let artifacts = fuzz.join("artifacts").join(target);
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts)?;
    eprintln!("fuzz: {target} for {seconds} s");
    let mut cmd = Command::new("rustup");
    cmd.args(["run", nightly, "cargo", "fuzz", "run", target])
        .arg(&scratch)
        .arg(fuzz.join("corpus").join(target))
        .arg(fuzz.join("regressions").join(target))
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .args(["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"])
        .current_dir(fuzz);
    for var in TOOLCHAIN_ENV {
        cmd.env_remove(var);
    }
    let status = cmd.status().context("running cargo fuzz")?;
    if status.success() {
        return Ok(());
    }
    let mut kept = Vec::new();
    for e in std::fs::read_dir(&artifacts)? {
        let path = e?.path();
        let name = path.file_name().expect("a file").to_owned();
        let to = fuzz.join("regressions").join(target).join(&name);
        std::fs::copy(&path, &to)?;
        kept.push(to.display().to_string());
    }
    bail!(
        "fuzz target {target} failed ({status}); its input{} kept as {}: harp-core's \
         fuzz_regressions test replays {} from now on — fix the bug and commit {}",
        if kept.len() == 1 { " is" } else { "s are" },
        kept.join(", "),
        if kept.len() == 1 { "it" } else { "them" },
        if kept.len() == 1 { "it" } else { "them" },
    )
}
