//! Domains as containers: the [`domain::Backend`] of the device platform. A domain becomes a
//! container whose root is an overlay of the profile's shared base with the domain's private
//! layer (Cells' layout), whose limits come from the profile, and whose state lives under the
//! backend's directory: `<dir>/domains/<name>/` (layer, bundle) and `<dir>/oci/` (runtime state).
//! The microVM backend (crates/microvm) jails its VMM in such a domain through
//! [`ContainerBackend::up_with`]; nothing here knows of VMs.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use domain::{Backend, BackendError, Domain, DomainStats, DomainStatus, Reported, UpOpts};
use serde_json::json;

use crate::layers::Layered;
use crate::runtime::{self, CreateOpts};
use crate::state::{Root, State, Status};

pub struct ContainerBackend {
    dir: PathBuf,
    /// Prefix of the container ids (and so of the cgroup paths) of this backend's domains.
    prefix: String,
    /// The container state of each domain that is up, read once from its state.json (it does
    /// not change while the container lives; its status is read from the kernel each time).
    states: Mutex<HashMap<String, Arc<State>>>,
}

/// A host device node: (type `c` or `b`, major, minor, permission bits).
pub fn device_node(p: &Path) -> std::io::Result<(char, u32, u32, u32)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(p)?;
    let typ = if m.file_type().is_char_device() {
        'c'
    } else if m.file_type().is_block_device() {
        'b'
    } else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a device node",
        ));
    };
    Ok((
        typ,
        libc::major(m.rdev()),
        libc::minor(m.rdev()),
        m.mode() & 0o777,
    ))
}

/// The OCI config of a domain: its command, a private hostname, network (unless it shares
/// the network device), pid, ipc, uts, mount and cgroup namespaces, the default capabilities,
/// its limits, its passthrough and granted devices, and its run directory (read-only).
pub fn oci_config(
    d: &Domain,
    rootfs: &Path,
    o: &UpOpts,
) -> Result<serde_json::Value, BackendError> {
    let mut c = runtime::default_spec(false);
    c["process"]["terminal"] = json!(false);
    c["process"]["args"] = json!(d.command());
    c["hostname"] = json!(d.name);
    c["root"] = json!({"path": rootfs, "readonly": false});
    c["annotations"] = json!({"io.cellvisor.domain": d.name, "io.cellvisor.role": d.role.name()});
    if d.shared_devices.iter().any(|s| s == "network") {
        // The shared network device: the host's network namespace.
        if let Some(ns) = c["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "network");
        }
    }
    if let Some(run) = o.run_dir {
        if let Some(m) = c["mounts"].as_array_mut() {
            m.push(
                json!({"destination": RUN_DIR, "type": "bind", "source": run,
                          "options": ["rbind", "ro", "nosuid", "nodev"]}),
            );
        }
    }
    let mut res = json!({"cpu": {}});
    if d.cpu_weight != 100 {
        // 100 is the kernel's default weight: nothing to write.
        res["cpu"]["shares"] = json!(crate::cgroups::plan::weight_to_shares(d.cpu_weight.into()));
    }
    if let Some(cpus) = &d.cpus {
        res["cpu"]["cpus"] = json!(cpus);
    }
    if let Some(m) = d.memory_bytes {
        res["memory"] = json!({"limit": m, "swap": m});
    }
    if let Some(p) = d.pids {
        res["pids"] = json!({"limit": p});
    }
    if let Some(rt) = d.realtime {
        use domain::profile::RtPolicy;
        // What this host's kernel can do for it, read once.
        let host = crate::cgroups::rt::host();
        let (sched, budget) = match rt {
            RtPolicy::Fifo { priority, budget } => (
                json!({"policy": "SCHED_FIFO", "priority": priority}),
                Some(budget),
            ),
            RtPolicy::Rr { priority, budget } => (
                json!({"policy": "SCHED_RR", "priority": priority}),
                Some(budget),
            ),
            RtPolicy::Deadline {
                runtime_ns,
                deadline_ns,
                period_ns,
            } => (
                json!({"policy": "SCHED_DEADLINE", "runtime": runtime_ns,
                       "deadline": deadline_ns, "period": period_ns}),
                None,
            ),
        };
        c["process"]["scheduler"] = sched;
        if d.cpus.is_some() && host.exclusive_cpus {
            // Its cores are its own, by the kernel's rule too where the kernel lets it (another
            // manager's cpuset beside /cellvisor on v1 does not); the profile's placement keeps
            // the others off them in any case.
            c["annotations"][crate::cgroups::exclusive::ANNOTATION] = json!("preferred");
        }
        // Without real-time group scheduling (cgroup v2) the budget cannot be the domain's:
        // the host-wide limit holds (`cellvisor profile check` says so).
        if let Some(b) = budget.filter(|_| host.rt_group_budgets) {
            res["cpu"]["realtimeRuntime"] = json!(b.runtime_us);
            res["cpu"]["realtimePeriod"] = json!(b.period_us);
        }
    }
    res["devices"] = json!([{"allow": false, "access": "rwm"}]);
    c["linux"]["resources"] = res;
    c["linux"]["devices"] = json!([]);
    // A device given from the port only is never a node in the domain's /dev.
    let granted = o.devices.iter().filter(|p| {
        !device_node(p).is_ok_and(|(k, major, minor, _)| crate::revoke::port_only(k, major, minor))
    });
    for p in d.passthrough.iter().chain(granted) {
        allow_device(&mut c, p)
            .map_err(|e| BackendError::failed(&d.name, format!("device {}", p.display()), e))?;
    }
    Ok(c)
}

/// Where a domain sees its run directory (its port, the agent).
pub const RUN_DIR: &str = "/run/cellvisor";

/// Allow device `p` in an OCI config: its node in `linux.devices` and a rule in the devices
/// cgroup.
pub fn allow_device(c: &mut serde_json::Value, p: &Path) -> std::io::Result<()> {
    let (typ, major, minor, mode) = device_node(p)?;
    if let Some(devs) = c["linux"]["devices"].as_array_mut() {
        devs.push(json!({"path": p, "type": typ.to_string(), "major": major, "minor": minor, "fileMode": mode}));
    }
    if let Some(rules) = c["linux"]["resources"]["devices"].as_array_mut() {
        rules.push(json!({"allow": true, "type": typ.to_string(), "major": major, "minor": minor, "access": "rwm"}));
    }
    Ok(())
}

impl ContainerBackend {
    /// A backend keeping its state in `dir`; its containers are named `<prefix>-<domain>`.
    pub fn new(dir: &Path, prefix: &str) -> Self {
        ContainerBackend {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            states: Mutex::new(HashMap::new()),
        }
    }

    /// The container id of a domain.
    pub fn container_id(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    fn root(&self) -> Root {
        Root(self.dir.join("oci"))
    }

    fn domain_dir(&self, name: &str) -> PathBuf {
        self.dir.join("domains").join(name)
    }

    /// The domain's directory, locked (flock) for a start: the lock goes with the starting
    /// process and its container's init until that execs the domain's command.
    fn start_lock(&self, name: &str) -> Result<std::fs::File, BackendError> {
        crate::util::flock(&self.domain_dir(name), true)
            .map_err(|e| BackendError::failed(name, "locking its directory", e))
    }

    /// Every device rule of a domain with `change` applied: its config's rules, then the
    /// changes made since it started (kept in `devices.json`, one per node, latest last).
    /// What a cgroup v2 device filter is rebuilt from.
    fn rules_with(
        &self,
        name: &str,
        change: &crate::cgroups::plan::DevRule,
    ) -> crate::Result<Vec<crate::cgroups::plan::DevRule>> {
        use crate::cgroups::plan::{device_rules, DevRule, RWM};
        let dd = self.domain_dir(name);
        let cfg: oci_spec::runtime::Spec = serde_json::from_slice(
            &std::fs::read(dd.join("bundle/config.json"))
                .map_err(|e| crate::Error::Msg(format!("domain {name}: its config: {e}")))?,
        )
        .map_err(|e| crate::Error::Msg(format!("domain {name}: its config: {e}")))?;
        let mut rules = device_rules(cfg.linux().as_ref().and_then(|l| l.resources().as_ref()));
        let path = dd.join("devices.json");
        let mut changes: Vec<(bool, char, u32, u32)> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let key = (
            change.kind,
            change.major.unwrap_or(0),
            change.minor.unwrap_or(0),
        );
        changes.retain(|c| (c.1, c.2, c.3) != key);
        changes.push((change.allow, key.0, key.1, key.2));
        crate::util::write_atomic(&path, &serde_json::to_vec(&changes).unwrap_or_default())?;
        rules.extend(changes.iter().map(|&(allow, kind, major, minor)| DevRule {
            allow,
            kind,
            major: Some(major),
            minor: Some(minor),
            access: RWM,
        }));
        Ok(rules)
    }

    fn states(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<State>>> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The domain's container state: kept from an earlier call while its container lives,
    /// else read (and kept). `None`: the domain has no container.
    fn state(&self, name: &str) -> Result<Option<Arc<State>>, BackendError> {
        let root = self.root();
        if let Some(st) = self.states().get(name).cloned() {
            if st.init_alive() {
                return Ok(Some(st));
            }
        }
        // Not kept, or its process is gone (the container may have been made again since).
        self.states().remove(name);
        match root.load(&self.container_id(name)) {
            Ok(st) => {
                let st = Arc::new(st);
                if st.init_alive() {
                    self.states().insert(name.to_string(), st.clone());
                }
                Ok(Some(st))
            }
            Err(crate::Error::NotFound(_)) => Ok(None),
            Err(e) => Err(BackendError::failed(name, "reading its state", e)),
        }
    }

    /// The domain's container state; an error when it has no container.
    fn load(&self, name: &str) -> Result<Arc<State>, BackendError> {
        self.state(name)?.ok_or_else(|| {
            BackendError::failed(
                name,
                "reading its state",
                crate::Error::NotFound(self.container_id(name)),
            )
        })
    }

    fn layer(&self, name: &str, base: &Path) -> Layered {
        Layered::new(base, &self.domain_dir(name).join("layer"))
    }
}

impl ContainerBackend {
    /// Bring `d` up as a container whose config is [`oci_config`] changed by `edit` (how the
    /// microVM backend puts its VMM in): its root prepared, its bundle written, the container
    /// created and started from a detached child. A failure leaves nothing of it but its
    /// private directory.
    pub fn up_with(
        &self,
        d: &Domain,
        o: &UpOpts,
        edit: impl FnOnce(&mut serde_json::Value) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        let base = o.base;
        let name = d.name.as_str();
        self.states().remove(name);
        if crate::state::exists(&self.root(), &self.container_id(name)) {
            return Err(BackendError::AlreadyUp(name.to_string()));
        }
        let dd = self.domain_dir(name);
        let bundle = dd.join("bundle");
        std::fs::create_dir_all(&bundle)
            .map_err(|e| BackendError::failed(name, format!("creating {}", bundle.display()), e))?;
        let (rootfs, layer) = match (&d.rootfs, base) {
            (Some(r), _) => (r.clone(), None),
            (None, Some(b)) => {
                let l = self.layer(name, b);
                let root = l
                    .prepare()
                    .map_err(|e| BackendError::failed(name, "preparing its root", e))?;
                (root, Some(l))
            }
            (None, None) => {
                return Err(BackendError::invalid(name, "no rootfs and no shared base"));
            }
        };
        let r = (|| {
            let mut cfg = oci_config(d, &rootfs, o)?;
            edit(&mut cfg)?;
            std::fs::write(bundle.join("config.json"), cfg.to_string())
                .map_err(|e| BackendError::failed(name, "writing its bundle", e))?;
            let co = CreateOpts {
                id: self.container_id(&d.name),
                bundle: bundle.clone(),
                log: Some(dd.join("log")),
                preserve_fds: o.fds.len() as i32,
                ..Default::default()
            };
            let root = self.root();
            // Held until the container's process runs (or the start failed), even if this
            // process dies meanwhile: see `settle`.
            let lock = self.start_lock(name)?;
            // The runtime's error crosses the fork as text: it becomes the cause.
            detached(
                &o.fds,
                Some(std::os::fd::AsRawFd::as_raw_fd(&lock)),
                move || {
                    runtime::create(&root, &co).map_err(|e| e.chain())?;
                    runtime::start(&root, &co.id).map_err(|e| {
                        let _ = runtime::delete(&root, &co.id, true);
                        e.chain()
                    })
                },
            )
            .map_err(|e| BackendError::failed(name, "starting it", Reported(e)))
        })();
        if r.is_err() {
            if let Some(l) = layer {
                let _ = l.unmount();
            }
        }
        r
    }
}

impl Backend for ContainerBackend {
    fn up(&self, d: &Domain, o: &UpOpts) -> Result<(), BackendError> {
        if d.backend() != domain::BackendKind::Container {
            return Err(BackendError::invalid(
                &d.name,
                "a microvm domain runs on the microvm backend",
            ));
        }
        self.up_with(d, o, |_| Ok(()))
    }

    fn down(&self, name: &str) -> Result<(), BackendError> {
        self.states().remove(name);
        let id = self.container_id(name);
        match runtime::delete(&self.root(), &id, true) {
            Ok(()) | Err(crate::Error::NotFound(_)) => {}
            Err(e) => return Err(BackendError::failed(name, "removing its container", e)),
        }
        // The base path is not needed to unmount.
        self.layer(name, Path::new("/"))
            .unmount()
            .map_err(|e| BackendError::failed(name, "unmounting its root", e))
    }

    fn destroy(&self, name: &str) -> Result<(), BackendError> {
        self.down(name)?;
        let dd = self.domain_dir(name);
        match std::fs::remove_dir_all(&dd) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BackendError::failed(
                name,
                format!("removing {}", dd.display()),
                e,
            )),
        }
    }

    fn status(&self, name: &str) -> Result<DomainStatus, BackendError> {
        Ok(match self.state(name)?.map(|st| st.status(&self.root())) {
            Some(Status::Paused) => DomainStatus::Frozen,
            Some(Status::Stopped) | None => DomainStatus::Stopped,
            Some(_) => DomainStatus::Running,
        })
    }

    fn freeze(&self, name: &str, frozen: bool) -> Result<(), BackendError> {
        runtime::set_paused(&self.root(), &self.container_id(name), frozen).map_err(|e| {
            BackendError::failed(name, if frozen { "freezing it" } else { "thawing it" }, e)
        })
    }

    fn set_cpu_weight(&self, name: &str, weight: u32) -> Result<(), BackendError> {
        if !(1..=10000).contains(&weight) {
            return Err(BackendError::invalid(
                name,
                format!("cpu weight {weight} is outside 1..10000"),
            ));
        }
        let st = self.load(name)?;
        st.cgroup()
            .and_then(|c| c.set_cpu_weight(weight))
            .map_err(|e| BackendError::failed(name, format!("setting its cpu weight {weight}"), e))
    }

    fn set_device(&self, name: &str, node: &Path, present: bool) -> Result<(), BackendError> {
        let st = self.load(name)?;
        if !st.init_alive() {
            return Err(BackendError::NotRunning(name.to_string()));
        }
        let (typ, major, minor, mode) = device_node(node)
            .map_err(|e| BackendError::failed(name, format!("device {}", node.display()), e))?;
        let what = |verb: &str| format!("{verb} {}", node.display());
        let rule = crate::cgroups::plan::DevRule {
            allow: present,
            kind: typ,
            major: Some(major),
            minor: Some(minor),
            access: crate::cgroups::plan::RWM,
        };
        let v2_rules = || self.rules_with(name, &rule);
        let pids = || {
            st.cgroup()
                .and_then(|c| c.pids_within())
                .map_err(|e| std::io::Error::other(e.to_string()))
        };
        if present && crate::revoke::port_only(typ, major, minor) {
            // Never a node: the domain takes it from its port (the daemon gives its files
            // back what a switch took).
            return Ok(());
        }
        // Taking away: first the right to open it, then the node. Giving: the other way round.
        if !present {
            st.cgroup()
                .and_then(|c| c.set_device(&rule, v2_rules))
                .map_err(|e| BackendError::failed(name, what("denying"), e))?;
        }
        place_node(st.pid, node, present.then_some((typ, major, minor, mode))).map_err(|e| {
            let verb = if present { "making" } else { "removing" };
            BackendError::failed(name, what(verb), e)
        })?;
        if !present {
            // It can no longer open it; what it opened before is taken back too.
            let done = crate::revoke::revoke(node, (typ, major, minor), pids)
                .map_err(|e| BackendError::failed(name, what("revoking"), e))?;
            if done.descriptors > 0 || !done.killed.is_empty() {
                eprintln!("cellvisord: {} taken from {name}: {done}", node.display());
            }
        }
        if present {
            st.cgroup()
                .and_then(|c| c.set_device(&rule, v2_rules))
                .map_err(|e| BackendError::failed(name, what("allowing"), e))?;
        }
        Ok(())
    }

    fn open_device(&self, name: &str, node: &Path) -> Result<OwnedFd, BackendError> {
        use std::os::unix::fs::OpenOptionsExt;
        let st = self.load(name)?;
        if !st.init_alive() {
            return Err(BackendError::NotRunning(name.to_string()));
        }
        let failed = |e| BackendError::failed(name, format!("opening {}", node.display()), e);
        device_node(node).map_err(failed)?;
        // Opened without waiting (a serial line's carrier), then blocking as an open(2) is.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(node)
            .map_err(failed)?;
        let fd = OwnedFd::from(f);
        let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
            .map_err(|e| failed(e.into()))?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))
            .map_err(|e| failed(e.into()))?;
        Ok(fd)
    }

    fn stats(&self, name: &str) -> Result<DomainStats, BackendError> {
        let s = self
            .load(name)?
            .cgroup()
            .map_err(|e| BackendError::failed(name, "reading its cgroup", e))?
            .stats();
        Ok(DomainStats {
            cpu_ns: s["cpu"]["usage"]["total"].as_u64().unwrap_or(0),
            memory_bytes: s["memory"]["usage"]["usage"].as_u64().unwrap_or(0),
            pids: s["pids"]["current"].as_u64().unwrap_or(0),
        })
    }

    fn set_memory_cap(&self, name: &str, cap: Option<u64>) -> Result<(), BackendError> {
        let st = self.load(name)?;
        st.cgroup()
            .and_then(|c| c.set_memory_cap(cap))
            .map_err(|e| BackendError::failed(name, "capping its memory", e))
    }

    fn set_cpus(&self, name: &str, cpus: &[u32]) -> Result<(), BackendError> {
        let list = domain::profile::cpu_list_string(cpus);
        if cpus.is_empty() {
            return Err(BackendError::invalid(name, "an empty set of cpus"));
        }
        let st = self.load(name)?;
        if !st.init_alive() {
            return Err(BackendError::NotRunning(name.to_string()));
        }
        st.cgroup()
            .and_then(|c| c.set_cpus(&list))
            .map_err(|e| BackendError::failed(name, format!("putting it on cpus {list}"), e))
    }

    fn cpu_time(&self, name: &str) -> Result<domain::CpuTime, BackendError> {
        // Read every period for every domain: the kept state without asking whether its
        // process lives (a file more each time); a domain that went down has no cgroup left
        // to read.
        let kept = self.states().get(name).cloned();
        let st = match kept {
            Some(st) => st,
            None => self.load(name)?,
        };
        st.cgroup()
            .and_then(|c| c.cpu_time())
            .map_err(|e| BackendError::failed(name, "reading its CPU time", e))
    }

    fn exists(&self, name: &str) -> bool {
        crate::state::exists(&self.root(), &self.container_id(name))
            || self.layer(name, Path::new("/")).is_mounted()
    }

    fn log_path(&self, name: &str) -> Option<PathBuf> {
        Some(self.domain_dir(name).join("log"))
    }

    fn pid(&self, name: &str) -> Option<i32> {
        let st = self.state(name).ok()??;
        st.init_alive().then_some(st.pid)
    }

    /// Wait (a minute at most) for the start lock a killed daemon's starting process holds,
    /// then undo a container whose start can no longer come: one still `creating` or
    /// `created` once nobody starts it.
    fn settle(&self, name: &str) {
        let dd = self.domain_dir(name);
        let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
        // Held while the state is judged (and a half-made container removed).
        let _held = loop {
            match crate::util::flock(&dd, false) {
                Ok(f) => break Some(f),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // No directory: no domain, nothing to wait for.
                Err(_) => return,
            }
            if std::time::Instant::now() >= end {
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        self.states().remove(name);
        if let Ok(Some(st)) = self.state(name) {
            if matches!(st.status(&self.root()), Status::Creating | Status::Created) {
                let _ = runtime::delete(&self.root(), &self.container_id(name), true);
            }
        }
        self.states().remove(name);
    }
}

/// Run `f` in a child process that holds `fds` as descriptors 3, 4, ... and nothing else
/// above 2 (but a copy of `hold`, close-on-exec), so that the domain's processes are not
/// children of the caller (a daemon can die without taking them along, and never has to reap
/// them). Returns what `f` returned.
fn detached(
    fds: &[std::os::fd::RawFd],
    hold: Option<std::os::fd::RawFd>,
    f: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut p = [0i32; 2];
    // SAFETY: pipe2 fills the array.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors are new and owned here only.
    let (rx, tx) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
    // SAFETY: the child only rearranges descriptors, runs `f` and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(rx);
        let r = (|| {
            use std::os::fd::AsRawFd;
            // Move the pipe and the given descriptors clear of 3..3+n, then into place.
            let base = 3 + fds.len() as i32 + 64;
            // SAFETY: F_DUPFD_CLOEXEC of descriptors this process holds.
            let tx2 = unsafe { libc::fcntl(tx.as_raw_fd(), libc::F_DUPFD_CLOEXEC, base) };
            // SAFETY: as above.
            let hold = hold.map(|h| unsafe { libc::fcntl(h, libc::F_DUPFD_CLOEXEC, base) });
            let moved: Vec<i32> = fds
                .iter()
                // SAFETY: as above.
                .map(|&fd| unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, base + 1) })
                .collect();
            if tx2 < 0 || moved.iter().chain(&hold).any(|&m| m < 0) {
                return (tx2, Err("rearranging descriptors".to_string()));
            }
            for (i, &m) in moved.iter().enumerate() {
                // SAFETY: dup2 onto 3+i; the new descriptor is inheritable (no CLOEXEC).
                if unsafe { libc::dup2(m, 3 + i as i32) } < 0 {
                    return (
                        tx2,
                        Err(format!("dup2: {}", std::io::Error::last_os_error())),
                    );
                }
            }
            // The pipe goes right after them, and everything else the caller had open is
            // closed: a daemon's listening sockets must not outlive it in a domain that is
            // still being started (a client would connect to a socket nobody answers).
            let out = 3 + fds.len() as i32;
            // SAFETY: dup3 onto `out`, which holds nothing this child needs (the given
            // descriptors are below it, their copies and the pipe's far above).
            if unsafe { libc::dup3(tx2, out, libc::O_CLOEXEC) } < 0 {
                return (tx2, Err("rearranging descriptors".to_string()));
            }
            let mut last = out;
            if let Some(h) = hold {
                last += 1;
                // SAFETY: as above, onto the next one, from the copy far above.
                if unsafe { libc::dup3(h, last, libc::O_CLOEXEC) } < 0 {
                    return (out, Err("rearranging descriptors".to_string()));
                }
            }
            // SAFETY: closing descriptors this child holds and will not use; the pipe at
            // `out` and 0..out stay.
            if unsafe { libc::syscall(libc::SYS_close_range, last + 1, u32::MAX, 0) } < 0 {
                return (
                    out,
                    Err(format!("close_range: {}", std::io::Error::last_os_error())),
                );
            }
            let tx2 = out;
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .unwrap_or_else(|_| Err("the domain start panicked".to_string()));
            (tx2, r)
        })();
        let (out, r) = r;
        let msg = match &r {
            Ok(()) => String::new(),
            Err(e) => e.clone(),
        };
        // SAFETY: writing a valid buffer to the pipe, then leaving the child.
        unsafe {
            libc::write(out, msg.as_ptr().cast(), msg.len());
            libc::_exit(if r.is_ok() { 0 } else { 1 });
        }
    }
    drop(tx);
    crate::crash::point("up:forked");
    let mut msg = String::new();
    let _ = std::fs::File::from(rx).read_to_string(&mut msg);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else if msg.is_empty() {
        Err(format!("starting the domain failed (status {status:#x})"))
    } else {
        Err(msg)
    }
}

/// Make (`Some`) or remove (`None`) the device node `node` inside the root of process `pid`,
/// never following a link out of it.
fn place_node(pid: i32, node: &Path, dev: Option<(char, u32, u32, u32)>) -> std::io::Result<()> {
    use crate::util::{cstring, ensure_in_root, open_in_root, Kind};
    use std::os::fd::{AsRawFd, OwnedFd};
    let root: OwnedFd = std::fs::File::open(format!("/proc/{pid}/root"))?.into();
    let parent = node.parent().unwrap_or(Path::new("/dev"));
    let file = cstring(node.file_name().unwrap_or_default());
    match dev {
        Some((typ, major, minor, mode)) => {
            let dir = ensure_in_root(&root, parent, Kind::Dir)?;
            let kind = if typ == 'b' {
                libc::S_IFBLK
            } else {
                libc::S_IFCHR
            };
            // SAFETY: dir is an open directory descriptor and file a valid C string.
            let r = unsafe {
                libc::mknodat(
                    dir.as_raw_fd(),
                    file.as_ptr(),
                    kind | mode,
                    libc::makedev(major, minor),
                )
            };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e);
                }
            }
            Ok(())
        }
        None => {
            let dir = match open_in_root(&root, parent, libc::O_PATH | libc::O_DIRECTORY) {
                Ok(d) => d,
                Err(nix::Error::ENOENT) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            // SAFETY: as above.
            if unsafe { libc::unlinkat(dir.as_raw_fd(), file.as_ptr(), 0) } < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ENOENT) {
                    return Err(e);
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detached_start_holds_only_the_descriptors_it_is_given() {
        use std::os::fd::AsRawFd;
        // Open in the caller, inheritable or not: none may reach the child.
        let kept = std::fs::File::open("/dev/null").unwrap();
        let other = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: clearing FD_CLOEXEC on a descriptor we own.
        unsafe { libc::fcntl(other.as_raw_fd(), libc::F_SETFD, 0) };
        let listener =
            std::os::unix::net::UnixListener::bind(tempfile::tempdir().unwrap().path().join("s"))
                .unwrap();
        let e = detached(&[kept.as_raw_fd()], None, || {
            // fcntl opens nothing itself, unlike a listing of /proc/self/fd.
            let open: Vec<String> = (0..4096)
                // SAFETY: F_GETFD only asks whether a descriptor is open.
                .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0)
                .map(|fd| fd.to_string())
                .collect();
            Err(open.join(" "))
        })
        .unwrap_err();
        drop(listener);
        // 0-2, the given one at 3, the pipe to the caller at 4.
        assert_eq!(e, "0 1 2 3 4");
    }

    #[test]
    fn a_domain_becomes_an_oci_config() {
        let p =
            domain::profile::parse(domain::DEFAULT_PROFILE, "phone.toml", Path::new("/x")).unwrap();
        let d = p.domain("modem").unwrap();
        let c = oci_config(d, Path::new("/r"), &UpOpts::default()).unwrap();
        assert_eq!(c["hostname"], "modem");
        assert_eq!(c["linux"]["resources"]["cpu"]["cpus"], "1");
        assert_eq!(c["linux"]["resources"]["memory"]["limit"], 32 << 20);
        assert_eq!(c["linux"]["resources"]["pids"]["limit"], 32);
        assert_eq!(c["process"]["args"][0], "/bin/sh");
        // The config is one the runtime accepts.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        let mut c = c;
        c["root"]["path"] = json!("rootfs");
        let spec: oci_spec::runtime::Spec = serde_json::from_value(c).unwrap();
        crate::config::from_spec(spec, dir.path().into()).unwrap();
    }
}
