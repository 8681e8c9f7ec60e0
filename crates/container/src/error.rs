//! The runtime's error type: one short line saying what failed and with which input; the cause
//! (an errno, an I/O error) is kept as the source and printed after it by the caller.

use std::fmt::Display;

/// Errors of the container runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundle's config.json (or a process.json) is malformed or asks for something invalid.
    #[error("invalid config: {0}")]
    Config(String),
    /// No container with this id in the state root.
    #[error("container {0:?} does not exist")]
    NotFound(String),
    /// A container with this id already exists in the state root.
    #[error("container {0:?} already exists")]
    Exists(String),
    /// The verb does not apply to the container in its present state.
    #[error("container {id:?} is {status}: {msg}")]
    BadState {
        id: String,
        status: String,
        msg: String,
    },
    /// A system call failed.
    #[error("{what}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
    /// A file operation failed.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Anything else, already phrased for the user.
    #[error("{0}")]
    Msg(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The whole chain on one line: `what: cause: cause`.
    pub fn chain(&self) -> String {
        domain::chain(self)
    }
}

/// Attach a description to a failed syscall or I/O call.
pub trait Context<T> {
    fn ctx<D: Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, nix::Error> {
    fn ctx<D: Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|source| Error::Sys {
            what: what().to_string(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn ctx<D: Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|source| Error::Io {
            what: what().to_string(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, rustix::io::Errno> {
    fn ctx<D: Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| Error::Sys {
            what: what().to_string(),
            source: nix::Error::from_raw(e.raw_os_error()),
        })
    }
}

/// Build a `Config` error from a format string.
#[macro_export]
macro_rules! config_err {
    ($($arg:tt)*) => { $crate::error::Error::Config(format!($($arg)*)) };
}
