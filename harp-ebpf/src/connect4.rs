//! `cgroup/connect4`: a TCP `connect()` to a service address whose `HARP_LEADERS` entry stands
//! (not expired, steering on) goes to that entry's backend instead; the socket's record is
//! kept with the socket (`HARP_STEERED_SK`, for the egress check) and by cookie
//! (`HARP_STEERED`, for `getpeername4` and the agent; `sock_release` removes it). A full
//! `HARP_STEERED` steers nothing more rather than evict a live socket's record. Without a standing entry nothing
//! changes: the connect reaches the agent's own listener on the service address — held if the
//! agent lives, refused if it is dead (fail closed).

use aya_ebpf::EbpfContext as _;
use aya_ebpf::helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_ktime_get_boot_ns};
use aya_ebpf::macros::cgroup_sock_addr;
use aya_ebpf::programs::SockAddrContext;
use harp_common::counters;
use harp_common::leaders::{STEER, ServiceKey};
use harp_common::steered::Steered;

use crate::maps::{HARP_LEADERS, HARP_STEERED, HARP_STEERED_SK, bump};

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

fn try_harp_connect4(ctx: &SockAddrContext) -> Result<(), i64> {
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
    if backend.flags & STEER == 0 {
        return Ok(()); // drained: new clients wait at the agent's listener
    }
    // SAFETY: `get_netns_cookie` is allowed on a sock_addr context and only reads it.
    if unsafe { bpf_get_netns_cookie(ctx.as_ptr()) } != backend.netns {
        return Ok(()); // another network namespace: its own service address, not ours
    }
    // SAFETY: reads the boot-time clock, no arguments.
    if unsafe { bpf_ktime_get_boot_ns() } >= backend.expires_ns {
        bump(counters::EXPIRED);
        return Ok(());
    }
    let mut steered = Steered {
        service_addr: service.addr,
        service_port: service.port,
        backend_addr: backend.addr,
        backend_port: backend.port,
        token: backend.token,
    };
    // Record first, in both places: a socket the agent or the egress check cannot see is not
    // steered (it would escape a cut-over); unrecorded, it reaches the agent's listener — and
    // carries no record, so the egress check leaves it alone. Storage created for a socket that
    // connects twice is overwritten with the new record.
    // SAFETY: `get_socket_cookie` is allowed on a sock_addr context and only reads it.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if HARP_STEERED.insert(&cookie, &steered, 0).is_err() {
        bump(counters::UNRECORDED);
        return Ok(());
    }
    let slot = HARP_STEERED_SK.get_or_insert_ptr_mut(ctx, Some(&mut steered));
    if slot.is_null() {
        let _ = HARP_STEERED.remove(&cookie);
        bump(counters::UNRECORDED);
        return Ok(());
    }
    // SAFETY: a non-null pointer to this socket's storage, valid during the program.
    unsafe { *slot = steered };
    sa.user_ip4 = backend.addr;
    sa.user_port = backend.port;
    bump(counters::STEERED);
    Ok(())
}
