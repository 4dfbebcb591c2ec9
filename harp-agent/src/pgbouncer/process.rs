//! Finding, preparing for and supervising the PgBouncer process.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use anyhow::Context;
use harp_core::config::PgBouncerConfig;
use tokio::process::Command;

/// The `pgbouncer` binary: `pgbouncer_bin_dir`, else `PATH`, else Debian's `/usr/sbin`.
pub fn binary(pgb: &PgBouncerConfig) -> anyhow::Result<PathBuf> {
    let candidates: Vec<PathBuf> = match &pgb.bin_dir {
        Some(dir) => vec![dir.join("pgbouncer")],
        None => std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
            .map(|d| d.join("pgbouncer"))
            .collect(),
    };
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        anyhow::anyhow!(
            "proxy.type is pgbouncer but no pgbouncer binary was found{}; install PgBouncer \
             (Debian: apt install pgbouncer) or set proxy.pgbouncer_bin_dir",
            pgb.bin_dir
                .as_ref()
                .map(|d| format!(" in {}", d.display()))
                .unwrap_or_default()
        )
    })
}

pub(super) fn os_user(name: &str) -> anyhow::Result<nix::unistd::User> {
    nix::unistd::User::from_name(name)?.ok_or_else(|| {
        anyhow::anyhow!(
            "proxy.pgbouncer_user `{name}` is not a user on this host; PgBouncer refuses to run \
             as root, so name the account it should run as"
        )
    })
}

/// PgBouncer ends with the agent, even one killed outright: nothing else would stop it, and
/// it would keep the proxy's port.
#[allow(unsafe_code)]
pub(super) fn die_with_parent(cmd: &mut Command) {
    let agent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes the prctl(2)
    // and getppid(2) calls, which are async-signal-safe; it allocates and locks nothing (an
    // errno becomes an io::Error without allocating).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
            // The agent died before the signal was armed: do not start at all.
            if nix::unistd::getppid() != agent {
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
}

/// A fresh socket directory beside the other files, that only the agent and PgBouncer can
/// enter.
pub(super) fn socket_dir(
    config_dir: &Path,
    run_as: Option<&nix::unistd::User>,
) -> anyhow::Result<PathBuf> {
    let dir = config_dir.join("pgbouncer-run");
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot clear {}", dir.display()));
        }
        _ => {}
    }
    std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    if let Some(user) = run_as {
        nix::unistd::chown(&dir, Some(user.uid), Some(user.gid))?;
    }
    Ok(dir)
}

pub(super) fn exited(status: ExitStatus) -> String {
    format!("PgBouncer exited ({status}); its log above says why. The agent stops with it")
}
