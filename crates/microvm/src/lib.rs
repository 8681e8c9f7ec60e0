//! MicroVM domains: the [`domain::Backend`] of `backend = "microvm"`. A microVM domain is
//! its VMM (`cellvisor vm run`, the `vmm` crate) jailed in a container domain, as
//! Firecracker's jailer runs its VMM: the domain's namespaces, cgroups (weight, freezer,
//! memory = guest + margin) and devices cgroup hold the VMM process, which may open /dev/kvm
//! and nothing else of the host's devices. The binary, kernel, initrd and disks are bound in
//! at fixed paths, with the host's libraries for the binary.
//!
//! The VMM's command line is written by [`vmm::Config::args`] from a [`vmm::Config`] built
//! here ([`vmm_config`]), in the jail's paths. What only microVMs have lives here too: the
//! guest's vsock port to the daemon. Freezing, weights, devices and stats are the jail's
//! (the container backend's).

use std::path::{Path, PathBuf};

use container::backend::{oci_config, ContainerBackend, RUN_DIR};
use domain::profile::{DiskMode, VmSpec, DEFAULT_VM_MEMORY};
use domain::{Backend, BackendError, Domain, DomainStats, DomainStatus, UpOpts};
use serde_json::json;

/// The VMM's vsock socket in the domain's run directory; the guest's host port P is
/// `vsock_P` beside it.
pub const VSOCK_SOCKET: &str = "vsock";
/// The VMM's control socket in the domain's run directory (its balloon).
pub const CONTROL_SOCKET: &str = "control";
/// The guest's vsock context id.
const GUEST_CID: u64 = 3;
/// Where a jailed VMM finds its binary, kernel, initrd and disks.
const VM_DIR: &str = "/run/cellvisor-vm";
/// What a microvm domain's cgroup allows beyond its guest memory: the VMM itself, its page
/// tables and device buffers.
const VMM_MEMORY_MARGIN: u64 = 64 << 20;

/// The VMM's configuration for domain `d` booting `vm`, in the jail's paths. With `port`,
/// a vsock device whose host side is the domain's run directory (the guest reaches its
/// port as host vsock port 1024, which the VMM connects to `vsock_1024` there).
pub fn vmm_config(d: &Domain, vm: &VmSpec, port: bool) -> vmm::Config {
    use vmm::virtio::block::{DiskSpec, Mode};
    let mut c = vmm::Config::new(format!("{VM_DIR}/kernel"));
    c.initrd = vm
        .initrd
        .as_ref()
        .map(|_| format!("{VM_DIR}/initrd").into());
    if let Some(cl) = &vm.cmdline {
        c.cmdline = cl.clone();
    }
    // Whole MiB, as a microvm domain's memory has always been given to its VMM.
    c.mem_bytes = d.memory_bytes.unwrap_or(DEFAULT_VM_MEMORY) & !((1 << 20) - 1);
    c.vcpus = vm.vcpus;
    c.mergeable = vm.merge;
    if vm.balloon {
        c.balloon = Some(vmm::virtio::balloon::BalloonSpec {
            reporting: true,
            deflate_on_oom: true,
            ..Default::default()
        });
    }
    c.disks = vm
        .disks
        .iter()
        .enumerate()
        .map(|(i, (_, mode))| DiskSpec {
            path: format!("{VM_DIR}/disk{i}").into(),
            mode: match mode {
                DiskMode::ReadWrite => Mode::ReadWrite,
                DiskMode::ReadOnly => Mode::ReadOnly,
                // The layer is an unnamed file in the jail's /tmp: it goes with the VMM.
                DiskMode::CopyOnWrite => Mode::Cow(None),
            },
        })
        .collect();
    if port {
        c.vsock = Some(vmm::virtio::vsock::VsockSpec {
            cid: GUEST_CID,
            uds: format!("{RUN_DIR}/{VSOCK_SOCKET}").into(),
        });
        if vm.balloon {
            c.control = Some(format!("{RUN_DIR}/{CONTROL_SOCKET}").into());
        }
    }
    // A realtime domain: one vCPU per core it owns, each pinned there with the policy.
    if let (Some(rt), Some(cpus)) = (d.realtime, &d.cpus) {
        use domain::profile::RtPolicy;
        c.vcpu_cpus = domain::profile::cpu_list(cpus);
        c.vcpu_sched = match rt {
            RtPolicy::Fifo { priority, .. } => Some(vmm::VcpuSched::Fifo(priority)),
            RtPolicy::Rr { priority, .. } => Some(vmm::VcpuSched::Rr(priority)),
            // The profile check keeps deadline to container domains.
            RtPolicy::Deadline { .. } => None,
        };
    }
    c
}

/// A realtime microVM's jail spans its own cores and the shared ones (`online` but those
/// `cfg` gives its vCPUs): the VMM's other threads run on the shared ones; the vCPU
/// threads, not the process, take the policy (its real-time budget stays the jail's).
fn realtime_jail(c: &mut serde_json::Value, cfg: &mut vmm::Config, online: &[u32]) {
    cfg.vmm_cpus = online
        .iter()
        .copied()
        .filter(|x| !cfg.vcpu_cpus.contains(x))
        .collect();
    if let Some(p) = c["process"].as_object_mut() {
        p.remove("scheduler");
    }
    // The vCPU threads take their policy themselves: the jailed VMM keeps CAP_SYS_NICE
    // (RLIMIT_RTPRIO would allow less, but raising its hard limit of 0 needs
    // CAP_SYS_RESOURCE, which root may not have). Its seccomp filters allow neither call
    // once the threads run.
    if let Some(caps) = c["process"]["capabilities"].as_object_mut() {
        for set in ["bounding", "effective", "permitted"] {
            if let Some(l) = caps.get_mut(set).and_then(|l| l.as_array_mut()) {
                if !l.iter().any(|x| x == "CAP_SYS_NICE") {
                    l.push(json!("CAP_SYS_NICE"));
                }
            }
        }
    }
    if let Some(a) = c["annotations"].as_object_mut() {
        a.remove(container::cgroups::exclusive::ANNOTATION);
    }
    if let Some(cpu) = c["linux"]["resources"]["cpu"].as_object_mut() {
        cpu.remove("cpus");
    }
}

/// Put the VMM (`vmm_bin vm run`, booting `vm`) into `c`, the OCI config of domain `d`'s
/// jail: its files bound in, its arguments, its memory limit, /dev/kvm, and the run
/// directory writable (the VMM makes its vsock socket there).
fn jail(
    c: &mut serde_json::Value,
    d: &Domain,
    vm: &VmSpec,
    vmm_bin: &Path,
    port: bool,
) -> Result<(), BackendError> {
    for p in [vm.kernel.as_path(), vmm_bin]
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
    let mut cfg = vmm_config(d, vm, port);
    if !cfg.vcpu_cpus.is_empty() {
        realtime_jail(c, &mut cfg, &container::cgroups::rt::online_cpus());
    }
    let bind = |src: &Path, dst: &Path, ro: bool| {
        let opts = if ro {
            json!(["rbind", "ro", "nosuid", "nodev"])
        } else {
            json!(["rbind", "nosuid", "nodev"])
        };
        json!({"destination": dst, "type": "bind", "source": src, "options": opts})
    };
    let bin = PathBuf::from(format!("{VM_DIR}/cellvisor"));
    let mut mounts = vec![
        bind(vmm_bin, &bin, true),
        bind(&vm.kernel, &cfg.kernel, true),
    ];
    if let (Some(src), Some(dst)) = (&vm.initrd, &cfg.initrd) {
        mounts.push(bind(src, dst, true));
    }
    // Bound read-only unless the guest writes the image itself.
    for ((src, mode), disk) in vm.disks.iter().zip(&cfg.disks) {
        mounts.push(bind(src, &disk.path, *mode != DiskMode::ReadWrite));
    }
    for lib in ["/lib", "/lib64", "/usr"] {
        if Path::new(lib).exists() {
            mounts.push(bind(Path::new(lib), Path::new(lib), true));
        }
    }
    if let Some(m) = c["mounts"].as_array_mut() {
        for run in m.iter_mut().filter(|m| m["destination"] == RUN_DIR) {
            run["options"] = json!(["rbind", "nosuid", "nodev"]);
        }
        m.extend(mounts);
    }
    let mut args = vec![bin.display().to_string(), "vm".into(), "run".into()];
    args.extend(cfg.args());
    c["process"]["args"] = json!(args);
    let limit = cfg.mem_bytes + VMM_MEMORY_MARGIN;
    c["linux"]["resources"]["memory"] = json!({"limit": limit, "swap": limit});
    let kvm = Path::new("/dev/kvm");
    container::backend::allow_device(c, kvm)
        .map_err(|e| BackendError::failed(&d.name, format!("device {}", kvm.display()), e))
}

/// The OCI config that runs microvm domain `d` on root `rootfs`: its jail (the container
/// backend's config) with the VMM `vmm_bin vm run` in it. With a run directory in `o`, the
/// guest has a vsock device there.
pub fn domain_config(
    d: &Domain,
    rootfs: &Path,
    o: &UpOpts,
    vmm_bin: &Path,
) -> Result<serde_json::Value, BackendError> {
    let vm = d
        .vm()
        .ok_or_else(|| BackendError::invalid(&d.name, "not a microvm domain"))?;
    let mut c = oci_config(d, rootfs, o)?;
    jail(&mut c, d, vm, vmm_bin, o.run_dir.is_some())?;
    Ok(c)
}

/// MicroVM domains, each its VMM jailed in a container domain of `jail`.
pub struct MicrovmBackend {
    jail: ContainerBackend,
    /// The `cellvisor` binary whose `vm run` is the VMM.
    vmm: Option<PathBuf>,
    /// Where the domains' run directories are (`RUN_ROOT/NAME`, seen at `RUN_DIR` in the
    /// jail): a VMM's control socket is there.
    run_root: Option<PathBuf>,
}

impl MicrovmBackend {
    /// Jail VMMs in `jail`'s domains; `vmm` is the `cellvisor` binary (none: a microvm
    /// domain cannot come up, and says so).
    pub fn new(jail: ContainerBackend, vmm: Option<PathBuf>) -> Self {
        MicrovmBackend {
            jail,
            vmm,
            run_root: None,
        }
    }

    /// The domains' run directories are `run_root/NAME` (cellvisord's), where their VMMs'
    /// control sockets are reached.
    pub fn with_run_root(mut self, run_root: &Path) -> Self {
        self.run_root = Some(run_root.to_path_buf());
        self
    }

    /// Ask domain `name`'s VMM, through its control socket.
    fn control(
        &self,
        name: &str,
        req: &serde_json::Value,
    ) -> Result<serde_json::Value, BackendError> {
        let Some(root) = &self.run_root else {
            return Err(BackendError::invalid(
                name,
                "its VMM has no control socket here",
            ));
        };
        let sock = root.join(name).join(CONTROL_SOCKET);
        // A frozen VMM would leave the request waiting: said at once instead.
        if self.jail.status(name)? == DomainStatus::Frozen {
            return Err(BackendError::invalid(
                name,
                "is frozen: its VMM answers once it is thawed",
            ));
        }
        // A VMM just started makes its socket before its guest boots: waited for a moment.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !sock.exists() {
            if self.jail.pid(name).is_none() {
                return Err(BackendError::NotRunning(name.to_string()));
            }
            if std::time::Instant::now() > until {
                return Err(BackendError::invalid(
                    name,
                    format!("its VMM has no control socket at {}", sock.display()),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        vmm::control::request(&sock, req).map_err(|e| {
            if e.starts_with("control socket") {
                BackendError::failed(name, "asking its VMM", e)
            } else {
                BackendError::invalid(name, e)
            }
        })
    }
}

impl Backend for MicrovmBackend {
    fn up(&self, d: &Domain, o: &UpOpts) -> Result<(), BackendError> {
        let vm = d
            .vm()
            .ok_or_else(|| BackendError::invalid(&d.name, "not a microvm domain"))?;
        let vmm = self
            .vmm
            .as_deref()
            .ok_or_else(|| BackendError::invalid(&d.name, "no VMM binary for microvm domains"))?;
        self.jail
            .up_with(d, o, |c| jail(c, d, vm, vmm, o.run_dir.is_some()))
    }

    fn down(&self, name: &str) -> Result<(), BackendError> {
        self.jail.down(name)
    }

    fn destroy(&self, name: &str) -> Result<(), BackendError> {
        self.jail.destroy(name)
    }

    fn status(&self, name: &str) -> Result<DomainStatus, BackendError> {
        self.jail.status(name)
    }

    /// The freezer stops the VMM and its vCPU threads: the guest is paused where it is.
    fn freeze(&self, name: &str, frozen: bool) -> Result<(), BackendError> {
        self.jail.freeze(name, frozen)
    }

    fn set_cpu_weight(&self, name: &str, weight: u32) -> Result<(), BackendError> {
        self.jail.set_cpu_weight(name, weight)
    }

    fn set_device(&self, name: &str, node: &Path, present: bool) -> Result<(), BackendError> {
        self.jail.set_device(name, node, present)
    }

    /// Not the VMM's to take: a guest reaches no host descriptor.
    fn open_device(&self, name: &str, _node: &Path) -> Result<std::os::fd::OwnedFd, BackendError> {
        Err(BackendError::invalid(
            name,
            "a microVM's guest cannot take a host device's descriptor",
        ))
    }

    fn stats(&self, name: &str) -> Result<DomainStats, BackendError> {
        self.jail.stats(name)
    }

    fn balloon(&self, name: &str, size_mib: Option<u64>) -> Result<String, BackendError> {
        let req = match size_mib {
            Some(n) => json!({"op": "balloon", "size_mib": n}),
            None => json!({"op": "balloon-stats"}),
        };
        self.control(name, &req).map(|v| v.to_string())
    }

    /// Through the balloon: the guest is asked to give back all but `cap` of its memory
    /// (it keeps what it cannot give, and takes the balloon back before it runs out); no cap
    /// empties the balloon.
    fn set_memory_cap(&self, name: &str, cap: Option<u64>) -> Result<(), BackendError> {
        let size = match cap {
            None => 0,
            Some(cap) => {
                let f = self.control(name, &json!({"op": "balloon-stats"}))?;
                let guest = f["guest_mib"].as_u64().unwrap_or(0);
                guest.saturating_sub(cap >> 20)
            }
        };
        self.control(name, &json!({"op": "balloon", "size_mib": size}))
            .map(drop)
    }

    /// The VMM's cgroup, and with it every thread of the VMM (a realtime VM's vCPU threads
    /// are pinned on their own cores and never moved: the scheduler leaves realtime domains be).
    fn set_cpus(&self, name: &str, cpus: &[u32]) -> Result<(), BackendError> {
        self.jail.set_cpus(name, cpus)
    }

    fn cpu_time(&self, name: &str) -> Result<domain::CpuTime, BackendError> {
        self.jail.cpu_time(name)
    }

    fn pid(&self, name: &str) -> Option<i32> {
        self.jail.pid(name)
    }

    fn exists(&self, name: &str) -> bool {
        self.jail.exists(name)
    }

    fn settle(&self, name: &str) {
        self.jail.settle(name)
    }

    /// The guest's serial console, with the VMM's own errors.
    fn log_path(&self, name: &str) -> Option<PathBuf> {
        self.jail.log_path(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest() -> Domain {
        let text = r#"
name = "t"
base = "/"
[[domain]]
name = "g"
role = "common"
backend = "microvm"
kernel = "/bin/true"
initrd = "/bin/true"
memory = "256M"
vcpus = 2
disks = ["/img/a,cow", "/img/b"]
"#;
        domain::profile::parse(text, "t.toml", Path::new("/"))
            .unwrap()
            .domains
            .remove(0)
    }

    #[test]
    fn the_vmm_is_configured_in_the_jails_paths() {
        let d = guest();
        let c = vmm_config(&d, d.vm().unwrap(), true);
        assert_eq!(c.kernel, PathBuf::from("/run/cellvisor-vm/kernel"));
        assert_eq!(c.initrd, Some("/run/cellvisor-vm/initrd".into()));
        assert_eq!(c.cmdline, vmm::DEFAULT_CMDLINE);
        assert_eq!((c.mem_bytes, c.vcpus), (256 << 20, 2));
        assert_eq!(
            c.disks.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            ["/run/cellvisor-vm/disk0,cow", "/run/cellvisor-vm/disk1"]
        );
        c.validate().unwrap();
        assert!(!c.mergeable);
        assert_eq!(c.vsock.unwrap().to_string(), "3,uds=/run/cellvisor/vsock");
    }

    /// `balloon = true`: a balloon that reports free pages and deflates on OOM, and with a
    /// port, the control socket beside the vsock socket.
    #[test]
    fn a_ballooned_domain_has_a_balloon_and_a_control_socket() {
        let mut d = guest();
        if let domain::DomainKind::Microvm(vm) = &mut d.kind {
            vm.balloon = true;
        }
        let c = vmm_config(&d, d.vm().unwrap(), true);
        let b = c.balloon.clone().unwrap();
        assert!(b.reporting && b.deflate_on_oom && b.size_mib == 0);
        assert_eq!(c.control, Some("/run/cellvisor/control".into()));
        c.validate().unwrap();
        assert!(vmm_config(&guest(), guest().vm().unwrap(), true)
            .balloon
            .is_none());
    }

    /// `merge = true` in the profile: the VMM offers the guest memory to KSM.
    #[test]
    fn a_merging_domain_tells_its_vmm() {
        let mut d = guest();
        if let domain::DomainKind::Microvm(vm) = &mut d.kind {
            vm.merge = true;
        }
        let c = vmm_config(&d, d.vm().unwrap(), false);
        assert!(c.mergeable);
        assert!(c.args().contains(&"--mergeable".to_string()));
    }

    #[test]
    fn a_realtime_microvm_pins_its_vcpus_and_keeps_the_vmm_off_them() {
        let text = r#"
name = "t"
base = "/"
[[domain]]
name = "rt"
role = "realtime"
backend = "microvm"
kernel = "/bin/true"
cpus = "1"
realtime = { policy = "fifo", priority = 40, budget = "200ms/1s" }
"#;
        let host = domain::profile::Host {
            cpus: Some(vec![0, 1]),
            ..Default::default()
        };
        let d = domain::profile::parse_on(text, "t.toml", Path::new("/"), &host)
            .unwrap()
            .domains
            .remove(0);
        let mut cfg = vmm_config(&d, d.vm().unwrap(), false);
        assert_eq!(cfg.vcpu_cpus, [1]);
        assert_eq!(cfg.vcpu_sched, Some(vmm::VcpuSched::Fifo(40)));
        let mut c = oci_config(&d, Path::new("/jail"), &UpOpts::default()).unwrap();
        assert!(c["process"]["scheduler"].is_object());
        realtime_jail(&mut c, &mut cfg, &[0, 1]);
        assert_eq!(cfg.vmm_cpus, [0]);
        cfg.validate().unwrap();
        // The jail spans both cores; its budget stays for the vCPU thread's policy.
        assert!(c["process"].get("scheduler").is_none());
        let eff = c["process"]["capabilities"]["effective"]
            .as_array()
            .unwrap();
        assert!(eff.iter().any(|x| x == "CAP_SYS_NICE"));
        assert!(c["linux"]["resources"]["cpu"].get("cpus").is_none());
        assert_eq!(c["linux"]["resources"]["cpu"]["realtimeRuntime"], 200_000);
        assert!(c["annotations"]
            .get(container::cgroups::exclusive::ANNOTATION)
            .is_none());
        // One vCPU per owned core.
        let two = text.replace("cpus = \"1\"", "cpus = \"1\"\nvcpus = 2");
        let e = domain::profile::parse_on(&two, "t.toml", Path::new("/"), &host).unwrap_err();
        assert!(
            e.0.iter()
                .any(|l| l.contains("one vCPU on each core it owns")),
            "{e:?}"
        );
    }

    #[test]
    fn the_jail_binds_the_guests_files_and_runs_the_vmm() {
        if !Path::new("/dev/kvm").exists() {
            eprintln!("skipped: no /dev/kvm to allow");
            return;
        }
        let d = guest();
        let o = UpOpts {
            run_dir: Some(Path::new("/state/run/g")),
            ..UpOpts::default()
        };
        let c = domain_config(&d, Path::new("/jail"), &o, Path::new("/bin/true")).unwrap();
        let args: Vec<&str> = c["process"]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[..3], ["/run/cellvisor-vm/cellvisor", "vm", "run"]);
        let expect = vmm_config(&d, d.vm().unwrap(), true).args();
        assert_eq!(
            args[3..],
            expect.iter().map(String::as_str).collect::<Vec<_>>()[..]
        );
        let mounts = c["mounts"].as_array().unwrap();
        let mount = |dst: &str| mounts.iter().find(|m| m["destination"] == dst).unwrap();
        assert_eq!(mount("/run/cellvisor-vm/disk0")["source"], "/img/a");
        assert!(mount("/run/cellvisor-vm/disk0")["options"]
            .as_array()
            .unwrap()
            .contains(&json!("ro")));
        assert!(!mount("/run/cellvisor-vm/disk1")["options"]
            .as_array()
            .unwrap()
            .contains(&json!("ro")));
        // The VMM makes its vsock socket in the run directory.
        assert!(!mount(RUN_DIR)["options"]
            .as_array()
            .unwrap()
            .contains(&json!("ro")));
        assert_eq!(
            c["linux"]["resources"]["memory"]["limit"],
            (256u64 << 20) + VMM_MEMORY_MARGIN
        );
        assert!(c["linux"]["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["path"] == "/dev/kvm"));
        // Files the guest needs and that are missing: one line, nothing made.
        let mut bad = d.clone();
        if let domain::DomainKind::Microvm(vm) = &mut bad.kind {
            vm.kernel = "/nonexistent".into();
        }
        let e = domain_config(&bad, Path::new("/jail"), &o, Path::new("/bin/true")).unwrap_err();
        assert_eq!(e.to_string(), "domain g: /nonexistent: no such file");
    }
}
