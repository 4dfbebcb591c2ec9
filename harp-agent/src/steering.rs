//! Kernel steering: mirrors the routing decisions into the BPF map that the `connect4`
//! program reads, and at a change destroys the sockets it steered to the old leader.

use std::net::{Ipv4Addr, SocketAddrV4, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use harp_core::config::{ProxyConfig, ProxyMode};
use harp_core::routing::Route;

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
}

impl Steering {
    /// Loads (or adopts) the kernel programs as `mode` asks; `Ok(None)` means userspace only.
    pub fn start(cfg: &ProxyConfig, cluster: &str) -> Result<Option<Steering>, KernelError> {
        if cfg.mode == ProxyMode::Userspace {
            return Ok(None);
        }
        let pins = pin_dir(cluster, &cfg.name);
        let cgroup = cfg.cgroup_path.clone().unwrap_or_else(default_cgroup);
        // A pinned install from an earlier run keeps routing while we start: adopt it.
        let loaded = Kernel::adopt(&pins).or_else(|_| Kernel::load(&cgroup, &pins));
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
        }))
    }

    pub fn kernel(&self) -> SharedKernel {
        self.kernel.clone()
    }

    /// Makes the kernel match `route`: the map names its leader (or nothing, so clients reach
    /// the holding listener), and every steered socket made under a token other than `live`
    /// is destroyed — only sockets HARP steered. The map is written first, so a client
    /// reconnecting after the cut already lands on the new leader. During a switchover's drain
    /// the map is empty but the leadership's sockets live on: the kernel path cannot see
    /// their transactions, so they are closed at the handover.
    pub fn reconcile(&mut self, route: Option<&Route>, live: Option<i64>) {
        let mut k = self.kernel.lock().expect("kernel lock");
        let backend = route.and_then(backend);
        let written = match (route, backend) {
            (Some(r), Some(b)) => k.set_leader(self.service, b, r.token as u64),
            (Some(r), None) => {
                // Local clients then reach the userspace listener, which resolves names itself.
                tracing::warn!(
                    "{} is not an IPv4 address: kernel steering paused",
                    r.address
                );
                k.clear_leader(self.service)
            }
            (None, _) => k.clear_leader(self.service),
        };
        if let Err(e) = written {
            tracing::error!("cannot update the leader map: {e}");
        }
        let keep = match route {
            Some(r) => backend.map(|_| r.token as u64),
            None => live.map(|t| t as u64),
        };
        let targets: Vec<Target> = k
            .steered()
            .into_iter()
            .filter(|(_, s)| Some(s.token) != keep)
            .map(|(cookie, s)| Target {
                cookie,
                dst: s.backend(),
            })
            .collect();
        if targets.is_empty() {
            return;
        }
        match destroy_tcp4(&targets) {
            Ok(report) => {
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
            Err(e) => tracing::error!("cannot close steered sessions to a former leader: {e}"),
        }
        for t in &targets {
            k.forget_steered(t.cookie);
        }
    }
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
