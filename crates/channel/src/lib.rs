//! Channels between domains, after OKL4's: a bidirectional FIFO with a fixed buffer per
//! direction in shared memory, and a notification per direction (the "virtual interrupt": an
//! eventfd). A message is copied once, by the sender into the ring; the only syscalls are the
//! notifications, and those only when the peer sleeps (it spins briefly before it does).
//!
//! [`Channel::new`] makes both ends in one process; an [`End`] is a handful of descriptors
//! ([`End::fds`], [`End::from_fds`]) that can be handed to another process (inherited, or
//! passed over a Unix socket). The policy check happens before a channel is made; this crate
//! only moves bytes. A peer that writes garbage into the shared header can make its own end
//! fail with [`Error::Corrupt`], never read or write outside the mapping.

pub mod fuzz;
pub mod handoff;
pub mod stream;

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

const MAGIC: u64 = 0x6365_6c6c_6368_616e; // "cellchan"
const LEN: usize = 4; // length prefix of a message
/// Waiting for the peer: first spin (a peer on another CPU answers within a microsecond),
/// then yield the CPU (a peer on the same CPU can only answer if we let it run), then sleep
/// on the eventfd.
const SPIN: u32 = 200;
const YIELD: u32 = 50;

/// One step of waiting; false once it is time to sleep. A peer last seen on our own CPU
/// cannot answer while we spin or yield: sleep at once.
fn backoff(step: &mut u32, h: &Header, side: usize) -> bool {
    if *step == 0 {
        // SAFETY: sched_getcpu has no arguments (a vDSO call).
        let me = unsafe { libc::sched_getcpu() } as u32;
        h.cpu[side].store(me, Ordering::Relaxed);
        if h.cpu[1 - side].load(Ordering::Relaxed) == me {
            *step = SPIN + YIELD;
            return false;
        }
    }
    *step += 1;
    if *step <= SPIN {
        std::hint::spin_loop();
        true
    } else if *step <= SPIN + YIELD {
        // SAFETY: sched_yield has no arguments.
        unsafe { libc::sched_yield() };
        true
    } else {
        false
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("channel buffer {0} must be a power of two from 4096 to 64 MiB")]
    BadSize(u64),
    #[error("message of {len} bytes does not fit the channel's {cap}-byte buffer")]
    TooBig { len: usize, cap: usize },
    #[error("the channel would block")]
    WouldBlock,
    #[error("the peer closed the channel")]
    Closed,
    #[error("the channel's shared memory is corrupt")]
    Corrupt,
    #[error(transparent)]
    Os(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Producer and consumer positions of one direction, on their own cache lines.
#[repr(C, align(64))]
struct Ring {
    /// Bytes ever written (producer).
    tail: AtomicU64,
    _p0: [u8; 56],
    /// Bytes ever read (consumer).
    head: AtomicU64,
    _p1: [u8; 56],
    reader_waiting: AtomicU32,
    writer_waiting: AtomicU32,
    closed: AtomicU32,
    _p2: [u8; 52],
}

#[repr(C)]
struct Header {
    magic: u64,
    buffer: u64,
    /// The CPU each side last ran on: waiting by spinning only helps when they differ.
    cpu: [AtomicU32; 2],
    _pad: [u8; 40],
    rings: [Ring; 2],
}

fn header_size() -> usize {
    std::mem::size_of::<Header>().next_multiple_of(4096)
}

fn os<T: PartialOrd + Default>(r: T) -> std::io::Result<T> {
    if r < T::default() {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The shared mapping.
struct Map {
    ptr: NonNull<u8>,
    len: usize,
    buffer: usize,
}

// SAFETY: the mapping is shared memory accessed only through atomics (header) and through
// ranges that the ring protocol hands to exactly one side at a time.
unsafe impl Send for Map {}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: ptr/len are the mapping made in `Map::new`, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

impl Map {
    fn new(fd: RawFd, buffer: usize) -> Result<Self> {
        let len = header_size() + 2 * buffer;
        // SAFETY: a fresh shared mapping of the memfd; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(Map {
            ptr: NonNull::new(p.cast()).ok_or(Error::Corrupt)?,
            len,
            buffer,
        })
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping starts with a Header (page-aligned, zero-initialised or written
        // by `Channel::new`); only atomics and plain integers are read through it.
        unsafe { &*self.ptr.as_ptr().cast::<Header>() }
    }

    fn data(&self, dir: usize) -> *mut u8 {
        // SAFETY: within the mapping: header, then two buffers.
        unsafe { self.ptr.as_ptr().add(header_size() + dir * self.buffer) }
    }

    /// Copy `src` into ring `dir` at position `pos`, wrapping.
    fn put(&self, dir: usize, pos: u64, src: &[u8]) {
        let cap = self.buffer;
        let off = (pos as usize) & (cap - 1);
        let first = src.len().min(cap - off);
        // SAFETY: off+first <= cap and the rest < cap: both ranges lie in ring `dir`, which the
        // protocol gives to the producer between `tail` and `head + cap`.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.data(dir).add(off), first);
            std::ptr::copy_nonoverlapping(
                src.as_ptr().add(first),
                self.data(dir),
                src.len() - first,
            );
        }
    }

    /// Copy out of ring `dir` at `pos` into `dst`, wrapping.
    fn get(&self, dir: usize, pos: u64, dst: &mut [u8]) {
        let cap = self.buffer;
        let off = (pos as usize) & (cap - 1);
        let first = dst.len().min(cap - off);
        // SAFETY: as in `put`, for the consumer's range between `head` and `tail`.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data(dir).add(off), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(
                self.data(dir),
                dst.as_mut_ptr().add(first),
                dst.len() - first,
            );
        }
    }
}

fn eventfd() -> Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let fd = os(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) })?;
    // SAFETY: a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn notify(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64 to an eventfd.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

fn wait(fd: &OwnedFd) -> Result<()> {
    let mut v: u64 = 0;
    loop {
        // SAFETY: reads 8 bytes into a valid u64 from an eventfd.
        let r = unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        if r == 8 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e.into());
        }
    }
}

/// One end of a channel: sends on ring `side`, receives on ring `1 - side`.
pub struct End {
    map: Map,
    side: usize,
    memfd: OwnedFd,
    /// Per direction d: `data[d]` tells the consumer of ring d there is data, `space[d]` tells
    /// its producer there is room.
    data: [OwnedFd; 2],
    space: [OwnedFd; 2],
}

/// A channel: both ends, made together.
pub struct Channel;

impl Channel {
    /// A channel with `buffer` bytes per direction (a power of two, 4 KiB to 64 MiB).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(buffer: u64) -> Result<(End, End)> {
        if !buffer.is_power_of_two() || !(4096..=64 << 20).contains(&buffer) {
            return Err(Error::BadSize(buffer));
        }
        // SAFETY: memfd_create with a valid name; the result is checked.
        let fd = os(unsafe {
            libc::memfd_create(
                c"cellvisor-channel".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        })?;
        // SAFETY: a new descriptor nobody else owns.
        let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let len = header_size() + 2 * buffer as usize;
        // SAFETY: ftruncate on our memfd.
        os(unsafe { libc::ftruncate(memfd.as_raw_fd(), len as libc::off_t) })?;
        // A peer holding the memfd must not shrink it under our mapping (SIGBUS) or grow it.
        // SAFETY: F_ADD_SEALS with an int argument on our memfd.
        os(unsafe {
            libc::fcntl(
                memfd.as_raw_fd(),
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
            )
        })?;
        let map = Map::new(memfd.as_raw_fd(), buffer as usize)?;
        // SAFETY: the fresh mapping is zeroed; we are its only user until the ends are handed out.
        unsafe {
            let h = map.ptr.as_ptr().cast::<Header>();
            (*h).magic = MAGIC;
            (*h).buffer = buffer;
        }
        let data = [eventfd()?, eventfd()?];
        let space = [eventfd()?, eventfd()?];
        let b = End::from_fds(
            1,
            memfd.try_clone()?,
            [data[0].try_clone()?, data[1].try_clone()?],
            [space[0].try_clone()?, space[1].try_clone()?],
        )?;
        let a = End {
            map,
            side: 0,
            memfd,
            data,
            space,
        };
        Ok((a, b))
    }
}

impl End {
    /// Rebuild an end from its descriptors (as [`End::fds`] listed them) in another process.
    pub fn from_fds(
        side: usize,
        memfd: OwnedFd,
        data: [OwnedFd; 2],
        space: [OwnedFd; 2],
    ) -> Result<End> {
        if side > 1 {
            return Err(Error::Corrupt);
        }
        // Only a memfd sealed against resizing is safe to map (see `Channel::new`).
        // SAFETY: F_GET_SEALS takes no argument.
        let seals = unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0
            || seals & (libc::F_SEAL_SHRINK | libc::F_SEAL_GROW)
                != libc::F_SEAL_SHRINK | libc::F_SEAL_GROW
        {
            return Err(Error::Corrupt);
        }
        let mut st: libc::stat = unsafe_zeroed_stat();
        // SAFETY: fstat into a valid struct.
        os(unsafe { libc::fstat(memfd.as_raw_fd(), &mut st) })?;
        let total = st.st_size as usize;
        let buffer = total
            .checked_sub(header_size())
            .map(|b| b / 2)
            .ok_or(Error::Corrupt)?;
        if !buffer.is_power_of_two() || buffer < 4096 {
            return Err(Error::Corrupt);
        }
        let map = Map::new(memfd.as_raw_fd(), buffer)?;
        let h = map.header();
        if h.magic != MAGIC || h.buffer != buffer as u64 {
            return Err(Error::Corrupt);
        }
        Ok(End {
            map,
            side,
            memfd,
            data,
            space,
        })
    }

    /// The descriptors to hand over: memfd, data[0], data[1], space[0], space[1].
    pub fn fds(&self) -> [RawFd; 5] {
        [
            self.memfd.as_raw_fd(),
            self.data[0].as_raw_fd(),
            self.data[1].as_raw_fd(),
            self.space[0].as_raw_fd(),
            self.space[1].as_raw_fd(),
        ]
    }

    /// Give up this process's copy of the end without closing the channel: after a fork, in
    /// the process that keeps the other end (dropping would tell the peer it was closed).
    pub fn release(self) {
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: each field is read out exactly once from a value that is never dropped.
        unsafe {
            drop(std::ptr::read(&me.map));
            drop(std::ptr::read(&me.memfd));
            drop(std::ptr::read(&me.data));
            drop(std::ptr::read(&me.space));
        }
    }

    pub fn side(&self) -> usize {
        self.side
    }

    /// Bytes per direction.
    pub fn capacity(&self) -> usize {
        self.map.buffer
    }

    /// The largest message this channel carries.
    pub fn max_message(&self) -> usize {
        self.map.buffer - LEN
    }

    fn ring(&self, dir: usize) -> &Ring {
        &self.map.header().rings[dir]
    }

    /// Send one message; with `block`, wait for room.
    pub fn send(&self, msg: &[u8], block: bool) -> Result<()> {
        let cap = self.map.buffer;
        if msg.len() > cap - LEN {
            return Err(Error::TooBig {
                len: msg.len(),
                cap,
            });
        }
        let d = self.side;
        let r = self.ring(d);
        let need = (LEN + msg.len()) as u64;
        let mut spins = 0;
        let tail = r.tail.load(Ordering::Relaxed);
        loop {
            if r.closed.load(Ordering::Acquire) != 0 {
                return Err(Error::Closed);
            }
            let head = r.head.load(Ordering::Acquire);
            let used = tail.wrapping_sub(head);
            if used > cap as u64 {
                return Err(Error::Corrupt);
            }
            if cap as u64 - used >= need {
                break;
            }
            if !block {
                return Err(Error::WouldBlock);
            }
            if backoff(&mut spins, self.map.header(), self.side) {
                continue;
            }
            r.writer_waiting.store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let head = r.head.load(Ordering::SeqCst);
            if cap as u64 - tail.wrapping_sub(head) >= need || r.closed.load(Ordering::SeqCst) != 0
            {
                r.writer_waiting.store(0, Ordering::Relaxed);
                continue;
            }
            wait(&self.space[d])?;
            r.writer_waiting.store(0, Ordering::Relaxed);
        }
        // Positions live in memory the peer can write: they wrap, never overflow.
        self.map.put(d, tail, &(msg.len() as u32).to_le_bytes());
        self.map.put(d, tail.wrapping_add(LEN as u64), msg);
        r.tail.store(tail.wrapping_add(need), Ordering::Release);
        fence(Ordering::SeqCst);
        if r.reader_waiting.load(Ordering::SeqCst) != 0 {
            notify(&self.data[d]);
        }
        Ok(())
    }

    /// Receive one message into `buf` (cleared first); with `block`, wait for one.
    pub fn recv(&self, buf: &mut Vec<u8>, block: bool) -> Result<()> {
        self.recv_with(block, |a, b| {
            buf.clear();
            buf.extend_from_slice(a);
            buf.extend_from_slice(b);
        })
    }

    /// Receive one message without copying it: `f` sees it in place in the ring, as one or two
    /// slices (two when it wraps around the end of the buffer), and the space is given back
    /// to the sender when `f` returns. The bytes live in memory the peer can write: a
    /// misbehaving peer can change them while `f` reads, never their bounds.
    pub fn recv_with<R>(&self, block: bool, f: impl FnOnce(&[u8], &[u8]) -> R) -> Result<R> {
        let cap = self.map.buffer as u64;
        let d = 1 - self.side;
        let r = self.ring(d);
        let head = r.head.load(Ordering::Relaxed);
        let mut spins = 0;
        let tail = loop {
            let tail = r.tail.load(Ordering::Acquire);
            if tail != head {
                break tail;
            }
            if r.closed.load(Ordering::Acquire) != 0 {
                return Err(Error::Closed);
            }
            if !block {
                return Err(Error::WouldBlock);
            }
            if backoff(&mut spins, self.map.header(), self.side) {
                continue;
            }
            r.reader_waiting.store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if r.tail.load(Ordering::SeqCst) != head || r.closed.load(Ordering::SeqCst) != 0 {
                r.reader_waiting.store(0, Ordering::Relaxed);
                continue;
            }
            wait(&self.data[d])?;
            r.reader_waiting.store(0, Ordering::Relaxed);
        };
        // Everything below comes from the peer: check it before trusting it.
        let avail = tail.wrapping_sub(head);
        if avail > cap || avail < LEN as u64 {
            return Err(Error::Corrupt);
        }
        let mut len = [0u8; LEN];
        self.map.get(d, head, &mut len);
        let len = u32::from_le_bytes(len) as u64;
        if len + LEN as u64 > avail {
            return Err(Error::Corrupt);
        }
        let off = (head.wrapping_add(LEN as u64) & (cap - 1)) as usize;
        let first = (len as usize).min(cap as usize - off);
        // SAFETY: [off, off+first) and [0, len-first) lie in ring d, in the range between head
        // and tail that the producer has published and will not touch until head moves.
        let out = unsafe {
            let base = self.map.data(d);
            f(
                std::slice::from_raw_parts(base.add(off), first),
                std::slice::from_raw_parts(base, len as usize - first),
            )
        };
        r.head
            .store(head.wrapping_add(LEN as u64 + len), Ordering::Release);
        fence(Ordering::SeqCst);
        if r.writer_waiting.load(Ordering::SeqCst) != 0 {
            notify(&self.space[d]);
        }
        Ok(out)
    }
}

impl End {
    /// Wait until a message can be received or the channel is closed (false), or until
    /// `other` is readable or hung up (true), whichever comes first. A receiver that must also
    /// watch something else (a stop signal, a socket) waits here, then calls `recv` without
    /// blocking.
    pub fn wait_recv_or(&self, other: BorrowedFd) -> Result<bool> {
        let d = 1 - self.side;
        let r = self.ring(d);
        let head = r.head.load(Ordering::Relaxed);
        let ready =
            || r.tail.load(Ordering::SeqCst) != head || r.closed.load(Ordering::SeqCst) != 0;
        loop {
            if ready() {
                return Ok(false);
            }
            r.reader_waiting.store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if ready() {
                r.reader_waiting.store(0, Ordering::Relaxed);
                return Ok(false);
            }
            let mut pfd = [
                libc::pollfd {
                    fd: self.data[d].as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: other.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: poll on two valid pollfd entries.
            let n = unsafe { libc::poll(pfd.as_mut_ptr(), 2, -1) };
            r.reader_waiting.store(0, Ordering::Relaxed);
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            if pfd[0].revents != 0 {
                // Consume the notification; the loop re-checks the ring.
                wait(&self.data[d])?;
            }
            if pfd[1].revents != 0 {
                return Ok(true);
            }
        }
    }
}

impl Drop for End {
    fn drop(&mut self) {
        // Tell the peer, and wake it if it sleeps on either direction.
        for d in 0..2 {
            self.ring(d).closed.store(1, Ordering::SeqCst);
            notify(&self.data[d]);
            notify(&self.space[d]);
        }
    }
}

fn unsafe_zeroed_stat() -> libc::stat {
    // SAFETY: stat is plain data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_cross_in_both_directions_and_wrap() {
        let (a, b) = Channel::new(4096).unwrap();
        let mut buf = Vec::new();
        for i in 0..10_000u32 {
            let msg = vec![(i % 251) as u8; (i as usize * 7) % 1000];
            a.send(&msg, true).unwrap();
            b.recv(&mut buf, true).unwrap();
            assert_eq!(buf, msg);
            b.send(&i.to_le_bytes(), true).unwrap();
            a.recv(&mut buf, true).unwrap();
            assert_eq!(buf, i.to_le_bytes());
        }
    }

    #[test]
    fn recv_with_sees_wrapped_messages_in_two_slices() {
        let (a, b) = Channel::new(4096).unwrap();
        let mut buf = Vec::new();
        a.send(&[0u8; 3000], true).unwrap();
        b.recv(&mut buf, true).unwrap();
        let msg: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
        a.send(&msg, true).unwrap();
        let (n1, n2, joined) = b
            .recv_with(true, |x, y| (x.len(), y.len(), [x, y].concat()))
            .unwrap();
        assert!(n1 > 0 && n2 > 0, "{n1} {n2}");
        assert_eq!(joined, msg);
    }

    #[test]
    fn full_empty_too_big_and_bad_sizes() {
        let (a, b) = Channel::new(4096).unwrap();
        let mut buf = Vec::new();
        assert!(matches!(b.recv(&mut buf, false), Err(Error::WouldBlock)));
        assert!(matches!(
            a.send(&[0; 4093], false),
            Err(Error::TooBig { .. })
        ));
        a.send(&[1; 4092], false).unwrap();
        assert!(matches!(a.send(&[2], false), Err(Error::WouldBlock)));
        b.recv(&mut buf, false).unwrap();
        assert_eq!(buf.len(), 4092);
        for bad in [0, 1000, 4095, 1 << 30] {
            assert!(matches!(Channel::new(bad), Err(Error::BadSize(_))));
        }
    }

    #[test]
    fn blocking_across_threads_and_close() {
        let (a, b) = Channel::new(8192).unwrap();
        let t = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut sum = 0u64;
            loop {
                match b.recv(&mut buf, true) {
                    Ok(()) => sum += buf.iter().map(|x| *x as u64).sum::<u64>(),
                    Err(Error::Closed) => return sum,
                    Err(e) => panic!("{e}"),
                }
            }
        });
        for _ in 0..2000 {
            a.send(&[1u8; 3000], true).unwrap();
        }
        // Let the reader drain before closing.
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(a);
        assert_eq!(t.join().unwrap(), 2000 * 3000);
    }

    #[test]
    fn the_shared_memory_cannot_be_resized_by_a_peer() {
        let (a, _b) = Channel::new(4096).unwrap();
        // SAFETY: ftruncate on a descriptor we hold; it must be refused.
        let r = unsafe { libc::ftruncate(a.fds()[0], 0) };
        assert_eq!(r, -1);
        // An unsealed memfd is not accepted as a channel.
        // SAFETY: plain syscalls on descriptors we create.
        let fd = unsafe { OwnedFd::from_raw_fd(libc::memfd_create(c"x".as_ptr(), 0)) };
        let ev = || eventfd().unwrap();
        assert!(matches!(
            End::from_fds(1, fd, [ev(), ev()], [ev(), ev()]),
            Err(Error::Corrupt)
        ));
    }

    #[test]
    fn a_peer_that_scribbles_gets_corrupt_not_a_crash() {
        let (a, b) = Channel::new(4096).unwrap();
        a.send(b"hello", true).unwrap();
        // The sender claims more bytes than the ring holds, then a bad length prefix.
        let r = a.ring(0);
        r.tail.store(1 << 40, Ordering::SeqCst);
        let mut buf = Vec::new();
        assert!(matches!(b.recv(&mut buf, false), Err(Error::Corrupt)));
        r.tail.store(9, Ordering::SeqCst);
        a.map.put(0, 0, &u32::MAX.to_le_bytes());
        assert!(matches!(b.recv(&mut buf, false), Err(Error::Corrupt)));
    }

    #[test]
    fn an_end_rebuilt_from_its_descriptors_works_in_another_process() {
        let (a, b) = Channel::new(65536).unwrap();
        // SAFETY: the child only uses the channel and exits with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            a.release();
            let fds = b.fds();
            let dup = |fd: RawFd| {
                // SAFETY: duplicating a descriptor we hold.
                unsafe { OwnedFd::from_raw_fd(libc::dup(fd)) }
            };
            let end = End::from_fds(
                1,
                dup(fds[0]),
                [dup(fds[1]), dup(fds[2])],
                [dup(fds[3]), dup(fds[4])],
            )
            .unwrap();
            let mut buf = Vec::new();
            let mut ok = true;
            for i in 0..1000u32 {
                ok &= end.recv(&mut buf, true).is_ok() && buf == i.to_le_bytes();
                ok &= end.send(&buf, true).is_ok();
            }
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        b.release();
        let mut buf = Vec::new();
        for i in 0..1000u32 {
            a.send(&i.to_le_bytes(), true).unwrap();
            a.recv(&mut buf, true).unwrap();
            assert_eq!(buf, i.to_le_bytes());
        }
        let mut status = 0;
        // SAFETY: waiting for our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(status, 0);
    }
}
