//! HARP core: configuration, the etcd key schema, record types and the pure state machines that
//! make every decision. No I/O happens here, so tests drive it with a fake clock.

pub mod config;
pub mod directives;
pub mod election;
#[doc(hidden)]
pub mod fuzzing;
pub mod keys;
pub mod lease;
pub mod pgwire;
pub mod records;
pub mod routing;
pub mod sync;
pub mod txstate;
