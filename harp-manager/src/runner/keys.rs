//! What the decision loop makes of each etcd change it watches.

use std::collections::VecDeque;

use harp_core::election::{Event, Peer, ProxyDrain, ProxyState, Switchover};
use harp_core::keys::KeyKind;
use harp_core::records::{LeaderRecord, ManagedRecord, NodeStatus, PromoteIntent, ProxyStatus};

use super::{Runner, directives};
use crate::dcs::holder;
use harp_dcs::KeyChange;

impl Runner {
    pub(super) fn apply_changes(&mut self, changes: Vec<KeyChange>, out: &mut VecDeque<Event>) {
        for ch in changes {
            let keys = self.dcs.keys.clone();
            match keys.parse(&ch.key) {
                Some(KeyKind::Leader(loc)) if loc == self.location() => {
                    self.leader = ch.value.as_ref().map(|(v, rev)| holder(v, *rev));
                    self.leader_record.send_replace(
                        ch.value
                            .as_ref()
                            .and_then(|(v, _)| LeaderRecord::decode(v).ok()),
                    );
                    out.push_back(Event::LeaderObserved(self.leader.clone()));
                }
                Some(KeyKind::NodeStatus(node)) if node != self.me() => {
                    let peer = ch.value.and_then(|(v, _)| match NodeStatus::decode(&v) {
                        Ok(s) => Some(Peer {
                            // Streaming: every node competes for the cluster's one lease.
                            location: s.scope().to_owned(),
                            postgres: s.postgres,
                            priority: s.priority,
                            wal_lsn: s.wal_lsn,
                        }),
                        Err(e) => {
                            tracing::warn!("ignoring the status of {node}: {e}");
                            None
                        }
                    });
                    out.push_back(Event::PeerStatus {
                        node: node.to_owned(),
                        peer,
                    });
                }
                Some(KeyKind::ProxyStatus(proxy)) => {
                    let state = ch.value.map(|(v, _)| match ProxyStatus::decode(&v) {
                        Ok(s) => ProxyState::Status(ProxyDrain {
                            location: s.location,
                            token: s.token,
                            draining: s.draining,
                            left: s.drain_left,
                            pooled: s.pooled,
                        }),
                        Err(e) => {
                            // It may carry our sessions: never counted as drained.
                            tracing::warn!("cannot read the status of proxy {proxy}: {e}");
                            ProxyState::Unreadable
                        }
                    });
                    out.push_back(Event::ProxyDrain {
                        proxy: proxy.to_owned(),
                        state,
                    });
                }
                Some(KeyKind::Fenced(node)) => out.push_back(Event::Fenced {
                    node: node.to_owned(),
                    fenced: ch.value.is_some(),
                }),
                Some(KeyKind::PromoteIntent(loc)) if loc == self.location() => {
                    let intent = ch.value.and_then(|(v, _)| match PromoteIntent::decode(&v) {
                        Ok(i) => Some(Switchover {
                            target: i.target,
                            from_token: i.from_token,
                            force: i.force,
                        }),
                        Err(e) => {
                            tracing::warn!("ignoring the switchover request: {e}");
                            None
                        }
                    });
                    if let Some(i) = &intent {
                        tracing::info!(target = %i.target, from_token = i.from_token, "switchover requested");
                    }
                    out.push_back(Event::Switchover(intent));
                }
                Some(KeyKind::Managed) => {
                    // Absent or unreadable: managed (HARP's default).
                    self.cluster_managed = ch
                        .value
                        .and_then(|(v, _)| ManagedRecord::decode(&v).ok())
                        .is_none_or(|r| r.managed);
                    out.push_back(Event::Managed(self.managed()));
                }
                Some(KeyKind::ClusterConfig) => {
                    self.layers.cluster = directives(ch.value.map(|(v, _)| v));
                    self.apply_directives(out);
                }
                Some(KeyKind::LocationConfig(loc)) if loc == self.location() => {
                    self.layers.location = directives(ch.value.map(|(v, _)| v));
                    self.apply_directives(out);
                }
                Some(KeyKind::NodeConfig(node)) if node == self.me() => {
                    self.layers.node = directives(ch.value.map(|(v, _)| v));
                    self.apply_directives(out);
                }
                Some(KeyKind::ProxyUnmanaged(proxy)) => out.push_back(Event::ProxyManaged {
                    proxy: proxy.to_owned(),
                    managed: ch.value.is_none(),
                }),
                Some(KeyKind::NodeUnmanaged(node)) if node == self.me() => {
                    self.node_unmanaged = ch.value.is_some();
                    out.push_back(Event::Managed(self.managed()));
                }
                Some(kind) => {
                    self.apply_streaming(kind, &ch, out);
                }
                None => {}
            }
        }
    }

    pub(super) fn managed(&self) -> bool {
        self.cluster_managed && !self.node_unmanaged
    }
}
