//! The roots the benchmarks run their workloads in: a busybox root filesystem, and the
//! macrobenchmarks' application installed into one with the libraries it loads.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{io, Error, Result};

/// A busybox root filesystem in `dir` (static /bin/busybox and one link per applet).
pub fn busybox(dir: &Path) -> Result<()> {
    let bb = Path::new("/bin/busybox");
    if !bb.exists() {
        return Err(Error::Msg(
            "/bin/busybox is missing (apt-get install busybox-static)".into(),
        ));
    }
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        io(std::fs::create_dir_all(dir.join(d)), || {
            format!("creating {}", dir.join(d).display())
        })?;
    }
    io(std::fs::copy(bb, dir.join("bin/busybox")), || {
        "copying busybox".into()
    })?;
    let list = io(Command::new(bb).arg("--list").output(), || {
        "busybox --list".into()
    })?;
    for applet in String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|a| *a != "busybox")
    {
        let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
    }
    Ok(())
}

/// The interpreter (dynamic loader) an ELF program names (PT_INTERP), if any.
fn interpreter(elf: &[u8]) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    // A 64-bit little-endian ELF only (the suite's application is built here).
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (phoff, phentsize, phnum) = (u64_at(0x20)? as usize, u16_at(0x36)?, u16_at(0x38)?);
    (0..phnum as usize).find_map(|i| {
        let ph = phoff + i * phentsize as usize;
        if elf.get(ph..ph + 4)? != 3u32.to_le_bytes() {
            return None; // not PT_INTERP
        }
        let (off, len) = (u64_at(ph + 8)? as usize, u64_at(ph + 32)? as usize);
        let name = elf.get(off..off + len)?.split(|&b| b == 0).next()?;
        Some(PathBuf::from(std::ffi::OsStr::from_bytes(name)))
    })
}

/// The shared libraries a dynamic program loads, its interpreter too: what its loader's
/// `--list` prints (as `ldd` does, without needing ldd on the machine).
fn libraries(program: &Path) -> Result<Vec<PathBuf>> {
    let elf = io(std::fs::read(program), || {
        format!("reading {}", program.display())
    })?;
    let Some(interp) = interpreter(&elf) else {
        return Ok(Vec::new()); // static
    };
    let out = io(
        Command::new(&interp).arg("--list").arg(program).output(),
        || format!("{} --list {}", interp.display(), program.display()),
    )?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect())
}

/// The application of the macrobenchmarks in `rootfs/app`: the dynamically linked
/// `cellvisor-app` with its libraries (copies, at their paths: a start after eviction reads
/// them from disk), 32 MiB of assets, and the list of those files (`/app/files`).
pub fn install_app(rootfs: &Path, app: &Path) -> Result<()> {
    let dir = rootfs.join("app");
    io(std::fs::create_dir_all(&dir), || {
        format!("creating {}", dir.display())
    })?;
    io(std::fs::copy(app, dir.join("cellvisor-app")), || {
        format!("copying {}", app.display())
    })?;
    let mut files = vec![PathBuf::from("/app/cellvisor-app")];
    for lib in libraries(app)? {
        copy_into(rootfs, &lib)?;
        files.push(lib);
    }
    let mut assets = vec![0u8; 32 << 20];
    let mut seed: u64 = 0x1234_5678_9abc_def1;
    for chunk in assets.chunks_mut(8) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
    }
    io(std::fs::write(dir.join("assets.bin"), &assets), || {
        "writing the assets".into()
    })?;
    files.push("/app/assets.bin".into());
    let list: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
    io(std::fs::write(dir.join("files"), list), || {
        "writing /app/files".into()
    })
}

/// Host file `f` copied into `rootfs` at the same path.
fn copy_into(rootfs: &Path, f: &Path) -> Result<()> {
    let dst = rootfs.join(f.strip_prefix("/").unwrap_or(f));
    if let Some(d) = dst.parent() {
        io(std::fs::create_dir_all(d), || {
            format!("creating {}", d.display())
        })?;
    }
    io(std::fs::copy(f, &dst), || {
        format!("copying {}", f.display())
    })
    .map(drop)
}

/// Program `name` from the host (host::program), with the libraries it loads, copied into
/// `rootfs` at the same paths: where it is there, or None when the host has none.
pub fn install_program(rootfs: &Path, name: &str) -> Result<Option<String>> {
    let Some(prog) = crate::host::program(name) else {
        return Ok(None);
    };
    for f in std::iter::once(prog.clone()).chain(libraries(&prog)?) {
        copy_into(rootfs, &f)?;
    }
    Ok(Some(prog.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_programs_loader_and_libraries_are_found() {
        // This test binary is dynamically linked: its loader, then libc among its libraries.
        let me = std::env::current_exe().unwrap();
        let interp = interpreter(&std::fs::read(&me).unwrap()).unwrap();
        assert!(
            interp.is_absolute() && interp.exists(),
            "{}",
            interp.display()
        );
        let libs = libraries(&me).unwrap();
        assert!(libs.contains(&interp), "{libs:?}");
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
        assert_eq!(interpreter(b"\x7fELF\x01\x01 32-bit"), None);
        assert_eq!(interpreter(b"#!/bin/sh"), None);
    }
}
