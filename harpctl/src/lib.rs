//! harpctl: HARP's operator CLI. It talks to etcd only: reads a cluster's state with one
//! prefix get of `/harp/<cluster>/`, and changes it by writing the keys the managers and agents
//! watch (`fenced/`, `managed`, `unmanaged/`, `intent/promote/`, `intent/reinit/`).
//!
//! Exit status: see [`error`] (0 ok, 1 refused or incomplete, 2 usage, 3 etcd unreachable,
//! 4 not found).

pub mod cli;
pub mod cmd;
pub mod conn;
pub mod context;
pub mod error;
pub mod output;
pub mod snapshot;
pub mod view;

pub use cli::Cli;
pub use error::CtlError;

/// Runs one parsed command line; returns what to print on stdout.
pub async fn run(cli: Cli) -> Result<String, CtlError> {
    let ctx = context::Context::new(cli.globals)?;
    cmd::run(&ctx, cli.command).await
}
