//! Which namespaces a container creates, joins (by path) or shares with the host, and the
//! syscalls that enter them.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use crate::config_err;
use crate::error::{Context, Result};

/// What the container does with one kind of namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ns {
    /// Shares the runtime's namespace.
    Host,
    /// Gets a fresh one.
    New,
    /// Joins the one at this path (e.g. /proc/PID/ns/net).
    Join(PathBuf),
}

/// The namespace plan of a container.
#[derive(Debug, Clone, Default)]
pub struct Namespaces {
    entries: Vec<(LinuxNamespaceType, Ns)>,
}

/// Order in which namespaces given by path are joined: user first (it owns the others), mount
/// last (joining it changes how the other paths resolve).
pub const JOIN_ORDER: [LinuxNamespaceType; 8] = [
    LinuxNamespaceType::User,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Cgroup,
    LinuxNamespaceType::Time,
    LinuxNamespaceType::Mount,
];

pub fn clone_flag(t: LinuxNamespaceType) -> CloneFlags {
    CloneFlags::from_bits_truncate(t as i32)
}

/// The name used under /proc/PID/ns/.
pub fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

impl Namespaces {
    pub fn from_spec(list: &[LinuxNamespace]) -> Result<Self> {
        let mut entries: Vec<(LinuxNamespaceType, Ns)> = Vec::new();
        for (i, ns) in list.iter().enumerate() {
            if entries.iter().any(|(t, _)| *t == ns.typ()) {
                return Err(config_err!(
                    "linux.namespaces[{i}]: {} namespace given twice",
                    ns.typ()
                ));
            }
            let what = match ns.path() {
                Some(p) if !p.as_os_str().is_empty() => {
                    if !p.is_absolute() {
                        return Err(config_err!(
                            "linux.namespaces[{i}].path: {p:?} is not absolute"
                        ));
                    }
                    if !p.exists() {
                        return Err(config_err!(
                            "linux.namespaces[{i}].path: {} does not exist",
                            p.display()
                        ));
                    }
                    Ns::Join(p.clone())
                }
                _ => Ns::New,
            };
            entries.push((ns.typ(), what));
        }
        Ok(Namespaces { entries })
    }

    pub fn get(&self, t: LinuxNamespaceType) -> &Ns {
        self.entries
            .iter()
            .find(|(k, _)| *k == t)
            .map(|(_, v)| v)
            .unwrap_or(&Ns::Host)
    }

    /// A fresh namespace of this type is created.
    pub fn creates(&self, t: LinuxNamespaceType) -> bool {
        *self.get(t) == Ns::New
    }

    /// The container does not share this namespace with the host.
    pub fn isolates(&self, t: LinuxNamespaceType) -> bool {
        *self.get(t) != Ns::Host
    }

    /// Flags for the clone that creates the container process. The cgroup namespace is left
    /// out: it must be unshared after the process has been moved into its cgroup.
    pub fn clone_flags(&self) -> CloneFlags {
        let mut f = CloneFlags::empty();
        for (t, ns) in &self.entries {
            if *ns == Ns::New && *t != LinuxNamespaceType::Cgroup {
                f |= clone_flag(*t);
            }
        }
        f
    }

    /// Namespaces to join by path, in [`JOIN_ORDER`].
    pub fn joins(&self) -> Vec<(LinuxNamespaceType, &Path)> {
        JOIN_ORDER
            .iter()
            .filter_map(|t| match self.get(*t) {
                Ns::Join(p) => Some((*t, p.as_path())),
                _ => None,
            })
            .collect()
    }
}

/// Open a namespace file and enter it.
pub fn join(t: LinuxNamespaceType, path: &Path) -> Result<()> {
    let fd: OwnedFd = std::fs::File::open(path)
        .ctx(|| format!("opening {} namespace {}", t, path.display()))?
        .into();
    setns(&fd, t, path)
}

pub fn setns(fd: &OwnedFd, t: LinuxNamespaceType, path: &Path) -> Result<()> {
    nix::sched::setns(fd, clone_flag(t))
        .ctx(|| format!("joining {} namespace {}", t, path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(t: LinuxNamespaceType, path: Option<&str>) -> LinuxNamespace {
        let mut n = LinuxNamespace::default();
        n.set_typ(t);
        n.set_path(path.map(PathBuf::from));
        n
    }

    #[test]
    fn plan_splits_new_join_host() {
        let n = Namespaces::from_spec(&[
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Network, Some("/proc/self/ns/net")),
            ns(LinuxNamespaceType::Cgroup, None),
            ns(LinuxNamespaceType::User, Some("/proc/self/ns/user")),
        ])
        .unwrap();
        assert!(n.creates(LinuxNamespaceType::Pid));
        assert_eq!(n.get(LinuxNamespaceType::Ipc), &Ns::Host);
        assert!(n.isolates(LinuxNamespaceType::Network));
        let f = n.clone_flags();
        assert!(f.contains(CloneFlags::CLONE_NEWPID));
        assert!(!f.contains(CloneFlags::CLONE_NEWCGROUP));
        assert!(!f.contains(CloneFlags::CLONE_NEWNET));
        let joins: Vec<_> = n.joins().into_iter().map(|(t, _)| t).collect();
        assert_eq!(
            joins,
            vec![LinuxNamespaceType::User, LinuxNamespaceType::Network]
        );
    }

    #[test]
    fn duplicates_and_bad_paths_are_refused() {
        assert!(Namespaces::from_spec(&[
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Pid, None)
        ])
        .is_err());
        assert!(Namespaces::from_spec(&[ns(LinuxNamespaceType::Network, Some("rel"))]).is_err());
        assert!(
            Namespaces::from_spec(&[ns(LinuxNamespaceType::Network, Some("/no/such/ns"))]).is_err()
        );
    }
}
