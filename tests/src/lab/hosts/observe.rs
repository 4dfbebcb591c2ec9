//! Observing the lab from its `ctl` host: leaders, readiness, restarts.

use std::net::SocketAddr;
use std::time::Duration;

use harp_core::config::Replication;
use harp_core::records::LeaderRecord;

use super::probe::{etcd_answers, http_get, pg_query_one, tcp_open, wait_until};
use super::{CTL, Kind, Lab, roles};
use crate::lab::net::LabError;
use crate::leader::try_read_leader;
use crate::rt::block_on;

impl Lab {
    /// The leader of `location` and its fencing token, read from etcd on the `ctl` host.
    pub fn leader(&self, location: &str) -> Result<Option<(LeaderRecord, i64)>, LabError> {
        let eps = self.etcd_endpoints();
        let cluster = self.cluster();
        let opts = self.etcd_options();
        self.on_ctl(|| {
            block_on(|| async move {
                let client = etcd_client::Client::connect(&eps, Some(opts))
                    .await
                    .map_err(|e| e.to_string())?;
                try_read_leader(&client, &cluster, location)
                    .await
                    .map_err(|e| e.to_string())
            })
        })?
        .map_err(|detail| LabError::Timeout {
            what: format!("read the leader of {location}"),
            secs: 2,
            detail,
        })
    }

    /// Waits until `location` has a leader; returns it.
    pub fn wait_leader(&self, location: &str, timeout: Duration) -> Result<LeaderRecord, LabError> {
        let mut found = None;
        wait_until(&format!("a leader of {location}"), timeout, || {
            match self.leader(location) {
                Ok(Some((rec, _))) => {
                    found = Some(rec);
                    Ok(())
                }
                Ok(None) => Err("no leader key".into()),
                Err(e) => Err(e.to_string()),
            }
        })?;
        found.ok_or_else(|| LabError::Unsupported("unreachable: leader vanished".into()))
    }

    /// Starts `kind` on `host` again after `kill9`/`stop` (same config and data) and waits
    /// until it answers. A streaming node's Postgres is its manager's to start (see
    /// [`Lab::revive_streaming_postgres`]).
    pub fn restart(&mut self, kind: Kind, host: &str) -> Result<(), LabError> {
        if kind == Kind::Postgres && self.spec.replication == Replication::Streaming {
            return self.revive_streaming_postgres(host);
        }
        self.process(kind, host)?.start_again()?;
        self.wait_ready(kind, host)
    }

    /// Waits until `kind` on `host` answers from the `ctl` host: etcd a put+get, Postgres a
    /// query, a manager's HTTP port, an agent's `/health/is-ready`.
    pub fn wait_ready(&mut self, kind: Kind, host: &str) -> Result<(), LabError> {
        let addr = SocketAddr::from((self.net.host(host)?.ip, roles::service_port(kind)));
        let dsn = self.node_dsn(host)?;
        let opts = self.etcd_options();
        let what = format!("{kind} on {host} answering at {addr}");
        let result = wait_until(&what, self.spec.ready_timeout, || {
            let probe = || match kind {
                Kind::Etcd => {
                    let ep = [addr.to_string()];
                    block_on(|| etcd_answers(&ep, opts.clone()))
                }
                Kind::Postgres => block_on(|| pg_query_one(&dsn, "SELECT 1")).map(drop),
                Kind::Manager => tcp_open(addr, Duration::from_secs(1))
                    .then_some(())
                    .ok_or_else(|| "port closed".to_string()),
                Kind::Agent => match http_get(addr, "/health/is-ready", Duration::from_secs(1)) {
                    Some((200, _)) => Ok(()),
                    other => Err(format!("is-ready: {other:?}")),
                },
            };
            self.net.run_in(CTL, probe).map_err(|e| e.to_string())?
        });
        let proc = self.process(kind, host)?;
        match result {
            Err(LabError::Timeout { what, secs, detail }) => Err(LabError::Timeout {
                what,
                secs,
                detail: format!("{detail}\n{}", proc.log_tail(30)),
            }),
            other => other,
        }
    }
}
