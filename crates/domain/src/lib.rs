//! The device model, with no syscalls: a device *profile* (TOML) names the domains of one
//! device — their backend, role, root filesystem, resources and devices — and the system-wide
//! channel policy between them. [`profile::load`] parses and validates it, reporting every
//! problem as one line with its place in the file; [`policy::Policy`] decides, deny by
//! default, whether one domain may open a channel to another.

pub mod policy;
pub mod profile;

pub use policy::{Decision, Policy};
pub use profile::{BackendKind, Domain, DomainKind, Profile, Role};

/// The phone profile the README's demo runs, embedded so it is always at hand.
pub const DEFAULT_PROFILE: &str = include_str!("../../../examples/phone.toml");

/// What a backend answers about one domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainStatus {
    Running,
    /// Frozen in the background.
    Frozen,
    Stopped,
}

/// A domain's resource use, as `top` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DomainStats {
    /// CPU time used since the domain started, ns.
    pub cpu_ns: u64,
    pub memory_bytes: u64,
    pub pids: u64,
}

/// A domain's CPU time counter as its cgroup keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuTime {
    /// ns per CPU, indexed by CPU number (cgroup v1 cpuacct.usage_percpu).
    PerCpu(Vec<u64>),
    /// ns in all (cgroup v2 cpu.stat usage_usec: it has no per-CPU figure).
    Total(u64),
}

/// The cause of a backend error: the runtime's, the kernel's (an errno), a file's.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a backend could not do. The message says what and for which domain; the cause is
/// kept as the source, so the caller prints the whole chain once ([`chain`]).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("domain {0} is already up")]
    AlreadyUp(String),
    /// A change that needs the domain running (devices, weights).
    #[error("domain {0} is not running")]
    NotRunning(String),
    /// The domain or the request asks for what cannot be (no root, a weight out of range).
    #[error("domain {domain}: {msg}")]
    Invalid { domain: String, msg: String },
    /// Doing `what` for `domain` failed.
    #[error("domain {domain}: {what}")]
    Failed {
        domain: String,
        what: String,
        #[source]
        source: Cause,
    },
}

impl BackendError {
    /// `what` failed for `domain` because of `source`.
    pub fn failed(
        domain: &str,
        what: impl std::fmt::Display,
        source: impl Into<Cause>,
    ) -> BackendError {
        BackendError::Failed {
            domain: domain.to_string(),
            what: what.to_string(),
            source: source.into(),
        }
    }

    pub fn invalid(domain: &str, msg: impl std::fmt::Display) -> BackendError {
        BackendError::Invalid {
            domain: domain.to_string(),
            msg: msg.to_string(),
        }
    }
}

/// The most a document the user names (a config.json, a profile, a resources file) may
/// hold: a device or a pipe without end is refused when it passes this, not read for ever.
pub const MAX_DOCUMENT: u64 = 64 << 20;

/// Read all of `r`, refusing more than `max` bytes.
pub fn read_bounded(r: impl std::io::Read, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    r.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("more than {max} bytes: not a document"),
        ));
    }
    Ok(out)
}

/// Read the file at `path` with [`read_bounded`] and [`MAX_DOCUMENT`].
pub fn read_document(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    read_bounded(std::fs::File::open(path)?, MAX_DOCUMENT)
}

/// An error and its causes on one line, `what: cause: cause`: how an error is printed once,
/// at the top (a binary's last words, an API answer, a report).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    one_line(&s)
}

/// `s` with its control characters escaped (`\n`, `\u{1b}`): a message that quotes what a
/// user or a domain wrote (a JSON key, a channel name) stays one line and cannot drive the
/// terminal it is printed on.
pub fn one_line(s: &str) -> String {
    escape_controls(s, |_| true)
}

/// `s` with its control characters escaped but its line breaks: a report of several errors,
/// one per line (a profile's), printed on a terminal.
pub fn printable(s: &str) -> String {
    escape_controls(s, |c| c != '\n')
}

fn escape_controls(s: &str, escape: fn(char) -> bool) -> String {
    let esc = |c: char| c.is_control() && escape(c);
    if !s.chars().any(esc) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if esc(c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A cause that reached us as text (from a child process, over a pipe).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Reported(pub String);

/// How a domain comes up.
#[derive(Debug, Clone, Default)]
pub struct UpOpts<'a> {
    /// The shared read-only base root filesystem (Cells' layout), when the domain has no rootfs.
    pub base: Option<&'a std::path::Path>,
    /// A host directory the domain sees at `/run/cellvisor` (its channel port and the agent
    /// that speaks to it): read-only, but for a microVM's VMM, which makes its vsock socket
    /// there.
    pub run_dir: Option<&'a std::path::Path>,
    /// Device nodes the domain is given (shared devices, and exclusive ones when it starts
    /// in the foreground).
    pub devices: Vec<std::path::PathBuf>,
    /// Descriptors the domain's first process inherits, as 3, 4, ... in this order.
    pub fds: Vec<std::os::fd::RawFd>,
}

/// How a domain is isolated and run. Daemon, channels and scheduler speak only to this; the
/// container backend (crates/container) and the microVM backend (crates/microvm) implement it.
pub trait Backend {
    /// Bring `d` up and start its command.
    fn up(&self, d: &Domain, o: &UpOpts) -> Result<(), BackendError>;
    /// Stop it and remove everything it had, but its private writable layer.
    fn down(&self, name: &str) -> Result<(), BackendError>;
    /// Stop it (if running) and remove its private layer too.
    fn destroy(&self, name: &str) -> Result<(), BackendError>;
    fn status(&self, name: &str) -> Result<DomainStatus, BackendError>;
    /// Freeze (`true`) or thaw the domain.
    fn freeze(&self, name: &str, frozen: bool) -> Result<(), BackendError>;
    /// Change its CPU weight (1..10000).
    fn set_cpu_weight(&self, name: &str, weight: u32) -> Result<(), BackendError>;
    /// Give the domain the host device `node` (it may open it, and finds it at the same path)
    /// or take it away (`present == false`: it can no longer open it, and the node is gone).
    fn set_device(
        &self,
        name: &str,
        node: &std::path::Path,
        present: bool,
    ) -> Result<(), BackendError>;
    /// Open the host device `node` for the running domain `name`, as the daemon: the
    /// descriptor its port hands over (logind's TakeDevice). A backend whose domains cannot
    /// take a host descriptor (a microVM's guest) refuses.
    fn open_device(
        &self,
        name: &str,
        _node: &std::path::Path,
    ) -> Result<std::os::fd::OwnedFd, BackendError> {
        Err(BackendError::invalid(
            name,
            "its backend cannot take a host device's descriptor",
        ))
    }
    fn stats(&self, name: &str) -> Result<DomainStats, BackendError>;
    /// A microvm domain's balloon: with `size_mib`, its new size (memory the guest is asked
    /// to give back); the balloon's figures as the VMM gives them (JSON text).
    fn balloon(&self, name: &str, _size_mib: Option<u64>) -> Result<String, BackendError> {
        Err(BackendError::invalid(
            name,
            "has no balloon (a microvm domain with balloon = true has one)",
        ))
    }
    /// Cap the memory of the running domain `name` that the host's reclaim should leave it
    /// (`None`: no cap), when the device runs short. A backend that cannot says so.
    fn set_memory_cap(&self, name: &str, _cap: Option<u64>) -> Result<(), BackendError> {
        Err(BackendError::invalid(
            name,
            "its backend cannot cap its memory yet",
        ))
    }
    /// Put the running domain on `cpus` (its cpuset; a microVM's VMM with it), within what
    /// its profile allows: the scheduler's actuator.
    fn set_cpus(&self, name: &str, cpus: &[u32]) -> Result<(), BackendError>;
    /// Its CPU time, per CPU where the host counts it so.
    fn cpu_time(&self, name: &str) -> Result<CpuTime, BackendError>;
    /// The domain's main process, as the host sees it.
    fn pid(&self, name: &str) -> Option<i32>;
    /// Does the backend hold anything of the domain (running or not)?
    fn exists(&self, name: &str) -> bool;
    /// Where the domain's output goes.
    fn log_path(&self, name: &str) -> Option<std::path::PathBuf>;
    /// Wait until a start of the domain that another process began (a daemon killed while
    /// bringing it up) has ended, finished or undone: what the domain is then, it stays.
    fn settle(&self, _name: &str) {}
}

#[cfg(test)]
mod read_tests {
    #[test]
    fn a_message_stays_one_line() {
        assert_eq!(super::one_line("plain: text"), "plain: text");
        assert_eq!(
            super::one_line("unknown field `a\nb\u{1b}[2J`"),
            "unknown field `a\\nb\\u{1b}[2J`"
        );
        assert_eq!(super::printable("one\ntwo\u{1b}"), "one\ntwo\\u{1b}");
    }

    #[test]
    fn an_endless_document_is_refused() {
        assert_eq!(super::read_bounded(&b"abc"[..], 3).unwrap(), b"abc");
        let e = super::read_bounded(std::io::repeat(0), 1000).unwrap_err();
        assert!(e.to_string().contains("more than 1000 bytes"), "{e}");
    }
}
