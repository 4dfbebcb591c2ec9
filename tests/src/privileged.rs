//! Tests that need root: skip locally, never in CI.

/// `true` if running as root. Otherwise panics when `CI=true` (a skipped test would hide a
/// broken CI setup), else prints `SKIP: <test>: needs root` and returns `false`.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} needs root and CI=true: cannot skip");
    }
    println!("SKIP: {test}: needs root");
    false
}
