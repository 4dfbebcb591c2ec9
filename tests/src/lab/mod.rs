//! The multi-host lab (`cargo xtask lab …`): hosts as network namespaces on one bridge
//! (198.18.0.0/24, only inside the namespaces), real etcd, Postgres, managers and agents on
//! them, faults injected inside the namespaces, a register workload written through the
//! agents, and a checker that proves one write target per location and no lost writes.
//!
//! - `net`: namespaces, bridge, veth, addresses; idempotent setup/teardown.
//! - `faults`: cut off, partition, heal, slow/lossy links, flapping.
//! - `hosts`: the processes of each host, configured by the `vagrant/provision` scripts.
//! - `history`: what the workload and the observers recorded.
//! - `checker`: split-brain and lost-write proofs, timeline of violations.
//! - `plot`: SVG of writes per node over time with fault markers.

pub mod checker;
pub mod faults;
pub mod history;
pub mod hosts;
pub mod net;
pub mod plot;
pub mod scenario;
pub mod workload;
