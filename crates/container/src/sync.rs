//! The socket between the runtime and the container process it is setting up: small tagged
//! messages, one per packet (SOCK_SEQPACKET), so either side sees the other's death as EOF.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use crate::error::{Context, Error, Result};

/// Messages of the create protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// runtime → child: id maps written and cgroup joined; go on.
    Proceed,
    /// child → runtime: run the prestart and createRuntime hooks now.
    RunHooks,
    /// runtime → child: hooks done; the state document for the container's own hooks.
    HooksDone(String),
    /// child → runtime: set up, waiting to be started.
    Ready,
    /// child → runtime: failed, with the reason.
    Error(String),
    /// runtime → child: the container process state for the seccomp agent.
    ProcessState(String),
}

pub struct Chan(pub OwnedFd);

pub fn pair() -> Result<(Chan, Chan)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .ctx(|| "creating the sync socket")?;
    Ok((Chan(a), Chan(b)))
}

impl Chan {
    pub fn send(&self, m: &Msg) -> Result<()> {
        let buf: Vec<u8> = match m {
            Msg::Proceed => vec![1],
            Msg::RunHooks => vec![2],
            Msg::HooksDone(s) => {
                let mut v = vec![3];
                v.extend_from_slice(s.as_bytes());
                v
            }
            Msg::Ready => vec![4],
            Msg::Error(s) => {
                let mut v = vec![5];
                v.extend_from_slice(s.as_bytes());
                v
            }
            Msg::ProcessState(s) => {
                let mut v = vec![8];
                v.extend_from_slice(s.as_bytes());
                v
            }
        };
        // MSG_NOSIGNAL: a peer that died is an error to report, not a signal that kills us
        // before we can clean up after it.
        nix::sys::socket::send(
            self.0.as_raw_fd(),
            &buf,
            nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        )
        .ctx(|| "writing to the sync socket")?;
        Ok(())
    }

    /// Receive one message; `None` when the other side has gone.
    pub fn recv(&self) -> Result<Option<Msg>> {
        // Room for a state document with a large set of annotations.
        let mut buf = vec![0u8; 1 << 18];
        let n = loop {
            match nix::unistd::read(self.0.as_raw_fd(), &mut buf) {
                Err(nix::Error::EINTR) => continue,
                r => break r.ctx(|| "reading the sync socket")?,
            }
        };
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(match buf[0] {
            1 => Msg::Proceed,
            2 => Msg::RunHooks,
            3 => Msg::HooksDone(String::from_utf8_lossy(&buf[1..n]).into_owned()),
            4 => Msg::Ready,
            5 => Msg::Error(String::from_utf8_lossy(&buf[1..n]).into_owned()),
            8 => Msg::ProcessState(String::from_utf8_lossy(&buf[1..n]).into_owned()),
            t => return Err(Error::Msg(format!("bad sync message {t}"))),
        }))
    }
}

/// Packet tags of [`Chan::send_fds`]: descriptors follow, and the last packet of them.
const FDS: u8 = 6;
const FDS_DONE: u8 = 7;
/// Descriptors per packet: what one receive takes.
const FDS_PER_PACKET: usize = crate::util::MAX_FDS;

impl Chan {
    /// Send descriptors (SCM_RIGHTS), in order, in as many packets as they need, then the
    /// end mark; an empty list is the end mark alone.
    pub fn send_fds(&self, fds: &[OwnedFd]) -> Result<()> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        use std::os::fd::RawFd;
        for chunk in fds.chunks(FDS_PER_PACKET) {
            let raw: Vec<RawFd> = chunk.iter().map(|f| f.as_raw_fd()).collect();
            let iov = [std::io::IoSlice::new(&[FDS])];
            sendmsg::<()>(
                self.0.as_raw_fd(),
                &iov,
                &[ControlMessage::ScmRights(&raw)],
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .ctx(|| "sending descriptors on the sync socket")?;
        }
        nix::sys::socket::send(self.0.as_raw_fd(), &[FDS_DONE], MsgFlags::MSG_NOSIGNAL)
            .ctx(|| "writing to the sync socket")?;
        Ok(())
    }

    /// Receive what [`Chan::send_fds`] sent; `None` when the other side has gone.
    pub fn recv_fds(&self) -> Result<Option<Vec<OwnedFd>>> {
        let mut out = Vec::new();
        loop {
            let mut buf = [0u8; 16];
            let (n, fds) = crate::util::recv_with_fds(self.0.as_raw_fd(), &mut buf)
                .ctx(|| "reading descriptors from the sync socket")?;
            out.extend(fds);
            if n == 0 {
                return Ok(None);
            }
            match buf[0] {
                FDS => {}
                FDS_DONE => return Ok(Some(out)),
                t => {
                    return Err(Error::Msg(format!(
                        "bad sync message {t} (descriptors expected)"
                    )))
                }
            }
        }
    }
}
