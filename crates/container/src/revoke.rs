//! Taking a device back from a domain that holds it open. Removing the node from the domain's
//! /dev and denying it in the devices cgroup stop new opens; a descriptor opened before needs
//! the revocation its device class has. A terminal is hung up (TIOCVHANGUP, what logind does
//! to a session's VT): every descriptor open on it, in any process, then reads end-of-file and
//! fails to write, while new opens (the next foreground's) work. Classes without such a
//! mechanism here keep what they opened (docs/platform.md, Known limits).

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// How a device's open descriptors are taken back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// A terminal: hung up.
    Hangup,
    /// No mechanism: open descriptors stay usable.
    Unsupported,
}

/// The revocation of a character (`c`) or block (`b`) device of `major`: the terminals a
/// domain can be given (virtual consoles and serial ports 4, pseudo-terminal slaves 136-143,
/// USB serial 166 and 188, low-density serial 204); never /dev/tty, /dev/console or /dev/ptmx
/// (5), which are not one domain's.
pub fn revocation(kind: char, major: u32) -> Revocation {
    match (kind, major) {
        ('c', 4 | 136..=143 | 166 | 188 | 204) => Revocation::Hangup,
        _ => Revocation::Unsupported,
    }
}

/// Revoke every descriptor open on the host device `node` (of `kind` and `major`), as
/// [`revocation`] says; which mechanism it was.
pub fn revoke(node: &Path, kind: char, major: u32) -> io::Result<Revocation> {
    let r = revocation(kind, major);
    if r == Revocation::Hangup {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(node)?;
        // SAFETY: TIOCVHANGUP takes no argument; `f` is an open terminal.
        if unsafe { libc::ioctl(f.as_raw_fd(), libc::TIOCVHANGUP) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminals_are_hung_up_and_the_shared_ones_left_alone() {
        assert_eq!(revocation('c', 4), Revocation::Hangup);
        assert_eq!(revocation('c', 136), Revocation::Hangup);
        assert_eq!(revocation('c', 5), Revocation::Unsupported);
        assert_eq!(revocation('b', 4), Revocation::Unsupported);
        assert_eq!(revocation('c', 13), Revocation::Unsupported);
    }

    /// A pseudo-terminal stands in for a console: the descriptor opened before is dead after,
    /// a new open works. (Needs root: TIOCVHANGUP wants CAP_SYS_TTY_CONFIG.)
    #[test]
    fn a_hung_up_terminal_is_dead_to_those_who_held_it() {
        use std::io::Write;
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let pty = nix::pty::openpty(None, None).unwrap();
        let name = std::fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd())).unwrap();
        let mut held = std::fs::OpenOptions::new().write(true).open(&name).unwrap();
        held.write_all(b"before").unwrap();
        let (kind, major, ..) = crate::backend::device_node(&name).unwrap();
        assert_eq!(revoke(&name, kind, major).unwrap(), Revocation::Hangup);
        let e = held.write_all(b"after").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
        let mut again = std::fs::OpenOptions::new().write(true).open(&name).unwrap();
        again.write_all(b"next").unwrap();
    }
}
