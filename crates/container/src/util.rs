//! Small file-system helpers shared by the runtime: atomic writes and path resolution that
//! cannot escape a container's root through symlinks (openat2 with RESOLVE_IN_ROOT).

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Context, Result};

/// The most descriptors [`recv_with_fds`] takes from one message, well under the kernel's
/// SCM_MAX_FD (253).
pub const MAX_FDS: usize = 64;

/// Receive one message on the socket `sock` into `buf`, with the descriptors that came with
/// it (SCM_RIGHTS, made close-on-exec): the bytes read, and the descriptors.
pub fn recv_with_fds(
    sock: std::os::fd::RawFd,
    buf: &mut [u8],
) -> nix::Result<(usize, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; MAX_FDS]);
    let msg = loop {
        match recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(nix::Error::EINTR) => continue,
            r => break r?,
        }
    };
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(got) = c {
            // SAFETY: the kernel just gave us these descriptors; nothing else owns them.
            fds.extend(got.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
        }
    }
    Ok((msg.bytes, fds))
}

/// Write `data` to `path` atomically: a temporary file in the same directory, then rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .ctx(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)
        .ctx(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).ctx(|| format!("renaming {} into place", tmp.display()))?;
    Ok(())
}

/// Write a small value to a kernel file (cgroup, procfs), with the file named in the error.
pub fn write_file(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).ctx(|| format!("writing {value:?} to {}", path.display()))
}

pub fn cstring(s: impl AsRef<std::ffi::OsStr>) -> CString {
    // A string with an interior NUL becomes empty, which every syscall refuses with ENOENT.
    CString::new(s.as_ref().as_bytes().to_vec()).unwrap_or_default()
}

/// Open `path` (absolute or relative, as seen inside the container) beneath `root`, resolving
/// every symlink as if `root` were `/`. Returns an `O_PATH` descriptor.
pub fn open_in_root(root: &OwnedFd, path: &Path, flags: libc::c_int) -> nix::Result<OwnedFd> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let c = cstring(rel);
    // SAFETY: open_how is plain data; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `c` is a valid NUL-terminated string and `how` a valid open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// What to create at a path that does not exist yet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Dir,
    File,
}

/// Make sure `path` exists beneath `root` (creating missing directories, and the last component
/// as `kind`), and return an `O_PATH` descriptor of it. Never leaves `root`.
pub fn ensure_in_root(root: &OwnedFd, path: &Path, kind: Kind) -> nix::Result<OwnedFd> {
    match open_in_root(root, path, libc::O_PATH) {
        Ok(fd) => return Ok(fd),
        Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(e),
    }
    let mut cur = PathBuf::from("/");
    let comps: Vec<_> = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    for (i, comp) in comps.iter().enumerate() {
        let next = cur.join(comp);
        match open_in_root(root, &next, libc::O_PATH) {
            Ok(_) => {}
            Err(nix::Error::ENOENT) => {
                let parent = open_in_root(root, &cur, libc::O_PATH | libc::O_DIRECTORY)?;
                let name = cstring(comp.as_os_str());
                let last = i + 1 == comps.len();
                // SAFETY: parent is an open directory descriptor and name a valid C string.
                let r = unsafe {
                    if last && kind == Kind::File {
                        let fd = libc::openat(
                            parent.as_raw_fd(),
                            name.as_ptr(),
                            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                            0o644,
                        );
                        if fd >= 0 {
                            libc::close(fd);
                        }
                        fd.min(0)
                    } else {
                        libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o755)
                    }
                };
                if r < 0 {
                    let e = nix::Error::last();
                    if e != nix::Error::EEXIST {
                        return Err(e);
                    }
                }
            }
            Err(e) => return Err(e),
        }
        cur = next;
    }
    open_in_root(root, path, libc::O_PATH)
}

/// The `/proc/self/fd/N` path of a descriptor, for syscalls that take a path.
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The fields of /proc/PID/stat after the command's closing parenthesis (state first).
fn stat_fields(pid: i32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat[stat.rfind(')')? + 2..].to_string())
}

/// State letter (field 3: 'Z' for a zombie) and start time (field 22, to tell a pid from a
/// reused one) of a process, from one read of /proc/PID/stat.
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let after = stat_fields(pid)?;
    let state = after.chars().next()?;
    Some((state, after.split_whitespace().nth(19)?.parse().ok()?))
}

/// State letter and parent (field 4) of a process, from one read of /proc/PID/stat.
pub fn proc_parent(pid: i32) -> Option<(char, i32)> {
    let after = stat_fields(pid)?;
    let mut f = after.split_whitespace();
    let state = f.next()?.chars().next()?;
    Some((state, f.next()?.parse().ok()?))
}

/// `path` (a directory or a file) opened and locked with flock, exclusively, until the file
/// is closed; with `wait` false, EWOULDBLOCK while another holds it.
pub fn flock(path: &Path, wait: bool) -> std::io::Result<fs::File> {
    let f = fs::File::open(path)?;
    let how = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), how) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(f)
}

/// Start time of a process, see [`proc_stat`].
pub fn proc_start_time(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|s| s.1)
}

/// Seconds since the epoch, with nanoseconds, as RFC 3339 UTC text.
pub fn rfc3339_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs() as i64, d.subsec_nanos())
}

pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_700_000_000, 5), "2023-11-14T22:13:20.000000005Z");
        assert_eq!(rfc3339(951_782_400, 0), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn ensure_in_root_stays_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        // A symlink pointing outside the root must resolve inside it.
        std::os::unix::fs::symlink("/", root.join("escape")).unwrap();
        let rootfd: OwnedFd = fs::File::open(&root).unwrap().into();
        ensure_in_root(&rootfd, Path::new("/escape/made/here"), Kind::Dir).unwrap();
        assert!(root.join("made/here").is_dir());
        ensure_in_root(&rootfd, Path::new("/a/file"), Kind::File).unwrap();
        assert!(root.join("a/file").is_file());
    }
}
