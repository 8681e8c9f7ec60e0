//! The sockets' reaper: removes the VMM's Unix sockets (vsock's, the control socket) when the
//! VMM dies without doing so.

use std::path::PathBuf;

/// A small process forked before the VMM starts its vCPUs: it waits for the end of a pipe
/// whose other end only the VMM holds, and then removes each socket that is still the one the
/// VMM bound (same inode: a later VMM's socket at the same path is left alone). One for all of
/// a VM's sockets.
pub(crate) struct Reaper {
    pid: libc::pid_t,
    pipe: Option<std::os::fd::OwnedFd>,
}

/// A reaper for the sockets at `paths` (bound already).
pub(crate) fn spawn_reaper(paths: &[PathBuf]) -> std::io::Result<Reaper> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    // Everything the child uses is made before the fork: paths, inodes.
    let mut socks = Vec::new();
    for p in paths {
        let c = std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::other(format!("{}: a NUL in the path", p.display())))?;
        // SAFETY: stat(2) into a zeroed local struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a live stat buffer.
        if unsafe { libc::stat(c.as_ptr(), &mut st) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        socks.push((c, st.st_ino, st.st_dev));
    }
    let mut fds = [0; 2];
    // SAFETY: pipe2 into a two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the child only makes async-signal-safe calls (signal, dup2, close_range, read,
    // stat, unlink) on data prepared before the fork, then _exits.
    match unsafe { libc::fork() } {
        -1 => {
            let e = std::io::Error::last_os_error();
            // SAFETY: closing the pipe we just made.
            unsafe {
                libc::close(fds[0]);
                libc::close(fds[1]);
            }
            Err(e)
        }
        // SAFETY: in the forked child: async-signal-safe calls only (see above).
        0 => unsafe {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            libc::dup2(fds[0], 0);
            // Nothing of the VMM's stays open here: not the pipe's write end, not its VM.
            libc::syscall(libc::SYS_close_range, 1u32, u32::MAX, 0u32);
            let mut b = 0u8;
            loop {
                let n = libc::read(0, (&mut b as *mut u8).cast(), 1);
                if n == 0 || (n < 0 && *libc::__errno_location() != libc::EINTR) {
                    break;
                }
            }
            for (c, ino, dev) in &socks {
                let mut now: libc::stat = std::mem::zeroed();
                if libc::stat(c.as_ptr(), &mut now) == 0 && now.st_ino == *ino && now.st_dev == *dev
                {
                    libc::unlink(c.as_ptr());
                }
            }
            libc::_exit(0)
        },
        pid => {
            // SAFETY: the read end is the child's now; the write end is ours alone.
            unsafe { libc::close(fds[0]) };
            Ok(Reaper {
                pid,
                // SAFETY: a descriptor pipe2 gave us and nobody else owns.
                pipe: Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fds[1]) }),
            })
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // Closing our end wakes the reaper, which finds the socket gone and exits.
        self.pipe.take();
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), 0) };
    }
}

/// Remove the socket at `path` through `dir`, the descriptor of its directory held open from
/// the start (the main thread's seccomp filter allows unlinkat on such descriptors only).
pub(crate) fn unlink_in(dir: &std::fs::File, path: &std::path::Path) {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let Some(name) = path.file_name() else {
        return;
    };
    let Ok(name) = std::ffi::CString::new(name.as_bytes()) else {
        return;
    };
    // SAFETY: unlinkat with a directory descriptor the caller owns and a NUL-terminated name.
    unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) };
}
