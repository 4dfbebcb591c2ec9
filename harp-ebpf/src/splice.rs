//! `sk_skb/stream_verdict` on `HARP_SOCKS`: data arriving on a socket of a proxy pair is sent
//! out of its partner without a trip through userspace. The partner is stored under the
//! receiving socket's own cookie; without one the data goes to the socket's receive queue, where
//! the userspace proxy reads it as usual. A client's bytes are moved only while the leadership
//! its session was made under stands (`HARP_SPLICED`); otherwise they too go up to the relay,
//! which sends nothing without authority — a frozen agent's sessions deliver nothing.

use aya_ebpf::EbpfContext as _;
use aya_ebpf::bindings::sk_action::SK_PASS;
use aya_ebpf::helpers::bpf_get_socket_cookie;
use aya_ebpf::macros::stream_verdict;
use aya_ebpf::programs::SkBuffContext;
use harp_common::counters;

use crate::maps::{HARP_SOCKS, HARP_SPLICED, bump, stands};

/// `bpf_sk_redirect_hash` flags: 0 = send on the partner (not `BPF_F_INGRESS`: receive on it).
const EGRESS: u64 = 0;

#[stream_verdict]
pub fn harp_splice(ctx: SkBuffContext) -> u32 {
    match try_harp_splice(&ctx) {
        Ok(verdict) | Err(verdict) => verdict,
    }
}

fn try_harp_splice(ctx: &SkBuffContext) -> Result<u32, u32> {
    // SAFETY: `get_socket_cookie` is allowed on an sk_skb context and only reads it.
    let mut cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if let Some(record) = HARP_SPLICED.get_ptr(&cookie)
        // SAFETY: a map value pointer from a successful lookup, read during the program.
        && !stands(unsafe { &*record })
    {
        bump(counters::SPLICE_HELD);
        return Err(SK_PASS);
    }
    // SK_PASS with the redirect set up, or SK_DROP when no partner is stored.
    if HARP_SOCKS.redirect_skb(ctx, &mut cookie, EGRESS) == i64::from(SK_PASS) {
        bump(counters::SPLICED);
        Ok(SK_PASS)
    } else {
        bump(counters::SPLICE_MISS);
        Err(SK_PASS)
    }
}
