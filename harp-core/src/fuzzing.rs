//! The bodies of HARP's fuzz targets (`fuzz/`, run by `cargo xtask fuzz`), here so that the
//! seed corpus and every input a fuzzer once crashed on (`fuzz/regressions/`) are replayed by
//! an ordinary `cargo test` too (`tests/fuzz_regressions.rs`). Each takes arbitrary bytes; a
//! panic is a bug, whether in the code under test or in an invariant asserted here.

use crate::directives::{NodeOverrides, ProxyOverrides};
use crate::pgwire::parse_opening;
use crate::records::{
    LeaderRecord, ManagedRecord, NodeStatus, OptimeRecord, PromoteIntent, ProxyStatus,
    ReinitIntent, SyncRecord,
};
use crate::txstate::TxTracker;

/// The Postgres-wire reader of the proxy: the opening parser, and the transaction tracker fed
/// `data` as a conversation: each control byte says who speaks (high bit: the server) and how
/// many of the following bytes (low 6 bits) they send.
pub fn wire(data: &[u8]) {
    if let Some((_, used)) = parse_opening(data) {
        assert!(
            used <= data.len(),
            "the opening claims {used} of {} bytes",
            data.len()
        );
    }
    let mut tracker = TxTracker::new();
    let mut rest = data;
    while let Some((&ctl, tail)) = rest.split_first() {
        let (chunk, next) = tail.split_at(usize::from(ctl & 0x3f).min(tail.len()));
        let was_opaque = tracker.is_opaque();
        match ctl & 0x80 {
            0 => tracker.client_bytes(chunk),
            _ => tracker.server_bytes(chunk),
        }
        assert!(
            !was_opaque || tracker.is_opaque(),
            "an opaque session came back"
        );
        assert!(
            !(tracker.is_opaque() && tracker.at_boundary()),
            "opaque yet at a boundary"
        );
        rest = next;
    }
}

/// The config loader, on any text: an error or a config, never a panic.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::parse_str(text, "fuzz.yml");
    }
}

/// Every etcd record decoder: a record that decodes encodes to one that decodes to itself.
pub fn records(data: &[u8]) {
    macro_rules! round_trip {
        ($($t:ty),*) => {$(
            if let Ok(r) = <$t>::decode(data) {
                let again = <$t>::decode(r.encode().as_bytes())
                    .unwrap_or_else(|e| panic!("{} re-encoded does not decode: {e}", stringify!($t)));
                assert_eq!(r, again, "{} changed in a round trip", stringify!($t));
            }
        )*};
    }
    round_trip!(
        LeaderRecord,
        NodeStatus,
        PromoteIntent,
        ManagedRecord,
        ProxyStatus,
        OptimeRecord,
        SyncRecord,
        ReinitIntent,
        NodeOverrides,
        ProxyOverrides
    );
}
