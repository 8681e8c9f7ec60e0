//! Benchmarks that run the same workload on cellvisor and on its peers (crun, runc) in one
//! run, in shuffled order each round, and report medians and ratios. Figures come from here,
//! never from timed tests.

pub mod backend;
pub mod balloon;
pub mod boot;
pub mod density;
pub mod device;
pub mod domains;
pub mod fg;
pub mod host;
pub mod ipc;
pub mod load;
pub mod plot;
pub mod report;
pub mod rootfs;
pub mod rt;
pub mod scale;
pub mod sched;
pub mod soak;
pub mod start;
pub mod stats;
pub mod suite;
pub mod teardown;
pub mod vm;
pub mod vms;

/// Errors of a benchmark run: what failed, with its cause as the source (the caller prints
/// the chain once, [`domain::chain`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Msg(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Backend(#[from] domain::BackendError),
    #[error(transparent)]
    Container(#[from] container::Error),
    #[error(transparent)]
    Channel(#[from] channel::Error),
    /// A daemon the benchmark drives did not answer.
    #[error(transparent)]
    Client(#[from] daemon::client::Error),
    /// A JSON document (a config, an agent's output) that would not parse.
    #[error("{what}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// What failed in one backend (or domain, or guest).
    #[error("{what}")]
    In {
        what: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// This error, as what went wrong in `what` (a backend's name).
    pub fn within(self, what: impl std::fmt::Display) -> Error {
        Error::In {
            what: what.to_string(),
            source: Box::new(self),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io<T>(r: std::io::Result<T>, what: impl FnOnce() -> String) -> Result<T> {
    r.map_err(|source| Error::Io {
        what: what(),
        source,
    })
}

pub(crate) fn json<T>(r: serde_json::Result<T>, what: impl FnOnce() -> String) -> Result<T> {
    r.map_err(|source| Error::Json {
        what: what(),
        source,
    })
}
