//! One module per verb. Each returns what to print on stdout; errors carry the exit status.

mod apply;
pub mod completion;
pub mod fence;
pub mod get;
pub mod manage;
pub mod promote;
pub mod reinit;
mod set;

use harp_core::keys::Keys;

use crate::cli::Command;
use crate::conn::Conn;
use crate::context::Context;
use crate::error::CtlError;
use crate::snapshot::Snapshot;

pub async fn run(ctx: &Context, command: Command) -> Result<String, CtlError> {
    match command {
        Command::Get(what) => get::run(ctx, what).await,
        Command::Fence { node } => fence::run(ctx, node, true).await,
        Command::Unfence { node } => fence::run(ctx, node, false).await,
        Command::Manage(target) => manage::run(ctx, target, true).await,
        Command::Unmanage(target) => manage::run(ctx, target, false).await,
        Command::Promote(args) => promote::run(ctx, args).await,
        Command::Reinit { node } => reinit::run(ctx, &node).await,
        Command::Set(target) => set::run(ctx, target).await,
        Command::Apply { file } => apply::run(ctx, &file).await,
        Command::Version => Ok(completion::version(ctx.format())),
        Command::Completion { shell } => Ok(completion::script(shell)),
    }
}

/// The cluster's name and a connection to its etcd.
pub async fn connect(ctx: &Context) -> Result<(String, Conn), CtlError> {
    let cluster = ctx.cluster()?;
    let conn = connect_to(ctx, &cluster).await?;
    Ok((cluster, conn))
}

/// Connects for `cluster` (named by the caller, e.g. from a bootstrap file).
pub async fn connect_to(ctx: &Context, cluster: &str) -> Result<Conn, CtlError> {
    Conn::open(&ctx.dcs()?, &Keys::new(cluster)).await
}

/// One read of the whole cluster; undecodable records are reported on stderr and skipped.
pub async fn read(conn: &Conn, cluster: &str) -> Result<Snapshot, CtlError> {
    let snap = conn.snapshot(cluster).await?;
    for w in &snap.warnings {
        eprintln!("harpctl: warning: {w}");
    }
    Ok(snap)
}
