//! The kernel half of HARP's data path: loads the programs of `harp-ebpf` (embedded at build
//! time), attaches them, pins maps and links under a bpffs directory so they outlive the agent,
//! and gives the agent typed access to the maps.
//!
//! - `cgroup/connect4` on a cgroup: a `connect()` to a service address that has an entry in
//!   `HARP_LEADERS` goes to that entry's backend; the socket is recorded in `HARP_STEERED`.
//!   Without an entry the connect is left alone and reaches the agent's own listener.
//! - `cgroup/getpeername4`: a steered socket reports the service address as its peer.
//! - `cgroup_skb/egress`: a steered socket whose leadership no longer stands (replaced, or its
//!   entry expired because the agent stopped extending it) sends nothing more.
//! - `sk_skb/stream_verdict` on `HARP_SOCKS`: splices socket pairs of the userspace proxy.
//!
//! The links are pinned, so steering goes on while the agent restarts; [`Kernel::adopt`] picks
//! the pins up again and [`Kernel::uninstall`] removes them (which detaches the programs).

mod error;
mod maps;
mod pins;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use aya::EbpfLoader;
use aya::maps::{Array, HashMap, Map, MapData, SockHash};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{
    CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr, SkSkb,
};
use harp_common::leaders::{Backend, ServiceKey};
use harp_common::steered::Steered;
use harp_common::{counters, leaders, socks, spliced, steered};

use error::bpf;
pub use error::{AyaError, KernelError};

/// Program names in the object (the function names in `harp-ebpf`).
const PROG_CONNECT4: &str = "harp_connect4";
const PROG_GETPEERNAME4: &str = "harp_getpeername4";
const PROG_EGRESS: &str = "harp_egress";
const PROG_RELEASE: &str = "harp_release";
const PROG_SPLICE: &str = "harp_splice";

/// How the cgroup programs attach. The kernel attaches through a bpf_link (Linux >= 5.7,
/// which aya uses when it can), and cgroup links always run alongside other programs on the
/// cgroup and its ancestors, as with BPF_F_ALLOW_MULTI: the mode only matters for the legacy
/// BPF_PROG_ATTACH path. `Single` is the mode link_create accepts (its flags must be 0 for
/// cgroups); `AllowMultiple` would be refused (EINVAL) by such kernels.
const ATTACH_MODE: CgroupAttachMode = CgroupAttachMode::Single;

/// The object `cargo xtask build-ebpf` built (harp-agent's build script finds it).
#[cfg(harp_ebpf)]
fn object() -> Option<&'static [u8]> {
    Some(aya::include_bytes_aligned!(env!("HARP_EBPF_OBJ")))
}

/// This binary was built before the kernel programs were.
#[cfg(not(harp_ebpf))]
fn object() -> Option<&'static [u8]> {
    None
}

/// Handles to HARP's pinned maps. Dropping it closes them; the pins keep maps and programs.
pub struct Kernel {
    pin_dir: PathBuf,
    leaders: HashMap<MapData, ServiceKey, Backend>,
    steered: HashMap<MapData, steered::Key, Steered>,
    counters: Array<MapData, counters::Value>,
    socks: SockHash<MapData, socks::Key>,
    spliced: HashMap<MapData, u64, Steered>,
    /// This process's network namespace: entries serve only it.
    netns: u64,
}

impl Kernel {
    /// Loads the programs, attaches `connect4` and `getpeername4` to the cgroup v2 directory
    /// `cgroup` and the verdict program to `HARP_SOCKS`, and pins maps and links under
    /// `pin_dir` (on bpffs; created if missing, must be empty). On error nothing stays pinned.
    pub fn load(cgroup: &Path, pin_dir: &Path) -> Result<Kernel, KernelError> {
        let object = object().ok_or(KernelError::NotBuilt)?;
        let cgroup_dir = pins::open_cgroup(cgroup)?;
        pins::require_bpffs(pin_dir)?;
        pins::create_pin_dir(pin_dir)?;
        raise_memlock();
        let installed = install(object, &cgroup_dir, pin_dir).and_then(|()| Kernel::adopt(pin_dir));
        if installed.is_err()
            && let Err(e) = pins::remove_pins(pin_dir)
        {
            tracing::warn!("cannot clean up after a failed load: {e}");
        }
        installed
    }

    /// Opens the maps an earlier [`Kernel::load`] pinned under `pin_dir` (by this or an
    /// earlier agent process), after checking that its links are pinned there too.
    pub fn adopt(pin_dir: &Path) -> Result<Kernel, KernelError> {
        pins::require_bpffs(pin_dir)?;
        for name in pins::LINKS {
            // Only checked: the pin holds the link, no descriptor is kept.
            PinnedLink::from_pin(pins::pin_path(pin_dir, name))
                .map_err(|e| pinned_error(pin_dir, name, e.into()))?;
        }
        Ok(Kernel {
            pin_dir: pin_dir.to_path_buf(),
            leaders: open_map(pin_dir, leaders::NAME)?,
            steered: open_map(pin_dir, steered::NAME)?,
            counters: open_map(pin_dir, counters::NAME)?,
            socks: open_map(pin_dir, socks::NAME)?,
            spliced: open_map(pin_dir, spliced::NAME)?,
            netns: netns_cookie()?,
        })
    }

    /// Removes every pin under `pin_dir` and the directory. The programs detach once no
    /// process holds their links (a [`Kernel`] holds only maps). Nothing pinned is fine.
    pub fn uninstall(pin_dir: &Path) -> Result<(), KernelError> {
        pins::remove_pins(pin_dir)
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }
}

/// Creates the maps and programs from `object`, attaches the programs and pins it all.
fn install(object: &[u8], cgroup: &File, pin_dir: &Path) -> Result<(), KernelError> {
    let mut ebpf = EbpfLoader::new()
        .load(object)
        .map_err(bpf("cannot load the eBPF object"))?;
    for name in pins::MAPS {
        let map = ebpf
            .map(name)
            .ok_or(KernelError::ObjectMismatch { what: "map", name })?;
        map.pin(pins::pin_path(pin_dir, name))
            .map_err(bpf("cannot pin a map"))?;
    }
    // The egress check first: no socket is ever steered without it. Then getpeername4: once
    // connect4 steers, steered sockets already report the service.
    let prog: &mut CgroupSkb = loaded(&mut ebpf, PROG_EGRESS)?;
    let id = prog
        .attach(cgroup, CgroupSkbAttachType::Egress, ATTACH_MODE)
        .map_err(bpf("cannot attach to the cgroup"))?;
    pin_link(prog.take_link(id), pin_dir, pins::LINK_EGRESS)?;
    // Then the records' cleanup: every steered socket's record goes when it closes.
    let prog: &mut CgroupSock = loaded(&mut ebpf, PROG_RELEASE)?;
    let id = prog
        .attach(cgroup, ATTACH_MODE)
        .map_err(bpf("cannot attach to the cgroup"))?;
    pin_link(prog.take_link(id), pin_dir, pins::LINK_RELEASE)?;
    for (prog_name, link_name) in [
        (PROG_GETPEERNAME4, pins::LINK_GETPEERNAME4),
        (PROG_CONNECT4, pins::LINK_CONNECT4),
    ] {
        let prog: &mut CgroupSockAddr = loaded(&mut ebpf, prog_name)?;
        let id = prog
            .attach(cgroup, ATTACH_MODE)
            .map_err(bpf("cannot attach to the cgroup"))?;
        pin_link(prog.take_link(id), pin_dir, link_name)?;
    }
    let socks_fd = {
        let map = ebpf.map(socks::NAME).ok_or(KernelError::ObjectMismatch {
            what: "map",
            name: socks::NAME,
        })?;
        let socks: SockHash<&MapData, socks::Key> =
            map.try_into().map_err(bpf("HARP_SOCKS is no SockHash"))?;
        socks.fd().try_clone().map_err(|source| KernelError::Io {
            action: "cannot duplicate the descriptor of HARP_SOCKS",
            source,
        })?
    };
    let prog: &mut SkSkb = loaded(&mut ebpf, PROG_SPLICE)?;
    let id = prog
        .attach(&socks_fd)
        .map_err(bpf("cannot attach to HARP_SOCKS"))?;
    let link: FdLink = prog
        .take_link(id)
        .map_err(bpf("cannot take the link"))?
        .try_into()
        .map_err(bpf(
            "the kernel gave no bpf_link for the sockmap (Linux >= 6.10 needed)",
        ))?;
    link.pin(pins::pin_path(pin_dir, pins::LINK_SPLICE))
        .map_err(bpf("cannot pin a link"))?;
    Ok(())
}

/// The program `name` of the object, of type `P`, loaded into the kernel.
fn loaded<'a, P>(ebpf: &'a mut aya::Ebpf, name: &'static str) -> Result<&'a mut P, KernelError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    P: Loadable,
{
    let prog: &mut P = ebpf
        .program_mut(name)
        .ok_or(KernelError::ObjectMismatch {
            what: "program",
            name,
        })?
        .try_into()
        .map_err(bpf("unexpected program type"))?;
    prog.load_prog()
        .map_err(bpf("the kernel refused a program"))?;
    Ok(prog)
}

/// aya's program types each have their own `load`.
trait Loadable {
    fn load_prog(&mut self) -> Result<(), aya::programs::ProgramError>;
}

macro_rules! loadable {
    ($($t:ty),*) => {$(
        impl Loadable for $t {
            fn load_prog(&mut self) -> Result<(), aya::programs::ProgramError> {
                self.load()
            }
        }
    )*};
}
loadable!(CgroupSkb, CgroupSock, CgroupSockAddr, SkSkb);

/// Pins a cgroup program's link under `pin_dir/name`.
fn pin_link<L, E>(taken: Result<L, E>, pin_dir: &Path, name: &str) -> Result<(), KernelError>
where
    L: TryInto<FdLink>,
    AyaError: From<E> + From<<L as TryInto<FdLink>>::Error>,
{
    let link: FdLink = taken
        .map_err(|e| bpf::<AyaError>("cannot take the link")(e.into()))?
        .try_into()
        .map_err(|e| {
            bpf::<AyaError>("the kernel gave no bpf_link (Linux >= 5.7 needed)")(e.into())
        })?;
    link.pin(pins::pin_path(pin_dir, name))
        .map(drop)
        .map_err(bpf("cannot pin a link"))
}

/// Opens the map pinned as `pin_dir/name` with its typed view.
fn open_map<M>(pin_dir: &Path, name: &'static str) -> Result<M, KernelError>
where
    M: TryFrom<Map, Error = aya::maps::MapError>,
{
    let data = MapData::from_pin(pins::pin_path(pin_dir, name))
        .map_err(|e| pinned_error(pin_dir, name, e.into()))?;
    Map::from_map_data(data)
        .and_then(M::try_from)
        .map_err(bpf("a pinned map does not have the layout of this build"))
}

/// A pin that cannot be opened: missing means nothing (complete) to adopt.
fn pinned_error(pin_dir: &Path, name: &str, source: AyaError) -> KernelError {
    if source.os_error() == Some(nix::libc::ENOENT) {
        KernelError::NotInstalled {
            pin: pins::pin_path(pin_dir, name),
            source: Box::new(source),
        }
    } else {
        bpf("cannot open a pin")(source)
    }
}

/// The cookie of this process's network namespace (`SO_NETNS_COOKIE`, Linux >= 5.14), what
/// `bpf_get_netns_cookie` returns for its sockets.
#[allow(unsafe_code)]
fn netns_cookie() -> Result<u64, KernelError> {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).and_then(|s| {
            let mut cookie: u64 = 0;
            let mut len = size_of::<u64>() as nix::libc::socklen_t;
            // SAFETY: SO_NETNS_COOKIE writes one u64 into `cookie`, whose size `len` gives.
            let rc = unsafe {
                nix::libc::getsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&s),
                    nix::libc::SOL_SOCKET,
                    nix::libc::SO_NETNS_COOKIE,
                    (&raw mut cookie).cast(),
                    &mut len,
                )
            };
            match rc {
                0 => Ok(cookie),
                _ => Err(io::Error::last_os_error()),
            }
        });
    sock.map_err(|source| KernelError::Io {
        action: "cannot read this network namespace's cookie (SO_NETNS_COOKIE, Linux >= 5.14)",
        source,
    })
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones to the cgroup. Raising
/// it may be refused (no CAP_SYS_RESOURCE) and is then left as is.
fn raise_memlock() {
    use nix::sys::resource::{RLIM_INFINITY, Resource, setrlimit};
    if let Err(e) = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        tracing::debug!(
            "cannot raise RLIMIT_MEMLOCK ({}); fine on Linux >= 5.11",
            io::Error::from(e)
        );
    }
}
