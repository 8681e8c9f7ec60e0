//! virtio-vsock with its host side on Unix sockets, the "hybrid" scheme of Firecracker: the
//! VMM listens on a socket PATH; a host program connects to it and writes `CONNECT <port>\n`
//! to reach the guest's vsock port (the VMM answers `OK <host port>\n` once the guest accepts,
//! or closes the connection); a guest connection to the host (CID 2) port P is made to the Unix
//! socket `PATH_P`. Stream sockets only, with the virtio-vsock credit flow control.
//!
//! The VMM keeps an epoll set of its own for these sockets and gives the device loop that one
//! descriptor, so connections come and go without the loop knowing. The socket is removed when
//! the VMM ends; if it dies without doing so (SIGKILL, a seccomp kill, a crash), the VMM's
//! reaper process (reaper.rs, forked at start) removes it.
//!
//! The pieces: packet.rs (the header), conn.rs (one stream and its credit), muxer.rs (the
//! host side: the listener, the host programs' sockets, the protocol), device.rs (the
//! virtio device: its queues).

mod conn;
mod device;
mod muxer;
mod packet;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use device::Vsock;

/// The host's context id.
const HOST_CID: u64 = 2;
/// What each connection may have in flight from the guest to the host program.
const BUF_ALLOC: u32 = 256 * 1024;
/// The largest payload of one packet either way.
const MAX_PAYLOAD: usize = 64 * 1024;
const RX: usize = 0;
const TX: usize = 1;
/// Ports the VMM gives host-initiated connections.
const FIRST_HOST_PORT: u32 = 1 << 30;

/// Why a vsock device cannot be given to the VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--vsock`'s text is not `CID,uds=PATH`.
    #[error("{0}")]
    Spec(String),
    #[error("vsock {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("vsock {}: {msg}", .path.display())]
    Invalid { path: PathBuf, msg: &'static str },
}

fn io_err(p: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: p.to_path_buf(),
        source,
    }
}

/// How a vsock device is given to the VM (`--vsock CID,uds=PATH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockSpec {
    pub cid: u64,
    pub uds: PathBuf,
}

impl std::str::FromStr for VsockSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::Spec(format!("vsock: {s:?} is not CID,uds=PATH (CID 3 or more)"));
        let (cid, rest) = s.split_once(',').ok_or_else(bad)?;
        let cid: u64 = cid
            .parse()
            .ok()
            .filter(|c| *c >= 3 && *c < u64::from(u32::MAX))
            .ok_or_else(bad)?;
        let uds = rest
            .strip_prefix("uds=")
            .filter(|p| !p.is_empty())
            .ok_or_else(bad)?;
        Ok(VsockSpec {
            cid,
            uds: uds.into(),
        })
    }
}

/// As `--vsock` takes it.
impl std::fmt::Display for VsockSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},uds={}", self.cid, self.uds.display())
    }
}
