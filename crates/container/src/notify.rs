//! Seccomp user notification (`SCMP_ACT_NOTIFY`), as the runtime-spec describes it: the
//! runtime connects to the agent's socket (`linux.seccomp.listenerPath`) before the container's
//! process exists, so a missing agent fails `create` (or `exec`) with nothing made; the process
//! inherits the connection, installs its filter, which returns the notify descriptor, and hands
//! that over with the container process state: one state per connection, the descriptor by
//! SCM_RIGHTS and named `seccompFd` in the state's `fds`, then the connection closed.
//!
//! The filtered process cannot send it itself: its filter may notify on sendmsg, and nobody
//! would answer. As crun does, a helper cloned just before the install shares the process's
//! descriptor table (CLONE_FILES) but not its filter; it waits for the descriptor to appear
//! and sends it, and the process waits for the helper before it goes on to execve.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::error::{Context, Error, Result};
use crate::seccomp::{Filter, Listener};

/// The connected agent and the state document to send it.
pub struct Agent<'a> {
    pub sock: &'a OwnedFd,
    pub state: &'a str,
}

/// Connect to the agent; the descriptor is close-on-exec and numbered `min_fd` or above, so
/// it stays clear of the descriptors the container's program is to inherit.
pub fn connect(l: &Listener, min_fd: RawFd) -> Result<OwnedFd> {
    let s = std::os::unix::net::UnixStream::connect(&l.path).map_err(|e| {
        Error::Msg(format!(
            "linux.seccomp.listenerPath {}: cannot reach the seccomp agent: {e}",
            l.path.display()
        ))
    })?;
    let fd = nix::fcntl::fcntl(s.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(min_fd))
        .ctx(|| "moving the agent's socket")?;
    // SAFETY: fcntl returned a new descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// The container process state sent to `l` with the descriptor: `state` is the container's
/// state document, `pid` the filtered process as the host sees it.
pub fn process_state(l: &Listener, state: serde_json::Value, pid: i32) -> String {
    let mut doc = serde_json::json!({
        "ociVersion": state["ociVersion"],
        "fds": ["seccompFd"],
        "pid": pid,
        "state": state,
    });
    if let Some(m) = &l.metadata {
        doc["metadata"] = m.as_str().into();
    }
    doc.to_string()
}

/// How long the helper waits for the filter's descriptor.
const HAND_OVER_WAIT: Duration = Duration::from_secs(5);

/// Install `f`; when it notifies, hand its descriptor to `agent` (required then).
pub fn install(f: &Filter, agent: Option<Agent>) -> Result<()> {
    let Some(agent) = agent.filter(|_| f.listener.is_some()) else {
        crate::seccomp::install(f).ctx(|| "loading the seccomp filter")?;
        return Ok(());
    };
    // The install returns the lowest free descriptor: find it now. Nothing in between opens
    // one (this process has one thread, and the helper opens none).
    let next = nix::fcntl::fcntl(
        agent.sock.as_raw_fd(),
        nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(0),
    )
    .ctx(|| "finding the next descriptor")?;
    nix::unistd::close(next).ctx(|| "finding the next descriptor")?;
    let helper = crate::runtime::clone3(libc::CLONE_FILES as u64)?;
    if helper == 0 {
        // SAFETY: prctl with integer arguments only; _exit is always safe.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::_exit(hand_over(
                agent.sock.as_raw_fd(),
                next,
                agent.state.as_bytes(),
            ))
        }
    }
    let installed = crate::seccomp::install(f);
    let stop_helper = || {
        let pid = nix::unistd::Pid::from_raw(helper);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    };
    let fd = match installed {
        Ok(Some(fd)) => fd,
        Ok(None) => {
            stop_helper();
            return Err(Error::Msg(
                "the seccomp filter gave no notify descriptor".into(),
            ));
        }
        Err(e) => {
            stop_helper();
            return Err(Error::Io {
                what: "loading the seccomp filter".into(),
                source: e,
            });
        }
    };
    if fd.as_raw_fd() != next {
        stop_helper();
        return Err(Error::Msg(format!(
            "the seccomp notify descriptor is {}, not the {next} its helper waits for",
            fd.as_raw_fd()
        )));
    }
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(helper), None)
        .ctx(|| "waiting for the seccomp agent's hand-over")?;
    match status {
        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
        nix::sys::wait::WaitStatus::Exited(_, code) => Err(Error::Sys {
            what: "sending the seccomp notify descriptor to the agent".into(),
            source: nix::Error::from_raw(code),
        }),
        s => Err(Error::Msg(format!(
            "the seccomp agent's hand-over ended with {s:?}"
        ))),
    }
    // `fd` is close-on-exec: the program does not inherit it.
}

/// In the helper: wait until `fd` is open in the shared table, send it with `state`; the exit
/// code, 0 or an errno.
fn hand_over(sock: RawFd, fd: RawFd, state: &[u8]) -> i32 {
    let end = Instant::now() + HAND_OVER_WAIT;
    // SAFETY: F_GETFD only asks about a descriptor number.
    while unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        if Instant::now() > end {
            return libc::ETIMEDOUT;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd];
    let mut sent = match sendmsg::<()>(
        sock,
        &[std::io::IoSlice::new(state)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    ) {
        Ok(n) => n,
        Err(e) => return e as i32,
    };
    // A stream socket may take the document in parts; the descriptor went with the first.
    while sent < state.len() {
        match nix::sys::socket::send(sock, &state[sent..], MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => sent += n,
            Err(nix::Error::EINTR) => {}
            Err(e) => return e as i32,
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_state_names_the_descriptor_and_carries_the_state() {
        let st =
            serde_json::json!({"ociVersion": "1.2.0", "id": "c1", "status": "creating", "pid": 42});
        let listener = |m: Option<&str>| Listener {
            path: "/agent.sock".into(),
            metadata: m.map(String::from),
        };
        let doc: serde_json::Value =
            serde_json::from_str(&process_state(&listener(Some("k=v")), st.clone(), 42)).unwrap();
        assert_eq!(doc["ociVersion"], "1.2.0");
        assert_eq!(doc["fds"], serde_json::json!(["seccompFd"]));
        assert_eq!(doc["pid"], 42);
        assert_eq!(doc["metadata"], "k=v");
        assert_eq!(doc["state"], st);
        let doc: serde_json::Value =
            serde_json::from_str(&process_state(&listener(None), st, 42)).unwrap();
        assert!(doc.get("metadata").is_none());
    }
}
