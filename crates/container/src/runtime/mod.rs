//! The OCI lifecycle verbs, a file each: create, start, kill, delete, pause/resume, exec,
//! run, and the read-only ones (state, list, ps, stats); `features` and `spec`. Each verb
//! reads what it needs from `<root>/<id>/state.json` and asks [`crate::state::State::status_for`]
//! whether it applies to the container's status (one table of what each verb needs).

mod create;
mod delete;
mod exec;
mod info;
mod kill;
mod pause;
mod run;
mod spec;
mod start;
mod update;

use std::path::Path;

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::error::{Context, Result};
use crate::util::write_atomic;

pub use create::{create, listen_fds, CreateOpts, Created};
pub use delete::delete;
pub use exec::{exec, exec_process, ExecOpts};
pub use info::{list, ps, state, stats, ListEntry};
pub use kill::{kill_container, parse_signal};
pub use pause::set_paused;
pub use run::run;
pub use spec::{default_spec, features};
pub use start::start;
pub use update::update;

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// fork(2) with namespace flags: the child starts in all new namespaces at once.
pub(crate) fn clone3(flags: u64) -> Result<i32> {
    let args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: with no stack given, clone3 behaves like fork: the child continues on a copy
    // of our stack. This process is single-threaded, so the copy is consistent.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        return Err(nix::Error::last()).ctx(|| "creating the container process (clone3)");
    }
    Ok(r as i32)
}

pub(crate) fn write_pid_file(p: &Path, pid: i32) -> Result<()> {
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    write_atomic(&p, pid.to_string().as_bytes())
}

/// Wait for a child and turn its end into a shell-style exit code.
pub fn wait_exit(pid: i32) -> Result<i32> {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, c)) => return Ok(c),
            Ok(WaitStatus::Signaled(_, s, _)) => return Ok(128 + s as i32),
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e).ctx(|| format!("waiting for pid {pid}")),
        }
    }
}
