//! `create`: set up the container and leave its init waiting for `start`.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Process};

use super::{clone3, write_pid_file};
use crate::cgroups::systemd::{self, bus::Systemd};
use crate::cgroups::{Cgroup, Hierarchy};
use crate::config::{self, Config};
use crate::error::{Context, Error, Result};
use crate::init::{self, InitArgs};
use crate::namespaces::{self, Ns};
use crate::state::{self, NewDir, Root, State, Status};
use crate::sync::{self, Chan, Msg};
use crate::util::{proc_start_time, rfc3339_now};

/// Options of `create` and `run`.
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    /// With process.terminal and no console socket: keep the terminal's master end for the
    /// caller ([`Created::master`]) — `run` in the foreground, joining it to the user's own.
    pub own_terminal: bool,
    pub preserve_fds: i32,
    /// Socket activation: descriptors from 3 on that the runtime was handed with LISTEN_FDS,
    /// given to the container's process before the preserved ones, with LISTEN_FDS and
    /// LISTEN_PID set for it ([`listen_fds`]).
    pub listen_fds: i32,
    pub no_pivot: bool,
    /// Give the container's process this file (appended to) as stdout and stderr, and
    /// /dev/null as stdin, instead of the runtime's own stdio.
    pub log: Option<PathBuf>,
    /// The systemd cgroup driver (`--systemd-cgroup`): the cgroup is a transient unit of
    /// systemd's (see [`crate::cgroups::systemd`]).
    pub systemd_cgroup: bool,
}

/// How many socket-activation descriptors (from 3 on) the runtime was handed, by the
/// environment systemd's protocol sets: `LISTEN_FDS=N`, and `LISTEN_PID` naming this process
/// (or not set, as a caller that cannot know our pid leaves it). Anything else: none.
pub fn listen_fds(listen_fds: Option<&str>, listen_pid: Option<&str>, my_pid: u32) -> i32 {
    let for_us = listen_pid.is_none_or(|p| p.trim().parse() == Ok(my_pid));
    match listen_fds.and_then(|n| n.trim().parse::<i32>().ok()) {
        Some(n) if for_us && (1..=1024).contains(&n) => n,
        _ => 0,
    }
}

/// A created container's init process, for a caller that waits on it (`run`).
pub struct Created {
    pub state: State,
    /// The terminal's master end, with [`CreateOpts::own_terminal`] and process.terminal.
    pub master: Option<OwnedFd>,
}

/// Cleans up a half-created container unless disarmed.
struct Undo<'a> {
    pid: Option<i32>,
    /// A systemd unit started for the container, to stop.
    unit: Option<(&'a Systemd, &'a str)>,
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
        if let Some((bus, name)) = self.unit {
            let _ = bus.stop(name);
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

/// Without a mount namespace of its own, the container's mounts are the host's: the ids of
/// those under its root now, so that its own can be told apart (and removed) later.
fn host_mounts_before(cfg: &Config) -> Option<Vec<u32>> {
    (!cfg.namespaces.isolates(LinuxNamespaceType::Mount)).then(|| {
        crate::mounts::mount_ids_under(&cfg.rootfs)
            .into_iter()
            .map(|m| m.0)
            .collect()
    })
}

/// The user namespace's uid and gid maps of the init `pid`.
fn write_id_maps(pid: i32, linux: &oci_spec::runtime::Linux) -> Result<()> {
    write_id_map(
        pid,
        "uid_map",
        linux.uid_mappings().as_deref().unwrap_or_default(),
    )?;
    write_id_map(
        pid,
        "gid_map",
        linux.gid_mappings().as_deref().unwrap_or_default(),
    )
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
    let (process, linux) = process_and_linux(&cfg)?;
    let terminal = process.terminal().unwrap_or(false);
    if terminal && o.console_socket.is_none() && !o.own_terminal {
        return Err(Error::Msg(
            "process.terminal is true: --console-socket is required".into(),
        ));
    }
    // Made before anything else (they live in descriptors only, so a failure below leaves
    // nothing of them behind).
    let devices = if crate::devices::runtime_makes_them(&cfg) {
        crate::devices::make_for_userns(&cfg)?
    } else {
        Vec::new()
    };
    let dir = NewDir::create(root, &o.id)?;
    exec_fifo(&dir.path, &cfg, linux)?;
    let hierarchies = crate::cgroups::hierarchies()?;
    let v2 = matches!(hierarchies.first(), Some(Hierarchy::Unified(_)));
    // With the systemd driver: the unit, its properties and systemd itself, before anything
    // is made.
    let systemd = o
        .systemd_cgroup
        .then(|| systemd_unit(&cfg, linux, &o.id, v2))
        .transpose()?;
    let cgroup_rel = match &systemd {
        Some((unit, _, _)) => unit.path.clone(),
        None => cgroupfs_path(linux, &o.id)?,
    };
    let exclusive = crate::cgroups::exclusive::asked(cfg.spec.annotations().as_ref())?;
    if let Some(s) = process.scheduler() {
        let cpus = crate::cgroups::cpus_of(linux.resources().as_ref());
        let online = crate::cgroups::rt::online_cpus();
        crate::sched::check_cpus(
            &crate::sched::plan(s)?,
            &domain::profile::cpu_list(&cpus),
            &online,
            v2,
            exclusive != crate::cgroups::exclusive::Want::No,
        )?;
    }
    let cg = Cgroup::new(&cgroup_rel, hierarchies.clone())
        .with_exclusive(exclusive)
        .adopting(systemd.is_some());
    if systemd.is_none() {
        cg.create(linux.resources().as_ref())?;
    }
    crate::timing::mark("cgroup");
    let host_mounts_before = host_mounts_before(&cfg);
    let mut undo = Undo {
        pid: None,
        unit: None,
        cgroup: systemd.is_none().then_some(&cg),
        mounts: host_mounts_before
            .clone()
            .map(|k| (cfg.rootfs.as_path(), k)),
    };
    // The seccomp agent, reached now: if it is not there, nothing runs.
    let listener = cfg.seccomp.as_ref().and_then(|f| f.listener.as_ref());
    let agent = listener
        .map(|l| crate::notify::connect(l, 3 + o.listen_fds.max(0) + o.preserve_fds.max(0)))
        .transpose()?;
    let (pid, parent, ours) = spawn_init(&cfg, o, &dir.path, terminal, &hierarchies, &cg, agent)?;
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
        cgroup_v2: v2,
        systemd_unit: systemd.as_ref().map(|(u, _, _)| u.name.clone()),
        host_mounts_before,
        config: cfg.spec.clone(),
    };
    if cfg.namespaces.creates(LinuxNamespaceType::User) {
        write_id_maps(pid, linux)?;
    }
    if let Some((unit, props, bus)) = &systemd {
        // systemd makes the group with the process in it; the rest is written to its files.
        // Stopped on failure from here on: a start that timed out may still have its unit.
        undo.unit = Some((bus, unit.name.as_str()));
        bus.start(unit, props, pid, &o.id)?;
        cg.create(linux.resources().as_ref())?;
        undo.cgroup = Some(&cg);
        crate::timing::mark("systemd");
    }
    cg.add(pid)?;
    parent.send(&Msg::Proceed)?;
    if cfg.namespaces.creates(LinuxNamespaceType::User) {
        parent.send_fds(&devices)?;
    }
    drop(devices);
    if let Some(l) = listener {
        let doc = crate::notify::process_state(l, st.oci(Status::Creating), pid);
        parent.send(&Msg::ProcessState(doc))?;
    }
    setup_dialogue(&parent, &st, &cfg)?;
    // The init sent the terminal's master before it said it was ready.
    let master = ours.as_ref().map(crate::tty::recv_master).transpose()?;
    st.pid_start = proc_start_time(pid)
        .ok_or_else(|| Error::Msg("the container process exited during setup".into()))?;
    st.save(root)?;
    if let Some(p) = &o.pid_file {
        write_pid_file(p, pid)?;
    }
    parent.send(&Msg::Proceed)?;
    crate::timing::mark("state");
    undo.pid = None;
    undo.unit = None;
    undo.cgroup = None;
    undo.mounts = None;
    dir.keep();
    Ok(Created { state: st, master })
}

/// The cgroupfs driver's path: the config's, or `/cellvisor/ID`; one in systemd's form is
/// refused with the flag it needs.
fn cgroupfs_path(linux: &oci_spec::runtime::Linux, id: &str) -> Result<PathBuf> {
    let p = linux
        .cgroups_path()
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/cellvisor/{id}")));
    if p.to_string_lossy().contains(':') {
        return Err(Error::Config(format!(
            "linux.cgroupsPath: {:?} is in systemd form (slice:prefix:name): run with --systemd-cgroup, or give a plain path",
            p.display().to_string()
        )));
    }
    Ok(p)
}

/// The systemd driver's unit for the container, its properties, and the connection.
fn systemd_unit(
    cfg: &Config,
    linux: &oci_spec::runtime::Linux,
    id: &str,
    v2: bool,
) -> Result<(systemd::Unit, systemd::Properties, Systemd)> {
    let path = linux
        .cgroups_path()
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned());
    let unit = systemd::unit_of(path.as_deref(), id).map_err(Error::Config)?;
    let props = systemd::properties(
        linux.resources().as_ref(),
        v2,
        &cfg.spec.annotations().clone().unwrap_or_default(),
    )
    .map_err(Error::Config)?;
    Ok((unit, props, Systemd::connect()?))
}

/// The config's process and linux sections, which `create` needs.
fn process_and_linux(cfg: &Config) -> Result<(&Process, &oci_spec::runtime::Linux)> {
    let process = cfg
        .spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Config("process: missing".into()))?;
    let linux = cfg
        .spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::Config("linux: missing".into()))?;
    Ok((process, linux))
}

/// The exec fifo in the state directory `dir`: the init blocks opening it until `start`.
/// With a user namespace, the container's root (another host user) owns it.
fn exec_fifo(dir: &Path, cfg: &Config, linux: &oci_spec::runtime::Linux) -> Result<()> {
    nix::unistd::mkfifo(
        &dir.join("exec.fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .ctx(|| "creating the exec fifo")?;
    if !cfg.namespaces.creates(LinuxNamespaceType::User) {
        return Ok(());
    }
    let host = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.iter()
            .flatten()
            .find(|m| m.container_id() == 0)
            .map(|m| m.host_id())
    };
    let (uid, gid) = (host(linux.uid_mappings()), host(linux.gid_mappings()));
    nix::unistd::chown(
        &dir.join("exec.fifo"),
        uid.map(nix::unistd::Uid::from_raw),
        gid.map(nix::unistd::Gid::from_raw),
    )
    .ctx(|| "handing the exec fifo to the container's root")?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o711)).ctx(|| "state directory mode")
}

/// Clone the container's init into its new namespaces (joining a given pid namespace
/// first): its pid, and our end of the sync socket. The child never returns from here.
fn spawn_init(
    cfg: &Config,
    o: &CreateOpts,
    dir: &Path,
    terminal: bool,
    hierarchies: &[Hierarchy],
    cg: &Cgroup,
    agent: Option<OwnedFd>,
) -> Result<(i32, Chan, Option<OwnedFd>)> {
    // The console: the caller's socket, or one end of a pair whose other end we keep.
    let (console, ours) = match o.console_socket.as_deref() {
        _ if !terminal => (None, None),
        Some(path) => (Some(crate::tty::connect(path)?), None),
        None => {
            let (a, b) = crate::tty::pair()?;
            (Some(b), Some(a))
        }
    };
    let state_dir: OwnedFd = fs::File::open(dir)
        .ctx(|| "opening the state directory")?
        .into();
    let any_hooks = cfg.spec.hooks().as_ref().is_some_and(|h| {
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
            cfg,
            chan: child,
            state_dir,
            console,
            seccomp: cfg.seccomp.as_ref(),
            preserve_fds: o.preserve_fds,
            listen_fds: o.listen_fds,
            no_pivot: o.no_pivot,
            log: o.log.as_deref(),
            hierarchies,
            cgroup_rel: &cg.path,
            hooks: any_hooks,
            agent,
        });
    }
    // The container's process holds the agent's connection now; ours goes.
    drop(agent);
    Ok((pid, parent, ours))
}

/// The init's setup, as it reports it: the prestart and createRuntime hooks run here when
/// it asks, until it is ready (or says why not).
fn setup_dialogue(parent: &Chan, st: &State, cfg: &Config) -> Result<()> {
    loop {
        match parent.recv()? {
            Some(Msg::RunHooks) => {
                // The validation suite of runtime-tools (and crun) give create-time hooks
                // the status "created".
                let doc = st.oci(Status::Created);
                if let Some(h) = cfg.spec.hooks() {
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
                return Ok(());
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
}

#[cfg(test)]
mod tests {
    use super::listen_fds;

    #[test]
    fn socket_activation_is_for_this_process_only() {
        assert_eq!(listen_fds(Some("2"), Some("42"), 42), 2);
        // A caller that cannot know our pid leaves LISTEN_PID out.
        assert_eq!(listen_fds(Some("1"), None, 42), 1);
        // Meant for another process (our parent, say), or not a count: none.
        assert_eq!(listen_fds(Some("2"), Some("41"), 42), 0);
        assert_eq!(listen_fds(Some("x"), None, 42), 0);
        assert_eq!(listen_fds(Some("0"), None, 42), 0);
        assert_eq!(listen_fds(Some("-3"), None, 42), 0);
        assert_eq!(listen_fds(None, Some("42"), 42), 0);
    }
}
