//! Benchmarks that run the same workload on cellvisor and on its peers (crun, runc) in one
//! run, in shuffled order each round, and report medians and ratios. Figures come from here,
//! never from timed tests.

pub mod domains;
pub mod ipc;
pub mod plot;
pub mod scale;
pub mod start;
pub mod stats;
pub mod suite;
pub mod vm;

/// Errors of a benchmark run.
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
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io<T>(r: std::io::Result<T>, what: impl FnOnce() -> String) -> Result<T> {
    r.map_err(|source| Error::Io {
        what: what(),
        source,
    })
}
