//! Closes the client sockets HARP steered to a replaced leader, with netlink sock_diag
//! `SOCK_DESTROY`.
//!
//! The cgroup/connect4 program rewrites a client's destination to the lead master and records
//! the steered socket's cookie. When the leader changes, [`destroy_tcp4`] closes every steered
//! socket that still goes to the old leader, and only those: a socket is destroyed only if its
//! cookie is one of the targets *and* it is still connected to that target's destination.
//!
//! How: one `SOCK_DIAG_BY_FAMILY` dump (AF_INET, TCP, every state a connected socket can be
//! in) filtered in the kernel by destination with `INET_DIAG_REQ_BYTECODE`, then, for each
//! matching socket, a `SOCK_DESTROY` carrying its exact `inet_diag_sockid` (ports, addresses,
//! interface and cookie, so the kernel refuses with ENOENT rather than hit a socket that
//! reused the 4-tuple). The kernel aborts such a socket like `tcp_abort()`: its owner gets
//! `ECONNABORTED` on its next operation and the peer gets a RST.
//!
//! Covers AF_INET TCP sockets only (what connect4 steers); AF_INET6 sockets connecting to
//! v4-mapped addresses are not seen by connect4 nor by this dump.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddrV4};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    DefaultNla, Emitable, ErrorBuffer, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE,
    NLMSG_ERROR, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    Parseable,
};
use netlink_packet_sock_diag::constants::{AF_INET, IPPROTO_TCP, SOCK_DIAG_BY_FAMILY};
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags,
};
use netlink_packet_sock_diag::{SockDiagDestroy, SockDiagMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};
use nix::libc;

/// Time bound of [`destroy_tcp4`], dump and destroys together.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// A steered socket to close: its cookie (`SO_COOKIE`, as recorded by the connect4 program)
/// and the old leader address it was steered to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    pub cookie: u64,
    pub dst: SocketAddrV4,
}

/// What [`destroy_tcp4`] did, per target cookie.
#[derive(Debug, Default)]
pub struct DestroyReport {
    /// Cookies of the sockets destroyed.
    pub destroyed: Vec<u64>,
    /// Cookies with no TCP socket connected to their target's destination: already closed
    /// (or, never seen in practice, the socket now goes elsewhere and was left alone).
    pub not_found: Vec<u64>,
    /// Sockets the kernel refused to destroy, with why.
    pub failed: Vec<SocketFailure>,
    /// Cookies not attempted because the time bound ran out (the dump had found them).
    pub out_of_time: Vec<u64>,
    /// Wall time of the whole operation.
    pub elapsed: Duration,
}

impl DestroyReport {
    pub fn destroyed_count(&self) -> usize {
        self.destroyed.len()
    }
}

/// A socket that was found but could not be destroyed.
#[derive(Debug)]
pub struct SocketFailure {
    pub target: Target,
    /// The socket's local address, to find it with `ss`.
    pub local: SocketAddrV4,
    pub error: DestroyError,
}

#[derive(Debug, thiserror::Error)]
pub enum DestroyError {
    #[error(
        "cannot open a NETLINK_SOCK_DIAG socket: {0} (needs Linux with sock_diag; check that \
         netlink sockets are not blocked by seccomp)"
    )]
    Open(#[source] io::Error),
    #[error(
        "sock_diag has no TCP handler (ENOENT on the dump): load it with `modprobe tcp_diag` \
         or build the kernel with CONFIG_INET_TCP_DIAG"
    )]
    NoTcpDiag,
    #[error(
        "SOCK_DESTROY refused with EPERM: it needs CAP_NET_ADMIN in the sockets' network \
         namespace (run the agent as root or grant it CAP_NET_ADMIN)"
    )]
    PermissionDenied,
    #[error(
        "SOCK_DESTROY unsupported (EOPNOTSUPP): the kernel was built without \
         CONFIG_INET_DIAG_DESTROY; rebuild it with CONFIG_INET_DIAG_DESTROY=y"
    )]
    Unsupported,
    #[error(
        "sock_diag {op} got no answer within the {timeout:?} bound (system overloaded?); \
         retry the cut-over"
    )]
    Timeout { op: &'static str, timeout: Duration },
    #[error("sock_diag {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("kernel refused sock_diag {op}: {source}")]
    Kernel {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("malformed sock_diag reply to {op}: {detail} (report this as a HARP bug)")]
    Malformed { op: &'static str, detail: String },
}

/// The `SO_COOKIE` of a socket: the kernel's unique, never reused id of it, the same number the
/// connect4 program records and sock_diag reports.
pub fn socket_cookie(fd: &impl AsFd) -> io::Result<u64> {
    socket2::SockRef::from(fd).cookie()
}

/// Destroys, within [`DEFAULT_TIMEOUT`], every AF_INET TCP socket whose cookie is a target's
/// and that is still connected to that target's destination.
pub fn destroy_tcp4(targets: &[Target]) -> Result<DestroyReport, DestroyError> {
    destroy_tcp4_within(targets, DEFAULT_TIMEOUT)
}

/// [`destroy_tcp4`] with an explicit time bound. Past it, the sockets not yet attempted are
/// reported in [`DestroyReport::out_of_time`]; if the dump itself does not finish in time,
/// the call fails with [`DestroyError::Timeout`] and nothing was destroyed.
///
/// Errors out on what would fail for every socket (no netlink, EPERM, EOPNOTSUPP, dump
/// failure); per-socket refusals go to [`DestroyReport::failed`].
pub fn destroy_tcp4_within(
    targets: &[Target],
    timeout: Duration,
) -> Result<DestroyReport, DestroyError> {
    let start = Instant::now();
    let mut report = DestroyReport::default();
    if targets.is_empty() {
        return Ok(report);
    }
    let mut diag = Diag::open(start + timeout, timeout)?;

    let mut dsts: Vec<SocketAddrV4> = targets.iter().map(|t| t.dst).collect();
    dsts.sort_unstable();
    dsts.dedup();
    let found: HashMap<u64, SocketId> = diag
        .dump_tcp4(&dsts)?
        .into_iter()
        .map(|id| (cookie_of(&id), id))
        .collect();

    let mut seen = HashSet::new();
    for target in targets {
        if !seen.insert(target.cookie) {
            continue;
        }
        let Some(id) = found
            .get(&target.cookie)
            .filter(|id| remote_of(id) == Some(target.dst))
        else {
            report.not_found.push(target.cookie);
            continue;
        };
        if diag.expired() {
            report.out_of_time.push(target.cookie);
            continue;
        }
        match diag.destroy(id) {
            Ok(()) => report.destroyed.push(target.cookie),
            Err(Refusal::Gone) => report.not_found.push(target.cookie),
            Err(Refusal::Fatal(e)) => return Err(e),
            Err(Refusal::Timeout) => report.out_of_time.push(target.cookie),
            Err(Refusal::Socket(error)) => report.failed.push(SocketFailure {
                target: *target,
                local: local_of(id).unwrap_or(SocketAddrV4::new(0.into(), 0)),
                error,
            }),
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Why one `SOCK_DESTROY` did not destroy its socket.
#[derive(Debug)]
enum Refusal {
    /// ENOENT: the socket closed between the dump and the destroy (or its 4-tuple now has
    /// another cookie).
    Gone,
    /// Would fail the same for every socket: stop.
    Fatal(DestroyError),
    /// The time bound ran out waiting for the ack.
    Timeout,
    /// This socket only.
    Socket(DestroyError),
}

/// The 64-bit cookie of a sock_diag socket id. The kernel fills `idiag_cookie[2]` as two
/// host-order u32s, low half first (`sock_diag_save_cookie`).
fn cookie_of(id: &SocketId) -> u64 {
    let [a, b, c, d, e, f, g, h] = id.cookie;
    let low = u32::from_ne_bytes([a, b, c, d]);
    let high = u32::from_ne_bytes([e, f, g, h]);
    u64::from(high) << 32 | u64::from(low)
}

/// The inverse of [`cookie_of`].
#[cfg(test)]
fn diag_cookie(cookie: u64) -> [u8; 8] {
    let mut out = [0; 8];
    out[..4].copy_from_slice(&((cookie & 0xffff_ffff) as u32).to_ne_bytes());
    out[4..].copy_from_slice(&((cookie >> 32) as u32).to_ne_bytes());
    out
}

fn remote_of(id: &SocketId) -> Option<SocketAddrV4> {
    match id.destination_address {
        IpAddr::V4(ip) => Some(SocketAddrV4::new(ip, id.destination_port)),
        IpAddr::V6(_) => None,
    }
}

fn local_of(id: &SocketId) -> Option<SocketAddrV4> {
    match id.source_address {
        IpAddr::V4(ip) => Some(SocketAddrV4::new(ip, id.source_port)),
        IpAddr::V6(_) => None,
    }
}

/// States of a TCP socket that still has (or is making) a connection to the old leader: all
/// but LISTEN, TIME_WAIT (no owner left to mislead) and CLOSE (not in the lookup tables).
fn live_states() -> StateFlags {
    StateFlags::all() - StateFlags::LISTEN - StateFlags::TIME_WAIT - StateFlags::CLOSE
}

/// `SOCK_DESTROY` request for one socket, as sent on the wire: a netlink header of type
/// `SOCK_DESTROY` (21) with `NLM_F_REQUEST | NLM_F_ACK`, then the same `inet_diag_req_v2` a
/// dump uses, carrying the socket's exact id as the dump reported it.
fn destroy_request(seq: u32, id: &SocketId) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    header.sequence_number = seq;
    let request = SockDiagMessage::InetRequest(InetRequest {
        family: AF_INET,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states: live_states(),
        socket_id: id.clone(),
    });
    let mut message = NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(SockDiagDestroy::new(request)),
    );
    message.finalize(); // length, and type SOCK_DESTROY from SockDiagDestroy
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// `SOCK_DIAG_BY_FAMILY` dump request: the crate's `inet_diag_req_v2` then an optional
/// `INET_DIAG_REQ_BYTECODE` attribute, which the crate's `InetRequest` cannot carry.
struct DumpRequest {
    request: InetRequest,
    bytecode: Option<DefaultNla>,
}

impl NetlinkSerializable for DumpRequest {
    fn message_type(&self) -> u16 {
        SOCK_DIAG_BY_FAMILY
    }

    fn buffer_len(&self) -> usize {
        self.request.buffer_len() + self.bytecode.as_ref().map_or(0, Emitable::buffer_len)
    }

    fn serialize(&self, buffer: &mut [u8]) {
        let (request, rest) = buffer.split_at_mut(self.request.buffer_len());
        self.request.emit(request);
        if let Some(bytecode) = &self.bytecode {
            bytecode.emit(rest);
        }
    }
}

fn dump_request(seq: u32, dsts: Option<&[SocketAddrV4]>) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let request = DumpRequest {
        request: InetRequest {
            family: AF_INET,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: live_states(),
            socket_id: SocketId::new_v4(),
        },
        bytecode: dsts.map(|d| DefaultNla::new(INET_DIAG_REQ_BYTECODE, dst_filter(d))),
    };
    let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

// From <linux/inet_diag.h>.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
const INET_DIAG_BC_JMP: u8 = 1;
const INET_DIAG_BC_D_COND: u8 = 8;
/// `struct inet_diag_bc_op { u8 code; u8 yes; u16 no; }`
const OP_LEN: usize = 4;
/// A D_COND op, then `struct inet_diag_hostcond { u8 family; u8 prefix_len; (pad 2) int
/// port; __be32 addr[1]; }` for one IPv4 address.
const COND_LEN: usize = OP_LEN + 8 + 4;

/// Inet_diag bytecode keeping the sockets whose destination is one of `dsts` (address and
/// port), compiled as `ss` compiles `dst A or dst B or ...`:
///
/// ```text
/// COND(d0) JMP COND(d1) JMP ... COND(dn)
/// ```
///
/// The kernel runs it from the start: at each op it advances by `yes` if the condition holds,
/// by `no` if not (a JMP always takes `no`), and keeps the socket iff it lands exactly on the
/// end. A COND that holds falls onto its JMP, which jumps to the end (keep); one that fails
/// skips its JMP onto the next COND, and the last one's `no` lands 4 bytes past the end
/// (drop). The kernel's audit walks the `yes` chain, which visits every op.
fn dst_filter(dsts: &[SocketAddrV4]) -> Vec<u8> {
    let mut code = Vec::with_capacity(dsts.len() * (COND_LEN + OP_LEN));
    for (i, dst) in dsts.iter().enumerate() {
        let conds_after = dsts.len() - i - 1;
        code.extend_from_slice(&op(INET_DIAG_BC_D_COND, COND_LEN, COND_LEN + OP_LEN));
        code.extend_from_slice(&[AF_INET, 32, 0, 0]); // family, prefix_len, pad
        code.extend_from_slice(&i32::from(dst.port()).to_ne_bytes()); // host order
        code.extend_from_slice(&dst.ip().octets()); // network order
        if conds_after > 0 {
            let rest = conds_after * COND_LEN + (conds_after - 1) * OP_LEN;
            code.extend_from_slice(&op(INET_DIAG_BC_JMP, OP_LEN, OP_LEN + rest));
        }
    }
    code
}

fn op(code: u8, yes: usize, no: usize) -> [u8; OP_LEN] {
    let yes = u8::try_from(yes).expect("bytecode jump fits u8");
    let no = u16::try_from(no).expect("bytecode jump fits u16");
    let [n0, n1] = no.to_ne_bytes();
    [code, yes, n0, n1]
}

/// Most destinations one filter holds (a JMP's `no` is a u16); more are filtered in
/// userspace only.
const MAX_FILTER_DSTS: usize = (u16::MAX as usize) / (COND_LEN + OP_LEN) - 1;

/// Receive buffer: larger than any datagram a sock_diag dump sends (they are at most 32 KiB).
const RECV_BUF: usize = 64 * 1024;

/// A NETLINK_SOCK_DIAG socket bound to one deadline.
struct Diag {
    socket: Socket,
    seq: u32,
    deadline: Instant,
    timeout: Duration,
    buf: Vec<u8>,
}

impl Diag {
    fn open(deadline: Instant, timeout: Duration) -> Result<Self, DestroyError> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(DestroyError::Open)?;
        socket.bind_auto().map_err(DestroyError::Open)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(DestroyError::Open)?;
        Ok(Self {
            socket,
            seq: 0,
            deadline,
            timeout,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn timeout(&self, op: &'static str) -> DestroyError {
        DestroyError::Timeout {
            op,
            timeout: self.timeout,
        }
    }

    /// Arms SO_SNDTIMEO/SO_RCVTIMEO with what is left of the time bound.
    fn arm(&self, op: &'static str) -> Result<(), DestroyError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.timeout(op));
        }
        // A zero timeval means "block forever": never send one.
        let left = left.max(Duration::from_millis(1));
        let sock = socket2::SockRef::from(&self.socket);
        sock.set_read_timeout(Some(left))
            .and_then(|()| sock.set_write_timeout(Some(left)))
            .map_err(|source| DestroyError::Io { op, source })
    }

    fn send(&self, op: &'static str, bytes: &[u8]) -> Result<(), DestroyError> {
        self.arm(op)?;
        match self.socket.send(bytes, 0) {
            Ok(n) if n == bytes.len() => Ok(()),
            Ok(n) => Err(DestroyError::Io {
                op,
                source: io::Error::other(format!("sent {n} of {} bytes", bytes.len())),
            }),
            Err(e) if is_timeout(&e) => Err(self.timeout(op)),
            Err(source) => Err(DestroyError::Io { op, source }),
        }
    }

    /// Receives one datagram into `self.buf`.
    fn recv(&mut self, op: &'static str) -> Result<(), DestroyError> {
        self.arm(op)?;
        self.buf.clear();
        // MSG_TRUNC: return the datagram's real length, so truncation is detected.
        match self.socket.recv(&mut self.buf, libc::MSG_TRUNC) {
            Ok(n) if n > self.buf.len() => Err(DestroyError::Malformed {
                op,
                detail: format!("datagram of {n} bytes exceeds the {RECV_BUF}-byte buffer"),
            }),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) if is_timeout(&e) => Err(self.timeout(op)),
            Err(source) => Err(DestroyError::Io { op, source }),
        }
    }

    /// Ids of the AF_INET TCP sockets connected to one of `dsts`, filtered by the kernel
    /// (or, if it rejects the bytecode, unfiltered: the caller checks each id anyway).
    fn dump_tcp4(&mut self, dsts: &[SocketAddrV4]) -> Result<Vec<SocketId>, DestroyError> {
        let filter = (dsts.len() <= MAX_FILTER_DSTS).then_some(dsts);
        match self.dump_once(filter) {
            Err(DestroyError::Kernel { source, .. })
                if filter.is_some() && source.raw_os_error() == Some(libc::EINVAL) =>
            {
                self.dump_once(None)
            }
            result => result,
        }
    }

    fn dump_once(&mut self, dsts: Option<&[SocketAddrV4]>) -> Result<Vec<SocketId>, DestroyError> {
        const OP: &str = "dump";
        let seq = self.next_seq();
        self.send(OP, &dump_request(seq, dsts))?;
        let mut ids = Vec::new();
        loop {
            self.recv(OP)?;
            for message in messages(OP, &self.buf) {
                let message = message?;
                if message.sequence_number() != seq {
                    continue; // not ours (cannot happen on a private socket)
                }
                let payload = message.payload();
                match message.message_type() {
                    SOCK_DIAG_BY_FAMILY => {
                        let header = InetResponseHeader::parse(payload).map_err(|e| {
                            DestroyError::Malformed {
                                op: OP,
                                detail: e.to_string(),
                            }
                        })?;
                        if header.family == AF_INET {
                            ids.push(header.socket_id);
                        }
                    }
                    NLMSG_DONE => {
                        // The dump's own status; an empty payload is success.
                        let code = payload
                            .get(..4)
                            .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        return match code {
                            0 => Ok(ids),
                            code => Err(dump_error(code)),
                        };
                    }
                    NLMSG_ERROR => return Err(dump_error(error_code(OP, payload)?)),
                    _ => {} // NOOP and the like
                }
            }
        }
    }

    /// Sends one `SOCK_DESTROY` and waits for its ack.
    fn destroy(&mut self, id: &SocketId) -> Result<(), Refusal> {
        const OP: &str = "SOCK_DESTROY";
        let seq = self.next_seq();
        let classify = |e: DestroyError| match e {
            DestroyError::Timeout { .. } => Refusal::Timeout,
            e => Refusal::Fatal(e),
        };
        self.send(OP, &destroy_request(seq, id)).map_err(classify)?;
        loop {
            self.recv(OP).map_err(classify)?;
            for message in messages(OP, &self.buf) {
                let message = message.map_err(Refusal::Fatal)?;
                if message.sequence_number() != seq || message.message_type() != NLMSG_ERROR {
                    continue;
                }
                let code = error_code(OP, message.payload()).map_err(Refusal::Fatal)?;
                return match -code {
                    0 => Ok(()),
                    libc::ENOENT => Err(Refusal::Gone),
                    libc::EPERM => Err(Refusal::Fatal(DestroyError::PermissionDenied)),
                    libc::EOPNOTSUPP => Err(Refusal::Fatal(DestroyError::Unsupported)),
                    errno => Err(Refusal::Socket(DestroyError::Kernel {
                        op: OP,
                        source: io::Error::from_raw_os_error(errno),
                    })),
                };
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn dump_error(code: i32) -> DestroyError {
    match -code {
        libc::ENOENT => DestroyError::NoTcpDiag,
        errno => DestroyError::Kernel {
            op: "dump",
            source: io::Error::from_raw_os_error(errno),
        },
    }
}

/// The (negative errno, or 0) code of an NLMSG_ERROR payload.
fn error_code(op: &'static str, payload: &[u8]) -> Result<i32, DestroyError> {
    let error = ErrorBuffer::new_checked(payload).map_err(|e| DestroyError::Malformed {
        op,
        detail: e.to_string(),
    })?;
    Ok(error.code().map_or(0, |c| c.get()))
}

/// The netlink messages of one datagram.
fn messages<'a>(
    op: &'static str,
    datagram: &'a [u8],
) -> impl Iterator<Item = Result<NetlinkBuffer<&'a [u8]>, DestroyError>> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match NetlinkBuffer::new_checked(rest) {
            Ok(message) => {
                // Messages are 4-byte aligned (NLMSG_ALIGN); the last may lack its padding.
                let len = (message.length() as usize).next_multiple_of(4);
                rest = rest.get(len..).unwrap_or_default();
                Some(Ok(message))
            }
            Err(e) => {
                rest = &[];
                Some(Err(DestroyError::Malformed {
                    op,
                    detail: e.to_string(),
                }))
            }
        }
    })
}

#[cfg(test)]
mod tests;
