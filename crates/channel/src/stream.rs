//! A channel's end carried over a byte stream, for a domain that cannot map the channel's
//! shared memory: a microVM, whose side reaches the daemon as a vsock stream. Messages cross
//! the stream as frames, a 4-byte little-endian length and then the bytes; [`bridge`] moves
//! them between such a stream and an [`End`].

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use crate::{End, Error};

/// The vsock port a microVM guest reaches its domain's port on (host CID 2).
pub const VSOCK_PORT: u32 = 1024;

/// Write one frame.
pub fn write_frame(w: &mut impl Write, buf: &mut Vec<u8>, parts: [&[u8]; 2]) -> io::Result<()> {
    buf.clear();
    let len = parts[0].len() + parts[1].len();
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend_from_slice(parts[0]);
    buf.extend_from_slice(parts[1]);
    w.write_all(buf)
}

/// Read one frame into `buf`; false at the end of the stream (between frames). A frame
/// longer than `max`, or a stream ending inside one, is an `InvalidData` error.
pub fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>, max: usize) -> io::Result<bool> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "truncated frame",
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes is longer than the channel's largest message ({max})"),
        ));
    }
    buf.resize(len, 0);
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            io::Error::new(io::ErrorKind::InvalidData, "truncated frame")
        }
        _ => e,
    })?;
    Ok(true)
}

/// How a bridge ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The stream's peer hung up; the channel stays open (as when a domain's program exits
    /// without closing it).
    StreamClosed,
    /// The channel was closed; the stream was shut down.
    ChannelClosed,
    /// The stream sent something that is not a frame the channel can carry (too long,
    /// truncated) or failed; it was shut down, the channel stays open.
    BadStream(String),
}

/// Move frames from `stream` (after the bytes already read from it, `pending`) into the
/// channel through `tx`, and messages from the channel through `rx` onto the stream, until
/// either side ends. `tx` and `rx` are the same side of one channel, rebuilt from separate
/// descriptors, one per direction (an end is used by one thread). Blocks; run it on its own
/// thread. A message taken from the channel while the stream's peer hangs up is lost.
pub fn bridge(tx: End, rx: End, stream: UnixStream, pending: Vec<u8>) -> Ended {
    // SAFETY: eventfd with constant flags; the result is checked before use.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if raw < 0 {
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return Ended::BadStream(io::Error::last_os_error().to_string());
    }
    // SAFETY: a new descriptor nobody else owns.
    let stop = unsafe { OwnedFd::from_raw_fd(raw) };
    let Ok(mut out) = stream.try_clone() else {
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return Ended::BadStream("cannot clone the stream".into());
    };
    let stop2 = stop.try_clone();
    let down = std::thread::spawn(move || {
        let mut frame = Vec::new();
        let Ok(stop) = stop2 else {
            return Ended::BadStream("cannot clone the stop signal".into());
        };
        let ended = loop {
            match rx.wait_recv_or(stop.as_fd()) {
                Ok(true) => break Ended::StreamClosed,
                Ok(false) => {}
                Err(e) => break Ended::BadStream(e.to_string()),
            }
            match rx.recv_with(false, |a, b| write_frame(&mut out, &mut frame, [a, b])) {
                Ok(Ok(())) | Err(Error::WouldBlock) => {}
                Ok(Err(_)) => break Ended::StreamClosed,
                Err(Error::Closed) => break Ended::ChannelClosed,
                Err(e) => break Ended::BadStream(e.to_string()),
            }
        };
        // The channel closing (or failing) ends the stream; the peer sees end-of-file.
        let _ = out.shutdown(std::net::Shutdown::Both);
        rx.release();
        ended
    });
    let mut input = io::Read::chain(io::Cursor::new(pending), &stream);
    let mut msg = Vec::new();
    let up = loop {
        match read_frame(&mut input, &mut msg, tx.max_message()) {
            Ok(true) => {}
            Ok(false) => break Ended::StreamClosed,
            Err(e) => break Ended::BadStream(e.to_string()),
        }
        match tx.send(&msg, true) {
            Ok(()) => {}
            Err(Error::Closed) => break Ended::ChannelClosed,
            Err(e) => break Ended::BadStream(e.to_string()),
        }
    };
    let _ = stream.shutdown(std::net::Shutdown::Both);
    tx.release();
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
    unsafe { libc::write(stop.as_raw_fd(), (&one as *const u64).cast(), 8) };
    let down = down
        .join()
        .unwrap_or(Ended::BadStream("bridge thread panicked".into()));
    match (up, down) {
        (Ended::ChannelClosed, _) | (_, Ended::ChannelClosed) => Ended::ChannelClosed,
        (b @ Ended::BadStream(_), _) | (_, b @ Ended::BadStream(_)) => b,
        _ => Ended::StreamClosed,
    }
}

/// An `End` of `side` on new descriptors duplicated from `fds` (as [`End::fds`] lists them):
/// a second end for [`bridge`]'s other direction, or an end of another side of the channel.
///
/// # Safety
/// Every descriptor in `fds` must stay open for the duration of the call.
pub unsafe fn dup_from_raw(side: usize, fds: [std::os::fd::RawFd; 5]) -> crate::Result<End> {
    let dup = |fd| {
        // SAFETY: the caller keeps `fd` open for the duration of this call.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()
    };
    let [m, d0, d1, s0, s1] = fds;
    End::from_fds(side, dup(m)?, [dup(d0)?, dup(d1)?], [dup(s0)?, dup(s1)?])
}

/// This process's copy of an end, as a second `End` on new descriptors.
pub fn dup_end(e: &End) -> crate::Result<End> {
    // SAFETY: `e` holds its descriptors open for the duration of this call.
    unsafe { dup_from_raw(e.side(), e.fds()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Channel;

    fn frame(msg: &[u8]) -> Vec<u8> {
        let mut v = (msg.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(msg);
        v
    }

    /// A bridge on its own thread over the channel's side 1; the test holds side 0 and the
    /// stream's other end.
    fn bridged(buffer: u64, pending: Vec<u8>) -> (End, UnixStream, std::thread::JoinHandle<Ended>) {
        let (a, b) = Channel::new(buffer).unwrap();
        let b2 = dup_end(&b).unwrap();
        let (mine, theirs) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || bridge(b, b2, theirs, pending));
        (a, mine, t)
    }

    #[test]
    fn frames_cross_both_ways_and_the_stream_closing_keeps_the_channel() {
        let (a, mut s, t) = bridged(4096, frame(b"early"));
        let mut buf = Vec::new();
        a.recv(&mut buf, true).unwrap();
        assert_eq!(buf, b"early");
        for i in 0..500u32 {
            let msg = vec![i as u8; (i as usize * 13) % 4000];
            s.write_all(&frame(&msg)).unwrap();
            a.recv(&mut buf, true).unwrap();
            assert_eq!(buf, msg);
            a.send(&msg, true).unwrap();
            assert!(read_frame(&mut s, &mut buf, 4092).unwrap());
            assert_eq!(buf, msg);
        }
        drop(s);
        assert_eq!(t.join().unwrap(), Ended::StreamClosed);
        // The channel is still open: a message sent now waits in the ring.
        a.send(b"later", false).unwrap();
    }

    #[test]
    fn closing_the_channel_ends_the_stream() {
        let (a, mut s, t) = bridged(4096, Vec::new());
        a.send(b"last", true).unwrap();
        drop(a);
        let mut buf = Vec::new();
        assert!(read_frame(&mut s, &mut buf, 100).unwrap());
        assert_eq!(buf, b"last");
        assert!(!read_frame(&mut s, &mut buf, 100).unwrap());
        assert_eq!(t.join().unwrap(), Ended::ChannelClosed);
    }

    #[test]
    fn garbage_on_the_stream_ends_the_bridge_not_the_channel() {
        for garbage in [
            u32::MAX.to_le_bytes().to_vec(),
            4093u32.to_le_bytes().to_vec(),
            vec![10, 0, 0, 0, 1, 2],
            vec![1, 0],
        ] {
            let (a, mut s, t) = bridged(4096, Vec::new());
            s.write_all(&garbage).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            assert!(
                matches!(t.join().unwrap(), Ended::BadStream(_)),
                "{garbage:?}"
            );
            let mut buf = Vec::new();
            assert!(matches!(a.recv(&mut buf, false), Err(Error::WouldBlock)));
            a.send(b"still open", false).unwrap();
        }
    }
}
