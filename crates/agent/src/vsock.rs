//! Both ends of a microVM's vsock for tests and scripts: inside the guest, a vsock listener
//! that echoes and a client of the host; on the host, a client and a listener speaking the
//! VMM's Unix-socket side (`CONNECT <port>\n`, answered `OK <port>\n`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

fn os(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn vsock_socket() -> Result<OwnedFd, String> {
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(os("vsock socket"));
    }
    // SAFETY: a descriptor we just made.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn addr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain old data.
    let mut a: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    a.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    a.svm_cid = cid;
    a.svm_port = port;
    a
}

/// Copy everything from `r` back to `w` until the end of input.
fn echo(mut r: impl Read, mut w: impl Write) -> Result<usize, String> {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                w.write_all(&buf[..n]).map_err(|e| e.to_string())?;
                total += n;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Guest: listen on vsock `port`, echo one connection to its end.
pub fn guest_echo(port: u32) -> Result<usize, String> {
    use std::os::fd::AsRawFd;
    let s = vsock_socket()?;
    let a = addr(libc::VMADDR_CID_ANY, port);
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: bind and listen on our socket with a valid address.
    unsafe {
        if libc::bind(s.as_raw_fd(), (&a as *const libc::sockaddr_vm).cast(), len) < 0 {
            return Err(os("vsock bind"));
        }
        if libc::listen(s.as_raw_fd(), 1) < 0 {
            return Err(os("vsock listen"));
        }
    }
    // SAFETY: accept on our listening socket.
    let c = unsafe {
        libc::accept4(
            s.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if c < 0 {
        return Err(os("vsock accept"));
    }
    // SAFETY: a descriptor accept just gave us.
    let f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(c) });
    echo(&f, &f)
}

/// Guest: a stream to the host's vsock `port`.
pub fn connect_host(port: u32) -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd;
    let s = vsock_socket()?;
    let a = addr(libc::VMADDR_CID_HOST, port);
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: connect our socket to a valid address.
    if unsafe { libc::connect(s.as_raw_fd(), (&a as *const libc::sockaddr_vm).cast(), len) } < 0 {
        return Err(os(&format!("vsock connect to host port {port}")));
    }
    Ok(std::fs::File::from(s))
}

/// Guest: connect to the host's `port`, send `msg` and a newline, return the reply line.
pub fn guest_send(port: u32, msg: &str) -> Result<String, String> {
    let f = connect_host(port)?;
    (&f).write_all(format!("{msg}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(&f)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    Ok(line.trim_end().to_string())
}

/// Host: reach guest `port` through the VMM's socket `uds` (retrying until `wait` passes:
/// the guest may still be booting), send `msg` and a newline, return the reply line.
pub fn host_send(uds: &Path, port: u32, msg: &str, wait: Duration) -> Result<String, String> {
    let deadline = Instant::now() + wait;
    loop {
        let attempt = (|| -> Result<String, String> {
            let s = UnixStream::connect(uds).map_err(|e| format!("{}: {e}", uds.display()))?;
            (&s).write_all(format!("CONNECT {port}\n").as_bytes())
                .map_err(|e| e.to_string())?;
            let mut r = BufReader::new(&s);
            let mut ok = String::new();
            r.read_line(&mut ok).map_err(|e| e.to_string())?;
            if !ok.starts_with("OK ") {
                return Err(format!("guest port {port}: refused"));
            }
            (&s).write_all(format!("{msg}\n").as_bytes())
                .map_err(|e| e.to_string())?;
            let mut line = String::new();
            r.read_line(&mut line).map_err(|e| e.to_string())?;
            let _ = s.shutdown(std::net::Shutdown::Write);
            Ok(line.trim_end().to_string())
        })();
        match attempt {
            Ok(l) => return Ok(l),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Host: listen on `path` (the VMM's `PATH_PORT`), echo one connection from the guest.
pub fn host_echo(path: &Path) -> Result<usize, String> {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (c, _) = l.accept().map_err(|e| e.to_string())?;
    let n = echo(&c, &c);
    let _ = std::fs::remove_file(path);
    n
}
