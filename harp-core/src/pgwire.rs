//! The sliver of the Postgres wire protocol the agent speaks itself: classifying a client's first
//! packet and building an `ErrorResponse`. The agent is an L4 proxy and never reads client bytes,
//! except when it must refuse a client (connection limit, no leader): then it answers like a
//! server would, so `psql` prints a clear error instead of "server closed the connection
//! unexpectedly". Pure functions, no I/O; nothing here panics on any input.

/// SQLSTATE `53300` (class 53, insufficient resources): the proxy's `max_client_conn` is reached.
/// It is what Postgres sends for `max_connections`, so clients and poolers treat it alike.
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// SQLSTATE `57P03` (class 57, operator intervention): no lead master to route to right now (none
/// elected within `pause_timeout`). Postgres sends it while starting up or shutting down, and
/// clients read it as "retry later".
pub const CANNOT_CONNECT_NOW: &str = "57P03";
/// SQLSTATE `57P01` (class 57, operator intervention): the session is closed between
/// transactions (a planned switchover, or the lead master changed while it was idle). Postgres sends it when an administrator terminates a
/// backend, and poolers drop such a connection and open a new one.
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// A `Terminate` message: the client ends its session.
pub const TERMINATE: [u8; 5] = [b'X', 0, 0, 0, 4];
/// SQLSTATE `08006` (class 08, connection exception): the lead master is known but the proxy could
/// not connect to it.
pub const CONNECTION_FAILURE: &str = "08006";
/// SQLSTATE `08P01` (class 08, connection exception): the client's opening is not the Postgres
/// protocol (bad length, unknown code or version, malformed startup packet).
pub const PROTOCOL_VIOLATION: &str = "08P01";

/// Code of an `SSLRequest` (1234.5679).
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// Code of a `GSSENCRequest` (1234.5680).
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// Code of a `CancelRequest` (1234.5678).
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// Protocol 3.0 in a `StartupMessage` (major 3 in the high 16 bits, minor 0 in the low 16).
pub const PROTOCOL_3_0: u32 = 196_608;

/// Smallest opening: the length and the code.
pub const MIN_OPENING_LEN: usize = 8;
/// Largest opening, Postgres's own `MAX_STARTUP_PACKET_LENGTH`.
pub const MAX_OPENING_LEN: usize = 10_000;
/// Largest cancel key a `CancelRequest` may carry (protocol 3.2 made it variable, up to 256 bytes).
const MAX_CANCEL_KEY_LEN: usize = 256;

/// A client's first packet (or the packet after a declined `SSLRequest`/`GSSENCRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// The client asks for TLS; a server that will not do TLS answers the single byte `N`.
    SslRequest,
    /// The client asks for GSSAPI encryption; declined the same way, with `N`.
    GssEncRequest,
    /// A query cancel request: the server never answers it.
    Cancel,
    /// A protocol 3.x `StartupMessage`, with the parameters worth logging.
    Startup {
        user: Option<String>,
        database: Option<String>,
        application_name: Option<String>,
    },
    /// Not a Postgres opening; the reason is fit for an error message. Read no further: the
    /// stream is not framed in a way this side understands.
    Invalid(&'static str),
}

/// Classifies the opening at the start of `buf`.
///
/// `None`: `buf` is a valid prefix so far and more bytes are needed. `Some((opening, consumed))`:
/// the verdict, and how many bytes of `buf` it covers. For a valid opening `consumed` is the
/// packet's length, and any bytes after it belong to the next packet. For [`Opening::Invalid`] it
/// is `buf.len()`: nothing after a framing error can be trusted. An invalid length or code is
/// reported as soon as the bytes that show it have arrived, so garbage never makes the caller wait
/// for a length it declared.
pub fn parse_opening(buf: &[u8]) -> Option<(Opening, usize)> {
    let invalid = |reason| Some((Opening::Invalid(reason), buf.len()));
    let len = read_u32(buf, 0)? as usize;
    if !(MIN_OPENING_LEN..=MAX_OPENING_LEN).contains(&len) {
        return invalid("invalid length of startup packet");
    }
    let code = read_u32(buf, 4)?;
    match code {
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => {
            if len != MIN_OPENING_LEN {
                return invalid("invalid length of encryption request packet");
            }
            let opening = if code == SSL_REQUEST_CODE {
                Opening::SslRequest
            } else {
                Opening::GssEncRequest
            };
            Some((opening, len))
        }
        CANCEL_REQUEST_CODE => {
            // Process id and a secret key of 4 (protocol 3.0) to 256 (3.2) bytes.
            if !(MIN_OPENING_LEN + 4 + 4..=MIN_OPENING_LEN + 4 + MAX_CANCEL_KEY_LEN).contains(&len)
            {
                return invalid("invalid length of cancel request packet");
            }
            if buf.len() < len {
                return None;
            }
            Some((Opening::Cancel, len))
        }
        _ if code >> 16 == 3 => {
            if buf.len() < len {
                return None;
            }
            match parse_startup_params(&buf[MIN_OPENING_LEN..len]) {
                Ok(opening) => Some((opening, len)),
                Err(reason) => invalid(reason),
            }
        }
        _ if code >> 16 == 1234 => invalid("unknown special request code in startup packet"),
        _ => invalid("unsupported frontend protocol: only 3.x is supported"),
    }
}

/// Reads the parameters of a startup packet: NUL-terminated name/value pairs, then one more NUL.
fn parse_startup_params(mut body: &[u8]) -> Result<Opening, &'static str> {
    const LAYOUT: &str = "invalid startup packet layout: expected terminator as last byte";
    let (mut user, mut database, mut application_name) = (None, None, None);
    loop {
        let (name, rest) = split_cstr(body).ok_or(LAYOUT)?;
        if name.is_empty() {
            if !rest.is_empty() {
                return Err(LAYOUT);
            }
            return Ok(Opening::Startup {
                user,
                database,
                application_name,
            });
        }
        let (value, rest) = split_cstr(rest).ok_or(LAYOUT)?;
        let value = Some(String::from_utf8_lossy(value).into_owned());
        match name {
            b"user" => user = value,
            b"database" => database = value,
            b"application_name" => application_name = value,
            _ => {}
        }
        body = rest;
    }
}

/// Splits a NUL-terminated string off the front of `bytes`: (the string, what follows its NUL).
fn split_cstr(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = bytes.iter().position(|&b| b == 0)?;
    Some((&bytes[..nul], &bytes[nul + 1..]))
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// An `ErrorResponse` ('E') message: fields `S` and `V` (severity, e.g. `"FATAL"`; `V` is the
/// non-localized copy libpq prefers), `C` (SQLSTATE), `M` (message), `H` (hint) when given, then
/// the terminating NUL. A NUL inside a string would end its field early, so it becomes a space.
pub fn error_response(
    severity: &str,
    sqlstate: &str,
    message: &str,
    hint: Option<&str>,
) -> Vec<u8> {
    let mut fields = Vec::new();
    let mut field = |code: u8, value: &str| {
        fields.push(code);
        fields.extend(value.bytes().map(|b| if b == 0 { b' ' } else { b }));
        fields.push(0);
    };
    field(b'S', severity);
    field(b'V', severity);
    field(b'C', sqlstate);
    field(b'M', message);
    if let Some(hint) = hint {
        field(b'H', hint);
    }
    fields.push(0);
    let len = u32::try_from(fields.len() + 4).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(fields.len() + 5);
    out.push(b'E');
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&fields);
    out
}

/// An opening packet: length, `code`, `body` (clients' first message).
pub fn opening_packet(code: u32, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(8 + body.len()).unwrap_or(u32::MAX);
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A protocol 3.0 StartupMessage with `params` (e.g. `user`, `database`).
pub fn startup_message(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in params {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    opening_packet(PROTOCOL_3_0, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::{opening_packet as packet, startup_message as startup};

    fn invalid_reason(buf: &[u8]) -> &'static str {
        match parse_opening(buf) {
            Some((Opening::Invalid(reason), consumed)) => {
                assert_eq!(consumed, buf.len());
                reason
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn ssl_and_gssenc_requests() {
        let ssl = packet(SSL_REQUEST_CODE, &[]);
        assert_eq!(ssl, [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
        assert_eq!(parse_opening(&ssl), Some((Opening::SslRequest, 8)));
        let gss = packet(GSSENC_REQUEST_CODE, &[]);
        assert_eq!(parse_opening(&gss), Some((Opening::GssEncRequest, 8)));
        // A request with a body is malformed.
        let long = packet(SSL_REQUEST_CODE, &[0; 4]);
        assert_eq!(
            invalid_reason(&long),
            "invalid length of encryption request packet"
        );
    }

    #[test]
    fn cancel_request() {
        let cancel = packet(CANCEL_REQUEST_CODE, &[0, 0, 0x30, 0x39, 1, 2, 3, 4]);
        assert_eq!(parse_opening(&cancel), Some((Opening::Cancel, 16)));
        // Protocol 3.2: a longer key.
        let long_key = packet(CANCEL_REQUEST_CODE, &[7; 4 + 32]);
        assert_eq!(parse_opening(&long_key), Some((Opening::Cancel, 44)));
        let short = packet(CANCEL_REQUEST_CODE, &[0; 4]);
        assert_eq!(
            invalid_reason(&short),
            "invalid length of cancel request packet"
        );
        let huge = packet(CANCEL_REQUEST_CODE, &[0; 4 + 257]);
        assert_eq!(
            invalid_reason(&huge),
            "invalid length of cancel request packet"
        );
    }

    #[test]
    fn startup_message() {
        let buf = startup(&[
            ("user", "alice"),
            ("database", "orders"),
            ("client_encoding", "UTF8"),
            ("application_name", "psql"),
        ]);
        let expected = Opening::Startup {
            user: Some("alice".into()),
            database: Some("orders".into()),
            application_name: Some("psql".into()),
        };
        assert_eq!(parse_opening(&buf), Some((expected, buf.len())));

        // No parameters at all is well-formed (Postgres then complains about the missing user).
        let bare = startup(&[]);
        let none = Opening::Startup {
            user: None,
            database: None,
            application_name: None,
        };
        assert_eq!(parse_opening(&bare), Some((none, 9)));

        // Protocol 3.2 (and any later 3.x) is a startup too.
        let mut v32 = startup(&[("user", "bob")]);
        v32[4..8].copy_from_slice(&(PROTOCOL_3_0 + 2).to_be_bytes());
        assert!(matches!(
            parse_opening(&v32),
            Some((Opening::Startup { user: Some(u), .. }, _)) if u == "bob"
        ));

        // Non-UTF-8 values are kept, lossily.
        let mut latin1 = Vec::new();
        latin1.extend_from_slice(b"user\0caf\xe9\0\0");
        let latin1 = packet(PROTOCOL_3_0, &latin1);
        assert!(matches!(
            parse_opening(&latin1),
            Some((Opening::Startup { user: Some(u), .. }, _)) if u == "caf\u{fffd}"
        ));
    }

    #[test]
    fn malformed_startup_layout() {
        let layout = "invalid startup packet layout: expected terminator as last byte";
        // Missing the final NUL.
        assert_eq!(
            invalid_reason(&packet(PROTOCOL_3_0, b"user\0alice\0")),
            layout
        );
        // A name without a value.
        assert_eq!(invalid_reason(&packet(PROTOCOL_3_0, b"user\0")), layout);
        // An unterminated name.
        assert_eq!(invalid_reason(&packet(PROTOCOL_3_0, b"user")), layout);
        // Bytes after the terminator.
        assert_eq!(invalid_reason(&packet(PROTOCOL_3_0, b"\0x")), layout);
        // An empty body (length 8): no terminator at all.
        assert_eq!(invalid_reason(&packet(PROTOCOL_3_0, b"")), layout);
    }

    #[test]
    fn byte_at_a_time_feed() {
        let mut stream = packet(SSL_REQUEST_CODE, &[]);
        let start = startup(&[("user", "postgres"), ("database", "postgres")]);
        stream.extend_from_slice(&start);
        stream.extend_from_slice(&packet(CANCEL_REQUEST_CODE, &[0; 8]));

        let mut seen = Vec::new();
        let mut buf = Vec::new();
        for &byte in &stream {
            buf.push(byte);
            if let Some((opening, consumed)) = parse_opening(&buf) {
                assert_eq!(consumed, buf.len(), "verdict exactly at the packet's end");
                buf.drain(..consumed);
                seen.push(opening);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(
            seen,
            [
                Opening::SslRequest,
                Opening::Startup {
                    user: Some("postgres".into()),
                    database: Some("postgres".into()),
                    application_name: None,
                },
                Opening::Cancel,
            ]
        );
    }

    #[test]
    fn complete_packet_followed_by_more_bytes() {
        let mut buf = packet(SSL_REQUEST_CODE, &[]);
        buf.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(parse_opening(&buf), Some((Opening::SslRequest, 8)));
    }

    #[test]
    fn partial_buffers_need_more() {
        assert_eq!(parse_opening(&[]), None);
        assert_eq!(parse_opening(&[0, 0, 0]), None);
        assert_eq!(parse_opening(&[0, 0, 0, 8]), None);
        assert_eq!(parse_opening(&[0, 0, 0, 8, 0x04, 0xd2, 0x16]), None);
        let start = startup(&[("user", "x")]);
        for cut in 0..start.len() {
            assert_eq!(parse_opening(&start[..cut]), None, "prefix of {cut} bytes");
        }
    }

    #[test]
    fn length_out_of_range() {
        let reason = "invalid length of startup packet";
        for len in [0u32, 1, 4, 7, 10_001, 1 << 20, u32::MAX] {
            // Decided from the length alone: no need to wait for the code.
            assert_eq!(invalid_reason(&len.to_be_bytes()), reason, "length {len}");
        }
        // The bounds themselves are fine.
        assert_eq!(parse_opening(&[0, 0, 0, 8]), None);
        let mut body = b"user\0".to_vec();
        body.extend(std::iter::repeat_n(b'y', MAX_OPENING_LEN - 8 - 5 - 2));
        body.extend_from_slice(b"\0\0");
        let max = packet(PROTOCOL_3_0, &body);
        assert_eq!(max.len(), MAX_OPENING_LEN);
        assert!(matches!(
            parse_opening(&max),
            Some((Opening::Startup { .. }, MAX_OPENING_LEN))
        ));
    }

    #[test]
    fn unknown_protocols_and_codes() {
        // Protocol 2.0, dropped from Postgres 14.
        assert_eq!(
            invalid_reason(&packet(2 << 16, b"user\0u\0\0")),
            "unsupported frontend protocol: only 3.x is supported"
        );
        assert_eq!(
            invalid_reason(&packet(4 << 16, b"\0")),
            "unsupported frontend protocol: only 3.x is supported"
        );
        // 1234.5681: not a request Postgres knows.
        assert_eq!(
            invalid_reason(&packet((1234 << 16) | 5681, &[])),
            "unknown special request code in startup packet"
        );
        // Decided as soon as the code is in: the rest of the declared length is not awaited.
        assert_eq!(
            invalid_reason(&[0, 0, 0, 100, 0, 2, 0, 0]),
            "unsupported frontend protocol: only 3.x is supported"
        );
    }

    #[test]
    fn garbage() {
        for junk in [
            &b"GET / HTTP/1.1\r\nHost: proxy\r\n\r\n"[..],
            b"GET ",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", // a TLS ClientHello (direct SSL)
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"\xff\xff\xff\xff\xff\xff\xff\xff",
        ] {
            assert!(
                matches!(parse_opening(junk), Some((Opening::Invalid(_), n)) if n == junk.len()),
                "{junk:?}"
            );
        }
    }

    /// A tiny deterministic xorshift, so the fuzz loop needs no crates and replays the same way.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn fuzz_never_panics() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let templates = [
            packet(SSL_REQUEST_CODE, &[]),
            packet(CANCEL_REQUEST_CODE, &[0; 8]),
            startup(&[("user", "u"), ("database", "d")]),
        ];
        for round in 0..50_000 {
            let buf: Vec<u8> = if round % 2 == 0 {
                // Pure noise, sometimes with a plausible length up front.
                let len = rng.below(64) as usize;
                let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if buf.len() >= 4 && rng.below(2) == 0 {
                    let declared = rng.below(80) as u32;
                    buf[..4].copy_from_slice(&declared.to_be_bytes());
                }
                buf
            } else {
                // A real opening with a few bytes flipped, cut short or extended.
                let mut buf = templates[rng.below(3) as usize].clone();
                for _ in 0..rng.below(4) {
                    let at = rng.below(buf.len() as u64) as usize;
                    buf[at] = rng.next() as u8;
                }
                match rng.below(3) {
                    0 => buf.truncate(rng.below(buf.len() as u64 + 1) as usize),
                    1 => buf.extend((0..rng.below(16)).map(|_| rng.next() as u8)),
                    _ => {}
                }
                buf
            };
            if let Some((opening, consumed)) = parse_opening(&buf) {
                assert!(consumed <= buf.len(), "{buf:?}");
                if !matches!(opening, Opening::Invalid(_)) {
                    assert!((MIN_OPENING_LEN..=MAX_OPENING_LEN).contains(&consumed));
                }
            }
        }
    }

    #[test]
    fn error_response_bytes() {
        let msg = error_response(
            "FATAL",
            TOO_MANY_CONNECTIONS,
            "too many clients",
            Some("retry"),
        );
        let mut expected = vec![b'E', 0, 0, 0, 51];
        expected.extend_from_slice(b"SFATAL\0VFATAL\0C53300\0Mtoo many clients\0Hretry\0\0");
        assert_eq!(msg, expected);
        assert_eq!(msg.len(), 1 + 51);
    }

    #[test]
    fn error_response_without_hint_and_with_nul() {
        let msg = error_response("FATAL", PROTOCOL_VIOLATION, "a\0b", None);
        let mut expected = vec![b'E', 0, 0, 0, 31];
        expected.extend_from_slice(b"SFATAL\0VFATAL\0C08P01\0Ma b\0\0");
        assert_eq!(msg, expected);
        let declared = u32::from_be_bytes(msg[1..5].try_into().unwrap()) as usize;
        assert_eq!(declared, msg.len() - 1);
    }
}
