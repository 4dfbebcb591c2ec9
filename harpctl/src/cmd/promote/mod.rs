//! `harpctl promote [NODE] [--force] [--timeout 30s]`: the planned switchover.
//!
//! 1. One read of the cluster; [`plan`] picks or checks the target, and [`guards`] refuses a
//!    switchover an unmanaged proxy would not follow, or to a target whose manager stopped
//!    renewing its etcd lease.
//! 2. `intent/promote/<location>` = [`PromoteIntent`] on a lease of its own (TTL = the
//!    timeout, so an abandoned request expires), in a txn that also checks that the leader is
//!    still the one read (its fencing token) and that no other switchover is pending.
//! 3. The leader holding `from_token` releases; while the intent lives only the target may
//!    acquire. harpctl watches `leader/<location>` from the revision after its read until the
//!    target holds it, timing the pause clients saw. If the target has not taken the lease one
//!    of its lease TTLs after it fell vacant, the request is withdrawn (so any healthy node
//!    may lead again) and the switchover reported failed.
//! 4. The intent is deleted and its lease revoked, whatever the outcome.

mod guards;
mod handover;
mod plan;

use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use harp_core::records::{LeaderRecord, PromoteIntent, RECORD_VERSION, unix_ms};
use serde::Serialize;
use tokio::time::Instant;

use self::handover::NotHandedOver;
use self::plan::{Plan, Request};
use crate::cli::PromoteArgs;
use crate::conn::Conn;
use crate::context::{Context, check_name};
use crate::error::CtlError;
use crate::output::{Format, render_data};

/// What `promote` did, for `-o json|yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub location: String,
    pub target: String,
    /// The lead master before (`null`: the location had none).
    pub old_leader: Option<String>,
    pub old_token: Option<i64>,
    /// The target's fencing token.
    pub new_token: i64,
    /// Old leader key deleted → target's key put, as harpctl's watch saw them.
    pub pause_ms: Option<u64>,
    /// The old leader's handover mark → its key's delete: new clients were held while the
    /// proxies let open transactions finish (`server_transfer_timeout` bounds it, then what
    /// is left is cut).
    pub drain_ms: Option<u64>,
    /// From the request to the target holding the lead.
    pub total_ms: u64,
    /// False when the target already led.
    pub changed: bool,
}

impl Report {
    fn render(&self, format: Format) -> String {
        if format != Format::Table {
            return render_data(self, format);
        }
        let (t, loc, tok) = (&self.target, &self.location, self.new_token);
        match (self.changed, self.pause_ms) {
            (false, _) => format!("{t} is already the lead master of {loc} (token {tok})\n"),
            (true, Some(p)) => {
                let drain = self.drain_ms.map_or(String::new(), |d| {
                    format!("; new clients held {d} ms while proxies drained")
                });
                format!(
                    "switchover to {t} complete: new lead master {t} (token {tok}){drain}, \
                     clients paused {p} ms\n"
                )
            }
            (true, None) => format!(
                "switchover to {t} complete: new lead master {t} (token {tok}); {loc} had no \
                 lead master before\n"
            ),
        }
    }
}

pub async fn run(ctx: &Context, args: PromoteArgs) -> Result<String, CtlError> {
    if let Some(n) = &args.node {
        check_name("node", n)?;
    }
    let asked = match &args.location {
        Some(l) => {
            check_name("location", l)?;
            Some(l.clone())
        }
        None => ctx.local_location()?,
    };
    let (cluster, conn) = super::connect(ctx).await?;
    let snap = super::read(&conn, &cluster).await?;
    let req = Request {
        node: args.node.as_deref(),
        location: asked.as_deref(),
        force: args.force,
    };
    let report = match plan::plan(&snap, &req)? {
        Plan::AlreadyLeader {
            location,
            node,
            token,
        } => Report {
            location,
            target: node.clone(),
            old_leader: Some(node),
            old_token: Some(token),
            new_token: token,
            pause_ms: None,
            drain_ms: None,
            total_ms: 0,
            changed: false,
        },
        Plan::Switchover {
            location,
            target,
            from,
        } => {
            let lease = conn.key_lease(&conn.keys().node_status(&target)).await?;
            let takeover = guards::target_lease(&target, lease).map_err(CtlError::Refused)?;
            let s = Switchover {
                conn: &conn,
                location,
                target,
                from,
                force: args.force,
                timeout: args.timeout,
                takeover,
            };
            s.run(snap.revision).await?
        }
    };
    Ok(report.render(ctx.format()))
}

struct Switchover<'a> {
    conn: &'a Conn,
    location: String,
    target: String,
    from: Option<(String, i64)>,
    force: bool,
    timeout: Duration,
    /// How long the target gets to take the vacant lease ([`guards::target_lease`]).
    takeover: Duration,
}

impl Switchover<'_> {
    /// The fencing token being replaced; 0 when the location has no leader (the key's
    /// `create_revision` is then 0 too, which the request's txn compares against).
    fn old_token(&self) -> i64 {
        self.from.as_ref().map_or(0, |f| f.1)
    }

    async fn run(&self, read_revision: i64) -> Result<Report, CtlError> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let keys = self.conn.keys();
        let intent_key = keys.promote_intent(&self.location);
        let leader_key = keys.leader(&self.location);
        let (lease, intent_rev) = self.request(&intent_key, &leader_key).await?;
        let wait = handover::wait(
            self.conn,
            &leader_key,
            &self.target,
            self.from.as_ref().map(|f| f.0.as_str()),
            self.old_token(),
            read_revision + 1,
            deadline,
            self.takeover,
        )
        .await;
        self.withdraw(&intent_key, intent_rev, lease).await;
        match wait {
            Ok(done) => Ok(Report {
                location: self.location.clone(),
                target: self.target.clone(),
                old_leader: self.from.as_ref().map(|f| f.0.clone()),
                old_token: self.from.as_ref().map(|f| f.1),
                new_token: done.token,
                pause_ms: done.pause.map(|p| p.as_millis() as u64),
                drain_ms: done.drain.map(|d| d.as_millis() as u64),
                total_ms: (done.at - started).as_millis() as u64,
                changed: true,
            }),
            Err(NotHandedOver::Interrupted) => Err(CtlError::Refused(
                "interrupted: the switchover request was withdrawn".into(),
            )),
            Err(NotHandedOver::Timeout { leader }) => Err(self.timed_out(leader)),
            Err(NotHandedOver::NotTaken { after }) => Err(self.not_taken(after)),
        }
    }

    /// Writes the intent on a fresh lease; returns the lease and the intent's revision.
    async fn request(&self, intent_key: &str, leader_key: &str) -> Result<(i64, i64), CtlError> {
        // Whole seconds, rounded up: the request must outlive harpctl's wait.
        let ttl = Duration::from_secs(self.timeout.as_secs_f64().ceil().max(1.0) as u64);
        let lease = self.conn.grant(ttl).await?;
        let intent = PromoteIntent {
            version: RECORD_VERSION,
            location: self.location.clone(),
            target: self.target.clone(),
            from_token: self.old_token(),
            force: self.force,
            requested_ms: unix_ms(),
        };
        let put = PutOptions::new().with_lease(lease);
        let txn = Txn::new()
            .when([
                Compare::create_revision(intent_key, CompareOp::Equal, 0),
                Compare::create_revision(leader_key, CompareOp::Equal, self.old_token()),
            ])
            .and_then([TxnOp::put(intent_key, intent.encode(), Some(put))])
            .or_else([TxnOp::get(intent_key, None), TxnOp::get(leader_key, None)]);
        let resp = match self.conn.txn(txn).await {
            Ok(r) => r,
            Err(e) => {
                let _ = self.conn.revoke(lease).await;
                return Err(e);
            }
        };
        if !resp.succeeded() {
            let _ = self.conn.revoke(lease).await;
            return Err(CtlError::Refused(
                self.explain_conflict(&resp.op_responses()),
            ));
        }
        let rev = resp.header().map_or(0, |h| h.revision());
        let whom = self.from.as_ref().map_or("the leader", |f| f.0.as_str());
        eprintln!(
            "harpctl: switchover of {} to {} requested; waiting up to {} for {whom} to hand over",
            self.location,
            self.target,
            humantime::format_duration(self.timeout)
        );
        Ok((lease, rev))
    }

    /// Why the guarded write did not happen: another switchover, or the leader changed.
    fn explain_conflict(&self, ops: &[TxnOpResponse]) -> String {
        let first = |i: usize| match ops.get(i) {
            Some(TxnOpResponse::Get(g)) => g.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        };
        if let Some(v) = first(0) {
            let target = PromoteIntent::decode(&v).map_or_else(|_| "?".into(), |i| i.target);
            return format!(
                "a switchover of {} to {target} is already in progress; wait for it to finish \
                 or expire",
                self.location
            );
        }
        let now = first(1)
            .and_then(|v| LeaderRecord::decode(&v).ok())
            .map_or_else(|| "none".to_owned(), |l| l.node);
        format!(
            "the lead master of {} changed while the switchover was being requested (now: \
             {now}); run promote again",
            self.location
        )
    }

    /// Deletes our intent (only ours: by its revision) and revokes its lease.
    async fn withdraw(&self, intent_key: &str, intent_rev: i64, lease: i64) {
        let txn = Txn::new()
            .when([Compare::create_revision(
                intent_key,
                CompareOp::Equal,
                intent_rev,
            )])
            .and_then([TxnOp::delete(intent_key, None)]);
        let deleted = self.conn.txn(txn).await;
        let revoked = self.conn.revoke(lease).await;
        if let Err(e) = deleted.map(drop).and(revoked) {
            eprintln!(
                "harpctl: warning: could not withdraw the switchover request (it expires with \
                 its lease within {}): {e}",
                humantime::format_duration(self.timeout)
            );
        }
    }

    fn not_taken(&self, after: Duration) -> CtlError {
        let (t, loc) = (&self.target, &self.location);
        let released = match &self.from {
            Some((old, _)) => format!("after {old} released it"),
            None => "of the request".to_owned(),
        };
        CtlError::Refused(format!(
            "switchover of {loc} to {t} failed: {t} did not take the lead within {} \
             {released} (is its harp-manager running? check its log); the request was \
             withdrawn, so any healthy node of {loc} takes the lead",
            humantime::format_duration(after)
        ))
    }

    fn timed_out(&self, leader_now: Option<String>) -> CtlError {
        let within = humantime::format_duration(self.timeout);
        let mut msg = match &self.from {
            Some((old, _)) => format!(
                "the leader did not hand over within {within} (check harp-manager's log on {old})"
            ),
            None => format!(
                "{} did not take the lead of {} within {within} (check harp-manager's log on {})",
                self.target, self.location, self.target
            ),
        };
        let old = self.from.as_ref().map(|f| f.0.as_str());
        match leader_now.as_deref() {
            Some(now) if Some(now) != old => {
                msg.push_str(&format!("; {now} leads {} now", self.location));
            }
            None if old.is_some() => {
                msg.push_str(&format!("; {} has no lead master now", self.location));
            }
            _ => {}
        }
        CtlError::Refused(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_reads_as_one_line() {
        let mut r = Report {
            location: "dca".into(),
            target: "n2".into(),
            old_leader: Some("n1".into()),
            old_token: Some(100),
            new_token: 123,
            pause_ms: Some(18),
            drain_ms: None,
            total_ms: 40,
            changed: true,
        };
        assert_eq!(
            r.render(Format::Table),
            "switchover to n2 complete: new lead master n2 (token 123), clients paused 18 ms\n"
        );
        let v: serde_json::Value = serde_json::from_str(&r.render(Format::Json)).unwrap();
        assert_eq!(
            (
                &v["target"],
                &v["new_token"],
                &v["old_leader"],
                &v["pause_ms"]
            ),
            (
                &serde_json::json!("n2"),
                &serde_json::json!(123),
                &serde_json::json!("n1"),
                &serde_json::json!(18)
            )
        );
        r.drain_ms = Some(7);
        assert_eq!(
            r.render(Format::Table),
            "switchover to n2 complete: new lead master n2 (token 123); new clients held 7 ms \
             while proxies drained, clients paused 18 ms\n"
        );
        r.changed = false;
        assert_eq!(
            r.render(Format::Table),
            "n2 is already the lead master of dca (token 123)\n"
        );
    }
}
