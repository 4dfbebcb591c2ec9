//! Checks the local Postgres. The connection stays open: when the postmaster dies its backend
//! exits and the socket closes within milliseconds, so a crash is reported at once rather than
//! at the next poll. The poll refreshes recovery state and WAL position. A slow answer is not a
//! failure: on a busy host a healthy Postgres can take seconds, and calling it down would hand
//! the lease over and cut every session; only a check unanswered for `timeout` is. Now and then a
//! new connection is opened too, which a hung postmaster cannot answer.

use std::time::Duration;

use harp_core::records::{PgState, ReplicaFacts};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Row};

use crate::pgconn::{PgTarget, why};

use crate::runner::Input;

/// Recovery state and WAL position, then what streaming mode needs: the timeline (of the WAL a
/// primary writes, or a standby receives), the received position, the upstream and whether it
/// streams, and the standbys Postgres reports synchronous.
pub const CHECK: &str = "SELECT pg_is_in_recovery(), \
     (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END \
      - '0/0'::pg_lsn)::bigint, \
     CASE WHEN pg_is_in_recovery() \
       THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver), \
                     (SELECT timeline_id FROM pg_control_checkpoint())) \
       ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, \
     (pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::bigint, \
     (SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver), \
     coalesce((SELECT status = 'streaming' FROM pg_stat_wal_receiver), false), \
     coalesce((SELECT array_agg(application_name::text ORDER BY application_name) \
               FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')), '{}')";

/// The replication part of a check's answer (a row of [`CHECK`]).
pub fn facts(row: &Row) -> ReplicaFacts {
    ReplicaFacts {
        timeline: row.get::<_, Option<i32>>(2).map(|t| t as u32),
        receive_lsn: row.get::<_, Option<i64>>(3).map(|l| l as u64),
        upstream: row.get(4),
        streaming: row.get(5),
        lag: None,
        sync_standbys: row.get(6),
    }
}

/// A standby's timeline as [`CHECK`] reports it is its WAL receiver's while one runs; without
/// one, Postgres offers only its last restartpoint's (`pg_control_checkpoint`), which stays on
/// the old timeline after the standby followed a promotion, until its next restartpoint (up to
/// `checkpoint_timeout`). Timelines only grow, so the highest one the receiver reported while
/// streaming (on this connection: a restart or rewind starts afresh) is kept: else a standby
/// that followed a promotion would look behind the cluster's timeline — and could not be
/// promoted — as soon as that new primary failed.
fn standby_timeline(state: PgState, facts: &mut ReplicaFacts, received: &mut Option<u32>) {
    if state != PgState::Standby {
        *received = None;
        return;
    }
    if facts.streaming {
        *received = (*received).max(facts.timeline);
    }
    facts.timeline = facts.timeline.max(*received);
}

/// How often a new connection is opened besides the checks on the open one: a postmaster that
/// hangs while its backends run accepts no client, yet the open connection still answers.
fn probe_every(interval: Duration) -> Duration {
    (interval * 5).max(Duration::from_secs(1))
}

/// The fresh-connection probe, run beside the checks so that it never delays them.
struct FreshProbe {
    every: Duration,
    last: Instant,
    running: Option<JoinHandle<Result<(), String>>>,
}

impl FreshProbe {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last: Instant::now(),
            running: None,
        }
    }

    fn start_if_due(&mut self, target: &PgTarget, timeout: Duration) {
        if self.running.is_none() && self.last.elapsed() >= self.every {
            self.last = Instant::now();
            self.running = Some(tokio::spawn(fresh_connection(target.clone(), timeout)));
        }
    }

    /// The running probe's outcome; pending while none runs.
    async fn done(&mut self) -> Result<(), String> {
        let Some(task) = self.running.as_mut() else {
            return std::future::pending().await;
        };
        let outcome = task.await.unwrap_or(Ok(()));
        self.running = None;
        outcome
    }
}

impl Drop for FreshProbe {
    fn drop(&mut self) {
        if let Some(task) = &self.running {
            task.abort();
        }
    }
}

/// Opens and closes one new connection. Postgres refusing it for being full still answered.
async fn fresh_connection(target: PgTarget, timeout: Duration) -> Result<(), String> {
    let attempt = async {
        let (client, conn) = target.connect().await?;
        drop(client); // sends Terminate: the connection then ends
        conn.await
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Err(format!(
            "a new connection got no answer within {timeout:?} (postmaster hung?)"
        )),
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if e.code() == Some(&SqlState::TOO_MANY_CONNECTIONS) => Ok(()),
        Ok(Err(e)) => Err(format!("a new connection failed: {}", why(&e))),
    }
}

/// How long a check may take before it is logged as slow (never longer than `timeout`).
fn slow_after(interval: Duration, timeout: Duration) -> Duration {
    interval.max(Duration::from_secs(1)).min(timeout)
}

pub async fn run(target: PgTarget, interval: Duration, timeout: Duration, tx: mpsc::Sender<Input>) {
    let slow = slow_after(interval, timeout);
    let mut reported_down = false;
    loop {
        let reason = match tokio::time::timeout(timeout, target.connect()).await {
            Err(_) => format!("no connection within {timeout:?}"),
            Ok(Err(e)) => format!("cannot connect: {}", why(&e)),
            Ok(Ok((client, conn))) => {
                let mut conn = tokio::spawn(conn);
                let mut tick = tokio::time::interval(interval);
                let mut fresh = FreshProbe::new(probe_every(interval));
                let mut received_tli = None;
                loop {
                    tokio::select! {
                        r = &mut conn => {
                            break match r {
                                Ok(Err(e)) => format!("connection lost: {}", why(&e)),
                                _ => "connection closed by the server".to_owned(),
                            };
                        }
                        Err(reason) = fresh.done() => break reason,
                        _ = tick.tick() => {
                            fresh.start_if_due(&target, timeout);
                            match check(&client, slow, timeout).await {
                                Ok(row) => {
                                    let state = if row.get::<_, bool>(0) { PgState::Standby } else { PgState::Primary };
                                    let lsn = row.get::<_, Option<i64>>(1).map(|l| l as u64);
                                    reported_down = false;
                                    let mut facts = facts(&row);
                                    standby_timeline(state, &mut facts, &mut received_tli);
                                    if tx.send(Input::Postgres { state, wal_lsn: lsn, facts, reason: None }).await.is_err() {
                                        return;
                                    }
                                }
                                Err(reason) => break reason,
                            }
                        }
                    }
                }
            }
        };
        if !reported_down {
            reported_down = true;
            let down = Input::Postgres {
                state: PgState::Down,
                wal_lsn: None,
                facts: ReplicaFacts::default(),
                reason: Some(reason),
            };
            if tx.send(down).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Runs the check query. An error (a lost connection included) fails it at once; an answer
/// later than `slow` is logged and waited for until `timeout`, which fails it.
async fn check(client: &Client, slow: Duration, timeout: Duration) -> Result<Row, String> {
    let started = Instant::now();
    let query = client.query_one(CHECK, &[]);
    tokio::pin!(query);
    if let Ok(answer) = tokio::time::timeout(slow, &mut query).await {
        return answer.map_err(|e| format!("check failed: {e}"));
    }
    tracing::warn!(
        "postgres is slow: no answer to the health check within {slow:?}; \
         it is called down if none comes within {timeout:?}"
    );
    match tokio::time::timeout_at(started + timeout, &mut query).await {
        Ok(Ok(row)) => {
            tracing::info!(
                "postgres answered the health check after {:?}",
                started.elapsed()
            );
            Ok(row)
        }
        Ok(Err(e)) => Err(format!("check failed: {e}")),
        Err(_) => Err(format!("no answer to the health check within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_is_slow_after_a_second_or_the_interval_but_never_after_the_timeout() {
        let ms = Duration::from_millis;
        assert_eq!(slow_after(ms(200), ms(5000)), ms(1000));
        assert_eq!(slow_after(ms(2000), ms(5000)), ms(2000));
        assert_eq!(slow_after(ms(200), ms(300)), ms(300));
    }

    #[test]
    fn a_standby_keeps_the_timeline_its_receiver_streamed_after_the_primary_is_gone() {
        let check = |timeline: u32, streaming: bool| ReplicaFacts {
            timeline: Some(timeline),
            streaming,
            ..ReplicaFacts::default()
        };
        let mut received = None;
        // Followed a promotion: the receiver streams timeline 2, the last restartpoint was on 1.
        let mut f = check(2, true);
        standby_timeline(PgState::Standby, &mut f, &mut received);
        assert_eq!(f.timeline, Some(2));
        // The primary fails: only pg_control_checkpoint's timeline 1 is left.
        let mut f = check(1, false);
        standby_timeline(PgState::Standby, &mut f, &mut received);
        assert_eq!(f.timeline, Some(2));
        // Promoted: its own timeline from now on.
        let mut f = check(3, false);
        standby_timeline(PgState::Primary, &mut f, &mut received);
        assert_eq!((f.timeline, received), (Some(3), None));
        let mut f = check(1, false);
        standby_timeline(PgState::Standby, &mut f, &mut received);
        assert_eq!(f.timeline, Some(1));
    }

    #[test]
    fn a_new_connection_is_tried_every_five_checks_but_not_more_than_once_a_second() {
        let ms = Duration::from_millis;
        assert_eq!(probe_every(ms(1000)), ms(5000));
        assert_eq!(probe_every(ms(100)), ms(1000));
    }
}
