//! A fresh scratch directory per test, removed on drop unless `HARP_KEEP=1`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// `/tmp/harp-test-<pid>-<counter>`, mode 0755 so the `postgres` user can traverse it.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
}

/// Whether `HARP_KEEP=1` asks to keep work dirs (and their logs) for a post-mortem.
pub fn keep_requested() -> bool {
    std::env::var("HARP_KEEP").is_ok_and(|v| v == "1")
}

impl WorkDir {
    pub fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = PathBuf::from(format!("/tmp/harp-test-{}-{n}", std::process::id()));
        if path.exists() {
            // Left by an earlier process that had the same pid.
            let _ = std::fs::remove_dir_all(&path);
        }
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create work dir {}: {e}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod 0755 {}: {e}", path.display()));
        WorkDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }
}

impl Default for WorkDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if keep_requested() {
            eprintln!("HARP_KEEP=1: keeping {}", self.path.display());
            return;
        }
        // A process that just died may still be writing for a moment: retry briefly.
        for _ in 0..5 {
            match std::fs::remove_dir_all(&self.path) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("could not remove {}: {e}", self.path.display());
        }
    }
}
