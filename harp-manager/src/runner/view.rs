//! What the manager publishes of itself: its status record and its HTTP view.

use harp_core::election::Role;
use harp_core::records::{NodeStatus, PgState, RECORD_VERSION, ReplicaFacts};

use super::Runner;
use crate::http::StatusView;

impl Runner {
    pub(super) fn status(&self) -> NodeStatus {
        let e = &self.election;
        let streaming = e.is_streaming();
        NodeStatus {
            version: RECORD_VERSION,
            node: self.me().to_owned(),
            location: self.config.location.clone(),
            group: streaming.then(|| self.location().to_owned()),
            replica: streaming.then(|| ReplicaFacts {
                lag: self.lag(),
                ..self.facts.clone()
            }),
            reason: self.reason(),
            postgres: e.postgres(),
            priority: e.params().priority,
            wal_lsn: e.wal_lsn(),
            leader: e.is_leader(),
            address: self.address.clone(),
            port: self.port,
            pending_restart: self
                .pending_restart
                .iter()
                .map(|k| (*k).to_owned())
                .collect(),
            updated_ms: harp_core::records::unix_ms(),
        }
    }

    pub(super) fn publish_status(&self) {
        // Leaving: the release txn deleted our status; writing it again would make peers
        // count us as a candidate until the lease is revoked.
        if self.election.is_shutting_down() {
            return;
        }
        if let Some(lease) = self.lease {
            let st = self.status();
            let key = self.dcs.keys.node_status(&st.node);
            self.publish.send_replace(Some((key, st.encode(), lease)));
        }
        self.publish_optime();
    }

    pub(super) fn refresh_view(&self) {
        let e = &self.election;
        let (role, token) = match e.role() {
            Role::Leader { token, .. } => ("leader", Some(token)),
            Role::Follower => ("follower", None),
        };
        self.view.send_replace(StatusView {
            name: self.me().to_owned(),
            location: self.location().to_owned(),
            role,
            token,
            postgres: e.postgres(),
            leader: e.holder().map(|h| h.node.clone()),
            leader_token: e.holder().map(|h| h.token),
            fenced: e.is_fenced(),
            managed: e.is_managed(),
            ineligible: e.ineligible_reason(),
            switchover_refusal: e.switchover_refusal(),
            etcd_session: self.lease.is_some(),
            replication: self.config.cluster.replication.as_str(),
            // Promoted and routable: not while our record still says promoting.
            writable: token.is_some()
                && e.postgres() == PgState::Primary
                && self
                    .leader_record
                    .borrow()
                    .as_ref()
                    .is_some_and(|r| r.node == self.me() && r.routable()),
            replica: ReplicaFacts {
                lag: self.lag(),
                ..self.facts.clone()
            },
            reason: self.reason(),
        });
    }
}
