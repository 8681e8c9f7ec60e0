//! Cells' file-system layout: every domain sees one read-only base root filesystem, shared by
//! all of them (stored and cached once), through an overlay with a private writable layer of
//! its own. [`Layered::prepare`] makes `<dir>/{upper,work,rootfs}` and mounts the overlay at
//! `rootfs`; [`Layered::remove`] unmounts it and deletes the private layer.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Context, Error, Result};

/// A domain's root: the shared base under its private layer.
#[derive(Debug, Clone)]
pub struct Layered {
    pub base: PathBuf,
    /// Holds `upper` (the domain's writes), `work` (overlayfs scratch) and `rootfs` (the mount).
    pub dir: PathBuf,
}

impl Layered {
    pub fn new(base: &Path, dir: &Path) -> Self {
        Layered {
            base: base.to_path_buf(),
            dir: dir.to_path_buf(),
        }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    /// Is the overlay mounted at `rootfs`?
    pub fn is_mounted(&self) -> bool {
        let target = self.rootfs();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(4).is_some_and(|m| Path::new(m) == target))
    }

    /// Create the private layer (kept if it exists: a domain keeps its writes across restarts)
    /// and mount the overlay. Nothing is left mounted if it fails.
    pub fn prepare(&self) -> Result<PathBuf> {
        if !self.base.is_dir() {
            return Err(Error::Msg(format!(
                "base root filesystem {} is not a directory",
                self.base.display()
            )));
        }
        let fresh = !self.dir.exists();
        for d in ["upper", "work", "rootfs"] {
            let p = self.dir.join(d);
            std::fs::create_dir_all(&p).ctx(|| format!("creating {}", p.display()))?;
        }
        if self.is_mounted() {
            return Ok(self.rootfs());
        }
        let r = self.mount_overlay();
        if r.is_err() && fresh {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        r
    }

    fn mount_overlay(&self) -> Result<PathBuf> {
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            escape(&self.base),
            escape(&self.upper()),
            escape(&self.dir.join("work"))
        );
        mount(
            Some("overlay"),
            &self.rootfs(),
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
        .ctx(|| format!("mounting the overlay at {}", self.rootfs().display()))?;
        Ok(self.rootfs())
    }

    /// Unmount the overlay, keeping the private layer.
    pub fn unmount(&self) -> Result<()> {
        if self.is_mounted() {
            umount2(&self.rootfs(), MntFlags::MNT_DETACH)
                .ctx(|| format!("unmounting {}", self.rootfs().display()))?;
        }
        Ok(())
    }

    /// Unmount and delete the private layer.
    pub fn remove(&self) -> Result<()> {
        self.unmount()?;
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx(|| format!("removing {}", self.dir.display())),
        }
    }

    /// Bytes the domain has written (its private layer), as `du` counts them.
    pub fn private_bytes(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(m) = std::fs::symlink_metadata(p) else {
                return 0;
            };
            use std::os::unix::fs::MetadataExt;
            let own = m.blocks() * 512;
            if m.is_dir() {
                own + std::fs::read_dir(p)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| walk(&e.path()))
                    .sum::<u64>()
            } else {
                own
            }
        }
        walk(&self.upper())
    }
}

/// overlayfs separates options with ',' and layers with ':'; escape both in paths.
fn escape(p: &Path) -> String {
    p.to_string_lossy()
        .replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace(':', "\\:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_paths_are_escaped() {
        assert_eq!(escape(Path::new("/a,b:c")), "/a\\,b\\:c");
    }

    /// Two domains over one base: each sees the base, neither sees the other's writes, the
    /// base is untouched, and removal leaves no mount and no private layer (root only).
    #[test]
    fn domains_share_the_base_and_keep_their_writes_private() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("base");
        std::fs::create_dir_all(base.join("etc")).unwrap();
        std::fs::write(base.join("etc/motd"), "shared\n").unwrap();
        let a = Layered::new(&base, &t.path().join("a"));
        let b = Layered::new(&base, &t.path().join("b"));
        let (ra, rb) = (a.prepare().unwrap(), b.prepare().unwrap());
        assert_eq!(
            std::fs::read_to_string(ra.join("etc/motd")).unwrap(),
            "shared\n"
        );
        std::fs::write(ra.join("etc/motd"), "mine\n").unwrap();
        std::fs::write(ra.join("only-a"), "a").unwrap();
        assert_eq!(
            std::fs::read_to_string(rb.join("etc/motd")).unwrap(),
            "shared\n"
        );
        assert!(!rb.join("only-a").exists());
        assert_eq!(
            std::fs::read_to_string(base.join("etc/motd")).unwrap(),
            "shared\n"
        );
        assert!(a.private_bytes() > 0 && b.private_bytes() < a.private_bytes());
        // A domain keeps its writes across an unmount and a new prepare.
        a.unmount().unwrap();
        a.prepare().unwrap();
        assert!(ra.join("only-a").exists());
        a.remove().unwrap();
        b.remove().unwrap();
        assert!(!a.is_mounted() && !b.is_mounted());
        assert!(!t.path().join("a").exists());
        // A missing base is refused and mounts nothing.
        let c = Layered::new(&t.path().join("nope"), &t.path().join("c"));
        assert!(c.prepare().is_err());
        assert!(!c.is_mounted());
    }
}
