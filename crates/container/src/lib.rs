//! Container domains: an OCI runtime-spec 1.x implementation.
//!
//! The crate turns a bundle's `config.json` into a running, isolated process: namespaces,
//! a pivoted root with the configured mounts, cgroups (v1 and v2 behind one interface),
//! capabilities, rlimits, seccomp and hooks. The lifecycle verbs (`create`, `start`, `kill`,
//! `delete`, ...) live in [`runtime`]; everything they share with the caller is on disk in
//! `<root>/<id>/state.json`, so any verb works after the process that ran `create` has gone.
//!
//! Pure planning (option parsing, cgroup writes, seccomp compilation, config validation) is
//! kept apart from the code that performs syscalls, so it can be unit-tested without root.

pub mod backend;
pub mod caps;
pub mod cgroups;
pub mod config;
pub mod crash;
pub mod devices;
pub mod error;
pub mod hooks;
mod init;
pub mod layers;
pub mod mounts;
pub mod namespaces;
pub mod notify;
pub mod revoke;
pub mod runtime;
pub mod sched;
pub mod seccomp;
pub mod selfexe;
pub mod state;
mod sync;
pub mod timing;
pub mod tty;
pub mod util;

pub use error::{Error, Result};
