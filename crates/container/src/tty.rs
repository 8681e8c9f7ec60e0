//! Terminals: with `process.terminal`, the container's process gets a new pseudo-terminal as
//! its stdio and controlling terminal, and the master side is sent to the caller's console
//! socket (SCM_RIGHTS), as runc and crun do. `run` in the foreground without a console socket
//! takes the master itself and joins it to the user's own terminal ([`Attached`]): raw mode,
//! the bytes both ways, the size and its changes.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use crate::error::{Context, Error, Result};

/// Connect to the console socket given by `--console-socket`.
pub fn connect(path: &Path) -> Result<OwnedFd> {
    let s = UnixStream::connect(path)
        .map_err(|e| Error::Msg(format!("console socket {}: {e}", path.display())))?;
    Ok(s.into())
}

/// In the container: open a pty pair, send the master, make the slave our terminal.
pub fn setup(console: &OwnedFd, size: Option<(u16, u16)>) -> Result<()> {
    let master = nix::pty::posix_openpt(
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
    )
    .ctx(|| "opening /dev/ptmx")?;
    nix::pty::grantpt(&master).ctx(|| "grantpt")?;
    nix::pty::unlockpt(&master).ctx(|| "unlockpt")?;
    let name = nix::pty::ptsname_r(&master).ctx(|| "ptsname")?;
    let slave = nix::fcntl::open(
        name.as_str(),
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| format!("opening {name}"))?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    if let Some((rows, cols)) = size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from the pointer, which is valid.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    let fds = [master.as_raw_fd()];
    let iov = [IoSlice::new(b"/dev/ptmx")];
    sendmsg::<()>(
        console.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .ctx(|| "sending the terminal to the console socket")?;
    drop(master);
    become_tty(slave.as_raw_fd())?;
    Ok(())
}

/// Make `fd` the controlling terminal and stdio of this (session leader) process.
fn become_tty(fd: RawFd) -> Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument; fd is an open terminal.
    if unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } < 0 {
        return Err(nix::Error::last()).ctx(|| "making the pty the controlling terminal");
    }
    for target in 0..3 {
        // SAFETY: dup2 onto stdio; both descriptors are valid.
        if unsafe { libc::dup2(fd, target) } < 0 {
            return Err(nix::Error::last()).ctx(|| "dup2 of the pty onto stdio");
        }
    }
    Ok(())
}

/// Receive the terminal's master end over `sock` (what [`setup`] sends).
pub fn recv_master(sock: &OwnedFd) -> Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned};
    let mut buf = [0u8; 64];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ctx(|| "receiving the container's terminal")?;
    for c in msg.cmsgs().ctx(|| "reading the terminal's message")? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(Error::Msg("the container sent no terminal".into()))
}

/// The user's terminal (standard input) joined to a container's: in raw mode while this
/// lives (put back when dropped), its size copied over, the bytes copied both ways on two
/// threads.
pub struct Attached {
    master: OwnedFd,
    saved: Option<nix::sys::termios::Termios>,
    output: Option<std::thread::JoinHandle<()>>,
}

impl Attached {
    /// Join our stdin/stdout to `master`. Call with the signals blocked: the threads inherit
    /// the mask.
    pub fn new(master: OwnedFd) -> Result<Attached> {
        use nix::sys::termios;
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            termios::cfmakeraw(&mut raw);
            termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw)
                .ctx(|| "putting the terminal in raw mode")?;
        }
        let a = Attached {
            master,
            saved,
            output: None,
        };
        a.copy_size();
        let copy = |from: RawFd, to: RawFd| -> Result<std::thread::JoinHandle<()>> {
            let dup = |fd: RawFd| {
                // SAFETY: `fd` is open for the call; we take a copy of our own.
                unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
                    .try_clone_to_owned()
                    .map(std::fs::File::from)
                    .ctx(|| "duplicating a terminal descriptor")
            };
            let (mut r, mut w) = (dup(from)?, dup(to)?);
            Ok(std::thread::spawn(move || {
                // Ends at EOF, or EIO from a master whose other side all closed.
                let _ = std::io::copy(&mut r, &mut w);
            }))
        };
        let m = a.master.as_raw_fd();
        copy(0, m)?;
        let mut a = a;
        a.output = Some(copy(m, 1)?);
        Ok(a)
    }

    /// The user's terminal's size onto the container's (whose foreground processes then get
    /// SIGWINCH from the kernel).
    pub fn copy_size(&self) {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a winsize to the pointer, TIOCSWINSZ reads one; both valid.
        unsafe {
            if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
                libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
            }
        }
    }

    /// Wait (up to `limit`) for the container's output to be copied out to its end.
    pub fn drain(&mut self, limit: std::time::Duration) {
        if let Some(h) = self.output.take() {
            let end = std::time::Instant::now() + limit;
            while !h.is_finished() && std::time::Instant::now() < end {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}
