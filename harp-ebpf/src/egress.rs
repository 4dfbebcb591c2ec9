//! `cgroup_skb/egress`: a steered socket sends nothing once its leadership no longer stands —
//! its service's `HARP_LEADERS` entry is gone, names another token, or has expired. The agent
//! closes such sockets with `SOCK_DESTROY`; this is what holds when it cannot (dead, frozen,
//! or its record of the socket lost): not one more byte reaches a replaced leader. Segments
//! without payload still go (the reset of a destroyed socket, a FIN, an ACK): they carry no
//! request, and the reset ends the old leader's backend at once.

use core::ptr;

use aya_ebpf::EbpfContext as _;
use aya_ebpf::bindings::{__sk_buff, bpf_sock};
use aya_ebpf::helpers::bpf_sk_storage_get;
use aya_ebpf::macros::cgroup_skb;
use aya_ebpf::programs::SkBuffContext;
use harp_common::counters;
use harp_common::steered::Steered;

use crate::maps::{HARP_STEERED_SK, bump, stands};

const PASS: i32 = 1;
const DROP: i32 = 0;

#[cgroup_skb(egress)]
pub fn harp_egress(ctx: SkBuffContext) -> i32 {
    // SAFETY: the kernel hands the program a valid `__sk_buff` for its whole run.
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: as above; `sk` is a plain field read.
    let sk: *mut bpf_sock = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return PASS;
    }
    // SAFETY: the map's own address is its reference; `sk` is the skb's non-null socket; a
    // lookup without F_CREATE only reads.
    let record = unsafe {
        bpf_sk_storage_get(
            ptr::from_ref(&HARP_STEERED_SK).cast_mut().cast(),
            sk.cast(),
            ptr::null_mut(),
            0,
        )
    }
    .cast::<Steered>();
    if record.is_null() {
        return PASS; // not steered by HARP
    }
    // SAFETY: non-null storage of this socket, valid during the program, read once.
    if stands(unsafe { &*record }) || payload(&ctx) == Some(0) {
        PASS
    } else {
        bump(counters::FENCED);
        DROP
    }
}

/// TCP payload bytes of an IPv4 packet (the skb starts at the IP header); `None` when the
/// headers cannot be read, which then counts as payload.
fn payload(ctx: &SkBuffContext) -> Option<u32> {
    let ihl = u32::from(ctx.load::<u8>(0).ok()? & 0x0f) * 4;
    let doff = u32::from(ctx.load::<u8>(ihl as usize + 12).ok()? >> 4) * 4;
    ctx.len().checked_sub(ihl + doff)
}
