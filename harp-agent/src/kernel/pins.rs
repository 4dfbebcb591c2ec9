//! What HARP pins under its pin directory, and the filesystem checks made before the kernel is
//! touched (so a missing mount or cgroup is reported as such, not as a syscall error).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use harp_common::{counters, leaders, socks, spliced, steered};
use nix::sys::statfs::{BPF_FS_MAGIC, CGROUP2_SUPER_MAGIC, statfs};

use super::KernelError;

/// Maps, pinned under their own names.
pub const MAPS: [&str; 5] = [
    leaders::NAME,
    steered::NAME,
    counters::NAME,
    socks::NAME,
    spliced::NAME,
];
/// The link of `connect4` on the cgroup.
pub const LINK_CONNECT4: &str = "link_connect4";
/// The link of `getpeername4` on the cgroup.
pub const LINK_GETPEERNAME4: &str = "link_getpeername4";
/// The link of the egress check on the cgroup.
pub const LINK_EGRESS: &str = "link_egress";
/// The link of `sock_release` on the cgroup.
pub const LINK_RELEASE: &str = "link_release";
/// The link of the stream verdict program on `HARP_SOCKS`.
pub const LINK_SPLICE: &str = "link_splice";
/// Links, in the order they are attached.
pub const LINKS: [&str; 5] = [
    LINK_EGRESS,
    LINK_RELEASE,
    LINK_GETPEERNAME4,
    LINK_CONNECT4,
    LINK_SPLICE,
];

/// `pin_dir`, or the nearest existing directory above it, must be on bpffs.
pub fn require_bpffs(pin_dir: &Path) -> Result<(), KernelError> {
    let Some(existing) = pin_dir.ancestors().find(|p| p.exists()) else {
        return Err(KernelError::BpffsNotMounted {
            path: pin_dir.to_path_buf(),
        });
    };
    match statfs(existing) {
        Ok(fs) if fs.filesystem_type() == BPF_FS_MAGIC => Ok(()),
        Ok(_) => Err(KernelError::BpffsNotMounted {
            path: pin_dir.to_path_buf(),
        }),
        Err(errno) => Err(KernelError::PinDir {
            action: "cannot statfs",
            path: existing.to_path_buf(),
            source: errno.into(),
        }),
    }
}

/// Opens the cgroup v2 directory programs attach to.
pub fn open_cgroup(path: &Path) -> Result<File, KernelError> {
    let file = File::open(path).map_err(|source| KernelError::CgroupMissing {
        path: path.to_path_buf(),
        source,
    })?;
    match statfs(path) {
        Ok(fs) if fs.filesystem_type() == CGROUP2_SUPER_MAGIC => Ok(file),
        _ => Err(KernelError::NotCgroup2 {
            path: path.to_path_buf(),
        }),
    }
}

/// Creates `pin_dir` for a fresh install; refuses one that already holds anything.
pub fn create_pin_dir(pin_dir: &Path) -> Result<(), KernelError> {
    match std::fs::read_dir(pin_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(KernelError::AlreadyInstalled {
                    pin_dir: pin_dir.to_path_buf(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(pin_dir).map_err(|source| KernelError::PinDir {
                action: "cannot create the pin directory",
                path: pin_dir.to_path_buf(),
                source,
            })
        }
        Err(source) => Err(KernelError::PinDir {
            action: "cannot read the pin directory",
            path: pin_dir.to_path_buf(),
            source,
        }),
    }
}

pub fn pin_path(pin_dir: &Path, name: &str) -> PathBuf {
    pin_dir.join(name)
}

/// Removes every HARP pin under `pin_dir`, then the directory. Missing pins are fine (a
/// partial install, or a second call); anything else left in the directory is reported.
pub fn remove_pins(pin_dir: &Path) -> Result<(), KernelError> {
    // Links first: connects stop being steered before the maps they read go away.
    for name in LINKS.iter().chain(MAPS.iter()) {
        let path = pin_path(pin_dir, name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(KernelError::PinDir {
                    action: "cannot remove pin",
                    path,
                    source,
                });
            }
        }
    }
    match std::fs::remove_dir(pin_dir) {
        Ok(()) => {
            // The shared `harp/` directory goes with its last proxy; others keep it busy.
            if let Some(parent) = pin_dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(KernelError::PinDir {
            action: "cannot remove the pin directory (does it hold files that are not HARP's?)",
            path: pin_dir.to_path_buf(),
            source,
        }),
    }
}
