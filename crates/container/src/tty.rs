//! Terminals: with `process.terminal`, the container's process gets a new pseudo-terminal as
//! its stdio and controlling terminal, and the master side is sent to the caller's console
//! socket (SCM_RIGHTS), as runc and crun do.

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
