//! Embeds HARP's kernel programs when they have been built: `cargo xtask build-ebpf` writes
//! `target/bpf/harp.bpf.o` (or `HARP_EBPF_OBJ` names an object). Then the agent is built with
//! `cfg(harp_ebpf)` and `HARP_EBPF_OBJ` set to the object's absolute path; otherwise without,
//! so a plain `cargo build` needs no nightly (the kernel path then reports how to get it).

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(harp_ebpf)");
    println!("cargo::rerun-if-env-changed=HARP_EBPF_OBJ");
    let object = match std::env::var_os("HARP_EBPF_OBJ") {
        Some(path) => {
            let path = PathBuf::from(path);
            println!("cargo::rerun-if-changed={}", path.display());
            if !path.is_file() {
                println!(
                    "cargo::warning=HARP_EBPF_OBJ={} is not a file: building without the kernel \
                     programs",
                    path.display()
                );
                return;
            }
            path
        }
        None => {
            let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo"));
            let dir = manifest.join("../target/bpf");
            // Watch the directory, not the file: a missing file would rerun this script (and
            // rebuild the agent) on every build. Creating the empty directory is harmless.
            let _ = std::fs::create_dir_all(&dir);
            println!("cargo::rerun-if-changed={}", dir.display());
            let path = dir.join("harp.bpf.o");
            if !path.is_file() {
                return;
            }
            path
        }
    };
    let object = absolute(&object);
    println!("cargo::rustc-cfg=harp_ebpf");
    println!("cargo::rustc-env=HARP_EBPF_OBJ={}", object.display());
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}
