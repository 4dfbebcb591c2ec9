//! Locating the workspace's binaries (built by `cargo build --workspace --bins`).

use std::path::PathBuf;
use std::sync::OnceLock;

static OVERRIDE: OnceLock<PathBuf> = OnceLock::new();

/// Makes [`bin_dir`] return `dir` for the rest of the process (benchmarks use release builds).
pub fn set_bin_dir(dir: PathBuf) {
    let _ = OVERRIDE.set(dir);
}

/// The directory holding workspace binaries: `HARP_BIN_DIR`, else the target profile dir of the
/// running test executable (`target/<profile>/`, the parent of its `deps/`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = OVERRIDE.get() {
        return dir.clone();
    }
    if let Some(dir) = std::env::var_os("HARP_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current_exe of the test");
    let mut dir = exe
        .parent()
        .expect("test executable has a parent dir")
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// Path of workspace binary `name` (e.g. `harp-manager`); panics with how to build it if absent.
pub fn workspace_bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    if !path.is_file() {
        panic!(
            "binary `{name}` not built: run `cargo build --workspace --bins` \
             (cargo xtask test does this); looked for {}",
            path.display()
        );
    }
    path
}

/// Whether PgBouncer is installed where harp-agent looks for it without
/// `pgbouncer_bin_dir` (Debian's /usr/sbin, or /usr/bin, /usr/local/sbin).
pub fn pgbouncer_installed() -> bool {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin"]
        .iter()
        .any(|d| std::path::Path::new(d).join("pgbouncer").is_file())
}
