//! Kernel steering: mirrors the routing decisions into the BPF map that the `connect4` and
//! egress programs read, and at a change destroys the sockets it steered to the old leader.
//!
//! Every entry carries the agent's authority as a boot-time deadline, extended at each
//! acknowledged keep-alive: if the agent dies or freezes, the kernel stops steering connects
//! and lets no steered socket send once it passes — with no help from userspace.

use std::net::{Ipv4Addr, SocketAddrV4, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use harp_common::leaders::NEVER_EXPIRES;
use harp_core::config::{ProxyConfig, ProxyMode};
use harp_core::routing::{Authority, Route};

use crate::destroy::{Target, destroy_tcp4};
use crate::kernel::{Kernel, KernelError};

/// Where HARP pins its maps and links, per cluster and proxy, so a restarted agent adopts them.
pub fn pin_dir(cluster: &str, proxy: &str) -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/harp/{cluster}-{proxy}"))
}

/// The host's cgroup2 root: steering covers every process unless `cgroup_path` narrows it.
pub fn default_cgroup() -> PathBuf {
    let unified = PathBuf::from("/sys/fs/cgroup/unified");
    if unified.join("cgroup.procs").exists() {
        unified
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

/// The kernel half of the agent, shared by the decision loop (maps) and the proxy (splicing).
pub type SharedKernel = Arc<Mutex<Kernel>>;

pub struct Steering {
    kernel: SharedKernel,
    /// The address local clients connect to: the proxy's listen address, or loopback when it
    /// listens on every interface.
    service: SocketAddrV4,
    /// The service's entry as this process last wrote it (`None` before the first decision:
    /// an entry adopted from an earlier run keeps its own deadline until then).
    entry: Option<Entry>,
    /// The deadline entries carry, boot-time ns.
    expires_ns: u64,
    /// A cut left steered sockets of a former leadership open (see [`Steering::cut_stale`]).
    stale_left: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    backend: SocketAddrV4,
    token: u64,
    /// New connects go to it (not while its leadership drains).
    steer: bool,
}

impl Steering {
    /// Loads (or adopts) the kernel programs as `mode` asks; `Ok(None)` means userspace only.
    pub fn start(cfg: &ProxyConfig, cluster: &str) -> Result<Option<Steering>, KernelError> {
        if cfg.mode == ProxyMode::Userspace {
            return Ok(None);
        }
        let pins = pin_dir(cluster, &cfg.name);
        let cgroup = cfg.cgroup_path.clone().unwrap_or_else(default_cgroup);
        // A pinned install from an earlier run keeps routing while we start: adopt it. One of
        // another build (an upgrade: other maps or programs) is replaced; meanwhile local
        // connects reach the listener, which holds or proxies them.
        let loaded = match Kernel::adopt(&pins) {
            Ok(k) => Ok(k),
            Err(e) if pins.exists() => {
                tracing::warn!(
                    "the kernel programs pinned in {} are not this build's ({e}): replacing them",
                    pins.display()
                );
                Kernel::uninstall(&pins).and_then(|()| Kernel::load(&cgroup, &pins))
            }
            Err(_) => Kernel::load(&cgroup, &pins),
        };
        let kernel = match (loaded, cfg.mode) {
            (Ok(k), _) => k,
            (Err(e), ProxyMode::Auto) => {
                tracing::warn!("kernel steering unavailable, serving clients in userspace: {e}");
                return Ok(None);
            }
            (Err(e), _) => return Err(e),
        };
        let ip: Ipv4Addr = match cfg.listen_address.parse() {
            Ok(ip) if !Ipv4Addr::is_unspecified(&ip) => ip,
            _ => Ipv4Addr::LOCALHOST,
        };
        let service = SocketAddrV4::new(ip, cfg.listen_port);
        tracing::info!(
            "kernel steering on: connects to {service} from {} go straight to the leader \
             (pins in {})",
            cgroup.display(),
            pins.display()
        );
        Ok(Some(Steering {
            kernel: Arc::new(Mutex::new(kernel)),
            service,
            entry: None,
            expires_ns: 0,
            stale_left: false,
        }))
    }

    pub fn kernel(&self) -> SharedKernel {
        self.kernel.clone()
    }

    /// The address local clients connect to, which the kernel entry is keyed by.
    pub fn service(&self) -> SocketAddrV4 {
        self.service
    }

    /// The leadership the kernel's entry for our service names: before this process decides,
    /// the one an earlier run left steering.
    pub fn adopted_token(&self) -> Option<u64> {
        let k = self.kernel.lock().expect("kernel lock");
        k.leader(self.service).map(|b| b.token)
    }

    /// Carries the agent's authority into the entry's deadline (a later one at each
    /// acknowledged keep-alive). Lapsed authority writes nothing: the entry lapses by itself,
    /// and the decision loop clears it as it cuts.
    pub fn extend(&mut self, authority: Authority) {
        let expires_ns = match authority {
            Authority::Lapsed => return,
            Authority::Until(t) => boot_ns(t),
            Authority::Unbounded => NEVER_EXPIRES,
        };
        if expires_ns == self.expires_ns {
            return;
        }
        self.expires_ns = expires_ns;
        if let Some(e) = self.entry {
            self.write(Some(e));
        }
    }

    fn write(&mut self, entry: Option<Entry>) {
        let mut k = self.kernel.lock().expect("kernel lock");
        let written = match entry {
            Some(e) => k.set_leader(self.service, e.backend, e.token, self.expires_ns, e.steer),
            None => k.clear_leader(self.service),
        };
        match written {
            Ok(()) => self.entry = entry,
            Err(e) => tracing::error!("cannot update the leader map: {e}"),
        }
    }

    /// Makes the kernel match `route`: the map names its leader (or nothing, so clients reach
    /// the holding listener), and every steered socket made under a token other than `live`
    /// is destroyed — only sockets HARP steered; the egress program lets none of them send
    /// meanwhile. The map is written first, so a client reconnecting after the cut already
    /// lands on the new leader. During a switchover's drain the entry stays, not steering, so
    /// the leadership's sockets live on: the kernel path cannot see their transactions, so
    /// they are closed at the handover.
    pub fn reconcile(&mut self, route: Option<&Route>, live: Option<i64>) {
        let entry = match (route, route.and_then(backend)) {
            (Some(r), Some(backend)) => Some(Entry {
                backend,
                token: r.token as u64,
                steer: true,
            }),
            (Some(r), None) => {
                // Local clients then reach the userspace listener, which resolves names itself.
                tracing::warn!(
                    "{} is not an IPv4 address: kernel steering paused",
                    r.address
                );
                None
            }
            (None, _) => live.and_then(|t| self.draining_entry(t as u64)),
        };
        self.write(entry);
        self.cut_stale();
    }

    /// Whether some steered socket of a former leadership is still open: a `SOCK_DESTROY`
    /// failed or ran out of time. [`Steering::cut_stale`] tries again.
    pub fn stale_left(&self) -> bool {
        self.stale_left
    }

    /// Destroys every steered socket whose token is not the entry's. Sockets the kernel could
    /// not destroy now stay recorded, for the next try.
    pub fn cut_stale(&mut self) {
        let keep = self.entry.map(|e| e.token);
        // The walk under the lock, the destroys (up to a second) without: the proxy splices
        // its new sessions through the same handle meanwhile.
        let steered = self.kernel.lock().expect("kernel lock").steered();
        let targets: Vec<Target> = steered
            .into_iter()
            .filter(|(_, s)| Some(s.token) != keep)
            .map(|(cookie, s)| Target {
                cookie,
                dst: s.backend(),
            })
            .collect();
        self.stale_left = false;
        if targets.is_empty() {
            return;
        }
        let mut retry: Vec<u64> = Vec::new();
        match destroy_tcp4(&targets) {
            Ok(report) => {
                retry.extend(report.out_of_time.iter().copied());
                retry.extend(report.failed.iter().map(|f| f.target.cookie));
                if report.destroyed_count() > 0 {
                    tracing::info!(
                        "closed {} steered sessions to a former leader in {:?}",
                        report.destroyed_count(),
                        report.elapsed
                    );
                }
                for f in &report.failed {
                    tracing::error!(
                        "cannot close the steered session {} -> {}: {}",
                        f.local,
                        f.target.dst,
                        f.error
                    );
                }
            }
            Err(e) => {
                tracing::error!("cannot close steered sessions to a former leader: {e}");
                retry.extend(targets.iter().map(|t| t.cookie));
            }
        }
        // Closed or gone: forgotten. The rest can send nothing (the egress program) and
        // are tried again.
        let mut k = self.kernel.lock().expect("kernel lock");
        for t in targets.iter().filter(|t| !retry.contains(&t.cookie)) {
            k.forget_steered(t.cookie);
        }
        self.stale_left = !retry.is_empty();
    }
}

impl Steering {
    /// The entry of a leadership that drains: its backend stays for its sockets, new connects
    /// are not steered. Found in what this process wrote, or in an adopted entry.
    fn draining_entry(&self, token: u64) -> Option<Entry> {
        let backend = match self.entry {
            Some(e) if e.token == token => e.backend,
            _ => {
                let k = self.kernel.lock().expect("kernel lock");
                let b = k.leader(self.service).filter(|b| b.token == token)?;
                b.socket_addr()
            }
        };
        Some(Entry {
            backend,
            token,
            steer: false,
        })
    }
}

/// `at` on the kernel's `CLOCK_BOOTTIME` (what `bpf_ktime_get_boot_ns` reads). Boot time runs
/// on through a suspend, so an entry can only lapse early, never late.
pub(crate) fn boot_ns(at: Instant) -> u64 {
    let ahead = at.saturating_duration_since(Instant::now());
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(std::time::Duration::from)
        .unwrap_or_default();
    u64::try_from((now + ahead).as_nanos()).unwrap_or(NEVER_EXPIRES - 1)
}

fn backend(route: &Route) -> Option<SocketAddrV4> {
    (route.address.as_str(), route.port)
        .to_socket_addrs()
        .ok()?
        .find_map(|a| match a {
            std::net::SocketAddr::V4(v4) => Some(v4),
            _ => None,
        })
}
