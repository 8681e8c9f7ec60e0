//! `cellvisor-app [ASSETS]`: what `cellvisor bench` starts to time an application's start. A
//! dynamically linked program (its libraries are loaded at start, as an application's are)
//! that maps its assets (default /app/assets.bin, 32 MiB), reads every page of them, and
//! prints one line: the moment it is ready.

use std::os::fd::AsRawFd;

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/app/assets.bin".into());
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cellvisor-app: {path}: {e}");
            std::process::exit(1);
        }
    };
    let len = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
    let mut sum: u64 = 0;
    if len > 0 {
        // SAFETY: a private read-only mapping of a file we opened; checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            eprintln!("cellvisor-app: mmap: {}", std::io::Error::last_os_error());
            std::process::exit(1);
        }
        // SAFETY: the mapping is `len` readable bytes until munmap below.
        let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, len) };
        for page in bytes.chunks(4096) {
            sum = sum.wrapping_add(page[0] as u64);
        }
        // SAFETY: unmapping what we mapped.
        unsafe { libc::munmap(p, len) };
    }
    println!("ready {sum}");
}
