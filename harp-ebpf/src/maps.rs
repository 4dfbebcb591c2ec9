//! The maps, typed with `harp-common` (names and sizes must match `harp_common::*::NAME` and
//! `MAX_ENTRIES`: the agent opens them by name).

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::btf_maps::SkStorage;
use aya_ebpf::macros::{btf_map, map};
use aya_ebpf::maps::{Array, HashMap, LruHashMap, SockHash};
use harp_common::leaders::{Backend, ServiceKey};
use harp_common::steered::Steered;
use harp_common::{counters, leaders, socks, steered};

#[map]
pub static HARP_LEADERS: HashMap<ServiceKey, Backend> =
    HashMap::with_max_entries(leaders::MAX_ENTRIES, 0);

#[map]
pub static HARP_STEERED: LruHashMap<steered::Key, Steered> =
    LruHashMap::with_max_entries(steered::MAX_ENTRIES, 0);

/// The record of each steered socket, kept with the socket itself (never evicted).
#[btf_map]
pub static HARP_STEERED_SK: SkStorage<Steered> = SkStorage::new();

#[map]
pub static HARP_COUNTERS: Array<counters::Value> =
    Array::with_max_entries(counters::MAX_ENTRIES, 0);

#[map]
pub static HARP_SOCKS: SockHash<socks::Key> = SockHash::with_max_entries(socks::MAX_ENTRIES, 0);

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
