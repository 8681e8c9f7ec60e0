//! The device end to end against a minimal driver: specs, headers, and the hybrid protocol
//! both ways.

use super::packet::*;
use super::*;
use vm_memory::GuestMemoryMmap;

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
