//! `run`: create and start, and in the foreground wait, forwarding signals, then delete. With
//! `process.terminal` and no console socket, the container's terminal is joined to the
//! user's own, as runc and crun do: raw mode, both directions, the size and its changes.

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::{create, delete, start, CreateOpts};
use crate::error::{Context, Result};
use crate::state::Root;
use crate::tty::Attached;

/// `run` in the foreground: create, start, forward signals, wait, delete.
pub fn run(root: &Root, o: &CreateOpts, detach: bool) -> Result<i32> {
    // The user's own terminal, when the container wants one and no console socket takes it.
    let opts = CreateOpts {
        own_terminal: !detach && o.console_socket.is_none(),
        ..o.clone()
    };
    let created = create(root, &opts)?;
    let set = signals();
    let term = match created.master.map(|m| Attached::new(m, &set)).transpose() {
        Ok(t) => t,
        Err(e) => {
            let _ = delete(root, &o.id, true);
            return Err(e);
        }
    };
    if let Err(e) = start(root, &o.id) {
        drop(term);
        let _ = delete(root, &o.id, true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let pid = created.state.pid;
    let code = match &term {
        Some(t) => t.serve(pid, &set),
        None => forward_signals_and_wait(pid, set),
    };
    drop(term);
    crate::timing::mark("wait");
    let _ = delete(root, &o.id, true);
    crate::timing::mark("delete");
    code
}

/// The signals `run` passes on (and SIGCHLD, which ends its wait).
pub(super) fn signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
        Signal::SIGCHLD,
    ] {
        set.add(s);
    }
    set
}

/// Wait for the container's process, passing it our signals.
fn forward_signals_and_wait(pid: i32, set: SigSet) -> Result<i32> {
    use nix::sys::signal::SigmaskHow;
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .ctx(|| "blocking signals")?;
    loop {
        // Reap first: the child may have exited before the signals were blocked.
        match waitpid(
            Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        ) {
            Ok(WaitStatus::Exited(_, c)) => return Ok(c),
            Ok(WaitStatus::Signaled(_, s, _)) => return Ok(128 + s as i32),
            Ok(_) => {}
            Err(e) => return Err(e).ctx(|| "waiting for the container"),
        }
        let sig = set.wait().ctx(|| "waiting for signals")?;
        if sig != Signal::SIGCHLD {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }
}
