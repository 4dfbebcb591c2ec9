//! The `postgres` system user, the binaries, and the one `initdb` per test process.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid, User};

/// Directory of the Postgres binaries: `HARP_PG_BIN` or `/usr/lib/postgresql/15/bin`.
pub fn pg_bin_dir() -> PathBuf {
    std::env::var_os("HARP_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// uid and gid of the `postgres` system user (Postgres refuses to run as root).
pub fn postgres_user() -> (Uid, Gid) {
    let user = User::from_name("postgres")
        .expect("look up user postgres")
        .expect("system user `postgres` does not exist");
    (user.uid, user.gid)
}

pub(crate) fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", cmd.get_program()));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

pub fn chown_postgres(path: &Path) {
    let (uid, gid) = postgres_user();
    run(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(path),
        &format!("chown -R postgres {}", path.display()),
    );
}

/// Removes templates left by test processes that no longer exist.
fn remove_stale_templates() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("harp-test-"))
            .and_then(|n| n.strip_suffix("-template"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let probe = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None::<Signal>);
        let alive = !matches!(probe, Err(nix::errno::Errno::ESRCH));
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The data dir made by this process's single `initdb` (`/tmp/harp-test-<pid>-template/data`).
/// It stays until a later test process removes it as stale.
pub fn template_data_dir() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        remove_stale_templates();
        let dir = PathBuf::from(format!("/tmp/harp-test-{}-template", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create template dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod template dir");
        chown_postgres(&dir);
        let data = dir.join("data");
        let (uid, gid) = postgres_user();
        run(
            Command::new(pg_bin_dir().join("initdb"))
                .args([
                    "--no-sync",
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-instructions",
                ])
                .args(["--locale=C", "--encoding=UTF8", "-D"])
                .arg(&data)
                .current_dir(&dir)
                .uid(uid.as_raw())
                .gid(gid.as_raw()),
            "initdb",
        );
        data
    })
}
