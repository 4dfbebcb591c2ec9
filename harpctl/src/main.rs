//! harpctl: HARP's operator CLI (see the library crate). Exit status: 0 success, 1 refused or
//! did not complete, 2 usage or config error, 3 etcd unreachable, 4 not found.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use harpctl::error::EXIT_REFUSED;
use harpctl::{Cli, CtlError};

fn main() -> ExitCode {
    // Usage errors exit 2 and --help/--version 0, from clap itself.
    let cli = Cli::parse();
    match try_main(cli) {
        Ok(out) => {
            // A closed pipe (`harpctl get nodes | head -1`) is not an error.
            let _ = std::io::stdout().lock().write_all(out.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("harpctl: {e:#}");
            let code = e
                .downcast_ref::<CtlError>()
                .map_or(EXIT_REFUSED, CtlError::exit_code);
            ExitCode::from(code)
        }
    }
}

fn try_main(cli: Cli) -> anyhow::Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    Ok(rt.block_on(harpctl::run(cli))?)
}
