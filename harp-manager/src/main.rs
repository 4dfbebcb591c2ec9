//! harp-manager: runs beside one Postgres node, publishes its status in etcd and competes for
//! its location's leader lease.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use harp_core::config::DEFAULT_CONFIG_PATH;

#[derive(Parser)]
#[command(
    version,
    about = "HARP manager: holds the location's lead-master lease for its Postgres"
)]
struct Args {
    /// Path to config.yml.
    #[arg(short = 'f', long = "config", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = match harp_manager::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(harp_manager::run(args.config, config)) {
        Ok(()) => ExitCode::SUCCESS,
        // Like a config error: this configuration cannot run here.
        // Like a config error too: etcd refused these credentials, or HARP refused etcd's.
        Err(e)
            if e.is::<harp_manager::claim::NameTaken>()
                || e.downcast_ref::<harp_dcs::DcsError>()
                    .is_some_and(harp_dcs::DcsError::is_refusal) =>
        {
            eprintln!("{e}");
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
