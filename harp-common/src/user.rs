//! The agent's side: `aya::Pod` and conversions from and to socket addresses, so byte order is
//! handled here once.

use core::net::{Ipv4Addr, SocketAddrV4};

use crate::leaders::{Backend, ServiceKey};
use crate::steered::Steered;

/// `user_ip4` form of an address: its octets in memory order (network byte order).
fn addr_to_kernel(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

fn addr_from_kernel(addr: u32) -> Ipv4Addr {
    Ipv4Addr::from(addr.to_ne_bytes())
}

/// `user_port` form of a port: network byte order in the low 16 bits.
fn port_to_kernel(port: u16) -> u32 {
    u32::from(port.to_be())
}

fn port_from_kernel(port: u32) -> u16 {
    // The high 16 bits are zero by construction: truncating is the conversion.
    u16::from_be(port as u16)
}

fn to_socket_addr(addr: u32, port: u32) -> SocketAddrV4 {
    SocketAddrV4::new(addr_from_kernel(addr), port_from_kernel(port))
}

impl ServiceKey {
    pub fn new(service: SocketAddrV4) -> ServiceKey {
        ServiceKey {
            addr: addr_to_kernel(*service.ip()),
            port: port_to_kernel(service.port()),
        }
    }

    pub fn socket_addr(&self) -> SocketAddrV4 {
        to_socket_addr(self.addr, self.port)
    }
}

impl From<SocketAddrV4> for ServiceKey {
    fn from(service: SocketAddrV4) -> ServiceKey {
        ServiceKey::new(service)
    }
}

impl Backend {
    /// An entry for `backend` under `token`, standing until `expires_ns` (boot-time ns);
    /// `steer`: new connects go to it (false while its leadership drains).
    pub fn new(
        backend: SocketAddrV4,
        token: u64,
        expires_ns: u64,
        steer: bool,
        netns: u64,
    ) -> Backend {
        Backend {
            addr: addr_to_kernel(*backend.ip()),
            port: port_to_kernel(backend.port()),
            token,
            expires_ns,
            flags: if steer { crate::leaders::STEER } else { 0 },
            reserved: 0,
            netns,
        }
    }

    pub fn socket_addr(&self) -> SocketAddrV4 {
        to_socket_addr(self.addr, self.port)
    }
}

impl Steered {
    /// The address the client connected to.
    pub fn service(&self) -> SocketAddrV4 {
        to_socket_addr(self.service_addr, self.service_port)
    }

    /// The address the connection really went to.
    pub fn backend(&self) -> SocketAddrV4 {
        to_socket_addr(self.backend_addr, self.backend_port)
    }
}

// SAFETY (all three): `#[repr(C)]`, only integer fields, no padding (sizes asserted in lib.rs),
// so every byte pattern is a valid value and the kernel's bytes can be read as one.
#[expect(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
unsafe impl aya::Pod for ServiceKey {}
#[expect(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
unsafe impl aya::Pod for Backend {}
#[expect(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
unsafe impl aya::Pod for Steered {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_key_matches_the_kernels_byte_layout() {
        let key = ServiceKey::new("127.0.0.1:6432".parse().unwrap());
        // user_ip4: the four octets in memory order; user_port: two big-endian bytes, then 0.
        assert_eq!(key.addr.to_ne_bytes(), [127, 0, 0, 1]);
        assert_eq!(key.port.to_ne_bytes(), [0x19, 0x20, 0, 0]);
        assert_eq!(key.socket_addr(), "127.0.0.1:6432".parse().unwrap());
    }

    #[test]
    fn backend_and_steered_round_trip() {
        let b = Backend::new("10.1.2.3:5432".parse().unwrap(), 7, 9, true, 1);
        assert_eq!(b.socket_addr(), "10.1.2.3:5432".parse().unwrap());
        assert_eq!(b.token, 7);
        let s = Steered {
            service_addr: ServiceKey::new("127.0.0.1:6432".parse().unwrap()).addr,
            service_port: ServiceKey::new("127.0.0.1:6432".parse().unwrap()).port,
            backend_addr: b.addr,
            backend_port: b.port,
            token: b.token,
        };
        assert_eq!(s.service(), "127.0.0.1:6432".parse().unwrap());
        assert_eq!(s.backend(), "10.1.2.3:5432".parse().unwrap());
    }
}
