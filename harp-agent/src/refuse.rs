//! Refusing a client in the Postgres protocol. The proxy never reads client bytes, except when it
//! turns a client away (`max_client_conn` reached, no leader within `pause_timeout`, leader
//! unreachable): then it plays the server's part of the opening just far enough to send a FATAL
//! `ErrorResponse`, so `psql` prints the reason instead of "server closed the connection
//! unexpectedly".

use std::io;
use std::time::Duration;

use harp_core::pgwire::{self, Opening};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};

/// The most client bytes held at once: Postgres's limit for a startup packet.
const BUF_LIMIT: usize = pgwire::MAX_OPENING_LEN;
/// The most bytes read and discarded after the answer, while waiting for the client to close.
const DRAIN_LIMIT: usize = 64 * 1024;

/// What [`refuse`] saw and did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefuseOutcome {
    /// An `SSLRequest` was declined with `N` (the client then went on in plain text, or not).
    pub ssl_declined: bool,
    /// A `GSSENCRequest` was declined with `N`.
    pub gssenc_declined: bool,
    pub end: RefuseEnd,
}

/// How the exchange ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefuseEnd {
    /// A startup packet came and the FATAL `ErrorResponse` was sent.
    Refused {
        user: Option<String>,
        database: Option<String>,
        application_name: Option<String>,
    },
    /// A cancel request came; it has no answer, so nothing was sent.
    Cancel,
    /// The client does not speak the Postgres protocol (or breaks it): a FATAL `ErrorResponse`
    /// with SQLSTATE 08P01 and this reason was sent.
    ProtocolViolation { reason: &'static str },
    /// The client closed before completing its opening; nothing (beyond any `N`) was sent.
    Closed,
    /// `read_timeout` passed before the client completed its opening (or before the answer
    /// could be written); nothing (beyond any `N`) was sent.
    TimedOut,
}

/// Refuses a freshly accepted client: reads its opening and answers it with a FATAL
/// `ErrorResponse` carrying `sqlstate`, `message` and `hint`.
///
/// An `SSLRequest` or `GSSENCRequest` is declined with the single byte `N` (each at most once, as
/// Postgres does: libpq may send GSSENC, then SSL, then the startup packet), and the next packet
/// is read. A startup packet gets the `ErrorResponse`, then the write side is shut down. A cancel
/// request gets nothing. Anything else (bad length, unknown code or version, an HTTP request, a
/// TLS hello) gets an `ErrorResponse` with SQLSTATE 08P01 and the reason anyway: a client speaking
/// something else just sees some bytes and a close.
///
/// After answering, whatever the client still sends is read and discarded until it closes, so
/// that dropping the socket with unread bytes does not reset the connection before the client has
/// read the error. Everything, that wait included, is bounded by `read_timeout`: a slow or silent
/// client never holds the caller longer. Errors are I/O errors of the stream (say, a reset).
pub async fn refuse<S>(
    stream: &mut S,
    sqlstate: &str,
    message: &str,
    hint: Option<&str>,
    read_timeout: Duration,
) -> Result<RefuseOutcome, io::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = Instant::now() + read_timeout;
    let mut outcome = RefuseOutcome {
        ssl_declined: false,
        gssenc_declined: false,
        end: RefuseEnd::TimedOut,
    };
    let exchange = exchange(stream, sqlstate, message, hint, &mut outcome);
    match timeout_at(deadline, exchange).await {
        Ok(end) => outcome.end = end?,
        Err(_elapsed) => return Ok(outcome),
    }
    if matches!(
        outcome.end,
        RefuseEnd::Refused { .. } | RefuseEnd::ProtocolViolation { .. }
    ) {
        // The answer is sent; an error while waiting for the client to close changes nothing.
        let _ = timeout_at(deadline, drain(stream)).await;
    }
    Ok(outcome)
}

/// Reads openings and answers them until one ends the exchange.
async fn exchange<S>(
    stream: &mut S,
    sqlstate: &str,
    message: &str,
    hint: Option<&str>,
    outcome: &mut RefuseOutcome,
) -> io::Result<RefuseEnd>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(1024);
    // Each encryption request is declined at most once, so at most three packets are read.
    loop {
        let Some((opening, consumed)) = read_opening(stream, &mut buf).await? else {
            return Ok(RefuseEnd::Closed);
        };
        buf.drain(..consumed);
        match opening {
            Opening::SslRequest | Opening::GssEncRequest => {
                let declined = if opening == Opening::SslRequest {
                    &mut outcome.ssl_declined
                } else {
                    &mut outcome.gssenc_declined
                };
                if *declined {
                    return violation(stream, "repeated encryption request").await;
                }
                *declined = true;
                stream.write_all(b"N").await?;
                stream.flush().await?;
            }
            Opening::Cancel => return Ok(RefuseEnd::Cancel),
            Opening::Startup {
                user,
                database,
                application_name,
            } => {
                answer(
                    stream,
                    &pgwire::error_response("FATAL", sqlstate, message, hint),
                )
                .await?;
                return Ok(RefuseEnd::Refused {
                    user,
                    database,
                    application_name,
                });
            }
            Opening::Invalid(reason) => return violation(stream, reason).await,
        }
    }
}

/// Reads until `buf` starts with a complete opening (or a verdict that it is invalid); `None` when
/// the client closes first.
async fn read_opening<S>(stream: &mut S, buf: &mut Vec<u8>) -> io::Result<Option<(Opening, usize)>>
where
    S: AsyncRead + Unpin,
{
    const CHUNK: usize = 2048;
    let mut chunk = [0u8; CHUNK];
    loop {
        if let Some(parsed) = pgwire::parse_opening(buf) {
            return Ok(Some(parsed));
        }
        let room = BUF_LIMIT.saturating_sub(buf.len());
        if room == 0 {
            // parse_opening decides within MAX_OPENING_LEN bytes; this is only a backstop.
            let len = buf.len();
            return Ok(Some((Opening::Invalid("startup packet too long"), len)));
        }
        let n = stream.read(&mut chunk[..room.min(CHUNK)]).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn violation<S>(stream: &mut S, reason: &'static str) -> io::Result<RefuseEnd>
where
    S: AsyncWrite + Unpin,
{
    let response = pgwire::error_response("FATAL", pgwire::PROTOCOL_VIOLATION, reason, None);
    answer(stream, &response).await?;
    Ok(RefuseEnd::ProtocolViolation { reason })
}

/// Sends the final message and closes the write side, as a server exiting would.
async fn answer<S>(stream: &mut S, message: &[u8]) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    stream.write_all(message).await?;
    stream.flush().await?;
    stream.shutdown().await
}

/// Discards what the client still sends until it closes (or `DRAIN_LIMIT` bytes).
async fn drain<S>(stream: &mut S) -> io::Result<()>
where
    S: AsyncRead + Unpin,
{
    let mut chunk = [0u8; 2048];
    let mut total = 0;
    while total < DRAIN_LIMIT {
        match stream.read(&mut chunk).await? {
            0 => break,
            n => total += n,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use harp_core::pgwire::{
        CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE, TOO_MANY_CONNECTIONS,
    };
    use tokio::io::{DuplexStream, duplex};
    use tokio::task::JoinHandle;

    const MESSAGE: &str = "too many clients: max_client_conn (2) reached on proxy p1";
    const HINT: &str = "retry later or raise max_client_conn";

    use harp_core::pgwire::{opening_packet as packet, startup_message as startup};

    fn expected_error() -> Vec<u8> {
        pgwire::error_response("FATAL", TOO_MANY_CONNECTIONS, MESSAGE, Some(HINT))
    }

    /// Runs `refuse` on the server end of a duplex pipe; returns the client end and the task.
    fn serve(timeout: Duration) -> (DuplexStream, JoinHandle<io::Result<RefuseOutcome>>) {
        let (client, mut server) = duplex(64 * 1024);
        let task = tokio::spawn(async move {
            refuse(
                &mut server,
                TOO_MANY_CONNECTIONS,
                MESSAGE,
                Some(HINT),
                timeout,
            )
            .await
        });
        (client, task)
    }

    async fn read_byte(client: &mut DuplexStream) -> u8 {
        let mut byte = [0u8; 1];
        client.read_exact(&mut byte).await.unwrap();
        byte[0]
    }

    /// Reads until the server closes its write side, then closes the client.
    async fn read_all_and_close(mut client: DuplexStream) -> Vec<u8> {
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        drop(client);
        out
    }

    #[tokio::test]
    async fn ssl_request_declined_then_startup_refused() {
        let (mut client, task) = serve(Duration::from_secs(10));
        client
            .write_all(&packet(SSL_REQUEST_CODE, &[]))
            .await
            .unwrap();
        assert_eq!(read_byte(&mut client).await, b'N');
        let start = startup(&[
            ("user", "postgres"),
            ("database", "orders"),
            ("application_name", "psql"),
        ]);
        client.write_all(&start).await.unwrap();
        assert_eq!(read_all_and_close(client).await, expected_error());
        let outcome = task.await.unwrap().unwrap();
        assert_eq!(
            outcome,
            RefuseOutcome {
                ssl_declined: true,
                gssenc_declined: false,
                end: RefuseEnd::Refused {
                    user: Some("postgres".into()),
                    database: Some("orders".into()),
                    application_name: Some("psql".into()),
                },
            }
        );
    }

    #[tokio::test]
    async fn plain_startup_refused() {
        let (mut client, task) = serve(Duration::from_secs(10));
        // Split across writes: the reader must reassemble it.
        let start = startup(&[("user", "app")]);
        let (head, tail) = start.split_at(5);
        client.write_all(head).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(tail).await.unwrap();
        assert_eq!(read_all_and_close(client).await, expected_error());
        let outcome = task.await.unwrap().unwrap();
        assert!(!outcome.ssl_declined && !outcome.gssenc_declined);
        assert_eq!(
            outcome.end,
            RefuseEnd::Refused {
                user: Some("app".into()),
                database: None,
                application_name: None,
            }
        );
    }

    #[tokio::test]
    async fn gssenc_then_ssl_then_startup() {
        let (mut client, task) = serve(Duration::from_secs(10));
        client
            .write_all(&packet(GSSENC_REQUEST_CODE, &[]))
            .await
            .unwrap();
        assert_eq!(read_byte(&mut client).await, b'N');
        client
            .write_all(&packet(SSL_REQUEST_CODE, &[]))
            .await
            .unwrap();
        assert_eq!(read_byte(&mut client).await, b'N');
        client.write_all(&startup(&[("user", "u")])).await.unwrap();
        assert_eq!(read_all_and_close(client).await, expected_error());
        let outcome = task.await.unwrap().unwrap();
        assert!(outcome.ssl_declined && outcome.gssenc_declined);
        assert!(matches!(outcome.end, RefuseEnd::Refused { .. }));
    }

    #[tokio::test]
    async fn repeated_ssl_request_is_a_violation() {
        let (mut client, task) = serve(Duration::from_secs(10));
        let ssl = packet(SSL_REQUEST_CODE, &[]);
        client.write_all(&ssl).await.unwrap();
        assert_eq!(read_byte(&mut client).await, b'N');
        client.write_all(&ssl).await.unwrap();
        let reply = read_all_and_close(client).await;
        assert_eq!(
            reply,
            pgwire::error_response(
                "FATAL",
                pgwire::PROTOCOL_VIOLATION,
                "repeated encryption request",
                None
            )
        );
        let outcome = task.await.unwrap().unwrap();
        assert_eq!(
            outcome.end,
            RefuseEnd::ProtocolViolation {
                reason: "repeated encryption request"
            }
        );
    }

    #[tokio::test]
    async fn garbage_gets_a_protocol_violation() {
        let (mut client, task) = serve(Duration::from_secs(10));
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: proxy\r\n\r\n")
            .await
            .unwrap();
        let reply = read_all_and_close(client).await;
        let reason = "invalid length of startup packet";
        assert_eq!(
            reply,
            pgwire::error_response("FATAL", pgwire::PROTOCOL_VIOLATION, reason, None)
        );
        assert_eq!(
            task.await.unwrap().unwrap().end,
            RefuseEnd::ProtocolViolation { reason }
        );
    }

    #[tokio::test]
    async fn cancel_gets_no_answer() {
        let (mut client, task) = serve(Duration::from_secs(10));
        client
            .write_all(&packet(
                CANCEL_REQUEST_CODE,
                &[0, 0, 0x30, 0x39, 1, 2, 3, 4],
            ))
            .await
            .unwrap();
        let outcome = task.await.unwrap().unwrap();
        assert_eq!(outcome.end, RefuseEnd::Cancel);
        // The server end is gone with the task: the client reads end of stream and no bytes.
        assert_eq!(read_all_and_close(client).await, b"");
    }

    #[tokio::test]
    async fn silent_client_times_out() {
        let (client, task) = serve(Duration::from_millis(100));
        let started = std::time::Instant::now();
        let outcome = task.await.unwrap().unwrap();
        assert_eq!(outcome.end, RefuseEnd::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(client);
    }

    #[tokio::test]
    async fn slow_client_times_out() {
        // Dribbles an SSLRequest and a startup packet a byte at a time, slower than the budget.
        let (mut client, task) = serve(Duration::from_millis(200));
        let started = std::time::Instant::now();
        let mut bytes = packet(SSL_REQUEST_CODE, &[]);
        bytes.extend_from_slice(&startup(&[("user", "slow")]));
        let writer = tokio::spawn(async move {
            for byte in bytes {
                if client.write_all(&[byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            client
        });
        let outcome = task.await.unwrap().unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        // The SSLRequest made it in time; the startup packet did not.
        assert!(outcome.ssl_declined);
        assert_eq!(outcome.end, RefuseEnd::TimedOut);
        let mut client = writer.await.unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"N");
    }

    #[tokio::test]
    async fn client_closing_early() {
        let (mut client, task) = serve(Duration::from_secs(10));
        client.write_all(&[0, 0, 0, 8, 0x04]).await.unwrap();
        drop(client);
        assert_eq!(task.await.unwrap().unwrap().end, RefuseEnd::Closed);
    }

    #[tokio::test]
    async fn client_that_never_closes_is_bounded_after_the_answer() {
        let (mut client, task) = serve(Duration::from_millis(200));
        client.write_all(&startup(&[("user", "u")])).await.unwrap();
        let mut reply = vec![0u8; expected_error().len()];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, expected_error());
        // The client keeps its end open; refuse still returns within the budget.
        let started = std::time::Instant::now();
        let outcome = task.await.unwrap().unwrap();
        assert!(matches!(outcome.end, RefuseEnd::Refused { .. }));
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(client);
    }

    /// The psql binary, or `None` (and a SKIP line) when it is not installed.
    fn psql() -> Option<std::path::PathBuf> {
        let fixed = std::path::Path::new("/usr/bin/psql");
        if fixed.exists() {
            return Some(fixed.to_path_buf());
        }
        let found = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("psql"))
                .find(|candidate| candidate.exists())
        });
        if found.is_none() {
            println!("SKIP: psql not installed");
        }
        found
    }

    /// Runs psql against a listener that refuses every connection; returns psql's exit status,
    /// stderr and the outcomes of the refusals.
    async fn psql_against_refuser(
        psql: &std::path::Path,
        sslmode: &str,
    ) -> (std::process::ExitStatus, String, Vec<RefuseOutcome>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let server = tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let outcome = refuse(
                        &mut socket,
                        TOO_MANY_CONNECTIONS,
                        MESSAGE,
                        Some(HINT),
                        Duration::from_secs(10),
                    )
                    .await;
                    let _ = tx.send(outcome.unwrap());
                });
            }
        });

        let conninfo = format!(
            "host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode={sslmode} \
             connect_timeout=10"
        );
        let mut command = tokio::process::Command::new(psql);
        command
            .arg(&conninfo)
            .args(["-X", "-c", "select 1"])
            .env("LC_ALL", "C")
            .kill_on_drop(true);
        // The caller's PG* variables (PGSSLMODE, PGGSSENCMODE, PGSERVICE...) must not leak in.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PG") {
                command.env_remove(name);
            }
        }
        let output = tokio::time::timeout(Duration::from_secs(30), command.output())
            .await
            .expect("psql finishes")
            .unwrap();
        server.abort();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        println!("psql sslmode={sslmode} exit {}: {stderr}", output.status);
        // Every sender is dropped once the accept loop is gone and each refusal has finished.
        let mut outcomes = Vec::new();
        while let Ok(Some(outcome)) = tokio::time::timeout(Duration::from_secs(15), rx.recv()).await
        {
            outcomes.push(outcome);
        }
        (output.status, stderr, outcomes)
    }

    #[tokio::test]
    async fn real_psql_sees_the_error() {
        let Some(psql) = psql() else { return };
        for sslmode in ["prefer", "disable"] {
            let (status, stderr, outcomes) = psql_against_refuser(&psql, sslmode).await;
            assert!(!status.success(), "sslmode={sslmode}: {status}");
            // psql 15 prints, with `LC_ALL=C`:
            //   psql: error: connection to server at "127.0.0.1", port 40803 failed: FATAL:  too
            //   many clients: max_client_conn (2) reached on proxy p1
            //   HINT:  retry later or raise max_client_conn
            // and exits 2. It never shows the SQLSTATE of a connection failure, not even with
            // `-v VERBOSITY=verbose` (that applies once connected), so the 53300 is checked on
            // the wire by the tests above.
            let expected = format!("failed: FATAL:  {MESSAGE}\nHINT:  {HINT}\n");
            assert!(stderr.contains(&expected), "sslmode={sslmode}: {stderr}");
            assert!(
                stderr.starts_with("psql: error: "),
                "sslmode={sslmode}: {stderr}"
            );
            assert!(!stderr.contains("closed the connection unexpectedly"));
            assert!(
                outcomes
                    .iter()
                    .any(|outcome| outcome.ssl_declined == (sslmode == "prefer")
                        && matches!(
                            &outcome.end,
                            RefuseEnd::Refused { user: Some(u), database: Some(d), .. }
                                if u == "postgres" && d == "postgres"
                        )),
                "sslmode={sslmode}: {outcomes:?}"
            );
        }
    }
}
