//! HARP's kernel programs. They only look up and rewrite: every decision (which service goes to
//! which backend, which sockets are spliced) arrives from the agent as map entries.
//!
//! - [`connect4`]: `connect()` to a service address goes to the current lead master instead.
//! - [`getpeername4`]: such a socket reports the service address as its peer.
//! - [`egress`]: a steered socket whose leadership no longer stands sends nothing.
//! - [`release`]: a closing socket's record goes with it.
//! - [`splice`]: bytes arriving on one socket of a proxy pair leave on its partner, in the kernel.

#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic_xadd: the only atomic add the BPF target offers"
)]

mod connect4;
mod egress;
mod getpeername4;
mod maps;
mod release;
mod splice;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this: it is never called.
    loop {}
}

/// The kernel checks this string only for GPL-only helpers, which these programs do not call
/// (map helpers, `get_socket_cookie` and `sk_redirect_hash` are not GPL-only). A program
/// that needs one (e.g. `bpf_perf_event_output` for aya-log) must declare a GPL-compatible
/// license here.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 11] = *b"Apache-2.0\0";
