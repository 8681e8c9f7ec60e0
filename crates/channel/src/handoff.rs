//! Handing descriptors (a channel's ends) over a Unix socket, with one message of bytes.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The most descriptors one message carries.
pub const MAX_FDS: usize = 8;

const SPACE: usize = 64; // >= CMSG_SPACE(MAX_FDS * 4)

#[repr(C, align(8))]
struct CmsgBuf([u8; SPACE]);

/// Send `msg` and, with it, `fds` (at most [`MAX_FDS`]).
pub fn send(sock: RawFd, msg: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors",
        ));
    }
    let mut cbuf = CmsgBuf([0; SPACE]);
    let mut iov = libc::iovec {
        iov_base: msg.as_ptr() as *mut libc::c_void,
        iov_len: msg.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid value.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    if !fds.is_empty() {
        let bytes = std::mem::size_of_val(fds) as u32;
        mh.msg_control = cbuf.0.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a size.
        mh.msg_controllen = unsafe { libc::CMSG_SPACE(bytes) } as usize;
        // SAFETY: the control buffer is large enough for one header and `bytes` of data, and
        // aligned for cmsghdr; CMSG_FIRSTHDR/CMSG_DATA point inside it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&mh);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    loop {
        // SAFETY: mh points at valid buffers for the duration of the call.
        let r = unsafe { libc::sendmsg(sock, &mh, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receive one message into `buf`, with the descriptors that came with it.
pub fn recv(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut cbuf = CmsgBuf([0; SPACE]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid value.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf.0.as_mut_ptr().cast();
    mh.msg_controllen = SPACE;
    let n = loop {
        // SAFETY: mh points at valid buffers for the duration of the call.
        let r = unsafe { libc::recvmsg(sock, &mut mh, libc::MSG_CMSG_CLOEXEC) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote into our buffer.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&mh);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                let count =
                    ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    // Each descriptor was installed in this process for us alone.
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&mh, c);
        }
    }
    if mh.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "descriptors were truncated",
        ));
    }
    Ok((n, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_channel_end_crosses_a_socket() {
        let (a, b) = crate::Channel::new(4096).unwrap();
        let (s1, s2) = std::os::unix::net::UnixStream::pair().unwrap();
        send(s1.as_raw_fd(), b"end", &b.fds()).unwrap();
        let mut buf = [0u8; 16];
        let (n, fds) = recv(s2.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"end");
        let [m, d0, d1, p0, p1]: [OwnedFd; 5] = fds.try_into().unwrap();
        let b2 = crate::End::from_fds(1, m, [d0, d1], [p0, p1]).unwrap();
        b.release();
        a.send(b"hi", true).unwrap();
        let mut got = Vec::new();
        b2.recv(&mut got, true).unwrap();
        assert_eq!(got, b"hi");
    }
}
