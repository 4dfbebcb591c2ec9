use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr as StdSocketAddr, TcpListener, TcpStream};

use super::*;

fn v4(addr: StdSocketAddr) -> SocketAddrV4 {
    match addr {
        StdSocketAddr::V4(a) => a,
        StdSocketAddr::V6(a) => panic!("expected IPv4, got {a}"),
    }
}

/// A listener on `ip` (port 0 = any) and `n` connected (client, server-side) pairs.
fn leader(ip: Ipv4Addr, port: u16, n: usize) -> (TcpListener, Vec<(TcpStream, TcpStream)>) {
    let listener = TcpListener::bind((ip, port)).expect("bind listener");
    let addr = listener.local_addr().expect("listener addr");
    let pairs = (0..n)
        .map(|_| {
            let client = TcpStream::connect(addr).expect("connect");
            let (server, _) = listener.accept().expect("accept");
            for s in [&client, &server] {
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
            }
            (client, server)
        })
        .collect();
    (listener, pairs)
}

fn target(client: &TcpStream) -> Target {
    Target {
        cookie: socket_cookie(client).expect("SO_COOKIE"),
        dst: v4(client.peer_addr().expect("peer addr")),
    }
}

/// Both directions of a pair still carry data.
fn assert_alive(name: &str, (client, server): &mut (TcpStream, TcpStream)) {
    let mut buf = [0; 4];
    client.write_all(b"ping").expect(name);
    server.read_exact(&mut buf).expect(name);
    assert_eq!(&buf, b"ping", "{name}");
    server.write_all(b"pong").expect(name);
    client.read_exact(&mut buf).expect(name);
    assert_eq!(&buf, b"pong", "{name}");
}

fn outcome(result: &io::Result<usize>) -> String {
    match result {
        Ok(0) => "EOF".into(),
        Ok(n) => format!("{n} bytes"),
        Err(e) => format!("{:?} ({e})", e.kind()),
    }
}

#[test]
fn destroy_closes_only_targeted_sockets_to_the_old_leader() {
    if !harp_tests::require_root("destroy_closes_only_targeted_sockets_to_the_old_leader") {
        return;
    }
    // The old leader, with steered clients A, B, C.
    let (old, mut pairs) = leader(Ipv4Addr::LOCALHOST, 0, 3);
    let old_addr = v4(old.local_addr().unwrap());
    // Another destination with the same port: D must survive even if its cookie is listed
    // (with the old leader as destination).
    let (_other, mut others) = leader(Ipv4Addr::new(127, 0, 0, 2), old_addr.port(), 1);
    let [a, b, c] = [0, 1, 2].map(|i| target(&pairs[i].0));
    let d = target(&others[0].0);
    assert_eq!(d.dst.port(), old_addr.port());
    // An unknown cookie: the cookie of a socket since closed.
    let unknown = {
        let (_l, gone) = leader(Ipv4Addr::LOCALHOST, 0, 1);
        target(&gone[0].0).cookie
    };
    let targets = [
        a,
        b,
        Target {
            cookie: unknown,
            dst: old_addr,
        },
        Target {
            cookie: d.cookie,
            dst: old_addr,
        },
    ];

    let report = destroy_tcp4(&targets).expect("destroy_tcp4");
    println!("report: {report:?}");
    assert_eq!(report.destroyed, [a.cookie, b.cookie]);
    assert_eq!(report.not_found, [unknown, d.cookie]);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(report.out_of_time.is_empty());
    assert!(report.elapsed < DEFAULT_TIMEOUT);

    // What SOCK_DESTROY did: the client's next op fails with ECONNABORTED, the peer got a RST.
    for (name, i) in [("A", 0), ("B", 1)] {
        let (client, server) = &mut pairs[i];
        let mut buf = [0; 4];
        let first = client.read(&mut buf);
        let then = client.read(&mut buf);
        let write = client.write(b"x");
        let peer = server.read(&mut buf);
        println!(
            "{name}: client read -> {}, read again -> {}, write -> {}; server read -> {}",
            outcome(&first),
            outcome(&then),
            outcome(&write),
            outcome(&peer),
        );
        let first = first.expect_err("destroyed client must fail");
        assert_eq!(
            first.kind(),
            ErrorKind::ConnectionAborted,
            "{name}: {first}"
        );
        let peer = peer.expect_err("peer of a destroyed client must see the reset");
        assert_eq!(peer.kind(), ErrorKind::ConnectionReset, "{name}: {peer}");
    }
    assert_alive("C", &mut pairs[2]);
    assert_alive("D", &mut others[0]);

    // Again: A and B are gone now, C is not a target.
    let again = destroy_tcp4(&[a, b]).expect("destroy_tcp4 again");
    assert!(again.destroyed.is_empty());
    assert_eq!(again.not_found, [a.cookie, b.cookie]);
    assert_alive("C after", &mut pairs[2]);
    assert_eq!(target(&pairs[2].0), c);
}

#[test]
fn unknown_cookie_is_not_found_without_error() {
    if !harp_tests::require_root("unknown_cookie_is_not_found_without_error") {
        return;
    }
    let (_old, mut pairs) = leader(Ipv4Addr::LOCALHOST, 0, 1);
    let dst = target(&pairs[0].0).dst;
    let report = destroy_tcp4(&[Target { cookie: 0, dst }]).expect("destroy_tcp4");
    assert!(report.destroyed.is_empty());
    assert_eq!(report.not_found, [0]);
    assert!(report.failed.is_empty());
    assert_alive("bystander", &mut pairs[0]);
}

#[test]
fn timings() {
    if !harp_tests::require_root("timings") {
        return;
    }
    let (_old, pairs) = leader(Ipv4Addr::LOCALHOST, 0, 100);
    let targets: Vec<Target> = pairs.iter().map(|(c, _)| target(c)).collect();
    let start = Instant::now();
    let report = destroy_tcp4(&targets).expect("destroy_tcp4");
    let took = start.elapsed();
    assert_eq!(report.destroyed_count(), 100, "{report:?}");
    println!(
        "timing: destroyed 100 sockets in {took:?} ({:?} per socket)",
        took / 100
    );
    let start = Instant::now();
    let report = destroy_tcp4(&targets[..1]).expect("destroy_tcp4");
    println!("timing: one not-found cookie in {:?}", start.elapsed());
    assert_eq!(report.not_found.len(), 1);
}

#[test]
fn dump_filter_keeps_only_target_destinations() {
    // Dumping needs no privilege.
    let (old, pairs) = leader(Ipv4Addr::LOCALHOST, 0, 2);
    let old_addr = v4(old.local_addr().unwrap());
    let (_other, others) = leader(Ipv4Addr::new(127, 0, 0, 3), old_addr.port(), 1);
    let steered: Vec<u64> = pairs.iter().map(|(c, _)| target(c).cookie).collect();
    let elsewhere = target(&others[0].0).cookie;
    let accepted = target(&pairs[0].1).cookie;

    let mut diag = Diag::open(Instant::now() + DEFAULT_TIMEOUT, DEFAULT_TIMEOUT).unwrap();
    let cookies = |ids: Vec<SocketId>| -> Vec<u64> { ids.iter().map(cookie_of).collect() };
    let filtered = cookies(diag.dump_once(Some(&[old_addr])).expect("filtered dump"));
    let all = cookies(diag.dump_once(None).expect("unfiltered dump"));

    for cookie in &steered {
        assert!(filtered.contains(cookie) && all.contains(cookie));
    }
    // Present in the full dump, dropped by the kernel filter.
    for cookie in [elsewhere, accepted] {
        assert!(all.contains(&cookie));
        assert!(!filtered.contains(&cookie));
    }
    let ids = diag.dump_tcp4(&[old_addr]).unwrap();
    assert!(
        ids.iter().all(|id| remote_of(id) == Some(old_addr)),
        "{ids:?}"
    );
}

#[test]
fn no_time_left_fails_with_timeout_and_touches_nothing() {
    let (_old, mut pairs) = leader(Ipv4Addr::LOCALHOST, 0, 1);
    let t = target(&pairs[0].0);
    let err = destroy_tcp4_within(&[t], Duration::ZERO).expect_err("no time");
    assert!(
        matches!(err, DestroyError::Timeout { op: "dump", .. }),
        "{err}"
    );
    println!("{err}");
    assert_alive("untouched", &mut pairs[0]);
}

#[test]
fn no_targets_is_a_no_op() {
    let report = destroy_tcp4(&[]).unwrap();
    assert_eq!(report.destroyed_count(), 0);
    assert!(report.not_found.is_empty());
}

#[test]
fn errors_name_cause_and_fix() {
    assert!(
        DestroyError::PermissionDenied
            .to_string()
            .contains("CAP_NET_ADMIN")
    );
    assert!(
        DestroyError::Unsupported
            .to_string()
            .contains("CONFIG_INET_DIAG_DESTROY=y")
    );
}

#[test]
fn cookie_round_trips_through_the_diag_layout() {
    for cookie in [0, 1, 0x1122_3344_5566_7788, u64::MAX] {
        let mut id = SocketId::new_v4();
        id.cookie = diag_cookie(cookie);
        assert_eq!(cookie_of(&id), cookie);
    }
    // idiag_cookie[0] is the low half, as a host-order u32.
    assert_eq!(
        diag_cookie(0x1122_3344_5566_7788)[..4],
        0x5566_7788u32.to_ne_bytes()
    );
}

#[test]
fn socket_cookie_is_stable_and_unique() {
    let (_l, pairs) = leader(Ipv4Addr::LOCALHOST, 0, 1);
    let (client, server) = &pairs[0];
    let c = socket_cookie(client).unwrap();
    assert_eq!(socket_cookie(client).unwrap(), c);
    assert_ne!(socket_cookie(server).unwrap(), c);
    assert_ne!(c, 0);
}

/// The exact bytes of a `SOCK_DESTROY` request (little-endian hosts: the header and the
/// interface are host order).
#[cfg(target_endian = "little")]
#[test]
fn destroy_request_byte_layout() {
    let id = SocketId {
        source_port: 40000,     // 0x9c40
        destination_port: 5432, // 0x1538
        source_address: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
        destination_address: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        interface_id: 3,
        cookie: diag_cookie(0x1122_3344_5566_7788),
    };
    let states = live_states().bits();
    assert_eq!(states, 0xb3e); // bits 1..=11 but TIME_WAIT (6), CLOSE (7), LISTEN (10)
    #[rustfmt::skip]
    let expected: Vec<u8> = [
        // struct nlmsghdr
        &[72, 0, 0, 0][..],     // nlmsg_len: 16 + 56
        &[21, 0],               // nlmsg_type: SOCK_DESTROY
        &[0x05, 0x00],          // nlmsg_flags: NLM_F_REQUEST | NLM_F_ACK
        &[7, 0, 0, 0],          // nlmsg_seq
        &[0, 0, 0, 0],          // nlmsg_pid: the kernel
        // struct inet_diag_req_v2
        &[2, 6, 0, 0],          // sdiag_family AF_INET, sdiag_protocol TCP, ext, pad
        &states.to_le_bytes(),  // idiag_states
        // struct inet_diag_sockid
        &[0x9c, 0x40],          // idiag_sport, network order
        &[0x15, 0x38],          // idiag_dport, network order
        &[127, 0, 0, 1], &[0; 12],  // idiag_src[4]
        &[10, 1, 2, 3], &[0; 12],   // idiag_dst[4]
        &[3, 0, 0, 0],          // idiag_if
        &[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11], // idiag_cookie[2]: low, high
    ]
    .concat();
    let bytes = destroy_request(7, &id);
    assert_eq!(bytes, expected);
    // And the crate reads the same request back.
    let parsed = InetRequest::parse(&bytes[16..]).unwrap();
    assert_eq!(parsed.socket_id, id);
}

#[cfg(target_endian = "little")]
#[test]
fn dump_request_byte_layout() {
    let dst = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 5432);
    let bytes = dump_request(1, Some(&[dst]));
    assert_eq!(bytes.len(), 16 + 56 + 4 + COND_LEN);
    assert_eq!(bytes[..4], (bytes.len() as u32).to_le_bytes());
    assert_eq!(bytes[4..6], [20, 0]); // SOCK_DIAG_BY_FAMILY
    assert_eq!(bytes[6..8], [0x01, 0x03]); // NLM_F_REQUEST | NLM_F_DUMP
    assert_eq!(bytes[24..72], [0; 48]); // wildcard sockid
    assert_eq!(bytes[72..76], [20, 0, 1, 0]); // nla_len 4 + 16, INET_DIAG_REQ_BYTECODE
    #[rustfmt::skip]
    assert_eq!(bytes[76..], [
        8, 16, 20, 0,       // D_COND, yes: next op, no: 4 past the end
        2, 32, 0, 0,        // AF_INET /32
        0x38, 0x15, 0, 0,   // port 5432, host-order int
        127, 0, 0, 1,
    ]);
    assert_eq!(dump_request(1, None).len(), 16 + 56);
}

#[cfg(target_endian = "little")]
#[test]
fn dst_filter_layout_for_three_destinations() {
    let d = |last| SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, last), 1);
    let code = dst_filter(&[d(1), d(2), d(3)]);
    assert_eq!(code.len(), 3 * COND_LEN + 2 * OP_LEN);
    assert_eq!(code[0..4], [8, 16, 20, 0]);
    assert_eq!(code[16..20], [1, 4, 40, 0]); // JMP over COND JMP COND to the end
    assert_eq!(code[20..24], [8, 16, 20, 0]);
    assert_eq!(code[36..40], [1, 4, 20, 0]); // JMP over the last COND
    assert_eq!(code[40..44], [8, 16, 20, 0]);
}

/// The kernel's `inet_diag_bc_audit()` and `inet_diag_bc_run()`, for the ops `dst_filter`
/// emits, to check its jumps.
mod kernel_model {
    use super::*;

    fn op_at(code: &[u8], at: usize) -> (u8, usize, usize) {
        let no = u16::from_ne_bytes([code[at + 2], code[at + 3]]);
        (code[at], usize::from(code[at + 1]), usize::from(no))
    }

    fn valid_cc(code: &[u8], cc: usize) -> bool {
        let mut at = 0;
        while at < code.len() {
            if at == cc {
                return true;
            }
            let (_, yes, _) = op_at(code, at);
            if yes < 4 || yes % 4 != 0 {
                return false;
            }
            at += yes;
        }
        false
    }

    pub fn audit(code: &[u8]) -> bool {
        let mut at = 0;
        while at < code.len() {
            let len = code.len() - at;
            let (kind, yes, no) = op_at(code, at);
            let min = match kind {
                INET_DIAG_BC_D_COND => COND_LEN,
                INET_DIAG_BC_JMP => OP_LEN,
                _ => return false,
            };
            if len < min || no < min || no > len + 4 || no % 4 != 0 {
                return false;
            }
            if no < len && !valid_cc(code, at + no) {
                return false;
            }
            if yes < min || yes > len + 4 || yes % 4 != 0 {
                return false;
            }
            at += yes;
        }
        at == code.len()
    }

    pub fn keeps(code: &[u8], dst: SocketAddrV4) -> bool {
        let mut at = 0;
        while at < code.len() {
            let (kind, yes, no) = op_at(code, at);
            let holds = match kind {
                INET_DIAG_BC_D_COND => {
                    let port = i32::from_ne_bytes(code[at + 8..at + 12].try_into().unwrap());
                    code[at + 4] == AF_INET
                        && code[at + 5] == 32
                        && port == i32::from(dst.port())
                        && code[at + 12..at + 16] == dst.ip().octets()
                }
                _ => false, // JMP
            };
            at += if holds { yes } else { no };
        }
        at == code.len()
    }
}

#[test]
fn dst_filter_keeps_exactly_its_destinations() {
    let d = |last, port| SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, last), port);
    let probes = [
        d(1, 5432),
        d(2, 5432),
        d(3, 5432),
        d(4, 5432),
        d(1, 6432),
        d(9, 1),
    ];
    for n in 1..=4 {
        let dsts = &probes[..n];
        let code = dst_filter(dsts);
        assert!(kernel_model::audit(&code), "audit rejects {n}: {code:?}");
        for probe in probes {
            assert_eq!(
                kernel_model::keeps(&code, probe),
                dsts.contains(&probe),
                "{n} dsts, probe {probe}"
            );
        }
    }
}
