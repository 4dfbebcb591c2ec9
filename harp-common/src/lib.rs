//! Types shared by HARP's kernel programs (`harp-ebpf`) and the agent: one module per BPF map,
//! each with the map's `NAME`, `MAX_ENTRIES`, key and value types.
//!
//! Addresses and ports are kept exactly as the kernel hands them to a `cgroup/connect4`
//! program in `struct bpf_sock_addr`: `user_ip4` holds the IPv4 address in network byte order,
//! `user_port` the port in network byte order in its low 16 bits. With the `user` feature the
//! types convert from and to [`core::net::SocketAddrV4`], so no caller converts by hand.
//!
//! Every shared type is `#[repr(C)]`, has no implicit padding and no `bool`, and its size is
//! asserted at compile time: the kernel and userspace see the same bytes.

#![cfg_attr(not(test), no_std)]

#[cfg(feature = "user")]
mod user;

/// Service address → the current lead master's address, set by the agent.
pub mod leaders {
    /// Map name, in the object file and under the pin directory.
    pub const NAME: &str = "HARP_LEADERS";
    /// One entry per service address an agent on this host publishes.
    pub const MAX_ENTRIES: u32 = 64;

    /// A service address as `connect()` sees it (`bpf_sock_addr.user_ip4`/`user_port`).
    #[repr(C)]
    #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
    pub struct ServiceKey {
        /// IPv4 address, network byte order (as `user_ip4`).
        pub addr: u32,
        /// Port in network byte order in the low 16 bits (as `user_port`).
        pub port: u32,
    }

    /// The live leadership of a service: where connects go now, and until when the agent's
    /// authority lets the kernel act on it.
    #[repr(C)]
    #[derive(Copy, Clone, Debug, PartialEq, Eq)]
    pub struct Backend {
        /// IPv4 address, network byte order.
        pub addr: u32,
        /// Port in network byte order in the low 16 bits.
        pub port: u32,
        /// Identifies this leadership (chosen by the agent); copied into `steered` entries so
        /// the agent can find the connections made to a leader that has since been replaced.
        pub token: u64,
        /// `CLOCK_BOOTTIME` nanoseconds (`bpf_ktime_get_boot_ns`) from which the entry stands
        /// for nothing: connects are not steered and steered sockets may not send. The agent
        /// extends it only while it trusts etcd; a dead or frozen agent lets it lapse.
        pub expires_ns: u64,
        /// [`STEER`] or 0: during a switchover's drain the leadership lives on for the
        /// sockets it has, but new connects are not steered to it.
        pub flags: u32,
        pub reserved: u32,
        /// The network namespace (`SO_NETNS_COOKIE`) the entry serves: a process of the
        /// cgroup in another namespace (a container) connecting to its own copy of the service
        /// address is left alone.
        pub netns: u64,
    }

    /// `Backend::flags`: new connects to the service are steered to the backend.
    pub const STEER: u32 = 1;
    /// `Backend::expires_ns` of an unmanaged proxy: the operator holds the route.
    pub const NEVER_EXPIRES: u64 = u64::MAX;

    const _: () = assert!(size_of::<ServiceKey>() == 8);
    const _: () = assert!(size_of::<Backend>() == 40);
}

/// Socket-local storage (`BPF_MAP_TYPE_SK_STORAGE`) with each steered socket's [`steered::Steered`]
/// record: it lives exactly as long as the socket, so no record pressure can free a live
/// steered socket from the egress check.
pub mod steered_sk {
    /// Map name in the object file (not pinned: the programs hold it).
    pub const NAME: &str = "HARP_STEERED_SK";
}

/// Socket cookie → what `connect4` did to that socket. `getpeername4` reads it back, the agent
/// walks it to find the sockets to close at a leader change.
pub mod steered {
    /// Map name, in the object file and under the pin directory.
    pub const NAME: &str = "HARP_STEERED";
    /// A plain hash map, whose records the `sock_release` program removes as their sockets
    /// close: a record lives exactly as long as its socket, none is ever evicted. Full (this
    /// many live steered sockets), `connect4` steers no more: new connects reach the agent's
    /// listener.
    pub const MAX_ENTRIES: u32 = 65536;

    /// The key: the socket cookie (`bpf_get_socket_cookie`, `SO_COOKIE`).
    pub type Key = u64;

    /// A steered connection.
    #[repr(C)]
    #[derive(Copy, Clone, Debug, PartialEq, Eq)]
    pub struct Steered {
        /// The service address the client asked for (network byte order).
        pub service_addr: u32,
        /// The service port (network byte order in the low 16 bits).
        pub service_port: u32,
        /// The backend it was sent to (network byte order).
        pub backend_addr: u32,
        /// The backend port (network byte order in the low 16 bits).
        pub backend_port: u32,
        /// The `Backend::token` of the leader entry that steered it.
        pub token: u64,
    }

    const _: () = assert!(size_of::<Steered>() == 24);
}

/// Event counters, indexed by the constants below.
pub mod counters {
    /// Map name, in the object file and under the pin directory.
    pub const NAME: &str = "HARP_COUNTERS";
    /// One slot per counter.
    pub const MAX_ENTRIES: u32 = 8;

    /// Values are plain `u64` event counts.
    pub type Value = u64;

    /// Connects rewritten by `connect4`.
    pub const STEERED: u32 = 0;
    /// `getpeername()` results rewritten back to the service address.
    pub const PEERNAME: u32 = 1;
    /// Socket buffers the verdict program redirected to the partner socket.
    pub const SPLICED: u32 = 2;
    /// Socket buffers for which no partner was found (passed to userspace).
    pub const SPLICE_MISS: u32 = 3;
    /// Connects to a service left alone because its entry had expired (fail closed).
    pub const EXPIRED: u32 = 4;
    /// Packets of steered sockets dropped: their leadership was replaced or its entry expired.
    pub const FENCED: u32 = 5;
    /// Connects left alone because their socket record could not be stored.
    pub const UNRECORDED: u32 = 6;
    /// Client bytes of a spliced session passed up to the relay: its leadership did not stand.
    pub const SPLICE_HELD: u32 = 7;

    const _: () = assert!(SPLICE_HELD < MAX_ENTRIES);
}

/// Client socket cookie → the leadership a spliced proxy session was made under (a
/// [`steered::Steered`] record: service, backend, token). The verdict program moves the client's
/// bytes in the kernel only while that leadership stands; otherwise they go up to the relay,
/// which checks its own authority before writing anything.
pub mod spliced {
    /// Map name, in the object file and under the pin directory.
    pub const NAME: &str = "HARP_SPLICED";
    /// One entry per spliced session (removed when it is unpaired).
    pub const MAX_ENTRIES: u32 = 65536;
}

/// The userspace proxy's spliced socket pairs (a `SockHash`).
pub mod socks {
    /// Map name, in the object file and under the pin directory.
    pub const NAME: &str = "HARP_SOCKS";
    /// Two entries per spliced connection.
    pub const MAX_ENTRIES: u32 = 65536;

    /// The key: the cookie of the *partner* of the socket stored under it, so the verdict
    /// program, looking up the cookie of the socket that received data, finds where to send it.
    pub type Key = u64;
}
