//! The device model, with no syscalls: a device *profile* (TOML) names the domains of one
//! device — their backend, role, root filesystem, resources and devices — and the system-wide
//! channel policy between them. [`profile::load`] parses and validates it, reporting every
//! problem as one line with its place in the file; [`policy::Policy`] decides, deny by
//! default, whether one domain may open a channel to another.

pub mod policy;
pub mod profile;

pub use policy::{Decision, Policy};
pub use profile::{BackendKind, Domain, Profile, Role};

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

/// A backend error, phrased for the user.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

/// How a domain comes up.
#[derive(Debug, Clone, Default)]
pub struct UpOpts<'a> {
    /// The shared read-only base root filesystem (Cells' layout), when the domain has no rootfs.
    pub base: Option<&'a std::path::Path>,
    /// A host directory the domain sees read-only at `/run/cellvisor` (its channel port and
    /// the agent that speaks to it).
    pub run_dir: Option<&'a std::path::Path>,
    /// Device nodes the domain is given (shared devices, and exclusive ones when it starts
    /// in the foreground).
    pub devices: Vec<std::path::PathBuf>,
    /// Descriptors the domain's first process inherits, as 3, 4, ... in this order.
    pub fds: Vec<std::os::fd::RawFd>,
}

/// How a domain is isolated and run. Daemon, channels and scheduler speak only to this; the
/// container backend implements it now, the microVM backend later.
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
    fn stats(&self, name: &str) -> Result<DomainStats, BackendError>;
    /// The domain's main process, as the host sees it.
    fn pid(&self, name: &str) -> Option<i32>;
    /// Does the backend hold anything of the domain (running or not)?
    fn exists(&self, name: &str) -> bool;
    /// Where the domain's output goes.
    fn log_path(&self, name: &str) -> Option<std::path::PathBuf>;
}
