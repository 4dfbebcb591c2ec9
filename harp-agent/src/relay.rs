//! Moves bytes between a client and its server until both sides are done or the session is
//! cut. Idle sessions own no buffer: data is read into one scratch buffer per thread and
//! written straight on; only bytes the receiver cannot take yet are kept per session. A short
//! read proves the socket drained, so its readiness is cleared without the extra read that
//! would only return EAGAIN — two system calls per message and hop.
//!
//! The bytes are framed as they pass ([`TxTracker`]) so that, at a switchover, a draining
//! session ends right after the `ReadyForQuery` that leaves it idle: no request in flight, no
//! transaction open.

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, ErrorKind, Read, Write};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use harp_core::routing::Routing;
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
    /// Drained: closed between transactions.
    Drained,
}

/// The session's transaction state and whether it is to end at its next boundary.
struct Session<'a> {
    tracker: Mutex<TxTracker>,
    draining: AtomicBool,
    /// Server bytes read but not yet written to the client: never a moment to close.
    down_pending: AtomicBool,
    /// Whether this session counts in `drain.trackable` (it stops when it turns opaque).
    counted: AtomicBool,
    drain: &'a DrainCount,
}

impl Session<'_> {
    fn feed(&self, upstream: bool, data: &[u8]) {
        let mut t = self.tracker.lock().expect("tracker lock");
        match upstream {
            true => t.client_bytes(data),
            false => t.server_bytes(data),
        }
        if t.is_opaque() && self.counted.swap(false, Ordering::Relaxed) {
            self.drain.trackable.fetch_sub(1, Ordering::Relaxed);
            self.drain.changed.notify_one();
        }
    }

    /// Between transactions with nothing in flight either way: the client has been sent every
    /// byte the server wrote and has sent nothing the relay has not passed on.
    fn idle(&self, client: &TcpStream) -> bool {
        !self.down_pending.load(Ordering::Relaxed)
            && self.tracker.lock().expect("tracker lock").at_boundary()
            && !has_unread(client)
    }

    fn may_end(&self, client: &TcpStream) -> bool {
        self.draining.load(Ordering::Relaxed) && self.idle(client)
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if self.counted.load(Ordering::Relaxed) {
            self.drain.trackable.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The sessions a switchover's drain can end, shared by all sessions of a proxy.
#[derive(Default)]
pub struct DrainCount {
    /// Relayed sessions whose transactions the relay follows.
    pub trackable: AtomicU64,
    /// Signalled when that count drops, so the drain's progress is published at once.
    pub changed: Notify,
}

/// Relays until both directions end, either fails, `cut` resolves, or — while `routing` says
/// that the leadership `token` drains — the session reaches a transaction boundary. A session
/// the relay cannot follow (encrypted, or `spliced`: the kernel moves its bytes) is not counted
/// in `drain`: draining never waits for it.
pub async fn relay(
    client: &TcpStream,
    server: &TcpStream,
    cut: impl Future<Output = ()>,
    mut routing: watch::Receiver<Routing>,
    token: i64,
    drain: &DrainCount,
    spliced: bool,
) -> End {
    let session = Session {
        tracker: Mutex::new(match spliced {
            true => TxTracker::opaque(),
            false => TxTracker::new(),
        }),
        draining: AtomicBool::new(false),
        down_pending: AtomicBool::new(false),
        counted: AtomicBool::new(!spliced),
        drain,
    };
    if !spliced {
        drain.trackable.fetch_add(1, Ordering::Relaxed);
    }
    let both = async {
        let up = pump(client, server, true, &session, client);
        let down = pump(server, client, false, &session, client);
        match tokio::try_join!(up, down) {
            Err(Stop::Drained) => End::Drained,
            _ => End::Closed,
        }
    };
    // Follows the drain as it starts and (if the switchover is withdrawn) stops; ends the
    // session at once when the drain finds it idle, else the server's pump ends it later.
    let drained_when_idle = async {
        loop {
            if routing.wait_for(|r| r.drains(token)).await.is_err() {
                break;
            }
            session.draining.store(true, Ordering::Relaxed);
            if session.may_end(client) {
                return;
            }
            if routing.wait_for(|r| !r.drains(token)).await.is_err() {
                break;
            }
            session.draining.store(false, Ordering::Relaxed);
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        end = both => end,
        _ = cut => End::Cut {
            idle: session.idle(client),
        },
        _ = drained_when_idle => End::Drained,
    }
}

/// Why a direction stopped early.
enum Stop {
    Io,
    Drained,
}

/// What one read did.
enum Step {
    /// Data moved; more may be waiting.
    More,
    /// The sender closed its side.
    Eof,
}

/// One direction: `from` → `to`, ending at EOF (after passing the close on), an error, or —
/// for the server's direction of a draining session — a transaction boundary.
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
                if session.may_end(client) {
                    return Err(Stop::Drained);
                }
            }
            from.readable().await.map_err(|_| Stop::Io)?;
            let step = from.try_io(Interest::READABLE, || {
                move_once(from, to, &mut pending, |data| session.feed(upstream, data))
            });
            if !upstream && !pending.is_empty() {
                session.down_pending.store(true, Ordering::Relaxed);
            }
            match step {
                Ok(Step::More) => {}
                Ok(Step::Eof) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return Err(Stop::Io),
            }
        }
    }
    .await;
    if !matches!(result, Err(Stop::Drained)) {
        // Pass the close on (or unblock the peer on error) so the other direction can finish.
        let _ = SockRef::from(to).shutdown(Shutdown::Write);
    }
    result
}

/// Reads once from `from` and writes what it got to `to`, keeping any rest in `pending`;
/// `seen` gets every byte read. Returns `WouldBlock` after a short read, which tells tokio the
/// socket is drained.
fn move_once(
    from: &TcpStream,
    to: &TcpStream,
    pending: &mut Vec<u8>,
    seen: impl FnOnce(&[u8]),
) -> io::Result<Step> {
    BUF.with_borrow_mut(|buf| {
        let n = (&*SockRef::from(from)).read(buf)?;
        if n == 0 {
            return Ok(Step::Eof);
        }
        let data = &buf[..n];
        seen(data);
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
