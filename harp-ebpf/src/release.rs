//! `cgroup/sock_release`: a socket of the cgroup is closing; its steered record (if any) goes
//! with it, so `HARP_STEERED` holds exactly the live steered sockets. (Its socket-local
//! storage is freed by the kernel with the socket.)

use aya_ebpf::helpers::bpf_get_socket_cookie;
use aya_ebpf::macros::cgroup_sock;
use aya_ebpf::programs::SockContext;

use crate::maps::HARP_STEERED;

/// sock_release programs must return 1.
const ALLOW: i32 = 1;

#[cgroup_sock(sock_release)]
pub fn harp_release(ctx: SockContext) -> i32 {
    // SAFETY: `get_socket_cookie` is allowed on a cgroup sock context and only reads it.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock.cast()) };
    let _ = HARP_STEERED.remove(&cookie);
    ALLOW
}
