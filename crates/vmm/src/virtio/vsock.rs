//! virtio-vsock with its host side on Unix sockets, the "hybrid" scheme of Firecracker: the
//! VMM listens on a socket PATH; a host program connects to it and writes `CONNECT <port>\n`
//! to reach the guest's vsock port (the VMM answers `OK <host port>\n` once the guest accepts,
//! or closes the connection); a guest connection to the host (CID 2) port P is made to the Unix
//! socket `PATH_P`. Stream sockets only, with the virtio-vsock credit flow control.
//!
//! The VMM keeps an epoll set of its own for these sockets and gives the device loop that one
//! descriptor, so connections come and go without the loop knowing. The socket is removed when
//! the VMM ends; if it dies without doing so (SIGKILL, a seccomp kill, a crash), a reaper
//! process forked at start removes it.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::num::Wrapping;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::{Device, Fault, F_VERSION_1};

const HOST_CID: u64 = 2;
const HDR: usize = 44;
const TYPE_STREAM: u16 = 1;
const OP_REQUEST: u16 = 1;
const OP_RESPONSE: u16 = 2;
const OP_RST: u16 = 3;
const OP_SHUTDOWN: u16 = 4;
const OP_RW: u16 = 5;
const OP_CREDIT_UPDATE: u16 = 6;
const OP_CREDIT_REQUEST: u16 = 7;
const SHUTDOWN_SEND: u32 = 2;
/// What each connection may have in flight from the guest to the host program.
const BUF_ALLOC: u32 = 256 * 1024;
/// The largest payload of one packet either way.
const MAX_PAYLOAD: usize = 64 * 1024;
const RX: usize = 0;
const TX: usize = 1;
/// Ports the VMM gives host-initiated connections.
const FIRST_HOST_PORT: u32 = 1 << 30;

/// Why a vsock device cannot be given to the VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--vsock`'s text is not `CID,uds=PATH`.
    #[error("{0}")]
    Spec(String),
    #[error("vsock {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("vsock {}: {msg}", .path.display())]
    Invalid { path: PathBuf, msg: &'static str },
}

fn io_err(p: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: p.to_path_buf(),
        source,
    }
}

/// How a vsock device is given to the VM (`--vsock CID,uds=PATH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockSpec {
    pub cid: u64,
    pub uds: PathBuf,
}

impl std::str::FromStr for VsockSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::Spec(format!("vsock: {s:?} is not CID,uds=PATH (CID 3 or more)"));
        let (cid, rest) = s.split_once(',').ok_or_else(bad)?;
        let cid: u64 = cid
            .parse()
            .ok()
            .filter(|c| *c >= 3 && *c < u64::from(u32::MAX))
            .ok_or_else(bad)?;
        let uds = rest
            .strip_prefix("uds=")
            .filter(|p| !p.is_empty())
            .ok_or_else(bad)?;
        Ok(VsockSpec {
            cid,
            uds: uds.into(),
        })
    }
}

/// As `--vsock` takes it.
impl std::fmt::Display for VsockSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},uds={}", self.cid, self.uds.display())
    }
}

/// A packet header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Hdr {
    src_cid: u64,
    dst_cid: u64,
    src_port: u32,
    dst_port: u32,
    len: u32,
    kind: u16,
    op: u16,
    flags: u32,
    buf_alloc: u32,
    fwd_cnt: u32,
}

impl Hdr {
    fn parse(b: &[u8; HDR]) -> Hdr {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        let u16_at = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().unwrap_or_default());
        Hdr {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            kind: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }
    fn bytes(&self) -> [u8; HDR] {
        let mut b = [0u8; HDR];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.kind.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Host-initiated, waiting for the guest's RESPONSE.
    Connecting,
    Established,
}

/// One stream: (host port, guest port).
struct Conn {
    stream: UnixStream,
    state: State,
    /// Bytes sent to the guest, and the guest's window.
    rx_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// Bytes from the guest handed to the host program, and what the guest was last told.
    fwd_cnt: Wrapping<u32>,
    told_fwd_cnt: Wrapping<u32>,
    /// Guest bytes the host program has not taken yet.
    out: Vec<u8>,
    /// The host side may have bytes to read (edge-triggered: until a read says EAGAIN).
    readable: bool,
    host_eof: bool,
    /// The guest will send no more: close the host program's input once `out` is handed over.
    shut_write: bool,
    write_closed: bool,
}

impl Conn {
    fn new(stream: UnixStream, state: State) -> Conn {
        Conn {
            stream,
            state,
            rx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            told_fwd_cnt: Wrapping(0),
            out: Vec::new(),
            readable: true,
            host_eof: false,
            shut_write: false,
            write_closed: false,
        }
    }
    fn credit(&self) -> usize {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight) as usize
    }
    /// Hand the host program what it will take. Err: it is gone.
    fn flush(&mut self) -> std::io::Result<()> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    // The "OK <port>" line is ours, not the guest's: only payload counts.
                    self.out.drain(..n);
                    self.fwd_cnt += Wrapping(n as u32);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        if self.shut_write && !self.write_closed {
            // Once: each shutdown wakes the epoll set again.
            self.write_closed = true;
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        Ok(())
    }
}

/// What an fd in the device's epoll set is.
enum Watch {
    Listener,
    /// A host program that has not said CONNECT yet, with what it said so far.
    Handshake(UnixStream, Vec<u8>),
    Conn(u32, u32),
}

/// The virtio vsock device.
pub struct Vsock {
    cid: u64,
    config: [u8; 8],
    uds: PathBuf,
    /// The socket's directory, held open so that the socket can be removed at the end under
    /// the VMM's seccomp filter (unlinkat is allowed on this descriptor only).
    dir: std::fs::File,
    listener: UnixListener,
    epoll: Epoll,
    watch: HashMap<RawFd, Watch>,
    conns: HashMap<(u32, u32), Conn>,
    /// Control packets waiting for guest RX buffers.
    ctl: VecDeque<Hdr>,
    next_port: u32,
    buf: Vec<u8>,
    /// The payload of the packet the guest sent last (its capacity kept).
    tx_buf: Vec<u8>,
    /// Removes the socket if the VMM dies without doing it (SIGKILL, a seccomp kill, a crash).
    reaper: Option<Reaper>,
}

/// A small process forked before the VMM starts its vCPUs: it waits for the end of a pipe
/// whose other end only the VMM holds, and then removes the socket if it is still the one the
/// VMM bound (same inode: a later VMM's socket at the same path is left alone).
struct Reaper {
    pid: libc::pid_t,
    pipe: Option<std::os::fd::OwnedFd>,
}

fn spawn_reaper(path: &Path) -> Result<Reaper, Error> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Invalid {
        path: path.to_path_buf(),
        msg: "a NUL in the path",
    })?;
    // SAFETY: stat(2) into a zeroed local struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a live stat buffer.
    if unsafe { libc::stat(c.as_ptr(), &mut st) } < 0 {
        return Err(io_err(path)(std::io::Error::last_os_error()));
    }
    let (ino, dev) = (st.st_ino, st.st_dev);
    let mut fds = [0; 2];
    // SAFETY: pipe2 into a two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io_err(path)(std::io::Error::last_os_error()));
    }
    // SAFETY: the child only makes async-signal-safe calls (signal, dup2, close_range, read,
    // stat, unlink) on data prepared before the fork, then _exits.
    match unsafe { libc::fork() } {
        -1 => {
            let e = std::io::Error::last_os_error();
            // SAFETY: closing the pipe we just made.
            unsafe {
                libc::close(fds[0]);
                libc::close(fds[1]);
            }
            Err(io_err(path)(e))
        }
        // SAFETY: in the forked child: async-signal-safe calls only (see above).
        0 => unsafe {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            libc::dup2(fds[0], 0);
            // Nothing of the VMM's stays open here: not the pipe's write end, not its VM.
            libc::syscall(libc::SYS_close_range, 1u32, u32::MAX, 0u32);
            let mut b = 0u8;
            loop {
                let n = libc::read(0, (&mut b as *mut u8).cast(), 1);
                if n == 0 || (n < 0 && *libc::__errno_location() != libc::EINTR) {
                    break;
                }
            }
            let mut now: libc::stat = std::mem::zeroed();
            if libc::stat(c.as_ptr(), &mut now) == 0 && now.st_ino == ino && now.st_dev == dev {
                libc::unlink(c.as_ptr());
            }
            libc::_exit(0)
        },
        pid => {
            // SAFETY: the read end is the child's now; the write end is ours alone.
            unsafe { libc::close(fds[0]) };
            Ok(Reaper {
                pid,
                // SAFETY: a descriptor pipe2 gave us and nobody else owns.
                pipe: Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fds[1]) }),
            })
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // Closing our end wakes the reaper, which finds the socket gone and exits.
        self.pipe.take();
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), 0) };
    }
}

impl Vsock {
    /// Listen on the spec's socket. A stale socket (nobody listening) is replaced; one in use
    /// is an error.
    pub fn new(spec: &VsockSpec) -> Result<Vsock, Error> {
        let p = &spec.uds;
        let invalid = |msg| Error::Invalid {
            path: p.clone(),
            msg,
        };
        if p.exists() {
            if UnixStream::connect(p).is_ok() {
                return Err(invalid("in use by another VMM"));
            }
            std::fs::remove_file(p).map_err(io_err(p))?;
        }
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let dir = std::fs::File::open(parent).map_err(io_err(p))?;
        if p.file_name().is_none() {
            return Err(invalid("not a socket path"));
        }
        let listener = UnixListener::bind(p).map_err(io_err(p))?;
        let cleanup = |e: Error| {
            let _ = std::fs::remove_file(p);
            e
        };
        listener
            .set_nonblocking(true)
            .map_err(|e| cleanup(io_err(p)(e)))?;
        let epoll = Epoll::new().map_err(|e| cleanup(io_err(p)(e)))?;
        let reaper = spawn_reaper(p).map_err(cleanup)?;
        let mut v = Vsock {
            cid: spec.cid,
            config: spec.cid.to_le_bytes(),
            uds: p.clone(),
            dir,
            listener,
            epoll,
            watch: HashMap::new(),
            conns: HashMap::new(),
            ctl: VecDeque::new(),
            next_port: FIRST_HOST_PORT,
            buf: vec![0; MAX_PAYLOAD],
            tx_buf: Vec::new(),
            reaper: Some(reaper),
        };
        let fd = v.listener.as_raw_fd();
        v.add_watch(fd, Watch::Listener).map_err(cleanup)?;
        Ok(v)
    }

    fn add_watch(&mut self, fd: RawFd, w: Watch) -> Result<(), Error> {
        self.epoll
            .ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(
                    EventSet::IN
                        | EventSet::OUT
                        | EventSet::READ_HANG_UP
                        | EventSet::EDGE_TRIGGERED,
                    fd as u64,
                ),
            )
            .map_err(io_err(&self.uds))?;
        self.watch.insert(fd, w);
        Ok(())
    }

    fn drop_watch(&mut self, fd: RawFd) {
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        self.watch.remove(&fd);
    }

    fn hdr(&self, local: u32, peer: u32, op: u16) -> Hdr {
        let fwd = self.conns.get(&(local, peer)).map_or(0, |c| c.fwd_cnt.0);
        Hdr {
            src_cid: HOST_CID,
            dst_cid: self.cid,
            src_port: local,
            dst_port: peer,
            kind: TYPE_STREAM,
            op,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: fwd,
            ..Hdr::default()
        }
    }

    fn reset(&mut self, local: u32, peer: u32) {
        if let Some(c) = self.conns.remove(&(local, peer)) {
            self.drop_watch(c.stream.as_raw_fd());
        }
        let h = self.hdr(local, peer, OP_RST);
        self.ctl.push_back(h);
    }

    /// The device's own sockets are ready: accept, read handshakes, note readable streams.
    fn host_events(&mut self) {
        let mut evs = [EpollEvent::default(); 32];
        loop {
            let n = match self.epoll.wait(0, &mut evs) {
                Ok(n) if n > 0 => n,
                _ => return,
            };
            for ev in &evs[..n] {
                let fd = ev.data() as RawFd;
                let conn = match self.watch.get(&fd) {
                    Some(Watch::Listener) => {
                        self.accept();
                        continue;
                    }
                    Some(Watch::Handshake(..)) => {
                        self.handshake(fd);
                        continue;
                    }
                    Some(Watch::Conn(l, p)) => (*l, *p),
                    None => continue,
                };
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.readable = true;
                    if c.flush().is_err() {
                        self.reset(conn.0, conn.1);
                    }
                }
            }
        }
    }

    fn accept(&mut self) {
        while let Ok((s, _)) = self.listener.accept() {
            if s.set_nonblocking(true).is_err() {
                continue;
            }
            let fd = s.as_raw_fd();
            let _ = self.add_watch(fd, Watch::Handshake(s, Vec::new()));
        }
    }

    /// A host program's first line: `CONNECT <port>`. Anything else closes it.
    fn handshake(&mut self, fd: RawFd) {
        let Some(Watch::Handshake(s, line)) = self.watch.get_mut(&fd) else {
            return;
        };
        let mut b = [0u8; 64];
        let done = loop {
            match s.read(&mut b) {
                Ok(0) => break Err(()),
                Ok(n) => {
                    line.extend_from_slice(&b[..n]);
                    if line.contains(&b'\n') {
                        break Ok(());
                    }
                    if line.len() > 64 {
                        break Err(());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => break Err(()),
            }
        };
        let Some(Watch::Handshake(s, line)) = self.watch.remove(&fd) else {
            return;
        };
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        let port = std::str::from_utf8(&line)
            .ok()
            .and_then(|l| l.split('\n').next())
            .and_then(|l| l.strip_prefix("CONNECT "))
            .and_then(|p| p.trim().parse::<u32>().ok());
        let (Ok(()), Some(peer)) = (done, port) else {
            return; // dropped: the program sees the connection close
        };
        let local = self.next_port;
        self.next_port = self.next_port.wrapping_add(1).max(FIRST_HOST_PORT);
        if self.add_watch(fd, Watch::Conn(local, peer)).is_err() {
            return;
        }
        let mut c = Conn::new(s, State::Connecting);
        // Anything the program sent after its CONNECT line waits for the connection.
        c.readable = true;
        self.conns.insert((local, peer), c);
        let h = self.hdr(local, peer, OP_REQUEST);
        self.ctl.push_back(h);
    }

    /// One packet from the guest.
    fn on_packet(&mut self, h: Hdr, payload: &[u8]) -> Result<(), Fault> {
        if h.src_cid != self.cid || h.dst_cid != HOST_CID {
            // Not from this guest or not for the host: not ours to answer. Dropped.
            return Ok(());
        }
        let key = (h.dst_port, h.src_port);
        if h.kind != TYPE_STREAM {
            self.reset(key.0, key.1);
            return Ok(());
        }
        if h.op == OP_REQUEST {
            if self.conns.contains_key(&key) {
                self.reset(key.0, key.1);
                return Ok(());
            }
            let path = PathBuf::from(format!("{}_{}", self.uds.display(), h.dst_port));
            match UnixStream::connect(&path).and_then(|s| s.set_nonblocking(true).map(|_| s)) {
                Ok(s) => {
                    let fd = s.as_raw_fd();
                    let mut c = Conn::new(s, State::Established);
                    c.peer_buf_alloc = h.buf_alloc;
                    c.peer_fwd_cnt = Wrapping(h.fwd_cnt);
                    self.conns.insert(key, c);
                    if self.add_watch(fd, Watch::Conn(key.0, key.1)).is_err() {
                        self.reset(key.0, key.1);
                        return Ok(());
                    }
                    let r = self.hdr(key.0, key.1, OP_RESPONSE);
                    self.ctl.push_back(r);
                }
                Err(_) => {
                    let r = self.hdr(key.0, key.1, OP_RST);
                    self.ctl.push_back(r);
                }
            }
            return Ok(());
        }
        let Some(c) = self.conns.get_mut(&key) else {
            if h.op != OP_RST {
                let r = self.hdr(key.0, key.1, OP_RST);
                self.ctl.push_back(r);
            }
            return Ok(());
        };
        c.peer_buf_alloc = h.buf_alloc;
        c.peer_fwd_cnt = Wrapping(h.fwd_cnt);
        match h.op {
            OP_RESPONSE if c.state == State::Connecting => {
                c.state = State::Established;
                let line = format!("OK {}\n", key.0);
                // The line is not guest payload: written ahead, not counted as forwarded.
                let _ = c.stream.write_all(line.as_bytes());
            }
            OP_RW if c.state == State::Established => {
                if c.out.len() + payload.len() > BUF_ALLOC as usize {
                    // The guest ignored the credit it was given.
                    self.reset(key.0, key.1);
                    return Ok(());
                }
                c.out.extend_from_slice(payload);
                if c.flush().is_err() {
                    self.reset(key.0, key.1);
                    return Ok(());
                }
                if (c.fwd_cnt - c.told_fwd_cnt).0 >= BUF_ALLOC / 4 {
                    c.told_fwd_cnt = c.fwd_cnt;
                    let u = self.hdr(key.0, key.1, OP_CREDIT_UPDATE);
                    self.ctl.push_back(u);
                }
            }
            OP_SHUTDOWN => {
                if h.flags & SHUTDOWN_SEND != 0 {
                    c.shut_write = true;
                    if c.flush().is_err() || c.host_eof {
                        self.reset(key.0, key.1);
                    }
                }
            }
            OP_RST => {
                if let Some(c) = self.conns.remove(&key) {
                    self.drop_watch(c.stream.as_raw_fd());
                }
            }
            OP_CREDIT_UPDATE => {}
            OP_CREDIT_REQUEST => {
                c.told_fwd_cnt = c.fwd_cnt;
                let u = self.hdr(key.0, key.1, OP_CREDIT_UPDATE);
                self.ctl.push_back(u);
            }
            _ => self.reset(key.0, key.1),
        }
        Ok(())
    }

    /// The next packet for the guest: a control packet, else data (or an end) from a host
    /// program that the guest has room for. At most `room` payload bytes.
    fn next_for_guest(&mut self, room: usize) -> Option<(Hdr, usize)> {
        if let Some(h) = self.ctl.pop_front() {
            return Some((h, 0));
        }
        let keys: Vec<(u32, u32)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.state == State::Established && c.readable && !c.host_eof)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let Some(c) = self.conns.get_mut(&key) else {
                continue;
            };
            let want = c.credit().min(room).min(MAX_PAYLOAD);
            if want == 0 {
                continue;
            }
            match c.stream.read(&mut self.buf[..want]) {
                Ok(0) => {
                    c.host_eof = true;
                    let mut h = self.hdr(key.0, key.1, OP_SHUTDOWN);
                    h.flags = 3;
                    return Some((h, 0));
                }
                Ok(n) => {
                    c.rx_cnt += Wrapping(n as u32);
                    let mut h = self.hdr(key.0, key.1, OP_RW);
                    h.len = n as u32;
                    return Some((h, n));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => c.readable = false,
                Err(_) => {
                    self.reset(key.0, key.1);
                    return self.ctl.pop_front().map(|h| (h, 0));
                }
            }
        }
        None
    }

    /// Fill the guest's RX buffers. Returns whether any was used.
    fn fill_rx(&mut self, q: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, Fault> {
        let mut used = false;
        loop {
            let Some(chain) = q
                .iter(mem)
                .map_err(|e| Fault(format!("vsock: rx ring: {e}")))?
                .next()
            else {
                return Ok(used);
            };
            let head = chain.head_index();
            let mut w = chain
                .writer(mem)
                .map_err(|e| Fault(format!("vsock: rx buffers: {e}")))?;
            let room = w.available_bytes();
            if room < HDR {
                return Err(Fault(format!("vsock: an rx buffer of {room} bytes")));
            }
            let Some((h, n)) = self.next_for_guest(room - HDR) else {
                q.go_to_previous_position();
                return Ok(used);
            };
            w.write_all(&h.bytes())
                .and_then(|_| w.write_all(&self.buf[..n]))
                .map_err(|e| Fault(format!("vsock: rx buffers: {e}")))?;
            q.add_used(mem, head, (HDR + n) as u32)
                .map_err(|e| Fault(format!("vsock: rx used ring: {e}")))?;
            used = true;
        }
    }

    fn take_tx(&mut self, q: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, Fault> {
        // One payload buffer for every packet (taken out so that `on_packet` may borrow self).
        let mut payload = std::mem::take(&mut self.tx_buf);
        let r = super::drain(q, mem, "vsock tx", |chain| {
            let mut r = chain
                .reader(mem)
                .map_err(|e| Fault(format!("vsock: tx buffers: {e}")))?;
            let mut hb = [0u8; HDR];
            r.read_exact(&mut hb)
                .map_err(|_| Fault("vsock: a tx packet shorter than its header".into()))?;
            let h = Hdr::parse(&hb);
            let len = h.len as usize;
            if len > MAX_PAYLOAD || len > r.available_bytes() {
                return Err(Fault(format!("vsock: a tx packet claims {len} bytes")));
            }
            payload.resize(len, 0);
            r.read_exact(&mut payload)
                .map_err(|e| Fault(format!("vsock: tx buffers: {e}")))?;
            self.on_packet(h, &payload)?;
            Ok(0)
        });
        self.tx_buf = payload;
        r
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        use std::os::unix::ffi::OsStrExt;
        let Some(name) = self.uds.file_name() else {
            return;
        };
        let Ok(name) = std::ffi::CString::new(name.as_bytes()) else {
            return;
        };
        // SAFETY: unlinkat with a directory descriptor we own and a NUL-terminated name.
        unsafe { libc::unlinkat(self.dir.as_raw_fd(), name.as_ptr(), 0) };
        self.reaper.take();
    }
}

impl Device for Vsock {
    fn device_type(&self) -> u32 {
        19
    }
    fn features(&self) -> u64 {
        F_VERSION_1
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[256, 256, 16]
    }
    fn config(&self) -> &[u8] {
        &self.config
    }
    fn process(
        &mut self,
        q: usize,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, Fault> {
        let mut used = false;
        if q == TX {
            used |= self.take_tx(&mut queues[TX], mem)?;
        }
        if queues[RX].ready() {
            used |= self.fill_rx(&mut queues[RX], mem)?;
        }
        Ok(used)
    }
    fn reset(&mut self) {
        // The driver is gone: so are its connections.
        let fds: Vec<RawFd> = self.conns.values().map(|c| c.stream.as_raw_fd()).collect();
        for fd in fds {
            self.drop_watch(fd);
        }
        self.conns.clear();
        self.ctl.clear();
    }
    fn fd(&self) -> Option<RawFd> {
        Some(self.epoll.as_raw_fd())
    }
    fn unlink_dir(&self) -> Option<RawFd> {
        Some(self.dir.as_raw_fd())
    }
    fn event(&mut self, queues: &mut [Queue], mem: &GuestMemoryMmap) -> Result<bool, Fault> {
        self.host_events();
        Ok(queues[RX].ready() && self.fill_rx(&mut queues[RX], mem)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_headers_round_trip() {
        let v: VsockSpec = "3,uds=/tmp/v.sock".parse().unwrap();
        assert_eq!((v.cid, v.uds.to_str().unwrap()), (3, "/tmp/v.sock"));
        assert_eq!(v.to_string(), "3,uds=/tmp/v.sock");
        for bad in ["", "3", "2,uds=/x", "x,uds=/x", "3,uds=", "3,path=/x"] {
            assert!(bad.parse::<VsockSpec>().is_err(), "{bad}");
        }
        let h = Hdr {
            src_cid: 3,
            dst_cid: 2,
            src_port: 1024,
            dst_port: 5000,
            len: 7,
            kind: 1,
            op: OP_RW,
            flags: 0,
            buf_alloc: 4096,
            fwd_cnt: 12,
        };
        assert_eq!(Hdr::parse(&h.bytes()), h);
    }

    use crate::virtio::mmio::Transport;
    use std::io::{Read, Write};
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::EventFd;

    const QSIZE: u16 = 16;
    const BUF: u64 = 0x4000;

    /// A minimal guest driver: RX and TX queues in a small guest memory, polled.
    struct Driver {
        mem: GuestMemoryMmap,
        t: Transport,
        avail: [u16; 2],
        used_seen: [u16; 2],
    }

    fn qbase(q: u64) -> u64 {
        0x10000 * (q + 1)
    }

    impl Driver {
        fn new(dev: Vsock) -> Driver {
            let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
            let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
            let mut t = Transport::new(Box::new(dev), irq).unwrap();
            let mut w = |reg: u64, v: u32| {
                t.write(reg, &v.to_le_bytes());
            };
            for (reg, v) in crate::virtio::mmio::NEGOTIATE_VERSION_1 {
                w(reg, v);
            }
            for q in 0..3u32 {
                let b = qbase(u64::from(q)) as u32;
                for (reg, v) in [
                    (0x30, q),
                    (0x38, u32::from(QSIZE)),
                    (0x80, b),
                    (0x90, b + 0x1000),
                    (0xa0, b + 0x2000),
                    (0x44, 1),
                ] {
                    w(reg, v);
                }
            }
            w(0x70, 0xf);
            Driver {
                mem,
                t,
                avail: [0; 2],
                used_seen: [0; 2],
            }
        }

        /// Put a one-descriptor chain on queue `q` (descriptor = ring slot).
        fn offer(&mut self, q: usize, addr: u64, len: u32, writable: bool) {
            let b = qbase(q as u64);
            let slot = u64::from(self.avail[q] % QSIZE);
            let d = GuestAddress(b + 16 * slot);
            self.mem.write_obj(addr, d).unwrap();
            self.mem
                .write_obj(len, GuestAddress(b + 16 * slot + 8))
                .unwrap();
            self.mem
                .write_obj(
                    if writable { 2u16 } else { 0 },
                    GuestAddress(b + 16 * slot + 12),
                )
                .unwrap();
            self.mem
                .write_obj(slot as u16, GuestAddress(b + 0x1000 + 4 + 2 * slot))
                .unwrap();
            self.avail[q] = self.avail[q].wrapping_add(1);
            self.mem
                .write_obj(self.avail[q], GuestAddress(b + 0x1002))
                .unwrap();
        }

        /// Give the device RX buffers (4 KiB each, one per slot).
        fn give_rx(&mut self, n: u16) {
            for _ in 0..n {
                let slot = u64::from(self.avail[RX] % QSIZE);
                self.offer(RX, 0x80000 + slot * BUF, BUF as u32, true);
            }
            self.t.notify(RX, &self.mem);
        }

        /// The guest sends one packet.
        fn send(&mut self, h: Hdr, payload: &[u8]) {
            let slot = u64::from(self.avail[TX] % QSIZE);
            let at = 0xc0000 + slot * BUF;
            let mut bytes = h.bytes().to_vec();
            bytes.extend_from_slice(payload);
            self.mem.write_slice(&bytes, GuestAddress(at)).unwrap();
            self.offer(TX, at, bytes.len() as u32, false);
            self.t.notify(TX, &self.mem);
        }

        /// Packets the device put in RX buffers since the last look.
        fn received(&mut self) -> Vec<(Hdr, Vec<u8>)> {
            let b = qbase(RX as u64);
            let idx: u16 = self.mem.read_obj(GuestAddress(b + 0x2002)).unwrap();
            let mut out = Vec::new();
            while self.used_seen[RX] != idx {
                let e = u64::from(self.used_seen[RX] % QSIZE);
                let id: u32 = self.mem.read_obj(GuestAddress(b + 0x2004 + 8 * e)).unwrap();
                let len: u32 = self.mem.read_obj(GuestAddress(b + 0x2008 + 8 * e)).unwrap();
                let mut buf = vec![0u8; len as usize];
                self.mem
                    .read_slice(&mut buf, GuestAddress(0x80000 + u64::from(id) * BUF))
                    .unwrap();
                let h = Hdr::parse(buf[..HDR].try_into().unwrap());
                out.push((h, buf[HDR..].to_vec()));
                self.used_seen[RX] = self.used_seen[RX].wrapping_add(1);
            }
            out
        }

        /// Let the device see its host sockets (what the VMM's loop does on an event).
        fn poll_host(&mut self) {
            for _ in 0..50 {
                self.t.event(&self.mem);
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
    }

    fn guest(op: u16, src_port: u32, dst_port: u32, buf_alloc: u32) -> Hdr {
        Hdr {
            src_cid: 3,
            dst_cid: 2,
            src_port,
            dst_port,
            kind: TYPE_STREAM,
            op,
            buf_alloc,
            ..Hdr::default()
        }
    }

    /// Both directions of the hybrid scheme against real Unix sockets, driven like a guest
    /// driver would: connect out (RESPONSE), data both ways, a refused port (RST), a host
    /// program's CONNECT (REQUEST to the guest, then OK to the program), and the guest's
    /// credit respected.
    #[test]
    fn the_hybrid_protocol_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let host = std::os::unix::net::UnixListener::bind(dir.path().join("v.sock_5000")).unwrap();
        let dev = Vsock::new(&VsockSpec {
            cid: 3,
            uds: uds.clone(),
        })
        .unwrap();
        let mut d = Driver::new(dev);
        d.give_rx(8);
        // Guest → host port 5000.
        d.send(guest(OP_REQUEST, 1000, 5000, 4096), &[]);
        let got = d.received();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            (got[0].0.op, got[0].0.src_port, got[0].0.dst_port),
            (OP_RESPONSE, 5000, 1000)
        );
        let (mut conn, _) = host.accept().unwrap();
        d.send(guest(OP_RW, 1000, 5000, 4096).with_len(5), b"hello");
        let mut b = [0u8; 5];
        conn.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hello");
        conn.write_all(b"world").unwrap();
        d.poll_host();
        let got = d.received();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].0.op, got[0].1.as_slice()), (OP_RW, &b"world"[..]));
        // The guest's window: 9 bytes, 5 of them not yet consumed: only 4 of the next 10 come.
        d.send(guest(OP_CREDIT_UPDATE, 1000, 5000, 9), &[]);
        conn.write_all(b"0123456789").unwrap();
        d.poll_host();
        let got = d.received();
        assert_eq!(got.iter().map(|p| p.1.len()).sum::<usize>(), 4, "{got:?}");
        // No listener on host port 6000: refused.
        d.send(guest(OP_REQUEST, 1001, 6000, 4096), &[]);
        let got = d.received();
        assert_eq!((got.len(), got[0].0.op), (1, OP_RST), "{got:?}");
        // A host program asks for guest port 7.
        let mut prog = std::os::unix::net::UnixStream::connect(&uds).unwrap();
        prog.write_all(b"CONNECT 7\n").unwrap();
        d.poll_host();
        let got = d.received();
        assert_eq!(
            (got.len(), got[0].0.op, got[0].0.dst_port),
            (1, OP_REQUEST, 7),
            "{got:?}"
        );
        let local = got[0].0.src_port;
        d.send(guest(OP_RESPONSE, 7, local, 4096), &[]);
        let mut line = [0u8; 14];
        prog.read_exact(&mut line).unwrap();
        assert_eq!(std::str::from_utf8(&line).unwrap(), format!("OK {local}\n"));
        // A garbage handshake is closed, nothing sent to the guest.
        let mut bad = std::os::unix::net::UnixStream::connect(&uds).unwrap();
        bad.write_all(b"HELLO\n").unwrap();
        d.poll_host();
        assert!(d.received().is_empty());
        let mut rest = Vec::new();
        assert_eq!(bad.read_to_end(&mut rest).unwrap(), 0);
        drop(d);
        assert!(!uds.exists(), "the socket outlived the device");
    }

    impl Hdr {
        fn with_len(mut self, n: u32) -> Hdr {
            self.len = n;
            self
        }
    }
}
