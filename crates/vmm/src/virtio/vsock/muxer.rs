//! The host side of the device: the VMM's listening socket, the host programs' sockets (in
//! an epoll set of its own), and the protocol with the guest (requests, responses, resets,
//! credit) for every connection.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::num::Wrapping;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::conn::{Conn, State};
use super::packet::*;
use super::{io_err, Error, BUF_ALLOC, FIRST_HOST_PORT, HOST_CID, MAX_PAYLOAD};
use crate::virtio::Fault;

/// What an fd in the device's epoll set is.
enum Watch {
    Listener,
    /// A host program that has not said CONNECT yet, with what it said so far.
    Handshake(UnixStream, Vec<u8>),
    Conn(u32, u32),
}

/// The host side of one vsock device.
pub(super) struct Muxer {
    cid: u64,
    uds: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    watch: HashMap<RawFd, Watch>,
    conns: HashMap<(u32, u32), Conn>,
    /// Control packets waiting for guest RX buffers.
    ctl: VecDeque<Hdr>,
    next_port: u32,
    /// The payload of the packet [`Muxer::next_for_guest`] gave last.
    pub buf: Vec<u8>,
}

impl Muxer {
    /// The host side of guest `cid`, listening on `listener` (bound at `uds`).
    pub fn new(cid: u64, uds: &Path, listener: UnixListener) -> Result<Muxer, Error> {
        let epoll = Epoll::new().map_err(io_err(uds))?;
        let mut m = Muxer {
            cid,
            uds: uds.to_path_buf(),
            listener,
            epoll,
            watch: HashMap::new(),
            conns: HashMap::new(),
            ctl: VecDeque::new(),
            next_port: FIRST_HOST_PORT,
            buf: vec![0; MAX_PAYLOAD],
        };
        let fd = m.listener.as_raw_fd();
        m.add_watch(fd, Watch::Listener)?;
        Ok(m)
    }

    /// The epoll set of the host side's sockets (the VMM's loop waits on it).
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// The driver is gone: so are its connections.
    pub fn reset_all(&mut self) {
        let fds: Vec<RawFd> = self.conns.values().map(|c| c.stream.as_raw_fd()).collect();
        for fd in fds {
            self.drop_watch(fd);
        }
        self.conns.clear();
        self.ctl.clear();
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
    pub fn host_events(&mut self) {
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
    pub fn on_packet(&mut self, h: Hdr, payload: &[u8]) -> Result<(), Fault> {
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
    pub fn next_for_guest(&mut self, room: usize) -> Option<(Hdr, usize)> {
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
}
