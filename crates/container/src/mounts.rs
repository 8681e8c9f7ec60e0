//! The container's file-system view: mount options parsed into flags (pure), then the root
//! prepared, the configured mounts made beneath it (every target resolved inside the root),
//! device nodes created, `pivot_root`, and masked and read-only paths applied.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::{LinuxNamespaceType, Mount};

use crate::cgroups::Hierarchy;
use crate::config::Config;
use crate::error::{Context, Error, Result};
use crate::util::{ensure_in_root, fd_path, open_in_root, Kind};

/// A mount's options, split into what `mount(2)` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags to set.
    pub flags: MsFlags,
    /// Propagation changes, applied one by one after the mount.
    pub propagation: Vec<MsFlags>,
    /// File-system specific options, comma-joined into the data argument.
    pub data: Vec<String>,
}

impl MountOptions {
    pub fn parse(opts: &[String]) -> std::result::Result<Self, String> {
        let mut o = MountOptions {
            flags: MsFlags::empty(),
            propagation: Vec::new(),
            data: Vec::new(),
        };
        for opt in opts {
            let (set, clear) = match opt.as_str() {
                "defaults" => (MsFlags::empty(), MsFlags::empty()),
                "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
                "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
                "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
                "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
                "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
                "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
                "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
                "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
                "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
                "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
                "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
                "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
                "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
                "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
                "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
                "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
                "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
                "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
                "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
                "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
                "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
                "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
                "silent" => (MsFlags::MS_SILENT, MsFlags::empty()),
                "loud" => (MsFlags::empty(), MsFlags::MS_SILENT),
                "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
                "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
                // runc's extension for tmpfs: accepted, the copy-up itself is not done.
                "tmpcopyup" => (MsFlags::empty(), MsFlags::empty()),
                "idmap" | "ridmap" => {
                    return Err(format!("{opt:?} (id-mapped mounts) is not supported"))
                }
                other => {
                    if let Some(p) = propagation_flag(other) {
                        o.propagation.push(p);
                    } else {
                        o.data.push(other.to_string());
                    }
                    continue;
                }
            };
            o.flags.insert(set);
            o.flags.remove(clear);
        }
        Ok(o)
    }

    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    /// Flags that a bind mount can only get by a remount.
    fn remount_flags(&self) -> MsFlags {
        self.flags
            & (MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_NOATIME
                | MsFlags::MS_NODIRATIME
                | MsFlags::MS_RELATIME
                | MsFlags::MS_STRICTATIME)
    }
}

/// `shared`, `rslave`, ... as mount flags.
pub fn propagation_flag(s: &str) -> Option<MsFlags> {
    Some(match s {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

fn none() -> Option<&'static str> {
    None
}

/// Everything before `pivot_root`: make the host's mounts invisible to propagation, turn the
/// rootfs into a mount point, and mount what the config asks for beneath it, then the device
/// nodes (`devices`: the runtime's mounts for the configured ones in a user namespace).
pub fn prepare_rootfs(
    cfg: &Config,
    hierarchies: &[Hierarchy],
    cgroup_rel: &Path,
    devices: Vec<OwnedFd>,
) -> Result<()> {
    let own_ns = cfg.namespaces.isolates(LinuxNamespaceType::Mount);
    if own_ns {
        // Nothing we mount may propagate back to the host.
        mount(
            none(),
            "/",
            none(),
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            none(),
        )
        .ctx(|| "making / a slave mount")?;
    }
    // Without a mount namespace of its own, these mounts are the host's: `delete` removes
    // them again (see `unmount_new_under`).
    mount(
        Some(&cfg.rootfs),
        &cfg.rootfs,
        none(),
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none(),
    )
    .ctx(|| format!("bind-mounting rootfs {}", cfg.rootfs.display()))?;
    if own_ns {
        // pivot_root refuses a new root whose parent mount is shared.
        let _ = mount(none(), &cfg.rootfs, none(), MsFlags::MS_PRIVATE, none());
    }
    let root: OwnedFd = std::fs::File::open(&cfg.rootfs)
        .ctx(|| format!("opening rootfs {}", cfg.rootfs.display()))?
        .into();
    let in_userns = cfg.namespaces.isolates(LinuxNamespaceType::User);
    for (i, m) in cfg
        .spec
        .mounts()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        mount_one(cfg, &root, m, hierarchies, cgroup_rel).map_err(|e| {
            Error::Msg(format!(
                "mounts[{i}] ({}): {}",
                m.destination().display(),
                e.chain()
            ))
        })?;
    }
    crate::devices::create(cfg, &root, in_userns, devices)?;
    if crate::devices::dev_is_tmpfs(cfg) {
        crate::devices::symlinks(&root)?;
    }
    Ok(())
}

fn mount_one(
    cfg: &Config,
    root: &OwnedFd,
    m: &Mount,
    hierarchies: &[Hierarchy],
    cgroup_rel: &Path,
) -> Result<()> {
    let opts =
        MountOptions::parse(m.options().as_deref().unwrap_or_default()).map_err(Error::Msg)?;
    let typ = m
        .typ()
        .as_deref()
        .unwrap_or(if opts.is_bind() { "bind" } else { "" });
    let dest = m.destination();
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(cfg, root, dest, &opts, hierarchies, cgroup_rel);
    }
    if opts.is_bind() || typ == "bind" {
        let src = m
            .source()
            .as_ref()
            .ok_or_else(|| Error::Msg("bind mount without a source".into()))?;
        let src = if src.is_absolute() {
            src.clone()
        } else {
            cfg.bundle.join(src)
        };
        let meta = std::fs::metadata(&src).ctx(|| format!("bind source {}", src.display()))?;
        let kind = if meta.is_dir() { Kind::Dir } else { Kind::File };
        let target = ensure_in_root(root, dest, kind).ctx(|| "creating the mount point")?;
        let tpath = fd_path(&target);
        let rec = opts.flags & MsFlags::MS_REC;
        mount(Some(&src), &tpath, none(), MsFlags::MS_BIND | rec, none())
            .ctx(|| format!("bind-mounting {}", src.display()))?;
        let extra = opts.remount_flags();
        if !extra.is_empty() {
            // Re-open: the descriptor still names the covered directory, not the new mount.
            let t = open_in_root(root, dest, libc::O_PATH).ctx(|| "re-opening the mount point")?;
            let locked = locked_flags(&fd_path(&t));
            mount(
                none(),
                &fd_path(&t),
                none(),
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra | locked,
                none(),
            )
            .ctx(|| "remounting the bind mount with its flags")?;
        }
        apply_propagation(root, dest, &opts.propagation)?;
        return Ok(());
    }
    let target = ensure_in_root(root, dest, Kind::Dir).ctx(|| "creating the mount point")?;
    let data = opts.data.join(",");
    let src = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
    let flags = opts.flags & !MsFlags::MS_REMOUNT;
    let r = mount(
        Some(&src),
        &fd_path(&target),
        Some(typ),
        flags,
        Some(data.as_str()),
    );
    match r {
        // sysfs cannot be mounted in a user namespace without its own network namespace:
        // give it the host's, read-only, as runc does.
        Err(nix::Error::EPERM) if typ == "sysfs" => mount(
            Some("/sys"),
            &fd_path(&target),
            none(),
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY,
            none(),
        )
        .ctx(|| "bind-mounting /sys")?,
        r => r.ctx(|| format!("mounting {typ}"))?,
    }
    apply_propagation(root, dest, &opts.propagation)
}

fn apply_propagation(root: &OwnedFd, dest: &Path, props: &[MsFlags]) -> Result<()> {
    for p in props {
        let t = open_in_root(root, dest, libc::O_PATH).ctx(|| "re-opening the mount point")?;
        mount(none(), &fd_path(&t), none(), *p, none()).ctx(|| "setting mount propagation")?;
    }
    Ok(())
}

/// Flags of the mount at `path` that an unprivileged remount may not clear.
pub(crate) fn locked_flags(path: &Path) -> MsFlags {
    let Ok(st) = nix::sys::statvfs::statvfs(path) else {
        return MsFlags::empty();
    };
    use nix::sys::statvfs::FsFlags;
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (a, b) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ] {
        if f.contains(a) {
            out |= b;
        }
    }
    out
}

/// A `cgroup` mount: the container's own cgroups, either freshly mounted inside its cgroup
/// namespace (which shows them as the root) or bind-mounted from the host.
fn mount_cgroup(
    cfg: &Config,
    root: &OwnedFd,
    dest: &Path,
    opts: &MountOptions,
    hierarchies: &[Hierarchy],
    cgroup_rel: &Path,
) -> Result<()> {
    let own_ns = cfg.namespaces.isolates(LinuxNamespaceType::Cgroup);
    let flags = opts.flags
        & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RELATIME);
    let ro = opts.flags.contains(MsFlags::MS_RDONLY);
    let target = ensure_in_root(root, dest, Kind::Dir).ctx(|| "creating the mount point")?;
    let rel = cgroup_rel.strip_prefix("/").unwrap_or(cgroup_rel);
    if let [Hierarchy::Unified(host)] = hierarchies {
        if own_ns {
            mount(
                Some("cgroup2"),
                &fd_path(&target),
                Some("cgroup2"),
                flags | (opts.flags & MsFlags::MS_RDONLY),
                none(),
            )
            .ctx(|| "mounting cgroup2")?;
        } else {
            let src = host.join(rel);
            mount(
                Some(&src),
                &fd_path(&target),
                none(),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                none(),
            )
            .ctx(|| format!("bind-mounting {}", src.display()))?;
            if ro {
                let t = open_in_root(root, dest, libc::O_PATH).ctx(|| "re-opening")?;
                mount(
                    none(),
                    &fd_path(&t),
                    none(),
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
                    none(),
                )
                .ctx(|| "remounting cgroup read-only")?;
            }
        }
        return Ok(());
    }
    mount(
        Some("tmpfs"),
        &fd_path(&target),
        Some("tmpfs"),
        flags,
        Some("mode=755"),
    )
    .ctx(|| "mounting tmpfs for cgroups")?;
    for h in hierarchies {
        let Hierarchy::V1 {
            name,
            mount: host,
            options,
        } = h
        else {
            continue;
        };
        let sub = dest.join(name);
        let t =
            ensure_in_root(root, &sub, Kind::Dir).ctx(|| format!("creating {}", sub.display()))?;
        let mflags = flags
            | if ro {
                MsFlags::MS_RDONLY
            } else {
                MsFlags::empty()
            };
        if own_ns {
            mount(
                Some("cgroup"),
                &fd_path(&t),
                Some("cgroup"),
                mflags,
                Some(options.as_str()),
            )
            .ctx(|| format!("mounting cgroup {name}"))?;
        } else {
            let src = host.join(rel);
            mount(
                Some(&src),
                &fd_path(&t),
                none(),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                none(),
            )
            .ctx(|| format!("bind-mounting {}", src.display()))?;
            let t = open_in_root(root, &sub, libc::O_PATH).ctx(|| "re-opening")?;
            mount(
                none(),
                &fd_path(&t),
                none(),
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | mflags,
                none(),
            )
            .ctx(|| "remounting cgroup")?;
        }
    }
    if ro {
        let t = open_in_root(root, dest, libc::O_PATH).ctx(|| "re-opening")?;
        mount(
            none(),
            &fd_path(&t),
            none(),
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
            none(),
        )
        .ctx(|| "remounting the cgroup tmpfs read-only")?;
    }
    Ok(())
}

/// Make `rootfs` the root: `pivot_root` with the old root stacked beneath and detached, or
/// (`no_pivot`) a move mount plus chroot for roots that cannot be pivoted (ramfs).
pub fn enter_root(rootfs: &Path, no_pivot: bool, own_ns: bool) -> Result<()> {
    nix::unistd::chdir(rootfs).ctx(|| format!("chdir to rootfs {}", rootfs.display()))?;
    if !own_ns {
        // In the host's mount namespace: neither pivot nor move, only chroot.
        nix::unistd::chroot(".").ctx(|| "chroot into rootfs")?;
    } else if no_pivot {
        mount(Some("."), "/", none(), MsFlags::MS_MOVE, none()).ctx(|| "moving rootfs to /")?;
        nix::unistd::chroot(".").ctx(|| "chroot into rootfs")?;
    } else {
        nix::unistd::pivot_root(".", ".").ctx(|| "pivot_root")?;
        // The old root now sits on top of the new one at "/": make it private and detach it.
        mount(
            none(),
            ".",
            none(),
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            none(),
        )
        .ctx(|| "making the old root a slave")?;
        umount2(".", MntFlags::MNT_DETACH).ctx(|| "detaching the old root")?;
    }
    nix::unistd::chdir("/").ctx(|| "chdir /")?;
    Ok(())
}

/// Mount ids of the mounts at or beneath `dir` (from /proc/self/mountinfo).
pub fn mount_ids_under(dir: &Path) -> Vec<(u32, PathBuf)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let id = f.next()?.parse().ok()?;
            let mnt = PathBuf::from(f.nth(3)?.replace("\\040", " "));
            mnt.starts_with(dir).then_some((id, mnt))
        })
        .collect()
}

/// Unmount every mount at or beneath `dir` that is not in `keep`, newest first. Used for a
/// container that shared the host's mount namespace, so it leaves no mount behind.
pub fn unmount_new_under(dir: &Path, keep: &[u32]) {
    let mut new: Vec<(u32, PathBuf)> = mount_ids_under(dir)
        .into_iter()
        .filter(|(id, _)| !keep.contains(id))
        .collect();
    new.sort_by_key(|m| std::cmp::Reverse(m.0));
    for (_, p) in new {
        let _ = umount2(&p, MntFlags::MNT_DETACH);
    }
}

/// After `pivot_root`: the process's working directory made where it is missing (as runc
/// and crun do, before the root may turn read-only), masked and read-only paths, a
/// read-only root, root propagation.
pub fn finish_rootfs(cfg: &Config) -> Result<()> {
    if let Some(p) = cfg.spec.process().as_ref() {
        let cwd = p.cwd();
        if !cwd.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(cwd)
                .ctx(|| format!("creating process.cwd {}", cwd.display()))?;
        }
    }
    let linux = cfg.spec.linux().as_ref();
    for p in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        mask_path(p)?;
    }
    for p in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        readonly_path(p)?;
    }
    if cfg
        .spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        let locked = locked_flags(Path::new("/"));
        mount(
            none(),
            "/",
            none(),
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked,
            none(),
        )
        .ctx(|| "remounting / read-only")?;
    }
    if let Some(prop) = linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        if let Some(f) = propagation_flag(prop) {
            mount(none(), "/", none(), f, none())
                .ctx(|| format!("setting / propagation {prop}"))?;
        }
    }
    Ok(())
}

fn mask_path(p: &str) -> Result<()> {
    match std::fs::metadata(p) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => mount(Some("tmpfs"), p, Some("tmpfs"), MsFlags::MS_RDONLY, none())
            .ctx(|| format!("masking {p}")),
        Ok(_) => mount(Some("/dev/null"), p, none(), MsFlags::MS_BIND, none())
            .ctx(|| format!("masking {p}")),
    }
}

fn readonly_path(p: &str) -> Result<()> {
    if std::fs::symlink_metadata(p).is_err() {
        return Ok(());
    }
    mount(
        Some(p),
        p,
        none(),
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none(),
    )
    .ctx(|| format!("bind-mounting {p} for read-only"))?;
    let locked = locked_flags(Path::new(p));
    mount(
        none(),
        p,
        none(),
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC | locked,
        none(),
    )
    .ctx(|| format!("remounting {p} read-only"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(o: &[&str]) -> MountOptions {
        MountOptions::parse(&o.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn flags_and_data_are_split() {
        let o = parse(&["nosuid", "noexec", "nodev", "mode=755", "size=65536k"]);
        assert_eq!(
            o.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV
        );
        assert_eq!(o.data, vec!["mode=755", "size=65536k"]);
    }

    #[test]
    fn later_options_win() {
        let o = parse(&["ro", "rw", "nosuid", "suid"]);
        assert_eq!(o.flags, MsFlags::empty());
    }

    #[test]
    fn bind_and_propagation() {
        let o = parse(&["rbind", "ro", "rslave", "private"]);
        assert!(o.is_bind());
        assert!(o.flags.contains(MsFlags::MS_REC));
        assert_eq!(o.remount_flags(), MsFlags::MS_RDONLY);
        assert_eq!(
            o.propagation,
            vec![MsFlags::MS_SLAVE | MsFlags::MS_REC, MsFlags::MS_PRIVATE]
        );
    }

    #[test]
    fn idmap_is_refused() {
        assert!(MountOptions::parse(&["idmap".to_string()]).is_err());
    }
}
