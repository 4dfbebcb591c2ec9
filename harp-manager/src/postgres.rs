//! Checks the local Postgres. The connection stays open: when the postmaster dies its backend
//! exits and the socket closes within milliseconds, so a crash is reported at once rather than
//! at the next poll. The poll refreshes recovery state and WAL position.

use std::time::Duration;

use harp_core::records::PgState;
use tokio::sync::mpsc;
use tokio_postgres::NoTls;

use crate::runner::Input;

const CHECK: &str = "SELECT pg_is_in_recovery(), \
     (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END \
      - '0/0'::pg_lsn)::bigint";

pub async fn run(dsn: String, interval: Duration, tx: mpsc::Sender<Input>) {
    let limit = interval.max(Duration::from_secs(1));
    let mut reported_down = false;
    loop {
        let reason = match tokio::time::timeout(limit, tokio_postgres::connect(&dsn, NoTls)).await {
            Err(_) => format!("no connection within {limit:?}"),
            Ok(Err(e)) => format!("cannot connect: {e}"),
            Ok(Ok((client, conn))) => {
                let mut conn = tokio::spawn(conn);
                let mut tick = tokio::time::interval(interval);
                loop {
                    tokio::select! {
                        r = &mut conn => {
                            break match r {
                                Ok(Err(e)) => format!("connection lost: {e}"),
                                _ => "connection closed by the server".to_owned(),
                            };
                        }
                        _ = tick.tick() => {
                            match tokio::time::timeout(limit, client.query_one(CHECK, &[])).await {
                                Ok(Ok(row)) => {
                                    let state = if row.get::<_, bool>(0) { PgState::Standby } else { PgState::Primary };
                                    let lsn = row.get::<_, Option<i64>>(1).map(|l| l as u64);
                                    reported_down = false;
                                    if tx.send(Input::Postgres { state, wal_lsn: lsn, reason: None }).await.is_err() {
                                        return;
                                    }
                                }
                                Ok(Err(e)) => break format!("check failed: {e}"),
                                Err(_) => break format!("check took longer than {limit:?}"),
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
                reason: Some(reason),
            };
            if tx.send(down).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(interval).await;
    }
}
