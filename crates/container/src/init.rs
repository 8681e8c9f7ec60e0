//! The container side of `create` and `exec`: code that runs in the cloned process, inside
//! the new namespaces, up to `execve` of the user's program. It reports every failure to the
//! runtime over the sync socket (before start) or the exec fifo (after start).

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, PosixRlimitType, Process};

use crate::caps::CapSets;
use crate::cgroups::Hierarchy;
use crate::config::Config;
use crate::error::{Context, Error, Result};
use crate::namespaces;
use crate::seccomp::Filter;
use crate::sync::{Chan, Msg};
use crate::util::cstring;

/// Everything the container process needs, prepared by the runtime before the clone.
pub struct InitArgs<'a> {
    pub cfg: &'a Config,
    pub chan: Chan,
    /// O_PATH descriptor of the container's state directory (for the exec fifo).
    pub state_dir: OwnedFd,
    pub console: Option<OwnedFd>,
    pub seccomp: Option<&'a Filter>,
    pub preserve_fds: i32,
    /// Socket-activation descriptors (3..3+listen_fds), before the preserved ones.
    pub listen_fds: i32,
    pub no_pivot: bool,
    pub log: Option<&'a Path>,
    pub hierarchies: &'a [Hierarchy],
    pub cgroup_rel: &'a Path,
    pub hooks: bool,
    /// The seccomp agent's connection, when the filter notifies.
    pub agent: Option<OwnedFd>,
}

/// Entry point of the cloned process. Never returns.
pub fn container_init(a: InitArgs) -> ! {
    match init(&a) {
        Ok(never) => match never {},
        Err(e) => {
            let _ = a.chan.send(&Msg::Error(e.chain()));
            // SAFETY: _exit is always safe; it skips destructors of the copied parent state.
            unsafe { libc::_exit(1) }
        }
    }
}

fn init(a: &InitArgs) -> Result<Infallible> {
    let cfg = a.cfg;
    let spec = &cfg.spec;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Config("process: missing".into()))?;
    set_dumpable(false);
    let mut timings = crate::timing::open_file();
    // Wait until the runtime has written our id maps and moved us into our cgroup.
    match a.chan.recv()? {
        Some(Msg::Proceed) => {}
        _ => exit_quietly(),
    }
    // In a new user namespace, the runtime's nodes for linux.devices (see crate::devices).
    let devices = if cfg.namespaces.creates(LinuxNamespaceType::User) {
        a.chan.recv_fds()?.unwrap_or_else(|| exit_quietly())
    } else {
        Vec::new()
    };
    // With a seccomp agent, the state to send it (the runtime knows our pid as the host sees it).
    let agent_state = match a.agent {
        None => String::new(),
        Some(_) => match a.chan.recv()? {
            Some(Msg::ProcessState(s)) => s,
            _ => exit_quietly(),
        },
    };
    if let Some(log) = a.log {
        redirect_stdio(log)?;
    }
    if cfg.namespaces.creates(LinuxNamespaceType::User) {
        nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .ctx(|| "becoming gid 0 in the user namespace")?;
        nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .ctx(|| "becoming uid 0 in the user namespace")?;
    }
    for (t, path) in cfg.namespaces.joins() {
        if t != LinuxNamespaceType::Pid {
            namespaces::join(t, path)?;
        }
    }
    if cfg.namespaces.creates(LinuxNamespaceType::Cgroup) {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .ctx(|| "creating the cgroup namespace")?;
    }
    if cfg.namespaces.creates(LinuxNamespaceType::Time) {
        let offsets = spec
            .linux()
            .as_ref()
            .and_then(|l| l.time_offsets().as_ref());
        namespaces::enter_new_time(&namespaces::timens_offsets(offsets)?)?;
    }
    crate::timing::mark("init:namespaces");
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(h).ctx(|| format!("setting hostname {h:?}"))?;
    }
    if let Some(d) = spec.domainname().as_deref().filter(|h| !h.is_empty()) {
        let c = cstring(d);
        // SAFETY: c is a valid buffer of the given length.
        if unsafe { libc::setdomainname(c.as_ptr(), d.len()) } < 0 {
            return Err(nix::Error::last()).ctx(|| format!("setting domainname {d:?}"));
        }
    }
    crate::mounts::prepare_rootfs(cfg, a.hierarchies, a.cgroup_rel, devices)?;
    crate::timing::mark("init:mounts");
    let mut state_json = String::new();
    if a.hooks {
        a.chan.send(&Msg::RunHooks)?;
        match a.chan.recv()? {
            Some(Msg::HooksDone(s)) => state_json = s,
            _ => exit_quietly(),
        }
        let state: serde_json::Value = serde_json::from_str(&state_json).unwrap_or_default();
        if let Some(h) = spec
            .hooks()
            .as_ref()
            .and_then(|h| h.create_container().as_ref())
        {
            crate::hooks::run("createContainer", h, &state)?;
        }
    }
    crate::mounts::enter_root(
        &cfg.rootfs,
        a.no_pivot,
        cfg.namespaces.isolates(LinuxNamespaceType::Mount),
    )?;
    // Sysctls before the read-only paths: /proc/sys is usually one of them.
    if let Some(sysctl) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) {
        for (k, v) in sysctl {
            let p = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
            crate::util::write_file(&p, v)?;
        }
    }
    crate::timing::mark("init:pivot+sysctl");
    crate::mounts::finish_rootfs(cfg)?;
    crate::timing::mark("init:masked+readonly");
    if cfg.namespaces.creates(LinuxNamespaceType::Network) {
        loopback_up()?;
    }
    if let Some(adj) = process.oom_score_adj() {
        crate::util::write_file(Path::new("/proc/self/oom_score_adj"), &adj.to_string())?;
    }
    set_rlimits(process)?;
    set_scheduler(process)?;
    set_personality(spec.linux().as_ref())?;
    nix::unistd::setsid().ctx(|| "setsid")?;
    if process.terminal().unwrap_or(false) {
        let console = a.console.as_ref().ok_or_else(|| {
            Error::Msg("process.terminal is true but no --console-socket was given".into())
        })?;
        let size = process
            .console_size()
            .map(|b| (b.height() as u16, b.width() as u16));
        crate::tty::setup(console, size)?;
    }
    let exe = find_executable(process)?;
    crate::timing::mark("init:process");
    if let Some(f) = timings.as_mut() {
        crate::timing::flush_to(f, "init");
    }
    drop(timings);
    a.chan.send(&Msg::Ready)?;
    match a.chan.recv()? {
        Some(Msg::Proceed) => {}
        _ => exit_quietly(),
    }
    // Block until `start` opens the fifo's read side.
    let name = cstring("exec.fifo");
    // SAFETY: state_dir is an open descriptor and name a valid C string.
    let fd = unsafe {
        libc::openat(
            a.state_dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(nix::Error::last()).ctx(|| "opening the exec fifo");
    }
    // SAFETY: openat returned a new descriptor that nothing else owns.
    let fifo = unsafe { OwnedFd::from_raw_fd(fd) };
    nix::unistd::write(&fifo, b"0").ctx(|| "writing the exec fifo")?;
    // From here on, failures go to `start` through the fifo.
    let r = (|| -> Result<Infallible> {
        if let Some(h) = spec
            .hooks()
            .as_ref()
            .and_then(|h| h.start_container().as_ref())
        {
            let state: serde_json::Value = serde_json::from_str(&state_json).unwrap_or_default();
            crate::hooks::run("startContainer", h, &state)?;
        }
        let agent = a.agent.as_ref().map(|sock| crate::notify::Agent {
            sock,
            state: &agent_state,
        });
        finalize(
            process,
            a.seccomp,
            agent,
            a.preserve_fds,
            a.listen_fds,
            &exe,
        )
    })();
    let e = match r {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = nix::unistd::write(&fifo, e.chain().as_bytes());
    // SAFETY: _exit is always safe.
    unsafe { libc::_exit(127) }
}

/// stdin from /dev/null, stdout and stderr appended to `log` (opened while the host's paths
/// are still in view).
fn redirect_stdio(log: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(log)
        .ctx(|| format!("opening the log {}", log.display()))?;
    let null = std::fs::File::open("/dev/null").ctx(|| "opening /dev/null")?;
    for (src, dst) in [
        (null.as_raw_fd(), 0),
        (out.as_raw_fd(), 1),
        (out.as_raw_fd(), 2),
    ] {
        // SAFETY: dup2 between descriptors we hold; the originals close with their Files.
        if unsafe { libc::dup2(src, dst) } < 0 {
            return Err(nix::Error::last()).ctx(|| "redirecting stdio to the log");
        }
    }
    Ok(())
}

fn exit_quietly() -> ! {
    // The runtime went away before we were told to go on: nothing to report to.
    // SAFETY: _exit is always safe.
    unsafe { libc::_exit(1) }
}

pub fn set_dumpable(on: bool) {
    // SAFETY: prctl with PR_SET_DUMPABLE takes an integer; no memory is passed.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, on as libc::c_ulong, 0, 0, 0) };
}

fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType as R;
    (match t {
        R::RlimitCpu => libc::RLIMIT_CPU,
        R::RlimitFsize => libc::RLIMIT_FSIZE,
        R::RlimitData => libc::RLIMIT_DATA,
        R::RlimitStack => libc::RLIMIT_STACK,
        R::RlimitCore => libc::RLIMIT_CORE,
        R::RlimitRss => libc::RLIMIT_RSS,
        R::RlimitNproc => libc::RLIMIT_NPROC,
        R::RlimitNofile => libc::RLIMIT_NOFILE,
        R::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        R::RlimitAs => libc::RLIMIT_AS,
        R::RlimitLocks => libc::RLIMIT_LOCKS,
        R::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        R::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        R::RlimitNice => libc::RLIMIT_NICE,
        R::RlimitRtprio => libc::RLIMIT_RTPRIO,
        R::RlimitRttime => libc::RLIMIT_RTTIME,
    }) as libc::__rlimit_resource_t
}

pub fn set_rlimits(p: &Process) -> Result<()> {
    for r in p.rlimits().as_deref().unwrap_or_default() {
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: setrlimit reads a valid rlimit struct.
        if unsafe { libc::setrlimit(rlimit_resource(r.typ()), &lim) } < 0 {
            let e = nix::Error::last();
            let hint = if e == nix::Error::EPERM {
                " (raising a hard limit needs CAP_SYS_RESOURCE, which this runtime does not have)"
            } else {
                ""
            };
            return Err(Error::Msg(format!(
                "setting {} to {}/{}{hint}: {e}",
                r.typ(),
                r.soft(),
                r.hard()
            )));
        }
    }
    Ok(())
}

/// The program to run, looked up in the process's PATH inside the container's root.
/// `process.scheduler` and `process.ioPriority`, on this process (inside its cgroup
/// already: a real-time policy needs that cgroup's budget).
pub fn set_scheduler(p: &Process) -> Result<()> {
    if let Some(s) = p.scheduler() {
        crate::sched::apply(&crate::sched::plan(s)?)?;
    }
    if let Some(io) = p.io_priority() {
        crate::sched::apply_io_priority(crate::sched::io_priority(io)?)?;
    }
    Ok(())
}

/// `linux.personality`: the execution domain the program runs in (`LINUX32`: `uname -m`
/// says i686 on x86_64).
fn set_personality(linux: Option<&oci_spec::runtime::Linux>) -> Result<()> {
    let Some(p) = linux.and_then(|l| l.personality().as_ref()) else {
        return Ok(());
    };
    let persona = personality_of(p.domain());
    // SAFETY: personality takes an integer.
    if unsafe { libc::personality(persona) } < 0 {
        return Err(nix::Error::last()).ctx(|| "setting linux.personality");
    }
    Ok(())
}

/// personality(2)'s value for a domain (PER_LINUX, PER_LINUX32).
pub fn personality_of(d: oci_spec::runtime::LinuxPersonalityDomain) -> libc::c_ulong {
    match d {
        oci_spec::runtime::LinuxPersonalityDomain::PerLinux => 0x0000,
        oci_spec::runtime::LinuxPersonalityDomain::PerLinux32 => 0x0008,
    }
}

pub fn find_executable(p: &Process) -> Result<PathBuf> {
    let arg0 = p
        .args()
        .as_deref()
        .unwrap_or_default()
        .first()
        .cloned()
        .unwrap_or_default();
    if arg0.contains('/') {
        let path = if Path::new(&arg0).is_absolute() {
            PathBuf::from(&arg0)
        } else {
            p.cwd().join(&arg0)
        };
        check_exec(&path).map_err(|e| Error::Msg(format!("exec {arg0:?}: {e}")))?;
        return Ok(path);
    }
    let path_var = p
        .env()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .to_string();
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let cand = Path::new(dir).join(&arg0);
        if check_exec(&cand).is_ok() {
            return Ok(cand);
        }
    }
    Err(Error::Msg(format!(
        "exec {arg0:?}: executable file not found in $PATH"
    )))
}

fn check_exec(p: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(p).map_err(|e| e.to_string())?;
    if !m.is_file() {
        return Err("not a regular file".into());
    }
    if m.permissions().mode() & 0o111 == 0 {
        return Err("permission denied".into());
    }
    Ok(())
}

/// The last steps before the user's program: user and groups, capabilities, no_new_privs,
/// seccomp, cwd, descriptors. Shared by the container's init and by `exec` (which has no
/// socket-activation descriptors: `listen_fds` 0).
pub fn finalize(
    p: &Process,
    seccomp: Option<&Filter>,
    agent: Option<crate::notify::Agent>,
    preserve_fds: i32,
    listen_fds: i32,
    exe: &Path,
) -> Result<Infallible> {
    let nnp = p.no_new_privileges().unwrap_or(false);
    // The working directory first: the profile may forbid getcwd, which the check needs.
    nix::unistd::chdir(p.cwd()).ctx(|| format!("chdir to process.cwd {}", p.cwd().display()))?;
    check_cwd_inside_root()?;
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: do it while we have it.
    let mut agent = agent;
    if let (Some(f), false) = (seccomp, nnp) {
        crate::notify::install(f, agent.take())?;
    }
    let sets = CapSets::from_spec(p.capabilities().as_ref());
    crate::caps::drop_bounding(&sets)?;
    let user = p.user();
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let groups: Vec<Gid> = user
        .additional_gids()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    match nix::unistd::setgroups(&groups) {
        // setgroups is denied in a user namespace whose setgroups file says "deny".
        Err(nix::Error::EPERM) if groups.is_empty() => {}
        r => r.ctx(|| format!("setting additional groups {groups:?}"))?,
    }
    let (uid, gid) = (Uid::from_raw(user.uid()), Gid::from_raw(user.gid()));
    own_stdio(uid);
    // The user's home, for HOME when the config sets none: read while we may still read it.
    let home = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| home_of(&t, user.uid()))
        .unwrap_or_else(|| "/".into());
    nix::unistd::setresgid(gid, gid, gid).ctx(|| format!("setting gid {gid}"))?;
    nix::unistd::setresuid(uid, uid, uid).ctx(|| format!("setting uid {uid}"))?;
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    crate::caps::apply(&sets)?;
    if let Some(mask) = user.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    if nnp {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
            return Err(nix::Error::last()).ctx(|| "setting no_new_privs");
        }
    }
    reset_signals();
    // Nothing but the socket-activation and preserved descriptors may cross into the
    // container's program, and those do.
    let keep = listen_fds.max(0) + preserve_fds.max(0);
    for fd in 3..3 + keep {
        // SAFETY: fcntl on a descriptor number only changes its flags (EBADF if not open).
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    }
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            (3 + keep) as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    let args: Vec<CString> = p
        .args()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(cstring)
        .collect();
    let mut env: Vec<CString> = p
        .env()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(cstring)
        .collect();
    if !env.iter().any(|e| e.as_bytes().starts_with(b"HOME=")) {
        env.push(cstring(format!("HOME={home}")));
    }
    if listen_fds > 0 {
        // systemd's protocol, for this process: its pid as it sees itself (1 in a pid
        // namespace of its own).
        env.retain(|e| {
            !e.as_bytes().starts_with(b"LISTEN_FDS=") && !e.as_bytes().starts_with(b"LISTEN_PID=")
        });
        env.push(cstring(format!("LISTEN_FDS={listen_fds}")));
        env.push(cstring(format!("LISTEN_PID={}", std::process::id())));
    }
    let exe = cstring(exe);
    if let (Some(f), true) = (seccomp, nnp) {
        crate::notify::install(f, agent)?;
    }
    let e = nix::unistd::execve(&exe, &args, &env).unwrap_err();
    Err(Error::Sys {
        what: format!("exec {:?}", exe),
        source: e,
    })
}

/// The home directory of `uid` in an /etc/passwd text (`name:pw:uid:gid:gecos:home:shell`).
pub fn home_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 7 && f[2].parse() == Ok(uid) && !f[5].is_empty()).then(|| f[5].to_string())
    })
}

/// Standard input, output and error handed in as pipes or files (or the console) are given
/// to the process's user, so a program that is not root can reopen /proc/self/fd/1 — as runc
/// does: only the owner changes (the group stays), /dev/null and what the user owns already
/// are left alone, and a descriptor that cannot change hands (an owner or group not mapped
/// in a user namespace, a read-only file system) is left as it is.
fn own_stdio(uid: Uid) {
    let null = nix::sys::stat::stat("/dev/null").ok().map(|s| s.st_rdev);
    for fd in 0..3 {
        let Ok(st) = nix::sys::stat::fstat(fd) else {
            continue;
        };
        let is_null = (st.st_mode & libc::S_IFMT) == libc::S_IFCHR && Some(st.st_rdev) == null;
        if st.st_uid == uid.as_raw() || is_null {
            continue;
        }
        let _ = nix::unistd::fchown(fd, Some(uid), None);
    }
}

/// The program starts with every signal at its default and none blocked: an ignored signal
/// would survive exec (Rust's runtime ignores SIGPIPE), and so would a mask of our caller's.
fn reset_signals() {
    // The kernel's struct sigaction (glibc's wrapper refuses the signals it reserves, 32 and
    // 33, which a caller may still have ignored).
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: installs SIG_DFL (no handler code) from a valid struct of the size the
            // kernel expects; the old action is not asked for.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                )
            };
        }
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}

/// A working directory reached through a leaked descriptor (CVE-2024-21626) lies outside the
/// root; the kernel then reports it as "(unreachable)/...".
fn check_cwd_inside_root() -> Result<()> {
    let cwd = nix::unistd::getcwd().ctx(|| "getcwd")?;
    if !cwd.is_absolute() || cwd.to_string_lossy().starts_with("(unreachable)") {
        return Err(Error::Msg(format!(
            "working directory {} is outside the container's root",
            cwd.display()
        )));
    }
    Ok(())
}

/// Bring up `lo` in a new network namespace.
fn loopback_up() -> Result<()> {
    // SAFETY: plain socket call.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(nix::Error::last()).ctx(|| "socket for lo");
    }
    // SAFETY: s was just returned by socket.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass.
    unsafe {
        if libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(nix::Error::last()).ctx(|| "reading lo flags");
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(nix::Error::last()).ctx(|| "bringing lo up");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_comes_from_the_users_passwd_entry() {
        let pw = "root:x:0:0:root:/root:/bin/sh\nweird\nnobody:x:65534:65534:nobody:/:/bin/false\nu:x:7:7::/home/u:/bin/sh\nnohome:x:8:8:::/bin/sh\n";
        assert_eq!(home_of(pw, 0).as_deref(), Some("/root"));
        assert_eq!(home_of(pw, 65534).as_deref(), Some("/"));
        assert_eq!(home_of(pw, 7).as_deref(), Some("/home/u"));
        assert_eq!(home_of(pw, 8), None);
        assert_eq!(home_of(pw, 1000), None);
    }
}
