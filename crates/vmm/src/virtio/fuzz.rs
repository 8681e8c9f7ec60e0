//! A hostile driver for the queue handling: bytes become guest memory (descriptor tables,
//! rings, request headers), the queues' size and addresses, and a sequence of register writes,
//! queue notifications and host-side events against one of the devices: a copy-on-write
//! virtio block device, virtio-net (a socket pair for its tap), vsock (a fresh socket) or the
//! balloon (frames to drop, reported ranges, statistics; the host sets targets and asks for
//! figures). Whatever the bytes,
//! the VMM must not panic, touch nothing outside guest memory (vm-memory checks every access)
//! or write the shared base; a device given garbage either did its work or failed with
//! DEVICE_NEEDS_RESET. Driven by a proptest (`cargo test -p vmm`) and by the cargo-fuzz
//! target in `fuzz/`.

use std::path::PathBuf;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::block::{Block, Disk, DiskSpec, Mode};
use super::mmio::{Transport, NEEDS_RESET};

/// Guest memory of the harness: 64 KiB, so that many random addresses fall outside it.
pub const MEM: usize = 0x10000;
const DISK: usize = 0x4000;
/// Bytes of an input that set up the queue and drive the device; the rest is guest memory.
pub const HEAD: usize = 8 + 6 * 16;

fn base_pattern() -> Vec<u8> {
    (0..DISK).map(|i| (i * 7 % 251) as u8).collect()
}

/// The shared base image, the same for every run of a process: an unnamed file (it goes
/// with the process), reached through /proc/self/fd.
fn base() -> PathBuf {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    static BASE: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
    let f = BASE.get_or_init(|| {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .open(std::env::temp_dir())
            .expect("creating the fuzz base");
        f.write_all(&base_pattern()).expect("writing the fuzz base");
        f
    });
    PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()))
}

/// Set a device up as a driver would, its queues where the first 8 bytes of `head` say
/// (addresses mostly inside the small memory, so requests get parsed), then poke registers,
/// rewrite memory, notify queues, signal host events and make the host side act (`host`) as
/// the rest says. Panics only when the transport broke a promise.
fn drive(t: &mut Transport, head: &[u8], mem: &GuestMemoryMmap, host: &mut dyn FnMut(u32)) {
    drive_with(t, head, mem, &mut |_, v| host(v));
}

/// `drive`, the host side given the transport as well.
fn drive_with(
    t: &mut Transport,
    head: &[u8],
    mem: &GuestMemoryMmap,
    host: &mut dyn FnMut(&mut Transport, u32),
) {
    let mut h = [0u8; 8];
    h[..head.len().min(8)].copy_from_slice(&head[..head.len().min(8)]);
    let addr = |i: usize| u32::from(u16::from_le_bytes([h[i], h[i + 1]])) % (MEM as u32 + 0x400);
    for (reg, v) in super::mmio::NEGOTIATE_VERSION_1 {
        t.write(reg, &u32::to_le_bytes(v));
    }
    let queues = t.queue_count();
    for q in 0..queues as u32 {
        let off = q * 0x800;
        for (reg, v) in [
            (0x30, q),
            (0x38, u32::from(h[0]) + 1),
            (0x80, addr(2) + off),
            (0x90, addr(4) + off),
            (0xa0, addr(6) + off),
            (0x44, 1),
        ] {
            t.write(reg, &v.to_le_bytes());
        }
    }
    t.write(0x70, &0xfu32.to_le_bytes());
    let check = |t: &Transport| {
        if t.fault().is_some() {
            assert!(t.status() & NEEDS_RESET != 0, "a failed device must say so");
        }
    };
    for op in head.get(8..).unwrap_or_default().chunks_exact(6) {
        let reg = u64::from(op[0] & 0xfc);
        let v = u32::from_le_bytes([op[1], op[2], op[3], op[4]]);
        match op[5] % 6 {
            0 => {
                t.write(reg, &v.to_le_bytes());
            }
            1 => {
                let mut out = [0u8; 4];
                t.read(reg, &mut out);
            }
            2 => {
                let _ = mem.write_obj(v, GuestAddress(u64::from(v >> 16) % MEM as u64));
            }
            3 => t.notify(v as usize % queues, mem),
            4 => t.event(mem),
            _ => host(t, v),
        }
        check(t);
    }
    for q in 0..queues {
        t.notify(q, mem);
    }
    t.event(mem);
    check(t);
}

fn memory(image: &[u8]) -> GuestMemoryMmap {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).expect("memory");
    mem.write_slice(&image[..image.len().min(MEM)], GuestAddress(0))
        .expect("filling memory");
    mem
}

fn transport(dev: Box<dyn super::Device>) -> Transport {
    let irq = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
    Transport::new(dev, irq).expect("transport")
}

/// Any of the devices: the first byte picks block, net, vsock or the balloon.
pub fn devices(data: &[u8]) {
    match data.split_first() {
        Some((k, rest)) if k % 4 == 1 => net_queues(rest),
        Some((k, rest)) if k % 4 == 2 => vsock_queues(rest),
        Some((k, rest)) if k % 4 == 3 => {
            balloon_queues(rest);
        }
        Some((_, rest)) => {
            block_queue(rest);
        }
        None => {}
    }
}

/// virtio-net with a datagram socket pair standing in for the tap: the host side sends frames.
pub fn net_queues(data: &[u8]) {
    let (tap, peer) = std::os::unix::net::UnixDatagram::pair().expect("socketpair");
    tap.set_nonblocking(true).expect("non-blocking");
    peer.set_nonblocking(true).expect("non-blocking");
    let tap = std::fs::File::from(std::os::fd::OwnedFd::from(tap));
    let (head, image) = data.split_at(data.len().min(HEAD));
    let mem = memory(image);
    let mut t = transport(Box::new(super::net::Net::new(tap, [2, 0, 0, 0, 0, 1])));
    let frame: Vec<u8> = (0..=255u8).cycle().take(1600).collect();
    drive(&mut t, head, &mem, &mut |v| {
        let _ = peer.send(&frame[..(v as usize % 1500) + 1]);
    });
}

/// virtio-vsock on a fresh Unix socket: the host side connects to guest ports and sends.
pub fn vsock_queues(data: &[u8]) {
    use std::io::Write;
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let uds = std::env::temp_dir().join(format!("cellvisor-fuzz-{}-{n}.sock", std::process::id()));
    let spec = super::vsock::VsockSpec {
        cid: 3,
        uds: uds.clone(),
    };
    let dev = super::vsock::Vsock::new(&spec).expect("vsock");
    let (head, image) = data.split_at(data.len().min(HEAD));
    let mem = memory(image);
    let mut t = transport(Box::new(dev));
    let mut clients = Vec::new();
    drive(&mut t, head, &mem, &mut |v| {
        if let Ok(mut c) = std::os::unix::net::UnixStream::connect(&uds) {
            let _ = c.set_nonblocking(true);
            let _ = write!(c, "CONNECT {}\nsome bytes {v}", v % 4);
            clients.push(c);
        }
    });
    drop(t);
    assert!(!uds.exists(), "the vsock socket outlived its device");
}

/// The balloon with every feature, its driver hostile: frame numbers and reported ranges
/// anywhere, lists of any length, statistics of any shape; the host side sets targets (some
/// too large) and asks for statistics. Memory outside the dropped pages must be untouched by
/// the device; returns whether it failed, and its figures.
pub fn balloon_queues(data: &[u8]) -> (bool, super::balloon::Figures) {
    use super::balloon::{Balloon, BalloonSpec};
    let spec = BalloonSpec {
        size_mib: 0,
        deflate_on_oom: true,
        reporting: true,
        stats_secs: 0,
    };
    let (head, image) = data.split_at(data.len().min(HEAD));
    let mem = memory(image);
    let dev = Balloon::new(&spec, MEM as u64).expect("balloon");
    let mut t = transport(Box::new(dev));
    // The driver's features (the statistics and reporting queues exist with theirs) come
    // from the input's second byte; the rest of the negotiation is `drive`'s.
    let lo = u32::from(head.get(1).copied().unwrap_or(0)) & 0x26;
    for (reg, v) in super::mmio::negotiation(lo) {
        t.write(reg, &u32::to_le_bytes(v));
    }
    let mut host = |t: &mut Transport, v: u32| {
        if v.is_multiple_of(2) {
            if let Some(b) = t.balloon() {
                // A MiB is more than this guest's 64 KiB: refused, nothing changes.
                let mib = u64::from(v >> 8) % 3;
                assert!(mib == 0 || b.set_target(mib).is_err());
            }
            t.config_changed();
        } else {
            t.request_balloon_stats(&mem);
        }
    };
    drive_with(&mut t, head, &mem, &mut host);
    let figures = t.balloon().map(|b| b.figures()).unwrap_or_default();
    (t.fault().is_some(), figures)
}

/// Run one input against the copy-on-write block device. Panics only when the VMM broke its
/// promises; returns whether the device failed, and the guest memory afterwards.
pub fn block_queue(data: &[u8]) -> (bool, GuestMemoryMmap) {
    let spec = DiskSpec {
        path: base(),
        mode: Mode::Cow(None),
    };
    let disk = Disk::open(&spec).expect("opening the fuzz disk");
    let (head, image) = data.split_at(data.len().min(HEAD));
    let mem = memory(image);
    let mut t = transport(Box::new(Block::new(disk, "fuzz")));
    drive(&mut t, head, &mem, &mut |_| {});
    let now = std::fs::read(base()).expect("reading the base");
    assert!(now == base_pattern(), "the shared base was written");
    (t.fault().is_some(), mem)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        #[test]
        fn hostile_queues_never_break_the_vmm(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            super::devices(&data);
        }
    }

    /// A well-formed read request among the inputs: the harness does reach the device.
    #[test]
    fn a_good_request_is_served() {
        use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
        let mut d = vec![0u8; super::HEAD + 0x3000];
        // Queue size 8 at desc 0x1000, avail 0x1100, used 0x1200; then one notify op.
        d[0] = 7;
        d[2..4].copy_from_slice(&0x1000u16.to_le_bytes());
        d[4..6].copy_from_slice(&0x1100u16.to_le_bytes());
        d[6..8].copy_from_slice(&0x1200u16.to_le_bytes());
        d[8..14].copy_from_slice(&[0, 0, 0, 0, 0, 3]);
        let img = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x3000)]).unwrap();
        let desc = |i: u64, addr: u64, len: u32, flags: u16, next: u16| {
            let at = GuestAddress(0x1000 + 16 * i);
            img.write_obj(addr, at).unwrap();
            img.write_obj(len, at.unchecked_add(8)).unwrap();
            img.write_obj(flags, at.unchecked_add(12)).unwrap();
            img.write_obj(next, at.unchecked_add(14)).unwrap();
        };
        use vm_memory::Address;
        desc(0, 0x2000, 16, 1, 1); // header: IN, sector 1
        desc(1, 0x2100, 512, 3, 2); // data, device-writable
        desc(2, 0x2400, 1, 2, 0); // status
        img.write_obj(1u16, GuestAddress(0x1102)).unwrap(); // avail.idx = 1
        img.write_obj(1u64, GuestAddress(0x2008)).unwrap();
        let mut buf = vec![0u8; 0x3000];
        img.read_slice(&mut buf, GuestAddress(0)).unwrap();
        d[super::HEAD..].copy_from_slice(&buf);
        let (failed, mem) = super::block_queue(&d);
        assert!(!failed);
        // Used: one entry (head 0, 513 bytes), the status OK, sector 1 of the base in the buffer.
        assert_eq!(mem.read_obj::<u16>(GuestAddress(0x1202)).unwrap(), 1);
        assert_eq!(mem.read_obj::<u32>(GuestAddress(0x1208)).unwrap(), 513);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x2400)).unwrap(), 0);
        let mut got = vec![0u8; 512];
        mem.read_slice(&mut got, GuestAddress(0x2100)).unwrap();
        assert_eq!(got, super::base_pattern()[512..1024]);
    }
}
