//! Moves bytes between a client and its server until both sides are done or the session is
//! cut. Idle sessions own no buffer: data is read into one scratch buffer per thread and
//! written straight on; only bytes the receiver cannot take yet are kept per session. A short
//! read proves the socket drained, so its readiness is cleared without the extra read that
//! would only return EAGAIN — two system calls per message and hop.

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

const SCRATCH: usize = 64 * 1024;

thread_local! {
    static BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// Relays until both directions end, either fails, or `cut` resolves (the caller closes).
pub async fn relay(client: &TcpStream, server: &TcpStream, cut: impl Future<Output = ()>) {
    let both = async {
        let (up, down) = tokio::join!(pump(client, server), pump(server, client));
        (up, down)
    };
    tokio::select! {
        _ = both => {}
        _ = cut => {}
    }
}

/// What one read did.
enum Step {
    /// Data moved; more may be waiting.
    More,
    /// The sender closed its side.
    Eof,
}

/// One direction: `from` → `to`, ending at EOF (after passing the close on) or an error.
async fn pump(from: &TcpStream, to: &TcpStream) -> io::Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    let result = async {
        loop {
            if !pending.is_empty() {
                to.writable().await?;
                match to.try_write(&pending) {
                    Ok(n) => {
                        pending.drain(..n);
                        if pending.is_empty() {
                            pending = Vec::new(); // give the memory back while idle
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            from.readable().await?;
            let step = from.try_io(Interest::READABLE, || move_once(from, to, &mut pending));
            match step {
                Ok(Step::More) => {}
                Ok(Step::Eof) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
    .await;
    // Pass the close on (or unblock the peer on error) so the other direction can finish.
    let _ = SockRef::from(to).shutdown(Shutdown::Write);
    result
}

/// Reads once from `from` and writes what it got to `to`, keeping any rest in `pending`.
/// Returns `WouldBlock` after a short read, which tells tokio the socket is drained.
fn move_once(from: &TcpStream, to: &TcpStream, pending: &mut Vec<u8>) -> io::Result<Step> {
    BUF.with_borrow_mut(|buf| {
        let n = (&*SockRef::from(from)).read(buf)?;
        if n == 0 {
            return Ok(Step::Eof);
        }
        let data = &buf[..n];
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
