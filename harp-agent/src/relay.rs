//! Moves bytes between a client and its server until both sides are done or the session is
//! cut. Idle sessions own no buffer: data is read into one scratch buffer per thread and
//! written straight on; only bytes the receiver cannot take yet are kept per session. A short
//! read proves the socket drained, so its readiness is cleared without the extra read that
//! would only return EAGAIN — two system calls per message and hop.
//!
//! The bytes are framed as they pass ([`TxTracker`]) so that, at a switchover, a draining
//! session is parked right after the `ReadyForQuery` that leaves it idle: no request in
//! flight, no transaction open; a new request then ends it unrelayed.

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, ErrorKind, Read, Write};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use harp_core::routing::Routing;

use crate::authority::{Trust, may_send};
use harp_core::txstate::TxTracker;
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};

const SCRATCH: usize = 64 * 1024;

thread_local! {
    static BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// How a relayed session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides closed, or one failed.
    Closed,
    /// The route changed: cut wherever the session stood; `idle` when it stood between
    /// transactions with nothing in flight (the client can be told why without doubt).
    Cut { idle: bool },
    /// Parked by a switchover's drain, the client sent a new request: it was not relayed.
    Refused,
    /// The client sent bytes after the session's leadership was replaced or the agent's
    /// authority lapsed (a cut not yet delivered, a process resumed from a freeze): they were
    /// not relayed.
    Lapsed,
}

/// The leadership a session was made under, and what says whether it still stands.
pub struct Leadership<'a> {
    pub routing: watch::Receiver<Routing>,
    pub token: i64,
    pub trust: &'a Trust,
}

impl Leadership<'_> {
    fn may_send(&self) -> bool {
        may_send(&self.routing, self.trust, self.token)
    }
}

/// The session's transaction state and its part in a switchover's drain.
struct Session<'a> {
    tracker: Mutex<TxTracker>,
    draining: AtomicBool,
    /// Server bytes read but not yet written to the client: never a moment to stop.
    down_pending: AtomicBool,
    /// Draining and found idle: the session stays open, but a new request is refused (never
    /// relayed), and the drain no longer waits for it.
    parked: AtomicBool,
    /// The tracker gave up following the session.
    opaque: AtomicBool,
    /// Whether the session counts in `drain.waiting`.
    waited: AtomicBool,
    drain: &'a DrainCount,
    leadership: Leadership<'a>,
}

impl Session<'_> {
    fn set_waited(&self, on: bool) {
        if self.waited.swap(on, Ordering::Relaxed) == on {
            return;
        }
        match on {
            true => self.drain.waiting.fetch_add(1, Ordering::Relaxed),
            false => {
                let was = self.drain.waiting.fetch_sub(1, Ordering::Relaxed);
                self.drain.changed.notify_one();
                was
            }
        };
    }

    fn feed(&self, upstream: bool, data: &[u8]) {
        let mut t = self.tracker.lock().expect("tracker lock");
        match upstream {
            true => t.client_bytes(data),
            false => t.server_bytes(data),
        }
        if t.is_opaque() && !self.opaque.swap(true, Ordering::Relaxed) {
            self.set_waited(false);
        }
    }

    /// Between transactions with nothing in flight either way: the client has been sent every
    /// byte the server wrote and has sent nothing the relay has not passed on.
    fn idle(&self, client: &TcpStream) -> bool {
        !self.down_pending.load(Ordering::Relaxed)
            && self.tracker.lock().expect("tracker lock").at_boundary()
            && !has_unread(client)
    }

    /// Parks the session if it is draining and idle.
    fn try_park(&self, client: &TcpStream) {
        if self.draining.load(Ordering::Relaxed)
            && !self.parked.load(Ordering::Relaxed)
            && self.idle(client)
        {
            self.parked.store(true, Ordering::Relaxed);
            self.set_waited(false);
        }
    }

    /// The switchover was withdrawn: relay as before.
    fn unpark(&self) {
        if self.parked.swap(false, Ordering::Relaxed) && !self.opaque.load(Ordering::Relaxed) {
            self.set_waited(true);
        }
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.set_waited(false);
    }
}

/// What a switchover's drain waits for, shared by all sessions of a proxy.
#[derive(Default)]
pub struct DrainCount {
    /// Relayed sessions the relay follows that are not parked: in a transaction, or with a
    /// request in flight.
    pub waiting: AtomicU64,
    /// Signalled when that count drops, so the drain's progress is published at once.
    pub changed: Notify,
}

/// Relays until both directions end, either fails or `cut` resolves. While `routing` says that
/// the leadership `token` drains, the session is parked as soon as it is idle between
/// transactions: it stays open (the handover's cut closes it) but a new request ends it
/// unrelayed. A session the relay cannot follow (encrypted, or `spliced`: the kernel moves its
/// bytes) is never waited for.
///
/// No client byte goes to the server unless, checked right before the write, the session's
/// leadership is still the live one and the agent's authority holds; and `cut` wins every race
/// with the relay.
pub async fn relay(
    client: &TcpStream,
    server: &TcpStream,
    cut: impl Future<Output = ()>,
    leadership: Leadership<'_>,
    drain: &DrainCount,
    spliced: bool,
) -> End {
    let (mut routing, token) = (leadership.routing.clone(), leadership.token);
    let session = Session {
        tracker: Mutex::new(match spliced {
            true => TxTracker::opaque(),
            false => TxTracker::new(),
        }),
        draining: AtomicBool::new(false),
        down_pending: AtomicBool::new(false),
        parked: AtomicBool::new(false),
        opaque: AtomicBool::new(spliced),
        waited: AtomicBool::new(false),
        drain,
        leadership,
    };
    session.set_waited(!spliced);
    let both = async {
        let up = pump(client, server, true, &session, client);
        let down = pump(server, client, false, &session, client);
        match tokio::try_join!(up, down) {
            Err(Stop::Refused) => End::Refused,
            Err(Stop::Lapsed) => End::Lapsed,
            _ => End::Closed,
        }
    };
    // Follows the drain as it starts and (if the switchover is withdrawn) stops.
    let follow_drain = async {
        loop {
            if routing.wait_for(|r| r.drains(token)).await.is_err() {
                break;
            }
            session.draining.store(true, Ordering::Relaxed);
            session.try_park(client);
            if routing.wait_for(|r| !r.drains(token)).await.is_err() {
                break;
            }
            session.draining.store(false, Ordering::Relaxed);
            session.unpark();
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        // The cut first: when both are ready (a process resumed from a freeze), it wins.
        biased;
        _ = cut => End::Cut {
            idle: session.idle(client),
        },
        end = both => end,
        _ = follow_drain => unreachable!("following the drain never ends"),
    }
}

/// Why a direction stopped early.
enum Stop {
    Io,
    /// A parked session's client sent a new request.
    Refused,
    /// Client bytes arrived once the session's leadership no longer stood.
    Lapsed,
}

/// What one read did.
enum Step {
    /// Data moved; more may be waiting.
    More,
    /// The sender closed its side.
    Eof,
    /// The bytes read were refused, not written on.
    Refused,
    /// The bytes read were not written on: the leadership no longer stands.
    Lapsed,
}

/// One direction: `from` → `to`, ending at EOF (after passing the close on), an error, or —
/// for the client's direction of a parked session — a new request, refused. The server's
/// direction parks a draining session once it is idle.
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    upstream: bool,
    session: &Session<'_>,
    client: &TcpStream,
) -> Result<(), Stop> {
    let mut pending: Vec<u8> = Vec::new();
    let result = async {
        loop {
            if !pending.is_empty() {
                to.writable().await.map_err(|_| Stop::Io)?;
                if upstream && !session.leadership.may_send() {
                    return Err(Stop::Lapsed);
                }
                match to.try_write(&pending) {
                    Ok(n) => {
                        pending.drain(..n);
                        if pending.is_empty() {
                            pending = Vec::new(); // give the memory back while idle
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => return Err(Stop::Io),
                }
                continue;
            }
            if !upstream {
                session.down_pending.store(false, Ordering::Relaxed);
                session.try_park(client);
            }
            from.readable().await.map_err(|_| Stop::Io)?;
            let step = from.try_io(Interest::READABLE, || {
                move_once(from, to, &mut pending, |data| {
                    if !upstream {
                        session.feed(upstream, data);
                        return Pass::Yes;
                    }
                    // A parked session relays no new request.
                    if session.parked.load(Ordering::Relaxed) {
                        return Pass::Refused;
                    }
                    if !session.leadership.may_send() {
                        return Pass::Lapsed;
                    }
                    session.feed(upstream, data);
                    Pass::Yes
                })
            });
            if !upstream && !pending.is_empty() {
                session.down_pending.store(true, Ordering::Relaxed);
            }
            match step {
                Ok(Step::More) => {}
                Ok(Step::Refused) => return Err(Stop::Refused),
                Ok(Step::Lapsed) => return Err(Stop::Lapsed),
                Ok(Step::Eof) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return Err(Stop::Io),
            }
        }
    }
    .await;
    if !matches!(result, Err(Stop::Refused | Stop::Lapsed)) {
        // Pass the close on (or unblock the peer on error) so the other direction can finish.
        let _ = SockRef::from(to).shutdown(Shutdown::Write);
    }
    result
}

/// Whether bytes just read may be written on.
enum Pass {
    Yes,
    Refused,
    Lapsed,
}

/// Reads once from `from` and writes what it got to `to`, keeping any rest in `pending`;
/// `pass` sees every byte read first and may refuse them. Returns `WouldBlock` after a short
/// read, which tells tokio the socket is drained.
fn move_once(
    from: &TcpStream,
    to: &TcpStream,
    pending: &mut Vec<u8>,
    pass: impl FnOnce(&[u8]) -> Pass,
) -> io::Result<Step> {
    BUF.with_borrow_mut(|buf| {
        let n = (&*SockRef::from(from)).read(buf)?;
        if n == 0 {
            return Ok(Step::Eof);
        }
        let data = &buf[..n];
        match pass(data) {
            Pass::Yes => {}
            Pass::Refused => return Ok(Step::Refused),
            Pass::Lapsed => return Ok(Step::Lapsed),
        }
        let written = match (&*SockRef::from(to)).write(data) {
            Ok(w) => w,
            Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        pending.extend_from_slice(&data[written..]);
        if n < buf.len() {
            Err(ErrorKind::WouldBlock.into())
        } else {
            Ok(Step::More)
        }
    })
}

/// Whether the client sent bytes the relay has not read yet (a request about to start).
fn has_unread(client: &TcpStream) -> bool {
    let mut one = [MaybeUninit::<u8>::uninit(); 1];
    matches!(SockRef::from(client).peek(&mut one), Ok(n) if n > 0)
}
