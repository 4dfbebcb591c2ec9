//! The maps, typed with `harp-common` (names and sizes must match `harp_common::*::NAME` and
//! `MAX_ENTRIES`: the agent opens them by name).

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::btf_maps::SkStorage;
use aya_ebpf::helpers::bpf_ktime_get_boot_ns;
use aya_ebpf::macros::{btf_map, map};
use aya_ebpf::maps::{Array, HashMap, SockHash};
use harp_common::leaders::{Backend, ServiceKey};
use harp_common::steered::Steered;
use harp_common::{counters, leaders, socks, spliced, steered};

#[map]
pub static HARP_LEADERS: HashMap<ServiceKey, Backend> =
    HashMap::with_max_entries(leaders::MAX_ENTRIES, 0);

#[map]
pub static HARP_STEERED: HashMap<steered::Key, Steered> =
    HashMap::with_max_entries(steered::MAX_ENTRIES, 0);

/// The record of each steered socket, kept with the socket itself (never evicted).
#[btf_map]
pub static HARP_STEERED_SK: SkStorage<Steered> = SkStorage::new();

#[map]
pub static HARP_SPLICED: HashMap<u64, Steered> =
    HashMap::with_max_entries(spliced::MAX_ENTRIES, 0);

#[map]
pub static HARP_COUNTERS: Array<counters::Value> =
    Array::with_max_entries(counters::MAX_ENTRIES, 0);

#[map]
pub static HARP_SOCKS: SockHash<socks::Key> = SockHash::with_max_entries(socks::MAX_ENTRIES, 0);

/// Whether the leadership `record` was made under still stands: its service's entry names
/// its token and has not expired.
#[inline(always)]
pub fn stands(record: &Steered) -> bool {
    let service = ServiceKey {
        addr: record.service_addr,
        port: record.service_port,
    };
    HARP_LEADERS.get_ptr(&service).is_some_and(|b| {
        // SAFETY: a map value pointer from a successful lookup, read once.
        let b = unsafe { *b };
        // SAFETY: reads the boot-time clock, no arguments.
        b.token == record.token && unsafe { bpf_ktime_get_boot_ns() } < b.expires_ns
    })
}

/// Adds one to counter `index` (one of `harp_common::counters::*`).
#[inline(always)]
pub fn bump(index: u32) {
    if let Some(slot) = HARP_COUNTERS.get_ptr_mut(index) {
        // `AtomicU64::fetch_add` does not exist for bpfel: the intrinsic, its result unused,
        // becomes the BPF atomic add (`lock *(u64 *)(r + 0) += 1`).
        // SAFETY: `slot` points to an 8-byte aligned u64 inside the array map's value area,
        // valid while the program runs; other CPUs only touch it atomically as well.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, 1) };
    }
}
