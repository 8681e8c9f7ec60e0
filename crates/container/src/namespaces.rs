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
            // The cgroup and time namespaces are made by the init itself (see
            // `enter_new_time`), once it is in its cgroup and knows its clocks' offsets.
            if *ns == Ns::New && *t != LinuxNamespaceType::Cgroup && *t != LinuxNamespaceType::Time
            {
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

/// `linux.timeOffsets` as /proc/PID/timens_offsets takes them: one `CLOCK SECS NANOSECS` line
/// per clock; only `monotonic` and `boottime` have offsets.
pub fn timens_offsets(
    offsets: Option<&std::collections::HashMap<String, oci_spec::runtime::LinuxTimeOffset>>,
) -> Result<String> {
    let mut lines = Vec::new();
    let mut clocks: Vec<_> = offsets.into_iter().flatten().collect();
    clocks.sort_by(|a, b| a.0.cmp(b.0));
    for (clock, o) in clocks {
        if clock != "monotonic" && clock != "boottime" {
            return Err(config_err!(
                "linux.timeOffsets: {clock:?} is not a clock with an offset (monotonic, boottime)"
            ));
        }
        let ns = o.nanosecs().unwrap_or(0);
        if ns >= 1_000_000_000 {
            return Err(config_err!(
                "linux.timeOffsets.{clock}.nanosecs: {ns} is a second or more"
            ));
        }
        lines.push(format!("{clock} {} {ns}\n", o.secs().unwrap_or(0)));
    }
    Ok(lines.concat())
}

/// Make a new time namespace with `offsets` (see [`timens_offsets`]) and enter it. The
/// offsets can only be written before any process is in the namespace, so it is made for
/// our children first (unshare), given them, then joined.
pub fn enter_new_time(offsets: &str) -> Result<()> {
    // SAFETY: unshare takes flags only.
    if unsafe { libc::unshare(libc::CLONE_NEWTIME) } < 0 {
        return Err(nix::Error::last()).ctx(|| "creating the time namespace");
    }
    if !offsets.is_empty() {
        std::fs::write("/proc/self/timens_offsets", offsets).ctx(|| "writing linux.timeOffsets")?;
    }
    let ns = std::fs::File::open("/proc/self/ns/time_for_children")
        .ctx(|| "opening the new time namespace")?;
    nix::sched::setns(
        ns,
        nix::sched::CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    )
    .ctx(|| "entering the time namespace")
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_offsets_are_one_line_per_clock() {
        let o: std::collections::HashMap<String, oci_spec::runtime::LinuxTimeOffset> =
            serde_json::from_str(
                r#"{"monotonic": {"secs": -5, "nanosecs": 7}, "boottime": {"secs": 9}}"#,
            )
            .unwrap();
        assert_eq!(
            timens_offsets(Some(&o)).unwrap(),
            "boottime 9 0\nmonotonic -5 7\n"
        );
        assert_eq!(timens_offsets(None).unwrap(), "");
        let bad: std::collections::HashMap<String, oci_spec::runtime::LinuxTimeOffset> =
            serde_json::from_str(r#"{"boottime": {"nanosecs": 1000000000}}"#).unwrap();
        assert!(timens_offsets(Some(&bad))
            .unwrap_err()
            .to_string()
            .contains("a second or more"));
    }

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
