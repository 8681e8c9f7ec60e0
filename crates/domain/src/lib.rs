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

/// A backend error, phrased for the user.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

/// How a domain is isolated and run. Daemon, channels and scheduler speak only to this; the
/// container backend implements it now, the microVM backend later.
pub trait Backend {
    /// Bring `d` up on the shared `base` (or its own rootfs) and start its command.
    fn up(&self, d: &Domain, base: Option<&std::path::Path>) -> Result<(), BackendError>;
    /// Stop it and remove everything it had, but its private writable layer.
    fn down(&self, name: &str) -> Result<(), BackendError>;
    /// Stop it (if running) and remove its private layer too.
    fn destroy(&self, name: &str) -> Result<(), BackendError>;
    fn status(&self, name: &str) -> Result<DomainStatus, BackendError>;
    /// Freeze (`true`) or thaw the domain.
    fn freeze(&self, name: &str, frozen: bool) -> Result<(), BackendError>;
    /// Change its CPU weight (1..10000).
    fn set_cpu_weight(&self, name: &str, weight: u32) -> Result<(), BackendError>;
}
