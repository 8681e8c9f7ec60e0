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

/// A connected socket pair standing in for a console socket: (ours, the container's).
pub fn pair() -> Result<(OwnedFd, OwnedFd)> {
    let (a, b) = UnixStream::pair().ctx(|| "making the console socket pair")?;
    Ok((a.into(), b.into()))
}

/// The size of the terminal on our standard input, (rows, columns).
pub fn size_of_stdin() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize to the pointer, which is valid.
    (unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0).then_some((ws.ws_row, ws.ws_col))
}

/// Receive the terminal's master end over `sock` (what [`setup`] sends).
pub fn recv_master(sock: &OwnedFd) -> Result<OwnedFd> {
    let mut buf = [0u8; 64];
    let (_, fds) = crate::util::recv_with_fds(sock.as_raw_fd(), &mut buf)
        .ctx(|| "receiving the container's terminal")?;
    fds.into_iter()
        .next()
        .ok_or_else(|| Error::Msg("the container sent no terminal".into()))
}

/// The user's terminal (standard input) joined to a container's: in raw mode while this
/// lives (put back when dropped), its size copied over; [`Attached::serve`] then carries the
/// bytes both ways on this one thread (a runtime that joined a pid namespace cannot start
/// threads) until the container's process ends.
pub struct Attached {
    master: OwnedFd,
    saved: Option<nix::sys::termios::Termios>,
}

impl Attached {
    /// Join the user's terminal to `master`, with `signals` blocked first (they reach the
    /// container through [`Attached::serve`]).
    pub fn new(master: OwnedFd, signals: &nix::sys::signal::SigSet) -> Result<Attached> {
        nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_BLOCK, Some(signals), None)
            .ctx(|| "blocking signals")?;
        use nix::sys::termios;
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            termios::cfmakeraw(&mut raw);
            termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw)
                .ctx(|| "putting the terminal in raw mode")?;
        }
        let a = Attached { master, saved };
        a.copy_size();
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

    /// Carry stdin to the container's terminal and its output to stdout, and `signals`
    /// (blocked by the caller) to process `pid` — a change of our terminal's size to its
    /// terminal instead — until `pid` ends; its exit code (128 + the signal that killed it).
    pub fn serve(&self, pid: i32, signals: &nix::sys::signal::SigSet) -> Result<i32> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use nix::sys::signal::Signal;
        use nix::sys::signalfd::{SfdFlags, SignalFd};
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        use std::os::fd::AsFd;
        let sfd = SignalFd::with_flags(signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .ctx(|| "opening a signalfd")?;
        let (stdin, stdout) = (std::io::stdin(), std::io::stdout());
        let (input, output, master) = (stdin.as_fd(), stdout.as_fd(), self.master.as_fd());
        let m = master.as_raw_fd();
        let (mut stdin_open, mut master_open) = (true, true);
        let mut buf = [0u8; 8192];
        loop {
            match waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, c)) => {
                    self.drain();
                    return Ok(c);
                }
                Ok(WaitStatus::Signaled(_, s, _)) => {
                    self.drain();
                    return Ok(128 + s as i32);
                }
                Ok(_) => {}
                Err(e) => return Err(e).ctx(|| "waiting for the container's process"),
            }
            let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
            let mi = master_open.then(|| {
                fds.push(PollFd::new(master, PollFlags::POLLIN));
                fds.len() - 1
            });
            let si = stdin_open.then(|| {
                fds.push(PollFd::new(input, PollFlags::POLLIN));
                fds.len() - 1
            });
            match poll(&mut fds, PollTimeout::NONE) {
                Err(nix::Error::EINTR) => continue,
                r => r.ctx(|| "waiting on the terminal")?,
            };
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            if ready[0] {
                while let Ok(Some(si)) = sfd.read_signal() {
                    match Signal::try_from(si.ssi_signo as i32) {
                        Ok(Signal::SIGCHLD) | Err(_) => {}
                        Ok(Signal::SIGWINCH) => self.copy_size(),
                        Ok(s) => {
                            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), s);
                        }
                    }
                }
            }
            if mi.is_some_and(|i| ready[i]) {
                match nix::unistd::read(m, &mut buf) {
                    Ok(0) | Err(nix::Error::EIO) => master_open = false,
                    Ok(n) => write_all(output, &buf[..n]),
                    Err(_) => {}
                }
            }
            if si.is_some_and(|i| ready[i]) {
                match nix::unistd::read(input.as_raw_fd(), &mut buf) {
                    Ok(0) | Err(nix::Error::EIO) | Err(nix::Error::EBADF) => stdin_open = false,
                    Ok(n) => write_all(master, &buf[..n]),
                    Err(_) => {}
                }
            }
        }
    }

    /// What the container's terminal still holds, out to stdout (without waiting for more).
    fn drain(&self) {
        use std::os::fd::AsFd;
        let (master, stdout) = (self.master.as_fd(), std::io::stdout());
        let mut buf = [0u8; 8192];
        loop {
            let mut p = [nix::poll::PollFd::new(master, nix::poll::PollFlags::POLLIN)];
            if !matches!(nix::poll::poll(&mut p, nix::poll::PollTimeout::from(50u16)), Ok(n) if n > 0)
            {
                return;
            }
            match nix::unistd::read(master.as_raw_fd(), &mut buf) {
                Ok(n) if n > 0 => write_all(stdout.as_fd(), &buf[..n]),
                _ => return,
            }
        }
    }
}

/// Write all of `data` to `fd` (best effort: a closed end drops it).
fn write_all(fd: std::os::fd::BorrowedFd, mut data: &[u8]) {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) if n > 0 => data = &data[n..],
            Err(nix::Error::EINTR) => continue,
            _ => return,
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
