//! cellvisor's virtual machine monitor: a microVM on KVM, built from the rust-vmm crates
//! (kvm-ioctls, kvm-bindings, vm-memory, linux-loader, vm-superio, vmm-sys-util). It boots a
//! 64-bit Linux kernel (ELF vmlinux or bzImage) with an initrd and a command line, one thread
//! per vCPU, a 16550 serial console and an i8042 whose reset ends the VM.
//!
//! Guest memory is anonymous and private, mapped with MAP_NORESERVE: a page costs host memory
//! only once the guest touches it. Any exit the VMM does not handle ends that VM (and only it)
//! with the exit's data and the instruction bytes at the guest's RIP.

pub mod arch;
mod boot;
mod config;
pub mod control;
pub mod devices;
mod event_loop;
mod memory;
pub mod pin;
mod reaper;
pub mod seccomp;
pub mod unpack;
mod vcpu;
pub mod virtio;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvm_ioctls::Kvm;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// The cause of a boot step's failure (a loader's, guest memory's error).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong: one line saying what, with which input; the cause is the source (the
/// caller prints the chain once).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The VM's configuration asks for what cannot be.
    #[error("{0}")]
    Config(String),
    /// A KVM ioctl failed.
    #[error("{0}")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
    /// The guest's layout cannot hold what it must (a table, the initrd).
    #[error("{0}")]
    Layout(String),
    /// A boot step failed: loading the kernel, writing a table into guest memory.
    #[error("{what}")]
    Boot {
        what: String,
        #[source]
        source: Cause,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Disk(#[from] virtio::block::Error),
    #[error(transparent)]
    Net(#[from] virtio::net::Error),
    #[error(transparent)]
    Vsock(#[from] virtio::vsock::Error),
}

/// An error and its causes on one line (`what: cause: cause`), for an exit report, which is
/// text. (domain::chain does the same for the other crates; this one depends on the rust-vmm
/// crates only.)
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

impl Error {
    /// Boot step `what` failed because of `e`.
    pub(crate) fn boot(what: impl std::fmt::Display, e: impl Into<Cause>) -> Error {
        Error::Boot {
            what: what.to_string(),
            source: e.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

pub use config::{Config, Console, DEFAULT_CMDLINE};
pub use pin::VcpuSched;

/// How a VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The guest reset the machine (i8042 or a KVM reset event): how Linux reboots and how a
    /// microVM's guest asks to stop.
    Reset,
    /// The guest powered off.
    Poweroff,
    /// A triple fault or other shutdown of a vCPU.
    Shutdown(String),
    /// An exit the VMM cannot handle, with its data and the code at RIP.
    Error(String),
    /// The VMM was told to stop (SIGTERM, SIGINT): the guest was stopped where it was.
    Stopped(i32),
}

/// What the vCPU threads share with the VM's main thread.
pub(crate) struct Shared {
    pub legacy: devices::Legacy,
    pub stop: AtomicBool,
    pub exit: Mutex<Option<Exit>>,
    /// Written when the VM must end (by a vCPU, or the i8042's reset line).
    pub exit_evt: EventFd,
    pub mem: GuestMemoryMmap,
    /// The virtio-mmio devices, one 4 KiB window each from `arch::MMIO_START`.
    pub virtio: Vec<Mutex<virtio::mmio::Transport>>,
}

impl Shared {
    /// Which virtio device (and offset in its window) an MMIO address falls on.
    pub fn mmio_device(&self, addr: u64) -> Option<(usize, u64)> {
        let off = addr.checked_sub(arch::MMIO_START)?;
        let d = (off / virtio::mmio::WINDOW) as usize;
        (d < self.virtio.len()).then_some((d, off % virtio::mmio::WINDOW))
    }

    /// End the VM for `why` (the first reason wins).
    pub fn end(&self, why: Exit) {
        let mut e = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        if e.is_none() {
            *e = Some(why);
        }
        let _ = self.exit_evt.write(1);
    }
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io {
        what: what.to_string(),
        source,
    }
}

/// Boot the VM and run it until it ends. A VM that does not start leaves nothing behind (a
/// copy-on-write layer file it created is removed).
pub fn run(cfg: &Config) -> Result<Exit> {
    let new_layers: Vec<&PathBuf> = cfg
        .disks
        .iter()
        .filter_map(|d| match &d.mode {
            virtio::block::Mode::Cow(Some(p)) if !p.exists() => Some(p),
            _ => None,
        })
        .collect();
    let r = boot_and_run(cfg);
    if r.is_err() {
        for p in new_layers {
            let _ = std::fs::remove_file(p);
        }
    }
    r
}

fn boot_and_run(cfg: &Config) -> Result<Exit> {
    cfg.validate()?;
    if !cfg.vmm_cpus.is_empty() {
        // Before any thread is made: each starts where its maker runs.
        pin::set_affinity(&cfg.vmm_cpus).map_err(|e| Error::Io {
            what: format!("running the VMM on cpus {}", pin::cpus_arg(&cfg.vmm_cpus)),
            source: e,
        })?;
    }
    let kvm = Kvm::new().map_err(|e| Error::Kvm("opening /dev/kvm", e))?;
    let vm = kvm
        .create_vm()
        .map_err(|e| Error::Kvm("KVM_CREATE_VM", e))?;
    arch::setup_vm(&kvm, &vm)?;
    let mem = memory::guest_memory(&vm, cfg.mem_bytes, cfg.mergeable, cfg.balloon.is_some())?;
    let (kernel, entry) = boot::load_kernel(&mem, cfg)?;
    let control = cfg
        .control
        .as_deref()
        .map(control::Control::bind)
        .transpose()?;
    let devices = virtio::attach(&vm, cfg)?;
    // The VM's sockets are removed by a reaper process if the VMM dies without doing so.
    let sockets: Vec<PathBuf> = cfg
        .vsock
        .iter()
        .map(|v| v.uds.clone())
        .chain(control.as_ref().map(|c| c.path().to_path_buf()))
        .collect();
    let _reaper = if sockets.is_empty() {
        None
    } else {
        Some(reaper::spawn_reaper(&sockets).map_err(io("the sockets' reaper"))?)
    };
    boot::write_boot_data(&mem, cfg, &kernel, devices.len())?;
    let exit_evt = EventFd::new(0).map_err(io("eventfd"))?;
    let shared = Arc::new(shared(&vm, cfg, mem, devices, &exit_evt)?);
    let threads = start_vcpus(&kvm, &vm, cfg, entry, &shared, &exit_evt)?;
    // Work on the devices' queues until a vCPU or the i8042 says the VM is over.
    // Console input: the terminal's (or a pipe's) bytes on stdin go to the serial port.
    if let Err(e) = event_loop::run(&shared, &exit_evt, Some(libc::STDIN_FILENO), control) {
        shared.end(Exit::Error(chain(&e)));
    }
    Ok(stop(&shared, threads))
}

/// What the vCPUs and the main thread share: the legacy devices (interrupt line 4 for the
/// serial port, whose output goes to `cfg`'s console), the virtio devices, guest memory, and
/// how the VM ends (`exit_evt`).
fn shared(
    vm: &kvm_ioctls::VmFd,
    cfg: &Config,
    mem: GuestMemoryMmap,
    devices: Vec<virtio::mmio::Transport>,
    exit_evt: &EventFd,
) -> Result<Shared> {
    let irq4 = EventFd::new(libc::EFD_NONBLOCK).map_err(io("eventfd"))?;
    vm.register_irqfd(&irq4, 4)
        .map_err(|e| Error::Kvm("KVM_IRQFD", e))?;
    let out: Box<dyn Write + Send> = match &cfg.console {
        Console::Stdout => Box::new(std::io::stdout()),
        Console::File(p) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(io(p.display()))?,
        ),
    };
    Ok(Shared {
        legacy: devices::Legacy::new(irq4, exit_evt.try_clone().map_err(io("eventfd"))?, out),
        stop: AtomicBool::new(false),
        exit: Mutex::new(None),
        exit_evt: exit_evt.try_clone().map_err(io("eventfd"))?,
        mem,
        virtio: devices.into_iter().map(Mutex::new).collect(),
    })
}

/// The vCPUs, set up (the first at the kernel's `entry`) and running on threads of their
/// own; SIGTERM and SIGINT end the VM through `exit_evt` from here on.
fn start_vcpus(
    kvm: &Kvm,
    vm: &kvm_ioctls::VmFd,
    cfg: &Config,
    entry: u64,
    shared: &Arc<Shared>,
    exit_evt: &EventFd,
) -> Result<Vec<std::thread::JoinHandle<()>>> {
    let mut vcpus = Vec::new();
    for id in 0..cfg.vcpus {
        let fd = vm
            .create_vcpu(id as u64)
            .map_err(|e| Error::Kvm("KVM_CREATE_VCPU", e))?;
        arch::regs::setup_cpu(kvm, &fd, id, cfg.vcpus)?;
        if id == 0 {
            arch::regs::setup_boot_cpu(&fd, entry)?;
        }
        vcpus.push(fd);
    }
    vcpu::install_kick_handler()?;
    vcpu::stop_on_signals(exit_evt)?;
    vcpus
        .into_iter()
        .enumerate()
        .map(|(id, fd)| {
            let place = vcpu::Place {
                cpu: cfg.vcpu_cpus.get(id).copied(),
                sched: cfg.vcpu_sched,
            };
            vcpu::spawn(id, fd, shared.clone(), place)
        })
        .collect::<std::io::Result<_>>()
        .map_err(io("starting a vCPU thread"))
}

/// Stop the vCPUs (kicked out of KVM_RUN until they see `stop`), flush the console, and say
/// how the VM ended.
fn stop(shared: &Shared, threads: Vec<std::thread::JoinHandle<()>>) -> Exit {
    shared.stop.store(true, Ordering::SeqCst);
    for _ in 0..400 {
        if threads.iter().all(|t| t.is_finished()) {
            break;
        }
        for t in threads.iter().filter(|t| !t.is_finished()) {
            vcpu::kick(t);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for t in threads {
        let _ = t.join();
    }
    shared.legacy.flush();
    let why = shared.exit.lock().unwrap_or_else(|e| e.into_inner()).take();
    vcpu::stop_on_signals_done();
    why.unwrap_or_else(|| match vcpu::stopped_by() {
        0 => Exit::Reset,
        sig => Exit::Stopped(sig),
    })
}
