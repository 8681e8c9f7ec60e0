//! Defence against the CVE-2019-5736 class: a container process that opens the runtime's
//! `/proc/PID/exe` while the runtime is inside the container could write the runtime binary
//! on the host once the runtime has exited.
//!
//! Two layers. The runtime marks itself non-dumpable before it enters a container (`init`),
//! which keeps every process without CAP_SYS_PTRACE from opening that link at all. A container
//! whose process may hold CAP_SYS_PTRACE passes that check, so for it the runtime first
//! re-executes from a sealed in-memory copy of its binary: `/proc/PID/exe` then names the
//! copy, which nobody can write. The copy costs a few milliseconds (every page of it is new
//! memory), which is why it is kept to the containers that need it.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use crate::error::{Context, Error, Result};

const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// Does a process with these capabilities defeat the non-dumpable layer?
pub fn needs_sealed_copy(p: &oci_spec::runtime::Process) -> bool {
    p.capabilities().as_ref().is_some_and(|c| {
        [c.bounding(), c.effective(), c.permitted()]
            .iter()
            .any(|s| {
                s.as_ref()
                    .is_some_and(|s| s.contains(&oci_spec::runtime::Capability::SysPtrace))
            })
    })
}

/// Is this process running from a sealed copy already?
pub fn is_sealed() -> bool {
    let Ok(f) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    // SAFETY: F_GET_SEALS takes no argument; f is open.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
}

/// Re-execute from a sealed memfd copy of our binary, unless already running from one.
/// Returns only on error (or when already sealed).
pub fn reexec_sealed() -> Result<()> {
    if is_sealed() {
        return Ok(());
    }
    let src = std::fs::File::open("/proc/self/exe").ctx(|| "opening /proc/self/exe")?;
    let len = src.metadata().ctx(|| "stat /proc/self/exe")?.len();
    // SAFETY: memfd_create with a valid name; the result is checked.
    let fd = unsafe {
        libc::memfd_create(
            c"cellvisor".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| "memfd_create");
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let mem = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut left = len as usize;
    while left > 0 {
        // SAFETY: both descriptors are open; sendfile copies in the kernel.
        let n =
            unsafe { libc::sendfile(mem.as_raw_fd(), src.as_raw_fd(), std::ptr::null_mut(), left) };
        if n <= 0 {
            return Err(std::io::Error::last_os_error()).ctx(|| "copying the runtime binary");
        }
        left -= n as usize;
    }
    // SAFETY: F_ADD_SEALS with an int argument on our memfd.
    if unsafe { libc::fcntl(mem.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| "sealing the runtime copy");
    }
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_default())
        .collect();
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut b = k.as_bytes().to_vec();
            b.push(b'=');
            b.extend_from_slice(v.as_bytes());
            CString::new(b).unwrap_or_default()
        })
        .collect();
    let e = nix::unistd::fexecve(mem.as_raw_fd(), &args, &env).unwrap_err();
    Err(Error::Sys {
        what: "re-executing from the sealed copy".into(),
        source: e,
    })
}
