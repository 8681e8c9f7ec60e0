//! `exec`: another process inside a running container.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Process};

use super::{clone3, wait_exit, write_pid_file};
use crate::config;
use crate::error::{Context, Error, Result};
use crate::init;
use crate::namespaces;
use crate::state::{Root, Verb};
use crate::sync::{self, Msg};

/// Options of `exec`.
#[derive(Debug, Clone)]
pub struct ExecOpts {
    pub id: String,
    pub process: Process,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub detach: bool,
    pub preserve_fds: i32,
}

/// The process `exec` runs when no process.json is given: the container's own process with
/// these args (env, user, capabilities, cwd inherited).
pub fn exec_process(root: &Root, id: &str) -> Result<Process> {
    let st = root.load(id)?;
    Ok(st.config.process().clone().unwrap_or_default())
}

/// `exec`: run another process inside a running container. Returns its exit code when not
/// detached, 0 otherwise.
pub fn exec(root: &Root, o: &ExecOpts) -> Result<i32> {
    let st = root.load(&o.id)?;
    st.status_for(root, Verb::Exec)?;
    config::validate_process(&o.process)?;
    let p = &o.process;
    if crate::selfexe::needs_sealed_copy(p) {
        crate::selfexe::reexec_sealed()?;
    }
    let terminal = p.terminal().unwrap_or(false);
    if terminal && o.console_socket.is_none() && o.detach {
        return Err(Error::Msg(
            "a terminal was asked for with --detach: --console-socket is required".into(),
        ));
    }
    // In the foreground without a console socket: the user's own terminal, joined to it.
    let attach = terminal && o.console_socket.is_none();
    let seccomp = st
        .config
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .map(crate::seccomp::compile)
        .transpose()
        .map_err(Error::Msg)?;
    // The container's namespaces that differ from ours, user first and mount last.
    let mut ns_fds = Vec::new();
    for t in namespaces::JOIN_ORDER {
        let name = namespaces::proc_name(t);
        let theirs = format!("/proc/{}/ns/{name}", st.pid);
        let (Ok(a), Ok(b)) = (
            fs::metadata(&theirs),
            fs::metadata(format!("/proc/self/ns/{name}")),
        ) else {
            continue;
        };
        use std::os::unix::fs::MetadataExt;
        if a.ino() == b.ino() && a.dev() == b.dev() {
            continue;
        }
        let fd: OwnedFd = fs::File::open(&theirs)
            .ctx(|| format!("opening {theirs}"))?
            .into();
        ns_fds.push((t, fd, PathBuf::from(theirs)));
    }
    let cg = st.cgroup()?;
    let mut ours = None;
    let our_size = attach.then(crate::tty::size_of_stdin).flatten();
    let console = if attach {
        let (a, b) = crate::tty::pair()?;
        ours = Some(a);
        Some(b)
    } else {
        o.console_socket
            .as_deref()
            .filter(|_| terminal)
            .map(crate::tty::connect)
            .transpose()?
    };
    init::set_dumpable(false);
    if let Some((t, fd, path)) = ns_fds
        .iter()
        .find(|(t, _, _)| *t == LinuxNamespaceType::Pid)
    {
        namespaces::setns(fd, *t, path)?;
    }
    // The seccomp agent, reached before anything runs.
    let listener = seccomp.as_ref().and_then(|f| f.listener.as_ref());
    let agent = listener
        .map(|l| crate::notify::connect(l, 3 + o.preserve_fds.max(0)))
        .transpose()?;
    let (parent, child) = sync::pair()?;
    let pid = clone3(0)?;
    if pid == 0 {
        drop(parent);
        let r = (|| -> Result<std::convert::Infallible> {
            for (_, d) in cg.dirs() {
                crate::util::write_file(&d.join("cgroup.procs"), "0")?;
            }
            for (t, fd, path) in &ns_fds {
                if *t != LinuxNamespaceType::Pid {
                    namespaces::setns(fd, *t, path)?;
                }
            }
            nix::unistd::chdir("/").ctx(|| "chdir /")?;
            nix::unistd::setsid().ctx(|| "setsid")?;
            if let Some(c) = &console {
                // Attached to our terminal: its size from the start (the program may ask
                // before we could set it from outside).
                let size = p
                    .console_size()
                    .map(|b| (b.height() as u16, b.width() as u16))
                    .or(our_size);
                crate::tty::setup(c, size)?;
            }
            init::set_rlimits(p)?;
            init::set_scheduler(p)?;
            let exe = init::find_executable(p)?;
            // Our pid as the host sees it comes with the state for the agent.
            let state = match &agent {
                None => String::new(),
                Some(_) => match child.recv()? {
                    Some(Msg::ProcessState(s)) => s,
                    m => return Err(Error::Msg(format!("unexpected message {m:?}"))),
                },
            };
            let agent = agent.as_ref().map(|sock| crate::notify::Agent {
                sock,
                state: &state,
            });
            init::finalize(p, seccomp.as_ref(), agent, o.preserve_fds, 0, &exe)
        })();
        let Err(e) = r;
        let _ = child.send(&Msg::Error(e.chain()));
        // SAFETY: _exit is always safe.
        unsafe { libc::_exit(127) }
    }
    drop(child);
    drop(console);
    if let Some(l) = listener {
        let doc = crate::notify::process_state(l, st.oci(crate::state::Status::Running), pid);
        // A child that failed first says why below.
        let _ = parent.send(&Msg::ProcessState(doc));
    }
    drop(agent);
    // EOF: the process exec'd (the socket is close-on-exec). A message: it failed.
    match parent.recv()? {
        None => {}
        Some(Msg::Error(e)) => {
            let _ = waitpid(Pid::from_raw(pid), None);
            return Err(Error::Msg(e));
        }
        Some(m) => return Err(Error::Msg(format!("unexpected message {m:?}"))),
    }
    if let Some(pf) = &o.pid_file {
        if let Err(e) = write_pid_file(pf, pid) {
            // The caller would not know the process: do not leave it running.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
            return Err(e);
        }
    }
    if o.detach {
        return Ok(0);
    }
    let Some(ours) = ours else {
        return wait_exit(pid);
    };
    let set = super::run::signals();
    let term = crate::tty::recv_master(&ours).and_then(|m| crate::tty::Attached::new(m, &set));
    let term = match term {
        Ok(t) => t,
        Err(e) => {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
            return Err(e);
        }
    };
    term.serve(pid, &set)
}
