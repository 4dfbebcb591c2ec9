//! The agent's view of the maps: leaders it publishes, connections the kernel steered,
//! counters, and the proxy's spliced socket pairs.

use std::net::SocketAddrV4;
use std::os::fd::AsFd;

use harp_common::counters;
use harp_common::leaders::{Backend, ServiceKey};
use harp_common::steered::Steered;

use aya::maps::MapError;

use super::error::os_error;
use super::{Kernel, KernelError, bpf};

/// `BPF_ANY`: create or replace.
const ANY: u64 = 0;

impl Kernel {
    /// Until `expires_ns` (boot time), sockets steered to `service` under `token` may send,
    /// and with `steer` new connects to `service` from the cgroup go to `backend` (recorded
    /// with `token`). Replaces the service's earlier entry.
    pub fn set_leader(
        &mut self,
        service: SocketAddrV4,
        backend: SocketAddrV4,
        token: u64,
        expires_ns: u64,
        steer: bool,
    ) -> Result<(), KernelError> {
        self.leaders
            .insert(
                &ServiceKey::new(service),
                &Backend::new(backend, token, expires_ns, steer, self.netns),
                ANY,
            )
            .map_err(bpf("cannot set the leader in HARP_LEADERS"))
    }

    /// The entry of `service`, if any.
    pub fn leader(&self, service: SocketAddrV4) -> Option<Backend> {
        self.leaders.get(&ServiceKey::new(service), 0).ok()
    }

    /// From now on, connects to `service` are left alone (they reach the agent's listener).
    /// Already steered connections are not touched. No entry is fine.
    pub fn clear_leader(&mut self, service: SocketAddrV4) -> Result<(), KernelError> {
        match self.leaders.remove(&ServiceKey::new(service)) {
            Err(e) if is_not_found(&e) => Ok(()),
            r => r.map_err(bpf("cannot clear the leader in HARP_LEADERS")),
        }
    }

    /// The published `(service, backend, token)` entries.
    pub fn leaders(&self) -> Vec<(SocketAddrV4, SocketAddrV4, u64)> {
        self.leaders
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k.socket_addr(), v.socket_addr(), v.token))
            .collect()
    }

    /// The connections the kernel steered, by socket cookie. Entries that vanish while being
    /// read (the LRU map evicts, the agent forgets) are skipped.
    pub fn steered(&self) -> Vec<(u64, Steered)> {
        self.steered.iter().filter_map(Result::ok).collect()
    }

    /// Records a steered socket by hand: tests fill the map with records of no socket.
    #[cfg(test)]
    pub fn record_steered(&mut self, cookie: u64, s: Steered) -> Result<(), KernelError> {
        self.steered
            .insert(&cookie, &s, ANY)
            .map_err(bpf("cannot record in HARP_STEERED"))
    }

    /// Drops the record of a steered socket (closed, or cut). Returns whether there was one.
    pub fn forget_steered(&mut self, cookie: u64) -> bool {
        self.steered.remove(&cookie).is_ok()
    }

    /// The event counters, indexed by `harp_common::counters::*`.
    pub fn counters(&self) -> [u64; counters::MAX_ENTRIES as usize] {
        let mut out = [0; counters::MAX_ENTRIES as usize];
        for (i, slot) in (0..).zip(out.iter_mut()) {
            *slot = self.counters.get(&i, 0).unwrap_or(0);
        }
        out
    }

    /// Splices a client socket `a` and a server socket `b` of the proxy: from now on bytes
    /// received on one are sent out of the other in the kernel — the client's only while the
    /// leadership `(service, token)` stands (its `HARP_LEADERS` entry), else they go up to the
    /// relay. Bytes already queued on either socket stay there for userspace to relay.
    pub fn pair(
        &mut self,
        a: &impl AsFd,
        b: &impl AsFd,
        service: SocketAddrV4,
        token: u64,
    ) -> Result<(), KernelError> {
        let (ca, cb) = (socket_cookie(a)?, socket_cookie(b)?);
        let key = ServiceKey::new(service);
        let record = Steered {
            service_addr: key.addr,
            service_port: key.port,
            backend_addr: 0,
            backend_port: 0,
            token,
        };
        // First: a pair the verdict program cannot check is never spliced.
        self.spliced
            .insert(&ca, &record, ANY)
            .map_err(bpf("cannot record a spliced session in HARP_SPLICED"))?;
        // Each socket is stored under its partner's cookie: the verdict program looks up the
        // cookie of the socket that received data and finds where to send it.
        if let Err(e) = self.socks.insert(&ca, b.as_fd(), ANY) {
            let _ = self.spliced.remove(&ca);
            return Err(bpf(
                "cannot add a socket to HARP_SOCKS (it must be a connected TCP socket)",
            )(e));
        }
        if let Err(e) = self.socks.insert(&cb, a.as_fd(), ANY) {
            let _ = self.socks.remove(&ca);
            let _ = self.spliced.remove(&ca);
            return Err(bpf(
                "cannot add a socket to HARP_SOCKS (it must be a connected TCP socket)",
            )(e));
        }
        Ok(())
    }

    /// Ends the splice of `a` and `b` (both stay open; their data goes to userspace again).
    /// Closed sockets leave `HARP_SOCKS` by themselves, not `HARP_SPLICED`: unpair every pair.
    pub fn unpair(&mut self, a: &impl AsFd, b: &impl AsFd) -> Result<(), KernelError> {
        let _ = self.spliced.remove(&socket_cookie(a)?);
        for cookie in [socket_cookie(a)?, socket_cookie(b)?] {
            match self.socks.remove(&cookie) {
                Err(e) if is_not_found(&e) => {}
                r => r.map_err(bpf("cannot remove a socket from HARP_SOCKS"))?,
            }
        }
        Ok(())
    }
}

/// The `SO_COOKIE` of a socket: the number the programs see as its socket cookie.
pub fn socket_cookie(sock: &impl AsFd) -> Result<u64, KernelError> {
    crate::destroy::socket_cookie(sock).map_err(|source| KernelError::SocketCookie { source })
}

fn is_not_found(e: &MapError) -> bool {
    matches!(e, MapError::KeyNotFound) || os_error(e) == Some(nix::libc::ENOENT)
}
