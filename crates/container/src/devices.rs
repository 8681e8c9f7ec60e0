//! Device nodes in the container: the default ones (when /dev is a tmpfs of ours) and
//! `linux.devices`, at any path in the root (the spec does not require /dev).
//!
//! Without a user namespace the init makes each node with mknod. In a new user namespace it
//! cannot (and a tmpfs mounted there refuses device nodes anyway), so, as crun does, the
//! runtime makes the configured nodes before the init starts: in a detached tmpfs of its own
//! (mounted nosuid,noexec and attached nowhere, so nothing is left on the host), owned by the
//! host ids the config's uid/gid map to, each cloned into a detached mount that travels to the
//! init over the sync socket and is moved into place there. The default devices, and any
//! configured one the runtime could not make (a rootless runtime), are bind-mounted from the
//! host's node of the same path and remounted nosuid,noexec.
//!
//! [`plan`] and [`host_id`] are pure; the rest does the syscalls.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_spec::runtime::{LinuxDeviceType, LinuxIdMapping, LinuxNamespaceType};

use crate::config::Config;
use crate::error::{Context, Error, Result};
use crate::util::{ensure_in_root, fd_path, open_in_root, Kind};

/// The devices every container with a /dev of its own gets (major, minor), mode 0666.
pub const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

/// Whether /dev is a tmpfs of ours (a bind-mounted host /dev already has its nodes).
pub fn dev_is_tmpfs(cfg: &Config) -> bool {
    cfg.spec
        .mounts()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|m| m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("tmpfs"))
}

/// The uid and gid the kernel shows for an id outside every mapping.
const OVERFLOW_ID: u32 = 65534;

/// One node to make: where, what, and who owns it (ids as the container sees them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub path: PathBuf,
    pub kind: SFlag,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Its index in `linux.devices`; `None` for a default device.
    pub configured: Option<usize>,
}

/// The nodes of `cfg`, defaults first (those only when `dev_is_tmpfs`); a configured device
/// replaces a default one at the same path. Refuses type `a` and a relative path.
pub fn plan(cfg: &Config, dev_is_tmpfs: bool) -> Result<Vec<Node>> {
    let mut nodes: Vec<Node> = Vec::new();
    if dev_is_tmpfs {
        for (p, major, minor) in DEFAULT_DEVICES {
            nodes.push(Node {
                path: p.into(),
                kind: SFlag::S_IFCHR,
                major,
                minor,
                mode: 0o666,
                uid: 0,
                gid: 0,
                configured: None,
            });
        }
    }
    for (i, d) in configured(cfg).iter().enumerate() {
        let at = || format!("linux.devices[{i}] ({})", d.path().display());
        let kind = match d.typ() {
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(Error::Config(format!(
                    "{}: type 'a' is not a device type",
                    at()
                )))
            }
        };
        if !d.path().is_absolute() || d.path().file_name().is_none() {
            return Err(Error::Config(format!(
                "{}: the path must be absolute and name a file",
                at()
            )));
        }
        nodes.retain(|n| n.path != *d.path());
        nodes.push(Node {
            path: d.path().clone(),
            kind,
            major: d.major() as u64,
            minor: d.minor() as u64,
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
            configured: Some(i),
        });
    }
    Ok(nodes)
}

fn configured(cfg: &Config) -> &[oci_spec::runtime::LinuxDevice] {
    cfg.spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_deref())
        .unwrap_or_default()
}

/// The host id that `id` in the container maps to through `maps`; the overflow id when no
/// mapping covers it.
pub fn host_id(maps: &[LinuxIdMapping], id: u32) -> u32 {
    maps.iter()
        .find(|m| m.container_id() <= id && (id - m.container_id()) < m.size())
        .and_then(|m| m.host_id().checked_add(id - m.container_id()))
        .unwrap_or(OVERFLOW_ID)
}

/// Whether the runtime makes the configured nodes for the init: a new user namespace, and a
/// runtime that may mknod (root in the host's).
pub fn runtime_makes_them(cfg: &Config) -> bool {
    cfg.namespaces.creates(LinuxNamespaceType::User)
        && nix::unistd::geteuid().is_root()
        && !configured(cfg).is_empty()
}

/// In the runtime, before the init is cloned: each configured device as a detached mount of a
/// node owned by the mapped host ids, in `linux.devices` order.
pub fn make_for_userns(cfg: &Config) -> Result<Vec<OwnedFd>> {
    use rustix::mount::{
        fsconfig_create, fsmount, fsopen, open_tree, FsMountFlags, FsOpenFlags, MountAttrFlags,
        OpenTreeFlags,
    };
    let linux = cfg.spec.linux().as_ref();
    let uids = linux
        .and_then(|l| l.uid_mappings().as_deref())
        .unwrap_or_default();
    let gids = linux
        .and_then(|l| l.gid_mappings().as_deref())
        .unwrap_or_default();
    let fs = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC).ctx(|| "fsopen tmpfs for devices")?;
    fsconfig_create(&fs).ctx(|| "creating the devices' tmpfs")?;
    let dir = fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
    .ctx(|| "mounting the devices' tmpfs")?;
    let mut out = Vec::new();
    for n in plan(cfg, false)? {
        let at = || format!("linux.devices[{}] ({})", out.len(), n.path.display());
        let name = out.len().to_string();
        rustix::fs::mknodat(
            &dir,
            name.as_str(),
            file_type(n.kind),
            rustix::fs::Mode::from_raw_mode(n.mode),
            makedev(n.major, n.minor),
        )
        .ctx(|| format!("{}: mknod", at()))?;
        // mknodat took our umask off the mode.
        rustix::fs::chmodat(
            &dir,
            name.as_str(),
            rustix::fs::Mode::from_raw_mode(n.mode),
            rustix::fs::AtFlags::empty(),
        )
        .ctx(|| format!("{}: chmod", at()))?;
        rustix::fs::chownat(
            &dir,
            name.as_str(),
            Some(rustix::fs::Uid::from_raw(host_id(uids, n.uid))),
            Some(rustix::fs::Gid::from_raw(host_id(gids, n.gid))),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .ctx(|| format!("{}: chown to the mapped ids", at()))?;
        let m = open_tree(
            &dir,
            name.as_str(),
            OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
        )
        .ctx(|| format!("{}: cloning the node's mount", at()))?;
        out.push(m);
    }
    // The tmpfs lives on in the node mounts only; dropping these closes the rest of it.
    drop((dir, fs));
    Ok(out)
}

fn file_type(kind: SFlag) -> rustix::fs::FileType {
    match kind {
        SFlag::S_IFBLK => rustix::fs::FileType::BlockDevice,
        SFlag::S_IFIFO => rustix::fs::FileType::Fifo,
        _ => rustix::fs::FileType::CharacterDevice,
    }
}

/// In the init, before pivot: every node of the plan under `root`. `made` are the runtime's
/// mounts for the configured devices (see [`make_for_userns`]), empty when it made none.
pub fn create(cfg: &Config, root: &OwnedFd, in_userns: bool, made: Vec<OwnedFd>) -> Result<()> {
    let mut made: Vec<Option<OwnedFd>> = made.into_iter().map(Some).collect();
    for n in plan(cfg, dev_is_tmpfs(cfg))? {
        let at = || match n.configured {
            Some(i) => format!("linux.devices[{i}] ({})", n.path.display()),
            None => format!("device {}", n.path.display()),
        };
        let parent = n.path.parent().unwrap_or(Path::new("/"));
        let dir = ensure_in_root(root, parent, Kind::Dir)
            .ctx(|| format!("{}: creating {}", at(), parent.display()))?;
        if !in_userns {
            let full = fd_path(&dir).join(n.path.file_name().unwrap_or_default());
            let _ = std::fs::remove_file(&full);
            let old = nix::sys::stat::umask(Mode::empty());
            let r = mknod(
                &full,
                n.kind,
                Mode::from_bits_truncate(n.mode),
                makedev(n.major, n.minor),
            );
            nix::sys::stat::umask(old);
            r.ctx(|| format!("{}: mknod", at()))?;
            nix::unistd::chown(&full, Some(n.uid.into()), Some(n.gid.into()))
                .ctx(|| format!("{}: chown", at()))?;
            continue;
        }
        let target =
            ensure_in_root(root, &n.path, Kind::File).ctx(|| format!("{}: creating", at()))?;
        if let Some(m) = n.configured.and_then(|i| made.get_mut(i)?.take()) {
            rustix::mount::move_mount(
                m.as_fd(),
                "",
                target.as_fd(),
                "",
                rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH
                    | rustix::mount::MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
            )
            .ctx(|| format!("{}: moving the node into place", at()))?;
            continue;
        }
        bind_host_node(root, &n.path, &target).map_err(|e| Error::Msg(format!("{}: {e}", at())))?;
    }
    Ok(())
}

/// Bind the host's node at `path` onto `target` (that path under `root`) and make the mount
/// nosuid,noexec (keeping the flags the host's mount locks).
fn bind_host_node(
    root: &OwnedFd,
    path: &Path,
    target: &OwnedFd,
) -> std::result::Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| {
        format!("in a user namespace the host's node is bound in, and there is none: {e}")
    })?;
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if !(t.is_char_device() || t.is_block_device() || t.is_fifo()) {
        return Err(format!(
            "in a user namespace the host's node is bound in, and {} is not a device",
            path.display()
        ));
    }
    let none: Option<&str> = None;
    mount(Some(path), &fd_path(target), none, MsFlags::MS_BIND, none)
        .map_err(|e| format!("bind-mounting the host's node: {e}"))?;
    // The mount now on top of the path (`target` still names the file beneath).
    let here = open_in_root(root, path, libc::O_PATH).map_err(|e| format!("re-opening: {e}"))?;
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NOEXEC
        | crate::mounts::locked_flags(&fd_path(&here));
    mount(none, &fd_path(&here), none, flags, none)
        .map_err(|e| format!("remounting nosuid,noexec: {e}"))
}

/// The usual /dev symlinks, when /dev is a tmpfs of ours.
pub fn symlinks(root: &OwnedFd) -> Result<()> {
    let dev = open_in_root(root, Path::new("/dev"), libc::O_PATH | libc::O_DIRECTORY)
        .ctx(|| "opening /dev")?;
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let p = fd_path(&dev).join(link);
        if std::fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        std::os::unix::fs::symlink(target, &p).ctx(|| format!("symlink /dev/{link}"))?;
    }
    if std::fs::symlink_metadata("/proc/kcore").is_ok() {
        let _ = std::os::unix::fs::symlink("/proc/kcore", fd_path(&dev).join("core"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxIdMappingBuilder;
    use proptest::prelude::*;

    fn map(c: u32, h: u32, n: u32) -> LinuxIdMapping {
        LinuxIdMappingBuilder::default()
            .container_id(c)
            .host_id(h)
            .size(n)
            .build()
            .unwrap()
    }

    #[test]
    fn ids_map_through_the_first_covering_range() {
        let maps = [map(0, 100000, 1000), map(1000, 5000, 10)];
        assert_eq!(host_id(&maps, 0), 100000);
        assert_eq!(host_id(&maps, 999), 100999);
        assert_eq!(host_id(&maps, 1000), 5000);
        assert_eq!(host_id(&maps, 1009), 5009);
        assert_eq!(host_id(&maps, 1010), OVERFLOW_ID);
        assert_eq!(host_id(&[], 0), OVERFLOW_ID);
        // A range reaching past u32 does not wrap.
        assert_eq!(host_id(&[map(0, u32::MAX, 10)], 5), OVERFLOW_ID);
    }

    proptest! {
        #[test]
        fn a_mapped_id_maps_back(c in 0u32..1_000_000, h in 0u32..1_000_000, n in 1u32..100_000, off in 0u32..200_000) {
            let id = c.saturating_add(off);
            let got = host_id(&[map(c, h, n)], id);
            if off < n {
                prop_assert_eq!(got, h + off);
            } else {
                prop_assert_eq!(got, OVERFLOW_ID);
            }
        }
    }

    fn cfg_with(devices: serde_json::Value, dev_tmpfs: bool) -> Config {
        load_with(devices, dev_tmpfs).unwrap()
    }

    /// A bundle with `devices`, loaded (and checked) as `create` loads it; the plan needs
    /// nothing of the bundle afterwards.
    fn load_with(devices: serde_json::Value, dev_tmpfs: bool) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        let mut spec = crate::runtime::default_spec(false);
        spec["linux"]["devices"] = devices;
        if !dev_tmpfs {
            spec["mounts"]
                .as_array_mut()
                .unwrap()
                .retain(|m| m["destination"] != "/dev");
        }
        std::fs::write(dir.path().join("config.json"), spec.to_string()).unwrap();
        crate::config::load(dir.path())
    }

    #[test]
    fn configured_devices_go_anywhere_and_replace_defaults() {
        let c = cfg_with(
            serde_json::json!([
                {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600},
                {"path": "/opt/fuse", "type": "c", "major": 10, "minor": 229, "uid": 7},
            ]),
            true,
        );
        let p = plan(&c, true).unwrap();
        assert_eq!(p.len(), 7);
        let null: Vec<_> = p
            .iter()
            .filter(|n| n.path == Path::new("/dev/null"))
            .collect();
        assert_eq!(null.len(), 1);
        assert_eq!((null[0].mode, null[0].configured), (0o600, Some(0)));
        let fuse = p.last().unwrap();
        assert_eq!(fuse.path, Path::new("/opt/fuse"));
        assert_eq!((fuse.uid, fuse.mode, fuse.configured), (7, 0o666, Some(1)));
        // Without a /dev of ours, the configured ones only.
        assert_eq!(plan(&c, false).unwrap().len(), 2);
    }

    #[test]
    fn a_bad_device_is_one_line_at_its_index() {
        for (d, want) in [
            (
                serde_json::json!([{"path": "/dev/x", "type": "a", "major": 1, "minor": 1}]),
                "linux.devices[0] (/dev/x): type 'a' is not a device type",
            ),
            (
                serde_json::json!([{"path": "dev/x", "type": "c", "major": 1, "minor": 1}]),
                "linux.devices[0] (dev/x): the path must be absolute and name a file",
            ),
        ] {
            let e = load_with(d, true).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
