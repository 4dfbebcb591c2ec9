//! Why the kernel path cannot run, each with the fix.

use std::io;
use std::path::PathBuf;

/// An error of the kernel path. Each message names the cause and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "this harp-agent was built without its kernel programs: run `cargo xtask build-ebpf` \
         and rebuild"
    )]
    NotBuilt,
    #[error(
        "{action}: permission denied (EPERM): loading and attaching eBPF programs needs root \
         or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (dist/systemd/harp-agent.service grants \
         exactly these); grant them or set proxy.mode to userspace: {source}"
    )]
    NoPermission {
        action: &'static str,
        #[source]
        source: Box<AyaError>,
    },
    #[error(
        "{action}: the kernel's verifier refused the program, and this process lacks \
         CAP_PERFMON, without which the verifier rejects what HARP's programs do with socket \
         pointers: grant CAP_PERFMON (with CAP_BPF and CAP_NET_ADMIN) or set proxy.mode to \
         userspace: {source}"
    )]
    NoPerfmon {
        action: &'static str,
        #[source]
        source: Box<AyaError>,
    },
    #[error(
        "cgroup {path} does not exist or cannot be opened: {source} (proxy.cgroup_path must \
         name a cgroup v2 directory, e.g. /sys/fs/cgroup/unified)"
    )]
    CgroupMissing {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is not a cgroup v2 directory (cgroup/connect4 programs attach only to cgroup v2; \
         on a hybrid cgroup host use /sys/fs/cgroup/unified)"
    )]
    NotCgroup2 { path: PathBuf },
    #[error(
        "{path} is not on a BPF filesystem, so maps and links cannot be pinned there: mount one \
         with `mount -t bpf bpf /sys/fs/bpf` (./scripts/setup-ebpf does)"
    )]
    BpffsNotMounted { path: PathBuf },
    #[error(
        "{pin_dir} already holds pins of an earlier run: adopt them (Kernel::adopt) or remove \
         them first (`rm -r {pin_dir}` detaches the programs)"
    )]
    AlreadyInstalled { pin_dir: PathBuf },
    #[error(
        "no complete HARP install pinned at {pin}: {source} (nothing to adopt: load the programs \
         instead; if other pins remain there, remove the directory)"
    )]
    NotInstalled {
        pin: PathBuf,
        #[source]
        source: Box<AyaError>,
    },
    #[error("{action} {path}: {source}")]
    PinDir {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the socket cookie (SO_COOKIE, Linux >= 4.12): {source}")]
    SocketCookie {
        #[source]
        source: io::Error,
    },
    #[error(
        "the embedded eBPF object has no {what} {name}: harp-ebpf and harp-common are out of \
         step; rebuild with `cargo xtask build-ebpf` and then harp-agent"
    )]
    ObjectMismatch {
        what: &'static str,
        name: &'static str,
    },
    #[error("{action}: {source}")]
    Io {
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{action}: {source}")]
    Bpf {
        action: &'static str,
        #[source]
        source: Box<AyaError>,
    },
}

/// The aya errors behind [`KernelError::Bpf`] and friends (boxed there: aya's errors are
/// large, and every map update returns a `Result` with this error).
#[derive(Debug, thiserror::Error)]
pub enum AyaError {
    #[error(transparent)]
    Ebpf(#[from] aya::EbpfError),
    #[error(transparent)]
    Program(#[from] aya::programs::ProgramError),
    #[error(transparent)]
    Map(#[from] aya::maps::MapError),
    #[error(transparent)]
    Pin(#[from] aya::pin::PinError),
    #[error(transparent)]
    Link(#[from] aya::programs::links::LinkError),
}

impl AyaError {
    /// The OS error somewhere in the chain (aya wraps the syscall's `io::Error`).
    pub fn os_error(&self) -> Option<i32> {
        os_error(self)
    }
}

/// The first `io::Error` code in `error`'s source chain.
pub fn os_error(error: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur = Some(error);
    while let Some(e) = cur {
        if let Some(code) = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return Some(code);
        }
        cur = e.source();
    }
    None
}

/// `map_err` adapter: an aya error while doing `action`, as [`KernelError::NoPermission`] when
/// the kernel said EPERM, [`KernelError::NoPerfmon`] when the verifier refused a program of a
/// process without CAP_PERFMON, else [`KernelError::Bpf`].
pub fn bpf<E: Into<AyaError>>(action: &'static str) -> impl FnOnce(E) -> KernelError {
    move |e| {
        let source = Box::new(e.into());
        let verifier = matches!(
            *source,
            AyaError::Program(aya::programs::ProgramError::LoadError { .. })
        );
        if source.os_error() == Some(nix::libc::EPERM) {
            KernelError::NoPermission { action, source }
        } else if verifier && !has_capability(CAP_PERFMON) {
            KernelError::NoPerfmon { action, source }
        } else {
            KernelError::Bpf { action, source }
        }
    }
}

const CAP_PERFMON: u32 = 38;

/// Whether this process holds capability `cap` (its bit in `/proc/self/status`' CapEff).
fn has_capability(cap: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_owned();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|eff| eff & (1 << cap) != 0)
}
