//! The kernel path against the real kernel (root only). Each test attaches to a child cgroup of
//! its own (`ChildCgroup`) and pins into a private bpffs mount, both removed on drop, also when
//! the test fails: unmounting drops every pin, removing the cgroup detaches every program.
//! Clients that must be steered run inside the cgroup; all traffic is on loopback.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use harp_common::counters;
use harp_tests::cgroup::ChildCgroup;
use harp_tests::{free_port, require_root};

use super::{Kernel, KernelError};

mod deadline;

const TIMEOUT: Duration = Duration::from_secs(10);

/// An entry deadline no test reaches.
fn far() -> u64 {
    crate::steering::boot_ns(Instant::now() + Duration::from_secs(600))
}

/// A client run inside the cgroup: connects to 127.0.0.1:<argv[1]>, prints what it sees, sends
/// a line and waits for the server's answer (so the test can look at the live connection).
const CLIENT: &str = r#"
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
host, port = s.getpeername()
print(f"peer {host}:{port} cookie {cookie}", flush=True)
s.sendall(b"hello from the cgroup\n")
s.recv(16)
"#;

/// A private bpffs mount for one test's pins, unmounted on drop (which frees all of them).
struct Bpffs {
    mount: PathBuf,
}

impl Bpffs {
    fn new() -> Bpffs {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mount =
            std::env::temp_dir().join(format!("harp-test-bpffs-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&mount).expect("create bpffs mount point");
        nix::mount::mount(
            Some("bpf"),
            &mount,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("mount bpffs on {}: {e}", mount.display()));
        Bpffs { mount }
    }

    /// Not created yet: `Kernel::load` creates it.
    fn pin_dir(&self) -> PathBuf {
        self.mount.join("harp").join("test")
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.mount, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("umount {}: {e}", self.mount.display());
        }
        let _ = std::fs::remove_dir(&self.mount);
    }
}

struct Client {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Client {
    /// Runs [`CLIENT`] inside `cgroup` against 127.0.0.1:`port`.
    fn spawn(cgroup: &ChildCgroup, port: u16) -> Client {
        let mut child = cgroup
            .command("python3")
            .args(["-c", CLIENT, &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python3 client");
        let out = BufReader::new(child.stdout.take().expect("piped stdout"));
        Client { child, out }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("read client output");
        assert!(!line.is_empty(), "client exited without output");
        line.trim_end().to_string()
    }

    /// `(peer, cookie)` from the client's `peer <addr> cookie <n>` line.
    fn peer_and_cookie(&mut self) -> (String, u64) {
        let line = self.line();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            ["peer", peer, "cookie", cookie] => (peer.to_string(), cookie.parse().unwrap()),
            _ => panic!("unexpected client output: {line:?}"),
        }
    }

    fn wait_success(mut self) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for client") {
                assert!(status.success(), "client failed: {status}");
                return;
            }
            assert!(Instant::now() < deadline, "client did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn listener() -> (TcpListener, SocketAddrV4) {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    let SocketAddr::V4(addr) = l.local_addr().unwrap() else {
        unreachable!("bound an IPv4 address")
    };
    (l, addr)
}

fn accept(l: &TcpListener) -> TcpStream {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
                return s;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn read_line(s: &TcpStream) -> String {
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("read a line");
    line
}

fn connect_refused(addr: SocketAddrV4) -> bool {
    match TcpStream::connect_timeout(&addr.into(), TIMEOUT) {
        Ok(_) => false,
        Err(e) => {
            assert_eq!(
                e.kind(),
                ErrorKind::ConnectionRefused,
                "connect {addr}: {e}"
            );
            true
        }
    }
}

fn service() -> SocketAddrV4 {
    // Nothing listens there: an unsteered connect is refused.
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_port())
}

fn steered_token(kernel: &Kernel, cookie: u64) -> Option<u64> {
    kernel
        .steered()
        .into_iter()
        .find(|(c, _)| *c == cookie)
        .map(|(_, s)| s.token)
}

/// `bpftool cgroup show` output, if bpftool is installed.
fn bpftool_cgroup_show(cgroup: &Path) -> Option<String> {
    let out = std::process::Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(cgroup)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn connects_from_the_cgroup_go_to_the_leader_and_report_the_service() {
    if !require_root("kernel::connects_from_the_cgroup_go_to_the_leader") {
        return;
    }
    let cgroup = ChildCgroup::new();
    let fs = Bpffs::new();
    let mut kernel = Kernel::load(cgroup.path(), &fs.pin_dir()).expect("load");
    let (backend, backend_addr) = listener();
    let service = service();
    kernel
        .set_leader(service, backend_addr, 42, far(), true)
        .unwrap();
    assert_eq!(kernel.leaders(), vec![(service, backend_addr, 42)]);

    let mut client = Client::spawn(&cgroup, service.port());
    let (peer, cookie) = client.peer_and_cookie();
    assert_eq!(peer, service.to_string(), "getpeername shows the service");
    let conn = accept(&backend);
    assert_eq!(read_line(&conn), "hello from the cgroup\n");
    let recorded = kernel.steered();
    let (_, steered) = recorded
        .iter()
        .find(|(c, _)| *c == cookie)
        .unwrap_or_else(|| panic!("cookie {cookie} not in steered(): {recorded:?}"));
    assert_eq!(steered.token, 42);
    assert_eq!(steered.service(), service);
    assert_eq!(steered.backend(), backend_addr);
    assert!(kernel.forget_steered(cookie));
    assert!(!kernel.forget_steered(cookie));
    (&conn).write_all(b"bye\n").unwrap();
    client.wait_success();
    let c = kernel.counters();
    assert!(c[counters::STEERED as usize] >= 1, "{c:?}");
    assert!(c[counters::PEERNAME as usize] >= 1, "{c:?}");

    // Outside the cgroup nothing is steered: nothing listens on the service port.
    assert!(connect_refused(service));

    // A steered socket's record lives exactly as long as the socket.
    let mut client = Client::spawn(&cgroup, service.port());
    let (_, cookie) = client.peer_and_cookie();
    let conn = accept(&backend);
    assert_eq!(read_line(&conn), "hello from the cgroup\n");
    assert_eq!(steered_token(&kernel, cookie), Some(42));
    (&conn).write_all(b"bye\n").unwrap();
    client.wait_success();
    assert_eq!(
        steered_token(&kernel, cookie),
        None,
        "the record outlived its socket"
    );

    // Without an entry, connects from the cgroup go where they asked to.
    kernel.clear_leader(service).unwrap();
    kernel.clear_leader(service).unwrap();
    let mut client = Client::spawn(&cgroup, service.port());
    assert_eq!(client.line(), "refused");
    client.wait_success();
    Kernel::uninstall(&fs.pin_dir()).unwrap();
}

#[test]
fn paired_sockets_are_spliced_in_the_kernel() {
    if !require_root("kernel::paired_sockets_are_spliced_in_the_kernel") {
        return;
    }
    let cgroup = ChildCgroup::new();
    let fs = Bpffs::new();
    let mut kernel = Kernel::load(cgroup.path(), &fs.pin_dir()).expect("load");
    // client → proxy (socket a) ... proxy (socket b) → server
    let (proxy, proxy_addr) = listener();
    let (server, server_addr) = listener();
    let mut client = TcpStream::connect(proxy_addr).unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut a = accept(&proxy);
    let b = TcpStream::connect(server_addr).unwrap();
    let mut srv = accept(&server);
    let before = kernel.counters();
    let service = service();
    kernel
        .set_leader(service, server_addr, 5, far(), true)
        .unwrap();

    kernel.pair(&a, &b, service, 5).unwrap();
    client.write_all(b"ping\n").unwrap();
    let mut buf = [0; 5];
    srv.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping\n");
    srv.write_all(b"pong\n").unwrap();
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong\n");
    let after = kernel.counters();
    let spliced = counters::SPLICED as usize;
    assert!(
        after[spliced] >= before[spliced] + 2,
        "{before:?} → {after:?}"
    );
    // The proxy's sockets saw nothing in userspace.
    a.set_nonblocking(true).unwrap();
    assert_eq!(a.read(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
    a.set_nonblocking(false).unwrap();

    // The leadership the session was made under is replaced: the client's bytes go up to the
    // relay (which checks its own authority) instead of on to the old server.
    kernel
        .set_leader(service, server_addr, 6, far(), true)
        .unwrap();
    client.write_all(b"held\n").unwrap();
    a.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"held\n");
    srv.set_nonblocking(true).unwrap();
    assert_eq!(
        srv.read(&mut buf).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    srv.set_nonblocking(false).unwrap();
    assert!(kernel.counters()[counters::SPLICE_HELD as usize] >= 1);

    // Unpaired, data goes to userspace again.
    kernel.unpair(&a, &b).unwrap();
    kernel.unpair(&a, &b).unwrap();
    client.write_all(b"user\n").unwrap();
    a.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"user\n");
    Kernel::uninstall(&fs.pin_dir()).unwrap();
}

#[test]
fn pins_outlive_the_agent_and_uninstall_removes_them() {
    if !require_root("kernel::pins_outlive_the_agent_and_uninstall_removes_them") {
        return;
    }
    let cgroup = ChildCgroup::new();
    let fs = Bpffs::new();
    let pin_dir = fs.pin_dir();
    let (backend, backend_addr) = listener();
    let service = service();
    {
        let mut kernel = Kernel::load(cgroup.path(), &pin_dir).expect("load");
        kernel
            .set_leader(service, backend_addr, 7, far(), true)
            .unwrap();
    } // The agent is gone: only the pins hold maps and links.

    let mut client = Client::spawn(&cgroup, service.port());
    let (peer, cookie) = client.peer_and_cookie();
    assert_eq!(peer, service.to_string());
    let conn = accept(&backend);
    assert_eq!(read_line(&conn), "hello from the cgroup\n");

    let kernel = Kernel::adopt(&pin_dir).expect("adopt");
    assert_eq!(kernel.leaders(), vec![(service, backend_addr, 7)]);
    assert_eq!(steered_token(&kernel, cookie), Some(7));
    (&conn).write_all(b"bye\n").unwrap();
    client.wait_success();
    assert!(kernel.counters()[counters::STEERED as usize] >= 1);
    assert!(matches!(
        Kernel::load(cgroup.path(), &pin_dir),
        Err(KernelError::AlreadyInstalled { .. })
    ));
    if let Some(shown) = bpftool_cgroup_show(cgroup.path()) {
        assert!(shown.contains("harp_connect4"), "bpftool: {shown}");
    }

    Kernel::uninstall(&pin_dir).unwrap();
    assert!(!pin_dir.exists(), "{} still exists", pin_dir.display());
    // The programs are detached: the leader entry is still in the map `kernel` holds open,
    // yet a connect from the cgroup is no longer steered.
    assert_eq!(kernel.leaders().len(), 1);
    let mut client = Client::spawn(&cgroup, service.port());
    assert_eq!(client.line(), "refused");
    client.wait_success();
    if let Some(shown) = bpftool_cgroup_show(cgroup.path()) {
        assert!(!shown.contains("harp_"), "bpftool: {shown}");
    }
    assert!(matches!(
        Kernel::adopt(&pin_dir),
        Err(KernelError::NotInstalled { .. })
    ));
    Kernel::uninstall(&pin_dir).expect("uninstalling nothing is fine");
}

#[test]
fn load_names_what_is_missing() {
    let missing = Path::new("/sys/fs/cgroup/unified/harp-test-no-such-cgroup");
    let not_cgroup = std::env::temp_dir();
    let pins = Path::new("/sys/fs/bpf/harp-test-never-created");
    if cfg!(not(harp_ebpf)) {
        let e = Kernel::load(missing, pins).err().expect("not built");
        assert!(matches!(e, KernelError::NotBuilt));
        assert_eq!(
            e.to_string(),
            "this harp-agent was built without its kernel programs: run `cargo xtask \
             build-ebpf` and rebuild"
        );
        return;
    }
    let e = Kernel::load(missing, pins).err().expect("missing cgroup");
    assert!(matches!(e, KernelError::CgroupMissing { .. }), "{e}");
    let e = Kernel::load(&not_cgroup, pins).err().expect("not a cgroup");
    assert!(matches!(e, KernelError::NotCgroup2 { .. }), "{e}");
    let e = Kernel::adopt(&not_cgroup.join("harp"))
        .err()
        .expect("no bpffs");
    assert!(matches!(e, KernelError::BpffsNotMounted { .. }), "{e}");
    if !require_root("kernel::load_names_what_is_missing (bpffs)") {
        return;
    }
    let cgroup = ChildCgroup::new();
    let e = Kernel::load(cgroup.path(), &not_cgroup.join("harp"))
        .err()
        .expect("no bpffs");
    assert!(matches!(e, KernelError::BpffsNotMounted { .. }), "{e}");
    assert!(!not_cgroup.join("harp").exists());
}
