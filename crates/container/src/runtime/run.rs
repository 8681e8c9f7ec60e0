//! `run`: create and start, and in the foreground wait, forwarding signals, then delete.

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::{create, delete, start, CreateOpts};
use crate::error::{Context, Result};
use crate::state::Root;

/// `run` in the foreground: create, start, forward signals, wait, delete.
pub fn run(root: &Root, o: &CreateOpts, detach: bool) -> Result<i32> {
    let created = create(root, o)?;
    if let Err(e) = start(root, &o.id) {
        let _ = delete(root, &o.id, true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let pid = created.state.pid;
    let code = forward_signals_and_wait(pid);
    crate::timing::mark("wait");
    let _ = delete(root, &o.id, true);
    crate::timing::mark("delete");
    code
}

fn forward_signals_and_wait(pid: i32) -> Result<i32> {
    use nix::sys::signal::{SigSet, SigmaskHow};
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
