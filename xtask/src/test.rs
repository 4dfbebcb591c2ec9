//! `cargo xtask test`: what CI runs. Integration tests start real etcd clusters and Postgres
//! instances, so they run one at a time on this 2-core class of machine.

use std::process::Command;

use anyhow::{Context, bail};

pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

pub fn run(no_lint: bool, extra: &[String]) -> anyhow::Result<()> {
    // First, so that lints, binaries and tests all build harp-agent with its kernel programs.
    crate::build_ebpf::run()?;
    if !no_lint {
        cargo(&["fmt", "--all", "--", "--check"])?;
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])?;
    }
    // Integration tests spawn the binaries: build them first.
    cargo(&["build", "--workspace", "--bins"])?;
    let mut args = vec!["test", "--workspace"];
    args.extend(extra.iter().map(String::as_str));
    if !extra.iter().any(|a| a == "--") {
        args.push("--");
    }
    args.push("--test-threads=1");
    cargo(&args)?;
    // Last: a short bounded run of every fuzz target (the corpus itself ran above, in harp-core).
    crate::fuzz::run(FUZZ_SECONDS, &[])
}

/// Per fuzz target, in the test command (a longer run: `cargo xtask fuzz --seconds N`).
const FUZZ_SECONDS: u64 = 20;
