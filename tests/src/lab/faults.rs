//! Network faults, all made where a real network would make them: in the lab's switch.
//!
//! Drops are nftables rules in the switch namespace (table `bridge harp_lab`, hook forward), so
//! a cut-off or partitioned host sees silence and timeouts — never the instant `EPERM` that a
//! rule in its own output path would give. A link down is the host's cable (`v-<host>`) going
//! down. A slow link is a rate limit in both directions plus random loss:
//!
//! - rate: `tbf` on the cable's switch side (traffic to the host) and on the host's `eth0`
//!   (traffic from it) — the only shaping qdiscs this kernel has;
//! - loss: nftables `numgen random mod 100 < N drop` on the cable, in both directions;
//! - delay needs `netem`, which this kernel lacks ("Specified qdisc kind is unknown", and
//!   there are no modules to load). [`Net::slow`] with a delay uses netem (delay + rate) where
//!   the kernel has it and otherwise returns [`LabError::Unsupported`] before changing anything;
//!   [`Net::netem_available`] tells beforehand. Scenarios that want latency (a slow etcd peer,
//!   a lagging standby) should run it on a machine with `sch_netem`, e.g. the Vagrant VMs.
//!
//! [`Net::heal`] undoes everything. The functions return `()`; callers record their marks.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::lab::net::{BRIDGE, HOST_IF, LabError, Net, run};

const TABLE: &str = "bridge harp_lab";

impl Net {
    /// `host` can reach no one and no one can reach it (its cable drops everything).
    pub fn cut_off(&self, host: &str) -> Result<(), LabError> {
        let port = &self.host(host)?.port;
        self.add_rules(&[
            format!("iifname \"{port}\" drop comment \"cut_off {host}\""),
            format!("oifname \"{port}\" drop comment \"cut_off {host}\""),
        ])
    }

    /// Traffic between any host of `a` and any host of `b` is dropped, both ways; traffic
    /// within each side and with hosts in neither is unaffected.
    pub fn partition(&self, a: &[&str], b: &[&str]) -> Result<(), LabError> {
        let (sa, sb) = (self.ip_set(a)?, self.ip_set(b)?);
        if a.is_empty() || b.is_empty() {
            return Ok(());
        }
        let label = format!("partition {a:?} | {b:?}").replace('"', "");
        self.add_rules(&[
            format!("ip saddr {sa} ip daddr {sb} drop comment \"{label}\""),
            format!("ip saddr {sb} ip daddr {sa} drop comment \"{label}\""),
        ])
    }

    /// TCP between `host` and the hosts of `peers` on `ports` (either side's port) is dropped on
    /// `host`'s cable, both ways; everything else `host` sends and receives passes. Dropped in
    /// the switch, like every fault here, so the host sees silence rather than an `EPERM`.
    pub fn cut_ports(&self, host: &str, peers: &[&str], ports: &[u16]) -> Result<(), LabError> {
        let port = &self.host(host)?.port;
        let ips = self.ip_set(peers)?;
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        let ports = format!("{{ {} }}", list.join(", "));
        let label = format!("cut {host} from {peers:?} on {ports}").replace('"', "");
        self.add_rules(&[
            format!("iifname \"{port}\" ip daddr {ips} tcp dport {ports} drop comment \"{label}\""),
            format!("oifname \"{port}\" ip saddr {ips} tcp sport {ports} drop comment \"{label}\""),
        ])
    }

    /// Removes every rule and qdisc the faults added and brings every link up.
    pub fn heal(&self) -> Result<(), LabError> {
        // `add` then `delete`: removes the table whether or not it exists, in one transaction.
        self.nft(&format!("add table {TABLE}\ndelete table {TABLE}\n"))?;
        for h in self.hosts() {
            self.set_port(&h.name, true)?;
            let _ = self.tc(self.switch_ns(), &["qdisc", "del", "dev", &h.port, "root"]);
            let _ = self.tc(&h.ns, &["qdisc", "del", "dev", HOST_IF, "root"]);
        }
        Ok(())
    }

    /// Pulls `host`'s cable: its `eth0` loses carrier (no error, just no traffic).
    pub fn link_down(&self, host: &str) -> Result<(), LabError> {
        self.set_port(host, false)
    }

    pub fn link_up(&self, host: &str) -> Result<(), LabError> {
        self.set_port(host, true)
    }

    /// Limits `host`'s link to `rate_kbit` each way and drops `loss_pct`% of its packets each
    /// way; with `delay`, also delays them (needs netem: see the module docs). Replaces an
    /// earlier `slow` of the same host's rate and delay (loss rules add up until `heal`).
    pub fn slow(
        &self,
        host: &str,
        rate_kbit: u32,
        loss_pct: u8,
        delay: Option<Duration>,
    ) -> Result<(), LabError> {
        let h = self.host(host)?.clone();
        if rate_kbit == 0 || loss_pct > 100 {
            return Err(LabError::Unsupported(format!(
                "slow {host}: rate must be > 0 kbit/s and loss 0-100% (got {rate_kbit}, \
                 {loss_pct})"
            )));
        }
        let rate = format!("{rate_kbit}kbit");
        let qdisc: Vec<String> = match delay {
            Some(d) => {
                if !self.netem_available() {
                    return Err(LabError::Unsupported(format!(
                        "slow {host} with a delay needs the netem qdisc, which this kernel \
                         lacks: use rate and loss only, or a kernel with sch_netem (the VMs)"
                    )));
                }
                let ms = format!("{}ms", d.as_millis());
                ["netem", "delay", &ms, "rate", &rate]
                    .map(String::from)
                    .into()
            }
            None => {
                // Burst: 100 ms worth of bytes, at least two full frames.
                let burst = (u64::from(rate_kbit) * 125 / 10).max(3200).to_string();
                ["tbf", "rate", &rate, "burst", &burst, "latency", "200ms"]
                    .map(String::from)
                    .into()
            }
        };
        let mut sw_args = vec!["qdisc", "replace", "dev", &h.port, "root"];
        sw_args.extend(qdisc.iter().map(String::as_str));
        self.tc(self.switch_ns(), &sw_args)?;
        let mut host_args = vec!["qdisc", "replace", "dev", HOST_IF, "root"];
        host_args.extend(qdisc.iter().map(String::as_str));
        self.tc(&h.ns, &host_args)?;
        if loss_pct > 0 {
            let port = &h.port;
            let drop = format!("numgen random mod 100 < {loss_pct} drop comment \"loss {host}\"");
            self.add_rules(&[
                format!("iifname \"{port}\" {drop}"),
                format!("oifname \"{port}\" {drop}"),
            ])?;
        }
        Ok(())
    }

    /// Whether this kernel has the netem qdisc (probed on the switch's bridge, then removed).
    pub fn netem_available(&self) -> bool {
        let sw = self.switch_ns();
        let ok = self
            .tc(
                sw,
                &[
                    "qdisc", "add", "dev", BRIDGE, "root", "netem", "delay", "1ms",
                ],
            )
            .is_ok();
        if ok {
            let _ = self.tc(sw, &["qdisc", "del", "dev", BRIDGE, "root"]);
        }
        ok
    }

    /// Flaps `host`'s link on a thread: down for `period`, up for `period`, `times` times.
    /// The link is up again when the thread ends, is stopped, or the handle is dropped.
    pub fn flap(&self, host: &str, period: Duration, times: u32) -> Result<Flap, LabError> {
        let h = self.host(host)?;
        let (sw, port) = (self.switch_ns().to_string(), h.port.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let wait = |d: Duration| {
                let end = Instant::now() + d;
                while Instant::now() < end && !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            };
            for _ in 0..times {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let _ = set_link(&sw, &port, false);
                wait(period);
                let _ = set_link(&sw, &port, true);
                wait(period);
            }
            set_link(&sw, &port, true)
        });
        Ok(Flap {
            stop,
            thread: Some(thread),
        })
    }

    fn set_port(&self, host: &str, up: bool) -> Result<(), LabError> {
        set_link(self.switch_ns(), &self.host(host)?.port, up)
    }

    /// `{ ip, ip }` for an nft rule.
    fn ip_set(&self, hosts: &[&str]) -> Result<String, LabError> {
        let ips = hosts
            .iter()
            .map(|h| self.host(h).map(|h| h.ip))
            .collect::<Result<Vec<Ipv4Addr>, _>>()?;
        let list: Vec<String> = ips.iter().map(Ipv4Addr::to_string).collect();
        Ok(format!("{{ {} }}", list.join(", ")))
    }

    /// Appends `rules` to the fault chain (created on first use).
    fn add_rules(&self, rules: &[String]) -> Result<(), LabError> {
        let mut script = format!(
            "add table {TABLE}\n\
             add chain {TABLE} faults {{ type filter hook forward priority 0; policy accept; }}\n"
        );
        for r in rules {
            script.push_str(&format!("add rule {TABLE} faults {r}\n"));
        }
        self.nft(&script)
    }

    /// Runs an nft script in the switch namespace.
    fn nft(&self, script: &str) -> Result<(), LabError> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.switch_ns(), "nft", "-f", "-"]);
        run(cmd, Some(script)).map(drop)
    }

    fn tc(&self, ns: &str, args: &[&str]) -> Result<(), LabError> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, "tc"]).args(args);
        run(cmd, None).map(drop)
    }
}

fn set_link(switch_ns: &str, port: &str, up: bool) -> Result<(), LabError> {
    let state = if up { "up" } else { "down" };
    crate::lab::net::ip(&["-n", switch_ns, "link", "set", port, state]).map(drop)
}

/// A link flapping on its own thread (see [`Net::flap`]).
#[derive(Debug)]
pub struct Flap {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), LabError>>>,
}

impl Flap {
    /// Waits until the flapping has run its course (link up again).
    pub fn join(mut self) -> Result<(), LabError> {
        self.wait()
    }

    /// Stops early; the link is up again when this returns.
    pub fn stop(mut self) -> Result<(), LabError> {
        self.stop.store(true, Ordering::Relaxed);
        self.wait()
    }

    fn wait(&mut self) -> Result<(), LabError> {
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
            None => Ok(()),
        }
    }
}

impl Drop for Flap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wait();
    }
}
