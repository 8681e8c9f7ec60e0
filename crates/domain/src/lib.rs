//! The device model, with no syscalls: a device *profile* (TOML) names the domains of one
//! device — their backend, role, root filesystem, resources and devices — and the system-wide
//! channel policy between them. [`profile::load`] parses and validates it, reporting every
//! problem as one line with its place in the file; [`policy::Policy`] decides, deny by
//! default, whether one domain may open a channel to another.

pub mod policy;
pub mod profile;

pub use policy::{Decision, Policy};
pub use profile::{Backend, Domain, Profile, Role};

/// The phone profile the README's demo runs, embedded so it is always at hand.
pub const DEFAULT_PROFILE: &str = include_str!("../../../examples/phone.toml");
