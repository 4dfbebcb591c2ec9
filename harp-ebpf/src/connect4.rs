//! `cgroup/connect4`: a TCP `connect()` to a service address in `HARP_LEADERS` goes to that
//! entry's backend instead, and the socket's cookie is recorded in `HARP_STEERED`. Without an
//! entry nothing changes (the connect reaches the agent's own listener on the service address).

use aya_ebpf::EbpfContext as _;
use aya_ebpf::helpers::bpf_get_socket_cookie;
use aya_ebpf::macros::cgroup_sock_addr;
use aya_ebpf::programs::SockAddrContext;
use harp_common::counters;
use harp_common::leaders::ServiceKey;
use harp_common::steered::Steered;

use crate::maps::{HARP_LEADERS, HARP_STEERED, bump};

/// Let the `connect()` go on (0 would fail it with EPERM): this program never refuses.
const ALLOW: i32 = 1;
/// `SOCK_STREAM`: only TCP is steered.
const SOCK_STREAM: u32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn harp_connect4(ctx: SockAddrContext) -> i32 {
    match try_harp_connect4(&ctx) {
        // An error only means the socket was not steered: it connects where it asked to.
        Ok(()) | Err(_) => ALLOW,
    }
}

fn try_harp_connect4(ctx: &SockAddrContext) -> Result<(), i32> {
    // SAFETY: the kernel hands the program a valid `bpf_sock_addr` for its whole run.
    let sa = unsafe { &mut *ctx.sock_addr };
    if sa.type_ != SOCK_STREAM {
        return Ok(());
    }
    let service = ServiceKey {
        addr: sa.user_ip4,
        port: sa.user_port,
    };
    let Some(backend) = HARP_LEADERS.get_ptr(&service) else {
        return Ok(());
    };
    // SAFETY: a map value pointer from a successful lookup, read once.
    let backend = unsafe { *backend };
    // SAFETY: `get_socket_cookie` is allowed on a sock_addr context and only reads it.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let steered = Steered {
        service_addr: service.addr,
        service_port: service.port,
        backend_addr: backend.addr,
        backend_port: backend.port,
        token: backend.token,
    };
    // Record first: a connection the agent cannot see is not steered (it would escape the
    // agent's cut-over on a leader change); unrecorded, it reaches the agent's listener.
    HARP_STEERED.insert(&cookie, &steered, 0)?;
    sa.user_ip4 = backend.addr;
    sa.user_port = backend.port;
    bump(counters::STEERED);
    Ok(())
}
