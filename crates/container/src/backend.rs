//! Domains as containers: the [`domain::Backend`] of the device platform. A domain becomes a
//! container whose root is an overlay of the profile's shared base with the domain's private
//! layer (Cells' layout), whose limits come from the profile, and whose state lives under the
//! backend's directory: `<dir>/domains/<name>/` (layer, bundle) and `<dir>/oci/` (runtime state).

use std::path::{Path, PathBuf};

use domain::{Backend, BackendError, Domain, DomainStats, DomainStatus, Reported, UpOpts};
use serde_json::json;

use crate::layers::Layered;
use crate::runtime::{self, CreateOpts};
use crate::state::{Root, Status};

pub struct ContainerBackend {
    dir: PathBuf,
    /// Prefix of the container ids (and so of the cgroup paths) of this backend's domains.
    prefix: String,
    /// The `cellvisor` binary whose `vm run` is a microvm domain's VMM.
    vmm: Option<PathBuf>,
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
/// its limits, its passthrough and granted devices, and its run directory.
pub fn oci_config(
    d: &Domain,
    rootfs: &Path,
    o: &UpOpts,
) -> Result<serde_json::Value, BackendError> {
    let mut c = runtime::default_spec(false);
    c["process"]["terminal"] = json!(false);
    c["process"]["args"] = json!(d.command);
    c["hostname"] = json!(d.name);
    c["root"] = json!({"path": rootfs, "readonly": false});
    c["annotations"] = json!({"io.cellvisor.domain": d.name, "io.cellvisor.role": format!("{:?}", d.role).to_lowercase()});
    if d.shared_devices.iter().any(|s| s == "network") {
        // The shared network device: the host's network namespace.
        if let Some(ns) = c["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "network");
        }
    }
    if let Some(run) = o.run_dir {
        // A microvm domain's VMM makes its vsock socket there (the daemon listens beside it
        // for the guest's port); a container domain only reads it.
        let opts = if d.vm.is_some() {
            json!(["rbind", "nosuid", "nodev"])
        } else {
            json!(["rbind", "ro", "nosuid", "nodev"])
        };
        if let Some(m) = c["mounts"].as_array_mut() {
            m.push(json!({"destination": RUN_DIR, "type": "bind", "source": run, "options": opts}));
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
    let (mut devices, mut rules) = (Vec::new(), vec![json!({"allow": false, "access": "rwm"})]);
    for p in d.passthrough.iter().chain(&o.devices) {
        let (typ, major, minor, mode) = device_node(p)
            .map_err(|e| BackendError::failed(&d.name, format!("device {}", p.display()), e))?;
        devices.push(json!({"path": p, "type": typ.to_string(), "major": major, "minor": minor, "fileMode": mode}));
        rules.push(json!({"allow": true, "type": typ.to_string(), "major": major, "minor": minor, "access": "rwm"}));
    }
    res["devices"] = json!(rules);
    c["linux"]["resources"] = res;
    c["linux"]["devices"] = json!(devices);
    Ok(c)
}

/// Where a domain sees its run directory (its port, the agent).
const RUN_DIR: &str = "/run/cellvisor";
/// Where a jailed VMM finds its binary, kernel and initrd.
const VM_DIR: &str = "/run/cellvisor-vm";
/// A microvm domain's vsock: the guest's context id and the VMM's socket in the run directory.
const GUEST_CID: u32 = 3;
/// The VMM's vsock socket in the run directory; the guest's host port P is `vsock_P` beside it.
pub const VSOCK_SOCKET: &str = "vsock";
/// What a microvm domain's cgroup allows beyond its guest memory: the VMM itself, its page
/// tables and device buffers.
const VMM_MEMORY_MARGIN: u64 = 64 << 20;

/// A microvm domain is its VMM jailed in a container domain (Firecracker's jailer model): the
/// domain's namespaces, cgroups (weight, freezer, memory = guest + margin) and devices cgroup
/// hold the VMM process, which may open /dev/kvm and nothing else of the host's devices. The
/// binary, kernel and initrd are bound in read-only, with the host's libraries for the binary.
fn jail_vmm(
    c: &mut serde_json::Value,
    d: &Domain,
    vm: &domain::profile::VmSpec,
    vmm: &Path,
    with_port: bool,
) -> Result<(), BackendError> {
    let ro = |src: &Path, dst: &str| {
        json!({"destination": dst, "type": "bind", "source": src,
               "options": ["rbind", "ro", "nosuid", "nodev"]})
    };
    let mut mounts = vec![
        ro(vmm, &format!("{VM_DIR}/cellvisor")),
        ro(&vm.kernel, &format!("{VM_DIR}/kernel")),
    ];
    let mem = d.memory_bytes.unwrap_or(domain::profile::DEFAULT_VM_MEMORY);
    let mut args = vec![
        format!("{VM_DIR}/cellvisor"),
        "vm".into(),
        "run".into(),
        "--kernel".into(),
        format!("{VM_DIR}/kernel"),
        "--mem".into(),
        format!("{}M", mem >> 20),
        "--vcpus".into(),
        vm.vcpus.to_string(),
    ];
    if let Some(i) = &vm.initrd {
        mounts.push(ro(i, &format!("{VM_DIR}/initrd")));
        args.extend(["--initrd".into(), format!("{VM_DIR}/initrd")]);
    }
    if let Some(cl) = &vm.cmdline {
        args.extend(["--cmdline".into(), cl.clone()]);
    }
    if with_port {
        // The guest reaches its port as vsock port 1024 of the host (CID 2): the VMM connects
        // such a stream to `vsock_1024` beside its socket, where the daemon listens.
        args.extend([
            "--vsock".into(),
            format!("{GUEST_CID},uds={RUN_DIR}/{VSOCK_SOCKET}"),
        ]);
    }
    for (i, (path, mode)) in vm.disks.iter().enumerate() {
        use domain::profile::DiskMode;
        let at = format!("{VM_DIR}/disk{i}");
        // Bound read-only unless the guest writes the image itself; a copy-on-write layer is
        // an unnamed file in the domain's private /tmp.
        let (opts, suffix) = match mode {
            DiskMode::ReadWrite => (vec!["rbind", "nosuid", "nodev"], ""),
            DiskMode::ReadOnly => (vec!["rbind", "ro", "nosuid", "nodev"], ",ro"),
            DiskMode::CopyOnWrite => (vec!["rbind", "ro", "nosuid", "nodev"], ",cow"),
        };
        mounts.push(json!({"destination": at, "type": "bind", "source": path, "options": opts}));
        args.extend(["--disk".into(), format!("{at}{suffix}")]);
    }
    for lib in ["/lib", "/lib64", "/usr"] {
        if Path::new(lib).exists() {
            mounts.push(ro(Path::new(lib), lib));
        }
    }
    for p in [vm.kernel.as_path(), vmm]
        .into_iter()
        .chain(vm.initrd.as_deref())
    {
        if !p.is_file() {
            return Err(BackendError::invalid(
                &d.name,
                format!("{}: no such file", p.display()),
            ));
        }
    }
    if let Some(m) = c["mounts"].as_array_mut() {
        m.extend(mounts);
    }
    c["process"]["args"] = json!(args);
    c["linux"]["resources"]["memory"] =
        json!({"limit": mem + VMM_MEMORY_MARGIN, "swap": mem + VMM_MEMORY_MARGIN});
    let kvm = Path::new("/dev/kvm");
    let (typ, major, minor, mode) = device_node(kvm)
        .map_err(|e| BackendError::failed(&d.name, format!("device {}", kvm.display()), e))?;
    if let Some(devs) = c["linux"]["devices"].as_array_mut() {
        devs.push(json!({"path": kvm, "type": typ.to_string(), "major": major, "minor": minor, "fileMode": mode}));
    }
    if let Some(rules) = c["linux"]["resources"]["devices"].as_array_mut() {
        rules.push(json!({"allow": true, "type": typ.to_string(), "major": major, "minor": minor, "access": "rwm"}));
    }
    Ok(())
}

/// The OCI config that runs domain `d`: [`oci_config`], and for a microvm domain its VMM
/// (`vmm vm run`) jailed in it.
pub fn domain_config(
    d: &Domain,
    rootfs: &Path,
    o: &UpOpts,
    vmm: Option<&Path>,
) -> Result<serde_json::Value, BackendError> {
    let mut cfg = oci_config(d, rootfs, o)?;
    if let Some(vm) = &d.vm {
        let vmm =
            vmm.ok_or_else(|| BackendError::invalid(&d.name, "no VMM binary for microvm domains"))?;
        jail_vmm(&mut cfg, d, vm, vmm, o.run_dir.is_some())?;
    }
    Ok(cfg)
}

impl ContainerBackend {
    /// A backend keeping its state in `dir`; its containers are named `<prefix>-<domain>`.
    pub fn new(dir: &Path, prefix: &str) -> Self {
        ContainerBackend {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            vmm: None,
        }
    }

    /// Run microvm domains with this `cellvisor` binary's `vm run`.
    pub fn with_vmm(mut self, cellvisor: PathBuf) -> Self {
        self.vmm = Some(cellvisor);
        self
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

    /// The domain's container state.
    fn load(&self, name: &str) -> Result<crate::state::State, BackendError> {
        self.root()
            .load(&self.container_id(name))
            .map_err(|e| BackendError::failed(name, "reading its state", e))
    }

    fn layer(&self, name: &str, base: &Path) -> Layered {
        Layered::new(base, &self.domain_dir(name).join("layer"))
    }
}

impl Backend for ContainerBackend {
    fn up(&self, d: &Domain, o: &UpOpts) -> Result<(), BackendError> {
        let base = o.base;
        let name = d.name.as_str();
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
            let cfg = domain_config(d, &rootfs, o, self.vmm.as_deref())?;
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
            // The runtime's error crosses the fork as text: it becomes the cause.
            detached(&o.fds, move || {
                runtime::create(&root, &co).map_err(|e| e.chain())?;
                runtime::start(&root, &co.id).map_err(|e| {
                    let _ = runtime::delete(&root, &co.id, true);
                    e.chain()
                })
            })
            .map_err(|e| BackendError::failed(name, "starting it", Reported(e)))
        })();
        if r.is_err() {
            if let Some(l) = layer {
                let _ = l.unmount();
            }
        }
        r
    }

    fn down(&self, name: &str) -> Result<(), BackendError> {
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
        let root = self.root();
        match root.load(&self.container_id(name)) {
            Ok(st) => Ok(match st.status(&root) {
                Status::Paused => DomainStatus::Frozen,
                Status::Stopped => DomainStatus::Stopped,
                _ => DomainStatus::Running,
            }),
            Err(crate::Error::NotFound(_)) => Ok(DomainStatus::Stopped),
            Err(e) => Err(BackendError::failed(name, "reading its state", e)),
        }
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
        if present {
            st.cgroup()
                .and_then(|c| c.set_device(&rule, v2_rules))
                .map_err(|e| BackendError::failed(name, what("allowing"), e))?;
        }
        Ok(())
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

    fn exists(&self, name: &str) -> bool {
        crate::state::exists(&self.root(), &self.container_id(name))
            || self.layer(name, Path::new("/")).is_mounted()
    }

    fn log_path(&self, name: &str) -> Option<PathBuf> {
        Some(self.domain_dir(name).join("log"))
    }

    fn pid(&self, name: &str) -> Option<i32> {
        let st = self.root().load(&self.container_id(name)).ok()?;
        st.init_alive().then_some(st.pid)
    }
}

/// Run `f` in a child process that holds `fds` as descriptors 3, 4, ... and nothing else
/// above 2, so that the domain's processes are not children of the caller (a daemon can die
/// without taking them along, and never has to reap them). Returns what `f` returned.
fn detached(
    fds: &[std::os::fd::RawFd],
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
            let moved: Vec<i32> = fds
                .iter()
                // SAFETY: as above.
                .map(|&fd| unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, base + 1) })
                .collect();
            if tx2 < 0 || moved.iter().any(|&m| m < 0) {
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
