use super::*;
use crate::pgwire::{SSL_REQUEST_CODE, opening_packet, startup_message};

fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn rfq(status: u8) -> Vec<u8> {
    msg(b'Z', &[status])
}

fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    msg(b'Q', &body)
}

/// What a server says after a successful startup, ending with ReadyForQuery `I`.
fn server_welcome() -> Vec<u8> {
    [
        msg(b'R', &0u32.to_be_bytes()),
        msg(b'S', b"server_version\x0016\x00"),
        msg(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]),
        rfq(b'I'),
    ]
    .concat()
}

/// A result for one statement: row description, a row, command complete.
fn result_rows() -> Vec<u8> {
    [
        msg(b'T', &[0, 0]),
        msg(b'D', &[0, 0]),
        msg(b'C', b"SELECT 1\x00"),
    ]
    .concat()
}

/// A session past its startup.
fn established() -> TxTracker {
    let mut t = TxTracker::new();
    t.client_bytes(&startup_message(&[("user", "app")]));
    assert!(!t.at_boundary(), "the startup is still answered");
    t.server_bytes(&server_welcome());
    assert!(t.at_boundary(), "idle after the startup");
    t
}

#[test]
fn a_simple_query_is_in_flight_until_its_ready_for_query() {
    let mut t = established();
    t.client_bytes(&query("SELECT 1"));
    assert!(!t.at_boundary(), "query sent, no answer yet");
    t.server_bytes(&result_rows());
    assert!(!t.at_boundary(), "rows came, ReadyForQuery not yet");
    t.server_bytes(&rfq(b'I'));
    assert!(t.at_boundary());
}

#[test]
fn an_open_transaction_block_is_no_boundary_until_it_ends() {
    let mut t = established();
    t.client_bytes(&query("BEGIN"));
    t.server_bytes(&[msg(b'C', b"BEGIN\x00"), rfq(b'T')].concat());
    assert!(!t.at_boundary(), "idle in transaction");
    t.client_bytes(&query("INSERT"));
    t.server_bytes(&[msg(b'E', b"Sx\x00\x00"), rfq(b'E')].concat());
    assert!(!t.at_boundary(), "failed transaction block");
    t.client_bytes(&query("ROLLBACK"));
    t.server_bytes(&[msg(b'C', b"ROLLBACK\x00"), rfq(b'I')].concat());
    assert!(t.at_boundary());
}

#[test]
fn every_split_of_the_stream_gives_the_same_answers() {
    let server = [result_rows(), rfq(b'T')].concat();
    for cut in 0..=server.len() {
        let mut t = established();
        t.client_bytes(&query("BEGIN; SELECT 1"));
        t.server_bytes(&server[..cut]);
        t.server_bytes(&server[cut..]);
        assert!(!t.at_boundary(), "split at {cut}: in a transaction");
        let end = rfq(b'I');
        t.client_bytes(&query("COMMIT"));
        for b in &end {
            t.server_bytes(std::slice::from_ref(b));
        }
        assert!(t.at_boundary(), "split at {cut}: committed");
    }
    // The client side split byte by byte too, startup included.
    let mut t = TxTracker::new();
    for b in startup_message(&[("user", "app"), ("database", "app")]) {
        t.client_bytes(&[b]);
    }
    t.server_bytes(&server_welcome());
    assert!(t.at_boundary());
    let q = query("SELECT 1");
    t.client_bytes(&q[..3]);
    assert!(!t.at_boundary(), "part of a message sent");
    t.client_bytes(&q[3..]);
    t.server_bytes(&[result_rows(), rfq(b'I')].concat());
    assert!(t.at_boundary());
}

#[test]
fn extended_protocol_messages_before_sync_are_in_flight() {
    let mut t = established();
    t.client_bytes(&msg(b'P', b"\x00SELECT 1\x00\x00\x00"));
    t.client_bytes(&msg(b'B', b"\x00\x00\x00\x00\x00\x00\x00\x00"));
    t.client_bytes(&msg(b'E', b"\x00\x00\x00\x00\x00"));
    assert!(
        !t.at_boundary(),
        "executed in an implicit transaction, no Sync yet"
    );
    t.server_bytes(&[msg(b'1', &[]), msg(b'2', &[]), result_rows()].concat());
    assert!(!t.at_boundary());
    t.client_bytes(&msg(b'S', &[]));
    assert!(!t.at_boundary(), "Sync sent, not answered");
    t.server_bytes(&rfq(b'I'));
    assert!(t.at_boundary());
}

#[test]
fn pipelined_requests_are_done_only_when_all_are_answered() {
    let mut t = established();
    t.client_bytes(&[query("SELECT 1"), query("SELECT 2")].concat());
    t.server_bytes(&[result_rows(), rfq(b'I')].concat());
    assert!(!t.at_boundary(), "the second query is still running");
    t.server_bytes(&[result_rows(), rfq(b'I')].concat());
    assert!(t.at_boundary());
}

#[test]
fn copy_from_stdin_is_one_request() {
    let mut t = established();
    t.client_bytes(&query("COPY t FROM STDIN"));
    t.server_bytes(&msg(b'G', &[0, 0, 0]));
    t.client_bytes(&[msg(b'd', b"1\n"), msg(b'd', b"2\n"), msg(b'c', &[])].concat());
    assert!(!t.at_boundary());
    t.server_bytes(&[msg(b'C', b"COPY 2\x00"), rfq(b'I')].concat());
    assert!(t.at_boundary());
}

#[test]
fn encrypted_sessions_are_not_followed() {
    let mut t = TxTracker::new();
    t.client_bytes(&opening_packet(SSL_REQUEST_CODE, &[]));
    t.server_bytes(b"S");
    t.client_bytes(&[0x16, 0x03, 0x01, 0x02, 0x00]);
    t.server_bytes(&rfq(b'I'));
    assert!(t.is_opaque());
    assert!(!t.at_boundary());
}

#[test]
fn a_declined_ssl_request_goes_on_in_the_clear() {
    let mut t = TxTracker::new();
    t.client_bytes(&opening_packet(SSL_REQUEST_CODE, &[]));
    t.server_bytes(b"N");
    t.client_bytes(&startup_message(&[("user", "app")]));
    t.server_bytes(&server_welcome());
    assert!(t.at_boundary());
}

#[test]
fn garbage_makes_the_session_opaque_never_a_boundary() {
    // Direct TLS (no SSLRequest) or another protocol.
    let mut t = TxTracker::new();
    t.client_bytes(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01]);
    assert!(t.is_opaque());
    // A typed message whose length is below its own header.
    let mut t = established();
    t.server_bytes(&[b'Z', 0, 0, 0, 2]);
    assert!(t.is_opaque());
    assert!(!t.at_boundary());
    // A ReadyForQuery with more than its status byte.
    let mut t = established();
    t.server_bytes(&msg(b'Z', b"II"));
    assert!(t.is_opaque());
}

#[test]
fn a_cancel_request_is_no_session() {
    let mut t = TxTracker::new();
    t.client_bytes(&opening_packet(
        crate::pgwire::CANCEL_REQUEST_CODE,
        &[0, 0, 0, 1, 0, 0, 0, 2],
    ));
    assert!(!t.at_boundary());
}

#[test]
fn password_authentication_is_part_of_the_startup() {
    let mut t = TxTracker::new();
    t.client_bytes(&startup_message(&[("user", "app")]));
    // SCRAM: AuthenticationSASL, the client's two SASL messages, then the server's final.
    t.server_bytes(&msg(b'R', b"\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00"));
    t.client_bytes(&msg(b'p', b"SCRAM-SHA-256\x00\x00\x00\x00\x04n,,x"));
    t.server_bytes(&msg(b'R', b"\x00\x00\x00\x0br=abc"));
    t.client_bytes(&msg(b'p', b"c=biws,r=abc,p=xyz"));
    t.server_bytes(&msg(b'R', b"\x00\x00\x00\x0cv=xyz"));
    assert!(!t.at_boundary(), "the startup is not answered yet");
    t.server_bytes(&server_welcome());
    assert!(t.at_boundary(), "idle after a password startup");
}

#[test]
fn an_extended_copy_from_stdin_ignores_the_sync_sent_behind_it() {
    // libpq's PQexecParams("COPY … FROM STDIN"): P B D E S, data, CopyDone, Sync.
    let mut t = established();
    t.client_bytes(
        &[
            msg(b'P', b"\x00COPY t FROM STDIN\x00\x00\x00"),
            msg(b'B', b"\x00\x00\x00\x00\x00\x00\x00\x00"),
            msg(b'D', b"P\x00"),
            msg(b'E', b"\x00\x00\x00\x00\x00"),
            msg(b'S', &[]),
        ]
        .concat(),
    );
    t.server_bytes(&[msg(b'1', &[]), msg(b'2', &[]), msg(b'G', &[0, 0, 0])].concat());
    t.client_bytes(&[msg(b'd', b"1\n"), msg(b'c', &[]), msg(b'S', &[])].concat());
    assert!(!t.at_boundary(), "the COPY is not answered yet");
    t.server_bytes(&[msg(b'C', b"COPY 1\x00"), rfq(b'I')].concat());
    assert!(
        t.at_boundary(),
        "the Sync read in copy mode got no ReadyForQuery of its own"
    );
}

#[test]
fn a_bare_flush_opens_nothing() {
    let mut t = established();
    t.client_bytes(&msg(b'H', &[]));
    assert!(t.at_boundary());
}

#[test]
fn a_tracker_made_opaque_never_reports_a_boundary() {
    let mut t = TxTracker::opaque();
    t.client_bytes(&startup_message(&[("user", "app")]));
    t.server_bytes(&server_welcome());
    assert!(t.is_opaque() && !t.at_boundary());
}
