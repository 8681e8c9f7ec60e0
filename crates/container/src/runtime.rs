//! The OCI lifecycle verbs: create, start, run, state, kill, delete, list, ps, exec, pause,
//! resume, events. Each verb reads what it needs from `<root>/<id>/state.json`.

use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Process};

use crate::cgroups::{Cgroup, Hierarchy};
use crate::config;
use crate::error::{Context, Error, Result};
use crate::init::{self, InitArgs};
use crate::namespaces::{self, Ns};
use crate::state::{self, NewDir, Root, State, Status};
use crate::sync::{self, Msg};
use crate::util::{proc_start_time, rfc3339_now, write_atomic};

/// Options of `create` and `run`.
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: i32,
    pub no_pivot: bool,
    /// Give the container's process this file (appended to) as stdout and stderr, and
    /// /dev/null as stdin, instead of the runtime's own stdio.
    pub log: Option<PathBuf>,
}

/// A created container's init process, for a caller that waits on it (`run`).
pub struct Created {
    pub state: State,
}

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
fn clone3(flags: u64) -> Result<i32> {
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

/// Cleans up a half-created container unless disarmed.
struct Undo<'a> {
    pid: Option<i32>,
    cgroup: Option<&'a Cgroup>,
    /// Host mounts to remove (container without a mount namespace): rootfs and what to keep.
    mounts: Option<(&'a Path, Vec<u32>)>,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
        if let Some(cg) = self.cgroup {
            let _ = cg.remove();
        }
        if let Some((rootfs, keep)) = &self.mounts {
            crate::mounts::unmount_new_under(rootfs, keep);
        }
    }
}

fn owner() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| nix::unistd::getuid().to_string())
}

fn write_id_map(pid: i32, file: &str, maps: &[oci_spec::runtime::LinuxIdMapping]) -> Result<()> {
    let text: String = maps
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect();
    let p = PathBuf::from(format!("/proc/{pid}/{file}"));
    fs::write(&p, text).ctx(|| format!("writing {file} (check linux.{}Mappings)", &file[..3]))
}

/// `create`: set up the container and leave its init waiting for `start`.
pub fn create(root: &Root, o: &CreateOpts) -> Result<Created> {
    state::validate_id(&o.id)?;
    let cfg = config::load(&o.bundle)?;
    crate::timing::mark("config");
    if cfg
        .spec
        .process()
        .as_ref()
        .is_some_and(crate::selfexe::needs_sealed_copy)
    {
        // Nothing has been created yet: the copy starts this verb again from the beginning.
        crate::selfexe::reexec_sealed()?;
    }
    let process = cfg
        .spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Config("process: missing".into()))?;
    let terminal = process.terminal().unwrap_or(false);
    if terminal && o.console_socket.is_none() {
        return Err(Error::Msg(
            "process.terminal is true: --console-socket is required".into(),
        ));
    }
    let linux = cfg
        .spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::Config("linux: missing".into()))?;

    let dir = NewDir::create(root, &o.id)?;
    nix::unistd::mkfifo(
        &dir.path.join("exec.fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .ctx(|| "creating the exec fifo")?;
    if cfg.namespaces.creates(LinuxNamespaceType::User) {
        // The init reaches the fifo as the container's root, which is another host user.
        let host = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
            maps.iter()
                .flatten()
                .find(|m| m.container_id() == 0)
                .map(|m| m.host_id())
        };
        let (uid, gid) = (host(linux.uid_mappings()), host(linux.gid_mappings()));
        nix::unistd::chown(
            &dir.path.join("exec.fifo"),
            uid.map(nix::unistd::Uid::from_raw),
            gid.map(nix::unistd::Gid::from_raw),
        )
        .ctx(|| "handing the exec fifo to the container's root")?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dir.path, fs::Permissions::from_mode(0o711))
            .ctx(|| "state directory mode")?;
    }
    let hierarchies = crate::cgroups::hierarchies()?;
    let cgroup_rel = linux
        .cgroups_path()
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/cellvisor/{}", o.id)));
    let cg = Cgroup::new(&cgroup_rel, hierarchies.clone());
    cg.create(linux.resources().as_ref())?;
    crate::timing::mark("cgroup");
    let host_mounts_before = (!cfg.namespaces.isolates(LinuxNamespaceType::Mount)).then(|| {
        crate::mounts::mount_ids_under(&cfg.rootfs)
            .into_iter()
            .map(|m| m.0)
            .collect::<Vec<u32>>()
    });
    let mut undo = Undo {
        pid: None,
        cgroup: Some(&cg),
        mounts: host_mounts_before
            .clone()
            .map(|k| (cfg.rootfs.as_path(), k)),
    };
    let console = o
        .console_socket
        .as_deref()
        .filter(|_| terminal)
        .map(crate::tty::connect)
        .transpose()?;

    let state_dir: OwnedFd = fs::File::open(&dir.path)
        .ctx(|| "opening the state directory")?
        .into();
    let hooks = cfg.spec.hooks().as_ref();
    let any_hooks = hooks.is_some_and(|h| {
        [
            h.prestart(),
            h.create_runtime(),
            h.create_container(),
            h.start_container(),
        ]
        .iter()
        .any(|l| l.as_deref().is_some_and(|l| !l.is_empty()))
    });
    let (parent, child) = sync::pair()?;
    if let Ns::Join(p) = cfg.namespaces.get(LinuxNamespaceType::Pid) {
        // Only our children enter it; this process stays where it is.
        namespaces::join(LinuxNamespaceType::Pid, p)?;
    }
    let pid = clone3(cfg.namespaces.clone_flags().bits() as u64)?;
    if pid == 0 {
        drop(parent);
        init::container_init(InitArgs {
            cfg: &cfg,
            chan: child,
            state_dir,
            console,
            seccomp: cfg.seccomp.as_ref(),
            preserve_fds: o.preserve_fds,
            no_pivot: o.no_pivot,
            log: o.log.as_deref(),
            hierarchies: &hierarchies,
            cgroup_rel: &cg.path,
            hooks: any_hooks,
        });
    }
    drop(child);
    drop(console);
    crate::timing::mark("clone");
    undo.pid = Some(pid);
    let mut st = State {
        oci_version: cfg.spec.version().clone(),
        id: o.id.clone(),
        pid,
        // Known once the init is ready (below); the hooks' state document does not need it.
        pid_start: 0,
        bundle: cfg.bundle.clone(),
        rootfs: cfg.rootfs.clone(),
        annotations: cfg.spec.annotations().clone().unwrap_or_default(),
        created: rfc3339_now(),
        owner: owner(),
        cgroup_path: cg.path.clone(),
        cgroup_v2: matches!(hierarchies.first(), Some(Hierarchy::Unified(_))),
        host_mounts_before,
        config: cfg.spec.clone(),
    };
    if cfg.namespaces.creates(LinuxNamespaceType::User) {
        write_id_map(
            pid,
            "uid_map",
            linux.uid_mappings().as_deref().unwrap_or_default(),
        )?;
        write_id_map(
            pid,
            "gid_map",
            linux.gid_mappings().as_deref().unwrap_or_default(),
        )?;
    }
    cg.add(pid)?;
    parent.send(&Msg::Proceed)?;
    loop {
        match parent.recv()? {
            Some(Msg::RunHooks) => {
                // The validation suite of runtime-tools (and crun) give create-time hooks
                // the status "created".
                let doc = st.oci(Status::Created);
                if let Some(h) = hooks {
                    crate::hooks::run(
                        "prestart",
                        h.prestart().as_deref().unwrap_or_default(),
                        &doc,
                    )?;
                    crate::hooks::run(
                        "createRuntime",
                        h.create_runtime().as_deref().unwrap_or_default(),
                        &doc,
                    )?;
                }
                parent.send(&Msg::HooksDone(doc.to_string()))?;
            }
            Some(Msg::Ready) => {
                crate::timing::mark("container-setup");
                break;
            }
            Some(Msg::Error(e)) => return Err(Error::Msg(e)),
            Some(m) => {
                return Err(Error::Msg(format!(
                    "unexpected message {m:?} from the container"
                )))
            }
            None => {
                return Err(Error::Msg(
                    "the container process exited during setup".into(),
                ))
            }
        }
    }
    st.pid_start = proc_start_time(pid)
        .ok_or_else(|| Error::Msg("the container process exited during setup".into()))?;
    st.save(root)?;
    if let Some(p) = &o.pid_file {
        write_pid_file(p, pid)?;
    }
    parent.send(&Msg::Proceed)?;
    crate::timing::mark("state");
    undo.pid = None;
    undo.cgroup = None;
    undo.mounts = None;
    dir.keep();
    Ok(Created { state: st })
}

fn write_pid_file(p: &Path, pid: i32) -> Result<()> {
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    write_atomic(&p, pid.to_string().as_bytes())
}

/// `start`: let the init process exec the user's program; returns once it has.
pub fn start(root: &Root, id: &str) -> Result<()> {
    let st = root.load(id)?;
    let status = st.status(root);
    if status != Status::Created {
        return Err(Error::BadState {
            id: id.into(),
            status: status.to_string(),
            msg: "only a created container can be started".into(),
        });
    }
    let fifo = st.fifo(root);
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags_nonblock()
        .open(&fifo)
        .ctx(|| "opening the exec fifo")?;
    let fd: OwnedFd = f.into();
    // Wait for the init to open its side and write its "0". Until it has, the fifo has no
    // writer and a read would see end-of-file, so poll (a fifo never written to does not
    // report a hang-up) and watch that the init is still alive.
    let mut f = fs::File::from(fd);
    loop {
        let mut pfd = [nix::poll::PollFd::new(
            f.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(50u16)) {
            Ok(n) if n > 0 => break,
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e).ctx(|| "polling the exec fifo"),
        }
        if !st.init_alive() {
            let _ = fs::remove_file(&fifo);
            return Err(Error::Msg(format!(
                "container {id:?}: its process exited before it was started"
            )));
        }
    }
    nix::fcntl::fcntl(
        f.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .ctx(|| "setting the exec fifo blocking")?;
    let mut first = [0u8; 1];
    let n = f.read(&mut first).ctx(|| "reading the exec fifo")?;
    if n == 0 {
        let _ = fs::remove_file(&fifo);
        return Err(Error::Msg(format!(
            "container {id:?}: its process exited before it was started"
        )));
    }
    let mut rest = String::new();
    let _ = f.read_to_string(&mut rest);
    let _ = fs::remove_file(&fifo);
    crate::timing::mark("start-exec");
    if !rest.is_empty() {
        return Err(Error::Msg(format!("starting container {id:?}: {rest}")));
    }
    if let Some(h) = st
        .config
        .hooks()
        .as_ref()
        .and_then(|h| h.poststart().as_ref())
    {
        if let Err(e) = crate::hooks::run("poststart", h, &st.oci(Status::Running)) {
            let _ = kill(Pid::from_raw(st.pid), Signal::SIGKILL);
            return Err(e);
        }
    }
    Ok(())
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}
impl NonBlock for fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
    }
}

/// The OCI state document of a container.
pub fn state(root: &Root, id: &str) -> Result<serde_json::Value> {
    let st = root.load(id)?;
    Ok(st.oci(st.status(root)))
}

/// Parse "TERM", "SIGTERM", "15".
pub fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| Error::Msg(format!("unknown signal {s:?}")));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<Signal>()
        .map_err(|_| Error::Msg(format!("unknown signal {s:?}")))
}

/// `kill`: signal the init process, or every process of the container (`all`).
pub fn kill_container(root: &Root, id: &str, sig: Signal, all: bool) -> Result<()> {
    let st = root.load(id)?;
    let status = st.status(root);
    if status == Status::Stopped {
        return Err(Error::BadState {
            id: id.into(),
            status: status.to_string(),
            msg: "cannot signal a stopped container".into(),
        });
    }
    if all {
        let cg = st.cgroup()?;
        for p in cg.pids()? {
            let _ = kill(Pid::from_raw(p), sig);
        }
        if status == Status::Paused && sig == Signal::SIGKILL {
            let _ = cg.freeze(false);
        }
        return Ok(());
    }
    kill(Pid::from_raw(st.pid), sig).ctx(|| format!("sending {sig} to pid {}", st.pid))
}

/// `delete`: remove a stopped (or, with `force`, any) container and everything it left.
pub fn delete(root: &Root, id: &str, force: bool) -> Result<()> {
    let st = match root.load(id) {
        Ok(st) => st,
        Err(Error::NotFound(_)) if force => return Ok(()),
        Err(e) => return Err(e),
    };
    let status = st.status(root);
    // The runtime spec: deleting a container that is not stopped is an error (runc and crun
    // quietly delete a created one; --force does that here).
    if status != Status::Stopped && !force {
        return Err(Error::BadState {
            id: id.into(),
            status: status.to_string(),
            msg: "stop it first, or use delete --force".into(),
        });
    }
    let cg = st.cgroup()?;
    if status != Status::Stopped {
        let _ = kill(Pid::from_raw(st.pid), Signal::SIGKILL);
    }
    // Without a pid namespace of its own, the container's other processes outlive its init.
    if let Ok(pids) = cg.pids() {
        for p in pids {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
    if cg.is_frozen() {
        let _ = cg.freeze(false);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while st.init_alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    cg.remove()?;
    if let Some(keep) = &st.host_mounts_before {
        crate::mounts::unmount_new_under(&st.rootfs, keep);
    }
    let r = st
        .config
        .hooks()
        .as_ref()
        .and_then(|h| h.poststop().as_ref())
        .map(|h| crate::hooks::run("poststop", h, &st.oci(Status::Stopped)));
    state::remove_dir(root, id)?;
    if let Some(Err(e)) = r {
        // The container is gone either way; the caller hears about the failing hook.
        return Err(e);
    }
    Ok(())
}

/// One row of `list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListEntry {
    pub id: String,
    pub pid: i32,
    pub status: String,
    pub bundle: PathBuf,
    pub created: String,
    pub owner: String,
}

pub fn list(root: &Root) -> Vec<ListEntry> {
    root.ids()
        .into_iter()
        .filter_map(|id| root.load(&id).ok())
        .map(|st| {
            let status = st.status(root);
            ListEntry {
                pid: if status == Status::Stopped { 0 } else { st.pid },
                status: status.to_string(),
                id: st.id,
                bundle: st.bundle,
                created: st.created,
                owner: st.owner,
            }
        })
        .collect()
}

/// Host pids of the container's processes.
pub fn ps(root: &Root, id: &str) -> Result<Vec<i32>> {
    let st = root.load(id)?;
    st.cgroup()?.pids()
}

/// `pause` / `resume`.
pub fn set_paused(root: &Root, id: &str, paused: bool) -> Result<()> {
    let st = root.load(id)?;
    let status = st.status(root);
    let want = if paused {
        Status::Running
    } else {
        Status::Paused
    };
    if status != want {
        return Err(Error::BadState {
            id: id.into(),
            status: status.to_string(),
            msg: if paused {
                "only a running container can be paused"
            } else {
                "only a paused container can be resumed"
            }
            .into(),
        });
    }
    st.cgroup()?.freeze(paused)
}

/// `events --stats`: one statistics document.
pub fn stats(root: &Root, id: &str) -> Result<serde_json::Value> {
    let st = root.load(id)?;
    let status = st.status(root);
    if status == Status::Stopped {
        return Err(Error::BadState {
            id: id.into(),
            status: status.to_string(),
            msg: "no statistics for a stopped container".into(),
        });
    }
    Ok(serde_json::json!({"type": "stats", "id": id, "data": st.cgroup()?.stats()}))
}

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
    let status = st.status(root);
    if status != Status::Running {
        return Err(Error::BadState {
            id: o.id.clone(),
            status: status.to_string(),
            msg: "exec needs a running container".into(),
        });
    }
    config::validate_process(&o.process)?;
    let p = &o.process;
    if crate::selfexe::needs_sealed_copy(p) {
        crate::selfexe::reexec_sealed()?;
    }
    if p.terminal().unwrap_or(false) && o.console_socket.is_none() {
        return Err(Error::Msg(
            "a terminal was asked for: --console-socket is required".into(),
        ));
    }
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
    let console = o
        .console_socket
        .as_deref()
        .filter(|_| p.terminal().unwrap_or(false))
        .map(crate::tty::connect)
        .transpose()?;
    init::set_dumpable(false);
    if let Some((t, fd, path)) = ns_fds
        .iter()
        .find(|(t, _, _)| *t == LinuxNamespaceType::Pid)
    {
        namespaces::setns(fd, *t, path)?;
    }
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
                let size = p
                    .console_size()
                    .map(|b| (b.height() as u16, b.width() as u16));
                crate::tty::setup(c, size)?;
            }
            init::set_rlimits(p)?;
            let exe = init::find_executable(p)?;
            init::finalize(p, seccomp.as_ref(), o.preserve_fds, &exe)
        })();
        let Err(e) = r;
        let _ = child.send(&Msg::Error(e.chain()));
        // SAFETY: _exit is always safe.
        unsafe { libc::_exit(127) }
    }
    drop(child);
    drop(console);
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
    wait_exit(pid)
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

/// What `features` reports.
pub fn features() -> serde_json::Value {
    let caps: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": ["async","atime","bind","defaults","dev","diratime","dirsync","exec","loud","mand","noatime","nodev","nodiratime","noexec","nomand","norelatime","nostrictatime","nosuid","private","rbind","relatime","remount","ro","rprivate","rshared","rslave","runbindable","rw","shared","silent","slave","strictatime","suid","sync","tmpcopyup","unbindable"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW","SCMP_ACT_ERRNO","SCMP_ACT_KILL","SCMP_ACT_KILL_PROCESS","SCMP_ACT_KILL_THREAD","SCMP_ACT_LOG","SCMP_ACT_TRACE","SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ","SCMP_CMP_GE","SCMP_CMP_GT","SCMP_CMP_LE","SCMP_CMP_LT","SCMP_CMP_MASKED_EQ","SCMP_CMP_NE"],
                "archs": [if cfg!(target_arch = "aarch64") { "SCMP_ARCH_AARCH64" } else { "SCMP_ARCH_X86_64" }],
                "knownFlags": ["SECCOMP_FILTER_FLAG_TSYNC","SECCOMP_FILTER_FLAG_LOG","SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                "supportedFlags": ["SECCOMP_FILTER_FLAG_TSYNC","SECCOMP_FILTER_FLAG_LOG","SECCOMP_FILTER_FLAG_SPEC_ALLOW"]
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false}
        },
        "annotations": {"io.github.cellvisor.version": env!("CARGO_PKG_VERSION")}
    })
}

/// The config `spec` writes: a busybox-friendly default, as `runc spec` gives.
pub fn default_spec(rootless: bool) -> serde_json::Value {
    let caps = serde_json::json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let mut namespaces = vec![
        serde_json::json!({"type": "pid"}),
        serde_json::json!({"type": "ipc"}),
        serde_json::json!({"type": "uts"}),
        serde_json::json!({"type": "mount"}),
        serde_json::json!({"type": "cgroup"}),
    ];
    let mut linux = serde_json::json!({
        "resources": {"devices": [{"allow": false, "access": "rwm"}]},
        "maskedPaths": ["/proc/acpi","/proc/asound","/proc/kcore","/proc/keys","/proc/latency_stats","/proc/timer_list","/proc/timer_stats","/proc/sched_debug","/sys/firmware","/proc/scsi"],
        "readonlyPaths": ["/proc/bus","/proc/fs","/proc/irq","/proc/sys","/proc/sysrq-trigger"]
    });
    if rootless {
        namespaces.push(serde_json::json!({"type": "user"}));
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        linux["uidMappings"] = serde_json::json!([{"containerID": 0, "hostID": uid, "size": 1}]);
        linux["gidMappings"] = serde_json::json!([{"containerID": 0, "hostID": gid, "size": 1}]);
        linux["resources"] = serde_json::json!(null);
    } else {
        namespaces.insert(1, serde_json::json!({"type": "network"}));
    }
    linux["namespaces"] = serde_json::Value::Array(namespaces);
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "cellvisor",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid","strictatime","mode=755","size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid","noexec","newinstance","ptmxmode=0666","mode=0620","gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid","noexec","nodev","mode=1777","size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid","noexec","nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid","noexec","nodev","ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid","noexec","nodev","relatime","ro"]}
        ],
        "linux": linux
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_in_every_spelling() {
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sigusr1").unwrap(), Signal::SIGUSR1);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }

    #[test]
    fn default_spec_is_a_valid_config() {
        for rootless in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir(dir.path().join("rootfs")).unwrap();
            let spec: oci_spec::runtime::Spec =
                serde_json::from_value(default_spec(rootless)).unwrap();
            config::from_spec(spec, dir.path().into()).unwrap();
        }
    }

    #[test]
    fn features_is_well_formed() {
        let f: oci_spec::runtime::Features = serde_json::from_value(features()).unwrap();
        assert_eq!(f.oci_version_min(), "1.0.0");
    }
}
