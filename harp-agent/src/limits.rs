//! Fitting `max_client_conn` to the open-files limit, as HARP's proxy does.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors kept for etcd, the listeners, logs and health checks.
const RESERVED_FDS: u64 = 64;

/// Raises the soft open-files limit to the hard one, then lowers `wanted` to what fits (two
/// descriptors per client: its socket and the server's), with one log line if it had to.
pub fn fit_max_client_conn(wanted: u32) -> u32 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return wanted;
    };
    let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let fits = (limit.saturating_sub(RESERVED_FDS) / 2).max(1);
    if u64::from(wanted) > fits {
        let fits = fits as u32;
        tracing::warn!(
            "max_client_conn {wanted} needs more than the open-files limit ({limit}) allows; \
             lowered to {fits}"
        );
        return fits;
    }
    wanted
}
