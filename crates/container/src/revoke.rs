//! Taking a device back from a domain that holds it open. Removing the node from the domain's
//! /dev and denying it in the devices cgroup stop new opens; a descriptor opened before needs
//! the revocation its device class has ([`revocation`], pure):
//! - a terminal is hung up (TIOCVHANGUP, what logind does to a session's VT): every
//!   descriptor open on it, in any process, then reads end-of-file and fails to write, while
//!   new opens (the next foreground's) work;
//! - an input event device (evdev) held by the domain's processes is revoked descriptor by
//!   descriptor: the daemon takes a copy of each (pidfd_getfd: the same open file) and calls
//!   EVIOCREVOKE on it, after which reads, writes and ioctls of every copy fail with ENODEV;
//! - a DRM card's primary node loses its master the same way (DRM_IOCTL_DROP_MASTER on the
//!   copy, as logind does at a session switch): the old foreground can no longer set modes or
//!   show anything while a new one is master;
//! - a device whose class has no revocation in the kernel (a V4L2 camera, a framebuffer, the
//!   console's screen memory, a block device, ...) is taken back by killing (SIGKILL) the
//!   domain's processes that hold it open: the only way to close another process's
//!   descriptor that is just as final.
//!
//! A DRM card reaches a domain only through its port ([`port_only`]): the daemon opens it,
//! so no process of a domain is ever a file's opener, the one who may take master back
//! alone; the foreground's files get master back from the daemon ([`restore`]), as logind's
//! sessions do.
//!
//! The holders are found by scanning the descriptors of the domain's processes (every cgroup
//! below its own): a descriptor in flight in a Unix socket at that moment is not seen
//! (docs/platform.md, Known limits).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// How a device's open descriptors are taken back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// A terminal: hung up.
    Hangup,
    /// An evdev input device: EVIOCREVOKE on every held descriptor.
    Revoke,
    /// A DRM card's primary node: its master dropped on every held descriptor.
    DropMaster,
    /// No revocation in the class: the processes holding it are killed.
    KillHolders,
    /// Not one domain's device (/dev/null and its kind, /dev/tty, /dev/console, /dev/ptmx):
    /// left alone.
    Unsupported,
}

impl Revocation {
    /// How it reads in the daemon's log.
    pub fn describe(self) -> &'static str {
        match self {
            Revocation::Hangup => "hung up",
            Revocation::Revoke => "revoked (EVIOCREVOKE)",
            Revocation::DropMaster => "DRM master dropped",
            Revocation::KillHolders => "holders killed",
            Revocation::Unsupported => "left open",
        }
    }
}

/// The revocation of a character (`c`) or block (`b`) device of `major` and `minor`.
/// Terminals: virtual consoles and serial ports (4), pseudo-terminal slaves (136-143), USB
/// serial (166, 188), low-density serial (204). Input (13): event devices are minors 64-95
/// and, past 32 of them, 256 and up; joysticks and mice below 64 have no revoke. DRM (226):
/// primary nodes are minors 0-63; render nodes have no master. Memory devices (1) and
/// /dev/tty, /dev/console, /dev/ptmx (5) are not one domain's.
pub fn revocation(kind: char, major: u32, minor: u32) -> Revocation {
    match (kind, major) {
        ('c', 1 | 5) => Revocation::Unsupported,
        ('c', 4 | 136..=143 | 166 | 188 | 204) => Revocation::Hangup,
        ('c', 13) if (64..96).contains(&minor) || minor >= 256 => Revocation::Revoke,
        ('c', 226) if minor < 64 => Revocation::DropMaster,
        _ => Revocation::KillHolders,
    }
}

/// What a revocation did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    pub how: Revocation,
    /// Descriptors revoked one by one (or whose master was dropped).
    pub descriptors: usize,
    /// Processes killed for holding it.
    pub killed: Vec<i32>,
}

impl std::fmt::Display for Revoked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.how.describe())?;
        match self.how {
            Revocation::Revoke | Revocation::DropMaster => {
                write!(f, ": {} descriptor(s)", self.descriptors)
            }
            Revocation::KillHolders if self.killed.is_empty() => write!(f, ": none held it"),
            Revocation::KillHolders => write!(f, ": pid {:?}", self.killed),
            _ => Ok(()),
        }
    }
}

// The ioctls, from linux/input.h and drm/drm.h.
const EVIOCREVOKE: libc::c_ulong = 0x4004_4591; // _IOW('E', 0x91, int)
const DRM_IOCTL_SET_MASTER: libc::c_ulong = 0x641e; // _IO('d', 0x1e)
const DRM_IOCTL_AUTH_MAGIC: libc::c_ulong = 0x4004_6411; // _IOW('d', 0x11, struct drm_auth)
const DRM_IOCTL_DROP_MASTER: libc::c_ulong = 0x641f; // _IO('d', 0x1f)

/// How long killed holders may take to be gone before the revocation fails.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Revoke every descriptor open on the host device `node` (of `kind`, `major`, `minor`), as
/// [`revocation`] says: a terminal on its node; otherwise in the processes `pids` lists (the
/// domain's), asked again after holders were killed, until none holds it. A descriptor
/// revoked before (the same file seen twice, or kept from an earlier switch) is left as it
/// is; an input device that turns out to have no EVIOCREVOKE (a joystick or mouse past the
/// fixed minors) is taken by killing its holder.
pub fn revoke(
    node: &Path,
    (kind, major, minor): (char, u32, u32),
    pids: impl Fn() -> io::Result<Vec<i32>>,
) -> io::Result<Revoked> {
    let how = revocation(kind, major, minor);
    let mut done = Revoked {
        how,
        descriptors: 0,
        killed: Vec::new(),
    };
    let rdev = libc::makedev(major, minor);
    let mut to_kill = Vec::new();
    match how {
        Revocation::Unsupported => {}
        Revocation::Hangup => hang_up(node)?,
        Revocation::Revoke | Revocation::DropMaster => {
            for (pid, fd) in holders(&pids()?, kind, rdev) {
                let Some(copy) = their_copy(pid, fd, kind, rdev)? else {
                    continue;
                };
                match revoke_copy(&copy, how) {
                    Ok(true) => done.descriptors += 1,
                    Ok(false) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)) => {
                        to_kill.push(pid)
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Revocation::KillHolders => to_kill.push(0),
    }
    if !to_kill.is_empty() {
        kill_holders(kind, rdev, &pids, &mut done.killed)?;
    }
    Ok(done)
}

/// Kill every process of `pids` holding the device `rdev` of `kind`, again until none does
/// (a holder may fork between a scan and its kill: its child holds the same descriptor and
/// is found on the next pass), for [`KILL_WAIT`] at most.
fn kill_holders(
    kind: char,
    rdev: libc::dev_t,
    pids: &impl Fn() -> io::Result<Vec<i32>>,
    killed: &mut Vec<i32>,
) -> io::Result<()> {
    let end = Instant::now() + KILL_WAIT;
    loop {
        let mut held: Vec<i32> = holders(&pids()?, kind, rdev)
            .into_iter()
            .map(|h| h.0)
            .collect();
        held.dedup();
        if held.is_empty() {
            return Ok(());
        }
        if Instant::now() > end {
            return Err(io::Error::other(format!(
                "processes {held:?} still hold it after SIGKILL"
            )));
        }
        for &pid in &held {
            if kill_holder(pid, kind, rdev)? && !killed.contains(&pid) {
                killed.push(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGKILL process `pid` if it (still) holds the device: through a pidfd taken before the
/// second look, so a pid reused meanwhile is never the one signalled.
fn kill_holder(pid: i32, kind: char, rdev: libc::dev_t) -> io::Result<bool> {
    let Some(pidfd) = pidfd(pid)? else {
        return Ok(false);
    };
    if holders(&[pid], kind, rdev).is_empty() {
        return Ok(false);
    }
    // SAFETY: pidfd_send_signal takes a pidfd, a signal, no siginfo and no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return gone(io::Error::last_os_error()).map(|_: Option<()>| false);
    }
    Ok(true)
}

/// A device a domain gets only from its port (the daemon opens it), never as a node in its
/// /dev: a DRM card's primary node. A file's opener may take master back by itself whenever
/// nobody holds it, so every file open on the card must be the daemon's for a dropped master
/// to stay dropped.
pub fn port_only(kind: char, major: u32, minor: u32) -> bool {
    revocation(kind, major, minor) == Revocation::DropMaster
}

/// Revoke through `copy`, a descriptor of the same open file the domain holds (one the
/// daemon handed out and kept, or one taken from the domain), as `how` says: EVIOCREVOKE or
/// DROP_MASTER. Whether it took something: an input file revoked before, a DRM file that is
/// not master, or a class revoked otherwise took nothing.
pub fn revoke_copy(copy: &OwnedFd, how: Revocation) -> io::Result<bool> {
    let (request, nothing) = match how {
        Revocation::Revoke => (EVIOCREVOKE, libc::ENODEV),
        Revocation::DropMaster => (DRM_IOCTL_DROP_MASTER, libc::EINVAL),
        _ => return Ok(false),
    };
    match ioctl0(copy, request) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(nothing) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Make the DRM file behind `copy` master again (the daemon's, as logind does when a session
/// comes back); false while another file is master.
pub fn restore_master(copy: &OwnedFd) -> io::Result<bool> {
    match ioctl0(copy, DRM_IOCTL_SET_MASTER) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Is the DRM file behind `f` master? (AUTH_MAGIC is the master's only: with a magic of 0 it
/// answers EINVAL to the master and EACCES to anyone else, and changes nothing.)
pub fn is_master(f: &OwnedFd) -> bool {
    let mut magic = 0u32;
    // SAFETY: DRM_IOCTL_AUTH_MAGIC reads a struct drm_auth (one u32) we own.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), DRM_IOCTL_AUTH_MAGIC, &mut magic) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL)
}

fn hang_up(node: &Path) -> io::Result<()> {
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
    Ok(())
}

/// The descriptors (pid, fd) that the processes `pids` hold open on the device `rdev` of
/// `kind`; a process or descriptor gone meanwhile is skipped.
pub fn holders(pids: &[i32], kind: char, rdev: libc::dev_t) -> Vec<(i32, i32)> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    for &pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in fds.flatten() {
            let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            // The link's target: the node the process opened, wherever its root is.
            let Ok(m) = std::fs::metadata(e.path()) else {
                continue;
            };
            if is_the_device(m.mode(), m.rdev(), kind, rdev) {
                found.push((pid, fd));
            }
        }
    }
    found
}

/// A pidfd of process `pid`; `None` if it is gone.
fn pidfd(pid: i32) -> io::Result<Option<OwnedFd>> {
    // SAFETY: pidfd_open takes a pid and flags; it returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return gone(io::Error::last_os_error());
    }
    // SAFETY: a descriptor pidfd_open just returned, owned from here on.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
}

/// A copy of descriptor `fd` of process `pid` (the same open file, so what is done to it is
/// done to every copy), if it still is the device `rdev` of `kind` (the process may have
/// closed it and opened something else there since it was seen). `None`: it is not, or the
/// process exited or closed it meanwhile.
fn their_copy(pid: i32, fd: i32, kind: char, rdev: libc::dev_t) -> io::Result<Option<OwnedFd>> {
    let Some(pidfd) = pidfd(pid)? else {
        return Ok(None);
    };
    // SAFETY: pidfd_getfd takes a pidfd, the target's descriptor number and flags.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if copy < 0 {
        return gone(io::Error::last_os_error());
    }
    // SAFETY: as above; the copy is closed when dropped.
    let copy = unsafe { OwnedFd::from_raw_fd(copy as i32) };
    let st = nix::sys::stat::fstat(copy.as_raw_fd())?;
    Ok(is_the_device(st.st_mode, st.st_rdev, kind, rdev).then_some(copy))
}

/// Is a file of mode `mode` (type bits included) and device number `dev` the device `rdev`
/// of `kind` (`c` or `b`)?
fn is_the_device(mode: u32, dev: u64, kind: char, rdev: libc::dev_t) -> bool {
    let want = if kind == 'b' {
        libc::S_IFBLK
    } else {
        libc::S_IFCHR
    };
    mode & libc::S_IFMT == want && dev == rdev
}

/// An ioctl that takes no argument (EVIOCREVOKE's int is ignored; 0 is passed).
fn ioctl0(f: &OwnedFd, request: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the requests used here read no argument pointer; `f` is open.
    if unsafe { libc::ioctl(f.as_raw_fd(), request, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A process that exited (ESRCH) or closed the descriptor (EBADF) holds nothing any more.
fn gone<T>(e: io::Error) -> io::Result<Option<T>> {
    match e.raw_os_error() {
        Some(libc::ESRCH | libc::EBADF) => Ok(None),
        _ => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_device_class_has_its_revocation() {
        assert_eq!(revocation('c', 4, 1), Revocation::Hangup);
        assert_eq!(revocation('c', 136, 3), Revocation::Hangup);
        assert_eq!(revocation('c', 5, 0), Revocation::Unsupported);
        assert_eq!(revocation('c', 1, 3), Revocation::Unsupported);
        assert_eq!(revocation('c', 13, 64), Revocation::Revoke);
        assert_eq!(revocation('c', 13, 95), Revocation::Revoke);
        assert_eq!(revocation('c', 13, 300), Revocation::Revoke);
        assert_eq!(revocation('c', 13, 63), Revocation::KillHolders); // /dev/input/mice
        assert_eq!(revocation('c', 226, 0), Revocation::DropMaster);
        assert_eq!(revocation('c', 226, 128), Revocation::KillHolders); // a render node
        assert_eq!(revocation('c', 81, 0), Revocation::KillHolders); // /dev/video0
        assert_eq!(revocation('c', 29, 0), Revocation::KillHolders); // /dev/fb0
        assert_eq!(revocation('c', 7, 1), Revocation::KillHolders); // /dev/vcs1
        assert_eq!(revocation('b', 4, 0), Revocation::KillHolders);
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
        let (kind, major, minor, _) = crate::backend::device_node(&name).unwrap();
        let r = revoke(&name, (kind, major, minor), || Ok(vec![])).unwrap();
        assert_eq!(r.how, Revocation::Hangup);
        let e = held.write_all(b"after").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
        let mut again = std::fs::OpenOptions::new().write(true).open(&name).unwrap();
        again.write_all(b"next").unwrap();
    }

    /// The scan finds a device's holders by its number (a pty slave this process holds),
    /// skips a process that does not exist, and tells block from character devices.
    #[test]
    fn holders_are_found_by_their_device_number() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let name = std::fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd())).unwrap();
        let (kind, major, minor, _) = crate::backend::device_node(&name).unwrap();
        let me = std::process::id() as i32;
        let found = holders(&[me, i32::MAX], kind, libc::makedev(major, minor));
        assert!(found.contains(&(me, pty.slave.as_raw_fd())), "{found:?}");
        assert!(found.iter().all(|&(p, _)| p == me));
        // Block devices are not confused with character devices of the same numbers.
        assert!(holders(&[me], 'b', libc::makedev(major, minor)).is_empty());
    }

    /// A device with no revocation (the tun device: misc, major 10): the domain's process
    /// holding it is killed, and the one that does not hold it is left.
    #[test]
    fn a_device_without_revocation_is_taken_from_its_holders() {
        let tun = Path::new("/dev/net/tun");
        let Ok((kind, major, minor, _)) = crate::backend::device_node(tun) else {
            return;
        };
        assert_eq!(revocation(kind, major, minor), Revocation::KillHolders);
        let spawn = |script: &str| {
            std::process::Command::new("sh")
                .args(["-c", script])
                .spawn()
                .unwrap()
        };
        let mut holder = spawn("exec sleep 60 3</dev/net/tun");
        let mut other = spawn("exec sleep 60");
        let pids = vec![holder.id() as i32, other.id() as i32];
        // Until the holder has it open (sh opens it before exec).
        let rdev = libc::makedev(major, minor);
        let end = Instant::now() + Duration::from_secs(10);
        while holders(&pids, kind, rdev).is_empty() {
            assert!(Instant::now() < end, "the holder never opened it");
            std::thread::sleep(Duration::from_millis(5));
        }
        let r = revoke(tun, (kind, major, minor), || Ok(pids.clone())).unwrap();
        assert_eq!(r.killed, [pids[0]], "{r}");
        let status = holder.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(
            other.try_wait().unwrap().is_none(),
            "the other was killed too"
        );
        other.kill().unwrap();
        other.wait().unwrap();
    }
}
