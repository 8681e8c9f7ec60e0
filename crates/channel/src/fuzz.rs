//! Hostile peers for the channel, as harnesses for a proptest (`cargo test -p channel`) and
//! the cargo-fuzz targets in `fuzz/` (`channel_peer`, `stream_frames`).
//!
//! [`hostile_peer`]: one end is ours; the other is a peer that maps the same memory and,
//! between our sends and receives, writes whatever the bytes say into the shared header (any
//! ring's positions, flags, the CPUs, the magic and size) and the rings. Whatever it writes,
//! our end must not panic, block (we never ask it to), or touch memory outside the mapping
//! (the sanitizer of a fuzz build would see it); it may only fail, with `Corrupt` or `Closed`.
//!
//! [`hostile_stream`]: bytes arrive on a microVM's stream as frames for the channel; the
//! messages that come out of the channel are exactly the well-formed frames before the first
//! bad one, and the bridge ends saying why.

use std::sync::atomic::Ordering;

use crate::{Channel, End, Error};

/// The cursor over the fuzzer's bytes: what the next op is, its arguments.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u64(&mut self) -> Option<u64> {
        let mut v = [0u8; 8];
        for b in &mut v {
            *b = self.u8()?;
        }
        Some(u64::from_le_bytes(v))
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

/// What a value the peer writes looks like: near the real positions, at the edges of u64,
/// or anything.
fn shaped(v: u64, near: u64) -> u64 {
    match v & 3 {
        0 => near.wrapping_add((v >> 2) & 0x3fff),
        1 => near.wrapping_sub((v >> 2) & 0x3fff),
        2 => u64::MAX - ((v >> 2) & 0xff),
        _ => v,
    }
}

fn ok_or_refused<T>(r: crate::Result<T>) {
    match r {
        Ok(_) | Err(Error::Corrupt | Error::Closed | Error::WouldBlock | Error::TooBig { .. }) => {}
        Err(e) => panic!("a hostile peer made our end fail with {e}"),
    }
}

/// Drive our end against a peer that writes the shared memory as `data` says.
pub fn hostile_peer(data: &[u8]) {
    let (ours, peer) = Channel::new(4096).expect("a channel");
    let mut b = Bytes(data);
    let mut buf = Vec::new();
    let mut n = 0u32;
    while let Some(op) = b.u8() {
        n += 1;
        if n > 256 {
            break;
        }
        match op % 8 {
            0 => {
                let len = usize::from(b.u8().unwrap_or(0)) * 17;
                ok_or_refused(ours.send(&vec![0xa5; len], false));
            }
            1 => ok_or_refused(ours.recv(&mut buf, false)),
            2 => ok_or_refused(ours.recv_with(false, |x, y| x.len() + y.len())),
            // The peer as it should be, now and then.
            3 => {
                let len = usize::from(b.u8().unwrap_or(0)) * 13;
                let _ = peer.send(&vec![0x5a; len], false);
            }
            4 => {
                let _ = peer.recv(&mut buf, false);
            }
            // Then as it should not: a position, a flag.
            5 => {
                let (which, v) = (b.u8().unwrap_or(0), b.u64().unwrap_or(0));
                let r = &peer.map.header().rings[usize::from(which & 1)];
                match (which >> 1) % 6 {
                    0 => r
                        .tail
                        .store(shaped(v, r.tail.load(Ordering::Relaxed)), Ordering::Release),
                    1 => r
                        .head
                        .store(shaped(v, r.head.load(Ordering::Relaxed)), Ordering::Release),
                    2 => r.closed.store(v as u32, Ordering::Release),
                    3 => r.reader_waiting.store(v as u32, Ordering::Release),
                    4 => r.writer_waiting.store(v as u32, Ordering::Release),
                    _ => peer.map.header().cpu[usize::from(which & 1)]
                        .store(v as u32, Ordering::Relaxed),
                }
            }
            // Garbage in a ring: a length prefix, or message bytes.
            6 => {
                let (dir, pos) = (usize::from(b.u8().unwrap_or(0) & 1), b.u64().unwrap_or(0));
                let bytes = b.take(16).to_vec();
                peer.map.put(dir, pos, &bytes);
            }
            // Another process rebuilds an end from the descriptors after the peer wrote
            // the header's magic or size: refused, or an end as good as ours.
            _ => {
                let v = b.u64().unwrap_or(0);
                let h = peer.map.ptr.as_ptr().cast::<u64>();
                let field = usize::from(v & 1 == 1);
                // SAFETY: the first two u64 of the mapping are the header's magic and size;
                // the write races only with this thread.
                let old = unsafe { h.add(field).read_volatile() };
                // SAFETY: as above.
                unsafe { h.add(field).write_volatile(v >> 1) };
                let fds = ours.fds();
                // SAFETY: dup of descriptors `ours` holds; the copies are new and owned here.
                let dup = |fd| unsafe {
                    std::os::fd::FromRawFd::from_raw_fd(libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0))
                };
                match End::from_fds(
                    0,
                    dup(fds[0]),
                    [dup(fds[1]), dup(fds[2])],
                    [dup(fds[3]), dup(fds[4])],
                ) {
                    Ok(e) => {
                        assert!(v >> 1 == old, "an end was made on a changed header");
                        e.release();
                    }
                    Err(e) => assert!(matches!(e, Error::Corrupt), "{e}"),
                }
                // SAFETY: as above.
                unsafe { h.add(field).write_volatile(old) };
            }
        }
    }
    // Neither end may be dropped while the other one's shared memory is being judged: both
    // go now, in either order.
    drop(ours);
    drop(peer);
}

/// The frames a stream of `bytes` holds for a channel whose largest message is `max`: every
/// whole one before the first bad one (too long) or a truncated end.
pub fn frames_of(bytes: &[u8], max: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 4 {
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        if len > max || rest.len() - 4 < len {
            break;
        }
        out.push(rest[4..4 + len].to_vec());
        rest = &rest[4 + len..];
    }
    out
}

/// Feed `data` to a channel's bridge as the stream from a microVM (its first byte: how much
/// of it was already read with the request line); the messages that reach the channel must be
/// [`frames_of`] the stream, in order.
pub fn hostile_stream(data: &[u8]) {
    use std::os::unix::net::UnixStream;
    let Some((&k, data)) = data.split_first() else {
        return;
    };
    let (ours, theirs) = Channel::new(4096).expect("a channel");
    let max = ours.max_message();
    let want = frames_of(data, max);
    // The bridge's side is `ours`, rebuilt from the descriptors once per direction.
    let dup = || crate::stream::dup_end(&ours).expect("an end");
    let (tx, rx) = (dup(), dup());
    let (guest, host) = UnixStream::pair().expect("a socket pair");
    let split = usize::from(k).min(data.len());
    let pending = data[..split].to_vec();
    let rest = data[split..].to_vec();
    let bridge = std::thread::spawn(move || crate::stream::bridge(tx, rx, host, pending));
    let writer = std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let mut at = 0;
        while at < rest.len() {
            // SAFETY: send from a valid buffer; MSG_NOSIGNAL: a bridge that hung up is an
            // error here, not a SIGPIPE (a fuzz target has no Rust runtime to ignore it).
            let n = unsafe {
                libc::send(
                    guest.as_raw_fd(),
                    rest[at..].as_ptr().cast(),
                    rest.len() - at,
                    libc::MSG_NOSIGNAL,
                )
            };
            if n <= 0 {
                break;
            }
            at += n as usize;
        }
        let _ = guest.shutdown(std::net::Shutdown::Write);
        guest
    });
    // What crosses into the channel, until the bridge is done.
    let mut got = Vec::new();
    let mut buf = Vec::new();
    loop {
        match theirs.recv(&mut buf, false) {
            Ok(()) => got.push(buf.clone()),
            Err(Error::WouldBlock) if bridge.is_finished() => {
                if theirs.recv(&mut buf, false).is_ok() {
                    got.push(buf.clone());
                    continue;
                }
                break;
            }
            Err(Error::WouldBlock) => std::thread::yield_now(),
            Err(e) => panic!("the channel failed: {e}"),
        }
    }
    let ended = bridge.join().expect("the bridge panicked");
    let guest = writer.join().expect("the writer panicked");
    drop(guest);
    assert_eq!(
        got, want,
        "the channel got other messages than the stream's frames ({ended:?})"
    );
    drop(ours);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]
        #[test]
        fn a_hostile_peer_cannot_break_our_end(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            super::hostile_peer(&data);
        }

        #[test]
        fn a_hostile_stream_carries_its_good_frames_only(data in proptest::collection::vec(any::<u8>(), 0..6000)) {
            super::hostile_stream(&data);
        }
    }

    /// Found by the proptest: a peer that moves the positions near the end of u64 made our
    /// end overflow adding to them (a panic in a debug build).
    #[test]
    fn positions_at_the_end_of_u64_wrap() {
        use std::sync::atomic::Ordering;
        let (ours, peer) = crate::Channel::new(4096).unwrap();
        let mut buf = Vec::new();
        // Its ring (1): a 4-byte message straddling u64::MAX.
        let r = &peer.map.header().rings[1];
        let at = u64::MAX - 1;
        peer.map.put(1, at, &4u32.to_le_bytes());
        peer.map.put(1, at.wrapping_add(4), b"wrap");
        r.head.store(at, Ordering::Release);
        r.tail.store(at.wrapping_add(8), Ordering::Release);
        ours.recv(&mut buf, false).unwrap();
        assert_eq!(buf, b"wrap");
        // Ours (0): our own tail and head set there by the peer; a send still fits.
        let r = &peer.map.header().rings[0];
        r.head.store(u64::MAX - 2, Ordering::Release);
        r.tail.store(u64::MAX - 2, Ordering::Release);
        ours.send(b"over", false).unwrap();
        peer.recv(&mut buf, false).unwrap();
        assert_eq!(buf, b"over");
    }

    #[test]
    fn frames_end_at_the_first_bad_one() {
        let mut s = Vec::new();
        for m in [&b"ab"[..], b"", b"xyz"] {
            s.extend_from_slice(&(m.len() as u32).to_le_bytes());
            s.extend_from_slice(m);
        }
        s.extend_from_slice(&5000u32.to_le_bytes());
        s.extend_from_slice(b"tail");
        assert_eq!(
            super::frames_of(&s, 4092),
            [b"ab".to_vec(), vec![], b"xyz".to_vec()]
        );
    }
}
