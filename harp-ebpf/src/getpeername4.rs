//! `cgroup/getpeername4`: a socket that `connect4` steered reports the service address it asked
//! for as its peer, not the backend it really talks to.

use aya_ebpf::EbpfContext as _;
use aya_ebpf::helpers::bpf_get_socket_cookie;
use aya_ebpf::macros::cgroup_sock_addr;
use aya_ebpf::programs::SockAddrContext;
use harp_common::counters;

use crate::maps::{HARP_STEERED, bump};

/// getpeername programs must return 1.
const ALLOW: i32 = 1;

#[cgroup_sock_addr(getpeername4)]
pub fn harp_getpeername4(ctx: SockAddrContext) -> i32 {
    match try_harp_getpeername4(&ctx) {
        Ok(()) | Err(()) => ALLOW,
    }
}

fn try_harp_getpeername4(ctx: &SockAddrContext) -> Result<(), ()> {
    // SAFETY: `get_socket_cookie` is allowed on a sock_addr context and only reads it.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let steered = HARP_STEERED.get_ptr(&cookie).ok_or(())?;
    // SAFETY: a map value pointer from a successful lookup, read once.
    let steered = unsafe { *steered };
    // SAFETY: the kernel hands the program a valid `bpf_sock_addr` for its whole run.
    let sa = unsafe { &mut *ctx.sock_addr };
    // Only a peer that is the recorded backend is rewritten.
    if sa.user_ip4 != steered.backend_addr || sa.user_port != steered.backend_port {
        return Err(());
    }
    sa.user_ip4 = steered.service_addr;
    sa.user_port = steered.service_port;
    bump(counters::PEERNAME);
    Ok(())
}
