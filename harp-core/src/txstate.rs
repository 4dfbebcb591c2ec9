//! Where a relayed Postgres session stands between transactions, read from the bytes passing
//! through: the proxy may close a session during a planned switchover only at a moment when no
//! request is in flight and no transaction is open, so no client loses work it started.
//!
//! The tracker only frames messages (type byte + length) and counts: every simple `Query`,
//! `Sync` and `FunctionCall` the client sends is answered by exactly one `ReadyForQuery`, whose
//! status byte says whether a transaction block is open. Anything it cannot follow (TLS or GSS
//! encryption, a framing error) makes the session opaque: never at a boundary, so it is left
//! to the hard cut at the leader change, as without draining. Pure, no I/O, never panics.

use crate::pgwire::{MAX_OPENING_LEN, Opening, parse_opening};

/// Message types that end a client request and are each answered by one `ReadyForQuery`.
const QUERY: u8 = b'Q';
const SYNC: u8 = b'S';
const FUNCTION_CALL: u8 = b'F';
const EXECUTE: u8 = b'E';
const FLUSH: u8 = b'H';
/// Client messages that belong to the request already in flight (COPY FROM STDIN data).
const COPY_DATA: u8 = b'd';
const COPY_DONE: u8 = b'c';
const COPY_FAIL: u8 = b'f';
const TERMINATE: u8 = b'X';
const READY_FOR_QUERY: u8 = b'Z';
/// `ReadyForQuery` status: idle, outside any transaction block.
const IDLE: u8 = b'I';

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the client's untyped opening packet.
    Opening,
    /// The client asked for encryption: the server's next byte says yes or no.
    EncryptionAnswer,
    /// Typed messages both ways.
    Typed,
    /// Encrypted or not understood: the tracker no longer follows.
    Opaque,
}

/// A typed message stream being framed: the header bytes collected so far and how much of the
/// current message's body is still to pass.
#[derive(Debug, Clone, Default)]
struct Framer {
    header: [u8; 5],
    have: usize,
    /// Body bytes of the current message still to come.
    body_left: usize,
}

/// A complete message header, or a framing error.
enum Frame {
    Header { kind: u8, body: usize },
    Invalid,
}

impl Framer {
    /// Whether the stream sits between two messages.
    fn at_message_boundary(&self) -> bool {
        self.have == 0 && self.body_left == 0
    }

    /// Passes `data`, calling `on` for each header and with the first body byte of each
    /// message (`first_body`); stops at the first framing error.
    fn feed(&mut self, mut data: &[u8], mut on: impl FnMut(Frame, Option<u8>)) -> bool {
        while !data.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(data.len());
                self.body_left -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have < 5 {
                break;
            }
            self.have = 0;
            let kind = self.header[0];
            let len = u32::from_be_bytes([
                self.header[1],
                self.header[2],
                self.header[3],
                self.header[4],
            ]) as usize;
            if len < 4 {
                on(Frame::Invalid, None);
                return false;
            }
            self.body_left = len - 4;
            let first = (self.body_left > 0)
                .then(|| data.first().copied())
                .flatten();
            on(
                Frame::Header {
                    kind,
                    body: self.body_left,
                },
                first,
            );
        }
        true
    }
}

/// What the client asked for that the server has yet to answer.
#[derive(Debug, Clone, Default)]
struct Requests {
    /// Requests sent and not yet answered by a `ReadyForQuery`.
    pending: u64,
    /// The client sent extended-protocol messages (Parse, Bind, Execute…) not yet closed by a
    /// `Sync`: the server may already run them in an implicit transaction.
    open_batch: bool,
    /// The client is sending COPY FROM STDIN data: the server ignores `Sync` and `Flush` then.
    copy_in: bool,
    /// `Sync`s sent since the last `Execute`: if that Execute began a COPY FROM STDIN, the
    /// server read them in copy mode and ignored them (libpq sends one right behind it).
    syncs_since_execute: u64,
}

impl Requests {
    /// One client message of type `kind`; `started`: the startup has been answered.
    fn client_message(&mut self, kind: u8, started: bool) {
        match kind {
            QUERY | FUNCTION_CALL => {
                self.pending += 1;
                self.syncs_since_execute = 0;
            }
            SYNC | FLUSH if self.copy_in => {}
            SYNC => {
                self.pending += 1;
                self.open_batch = false;
                self.syncs_since_execute += 1;
            }
            EXECUTE => {
                self.open_batch = true;
                self.syncs_since_execute = 0;
            }
            COPY_DATA | COPY_DONE | COPY_FAIL => {
                if !self.copy_in {
                    self.copy_in = true;
                    self.pending = self.pending.saturating_sub(self.syncs_since_execute);
                    self.syncs_since_execute = 0;
                }
                if kind != COPY_DATA {
                    self.copy_in = false;
                }
            }
            FLUSH | TERMINATE => {}
            // Authentication answers (`p`) belong to the startup, not to a request.
            _ if !started => {}
            _ => self.open_batch = true,
        }
    }
}

/// The transaction state of one relayed session.
#[derive(Debug, Clone)]
pub struct TxTracker {
    phase: Phase,
    /// The client's opening packet while it arrives.
    opening: Vec<u8>,
    client: Framer,
    server: Framer,
    requests: Requests,
    /// Status of the last `ReadyForQuery`; `None` before the session's first.
    status: Option<u8>,
    /// A `ReadyForQuery` header was seen but its status byte is still to come.
    status_next: bool,
}

impl Default for TxTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl TxTracker {
    pub fn new() -> Self {
        Self {
            phase: Phase::Opening,
            opening: Vec::new(),
            client: Framer::default(),
            server: Framer::default(),
            requests: Requests::default(),
            status: None,
            status_next: false,
        }
    }

    /// A tracker that does not follow the session (its bytes bypass the relay).
    pub fn opaque() -> Self {
        Self {
            phase: Phase::Opaque,
            ..Self::new()
        }
    }

    /// Whether the session may be closed now without failing anything the client started: it
    /// finished its startup, every request has its answer, no transaction block is open and
    /// neither side is part-way through a message.
    pub fn at_boundary(&self) -> bool {
        self.phase == Phase::Typed
            && self.requests.pending == 0
            && !self.requests.open_batch
            && !self.requests.copy_in
            && self.status == Some(IDLE)
            && !self.status_next
            && self.client.at_message_boundary()
            && self.server.at_message_boundary()
    }

    /// Whether the tracker gave up following this session (encrypted or not understood).
    pub fn is_opaque(&self) -> bool {
        self.phase == Phase::Opaque
    }

    /// Bytes the client sent, in order.
    pub fn client_bytes(&mut self, data: &[u8]) {
        match self.phase {
            Phase::Opening => self.opening_bytes(data),
            // The client waits for the one-byte answer before it sends more.
            Phase::EncryptionAnswer => self.phase = Phase::Opaque,
            Phase::Typed => {
                let (requests, started) = (&mut self.requests, self.status.is_some());
                let ok = self.client.feed(data, |frame, _| {
                    if let Frame::Header { kind, .. } = frame {
                        requests.client_message(kind, started);
                    }
                });
                if !ok {
                    self.phase = Phase::Opaque;
                }
            }
            Phase::Opaque => {}
        }
    }

    /// Bytes the server sent, in order.
    pub fn server_bytes(&mut self, data: &[u8]) {
        match self.phase {
            Phase::EncryptionAnswer => {
                // `N` declines and the client goes on in the clear with a new opening; any
                // other answer starts an encrypted stream.
                let declined = data.first() == Some(&b'N') && data.len() == 1;
                self.phase = match declined {
                    true => Phase::Opening,
                    false => Phase::Opaque,
                };
            }
            Phase::Typed => self.typed_server_bytes(data),
            // The server speaks only after the opening; anything earlier is not Postgres.
            Phase::Opening => self.phase = Phase::Opaque,
            Phase::Opaque => {}
        }
    }

    fn typed_server_bytes(&mut self, data: &[u8]) {
        let mut data = data;
        if self.status_next
            && let Some((&status, rest)) = data.split_first()
        {
            self.set_status(status);
            // The status byte was this message's whole body: the framer counted it.
            self.server.body_left = self.server.body_left.saturating_sub(1);
            data = rest;
        }
        let (mut pending, mut status, mut status_next) =
            (self.requests.pending, self.status, false);
        let ok = self.server.feed(data, |frame, first| {
            if let Frame::Header {
                kind: READY_FOR_QUERY,
                body,
            } = frame
            {
                match (body, first) {
                    (1, Some(s)) => {
                        status = Some(s);
                        pending = pending.saturating_sub(1);
                    }
                    (1, None) => status_next = true,
                    // A ReadyForQuery without its one status byte: not the protocol we know.
                    _ => status = Some(0),
                }
            }
        });
        (self.requests.pending, self.status, self.status_next) = (pending, status, status_next);
        if !ok || self.status == Some(0) {
            self.phase = Phase::Opaque;
        }
    }

    fn set_status(&mut self, status: u8) {
        self.status = Some(status);
        self.status_next = false;
        self.requests.pending = self.requests.pending.saturating_sub(1);
    }

    fn opening_bytes(&mut self, data: &[u8]) {
        self.opening.extend_from_slice(data);
        let Some((opening, used)) = parse_opening(&self.opening) else {
            if self.opening.len() > MAX_OPENING_LEN {
                self.phase = Phase::Opaque;
            }
            return;
        };
        let rest = self.opening.split_off(used.min(self.opening.len()));
        self.opening = Vec::new();
        self.phase = match opening {
            Opening::SslRequest | Opening::GssEncRequest if rest.is_empty() => {
                Phase::EncryptionAnswer
            }
            Opening::Startup { .. } => {
                // The server owes one ReadyForQuery for the startup itself.
                self.requests.pending = 1;
                Phase::Typed
            }
            // A cancel request is no session; anything else is not followed.
            _ => Phase::Opaque,
        };
        if !rest.is_empty() && self.phase == Phase::Typed {
            self.client_bytes(&rest);
        }
    }
}

#[cfg(test)]
mod tests;
