//! `cargo xtask build-ebpf`: builds the kernel programs (`harp-ebpf`, its own cargo workspace)
//! with the nightly pinned in `harp-ebpf/rust-toolchain.toml` and bpf-linker, and copies the
//! object to `target/bpf/harp.bpf.o`, where `harp-agent/build.rs` embeds it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

const SETUP_HINT: &str = "run ./scripts/setup-ebpf (installs the pinned nightly with rust-src \
                          and builds bpf-linker against its LLVM)";

/// Variables cargo and rustup set for this (stable) xtask process; passed on, they would make
/// the nested build use this toolchain or these flags instead of harp-ebpf's own.
pub const TOOLCHAIN_ENV: &[&str] = &[
    "RUSTUP_TOOLCHAIN",
    "CARGO",
    "RUSTC",
    "RUSTDOC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
];

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// The object's path under the workspace root.
pub fn object_path() -> PathBuf {
    workspace_root().join("target/bpf/harp.bpf.o")
}

pub fn run() -> anyhow::Result<()> {
    let root = workspace_root();
    let crate_dir = root.join("harp-ebpf");
    let nightly = pinned_nightly(&crate_dir)?;
    check_toolchain(&nightly)?;

    eprintln!("build-ebpf: building harp-ebpf with {nightly}");
    let mut cmd = Command::new("rustup");
    cmd.args(["run", &nightly, "cargo", "build", "--release"])
        .current_dir(&crate_dir);
    for var in TOOLCHAIN_ENV {
        cmd.env_remove(var);
    }
    let status = cmd.status().context("running rustup")?;
    if !status.success() {
        bail!("building harp-ebpf failed ({status}); if the toolchain is broken, {SETUP_HINT}");
    }

    let built = crate_dir.join("target/bpfel-unknown-none/release/harp");
    let object = object_path();
    let bytes = std::fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
    // Rewrite only on change: the agent's build script watches this file's directory.
    if std::fs::read(&object).ok().as_deref() != Some(&bytes[..]) {
        let dir = object.parent().expect("has a parent");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = object.with_extension("o.tmp");
        std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &object)
            .with_context(|| format!("renaming to {}", object.display()))?;
    }
    eprintln!(
        "build-ebpf: {} ({} bytes); harp-agent builds embed it",
        object.display(),
        bytes.len()
    );
    Ok(())
}

/// The `channel` of `harp-ebpf/rust-toolchain.toml`.
pub fn pinned_nightly(crate_dir: &Path) -> anyhow::Result<String> {
    let file = crate_dir.join("rust-toolchain.toml");
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|l| l.trim_start().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
        .next()
        .with_context(|| format!("no `channel = \"...\"` in {}", file.display()))
}

/// The nightly with rust-src and a bpf-linker that starts; else an error saying what to run.
fn check_toolchain(nightly: &str) -> anyhow::Result<()> {
    let rustup = |args: &[&str]| {
        Command::new("rustup")
            .args(args)
            .env_remove("RUSTUP_TOOLCHAIN")
            .output()
    };
    let installed = rustup(&["toolchain", "list"])
        .context("rustup is required to build the kernel programs (https://rustup.rs)")?;
    if !String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.starts_with(nightly))
    {
        bail!("the eBPF toolchain {nightly} is not installed: {SETUP_HINT}");
    }
    let components = rustup(&["component", "list", "--installed", "--toolchain", nightly])
        .context("running rustup component list")?;
    if !String::from_utf8_lossy(&components.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        bail!("{nightly} lacks the rust-src component: {SETUP_HINT}");
    }
    match Command::new("bpf-linker").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => bail!(
            "bpf-linker does not start ({}): {SETUP_HINT}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => bail!("bpf-linker not found ({e}): {SETUP_HINT}"),
    }
}
