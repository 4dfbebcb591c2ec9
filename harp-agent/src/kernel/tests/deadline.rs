//! The kernel on its own authority: entries expire, and a steered socket whose leadership no
//! longer stands sends nothing — with no agent process to help (root only).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use harp_common::counters;
use harp_tests::cgroup::ChildCgroup;
use harp_tests::require_root;

use super::{Bpffs, Kernel, accept, far, listener, service};
use crate::steering::boot_ns;

/// A client in the cgroup that keeps its connection: it sends each line read from stdin and
/// says `sent` (or the error) after each.
const TALKER: &str = r#"
import socket, sys
s = socket.socket()
s.settimeout(10)
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
except ConnectionRefusedError:
    print("refused", flush=True)
    sys.exit(0)
SO_COOKIE = 57
cookie = int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), "little")
print(f"cookie {cookie}", flush=True)
for line in sys.stdin:
    try:
        s.sendall(line.encode())
        print("sent", flush=True)
    except OSError as e:
        print(f"error {e}", flush=True)
"#;

struct Talker {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
}

impl Talker {
    fn spawn(cgroup: &ChildCgroup, service: SocketAddrV4) -> Talker {
        let mut child = cgroup
            .command("python3")
            .args(["-c", TALKER, &service.port().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python3 talker");
        let stdin = child.stdin.take().expect("piped stdin");
        let out = BufReader::new(child.stdout.take().expect("piped stdout"));
        Talker { child, stdin, out }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("read talker output");
        line.trim_end().to_string()
    }

    fn cookie(&mut self) -> u64 {
        let line = self.line();
        match line.split_whitespace().collect::<Vec<_>>()[..] {
            ["cookie", c] => c.parse().unwrap(),
            _ => panic!("expected a steered connection, got {line:?}"),
        }
    }

    /// Sends `text` and a newline on the connection (the local send succeeds either way: the
    /// kernel queues what it may not transmit).
    fn say(&mut self, text: &str) {
        writeln!(self.stdin, "{text}").unwrap();
        assert_eq!(self.line(), "sent");
    }
}

impl Drop for Talker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `conn` receives within `within`: whole lines only.
fn received(conn: &TcpStream, within: Duration) -> String {
    conn.set_read_timeout(Some(within)).unwrap();
    let mut got = String::new();
    let mut r = BufReader::new(conn);
    while r.read_line(&mut got).is_ok_and(|n| n > 0) {}
    got
}

/// Reads one line from `conn` (the bytes sent on a standing connection arrive at once).
fn line_from(conn: &TcpStream) -> String {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = String::new();
    BufReader::new(conn)
        .read_line(&mut got)
        .expect("read a line");
    got
}

fn counter(kernel: &Kernel, which: u32) -> u64 {
    kernel.counters()[which as usize]
}

fn steered_pair(
    cgroup: &ChildCgroup,
    service: SocketAddrV4,
    backend: &TcpListener,
) -> (Talker, TcpStream) {
    let mut talker = Talker::spawn(cgroup, service);
    talker.cookie();
    let conn = accept(backend);
    talker.say("one");
    assert_eq!(line_from(&conn), "one\n");
    (talker, conn)
}

#[test]
fn an_expired_entry_steers_nothing_and_its_sockets_send_nothing() {
    if !require_root("kernel::an_expired_entry_steers_nothing") {
        return;
    }
    let cgroup = ChildCgroup::new();
    let fs = Bpffs::new();
    let mut kernel = Kernel::load(cgroup.path(), &fs.pin_dir()).expect("load");
    let (backend, backend_addr) = listener();
    let service = service();
    let until = Instant::now() + Duration::from_millis(1500);
    kernel
        .set_leader(service, backend_addr, 3, boot_ns(until), true)
        .unwrap();
    let (mut talker, conn) = steered_pair(&cgroup, service, &backend);
    // The agent "dies" here: nobody extends the entry.
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    talker.say("two");
    assert_eq!(
        received(&conn, Duration::from_secs(2)),
        "",
        "a steered socket sent to its leader after the entry expired"
    );
    assert!(counter(&kernel, counters::FENCED) >= 1);
    // A new connect is not steered: it reaches the service address, where nothing listens.
    let mut late = Talker::spawn(&cgroup, service);
    assert_eq!(late.line(), "refused");
    assert!(counter(&kernel, counters::EXPIRED) >= 1);
    // An agent that trusts etcd again extends the entry: the socket sends again (its held
    // bytes go out first, retransmitted).
    kernel
        .set_leader(service, backend_addr, 3, far(), true)
        .unwrap();
    talker.say("three");
    let got = received(&conn, Duration::from_secs(3));
    assert!(got.ends_with("three\n"), "after the extension: {got:?}");
    Kernel::uninstall(&fs.pin_dir()).unwrap();
}

#[test]
fn a_replaced_or_cleared_leadership_lets_its_sockets_send_nothing() {
    if !require_root("kernel::a_replaced_leadership_lets_its_sockets_send_nothing") {
        return;
    }
    let cgroup = ChildCgroup::new();
    let fs = Bpffs::new();
    let mut kernel = Kernel::load(cgroup.path(), &fs.pin_dir()).expect("load");
    let (old, old_addr) = listener();
    let (new, new_addr) = listener();
    let service = service();
    kernel
        .set_leader(service, old_addr, 1, far(), true)
        .unwrap();
    let (mut drained, drained_conn) = steered_pair(&cgroup, service, &old);
    let (mut cut, cut_conn) = steered_pair(&cgroup, service, &old);

    // A switchover's drain: new connects are not steered, the leadership's sockets still send.
    kernel
        .set_leader(service, old_addr, 1, far(), false)
        .unwrap();
    drained.say("in the drain");
    assert_eq!(line_from(&drained_conn), "in the drain\n");
    assert_eq!(Talker::spawn(&cgroup, service).line(), "refused");

    // The record the agent walks is lost (as an LRU eviction under pressure would): the
    // socket's own storage still holds it back once the leadership is replaced.
    let cookie = kernel.steered()[0].0;
    assert!(kernel.forget_steered(cookie));
    kernel
        .set_leader(service, new_addr, 2, far(), true)
        .unwrap();
    drained.say("after the handover");
    cut.say("after the handover");
    assert_eq!(received(&drained_conn, Duration::from_secs(2)), "");
    assert_eq!(received(&cut_conn, Duration::from_secs(1)), "");
    let (mut fresh, fresh_conn) = steered_pair(&cgroup, service, &new);

    // No entry at all (no leader): nothing steered sends.
    kernel.clear_leader(service).unwrap();
    fresh.say("no leader");
    assert_eq!(received(&fresh_conn, Duration::from_secs(2)), "");
    Kernel::uninstall(&fs.pin_dir()).unwrap();
}

/// Inside a network namespace of its own: listens on the service and backend ports of its own
/// loopback, connects to the service port and prints which of its listeners accepted.
const CONTAINER: &str = r#"
import socket, subprocess, sys
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
service, backend = int(sys.argv[1]), int(sys.argv[2])
ls = {}
for port in (service, backend):
    l = socket.socket()
    l.bind(("127.0.0.1", port))
    l.listen()
    l.settimeout(5)
    ls[port] = l
c = socket.create_connection(("127.0.0.1", service), timeout=5)
for port, l in ls.items():
    l.setblocking(False)
    try:
        l.accept()
        print(f"accepted on {'service' if port == service else 'backend'}", flush=True)
    except BlockingIOError:
        pass
"#;

#[test]
fn a_container_of_the_cgroup_keeps_its_own_service_address() {
    if !require_root("kernel::a_container_keeps_its_own_service_address") {
        return;
    }
    let cgroup = ChildCgroup::new();
    let fs = Bpffs::new();
    let mut kernel = Kernel::load(cgroup.path(), &fs.pin_dir()).expect("load");
    let (_backend, backend_addr) = listener();
    let service = service();
    kernel
        .set_leader(service, backend_addr, 4, far(), true)
        .unwrap();
    let before = counter(&kernel, counters::STEERED);
    // Joined to the cgroup first (`ip netns exec` would hide the cgroup mount), then unshared.
    let out = cgroup
        .command("unshare")
        .args(["--net", "python3", "-c", CONTAINER])
        .args([service.port().to_string(), backend_addr.port().to_string()])
        .output()
        .expect("unshare --net python3");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        said.trim(),
        "accepted on service",
        "a connect in another network namespace was steered"
    );
    assert_eq!(counter(&kernel, counters::STEERED), before);
    Kernel::uninstall(&fs.pin_dir()).unwrap();
}

#[test]
fn under_record_pressure_no_socket_is_steered_unrecorded_and_every_steered_one_is_cut() {
    if !require_root("kernel::under_record_pressure") {
        return;
    }
    let cgroup = ChildCgroup::new();
    let fs = Bpffs::new();
    let mut kernel = Kernel::load(cgroup.path(), &fs.pin_dir()).expect("load");
    let (old, old_addr) = listener();
    let (_new, new_addr) = listener();
    let service = service();
    kernel
        .set_leader(service, old_addr, 1, far(), true)
        .unwrap();
    let (mut early, early_conn) = steered_pair(&cgroup, service, &old);
    // Records of no live socket fill the map up (as 65 536 live steered sockets would).
    let record = kernel.steered()[0].1;
    let mut fake = 1u64 << 62;
    while kernel.record_steered(fake, record).is_ok() {
        fake += 1;
    }
    // Full: a new connect is not steered (it reaches the service address, where nothing
    // listens) rather than evict a live socket's record.
    assert_eq!(Talker::spawn(&cgroup, service).line(), "refused");
    assert!(counter(&kernel, counters::UNRECORDED) >= 1);
    // One slot free again: steered and recorded.
    assert!(kernel.forget_steered(fake - 1));
    let (mut late, late_conn) = steered_pair(&cgroup, service, &old);
    // A new leadership: both live sockets are found by their records and send nothing more.
    kernel
        .set_leader(service, new_addr, 2, far(), true)
        .unwrap();
    let steered: Vec<u64> = kernel
        .steered()
        .into_iter()
        .filter(|(c, _)| *c < 1 << 62)
        .map(|(c, _)| c)
        .collect();
    assert_eq!(steered.len(), 2, "a live steered socket lost its record");
    early.say("after");
    late.say("after");
    assert_eq!(received(&early_conn, Duration::from_secs(1)), "");
    assert_eq!(received(&late_conn, Duration::from_secs(1)), "");
    Kernel::uninstall(&fs.pin_dir()).unwrap();
}
